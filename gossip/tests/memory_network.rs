//! Protocol tests over the in-memory network: loss, delay and partitions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use murmur_gossip::{GossipConfig, Keyring, Membership, MemoryNetwork, wait_for_catalog};

const WAIT: Duration = Duration::from_secs(30);

fn addr(index: usize) -> SocketAddr {
    SocketAddr::from(([10, 1, 0, index as u8 + 1], 7946))
}

async fn start_cluster(network: &MemoryNetwork, size: usize) -> Vec<Membership> {
    let keyring = Keyring::from_cluster_key(b"memory network test");
    let mut members = Vec::new();
    for index in 0..size {
        let socket = network.bind(addr(index)).unwrap();
        let config = GossipConfig::local(format!("n{index}")).seeds([addr(0).to_string()]);
        members.push(
            Membership::start(config, Arc::new(socket), Some(keyring.clone()))
                .await
                .unwrap(),
        );
    }
    members
}

async fn wait_for_view(member: &Membership, expected: &[String]) -> bool {
    let mut updates = member.catalog_updates();
    wait_for_catalog(&mut updates, WAIT, |catalog| {
        catalog.len() == expected.len()
            && expected.iter().all(|name| catalog.member(name).is_some())
    })
    .await
    .is_some()
}

fn names(indexes: impl IntoIterator<Item = usize>) -> Vec<String> {
    indexes
        .into_iter()
        .map(|index| format!("n{index}"))
        .collect()
}

#[tokio::test]
async fn converges_with_loss_and_delay() {
    let network = MemoryNetwork::new(11);
    network.set_loss(0.10);
    network.set_delay(Duration::from_millis(20), Duration::from_millis(10));
    let members = start_cluster(&network, 6).await;
    let everyone = names(0..6);
    for member in &members {
        assert!(
            wait_for_view(member, &everyone).await,
            "{} sees {:?}",
            member.name(),
            member
                .catalog()
                .members()
                .map(|m| m.name.clone())
                .collect::<Vec<_>>()
        );
    }

    // With 10 % loss no member is declared down over several detection periods.
    let mut watches: Vec<_> = members.iter().map(Membership::watch).collect();
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (member, watch) in members.iter().zip(watches.iter_mut()) {
        while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_millis(1), watch.next()).await
        {
            assert!(
                !matches!(event, murmur_gossip::CatalogEvent::NodeDown(_)),
                "{} saw {event:?} on a network with 10 % loss",
                member.name()
            );
        }
    }
    assert!(network.stats().lost > 0);
}

#[tokio::test]
async fn partition_splits_and_heals() {
    let network = MemoryNetwork::new(5);
    let members = start_cluster(&network, 6).await;
    let everyone = names(0..6);
    for member in &members {
        assert!(wait_for_view(member, &everyone).await);
    }

    network.partition(&[
        (0..3).map(addr).collect::<Vec<_>>(),
        (3..6).map(addr).collect::<Vec<_>>(),
    ]);
    for (index, member) in members.iter().enumerate() {
        let side = if index < 3 { names(0..3) } else { names(3..6) };
        assert!(
            wait_for_view(member, &side).await,
            "{} did not settle on its side",
            member.name()
        );
    }

    network.heal();
    for member in &members {
        assert!(
            wait_for_view(member, &everyone).await,
            "{} did not see the healed cluster",
            member.name()
        );
    }
}
