//! The deliberate crash: marker, event, then `abort()`.
//!
//! It runs after the 202 has been written and flushed to the client, so the
//! caller always learns that the crash was accepted. The marker is written
//! before the event so that whatever is logged is already durable.

use std::path::Path;
use std::time::SystemTime;

use serde_json::json;

use crate::events::{Event, Events};
use crate::{recovery, sys};

/// Writes the crash marker, logs the event and ends the process by SIGABRT.
pub fn abort_now(state_dir: &Path, cause: &str, events: &Events) -> ! {
    let marker = match recovery::write_marker(state_dir, "abort", cause, SystemTime::now()) {
        Ok(path) => path.display().to_string(),
        Err(e) => {
            log::warn!("crash marker not written in STATE_DIR {}: {e}", state_dir.display());
            String::new()
        }
    };
    events.emit(
        Event::CrashRequested,
        json!({"mode": "abort", "cause": cause, "marker": marker}),
    );
    sys::abort()
}
