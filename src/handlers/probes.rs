//! `GET /health` (liveness) and `GET /ready` (readiness).
//!
//! Liveness only says the process serves requests: it must never fail under
//! chaos, or a CPU experiment would restart the pod it means to scale.
//! Readiness lists every failing check, so that an operator reading one 503
//! knows every reason at once.

use std::time::Instant;

use serde_json::json;

use crate::app::App;
use crate::chaos::faults::LivenessMode;
use crate::http::reply::Reply;
use crate::observe::readiness::Reason;

/// /health: 200, unless a slow start holds it (503 with the reason, for
/// the startup probe), or a liveness fault says to fail (500) or to hang
/// (no answer until the fault ends; the answer is held off the worker).
pub fn health(app: &App, now: Instant) -> Reply {
    if let Some(reason) = app.held(now) {
        return Reply::json(503, &json!({"status": "starting", "reason": reason}));
    }
    match app.faults.liveness(now) {
        None => Reply::ok(&json!({"status": "healthy"})),
        Some((LivenessMode::Fail, _, _)) => Reply::json(
            500,
            &json!({"status": "unhealthy", "reason": "forced by /fault/liveness"}),
        ),
        Some((LivenessMode::Hang, until, cancel)) => Reply::json(
            500,
            &json!({"status": "unhealthy", "reason": "hung by /fault/liveness"}),
        )
        .held_for(until.saturating_duration_since(now))
        .released_by(cancel.flag()),
    }
}

pub fn ready(app: &App, now: Instant) -> Reply {
    let reasons = app.readiness_reasons(now);
    app.readiness_served(now, &reasons);
    if reasons.is_empty() {
        return Reply::ok(&json!({"status": "ready"}));
    }
    let texts: Vec<String> = reasons.iter().map(Reason::text).collect();
    Reply::json(503, &json!({"status": "not ready", "reasons": texts}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::testing;
    use std::time::Duration;

    #[test]
    fn health_is_healthy() {
        let (app, _) = testing::app("health", &[]);
        let r = health(&app, Instant::now());
        assert_eq!((r.status, r.body_json()), (200, json!({"status": "healthy"})));
    }

    #[test]
    fn ready_fails_with_every_reason_and_recovers() {
        let (app, events) = testing::app("ready", &[("MAX_MEMORY_MB_READY", "1")]);
        let t0 = Instant::now();
        app.begin_shutdown("SIGTERM");
        let r = ready(&app, t0);
        assert_eq!(r.status, 503);
        let body = r.body_json();
        assert_eq!(body["status"], "not ready");
        let reasons: Vec<&str> = body["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].starts_with("rss ") && reasons[0].ends_with("above MAX_MEMORY_MB_READY 1 MiB"));
        assert_eq!(reasons[1], "shutting down");
        assert_eq!(app.metrics.pod_ready_status.get(), 0);
        assert_eq!(events.event_names(), ["SHUTDOWN_STARTED", "READINESS_DEGRADED"]);
    }

    #[test]
    fn ready_when_all_checks_pass() {
        let (app, _) = testing::app("ready-ok", &[]);
        let r = ready(&app, Instant::now());
        assert_eq!((r.status, r.body_json()), (200, json!({"status": "ready"})));
        assert_eq!(app.metrics.pod_ready_status.get(), 1);
    }

    #[test]
    fn slow_user_traffic_fails_readiness_until_it_ages_out() {
        let (app, _) = testing::app("ready-latency", &[("LATENCY_WINDOW_SECONDS", "5")]);
        let t0 = Instant::now();
        app.latency.record(t0, Duration::from_secs(2));
        let r = ready(&app, t0);
        assert_eq!(r.status, 503);
        assert!(
            r.body_json()["reasons"][0]
                .as_str()
                .unwrap()
                .starts_with("p95 latency ")
        );
        let r = ready(&app, t0 + Duration::from_secs(5));
        assert_eq!(r.status, 200);
        let (count, sum) = app.metrics.healing.sample("readiness_failure_to_recovery_seconds", "");
        assert_eq!(count, 1);
        assert!((sum - 5.0).abs() < 1e-9);
    }
}
