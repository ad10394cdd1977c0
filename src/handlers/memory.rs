//! `POST /load/memory?mb=N|percent_of_limit=P&ramp=S&hold=S` leaks memory;
//! `DELETE /load/memory` frees it.
//!
//! Every leak is a fault in the registry, made by a thread of its own in
//! `chaos::memory`. Without `ramp` the answer reports the RSS reached, so it
//! is given once that thread is done (touching 100 MiB takes about 25 ms,
//! 2 GiB seconds): a thread of its own waits for it (`Reply::later`), not
//! the worker, so that leaks made at once never take the workers that
//! probes and `/chaos/stop` need. With `ramp` it grows over S
//! seconds and the answer is 202. With `hold` the leak frees itself S
//! seconds after it is complete. A leak holds its guardrail slot until it
//! is released.

use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::{bad, merge, size_detail, start_fault};
use crate::app::App;
use crate::chaos::memory::{self, Leak, LeakError};
use crate::chaos::registry::{Ended, FaultKind, Running};
use crate::config::{MAX_DURATION_SECONDS, MAX_MB};
use crate::http::query::Query;
use crate::http::reply::Reply;
use crate::observe::events::{Event, Events, unix_ms};
use crate::observe::metrics::Metrics;
use crate::os::{cgroup, sys};

pub const PARAMETERS: &[&str] = &["mb", "percent_of_limit", "ramp", "hold"];

/// What a `POST /load/memory` asks for.
struct LeakRequest {
    bytes: u64,
    /// The size as it was asked for (`mb`, or `percent_of_limit` and the
    /// limit), repeated in every answer.
    asked: Value,
    ramp: Option<Duration>,
    hold: Option<Duration>,
}

impl LeakRequest {
    fn mb(&self) -> u64 {
        self.bytes >> 20
    }
}

/// What the answers about a leak read and count: the leak's chunks, the
/// events and the metrics (shared with the thread that answers a leak made
/// at once).
struct Parts {
    leak: Arc<Leak>,
    events: Arc<Events>,
    metrics: Arc<Metrics>,
}

impl Parts {
    fn of(app: &App) -> Parts {
        Parts {
            leak: Arc::clone(&app.leak),
            events: Arc::clone(&app.events),
            metrics: Arc::clone(&app.metrics),
        }
    }
}

/// A leak the registry holds: when it started, when its hold releases it,
/// and the channel on which a leak made at once reports how it went.
struct Launched {
    at: SystemTime,
    release_at: Option<SystemTime>,
    made: mpsc::Receiver<Result<Duration, LeakError>>,
}

pub fn leak(app: &App, raw_query: &str, now: Instant) -> Reply {
    let leak = match parse(app, raw_query) {
        Ok(leak) => leak,
        Err(reply) => return reply,
    };
    // The whole size, ramp or not, before anything starts or is counted
    // against the guardrails.
    if let Err(e) = memory::check_size(leak.bytes) {
        let (message, reply) = not_leaked(&Parts::of(app), leak.mb(), &e);
        app.events.emit(
            Event::ChaosRejected,
            json!({"action": "memory", "outcome": "failed", "reason": message}),
        );
        return reply;
    }
    let launched = match launch(app, &leak, now) {
        Ok(launched) => launched,
        Err(reply) => return reply,
    };
    match leak.ramp {
        Some(ramp) => ramping(&leak, ramp, &launched),
        None => {
            let parts = Parts::of(app);
            Reply::later(move || made(&parts, &leak, &launched))
        }
    }
}

/// The leak asked for, or the 400 that names the parameter.
fn parse(app: &App, raw_query: &str) -> Result<LeakRequest, Reply> {
    let query = Query::parse(raw_query, PARAMETERS).map_err(bad)?;
    let (bytes, asked) = size(app, &query)?;
    let ramp = query.bounded("ramp", 1, MAX_DURATION_SECONDS, "seconds").map_err(bad)?;
    let hold = query.bounded("hold", 1, 86_400, "seconds").map_err(bad)?;
    Ok(LeakRequest {
        bytes,
        asked,
        ramp: ramp.map(Duration::from_secs),
        hold: hold.map(Duration::from_secs),
    })
}

