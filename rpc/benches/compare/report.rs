//! The Markdown tables and the closing JSON line.

use std::fmt::Write;

use crate::measure::Sample;
use crate::system::System;
use crate::{Plan, Results, echo_quinn};

/// The baselines a murmur ratio is taken against, in report order.
const BASELINES: [System; 3] = [System::TonicTls, System::TonicPlain, System::Quinn];

pub fn print(plan: &Plan, results: &Results) {
    println!("{}", conditions(plan));
    println!("{}", unary_table(plan, results));
    println!("{}", ratio_table(plan, results));
    println!("{}", stream_table(results));
    println!("{}", setup_table(results));
    println!("{}", ratios_json(plan, results));
}

fn conditions(plan: &Plan) -> String {
    let mut text = String::new();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|name| name.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let _ = writeln!(
        text,
        "Machine: {cores} cores ({cpu}), client and server processes share them; load \
         average at the end {}.",
        load.join(" ")
    );
    let _ = writeln!(
        text,
        "Method: {} rounds per workload; in each round every system runs {:?} of warm-up then \
         {:?} measured, back to back, in an order rotated each round. Figures are medians \
         over rounds; ratios are medians of the per-round ratios.{}",
        plan.rounds,
        plan.warmup,
        plan.window,
        if plan.quick { " Quick mode." } else { "" }
    );
    let _ = writeln!(
        text,
        "QUIC transport settings (murmur and raw quinn alike): {}.",
        echo_quinn::TRANSPORT_SETTINGS
    );
    text
}

fn unary_table(plan: &Plan, results: &Results) -> String {
    let mut text = String::from(
        "| payload | in flight | system | calls/s | p50 µs | p99 µs | p99.9 µs | CPU µs/call (client + server) |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for &(size, in_flight) in &plan.unary {
        for system in System::ALL {
            let samples = &results.unary[&(size, in_flight, system)];
            let _ = writeln!(
                text,
                "| {} | {in_flight} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} ({:.1} + {:.1}) |",
                size_label(size),
                system.label(),
                median_of(samples, Sample::rate),
                median_of(samples, |s| s.latency_us(0.5)),
                median_of(samples, |s| s.latency_us(0.99)),
                median_of(samples, |s| s.latency_us(0.999)),
                median_of(samples, Sample::cpu_per_call_us),
                median_of(samples, |s| s.client_cpu_us / s.calls as f64),
                median_of(samples, |s| s.server_cpu_us / s.calls as f64),
            );
        }
    }
    text
}

fn ratio_table(plan: &Plan, results: &Results) -> String {
    let mut text = String::from(
        "| payload | in flight | calls/s vs tonic TLS | vs tonic plain | vs raw quinn | p99 vs tonic TLS | CPU/call vs tonic TLS | CPU/call vs raw quinn |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for &(size, in_flight) in &plan.unary {
        let murmur = &results.unary[&(size, in_flight, System::Murmur)];
        let against = |system: System, value: fn(&Sample) -> f64| {
            paired_ratio(murmur, &results.unary[&(size, in_flight, system)], value)
        };
        let _ = writeln!(
            text,
            "| {} | {in_flight} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            size_label(size),
            against(System::TonicTls, Sample::rate),
            against(System::TonicPlain, Sample::rate),
            against(System::Quinn, Sample::rate),
            against(System::TonicTls, |s| s.latency_us(0.99)),
            against(System::TonicTls, Sample::cpu_per_call_us),
            against(System::Quinn, Sample::cpu_per_call_us),
        );
    }
    text
}

fn stream_table(results: &Results) -> String {
    let mut text = String::from(
        "| one server stream, 1 KiB messages | messages/s | CPU µs/message | murmur ratio (messages/s) |\n\
         |---|---|---|---|\n",
    );
    let murmur = &results.stream[&System::Murmur];
    for system in System::ALL {
        let samples = &results.stream[&system];
        let ratio = if system == System::Murmur {
            "".to_string()
        } else {
            format!("{:.2}", paired_ratio(murmur, samples, Sample::rate))
        };
        let _ = writeln!(
            text,
            "| {} | {:.0} | {:.1} | {ratio} |",
            system.label(),
            median_of(samples, Sample::rate),
            median_of(samples, Sample::cpu_per_call_us),
        );
    }
    text
}

fn setup_table(results: &Results) -> String {
    let mut text = String::from(
        "| connection set-up, handshake to first reply | median µs | slowest µs |\n|---|---|---|\n",
    );
    for system in System::ALL {
        let Some(times) = results.setup_us.get(&system) else {
            continue;
        };
        let slowest = times.iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            text,
            "| {} | {:.0} | {:.0} |",
            system.label(),
            median(times.clone()),
            slowest
        );
    }
    text
}

/// Formats the ratios as one JSON object, keys `unary_<size>_<in flight>_vs_<baseline>` and
/// `stream_1k_vs_<baseline>`, each the median per-round ratio of murmur's throughput to the
/// baseline's, then `p99_unary_<size>_<in flight>_vs_tonic_tls`, the same for the 99th
/// percentile latency (lower is better).
fn ratios_json(plan: &Plan, results: &Results) -> String {
    let mut fields = Vec::new();
    for &(size, in_flight) in &plan.unary {
        let murmur = &results.unary[&(size, in_flight, System::Murmur)];
        for baseline in BASELINES {
            let ratio = paired_ratio(
                murmur,
                &results.unary[&(size, in_flight, baseline)],
                Sample::rate,
            );
            fields.push(format!(
                "\"unary_{}_{in_flight}_vs_{}\": {ratio:.2}",
                size_label(size),
                baseline.key()
            ));
        }
    }
    let murmur = &results.stream[&System::Murmur];
    for baseline in BASELINES {
        let ratio = paired_ratio(murmur, &results.stream[&baseline], Sample::rate);
        fields.push(format!("\"stream_1k_vs_{}\": {ratio:.2}", baseline.key()));
    }
    for &(size, in_flight) in &plan.unary {
        let ratio = paired_ratio(
            &results.unary[&(size, in_flight, System::Murmur)],
            &results.unary[&(size, in_flight, System::TonicTls)],
            |sample| sample.latency_us(0.99),
        );
        fields.push(format!(
            "\"p99_unary_{}_{in_flight}_vs_{}\": {ratio:.2}",
            size_label(size),
            System::TonicTls.key()
        ));
    }
    format!("{{{}}}", fields.join(", "))
}

/// Returns the median over rounds of `value(murmur) / value(baseline)`, pairing the runs of
/// the same round.
fn paired_ratio(murmur: &[Sample], baseline: &[Sample], value: fn(&Sample) -> f64) -> f64 {
    let ratios = murmur
        .iter()
        .zip(baseline)
        .map(|(ours, theirs)| value(ours) / value(theirs))
        .collect();
    median(ratios)
}

fn median_of(samples: &[Sample], value: impl Fn(&Sample) -> f64) -> f64 {
    median(samples.iter().map(value).collect())
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

fn size_label(size: usize) -> String {
    if size >= 1024 && size % 1024 == 0 {
        format!("{}k", size / 1024)
    } else {
        size.to_string()
    }
}
