//! `murmur agent` processes and the clusters they form.

use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use murmur::ClusterKey;

use crate::api;
use crate::binary::murmur_bin;

/// How long an agent may take from spawn to a healthy `/v1/health`.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// What to start an agent with.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    /// The node name, also the name of its data directory and log file.
    pub name: String,
    /// UDP address for gossip.
    pub gossip: SocketAddr,
    /// UDP address for calls over QUIC.
    pub rpc: SocketAddr,
    /// TCP address of the HTTP API.
    pub http: SocketAddr,
    /// Gossip addresses of the seeds.
    pub join: Vec<SocketAddr>,
    /// `--service NAME=URL` values.
    pub services: Vec<String>,
    /// The hidden `--demo-role` that hosts a Rust example service in the agent.
    pub demo_role: Option<String>,
    /// The gossip profile: `local` (100 ms rounds) or `lan` (250 ms rounds).
    pub profile: String,
    /// Further flags, appended last.
    pub extra_args: Vec<String>,
    /// The network namespace to run in (through `ip netns exec`); none for the test's own.
    pub netns: Option<String>,
}

impl AgentSpec {
    /// Returns a spec on free loopback ports that joins through `join`.
    pub fn loopback(name: &str, join: &[SocketAddr]) -> AgentSpec {
        let gossip = UdpSocket::bind("127.0.0.1:0").expect("a free UDP port on loopback");
        let rpc = UdpSocket::bind("127.0.0.1:0").expect("a free UDP port on loopback");
        let http = TcpListener::bind("127.0.0.1:0").expect("a free TCP port on loopback");
        AgentSpec {
            name: name.to_string(),
            gossip: gossip.local_addr().expect("bound socket has an address"),
            rpc: rpc.local_addr().expect("bound socket has an address"),
            http: http.local_addr().expect("bound listener has an address"),
            join: join.to_vec(),
            services: Vec::new(),
            demo_role: None,
            profile: "local".to_string(),
            extra_args: Vec::new(),
            netns: None,
        }
    }

    /// Adds a sidecar service.
    pub fn service(mut self, name: &str, url: &str) -> AgentSpec {
        self.services.push(format!("{name}={url}"));
        self
    }

    /// Hosts one of the demo's Rust services: `frontend`, `inventory` or `pricing`.
    pub fn demo_role(mut self, role: &str) -> AgentSpec {
        self.demo_role = Some(role.to_string());
        self
    }

    /// Appends flags.
    pub fn args(mut self, args: &[&str]) -> AgentSpec {
        self.extra_args
            .extend(args.iter().map(|arg| arg.to_string()));
        self
    }
}

/// A running agent process; dropping it kills the process and waits for it.
pub struct Agent {
    /// What it was started with.
    pub spec: AgentSpec,
    child: Child,
    log: PathBuf,
}

