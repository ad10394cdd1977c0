//! Every Prometheus metric of the service, in one explicit registry.
//!
//! Names are the documented ones. The leak's gauge is `memory_chunks`, not
//! `memory_chunks_count`: promtool rejects a gauge ending in `_count`, a
//! suffix reserved for histograms. Every label value is bounded: routes by
//! name, every unknown path as `unmatched`, methods from a fixed list. All
//! known label sets are created at start-up so that every series exists before
//! its first event. The healing figures, which outlive the process, are
//! `observe::kept`'s, registered here as one collector.

use std::sync::Arc;

use prometheus::{Encoder, Gauge, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Registry, TextEncoder};

use crate::observe::connection_metrics::ConnectionMetrics;
use crate::observe::kept::{Kept, KeptCollector};
use crate::observe::process::ProcessCollector;
use crate::observe::registering::Registering;

/// Request-latency buckets in seconds: fine below 10 ms, where probes live.
const REQUEST_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Chaos actions, as the `action` label.
pub const ACTIONS: &[&str] = &[
    "cpu",
    "memory",
    "crash",
    "latency",
    "liveness",
    "readiness",
    "disk",
    "errors",
    "crashloop",
    "slowstart",
];
/// The `mode` label of `chaos_faulted_requests_total`: how an errors fault
/// failed a `GET /`.
pub const FAULTED_MODES: &[&str] = &["status", "reset", "close", "stall"];
/// The `state` label of `chaos_disk_fill_bytes`.
pub const DISK_FILL_STATES: &[&str] = &["written", "target"];
/// Chaos outcomes, as the `outcome` label: `rejected` by the guardrails
/// (429), `failed` when accepted but impossible (507), `unauthorized` (401),
/// `disabled` by `CHAOS_ENABLED=false` (403), `shutting_down` once the
/// ordered stop has begun (503).
pub const OUTCOMES: &[&str] = &[
    "accepted",
    "rejected",
    "failed",
    "unauthorized",
    "disabled",
    "shutting_down",
];

/// The series of one endpoint that exist from start-up: its `endpoint`
/// label and the (method, status code) answers it usually gives.
pub struct Endpoint {
    pub label: &'static str,
    pub answers: Vec<(&'static str, u16)>,
}

/// The service's metrics, with typed fields.
pub struct Metrics {
    registry: Registry,
    pub http_requests_total: IntCounterVec,
    pub http_request_duration_seconds: HistogramVec,
    pub cpu_stress_active: IntGauge,
    pub memory_usage_bytes: IntGauge,
    pub memory_chunks: IntGauge,
    pub pod_ready_status: IntGauge,
    pub readiness_max_memory_bytes: IntGauge,
    pub readiness_max_latency_seconds: Gauge,
    /// `pod_recovery_count_total` and the healing histograms, kept across
    /// restarts.
    pub healing: Arc<Kept>,
    pub chaos_actions_total: IntCounterVec,
    pub chaos_fault_active: IntGaugeVec,
    pub chaos_leaked_bytes: IntGauge,
    pub chaos_cpu_target_millicores: IntGauge,
    /// `http_connections_*`, read from the HTTP server at each scrape.
    pub connections: ConnectionMetrics,
    pub chaos_disk_fill_bytes: IntGaugeVec,
    pub chaos_disk_fill_ended_total: IntCounterVec,
    pub chaos_faulted_requests_total: IntCounterVec,
}

/// The label values known at start-up, whose series exist before their
/// first event. Each comes from the table that owns it: the route table,
/// the registry's fault kinds (and, for a fault's end, the crash), the disk
/// fill's end reasons.
pub struct KnownLabels<'a> {
    pub endpoints: &'a [Endpoint],
    pub faults: &'a [&'static str],
    pub fault_ends: &'a [&'static str],
    pub disk_fill_ends: &'a [&'static str],
}

