//! Harness for murmur's whole-system tests: real `murmur agent` processes on loopback or
//! in network namespaces the test creates, small HTTP applications for the sidecar, a
//! bounded load generator, and guards that clean up when a test fails.
//!
//! The tests themselves live in `tests/`. Every process, namespace and directory a test
//! creates belongs to a guard whose `Drop` removes it, so a failed assertion leaves
//! nothing running.

pub mod agent;
pub mod api;
pub mod app;
pub mod binary;
pub mod load;
pub mod netns;
pub mod tun;

use std::time::{Duration, Instant};

pub use agent::{Agent, AgentSpec, Cluster};
pub use binary::murmur_bin;

/// Serializes tests that start several processes, so that two clusters never compete
/// for the two cores and turn timing figures into noise. A tokio mutex, because the
/// guard is held across awaits; it does not poison when a test panics.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Takes the crate-wide lock for a test that starts processes.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// Polls `check` every 50 ms until it returns `Some` or `within` passes.
pub async fn wait_for<T, F, Fut>(within: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