impl Agent {
    /// Starts an agent with the cluster key in `key_file`, its data directory and log
    /// file under `dir`. A restart with the same spec and `dir` keeps the node's identity
    /// and appends to the same log.
    pub fn spawn(spec: AgentSpec, dir: &Path, key_file: &Path) -> Agent {
        let log = dir.join(format!("{}.log", spec.name));
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("the log file can be created");
        let mut command = match &spec.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(murmur_bin());
                command
            }
            None => Command::new(murmur_bin()),
        };
        command
            .arg("agent")
            .args(["--name", &spec.name])
            .arg("--data-dir")
            .arg(dir.join(&spec.name))
            .args(["--gossip", &spec.gossip.to_string()])
            .args(["--rpc", &spec.rpc.to_string()])
            .args(["--http", &spec.http.to_string()])
            .arg("--cluster-key-file")
            .arg(key_file)
            .args(["--profile", &spec.profile]);
        if !spec.join.is_empty() {
            let seeds: Vec<String> = spec.join.iter().map(ToString::to_string).collect();
            command.args(["--join", &seeds.join(",")]);
        }
        for service in &spec.services {
            command.args(["--service", service]);
        }
        if let Some(role) = &spec.demo_role {
            command.args(["--demo-role", role]);
        }
        command.args(&spec.extra_args);
        clear_agent_env(&mut command);
        command
            .env("RUST_LOG", agent_log_filter())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("the log file can be shared"))
            .stderr(log_file);
        let child = command.spawn().expect("the murmur binary starts");
        Agent { spec, child, log }
    }

    /// The base URL of its HTTP API.
    pub fn url(&self) -> String {
        format!("http://{}", self.spec.http)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/v1/health` returns HTTP 200.
    ///
    /// # Panics
    ///
    /// When the process exits first or is not ready in time; the message holds its log.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "agent {} exited with {status} before it was ready:\n{}",
                    self.spec.name,
                    self.log_tail(40)
                );
            }
            if api::health(&self.url()).await == Some(200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "agent {} not ready after {READY_WITHIN:?}:\n{}",
                self.spec.name,
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the process with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM, the signal that makes the agent drain and stop.
    pub fn terminate(&self) {
        let Ok(pid) = i32::try_from(self.child.id()) else {
            return;
        };
        // SAFETY: kill(2) on the pid of a child this guard has not reaped yet, with a
        // valid signal number, has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }

    /// Waits up to `within` for the process to exit and returns its status.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of {}'s log ---\n{}",
                self.spec.name,
                self.log_tail(15)
            );
        }
        self.kill();
    }
}

/// The agents' log filter: `MURMUR_TESTS_AGENT_LOG` if set (a `RUST_LOG` value),
/// otherwise `info`.
fn agent_log_filter() -> String {
    std::env::var("MURMUR_TESTS_AGENT_LOG").unwrap_or_else(|_| "info".to_string())
}

/// Removes the agent settings this test process may have in its environment, so that
/// only the flags the harness passes apply.
fn clear_agent_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MURMUR_") {
            command.env_remove(name);
        }
    }
}

/// Agents sharing a cluster key and a temporary directory for data and logs. Dropping it
/// kills every agent, then removes the directory unless `MURMUR_TESTS_KEEP` is set.
pub struct Cluster {
    /// The agents, in the order they were added.
    pub agents: Vec<Agent>,
    /// The cluster key, for nodes the test process starts itself.
    pub key: ClusterKey,
    key_file: PathBuf,
    // Declared last so that it is dropped after the agents.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// An empty cluster with a fresh key.
    pub fn new() -> Cluster {
        let keep = std::env::var_os("MURMUR_TESTS_KEEP").is_some();
        let dir = tempfile::Builder::new()
            .prefix("murmur-tests-")
            .disable_cleanup(keep)
            .tempdir()
            .expect("a temporary directory");
        if keep {
            eprintln!("agents' data and logs kept in {}", dir.path().display());
        }
        let key = ClusterKey::generate();
        let key_file = dir.path().join("cluster.key");
        std::fs::write(&key_file, key.to_hex()).expect("the key file can be written");
        Cluster {
            agents: Vec::new(),
            key,
            key_file,
            dir,
        }
    }

    /// The directory holding data directories and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The cluster key file.
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }

    /// Starts an agent without waiting for it; returns its index.
    pub fn spawn(&mut self, spec: AgentSpec) -> usize {
        let agent = Agent::spawn(spec, self.dir.path(), &self.key_file);
        self.agents.push(agent);
        self.agents.len() - 1
    }

    /// Starts an agent and waits until its HTTP API is healthy; returns its index.
    pub async fn start(&mut self, spec: AgentSpec) -> usize {
        let index = self.spawn(spec);
        self.agents[index].wait_ready().await;
        index
    }

    /// Starts the agent named `name` again with the same spec: the same name, addresses
    /// and data directory, so the same node id in a new generation. Kills the old
    /// process first if it still runs.
    pub fn respawn(&mut self, name: &str) {
        let index = self
            .agents
            .iter()
            .position(|agent| agent.spec.name == name)
            .unwrap_or_else(|| panic!("no agent named {name}"));
        self.agents[index].kill();
        let spec = self.agents[index].spec.clone();
        self.agents[index] = Agent::spawn(spec, self.dir.path(), &self.key_file);
    }

    /// The agent named `name`.
    ///
    /// # Panics
    ///
    /// When there is none.
    pub fn agent(&mut self, name: &str) -> &mut Agent {
        self.agents
            .iter_mut()
            .find(|agent| agent.spec.name == name)
            .unwrap_or_else(|| panic!("no agent named {name}"))
    }

    /// The HTTP base URLs of the agents for which `keep` holds.
    pub fn urls_where(&self, keep: impl Fn(&Agent) -> bool) -> Vec<String> {
        self.agents
            .iter()
            .filter(|agent| keep(agent))
            .map(Agent::url)
            .collect()
    }

    /// Waits until every agent's `/v1/nodes` lists exactly `names`, all `alive`.
    /// Returns the time it took, or `None` after `within`.
    pub async fn wait_converged(&self, names: &[&str], within: Duration) -> Option<Duration> {
        let started = Instant::now();
        let urls = self.urls_where(|_| true);
        crate::wait_for(within, || api::all_list_exactly(&urls, names))
            .await
            .map(|()| started.elapsed())
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster::new()
    }
}
