//! `POST /fault/crashloop?starts=N`: the next N starts fail, then this
//! process ends as `POST /crash` ends it. `POST /fault/slowstart?seconds=S&starts=N`:
//! the next N starts hold /health and /ready at 503 for S seconds;
//! `DELETE /fault/slowstart` removes them and ends this life's hold.
//!
//! Both are kept in `STATE_DIR` (`chaos::startup`) and carried out by later
//! lives, so each holds no guardrail slot of its own; the guardrails still
//! decide whether it may start (and its start begins the cooldown). A
//! crash loop cannot be stopped by a request while it runs: no process
//! listens. `CRASHLOOP_CANCEL=true` or a new pod ends it (docs/chaos-runs.md).

use std::time::{Instant, SystemTime};

use serde_json::json;

use super::{bad, crash, guardrails_allow};
use crate::app::App;
use crate::chaos::crash::CrashMode;
use crate::chaos::startup::{self, CRASHLOOP_EXIT_CODE, MAX_SLOW_START_SECONDS, MAX_STARTS};
use crate::http::query::{ParamError, Query};
use crate::http::reply::Reply;

/// Starts of a crash loop when the request names none: three restarts
/// (10, 20 and 40 s of the kubelet's back-off) show the doubling.
const DEFAULT_LOOP_STARTS: u64 = 3;

/// `POST /fault/crashloop?starts=N`.
pub fn crashloop(app: &App, raw_query: &str, now: Instant) -> Reply {
    let starts = match Query::parse(raw_query, &["starts"]).and_then(|q| q.bounded("starts", 1, MAX_STARTS, "starts")) {
        Ok(n) => n.unwrap_or(DEFAULT_LOOP_STARTS),
        Err(e) => return bad(e),
    };
    if app.config.crashloop_cancel {
        return Reply::json(
            409,
            &json!({"error": "CRASHLOOP_CANCEL=true on this instance would end the loop at its first start: unset it first"}),
        );
    }
    if let Err(refused) = guardrails_allow(app, "crashloop", now) {
        return refused;
    }
    if let Err(refused) = crash::claim(app, "crashloop", &format!("crashloop starts={starts}")) {
        return refused;
    }
    let (dir, identity) = (&app.config.state_dir, app.identity.clone());
    if let Err(e) = startup::plan_crash_loop(dir, identity, starts, SystemTime::now()) {
        app.registry.release_crash();
        app.metrics.chaos("crashloop", "failed");
        let message = format!(
            "cannot record the crash loop in STATE_DIR {} ({e}): no crash",
            dir.display()
        );
        log::error!("{message}");
        return Reply::json(507, &json!({"error": message}));
    }
    app.metrics.chaos("crashloop", "accepted");
    log::warn!(
        "crash loop of {starts} start(s) planned: crashing now; each of the next {starts} start(s) exits with {CRASHLOOP_EXIT_CODE}"
    );
    Reply::accepted(&json!({
        "status": "crashing",
        "mode": "abort",
        "starts": starts,
        "exit_code": CRASHLOOP_EXIT_CODE,
        "cancel": "CRASHLOOP_CANCEL=true at the next start, or a new pod",
    }))
    .then(crash::crash_after_reply(app, CrashMode::Abort, "POST /fault/crashloop"))
}

/// `POST /fault/slowstart?seconds=S&starts=N`.
pub fn slowstart(app: &App, raw_query: &str, now: Instant) -> Reply {
    let parsed = Query::parse(raw_query, &["seconds", "starts"]).and_then(|q| {
        let seconds = q
            .bounded("seconds", 1, MAX_SLOW_START_SECONDS, "seconds")?
            .ok_or_else(|| ParamError {
                parameter: "seconds".to_string(),
                value: None,
                message: format!("seconds is required: the hold, from 1 to {MAX_SLOW_START_SECONDS}"),
            })?;
        Ok((seconds, q.bounded("starts", 1, MAX_STARTS, "starts")?.unwrap_or(1)))
    });
    let (seconds, starts) = match parsed {
        Ok(p) => p,
        Err(e) => return bad(e),
    };
    if let Err(refused) = guardrails_allow(app, "slowstart", now) {
        return refused;
    }
    let (dir, identity) = (&app.config.state_dir, app.identity.clone());
    if let Err(e) = startup::plan_slow_start(dir, identity, seconds, starts, SystemTime::now()) {
        app.metrics.chaos("slowstart", "failed");
        let message = format!("cannot record the slow start in STATE_DIR {} ({e})", dir.display());
        log::error!("{message}");
        return Reply::json(507, &json!({"error": message}));
    }
    app.metrics.chaos("slowstart", "accepted");
    log::warn!("slow start of {seconds} s planned for the next {starts} start(s)");
    Reply::accepted(&json!({
        "status": "planned",
        "seconds": seconds,
        "starts": starts,
        "takes_effect": "at the next start: POST /crash, or a restart",
    }))
}

/// `DELETE /fault/slowstart`: no planned slow start is left, and this
/// life's hold (if any) ends now.
pub fn slowstart_end(app: &App, now: Instant) -> Reply {
    let lifted = app.lift_hold(now);
    match startup::cancel_slow_start(&app.config.state_dir, app.identity.clone()) {
        Ok(removed) => Reply::ok(&json!({"status": "stopped", "planned_removed": removed, "hold_lifted": lifted})),
        Err(e) => Reply::internal_error(&format!("cannot remove the planned slow start: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::testing;

    #[test]
    fn bounds_are_named_and_a_planned_loop_is_one_crash() {
        let (app, _) = testing::app("crashloop-bounds", &[("CHAOS_COOLDOWN_SECONDS", "0")]);
        let now = Instant::now();
        for q in ["starts=0", "starts=21", "starts=x"] {
            let r = crashloop(&app, q, now);
            assert_eq!(r.status, 400, "{q}");
            assert_eq!(r.body_json()["parameter"], "starts");
        }
        let r = crashloop(&app, "starts=2", now);
        assert_eq!(r.status, 202);
        assert_eq!(r.body_json()["exit_code"], 75);
        assert!(r.after.is_some(), "it crashes after answering");
        assert_eq!(crashloop(&app, "starts=2", now).status, 409, "one crash per process");
        assert!(app.config.state_dir.join("crashloop.json").exists());
    }

    #[test]
    fn a_slow_start_needs_its_seconds_and_can_be_removed() {
        let (app, _) = testing::app("slowstart", &[("CHAOS_COOLDOWN_SECONDS", "0")]);
        let now = Instant::now();
        let r = slowstart(&app, "starts=2", now);
        assert_eq!((r.status, r.body_json()["parameter"].as_str()), (400, Some("seconds")));
        assert_eq!(slowstart(&app, "seconds=3601", now).status, 400);
        assert_eq!(slowstart(&app, "seconds=12&starts=2", now).status, 202);
        let r = slowstart_end(&app, now);
        assert_eq!(r.body_json()["planned_removed"], true);
        assert_eq!(slowstart_end(&app, now).body_json()["planned_removed"], false);
    }

    #[test]
    fn cancel_set_refuses_a_loop_it_would_end() {
        let (app, _) = testing::app("crashloop-cancel", &[("CRASHLOOP_CANCEL", "true")]);
        assert_eq!(crashloop(&app, "starts=2", Instant::now()).status, 409);
    }
}
