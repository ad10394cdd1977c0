//! `POST /load/memory?mb=N|percent_of_limit=P&ramp=S&hold=S` leaks memory;
//! `DELETE /load/memory` frees it.
//!
//! Every leak is a fault in the registry, made by a thread of its own in
//! `chaos::memory`. Without `ramp` the worker waits for that thread before
//! answering, because the answer reports the RSS reached (touching 100 MiB
//! takes about 25 ms). With `ramp` it grows over S seconds and the answer is
//! 202. With `hold` the leak frees itself S seconds after it is complete.
//! A leak holds its guardrail slot until it is released.

use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::{bad, start_fault};
use crate::app::App;
use crate::chaos::memory::{self, LeakError};
use crate::chaos::registry::{Ended, FaultKind, Running};
use crate::config::{MAX_DURATION_SECONDS, MAX_MB};
use crate::http::query::Query;
use crate::http::reply::Reply;
use crate::observe::events::{Event, unix_ms};
use crate::os::{cgroup, sys};

pub const PARAMETERS: &[&str] = &["mb", "percent_of_limit", "ramp", "hold"];

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

pub fn leak(app: &App, raw_query: &str, now: Instant) -> Reply {
    let query = match Query::parse(raw_query, PARAMETERS) {
        Ok(q) => q,
        Err(e) => return bad(e),
    };
    let (bytes, asked) = match size(app, &query) {
        Ok(s) => s,
        Err(reply) => return reply,
    };
    let (ramp, hold) = match (
        query.bounded("ramp", 1, MAX_DURATION_SECONDS, "seconds"),
        query.bounded("hold", 1, 86_400, "seconds"),
    ) {
        (Ok(r), Ok(h)) => (r.map(Duration::from_secs), h.map(Duration::from_secs)),
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    let mb = bytes >> 20;
    // The whole size, ramp or not, before anything starts or is counted
    // against the guardrails.
    if let Err(e) = memory::check_size(bytes) {
        app.metrics.chaos("memory", "failed");
        let message = format!("cannot leak {mb} MiB: {e}");
        log::warn!("{message}");
        app.events
            .emit(Event::ChaosRejected, json!({"action": "memory", "reason": message}));
        // The same body as a refusal found while allocating: what is held now.
        let mut body = json!({"error": message, "leaked_mb": 0});
        merge(&mut body, &totals(app));
        return Reply::json(507, &body);
    }
    let plan = memory::LeakPlan { bytes, ramp, hold };
    // A leak lasts until it is released: by DELETE, /chaos/stop, or the end
    // of its hold. It holds its guardrail slot that long.
    let expected = hold.map(|h| ramp.unwrap_or_default() + h);
    // A rendezvous-sized buffer made here: sending allocates nothing on the
    // leak's thread (see `memory::spawn`).
    let (made_tx, made_rx) = mpsc::sync_channel(1);
    let (leak, events) = (Arc::clone(&app.leak), Arc::clone(&app.events));
    let mut started = json!({"action": "memory", "bytes": bytes, "ramp_seconds": ramp.map(|r| r.as_secs()), "hold_seconds": hold.map(|h| h.as_secs())});
    merge(&mut started, &asked);
    let t = SystemTime::now();
    let release_at = hold.map(|h| t + ramp.unwrap_or_default() + h);
    let launched = start_fault(app, FaultKind::Memory, now, expected, |ticket| {
        events.emit(Event::ChaosStarted, started);
        let id = ticket.id;
        let thread = memory::spawn(Arc::clone(&leak), Arc::clone(&events), plan, ticket, made_tx)
            .map_err(|e| format!("cannot start the leak thread: {e}"))?;
        let mut detail = format!("{mb} MiB");
        if let Some(r) = ramp {
            detail.push_str(&format!(", ramp {} s", r.as_secs()));
        }
        if let Some(h) = hold {
            detail.push_str(&format!(", hold {} s", h.as_secs()));
        }
        Ok(Running {
            threads: vec![thread],
            cleanup: Box::new(move |ended| {
                let (chunks, released) = leak.release_id(id);
                if ended != Ended::Failed && chunks > 0 {
                    events.emit(
                        Event::ChaosFinished,
                        json!({"action": "memory", "released_mb": released >> 20, "ended": ended.label()}),
                    );
                }
            }),
            detail,
            ends_at: release_at,
            extra: json!({"bytes": bytes}),
        })
    });
    if let Err(reply) = launched {
        return reply;
    }

    if let Some(ramp) = ramp {
        let t = unix_ms(t);
        let mut body = json!({
            "status": "ramping",
            "action": "memory",
            "bytes": bytes,
            "ramp_seconds": ramp.as_secs(),
            "ends_at_unix_ms": t + ramp.as_millis() as u64,
            "release_at_unix_ms": release_at.map(unix_ms),
        });
        merge(&mut body, &asked);
        return Reply::accepted(&body);
    }

    // Made at once on the leak's own thread; the worker waits for it,
    // because the answer reports the RSS reached (100 MiB takes about 25 ms).
    let result = made_rx
        .recv()
        .unwrap_or_else(|_| Err(LeakError::Refused("the leak thread ended without an answer".into())));
    let totals = totals(app);
    match result {
        Ok(took) => {
            let mut body =
                json!({"status": "leaked", "action": "memory", "leaked_mb": mb, "seconds": took.as_secs_f64()});
            merge(&mut body, &totals);
            merge(&mut body, &asked);
            if let Some(at) = release_at {
                body["release_at_unix_ms"] = json!(unix_ms(at));
            }
            app.events.emit(Event::ChaosFinished, body.clone());
            Reply::ok(&body)
        }
        Err(LeakError::Cancelled) => {
            let mut body = json!({"error": format!("the {mb} MiB leak was stopped while it was being made (DELETE /load/memory or POST /chaos/stop)"), "leaked_mb": 0});
            merge(&mut body, &totals);
            Reply::json(409, &body)
        }
        Err(e) => {
            app.metrics.chaos("memory", "failed");
            let message = format!("cannot leak {mb} MiB: {e}");
            log::warn!("{message}");
            let mut body = json!({"error": message, "leaked_mb": 0});
            merge(&mut body, &totals);
            app.events.emit(
                Event::ChaosFinished,
                json!({"action": "memory", "mb": mb, "error": message}),
            );
            Reply::json(507, &body)
        }
    }
}

/// What the leak holds now, reported with every answer about a leak.
fn totals(app: &App) -> serde_json::Value {
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

fn merge(into: &mut Value, from: &Value) {
    if let (Some(a), Some(b)) = (into.as_object_mut(), from.as_object()) {
        a.extend(b.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
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
        let r = leak(&app, "mb=8", Instant::now());
        assert_eq!(r.status, 200);
        let body = r.body_json();
        assert_eq!(body["leaked_mb"], 8);
        assert_eq!(body["total_leaked_mb"], 8);
        assert_eq!(body["chunks"], 1);
        assert!(body["rss_bytes"].as_u64().unwrap() > 8 << 20);
        let r = leak(&app, "mb=2", Instant::now());
        assert_eq!(r.body_json()["total_leaked_mb"], 10);
        assert_eq!(leak(&app, "mb=1", Instant::now()).status, 429, "each leak holds a slot");
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
            assert_eq!(leak(&app, q, Instant::now()).status, 400, "{q}");
        }
        assert_eq!(app.leak.chunks(), 0);
    }
}
