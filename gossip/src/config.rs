//! The settings of one member's gossip.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::seal::MAX_UDP_PAYLOAD;

/// The settings of one member's gossip. `Default` suits a LAN cluster of 3 to 1 000
/// members; only the name has no useful default.
///
/// Traffic: every gossip round a member exchanges its digest (a few dozen bytes per
/// known member, compressed) with up to three peers, so idle traffic per member grows
/// with the cluster size over the gossip interval. The simulator measures it.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    pub(crate) name: String,
    pub(crate) cluster_name: String,
    pub(crate) seeds: Vec<String>,
    pub(crate) advertise_addr: Option<SocketAddr>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) generation: Option<u64>,
    pub(crate) node_id: String,
    pub(crate) rpc_addrs: Vec<SocketAddr>,
    pub(crate) gossip_interval: Duration,
    pub(crate) phi_threshold: f64,
    pub(crate) detector_window: usize,
    pub(crate) max_heartbeat_interval: Duration,
    pub(crate) dead_member_retention: Duration,
    pub(crate) tombstone_retention: Duration,
    pub(crate) leave_propagation: Duration,
    pub(crate) max_value_bytes: usize,
    pub(crate) max_services: usize,
    pub(crate) max_state_bytes: usize,
    pub(crate) max_datagram_bytes: usize,
    pub(crate) max_members: usize,
    pub(crate) warn_interval: Duration,
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            cluster_name: "murmur".to_string(),
            seeds: Vec::new(),
            advertise_addr: None,
            data_dir: None,
            generation: None,
            node_id: String::new(),
            rpc_addrs: Vec::new(),
            gossip_interval: Duration::from_millis(250),
            phi_threshold: 8.0,
            detector_window: 100,
            max_heartbeat_interval: Duration::from_secs(10),
            dead_member_retention: Duration::from_secs(5 * 60),
            tombstone_retention: Duration::from_secs(10 * 60),
            leave_propagation: Duration::from_secs(1),
            max_value_bytes: 4 * 1024,
            max_services: 64,
            max_state_bytes: 32 * 1024,
            max_datagram_bytes: MAX_UDP_PAYLOAD,
            max_members: 1_000,
            warn_interval: Duration::from_secs(10),
        }
    }
}

impl GossipConfig {
    /// The default settings for a member called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Settings for several members on one machine, as in tests and demos: a 100 ms
    /// gossip interval, so failures are detected in about a second, and dead members
    /// forgotten after a minute.
    pub fn local(name: impl Into<String>) -> Self {
        Self {
            gossip_interval: Duration::from_millis(100),
            dead_member_retention: Duration::from_secs(60),
            tombstone_retention: Duration::from_secs(120),
            leave_propagation: Duration::from_millis(500),
            ..Self::new(name)
        }
    }

    /// The member's name, unique in the cluster: 1 to 64 ASCII letters, digits, `.`, `_`
    /// or `-`. A member started again under the same name replaces the old one. The name
    /// travels in every digest entry, so short names keep gossip small. No default.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The cluster's name. Members of clusters with other names never join each other,
    /// and sealed datagrams name the cluster they were sealed for. Default `murmur`.
    pub fn cluster_name(mut self, cluster_name: impl Into<String>) -> Self {
        self.cluster_name = cluster_name.into();
        self
    }

    /// Addresses to join through, as `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT`. Host names
    /// are resolved again every minute, so a seed can move. Default none: the member
    /// waits for others to contact it.
    pub fn seeds<S: Into<String>>(mut self, seeds: impl IntoIterator<Item = S>) -> Self {
        self.seeds = seeds.into_iter().map(Into::into).collect();
        self
    }

    /// The address other members gossip to. Default: the socket's own address, which
    /// must then not be a wildcard such as `0.0.0.0`.
    pub fn advertise_addr(mut self, addr: SocketAddr) -> Self {
        self.advertise_addr = Some(addr);
        self
    }

    /// A directory for the member's state across restarts (the last generation used).
    /// Default none: the generation then comes from the clock alone, so a clock set back
    /// between two starts would make the new life look older than the old one.
    pub fn data_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.data_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Sets a fixed generation for this start, used in place of the clock and the data
    /// directory. Default none.
    ///
    /// This is for simulations on virtual time, where the wall clock does not follow the
    /// cluster's clock and runs must repeat. The caller must then give each restart a
    /// higher generation than the life before, or the others take it for the old life.
    pub fn generation(mut self, generation: u64) -> Self {
        self.generation = Some(generation);
        self
    }

