//! A cluster of real murmur members on one simulated [`Network`]: starting them, killing
//! and restarting them, partitioning the network and changing their services.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use murmur_gossip::semver::Version;
use murmur_gossip::{GossipConfig, Health, Membership, Service, SetError, StartError};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::time::Instant;

use crate::network::{Conditions, Network, mix};

/// The port every simulated member gossips on; members differ by IP address.
pub const GOSSIP_PORT: u16 = 7946;

/// The first generation handed out, in milliseconds since the Unix epoch (November 2023).
/// Each member starts at a random point of the following day, as if the cluster had been
/// rolled out over a day.
const FIRST_GENERATION: u64 = 1_700_000_000_000;
const ROLLOUT_MILLIS: u64 = 86_400_000;

/// Keys that give the start plan and the scenario choices random streams of their own.
const START_STREAM: u64 = 1;
const SCENARIO_STREAM: u64 = 2;

/// How many 1 ms waits a restart allows for the old socket to close.
const SOCKET_CLOSE_WAITS: u32 = 1_000;

/// How many distinct services the members host, one each, round robin.
const SERVICE_KINDS: usize = 20;

/// The shape of a simulated cluster: its size, seed, gossip settings, network and start times.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// How many members.
    pub members: usize,
    /// The seed of every random choice: start times, generations, loss and delay.
    pub seed: u64,
    /// The gossip settings of every member; name, generation and seeds are set per member.
    pub gossip: GossipConfig,
    /// How many of the first members the others join through.
    pub seeds: usize,
    /// Loss, delay and jitter of the network.
    pub conditions: Conditions,
    /// Members start at random times within this span; the seeds start first.
    pub start_spread: Duration,
}

impl ClusterSpec {
    /// A cluster of `members` with murmur's default gossip settings, three seeds, a quiet
    /// network, and starts spread over one gossip interval.
    pub fn new(members: usize, seed: u64) -> Self {
        let gossip = GossipConfig::default();
        Self {
            members,
            seed,
            start_spread: gossip.get_gossip_interval(),
            gossip,
            seeds: 3,
            conditions: Conditions::default(),
        }
    }
}

/// An error from a cluster operation.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A member did not start.
    #[error("member {name} failed to start: {source}")]
    Start {
        /// The member's name.
        name: String,
        /// The start error.
        source: StartError,
    },
    /// A member rejected a change to its services.
    #[error("member {name} rejected the service change: {source}")]
    Set {
        /// The member's name.
        name: String,
        /// The rejection.
        source: SetError,
    },
    /// A killed member's socket did not close, so it could not start again.
    #[error("member {0} could not restart: its old socket is still open after 1 s")]
    AddressInUse(String),
    /// The member was killed and not restarted.
    #[error("member {0} is not running")]
    NotRunning(String),
    /// The spec requests no members or more than the address plan allows.
    #[error("invalid cluster size {0}: expected 1 to {max} members", max = MAX_MEMBERS)]
    InvalidSize(usize),
}

/// The largest cluster the address plan supports: one loopback address per member in
/// 127.1.0.0 to 127.255.255.255.
pub const MAX_MEMBERS: usize = 255 * 65_536;

/// How many members are healthy, degraded or failed, as `Membership::health` reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HealthCounts {
    /// Gossip runs as configured.
    pub healthy: usize,
    /// Gossip runs outside what its configuration is sized for.
    pub degraded: usize,
    /// Gossip stopped.
    pub failed: usize,
}

/// Running members on one network. Members are numbered from 0; the first
/// [`ClusterSpec::seeds`] are the seeds.
pub struct Cluster {
    network: Network,
    template: GossipConfig,
    seed_addrs: Vec<String>,
    slots: Vec<Slot>,
    rng: StdRng,
    born: Instant,
}

struct Slot {
    name: String,
    addr: SocketAddr,
    generation: u64,
    membership: Option<Membership>,
}

