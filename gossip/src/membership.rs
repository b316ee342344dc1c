//! The running member: chitchat started over the sealed bridge, the local state it
//! advertises, and the task that turns gossip into a [`Catalog`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState, ProtocolVersion,
    spawn_chitchat,
};
use tokio::sync::{Mutex, broadcast, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::bridge::{BridgeParts, BridgeTransport};
use crate::catalog::{
    Catalog, CatalogEvent, KEY_ID, KEY_LOAD, KEY_RPC, KEY_STATUS, MemberState, SERVICE_PREFIX,
    Service, Status, format_addrs,
};
use crate::generation::next_generation;
use crate::seal::{Keyring, Seal};
use crate::stats::{GossipStats, GossipStatsSnapshot};
use crate::{DatagramSocket, GossipConfig};

/// How many catalog events a watcher may fall behind before it misses some.
const EVENT_BUFFER: usize = 4_096;

/// The maximum length of a member name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// One member of a cluster: it gossips, keeps the catalog, and advertises its own
/// services, status and load.
///
/// Dropping it stops gossip without the `leaving` status; the others then notice the
/// silence through failure detection. [`leave`](Self::leave) is the graceful way out.
pub struct Membership {
    config: GossipConfig,
    chitchat: Arc<Mutex<chitchat::Chitchat>>,
    /// Taken by `leave` or on drop, to stop the gossip task.
    handle: std::sync::Mutex<Option<ChitchatHandle>>,
    generation: u64,
    gossip_addr: SocketAddr,
    catalog: watch::Receiver<Arc<Catalog>>,
    events: broadcast::Sender<CatalogEvent>,
    health: watch::Receiver<Health>,
    stats: Arc<GossipStats>,
    keyring: Option<Keyring>,
    catalog_task: JoinHandle<()>,
    /// Set before gossip is stopped on purpose, so its end is not reported as a failure.
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// Serializes changes to the local state so that the size checks stay true.
    local: Mutex<()>,
}

/// Whether gossip is working.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Gossip runs.
    Healthy,
    /// Gossip runs, but outside what its configuration is sized for.
    Degraded(String),
    /// Gossip stopped; the catalog no longer changes.
    Failed(String),
}

/// Errors from [`Membership::start`].
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid; the message names the setting and the value.
    #[error("invalid gossip configuration: {0}")]
    InvalidConfig(String),
    /// The generation could not be read from or written to the data directory.
    #[error("failed to record the generation in {dir}: {source}")]
    Generation {
        /// The data directory.
        dir: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The socket would not tell its address.
    #[error("failed to read the gossip socket's address: {0}")]
    Socket(std::io::Error),
    /// chitchat did not start.
    #[error("failed to start gossip: {0}")]
    Gossip(String),
}

/// Errors from changes to the local state; a rejected change changes nothing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SetError {
    /// One value is larger than [`GossipConfig::max_value_bytes`].
    #[error("value of key {key:?} is {size} bytes, above the {limit}-byte limit")]
    ValueTooLarge {
        /// The key.
        key: String,
        /// The value's size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The member's whole state would exceed [`GossipConfig::max_state_bytes`].
    #[error("member state would be {size} bytes, above the {limit}-byte limit")]
    StateTooLarge {
        /// The size the state would have, in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// Adding the service would exceed [`GossipConfig::max_services`].
    #[error("service {name:?} would be service number {count}, above the limit of {limit}")]
    TooManyServices {
        /// The service being added.
        name: String,
        /// How many services there would be.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The service name is empty, too long, or has characters other than ASCII letters,
    /// digits, `.`, `_`, `-` and `/`.
    #[error(
        "invalid service name {0:?}: expected 1 to 128 ASCII letters, digits, '.', '_', '-' or '/'"
    )]
    InvalidServiceName(String),
    /// The load is negative, infinite or not a number.
    #[error("invalid load {0}: expected a finite number of at least 0")]
    InvalidLoad(String),
}

