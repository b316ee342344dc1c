//! Network namespaces the tests create and remove: a hub namespace with a bridge, and
//! one namespace per side of the cluster, each wired to the bridge by a veth pair. No
//! interface or address is added to the test's own namespace.
//!
//! Needs root and the `ip` command from iproute2; [`missing_requirements`] reports what is
//! missing so that a test can skip with that message.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;

/// What this machine lacks for namespace tests, or `None` when it has everything.
pub fn missing_requirements() -> Option<String> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root to create network namespaces".to_string());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(output) if output.status.success() => None,
        _ => Some("needs the `ip` command (iproute2) on PATH".to_string()),
    }
}

/// Runs `ip` with `args`, panicking with its output when it fails.
pub fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("the ip command runs");
    assert!(
        output.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// Runs `tc` with `args`; returns its error output when it fails.
pub fn tc(args: &[&str]) -> Result<(), String> {
    let output = Command::new("tc")
        .args(args)
        .output()
        .map_err(|error| format!("failed to run tc: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

/// A network namespace, deleted on drop with every interface in it.
pub struct Netns {
    /// Its name, as `ip netns` lists it.
    pub name: String,
}

impl Netns {
    /// Creates namespace `name` with its loopback up.
    pub fn create(name: &str) -> Netns {
        ip(&["netns", "add", name]);
        let netns = Netns {
            name: name.to_string(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"]);
        netns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Sides joined by a bridge in a hub namespace. Side `i` gets address `10.99.0.{i+1}/24`
/// on its `eth0`; the hub end of its veth pair is `side{i}`.
pub struct Bridge {
    /// The side namespaces.
    pub sides: Vec<Netns>,
    // Dropped after the sides; deleting either end of a veth pair deletes both.
    hub: Netns,
}

impl Bridge {
    /// Creates the hub and `count` sides, named after this process's id so that test
    /// runs in parallel do not collide.
    pub fn create(tag: &str, count: usize) -> Bridge {
        let prefix = format!("murmur-{}-{tag}", std::process::id());
        let hub = Netns::create(&format!("{prefix}-hub"));
        ip(&["-n", &hub.name, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub.name, "link", "set", "br0", "up"]);
        let mut sides = Vec::new();
        for index in 0..count {
            let side = Netns::create(&format!("{prefix}-{index}"));
            let hub_end = format!("side{index}");
            ip(&[
                "-n", &hub.name, "link", "add", &hub_end, "type", "veth", "peer", "name", "eth0",
                "netns", &side.name,
            ]);
            ip(&[
                "-n", &hub.name, "link", "set", &hub_end, "master", "br0", "up",
            ]);
            let address = format!("{}/24", Bridge::address(index));
            ip(&["-n", &side.name, "addr", "add", &address, "dev", "eth0"]);
            ip(&["-n", &side.name, "link", "set", "eth0", "up"]);
            sides.push(side);
        }
        Bridge { sides, hub }
    }

    /// The address of side `index`.
    pub fn address(index: usize) -> String {
        format!("10.99.0.{}", index + 1)
    }

    /// Cuts side `index` off the bridge.
    pub fn cut(&self, index: usize) {
        ip(&[
            "-n",
            &self.hub.name,
            "link",
            "set",
            &format!("side{index}"),
            "down",
        ]);
    }

    /// Joins side `index` to the bridge again.
    pub fn heal(&self, index: usize) {
        ip(&[
            "-n",
            &self.hub.name,
            "link",
            "set",
            &format!("side{index}"),
            "up",
        ]);
    }

    /// Adds `tc netem` with `params` (such as `loss 5% delay 20ms 10ms`) to both ends
    /// of side `index`'s link, so traffic to and from that side suffers it.
    ///
    /// # Errors
    ///
    /// `tc`'s message, such as when the kernel lacks the netem qdisc.
    pub fn netem(&self, index: usize, params: &[&str]) -> Result<(), String> {
        let hub_end = format!("side{index}");
        let mut on_hub = vec![
            "-n",
            &self.hub.name,
            "qdisc",
            "add",
            "dev",
            &hub_end,
            "root",
            "netem",
        ];
        on_hub.extend_from_slice(params);
        tc(&on_hub)?;
        let side = &self.sides[index].name;
        let mut on_side = vec!["-n", side, "qdisc", "add", "dev", "eth0", "root", "netem"];
        on_side.extend_from_slice(params);
        tc(&on_side)
    }
}

/// Runs the future that `make` returns on a new thread inside namespace `netns`, on a
/// current-thread tokio runtime, so every socket it opens belongs to that namespace.
pub fn spawn_in<F, Fut, T>(netns: &str, make: F) -> std::thread::JoinHandle<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let path = format!("/var/run/netns/{netns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|error| panic!("cannot open {path}: {error}"));
        // SAFETY: setns(2) with an open namespace file descriptor and CLONE_NEWNET moves
        // only this thread into that network namespace; it touches no memory of ours.
        let result = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(
            result,
            0,
            "setns into {path} failed: {}",
            std::io::Error::last_os_error()
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime builds");
        runtime.block_on(make())
    })
}

/// Waits for a thread from [`spawn_in`] without blocking the async runtime, and passes
/// on its panic.
pub async fn join<T: Send + 'static>(handle: std::thread::JoinHandle<T>) -> T {
    let joined = tokio::task::spawn_blocking(move || handle.join())
        .await
        .expect("the joining task runs");
    match joined {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
