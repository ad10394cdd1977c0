//! `GET /`: the "user traffic" endpoint, whose latency feeds readiness.

use std::time::Instant;

use serde_json::json;

use crate::app::App;
use crate::http::reply::Reply;

pub fn get(app: &App, now: Instant) -> Reply {
    let reply = Reply::ok(&json!({
        "service": "chaos-backend",
        "version": env!("CARGO_PKG_VERSION"),
        "pod": app.pod,
        "uptime_seconds": now.saturating_duration_since(app.started).as_secs_f64(),
    }));
    // A latency fault slows user traffic only; the answer is held off the
    // worker, and the readiness p95 sees the held time.
    match app.faults.latency(now) {
        Some((extra, cancel)) => reply.held_for(extra).released_by(cancel.flag()),
        None => reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::testing;

    #[test]
    fn names_service_and_pod() {
        let (app, _) = testing::app("root", &[]);
        let body = get(&app, Instant::now()).body_json();
        assert_eq!(body["service"], "chaos-backend");
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
        assert!(!body["pod"].as_str().unwrap().is_empty());
        assert!(body["uptime_seconds"].as_f64().unwrap() >= 0.0);
    }
}
