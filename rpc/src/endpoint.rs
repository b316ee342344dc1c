//! The QUIC endpoint: one UDP socket that serves calls and makes them, with one connection
//! per peer.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::pki_types::CertificateDer;
use thiserror::Error;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, debug_span, info, trace, warn};

use crate::HashMap;
use crate::client::{CallStream, ClientStreaming, with_deadline};
use crate::config::RpcConfig;
use crate::context::CallOptions;
use crate::identity::{Identity, NodeId};
use crate::message::Message;
use crate::server::Router;
use crate::stats::{Counters, Stats};
use crate::status::Status;
use crate::stream::{
    FrameReader, FrameWriter, QuicSend, RecvHalf, SendHalf, status_from_connection,
};
use crate::streaming::{RequestSink, Streaming};
use crate::tls;
use crate::trust::{Trust, TrustError};

/// A node's address and the node id expected at that address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The address of the node's endpoint.
    pub addr: SocketAddr,
    /// The node id its certificate must carry.
    pub node_id: NodeId,
}

impl Peer {
    /// Creates a peer.
    pub fn new(addr: SocketAddr, node_id: NodeId) -> Peer {
        Peer { addr, node_id }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.node_id, self.addr)
    }
}

/// The error returned when an endpoint cannot start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BindError {
    /// The node's certificate or the TLS configuration could not be built.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// The UDP socket could not be bound, typically because the port is in use.
    #[error("failed to bind {addr}: {source}")]
    Io {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// `bind` was called outside a tokio runtime.
    #[error("no tokio runtime is running; call bind from inside one")]
    NoRuntime,
    /// A setting is out of range for QUIC.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
}

/// A node's QUIC endpoint: it serves the handlers of its [`Router`] and calls other nodes.
///
/// One UDP socket carries everything. Calls to a peer share one connection, opened on first
/// use and opened again after it dies; each call runs on its own bidirectional stream.
/// Connections that peers open to this node are reused for calls back to them. Cloning is
/// cheap; the endpoint closes when the last clone is dropped or [`close`](Self::close) is
/// called.
#[derive(Clone)]
pub struct Endpoint {
    shared: Arc<Shared>,
    _lifetime: Arc<Lifetime>,
}

struct Shared {
    quinn: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    router: Router,
    counters: Arc<Counters>,
    pool: Pool,
    node_id: NodeId,
}

/// Closes the QUIC endpoint when the last [`Endpoint`] clone is dropped. Connection tasks
/// hold [`Shared`] but not this, so they cannot keep the endpoint open.
struct Lifetime {
    quinn: quinn::Endpoint,
    accept: JoinHandle<()>,
}

impl Drop for Lifetime {
    fn drop(&mut self) {
        self.quinn.close(VarInt::from_u32(0), b"endpoint dropped");
        self.accept.abort();
    }
}

