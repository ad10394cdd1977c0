//! `GET /chaos` lists the active faults; `POST /chaos/stop` ends them all
//! and releases the leak.

use std::time::Instant;

use serde_json::{Value, json};

use crate::app::App;
use crate::chaos::cpu::Plan;
use crate::events::{Event, unix_ms};
use crate::http::Reply;

pub fn list(app: &App, now: Instant) -> Reply {
    let mut faults: Vec<Value> = app
        .cpu
        .running()
        .into_iter()
        .map(|r| {
            json!({
                "fault": "cpu",
                "detail": match r.plan { Plan::Saturate { .. } => "saturate".to_string(), Plan::Millicores { millicores, .. } => format!("millicores={millicores}") },
                "millicores": r.millicores,
                "ends_at_unix_ms": unix_ms(r.ends_at),
            })
        })
        .collect();
    let leaked = app.leak.total_bytes();
    if leaked > 0 {
        faults.push(json!({
            "fault": "memory",
            "detail": format!("{} MiB in {} chunks", leaked >> 20, app.leak.chunks()),
            "leaked_bytes": leaked,
            "ends_at_unix_ms": null,
        }));
    }
    if let Some(d) = app.disk.status() {
        faults.push(json!({
            "fault": "disk",
            "detail": format!(
                "{} MiB of {} MiB in {}{}",
                d.written >> 20,
                d.target >> 20,
                d.path.display(),
                if d.writing { " (writing)" } else { "" }
            ),
            "written_bytes": d.written,
            "target_bytes": d.target,
            "writing": d.writing,
            "ends_at_unix_ms": d.ends_at.map(unix_ms),
        }));
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
    faults.extend(
        app.faults
            .list(now)
            .into_iter()
            .map(|f| json!({"fault": f.kind.label(), "detail": f.detail, "ends_at_unix_ms": unix_ms(f.ends_at)})),
    );
    Reply::ok(&json!({"active": faults.len(), "faults": faults, "ended": ended}))
}

pub fn stop(app: &App, now: Instant) -> Reply {
    let mut stopped: Vec<&str> = Vec::new();
    if app.cpu.stop_all() > 0 {
        stopped.push("cpu");
    }
    let (chunks, bytes) = app.leak.release();
    if chunks > 0 {
        stopped.push("memory");
        app.events.emit(
            Event::ChaosFinished,
            json!({"action": "memory", "released_mb": bytes >> 20}),
        );
    }
    if let Some(bytes) = app.disk.stop() {
        stopped.push("disk");
        super::disk::removed(app, bytes);
    }
    for kind in app.faults.end_all(now) {
        stopped.push(kind.label());
        app.events.emit(
            Event::ChaosFinished,
            json!({"fault": kind.label(), "ended": "on request"}),
        );
    }
    Reply::ok(&json!({"status": "stopped", "stopped": stopped, "released_mb": bytes >> 20}))
}
