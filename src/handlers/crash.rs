//! `POST /crash?mode=abort|exit|kill|panic&code=N`: answers 202, and once
//! the answer is flushed, writes the crash marker and ends the process as
//! asked. The guardrails do not apply to it (nothing of it outlives the
//! process), but only the first crash is accepted: every later one gets 409
//! while the process ends.

use std::sync::Arc;

use serde_json::json;

use super::bad;
use crate::app::{App, Control};
use crate::chaos::crash::{self, CrashMode};
use crate::chaos::registry::CrashRefused;
use crate::chaos::startup::CRASHLOOP_EXIT_CODE;
use crate::http::query::Query;
use crate::http::reply::{AfterReply, Reply};
use crate::observe::events::Event;

pub const PARAMETERS: &[&str] = &["mode", "code"];

pub fn crash(app: &App, raw_query: &str) -> Reply {
    let query = match Query::parse(raw_query, PARAMETERS) {
        Ok(q) => q,
        Err(e) => return bad(e),
    };
    let mode = match query.choice("mode", &["abort", "exit", "kill", "panic"]) {
        Ok(m) => m.unwrap_or("abort"),
        Err(e) => return bad(e),
    };
    let code = match query.bounded("code", 0, 255, "exit code") {
        Ok(c) => c,
        Err(e) => return bad(e),
    };
    let mode = match (mode, code) {
        ("exit", Some(code)) if code == u64::from(CRASHLOOP_EXIT_CODE) => {
            return Reply::bad_parameter(
                &format!(
                    "invalid code {code}: it is reserved for the starts of a crash loop (POST /fault/crashloop), so that an exit code tells the two apart"
                ),
                "code",
                query.get("code"),
            );
        }
        ("exit", code) => CrashMode::Exit(code.unwrap_or(1) as u8),
        (other, Some(_)) => {
            return Reply::bad_parameter(
                &format!("code is for mode=exit, not mode={other}"),
                "code",
                query.get("code"),
            );
        }
        ("kill", None) => CrashMode::Kill,
        ("panic", None) => CrashMode::Panic,
        _ => CrashMode::Abort,
    };
    let exit_code = match mode {
        CrashMode::Exit(c) => Some(c),
        _ => None,
    };
    let detail = match exit_code {
        Some(c) => format!("mode=exit code={c}"),
        None => format!("mode={}", mode.label()),
    };
    if let Err(refused) = claim(app, "crash", &detail) {
        return refused;
    }
    app.metrics.chaos("crash", "accepted");
    Reply::accepted(&json!({"status": "crashing", "mode": mode.label(), "exit_code": exit_code}))
        .then(crash_after_reply(app, mode, "POST /crash"))
}

/// Claims the one crash of this process for `action` (`detail` says what
/// it is): exactly one crash per process, for the marker must record the
/// mode that was answered 202, and a second crash racing the first could
/// win. A later claim is the 409, one after the stop began the 503.
pub(super) fn claim(app: &App, action: &str, detail: &str) -> Result<(), Reply> {
    let first = match app.registry.claim_crash(detail) {
        Ok(()) => return Ok(()),
        Err(CrashRefused::Closed(why)) => return Err(super::refused_for_shutdown(app, action, &why)),
        Err(CrashRefused::InProgress(first)) => first,
    };
    let message = format!("a crash ({}) is already in progress; only one is accepted", first.mode);
    app.metrics.chaos(action, "rejected");
    app.events.emit(
        Event::ChaosRejected,
        json!({"action": action, "outcome": "rejected", "reason": message}),
    );
    Err(Reply::json(409, &json!({"error": message, "crash": first.mode})))
}

/// The crash, to run once the 202 is written; a panic is raised on the main
/// thread, through `main`'s channel. `cause` is the marker's.
pub(super) fn crash_after_reply(app: &App, mode: CrashMode, cause: &'static str) -> AfterReply {
    let (state_dir, identity, events, to_main) = (
        app.config.state_dir.clone(),
        app.identity.clone(),
        Arc::clone(&app.events),
        app.to_main.clone(),
    );
    AfterReply::new(move || {
        crash::crash_now(&state_dir, identity, mode, cause, &events, |cause| {
            let _ = to_main.send(Control::Panic(cause));
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::testing;

    #[test]
    fn only_the_first_crash_is_accepted() {
        let (app, events) = testing::app("crash-once", &[]);
        let first = crash(&app, "mode=exit&code=3");
        assert_eq!(first.status, 202);
        assert!(first.after.is_some(), "the accepted one crashes after answering");
        for query in ["mode=abort", "mode=exit&code=3", ""] {
            let r = crash(&app, query);
            assert_eq!(r.status, 409, "{query}");
            assert!(r.after.is_none(), "a refused crash does nothing");
            assert_eq!(
                r.body_json()["error"],
                "a crash (mode=exit code=3) is already in progress; only one is accepted"
            );
        }
        assert_eq!(crash(&app, "mode=nope").status, 400, "a bad request is still a 400");
        let reserved = crash(&app, "mode=exit&code=75");
        assert_eq!(reserved.status, 400, "the crash loop's exit code is its own");
        assert!(reserved.body_json()["error"].as_str().unwrap().contains("crash loop"));
        assert_eq!(events.event_names(), ["CHAOS_REJECTED"; 3]);
    }
}