impl Endpoint {
    /// Binds a UDP socket on `addr` and starts serving and calling as `identity`.
    ///
    /// Must be called inside a tokio runtime. In open development mode it logs a warning,
    /// because anyone who can reach `addr` can then call every method.
    ///
    /// # Errors
    ///
    /// [`BindError::Io`] when the socket cannot be bound, [`BindError::Trust`] when the
    /// certificate cannot be issued, [`BindError::NoRuntime`] outside tokio, and
    /// [`BindError::InvalidConfig`] for an idle timeout QUIC cannot express.
    pub fn bind(
        addr: SocketAddr,
        identity: &Identity,
        trust: &Trust,
        config: RpcConfig,
    ) -> Result<Endpoint, BindError> {
        let runtime = quinn::default_runtime().ok_or(BindError::NoRuntime)?;
        let tls = tls::configs(identity, trust)?;
        let transport = Arc::new(transport_config(&config)?);

        let quic_server = QuicServerConfig::try_from(tls.server)
            .map_err(|error| BindError::Trust(TrustError::Issue(error.to_string())))?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic_server));
        server_config.transport_config(transport.clone());

        let quic_client = QuicClientConfig::try_from(tls.client)
            .map_err(|error| BindError::Trust(TrustError::Issue(error.to_string())))?;
        let mut client_config = quinn::ClientConfig::new(Arc::new(quic_client));
        client_config.transport_config(transport);

        let reset_key =
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &identity.stateless_reset_key());
        let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
        let cid_key = identity.connection_id_key();
        endpoint_config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        let socket =
            std::net::UdpSocket::bind(addr).map_err(|source| BindError::Io { addr, source })?;
        let quinn = quinn::Endpoint::new(endpoint_config, Some(server_config), socket, runtime)
            .map_err(|source| BindError::Io { addr, source })?;

        let counters = Arc::new(Counters::default());
        let router = Router::with_counters(config, counters.clone());
        let shared = Arc::new(Shared {
            quinn: quinn.clone(),
            client_config,
            router,
            counters,
            pool: Pool::default(),
            node_id: identity.node_id(),
        });

        let local_addr = quinn.local_addr().unwrap_or(addr);
        let node_id = identity.node_id();
        if trust.is_open() {
            warn!(
                addr = %local_addr,
                node_id = %node_id,
                "running in open development mode without a cluster key: any peer that reaches this address can call every method"
            );
        }
        info!(addr = %local_addr, node_id = %node_id, "rpc endpoint started");

        let span = debug_span!("endpoint", addr = %local_addr);
        let accept = tokio::spawn(accept_loop(shared.clone()).instrument(span));
        Ok(Endpoint {
            shared,
            _lifetime: Arc::new(Lifetime { quinn, accept }),
        })
    }

    /// Returns the address the socket is bound to, with the actual port when bound to 0.
    ///
    /// # Errors
    ///
    /// The operating system's error if the socket's address cannot be read.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared.quinn.local_addr()
    }

    /// Returns this node's id.
    pub fn node_id(&self) -> NodeId {
        self.shared.node_id
    }

    /// Returns the [`Peer`] by which other nodes on this host reach this endpoint: its
    /// bound address and node id.
    ///
    /// # Errors
    ///
    /// The operating system's error if the socket's address cannot be read.
    pub fn peer(&self) -> io::Result<Peer> {
        Ok(Peer::new(self.local_addr()?, self.shared.node_id))
    }

    /// Returns the router whose handlers this endpoint serves; register handlers on it at
    /// any time.
    pub fn router(&self) -> &Router {
        &self.shared.router
    }

    /// Returns a snapshot of the counters of calls served and made, and of bad input.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Makes a unary call to `peer`.
    ///
    /// # Errors
    ///
    /// - the server's status;
    /// - `Unauthenticated` when `peer` presents another node id or no chain to the cluster
    ///   CA, or rejects this node;
    /// - `DeadlineExceeded` when the deadline in `options` passes;
    /// - `Unavailable` when the peer cannot be reached or the connection dies;
    /// - `ResourceExhausted` past a frame, head, in-flight or stream limit.
    pub async fn call<Req: Message, Resp: Message>(
        &self,
        peer: Peer,
        service: &str,
        method: &str,
        request: &Req,
        options: CallOptions,
    ) -> Result<Resp, Status> {
        let deadline = options.deadline();
        with_deadline(deadline, async {
            let call = self.open_call(peer).await?;
            call.unary_within(service, method, request, options).await
        })
        .await
    }

    /// Starts a server-streaming call to `peer` and returns the stream of replies.
    ///
    /// # Errors
    ///
    /// As for [`call`](Self::call), for the part of the call before the replies.
    pub async fn server_streaming<Req: Message, Resp: Message>(
        &self,
        peer: Peer,
        service: &str,
        method: &str,
        request: &Req,
        options: CallOptions,
    ) -> Result<Streaming<Resp>, Status> {
        let deadline = options.deadline();
        let call = with_deadline(deadline, self.open_call(peer)).await?;
        call.server_streaming(service, method, request, options)
            .await
    }

    /// Starts a client-streaming call to `peer`.
    ///
    /// # Errors
    ///
    /// As for [`call`](Self::call), for opening the call.
    pub async fn client_streaming<Req: Message, Resp: Message>(
        &self,
        peer: Peer,
        service: &str,
        method: &str,
        options: CallOptions,
    ) -> Result<ClientStreaming<Req, Resp>, Status> {
        let deadline = options.deadline();
        let call = with_deadline(deadline, self.open_call(peer)).await?;
        call.client_streaming(service, method, options).await
    }

    /// Starts a bidirectional call to `peer`.
    ///
    /// # Errors
    ///
    /// As for [`call`](Self::call), for opening the call.
    pub async fn bidi_streaming<Req: Message, Resp: Message>(
        &self,
        peer: Peer,
        service: &str,
        method: &str,
        options: CallOptions,
    ) -> Result<(RequestSink<Req>, Streaming<Resp>), Status> {
        let deadline = options.deadline();
        let call = with_deadline(deadline, self.open_call(peer)).await?;
        call.bidi_streaming(service, method, options).await
    }

    /// Opens a stream for one call to `peer`, connecting first if no live connection
    /// exists.
    ///
    /// # Errors
    ///
    /// `Unavailable` when the peer cannot be reached, and `Unauthenticated` when its
    /// certificate is rejected. `ResourceExhausted` when the connection already has as many
    /// open calls as the peer allows, because waiting for a stream to free up could take
    /// as long as the slowest call.
    pub async fn open_call(&self, peer: Peer) -> Result<CallStream, Status> {
        let connection = self.shared.connection(peer).await?;
        let (send, recv) = match open_stream(&connection, peer) {
            Ok(streams) => streams,
            // The pool hands out connections without asking quinn whether they closed, because
            // asking takes the connection's lock on every call. One that closed since its last
            // use is replaced here, once.
            Err(_) if connection.close_reason().is_some() => {
                self.shared.pool.forget(&peer, connection.stable_id());
                let connection = self.shared.connection(peer).await?;
                open_stream(&connection, peer)?
            }
            Err(status) => return Err(status),
        };
        let config = self.shared.router.config();
        Ok(CallStream::from_parts(
            FrameReader::new(RecvHalf::Quic(recv), config),
            FrameWriter::new(SendHalf::Quic(QuicSend::new(send)), config),
            self.shared.counters.clone(),
        ))
    }

    /// Returns the live connection to `peer`, connecting first if needed.
    #[cfg(test)]
    pub(crate) async fn connection(&self, peer: Peer) -> Result<quinn::Connection, Status> {
        self.shared.connection(peer).await
    }

    /// Closes the connections to the node `node_id`, at any address, failing the calls on
    /// them at once with `Unavailable`; the next call to it connects afresh. Returns how
    /// many connections were closed.
    ///
    /// A caller that learns by other means that the node is gone (gossip's failure
    /// detector, say) uses this so that calls stuck on a dead peer end then, not at the
    /// idle timeout.
    pub fn disconnect(&self, node_id: NodeId) -> usize {
        let closed = self.shared.pool.remove_node(node_id);
        for connection in &closed {
            connection.close(VarInt::from_u32(0), b"peer reported down");
        }
        closed.len()
    }

    /// Closes every connection at once, failing the calls on them, and waits until the
    /// peers have acknowledged the close or the idle timeout passed.
    pub async fn close(&self) {
        self.shared
            .quinn
            .close(VarInt::from_u32(0), b"endpoint closed");
        self.shared.quinn.wait_idle().await;
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("local_addr", &self.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Returns the live connection to `peer`, opening one if there is none. Concurrent
    /// callers for the same peer wait for a single handshake.
    async fn connection(self: &Arc<Shared>, peer: Peer) -> Result<quinn::Connection, Status> {
        if let Some(connection) = self.pool.pooled(&peer) {
            return Ok(connection);
        }
        // Boxed, so the rare handshake does not enlarge every call's future.
        Box::pin(self.dial(peer)).await
    }

    async fn dial(self: &Arc<Shared>, peer: Peer) -> Result<quinn::Connection, Status> {
        let gate = self.pool.gate(peer);
        let _dialing = gate.lock().await;
        if let Some(connection) = self.pool.live(&peer) {
            return Ok(connection);
        }

        let server_name = peer.node_id.to_string();
        let connecting = self
            .quinn
            .connect_with(self.client_config.clone(), peer.addr, &server_name)
            .map_err(|error| {
                Status::unavailable(format!("failed to connect to {peer}: {error}"))
            })?;
        let connection = connecting.await.map_err(|error| {
            let status = status_from_connection(&error);
            Status::new(
                status.code(),
                format!("failed to connect to {peer}: {}", status.message()),
            )
        })?;
        debug!(peer = %peer.node_id, addr = %peer.addr, "connected");
        Counters::add(&self.counters.connections_opened);

        self.pool.insert(peer, connection.clone());
        self.spawn_connection(peer, connection.clone());
        Ok(connection)
    }

    /// Serves the calls a peer opens on `connection` until it closes, then removes it
    /// from the pool.
    fn spawn_connection(self: &Arc<Shared>, peer: Peer, connection: quinn::Connection) {
        let shared = self.clone();
        let span = debug_span!("connection", peer = %peer.node_id, addr = %peer.addr);
        tokio::spawn(
            async move {
                loop {
                    match connection.accept_bi().await {
                        Ok((send, recv)) => {
                            let router = shared.router.clone();
                            // Boxed, because tokio moves a task's future several times while
                            // spawning, running and finishing it. A call's future is about a
                            // kilobyte, and a box costs one move and a pointer thereafter.
                            tokio::spawn(
                                Box::pin(serve_quic_stream(router, peer.node_id, send, recv))
                                    .in_current_span(),
                            );
                        }
                        Err(error) => {
                            debug!(error = %error, "connection closed");
                            break;
                        }
                    }
                }
                shared.pool.forget(&peer, connection.stable_id());
            }
            .instrument(span),
        );
    }

    async fn accept(self: Arc<Shared>, incoming: quinn::Incoming) {
        let remote = incoming.remote_address();
        let connection = match incoming.await {
            Ok(connection) => connection,
            Err(error) => {
                Counters::add(&self.counters.handshakes_rejected);
                if self.counters.should_warn_malformed() {
                    warn!(addr = %remote, error = %error, "rejected an incoming connection");
                } else {
                    debug!(addr = %remote, error = %error, "rejected an incoming connection");
                }
                return;
            }
        };
        let Some(node_id) = peer_node_id(&connection) else {
            Counters::add(&self.counters.handshakes_rejected);
            warn!(addr = %remote, "peer certificate names no node id, closing the connection");
            connection.close(VarInt::from_u32(1), b"certificate names no node id");
            return;
        };

        let peer = Peer::new(remote, node_id);
        debug!(peer = %node_id, addr = %remote, "accepted a connection");
        Counters::add(&self.counters.connections_accepted);
        self.pool.offer(peer, connection.clone());
        self.spawn_connection(peer, connection);
    }
}

async fn accept_loop(shared: Arc<Shared>) {
    while let Some(incoming) = shared.quinn.accept().await {
        tokio::spawn(shared.clone().accept(incoming).in_current_span());
    }
    debug!("endpoint closed, no longer accepting connections");
}

/// Returns the future that serves one call that arrived on a QUIC stream. A plain function,
/// so the spawned future is the router's own, with no wrapper around it.
fn serve_quic_stream(
    router: Router,
    peer: NodeId,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) -> impl Future<Output = ()> + Send + 'static {
    trace!(stream = %send.id(), "stream accepted");
    let send = QuicSend::new(send);
    let stopped = send.stopped();
    let config = router.config();
    let reader = FrameReader::new(RecvHalf::Quic(recv), config);
    let writer = FrameWriter::new(SendHalf::Quic(send), config);
    let caller_gone = async move {
        let _ = stopped.await;
    };
    router.serve(peer, reader, writer, caller_gone)
}