/// A stream of catalog events; see [`Membership::watch`].
pub struct CatalogWatch {
    receiver: broadcast::Receiver<CatalogEvent>,
}

/// Errors from [`CatalogWatch::next`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WatchError {
    /// The watcher fell behind and `missed` events were dropped; read
    /// [`Membership::catalog`] to catch up, then go on watching.
    #[error("catalog watcher fell behind and missed {missed} events")]
    Lagged {
        /// How many events were dropped.
        missed: u64,
    },
    /// The membership stopped.
    #[error("membership stopped")]
    Closed,
}

impl CatalogWatch {
    /// Waits for the next event.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is never lost by dropping the future.
    ///
    /// # Errors
    ///
    /// [`WatchError::Lagged`] when events were dropped, [`WatchError::Closed`] when the
    /// membership stopped.
    pub async fn next(&mut self) -> Result<CatalogEvent, WatchError> {
        self.receiver.recv().await.map_err(|error| match error {
            broadcast::error::RecvError::Lagged(missed) => WatchError::Lagged { missed },
            broadcast::error::RecvError::Closed => WatchError::Closed,
        })
    }
}

impl Membership {
    /// Starts gossiping on `socket`. `keyring` seals every datagram; `None` runs in open
    /// mode, where anyone who can reach the socket can read and join the cluster.
    ///
    /// # Errors
    ///
    /// [`StartError`] for an invalid configuration, a data directory that cannot be
    /// written, or a socket without an address.
    pub async fn start(
        config: GossipConfig,
        socket: Arc<dyn DatagramSocket>,
        keyring: Option<Keyring>,
    ) -> Result<Self, StartError> {
        let gossip_addr = match config.advertise_addr {
            Some(addr) => addr,
            None => socket.local_addr().map_err(StartError::Socket)?,
        };
        if keyring.is_none() {
            tracing::warn!(
                name = %config.name,
                addr = %gossip_addr,
                "gossip runs in OPEN MODE without a cluster key: anyone who can reach this address can read the cluster state and join it"
            );
        }
        let stats = Arc::new(GossipStats::default());
        let seal = Seal::new(
            keyring.clone(),
            &config.cluster_name,
            config.max_datagram_bytes,
        );
        let transport = BridgeTransport::new(BridgeParts {
            socket,
            seal,
            stats: stats.clone(),
            warn_interval: config.warn_interval,
        });
        Self::start_inner(config, gossip_addr, &transport, keyring, stats).await
    }

    /// Starts over a chitchat transport of the caller's, which carries chitchat's
    /// messages as they are: no seal, no byte counters, no loopback hop.
    ///
    /// This is for simulations on virtual time, where the sealed bridge's real loopback
    /// sockets cannot run; a production member uses [`start`](Self::start). The member
    /// gossips at `gossip_addr`, an address of that transport.
    ///
    /// # Errors
    ///
    /// As for [`start`](Self::start).
    pub async fn start_on_transport(
        config: GossipConfig,
        gossip_addr: SocketAddr,
        transport: &dyn chitchat::transport::Transport,
    ) -> Result<Self, StartError> {
        let stats = Arc::new(GossipStats::default());
        Self::start_inner(config, gossip_addr, transport, None, stats).await
    }

