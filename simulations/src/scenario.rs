//! The scenarios: each starts a cluster, drives events through it and returns one row
//! of figures. Times are simulated; `wall_s` is the real time a run took.

use std::collections::HashSet;
use std::time::Duration;

use murmur_gossip::semver::Version;
use murmur_gossip::{Catalog, GossipConfig};
use rand::RngExt;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::cluster::{Cluster, ClusterError, ClusterSpec, hosted_service};
use crate::measure::{DownLog, Spread, TrafficMeter, time_until};
use crate::memory;

/// How long scenarios wait and observe, in simulated time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// The maximum wait for any convergence; a run that takes longer reports `None`.
    pub deadline: Duration,
    /// The pause after the cluster has joined, before traffic is measured, so that the
    /// state transfer of the join is over.
    pub settle: Duration,
    /// How long idle traffic is measured.
    pub window: Duration,
    /// How long false down reports are counted before a member is killed.
    pub observe: Duration,
    /// How long a partition lasts.
    pub partition_hold: Duration,
}

impl Default for Timing {
    /// A 60 s deadline, 2 s to settle, a 5 s traffic window, 60 s of watching for false
    /// reports and a 30 s partition.
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(60),
            settle: Duration::from_secs(2),
            window: Duration::from_secs(5),
            observe: Duration::from_secs(60),
            partition_hold: Duration::from_secs(30),
        }
    }
}

/// Figures from one [`convergence`] run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConvergenceRow {
    /// Members in the cluster.
    pub members: usize,
    /// Seconds from the first start until 99 % of members saw every member.
    pub join_p99_s: Option<f64>,
    /// Seconds from the first start until every member saw every member.
    pub join_all_s: Option<f64>,
    /// `join_all_s` in gossip rounds.
    pub join_all_rounds: Option<f64>,
    /// Seconds from a service change until 99 % of members saw it.
    pub change_p99_s: Option<f64>,
    /// Seconds from a service change until every member saw it.
    pub change_all_s: Option<f64>,
    /// `change_p99_s` in gossip rounds.
    pub change_p99_rounds: Option<f64>,
    /// `change_all_s` in gossip rounds.
    pub change_all_rounds: Option<f64>,
    /// Bytes each member sent per second while the cluster was idle.
    pub bytes_per_member_per_s: f64,
    /// The largest SYN sent, in bytes; it carries one digest entry per member.
    pub largest_syn_bytes: usize,
    /// Heap bytes per member once joined, when the counting allocator is installed.
    pub memory_per_member_bytes: Option<u64>,
    /// Members whose gossip stopped.
    pub failed: usize,
    /// Members that report themselves degraded.
    pub degraded: usize,
    /// Real seconds the run took.
    pub wall_s: f64,
}

/// Starts `spec`, measures how long the members take to see each other, idles to
/// measure traffic and memory, then changes one member's service and measures how long
/// it takes to reach everyone.
///
/// # Errors
///
/// [`ClusterError`] when a member fails to start or rejects the change.
pub async fn convergence(
    spec: &ClusterSpec,
    timing: Timing,
    stage: &dyn Fn(&str),
) -> Result<ConvergenceRow, ClusterError> {
    let wall = std::time::Instant::now();
    let heap_before = memory::allocated_bytes();
    stage("starting members");
    let mut cluster = Cluster::start(spec).await?;
    let interval = cluster.gossip_interval();

    stage("joining");
    let join = wait_for_everyone(&cluster, cluster.born(), timing.deadline).await;
    stage("idling");
    tokio::time::sleep(timing.settle).await;
    let meter = TrafficMeter::start(&cluster);
    tokio::time::sleep(timing.window).await;
    let bytes_per_member_per_s = meter.bytes_per_member_per_second(&cluster).round();
    let memory_per_member_bytes = per_member(heap_before, memory::allocated_bytes(), spec.members);

    stage("changing a service");
    let members = cluster.len();
    let changed = cluster.rng().random_range(0..members);
    let change = change_service(&cluster, changed, timing.deadline).await?;

    let health = cluster.health();
    Ok(ConvergenceRow {
        members: spec.members,
        join_p99_s: seconds(join.quantile(0.99)),
        join_all_s: seconds(join.all()),
        join_all_rounds: rounds(join.all(), interval),
        change_p99_s: seconds(change.quantile(0.99)),
        change_all_s: seconds(change.all()),
        change_p99_rounds: rounds(change.quantile(0.99), interval),
        change_all_rounds: rounds(change.all(), interval),
        bytes_per_member_per_s,
        largest_syn_bytes: cluster.network().totals().largest_syn,
        memory_per_member_bytes,
        failed: health.failed,
        degraded: health.degraded,
        wall_s: round_to(wall.elapsed().as_secs_f64(), 100.0),
    })
}

