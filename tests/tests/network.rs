//! Self-healing across a network the test builds: two network namespaces joined by a
//! bridge in a third, two agents on each side. The link is cut for longer than failure
//! detection and the dead-member retention, then joined again; or it drops and delays
//! packets for a while. Needs root and iproute2, and skips with a message otherwise.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use murmur_tests::load::{Load, LoadReport, LoadSpec};
use murmur_tests::netns::{self, Bridge, Netns};
use murmur_tests::tun::{self, Impairment, TunLink};
use murmur_tests::{AgentSpec, Cluster, api, serial, wait_for};
use serde_json::json;

const CONVERGE_WITHIN: Duration = Duration::from_secs(30);
/// How long the sides stay apart: longer than detection (about 1 s with the local
/// profile) plus the dead-member retention set below.
const CUT: Duration = Duration::from_secs(8);
/// Dead-member retention for the partition test, well inside `CUT`.
const RETENTION: &str = "3s";
/// Gross bound on healing; chitchat re-contacts seeds every few gossip rounds.
const HEAL_BOUND: Duration = Duration::from_secs(60);
/// Gossip profile of the lossy network test. A lossy link stands for a real network,
/// whose profile is `lan`.
const LOSS_PROFILE: &str = "lan";
/// Calls per second on each side.
const RATE: u32 = 50;

/// One side of the cluster: its namespace, agents' HTTP URLs (inside that namespace),
/// and member names.
#[derive(Clone)]
struct Side {
    netns: String,
    caller_url: String,
    urls: Vec<String>,
    provider: String,
    names: Vec<String>,
}

/// Starts `inventory-{a,b}` and `caller-{a,b}` on the two sides; every agent joins
/// through both providers, so each side has a seed on the other.
fn start_sides(
    namespaces: &[&Netns],
    address: fn(usize) -> String,
    profile: &str,
    cluster: &mut Cluster,
    extra_args: &[&str],
) -> Vec<Side> {
    let letters = ["a", "b"];
    let seeds: Vec<SocketAddr> = (0..2)
        .map(|side| {
            format!("{}:7946", address(side))
                .parse()
                .expect("a literal address")
        })
        .collect();
    let mut sides = Vec::new();
    for (index, letter) in letters.iter().enumerate() {
        let ip = address(index);
        let netns = namespaces[index].name.clone();
        let provider = format!("inventory-{letter}");
        let caller = format!("caller-{letter}");
        for (name, base) in [(&provider, 7946), (&caller, 8946)] {
            let mut spec = AgentSpec {
                name: name.clone(),
                gossip: format!("{ip}:{base}").parse().expect("a literal address"),
                rpc: format!("{ip}:{}", base + 1)
                    .parse()
                    .expect("a literal address"),
                http: format!("127.0.0.1:{}", base + 2)
                    .parse()
                    .expect("a literal address"),
                join: seeds.clone(),
                services: Vec::new(),
                demo_role: None,
                profile: profile.to_string(),
                extra_args: Vec::new(),
                netns: Some(netns.clone()),
            }
            .args(extra_args);
            if name == &provider {
                spec = spec.demo_role("inventory");
            }
            cluster.spawn(spec);
        }
        sides.push(Side {
            netns,
            caller_url: "http://127.0.0.1:8948".to_string(),
            urls: vec![
                "http://127.0.0.1:7948".to_string(),
                "http://127.0.0.1:8948".to_string(),
            ],
            provider,
            names: vec![format!("inventory-{letter}"), format!("caller-{letter}")],
        });
    }
    sides
}

fn all_names(sides: &[Side]) -> Vec<String> {
    sides.iter().flat_map(|side| side.names.clone()).collect()
}

/// Waits, from inside each side's namespace, until both of its agents list exactly
/// `names`; returns each side's time.
async fn wait_each_side_lists(
    sides: &[Side],
    names: &[String],
    within: Duration,
) -> Vec<Option<Duration>> {
    let started = Instant::now();
    let mut threads = Vec::new();
    for side in sides {
        let urls = side.urls.clone();
        let names = names.to_vec();
        threads.push(netns::spawn_in(&side.netns, move || async move {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            wait_for(within, || api::all_list_exactly(&urls, &names))
                .await
                .map(|()| started.elapsed())
        }));
    }
    let mut times = Vec::new();
    for thread in threads {
        times.push(netns::join(thread).await);
    }
    times
}

