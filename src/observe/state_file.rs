//! One format for every file the service keeps in `STATE_DIR` from one life
//! of its container to the next: the crash marker and the healing figures
//! (and whatever else must span a restart).
//!
//! A state file is one JSON object: the envelope (`format`, `kind`,
//! `version`, and who wrote it when: `boot_id`, `pod`,
//! `written_at_unix_ms`) and the kind's own fields beside it. It is written
//! atomically (a temporary file renamed over it), is at most
//! [`MAX_BYTES`], and is read back only when it belongs to this container's
//! previous life: same kind and version, same boot of the machine, same pod,
//! and written within [`PREVIOUS_LIFE`]. Anything else is reported, with the
//! reason, for the caller to log and ignore: a state file is never a reason
//! not to start.
//!
//! In Kubernetes `STATE_DIR` is an emptyDir: it outlives the container's
//! restarts, not the pod. The kubelet waits at most 300 s between two
//! restarts (CrashLoopBackOff), hence the window. Locally every run shares
//! the default `STATE_DIR`: a file left by another run within that window
//! is taken for this one's previous life.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use crate::observe::events::unix_ms;
use crate::os::sys;

/// The `format` of every state file.
pub const FORMAT: &str = "chaos-backend-state";
/// The version of the envelope and of every kind's fields.
pub const VERSION: u64 = 1;
/// A state file is never larger: a bigger file is not one of ours.
pub const MAX_BYTES: usize = 64 * 1024;
/// The longest wait between two restarts of a container: the kubelet's
/// CrashLoopBackOff cap.
pub const LONGEST_RESTART_BACKOFF: Duration = Duration::from_secs(300);
/// Room for the restart itself on top of the back-off (image already
/// present, a node busy with other pods).
pub const RESTART_MARGIN: Duration = Duration::from_secs(60);
/// How old a state file may be and still belong to this container's
/// previous life.
pub const PREVIOUS_LIFE: Duration = LONGEST_RESTART_BACKOFF.saturating_add(RESTART_MARGIN);
/// How far ahead of our clock a file's time may be (a clock stepped back
/// by NTP between two lives).
const CLOCK_SLACK: Duration = Duration::from_secs(60);

/// Who is writing: the machine's boot, the pod and the container.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// `None` where the kernel does not say (then boots are not compared).
    pub boot_id: Option<String>,
    pub pod: String,
    /// The engine's container ([`sys::container_id`]): `HOSTNAME` alone
    /// is the host's name in every container with `--network host`, so a
    /// new container on an old volume would take the old one's files for
    /// its own. `None` outside a container (then it is not compared).
    pub container: Option<String>,
}

impl Identity {
    /// This process, in pod `pod`.
    pub fn current(pod: &str) -> Identity {
        Identity {
            boot_id: sys::boot_id(),
            pod: pod.to_string(),
            container: sys::container_id(),
        }
    }
}

/// What reading a state file found.
#[derive(Debug, Clone, PartialEq)]
pub enum Loaded {
    Missing,
    /// The kind's own fields (the envelope's too), and when it was written.
    Found(Map<String, Value>, SystemTime),
    /// Not used, and why. `ours` when it is a well-formed file of this kind
    /// that belongs to another life (older, another boot, another pod):
    /// it may be overwritten. A corrupt or foreign file is not ours.
    Ignored {
        reason: String,
        ours: bool,
    },
}

/// One state file: `STATE_DIR/<name>`, holding one `kind`.
#[derive(Debug, Clone)]
pub struct StateFile {
    dir: PathBuf,
    name: &'static str,
    kind: &'static str,
    identity: Identity,
}