/// Figures from one [`detection`] run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DetectionRow {
    /// Members in the cluster.
    pub members: usize,
    /// The probability of losing each message.
    pub loss: f64,
    /// The member killed.
    pub victim: String,
    /// Seconds from the kill until 99 % of the others dropped the victim.
    pub detect_p99_s: Option<f64>,
    /// Seconds from the kill until every other member dropped the victim.
    pub detect_all_s: Option<f64>,
    /// `detect_all_s` in gossip rounds.
    pub detect_all_rounds: Option<f64>,
    /// Times a member reported a running member down, over the whole observation.
    pub false_down_reports: usize,
    /// Simulated seconds over which false reports were counted.
    pub observed_s: f64,
    /// Whether every member saw every other before the observation; a run that did not
    /// join reports no false downs it might have had.
    pub joined: bool,
    /// Bytes each member sent per second during the observation.
    pub bytes_per_member_per_s: f64,
    /// Real seconds the run took.
    pub wall_s: f64,
}

/// Starts `spec` on its lossy network, counts false down reports for
/// [`Timing::observe`], then
/// kills one member and measures how long the others take to drop it.
///
/// # Errors
///
/// [`ClusterError`] when a member fails to start.
pub async fn detection(
    spec: &ClusterSpec,
    timing: Timing,
    stage: &dyn Fn(&str),
) -> Result<DetectionRow, ClusterError> {
    let wall = std::time::Instant::now();
    stage("starting members");
    let mut cluster = Cluster::start(spec).await?;
    let interval = cluster.gossip_interval();

    stage("joining");
    let join = wait_for_everyone(&cluster, cluster.born(), timing.deadline).await;
    tokio::time::sleep(timing.settle).await;

    stage("watching for false reports");
    let observed_from = Instant::now();
    let downs = DownLog::start(&cluster);
    let meter = TrafficMeter::start(&cluster);
    tokio::time::sleep(timing.observe).await;
    let bytes_per_member_per_s = meter.bytes_per_member_per_second(&cluster).round();

    stage("killing a member");
    let seeds = spec.seeds.clamp(1, spec.members);
    let victim_index = cluster
        .rng()
        .random_range(seeds.min(spec.members - 1)..spec.members);
    let victim = cluster.name(victim_index).to_string();
    cluster.kill(victim_index);
    let observers = cluster.running();
    let gone = victim.clone();
    let detect = time_until(&cluster, &observers, timing.deadline, move |catalog| {
        catalog.member(&gone).is_none()
    })
    .await;

    let false_down_reports = downs
        .reports()
        .iter()
        .filter(|report| report.member != victim)
        .count();
    Ok(DetectionRow {
        members: spec.members,
        loss: spec.conditions.loss,
        victim,
        detect_p99_s: seconds(detect.quantile(0.99)),
        detect_all_s: seconds(detect.all()),
        detect_all_rounds: rounds(detect.all(), interval),
        false_down_reports,
        observed_s: round_to(observed_from.elapsed().as_secs_f64(), 1_000.0),
        joined: join.all().is_some(),
        bytes_per_member_per_s,
        wall_s: round_to(wall.elapsed().as_secs_f64(), 100.0),
    })
}

/// Figures from one [`partition`] run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartitionRow {
    /// Members in the cluster.
    pub members: usize,
    /// Members on the smaller side.
    pub minority: usize,
    /// Seconds from the split until every member saw only its own side.
    pub split_all_s: Option<f64>,
    /// Simulated seconds the partition lasted.
    pub hold_s: f64,
    /// Seconds from the heal until 99 % of members saw every member again.
    pub heal_p99_s: Option<f64>,
    /// Seconds from the heal until every member saw every member again.
    pub heal_all_s: Option<f64>,
    /// Real seconds the run took.
    pub wall_s: f64,
}

