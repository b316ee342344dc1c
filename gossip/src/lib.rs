//! Who is in a murmur cluster and what each member serves.
//!
//! A [`Membership`] joins a cluster through seed addresses and gossips with the other
//! members (chitchat's scuttlebutt anti-entropy and failure detector underneath). Each
//! member advertises a few keys of its own: its node id, RPC addresses, status, load and
//! one entry per hosted service. The crate turns everyone's keys into a typed
//! [`Catalog`], a snapshot to query with [`Catalog::endpoints`], and a stream of
//! [`CatalogEvent`]s from [`Membership::watch`].
//!
//! Gossip travels as datagrams through the [`DatagramSocket`] trait: a UDP socket in
//! production, a [`MemoryNetwork`] in tests and simulations. With a cluster key every
//! datagram is sealed with ChaCha20-Poly1305 under a [`Keyring`]; see [`seal`] for the
//! format and [`bridge`] for how chitchat's messages reach the seal as bytes.
//!
//! This crate does not make calls: to it, node ids are text and RPC addresses are
//! addresses, both set by the layer above.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use murmur_gossip::{GossipConfig, Keyring, Membership, Service};
//!
//! let config = GossipConfig::new("orders-1").seeds(["127.0.0.1:7946"]);
//! let keyring = Keyring::from_cluster_key(b"a secret shared by the cluster");
//! let membership =
//!     Membership::bind_udp(config, "127.0.0.1:7947".parse()?, Some(keyring)).await?;
//! membership
//!     .set_service(Service::new("orders", semver::Version::new(1, 0, 0)).method("get"))
//!     .await?;
//!
//! let mut events = membership.watch();
//! while let Ok(event) = events.next().await {
//!     println!("{event:?}");
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod bridge;
mod catalog;
mod config;
mod generation;
mod membership;
mod memory;
pub mod seal;
mod socket;
mod stats;

pub use catalog::{Catalog, CatalogEvent, Endpoint, InvalidStatus, Member, Service, Status};
pub use chitchat;
pub use config::GossipConfig;
pub use generation::{GENERATION_FILE, next_generation};
pub use membership::{
    CatalogWatch, Health, MAX_NAME_BYTES, Membership, SetError, StartError, WatchError,
    wait_for_catalog,
};
pub use memory::{MemoryNetwork, MemoryNetworkStats, MemorySocket};
pub use seal::{GossipKey, Keyring, KeyringError, OpenError, Seal};
pub use semver;
pub use socket::DatagramSocket;
pub use stats::{GossipStats, GossipStatsSnapshot};
