//! A node that hosts `counter` until Ctrl-C, then drains and leaves.
//!
//! Run: `cargo run -p murmur --example serve -- NAME KEY_FILE [SEED_GOSSIP_ADDR]`
//! Make a key file with `cargo run -p murmur -- keygen > cluster.key`; the node prints
//! its gossip address for `call` to join through.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use murmur::gossip::GossipConfig;
use murmur::{ClusterKey, Node, ServiceDef, Status};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: serve NAME KEY_FILE [SEED_GOSSIP_ADDR]";
    let name = args.next().ok_or(usage)?;
    let key = ClusterKey::read_file(args.next().ok_or(usage)?.as_ref())?;
    let seeds: Vec<String> = args.collect();

    let node = Node::builder()
        .name(&name)
        .join(seeds)
        .cluster_key(key)
        .gossip_config(GossipConfig::local(&name))
        .start()
        .await?;
    let count = Arc::new(AtomicU64::new(0));
    let served_by = name.clone();
    node.host(
        ServiceDef::new("counter", murmur::semver::Version::new(1, 0, 0)).unary(
            "next",
            move |_ctx, (): ()| {
                let value = count.fetch_add(1, Ordering::Relaxed) + 1;
                let served_by = served_by.clone();
                async move { Ok::<_, Status>((served_by, value)) }
            },
        ),
    )
    .await?;
    println!("{name} serves counter; gossip at {}", node.gossip_addr());

    tokio::signal::ctrl_c().await?;
    println!("draining");
    node.shutdown().await;
    Ok(())
}