/// Starts `spec`, splits the network into two random halves, holds the partition, heals
/// it and measures how long each step takes to show in every catalog.
///
/// # Errors
///
/// [`ClusterError`] when a member fails to start.
pub async fn partition(
    spec: &ClusterSpec,
    timing: Timing,
    stage: &dyn Fn(&str),
) -> Result<PartitionRow, ClusterError> {
    let wall = std::time::Instant::now();
    stage("starting members");
    let mut cluster = Cluster::start(spec).await?;
    stage("joining");
    wait_for_everyone(&cluster, cluster.born(), timing.deadline).await;
    tokio::time::sleep(timing.settle).await;

    stage("partitioning");
    let mut order: Vec<usize> = (0..cluster.len()).collect();
    order.shuffle(cluster.rng());
    let (left, right) = order.split_at(order.len() / 2);
    let sides = [left.to_vec(), right.to_vec()];
    let split_at = Instant::now();
    cluster.partition(&sides);
    let (left_split, right_split) = tokio::join!(
        wait_for_exactly(&cluster, &sides[0], timing.deadline),
        wait_for_exactly(&cluster, &sides[1], timing.deadline),
    );
    let split_all_s = match (left_split.all(), right_split.all()) {
        (Some(left), Some(right)) => Some(round_to(left.max(right).as_secs_f64(), 1_000.0)),
        _ => None,
    };
    tokio::time::sleep_until(split_at + timing.partition_hold).await;

    stage("healing");
    let hold_s = round_to(split_at.elapsed().as_secs_f64(), 1_000.0);
    cluster.heal();
    let heal = wait_for_everyone(&cluster, Instant::now(), timing.deadline).await;
    Ok(PartitionRow {
        members: spec.members,
        minority: left.len().min(right.len()),
        split_all_s,
        hold_s,
        heal_p99_s: seconds(heal.quantile(0.99)),
        heal_all_s: seconds(heal.all()),
        wall_s: round_to(wall.elapsed().as_secs_f64(), 100.0),
    })
}

/// Figures from one [`restart`] run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RestartRow {
    /// Members in the cluster.
    pub members: usize,
    /// Members killed and restarted.
    pub restarted: usize,
    /// Seconds from the kill until every other member dropped all the killed ones.
    pub down_all_s: Option<f64>,
    /// Seconds from the restart until every member saw every member, the restarted ones
    /// in their new generation.
    pub back_all_s: Option<f64>,
    /// Seconds from the restart until 99 % of members did.
    pub back_p99_s: Option<f64>,
    /// Real seconds the run took.
    pub wall_s: f64,
}

/// Starts `spec`, kills a tenth of the members at once (at least one, never a seed),
/// waits until the others drop them, restarts them at the same addresses in a new
/// generation and measures how long the cluster takes to be whole again.
///
/// # Errors
///
/// [`ClusterError`] when a member fails to start.
pub async fn restart(
    spec: &ClusterSpec,
    timing: Timing,
    stage: &dyn Fn(&str),
) -> Result<RestartRow, ClusterError> {
    let wall = std::time::Instant::now();
    stage("starting members");
    let mut cluster = Cluster::start(spec).await?;
    stage("joining");
    wait_for_everyone(&cluster, cluster.born(), timing.deadline).await;
    tokio::time::sleep(timing.settle).await;

    stage("killing members");
    let seeds = spec.seeds.clamp(1, spec.members);
    let mut candidates: Vec<usize> = (seeds..cluster.len()).collect();
    candidates.shuffle(cluster.rng());
    let count = (cluster.len() / 10).clamp(1, candidates.len().max(1));
    let chosen: Vec<usize> = candidates.into_iter().take(count).collect();
    for index in &chosen {
        cluster.kill(*index);
    }
    let names: HashSet<String> = chosen
        .iter()
        .map(|index| cluster.name(*index).to_string())
        .collect();
    let survivors = cluster.running();
    let killed = names.clone();
    let down = time_until(&cluster, &survivors, timing.deadline, move |catalog| {
        killed.iter().all(|name| catalog.member(name).is_none())
    })
    .await;

    stage("restarting members");
    for index in &chosen {
        cluster.restart(*index).await?;
    }
    let generations: Vec<(String, u64)> = chosen
        .iter()
        .filter_map(|index| {
            let membership = cluster.membership(*index)?;
            Some((membership.name().to_string(), membership.generation()))
        })
        .collect();
    let members = cluster.len();
    let everyone = cluster.running();
    let back = time_until(&cluster, &everyone, timing.deadline, move |catalog| {
        catalog.len() == members
            && generations.iter().all(|(name, generation)| {
                catalog
                    .member(name)
                    .is_some_and(|member| member.generation == *generation)
            })
    })
    .await;

    Ok(RestartRow {
        members,
        restarted: chosen.len(),
        down_all_s: seconds(down.all()),
        back_all_s: seconds(back.all()),
        back_p99_s: seconds(back.quantile(0.99)),
        wall_s: round_to(wall.elapsed().as_secs_f64(), 100.0),
    })
}

