//! The simulated network: chitchat's in-memory channel transport with per-message loss,
//! delay and jitter, partitions into groups, and byte counters per member.
//!
//! chitchat's [`ChannelTransport`] serializes every message, rejects one larger than the
//! MTU and reports its size, so the sizes counted here are the bytes chitchat would hand
//! to a socket. Loss, delay and partitions are applied where a message arrives: each
//! receiving socket draws from its own random generator, seeded from the network's seed
//! and its address, and holds a delayed message on tokio's clock until it is due.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use murmur_gossip::chitchat::transport::{
    ChannelTransport, RecvOutcome, SendOutcome, Socket, Transport,
};
use murmur_gossip::chitchat::{ChitchatEnvelope, ChitchatMessage};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::time::Instant;

/// The largest message the network carries, in bytes: the most one UDP datagram carries
/// over IPv4, as for a real member.
pub const MTU: usize = 65_507;

/// Loss, delay and jitter applied to every message.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conditions {
    /// The probability that a message is lost, from 0 to 1.
    pub loss: f64,
    /// The delay every delivered message takes.
    pub delay: Duration,
    /// The largest extra delay, drawn uniformly from zero to this for each message.
    pub jitter: Duration,
}

impl Default for Conditions {
    /// No loss, a 1 ms delay and 1 ms of jitter, as on a quiet LAN.
    fn default() -> Self {
        Self {
            loss: 0.0,
            delay: Duration::from_millis(1),
            jitter: Duration::from_millis(1),
        }
    }
}

/// Messages and bytes one member sent and received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Messages sent, including those lost on the way.
    pub messages_sent: u64,
    /// Bytes sent, as chitchat serialized them.
    pub bytes_sent: u64,
    /// Messages delivered to this member.
    pub messages_received: u64,
    /// Bytes delivered to this member.
    pub bytes_received: u64,
}

/// Counters for the whole network since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkTotals {
    /// Messages sent.
    pub messages: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Messages dropped by random loss.
    pub lost: u64,
    /// Messages dropped because a partition separated sender and receiver.
    pub cut: u64,
    /// Messages chitchat tried to send that exceeded [`MTU`] and were rejected.
    pub oversized: u64,
    /// The largest message sent, in bytes.
    pub largest_message: usize,
    /// The largest SYN sent, in bytes. A SYN carries the sender's digest, one entry per
    /// member in its state, so its size shows how close the cluster is to the MTU.
    pub largest_syn: usize,
}

/// A simulated network; clones share it. It is a chitchat [`Transport`], so members
/// start on it with `Membership::start_on_transport`.
#[derive(Clone)]
pub struct Network {
    channels: ChannelTransport,
    state: Arc<Mutex<NetworkState>>,
}

struct NetworkState {
    seed: u64,
    conditions: Conditions,
    /// The group of each address while the network is partitioned. Addresses in no
    /// group are cut off from everyone.
    groups: Option<HashMap<SocketAddr, usize>>,
    /// How many times each address was opened, so a restarted member draws new numbers.
    opened: HashMap<SocketAddr, u64>,
    /// The addresses with a socket open now.
    open: HashSet<SocketAddr>,
    traffic: HashMap<SocketAddr, Traffic>,
    totals: NetworkTotals,
}

impl Network {
    /// Creates a network whose random choices all derive from `seed`.
    pub fn new(seed: u64, conditions: Conditions) -> Self {
        Self {
            channels: ChannelTransport::with_mtu(MTU),
            state: Arc::new(Mutex::new(NetworkState {
                seed,
                conditions,
                groups: None,
                opened: HashMap::new(),
                open: HashSet::new(),
                traffic: HashMap::new(),
                totals: NetworkTotals::default(),
            })),
        }
    }

    /// The loss, delay and jitter in force.
    pub fn conditions(&self) -> Conditions {
        self.lock().conditions
    }

    /// Replaces the loss, delay and jitter for messages that arrive from now on.
    pub fn set_conditions(&self, conditions: Conditions) {
        self.lock().conditions = conditions;
    }

    /// Splits the network: members reach only the members of their own group, and an
    /// address in no group reaches no one. Messages already in flight are still delivered.
    pub fn partition(&self, groups: &[Vec<SocketAddr>]) {
        let mut group_of = HashMap::new();
        for (group, addrs) in groups.iter().enumerate() {
            for addr in addrs {
                group_of.insert(*addr, group);
            }
        }
        self.lock().groups = Some(group_of);
    }

