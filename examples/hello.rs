//! Two nodes in one process: one hosts `greeter`, the other calls it by name.
//!
//! Run: `cargo run -p murmur --example hello`

use std::time::Duration;

use murmur::gossip::{GossipConfig, wait_for_catalog};
use murmur::{ClusterKey, Node, ServiceDef, Status};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = ClusterKey::generate();

    let server = Node::builder()
        .name("server")
        .cluster_key(key.clone())
        .gossip_config(GossipConfig::local("server"))
        .start()
        .await?;
    server
        .host(
            ServiceDef::new("greeter", murmur::semver::Version::new(1, 0, 0))
                .unary("hello", |ctx, name: String| async move {
                    Ok::<_, Status>(format!(
                        "hello, {name}, from a node that knows you as {}",
                        ctx.peer()
                    ))
                })
                .idempotent(),
        )
        .await?;

    let caller = Node::builder()
        .name("caller")
        .join([server.gossip_addr().to_string()])
        .cluster_key(key)
        .gossip_config(GossipConfig::local("caller"))
        .start()
        .await?;
    println!(
        "caller {} joins through {}",
        caller.node_id(),
        server.gossip_addr()
    );

    let mut catalog = caller.membership().catalog_updates();
    wait_for_catalog(&mut catalog, Duration::from_secs(10), |catalog| {
        !catalog.endpoints("greeter").is_empty()
    })
    .await
    .ok_or("greeter never showed up in the catalog")?;

    let reply: String = caller
        .client("greeter")
        .timeout(Duration::from_secs(1))
        .call("hello", &"ann".to_string())
        .await?;
    println!("{reply}");

    caller.shutdown().await;
    server.shutdown().await;
    Ok(())
}
