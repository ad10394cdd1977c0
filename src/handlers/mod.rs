//! One module per endpoint family, and what they share: the chaos gate
//! (`admit`), the way into the registry (`start_fault`) and a few answer
//! helpers. A handler is a plain function of the request's parts and `&App`
//! that returns a `Reply`; it never reads the request body and never blocks
//! for long.

pub mod chaos;
pub mod cpu;
pub mod crash;
pub mod disk;
pub mod faults;
pub mod memory;
pub mod openapi;
pub mod probes;
pub mod root;
pub mod scrape;
pub mod startup;

use std::time::{Duration, Instant};

use serde_json::json;

use crate::app::App;
use crate::chaos::guard::RejectReason;
use crate::chaos::registry::{FaultKind, Running, StartError, Ticket};
use crate::http::query::ParamError;
use crate::http::reply::Reply;
use crate::observe::events::Event;

/// Whether a chaos request may go on: the token first (401), then, for a
/// request that `starts` chaos, the kill switch (403) and the ordered stop
/// (503, `shutting_down`). A refusal is counted and logged as
/// CHAOS_REJECTED. The registry refuses a start after the stop began too,
/// under its lock (a request that passed here just before); this answers
/// every start route, `/crash` included, the same way.
pub fn admit(app: &App, action: &str, authorization: Option<&str>, starts: bool) -> Result<(), Reply> {
    let closed = if starts { app.registry.closed() } else { None };
    let refusal = match app.access.check(authorization) {
        Err(denied) => Some(("unauthorized", Reply::unauthorized(&denied.0))),
        Ok(()) if starts && !app.config.chaos_enabled => Some((
            "disabled",
            Reply::json(
                403,
                &json!({"error": "chaos is disabled on this instance (CHAOS_ENABLED=false)"}),
            ),
        )),
        Ok(()) => closed.map(|why| ("shutting_down", shutting_down(&why))),
    };
    match refusal {
        None => Ok(()),
        Some((outcome, reply)) => {
            if starts {
                app.metrics.chaos(action, outcome);
            }
            app.events.emit(
                Event::ChaosRejected,
                json!({"action": action, "outcome": outcome, "reason": outcome}),
            );
            Err(reply)
        }
    }
}

/// The 503 of a start once the ordered stop has begun; `why` names what
/// began it (the signal).
fn shutting_down(why: &str) -> Reply {
    Reply::json(
        503,
        &json!({
            "error": format!("the service is shutting down ({why} received): no fault starts any more; stops and reads still answer"),
            "reason": "shutting_down",
        }),
    )
}

/// Counts and logs a start refused by the ordered stop, and answers 503.
fn refused_for_shutdown(app: &App, action: &str, why: &str) -> Reply {
    app.metrics.chaos(action, "shutting_down");
    app.events.emit(
        Event::ChaosRejected,
        json!({"action": action, "outcome": "shutting_down", "reason": "shutting_down"}),
    );
    shutting_down(why)
}

/// Starts a fault of `kind` through the registry: claims its guardrail
/// slot, then runs `launch` (see `Registry::start`). A guardrail's refusal
/// is the 429, a second fault of a one-at-a-time kind (the disk fill) the
/// 409, both counted as `rejected` and logged as CHAOS_REJECTED; on success
/// the detection timer starts.
fn start_fault(
    app: &App,
    kind: FaultKind,
    now: Instant,
    expected: Option<Duration>,
    launch: impl FnOnce(Ticket) -> Result<Running, String>,
) -> Result<u64, Reply> {
    let action = kind.label();
    match app.registry.start(kind, now, expected, launch) {
        Ok(id) => {
            app.metrics.chaos(action, "accepted");
            app.tracker.chaos_accepted(now);
            Ok(id)
        }
        Err(StartError::Rejected(rejected)) => Err(guardrail_refusal(app, action, rejected)),
        Err(StartError::Busy(listed)) => {
            let what = match (kind, app.disk.status()) {
                (FaultKind::Disk, Some(d)) => format!(
                    "a disk fill is already {} ({} MiB written); DELETE /load/disk first",
                    if d.writing { "running" } else { "held" },
                    d.written >> 20
                ),
                (FaultKind::Disk, None) => "a disk fill is being removed; try again".to_string(),
                _ => format!(
                    "a {action} fault already exists ({}); only one at a time",
                    listed.map(|l| l.detail).unwrap_or_default()
                ),
            };
            app.metrics.chaos(action, "rejected");
            app.events.emit(
                Event::ChaosRejected,
                json!({"action": action, "outcome": "rejected", "reason": what}),
            );
            Err(Reply::json(409, &json!({"error": what})))
        }
        Err(StartError::Closed(why)) => Err(refused_for_shutdown(app, action, &why)),
        Err(StartError::Failed(e)) => {
            app.metrics.chaos(action, "failed");
            log::error!("cannot start the {action} fault: {e}");
            Err(Reply::internal_error(&format!("cannot start the {action} fault: {e}")))
        }
    }
}

