//! Failure detection time over real UDP on loopback: murmur's gossip with its default
//! and local profiles, against plain chitchat 0.13 with its own failure detector
//! defaults at the same gossip interval, in the same run.
//!
//! Run: `cargo bench -p murmur-gossip --bench detection`
//!
//! Each trial starts a cluster, waits until it has converged and run for a while, kills
//! one member without leaving, and measures the time until every other member reports
//! it down. Prints one line per trial and the medians, then the ratio.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chitchat::transport::UdpTransport;
use chitchat::{ChitchatConfig, ChitchatId, FailureDetectorConfig, spawn_chitchat};
use murmur_gossip::{GossipConfig, Keyring, Membership, wait_for_catalog};

const MEMBERS: usize = 5;
const TRIALS: usize = 5;
const WARM_UP: Duration = Duration::from_secs(5);
const GIVE_UP: Duration = Duration::from_secs(120);

#[tokio::main]
async fn main() {
    let mut murmur_default = Vec::new();
    let mut murmur_local = Vec::new();
    let mut chitchat_stock = Vec::new();
    for trial in 0..TRIALS {
        let default = murmur_trial(GossipConfig::new).await;
        let local = murmur_trial(GossipConfig::local).await;
        let stock = chitchat_trial(Duration::from_millis(250)).await;
        println!(
            "trial {trial}: murmur default {default:?}, murmur local {local:?}, chitchat stock {stock:?}"
        );
        murmur_default.push(default);
        murmur_local.push(local);
        chitchat_stock.push(stock);
    }
    let default = median(&mut murmur_default);
    let local = median(&mut murmur_local);
    let stock = median(&mut chitchat_stock);
    println!("members: {MEMBERS}, trials: {TRIALS}, warm-up before the kill: {WARM_UP:?}");
    println!("median detection, murmur default (250 ms interval): {default:?}");
    println!("median detection, murmur local (100 ms interval): {local:?}");
    println!("median detection, chitchat stock detector (250 ms interval): {stock:?}");
    println!(
        "ratio chitchat stock / murmur default: {:.2}",
        stock.as_secs_f64() / default.as_secs_f64()
    );
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

async fn murmur_trial(profile: fn(String) -> GossipConfig) -> Duration {
    let keyring = Keyring::from_cluster_key(b"detection bench");
    let mut members = Vec::new();
    let mut seed: Option<SocketAddr> = None;
    for index in 0..MEMBERS {
        let config = profile(format!("m{index}")).seeds(seed.iter().map(SocketAddr::to_string));
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let member = Membership::start(config, Arc::new(socket), Some(keyring.clone()))
            .await
            .unwrap();
        seed.get_or_insert(member.gossip_addr());
        members.push(member);
    }
    for member in &members {
        let mut updates = member.catalog_updates();
        wait_for_catalog(&mut updates, GIVE_UP, |catalog| catalog.len() == MEMBERS)
            .await
            .expect("cluster did not converge");
    }
    tokio::time::sleep(WARM_UP).await;

    let victim = members.pop().unwrap();
    let name = victim.name().to_string();
    let killed_at = Instant::now();
    drop(victim);
    for member in &members {
        let mut updates = member.catalog_updates();
        wait_for_catalog(&mut updates, GIVE_UP, |catalog| {
            catalog.member(&name).is_none()
        })
        .await
        .expect("killed member never reported down");
    }
    killed_at.elapsed()
}

async fn chitchat_trial(interval: Duration) -> Duration {
    let mut handles = Vec::new();
    let mut seed: Option<SocketAddr> = None;
    for index in 0..MEMBERS {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(format!("c{index}"), 1, addr),
            cluster_id: "bench".to_string(),
            gossip_interval: interval,
            listen_addr: addr,
            seed_nodes: seed.iter().map(SocketAddr::to_string).collect(),
            failure_detector_config: FailureDetectorConfig::default(),
            marked_for_deletion_grace_period: Duration::from_secs(3_600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V1,
        };
        let handle = spawn_chitchat(config, Vec::new(), &UdpTransport)
            .await
            .unwrap();
        seed.get_or_insert(addr);
        handles.push(handle);
    }
    let everyone: HashSet<String> = (0..MEMBERS).map(|index| format!("c{index}")).collect();
    for handle in &handles {
        let mut live = handle.chitchat().lock().await.live_nodes_watcher();
        tokio::time::timeout(
            GIVE_UP,
            live.wait_for(|nodes| {
                nodes
                    .keys()
                    .map(|id| id.node_id.to_string())
                    .collect::<HashSet<_>>()
                    == everyone
            }),
        )
        .await
        .expect("chitchat cluster did not converge")
        .unwrap();
    }
    tokio::time::sleep(WARM_UP).await;

    let victim = handles.pop().unwrap();
    let name = victim.chitchat_id().node_id.to_string();
    let killed_at = Instant::now();
    victim.shutdown().await.unwrap();
    for handle in &handles {
        let mut live = handle.chitchat().lock().await.live_nodes_watcher();
        tokio::time::timeout(
            GIVE_UP,
            live.wait_for(|nodes| nodes.keys().all(|id| *id.node_id != *name)),
        )
        .await
        .expect("chitchat never reported the killed member down")
        .unwrap();
    }
    let elapsed = killed_at.elapsed();
    for handle in handles {
        let _ = handle.shutdown().await;
    }
    elapsed
}
