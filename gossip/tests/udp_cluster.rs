//! Clusters of members over real UDP sockets on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use murmur_gossip::{
    CatalogEvent, GossipConfig, GossipKey, Keyring, Membership, Service, SetError, Status,
    wait_for_catalog,
};
use tokio::net::UdpSocket;

const CLUSTER_KEY: &[u8] = b"udp cluster test key";
const WAIT: Duration = Duration::from_secs(20);

fn config(name: &str, seeds: &[SocketAddr]) -> GossipConfig {
    GossipConfig::local(name).seeds(seeds.iter().map(SocketAddr::to_string))
}

async fn bind(ip: &str) -> Arc<UdpSocket> {
    Arc::new(UdpSocket::bind(format!("{ip}:0")).await.unwrap())
}

async fn start(name: &str, seeds: &[SocketAddr], keyring: Option<Keyring>) -> Membership {
    Membership::start(config(name, seeds), bind("127.0.0.1").await, keyring)
        .await
        .unwrap()
}

fn keyring() -> Option<Keyring> {
    Some(Keyring::from_cluster_key(CLUSTER_KEY))
}

/// Binds `addr` again after the socket that held it was dropped, which the gossip task
/// does shortly after its membership is dropped.
async fn rebind(addr: SocketAddr) -> Arc<UdpSocket> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match UdpSocket::bind(addr).await {
            Ok(socket) => return Arc::new(socket),
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("failed to bind {addr} again: {error}"),
        }
    }
}

async fn wait_for_members(membership: &Membership, names: &[&str]) {
    let mut updates = membership.catalog_updates();
    let found = wait_for_catalog(&mut updates, WAIT, |catalog| {
        catalog.len() == names.len() && names.iter().all(|name| catalog.member(name).is_some())
    })
    .await;
    let seen: Vec<String> = membership
        .catalog()
        .members()
        .map(|member| member.name.clone())
        .collect();
    assert!(
        found.is_some(),
        "{} sees {seen:?}, expected {names:?}",
        membership.name()
    );
}

async fn start_cluster(size: usize, keyring: Option<Keyring>) -> Vec<Membership> {
    let seed = start("m0", &[], keyring.clone()).await;
    let seed_addr = seed.gossip_addr();
    let mut members = vec![seed];
    for index in 1..size {
        members.push(start(&format!("m{index}"), &[seed_addr], keyring.clone()).await);
    }
    members
}

fn names(size: usize) -> Vec<String> {
    (0..size).map(|index| format!("m{index}")).collect()
}

#[tokio::test]
async fn five_members_converge() {
    let members = start_cluster(5, keyring()).await;
    let expected = names(5);
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    for member in &members {
        wait_for_members(member, &expected).await;
    }
    for member in &members {
        let stats = member.stats();
        assert_eq!(stats.dropped_total(), 0, "{}: {stats:?}", member.name());
        assert!(stats.datagrams_received > 0);
    }
}

#[tokio::test]
async fn joins_through_a_host_name_seed() {
    let first = start("dns-a", &[], keyring()).await;
    let seed = format!("localhost:{}", first.gossip_addr().port());
    let second = Membership::start(
        GossipConfig::local("dns-b").seeds([seed]),
        bind("127.0.0.1").await,
        keyring(),
    )
    .await
    .unwrap();
    wait_for_members(&first, &["dns-a", "dns-b"]).await;
    wait_for_members(&second, &["dns-a", "dns-b"]).await;
}

#[tokio::test]
async fn ipv6_cluster_converges() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: this machine has no IPv6 loopback ([::1])");
        return;
    }
    let first = Membership::start(config("v6-a", &[]), bind("[::1]").await, keyring())
        .await
        .unwrap();
    let seed = first.gossip_addr();
    assert!(seed.to_string().starts_with("[::1]:"), "{seed}");
    let second = Membership::start(
        config("v6-b", &[seed]).rpc_addrs(["[::1]:9000".parse().unwrap()]),
        bind("[::1]").await,
        keyring(),
    )
    .await
    .unwrap();
    wait_for_members(&first, &["v6-a", "v6-b"]).await;
    let catalog = first.catalog();
    let member = catalog.member("v6-b").unwrap();
    assert_eq!(member.gossip_addr, second.gossip_addr());
    assert_eq!(member.rpc_addrs, vec!["[::1]:9000".parse().unwrap()]);
}