impl StateFile {
    pub fn new(dir: &Path, name: &'static str, kind: &'static str, identity: Identity) -> StateFile {
        StateFile {
            dir: dir.to_path_buf(),
            name,
            kind,
            identity,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(self.name)
    }

    /// Reads the file, if it belongs to this container's previous life at
    /// `now`.
    pub fn load(&self, now: SystemTime) -> Loaded {
        let foreign = |reason: String| Loaded::Ignored { reason, ours: false };
        let mut text = String::new();
        match File::open(self.path()) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Missing,
            Err(e) => return foreign(format!("cannot be read: {e}")),
            Ok(f) => {
                if let Err(e) = f.take(MAX_BYTES as u64 + 1).read_to_string(&mut text) {
                    return foreign(format!("cannot be read: {e}"));
                }
            }
        }
        if text.len() > MAX_BYTES {
            return foreign(format!("is larger than {} KiB", MAX_BYTES >> 10));
        }
        let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&text) else {
            return foreign(format!("is not a JSON object: {:?}", preview(&text)));
        };
        let text_of = |key: &str| fields.get(key).and_then(Value::as_str);
        if text_of("format") != Some(FORMAT) {
            return foreign(format!("is not a {FORMAT} file: {:?}", preview(&text)));
        }
        if text_of("kind") != Some(self.kind) {
            return foreign(format!(
                "holds {:?}, not {:?}",
                text_of("kind").unwrap_or("nothing"),
                self.kind
            ));
        }
        let version = fields.get("version").and_then(Value::as_u64);
        if version != Some(VERSION) {
            return foreign(format!("is of format version {version:?}, this binary reads {VERSION}"));
        }
        let Some(written_ms) = fields.get("written_at_unix_ms").and_then(Value::as_u64) else {
            return foreign("has no written_at_unix_ms".to_string());
        };
        let written = SystemTime::UNIX_EPOCH + Duration::from_millis(written_ms);
        let another_life = |reason: String| Loaded::Ignored { reason, ours: true };
        if let (Some(ours), Some(theirs)) = (&self.identity.boot_id, text_of("boot_id"))
            && ours != theirs
        {
            return another_life(format!(
                "was written before the machine's last boot (boot_id {theirs}, now {ours})"
            ));
        }
        if let Some(theirs) = text_of("pod")
            && theirs != self.identity.pod
        {
            return another_life(format!(
                "was written by pod {theirs:?}, this is {:?}",
                self.identity.pod
            ));
        }
        if let (Some(ours), Some(theirs)) = (&self.identity.container, text_of("container"))
            && ours != theirs
        {
            return another_life(format!("was written by another container ({theirs}, this is {ours})"));
        }
        match now.duration_since(written) {
            Ok(age) if age > PREVIOUS_LIFE => {
                return another_life(format!(
                    "was written {} s ago: more than the longest restart back-off ({} s) plus {} s, so not by this container's previous life",
                    age.as_secs(),
                    LONGEST_RESTART_BACKOFF.as_secs(),
                    RESTART_MARGIN.as_secs()
                ));
            }
            Ok(_) => {}
            Err(ahead) if ahead.duration() > CLOCK_SLACK => {
                return another_life(format!("was written {} s in the future", ahead.duration().as_secs()));
            }
            Err(_) => {}
        }
        Loaded::Found(fields, written)
    }

    /// Writes the kind's `fields` (the text of a JSON object, `{}` for
    /// none) under the envelope, atomically: a reader sees the old file or
    /// the new one, never a part. `durable` also syncs the file and the
    /// directory, for a write that must survive the machine, not only the
    /// process (the page cache outlives a killed process). The text is
    /// written, not built as a `Value`: the healing figures are rewritten
    /// five times a second while a fault runs, and the image stays small.
    pub fn write(&self, fields: &str, now: SystemTime, durable: bool) -> std::io::Result<()> {
        let inner = fields
            .trim()
            .strip_prefix('{')
            .and_then(|f| f.strip_suffix('}'))
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "fields must be a JSON object"))?;
        let body = format!(
            "{{\"format\":\"{FORMAT}\",\"kind\":{},\"version\":{VERSION},\"boot_id\":{},\"pod\":{},\"container\":{},\"written_at_unix_ms\":{}{}{inner}}}",
            Value::from(self.kind),
            self.identity.boot_id.as_deref().map_or(Value::Null, Value::from),
            Value::from(self.identity.pod.as_str()),
            self.identity.container.as_deref().map_or(Value::Null, Value::from),
            unix_ms(now),
            if inner.trim().is_empty() { "" } else { "," },
        );
        if body.len() > MAX_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} would be {} bytes, over the {} KiB a state file may hold",
                    self.path().display(),
                    body.len(),
                    MAX_BYTES >> 10
                ),
            ));
        }
        let tmp = self.dir.join(format!(".{}.tmp", self.name));
        let mut file = File::create(&tmp)?;
        file.write_all(body.as_bytes())?;
        if durable {
            file.sync_all()?;
        }
        fs::rename(&tmp, self.path())?;
        if durable {
            // The rename is durable only once the directory is synced.
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Writes the file again as it is, dated `now`, if it is this
    /// container's previous life's (else leaves it): for a life that never
    /// serves (a crash loop's failing start) and must not let what the
    /// lives before it kept age past [`PREVIOUS_LIFE`]: a loop's back-offs
    /// (10, 20, 40 ... 300 s) outlast it after about seven starts. True if
    /// it was rewritten.
    pub fn refresh(&self, now: SystemTime) -> std::io::Result<bool> {
        let Loaded::Found(mut fields, _) = self.load(now) else {
            return Ok(false);
        };
        for envelope in [
            "format",
            "kind",
            "version",
            "boot_id",
            "pod",
            "container",
            "written_at_unix_ms",
        ] {
            fields.remove(envelope);
        }
        self.write(&Value::Object(fields).to_string(), now, false)?;
        Ok(true)
    }

    /// Removes the file; a missing one is no error.
    pub fn remove(&self) -> std::io::Result<()> {
        match fs::remove_file(self.path()) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Moves a file that is not ours out of the way (`<name>.ignored`, one
    /// kept), so that it is neither read again nor lost to an overwrite.
    pub fn set_aside(&self) -> std::io::Result<PathBuf> {
        let aside = self.dir.join(format!("{}.ignored", self.name));
        fs::rename(self.path(), &aside)?;
        Ok(aside)
    }
}

/// A time a state file holds (`value`, its field `key`, in Unix
/// milliseconds), if its writer could have recorded it: a writer records
/// its times at or before the moment it writes the file, so a time after
/// `written` (beyond the clock's slack) or more than `span` before it is
/// garbage, not a time to measure from: a crash "at" 1970 would put 56
/// years into a histogram that is kept for the pod's whole life. `Ok(None)`
/// when the field is absent or null; the error says why it is not used.
pub fn time_field(
    key: &str,
    value: Option<&Value>,
    written: SystemTime,
    span: Duration,
) -> Result<Option<SystemTime>, String> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let Some(ms) = value.as_u64() else {
        return Err(format!("has {key} {value}, not a time in Unix milliseconds"));
    };
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    if at > written + CLOCK_SLACK || at + span + CLOCK_SLACK < written {
        return Err(format!(
            "has {key} {ms}, {} s from the file's own time {}: not a time its writer recorded",
            match at.duration_since(written) {
                Ok(ahead) => format!("+{}", ahead.as_secs()),
                Err(behind) => format!("-{}", behind.duration().as_secs()),
            },
            unix_ms(written)
        ));
    }
    Ok(Some(at))
}

/// Makes sure `STATE_DIR` exists and is writable; the error says why not.
pub fn prepare_dir(state_dir: &Path) -> Result<(), String> {
    fs::create_dir_all(state_dir).map_err(|e| format!("cannot create STATE_DIR {}: {e}", state_dir.display()))?;
    let probe = state_dir.join(".write-test");
    File::create(&probe)
        .and_then(|_| fs::remove_file(&probe))
        .map_err(|e| format!("STATE_DIR {} is not writable: {e}", state_dir.display()))
}

/// The start of a file's text, for a log line.
fn preview(text: &str) -> String {
    text.chars().take(80).collect()
}

#[cfg(test)]
pub mod testing {
    //! A private directory and an identity for the unit tests of state
    //! files.

    use std::path::PathBuf;

    use super::Identity;

    /// Boot "boot-a", pod "pod-a".
    pub fn identity() -> Identity {
        Identity {
            boot_id: Some("boot-a".into()),
            pod: "pod-a".into(),
            container: Some("/containers/a/hostname".into()),
        }
    }

    pub fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chaos-backend-unit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{identity as me, temp_dir};
    use super::*;

    fn fields() -> &'static str {
        "{\"n\": 7}"
    }

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn round_trip_within_the_previous_life() {
        let dir = temp_dir("state-roundtrip");
        let file = StateFile::new(&dir, "x.json", "x", me());
        assert_eq!(file.load(at(1_000_000)), Loaded::Missing);
        file.write(fields(), at(1_000_000), true).unwrap();
        match file.load(at(1_000_000 + 359_000)) {
            Loaded::Found(f, written) => {
                assert_eq!((f["n"].clone(), written), (serde_json::json!(7), at(1_000_000)));
                assert_eq!(f["pod"], "pod-a");
            }
            other => panic!("{other:?}"),
        }
        assert!(!dir.join(".x.json.tmp").exists(), "the temporary file was renamed");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn another_life_is_ours_but_ignored_with_its_reason() {
        let dir = temp_dir("state-life");
        let file = StateFile::new(&dir, "x.json", "x", me());
        file.write(fields(), at(1_000_000), false).unwrap();
        let reason = |loaded: Loaded| match loaded {
            Loaded::Ignored { reason, ours: true } => reason,
            other => panic!("{other:?}"),
        };
        let old = reason(file.load(at(1_000_000 + 361_000)));
        assert!(old.contains("361 s ago") && old.contains("300 s"), "{old}");
        let ahead = reason(file.load(at(1_000_000 - 61_000)));
        assert!(ahead.contains("in the future"), "{ahead}");
        let rebooted = StateFile::new(
            &dir,
            "x.json",
            "x",
            Identity {
                boot_id: Some("boot-b".into()),
                ..me()
            },
        );
        assert!(reason(rebooted.load(at(1_000_000))).contains("before the machine's last boot"));
        let other_pod = StateFile::new(
            &dir,
            "x.json",
            "x",
            Identity {
                pod: "pod-b".into(),
                ..me()
            },
        );
        assert!(reason(other_pod.load(at(1_000_000))).contains("pod \"pod-a\""));
        // Two containers on the host's network share its name, not their
        // hostname files.
        let other_container = StateFile::new(
            &dir,
            "x.json",
            "x",
            Identity {
                container: Some("/containers/b/hostname".into()),
                ..me()
            },
        );
        assert!(reason(other_container.load(at(1_000_000))).contains("another container (/containers/a/hostname"));
        // Outside a container, containers are not compared.
        let no_container = StateFile::new(
            &dir,
            "x.json",
            "x",
            Identity {
                container: None,
                ..me()
            },
        );
        assert!(matches!(no_container.load(at(1_000_000)), Loaded::Found(..)));
        // Where the kernel gives no boot id, boots are not compared.
        let unknown_boot = StateFile::new(&dir, "x.json", "x", Identity { boot_id: None, ..me() });
        assert!(matches!(unknown_boot.load(at(1_000_000)), Loaded::Found(..)));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_foreign_and_oversized_files_are_not_ours() {
        let dir = temp_dir("state-foreign");
        let file = StateFile::new(&dir, "x.json", "x", me());
        let not_ours = |content: &str| {
            fs::write(file.path(), content).unwrap();
            match file.load(at(1_000_000)) {
                Loaded::Ignored { reason, ours: false } => reason,
                other => panic!("{content:?}: {other:?}"),
            }
        };
        assert!(not_ours("{\"format\": \"chaos-b").contains("not a JSON object"));
        assert!(not_ours("[1, 2]").contains("not a JSON object"));
        assert!(not_ours("{\"hello\": 1}").contains("not a chaos-backend-state file"));
        let other_kind =
            format!("{{\"format\":\"{FORMAT}\",\"kind\":\"y\",\"version\":1,\"written_at_unix_ms\":1000000}}");
        assert!(not_ours(&other_kind).contains("holds \"y\", not \"x\""));
        let future = format!("{{\"format\":\"{FORMAT}\",\"kind\":\"x\",\"version\":2,\"written_at_unix_ms\":1000000}}");
        assert!(not_ours(&future).contains("version Some(2)"));
        let big = format!("{{\"format\":\"{FORMAT}\",\"pad\":\"{}\"}}", "a".repeat(MAX_BYTES));
        assert!(not_ours(&big).contains("larger than 64 KiB"));
        let aside = file.set_aside().unwrap();
        assert!(aside.ends_with("x.json.ignored") && aside.exists() && !file.path().exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_write_over_the_bound_is_refused_and_the_old_file_stays() {
        let dir = temp_dir("state-bound");
        let file = StateFile::new(&dir, "x.json", "x", me());
        file.write(fields(), at(1_000_000), false).unwrap();
        let big = format!("{{\"pad\": \"{}\"}}", "a".repeat(MAX_BYTES));
        let err = file.write(&big, at(1_000_000), false).unwrap_err();
        assert!(file.write("[1]", at(1_000_000), false).is_err(), "not an object");
        assert!(err.to_string().contains("over the 64 KiB"), "{err}");
        assert!(matches!(file.load(at(1_000_000)), Loaded::Found(f, _) if f["n"] == 7));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unwritable_state_dir_is_explained() {
        let err = prepare_dir(Path::new("/proc/chaos-backend-cannot-exist")).unwrap_err();
        assert!(err.contains("/proc/chaos-backend-cannot-exist"), "{err}");
    }
}