impl Cluster {
    /// Starts the members of `spec`, each at its random start time, and returns when the
    /// last one has started.
    ///
    /// # Errors
    ///
    /// [`ClusterError::InvalidSize`] for an empty or oversized spec, and
    /// [`ClusterError::Start`] when a member's gossip configuration is invalid.
    pub async fn start(spec: &ClusterSpec) -> Result<Self, ClusterError> {
        if spec.members == 0 || spec.members > MAX_MEMBERS {
            return Err(ClusterError::InvalidSize(spec.members));
        }
        let seeds = spec.seeds.clamp(1, spec.members);
        let seed_addrs = (0..seeds).map(|index| member_addr(index).to_string());
        let mut cluster = Self {
            network: Network::new(spec.seed, spec.conditions),
            template: spec.gossip.clone(),
            seed_addrs: seed_addrs.collect(),
            slots: Vec::with_capacity(spec.members),
            rng: StdRng::seed_from_u64(mix(spec.seed, SCENARIO_STREAM)),
            born: Instant::now(),
        };

        let plan = start_plan(spec);
        for start in &plan {
            cluster.slots.push(Slot {
                name: member_name(start.index),
                addr: member_addr(start.index),
                generation: start.generation,
                membership: None,
            });
        }
        let mut starts: Vec<(Duration, usize)> = plan
            .iter()
            .map(|start| (start.offset, start.index))
            .collect();
        starts.sort();
        for (offset, index) in starts {
            tokio::time::sleep_until(cluster.born + offset).await;
            cluster.launch(index).await?;
        }
        Ok(cluster)
    }

    /// How many members the cluster has, running or not.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the cluster has no members; a started cluster always has some.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The name of member `index`.
    ///
    /// # Panics
    ///
    /// When `index` is not below [`len`](Self::len).
    pub fn name(&self, index: usize) -> &str {
        &self.slots[index].name
    }

    /// The gossip address of member `index`.
    ///
    /// # Panics
    ///
    /// When `index` is not below [`len`](Self::len).
    pub fn addr(&self, index: usize) -> SocketAddr {
        self.slots[index].addr
    }

    /// Member `index`'s membership, or `None` while it is killed.
    pub fn membership(&self, index: usize) -> Option<&Membership> {
        self.slots.get(index)?.membership.as_ref()
    }

    /// The indexes of the running members.
    pub fn running(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|index| self.slots[*index].membership.is_some())
            .collect()
    }

    /// The network the members gossip on.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The gossip interval every member uses.
    pub fn gossip_interval(&self) -> Duration {
        self.template.get_gossip_interval()
    }

    /// When the first member started.
    pub fn born(&self) -> Instant {
        self.born
    }

    /// The cluster's random generator for scenario choices, seeded from the spec's seed.
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// Stops member `index` at once, as a crash would: it sends nothing more, not even
    /// the `leaving` status. Returns whether it was running.
    pub fn kill(&mut self, index: usize) -> bool {
        self.slots
            .get_mut(index)
            .and_then(|slot| slot.membership.take())
            .is_some()
    }

    /// Starts member `index` again at the same address, in a new generation. A running
    /// member is killed first.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Start`] when the member does not start, and
    /// [`ClusterError::AddressInUse`] when its old socket stays open for a second.
    pub async fn restart(&mut self, index: usize) -> Result<(), ClusterError> {
        self.kill(index);
        let addr = self.slots[index].addr;
        let mut waits = 0;
        while self.network.is_open(addr) {
            if waits == SOCKET_CLOSE_WAITS {
                return Err(ClusterError::AddressInUse(self.slots[index].name.clone()));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            waits += 1;
        }
        let lived = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        let slot = &mut self.slots[index];
        slot.generation = slot.generation.saturating_add(lived).saturating_add(1);
        self.launch(index).await
    }

    /// Advertises `service` on member `index`.
    ///
    /// # Errors
    ///
    /// [`ClusterError::NotRunning`] for a killed member, [`ClusterError::Set`] when the
    /// member rejects the service.
    pub async fn set_service(&self, index: usize, service: Service) -> Result<(), ClusterError> {
        let slot = &self.slots[index];
        let membership = slot
            .membership
            .as_ref()
            .ok_or_else(|| ClusterError::NotRunning(slot.name.clone()))?;
        membership
            .set_service(service)
            .await
            .map_err(|source| ClusterError::Set {
                name: slot.name.clone(),
                source,
            })
    }

    /// Splits the network into `groups` of member indexes; members in no group are cut
    /// off from all.
    pub fn partition(&self, groups: &[Vec<usize>]) {
        let groups: Vec<Vec<SocketAddr>> = groups
            .iter()
            .map(|group| group.iter().map(|index| self.addr(*index)).collect())
            .collect();
        self.network.partition(&groups);
    }

    /// Ends a partition.
    pub fn heal(&self) {
        self.network.heal();
    }

    /// How many running members report each health state.
    pub fn health(&self) -> HealthCounts {
        let mut counts = HealthCounts::default();
        for slot in &self.slots {
            match slot.membership.as_ref().map(Membership::health) {
                Some(Health::Healthy) => counts.healthy += 1,
                Some(Health::Degraded(_)) => counts.degraded += 1,
                Some(Health::Failed(_)) => counts.failed += 1,
                None => {}
            }
        }
        counts
    }

    /// The first failure reason a member reports, if any.
    pub fn first_failure(&self) -> Option<String> {
        self.slots.iter().find_map(
            |slot| match slot.membership.as_ref().map(Membership::health) {
                Some(Health::Failed(reason)) => Some(format!("{}: {reason}", slot.name)),
                _ => None,
            },
        )
    }

    async fn launch(&mut self, index: usize) -> Result<(), ClusterError> {
        let slot = &self.slots[index];
        let config = self
            .template
            .clone()
            .name(slot.name.clone())
            .generation(slot.generation)
            .seeds(self.seed_addrs.iter().cloned());
        let membership = Membership::start_on_transport(config, slot.addr, &self.network)
            .await
            .map_err(|source| ClusterError::Start {
                name: slot.name.clone(),
                source,
            })?;
        let service = hosted_service(index);
        membership
            .set_service(service)
            .await
            .map_err(|source| ClusterError::Set {
                name: slot.name.clone(),
                source,
            })?;
        self.slots[index].membership = Some(membership);
        Ok(())
    }
}