impl Metrics {
    /// Creates and registers every metric, with the series of `known`.
    pub fn new(known: &KnownLabels<'_>) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let r = Registering::new(&registry);
        // The process's own collector: a collector, not a metric we keep.
        r.collector(ProcessCollector::for_self())?;
        let healing = Arc::new(Kept::new(known.fault_ends)?);
        r.collector(KeptCollector(Arc::clone(&healing)))?;
        let metrics = Metrics {
            http_requests_total: r.int_counter_vec(
                "http_requests_total",
                "HTTP requests answered, by method, route and status code.",
                &["method", "endpoint", "code"],
            )?,
            http_request_duration_seconds: r.histogram_vec(
                "http_request_duration_seconds",
                "Time from a worker taking a request to its answer being ready to write, by route.",
                REQUEST_BUCKETS,
                &["endpoint"],
            )?,
            cpu_stress_active: r.int_gauge("cpu_stress_active", "1 while a CPU load runs, else 0.")?,
            memory_usage_bytes: r.int_gauge(
                "memory_usage_bytes",
                "Resident set size of the process in bytes, read at each scrape.",
            )?,
            memory_chunks: r.int_gauge(
                "memory_chunks",
                "Chunks held by the memory leak.",
            )?,
            pod_ready_status: r.int_gauge(
                "pod_ready_status",
                "1 if /ready would answer 200 now, else 0 (evaluated at each scrape and each /ready).",
            )?,
            readiness_max_memory_bytes: r.int_gauge(
                "readiness_max_memory_bytes",
                "MAX_MEMORY_MB_READY in bytes: the RSS above which /ready fails.",
            )?,
            readiness_max_latency_seconds: r.gauge(
                "readiness_max_latency_seconds",
                "MAX_LATENCY_MS in seconds: the p95 of GET / above which /ready fails.",
            )?,
            healing,
            chaos_actions_total: r.int_counter_vec(
                "chaos_actions_total",
                "Chaos actions requested, by action and outcome.",
                &["action", "outcome"],
            )?,
            chaos_fault_active: r.int_gauge_vec(
                "chaos_fault_active",
                "1 while a fault of this kind is active.",
                &["fault"],
            )?,
            chaos_leaked_bytes: r.int_gauge("chaos_leaked_bytes", "Bytes held by the memory leak.")?,
            chaos_cpu_target_millicores: r.int_gauge(
                "chaos_cpu_target_millicores",
                "Millicores the running CPU loads aim at (a saturating load counts what the process may use).",
            )?,
            connections: ConnectionMetrics::new(&r)?,
            chaos_disk_fill_bytes: r.int_gauge_vec(
                "chaos_disk_fill_bytes",
                "The disk fill: bytes in its file now (state=written) and bytes the running fill aims at (state=target, 0 when none runs).",
                &["state"],
            )?,
            chaos_disk_fill_ended_total: r.int_counter_vec(
                "chaos_disk_fill_ended_total",
                "Disk fills ended, by reason: removed on request, no_space (ENOSPC), quota (EDQUOT), file_size_limit (EFBIG: RLIMIT_FSIZE), io_error.",
                &["reason"],
            )?,
            chaos_faulted_requests_total: r.int_counter_vec(
                "chaos_faulted_requests_total",
                "GET / requests an errors fault failed, by mode: status (answered with the fault's code, also in http_requests_total), reset, close and stall (no answer, so no code).",
                &["mode"],
            )?,
            registry,
        };
        metrics.create_known_series(known);
        Ok(metrics)
    }

    /// Creates the series of every label set known up front.
    fn create_known_series(&self, known: &KnownLabels<'_>) {
        for endpoint in known.endpoints {
            self.http_request_duration_seconds.with_label_values(&[endpoint.label]);
            for (method, code) in &endpoint.answers {
                self.http_requests_total
                    .with_label_values(&[method, endpoint.label, &code.to_string()]);
            }
        }
        for action in ACTIONS {
            for outcome in OUTCOMES {
                self.chaos_actions_total.with_label_values(&[action, outcome]);
            }
        }
        for fault in known.faults {
            self.chaos_fault_active.with_label_values(&[fault]);
        }
        for state in DISK_FILL_STATES {
            self.chaos_disk_fill_bytes.with_label_values(&[state]);
        }
        for reason in known.disk_fill_ends {
            self.chaos_disk_fill_ended_total.with_label_values(&[reason]);
        }
        for mode in FAULTED_MODES {
            self.chaos_faulted_requests_total.with_label_values(&[mode]);
        }
    }

    /// Counts one chaos action outcome.
    pub fn chaos(&self, action: &str, outcome: &str) {
        self.chaos_actions_total.with_label_values(&[action, outcome]).inc();
    }

    /// The Prometheus text format of every metric.
    pub fn render(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

/// The content type of [`Metrics::render`].
pub fn content_type() -> &'static str {
    prometheus::TEXT_FORMAT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_exists_before_any_event() {
        let m = Metrics::new(&KnownLabels {
            endpoints: &[
                Endpoint {
                    label: "/health",
                    answers: vec![("GET", 200)],
                },
                Endpoint {
                    label: "/ready",
                    answers: vec![("GET", 503)],
                },
                Endpoint {
                    label: "/",
                    answers: vec![],
                },
            ],
            faults: &["disk"],
            fault_ends: &["disk", "crash"],
            disk_fill_ends: &["no_space", "quota"],
        })
        .unwrap();
        let text = String::from_utf8(m.render().unwrap()).unwrap();
        for needle in [
            "http_requests_total{code=\"200\",endpoint=\"/health\",method=\"GET\"} 0",
            "http_requests_total{code=\"503\",endpoint=\"/ready\",method=\"GET\"} 0",
            "http_request_duration_seconds_count{endpoint=\"/\"} 0",
            "cpu_stress_active 0",
            "memory_chunks 0",
            "pod_recovery_count_total 0",
            "failure_to_readiness_failure_seconds_count 0",
            "readiness_failure_to_recovery_seconds_count 0",
            "crash_to_startup_seconds_count 0",
            "fault_end_to_recovery_seconds_count{fault=\"crash\"} 0",
            "chaos_actions_total{action=\"crash\",outcome=\"accepted\"} 0",
            "chaos_actions_total{action=\"memory\",outcome=\"failed\"} 0",
            "process_resident_memory_bytes",
            "chaos_disk_fill_bytes{state=\"written\"} 0",
            "chaos_disk_fill_bytes{state=\"target\"} 0",
            "chaos_disk_fill_ended_total{reason=\"no_space\"} 0",
            "chaos_disk_fill_ended_total{reason=\"quota\"} 0",
            "chaos_fault_active{fault=\"disk\"} 0",
            "chaos_actions_total{action=\"disk\",outcome=\"failed\"} 0",
            "chaos_faulted_requests_total{mode=\"reset\"} 0",
            "chaos_actions_total{action=\"errors\",outcome=\"accepted\"} 0",
        ] {
            assert!(text.contains(needle), "missing {needle}\n{text}");
        }
    }
}
