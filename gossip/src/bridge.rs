//! The bridge that lets chitchat gossip through a [`DatagramSocket`], with every
//! datagram sealed.
//!
//! chitchat's `Transport` trait hands a socket whole messages (`ChitchatEnvelope`), not
//! bytes, and chitchat 0.13 keeps its serializer private. Its own UDP socket
//! (`chitchat::transport::UdpSocket`) is public, though, and serializes on send and
//! parses on receive. The bridge puts one of those, the *codec socket*, on an ephemeral
//! port of 127.0.0.1 and talks to it over loopback:
//!
//! ```text
//! send:  chitchat ──envelope──▶ codec socket ──bytes──▶ egress socket ──seal──▶ network
//! recv:  network ──open──▶ ingress socket of that peer ──bytes──▶ codec socket ──▶ chitchat
//! ```
//!
//! On receive the codec socket reports the loopback address a message came from, so
//! each remote peer gets an ingress socket of its own and that address maps back to the
//! peer. chitchat skips a message it cannot parse and waits for the next, and with one
//! sender per peer a skipped message cannot shift later ones onto the wrong peer.
//! chitchat drops a pending `recv` whenever its gossip timer fires, so every await in
//! `recv` is cancel safe and the work between awaits is synchronous.
//!
//! Datagrams on the loopback hop from any address the bridge did not create itself are
//! dropped and counted, so another local process cannot slip clear text past the seal.
//! NOTE: chitchat's codec socket parses such a datagram before the bridge sees its
//! sender and drops it, so a local process can make chitchat parse (and log) bytes that
//! were never sealed; it cannot change the cluster state through them. Ingress sockets
//! idle for a minute are closed; at most [`MAX_PEERS`] exist at once, each holding a file
//! descriptor, so a member of a cluster of N members may hold up to N descriptors.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};

use crate::DatagramSocket;
use crate::seal::{GossipKey, MAX_UDP_PAYLOAD, Seal};
use crate::stats::{GossipStats, WarnLimiter};

/// The maximum number of remote peers with an ingress socket at once; each costs a file
/// descriptor.
pub const MAX_PEERS: usize = 2_048;

/// How long an ingress socket may sit unused before it is closed.
const PEER_IDLE: Duration = Duration::from_secs(60);

/// How long to wait for the codec socket's bytes on the loopback hop. They arrive in
/// microseconds; the bound only keeps a lost loopback datagram from stalling gossip.
const LOOPBACK_WAIT: Duration = Duration::from_secs(1);

/// Hands chitchat a [`Bridge`] the one time it opens its transport.
pub(crate) struct BridgeTransport {
    parts: Mutex<Option<BridgeParts>>,
}

pub(crate) struct BridgeParts {
    pub(crate) socket: Arc<dyn DatagramSocket>,
    pub(crate) seal: Seal,
    pub(crate) stats: Arc<GossipStats>,
    pub(crate) warn_interval: Duration,
}

impl BridgeTransport {
    pub(crate) fn new(parts: BridgeParts) -> Self {
        Self {
            parts: Mutex::new(Some(parts)),
        }
    }
}

#[async_trait]
impl Transport for BridgeTransport {
    async fn open(&self, _listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let parts = self
            .parts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
            .context("the gossip bridge can be opened only once")?;
        Ok(Box::new(Bridge::open(parts).await?))
    }
}

struct Bridge {
    network: Arc<dyn DatagramSocket>,
    seal: Seal,
    stats: Arc<GossipStats>,
    warnings: WarnLimiter,
    codec: chitchat::transport::UdpSocket,
    codec_addr: SocketAddr,
    egress: tokio::net::UdpSocket,
    peers: PeerTable,
    receive_buf: Vec<u8>,
    egress_buf: Vec<u8>,
    opened: Vec<u8>,
    sealed: Vec<u8>,
}

/// The result of one turn of the receive loop.
enum Arrival {
    Parsed(anyhow::Result<RecvOutcome>),
    FromNetwork(io::Result<(usize, SocketAddr)>),
}

