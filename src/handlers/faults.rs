//! `POST`/`DELETE` `/fault/liveness`, `/fault/readiness`, `/load/latency`
//! and `/fault/errors`: timed faults that change how the service answers. Each holds a guardrail
//! slot for its duration; `DELETE` ends it early.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::{bad, start_fault};
use crate::app::App;
use crate::chaos::faults::{ErrorFault, ErrorMode, LivenessMode, Setting};
use crate::chaos::registry::{Ended, FaultKind, Running};
use crate::config::MAX_DURATION_SECONDS;
use crate::http::query::{ParamError, Query};
use crate::http::reply::Reply;
use crate::observe::events::{Event, unix_ms};

/// Liveness and readiness faults last a minute unless told: long enough for
/// the kubelet's default period (10 s) times failureThreshold (3).
const DEFAULT_PROBE_FAULT: Duration = Duration::from_secs(60);

/// `POST /fault/liveness?mode=fail|hang&duration=S`.
pub fn liveness(app: &App, raw_query: &str, now: Instant) -> Reply {
    start(
        app,
        raw_query,
        now,
        &["mode", "duration"],
        DEFAULT_PROBE_FAULT,
        &|query| {
            Ok(match query.choice("mode", &["fail", "hang"])? {
                Some("hang") => Setting::Liveness(LivenessMode::Hang),
                _ => Setting::Liveness(LivenessMode::Fail),
            })
        },
    )
}

/// `POST /fault/readiness?duration=S`.
pub fn readiness(app: &App, raw_query: &str, now: Instant) -> Reply {
    start(app, raw_query, now, &["duration"], DEFAULT_PROBE_FAULT, &|_| {
        Ok(Setting::Readiness)
    })
}

/// `POST /load/latency?ms=M&duration=S`; lasts `CPU_LOAD_DURATION` unless
/// told.
pub fn latency(app: &App, raw_query: &str, now: Instant) -> Reply {
    start(
        app,
        raw_query,
        now,
        &["ms", "duration"],
        app.config.cpu_load_duration,
        &|query| {
            let ms = query.bounded("ms", 1, 60_000, "milliseconds")?.unwrap_or(1000);
            Ok(Setting::Latency(Duration::from_millis(ms)))
        },
    )
}

/// The status codes an errors fault may answer (`mode=status`).
pub const ERROR_CODES: [&str; 5] = ["500", "502", "503", "504", "429"];

/// `POST /fault/errors?percent=P&duration=S&mode=status|reset|close|stall&code=C`:
/// `percent` (default 100) of `GET /` get `mode` (default `status`, with
/// `code`, default 503) for `duration` (default 60 s).
pub fn errors(app: &App, raw_query: &str, now: Instant) -> Reply {
    start(
        app,
        raw_query,
        now,
        &["percent", "duration", "mode", "code"],
        DEFAULT_PROBE_FAULT,
        &|query| {
            let percent = query.bounded("percent", 1, 100, "percent")?.unwrap_or(100) as u8;
            let code = query.choice("code", &ERROR_CODES)?;
            let mode = match query.choice("mode", &ErrorMode::LABELS)? {
                Some("reset") => ErrorMode::Reset,
                Some("close") => ErrorMode::Close,
                Some("stall") => ErrorMode::Stall,
                _ => ErrorMode::Status(code.map_or(503, |c| c.parse().unwrap_or(503))),
            };
            if let (Some(code), false) = (code, matches!(mode, ErrorMode::Status(_))) {
                return Err(ParamError {
                    parameter: "code".to_string(),
                    value: Some(code.to_string()),
                    message: format!(
                        "code {code} applies to mode=status only; mode={} sends no status",
                        mode.label()
                    ),
                });
            }
            Ok(Setting::Errors(ErrorFault { percent, mode }))
        },
    )
}

/// Parses `duration` (default `default`) and the fault's own `setting`
/// from a query of `parameters`, then starts the fault through the
/// registry and answers 202.
fn start(
    app: &App,
    raw_query: &str,
    now: Instant,
    parameters: &[&str],
    default: Duration,
    // Not generic: one copy of this function for every fault, not one each.
    setting: &dyn Fn(&Query) -> Result<Setting, ParamError>,
) -> Reply {
    let parsed = Query::parse(raw_query, parameters).and_then(|query| {
        let duration = query
            .bounded("duration", 1, MAX_DURATION_SECONDS, "seconds")?
            .map_or(default, Duration::from_secs);
        Ok((setting(&query)?, duration))
    });
    let (setting, duration) = match parsed {
        Ok(p) => p,
        Err(e) => return bad(e),
    };
    let kind = setting.kind();
    let started = unix_ms(SystemTime::now());
    let details = json!({
        "fault": kind.label(),
        "detail": setting.detail(),
        "duration_seconds": duration.as_secs(),
        "started_at_unix_ms": started,
        "ends_at_unix_ms": started + duration.as_millis() as u64,
    });
    if let Err(reply) = launch(app, setting, duration, &details, now) {
        return reply;
    }
    let mut body = details;
    body["status"] = json!("started");
    Reply::accepted(&body)
}

