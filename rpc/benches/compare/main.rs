//! Side-by-side echo benchmark: murmur RPC against tonic over TLS, tonic without TLS and a
//! raw quinn echo, each server in its own process on 127.0.0.1.
//!
//! `cargo bench -p murmur-rpc --bench compare` runs every workload; `-- --quick` runs the
//! 1 KiB unary and stream workloads in under a minute. Both print Markdown tables and end
//! with one line of JSON holding the ratios of murmur's throughput to each baseline.
//!
//! The machine is expected to be noisy, so the systems run in rounds. In each round every
//! system runs the same workload back to back, in an order that rotates from round to round,
//! and a ratio is taken within the round. The report gives medians over rounds.

mod certs;
mod echo_murmur;
mod echo_quinn;
mod echo_tonic;
mod measure;
mod report;
mod system;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::certs::Certs;
use crate::measure::Sample;
use crate::system::{ServerProcess, System};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// The workloads of one benchmark run and their durations.
pub struct Plan {
    pub quick: bool,
    /// Unary workloads as (payload bytes, calls in flight).
    pub unary: Vec<(usize, usize)>,
    pub rounds: usize,
    pub warmup: Duration,
    pub window: Duration,
    /// Messages in one server stream, and their size in bytes.
    pub stream_count: u32,
    pub stream_size: u32,
    /// Fresh connections made per system to time set-up.
    pub setup_trials: usize,
}

impl Plan {
    fn full() -> Plan {
        let mut unary = Vec::new();
        for size in [64, 1024, 64 * 1024] {
            for in_flight in [1, 16, 128] {
                unary.push((size, in_flight));
            }
        }
        Plan {
            quick: false,
            unary,
            rounds: 5,
            warmup: Duration::from_millis(300),
            window: Duration::from_secs(1),
            stream_count: 300_000,
            stream_size: 1024,
            setup_trials: 20,
        }
    }

    fn quick() -> Plan {
        Plan {
            quick: true,
            unary: vec![(1024, 16), (1024, 128)],
            rounds: 5,
            warmup: Duration::from_millis(200),
            window: Duration::from_millis(500),
            stream_count: 100_000,
            stream_size: 1024,
            setup_trials: 5,
        }
    }
}

/// Every sample taken, by workload name and system, one per round.
pub struct Results {
    pub unary: HashMap<(usize, usize, System), Vec<Sample>>,
    pub stream: HashMap<System, Vec<Sample>>,
    pub setup_us: HashMap<System, Vec<f64>>,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(index) = args.iter().position(|arg| arg == "--serve") {
        let key = args.get(index + 1).ok_or("--serve needs a system name")?;
        let dir = args
            .get(index + 2)
            .ok_or("--serve needs a certificate folder")?;
        let system = System::from_key(key).ok_or_else(|| format!("unknown system {key:?}"))?;
        return serve(system, PathBuf::from(dir));
    }

    if let Some(index) = args.iter().position(|arg| arg == "--profile") {
        let key = args.get(index + 1).ok_or("--profile needs a system name")?;
        let system = System::from_key(key).ok_or_else(|| format!("unknown system {key:?}"))?;
        let stream = args.iter().any(|arg| arg == "--stream");
        let in_flight = match args.iter().position(|arg| arg == "--in-flight") {
            Some(index) => args
                .get(index + 1)
                .and_then(|value| value.parse().ok())
                .filter(|&calls: &usize| calls > 0)
                .ok_or(
                    "invalid or missing --in-flight value: expected a number of calls above 0",
                )?,
            None => 128,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(profile(system, stream, in_flight));
    }

    let plan = if args.iter().any(|arg| arg == "--quick") {
        Plan::quick()
    } else {
        Plan::full()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(compare(plan))
}

/// Runs one server until standard input closes.
fn serve(system: System, cert_dir: PathBuf) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let certs = Certs::load(&cert_dir)?;
    let (_server, line) = runtime.block_on(system.serve(&certs))?;
    println!("{line}");
    std::io::stdout().flush()?;

    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(runtime);
    Ok(())
}

async fn compare(plan: Plan) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let certs = Certs::generate()?;
    certs.save(dir.path())?;