impl Bridge {
    async fn open(parts: BridgeParts) -> anyhow::Result<Self> {
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let codec = chitchat::transport::UdpSocket::open(loopback).await?;
        let codec_addr = codec.local_addr()?;
        let egress = tokio::net::UdpSocket::bind(loopback)
            .await
            .context("failed to bind the gossip bridge's loopback socket")?;
        Ok(Self {
            network: parts.socket,
            seal: parts.seal,
            stats: parts.stats,
            warnings: WarnLimiter::new(parts.warn_interval),
            codec,
            codec_addr,
            egress,
            peers: PeerTable::default(),
            // One byte more than any datagram can be, so an oversized one is seen as such.
            receive_buf: vec![0; MAX_UDP_PAYLOAD + 1],
            egress_buf: vec![0; MAX_UDP_PAYLOAD + 1],
            opened: Vec::with_capacity(MAX_UDP_PAYLOAD),
            sealed: Vec::with_capacity(MAX_UDP_PAYLOAD),
        })
    }

    /// Opens one datagram from the network and passes it to the codec socket through
    /// the sender's ingress socket. Synchronous, so cancelling `recv` cannot cut it short.
    fn forward(&mut self, len: usize, from: SocketAddr) {
        let datagram = &self.receive_buf[..len];
        let opened_with = match self.seal.open(datagram, &mut self.opened) {
            Ok(key) => key,
            Err(error) => {
                self.stats.dropped(&error);
                if self.warnings.allow(from, Instant::now()) {
                    tracing::warn!(peer = %from, %error, "dropped gossip datagram");
                } else {
                    tracing::debug!(peer = %from, %error, "dropped gossip datagram");
                }
                return;
            }
        };

        let now = Instant::now();
        let ingress = match self.peers.ingress_for(from, opened_with, now) {
            Ok(ingress) => ingress,
            Err(error) => {
                self.stats.overload();
                if self.warnings.allow(from, now) {
                    tracing::warn!(peer = %from, %error, "dropped gossip datagram");
                }
                return;
            }
        };
        match ingress.send_to(&self.opened, self.codec_addr) {
            Ok(_) => self.stats.received(len),
            Err(error) => {
                self.stats.overload();
                tracing::debug!(peer = %from, %error, "failed to pass a gossip message over the loopback hop");
            }
        }
    }

    /// Discards bytes left on the egress socket by a send that chitchat abandoned.
    fn drain_egress(&mut self) {
        while self.egress.try_recv_from(&mut self.egress_buf).is_ok() {
            self.stats.unknown_source();
        }
    }

    /// Reads the codec socket's serialization of the message just handed to it.
    async fn read_serialized(&mut self) -> anyhow::Result<Option<usize>> {
        let wait = async {
            loop {
                let (len, from) = self.egress.recv_from(&mut self.egress_buf).await?;
                if from == self.codec_addr {
                    return Ok::<_, io::Error>(len);
                }
                self.stats.unknown_source();
            }
        };
        match tokio::time::timeout(LOOPBACK_WAIT, wait).await {
            Ok(result) => Ok(Some(
                result.context("gossip bridge loopback socket failed")?,
            )),
            Err(_) => Ok(None),
        }
    }
}

#[async_trait]
impl Socket for Bridge {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.network.local_addr()?)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        self.drain_egress();
        self.codec.send(self.egress.local_addr()?, envelope).await?;
        let Some(len) = self.read_serialized().await? else {
            self.stats.send_failed();
            tracing::debug!(peer = %to, "gossip message lost on the loopback hop");
            return Ok(SendOutcome { num_bytes_sent: 0 });
        };

        let key = self.peers.reply_key(to);
        let body = &self.egress_buf[..len];
        if let Err(error) = self.seal.seal(body, key.as_ref(), &mut self.sealed) {
            self.stats.send_failed();
            tracing::warn!(peer = %to, %error, "gossip message too large to send");
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        match self.network.send_to(&self.sealed, to).await {
            Ok(()) => {
                self.stats.sent(self.sealed.len());
                Ok(SendOutcome {
                    num_bytes_sent: self.sealed.len(),
                })
            }
            Err(error) => {
                // A member that is gone or unreachable is the failure detector's
                // business; chitchat reads an error here as a broken transport.
                self.stats.send_failed();
                tracing::debug!(peer = %to, %error, "failed to send gossip datagram");
                Ok(SendOutcome { num_bytes_sent: 0 })
            }
        }
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let arrival = tokio::select! {
                biased;
                parsed = self.codec.recv() => Arrival::Parsed(parsed),
                received = self.network.recv_from(&mut self.receive_buf) => {
                    Arrival::FromNetwork(received)
                }
            };
            match arrival {
                Arrival::Parsed(parsed) => {
                    let outcome = parsed?;
                    match self.peers.peer_of(outcome.from_addr) {
                        Some(peer) => {
                            return Ok(RecvOutcome {
                                from_addr: peer,
                                ..outcome
                            });
                        }
                        None => {
                            self.stats.unknown_source();
                            tracing::debug!(addr = %outcome.from_addr, "dropped loopback gossip from an unknown sender");
                        }
                    }
                }
                Arrival::FromNetwork(received) => {
                    let (len, from) = received.context("gossip socket failed")?;
                    self.forward(len, from);
                }
            }
        }
    }
}

