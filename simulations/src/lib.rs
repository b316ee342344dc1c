//! Many members of murmur's real gossip in one process, on a simulated network and
//! simulated time.
//!
//! Each member is a [`murmur_gossip::Membership`], the same membership and catalog code a
//! node runs, started over [`Network`], a chitchat transport that adds loss, delay,
//! jitter, partitions and byte counters to chitchat's in-memory channels. Under paused
//! tokio time the gossip interval is real in the code and virtual on the clock, so a
//! run covers minutes of cluster life in seconds.
//!
//! A [`Cluster`] starts, kills, restarts and partitions members; [`measure`] times how
//! long the members' catalogs take to reflect a change; [`scenario`] combines the two
//! into the runs the `murmur-sim` binary reports; [`report`] writes their CSV files and
//! plots.
//!
//! A seed fixes every choice the simulator makes: start times, generations, which
//! messages are lost, their delays, victims and partition sides. chitchat 0.13 picks its
//! gossip peers with an unseeded generator of its own, so two runs with one seed can
//! still differ by a round or so in their timings.
//!
//! ```no_run
//! # async fn example() -> Result<(), murmur_sim::ClusterError> {
//! use murmur_sim::{ClusterSpec, Timing, scenario};
//!
//! tokio::time::pause();
//! let row = scenario::convergence(&ClusterSpec::new(100, 1), Timing::default(), &|_| {}).await?;
//! println!("everyone saw the change after {:?} s", row.change_all_s);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod cluster;
pub mod measure;
pub mod memory;
pub mod network;
pub mod report;
pub mod scenario;

pub use cluster::{Cluster, ClusterError, ClusterSpec};
pub use network::{Conditions, Network};
pub use scenario::Timing;
