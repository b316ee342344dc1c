//! Calls between murmur nodes over QUIC, with mutual TLS and MessagePack frames.
//!
//! An [`Endpoint`] is one node's QUIC endpoint: it serves the handlers registered on its
//! [`Router`] and calls other nodes, given their address and expected [`NodeId`]. Each call
//! runs on its own stream of frames ([`frame`](crate::FrameKind)): a request is
//! `Head Data* FIN` and a reply is `Data* Trail FIN`, for unary calls and for the three
//! streaming shapes alike. Failures are gRPC [`Status`] values.
//!
//! Nodes prove who they are with TLS certificates: an [`Identity`] is an Ed25519 key pair,
//! its node id the blake3 hash of the public key, and a [`Trust`] names the certificate
//! authority that signs the cluster's certificates.
//!
//! This crate knows nothing of membership: finding nodes and choosing between them is the
//! `murmur` crate's job.
//!
//! ```no_run
//! use std::time::Duration;
//! use murmur_rpc::{CallOptions, Endpoint, Identity, Peer, RpcConfig, Status, Trust};
//!
//! # async fn example(cluster_key: &[u8], other: Peer) -> Result<(), Box<dyn std::error::Error>> {
//! let identity = Identity::load_or_generate("/var/lib/murmur")?;
//! let trust = Trust::derived(cluster_key)?;
//! let endpoint = Endpoint::bind("127.0.0.1:7070".parse()?, &identity, &trust, RpcConfig::default())?;
//! endpoint.router().unary("greeter", "hello", |ctx, name: String| async move {
//!     Ok::<_, Status>(format!("hello, {name}, from {}", ctx.peer()))
//! });
//!
//! let options = CallOptions::new().timeout(Duration::from_secs(1));
//! let reply: String = endpoint.call(other, "greeter", "hello", &"ann".to_string(), options).await?;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

#[cfg(test)]
mod bad_input_tests;
mod client;
mod config;
mod context;
mod endpoint;
mod frame;
mod identity;
mod message;
mod metadata;
mod server;
mod stats;
mod status;
mod stream;
mod streaming;
mod tls;
mod trust;
mod wire;

pub use client::{CallStream, ClientStreaming};
pub use config::RpcConfig;
pub use context::{CallOptions, Context};
pub use endpoint::{BindError, Endpoint, Peer};
pub use frame::{
    FRAME_HEADER_LEN, Frame, FrameDecoder, FrameError, FrameKind, encode_frame, encode_header,
};
pub use identity::{
    Identity, IdentityError, KEY_FILE_NAME, NODE_ID_TEXT_LEN, NodeId, ParseNodeIdError,
};
pub use message::{Message, Raw};
pub use metadata::Metadata;
pub use server::{ANY_METHOD, Router};
pub use stats::Stats;
pub use status::{Code, Status, UNPROCESSED_METADATA_KEY};
pub use streaming::{ReplySink, RequestSink, Streaming};
pub use tokio_util::sync::CancellationToken;

/// The map for lookups made on every call (handlers by name, connections by peer), hashed
/// with foldhash seeded at random per process. It is cheaper than the standard SipHash, and
/// its keys are names this node registered and peers it authenticated, not an outsider's
/// choice.
pub(crate) type HashMap<K, V> = foldhash::HashMap<K, V>;
pub use trust::{MIN_CLUSTER_KEY_LEN, Trust, TrustError};
pub use wire::{Head, Trail};
