//! `murmur-sim`: runs murmur's gossip at scale on simulated time and writes one CSV file
//! per scenario and PNG charts into the output directory.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use murmur_gossip::GossipConfig;
use murmur_sim::memory::CountingAllocator;
use murmur_sim::report::{self, Chart, Series};
use murmur_sim::scenario::{
    self, CeilingRow, ConvergenceRow, DetectionRow, PartitionRow, RestartRow,
};
use murmur_sim::{ClusterError, ClusterSpec, Conditions, Timing};
use serde::Serialize;

/// The longest watch for false down reports in a `--quick` run, so that it fits in a
/// minute of CI on a loaded 2-core machine.
const QUICK_OBSERVE: Duration = Duration::from_secs(15);

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs murmur's gossip (the real membership and catalog code) with many members in one
/// process, over a simulated network on simulated time, and writes a CSV file per
/// scenario and PNG charts.
#[derive(Parser, Debug)]
#[command(name = "murmur-sim", version)]
struct Cli {
    /// The scenario to run; all of them when left out.
    #[arg(value_enum)]
    scenario: Option<ScenarioName>,

    /// Runs small clusters only and watches at most 15 s for false down reports. Exits
    /// with an error unless the clusters converge, detect the killed member and heal.
    /// The last line printed is one JSON object with the headline figures.
    #[arg(long)]
    quick: bool,

    /// Draws the charts from the CSV files in this directory, written by earlier runs,
    /// instead of running scenarios.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["scenario", "quick"])]
    charts_from: Option<PathBuf>,

    /// Directory for the CSV files and charts; created if missing.
    #[arg(long, value_name = "DIR", default_value = "target/sim")]
    out: PathBuf,

    /// Seed of every random choice the simulator makes.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Gossip settings to run, comma-separated: `murmur` (murmur's defaults) or
    /// `chitchat` (the baseline: plain chitchat 0.13's detector defaults).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "murmur")]
    profile: Vec<Profile>,

    /// Cluster sizes for the convergence scenario, comma-separated
    /// [default: 10,30,100,300].
    #[arg(long, value_name = "N,...", value_delimiter = ',', value_parser = parse_members)]
    members: Option<Vec<usize>>,

    /// Cluster size for the detection, partition and restart scenarios.
    #[arg(long, value_name = "N", default_value = "50", value_parser = parse_members)]
    cluster_size: usize,

    /// Loss rates for the detection scenario, comma-separated fractions from 0 to 1,
    /// where 0.05 is 5 % [default: 0,0.01,0.02,0.05,0.1].
    #[arg(long, value_name = "FRACTION,...", value_delimiter = ',', value_parser = parse_fraction)]
    loss: Option<Vec<f64>>,

    /// Cluster sizes for the ceiling scenario, comma-separated [default: 200,400].
    #[arg(long, value_name = "N,...", value_delimiter = ',', value_parser = parse_members)]
    ceiling_members: Option<Vec<usize>>,

    /// One-way delay of every message, in milliseconds.
    #[arg(long, value_name = "MS", default_value = "1", value_parser = parse_millis)]
    delay_ms: Duration,

    /// Extra delay drawn uniformly from zero to this for each message, in milliseconds.
    #[arg(long, value_name = "MS", default_value = "1", value_parser = parse_millis)]
    jitter_ms: Duration,

    /// Gossip interval in milliseconds, in place of the profile's.
    #[arg(long, value_name = "MS", value_parser = parse_millis)]
    gossip_interval_ms: Option<Duration>,

    /// Phi threshold of the failure detector, in place of the profile's.
    #[arg(long, value_name = "PHI", value_parser = parse_positive)]
    phi_threshold: Option<f64>,

    /// Failure detector window in samples, in place of the profile's.
    #[arg(long, value_name = "SAMPLES", value_parser = parse_count)]
    detector_window: Option<usize>,

    /// Maximum wait for any convergence, in simulated seconds.
    #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = parse_seconds)]
    deadline_s: Duration,

    /// Simulated seconds over which idle traffic is measured.
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    window_s: Duration,