    async fn start_inner(
        config: GossipConfig,
        gossip_addr: SocketAddr,
        transport: &dyn chitchat::transport::Transport,
        keyring: Option<Keyring>,
        stats: Arc<GossipStats>,
    ) -> Result<Self, StartError> {
        validate(&config)?;
        if gossip_addr.ip().is_unspecified() || gossip_addr.port() == 0 {
            return Err(StartError::InvalidConfig(format!(
                "gossip address {gossip_addr} cannot be reached by others; set advertise_addr"
            )));
        }
        let generation = match config.generation {
            Some(generation) => generation,
            None => next_generation(config.data_dir.as_deref(), SystemTime::now()).map_err(
                |source| StartError::Generation {
                    dir: config
                        .data_dir
                        .as_deref()
                        .map(|dir| dir.display().to_string())
                        .unwrap_or_default(),
                    source,
                },
            )?,
        };
        let chitchat_id = ChitchatId::new(config.name.clone(), generation, gossip_addr);
        let handle = spawn_chitchat(
            chitchat_config(&config, chitchat_id),
            initial_values(&config),
            transport,
        )
        .await
        .map_err(|error| StartError::Gossip(format!("{error:#}")))?;

        let (catalog_tx, catalog) = watch::channel(Arc::new(Catalog::default()));
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (health_tx, health) = watch::channel(Health::Healthy);
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let catalog_task = tokio::spawn(
            CatalogTask {
                chitchat: handle.chitchat(),
                termination: Box::pin(handle.termination_watcher()),
                catalog: catalog_tx,
                events: events.clone(),
                health: health_tx,
                stats: stats.clone(),
                max_members: config.max_members,
                self_name: config.name.clone(),
                self_generation: generation,
                stopping: stopping.clone(),
                generations: HashMap::new(),
                reported_invalid: HashMap::new(),
            }
            .run()
            .instrument(tracing::info_span!("catalog", name = %config.name)),
        );
        tracing::info!(name = %config.name, generation, addr = %gossip_addr, cluster = %config.cluster_name, "gossip started");

        Ok(Self {
            config,
            chitchat: handle.chitchat(),
            handle: std::sync::Mutex::new(Some(handle)),
            generation,
            gossip_addr,
            catalog,
            events,
            health,
            stats,
            keyring,
            catalog_task,
            stopping,
            local: Mutex::new(()),
        })
    }

    /// Binds a UDP socket at `addr` and starts on it; see [`start`](Self::start).
    ///
    /// # Errors
    ///
    /// [`StartError::Socket`] when the address cannot be bound, or as for `start`.
    pub async fn bind_udp(
        config: GossipConfig,
        addr: SocketAddr,
        keyring: Option<Keyring>,
    ) -> Result<Self, StartError> {
        let socket = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(StartError::Socket)?;
        Self::start(config, Arc::new(socket), keyring).await
    }

