//! `GET /chaos` lists the running faults, as the registry holds them (and,
//! under `ended`, why the last disk fill ended); `POST /chaos/stop` ends
//! them all, the leak, the disk fill and this life's random crash included.

use serde_json::{Value, json};

use super::merge;
use crate::app::App;
use crate::chaos::registry::{Ended, FaultKind};
use crate::http::reply::Reply;
use crate::observe::events::unix_ms;

pub fn list(app: &App) -> Reply {
    let mut faults: Vec<Value> = app
        .registry
        .list()
        .into_iter()
        .map(|l| {
            let mut f = json!({
                "fault": l.kind.label(),
                "detail": l.detail,
                "ends_at_unix_ms": l.ends_at.map(unix_ms),
            });
            merge(&mut f, &l.extra);
            if l.kind == FaultKind::Memory {
                f["leaked_bytes"] = json!(app.leak.bytes_of(l.id));
            }
            if l.kind == FaultKind::Disk {
                // One fill at a time: the disk's state is this entry's.
                if let Some(d) = app.disk.status() {
                    f["detail"] = json!(format!(
                        "{} MiB of {} MiB in {}{}",
                        d.written >> 20,
                        d.target >> 20,
                        d.path.display(),
                        if d.writing { " (writing)" } else { "" }
                    ));
                    f["written_bytes"] = json!(d.written);
                    f["target_bytes"] = json!(d.target);
                    f["writing"] = json!(d.writing);
                    // A written fill stays until removed: no end of its own.
                    f["ends_at_unix_ms"] = json!(d.ends_at.map(unix_ms));
                }
            }
            f
        })
        .collect();
    // The random crash this life waits for: planned, not a registry fault
    // (it holds no guardrail slot), but listed, so it is never a surprise.
    if let Some(timer) = app.random_crash.as_ref().filter(|t| t.pending()) {
        faults.push(json!({
            "fault": "random_crash",
            "detail": timer.planned.detail(),
            "ends_at_unix_ms": unix_ms(timer.planned.at),
            "crash": timer.planned.number + 1,
            "seed": timer.planned.schedule.seed,
            "wait_ms": timer.planned.schedule.gap(timer.planned.number).as_millis() as u64,
        }));
    }
    if let Some(crash) = app.registry.crash_in_progress() {
        faults.push(json!({"fault": "crash", "detail": crash.mode, "ends_at_unix_ms": null}));
    }
    // Why the last disk fill ended (removed on request, or the disk ran
    // out): a ramp that ran out of space has no client left to tell.
    let ended: Vec<Value> = app
        .disk
        .last_ended()
        .into_iter()
        .map(|e| {
            json!({
                "fault": "disk",
                "reason": e.reason.label(),
                "error": e.error,
                "written_bytes": e.written,
                "kept": e.kept,
                "ended_at_unix_ms": unix_ms(e.at),
            })
        })
        .collect();
    Reply::ok(&json!({"active": faults.len(), "faults": faults, "ended": ended}))
}

/// Ends every fault, and answers once each one's threads have stopped and
/// its memory is unmapped.
pub fn stop(app: &App) -> Reply {
    let bytes = app.leak.total_bytes();
    let mut stopped: Vec<&str> = Vec::new();
    for kind in app.registry.stop(None, Ended::OnRequest) {
        if !stopped.contains(&kind.label()) {
            stopped.push(kind.label());
        }
    }
    if app.random_crash.as_ref().is_some_and(|t| t.stop("POST /chaos/stop")) {
        stopped.push("random_crash");
    }
    let released = bytes.saturating_sub(app.leak.total_bytes());
    Reply::ok(&json!({"status": "stopped", "stopped": stopped, "released_mb": released >> 20}))
}
