//! A lossy link made in user space, for kernels without the netem qdisc: two network
//! namespaces, each with a TUN device, and a relay in the test process that copies IP
//! packets from one device to the other, dropping some and delaying the rest.
//!
//! Side `i` has address [`side_address`]`(i)` on its `tun0` and a route to every other
//! side's address through it. Traffic inside one side never touches the relay.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::{Netns, ip};

/// `TUNSETIFF` from `<linux/if_tun.h>`: `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

/// The address of side `index` on its TUN device.
pub fn side_address(index: usize) -> String {
    format!("10.98.0.{}", index + 1)
}

/// How the relay impairs each packet, in each direction.
#[derive(Clone, Copy, Debug)]
pub struct Impairment {
    /// Probability of dropping a packet, 0 to 1.
    pub loss: f64,
    /// Mean delay.
    pub delay: Duration,
    /// Each packet's delay is uniform in `delay ± jitter`.
    pub jitter: Duration,
}

/// Two namespaces joined through the relay; dropping it stops the relay, closes the
/// devices and deletes the namespaces.
pub struct TunLink {
    relay: Vec<JoinHandle<()>>,
    running: Arc<AtomicBool>,
    /// Packets the relay dropped on purpose.
    pub dropped: Arc<AtomicU64>,
    /// Packets the relay delivered.
    pub delivered: Arc<AtomicU64>,
    /// The two side namespaces.
    pub sides: Vec<Netns>,
}

impl TunLink {
    /// Creates the two sides, named after this process's id, and starts the relay.
    pub fn create(tag: &str, impairment: Impairment) -> TunLink {
        let prefix = format!("murmur-{}-{tag}", std::process::id());
        let sides: Vec<Netns> = (0..2)
            .map(|index| Netns::create(&format!("{prefix}-{index}")))
            .collect();
        let devices: Vec<File> = sides.iter().map(|side| open_tun_in(&side.name)).collect();
        for (index, side) in sides.iter().enumerate() {
            let address = format!("{}/32", side_address(index));
            ip(&["-n", &side.name, "addr", "add", &address, "dev", "tun0"]);
            ip(&["-n", &side.name, "link", "set", "tun0", "up"]);
            let other = format!("{}/32", side_address(1 - index));
            ip(&["-n", &side.name, "route", "add", &other, "dev", "tun0"]);
        }

        let running = Arc::new(AtomicBool::new(true));
        let dropped = Arc::new(AtomicU64::new(0));
        let delivered = Arc::new(AtomicU64::new(0));
        let mut relay = Vec::new();
        for (from, to) in [(0, 1), (1, 0)] {
            let source = devices[from]
                .try_clone()
                .expect("the TUN device can be shared");
            let sink = devices[to]
                .try_clone()
                .expect("the TUN device can be shared");
            let (queue, due) = mpsc::channel();
            let running_reader = running.clone();
            let dropped = dropped.clone();
            relay.push(std::thread::spawn(move || {
                read_packets(source, queue, impairment, &running_reader, &dropped);
            }));
            let running_writer = running.clone();
            let delivered = delivered.clone();
            relay.push(std::thread::spawn(move || {
                write_when_due(sink, due, &running_writer, &delivered);
            }));
        }
        TunLink {
            relay,
            running,
            dropped,
            delivered,
            sides,
        }
    }
}

impl Drop for TunLink {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Release);
        for thread in self.relay.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Opens a new TUN device `tun0` inside namespace `netns`, from a thread that entered it.
fn open_tun_in(netns: &str) -> File {
    let path = format!("/var/run/netns/{netns}");
    std::thread::spawn(move || {
        let namespace =
            File::open(&path).unwrap_or_else(|error| panic!("cannot open {path}: {error}"));
        // SAFETY: setns(2) with an open namespace descriptor moves only this thread.
        let entered = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(
            entered,
            0,
            "setns into {path} failed: {}",
            std::io::Error::last_os_error()
        );
        let device = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .expect("/dev/net/tun can be opened");
        // struct ifreq: a 16-byte name, then a union whose first member is the flags.
        let mut request = [0u8; 40];
        request[..4].copy_from_slice(b"tun0");
        request[16..18].copy_from_slice(&(IFF_TUN | IFF_NO_PI).to_ne_bytes());
        // SAFETY: TUNSETIFF reads and writes one struct ifreq, and `request` is a
        // 40-byte buffer, the size of struct ifreq on Linux.
        let result =
            unsafe { libc::ioctl(device.as_raw_fd(), TUNSETIFF as _, request.as_mut_ptr()) };
        assert_eq!(
            result,
            0,
            "TUNSETIFF failed: {}",
            std::io::Error::last_os_error()
        );
        set_nonblocking(&device);
        device
    })
    .join()
    .expect("the TUN thread runs")
}

fn set_nonblocking(device: &File) {
    // SAFETY: fcntl(2) on an open descriptor with F_GETFL and F_SETFL only changes flags.
    unsafe {
        let flags = libc::fcntl(device.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(device.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

/// Waits up to 100 ms for `device` to become readable.
fn poll_readable(device: &File) -> bool {
    let mut poll = libc::pollfd {
        fd: device.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, and its count is 1.
    let ready = unsafe { libc::poll(&mut poll, 1, 100) };
    ready > 0
}

fn read_packets(
    mut source: File,
    queue: mpsc::Sender<(Instant, Vec<u8>)>,
    impairment: Impairment,
    running: &AtomicBool,
    dropped: &AtomicU64,
) {
    let mut buffer = vec![0u8; 65_536];
    while running.load(Ordering::Acquire) {
        if !poll_readable(&source) {
            continue;
        }
        let Ok(length) = source.read(&mut buffer) else {
            continue;
        };
        if rand::random::<f64>() < impairment.loss {
            dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let jitter = impairment.jitter.as_secs_f64();
        let offset = if jitter > 0.0 {
            rand::random_range(-jitter..jitter)
        } else {
            0.0
        };
        let delay = (impairment.delay.as_secs_f64() + offset).max(0.0);
        let due = Instant::now() + Duration::from_secs_f64(delay);
        if queue.send((due, buffer[..length].to_vec())).is_err() {
            return;
        }
    }
}

fn write_when_due(
    mut sink: File,
    due: mpsc::Receiver<(Instant, Vec<u8>)>,
    running: &AtomicBool,
    delivered: &AtomicU64,
) {
    // Packets ordered by due time; the sequence number keeps equal times in order.
    let mut pending: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>> = BinaryHeap::new();
    let mut sequence = 0u64;
    while running.load(Ordering::Acquire) {
        let wait = pending
            .peek()
            .map(|Reverse((at, _, _))| at.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_millis(100))
            .min(Duration::from_millis(100));
        match due.recv_timeout(wait) {
            Ok((at, packet)) => {
                sequence += 1;
                pending.push(Reverse((at, sequence, packet)));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        while pending.peek().is_some_and(|Reverse((at, _, _))| *at <= now) {
            if let Some(Reverse((_, _, packet))) = pending.pop()
                && sink.write(&packet).is_ok()
            {
                delivered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
