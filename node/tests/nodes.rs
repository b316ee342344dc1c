//! Nodes in one process over real loopback sockets: hosting, calling by name, routing,
//! retries and draining.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use murmur::gossip::{GossipConfig, wait_for_catalog};
use murmur::semver::{Version, VersionReq};
use murmur::{Balancer, ClusterKey, Code, Node, ServiceDef, Status};

const WAIT: Duration = Duration::from_secs(20);

fn key() -> ClusterKey {
    ClusterKey::parse(&"ab".repeat(32), "test").unwrap()
}

async fn start(name: &str, seeds: &[String]) -> Node {
    Node::builder()
        .name(name)
        .join(seeds.iter().cloned())
        .cluster_key(key())
        .gossip_config(GossipConfig::local(name))
        .drain_propagation(Duration::from_millis(400))
        .start()
        .await
        .unwrap()
}

/// A service answering with the name of the node serving it.
fn whoami(node: &str, version: Version) -> ServiceDef {
    let name = node.to_string();
    ServiceDef::new("whoami", version)
        .unary("name", move |_ctx, (): ()| {
            let name = name.clone();
            async move { Ok::<_, Status>(name) }
        })
        .idempotent()
}

async fn wait_for_providers(node: &Node, service: &str, count: usize) {
    let mut updates = node.membership().catalog_updates();
    let found = wait_for_catalog(&mut updates, WAIT, |catalog| {
        catalog.endpoints(service).len() == count
    })
    .await;
    assert!(
        found.is_some(),
        "{} never saw {count} providers of {service}",
        node.name()
    );
}

async fn cluster(providers: usize) -> (Node, Vec<Node>) {
    let caller = start("caller", &[]).await;
    let seed = vec![caller.gossip_addr().to_string()];
    let mut nodes = Vec::new();
    for index in 0..providers {
        let name = format!("p{index}");
        let node = start(&name, &seed).await;
        node.host(whoami(&name, Version::new(1, index as u64, 0)))
            .await
            .unwrap();
        nodes.push(node);
    }
    wait_for_providers(&caller, "whoami", providers).await;
    (caller, nodes)
}

#[tokio::test]
async fn call_by_name_reaches_a_provider() {
    let (caller, _providers) = cluster(1).await;
    let name: String = caller
        .client("whoami")
        .timeout(Duration::from_secs(2))
        .call("name", &())
        .await
        .unwrap();
    assert_eq!(name, "p0");
}

#[tokio::test]
async fn round_robin_spreads_evenly() {
    let (caller, _providers) = cluster(3).await;
    let client = caller.client("whoami").balancer(Balancer::RoundRobin);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        let name: String = client.call("name", &()).await.unwrap();
        *counts.entry(name).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (name, count) in &counts {
        assert!((90..=110).contains(count), "{name} got {count} of 300");
    }
}

#[tokio::test]
async fn version_and_tag_requirements_filter_providers() {
    let (caller, _providers) = cluster(3).await;
    let client = caller
        .client("whoami")
        .version(VersionReq::parse(">=1.1").unwrap());
    for _ in 0..30 {
        let name: String = client.call("name", &()).await.unwrap();
        assert_ne!(name, "p0");
    }
    let error = caller
        .client("whoami")
        .version(VersionReq::parse("^2").unwrap())
        .call::<(), String>("name", &())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable);
    assert!(error.message().contains("at version ^2"), "{error}");
    let error = caller
        .client("whoami")
        .tag("gpu")
        .call::<(), String>("name", &())
        .await
        .unwrap_err();
    assert!(error.message().contains("with tags gpu"), "{error}");
}

#[tokio::test]
async fn service_on_the_same_node_is_called_in_process() {
    let node = start("solo", &[]).await;
    node.host(whoami("solo", Version::new(1, 0, 0)))
        .await
        .unwrap();
    wait_for_providers(&node, "whoami", 1).await;
    let before = node.endpoint().stats().connections_opened;
    let name: String = node.client("whoami").call("name", &()).await.unwrap();
    assert_eq!(name, "solo");
    assert_eq!(node.endpoint().stats().connections_opened, before);
}

#[tokio::test]
async fn hosted_service_is_callable_at_once() {
    let node = start("eager", &[]).await;
    node.host(whoami("eager", Version::new(1, 0, 0)))
        .await
        .unwrap();
    let name: String = node.client("whoami").call("name", &()).await.unwrap();
    assert_eq!(name, "eager");
}

