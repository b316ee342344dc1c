//! An in-memory datagram network with loss, delay and partitions, for tests and the
//! simulator.
//!
//! Sockets bound on one [`MemoryNetwork`] reach each other by address and nothing else.
//! Delays run on tokio's clock, so under paused time a run covers minutes of cluster
//! life in moments. A seed makes the losses and delays repeatable.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::mpsc;

use crate::DatagramSocket;
use crate::seal::MAX_UDP_PAYLOAD;

type Delivery = (Vec<u8>, SocketAddr);

/// A network of in-memory sockets. Clones share the same network.
#[derive(Clone)]
pub struct MemoryNetwork {
    state: Arc<Mutex<NetworkState>>,
}

struct NetworkState {
    sockets: HashMap<SocketAddr, mpsc::UnboundedSender<Delivery>>,
    loss: f64,
    delay: Duration,
    jitter: Duration,
    /// The group of each address while the network is partitioned; addresses in no
    /// group are cut off from everyone.
    groups: Option<HashMap<SocketAddr, usize>>,
    rng: StdRng,
    stats: MemoryNetworkStats,
}

/// Counts of what a [`MemoryNetwork`] carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryNetworkStats {
    /// Datagrams handed to the network.
    pub sent: u64,
    /// Bytes handed to the network.
    pub bytes_sent: u64,
    /// Datagrams dropped by the configured loss.
    pub lost: u64,
    /// Datagrams dropped because a partition separated sender and receiver.
    pub cut: u64,
    /// Datagrams sent to an address no socket is bound to.
    pub unroutable: u64,
}

