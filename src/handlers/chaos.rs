//! `GET /chaos` lists the running faults, as the registry holds them;
//! `POST /chaos/stop` ends them all, the leak included.

use serde_json::{Value, json};

use crate::app::App;
use crate::chaos::registry::{Ended, FaultKind};
use crate::events::unix_ms;
use crate::http::Reply;

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
            if let (Some(f), Some(extra)) = (f.as_object_mut(), l.extra.as_object()) {
                f.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            if l.kind == FaultKind::Memory {
                f["leaked_bytes"] = json!(app.leak.bytes_of(l.id));
            }
            f
        })
        .collect();
    if let Some(crash) = app.registry.crash_in_progress() {
        faults.push(json!({"fault": "crash", "detail": crash.mode, "ends_at_unix_ms": null}));
    }
    Reply::ok(&json!({"active": faults.len(), "faults": faults}))
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
    let released = bytes.saturating_sub(app.leak.total_bytes());
    Reply::ok(&json!({"status": "stopped", "stopped": stopped, "released_mb": released >> 20}))
}