    /// Simulated seconds over which false down reports are counted in the detection
    /// scenario.
    #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = parse_seconds)]
    observe_s: Duration,
}

/// The scenarios, in the order `murmur-sim` runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ScenarioName {
    /// Join time, time for a service change to reach 99 % and 100 % of members, idle
    /// bytes per member per second and memory per member, for each cluster size.
    Convergence,
    /// False down reports while idle, then time until a killed member is dropped by
    /// all, for each loss rate.
    Detection,
    /// Split into two random halves, hold, heal: time to split and to become one
    /// cluster again.
    Partition,
    /// Kill a tenth of the members, restart them in a new generation: time until they
    /// are dropped and until everyone sees them back.
    Restart,
    /// Join only, for large clusters: whether they join, how large the digest grows
    /// against the one-datagram limit, and whether gossip stopped.
    Ceiling,
}

/// A named set of gossip settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Profile {
    /// murmur's defaults: 250 ms interval, 100-sample detector window, dead members
    /// kept for 5 minutes.
    Murmur,
    /// The baseline: chitchat 0.13's failure detector defaults (1 000-sample window,
    /// dead members kept for 24 hours) and the 200 ms interval the baseline used.
    Chitchat,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Murmur => "murmur",
            Profile::Chitchat => "chitchat",
        }
    }

    fn gossip(self, cli: &Cli) -> GossipConfig {
        let mut config = match self {
            Profile::Murmur => GossipConfig::default(),
            Profile::Chitchat => scenario::chitchat_baseline(),
        };
        if let Some(interval) = cli.gossip_interval_ms {
            config = config.gossip_interval(interval);
        }
        if let Some(phi) = cli.phi_threshold {
            config = config.phi_threshold(phi);
        }
        if let Some(window) = cli.detector_window {
            config = config.detector_window(window);
        }
        config
    }
}

/// Every row the runs produced, by profile.
#[derive(Default)]
struct Results {
    convergence: Vec<(Profile, ConvergenceRow)>,
    detection: Vec<(Profile, DetectionRow)>,
    partition: Vec<(Profile, PartitionRow)>,
    restart: Vec<(Profile, RestartRow)>,
    ceiling: Vec<(Profile, CeilingRow)>,
}

/// The headline figures `--quick` prints as its last line.
#[derive(Serialize)]
struct QuickSummary {
    members: usize,
    join_all_rounds: Option<f64>,
    change_all_rounds: Option<f64>,
    change_all_s: Option<f64>,
    detection_s: Option<f64>,
    false_down_reports: usize,
    bytes_per_member_per_s: f64,
    partition_heal_s: Option<f64>,
    restart_back_s: Option<f64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    quiet_repeated_panics();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the scenarios the command line selects. Returns whether the quick checks
/// passed; always true outside `--quick`.
fn run(cli: &Cli) -> anyhow::Result<bool> {
    std::fs::create_dir_all(&cli.out)
        .with_context(|| format!("failed to create output directory {}", cli.out.display()))?;
    if let Some(dir) = &cli.charts_from {
        let results = read_results(dir)?;
        write_outputs(&cli.out, &results)?;
        print_projections(&results);
        println!(
            "drew the charts from {} into {}",
            dir.display(),
            cli.out.display()
        );
        return Ok(true);
    }
    let selected: Vec<ScenarioName> = match cli.scenario {
        Some(name) => vec![name],
        None if cli.quick => vec![
            ScenarioName::Convergence,
            ScenarioName::Detection,
            ScenarioName::Partition,
            ScenarioName::Restart,
        ],
        None => ScenarioName::value_variants().to_vec(),
    };
    let plan = Plan::new(cli);
    let total: usize =
        selected.iter().map(|name| plan.runs(*name)).sum::<usize>() * cli.profile.len();
    let bar = progress_bar(total as u64);

    let mut results = Results::default();
    for profile in &cli.profile {
        for name in &selected {
            run_scenario(cli, &plan, *profile, *name, &bar, &mut results)?;
        }
    }
    bar.finish_and_clear();

    write_outputs(&cli.out, &results)?;
    print_projections(&results);
    println!("wrote CSV files and charts to {}", cli.out.display());
    if cli.quick {
        return Ok(check_quick(&results));
    }
    Ok(true)
}

/// The sizes and loss rates each scenario runs with.
struct Plan {
    members: Vec<usize>,
    cluster_size: usize,
    loss: Vec<f64>,
    ceiling: Vec<usize>,
}

impl Plan {
    fn new(cli: &Cli) -> Self {
        if cli.quick {
            return Self {
                members: cli.members.clone().unwrap_or_else(|| vec![10, 50]),
                cluster_size: cli.cluster_size.min(30),
                loss: cli.loss.clone().unwrap_or_else(|| vec![0.0, 0.05]),
                ceiling: cli.ceiling_members.clone().unwrap_or_else(|| vec![100]),
            };
        }
        Self {
            members: cli
                .members
                .clone()
                .unwrap_or_else(|| vec![10, 30, 100, 300]),
            cluster_size: cli.cluster_size,
            loss: cli
                .loss
                .clone()
                .unwrap_or_else(|| vec![0.0, 0.01, 0.02, 0.05, 0.1]),
            ceiling: cli
                .ceiling_members
                .clone()
                .unwrap_or_else(|| vec![200, 400]),
        }
    }

