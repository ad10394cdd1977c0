//! `GET /`: the "user traffic" endpoint, whose latency feeds readiness, and
//! the only one that user-traffic faults (latency, errors) touch.
//!
//! With both running, the errors fault picks first: a request it fails in
//! `status` mode is held by the latency fault too (a slow error, as Envoy's
//! fault filter delays before it aborts); a reset or a close comes at once
//! (there is no answer to hold); a stall lasts until the errors fault ends.
//! Every other request gets the latency alone.

use std::time::Instant;

use serde_json::json;

use crate::app::App;
use crate::chaos::faults::{ErrorFault, ErrorMode};
use crate::http::reply::{Reply, Unanswered};

pub fn get(app: &App, now: Instant) -> Reply {
    let reply = match app.faults.next_error(now) {
        Some((fault, ends_at, cancel)) => {
            app.metrics
                .chaos_faulted_requests_total
                .with_label_values(&[fault.mode.label()])
                .inc();
            let left = ends_at.saturating_duration_since(now);
            match fault.mode {
                ErrorMode::Status(code) => error_answer(fault, code, left.as_secs_f64().ceil() as u64),
                ErrorMode::Reset => return Reply::unanswered(Unanswered::Reset),
                ErrorMode::Close => return Reply::unanswered(Unanswered::Close),
                ErrorMode::Stall => {
                    return Reply::unanswered(Unanswered::Stall)
                        .held_for(left)
                        .released_by(cancel.flag());
                }
            }
        }
        None => Reply::ok(&json!({
            "service": "chaos-backend",
            "version": env!("CARGO_PKG_VERSION"),
            "pod": app.pod,
            "uptime_seconds": now.saturating_duration_since(app.started).as_secs_f64(),
        })),
    };
    // A latency fault slows user traffic only; the answer is held off the
    // worker, and the readiness p95 sees the held time.
    match app.faults.latency(now) {
        Some((extra, cancel)) => reply.held_for(extra).released_by(cancel.flag()),
        None => reply,
    }
}

/// The answer of a request an errors fault fails with `code`: JSON that
/// names the fault, and for 503 and 429 a `Retry-After` of the seconds the
/// fault has left (`retry_after`).
fn error_answer(fault: ErrorFault, code: u16, retry_after: u64) -> Reply {
    let reply = Reply::json(
        code,
        &json!({
            "error": format!("injected by the errors fault (POST /fault/errors, {}% of GET /)", fault.percent),
            "fault": "errors",
            "mode": "status",
            "code": code,
        }),
    );
    if matches!(code, 503 | 429) {
        reply.with_header("Retry-After", retry_after.max(1).to_string())
    } else {
        reply
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
