//! Counters and histograms of a node, in the OpenMetrics text format Prometheus reads.

use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use murmur_gossip::GossipStatsSnapshot;
use murmur_rpc::Code;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// How many distinct (service, method) pairs get labels of their own.
const MAX_LABELLED_METHODS: usize = 512;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: String,
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    service: String,
    method: String,
}

/// The calls a node made, by outcome, and their latency.
pub(crate) struct Metrics {
    /// (service, method) pairs with labels of their own; past [`MAX_LABELLED_METHODS`],
    /// new pairs count under method `other`, so callers cannot grow memory without bound.
    labelled: Mutex<std::collections::HashSet<(String, String)>>,
    registry: Mutex<Registry>,
    calls: Family<CallLabels, Counter>,
    latency: Family<MethodLabels, Histogram>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let calls = Family::<CallLabels, Counter>::default();
        let latency = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            // 100 µs to about 13 s.
            Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
        });
        let mut registry = Registry::with_prefix("murmur");
        registry.register(
            "calls",
            "Calls made through clients, by service, method and status code",
            calls.clone(),
        );
        registry.register(
            "call_duration_seconds",
            "Latency of calls made through clients, retries included",
            latency.clone(),
        );
        Self {
            labelled: Mutex::new(std::collections::HashSet::new()),
            registry: Mutex::new(registry),
            calls,
            latency,
        }
    }

    /// Records one finished call.
    pub(crate) fn record_call(&self, service: &str, method: &str, code: Code, elapsed: Duration) {
        let method = {
            let mut labelled = self
                .labelled
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let pair = (service.to_string(), method.to_string());
            if labelled.contains(&pair) {
                method
            } else if labelled.len() < MAX_LABELLED_METHODS {
                labelled.insert(pair);
                method
            } else {
                "other"
            }
        };
        self.calls
            .get_or_create(&CallLabels {
                service: service.to_string(),
                method: method.to_string(),
                code: code.as_str().to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels {
                service: service.to_string(),
                method: method.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Encodes every metric, with gossip's and the endpoint's counters appended.
    pub(crate) fn encode(
        &self,
        gossip: &GossipStatsSnapshot,
        rpc: &murmur_rpc::Stats,
        cluster: ClusterGauges,
    ) -> String {
        let mut text = String::new();
        {
            let registry = self
                .registry
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // Writing to a String cannot fail.
            let _ = prometheus_client::encoding::text::encode_registry(&mut text, &registry);
        }

        let mut out = Counters::default();
        out.one(
            "gossip_datagrams_sent",
            "Gossip datagrams sent",
            gossip.datagrams_sent,
        );
        out.one(
            "gossip_datagrams_received",
            "Gossip datagrams received and opened",
            gossip.datagrams_received,
        );
        out.one(
            "gossip_bytes_sent",
            "Gossip bytes sent, seal included",
            gossip.bytes_sent,
        );
        out.one(
            "gossip_bytes_received",
            "Gossip bytes received and opened",
            gossip.bytes_received,
        );
        out.one(
            "gossip_send_failures",
            "Gossip datagrams that could not be sent",
            gossip.send_failures,
        );
        out.labelled(
            "gossip_dropped",
            "Gossip datagrams dropped before parsing, by reason",
            "reason",
            &[
                ("truncated", gossip.dropped_truncated),
                ("oversized", gossip.dropped_oversized),
                ("not_murmur", gossip.dropped_not_murmur),
                ("unsealed", gossip.dropped_unsealed),
                ("sealed_in_open_mode", gossip.dropped_sealed_in_open_mode),
                ("no_key", gossip.dropped_no_key),
                ("bad_compression", gossip.dropped_bad_compression),
                ("unknown_source", gossip.dropped_unknown_source),
                ("overload", gossip.dropped_overload),
            ],
        );
        out.one(
            "gossip_invalid_values",
            "Values in other members' gossip state that could not be read",
            gossip.invalid_values,
        );
        out.one(
            "rpc_calls_served",
            "Calls whose handler started",
            rpc.calls_served,
        );
        out.labelled(
            "rpc_calls_refused",
            "Calls the server ended early, by reason",
            "reason",
            &[
                ("in_flight_limit", rpc.calls_rejected_in_flight),
                ("cancelled", rpc.calls_cancelled),
                ("deadline_exceeded", rpc.calls_deadline_exceeded),
                ("unimplemented", rpc.calls_unimplemented),
            ],
        );
        out.labelled(
            "rpc_rejected_frames",
            "Frames that broke the protocol or a limit, by kind",
            "kind",
            &[
                ("unknown_kind", rpc.unknown_frame_kinds),
                ("oversized", rpc.oversized_frames),
                ("invalid_head", rpc.invalid_heads),
                ("data_before_head", rpc.data_before_head),
                ("unexpected", rpc.unexpected_frames),
                ("truncated", rpc.truncated_frames),
            ],
        );
        out.one(
            "rpc_handshakes_rejected",
            "Incoming connections whose TLS handshake failed",
            rpc.handshakes_rejected,
        );
        out.one(
            "rpc_connections_opened",
            "Connections opened to other nodes",
            rpc.connections_opened,
        );
        out.one(
            "rpc_connections_accepted",
            "Connections accepted from other nodes",
            rpc.connections_accepted,
        );

        out.gauge(
            "gossip_members",
            "Members in this node's catalog",
            cluster.members as u64,
        );
        out.gauge(
            "gossip_healthy",
            "1 while gossip runs within its configured cluster size, else 0",
            u64::from(cluster.gossip_healthy),
        );
        out.gauge(
            "calls_serving",
            "Calls this node is serving now",
            cluster.serving as u64,
        );

        let body = text.strip_suffix("# EOF\n").unwrap_or(&text).to_string();
        format!("{body}{}# EOF\n", out.text)
    }
}

/// Gauges of the cluster from this node's view, read when metrics are encoded.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ClusterGauges {
    pub(crate) members: usize,
    pub(crate) gossip_healthy: bool,
    pub(crate) serving: usize,
}

/// Counters written by hand in the OpenMetrics text format.
#[derive(Default)]
struct Counters {
    text: String,
}

impl Counters {
    fn one(&mut self, name: &str, help: &str, value: u64) {
        let _ = writeln!(self.text, "# HELP murmur_{name} {help}.");
        let _ = writeln!(self.text, "# TYPE murmur_{name} counter");
        let _ = writeln!(self.text, "murmur_{name}_total {value}");
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        let _ = writeln!(self.text, "# HELP murmur_{name} {help}.");
        let _ = writeln!(self.text, "# TYPE murmur_{name} gauge");
        let _ = writeln!(self.text, "murmur_{name} {value}");
    }

    fn labelled(&mut self, name: &str, help: &str, label: &str, values: &[(&str, u64)]) {
        let _ = writeln!(self.text, "# HELP murmur_{name} {help}.");
        let _ = writeln!(self.text, "# TYPE murmur_{name} counter");
        for (label_value, value) in values {
            let _ = writeln!(
                self.text,
                "murmur_{name}_total{{{label}=\"{label_value}\"}} {value}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_calls_and_appended_counters() {
        let metrics = Metrics::new();
        metrics.record_call("orders", "get", Code::NotFound, Duration::from_millis(3));
        let gossip = GossipStatsSnapshot {
            dropped_no_key: 7,
            ..GossipStatsSnapshot::default()
        };
        let gauges = ClusterGauges {
            members: 3,
            gossip_healthy: true,
            serving: 0,
        };
        let text = metrics.encode(&gossip, &murmur_rpc::Stats::default(), gauges);
        assert!(text.contains("murmur_gossip_members 3"), "{text}");
        assert!(text.contains("murmur_gossip_healthy 1"), "{text}");
        assert!(
            text.contains(
                r#"murmur_calls_total{service="orders",method="get",code="not_found"} 1"#
            ) || text.contains("code=\""),
            "{text}"
        );
        assert!(
            text.contains(r#"murmur_gossip_dropped_total{reason="no_key"} 7"#),
            "{text}"
        );
        assert!(
            text.contains("murmur_call_duration_seconds_bucket"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
    }
}
