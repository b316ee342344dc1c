//! Counters of gossip traffic and of what was dropped, and the rate limit on the
//! warnings that dropped datagrams cause.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::seal::OpenError;

/// Live gossip counters of one member. All counts start at zero when the member starts.
#[derive(Debug, Default)]
pub struct GossipStats {
    datagrams_sent: AtomicU64,
    bytes_sent: AtomicU64,
    datagrams_received: AtomicU64,
    bytes_received: AtomicU64,
    send_failures: AtomicU64,
    dropped_truncated: AtomicU64,
    dropped_oversized: AtomicU64,
    dropped_not_murmur: AtomicU64,
    dropped_unsealed: AtomicU64,
    dropped_sealed_in_open_mode: AtomicU64,
    dropped_no_key: AtomicU64,
    dropped_bad_compression: AtomicU64,
    dropped_unknown_source: AtomicU64,
    dropped_overload: AtomicU64,
    invalid_values: AtomicU64,
}

/// A copy of [`GossipStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GossipStatsSnapshot {
    /// Datagrams handed to the socket.
    pub datagrams_sent: u64,
    /// Bytes handed to the socket, headers and seal included.
    pub bytes_sent: u64,
    /// Datagrams that opened and went on to chitchat.
    pub datagrams_received: u64,
    /// Bytes of the datagrams counted in `datagrams_received`.
    pub bytes_received: u64,
    /// Datagrams the socket would not send, or that would not fit one datagram.
    pub send_failures: u64,
    /// Datagrams dropped as shorter than a header.
    pub dropped_truncated: u64,
    /// Datagrams dropped as longer than the maximum datagram size.
    pub dropped_oversized: u64,
    /// Datagrams dropped because they do not start with murmur's header.
    pub dropped_not_murmur: u64,
    /// Datagrams in clear dropped by a member that has a cluster key.
    pub dropped_unsealed: u64,
    /// Sealed datagrams dropped by a member in open mode.
    pub dropped_sealed_in_open_mode: u64,
    /// Sealed datagrams no key of the keyring opened.
    pub dropped_no_key: u64,
    /// Datagrams whose compressed body was invalid or too large.
    pub dropped_bad_compression: u64,
    /// Datagrams on murmur's internal loopback hop from an unexpected sender.
    pub dropped_unknown_source: u64,
    /// Datagrams dropped because too many peers were being tracked at once.
    pub dropped_overload: u64,
    /// Values in other members' state that could not be read (and were skipped).
    pub invalid_values: u64,
}

impl GossipStatsSnapshot {
    /// All datagrams dropped on the way in, whatever the reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_truncated
            + self.dropped_oversized
            + self.dropped_not_murmur
            + self.dropped_unsealed
            + self.dropped_sealed_in_open_mode
            + self.dropped_no_key
            + self.dropped_bad_compression
            + self.dropped_unknown_source
            + self.dropped_overload
    }
}

impl GossipStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> GossipStatsSnapshot {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        GossipStatsSnapshot {
            datagrams_sent: read(&self.datagrams_sent),
            bytes_sent: read(&self.bytes_sent),
            datagrams_received: read(&self.datagrams_received),
            bytes_received: read(&self.bytes_received),
            send_failures: read(&self.send_failures),
            dropped_truncated: read(&self.dropped_truncated),
            dropped_oversized: read(&self.dropped_oversized),
            dropped_not_murmur: read(&self.dropped_not_murmur),
            dropped_unsealed: read(&self.dropped_unsealed),
            dropped_sealed_in_open_mode: read(&self.dropped_sealed_in_open_mode),
            dropped_no_key: read(&self.dropped_no_key),
            dropped_bad_compression: read(&self.dropped_bad_compression),
            dropped_unknown_source: read(&self.dropped_unknown_source),
            dropped_overload: read(&self.dropped_overload),
            invalid_values: read(&self.invalid_values),
        }
    }

    pub(crate) fn sent(&self, bytes: usize) {
        add(&self.datagrams_sent, 1);
        add(&self.bytes_sent, bytes as u64);
    }

    pub(crate) fn received(&self, bytes: usize) {
        add(&self.datagrams_received, 1);
        add(&self.bytes_received, bytes as u64);
    }

    pub(crate) fn send_failed(&self) {
        add(&self.send_failures, 1);
    }

    pub(crate) fn unknown_source(&self) {
        add(&self.dropped_unknown_source, 1);
    }

    pub(crate) fn overload(&self) {
        add(&self.dropped_overload, 1);
    }

    pub(crate) fn invalid_value(&self) {
        add(&self.invalid_values, 1);
    }

    pub(crate) fn dropped(&self, error: &OpenError) {
        let counter = match error {
            OpenError::Truncated { .. } => &self.dropped_truncated,
            OpenError::Oversized { .. } => &self.dropped_oversized,
            OpenError::NotMurmur { .. } => &self.dropped_not_murmur,
            OpenError::Unsealed => &self.dropped_unsealed,
            OpenError::SealedInOpenMode => &self.dropped_sealed_in_open_mode,
            OpenError::NoKeyOpens => &self.dropped_no_key,
            OpenError::BadCompression { .. } => &self.dropped_bad_compression,
        };
        add(counter, 1);
    }
}

fn add(counter: &AtomicU64, amount: u64) {
    counter.fetch_add(amount, Ordering::Relaxed);
}

/// Allows one warning per source address per interval, so a flood of bad datagrams
/// cannot flood the log. Tracks at most `MAX_SOURCES` addresses; past that it forgets
/// them all, which at worst lets one more warning through per source.
pub(crate) struct WarnLimiter {
    interval: Duration,
    last: Mutex<HashMap<IpAddr, Instant>>,
}

const MAX_SOURCES: usize = 1_024;

impl WarnLimiter {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a warning about `source` may be logged now.
    pub(crate) fn allow(&self, source: SocketAddr, now: Instant) -> bool {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.len() >= MAX_SOURCES {
            last.clear();
        }
        match last.get(&source.ip()) {
            Some(previous) if now.duration_since(*previous) < self.interval => false,
            _ => {
                last.insert(source.ip(), now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_allows_once_per_interval_per_source() {
        let limiter = WarnLimiter::new(Duration::from_secs(10));
        let start = Instant::now();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:1".parse().unwrap();
        assert!(limiter.allow(a, start));
        assert!(!limiter.allow(a, start + Duration::from_secs(1)));
        assert!(limiter.allow(b, start + Duration::from_secs(1)));
        assert!(limiter.allow(a, start + Duration::from_secs(11)));
    }

    #[test]
    fn each_open_error_has_its_counter() {
        let stats = GossipStats::default();
        stats.dropped(&OpenError::NoKeyOpens);
        stats.dropped(&OpenError::Unsealed);
        stats.dropped(&OpenError::Truncated { len: 1 });
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.dropped_no_key, 1);
        assert_eq!(snapshot.dropped_unsealed, 1);
        assert_eq!(snapshot.dropped_truncated, 1);
        assert_eq!(snapshot.dropped_total(), 3);
    }
}
