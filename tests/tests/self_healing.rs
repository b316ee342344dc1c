//! Self-healing on loopback: five agents under steady idempotent load through one
//! agent's gateway, while a provider crashes, restarts or drains, or while strangers
//! send garbage to every port. Figures are printed; bounds are about ten times the
//! expected figure, because the machine is small and shared.

use std::time::{Duration, Instant};

use murmur::ClusterKey;
use murmur::rpc::{CallOptions, Endpoint, Identity, NodeId, Peer, RpcConfig, Trust};
use murmur_tests::load::{Load, LoadReport, LoadSpec};
use murmur_tests::{AgentSpec, Cluster, api, serial, wait_for};
use serde_json::{Value, json};

/// Calls per second through the gateway.
const RATE: u32 = 200;
/// Gossip profile of the agents. With `local` (100 ms rounds) a member is declared down
/// after about half a second of silence, and on a 2-core machine saturated by this load
/// a busy agent's gossip task stalls that long now and then (seen right after a drained
/// agent stopped): every agent then briefly marks the others down and calls fail.
const PROFILE: &str = "lan";
/// Each load stops by itself after this long, whatever the test does.
const MAX_LOAD: Duration = Duration::from_secs(60);
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);
/// Gross bound on failure detection: the lan profile detects in about 1.5 s.
const DETECTION_BOUND: Duration = Duration::from_secs(15);

const ALL: [&str; 5] = [
    "gateway",
    "member-3",
    "member-4",
    "inventory-1",
    "inventory-2",
];

/// Five agents joined through `gateway`: two host `inventory`, the gateway only calls.
async fn five_agents() -> Cluster {
    let mut cluster = Cluster::new();
    let mut gateway = AgentSpec::loopback("gateway", &[]);
    gateway.profile = PROFILE.to_string();
    let join = [gateway.gossip];
    cluster.start(gateway).await;
    for name in &ALL[1..] {
        let mut spec = AgentSpec::loopback(name, &join);
        spec.profile = PROFILE.to_string();
        if name.starts_with("inventory") {
            spec = spec.demo_role("inventory");
        }
        cluster.start(spec).await;
    }
    let took = cluster.wait_converged(&ALL, CONVERGE_WITHIN).await;
    assert!(
        took.is_some(),
        "five agents did not converge in {CONVERGE_WITHIN:?}"
    );
    eprintln!(
        "five agents converged {:?} after the last start",
        took.unwrap_or_default()
    );
    cluster
}

fn start_load(cluster: &Cluster) -> Load {
    Load::start(LoadSpec::idempotent(
        &cluster.agents[0].url(),
        "inventory",
        "reserve",
        json!({"sku": "sku-1", "count": 1}),
        RATE,
        MAX_LOAD,
    ))
}

fn print_report(scenario: &str, report: &LoadReport) {
    eprintln!(
        "{scenario}: {} calls made, {} failed, served by {:?}",
        report.total(),
        report.failed().len(),
        report.served_by()
    );
}