fn skip_reason() -> Option<String> {
    netns::missing_requirements()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_heals_without_manual_join() {
    if let Some(missing) = skip_reason() {
        eprintln!("skipping the partition test: {missing}");
        return;
    }
    let _serial = serial().await;
    let bridge = Bridge::create("part", 2);
    let mut cluster = Cluster::new();
    let namespaces: Vec<&Netns> = bridge.sides.iter().collect();
    let sides = start_sides(
        &namespaces,
        Bridge::address,
        "local",
        &mut cluster,
        &["--dead-member-retention", RETENTION],
    );
    let everyone = all_names(&sides);
    let formed = wait_each_side_lists(&sides, &everyone, CONVERGE_WITHIN).await;
    assert!(
        formed.iter().all(Option::is_some),
        "the cluster did not form: {formed:?}"
    );

    bridge.cut(0);
    let cut_at = Instant::now();
    let mut threads = Vec::new();
    for side in &sides {
        let side = side.clone();
        threads.push(netns::spawn_in(&side.netns.clone(), move || async move {
            let load = Load::start(LoadSpec::idempotent(
                &side.caller_url,
                "inventory",
                "reserve",
                json!({"sku": "sku-1", "count": 1}),
                RATE,
                CUT + Duration::from_secs(5),
            ));
            let names: Vec<&str> = side.names.iter().map(String::as_str).collect();
            let alone = wait_for(CUT, || api::all_list_exactly(&side.urls, &names))
                .await
                .map(|()| cut_at.elapsed());
            let providers: Vec<String> = api::services(&side.caller_url)
                .await
                .and_then(|services| services.get("inventory").cloned())
                .unwrap_or_default()
                .into_iter()
                .map(|provider| provider.node)
                .collect();
            tokio::time::sleep((cut_at + CUT).saturating_duration_since(Instant::now())).await;
            (alone, providers, load.stop().await)
        }));
    }
    let mut during_cut = Vec::new();
    for thread in threads {
        during_cut.push(netns::join(thread).await);
    }

    bridge.heal(0);
    let healed = wait_each_side_lists(&sides, &everyone, HEAL_BOUND).await;

    for (side, (alone, providers, report)) in sides.iter().zip(&during_cut) {
        eprintln!(
            "partition, side of {}: alone after {alone:?}, routes inventory to {providers:?}; \
             {} calls during the {CUT:?} cut, {} failed, served by {:?}",
            side.provider,
            report.total(),
            report.failed().len(),
            report.served_by()
        );
    }
    eprintln!("partition: one cluster again after {healed:?} (retention {RETENTION}, cut {CUT:?})");
    for (side, (alone, providers, report)) in sides.iter().zip(&during_cut) {
        assert!(
            alone.is_some(),
            "the side of {} never saw only itself",
            side.provider
        );
        assert_eq!(
            providers,
            std::slice::from_ref(&side.provider),
            "routing during the cut"
        );
        assert_failures_only_before(report, cut_at + alone.unwrap_or(CUT));
        let late = report
            .records
            .iter()
            .filter(|record| record.started > cut_at + alone.unwrap_or(CUT))
            .count();
        assert!(late > 0, "no calls were made after the side was alone");
        let crossed = report
            .records
            .iter()
            .filter(|record| record.started > cut_at + alone.unwrap_or(CUT))
            .filter(|record| {
                record
                    .served_by
                    .as_ref()
                    .is_some_and(|by| by != &side.provider)
            })
            .count();
        assert_eq!(crossed, 0, "calls crossed the cut after the side was alone");
    }
    assert!(
        healed.iter().all(Option::is_some),
        "the sides did not merge within {HEAL_BOUND:?} of healing: {healed:?}"
    );
}

/// Checks that every failed call started before `detected`: once a side has detected that it is
/// alone, its calls must all succeed.
fn assert_failures_only_before(report: &LoadReport, detected: Instant) {
    let late: Vec<_> = report
        .failed()
        .into_iter()
        .filter(|record| record.started >= detected)
        .collect();
    assert!(
        late.is_empty(),
        "{} calls failed after the side was alone; first: {:?}",
        late.len(),
        late.first().map(|record| &record.message)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_and_delay_cause_no_flapping() {
    if let Some(missing) = skip_reason() {
        eprintln!("skipping the lossy network test: {missing}");
        return;
    }
    if netns::tc(&["-V"]).is_err() {
        eprintln!("skipping the lossy network test: needs the `tc` command (iproute2) on PATH");
        return;
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("skipping the lossy network test: needs /dev/net/tun for the fallback relay");
        return;
    }
    let seconds = std::env::var("MURMUR_LOSS_SECONDS")
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .unwrap_or(60)
        .clamp(5, 600);
    let lossy = Duration::from_secs(seconds);
    let _serial = serial().await;
    let link = lossy_link();
    let mut cluster = Cluster::new();
    let sides = match &link {
        Link::Netem(bridge) => {
            let namespaces: Vec<&Netns> = bridge.sides.iter().collect();
            start_sides(
                &namespaces,
                Bridge::address,
                LOSS_PROFILE,
                &mut cluster,
                &[],
            )
        }
        Link::Relay(relay) => {
            let namespaces: Vec<&Netns> = relay.sides.iter().collect();
            start_sides(
                &namespaces,
                tun::side_address,
                LOSS_PROFILE,
                &mut cluster,
                &[],
            )
        }
    };
    let everyone = all_names(&sides);
    let formed = wait_each_side_lists(&sides, &everyone, CONVERGE_WITHIN).await;
    assert!(
        formed.iter().all(Option::is_some),
        "the cluster did not form: {formed:?}"
    );

    let started = Instant::now();
    let mut threads = Vec::new();
    for side in &sides {
        let side = side.clone();
        let everyone = everyone.clone();
        threads.push(netns::spawn_in(&side.netns.clone(), move || async move {
            let load = Load::start(LoadSpec::idempotent(
                &side.caller_url,
                "inventory",
                "reserve",
                json!({"sku": "sku-1", "count": 1}),
                RATE,
                lossy + Duration::from_secs(5),
            ));
            let mut flaps = Vec::new();
            while started.elapsed() < lossy {
                for url in &side.urls {
                    let Some(nodes) = api::nodes(url).await else {
                        flaps.push(format!("{url} did not answer"));
                        continue;
                    };
                    for name in &everyone {
                        let alive = nodes
                            .iter()
                            .any(|node| &node.name == name && node.status == "alive");
                        if !alive {
                            flaps.push(format!("{url} lost {name} at {:?}", started.elapsed()));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (flaps, load.stop().await)
        }));
    }
    for (side, thread) in sides.iter().zip(threads) {
        let (flaps, report) = netns::join(thread).await;
        eprintln!(
            "lossy network ({seconds} s of 5% loss, 20 ms ± 10 ms delay, {}), side of {}: {} calls, {} failed, served by {:?}, {} member losses seen",
            link.describe(),
            side.provider,
            report.total(),
            report.failed().len(),
            report.served_by(),
            flaps.len()
        );
        if !report.failed().is_empty() {
            eprintln!("failed calls:\n{}", report.failure_summary());
        }
        assert!(
            flaps.is_empty(),
            "members flapped: {:?}",
            &flaps[..flaps.len().min(5)]
        );
        assert!(report.total() > 0, "no calls were made");
        assert_eq!(
            report.failed().len(),
            0,
            "calls failed under loss:\n{}",
            report.failure_summary()
        );
    }
}

/// The impaired link between the two sides of the lossy network test.
enum Link {
    /// `tc netem` on both ends of side 0's veth pair.
    Netem(Bridge),
    /// The user-space relay, for kernels without netem.
    Relay(TunLink),
}

impl Link {
    fn describe(&self) -> String {
        match self {
            Link::Netem(_) => "tc netem".to_string(),
            Link::Relay(relay) => format!(
                "TUN relay, {} packets dropped, {} delivered",
                relay.dropped.load(std::sync::atomic::Ordering::Relaxed),
                relay.delivered.load(std::sync::atomic::Ordering::Relaxed)
            ),
        }
    }
}

/// Sets up 5 % loss and 20 ms ± 10 ms delay each way between two namespaces: with
/// `tc netem` when the kernel has it, with the user-space relay otherwise.
fn lossy_link() -> Link {
    let bridge = Bridge::create("loss", 2);
    match bridge.netem(0, &["loss", "5%", "delay", "20ms", "10ms"]) {
        Ok(()) => Link::Netem(bridge),
        Err(error) => {
            eprintln!(
                "tc netem failed ({error}): the kernel lacks the netem qdisc, so a relay over TUN devices impairs the link instead"
            );
            drop(bridge);
            Link::Relay(TunLink::create(
                "loss",
                Impairment {
                    loss: 0.05,
                    delay: Duration::from_millis(20),
                    jitter: Duration::from_millis(10),
                },
            ))
        }
    }
}