    /// The member's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// This life's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The address other members gossip to.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &GossipConfig {
        &self.config
    }

    /// The keyring; `None` in open mode. Changes to it apply at once.
    pub fn keyring(&self) -> Option<&Keyring> {
        self.keyring.as_ref()
    }

    /// The current catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.borrow().clone()
    }

    /// A receiver of catalog snapshots, for waiting on a condition with `wait_for`.
    pub fn catalog_updates(&self) -> watch::Receiver<Arc<Catalog>> {
        self.catalog.clone()
    }

    /// A stream of the catalog's changes from now on.
    pub fn watch(&self) -> CatalogWatch {
        CatalogWatch {
            receiver: self.events.subscribe(),
        }
    }

    /// Traffic and drop counters.
    pub fn stats(&self) -> GossipStatsSnapshot {
        self.stats.snapshot()
    }

    /// Whether gossip is working.
    pub fn health(&self) -> Health {
        self.health.borrow().clone()
    }

    /// Advertises `service`, replacing an earlier one of the same name.
    ///
    /// # Errors
    ///
    /// [`SetError`] when the name is invalid or a size limit would be passed.
    pub async fn set_service(&self, service: Service) -> Result<(), SetError> {
        if !valid_service_name(&service.name) {
            return Err(SetError::InvalidServiceName(service.name));
        }
        let key = service.key();
        let value = service.encode();
        let _guard = self.local.lock().await;
        let services = self
            .with_self_state(|state| {
                state
                    .key_values()
                    .filter(|(name, _)| name.starts_with(SERVICE_PREFIX) && *name != key)
                    .count()
            })
            .await;
        if services + 1 > self.config.max_services {
            return Err(SetError::TooManyServices {
                name: service.name,
                count: services + 1,
                limit: self.config.max_services,
            });
        }
        self.set_value(&key, &value).await
    }

    /// Stops advertising the service `name`. Returns whether it was advertised.
    pub async fn remove_service(&self, name: &str) -> bool {
        let key = format!("{SERVICE_PREFIX}{name}");
        let _guard = self.local.lock().await;
        self.with_self_state(|state| {
            let present = state.contains_key(&key);
            if present {
                state.delete(&key);
            }
            present
        })
        .await
    }

    /// Advertises `status`. Members drop a `leaving` member from their catalogs at once,
    /// and routing skips a `draining` one.
    pub async fn set_status(&self, status: Status) {
        let _guard = self.local.lock().await;
        self.with_self_state(|state| state.set(KEY_STATUS, status.as_str()))
            .await;
    }

    /// Advertises `load`, in-flight calls over capacity, rounded to two decimals. A
    /// value that rounds to the one advertised changes nothing and sends nothing.
    ///
    /// # Errors
    ///
    /// [`SetError::InvalidLoad`] for a negative, infinite or NaN load.
    pub async fn set_load(&self, load: f64) -> Result<(), SetError> {
        if !load.is_finite() || load < 0.0 {
            return Err(SetError::InvalidLoad(load.to_string()));
        }
        let text = format!("{load:.2}");
        let _guard = self.local.lock().await;
        self.with_self_state(|state| {
            if state.get(KEY_LOAD) != Some(text.as_str()) {
                state.set(KEY_LOAD, &text);
            }
        })
        .await;
        Ok(())
    }

    /// Advertises the RPC addresses.
    ///
    /// # Errors
    ///
    /// [`SetError`] when the addresses would pass a size limit.
    pub async fn set_rpc_addrs(&self, addrs: &[SocketAddr]) -> Result<(), SetError> {
        let _guard = self.local.lock().await;
        self.set_value(KEY_RPC, &format_addrs(addrs)).await
    }

    /// Advertises `leaving`, waits [`GossipConfig::leave_propagation`] for it to spread,
    /// then stops gossiping. Others drop this member from their catalogs as soon as they
    /// see it. Calling it again does nothing; later changes to the local state are kept
    /// but no longer sent.
    pub async fn leave(&self) {
        let Some(handle) = self.take_handle() else {
            return;
        };
        self.set_status(Status::Leaving).await;
        tokio::time::sleep(self.config.leave_propagation).await;
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        if let Err(error) = handle.shutdown().await {
            tracing::debug!(%error, "gossip stopped with an error");
        }
        tracing::info!(name = %self.config.name, "left the cluster");
    }

    fn take_handle(&self) -> Option<ChitchatHandle> {
        self.handle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    async fn set_value(&self, key: &str, value: &str) -> Result<(), SetError> {
        if value.len() > self.config.max_value_bytes {
            return Err(SetError::ValueTooLarge {
                key: key.to_string(),
                size: value.len(),
                limit: self.config.max_value_bytes,
            });
        }
        let limit = self.config.max_state_bytes;
        self.with_self_state(|state| {
            let others: usize = state
                .key_values()
                .filter(|(existing, _)| *existing != key)
                .map(|(existing, existing_value)| existing.len() + existing_value.len())
                .sum();
            let size = others + key.len() + value.len();
            if size > limit {
                return Err(SetError::StateTooLarge { size, limit });
            }
            state.set(key, value);
            Ok(())
        })
        .await
    }

    async fn with_self_state<T>(&self, change: impl FnOnce(&mut NodeState) -> T) -> T {
        let mut guard = self.chitchat.lock().await;
        change(guard.self_node_state())
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.catalog_task.abort();
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        if let Some(handle) = self.take_handle() {
            let _ = handle.initiate_shutdown();
        }
    }
}

