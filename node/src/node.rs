//! The node: gossip membership and the RPC endpoint started together, the services it
//! hosts, and its orderly shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use murmur_gossip::{Catalog, GossipConfig, Health, Keyring, Membership, Status as MemberStatus};
use murmur_rpc::{Endpoint, Identity, NodeId, RpcConfig, Trust};
use tokio::sync::watch;

use crate::client::{Client, RouteState};
use crate::cluster_key::ClusterKey;
use crate::hosting::ServiceDef;
use crate::metrics::Metrics;

/// The default number of calls a node serves at once; see [`NodeBuilder::capacity`].
pub const DEFAULT_CAPACITY: usize = 4_096;

/// Builds and starts a [`Node`]; see [`Node::builder`].
#[derive(Debug, Default)]
pub struct NodeBuilder {
    name: Option<String>,
    data_dir: Option<PathBuf>,
    gossip_addr: Option<SocketAddr>,
    rpc_addr: Option<SocketAddr>,
    seeds: Vec<String>,
    cluster_key: Option<ClusterKey>,
    gossip: Option<GossipConfig>,
    rpc: Option<RpcConfig>,
    capacity: Option<usize>,
    drain_grace: Option<Duration>,
    drain_propagation: Option<Duration>,
}

/// Errors from [`NodeBuilder::start`].
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No name was given.
    #[error("node name is missing: set it with NodeBuilder::name")]
    MissingName,
    /// The node's key pair could not be loaded or created.
    #[error("failed to load or create the node identity")]
    Identity(#[from] murmur_rpc::IdentityError),
    /// The cluster certificate authority could not be set up from the cluster key.
    #[error("failed to set up the cluster certificate authority")]
    Trust(#[from] murmur_rpc::TrustError),
    /// The RPC endpoint could not bind.
    #[error("failed to start the RPC endpoint")]
    Rpc(#[from] murmur_rpc::BindError),
    /// Gossip could not start.
    #[error("failed to start gossip")]
    Gossip(#[from] murmur_gossip::StartError),
    /// An address cannot be advertised to other members.
    #[error("{0}")]
    Address(String),
}

/// Errors from [`Node::host`].
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Gossip rejected the service's description (too large, bad name, too many).
    #[error("failed to advertise service {service}")]
    Advertise {
        /// The service name.
        service: String,
        /// The reason gossip rejected it.
        source: murmur_gossip::SetError,
    },
}

impl NodeBuilder {
    /// The node's name, unique in the cluster; a node started again under the same name
    /// replaces the old one everywhere. Required.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The directory for the node's key pair and generation counter, created if missing.
    /// Default none: a fresh identity each start, so the node id changes on restart.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// The UDP address gossip listens on. Default `127.0.0.1:0`, a free port on
    /// loopback: set it for a node that other machines must reach.
    pub fn gossip_addr(mut self, addr: SocketAddr) -> Self {
        self.gossip_addr = Some(addr);
        self
    }

    /// The UDP address the QUIC endpoint listens on. Default `127.0.0.1:0`.
    pub fn rpc_addr(mut self, addr: SocketAddr) -> Self {
        self.rpc_addr = Some(addr);
        self
    }

    /// Gossip addresses of members to join through (`IP:PORT` or `HOST:PORT`). Default
    /// none: the node starts a cluster of its own and waits to be contacted.
    pub fn join<S: Into<String>>(mut self, seeds: impl IntoIterator<Item = S>) -> Self {
        self.seeds = seeds.into_iter().map(Into::into).collect();
        self
    }

    /// The cluster key: it seals gossip and derives the certificate authority that signs
    /// every member's certificate. Default none: open development mode, announced with a
    /// warning at start, where anyone who reaches the node can join and call.
    pub fn cluster_key(mut self, key: ClusterKey) -> Self {
        self.cluster_key = Some(key);
        self
    }

    /// Gossip settings. Default [`GossipConfig::default`], suited to a LAN; the name, seeds,
    /// node id and RPC addresses in it are replaced by the builder's.
    pub fn gossip_config(mut self, config: GossipConfig) -> Self {
        self.gossip = Some(config);
        self
    }

    /// RPC settings. Default [`RpcConfig::default`].
    pub fn rpc_config(mut self, config: RpcConfig) -> Self {
        self.rpc = Some(config);
        self
    }

    /// How many calls the node serves at once; more get `ResourceExhausted` at once.
    /// The node gossips its calls in flight over this as its load. Default 4 096.
    pub fn capacity(mut self, calls: usize) -> Self {
        self.capacity = Some(calls);
        self
    }

    /// How long [`Node::shutdown`] waits for calls in flight to finish. Default 10 s.
    pub fn drain_grace(mut self, grace: Duration) -> Self {
        self.drain_grace = Some(grace);
        self
    }

    /// How long [`Node::shutdown`] keeps serving after advertising `draining`, so that
    /// callers learn of it before the node stops taking calls. Default four gossip
    /// intervals.
    pub fn drain_propagation(mut self, wait: Duration) -> Self {
        self.drain_propagation = Some(wait);
        self
    }

    /// Starts the node: binds the RPC endpoint, then joins the cluster.
    ///
    /// # Errors
    ///
    /// [`StartError`] naming what failed.
    pub async fn start(self) -> Result<Node, StartError> {
        let name = self.name.ok_or(StartError::MissingName)?;
        let identity = match &self.data_dir {
            Some(dir) => Identity::load_or_generate(dir)?,
            None => Identity::generate()?,
        };
        let (trust, keyring) = match &self.cluster_key {
            Some(key) => (
                Trust::derived(key.as_bytes())?,
                Some(Keyring::from_cluster_key(key.as_bytes())),
            ),
            None => (Trust::open_dev(), None),
        };
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let capacity = self.capacity.unwrap_or(DEFAULT_CAPACITY);
        let mut rpc_config = self.rpc.unwrap_or_default();
        rpc_config.max_in_flight_calls(capacity);
        let endpoint = Endpoint::bind(
            self.rpc_addr.unwrap_or(loopback),
            &identity,
            &trust,
            rpc_config.clone(),
        )?;
        let rpc_addr = endpoint.local_addr().map_err(|error| {
            StartError::Address(format!("failed to read the RPC address: {error}"))
        })?;
        if rpc_addr.ip().is_unspecified() {
            return Err(StartError::Address(format!(
                "RPC address {rpc_addr} is a wildcard that other members cannot dial; bind a specific address"
            )));
        }

        let mut gossip = self
            .gossip
            .unwrap_or_default()
            .name(name.clone())
            .seeds(self.seeds)
            .node_id(identity.node_id().to_string())
            .rpc_addrs([rpc_addr]);
        if let Some(dir) = &self.data_dir {
            gossip = gossip.data_dir(dir);
        }
        let gossip_interval = gossip.get_gossip_interval();
        let membership =
            Membership::bind_udp(gossip, self.gossip_addr.unwrap_or(loopback), keyring).await?;

        let (stopped, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            name,
            node_id: identity.node_id(),
            catalog: membership.catalog_updates(),
            membership,
            endpoint,
            rpc_config,
            capacity,
            routes: Mutex::new(HashMap::new()),
            serving: Arc::new(InFlight::default()),
            hosted: Mutex::new(HashMap::new()),
            metrics: Metrics::new(),
            drain_grace: self.drain_grace.unwrap_or(Duration::from_secs(10)),
            drain_propagation: self.drain_propagation.unwrap_or(gossip_interval * 4),
            draining: AtomicBool::new(false),
            stopped,
        });
        tokio::spawn(report_load(Arc::downgrade(&inner)));
        tokio::spawn(disconnect_failed(
            Arc::downgrade(&inner),
            inner.membership.watch(),
        ));
        Ok(Node { inner })
    }
}

/// A running murmur node: it gossips, hosts services and calls other nodes' services
/// by name. Clones share the node.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) name: String,
    pub(crate) node_id: NodeId,
    pub(crate) catalog: watch::Receiver<Arc<Catalog>>,
    pub(crate) membership: Membership,
    pub(crate) endpoint: Endpoint,
    pub(crate) rpc_config: RpcConfig,
    /// Calls this node can serve at once: the denominator of its gossiped load.
    capacity: usize,
    pub(crate) routes: Mutex<HashMap<String, Arc<RouteState>>>,
    pub(crate) serving: Arc<InFlight>,
    /// Descriptions of the services this node hosts, so that it can route to them before
    /// gossip has listed them in its own catalog.
    pub(crate) hosted: Mutex<HashMap<String, murmur_gossip::Service>>,
    pub(crate) metrics: Metrics,
    drain_grace: Duration,
    drain_propagation: Duration,
    draining: AtomicBool,
    stopped: watch::Sender<bool>,
}

