//! The deliberate crash: how it may end the process, and the end itself
//! (marker, event, then the end the caller asked for).
//!
//! `POST /crash` runs it after its 202 has been written and flushed (an
//! `AfterReply`), so the caller always learns that the crash was accepted.
//! The marker is written before the event so that whatever is logged is
//! already durable.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::chaos::crash_marker;
use crate::observe::events::{Event, Events};
use crate::observe::state_file::Identity;
use crate::os::sys;

/// How `POST /crash` ends the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// `abort()`: SIGABRT (139 as PID 1 in a container, see README).
    Abort,
    /// `exit(code)`.
    Exit(u8),
    /// SIGKILL to itself.
    Kill,
    /// A Rust panic on the main thread, which the process does not survive.
    Panic,
}

impl CrashMode {
    pub fn label(self) -> &'static str {
        match self {
            CrashMode::Abort => "abort",
            CrashMode::Exit(_) => "exit",
            CrashMode::Kill => "kill",
            CrashMode::Panic => "panic",
        }
    }
}

/// Writes the crash marker, logs the event and ends the process as `mode`
/// says. A panic must be raised on the main thread (a worker's panic would
/// only end that worker): `panic_on_main` asks for it, and this thread then
/// waits for the end.
pub fn crash_now(
    state_dir: &Path,
    identity: Identity,
    mode: CrashMode,
    cause: &str,
    events: &Events,
    panic_on_main: impl FnOnce(String),
) -> ! {
    let marker = match crash_marker::write_marker(state_dir, identity, mode.label(), cause, SystemTime::now()) {
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
            panic_on_main(cause.to_string());
            loop {
                std::thread::park();
            }
        }
    }
}