#[tokio::test]
async fn application_errors_reach_the_caller_unretried() {
    let caller = start("caller", &[]).await;
    let provider = start("provider", &[caller.gossip_addr().to_string()]).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    provider
        .host(
            ServiceDef::new("books", Version::new(1, 0, 0))
                .unary("get", move |_ctx, isbn: String| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async move { Err::<String, _>(Status::not_found(format!("no book {isbn}"))) }
                })
                .idempotent(),
        )
        .await
        .unwrap();
    wait_for_providers(&caller, "books", 1).await;
    let error = caller
        .client("books")
        .call::<String, String>("get", &"123".to_string())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    assert_eq!(error.message(), "no book 123");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn idempotent_calls_survive_a_dead_provider() {
    let (caller, mut providers) = cluster(2).await;
    // p1 vanishes without leaving: the catalog still lists it until failure detection.
    let dead = providers.pop().unwrap();
    dead.endpoint().close().await;
    drop(dead);
    let client = caller.client("whoami").timeout(Duration::from_secs(5));
    for _ in 0..50 {
        let name: String = client.call("name", &()).await.unwrap();
        assert_eq!(name, "p0");
    }
}

#[tokio::test]
async fn application_errors_never_eject_a_member() {
    let (caller, providers) = cluster(2).await;
    for provider in &providers {
        let name = provider.name().to_string();
        provider
            .host(ServiceDef::new("gate", Version::new(1, 0, 0)).unary(
                "check",
                move |_ctx, (): ()| {
                    let name = name.clone();
                    async move {
                        if name == "p0" {
                            Err(Status::new(Code::Unavailable, "token store is down"))
                        } else {
                            Ok::<_, Status>(())
                        }
                    }
                },
            ))
            .await
            .unwrap();
    }
    wait_for_providers(&caller, "gate", 2).await;
    let gate = caller
        .client("gate")
        .balancer(Balancer::RoundRobin)
        .max_attempts(1);
    for _ in 0..10 {
        let _ = gate.call::<(), ()>("check", &()).await;
    }
    // p0 sent Unavailable five times as an application; it must still take its share.
    let whoami = caller.client("whoami").balancer(Balancer::RoundRobin);
    let mut p0 = 0;
    for _ in 0..20 {
        let name: String = whoami.call("name", &()).await.unwrap();
        if name == "p0" {
            p0 += 1;
        }
    }
    assert_eq!(p0, 10);
}

#[tokio::test]
async fn unsent_calls_are_retried_whatever_the_method() {
    let caller = start("caller", &[]).await;
    let seed = vec![caller.gossip_addr().to_string()];
    let mut providers = Vec::new();
    for name in ["alive", "dead"] {
        let node = start(name, &seed).await;
        let served_by = name.to_string();
        node.host(ServiceDef::new("ledger", Version::new(1, 0, 0)).unary(
            "append",
            move |_ctx, (): ()| {
                let served_by = served_by.clone();
                async move { Ok::<_, Status>(served_by) }
            },
        ))
        .await
        .unwrap();
        providers.push(node);
    }
    wait_for_providers(&caller, "ledger", 2).await;
    let dead = providers.pop().unwrap();
    dead.endpoint().close().await;
    drop(dead);
    // `append` is not idempotent, but a call that never reached a server may go elsewhere.
    let ledger = caller.client("ledger").timeout(Duration::from_secs(5));
    for _ in 0..20 {
        let name: String = ledger.call("append", &()).await.unwrap();
        assert_eq!(name, "alive");
    }
}

#[tokio::test]
async fn timeout_holds_while_connecting() {
    let caller = start("caller", &[]).await;
    let provider = start("gone", &[caller.gossip_addr().to_string()]).await;
    provider
        .host(whoami("gone", Version::new(1, 0, 0)))
        .await
        .unwrap();
    wait_for_providers(&caller, "whoami", 1).await;
    provider.endpoint().close().await;
    drop(provider);
    let started = Instant::now();
    let error = caller
        .client("whoami")
        .timeout(Duration::from_millis(200))
        .call::<(), String>("name", &())
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error}");
    assert!(elapsed < Duration::from_millis(600), "{elapsed:?}");
}