fn assert_no_failures(report: &LoadReport) {
    assert!(report.total() > 0, "no calls were made");
    assert_eq!(
        report.failed().len(),
        0,
        "{} of {} calls failed; first failures:\n{}",
        report.failed().len(),
        report.total(),
        report.failure_summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_under_load_fails_no_calls() {
    let _serial = serial().await;
    let mut cluster = five_agents().await;
    let load = start_load(&cluster);
    tokio::time::sleep(Duration::from_secs(2)).await;

    cluster.agent("inventory-2").kill();
    let killed = Instant::now();
    let survivors = cluster.urls_where(|agent| agent.spec.name != "inventory-2");
    let unlisted = wait_for(DETECTION_BOUND, || {
        api::none_lists(&survivors, "inventory-2", "inventory")
    })
    .await;
    let detection = killed.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = load.stop().await;

    print_report("crash under load", &report);
    eprintln!("crash under load: kill -9 to no member routing to it: {detection:?}");
    assert!(
        unlisted.is_some(),
        "inventory-2 still listed {DETECTION_BOUND:?} after kill -9"
    );
    assert_no_failures(&report);
    let after_kill = report
        .records
        .iter()
        .filter(|record| record.started > killed + detection)
        .count();
    assert!(after_kill > 0, "no calls were made after the detection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_under_same_name_leaves_one_member() {
    let _serial = serial().await;
    let mut cluster = five_agents().await;
    let gateway = cluster.agents[0].url();
    let old = api::nodes(&gateway)
        .await
        .and_then(|nodes| nodes.into_iter().find(|node| node.name == "inventory-2"))
        .expect("the gateway lists inventory-2");
    let load = start_load(&cluster);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The gateway now holds a pooled connection to each provider's current life.
    let opened_before = api::metrics(&gateway)
        .await
        .map(|text| api::metric(&text, "murmur_rpc_connections_opened_total"))
        .unwrap_or_default();

    // Restart before failure detection, so callers still hold connections to the old
    // life at the same address when the new one comes up.
    cluster.agent("inventory-2").kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.respawn("inventory-2");
    let restarted = Instant::now();
    cluster.agent("inventory-2").wait_ready().await;

    let urls = cluster.urls_where(|_| true);
    let one_entry = wait_for(CONVERGE_WITHIN, || async {
        for url in &urls {
            let nodes = api::nodes(url).await?;
            let entries: Vec<_> = nodes
                .iter()
                .filter(|node| node.name == "inventory-2")
                .collect();
            let fresh = entries.len() == 1
                && entries[0].generation > old.generation
                && entries[0].status == "alive";
            if !fresh || nodes.len() != ALL.len() {
                return None;
            }
        }
        Some(restarted.elapsed())
    })
    .await;
    let serving_again = wait_for(CONVERGE_WITHIN, || async {
        // Probe through the gateway until a call lands on the new inventory-2.
        let result = api::call(
            &gateway,
            "inventory",
            "reserve",
            &json!({"sku": "probe", "count": 1}),
            &[("x-murmur-idempotent", "true")],
        )
        .await;
        (result.body["served_by"] == "inventory-2").then(|| restarted.elapsed())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = load.stop().await;
    let opened_after = api::metrics(&gateway)
        .await
        .map(|text| api::metric(&text, "murmur_rpc_connections_opened_total"))
        .unwrap_or_default();

    print_report("restart", &report);
    let slowest_after_restart = report
        .records
        .iter()
        .filter(|record| record.started >= restarted)
        .map(|record| record.finished - record.started)
        .max()
        .unwrap_or_default();
    eprintln!(
        "restart: one entry everywhere after {one_entry:?}, serving again after {serving_again:?}, \
         slowest call after restart {slowest_after_restart:?}, gateway connections opened {opened_before} -> {opened_after}"
    );
    assert!(
        one_entry.is_some(),
        "some agent still lists the old life or two entries"
    );
    assert!(
        serving_again.is_some(),
        "inventory-2 served no call within {CONVERGE_WITHIN:?} of restart"
    );
    let late = report
        .records
        .iter()
        .filter(|record| record.started >= restarted + serving_again.unwrap_or_default())
        .filter(|record| record.served_by.as_deref() == Some("inventory-2"))
        .count();
    assert!(late > 0, "the load never reached the new inventory-2");
    assert!(
        slowest_after_restart < Duration::from_secs(5),
        "a call hung for {slowest_after_restart:?} after the restart"
    );
    assert!(
        opened_after > opened_before,
        "the gateway never opened a new connection"
    );
    assert_no_failures(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_under_load_fails_no_calls() {
    let _serial = serial().await;
    let mut cluster = five_agents().await;
    let gateway = cluster.agents[0].url();
    let load = start_load(&cluster);
    tokio::time::sleep(Duration::from_secs(2)).await;

    cluster.agent("inventory-2").terminate();
    let terminated = Instant::now();
    let seen = wait_for(DETECTION_BOUND, || async {
        let nodes = api::nodes(&gateway).await?;
        let member = nodes.iter().find(|node| node.name == "inventory-2");
        member
            .is_none_or(|node| node.status == "draining")
            .then(Instant::now)
    })
    .await
    .expect("the gateway never saw inventory-2 draining");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let exit = cluster
        .agent("inventory-2")
        .wait_exit(Duration::from_secs(20))
        .await;
    let stopped = terminated.elapsed();
    let report = load.stop().await;

    print_report("drain under load", &report);
    let late = report
        .records
        .iter()
        .filter(|record| record.started > seen)
        .filter(|record| record.served_by.as_deref() == Some("inventory-2"))
        .count();
    eprintln!(
        "drain under load: draining seen by the gateway {:?} after SIGTERM, process exited {stopped:?} after SIGTERM",
        seen - terminated
    );
    assert_eq!(
        late, 0,
        "{late} calls started after draining was seen reached inventory-2"
    );
    let exit = exit.expect("inventory-2 did not exit within 20 s of SIGTERM");
    assert!(exit.success(), "inventory-2 exited with {exit}");
    assert_no_failures(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_traffic_is_dropped_and_counted() {
    let _serial = serial().await;
    let mut cluster = five_agents().await;
    let urls = cluster.urls_where(|_| true);
    let mut before = Vec::new();
    for url in &urls {
        before.push(api::metrics(url).await.expect("metrics are served"));
    }
    let load = start_load(&cluster);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let datagrams = send_random_datagrams(&cluster).await;
    let rejected = connect_from_other_clusters(&cluster).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = load.stop().await;

    print_report("bad traffic", &report);
    eprintln!(
        "bad traffic: {datagrams} random datagrams sent, foreign calls ended with {rejected:?}"
    );
    for agent in &mut cluster.agents {
        assert!(
            agent.is_running(),
            "{} died under bad traffic",
            agent.spec.name
        );
    }
    for (code, _) in &rejected {
        assert!(
            code == "Unauthenticated" || code == "Unavailable",
            "a call from another cluster ended with {code}"
        );
    }
    for (index, url) in urls.iter().enumerate() {
        let after = api::metrics(url).await.expect("metrics are served");
        let name = &cluster.agents[index].spec.name;
        let dropped = api::metric_sum(&after, "murmur_gossip_dropped_total")
            - api::metric_sum(&before[index], "murmur_gossip_dropped_total");
        let handshakes = api::metric(&after, "murmur_rpc_handshakes_rejected_total")
            - api::metric(&before[index], "murmur_rpc_handshakes_rejected_total");
        eprintln!(
            "bad traffic: {name} dropped {dropped} gossip datagrams, rejected {handshakes} handshakes"
        );
        assert!(dropped > 0.0, "{name} counted no dropped gossip datagram");
        assert!(handshakes > 0.0, "{name} counted no rejected handshake");
    }
    assert_no_failures(&report);
}

/// Sends random datagrams of 1 to 1400 bytes to every gossip and RPC port; returns how
/// many were sent.
async fn send_random_datagrams(cluster: &Cluster) -> usize {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("a UDP socket on loopback");
    let mut sent = 0;
    for round in 0..200 {
        for agent in &cluster.agents {
            for target in [agent.spec.gossip, agent.spec.rpc] {
                let length = rand::random_range(1..=1400);
                let mut datagram = vec![0u8; length];
                rand::fill(&mut datagram[..]);
                if socket.send_to(&datagram, target).await.is_ok() {
                    sent += 1;
                }
            }
        }
        if round % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    sent
}

/// Calls every agent from endpoints whose certificates no cluster CA of ours signed:
/// one from another cluster key, one in open development mode. Returns each outcome's
/// code name with its message.
async fn connect_from_other_clusters(cluster: &Cluster) -> Vec<(String, String)> {
    let other = Trust::derived(ClusterKey::generate().as_bytes()).expect("a derived CA");
    let open = Trust::open_dev();
    let mut outcomes = Vec::new();
    for trust in [other, open] {
        let identity = Identity::generate().expect("a fresh identity");
        let endpoint = Endpoint::bind(
            "127.0.0.1:0".parse().expect("a literal address"),
            &identity,
            &trust,
            RpcConfig::default(),
        )
        .expect("the foreign endpoint binds");
        for agent in &cluster.agents {
            let nodes = api::nodes(&agent.url()).await.expect("nodes are served");
            let id = nodes
                .iter()
                .find(|node| node.name == agent.spec.name)
                .map(|node| node.id.clone())
                .expect("an agent lists itself");
            let peer = Peer::new(
                agent.spec.rpc,
                id.parse::<NodeId>().expect("a valid node id"),
            );
            let options = CallOptions::new().timeout(Duration::from_secs(3));
            let result: Result<Value, _> = endpoint
                .call(
                    peer,
                    "inventory",
                    "reserve",
                    &json!({"sku": "x", "count": 1}),
                    options,
                )
                .await;
            match result {
                Ok(reply) => outcomes.push(("Ok".to_string(), reply.to_string())),
                Err(status) => {
                    outcomes.push((format!("{:?}", status.code()), status.message().to_string()))
                }
            }
        }
        endpoint.close().await;
    }
    outcomes
}