    fn runs(&self, name: ScenarioName) -> usize {
        match name {
            ScenarioName::Convergence => self.members.len(),
            ScenarioName::Detection => self.loss.len(),
            ScenarioName::Partition | ScenarioName::Restart => 1,
            ScenarioName::Ceiling => self.ceiling.len(),
        }
    }
}

fn run_scenario(
    cli: &Cli,
    plan: &Plan,
    profile: Profile,
    name: ScenarioName,
    bar: &ProgressBar,
    results: &mut Results,
) -> anyhow::Result<()> {
    let mut timing = Timing {
        deadline: cli.deadline_s,
        window: cli.window_s,
        observe: cli.observe_s,
        ..Timing::default()
    };
    if cli.quick {
        timing.observe = timing.observe.min(QUICK_OBSERVE);
    }
    let conditions = Conditions {
        loss: 0.0,
        delay: cli.delay_ms,
        jitter: cli.jitter_ms,
    };
    let spec = |members: usize, loss: f64| {
        let gossip = profile.gossip(cli);
        ClusterSpec {
            start_spread: gossip.get_gossip_interval(),
            gossip,
            conditions: Conditions { loss, ..conditions },
            ..ClusterSpec::new(members, cli.seed)
        }
    };
    let label = |detail: String| {
        let prefix = format!("{} {}", profile.name(), detail);
        move |stage: &str| bar.set_message(format!("{prefix}: {stage}"))
    };

    match name {
        ScenarioName::Convergence => {
            for members in &plan.members {
                let stage = label(format!("convergence, {members} members"));
                let row = simulate(scenario::convergence(&spec(*members, 0.0), timing, &stage))?;
                print_line(
                    bar,
                    format!(
                        "{} convergence n={}: join {} s, change {} s (99 %) {} s (all), {:.0} B/member/s",
                        profile.name(),
                        row.members,
                        shown(row.join_all_s),
                        shown(row.change_p99_s),
                        shown(row.change_all_s),
                        row.bytes_per_member_per_s
                    ),
                );
                results.convergence.push((profile, row));
                bar.inc(1);
            }
        }
        ScenarioName::Detection => {
            for loss in &plan.loss {
                let stage = label(format!("detection, loss {loss}"));
                let spec = spec(plan.cluster_size, *loss);
                let row = simulate(scenario::detection(&spec, timing, &stage))?;
                print_line(
                    bar,
                    format!(
                        "{} detection n={} loss={}: dropped by all in {} s, {} false down reports",
                        profile.name(),
                        row.members,
                        row.loss,
                        shown(row.detect_all_s),
                        row.false_down_reports
                    ),
                );
                results.detection.push((profile, row));
                bar.inc(1);
            }
        }
        ScenarioName::Partition => {
            let stage = label(format!("partition, {} members", plan.cluster_size));
            let row = simulate(scenario::partition(
                &spec(plan.cluster_size, 0.0),
                timing,
                &stage,
            ))?;
            print_line(
                bar,
                format!(
                    "{} partition n={}: split seen by all in {} s, healed in {} s",
                    profile.name(),
                    row.members,
                    shown(row.split_all_s),
                    shown(row.heal_all_s)
                ),
            );
            results.partition.push((profile, row));
            bar.inc(1);
        }
        ScenarioName::Restart => {
            let stage = label(format!("restart, {} members", plan.cluster_size));
            let row = simulate(scenario::restart(
                &spec(plan.cluster_size, 0.0),
                timing,
                &stage,
            ))?;
            print_line(
                bar,
                format!(
                    "{} restart n={} ({} restarted): dropped in {} s, back in {} s",
                    profile.name(),
                    row.members,
                    row.restarted,
                    shown(row.down_all_s),
                    shown(row.back_all_s)
                ),
            );
            results.restart.push((profile, row));
            bar.inc(1);
        }
        ScenarioName::Ceiling => {
            for members in &plan.ceiling {
                let stage = label(format!("ceiling, {members} members"));
                let row = simulate(scenario::ceiling(&spec(*members, 0.0), timing, &stage))?;
                print_line(
                    bar,
                    format!(
                        "{} ceiling n={}: {} joined, largest SYN {} B, {} failed, {} degraded",
                        profile.name(),
                        row.members,
                        row.joined,
                        row.largest_syn_bytes,
                        row.failed,
                        row.degraded
                    ),
                );
                results.ceiling.push((profile, row));
                bar.inc(1);
            }
        }
    }
    Ok(())
}

/// Runs one scenario on a fresh single-threaded runtime whose clock is paused, so that
/// simulated time jumps ahead whenever every member is waiting.
fn simulate<T>(run: impl Future<Output = Result<T, ClusterError>>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .context("failed to build the tokio runtime")?;
    Ok(runtime.block_on(run)?)
}

fn write_outputs(out: &Path, results: &Results) -> anyhow::Result<()> {
    write_rows(out, "convergence", &results.convergence)?;
    write_rows(out, "detection", &results.detection)?;
    write_rows(out, "partition", &results.partition)?;
    write_rows(out, "restart", &results.restart)?;
    write_rows(out, "ceiling", &results.ceiling)?;

    if !results.convergence.is_empty() {
        report::draw(&out.join("convergence.png"), &convergence_chart(results))?;
        report::draw(&out.join("bandwidth.png"), &bandwidth_chart(results))?;
    }
    if !results.detection.is_empty() {
        report::draw(&out.join("detection.png"), &detection_chart(results))?;
    }
    if !results.convergence.is_empty() || !results.ceiling.is_empty() {
        report::draw(&out.join("digest.png"), &digest_chart(results))?;
    }
    Ok(())
}

/// Reads every `<scenario>-<profile>.csv` present in `dir`.
fn read_results(dir: &Path) -> anyhow::Result<Results> {
    let mut results = Results::default();
    for profile in Profile::value_variants() {
        read_rows(dir, "convergence", *profile, &mut results.convergence)?;
        read_rows(dir, "detection", *profile, &mut results.detection)?;
        read_rows(dir, "partition", *profile, &mut results.partition)?;
        read_rows(dir, "restart", *profile, &mut results.restart)?;
        read_rows(dir, "ceiling", *profile, &mut results.ceiling)?;
    }
    let found = results.convergence.len()
        + results.detection.len()
        + results.partition.len()
        + results.restart.len()
        + results.ceiling.len();
    if found == 0 {
        anyhow::bail!(
            "no murmur-sim CSV files in {}; expected files such as convergence-murmur.csv",
            dir.display()
        );
    }
    Ok(results)
}

fn read_rows<T: serde::de::DeserializeOwned>(
    dir: &Path,
    scenario: &str,
    profile: Profile,
    rows: &mut Vec<(Profile, T)>,
) -> anyhow::Result<()> {
    let path = dir.join(format!("{scenario}-{}.csv", profile.name()));
    if path.exists() {
        let read: Vec<T> = report::read_csv(&path)?;
        rows.extend(read.into_iter().map(|row| (profile, row)));
    }
    Ok(())
}

/// Writes one CSV per profile that has rows, named `<scenario>-<profile>.csv`.
fn write_rows<T: Serialize>(
    out: &Path,
    scenario: &str,
    rows: &[(Profile, T)],
) -> anyhow::Result<()> {
    for profile in Profile::value_variants() {
        let mine: Vec<&T> = rows
            .iter()
            .filter(|(owner, _)| owner == profile)
            .map(|(_, row)| row)
            .collect();
        if !mine.is_empty() {
            let path = out.join(format!("{scenario}-{}.csv", profile.name()));
            report::write_csv(&path, &mine)?;
        }
    }
    Ok(())
}

fn convergence_chart(results: &Results) -> Chart {
    let mut series = Vec::new();
    for profile in profiles_in(&results.convergence) {
        let rows = rows_of(&results.convergence, profile);
        let points = |pick: fn(&ConvergenceRow) -> Option<f64>| -> Vec<(f64, f64)> {
            rows.iter()
                .filter_map(|row| Some((row.members as f64, pick(row)?)))
                .collect()
        };
        series.push(Series {
            label: format!("{}: join, all members", profile.name()),
            points: points(|row| row.join_all_s),
        });
        series.push(Series {
            label: format!("{}: service change, 99 %", profile.name()),
            points: points(|row| row.change_p99_s),
        });
        series.push(Series {
            label: format!("{}: service change, all", profile.name()),
            points: points(|row| row.change_all_s),
        });
    }
    Chart {
        title: "Convergence time against cluster size".to_string(),
        x_label: "members (log scale)".to_string(),
        y_label: "seconds".to_string(),
        log_x: true,
        series,
    }
}

fn bandwidth_chart(results: &Results) -> Chart {
    let series = profiles_in(&results.convergence)
        .into_iter()
        .map(|profile| Series {
            label: format!("{}: idle, bytes sent", profile.name()),
            points: rows_of(&results.convergence, profile)
                .iter()
                .map(|row| (row.members as f64, row.bytes_per_member_per_s / 1000.0))
                .collect(),
        })
        .collect();
    Chart {
        title: "Idle gossip traffic per member against cluster size".to_string(),
        x_label: "members".to_string(),
        y_label: "kB sent per member per second".to_string(),
        log_x: false,
        series,
    }
}

fn detection_chart(results: &Results) -> Chart {
    let mut series = Vec::new();
    for profile in profiles_in(&results.detection) {
        let rows = rows_of(&results.detection, profile);
        series.push(Series {
            label: format!("{}: dropped by 99 %", profile.name()),
            points: rows
                .iter()
                .filter_map(|row| Some((row.loss * 100.0, row.detect_p99_s?)))
                .collect(),
        });
        series.push(Series {
            label: format!("{}: dropped by all", profile.name()),
            points: rows
                .iter()
                .filter_map(|row| Some((row.loss * 100.0, row.detect_all_s?)))
                .collect(),
        });
    }
    Chart {
        title: "Time until a killed member is dropped, against message loss".to_string(),
        x_label: "messages lost (%)".to_string(),
        y_label: "seconds".to_string(),
        log_x: false,
        series,
    }
}

/// The largest SYN, in bytes, whose sender can still answer SYNs. chitchat 0.13 puts its
/// own digest in every SYN-ACK and asserts that at least 100 bytes of the 65 507-byte
/// datagram are left for the delta after the 4-byte header and the digest, so its gossip
/// task panics once a digest passes 65 403 bytes. A SYN carries the same digest plus the
/// header and the cluster name `murmur` with its 2-byte length: 12 bytes more.
const SYN_LIMIT_BYTES: f64 = 65_415.0;

/// The largest SYN measured at each cluster size, from the convergence and ceiling runs.
fn syn_sizes(results: &Results, profile: Profile) -> Vec<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = rows_of(&results.convergence, profile)
        .iter()
        .map(|row| (row.members as f64, row.largest_syn_bytes as f64))
        .chain(
            rows_of(&results.ceiling, profile)
                .iter()
                .map(|row| (row.members as f64, row.largest_syn_bytes as f64)),
        )
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    points
}

