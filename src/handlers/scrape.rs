//! `GET /metrics`: refreshes the gauges that are read, not kept (RSS, leak
//! chunks, readiness), then renders the registry.

use std::time::Instant;

use crate::app::App;
use crate::http::reply::Reply;
use crate::observe::metrics;
use crate::os::sys;

pub fn metrics(app: &App, now: Instant) -> Reply {
    let m = &app.metrics;
    m.memory_usage_bytes
        .set(i64::try_from(sys::rss_bytes()).unwrap_or(i64::MAX));
    m.memory_chunks
        .set(i64::try_from(app.leak.chunks()).unwrap_or(i64::MAX));
    m.cpu_stress_active.set(i64::from(app.cpu.active() > 0));
    m.chaos_leaked_bytes
        .set(i64::try_from(app.leak.total_bytes()).unwrap_or(i64::MAX));
    m.chaos_cpu_target_millicores
        .set(i64::try_from(app.cpu.target_millicores()).unwrap_or(i64::MAX));
    // The registry says what is active, as GET /chaos and the guardrails do.
    for kind in crate::chaos::registry::FaultKind::ALL {
        m.chaos_fault_active
            .with_label_values(&[kind.label()])
            .set(i64::from(app.registry.is_active(kind)));
    }
    let disk = |state: &str, bytes: u64| {
        m.chaos_disk_fill_bytes
            .with_label_values(&[state])
            .set(i64::try_from(bytes).unwrap_or(i64::MAX))
    };
    disk("written", app.disk.written());
    disk("target", app.disk.target());
    // Sets pod_ready_status; serving a scrape is not serving /ready, so no
    // timer moves.
    app.readiness_reasons(now);
    m.connections.refresh();
    match m.render() {
        Ok(body) => Reply::bytes(200, metrics::content_type(), body),
        Err(e) => {
            log::error!("cannot render metrics: {e}");
            Reply::internal_error(&format!("cannot render metrics: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::testing;

    #[test]
    fn reports_rss_and_readiness() {
        let (app, _) = testing::app("scrape", &[]);
        let r = metrics(&app, Instant::now());
        assert_eq!(r.status, 200);
        assert!(r.content_type.starts_with("text/plain"));
        let text = String::from_utf8(r.body.to_vec()).unwrap();
        let rss: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("memory_usage_bytes "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(rss > 1e6, "{rss}");
        assert!(text.contains("\npod_ready_status 1\n"), "{text}");
        assert!(text.contains("\nreadiness_max_memory_bytes 419430400\n"), "{text}");
        assert!(text.contains("\nreadiness_max_latency_seconds 0.5\n"), "{text}");
    }
}