/// Counts the calls this node is serving.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Decrements the in-flight count when dropped, with the handler's future.
pub(crate) struct InFlightGuard(Arc<InFlight>);

impl InFlight {
    pub(crate) fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.clone())
    }

    pub(crate) fn current(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Node {
    /// Starts building a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// Returns the node's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Returns the node's id: blake3 of its public key, proven by its certificate.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// Returns the address gossip listens on.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.inner.membership.gossip_addr()
    }

    /// Returns the address the RPC endpoint listens on.
    pub fn rpc_addr(&self) -> SocketAddr {
        self.inner
            .endpoint
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// This life's generation, higher after each restart.
    pub fn generation(&self) -> u64 {
        self.inner.membership.generation()
    }

    /// The current catalog: members and the services they host.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.inner.catalog.borrow().clone()
    }

    /// The membership underneath, to watch catalog events or rotate gossip keys.
    pub fn membership(&self) -> &Membership {
        &self.inner.membership
    }

    /// The RPC endpoint underneath, for its counters or calls to a known peer.
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// Counters and histograms of calls, in Prometheus text format, with gossip and RPC
    /// counters appended.
    pub fn metrics_text(&self) -> String {
        let gauges = crate::metrics::ClusterGauges {
            members: self.catalog().len(),
            gossip_healthy: self.inner.membership.health() == Health::Healthy,
            serving: self.inner.serving.current(),
        };
        self.inner.metrics.encode(
            &self.inner.membership.stats(),
            &self.inner.endpoint.stats(),
            gauges,
        )
    }

    /// Whether gossip runs, and whether the node is draining.
    pub fn health(&self) -> NodeHealth {
        NodeHealth {
            gossip: self.inner.membership.health(),
            draining: self.inner.draining.load(Ordering::Acquire),
            serving: self.inner.serving.current(),
        }
    }

    /// Hosts a service: registers its methods on the RPC endpoint and advertises it in
    /// gossip. Hosting a service of the same name again replaces it.
    ///
    /// # Errors
    ///
    /// [`HostError::Advertise`] when gossip rejects the description; the methods are then
    /// not registered either.
    pub async fn host(&self, service: ServiceDef) -> Result<(), HostError> {
        let name = service.name().to_string();
        let description = service.describe();
        // Gossip checks the description first, so a rejected one leaves the service as it
        // was: still advertised and still served.
        if let Err(source) = self.inner.membership.set_service(description).await {
            return Err(HostError::Advertise {
                service: name,
                source,
            });
        }
        let router = self.inner.endpoint.router();
        router.remove_service(&name);
        let description = service.describe();
        service.register(router, &self.inner.serving);
        self.hosted().insert(name.clone(), description);
        tracing::info!(service = %name, "hosting service");
        Ok(())
    }

    /// Stops hosting `service`: withdraws it from gossip, then unregisters its methods.
    /// Returns whether it was hosted.
    pub async fn unhost(&self, service: &str) -> bool {
        self.hosted().remove(service);
        let advertised = self.inner.membership.remove_service(service).await;
        let registered = self.inner.endpoint.router().remove_service(service);
        advertised || registered
    }

    /// A client that calls `service` by name on whichever members host it.
    pub fn client(&self, service: impl Into<String>) -> Client {
        Client::new(self.clone(), service.into())
    }

    /// Shuts down gracefully: advertises `draining` so callers pick other members, keeps
    /// serving while that spreads, lets calls in flight finish within the drain grace,
    /// then leaves the cluster and closes the endpoint. Calling it again waits for the
    /// first shutdown to finish.
    ///
    /// # Cancel safety
    ///
    /// The shutdown runs in a task of its own: dropping this future stops the wait, not
    /// the shutdown.
    pub async fn shutdown(&self) {
        let mut stopped = self.inner.stopped.subscribe();
        if !self.inner.draining.swap(true, Ordering::AcqRel) {
            let node = self.clone();
            tokio::spawn(async move { node.drain_and_stop().await });
        }
        let _ = stopped.wait_for(|stopped| *stopped).await;
    }

    /// Whether [`shutdown`](Self::shutdown) has begun.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// Waits until the node has stopped.
    pub async fn stopped(&self) {
        let mut stopped = self.inner.stopped.subscribe();
        let _ = stopped.wait_for(|stopped| *stopped).await;
    }

    async fn drain_and_stop(&self) {
        let started = Instant::now();
        tracing::info!(name = %self.inner.name, "draining");
        self.inner
            .membership
            .set_status(MemberStatus::Draining)
            .await;
        tokio::time::sleep(self.inner.drain_propagation).await;

        let deadline = started + self.inner.drain_propagation + self.inner.drain_grace;
        let serving = &self.inner.serving;
        while serving.current() > 0 {
            let idle = serving.idle.notified();
            if serving.current() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline.into(), idle)
                .await
                .is_err()
            {
                tracing::warn!(
                    in_flight = serving.current(),
                    "drain grace over with calls still in flight; they will fail"
                );
                break;
            }
        }

        self.inner.membership.leave().await;
        self.inner.endpoint.close().await;
        self.inner.stopped.send_replace(true);
        tracing::info!(name = %self.inner.name, elapsed = ?started.elapsed(), "stopped");
    }

    pub(crate) fn hosted(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, murmur_gossip::Service>> {
        self.inner
            .hosted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn route(&self, service: &str) -> Arc<RouteState> {
        let mut routes = self
            .inner
            .routes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        routes
            .entry(service.to_string())
            .or_insert_with(|| Arc::new(RouteState::new()))
            .clone()
    }
}

/// A node's health, as `/v1/health` reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeHealth {
    /// Whether gossip runs.
    pub gossip: Health,
    /// Whether the node is shutting down.
    pub draining: bool,
    /// Calls the node is serving now.
    pub serving: usize,
}