/// The 429 of a guardrail's refusal, counted as `rejected` and logged as
/// CHAOS_REJECTED.
fn guardrail_refusal(app: &App, action: &str, rejected: crate::chaos::guard::Rejected) -> Reply {
    let guard = app.registry.guard();
    let mut message = rejected.message(guard.max_concurrent(), guard.cooldown());
    if matches!(rejected.reason, RejectReason::Concurrency { .. }) {
        let running: Vec<&str> = app.registry.list().iter().map(|l| l.kind.label()).collect();
        // A fault leaves the list before its clean-up ends and its slot
        // frees (a few milliseconds): say so rather than list nothing.
        let ending = guard.max_concurrent().saturating_sub(running.len());
        let mut named = running.join(", ");
        if ending > 0 {
            let sep = if named.is_empty() { "" } else { ", " };
            named.push_str(&format!("{sep}{ending} just ended, freeing its slot"));
        }
        message.push_str(&format!(" (running: {named}"));
        if running.contains(&"memory") {
            message.push_str("; a leak holds its slot until DELETE /load/memory or POST /chaos/stop");
        }
        if running.contains(&"disk") {
            message.push_str("; a disk fill holds its slot until DELETE /load/disk or POST /chaos/stop");
        }
        message.push(')');
    }
    app.metrics.chaos(action, "rejected");
    app.events.emit(
        Event::ChaosRejected,
        json!({"action": action, "outcome": "rejected", "reason": message, "retry_after_seconds": rejected.retry_after_secs}),
    );
    Reply::too_many_requests(&message, rejected.retry_after_secs)
}

/// The guardrails' check for a chaos start that holds no slot of its own
/// (what it does happens in later lives: a crash loop, a slow start): the
/// concurrency limit and the cooldown apply, and the cooldown starts now.
fn guardrails_allow(app: &App, action: &str, now: Instant) -> Result<(), Reply> {
    app.registry
        .guard()
        .try_acquire(now, Some(Duration::ZERO))
        .map(drop)
        .map_err(|rejected| guardrail_refusal(app, action, rejected))
}

/// What `GET /chaos` says of a leak or a disk fill: its size, and its ramp
/// and hold when it has them (`64 MiB, ramp 10 s, hold 60 s`).
fn size_detail(mb: u64, ramp: Option<Duration>, hold: Option<Duration>) -> String {
    let mut detail = format!("{mb} MiB");
    if let Some(r) = ramp {
        detail.push_str(&format!(", ramp {} s", r.as_secs()));
    }
    if let Some(h) = hold {
        detail.push_str(&format!(", hold {} s", h.as_secs()));
    }
    detail
}

/// Adds the fields of the JSON object `from` to the object `into`.
fn merge(into: &mut serde_json::Value, from: &serde_json::Value) {
    if let (Some(a), Some(b)) = (into.as_object_mut(), from.as_object()) {
        a.extend(b.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

/// The 400 for a parameter error.
fn bad(e: ParamError) -> Reply {
    Reply::bad_parameter(&e.message, &e.parameter, e.value.as_deref())
}
