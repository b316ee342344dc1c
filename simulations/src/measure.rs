//! Measurements over a running [`Cluster`]: how long until members' catalogs satisfy a
//! condition, which members were reported down, and how many bytes members send.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use murmur_gossip::{Catalog, CatalogEvent, WatchError, wait_for_catalog};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::Cluster;

/// When each observer's catalog first satisfied a condition, measured from the start of
/// the observation; `None` for an observer that had not by the deadline.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Spread {
    times: Vec<Option<Duration>>,
}

impl Spread {
    /// Builds a spread from each observer's time.
    pub fn new(times: Vec<Option<Duration>>) -> Self {
        Self { times }
    }

    /// Adds `by` to every time, to count from an earlier instant.
    pub fn delayed(self, by: Duration) -> Self {
        let times = self
            .times
            .into_iter()
            .map(|time| time.map(|time| time + by));
        Self {
            times: times.collect(),
        }
    }

    /// How many members observed.
    pub fn observers(&self) -> usize {
        self.times.len()
    }

    /// How many observers saw the condition hold before the deadline.
    pub fn reached(&self) -> usize {
        self.times.iter().flatten().count()
    }

    /// The time by which `fraction` of the observers (rounded up) saw the condition hold,
    /// or `None` when fewer did before the deadline.
    pub fn quantile(&self, fraction: f64) -> Option<Duration> {
        let mut reached: Vec<Duration> = self.times.iter().flatten().copied().collect();
        reached.sort();
        let needed = ((fraction * self.times.len() as f64).ceil() as usize).max(1);
        reached.get(needed - 1).copied()
    }

    /// The time by which every observer saw the condition hold.
    pub fn all(&self) -> Option<Duration> {
        if self.reached() == self.times.len() {
            self.quantile(1.0)
        } else {
            None
        }
    }
}

/// Waits until the catalog of every member in `observers` satisfies `condition`, or
/// `deadline` passes, and returns when each one first did.
///
/// A member that satisfies it already when the observation starts counts at zero.
/// Catalogs are rebuilt once per gossip round at most, so the times are those at which
/// the catalog, not chitchat's state beneath it, changed.
pub async fn time_until<F>(
    cluster: &Cluster,
    observers: &[usize],
    deadline: Duration,
    condition: F,
) -> Spread
where
    F: Fn(&Catalog) -> bool + Clone + Send + Sync + 'static,
{
    let since = Instant::now();
    let mut waits: Vec<JoinHandle<Option<Duration>>> = Vec::with_capacity(observers.len());
    for index in observers {
        let Some(membership) = cluster.membership(*index) else {
            waits.push(tokio::spawn(async { None }));
            continue;
        };
        let mut updates = membership.catalog_updates();
        let condition = condition.clone();
        waits.push(tokio::spawn(async move {
            let satisfied = wait_for_catalog(&mut updates, deadline, |catalog| {
                condition(catalog.as_ref())
            })
            .await;
            satisfied.map(|_| since.elapsed())
        }));
    }

    let mut times = Vec::with_capacity(waits.len());
    for wait in waits {
        times.push(wait.await.ok().flatten());
    }
    Spread::new(times)
}

/// One `NodeDown` event: `observer` reported `member` down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownReport {
    /// Time since the log started.
    pub at: Duration,
    /// The member whose catalog dropped the other.
    pub observer: String,
    /// The member dropped.
    pub member: String,
}

/// A log of every `NodeDown` event that running members emit, for counting false
/// reports. It stops listening when dropped.
pub struct DownLog {
    reports: Arc<Mutex<Vec<DownReport>>>,
    missed: Arc<Mutex<u64>>,
    listeners: Vec<JoinHandle<()>>,
}

impl DownLog {
    /// Starts listening to the catalog events of every running member.
    pub fn start(cluster: &Cluster) -> Self {
        let since = Instant::now();
        let reports = Arc::new(Mutex::new(Vec::new()));
        let missed = Arc::new(Mutex::new(0));
        let mut listeners = Vec::new();
        for index in cluster.running() {
            let Some(membership) = cluster.membership(index) else {
                continue;
            };
            let observer = membership.name().to_string();
            let mut events = membership.watch();
            let reports = reports.clone();
            let missed = missed.clone();
            listeners.push(tokio::spawn(async move {
                loop {
                    match events.next().await {
                        Ok(CatalogEvent::NodeDown(member)) => {
                            lock(&reports).push(DownReport {
                                at: since.elapsed(),
                                observer: observer.clone(),
                                member: member.name.clone(),
                            });
                        }
                        Ok(_) => {}
                        Err(WatchError::Lagged { missed: count }) => *lock(&missed) += count,
                        Err(WatchError::Closed) => return,
                    }
                }
            }));
        }
        Self {
            reports,
            missed,
            listeners,
        }
    }

    /// The reports so far, in the order they arrived.
    pub fn reports(&self) -> Vec<DownReport> {
        lock(&self.reports).clone()
    }

    /// How many events listeners missed because they fell behind; reports may be
    /// missing when this is not zero.
    pub fn missed(&self) -> u64 {
        *lock(&self.missed)
    }
}

impl Drop for DownLog {
    fn drop(&mut self) {
        for listener in &self.listeners {
            listener.abort();
        }
    }
}

/// Bytes sent by the running members between [`start`](Self::start) and
/// [`bytes_per_member_per_second`](Self::bytes_per_member_per_second).
pub struct TrafficMeter {
    since: Instant,
    sent: HashMap<usize, u64>,
}

impl TrafficMeter {
    /// Starts counting from now.
    pub fn start(cluster: &Cluster) -> Self {
        let sent = cluster
            .running()
            .into_iter()
            .map(|index| {
                (
                    index,
                    cluster.network().traffic(cluster.addr(index)).bytes_sent,
                )
            })
            .collect();
        Self {
            since: Instant::now(),
            sent,
        }
    }

    /// The mean bytes each member that ran throughout sent per second since the start;
    /// zero when no time has passed.
    pub fn bytes_per_member_per_second(&self, cluster: &Cluster) -> f64 {
        let seconds = self.since.elapsed().as_secs_f64();
        let running = cluster.running();
        let members: Vec<usize> = running
            .into_iter()
            .filter(|index| self.sent.contains_key(index))
            .collect();
        if seconds == 0.0 || members.is_empty() {
            return 0.0;
        }
        let bytes: u64 = members
            .iter()
            .map(|index| {
                let now = cluster.network().traffic(cluster.addr(*index)).bytes_sent;
                now - self.sent[index]
            })
            .sum();
        bytes as f64 / members.len() as f64 / seconds
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Listeners only push to the log, so a poisoned lock still holds whole entries.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds(values: &[Option<u64>]) -> Spread {
        Spread::new(
            values
                .iter()
                .map(|value| value.map(Duration::from_secs))
                .collect(),
        )
    }

    #[test]
    fn quantile_counts_observers_rounding_up() {
        let spread = seconds(&[Some(3), Some(1), Some(2), Some(9)]);
        assert_eq!(spread.quantile(0.5), Some(Duration::from_secs(2)));
        assert_eq!(spread.quantile(0.99), Some(Duration::from_secs(9)));
        assert_eq!(spread.all(), Some(Duration::from_secs(9)));
    }

    #[test]
    fn quantile_is_none_when_too_few_reached() {
        let spread = seconds(&[Some(1), None, None, Some(2)]);
        assert_eq!(spread.reached(), 2);
        assert_eq!(spread.quantile(0.5), Some(Duration::from_secs(2)));
        assert_eq!(spread.quantile(0.99), None);
        assert_eq!(spread.all(), None);
    }
}