impl NodeHealth {
    /// Whether the node works as it should: gossip runs and it is not draining.
    pub fn is_healthy(&self) -> bool {
        self.gossip == Health::Healthy && !self.draining
    }
}

/// Closes the connections to members that gossip reports failed, so that calls stuck on
/// a dead peer fail now and are retried elsewhere, instead of waiting for QUIC's idle
/// timeout. Members that left gracefully finished their calls first and are left alone.
async fn disconnect_failed(node: std::sync::Weak<Inner>, mut events: murmur_gossip::CatalogWatch) {
    loop {
        let event = match events.next().await {
            Ok(event) => event,
            Err(murmur_gossip::WatchError::Lagged { .. }) => continue,
            Err(murmur_gossip::WatchError::Closed) => return,
        };
        let murmur_gossip::CatalogEvent::NodeDown(member) = event else {
            continue;
        };
        let Some(inner) = node.upgrade() else {
            return;
        };
        let catalog = inner.catalog.borrow().clone();
        let replaced = catalog
            .member(&member.name)
            .is_some_and(|current| current.generation > member.generation);
        if catalog.is_leaving(&member.name) || replaced {
            continue;
        }
        if let Ok(node_id) = member.node_id.parse::<NodeId>() {
            let closed = inner.endpoint.disconnect(node_id);
            if closed > 0 {
                tracing::debug!(peer = %member.name, closed, "closed connections to a member reported down");
            }
        }
    }
}

/// Gossips the node's load, calls served in flight over capacity, once a second while
/// the node lives. Gossip sends it only when it changed.
async fn report_load(node: std::sync::Weak<Inner>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticks.tick().await;
        let Some(inner) = node.upgrade() else {
            return;
        };
        if *inner.stopped.borrow() {
            return;
        }
        let capacity = inner.capacity.max(1) as f64;
        let load = inner.serving.current() as f64 / capacity;
        let _ = inner.membership.set_load(load).await;
    }
}