impl MemoryNetwork {
    /// Creates a network without loss or delay; `seed` fixes every random choice.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(NetworkState {
                sockets: HashMap::new(),
                loss: 0.0,
                delay: Duration::ZERO,
                jitter: Duration::ZERO,
                groups: None,
                rng: StdRng::seed_from_u64(seed),
                stats: MemoryNetworkStats::default(),
            })),
        }
    }

    /// Drops each datagram with probability `loss`, clamped to 0.0..=1.0. Default 0.
    pub fn set_loss(&self, loss: f64) {
        self.lock().loss = loss.clamp(0.0, 1.0);
    }

    /// Delays each datagram by `delay` plus a uniform random extra of up to `jitter`.
    /// Default no delay. With jitter, datagrams can arrive out of order, as on UDP.
    pub fn set_delay(&self, delay: Duration, jitter: Duration) {
        let mut state = self.lock();
        state.delay = delay;
        state.jitter = jitter;
    }

    /// Splits the network: datagrams pass only between addresses of the same group.
    /// Addresses in no group reach nobody until [`heal`](Self::heal).
    pub fn partition(&self, groups: &[Vec<SocketAddr>]) {
        let mut by_addr = HashMap::new();
        for (index, group) in groups.iter().enumerate() {
            for addr in group {
                by_addr.insert(*addr, index);
            }
        }
        self.lock().groups = Some(by_addr);
    }

    /// Ends a partition.
    pub fn heal(&self) {
        self.lock().groups = None;
    }

    /// What the network has carried so far.
    pub fn stats(&self) -> MemoryNetworkStats {
        self.lock().stats
    }

    /// Binds a socket at `addr`. Port 0 is not given a free port: choose addresses.
    ///
    /// # Errors
    ///
    /// `AddrInUse` when a socket is already bound at `addr`.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<MemorySocket> {
        let mut state = self.lock();
        if state.sockets.contains_key(&addr) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("memory address {addr} is already bound"),
            ));
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        state.sockets.insert(addr, sender);
        Ok(MemorySocket {
            addr,
            network: self.clone(),
            receiver: tokio::sync::Mutex::new(receiver),
        })
    }

    fn send(&self, datagram: &[u8], from: SocketAddr, to: SocketAddr) -> io::Result<()> {
        if datagram.len() > MAX_UDP_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "datagram of {} bytes exceeds the {MAX_UDP_PAYLOAD}-byte limit",
                    datagram.len()
                ),
            ));
        }
        let mut state = self.lock();
        state.stats.sent += 1;
        state.stats.bytes_sent += datagram.len() as u64;

        if let Some(groups) = &state.groups {
            if groups.get(&from).is_none() || groups.get(&from) != groups.get(&to) {
                state.stats.cut += 1;
                return Ok(());
            }
        }
        let loss = state.loss;
        if loss > 0.0 && state.rng.random_bool(loss) {
            state.stats.lost += 1;
            return Ok(());
        }
        let Some(sender) = state.sockets.get(&to).cloned() else {
            state.stats.unroutable += 1;
            return Ok(());
        };
        let jitter = state.jitter;
        let delay = state.delay + random_up_to(&mut state.rng, jitter);
        drop(state);

        let delivery = (datagram.to_vec(), from);
        if delay.is_zero() {
            let _ = sender.send(delivery);
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = sender.send(delivery);
            });
        }
        Ok(())
    }

    fn unbind(&self, addr: SocketAddr) {
        self.lock().sockets.remove(&addr);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NetworkState> {
        // No code path panics while holding this lock; a poisoned one still has a
        // consistent state.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn random_up_to(rng: &mut StdRng, max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
}

/// A socket on a [`MemoryNetwork`]. Dropping it frees its address.
pub struct MemorySocket {
    addr: SocketAddr,
    network: MemoryNetwork,
    receiver: tokio::sync::Mutex<mpsc::UnboundedReceiver<Delivery>>,
}

impl Drop for MemorySocket {
    fn drop(&mut self) {
        self.network.unbind(self.addr);
    }
}

#[async_trait]
impl DatagramSocket for MemorySocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }

    async fn send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        self.network.send(datagram, self.addr, to)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let mut receiver = self.receiver.lock().await;
        let Some((datagram, from)) = receiver.recv().await else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "memory network is gone",
            ));
        };
        let len = datagram.len().min(buf.len());
        buf[..len].copy_from_slice(&datagram[..len]);
        Ok((len, from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[tokio::test]
    async fn delivers_with_sender_address() {
        let network = MemoryNetwork::new(1);
        let a = network.bind(addr(1)).unwrap();
        let b = network.bind(addr(2)).unwrap();
        a.send_to(b"hi", addr(2)).await.unwrap();
        let mut buf = [0u8; 16];
        let (len, from) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..len], b"hi");
        assert_eq!(from, addr(1));
    }

    #[tokio::test]
    async fn partition_cuts_between_groups_only() {
        let network = MemoryNetwork::new(1);
        let a = network.bind(addr(1)).unwrap();
        let _b = network.bind(addr(2)).unwrap();
        let c = network.bind(addr(3)).unwrap();
        network.partition(&[vec![addr(1), addr(3)], vec![addr(2)]]);
        a.send_to(b"cut", addr(2)).await.unwrap();
        a.send_to(b"kept", addr(3)).await.unwrap();
        let mut buf = [0u8; 16];
        let (len, _) = c.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..len], b"kept");
        assert_eq!(network.stats().cut, 1);
        network.heal();
        a.send_to(b"x", addr(2)).await.unwrap();
        assert_eq!(network.stats().cut, 1);
    }

    #[tokio::test]
    async fn loss_is_repeatable_for_a_seed() {
        async fn lost_with_seed(seed: u64) -> u64 {
            let network = MemoryNetwork::new(seed);
            let a = network.bind(addr(1)).unwrap();
            let _b = network.bind(addr(2)).unwrap();
            network.set_loss(0.3);
            for _ in 0..1_000 {
                a.send_to(b"x", addr(2)).await.unwrap();
            }
            network.stats().lost
        }
        let lost = lost_with_seed(7).await;
        assert_eq!(lost, lost_with_seed(7).await);
        assert!((200..400).contains(&lost), "lost {lost} of 1000 at 30 %");
    }

    #[tokio::test(start_paused = true)]
    async fn delay_runs_on_tokio_time() {
        let network = MemoryNetwork::new(1);
        let a = network.bind(addr(1)).unwrap();
        let b = network.bind(addr(2)).unwrap();
        network.set_delay(Duration::from_millis(40), Duration::ZERO);
        let start = tokio::time::Instant::now();
        a.send_to(b"late", addr(2)).await.unwrap();
        let mut buf = [0u8; 16];
        b.recv_from(&mut buf).await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(40));
    }

    #[tokio::test]
    async fn address_is_freed_on_drop() {
        let network = MemoryNetwork::new(1);
        let a = network.bind(addr(1)).unwrap();
        assert_eq!(
            network.bind(addr(1)).err().map(|error| error.kind()),
            Some(io::ErrorKind::AddrInUse)
        );
        drop(a);
        network.bind(addr(1)).unwrap();
    }
}