/// Fits a line through `points` by least squares and returns the x at which it reaches
/// [`SYN_LIMIT_BYTES`], with the slope; `None` without two distinct sizes or a rising
/// line.
fn project_limit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let count = points.len() as f64;
    let mean_x = points.iter().map(|point| point.0).sum::<f64>() / count;
    let mean_y = points.iter().map(|point| point.1).sum::<f64>() / count;
    let spread: f64 = points.iter().map(|point| (point.0 - mean_x).powi(2)).sum();
    if points.len() < 2 || spread == 0.0 {
        return None;
    }
    let covariance: f64 = points
        .iter()
        .map(|point| (point.0 - mean_x) * (point.1 - mean_y))
        .sum();
    let slope = covariance / spread;
    if slope <= 0.0 {
        return None;
    }
    let intercept = mean_y - slope * mean_x;
    Some(((SYN_LIMIT_BYTES - intercept) / slope, slope))
}

/// Prints, for each profile, how fast the digest grows and where a linear projection
/// of it reaches the limit.
fn print_projections(results: &Results) {
    for profile in Profile::value_variants() {
        if let Some((members, slope)) = project_limit(&syn_sizes(results, *profile)) {
            println!(
                "{}: the digest grows by {slope:.1} bytes per member; a linear projection \
                 reaches the {SYN_LIMIT_BYTES}-byte SYN limit near {members:.0} members",
                profile.name()
            );
        }
    }
}