    let mut servers = HashMap::new();
    let mut clients = HashMap::new();
    for system in System::ALL {
        let server = ServerProcess::start(system, dir.path())?;
        let client = system.connect(&server.line, &certs).await?;
        client.unary(&Bytes::from_static(b"warm")).await?;
        clients.insert(system, Arc::new(client));
        servers.insert(system, server);
    }

    let started = Instant::now();
    let mut results = Results {
        unary: HashMap::new(),
        stream: HashMap::new(),
        setup_us: HashMap::new(),
    };
    for &(size, in_flight) in &plan.unary {
        let payload = Bytes::from(vec![0x5a; size]);
        for round in 0..plan.rounds {
            for system in rotated(round) {
                let sample = measure::unary(
                    clients[&system].clone(),
                    payload.clone(),
                    in_flight,
                    plan.warmup,
                    plan.window,
                    servers[&system].pid(),
                )
                .await
                .map_err(|error| format!("{} unary call failed: {error}", system.key()))?;
                results
                    .unary
                    .entry((size, in_flight, system))
                    .or_default()
                    .push(sample);
            }
        }
        eprintln!(
            "unary {size} B x {in_flight} done after {:.0?}",
            started.elapsed()
        );
    }

    for round in 0..plan.rounds {
        for system in rotated(round) {
            let client = &clients[&system];
            client.stream(100, plan.stream_size).await?;
            let sample = measure::stream(
                client,
                plan.stream_count,
                plan.stream_size,
                servers[&system].pid(),
            )
            .await
            .map_err(|error| format!("{} stream failed: {error}", system.key()))?;
            results.stream.entry(system).or_default().push(sample);
        }
    }
    eprintln!("stream done after {:.0?}", started.elapsed());

    for trial in 0..plan.setup_trials {
        for system in rotated(trial) {
            let line = &servers[&system].line;
            let micros = measure_setup(system, line, &certs).await?;
            results.setup_us.entry(system).or_default().push(micros);
        }
    }

    drop(clients);
    drop(servers);
    report::print(&plan, &results);
    Ok(())
}

/// Runs only `system`, 1 KiB calls at `in_flight` calls in flight for 10 s, or with `stream`
/// one server stream of 300 000 messages of 1 KiB, for a profiler to watch.
async fn profile(system: System, stream: bool, in_flight: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let certs = Certs::generate()?;
    certs.save(dir.path())?;
    let server = ServerProcess::start(system, dir.path())?;
    let client = Arc::new(system.connect(&server.line, &certs).await?);
    if stream {
        let sample = measure::stream(&client, 300_000, 1024, server.pid()).await?;
        println!(
            "{}: {:.0} messages/s, {:.1} µs CPU per message",
            system.key(),
            sample.rate(),
            sample.cpu_per_call_us()
        );
        return Ok(());
    }
    let payload = Bytes::from(vec![0x5a; 1024]);
    let window = Duration::from_secs(10);
    let sample = measure::unary(
        client,
        payload,
        in_flight,
        Duration::from_millis(300),
        window,
        server.pid(),
    )
    .await?;
    println!(
        "{}: {:.0} calls/s, {:.1} µs CPU per call",
        system.key(),
        sample.rate(),
        sample.cpu_per_call_us()
    );
    Ok(())
}

/// Returns the time from starting a connection to the first reply, in microseconds. The
/// murmur client binds its endpoint, which issues its certificate, before the clock starts.
async fn measure_setup(system: System, line: &str, certs: &Certs) -> Result<f64> {
    let payload = Bytes::from_static(&[1; 64]);
    if system == System::Murmur {
        let client = system.connect(line, certs).await?;
        let start = Instant::now();
        client.unary(&payload).await?;
        return Ok(start.elapsed().as_secs_f64() * 1e6);
    }
    let start = Instant::now();
    let client = system.connect(line, certs).await?;
    client.unary(&payload).await?;
    Ok(start.elapsed().as_secs_f64() * 1e6)
}

/// Returns the systems in the order they run in `round`: rotated by one each round, so no
/// system always runs first or right after the same neighbour.
fn rotated(round: usize) -> Vec<System> {
    let mut order = System::ALL.to_vec();
    let shift = round % order.len();
    order.rotate_left(shift);
    order
}