#[tokio::test]
async fn nested_calls_carry_deadline_and_trace() {
    let caller = start("caller", &[]).await;
    let seed = vec![caller.gossip_addr().to_string()];
    let front = start("front", &seed).await;
    let back = start("back", &seed).await;
    back.host(ServiceDef::new("echo", Version::new(1, 0, 0)).unary(
        "context",
        |ctx, (): ()| async move {
            let remaining = ctx.remaining().map(|left| left.as_millis() as u64);
            Ok::<_, Status>((remaining, ctx.traceparent().map(str::to_string)))
        },
    ))
    .await
    .unwrap();
    let front_node = front.clone();
    front
        .host(ServiceDef::new("relay", Version::new(1, 0, 0)).unary(
            "context",
            move |ctx, (): ()| {
                let node = front_node.clone();
                async move {
                    let (back_remaining, back_trace): (Option<u64>, Option<String>) = node
                        .client("echo")
                        .inherit(&ctx)
                        .call("context", &())
                        .await?;
                    Ok::<_, Status>((
                        back_remaining,
                        back_trace,
                        ctx.traceparent().map(str::to_string),
                    ))
                }
            },
        ))
        .await
        .unwrap();
    wait_for_providers(&caller, "relay", 1).await;
    wait_for_providers(&front, "echo", 1).await;

    let (back_remaining, back_trace, front_trace): (Option<u64>, Option<String>, Option<String>) =
        caller
            .client("relay")
            .timeout(Duration::from_millis(2_000))
            .call("context", &())
            .await
            .unwrap();
    let back_remaining = back_remaining.expect("the nested call carried no deadline");
    assert!(back_remaining <= 2_000, "{back_remaining} ms left");
    assert!(back_remaining > 500, "{back_remaining} ms left");
    assert!(front_trace.is_some());
    assert_eq!(back_trace, front_trace);
}

#[tokio::test]
async fn nested_calls_inherit_the_deadline() {
    let caller = start("caller", &[]).await;
    let seed = vec![caller.gossip_addr().to_string()];
    let front = start("front", &seed).await;
    let back = start("back", &seed).await;
    back.host(ServiceDef::new("slow", Version::new(1, 0, 0)).unary(
        "wait",
        |ctx, (): ()| async move {
            let remaining = ctx.remaining();
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, Status>(remaining.map(|left| left.as_millis() as u64))
        },
    ))
    .await
    .unwrap();
    let front_node = front.clone();
    front
        .host(
            ServiceDef::new("front", Version::new(1, 0, 0)).unary("relay", move |ctx, (): ()| {
                let node = front_node.clone();
                async move {
                    let traceparent = ctx.traceparent().map(str::to_string);
                    let result: Result<Option<u64>, Status> =
                        node.client("slow").inherit(&ctx).call("wait", &()).await;
                    Ok::<_, Status>((
                        result
                            .err()
                            .map(|status| status.code().as_str().to_string()),
                        traceparent,
                    ))
                }
            }),
        )
        .await
        .unwrap();
    wait_for_providers(&caller, "front", 1).await;
    wait_for_providers(&front, "slow", 1).await;

    let started = Instant::now();
    let error = caller
        .client("front")
        .timeout(Duration::from_millis(300))
        .call::<(), (Option<String>, Option<String>)>("relay", &())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn drained_node_gets_no_new_calls_and_finishes_its_own() {
    let (caller, mut providers) = cluster(2).await;
    let draining = providers.pop().unwrap();
    let slow_done = Arc::new(AtomicUsize::new(0));
    let done = slow_done.clone();
    draining
        .host(
            ServiceDef::new("work", Version::new(1, 0, 0)).unary("long", move |_ctx, (): ()| {
                let done = done.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(800)).await;
                    done.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, Status>(())
                }
            }),
        )
        .await
        .unwrap();
    wait_for_providers(&caller, "work", 1).await;

    let in_flight = {
        let client = caller.client("work");
        tokio::spawn(async move { client.call::<(), ()>("long", &()).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let shutdown = {
        let node = draining.clone();
        tokio::spawn(async move { node.shutdown().await })
    };
    let mut updates = caller.membership().catalog_updates();
    wait_for_catalog(&mut updates, WAIT, |catalog| {
        catalog.endpoints("whoami").len() == 1
    })
    .await
    .expect("draining member still routed");
    for _ in 0..50 {
        let name: String = caller.client("whoami").call("name", &()).await.unwrap();
        assert_eq!(name, "p0");
    }
    in_flight.await.unwrap().unwrap();
    assert_eq!(slow_done.load(Ordering::SeqCst), 1);
    shutdown.await.unwrap();
}
