//! murmur: a service network that lives inside your process.
//!
//! A [`Node`] finds the other nodes of its cluster by gossip, advertises the services it
//! hosts, and calls other nodes' services by name over QUIC. There is no registry
//! server: every node keeps the catalog of who serves what, and a [`Client`] picks a
//! member for each call, balances load, and retries elsewhere when that is safe.
//!
//! ```no_run
//! use std::time::Duration;
//! use murmur::{ClusterKey, Node, ServiceDef, Status};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let key = ClusterKey::read_file("cluster.key".as_ref())?;
//! let node = Node::builder()
//!     .name("inventory-1")
//!     .data_dir("/var/lib/murmur")
//!     .join(["10.0.0.5:7946"])
//!     .cluster_key(key)
//!     .start()
//!     .await?;
//!
//! node.host(
//!     ServiceDef::new("inventory", murmur::semver::Version::new(1, 0, 0))
//!         .unary("count", |_ctx, sku: String| async move { Ok::<u32, Status>(sku.len() as u32) })
//!         .idempotent(),
//! )
//! .await?;
//!
//! let count: u32 = node
//!     .client("inventory")
//!     .timeout(Duration::from_millis(200))
//!     .call("count", &"sku-1".to_string())
//!     .await?;
//! node.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! The crate also builds the `murmur` binary: an agent that runs a node for programs in
//! any language (an HTTP/JSON gateway and a sidecar), and a command line for it.

#![warn(missing_docs)]

mod client;
pub mod cluster_key;
mod hosting;
mod metrics;
mod node;
pub mod routing;

pub use client::Client;
pub use cluster_key::{ClusterKey, ClusterKeyError};
pub use hosting::{IDEMPOTENT_METADATA_KEY, ServiceDef};
pub use node::{DEFAULT_CAPACITY, HostError, Node, NodeBuilder, NodeHealth, StartError};
pub use routing::Balancer;

pub use murmur_gossip as gossip;
pub use murmur_gossip::{Catalog, CatalogEvent, Member, Status as MemberStatus};
pub use murmur_rpc as rpc;
pub use murmur_rpc::{
    CallOptions, ClientStreaming, Code, Context, Metadata, NodeId, Raw, ReplySink, RequestSink,
    Status, Streaming,
};
pub use semver;
