//! One module per endpoint. A handler is a plain function of the request's
//! parts and `&App` that returns a `Reply`; it never reads the request body
//! and never blocks for long.

pub mod chaos;
pub mod cpu;
pub mod crash;
pub mod disk;
pub mod faults;
pub mod memory;
pub mod probes;
pub mod root;
pub mod scrape;

use std::time::{Duration, Instant};

use serde_json::json;

use crate::app::App;
use crate::events::Event;
use crate::guard::Permit;
use crate::http::Reply;
use crate::query::ParamError;

/// Whether a chaos request may go on: the token first (401), then, for a
/// request that `starts` chaos, the kill switch (403). A refusal is counted
/// and logged as CHAOS_REJECTED.
pub fn admit(app: &App, action: &str, authorization: Option<&str>, starts: bool) -> Result<(), Reply> {
    let refusal = match app.access.check(authorization) {
        Err(denied) => Some(("unauthorized", Reply::unauthorized(&denied.0))),
        Ok(()) if starts && !app.config.chaos_enabled => Some((
            "disabled",
            Reply::json(
                403,
                &json!({"error": "chaos is disabled on this instance (CHAOS_ENABLED=false)"}),
            ),
        )),
        Ok(()) => None,
    };
    match refusal {
        None => Ok(()),
        Some((outcome, reply)) => {
            if starts {
                app.metrics.chaos(action, outcome);
            }
            app.events
                .emit(Event::ChaosRejected, json!({"action": action, "reason": outcome}));
            Err(reply)
        }
    }
}

/// Claims a guardrail slot for `action`, or builds the 429 (counted and
/// logged as CHAOS_REJECTED). On success the detection timer starts.
fn claim(app: &App, action: &str, now: Instant, expected: Duration) -> Result<Permit, Reply> {
    match app.guard.try_acquire(now, expected) {
        Ok(permit) => {
            app.metrics.chaos(action, "accepted");
            app.tracker.chaos_accepted(now);
            Ok(permit)
        }
        Err(rejected) => {
            let message = rejected.message(app.guard.max_concurrent(), app.guard.cooldown());
            app.metrics.chaos(action, "rejected");
            app.events.emit(
                Event::ChaosRejected,
                json!({"action": action, "reason": message, "retry_after_seconds": rejected.retry_after_secs}),
            );
            Err(Reply::too_many_requests(&message, rejected.retry_after_secs))
        }
    }
}

/// The 400 for a parameter error.
fn bad(e: ParamError) -> Reply {
    Reply::bad_parameter(&e.message, &e.parameter, e.value.as_deref())
}