/// When and in which generation one member first starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedStart {
    /// The member's index.
    pub index: usize,
    /// Its start time after the cluster's birth.
    pub offset: Duration,
    /// Its first generation.
    pub generation: u64,
}

/// Draws every member's start time and first generation from the spec's seed: the
/// seeds start at once, the others at uniform random times within
/// [`ClusterSpec::start_spread`].
pub fn start_plan(spec: &ClusterSpec) -> Vec<PlannedStart> {
    let mut rng = StdRng::seed_from_u64(mix(spec.seed, START_STREAM));
    let seeds = spec.seeds.clamp(1, spec.members.max(1));
    let spread = u64::try_from(spec.start_spread.as_nanos()).unwrap_or(u64::MAX);
    (0..spec.members)
        .map(|index| {
            let offset = if index < seeds || spread == 0 {
                Duration::ZERO
            } else {
                Duration::from_nanos(rng.random_range(0..spread))
            };
            PlannedStart {
                index,
                offset,
                generation: FIRST_GENERATION + rng.random_range(0..ROLLOUT_MILLIS),
            }
        })
        .collect()
}

/// The name of member `index`: ten characters, as in the baseline measurements of plain
/// chitchat, such as `node-00042`.
pub fn member_name(index: usize) -> String {
    format!("node-{index:05}")
}

/// The gossip address of member `index`: a loopback address of its own from 127.1.0.0
/// on, never bound, since the network lives in memory.
pub fn member_addr(index: usize) -> SocketAddr {
    let [_, high, middle, low] = u32::try_from(index).unwrap_or(u32::MAX).to_be_bytes();
    let ip = Ipv4Addr::new(127, high.saturating_add(1), middle, low);
    SocketAddr::from((ip, GOSSIP_PORT))
}

/// The service member `index` hosts from its start: `svc-<k>` version 1.0.0 with two
/// methods, `k` cycling through twenty names.
pub fn hosted_service(index: usize) -> Service {
    Service::new(
        format!("svc-{}", index % SERVICE_KINDS),
        Version::new(1, 0, 0),
    )
    .method("get")
    .method("put")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_loopback() {
        let first = member_addr(0);
        let later = member_addr(70_000);
        assert_eq!(first, SocketAddr::from(([127, 1, 0, 0], GOSSIP_PORT)));
        assert_eq!(later, SocketAddr::from(([127, 2, 17, 112], GOSSIP_PORT)));
        assert!(later.ip().is_loopback());
    }

    #[test]
    fn same_seed_gives_same_start_plan() {
        let spec = ClusterSpec::new(50, 9);
        assert_eq!(start_plan(&spec), start_plan(&spec));
        assert_ne!(start_plan(&spec), start_plan(&ClusterSpec::new(50, 10)));
    }

    #[test]
    fn seeds_start_first() {
        let plan = start_plan(&ClusterSpec::new(10, 3));
        assert!(plan[..3].iter().all(|start| start.offset.is_zero()));
        assert!(plan[3..].iter().any(|start| !start.offset.is_zero()));
    }

    #[test]
    fn names_have_ten_characters() {
        assert_eq!(member_name(42), "node-00042");
        assert_eq!(member_name(99_999).len(), 10);
    }
}
