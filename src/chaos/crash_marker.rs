//! The crash marker: a small JSON file written (and fsynced) right before a
//! deliberate crash, read and removed at the next start-up to measure crash to
//! start-up.
//!
//! It lives in `STATE_DIR`; in Kubernetes that is an emptyDir, which outlives
//! container restarts within the pod. Wall-clock time is the only clock two
//! processes share, so the marker holds Unix milliseconds.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::observe::events::unix_ms;

const MARKER_FILE: &str = "last-crash.json";

/// A marker found at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Crash {
    pub crashed_at_unix_ms: u64,
    pub mode: String,
    pub cause: String,
}

impl Crash {
    /// Time from the crash to `now`; zero if the clock went backwards.
    pub fn elapsed_until(&self, now: SystemTime) -> Duration {
        let crashed = UNIX_EPOCH + Duration::from_millis(self.crashed_at_unix_ms);
        now.duration_since(crashed).unwrap_or(Duration::ZERO)
    }
}

pub fn marker_path(state_dir: &Path) -> PathBuf {
    state_dir.join(MARKER_FILE)
}

/// Writes the marker and makes it durable. Errors are returned for logging;
/// a crash goes ahead either way.
pub fn write_marker(state_dir: &Path, mode: &str, cause: &str, now: SystemTime) -> std::io::Result<PathBuf> {
    let path = marker_path(state_dir);
    let body = json!({
        "crashed_at_unix_ms": unix_ms(now),
        "mode": mode,
        "cause": cause,
        "pid": std::process::id(),
    });
    let tmp = state_dir.join(".last-crash.json.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(body.to_string().as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, &path)?;
    // The rename is durable only once the directory is synced.
    File::open(state_dir)?.sync_all()?;
    Ok(path)
}

/// Reads and removes the marker. `Ok(None)` when there is none; an error
/// names the file and what is wrong with it (the file is removed anyway, so
/// a corrupt marker is reported once, not at every start).
pub fn take_marker(state_dir: &Path) -> Result<Option<Crash>, String> {
    let path = marker_path(state_dir);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read crash marker {}: {e}", path.display())),
    };
    let removed = fs::remove_file(&path);
    let parsed: Result<Value, _> = serde_json::from_str(&text);
    let crash = parsed
        .ok()
        .and_then(|v| {
            Some(Crash {
                crashed_at_unix_ms: v.get("crashed_at_unix_ms")?.as_u64()?,
                mode: v.get("mode").and_then(Value::as_str).unwrap_or("abort").to_string(),
                cause: v.get("cause").and_then(Value::as_str).unwrap_or("").to_string(),
            })
        })
        .ok_or_else(|| format!("crash marker {} is not valid: {text:?}", path.display()))?;
    if let Err(e) = removed {
        return Err(format!(
            "crash marker {} read but not removed ({e}); it would be counted again",
            path.display()
        ));
    }
    Ok(Some(crash))
}

/// Makes sure `STATE_DIR` exists and is writable; the error says why not.
pub fn prepare_state_dir(state_dir: &Path) -> Result<(), String> {
    fs::create_dir_all(state_dir).map_err(|e| format!("cannot create STATE_DIR {}: {e}", state_dir.display()))?;
    let probe = state_dir.join(".write-test");
    File::create(&probe)
        .and_then(|_| fs::remove_file(&probe))
        .map_err(|e| format!("STATE_DIR {} is not writable: {e}", state_dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chaos-backend-unit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn marker_round_trip_is_taken_once() {
        let dir = temp_dir("roundtrip");
        let t = UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
        write_marker(&dir, "abort", "POST /crash", t).unwrap();
        let crash = take_marker(&dir).unwrap().unwrap();
        assert_eq!(crash.crashed_at_unix_ms, 1_800_000_000_123);
        assert_eq!(crash.mode, "abort");
        assert_eq!(
            crash.elapsed_until(t + Duration::from_millis(250)),
            Duration::from_millis(250)
        );
        assert_eq!(take_marker(&dir).unwrap(), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_marker_is_reported_and_removed() {
        let dir = temp_dir("corrupt");
        fs::write(marker_path(&dir), "{not json").unwrap();
        let err = take_marker(&dir).unwrap_err();
        assert!(err.contains("not valid") && err.contains("{not json"), "{err}");
        assert_eq!(take_marker(&dir).unwrap(), None);
        fs::remove_dir_all(&dir).unwrap();
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

    #[test]
    fn unwritable_state_dir_is_explained() {
        let err = prepare_state_dir(Path::new("/proc/chaos-backend-cannot-exist")).unwrap_err();
        assert!(err.contains("/proc/chaos-backend-cannot-exist"), "{err}");
    }
}
