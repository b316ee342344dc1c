//! Load generation and the numbers taken from one run: calls per second, latency
//! percentiles and CPU time of both processes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::system::Client;

/// One measured run of one system on one workload.
pub struct Sample {
    /// Calls (or stream messages) completed inside the measured window.
    pub calls: u64,
    pub seconds: f64,
    /// Latencies of the calls completed inside the window, sorted, in microseconds; empty
    /// for a stream.
    pub latencies_us: Vec<u32>,
    pub client_cpu_us: f64,
    pub server_cpu_us: f64,
}

impl Sample {
    pub fn rate(&self) -> f64 {
        self.calls as f64 / self.seconds
    }

    /// Returns the latency at quantile `q` (0.5 for the median), in microseconds.
    pub fn latency_us(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let rank = (q * self.latencies_us.len() as f64).ceil() as usize;
        f64::from(self.latencies_us[rank.clamp(1, self.latencies_us.len()) - 1])
    }

    /// Returns the CPU time of client and server together per call, in microseconds.
    pub fn cpu_per_call_us(&self) -> f64 {
        (self.client_cpu_us + self.server_cpu_us) / self.calls as f64
    }
}

/// Runs `in_flight` closed loops of unary calls: each loop starts its next call when the
/// previous one returns. Calls that complete in the `window` after `warmup` count.
pub async fn unary(
    client: Arc<Client>,
    payload: Bytes,
    in_flight: usize,
    warmup: Duration,
    window: Duration,
    server_pid: u32,
) -> crate::Result<Sample> {
    let start = Instant::now();
    let from = start + warmup;
    let to = from + window;

    let mut loops = Vec::with_capacity(in_flight);
    for _ in 0..in_flight {
        let client = client.clone();
        let payload = payload.clone();
        loops.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let begun = Instant::now();
                if begun >= to {
                    return Ok::<_, crate::Error>(latencies);
                }
                client.unary(&payload).await?;
                let ended = Instant::now();
                if ended >= from && ended < to {
                    let micros = ended.duration_since(begun).as_micros();
                    latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
                }
            }
        }));
    }

    tokio::time::sleep_until(from).await;
    let cpu_before = (
        process_cpu_us(std::process::id()),
        process_cpu_us(server_pid),
    );
    tokio::time::sleep_until(to).await;
    let cpu_after = (
        process_cpu_us(std::process::id()),
        process_cpu_us(server_pid),
    );

    let mut latencies_us = Vec::new();
    for handle in loops {
        latencies_us.extend(handle.await??);
    }
    latencies_us.sort_unstable();
    Ok(Sample {
        calls: latencies_us.len() as u64,
        seconds: window.as_secs_f64(),
        latencies_us,
        client_cpu_us: cpu_after.0? - cpu_before.0?,
        server_cpu_us: cpu_after.1? - cpu_before.1?,
    })
}

/// Receives one server stream of `count` messages of `size` bytes.
pub async fn stream(
    client: &Client,
    count: u32,
    size: u32,
    server_pid: u32,
) -> crate::Result<Sample> {
    let cpu_before = (
        process_cpu_us(std::process::id()),
        process_cpu_us(server_pid),
    );
    let start = Instant::now();
    let received = client.stream(count, size).await?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu_after = (
        process_cpu_us(std::process::id()),
        process_cpu_us(server_pid),
    );
    if received != u64::from(count) {
        return Err(format!("stream ended after {received} of {count} messages").into());
    }
    Ok(Sample {
        calls: received,
        seconds,
        latencies_us: Vec::new(),
        client_cpu_us: cpu_after.0? - cpu_before.0?,
        server_cpu_us: cpu_after.1? - cpu_before.1?,
    })
}

/// Returns the CPU time that the live threads of process `pid` have used, in microseconds,
/// from the first field of each thread's `/proc/<pid>/task/<tid>/schedstat` (nanoseconds on
/// the CPU). Threads that have exited drop out, so both readings of a run must see the same
/// threads: tokio's worker threads live as long as the runtime.
pub fn process_cpu_us(pid: u32) -> crate::Result<f64> {
    let mut nanos = 0u64;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = entry?.path().join("schedstat");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let first = text.split_whitespace().next().unwrap_or("0");
        nanos += first.parse::<u64>()?;
    }
    Ok(nanos as f64 / 1000.0)
}
