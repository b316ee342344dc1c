//! Streaming calls: a server stream of squares and a bidirectional running sum.
//!
//! Run: `cargo run -p murmur --example streaming`

use std::time::Duration;

use murmur::gossip::{GossipConfig, wait_for_catalog};
use murmur::{ClusterKey, Node, ReplySink, ServiceDef, Status, Streaming};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = ClusterKey::generate();
    let server = Node::builder()
        .name("math")
        .cluster_key(key.clone())
        .gossip_config(GossipConfig::local("math"))
        .start()
        .await?;
    server
        .host(
            ServiceDef::new("math", murmur::semver::Version::new(1, 0, 0))
                .server_streaming(
                    "squares",
                    |_ctx, up_to: u64, mut sink: ReplySink<u64>| async move {
                        for n in 1..=up_to {
                            sink.send(&(n * n)).await?;
                        }
                        Ok::<_, Status>(())
                    },
                )
                .bidi_streaming(
                    "running_sum",
                    |_ctx, mut numbers: Streaming<i64>, mut sums: ReplySink<i64>| async move {
                        let mut sum = 0;
                        while let Some(number) = numbers.message().await? {
                            sum += number;
                            sums.send(&sum).await?;
                        }
                        Ok::<_, Status>(())
                    },
                ),
        )
        .await?;

    let client_node = Node::builder()
        .name("student")
        .join([server.gossip_addr().to_string()])
        .cluster_key(key)
        .gossip_config(GossipConfig::local("student"))
        .start()
        .await?;
    let mut catalog = client_node.membership().catalog_updates();
    wait_for_catalog(&mut catalog, Duration::from_secs(10), |catalog| {
        !catalog.endpoints("math").is_empty()
    })
    .await
    .ok_or("math never showed up in the catalog")?;
    let math = client_node.client("math").timeout(Duration::from_secs(5));

    let mut squares = math.server_streaming::<u64, u64>("squares", &5).await?;
    while let Some(square) = squares.message().await? {
        println!("square {square}");
    }

    let (mut numbers, mut sums) = math.bidi_streaming::<i64, i64>("running_sum").await?;
    for number in [3, 4, -2, 10] {
        numbers.send(&number).await?;
        if let Some(sum) = sums.message().await? {
            println!("sent {number}, running sum {sum}");
        }
    }
    numbers.finish().await?;

    client_node.shutdown().await;
    server.shutdown().await;
    Ok(())
}