/// Opens a stream without waiting: when the peer grants no more streams, waiting could take
/// until some other call ends, so the caller gets `ResourceExhausted` at once instead.
fn open_stream(
    connection: &quinn::Connection,
    peer: Peer,
) -> Result<(quinn::SendStream, quinn::RecvStream), Status> {
    let mut open = pin!(connection.open_bi());
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match open.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(streams)) => Ok(streams),
        Poll::Ready(Err(error)) => Err(status_from_connection(&error)),
        Poll::Pending => Err(Status::resource_exhausted(format!(
            "all streams that {peer} allows on one connection are in use"
        ))),
    }
}

fn peer_node_id(connection: &quinn::Connection) -> Option<NodeId> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast_ref::<Vec<CertificateDer<'static>>>()?;
    tls::node_id_of(chain).ok()
}

fn transport_config(config: &RpcConfig) -> Result<TransportConfig, BindError> {
    let idle_timeout = IdleTimeout::try_from(config.idle_timeout).map_err(|_| {
        BindError::InvalidConfig(format!(
            "idle timeout of {:?} exceeds QUIC's limit",
            config.idle_timeout
        ))
    })?;
    let mut transport = TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(config.max_concurrent_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(config.stream_receive_window))
        .receive_window(VarInt::from_u32(config.connection_receive_window))
        .max_idle_timeout(Some(idle_timeout))
        .keep_alive_interval(config.keep_alive_interval);
    Ok(transport)
}

