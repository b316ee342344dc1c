//! A node that joins a cluster and calls `counter` ten times, wherever it is hosted.
//!
//! Run: `cargo run -p murmur --example call -- KEY_FILE SEED_GOSSIP_ADDR`

use std::time::Duration;

use murmur::gossip::{GossipConfig, wait_for_catalog};
use murmur::{ClusterKey, Node};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: call KEY_FILE SEED_GOSSIP_ADDR";
    let key = ClusterKey::read_file(args.next().ok_or(usage)?.as_ref())?;
    let seed = args.next().ok_or(usage)?;

    let node = Node::builder()
        .name(format!("caller-{}", std::process::id()))
        .join([seed])
        .cluster_key(key)
        .gossip_config(GossipConfig::local("caller"))
        .start()
        .await?;
    let mut catalog = node.membership().catalog_updates();
    wait_for_catalog(&mut catalog, Duration::from_secs(10), |catalog| {
        !catalog.endpoints("counter").is_empty()
    })
    .await
    .ok_or("no member hosts counter")?;

    let counter = node.client("counter").timeout(Duration::from_secs(1));
    for _ in 0..10 {
        let (served_by, value): (String, u64) = counter.call("next", &()).await?;
        println!("{served_by} counted {value}");
    }
    node.shutdown().await;
    Ok(())
}