fn validate(config: &GossipConfig) -> Result<(), StartError> {
    let invalid = |message: String| Err(StartError::InvalidConfig(message));
    if !valid_member_name(&config.name) {
        return invalid(format!(
            "member name {:?} must be 1 to {MAX_NAME_BYTES} ASCII letters, digits, '.', '_' or '-'",
            config.name
        ));
    }
    if config.cluster_name.is_empty() {
        return invalid("cluster name is empty".to_string());
    }
    if config.gossip_interval.is_zero() {
        return invalid("gossip interval is zero".to_string());
    }
    if !(config.phi_threshold.is_finite() && config.phi_threshold > 0.0) {
        return invalid(format!(
            "phi threshold {} must be a positive number",
            config.phi_threshold
        ));
    }
    if config.detector_window == 0 {
        return invalid("failure detector window is zero samples".to_string());
    }
    if config.max_datagram_bytes < 1_200 {
        return invalid(format!(
            "maximum datagram of {} bytes is below the 1200-byte minimum",
            config.max_datagram_bytes
        ));
    }
    let initial: usize = initial_values(config)
        .iter()
        .map(|(key, value)| key.len() + value.len())
        .sum();
    if initial > config.max_state_bytes {
        return invalid(format!(
            "initial state of {initial} bytes is above the {}-byte limit",
            config.max_state_bytes
        ));
    }
    Ok(())
}

fn valid_member_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-' | b'/'))
}

fn initial_values(config: &GossipConfig) -> Vec<(String, String)> {
    vec![
        (KEY_ID.to_string(), config.node_id.clone()),
        (KEY_RPC.to_string(), format_addrs(&config.rpc_addrs)),
        (KEY_STATUS.to_string(), Status::Alive.as_str().to_string()),
        (KEY_LOAD.to_string(), "0.00".to_string()),
    ]
}

fn chitchat_config(config: &GossipConfig, chitchat_id: ChitchatId) -> ChitchatConfig {
    let listen_addr = chitchat_id.gossip_advertise_addr;
    ChitchatConfig {
        chitchat_id,
        cluster_id: config.cluster_name.clone(),
        gossip_interval: config.gossip_interval,
        listen_addr,
        seed_nodes: config.seeds.clone(),
        failure_detector_config: FailureDetectorConfig {
            phi_threshold: config.phi_threshold,
            sampling_window_size: config.detector_window,
            max_interval: config.max_heartbeat_interval,
            // chitchat's default of 5 s would make the first detection of each peer
            // take far longer than the later ones.
            initial_interval: config.gossip_interval,
            dead_node_grace_period: config.dead_member_retention,
        },
        marked_for_deletion_grace_period: config.tombstone_retention,
        catchup_callback: None,
        extra_liveness_predicate: None,
        // Every member speaks murmur, so all decode the compressed digests of V1.
        protocol_version: ProtocolVersion::V1,
    }
}

type Termination = std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Rebuilds the catalog whenever chitchat's view of live members changes, which it
/// reports once per gossip round at most.
struct CatalogTask {
    chitchat: Arc<Mutex<chitchat::Chitchat>>,
    termination: Termination,
    catalog: watch::Sender<Arc<Catalog>>,
    events: broadcast::Sender<CatalogEvent>,
    health: watch::Sender<Health>,
    stats: Arc<GossipStats>,
    max_members: usize,
    self_name: String,
    self_generation: u64,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    generations: HashMap<String, u64>,
    reported_invalid: HashMap<(String, String), String>,
}

impl CatalogTask {
    async fn run(mut self) {
        let mut live = self.chitchat.lock().await.live_nodes_watcher();
        loop {
            self.rebuild(&live.borrow_and_update());
            tokio::select! {
                changed = live.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                result = &mut self.termination => {
                    let reason = match result {
                        Ok(()) => "gossip stopped".to_string(),
                        Err(error) => format!("gossip stopped: {error:#}"),
                    };
                    if !self.stopping.load(std::sync::atomic::Ordering::Acquire) {
                        tracing::error!(error = %reason, "gossip is no longer running; the catalog is frozen");
                    }
                    self.health.send_replace(Health::Failed(reason));
                    return;
                }
            }
        }
    }