/// Live connections by peer, and a lock per peer so that only one handshake runs at once.
///
/// NOTE: a peer restarted on the same address with a new identity cannot send a valid
/// stateless reset for the old connection, so that connection is dropped only at its idle
/// timeout. Calls meanwhile fail with `Unavailable` or their deadline.
#[derive(Default)]
struct Pool {
    live: Mutex<HashMap<Peer, quinn::Connection>>,
    gates: Mutex<HashMap<Peer, Arc<tokio::sync::Mutex<()>>>>,
}

impl Pool {
    /// Returns the connection kept for `peer`, which may have closed since. The caller finds
    /// out when opening a stream on it fails.
    fn pooled(&self, peer: &Peer) -> Option<quinn::Connection> {
        lock(&self.live).get(peer).cloned()
    }

    /// Returns the connection kept for `peer` if it is still open.
    fn live(&self, peer: &Peer) -> Option<quinn::Connection> {
        let live = lock(&self.live);
        let connection = live.get(peer)?;
        connection
            .close_reason()
            .is_none()
            .then(|| connection.clone())
    }

    fn gate(&self, peer: Peer) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.gates).entry(peer).or_default().clone()
    }

    fn insert(&self, peer: Peer, connection: quinn::Connection) {
        lock(&self.live).insert(peer, connection);
    }

    /// Keeps an incoming connection for calls back to its peer, unless a live one exists.
    fn offer(&self, peer: Peer, connection: quinn::Connection) {
        let mut live = lock(&self.live);
        let keep_current = live
            .get(&peer)
            .is_some_and(|current| current.close_reason().is_none());
        if !keep_current {
            live.insert(peer, connection);
        }
    }

    /// Removes and returns every connection kept for peers with `node_id`.
    fn remove_node(&self, node_id: NodeId) -> Vec<quinn::Connection> {
        let mut live = lock(&self.live);
        let peers: Vec<Peer> = live
            .keys()
            .filter(|peer| peer.node_id == node_id)
            .copied()
            .collect();
        peers.iter().filter_map(|peer| live.remove(peer)).collect()
    }

    /// Removes the connection with `stable_id`, if it is still the one kept for `peer`.
    fn forget(&self, peer: &Peer, stable_id: usize) {
        let mut live = lock(&self.live);
        if live
            .get(peer)
            .is_some_and(|current| current.stable_id() == stable_id)
        {
            live.remove(peer);
        }
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked: every critical
/// section is a single map operation.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