fn digest_chart(results: &Results) -> Chart {
    let mut series = Vec::new();
    let mut widest: f64 = 10.0;
    for profile in Profile::value_variants() {
        let points = syn_sizes(results, *profile);
        let Some(last) = points.last().copied() else {
            continue;
        };
        widest = widest.max(last.0);
        if let Some((members, _)) = project_limit(&points) {
            widest = widest.max(members);
            series.push(Series {
                label: format!("{}: linear projection", profile.name()),
                points: vec![
                    (last.0, last.1 / 1000.0),
                    (members, SYN_LIMIT_BYTES / 1000.0),
                ],
            });
        }
        series.push(Series {
            label: format!("{}: largest SYN measured", profile.name()),
            points: points
                .iter()
                .map(|(members, bytes)| (*members, bytes / 1000.0))
                .collect(),
        });
    }
    series.push(Series {
        label: "limit: digest leaves under 100 bytes of one datagram".to_string(),
        points: vec![
            (0.0, SYN_LIMIT_BYTES / 1000.0),
            (widest, SYN_LIMIT_BYTES / 1000.0),
        ],
    });
    Chart {
        title: "Digest size against cluster size".to_string(),
        x_label: "members".to_string(),
        y_label: "kB in the largest SYN".to_string(),
        log_x: false,
        series,
    }
}

