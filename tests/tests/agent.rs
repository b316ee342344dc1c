//! The agent, its CLI and the sidecar as a user runs them: real `murmur agent`
//! processes on loopback, and small HTTP applications in this test process.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use murmur::gossip::GossipConfig;
use murmur::{Balancer, Node};
use murmur_tests::app::App;
use murmur_tests::{AgentSpec, Cluster, api, murmur_bin, serial, wait_for};
use serde_json::{Value, json};

const CONVERGE_WITHIN: Duration = Duration::from_secs(20);

/// Runs the `murmur` CLI against the agent at `http` and returns its output and how long
/// it ran.
fn cli(http: &str, args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let output = Command::new(murmur_bin())
        .args(args)
        .args(["--http", http])
        .env_remove("MURMUR_HTTP_ADDR")
        .output()
        .expect("the murmur CLI runs");
    (output, started.elapsed())
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Waits until the agent at `url` routes `service` to `count` alive providers.
async fn wait_for_providers(url: &str, service: &str, count: usize) {
    let found = wait_for(CONVERGE_WITHIN, || async {
        let services = api::services(url).await?;
        let alive = services
            .get(service)?
            .iter()
            .filter(|provider| provider.status == "alive")
            .count();
        (alive == count).then_some(())
    })
    .await;
    assert!(
        found.is_some(),
        "{url} never saw {count} alive providers of {service}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_converge() {
    let _serial = serial().await;
    let mut cluster = Cluster::new();
    let seed = AgentSpec::loopback("a1", &[]);
    let join = [seed.gossip];
    cluster.start(seed).await;
    cluster.start(AgentSpec::loopback("a2", &join)).await;
    cluster.start(AgentSpec::loopback("a3", &join)).await;

    let took = cluster
        .wait_converged(&["a1", "a2", "a3"], CONVERGE_WITHIN)
        .await;
    eprintln!("three agents converged in {took:?}");
    assert!(took.is_some(), "three agents did not converge");

    let http = cluster.agents[2].spec.http.to_string();
    let (output, _) = cli(&http, &["nodes", "--json"]);
    assert!(
        output.status.success(),
        "murmur nodes failed: {}",
        stderr(&output)
    );
    let nodes: Vec<Value> = serde_json::from_str(&stdout(&output)).expect("nodes --json is JSON");
    let mut names: Vec<&str> = nodes
        .iter()
        .filter_map(|node| node.get("name")?.as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["a1", "a2", "a3"]);
    for node in &nodes {
        for field in ["id", "status", "generation", "gossip", "rpc", "services"] {
            assert!(node.get(field).is_some(), "node lacks {field}: {node}");
        }
    }
    let (output, _) = cli(&http, &["nodes"]);
    assert!(
        stdout(&output).starts_with("NAME"),
        "table: {}",
        stdout(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_call_returns_reply() {
    let _serial = serial().await;
    let app = App::start("calc-app").await;
    let mut cluster = Cluster::new();
    let provider = AgentSpec::loopback("provider", &[]).service("calc", &app.url);
    let join = [provider.gossip];
    cluster.start(provider).await;
    cluster.start(AgentSpec::loopback("caller", &join)).await;
    let caller = cluster.agents[1].spec.http.to_string();
    wait_for_providers(&cluster.agents[1].url(), "calc", 1).await;

    let (output, _) = cli(&caller, &["call", "calc", "add", r#"{"a": 2, "b": 40}"#]);
    assert!(
        output.status.success(),
        "murmur call failed: {}",
        stderr(&output)
    );
    let reply: Value = serde_json::from_str(&stdout(&output)).expect("the reply is JSON");
    assert_eq!(reply["sum"].as_f64(), Some(42.0), "reply: {reply}");
    assert_eq!(app.received(), 1);

    let (output, _) = cli(&caller, &["services", "--json"]);
    let services: Value = serde_json::from_str(&stdout(&output)).expect("services --json is JSON");
    assert_eq!(
        services["calc"][0]["node"], "provider",
        "services: {services}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_type_body_gives_invalid_argument() {
    let _serial = serial().await;
    let app = App::start("calc-app").await;
    let mut cluster = Cluster::new();
    let provider = AgentSpec::loopback("provider", &[])
        .service("calc", &app.url)
        .demo_role("inventory");
    let join = [provider.gossip];
    cluster.start(provider).await;
    cluster.start(AgentSpec::loopback("caller", &join)).await;
    let url = cluster.agents[1].url();
    wait_for_providers(&url, "calc", 1).await;
    wait_for_providers(&url, "inventory", 1).await;

    // Through the sidecar: the application rejects the body with HTTP 400.
    let http = cluster.agents[1].spec.http.to_string();
    let (output, _) = cli(&http, &["call", "calc", "add", r#"{"a": "two", "b": 40}"#]);
    assert_eq!(output.status.code(), Some(2), "stderr: {}", stderr(&output));
    assert!(
        stderr(&output).starts_with("error: INVALID_ARGUMENT"),
        "stderr: {}",
        stderr(&output)
    );

    // To a Rust service: the body does not decode into the handler's request type.
    let result = api::call(
        &url,
        "inventory",
        "reserve",
        &json!({"sku": 5, "count": "x"}),
        &[],
    )
    .await;
    assert_eq!(result.code(), "INVALID_ARGUMENT", "body: {}", result.body);
    assert_eq!(result.http, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_200ms_gives_deadline_exceeded() {
    let _serial = serial().await;
    let app = App::start("slow-app").await;
    let mut cluster = Cluster::new();
    let provider = AgentSpec::loopback("provider", &[]).service("slow", &app.url);
    let join = [provider.gossip];
    cluster.start(provider).await;
    cluster.start(AgentSpec::loopback("caller", &join)).await;
    wait_for_providers(&cluster.agents[1].url(), "slow", 1).await;
    let http = cluster.agents[1].spec.http.to_string();

    let (output, elapsed) = cli(
        &http,
        &[
            "call",
            "slow",
            "slow",
            r#"{"ms": 3000}"#,
            "--timeout",
            "200ms",
        ],
    );
    eprintln!("murmur call --timeout 200ms against a 3 s handler returned after {elapsed:?}");
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    assert!(
        stderr(&output).starts_with("error: DEADLINE_EXCEEDED"),
        "stderr: {}",
        stderr(&output)
    );
    assert!(elapsed < Duration::from_millis(500), "took {elapsed:?}");

    let started = Instant::now();
    let result = api::call(
        &cluster.agents[1].url(),
        "slow",
        "slow",
        &json!({"ms": 3000}),
        &[("x-murmur-timeout", "200ms")],
    )
    .await;
    let elapsed = started.elapsed();
    eprintln!("gateway call with a 200 ms timeout returned after {elapsed:?}");
    assert_eq!(result.code(), "DEADLINE_EXCEEDED");
    assert_eq!(result.http, 504);
    assert!(elapsed < Duration::from_millis(500), "took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_agent_finishes_calls_takes_no_new() {
    let _serial = serial().await;
    let first = App::start("app-1").await;
    let second = App::start("app-2").await;
    let mut cluster = Cluster::new();
    let caller = AgentSpec::loopback("caller", &[]);
    let join = [caller.gossip];
    cluster.start(caller).await;
    cluster
        .start(AgentSpec::loopback("p1", &join).service("work", &first.url))
        .await;
    cluster
        .start(AgentSpec::loopback("p2", &join).service("work", &second.url))
        .await;
    let url = cluster.agents[0].url();
    wait_for_providers(&url, "work", 2).await;

    // Slow calls until p1 serves some of them.
    let mut slow_calls = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let url = url.clone();
        slow_calls
            .spawn(async move { api::call(&url, "work", "slow", &json!({"ms": 1500}), &[]).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = wait_for(Duration::from_secs(5), || async {
        (first.received() > 0).then_some(())
    })
    .await;
    assert!(started.is_some(), "p1 received none of 12 slow calls");
    let in_flight_on_p1 = first.received();

    cluster.agent("p1").terminate();
    let seen = wait_for(Duration::from_secs(10), || async {
        let nodes = api::nodes(&url).await?;
        let p1 = nodes.iter().find(|node| node.name == "p1");
        p1.is_none_or(|node| node.status == "draining")
            .then(Instant::now)
    })
    .await
    .expect("the caller never saw p1 draining");

    let mut fast = Vec::new();
    for _ in 0..50 {
        fast.push(api::call(&url, "work", "whoami", &Value::Null, &[]).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut slow = Vec::new();
    while let Some(result) = slow_calls.join_next().await {
        slow.push(result.expect("the call task runs"));
    }
    let exit = cluster.agent("p1").wait_exit(Duration::from_secs(20)).await;

    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for result in &fast {
        assert_eq!(
            result.code(),
            "OK",
            "call after draining failed: {}",
            result.body
        );
        *served
            .entry(result.body["app"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    eprintln!(
        "drain: {in_flight_on_p1} slow calls in flight on p1 at SIGTERM; after draining was seen: {served:?}"
    );
    assert_eq!(
        first.state.arrivals_since(seen),
        0,
        "p1 received calls after it was seen draining"
    );
    assert_eq!(served.get("app-2"), Some(&50));
    for result in &slow {
        assert_eq!(result.code(), "OK", "slow call failed: {}", result.body);
    }
    assert_eq!(
        first.completed(),
        first.received(),
        "p1 dropped calls in flight"
    );
    let exit = exit.expect("p1 did not exit within 20 s of SIGTERM");
    assert!(exit.success(), "p1 exited with {exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_300_calls_evenly() {
    let _serial = serial().await;
    let mut cluster = Cluster::new();
    let seed = AgentSpec::loopback("inventory-1", &[]).demo_role("inventory");
    let join = [seed.gossip];
    cluster.start(seed).await;
    for name in ["inventory-2", "inventory-3"] {
        cluster
            .start(AgentSpec::loopback(name, &join).demo_role("inventory"))
            .await;
    }
    let caller = Node::builder()
        .name("rust-caller")
        .join([join[0].to_string()])
        .cluster_key(cluster.key.clone())
        .gossip_config(GossipConfig::local("rust-caller"))
        .start()
        .await
        .expect("the in-process node starts");
    let client = caller
        .client("inventory")
        .balancer(Balancer::RoundRobin)
        .timeout(Duration::from_secs(5));
    let seen = wait_for(CONVERGE_WITHIN, || async {
        (client.endpoints().len() == 3).then_some(())
    })
    .await;
    assert!(
        seen.is_some(),
        "the in-process node never saw three providers"
    );

    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for index in 0..300 {
        let reply: Value = client
            .call(
                "reserve",
                &json!({"sku": format!("sku-{index}"), "count": 1}),
            )
            .await
            .expect("reserve succeeds");
        let by = reply["served_by"]
            .as_str()
            .expect("reply names its server")
            .to_string();
        *served.entry(by).or_default() += 1;
    }
    caller.shutdown().await;
    eprintln!("round robin over three providers, 300 calls: {served:?}");
    assert_eq!(served.len(), 3, "served by {served:?}");
    for (name, count) in &served {
        assert!(
            (90..=110).contains(count),
            "{name} served {count} of 300 calls"
        );
    }
}