#[tokio::test]
async fn killed_member_is_reported_down_everywhere() {
    let mut members = start_cluster(4, keyring()).await;
    for member in &members {
        wait_for_members(member, &["m0", "m1", "m2", "m3"]).await;
    }
    let mut watches: Vec<_> = members.iter().map(Membership::watch).collect();

    let killed = members.pop().unwrap();
    let killed_at = Instant::now();
    drop(killed);

    for (member, watch) in members.iter().zip(watches.iter_mut()) {
        let down = tokio::time::timeout(WAIT, async {
            loop {
                if let CatalogEvent::NodeDown(gone) = watch.next().await.unwrap() {
                    if gone.name == "m3" {
                        return;
                    }
                }
            }
        })
        .await;
        assert!(down.is_ok(), "{} never reported m3 down", member.name());
    }
    let detection = killed_at.elapsed();
    eprintln!("failure detection: m3 reported down by all members after {detection:?}");
    assert!(detection < Duration::from_secs(15), "{detection:?}");
}

#[tokio::test]
async fn leaving_member_is_dropped_at_once() {
    let mut members = start_cluster(3, keyring()).await;
    for member in &members {
        wait_for_members(member, &["m0", "m1", "m2"]).await;
    }
    let leaving = members.pop().unwrap();
    let started = Instant::now();
    let leave = tokio::spawn(async move { leaving.leave().await });
    for member in &members {
        wait_for_members(member, &["m0", "m1"]).await;
    }
    let elapsed = started.elapsed();
    leave.await.unwrap();
    // Failure detection alone takes about 8 gossip intervals after the last heartbeat;
    // the leaving status spreads within a few rounds.
    eprintln!("graceful leave seen by all after {elapsed:?}");
    assert!(elapsed < Duration::from_millis(700), "{elapsed:?}");
}

