//! A generation set in the configuration replaces the one taken from the clock.

use std::net::SocketAddr;
use std::time::Duration;

use murmur_gossip::chitchat::transport::ChannelTransport;
use murmur_gossip::{GossipConfig, Membership, wait_for_catalog};

#[tokio::test]
async fn configured_generation_is_advertised() {
    let transport = ChannelTransport::with_mtu(65_507);
    let addr = SocketAddr::from(([127, 0, 0, 1], 7946));
    let config = GossipConfig::local("fixed").generation(42);

    let membership = Membership::start_on_transport(config, addr, &transport)
        .await
        .unwrap();

    assert_eq!(membership.generation(), 42);
    let mut updates = membership.catalog_updates();
    let catalog = wait_for_catalog(&mut updates, Duration::from_secs(5), |catalog| {
        catalog.member("fixed").is_some()
    })
    .await
    .expect("a member sees itself within 5 s");
    let own = catalog.member("fixed").unwrap();
    assert_eq!(own.generation, 42);
}