    /// Ends a partition: every member reaches every other again.
    pub fn heal(&self) {
        self.lock().groups = None;
    }

    /// Whether a socket is open at `addr`. A killed member's socket closes only once its
    /// gossip task has run again and stopped.
    pub fn is_open(&self, addr: SocketAddr) -> bool {
        self.lock().open.contains(&addr)
    }

    /// What the member at `addr` sent and received, over all its lives.
    pub fn traffic(&self, addr: SocketAddr) -> Traffic {
        self.lock().traffic.get(&addr).copied().unwrap_or_default()
    }

    /// The counters of the whole network.
    pub fn totals(&self) -> NetworkTotals {
        self.lock().totals
    }

    fn lock(&self) -> MutexGuard<'_, NetworkState> {
        // A panic while the lock is held leaves only counters half updated, which the
        // simulation can live with, so a poisoned lock is used as it is.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Transport for Network {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let channel = self.channels.open(listen_addr).await?;
        let seed = {
            let mut state = self.lock();
            let lives = state.opened.entry(listen_addr).or_insert(0);
            *lives += 1;
            let lives = *lives;
            state.open.insert(listen_addr);
            mix(mix(state.seed, addr_key(listen_addr)), lives)
        };
        Ok(Box::new(SimSocket {
            addr: listen_addr,
            channel,
            network: self.clone(),
            rng: StdRng::seed_from_u64(seed),
            in_flight: BTreeMap::new(),
            arrivals: 0,
        }))
    }
}

/// One member's socket: it sends through the channel transport and keeps arriving
/// messages until their delay has passed.
struct SimSocket {
    addr: SocketAddr,
    channel: Box<dyn Socket>,
    network: Network,
    rng: StdRng,
    /// Messages on their way, by due time and arrival order.
    in_flight: BTreeMap<(Instant, u64), RecvOutcome>,
    arrivals: u64,
}

impl SimSocket {
    /// Drops `outcome` or schedules its delivery, following the network's conditions.
    fn admit(&mut self, outcome: RecvOutcome) {
        let mut state = self.network.lock();
        let separated = state.groups.as_ref().is_some_and(|groups| {
            groups.get(&outcome.from_addr).is_none()
                || groups.get(&outcome.from_addr) != groups.get(&self.addr)
        });
        if separated {
            state.totals.cut += 1;
            return;
        }
        let conditions = state.conditions;
        if conditions.loss > 0.0 && self.rng.random_bool(conditions.loss.min(1.0)) {
            state.totals.lost += 1;
            return;
        }
        drop(state);

        let jitter = if conditions.jitter.is_zero() {
            Duration::ZERO
        } else {
            let nanos = u64::try_from(conditions.jitter.as_nanos()).unwrap_or(u64::MAX);
            Duration::from_nanos(self.rng.random_range(0..=nanos))
        };
        let due = Instant::now() + conditions.delay + jitter;
        self.arrivals += 1;
        self.in_flight.insert((due, self.arrivals), outcome);
    }

    fn take_due(&mut self) -> Option<RecvOutcome> {
        let entry = self.in_flight.first_entry()?;
        if entry.key().0 > Instant::now() {
            return None;
        }
        let outcome = entry.remove();
        let mut state = self.network.lock();
        let traffic = state.traffic.entry(self.addr).or_default();
        traffic.messages_received += 1;
        traffic.bytes_received += outcome.num_bytes_received as u64;
        Some(outcome)
    }
}

#[async_trait]
impl Socket for SimSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.addr)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let is_syn = matches!(envelope.message, ChitchatMessage::Syn { .. });
        let result = self.channel.send(to, envelope).await;
        let mut state = self.network.lock();
        match &result {
            Ok(outcome) => {
                let bytes = outcome.num_bytes_sent;
                let traffic = state.traffic.entry(self.addr).or_default();
                traffic.messages_sent += 1;
                traffic.bytes_sent += bytes as u64;
                let totals = &mut state.totals;
                totals.messages += 1;
                totals.bytes += bytes as u64;
                totals.largest_message = totals.largest_message.max(bytes);
                if is_syn {
                    totals.largest_syn = totals.largest_syn.max(bytes);
                }
            }
            Err(_) => state.totals.oversized += 1,
        }
        result
    }

    /// Cancel safe: a message taken from the channel is stored in `in_flight` before the
    /// next await point, and a due message is returned without one.
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            if let Some(outcome) = self.take_due() {
                return Ok(outcome);
            }
            let next_due = self.in_flight.keys().next().map(|(due, _)| *due);
            tokio::select! {
                received = self.channel.recv() => self.admit(received?),
                () = sleep_until(next_due) => {}
            }
        }
    }
}

