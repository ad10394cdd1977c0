//! The crash marker: a state file (`observe::state_file`) written and
//! fsynced right before a deliberate crash, read and removed at the next
//! start-up to measure crash to start-up.
//!
//! It lives in `STATE_DIR`; in Kubernetes that is an emptyDir, which outlives
//! container restarts within the pod. Wall-clock time is the only clock two
//! processes share, so the marker holds Unix milliseconds. A marker that is
//! not this container's previous life's (older than the longest restart
//! back-off plus a margin, from another boot or another pod) is reported and
//! removed, never counted.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::observe::events::unix_ms;
use crate::observe::state_file::{Identity, Loaded, StateFile, time_field};

const MARKER_FILE: &str = "last-crash.json";
/// The `fault` label of a recovery from a deliberate crash.
pub const FAULT_LABEL: &str = "crash";
const MARKER_KIND: &str = "crash-marker";

/// A marker found at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Crash {
    pub crashed_at_unix_ms: u64,
    pub mode: String,
    pub cause: String,
}

impl Crash {
    pub fn crashed_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.crashed_at_unix_ms)
    }

    /// Time from the crash to `now`; zero if the clock went backwards.
    pub fn elapsed_until(&self, now: SystemTime) -> Duration {
        now.duration_since(self.crashed_at()).unwrap_or(Duration::ZERO)
    }
}

fn marker(state_dir: &Path, identity: Identity) -> StateFile {
    StateFile::new(state_dir, MARKER_FILE, MARKER_KIND, identity)
}

/// Writes the marker and makes it durable. Errors are returned for logging;
/// a crash goes ahead either way. (Not inlined, nor is `take_marker`: each
/// has two callers, and the image has a size goal.)
#[inline(never)]
pub fn write_marker(
    state_dir: &Path,
    identity: Identity,
    mode: &str,
    cause: &str,
    now: SystemTime,
) -> std::io::Result<std::path::PathBuf> {
    let file = marker(state_dir, identity);
    let fields = format!(
        "{{\"crashed_at_unix_ms\":{},\"mode\":{},\"cause\":{},\"pid\":{}}}",
        unix_ms(now),
        Value::from(mode),
        Value::from(cause),
        std::process::id()
    );
    file.write(&fields, now, true)?;
    Ok(file.path())
}

/// Reads and removes the marker. `Ok(None)` when there is none; an error
/// names the file and why it is not counted (it is removed anyway, so it is
/// reported once, not at every start).
#[inline(never)]
pub fn take_marker(state_dir: &Path, identity: Identity, now: SystemTime) -> Result<Option<Crash>, String> {
    let file = marker(state_dir, identity);
    let found = match file.load(now) {
        Loaded::Missing => return Ok(None),
        Loaded::Found(fields, written) => Ok((fields, written)),
        Loaded::Ignored { reason, .. } => Err(reason),
    };
    let removed = file.remove();
    let ignored = |why: &str| format!("crash marker {} ignored: it {why}", file.path().display());
    let (fields, written) = found.map_err(|reason| ignored(&reason))?;
    let text = |key: &str| fields.get(key).and_then(Value::as_str).unwrap_or("").to_string();
    // The crash's time is the marker's own (one write): a time far from it
    // is garbage, and it would be kept in crash_to_startup_seconds for good.
    let crashed_at = time_field(
        "crashed_at_unix_ms",
        fields.get("crashed_at_unix_ms"),
        written,
        Duration::ZERO,
    )
    .map_err(|why| ignored(&why))?
    .ok_or_else(|| ignored("has no crashed_at_unix_ms"))?;
    let crash = Crash {
        crashed_at_unix_ms: unix_ms(crashed_at),
        mode: text("mode"),
        cause: text("cause"),
    };
    removed.map_err(|e| {
        format!(
            "crash marker {} read but not removed ({e}); it would be counted again",
            file.path().display()
        )
    })?;
    Ok(Some(crash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::state_file::testing::{identity as me, temp_dir};

    #[test]
    fn marker_round_trip_is_taken_once() {
        let dir = temp_dir("roundtrip");
        let t = UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
        write_marker(&dir, me(), "abort", "POST /crash", t).unwrap();
        let later = t + Duration::from_millis(250);
        let crash = take_marker(&dir, me(), later).unwrap().unwrap();
        assert_eq!(crash.crashed_at_unix_ms, 1_800_000_000_123);
        assert_eq!(crash.mode, "abort");
        assert_eq!(crash.elapsed_until(later), Duration::from_millis(250));
        assert_eq!(take_marker(&dir, me(), later).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_marker_is_reported_and_removed() {
        let dir = temp_dir("corrupt");
        std::fs::write(dir.join(MARKER_FILE), "{not json").unwrap();
        let err = take_marker(&dir, me(), SystemTime::now()).unwrap_err();
        assert!(err.contains("not a JSON object") && err.contains("{not json"), "{err}");
        assert_eq!(take_marker(&dir, me(), SystemTime::now()).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The marker another run left 361 s earlier, or before a reboot, is
    /// not a crash of this container: reported, removed, not counted.
    #[test]
    fn a_marker_of_another_life_is_reported_and_removed() {
        let dir = temp_dir("stale");
        let t = UNIX_EPOCH + Duration::from_millis(1_800_000_000_000);
        write_marker(&dir, me(), "abort", "POST /crash", t).unwrap();
        let err = take_marker(&dir, me(), t + Duration::from_secs(361)).unwrap_err();
        assert!(err.contains("361 s ago") && err.contains("ignored"), "{err}");
        assert!(!dir.join(MARKER_FILE).exists());
        write_marker(&dir, me(), "abort", "POST /crash", t).unwrap();
        let rebooted = Identity {
            boot_id: Some("boot-b".into()),
            ..me()
        };
        let err = take_marker(&dir, rebooted, t + Duration::from_secs(1)).unwrap_err();
        assert!(err.contains("last boot"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A marker of this life's envelope whose crash time is not the
    /// marker's own (zero, an hour off, not a number) is garbage: reported
    /// and removed, never 56 years of crash to start-up.
    #[test]
    fn a_marker_whose_crash_time_is_garbage_is_reported_and_removed() {
        let dir = temp_dir("garbage");
        let t = SystemTime::now();
        let file = marker(&dir, me());
        for crashed_at in ["0", "1", &(unix_ms(t) + 3_600_000).to_string(), "\"soon\"", "-5"] {
            file.write(
                &format!("{{\"crashed_at_unix_ms\":{crashed_at},\"mode\":\"abort\"}}"),
                t,
                false,
            )
            .unwrap();
            let err = take_marker(&dir, me(), t + Duration::from_secs(1)).unwrap_err();
            assert!(
                err.contains("crashed_at_unix_ms") && err.contains("ignored"),
                "{crashed_at}: {err}"
            );
            assert!(!dir.join(MARKER_FILE).exists(), "{crashed_at}: removed");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn clock_going_backwards_gives_zero() {
        let crash = Crash {
            crashed_at_unix_ms: 2_000,
            mode: "abort".into(),
            cause: String::new(),
        };
        assert_eq!(crash.elapsed_until(UNIX_EPOCH + Duration::from_secs(1)), Duration::ZERO);
    }
}
