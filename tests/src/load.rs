//! A steady stream of calls through an agent's gateway, bounded in rate, count and time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api;

/// What to call and how often.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// The gateway's base URL.
    pub url: String,
    /// The service and method.
    pub service: String,
    /// The method.
    pub method: String,
    /// The request body.
    pub request: Value,
    /// Calls started per second.
    pub rate: u32,
    /// Stops by itself after this long.
    pub max_duration: Duration,
    /// Calls in flight at most; a tick that finds this many waits for one to finish.
    pub max_in_flight: usize,
    /// Request headers, such as `x-murmur-idempotent: true`.
    pub headers: Vec<(String, String)>,
}

impl LoadSpec {
    /// Idempotent calls at `rate` per second for at most `max_duration`, each with a
    /// 5 s timeout.
    pub fn idempotent(
        url: &str,
        service: &str,
        method: &str,
        request: Value,
        rate: u32,
        max_duration: Duration,
    ) -> LoadSpec {
        LoadSpec {
            url: url.to_string(),
            service: service.to_string(),
            method: method.to_string(),
            request,
            rate,
            max_duration,
            max_in_flight: 128,
            headers: vec![
                ("x-murmur-idempotent".into(), "true".into()),
                ("x-murmur-timeout".into(), "5s".into()),
            ],
        }
    }
}

/// One finished call.
#[derive(Clone, Debug)]
pub struct CallRecord {
    /// When it started.
    pub started: Instant,
    /// When it finished.
    pub finished: Instant,
    /// `OK` or the error's code.
    pub code: String,
    /// The reply's `served_by` or `app` field: which provider served it.
    pub served_by: Option<String>,
    /// The error message, for failures.
    pub message: Option<String>,
}

/// A load generator running in the background; [`Load::stop`] ends it.
pub struct Load {
    running: Arc<AtomicBool>,
    records: Arc<Mutex<Vec<CallRecord>>>,
    task: tokio::task::JoinHandle<()>,
}

/// What a finished load counted.
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// Every call, in order of completion.
    pub records: Vec<CallRecord>,
}

impl LoadReport {
    /// Calls made.
    pub fn total(&self) -> usize {
        self.records.len()
    }

    /// Calls that failed.
    pub fn failed(&self) -> Vec<&CallRecord> {
        self.records
            .iter()
            .filter(|record| record.code != "OK")
            .collect()
    }

    /// Successful calls by the provider that served them.
    pub fn served_by(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for record in &self.records {
            if let Some(name) = &record.served_by {
                *counts.entry(name.clone()).or_default() += 1;
            }
        }
        counts
    }

    /// The first few failures, one per line, for an assertion message.
    pub fn failure_summary(&self) -> String {
        self.failed()
            .iter()
            .take(5)
            .map(|record| {
                format!(
                    "{}: {}",
                    record.code,
                    record.message.as_deref().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Load {
    /// Starts calling on the current tokio runtime.
    pub fn start(spec: LoadSpec) -> Load {
        let running = Arc::new(AtomicBool::new(true));
        let records = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(run(spec, running.clone(), records.clone()));
        Load {
            running,
            records,
            task,
        }
    }

    /// Calls finished so far.
    pub fn finished(&self) -> usize {
        lock(&self.records).len()
    }

    /// Stops starting calls, waits for those in flight, and returns what was counted.
    pub async fn stop(self) -> LoadReport {
        self.running.store(false, Ordering::Release);
        let _ = self.task.await;
        let records = std::mem::take(&mut *lock(&self.records));
        LoadReport { records }
    }
}

async fn run(spec: LoadSpec, running: Arc<AtomicBool>, records: Arc<Mutex<Vec<CallRecord>>>) {
    let spec = Arc::new(spec);
    let end = Instant::now() + spec.max_duration;
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / spec.rate.max(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut calls = tokio::task::JoinSet::new();
    while running.load(Ordering::Acquire) && Instant::now() < end {
        ticks.tick().await;
        while calls.len() >= spec.max_in_flight {
            let _ = calls.join_next().await;
        }
        let spec = spec.clone();
        let records = records.clone();
        calls.spawn(async move {
            let headers: Vec<(&str, &str)> = spec
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            let started = Instant::now();
            let result = api::call(
                &spec.url,
                &spec.service,
                &spec.method,
                &spec.request,
                &headers,
            )
            .await;
            let served_by = ["served_by", "app"].iter().find_map(|field| {
                result
                    .body
                    .get(*field)
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
            let message = (result.http != 200).then(|| result.body.to_string());
            lock(&records).push(CallRecord {
                started,
                finished: Instant::now(),
                code: result.code().to_string(),
                served_by: if result.http == 200 { served_by } else { None },
                message,
            });
        });
        while calls.try_join_next().is_some() {}
    }
    while calls.join_next().await.is_some() {}
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
