//! The deliberate crash: marker, event, then the end the caller asked for.
//!
//! It runs after the 202 has been written and flushed to the client, so the
//! caller always learns that the crash was accepted. The marker is written
//! before the event so that whatever is logged is already durable.

use std::path::Path;
use std::sync::mpsc::Sender;
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::chaos::crash_marker;
use crate::control::Control;
use crate::http::reply::CrashMode;
use crate::observe::events::{Event, Events};
use crate::os::sys;

/// Writes the crash marker, logs the event and ends the process as `mode`
/// says. A panic is raised on the main thread (a worker's panic would only
/// end that worker), so this thread then waits for the end.
pub fn crash_now(state_dir: &Path, mode: CrashMode, cause: &str, events: &Events, control: &Sender<Control>) -> ! {
    let marker = match crash_marker::write_marker(state_dir, mode.label(), cause, SystemTime::now()) {
        Ok(path) => path.display().to_string(),
        Err(e) => {
            log::warn!("crash marker not written in STATE_DIR {}: {e}", state_dir.display());
            String::new()
        }
    };
    let code = match mode {
        CrashMode::Exit(code) => Some(code),
        _ => None,
    };
    events.emit(
        Event::CrashRequested,
        json!({"mode": mode.label(), "exit_code": code, "cause": cause, "marker": marker}),
    );
    match mode {
        CrashMode::Abort => sys::abort(),
        CrashMode::Exit(code) => std::process::exit(i32::from(code)),
        CrashMode::Kill => {
            sys::kill_self();
            // Still here: as PID 1 the kernel ignores a SIGKILL a process
            // sends itself. Exit with the code a runtime reports for SIGKILL.
            std::thread::sleep(Duration::from_millis(100));
            log::warn!("SIGKILL to itself was ignored (PID 1); exiting with 137 instead");
            std::process::exit(137)
        }
        CrashMode::Panic => {
            let _ = control.send(Control::Panic(cause.to_string()));
            loop {
                std::thread::park();
            }
        }
    }
}