#[tokio::test]
async fn restart_under_same_name_leaves_one_member() {
    let data_dir = tempfile::tempdir().unwrap();
    let members = start_cluster(3, keyring()).await;
    let seed = members[0].gossip_addr();
    let first_life = Membership::start(
        config("phoenix", &[seed]).data_dir(data_dir.path()),
        bind("127.0.0.1").await,
        keyring(),
    )
    .await
    .unwrap();
    let old_generation = first_life.generation();
    let addr = first_life.gossip_addr();
    for member in &members {
        wait_for_members(member, &["m0", "m1", "m2", "phoenix"]).await;
    }

    // Same address, new process life.
    drop(first_life);
    let second_life = Membership::start(
        config("phoenix", &[seed]).data_dir(data_dir.path()),
        rebind(addr).await,
        keyring(),
    )
    .await
    .unwrap();
    assert!(second_life.generation() > old_generation);
    let new_generation = second_life.generation();
    for member in &members {
        let mut updates = member.catalog_updates();
        let found = wait_for_catalog(&mut updates, WAIT, |catalog| {
            catalog
                .member("phoenix")
                .is_some_and(|phoenix| phoenix.generation == new_generation)
        })
        .await;
        assert!(found.is_some(), "{} never saw the new life", member.name());
    }

    // Another address, third life; the second is still fresh in everyone's state.
    drop(second_life);
    let third_life = Membership::start(
        config("phoenix", &[seed]).data_dir(data_dir.path()),
        bind("127.0.0.1").await,
        keyring(),
    )
    .await
    .unwrap();
    let third_generation = third_life.generation();
    for member in &members {
        let mut updates = member.catalog_updates();
        let found = wait_for_catalog(&mut updates, WAIT, |catalog| {
            catalog
                .member("phoenix")
                .is_some_and(|phoenix| phoenix.generation == third_generation)
        })
        .await;
        assert!(
            found.is_some(),
            "{} never saw the third life",
            member.name()
        );
    }

    // For several more rounds no member shows an older life or two entries.
    for _ in 0..10 {
        for member in &members {
            let catalog = member.catalog();
            let phoenixes: Vec<u64> = catalog
                .members()
                .filter(|member| member.name == "phoenix")
                .map(|member| member.generation)
                .collect();
            assert_eq!(phoenixes, vec![third_generation], "{}", member.name());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn services_status_and_load_reach_every_member() {
    let members = start_cluster(3, keyring()).await;
    for member in &members {
        wait_for_members(member, &["m0", "m1", "m2"]).await;
    }
    let mut watch = members[2].watch();
    let orders = Service::new("orders", murmur_gossip::semver::Version::new(1, 4, 0))
        .tag("eu")
        .metadata("owner", "checkout")
        .method("reserve");
    members[0].set_service(orders.clone()).await.unwrap();

    let event = tokio::time::timeout(WAIT, async {
        loop {
            if let CatalogEvent::ServiceUp { member, service } = watch.next().await.unwrap() {
                return (member.name.clone(), service);
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(event.0, "m0");
    assert_eq!(*event.1, orders);
    let endpoints = members[2].catalog().endpoints("orders");
    assert_eq!(endpoints.len(), 1);

    members[0].set_status(Status::Draining).await;
    members[0].set_load(0.75).await.unwrap();
    let mut updates = members[1].catalog_updates();
    let drained = wait_for_catalog(&mut updates, WAIT, |catalog| {
        catalog.member("m0").is_some_and(|member| {
            member.status == Status::Draining && (member.load - 0.75).abs() < 1e-9
        })
    })
    .await
    .unwrap();
    assert!(drained.endpoints("orders").is_empty());

    assert!(members[0].remove_service("orders").await);
    let removed = wait_for_catalog(&mut updates, WAIT, |catalog| {
        catalog
            .member("m0")
            .is_some_and(|member| member.services.is_empty())
    })
    .await;
    assert!(removed.is_some());
    assert!(!members[0].remove_service("orders").await);
}

#[tokio::test]
async fn oversized_values_are_rejected_when_set() {
    let member = Membership::start(
        config("solo", &[]).max_value_bytes(512).max_services(2),
        bind("127.0.0.1").await,
        keyring(),
    )
    .await
    .unwrap();
    let version = murmur_gossip::semver::Version::new(1, 0, 0);
    let huge = Service::new("big", version.clone()).metadata("blob", "x".repeat(600));
    let error = member.set_service(huge).await.unwrap_err();
    assert!(matches!(error, SetError::ValueTooLarge { limit: 512, .. }));
    assert!(
        error.to_string().contains("above the 512-byte limit"),
        "{error}"
    );

    member
        .set_service(Service::new("a", version.clone()))
        .await
        .unwrap();
    member
        .set_service(Service::new("b", version.clone()))
        .await
        .unwrap();
    let error = member
        .set_service(Service::new("c", version.clone()))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        SetError::TooManyServices {
            name: "c".into(),
            count: 3,
            limit: 2
        }
    );
    // Replacing an advertised service is not a new one.
    member
        .set_service(Service::new("a", version.clone()).method("get"))
        .await
        .unwrap();
    assert!(matches!(
        member
            .set_service(Service::new("bad name", version))
            .await
            .unwrap_err(),
        SetError::InvalidServiceName(_)
    ));
    assert!(matches!(
        member.set_load(f64::NAN).await.unwrap_err(),
        SetError::InvalidLoad(_)
    ));
}

#[tokio::test]
async fn total_state_limit_is_enforced() {
    let member = Membership::start(
        config("solo", &[])
            .max_value_bytes(4_000)
            .max_state_bytes(3_000),
        bind("127.0.0.1").await,
        keyring(),
    )
    .await
    .unwrap();
    let version = murmur_gossip::semver::Version::new(1, 0, 0);
    member
        .set_service(Service::new("a", version.clone()).metadata("k", "x".repeat(1_400)))
        .await
        .unwrap();
    let error = member
        .set_service(Service::new("b", version).metadata("k", "x".repeat(1_600)))
        .await
        .unwrap_err();
    assert!(
        matches!(error, SetError::StateTooLarge { limit: 3_000, .. }),
        "{error}"
    );
}

#[tokio::test]
async fn wrong_key_and_other_cluster_stay_out() {
    let members = start_cluster(2, keyring()).await;
    let seed = members[0].gossip_addr();
    let intruder = start(
        "intruder",
        &[seed],
        Some(Keyring::from_cluster_key(b"wrong")),
    )
    .await;
    let open = start("open", &[seed], None).await;
    let stranger = Membership::start(
        config("stranger", &[seed]).cluster_name("elsewhere"),
        bind("127.0.0.1").await,
        keyring(),
    )
    .await
    .unwrap();

    for member in &members {
        wait_for_members(member, &["m0", "m1"]).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for member in &members {
        let catalog = member.catalog();
        for outsider in ["intruder", "open", "stranger"] {
            assert!(
                catalog.member(outsider).is_none(),
                "{} lets {outsider} in",
                member.name()
            );
        }
    }
    let seed_stats = members[0].stats();
    assert!(seed_stats.dropped_no_key > 0, "{seed_stats:?}");
    assert!(seed_stats.dropped_unsealed > 0, "{seed_stats:?}");
    for outsider in [&intruder, &open, &stranger] {
        assert_eq!(outsider.catalog().len(), 1, "{}", outsider.name());
    }
}

#[tokio::test]
async fn bad_datagrams_are_dropped_and_counted() {
    let members = start_cluster(3, keyring()).await;
    for member in &members {
        wait_for_members(member, &["m0", "m1", "m2"]).await;
    }
    let target = members[1].gossip_addr();
    let before = members[1].stats();
    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    let mut sealed_elsewhere = Vec::new();
    murmur_gossip::Seal::new(
        Some(Keyring::from_cluster_key(CLUSTER_KEY)),
        "another-cluster",
        65_507,
    )
    .seal(b"replayed", None, &mut sealed_elsewhere)
    .unwrap();
    let mut sealed_unknown_key = Vec::new();
    murmur_gossip::Seal::new(
        Some(Keyring::from_cluster_key(b"unknown")),
        "murmur",
        65_507,
    )
    .seal(b"forged", None, &mut sealed_unknown_key)
    .unwrap();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\x00\x01garbage bytes".to_vec()),
        ("truncated", vec![0x6d]),
        ("truncated seal", vec![0x6d, 0x01, 1, 2, 3]),
        ("unsealed", vec![0x6d, 0x00, 1, 2, 3, 4]),
        ("other cluster", sealed_elsewhere),
        ("unknown key", sealed_unknown_key),
        ("large, unknown flags", vec![0x6d; 65_000]),
    ];
    // Paced, so that the receive buffer never overflows and every datagram is counted.
    for _ in 0..20 {
        for (_, datagram) in &cases {
            attacker.send_to(datagram, target).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let after = members[1].stats();
    // Garbage, and the large datagram whose flags byte is unknown.
    assert_eq!(after.dropped_not_murmur - before.dropped_not_murmur, 40);
    assert_eq!(after.dropped_truncated - before.dropped_truncated, 40);
    assert_eq!(after.dropped_unsealed - before.dropped_unsealed, 20);
    assert_eq!(after.dropped_no_key - before.dropped_no_key, 40);
    assert_eq!(after.dropped_total() - before.dropped_total(), 140);
    for member in &members {
        wait_for_members(member, &["m0", "m1", "m2"]).await;
    }
}

#[tokio::test]
async fn oversized_datagram_is_dropped_before_opening() {
    let member = Membership::start(
        config("small", &[]).max_datagram_bytes(2_000),
        bind("127.0.0.1").await,
        keyring(),
    )
    .await
    .unwrap();
    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    attacker
        .send_to(&[0x6d; 3_000], member.gossip_addr())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while member.stats().dropped_oversized == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(member.stats().dropped_oversized, 1);
}

#[tokio::test]
async fn key_rotation_keeps_everyone_including_a_returning_member() {
    let old_key = GossipKey::derive(b"old cluster key");
    let new_key = GossipKey::derive(b"new cluster key");
    let rings: Vec<Keyring> = (0..3).map(|_| Keyring::new(old_key.clone())).collect();
    let seed = start("r0", &[], Some(rings[0].clone())).await;
    let seed_addr = seed.gossip_addr();
    let members = vec![
        seed,
        start("r1", &[seed_addr], Some(rings[1].clone())).await,
        start("r2", &[seed_addr], Some(rings[2].clone())).await,
    ];
    let sleeper = start("sleeper", &[seed_addr], Some(Keyring::new(old_key.clone()))).await;
    let sleeper_addr = sleeper.gossip_addr();
    for member in &members {
        wait_for_members(member, &["r0", "r1", "r2", "sleeper"]).await;
    }
    drop(sleeper);

    for ring in &rings {
        ring.add(new_key.clone());
    }
    for ring in &rings {
        ring.set_primary(&new_key).unwrap();
    }
    for member in &members {
        wait_for_members(member, &["r0", "r1", "r2"]).await;
    }

    // The sleeper comes back knowing only the old key, which the others still hold.
    let sleeper = Membership::start(
        config("sleeper", &[seed_addr]),
        rebind(sleeper_addr).await,
        Some(Keyring::new(old_key.clone())),
    )
    .await
    .unwrap();
    for member in &members {
        wait_for_members(member, &["r0", "r1", "r2", "sleeper"]).await;
    }
    wait_for_members(&sleeper, &["r0", "r1", "r2", "sleeper"]).await;

    // Members that rotated still see each other, and no member dropped out while the
    // sleeper stayed; a few more rounds prove it is stable.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for member in members.iter().chain([&sleeper]) {
        assert_eq!(member.catalog().len(), 4, "{}", member.name());
    }

    // Once the sleeper learns the new key, the old one can go.
    sleeper.keyring().unwrap().add(new_key.clone());
    sleeper.keyring().unwrap().set_primary(&new_key).unwrap();
    sleeper.keyring().unwrap().remove(&old_key).unwrap();
    for ring in &rings {
        ring.remove(&old_key).unwrap();
    }
    // Datagrams sealed with the old key may still be in flight; after they have landed,
    // none may fail to open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before: Vec<_> = members
        .iter()
        .chain([&sleeper])
        .map(Membership::stats)
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (member, before) in members.iter().chain([&sleeper]).zip(before) {
        let after = member.stats();
        assert_eq!(member.catalog().len(), 4, "{}", member.name());
        assert_eq!(
            after.dropped_no_key,
            before.dropped_no_key,
            "{}",
            member.name()
        );
        assert!(
            after.datagrams_received > before.datagrams_received + 5,
            "{} stopped hearing the cluster",
            member.name()
        );
    }
}

#[tokio::test]
async fn cluster_above_max_members_reports_degraded() {
    let seed = Membership::start(
        config("big-0", &[]).max_members(2),
        bind("127.0.0.1").await,
        keyring(),
    )
    .await
    .unwrap();
    let seed_addr = seed.gossip_addr();
    let _others = [
        start("big-1", &[seed_addr], keyring()).await,
        start("big-2", &[seed_addr], keyring()).await,
    ];
    wait_for_members(&seed, &["big-0", "big-1", "big-2"]).await;
    match seed.health() {
        murmur_gossip::Health::Degraded(reason) => {
            assert!(reason.contains("3 live members"), "{reason}");
            assert!(reason.contains("2-member limit"), "{reason}");
        }
        other => panic!("expected degraded health, got {other:?}"),
    }
}

#[tokio::test]
async fn name_taken_by_another_member_reports_degraded() {
    let seed = start("seed", &[], keyring()).await;
    let first = start("twin", &[seed.gossip_addr()], keyring()).await;
    wait_for_members(&seed, &["seed", "twin"]).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = start("twin", &[seed.gossip_addr()], keyring()).await;
    assert!(second.generation() > first.generation());

    let deadline = Instant::now() + WAIT;
    while !matches!(first.health(), murmur_gossip::Health::Degraded(_)) && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match first.health() {
        murmur_gossip::Health::Degraded(reason) => {
            assert!(reason.contains("names must be unique"), "{reason}");
        }
        other => panic!("expected degraded health, got {other:?}"),
    }
    assert_eq!(second.health(), murmur_gossip::Health::Healthy);
}