/// The size asked for, in bytes: `mb`, or a share of the cgroup memory limit.
fn size(app: &App, query: &Query) -> Result<(u64, Value), Reply> {
    let mb = query.bounded("mb", 1, MAX_MB, "MiB").map_err(bad)?;
    let percent = query.bounded("percent_of_limit", 1, 200, "percent").map_err(bad)?;
    match (mb, percent) {
        (Some(_), Some(_)) => Err(Reply::bad_parameter(
            "give mb or percent_of_limit, not both",
            "percent_of_limit",
            query.get("percent_of_limit"),
        )),
        (None, Some(p)) => match cgroup::memory_limit() {
            Some(limit) => Ok((limit * p / 100, json!({"percent_of_limit": p, "limit_bytes": limit}))),
            None => Err(Reply::bad_parameter(
                &format!("percent_of_limit={p} needs a cgroup memory limit, and this process has none"),
                "percent_of_limit",
                query.get("percent_of_limit"),
            )),
        },
        (mb, None) => {
            let mb = mb.unwrap_or(app.config.memory_mb);
            Ok((mb << 20, json!({"mb": mb})))
        }
    }
}

/// Starts the leak's thread as a registry fault. A leak lasts until it is
/// released (by DELETE, /chaos/stop, or the end of its hold) and holds its
/// guardrail slot that long.
fn launch(app: &App, leak: &LeakRequest, now: Instant) -> Result<Launched, Reply> {
    let LeakRequest { bytes, ramp, hold, .. } = *leak;
    let expected = hold.map(|h| ramp.unwrap_or_default() + h);
    // A rendezvous-sized buffer made here: sending allocates nothing on the
    // leak's thread (see `memory::spawn`).
    let (made_tx, made) = mpsc::sync_channel(1);
    let (chunks, events) = (Arc::clone(&app.leak), Arc::clone(&app.events));
    let mut started = json!({"action": "memory", "bytes": bytes, "ramp_seconds": ramp.map(|r| r.as_secs()), "hold_seconds": hold.map(|h| h.as_secs())});
    merge(&mut started, &leak.asked);
    let at = SystemTime::now();
    let release_at = hold.map(|h| at + ramp.unwrap_or_default() + h);
    start_fault(app, FaultKind::Memory, now, expected, |ticket| {
        events.emit(Event::ChaosStarted, started);
        let id = ticket.id;
        let plan = memory::LeakPlan { bytes, ramp, hold };
        let thread = memory::spawn(Arc::clone(&chunks), Arc::clone(&events), plan, ticket, made_tx)
            .map_err(|e| format!("cannot start the leak thread: {e}"))?;
        Ok(Running {
            threads: vec![thread],
            cleanup: Box::new(move |ended| {
                let (_, released) = chunks.release_id(id);
                // Also when nothing was made yet (stopped while being made,
                // or before a ramp's first step): its CHAOS_STARTED gets its
                // end.
                if ended != Ended::Failed {
                    events.emit(
                        Event::ChaosFinished,
                        json!({"action": "memory", "released_mb": released >> 20, "ended": ended.label()}),
                    );
                }
            }),
            detail: size_detail(leak.mb(), ramp, hold),
            ends_at: release_at,
            extra: json!({"bytes": bytes}),
        })
    })?;
    Ok(Launched { at, release_at, made })
}

/// 202 for a ramp: it grows on its own thread.
fn ramping(leak: &LeakRequest, ramp: Duration, launched: &Launched) -> Reply {
    let mut body = json!({
        "status": "ramping",
        "action": "memory",
        "bytes": leak.bytes,
        "ramp_seconds": ramp.as_secs(),
        "ends_at_unix_ms": unix_ms(launched.at) + ramp.as_millis() as u64,
        "release_at_unix_ms": launched.release_at.map(unix_ms),
    });
    merge(&mut body, &leak.asked);
    Reply::accepted(&body)
}

/// The answer to a leak made at once, once the leak's own thread has made
/// it (waited for off the workers, see `Reply::later`), because it reports
/// the RSS reached: 200, 409 when stopped while being made, 507 when
/// refused.
fn made(app: &Parts, leak: &LeakRequest, launched: &Launched) -> Reply {
    let mb = leak.mb();
    let result = launched
        .made
        .recv()
        .unwrap_or_else(|_| Err(LeakError::Refused("the leak thread ended without an answer".into())));
    match result {
        Ok(took) => {
            let mut body =
                json!({"status": "leaked", "action": "memory", "leaked_mb": mb, "seconds": took.as_secs_f64()});
            merge(&mut body, &totals(app));
            merge(&mut body, &leak.asked);
            if let Some(at) = launched.release_at {
                body["release_at_unix_ms"] = json!(unix_ms(at));
            }
            app.events.emit(Event::ChaosFinished, body.clone());
            Reply::ok(&body)
        }
        Err(LeakError::Cancelled) => {
            let mut body = json!({"error": format!("the {mb} MiB leak was stopped while it was being made (DELETE /load/memory or POST /chaos/stop)"), "leaked_mb": 0});
            merge(&mut body, &totals(app));
            Reply::json(409, &body)
        }
        Err(e) => {
            let (message, reply) = not_leaked(app, mb, &e);
            app.events.emit(
                Event::ChaosFinished,
                json!({"action": "memory", "mb": mb, "error": message}),
            );
            reply
        }
    }
}