fn profiles_in<T>(rows: &[(Profile, T)]) -> Vec<Profile> {
    let mut profiles: Vec<Profile> = Vec::new();
    for (profile, _) in rows {
        if !profiles.contains(profile) {
            profiles.push(*profile);
        }
    }
    profiles
}

fn rows_of<T>(rows: &[(Profile, T)], profile: Profile) -> Vec<&T> {
    rows.iter()
        .filter(|(owner, _)| *owner == profile)
        .map(|(_, row)| row)
        .collect()
}

/// Checks the gross properties of a quick run, prints what failed on stderr, and the
/// summary as the last line of stdout.
fn check_quick(results: &Results) -> bool {
    let mut problems = Vec::new();
    for (_, row) in &results.convergence {
        if row.join_all_s.is_none() {
            problems.push(format!(
                "{} members did not all see each other",
                row.members
            ));
        }
        if row.change_all_s.is_none() {
            problems.push(format!(
                "{} members did not all see the service change",
                row.members
            ));
        }
    }
    for (_, row) in &results.detection {
        if row.detect_all_s.is_none() {
            problems.push(format!(
                "killed member {} was not dropped by all at loss {}",
                row.victim, row.loss
            ));
        }
    }
    for (_, row) in &results.partition {
        if row.heal_all_s.is_none() {
            problems.push(format!(
                "partition of {} members did not heal into one cluster",
                row.members
            ));
        }
    }
    for (_, row) in &results.restart {
        if row.back_all_s.is_none() {
            problems.push(format!(
                "{} restarted members were not seen back by all",
                row.restarted
            ));
        }
    }
    for problem in &problems {
        eprintln!("quick check failed: {problem}");
    }

    let largest = results
        .convergence
        .iter()
        .map(|(_, row)| row)
        .max_by_key(|row| row.members);
    let lossless = results
        .detection
        .iter()
        .map(|(_, row)| row)
        .find(|row| row.loss == 0.0);
    let summary = QuickSummary {
        members: largest.map_or(0, |row| row.members),
        join_all_rounds: largest.and_then(|row| row.join_all_rounds),
        change_all_rounds: largest.and_then(|row| row.change_all_rounds),
        change_all_s: largest.and_then(|row| row.change_all_s),
        detection_s: lossless.and_then(|row| row.detect_all_s),
        false_down_reports: results
            .detection
            .iter()
            .map(|(_, row)| row.false_down_reports)
            .sum(),
        bytes_per_member_per_s: largest.map_or(0.0, |row| row.bytes_per_member_per_s.round()),
        partition_heal_s: results
            .partition
            .first()
            .and_then(|(_, row)| row.heal_all_s),
        restart_back_s: results.restart.first().and_then(|(_, row)| row.back_all_s),
    };
    match serde_json::to_string(&summary) {
        Ok(line) => println!("{line}"),
        Err(error) => {
            eprintln!("error: failed to encode the summary: {error}");
            return false;
        }
    }
    problems.is_empty()
}

