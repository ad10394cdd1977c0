//! `POST /load/memory?mb=N`: leaks N MiB and answers with the new totals.
//!
//! The leak is made before answering, on the worker, because the answer
//! reports the RSS it reached; touching 100 MiB takes about 25 ms.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{bad, claim};
use crate::app::App;
use crate::config::MAX_MB;
use crate::events::Event;
use crate::http::Reply;
use crate::query::Query;
use crate::sys;

pub const PARAMETERS: &[&str] = &["mb"];

pub fn leak(app: &App, raw_query: &str, now: Instant) -> Reply {
    let query = match Query::parse(raw_query, PARAMETERS) {
        Ok(q) => q,
        Err(e) => return bad(e),
    };
    let mb = match query.bounded("mb", 1, MAX_MB, "MiB") {
        Ok(mb) => mb.unwrap_or(app.config.memory_mb),
        Err(e) => return bad(e),
    };
    let _permit = match claim(app, "memory", now, Duration::ZERO) {
        Ok(p) => p,
        Err(reply) => return reply,
    };
    app.events
        .emit(Event::ChaosStarted, json!({"action": "memory", "mb": mb}));
    let started = Instant::now();
    let result = app.leak.grow((mb << 20) as usize);
    let took = started.elapsed();
    let totals = json!({
        "total_leaked_mb": app.leak.total_bytes() >> 20,
        "chunks": app.leak.chunks(),
        "rss_bytes": sys::rss_bytes(),
    });
    app.metrics
        .memory_chunks
        .set(i64::try_from(app.leak.chunks()).unwrap_or(i64::MAX));
    match result {
        Ok(()) => {
            let mut body =
                json!({"status": "leaked", "action": "memory", "leaked_mb": mb, "seconds": took.as_secs_f64()});
            merge(&mut body, &totals);
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

/// `DELETE /load/memory`: frees the whole leak, so that a memory-degraded
/// pod can recover and its recovery time be measured.
pub fn release(app: &App) -> Reply {
    let (chunks, bytes) = app.leak.release();
    app.metrics.memory_chunks.set(0);
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

fn merge(into: &mut serde_json::Value, from: &serde_json::Value) {
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
    fn bad_mb_is_400() {
        let (app, _) = testing::app("memory-400", &[]);
        for q in ["mb=-1", "mb=99999999999999999999", "mb=0", "mb=abc", "size=1"] {
            assert_eq!(leak(&app, q, Instant::now()).status, 400, "{q}");
        }
        assert_eq!(app.leak.chunks(), 0);
    }
}