    /// The node id gossiped under `id`, as the RPC layer prints it. Default empty.
    pub fn node_id(mut self, node_id: impl Into<String>) -> Self {
        self.node_id = node_id.into();
        self
    }

    /// The RPC addresses gossiped under `rpc`. Default none.
    pub fn rpc_addrs(mut self, addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.rpc_addrs = addrs.into_iter().collect();
        self
    }

    /// How often a member starts a gossip round with up to three peers. Default 250 ms.
    ///
    /// Failure detection takes about `phi_threshold` times the mean interval between
    /// heartbeats, which is close to this interval, so the default detects a crash in
    /// roughly 2 to 3 s. Halving it halves detection time and doubles idle traffic.
    pub fn gossip_interval(mut self, interval: Duration) -> Self {
        self.gossip_interval = interval;
        self
    }

    /// How many mean heartbeat intervals of silence mark a member dead. Default 8.
    /// Lower detects faster and raises false alarms on lossy or loaded networks.
    pub fn phi_threshold(mut self, threshold: f64) -> Self {
        self.phi_threshold = threshold;
        self
    }

    /// How many heartbeat intervals the failure detector keeps per peer. Default 100.
    /// Each costs 8 bytes per peer; more samples adapt more slowly to a change in the
    /// network's timing.
    pub fn detector_window(mut self, samples: usize) -> Self {
        self.detector_window = samples;
        self
    }

    /// Gaps between heartbeats longer than this are left out of the failure detector's
    /// mean, so one long pause does not teach it to wait longer. Default 10 s.
    pub fn max_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.max_heartbeat_interval = interval;
        self
    }

    /// How long a dead member's state is remembered before it is forgotten. Default
    /// 5 minutes. While remembered, members still gossip with it now and then, which is
    /// how a partition heals; after that only seeds bring the sides back together.
    pub fn dead_member_retention(mut self, retention: Duration) -> Self {
        self.dead_member_retention = retention;
        self
    }

    /// How long a removed key is remembered so that every member learns of the removal.
    /// Default 10 minutes. A member out of touch for longer is sent the full state again.
    pub fn tombstone_retention(mut self, retention: Duration) -> Self {
        self.tombstone_retention = retention;
        self
    }

    /// How long [`Membership::leave`](crate::Membership::leave) waits for the `leaving`
    /// status to spread before it stops gossiping. Default 1 s, four gossip rounds.
    pub fn leave_propagation(mut self, wait: Duration) -> Self {
        self.leave_propagation = wait;
        self
    }

    /// The largest value of one key, such as one service's description, in bytes.
    /// Default 4 KiB. Larger values are rejected when set.
    pub fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.max_value_bytes = bytes;
        self
    }

    /// The maximum number of services one member may advertise. Default 64.
    pub fn max_services(mut self, services: usize) -> Self {
        self.max_services = services;
        self
    }

    /// The largest total of one member's keys and values, in bytes. Default 32 KiB.
    /// Every member stores every other member's state, so this times the cluster size
    /// bounds the memory gossip state can take.
    pub fn max_state_bytes(mut self, bytes: usize) -> Self {
        self.max_state_bytes = bytes;
        self
    }

    /// The largest datagram sent or accepted, in bytes. Default 65 507, the most UDP
    /// carries over IPv4. Larger datagrams arriving are dropped and counted.
    pub fn max_datagram_bytes(mut self, bytes: usize) -> Self {
        self.max_datagram_bytes = bytes;
        self
    }

    /// The largest cluster this member will take part in without reporting itself
    /// degraded. Default 1 000. chitchat sends every member's digest entry in each
    /// exchange and stops gossiping when the digest no longer fits one datagram: near
    /// 1 300 members with its uncompressed digests, and, by a projection from the
    /// simulator (not a run), near 6 400 with the compressed digests murmur uses, for
    /// 10-character names. Idle traffic, about 250 bytes per second per member for each
    /// member in the cluster, grows costly well before that.
    pub fn max_members(mut self, members: usize) -> Self {
        self.max_members = members;
        self
    }

    /// How often a warning about bad datagrams from one source address may be logged;
    /// the others go to `debug`. Default 10 s.
    pub fn warn_interval(mut self, interval: Duration) -> Self {
        self.warn_interval = interval;
        self
    }

    /// The member's name.
    pub fn get_name(&self) -> &str {
        &self.name
    }

    /// The gossip interval.
    pub fn get_gossip_interval(&self) -> Duration {
        self.gossip_interval
    }
}