/// Prints one finished run's figures on stdout, above the progress bar.
fn print_line(bar: &ProgressBar, line: String) {
    bar.suspend(|| println!("{line}"));
}

fn progress_bar(runs: u64) -> ProgressBar {
    let bar = ProgressBar::new(runs);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:24} {pos}/{len} {msg}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Prints the first panic in full and only counts the others. A gossip task that
/// panics, as chitchat's does once its digest outgrows a datagram, would otherwise
/// print one message per member.
fn quiet_repeated_panics() {
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let count = PANICS.fetch_add(1, Ordering::Relaxed);
        if count == 0 {
            default_hook(info);
            eprintln!("murmur-sim: further panics are counted, not printed");
        }
    }));
}

fn shown(value: Option<f64>) -> String {
    match value {
        Some(value) => format!("{value:.2}"),
        None => "-".to_string(),
    }
}

fn parse_members(text: &str) -> Result<usize, String> {
    let members: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("expected a whole number of members, got {text:?}"))?;
    if members == 0 || members > murmur_sim::cluster::MAX_MEMBERS {
        return Err(format!(
            "{members} members is outside 1 to {}",
            murmur_sim::cluster::MAX_MEMBERS
        ));
    }
    Ok(members)
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    let fraction: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected a fraction such as 0.05, got {text:?}"))?;
    if !(0.0..=1.0).contains(&fraction) {
        return Err(format!("{fraction} is outside 0 to 1; write 5 % as 0.05"));
    }
    Ok(fraction)
}

fn parse_millis(text: &str) -> Result<Duration, String> {
    let millis: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected whole milliseconds, got {text:?}"))?;
    Ok(Duration::from_millis(millis))
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected whole seconds, got {text:?}"))?;
    if seconds == 0 {
        return Err("expected at least 1 second".to_string());
    }
    Ok(Duration::from_secs(seconds))
}

fn parse_positive(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected a number, got {text:?}"))?;
    if !(value.is_finite() && value > 0.0) {
        return Err(format!("{value} is not a positive number"));
    }
    Ok(value)
}

fn parse_count(text: &str) -> Result<usize, String> {
    let value: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("expected a whole number, got {text:?}"))?;
    if value == 0 {
        return Err("expected at least 1".to_string());
    }
    Ok(value)
}