    fn rebuild(&mut self, live: &std::collections::BTreeMap<ChitchatId, NodeState>) {
        let states = live.iter().map(|(id, state)| MemberState {
            name: &id.node_id,
            generation: id.generation_id,
            gossip_addr: id.gossip_advertise_addr,
            values: state.key_values().collect(),
        });
        let stats = &self.stats;
        let reported = &mut self.reported_invalid;
        let next = Catalog::build(states, &mut self.generations, &mut |name, key, error| {
            let first_time = reported
                .insert((name.to_string(), key.to_string()), error.clone())
                .as_ref()
                != Some(&error);
            if first_time {
                stats.invalid_value();
                tracing::debug!(peer = %name, key, %error, "skipped invalid gossip value");
            }
        });

        self.check_health(live.len());
        let previous = self.catalog.borrow().clone();
        let events = previous.diff(&next);
        // The new catalog is in place before its events go out, so a watcher that reads
        // the catalog on an event finds the change there.
        self.catalog.send_replace(Arc::new(next));
        for event in events {
            log_event(&event);
            // Having no receivers is fine: no watcher is subscribed.
            let _ = self.events.send(event);
        }
    }

    /// Reports the member degraded when another member took its name with a newer
    /// generation (the others then list that one instead), or when the cluster is larger
    /// than the configuration is sized for.
    fn check_health(&self, members: usize) {
        let newest = self
            .generations
            .get(&self.self_name)
            .copied()
            .unwrap_or(self.self_generation);
        let reason = if newest > self.self_generation {
            Some(format!(
                "another member took the name {:?} with the newer generation {newest} (this one is {}); the cluster lists that one instead: names must be unique",
                self.self_name, self.self_generation
            ))
        } else if members > self.max_members {
            Some(format!(
                "cluster has {members} live members, above the {}-member limit of this gossip configuration",
                self.max_members
            ))
        } else {
            None
        };
        let next = match reason {
            Some(reason) => Health::Degraded(reason),
            None => Health::Healthy,
        };
        let current = self.health.borrow().clone();
        if current == next || matches!(current, Health::Failed(_)) {
            return;
        }
        if let Health::Degraded(reason) = &next {
            tracing::error!(error = %reason, "gossip is degraded");
        }
        self.health.send_replace(next);
    }
}

fn log_event(event: &CatalogEvent) {
    match event {
        CatalogEvent::NodeUp(member) => {
            tracing::info!(peer = %member.name, generation = member.generation, addr = %member.gossip_addr, "member up");
        }
        CatalogEvent::NodeDown(member) => {
            tracing::info!(peer = %member.name, generation = member.generation, "member down");
        }
        CatalogEvent::ServiceUp { member, service } => {
            tracing::info!(peer = %member.name, service = %service.name, version = %service.version, "service up");
        }
        CatalogEvent::ServiceDown { member, service } => {
            tracing::info!(peer = %member.name, service = %service.name, "service down");
        }
        CatalogEvent::Changed(member) => {
            tracing::debug!(peer = %member.name, status = %member.status, load = member.load, "member changed");
        }
    }
}

/// Waits until `condition` holds for the catalog, or `timeout` passes. Returns the
/// catalog that satisfied it, or `None` on timeout.
pub async fn wait_for_catalog(
    updates: &mut watch::Receiver<Arc<Catalog>>,
    timeout: Duration,
    condition: impl FnMut(&Arc<Catalog>) -> bool,
) -> Option<Arc<Catalog>> {
    let waited = tokio::time::timeout(timeout, updates.wait_for(condition)).await;
    match waited {
        Ok(Ok(catalog)) => Some(catalog.clone()),
        _ => None,
    }
}