/// The 507 for a leak that cannot be made (before it starts, or while it
/// is made), counted as failed, with what the leak holds now; and its
/// message.
fn not_leaked(app: &Parts, mb: u64, e: &LeakError) -> (String, Reply) {
    app.metrics.chaos("memory", "failed");
    let message = format!("cannot leak {mb} MiB: {e}");
    log::warn!("{message}");
    let mut body = json!({"error": message, "leaked_mb": 0});
    merge(&mut body, &totals(app));
    (message, Reply::json(507, &body))
}

/// What the leak holds now, reported with every answer about a leak.
fn totals(app: &Parts) -> serde_json::Value {
    json!({
        "total_leaked_mb": app.leak.total_bytes() >> 20,
        "chunks": app.leak.chunks(),
        "rss_bytes": sys::rss_bytes(),
    })
}

/// `DELETE /load/memory`: releases every leak, so that a memory-degraded
/// pod can recover and its recovery time be measured. Answers once every
/// ramp and hold thread has stopped and every chunk is unmapped.
pub fn release(app: &App) -> Reply {
    let (chunks, bytes) = (app.leak.chunks(), app.leak.total_bytes());
    let stopped = !app.registry.stop(Some(FaultKind::Memory), Ended::OnRequest).is_empty();
    let chunks = chunks.saturating_sub(app.leak.chunks());
    let bytes = bytes.saturating_sub(app.leak.total_bytes());
    Reply::ok(&json!({
        "status": if stopped { "released" } else { "not active" },
        "released_mb": bytes >> 20,
        "chunks": chunks,
        "rss_bytes": sys::rss_bytes(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::testing;

    #[test]
    fn leaks_and_reports_totals() {
        let _serial = sys::RSS_TEST_LOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (app, _) = testing::app(
            "memory",
            &[("CHAOS_COOLDOWN_SECONDS", "0"), ("MAX_CONCURRENT_CHAOS", "2")],
        );
        let r = leak(&app, "mb=8", Instant::now()).settled();
        assert_eq!(r.status, 200);
        let body = r.body_json();
        assert_eq!(body["leaked_mb"], 8);
        assert_eq!(body["total_leaked_mb"], 8);
        assert_eq!(body["chunks"], 1);
        assert!(body["rss_bytes"].as_u64().unwrap() > 8 << 20);
        let r = leak(&app, "mb=2", Instant::now()).settled();
        assert_eq!(r.body_json()["total_leaked_mb"], 10);
        assert_eq!(
            leak(&app, "mb=1", Instant::now()).settled().status,
            429,
            "each leak holds a slot"
        );
        let r = release(&app).body_json();
        assert_eq!((r["released_mb"].clone(), r["chunks"].clone()), (json!(10), json!(2)));
        assert_eq!((app.leak.total_bytes(), app.registry.active()), (0, 0));
    }

    #[test]
    fn refused_allocation_is_507_and_the_process_lives() {
        let (app, _) = testing::app("memory-507", &[]);
        let r = leak(&app, &format!("mb={MAX_MB}"), Instant::now());
        assert_eq!(r.status, 507, "{:?}", r.body_json());
        assert!(
            r.body_json()["error"]
                .as_str()
                .unwrap()
                .starts_with("cannot leak 1048576 MiB: more than this machine")
        );
        assert_eq!(
            app.metrics
                .chaos_actions_total
                .with_label_values(&["memory", "failed"])
                .get(),
            1
        );
    }

    #[test]
    fn bad_memory_parameters_are_400() {
        let (app, _) = testing::app("memory-400", &[]);
        for q in [
            "mb=-1",
            "mb=99999999999999999999",
            "mb=0",
            "mb=abc",
            "size=1",
            "mb=1&percent_of_limit=5",
            "percent_of_limit=0",
            "percent_of_limit=201",
            "ramp=0",
            "hold=x",
        ] {
            assert_eq!(leak(&app, q, Instant::now()).settled().status, 400, "{q}");
        }
        assert_eq!(app.leak.chunks(), 0);
    }
}