/// Figures from one [`ceiling`] run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CeilingRow {
    /// Members in the cluster.
    pub members: usize,
    /// Members that saw every member before the deadline.
    pub joined: usize,
    /// Seconds until every member saw every member.
    pub join_all_s: Option<f64>,
    /// The largest SYN sent, in bytes.
    pub largest_syn_bytes: usize,
    /// Messages rejected for exceeding the network's MTU.
    pub oversized: u64,
    /// Members whose gossip stopped.
    pub failed: usize,
    /// Members that report themselves degraded.
    pub degraded: usize,
    /// The first failure a member reported, if any.
    pub failure: Option<String>,
    /// Real seconds the run took.
    pub wall_s: f64,
}

/// Starts `spec` and reports whether it joins, and what limits it ran into.
///
/// # Errors
///
/// [`ClusterError`] when a member fails to start.
pub async fn ceiling(
    spec: &ClusterSpec,
    timing: Timing,
    stage: &dyn Fn(&str),
) -> Result<CeilingRow, ClusterError> {
    let wall = std::time::Instant::now();
    stage("starting members");
    let cluster = Cluster::start(spec).await?;
    stage("joining");
    let join = wait_for_everyone(&cluster, cluster.born(), timing.deadline).await;
    let health = cluster.health();
    let totals = cluster.network().totals();
    Ok(CeilingRow {
        members: spec.members,
        joined: join.reached(),
        join_all_s: seconds(join.all()),
        largest_syn_bytes: totals.largest_syn,
        oversized: totals.oversized,
        failed: health.failed,
        degraded: health.degraded,
        failure: cluster.first_failure(),
        wall_s: round_to(wall.elapsed().as_secs_f64(), 100.0),
    })
}

/// Gossip settings of the baseline measurements of plain chitchat 0.13: its failure
/// detector defaults (a 1 000-sample window, dead members kept for 24 hours) and a
/// 200 ms interval. murmur still sends V1 compressed digests and starts each peer's
/// detector at the gossip interval rather than chitchat's 5 s.
pub fn chitchat_baseline() -> GossipConfig {
    GossipConfig::default()
        .gossip_interval(Duration::from_millis(200))
        .detector_window(1_000)
        .dead_member_retention(Duration::from_secs(24 * 60 * 60))
}

/// Waits until every running member sees every member of the cluster; times count from
/// `from`, which must not be later than now.
async fn wait_for_everyone(cluster: &Cluster, from: Instant, deadline: Duration) -> Spread {
    let members = cluster.len();
    let observers = cluster.running();
    let since_from = from.elapsed();
    time_until(cluster, &observers, deadline, move |catalog| {
        catalog.len() == members
    })
    .await
    .delayed(since_from)
}

/// Waits until each member of `side` sees exactly the members of `side`.
async fn wait_for_exactly(cluster: &Cluster, side: &[usize], deadline: Duration) -> Spread {
    let names: HashSet<String> = side
        .iter()
        .map(|index| cluster.name(*index).to_string())
        .collect();
    time_until(cluster, side, deadline, move |catalog: &Catalog| {
        catalog.len() == names.len() && catalog.members().all(|member| names.contains(&member.name))
    })
    .await
}

/// Publishes a new version of member `index`'s service and waits until every running
/// member sees it.
async fn change_service(
    cluster: &Cluster,
    index: usize,
    deadline: Duration,
) -> Result<Spread, ClusterError> {
    let mut service = hosted_service(index);
    service.version = Version::new(1, 1, 0);
    let owner = cluster.name(index).to_string();
    let service_name = service.name.clone();
    let observers = cluster.running();
    let changed = time_until(cluster, &observers, deadline, move |catalog| {
        catalog
            .member(&owner)
            .and_then(|member| member.services.get(&service_name))
            .is_some_and(|service| service.version.minor == 1)
    });
    // Watching starts in the same simulated instant as the change, so an observer
    // whose catalog updates at once is still counted.
    let set = cluster.set_service(index, service);
    let (changed, set) = tokio::join!(changed, set);
    set?;
    Ok(changed)
}

fn per_member(before: Option<usize>, after: Option<usize>, members: usize) -> Option<u64> {
    let grown = after?.saturating_sub(before?);
    Some((grown / members.max(1)) as u64)
}

/// Seconds, rounded to the millisecond.
fn seconds(time: Option<Duration>) -> Option<f64> {
    time.map(|time| round_to(time.as_secs_f64(), 1_000.0))
}

/// Gossip rounds, rounded to hundredths.
fn rounds(time: Option<Duration>, interval: Duration) -> Option<f64> {
    time.map(|time| round_to(time.as_secs_f64() / interval.as_secs_f64(), 100.0))
}

fn round_to(value: f64, scale: f64) -> f64 {
    (value * scale).round() / scale
}