/// Puts `setting` in force as a registry fault, with the timer thread that
/// ends it on time.
fn launch(app: &App, setting: Setting, duration: Duration, details: &Value, now: Instant) -> Result<u64, Reply> {
    let kind = setting.kind();
    let (faults, events) = (Arc::clone(&app.faults), Arc::clone(&app.events));
    start_fault(app, kind, now, Some(duration), |ticket| {
        faults.start(ticket.id, setting, now, duration, ticket.cancel.clone());
        events.emit(Event::ChaosStarted, details.clone());
        let thread = match crate::chaos::faults::spawn_timer(ticket.clone(), kind, now + duration) {
            Ok(t) => t,
            Err(e) => {
                faults.remove(ticket.id);
                return Err(format!("no timer thread: {e}"));
            }
        };
        let id = ticket.id;
        Ok(Running {
            threads: vec![thread],
            cleanup: Box::new(move |ended| {
                faults.remove(id);
                events.emit(
                    Event::ChaosFinished,
                    json!({"fault": kind.label(), "ended": ended.label()}),
                );
            }),
            detail: setting.detail(),
            ends_at: Some(SystemTime::now() + duration),
            extra: Value::Null,
        })
    })
}

/// `DELETE`: ends the fault of `kind`, and answers once it is lifted.
pub fn end(app: &App, kind: FaultKind) -> Reply {
    let was_active = !app.registry.stop(Some(kind), Ended::OnRequest).is_empty();
    Reply::ok(&json!({"fault": kind.label(), "status": if was_active { "stopped" } else { "not active" }}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::testing;

    #[test]
    fn bad_fault_parameters_are_400() {
        let (app, _) = testing::app("faults-bad", &[]);
        type Start = fn(&App, &str, Instant) -> Reply;
        let cases: [(Start, &str); 12] = [
            (liveness, "mode=sleep"),
            (liveness, "ms=5"),
            (latency, "ms=0"),
            (latency, "ms=60001"),
            (readiness, "duration=0"),
            (readiness, "mode=fail"),
            (errors, "percent=0"),
            (errors, "percent=101"),
            (errors, "code=404"),
            (errors, "mode=drop"),
            (errors, "mode=reset&code=500"),
            (errors, "ms=5"),
        ];
        for (start, q) in cases {
            assert_eq!(start(&app, q, Instant::now()).status, 400, "{q}");
        }
        assert_eq!(app.registry.active(), 0);
    }

    #[test]
    fn latency_fault_starts_and_ends_on_request() {
        let (app, events) = testing::app("faults-latency", &[("CHAOS_COOLDOWN_SECONDS", "0")]);
        let now = Instant::now();
        let r = latency(&app, "ms=250&duration=30", now);
        assert_eq!(r.status, 202, "{:?}", r.body_json());
        assert_eq!(app.faults.latency(now).map(|l| l.0), Some(Duration::from_millis(250)));
        assert_eq!(end(&app, FaultKind::Latency).body_json()["status"], "stopped");
        assert!(app.faults.latency(now).is_none());
        assert_eq!(app.registry.active(), 0, "the slot is free again");
        assert_eq!(events.event_names(), ["CHAOS_STARTED", "CHAOS_FINISHED"]);
    }
}

#[cfg(test)]
mod errors_tests {
    use super::*;
    use crate::app::testing;

    #[test]
    fn an_errors_fault_replaces_the_running_one_and_ends_on_request() {
        let (app, _) = testing::app(
            "faults-errors",
            &[("CHAOS_COOLDOWN_SECONDS", "0"), ("MAX_CONCURRENT_CHAOS", "3")],
        );
        let now = Instant::now();
        let r = errors(&app, "percent=20&mode=status&code=502&duration=30", now);
        assert_eq!(r.status, 202, "{:?}", r.body_json());
        assert_eq!(r.body_json()["detail"], "percent=20 mode=status code=502");
        let r = errors(&app, "mode=stall", now);
        assert_eq!(r.body_json()["detail"], "percent=100 mode=stall");
        assert_eq!(app.registry.active(), 1, "replaced, not added");
        assert_eq!(end(&app, FaultKind::Errors).body_json()["status"], "stopped");
        assert!(app.faults.next_error(now).is_none());
    }

    /// A fault out of the list whose clean-up still holds its slot (a few
    /// milliseconds after its end) is named in the 429, not left out.
    #[test]
    fn a_refusal_names_a_slot_still_held_by_a_fault_that_just_ended() {
        let (app, _) = testing::app(
            "faults-ending",
            &[("CHAOS_COOLDOWN_SECONDS", "0"), ("MAX_CONCURRENT_CHAOS", "1")],
        );
        let now = Instant::now();
        let ending = app.registry.guard().try_acquire(now, Some(Duration::ZERO)).unwrap();
        let r = errors(&app, "percent=20&duration=30", now);
        assert_eq!(r.status, 429);
        let error = r.body_json()["error"].as_str().unwrap().to_string();
        assert!(error.contains("(running: 1 just ended, freeing its slot)"), "{error}");
        assert_eq!(r.body_json()["retry_after_seconds"], 1);
        drop(ending);
        assert_eq!(errors(&app, "percent=20&duration=30", now).status, 202);
    }
}