impl Drop for SimSocket {
    fn drop(&mut self) {
        self.network.lock().open.remove(&self.addr);
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Folds `value` into `state` with SplitMix64's finalizer, so that nearby seeds and
/// addresses give unrelated random streams.
pub(crate) fn mix(state: u64, value: u64) -> u64 {
    let mut z = state ^ value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn addr_key(addr: SocketAddr) -> u64 {
    let ip = match addr {
        SocketAddr::V4(v4) => u64::from(u32::from(*v4.ip())),
        SocketAddr::V6(v6) => {
            let bits = u128::from(*v6.ip());
            (bits as u64) ^ ((bits >> 64) as u64)
        }
    };
    (ip << 16) | u64::from(addr.port())
}

#[cfg(test)]
mod tests {
    use murmur_gossip::chitchat::ProtocolVersion;

    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 1, 0, last], 7946))
    }

    fn bad_cluster() -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: ProtocolVersion::V1,
            message: ChitchatMessage::BadCluster,
        }
    }

    /// Sends `count` messages from one socket to another and returns how many arrived
    /// within a simulated second.
    async fn deliver(network: &Network, count: usize) -> usize {
        let mut from = network.open(addr(1)).await.unwrap();
        let mut to = network.open(addr(2)).await.unwrap();
        let mut delivered = 0;
        for _ in 0..count {
            from.send(addr(2), bad_cluster()).await.unwrap();
            let arrival = tokio::time::timeout(Duration::from_secs(1), to.recv()).await;
            if arrival.is_ok() {
                delivered += 1;
            }
        }
        delivered
    }

    #[tokio::test(start_paused = true)]
    async fn delay_holds_message_until_due() {
        let conditions = Conditions {
            loss: 0.0,
            delay: Duration::from_millis(40),
            jitter: Duration::ZERO,
        };
        let network = Network::new(1, conditions);
        let mut from = network.open(addr(1)).await.unwrap();
        let mut to = network.open(addr(2)).await.unwrap();
        let sent_at = Instant::now();

        from.send(addr(2), bad_cluster()).await.unwrap();
        to.recv().await.unwrap();

        assert_eq!(sent_at.elapsed(), Duration::from_millis(40));
        assert_eq!(network.traffic(addr(1)).messages_sent, 1);
        assert_eq!(network.traffic(addr(2)).messages_received, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn loss_follows_the_seed() {
        let conditions = Conditions {
            loss: 0.3,
            ..Conditions::default()
        };
        let first = Network::new(7, conditions);
        let second = Network::new(7, conditions);

        let delivered_first = deliver(&first, 200).await;
        let delivered_second = deliver(&second, 200).await;

        assert_eq!(delivered_first, delivered_second);
        assert!((100..180).contains(&delivered_first), "{delivered_first}");
        assert_eq!(first.totals().lost, 200 - delivered_first as u64);
    }

    #[tokio::test(start_paused = true)]
    async fn partition_cuts_between_groups() {
        let network = Network::new(1, Conditions::default());
        network.partition(&[vec![addr(1)], vec![addr(2)]]);
        assert_eq!(deliver(&network, 5).await, 0);
        assert_eq!(network.totals().cut, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn heal_restores_delivery() {
        let network = Network::new(1, Conditions::default());
        network.partition(&[vec![addr(1)], vec![addr(2)]]);
        network.heal();
        assert_eq!(deliver(&network, 5).await, 5);
    }

    #[test]
    fn mix_separates_neighbouring_inputs() {
        assert_ne!(mix(1, 1), mix(1, 2));
        assert_ne!(mix(1, 1), mix(2, 1));
        assert_eq!(mix(3, 4), mix(3, 4));
    }
}
