//! `POST /load/memory?mb=N|percent_of_limit=P&ramp=S&hold=S` leaks memory;
//! `DELETE /load/memory` frees it.
//!
//! Without `ramp` the leak is made before answering, on the worker, because
//! the answer reports the RSS it reached (touching 100 MiB takes about 25 ms).
//! With `ramp` it grows on a thread of its own over S seconds and the answer
//! is 202. With `hold` the leak frees itself S seconds after it is complete.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::{bad, claim};
use crate::app::App;
use crate::chaos::memory::Leak;
use crate::config::{MAX_DURATION_SECONDS, MAX_MB};
use crate::events::{Event, Events, unix_ms};
use crate::http::Reply;
use crate::query::Query;
use crate::{cgroup, sys};

pub const PARAMETERS: &[&str] = &["mb", "percent_of_limit", "ramp", "hold"];

/// How often a ramp grows the leak.
const RAMP_STEP: Duration = Duration::from_millis(100);

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
    let permit = match claim(app, "memory", now, ramp.unwrap_or(Duration::ZERO)) {
        Ok(p) => p,
        Err(reply) => return reply,
    };
    let id = app.leak.new_id();
    let mut started = json!({"action": "memory", "bytes": bytes, "ramp_seconds": ramp.map(|r| r.as_secs()), "hold_seconds": hold.map(|h| h.as_secs())});
    merge(&mut started, &asked);
    app.events.emit(Event::ChaosStarted, started);

    if let Some(ramp) = ramp {
        let (leak, events) = (Arc::clone(&app.leak), Arc::clone(&app.events));
        let spawned = std::thread::Builder::new().name("memory-ramp".into()).spawn(move || {
            let steps = (ramp.as_millis() / RAMP_STEP.as_millis()).max(1) as u64;
            let t0 = Instant::now();
            let mut done = 0u64;
            for step in 1..=steps {
                let target = bytes * step / steps;
                if let Err(e) = leak.grow_tagged(id, (target - done) as usize) {
                    events.emit(
                        Event::ChaosFinished,
                        json!({"action": "memory", "error": e.to_string()}),
                    );
                    return;
                }
                done = target;
                std::thread::sleep((t0 + RAMP_STEP * step as u32).saturating_duration_since(Instant::now()));
            }
            drop(permit);
            events.emit(
                Event::ChaosFinished,
                json!({"action": "memory", "leaked_mb": bytes >> 20, "ramp_seconds": ramp.as_secs()}),
            );
            if let Some(hold) = hold {
                release_after(leak, events, id, hold);
            }
        });
        if let Err(e) = spawned {
            app.metrics.chaos("memory", "failed");
            return Reply::internal_error(&format!("cannot start the ramp thread: {e}"));
        }
        let t = unix_ms(SystemTime::now());
        let mut body = json!({
            "status": "ramping",
            "action": "memory",
            "bytes": bytes,
            "ramp_seconds": ramp.as_secs(),
            "ends_at_unix_ms": t + ramp.as_millis() as u64,
            "release_at_unix_ms": hold.map(|h| t + (ramp + h).as_millis() as u64),
        });
        merge(&mut body, &asked);
        return Reply::accepted(&body);
    }

    let started = Instant::now();
    let result = app.leak.grow_tagged(id, bytes as usize);
    let took = started.elapsed();
    drop(permit);
    let totals = json!({
        "total_leaked_mb": app.leak.total_bytes() >> 20,
        "chunks": app.leak.chunks(),
        "rss_bytes": sys::rss_bytes(),
    });
    let mb = bytes >> 20;
    match result {
        Ok(()) => {
            let mut body =
                json!({"status": "leaked", "action": "memory", "leaked_mb": mb, "seconds": took.as_secs_f64()});
            merge(&mut body, &totals);
            merge(&mut body, &asked);
            if let Some(hold) = hold {
                body["release_at_unix_ms"] = json!(unix_ms(SystemTime::now()) + hold.as_millis() as u64);
                release_after(Arc::clone(&app.leak), Arc::clone(&app.events), id, hold);
            }
            app.events.emit(Event::ChaosFinished, body.clone());
            Reply::ok(&body)
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

/// Frees the chunks of leak `id` after `hold`, on a thread of its own.
fn release_after(leak: Arc<Leak>, events: Arc<Events>, id: u64, hold: Duration) {
    let spawned = std::thread::Builder::new().name("memory-hold".into()).spawn(move || {
        std::thread::sleep(hold);
        let (chunks, bytes) = leak.release_id(id);
        if chunks > 0 {
            events.emit(
                Event::ChaosFinished,
                json!({"action": "memory", "released_mb": bytes >> 20, "after_hold_seconds": hold.as_secs()}),
            );
        }
    });
    if let Err(e) = spawned {
        log::warn!("no thread to release the leak after {hold:?} ({e}); DELETE /load/memory frees it");
    }
}

/// `DELETE /load/memory`: frees the whole leak, so that a memory-degraded
/// pod can recover and its recovery time be measured.
pub fn release(app: &App) -> Reply {
    let (chunks, bytes) = app.leak.release();
    if chunks > 0 {
        app.events.emit(
            Event::ChaosFinished,
            json!({"action": "memory", "released_mb": bytes >> 20}),
        );
    }
    Reply::ok(&json!({
        "status": if chunks > 0 { "released" } else { "not active" },
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
        let (app, _) = testing::app("memory", &[("CHAOS_COOLDOWN_SECONDS", "0")]);
        let r = leak(&app, "mb=8", Instant::now());
        assert_eq!(r.status, 200);
        let body = r.body_json();
        assert_eq!(body["leaked_mb"], 8);
        assert_eq!(body["total_leaked_mb"], 8);
        assert_eq!(body["chunks"], 1);
        assert!(body["rss_bytes"].as_u64().unwrap() > 8 << 20);
        let r = leak(&app, "mb=2", Instant::now());
        assert_eq!(r.body_json()["total_leaked_mb"], 10);
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
