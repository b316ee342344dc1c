//! `murmur demo`: five agent processes on loopback with example services calling each
//! other, steady load, one provider killed and another drained, a live view, and a
//! summary at the end.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use murmur::gossip::{GossipConfig, wait_for_catalog};
use murmur::semver::Version;
use murmur::{ClusterKey, Context, Node, ReplySink, ServiceDef, Status};
use serde::{Deserialize, Serialize};

use crate::Failure;
use crate::http::NodeView;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Calls per second the demo's client makes to the frontend.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=2000))]
    rate: u32,
    /// Seconds of load in each phase: steady, after the kill, after the drain.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(3..=120))]
    phase_seconds: u64,
    /// Keep the agents' data and logs directory instead of deleting it at the end.
    #[arg(long)]
    keep: bool,
}

/// The example services an agent can run for the demo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DemoRole {
    /// `frontend.checkout` calls inventory and pricing.
    Frontend,
    /// `inventory.reserve`.
    Inventory,
    /// `pricing.quote`, and `pricing.ticker`, a stream of prices.
    Pricing,
}

#[derive(Debug, Serialize, Deserialize)]
struct Reserve {
    sku: String,
    count: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct Reserved {
    sku: String,
    reserved: u32,
    served_by: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Quote {
    sku: String,
    cents: u64,
    served_by: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Checkout {
    total_cents: u64,
    inventory_by: String,
    pricing_by: String,
}

/// Hosts `role`'s example service on `node`.
pub async fn host_role(node: &Node, role: DemoRole) -> anyhow::Result<()> {
    let name = node.name().to_string();
    let version = Version::new(1, 0, 0);
    let service = match role {
        DemoRole::Inventory => ServiceDef::new("inventory", version)
            .unary("reserve", move |_ctx, request: Reserve| {
                let served_by = name.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    Ok::<_, Status>(Reserved {
                        sku: request.sku,
                        reserved: request.count,
                        served_by,
                    })
                }
            })
            .idempotent(),
        DemoRole::Pricing => {
            let ticker_name = name.clone();
            ServiceDef::new("pricing", version)
                .unary("quote", move |_ctx, sku: String| {
                    let served_by = name.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        let cents = 100 + sku.len() as u64 * 7;
                        Ok::<_, Status>(Quote {
                            sku,
                            cents,
                            served_by,
                        })
                    }
                })
                .idempotent()
                .server_streaming(
                    "ticker",
                    move |_ctx, ticks: u32, mut sink: ReplySink<Quote>| {
                        let served_by = ticker_name.clone();
                        async move {
                            for tick in 0..ticks {
                                let quote = Quote {
                                    sku: "sku-1".into(),
                                    cents: 100 + u64::from(tick % 7),
                                    served_by: served_by.clone(),
                                };
                                sink.send(&quote).await?;
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            Ok(())
                        }
                    },
                )
        }
        DemoRole::Frontend => {
            let node = node.clone();
            ServiceDef::new("frontend", version)
                .unary("checkout", move |ctx: Context, request: Reserve| {
                    let node = node.clone();
                    async move { checkout(&node, &ctx, request).await }
                })
                .idempotent()
        }
    };
    node.host(service).await?;
    Ok(())
}

async fn checkout(node: &Node, ctx: &Context, request: Reserve) -> Result<Checkout, Status> {
    let quote: Quote = node
        .client("pricing")
        .inherit(ctx)
        .call("quote", &request.sku)
        .await?;
    let reserved: Reserved = node
        .client("inventory")
        .inherit(ctx)
        .call("reserve", &request)
        .await?;
    Ok(Checkout {
        total_cents: quote.cents * u64::from(reserved.reserved),
        inventory_by: reserved.served_by,
        pricing_by: quote.served_by,
    })
}

/// One agent process of the demo.
struct Agent {
    name: String,
    http: SocketAddr,
    child: Child,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counts kept by the load generator.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    served: std::sync::Mutex<BTreeMap<String, u64>>,
    last_error: std::sync::Mutex<Option<String>>,
}

pub async fn run(args: DemoArgs) -> Result<(), Failure> {
    let dir = demo_dir()?;
    let result = run_in(&args, &dir).await;
    if args.keep {
        println!("agents' data and logs kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result.map_err(Failure::Other)
}

fn demo_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("murmur-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    Ok(dir)
}

async fn run_in(args: &DemoArgs, dir: &Path) -> anyhow::Result<()> {
    let key = ClusterKey::generate();
    let key_file = dir.join("cluster.key");
    std::fs::write(&key_file, key.to_hex()).context("failed to write the demo's cluster key")?;

    println!("murmur demo: five agents on 127.0.0.1, one cluster key, no registry server");
    println!(
        "logs and data: {} (deleted at the end unless --keep)\n",
        dir.display()
    );
    let roles = [
        ("frontend-1", DemoRole::Frontend),
        ("inventory-1", DemoRole::Inventory),
        ("inventory-2", DemoRole::Inventory),
        ("pricing-1", DemoRole::Pricing),
        ("pricing-2", DemoRole::Pricing),
    ];
    let mut agents = Vec::new();
    let mut seed: Option<SocketAddr> = None;
    for (name, role) in roles {
        let agent = spawn_agent(dir, &key_file, name, role, seed)?;
        seed.get_or_insert(agent.1);
        println!(
            "started {name:<12} pid {:<7} http://{}",
            agent.0.child.id(),
            agent.0.http
        );
        agents.push(agent.0);
    }
    let seed = seed.context("no agent started")?;

    let driver = Node::builder()
        .name("demo-client")
        .join([seed.to_string()])
        .cluster_key(key)
        .gossip_config(GossipConfig::local("demo-client"))
        .start()
        .await
        .context("failed to start the demo's client node")?;
    let mut updates = driver.membership().catalog_updates();
    let converged = wait_for_catalog(&mut updates, Duration::from_secs(30), |catalog| {
        catalog.len() == 6
            && ["frontend", "inventory", "pricing"]
                .iter()
                .all(|service| !catalog.endpoints(service).is_empty())
            && catalog.endpoints("inventory").len() == 2
            && catalog.endpoints("pricing").len() == 2
    })
    .await;
    if converged.is_none() {
        anyhow::bail!(
            "the demo cluster did not form within 30 s; see the agents' logs in {}",
            dir.display()
        );
    }
    println!("\ncluster formed: 6 members (5 agents + this client); load starts\n");

    let tally = Arc::new(Tally::default());
    let running = Arc::new(AtomicBool::new(true));
    let load = tokio::spawn(generate_load(
        driver.clone(),
        tally.clone(),
        running.clone(),
        args.rate,
    ));
    let ticker = tokio::spawn(watch_ticker(driver.clone(), running.clone()));

    let phase = Duration::from_secs(args.phase_seconds);
    let started = Instant::now();
    live_view(&driver, &tally, started, phase, "steady load").await;

    let victim = agents
        .iter()
        .position(|agent| agent.name == "inventory-2")
        .context("inventory-2 missing")?;
    let killed = agents.remove(victim);
    let killed_at = Instant::now();
    let mut killed = killed;
    let _ = killed.child.kill();
    let _ = killed.child.wait();
    println!(">>> killed inventory-2 with SIGKILL: no goodbye, its peers must notice\n");
    let survivors: Vec<SocketAddr> = agents.iter().map(|agent| agent.http).collect();
    let detection = tokio::spawn(async move {
        wait_until_unlisted(&survivors, "inventory-2", Duration::from_secs(60)).await
    });
    live_view(&driver, &tally, started, phase, "after the kill").await;
    let detection = detection.await.ok().flatten().map(|at| at - killed_at);

    let drained = agents
        .iter()
        .position(|agent| agent.name == "pricing-2")
        .context("pricing-2 missing")?;
    let mut drained = agents.remove(drained);
    terminate(&drained.child);
    let drain_started = Instant::now();
    println!(">>> sent SIGTERM to pricing-2: it drains, finishes its calls, then leaves\n");
    let drain_exit = tokio::spawn(async move {
        let status = wait_exit(&mut drained.child, Duration::from_secs(30)).await;
        status.map(|status| (status, drain_started.elapsed()))
    });
    live_view(&driver, &tally, started, phase, "after the drain").await;
    let drain_exit = drain_exit.await.ok().flatten();

    running.store(false, Ordering::Release);
    let _ = load.await;
    let ticks = ticker.await.unwrap_or(0);
    for agent in &agents {
        terminate(&agent.child);
    }
    driver.shutdown().await;

    let ok = tally.ok.load(Ordering::Acquire);
    let failed = tally.failed.load(Ordering::Acquire);
    println!("\n=== summary ===");
    println!("calls made:        {}", ok + failed);
    println!("calls failed:      {failed}");
    println!("streamed prices:   {ticks}");
    match detection {
        Some(elapsed) => println!(
            "inventory-2 killed: left every member's routing after {:.2} s",
            elapsed.as_secs_f64()
        ),
        None => println!("inventory-2 killed: still listed somewhere after 60 s"),
    }
    match drain_exit {
        Some((status, elapsed)) => println!(
            "pricing-2 drained: exited ({status}) {:.2} s after SIGTERM",
            elapsed.as_secs_f64()
        ),
        None => println!("pricing-2 drained: had not exited 30 s after SIGTERM"),
    }
    if let Some(error) = tally
        .last_error
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .as_ref()
    {
        println!("last error:        {error}");
    }
    Ok(())
}

fn spawn_agent(
    dir: &Path,
    key_file: &Path,
    name: &str,
    role: DemoRole,
    seed: Option<SocketAddr>,
) -> anyhow::Result<(Agent, SocketAddr)> {
    let gossip = free_udp_port()?;
    let rpc = free_udp_port()?;
    let http = free_tcp_port()?;
    let log = std::fs::File::create(dir.join(format!("{name}.log")))
        .with_context(|| format!("failed to create the log file of {name}"))?;
    let exe = std::env::current_exe().context("failed to find the murmur executable")?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("agent")
        .args(["--name", name])
        .arg("--data-dir")
        .arg(dir.join(name))
        .args(["--gossip", &gossip.to_string()])
        .args(["--rpc", &rpc.to_string()])
        .args(["--http", &http.to_string()])
        .arg("--cluster-key-file")
        .arg(key_file)
        .args(["--profile", "local"])
        .args(["--demo-role", role_name(role)])
        .env_remove("MURMUR_CONFIG")
        .env_remove("MURMUR_SERVICES")
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("failed to share the log file")?)
        .stderr(log);
    if let Some(seed) = seed {
        command.args(["--join", &seed.to_string()]);
    }
    let child = command
        .spawn()
        .with_context(|| format!("failed to start agent {name}"))?;
    Ok((
        Agent {
            name: name.to_string(),
            http,
            child,
        },
        gossip,
    ))
}

fn role_name(role: DemoRole) -> &'static str {
    match role {
        DemoRole::Frontend => "frontend",
        DemoRole::Inventory => "inventory",
        DemoRole::Pricing => "pricing",
    }
}

fn free_udp_port() -> anyhow::Result<SocketAddr> {
    let socket = UdpSocket::bind("127.0.0.1:0").context("failed to find a free UDP port")?;
    Ok(socket.local_addr()?)
}

fn free_tcp_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("failed to find a free TCP port")?;
    Ok(listener.local_addr()?)
}

/// Sends SIGTERM, the signal an orchestrator sends to stop a process gracefully.
fn terminate(child: &Child) {
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) with a pid of a child we started and a valid signal number has no
    // memory-safety preconditions.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

async fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Polls every agent until none lists `name`; returns when that happened.
async fn wait_until_unlisted(
    agents: &[SocketAddr],
    name: &str,
    within: Duration,
) -> Option<Instant> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let mut listed = false;
        for agent in agents {
            let nodes: Option<Vec<NodeView>> = match http
                .get(format!("http://{agent}/v1/nodes"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
            {
                Ok(answer) => answer.json().await.ok(),
                Err(_) => None,
            };
            if nodes.is_none_or(|nodes| nodes.iter().any(|node| node.name == name)) {
                listed = true;
                break;
            }
        }
        if !listed {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

async fn generate_load(node: Node, tally: Arc<Tally>, running: Arc<AtomicBool>, rate: u32) {
    let client = node
        .client("frontend")
        .timeout(Duration::from_secs(2))
        .idempotent(true);
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate);
    let mut calls = tokio::task::JoinSet::new();
    let mut sequence = 0u64;
    while running.load(Ordering::Acquire) {
        ticks.tick().await;
        sequence += 1;
        let client = client.clone();
        let tally = tally.clone();
        calls.spawn(async move {
            let request = Reserve {
                sku: format!("sku-{}", sequence % 17),
                count: 1 + (sequence % 3) as u32,
            };
            match client.call::<Reserve, Checkout>("checkout", &request).await {
                Ok(checkout) => {
                    tally.ok.fetch_add(1, Ordering::AcqRel);
                    let mut served = tally
                        .served
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    *served.entry(checkout.inventory_by).or_default() += 1;
                    *served.entry(checkout.pricing_by).or_default() += 1;
                }
                Err(status) => {
                    tally.failed.fetch_add(1, Ordering::AcqRel);
                    *tally
                        .last_error
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) =
                        Some(status.to_string());
                }
            }
        });
        while calls.try_join_next().is_some() {}
    }
    while calls.join_next().await.is_some() {}
}

/// Keeps a price ticker stream open, reopening it when it ends; returns prices received.
async fn watch_ticker(node: Node, running: Arc<AtomicBool>) -> u64 {
    let client = node.client("pricing").timeout(Duration::from_secs(10));
    let mut received = 0;
    while running.load(Ordering::Acquire) {
        let Ok(mut stream) = client.server_streaming::<u32, Quote>("ticker", &20).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        while let Ok(Some(_quote)) = stream.message().await {
            received += 1;
            if !running.load(Ordering::Acquire) {
                break;
            }
        }
    }
    received
}

/// Prints the cluster as the client sees it once a second for `phase`.
async fn live_view(node: &Node, tally: &Tally, started: Instant, phase: Duration, title: &str) {
    let end = Instant::now() + phase;
    let mut last_ok = tally.ok.load(Ordering::Acquire);
    let mut last_failed = tally.failed.load(Ordering::Acquire);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ok = tally.ok.load(Ordering::Acquire);
        let failed = tally.failed.load(Ordering::Acquire);
        let served: BTreeMap<String, u64> = std::mem::take(
            &mut *tally
                .served
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        let catalog = node.catalog();
        let members: Vec<String> = catalog
            .members()
            .map(|member| format!("{}:{}", member.name, member.status))
            .collect();
        let routing: Vec<String> = served
            .iter()
            .map(|(name, count)| format!("{name} {count}"))
            .collect();
        println!(
            "[{:>5.1}s {title:<15}] calls ok {:>4} failed {:>2} | members {} | served by {}",
            started.elapsed().as_secs_f64(),
            ok - last_ok,
            failed - last_failed,
            members.join(" "),
            routing.join(", ")
        );
        last_ok = ok;
        last_failed = failed;
    }
    println!();
}