/// The ingress socket of each remote peer, and the key it last sealed with.
struct PeerTable {
    by_peer: HashMap<SocketAddr, Peer>,
    by_ingress: HashMap<SocketAddr, SocketAddr>,
    last_sweep: Instant,
}

impl Default for PeerTable {
    fn default() -> Self {
        Self {
            by_peer: HashMap::new(),
            by_ingress: HashMap::new(),
            last_sweep: Instant::now(),
        }
    }
}

/// Reasons a datagram found no ingress socket.
#[derive(Debug, thiserror::Error)]
enum IngressError {
    #[error("{MAX_PEERS} gossip peers were heard from within the last minute, the maximum")]
    Full,
    #[error("failed to bind a loopback socket for the peer: {0}")]
    Bind(io::Error),
}

struct Peer {
    /// A non-blocking socket that only sends, so the standard library's suffices.
    ingress: std::net::UdpSocket,
    ingress_addr: SocketAddr,
    last_seen: Instant,
    key: Option<GossipKey>,
}

impl PeerTable {
    /// Returns the ingress socket for `peer`, created on first use. Sockets idle for
    /// [`PEER_IDLE`] are closed at most once per that period.
    fn ingress_for(
        &mut self,
        peer: SocketAddr,
        key: Option<GossipKey>,
        now: Instant,
    ) -> Result<&std::net::UdpSocket, IngressError> {
        if now.duration_since(self.last_sweep) > PEER_IDLE {
            self.evict_idle(now);
            self.last_sweep = now;
        }
        if !self.by_peer.contains_key(&peer) {
            if self.by_peer.len() >= MAX_PEERS {
                self.evict_idle(now);
            }
            if self.by_peer.len() >= MAX_PEERS {
                return Err(IngressError::Full);
            }
            let (ingress, ingress_addr) = bind_loopback().map_err(IngressError::Bind)?;
            self.by_ingress.insert(ingress_addr, peer);
            self.by_peer.insert(
                peer,
                Peer {
                    ingress,
                    ingress_addr,
                    last_seen: now,
                    key: None,
                },
            );
        }
        let entry = self.by_peer.get_mut(&peer).ok_or(IngressError::Full)?;
        entry.last_seen = now;
        entry.key = key;
        Ok(&entry.ingress)
    }

    fn peer_of(&self, ingress_addr: SocketAddr) -> Option<SocketAddr> {
        self.by_ingress.get(&ingress_addr).copied()
    }

    /// The key `peer` last sealed with, so that a reply opens on its side even when it
    /// has not been given the current primary key yet.
    fn reply_key(&self, peer: SocketAddr) -> Option<GossipKey> {
        self.by_peer.get(&peer)?.key.clone()
    }

    fn evict_idle(&mut self, now: Instant) {
        let idle: Vec<SocketAddr> = self
            .by_peer
            .iter()
            .filter(|(_, entry)| now.duration_since(entry.last_seen) > PEER_IDLE)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in idle {
            if let Some(entry) = self.by_peer.remove(&peer) {
                self.by_ingress.remove(&entry.ingress_addr);
            }
        }
    }
}

/// Binds a non-blocking socket on an ephemeral port of 127.0.0.1 without awaiting, so
/// that it can be done inside a cancel-safe step.
fn bind_loopback() -> io::Result<(std::net::UdpSocket, SocketAddr)> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    socket.set_nonblocking(true)?;
    let addr = socket.local_addr()?;
    Ok((socket, addr))
}
