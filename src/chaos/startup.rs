//! Start-up faults: a crash loop (`POST /fault/crashloop`: the next N
//! starts fail) and a slow start (`POST /fault/slowstart`, or
//! `SLOW_START_SECONDS` for every start: /health and /ready answer 503 for
//! S seconds). Both are planned in one life and carried out by the next
//! ones, so they are kept in `STATE_DIR` (`observe::state_file`, which
//! outlives a container's restarts in its pod, not the pod).
//!
//! [`at_start`] runs in `main` before anything binds a port. A crash-loop
//! start counts itself in the file first and exits with
//! [`CRASHLOOP_EXIT_CODE`] only once the file says so: the count is exact
//! across restarts, and a start that cannot update the file does not fail
//! (it would otherwise fail for ever): it serves and logs why. The same
//! rule holds for a slow start. A crash loop's last start removes the file
//! and hands its counts to the healing figures.

use std::path::Path;
use std::time::SystemTime;

use serde_json::{Map, Value};

use crate::chaos::crash_marker;
use crate::observe::events::unix_ms;
use crate::observe::kept;
use crate::observe::state_file::{Identity, Loaded, PREVIOUS_LIFE, StateFile, time_field};

/// The exit code of a crash-loop start: EX_TEMPFAIL of sysexits.h, a
/// failure that goes away by itself. No other end of the process has it
/// (`POST /crash?mode=exit` refuses it), so `lastState.terminated.exitCode`
/// tells a crash-loop start from a deliberate crash.
pub const CRASHLOOP_EXIT_CODE: u8 = 75;
/// The most starts one crash loop or slow start may cover: 20 failing
/// starts are past the kubelet's 300 s back-off cap for several restarts.
pub const MAX_STARTS: u64 = 20;
/// The longest slow start `POST /fault/slowstart` may ask for.
pub const MAX_SLOW_START_SECONDS: u64 = 3600;
/// The `fault` label of a recovery from a crash loop.
pub const FAULT_LABEL: &str = "crashloop";

const LOOP_FILE: &str = "crashloop.json";
const LOOP_KIND: &str = "crashloop";
const SLOW_FILE: &str = "slowstart.json";
const SLOW_KIND: &str = "slowstart";

fn loop_file(dir: &Path, identity: Identity) -> StateFile {
    StateFile::new(dir, LOOP_FILE, LOOP_KIND, identity)
}

fn slow_file(dir: &Path, identity: Identity) -> StateFile {
    StateFile::new(dir, SLOW_FILE, SLOW_KIND, identity)
}

/// A crash loop that ended at this start, for the healing figures.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopEnded {
    /// Starts that failed (each exited with [`CRASHLOOP_EXIT_CODE`]).
    pub failed_starts: u64,
    pub first_failed_at: Option<SystemTime>,
    pub last_failed_at: Option<SystemTime>,
    /// Starts it still had when it was ended early (`CRASHLOOP_CANCEL`, or
    /// a file that could not be updated); 0 when it ran its course.
    pub left: u64,
}

/// A slow start of this life: /health and /ready answer 503 this long.
#[derive(Debug, Clone, PartialEq)]
pub struct Hold {
    pub seconds: u64,
    /// What asked for it, as the 503 and the log say.
    pub source: String,
}

/// What this start does.
#[derive(Debug, Clone, PartialEq)]
pub enum AtStart {
    /// A crash-loop start: log `message` and exit with
    /// [`CRASHLOOP_EXIT_CODE`].
    Fail { message: String },
    /// Serve, after recording these.
    Serve(Startup),
}

/// What a serving start carries from the files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Startup {
    pub loop_ended: Option<LoopEnded>,
    pub hold: Option<Hold>,
}

/// Plans a crash loop: the next `starts` starts fail. Durable: the crash
/// that follows must not outrun it.
pub fn plan_crash_loop(dir: &Path, identity: Identity, starts: u64, now: SystemTime) -> std::io::Result<()> {
    let fields = format!(
        "{{\"planned\":{starts},\"remaining\":{starts},\"failed\":0,\"requested_at_unix_ms\":{},\"first_failed_at_unix_ms\":null,\"last_failed_at_unix_ms\":null}}",
        unix_ms(now)
    );
    loop_file(dir, identity).write(&fields, now, true)
}

/// Plans a slow start of `seconds` for the next `starts` starts (replacing
/// one planned before).
pub fn plan_slow_start(
    dir: &Path,
    identity: Identity,
    seconds: u64,
    starts: u64,
    now: SystemTime,
) -> std::io::Result<()> {
    let fields = format!("{{\"seconds\":{seconds},\"planned\":{starts},\"remaining\":{starts}}}");
    slow_file(dir, identity).write(&fields, now, true)
}

/// Removes a planned slow start; whether there was one.
pub fn cancel_slow_start(dir: &Path, identity: Identity) -> std::io::Result<bool> {
    let file = slow_file(dir, identity);
    let planned = file.path().exists();
    file.remove().map(|()| planned)
}

/// Reads `file` if it belongs to this container's previous life and its
/// counts are ones this binary writes (`fits`: else why not); a file of
/// another life or with counts that do not fit is removed, a foreign one
/// set aside, each logged.
fn load(
    file: &StateFile,
    what: &str,
    now: SystemTime,
    fits: impl Fn(&Map<String, Value>) -> Result<(), String>,
) -> Option<(Map<String, Value>, SystemTime)> {
    let loaded = match file.load(now) {
        Loaded::Found(fields, written) => match fits(&fields) {
            Ok(()) => return Some((fields, written)),
            // A count no request could have planned (remaining far past
            // MAX_STARTS): following it would fail starts, or hold them,
            // for ever.
            Err(reason) => Loaded::Ignored { reason, ours: true },
        },
        other => other,
    };
    match loaded {
        Loaded::Missing | Loaded::Found(..) => None,
        Loaded::Ignored { reason, ours } => {
            let path = file.path();
            log::warn!("{what} in {} ignored: it {reason}", path.display());
            let done = if ours {
                file.remove().map(|()| "removed".to_string())
            } else {
                file.set_aside().map(|p| format!("moved to {}", p.display()))
            };
            match done {
                Ok(done) => log::warn!("{} {done}", path.display()),
                Err(e) => log::warn!("cannot remove {}: {e}", path.display()),
            }
            None
        }
    }
}

fn count(fields: &Map<String, Value>, key: &str) -> u64 {
    fields.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Whether `planned`, `remaining` (and `failed`) are counts a request
/// could have planned: at most [`MAX_STARTS`], and no more left or failed
/// than planned.
fn counts_fit(fields: &Map<String, Value>, extra: Option<(&str, u64)>) -> Result<(), String> {
    let (planned, remaining) = (count(fields, "planned"), count(fields, "remaining"));
    let failed = count(fields, "failed");
    if planned > MAX_STARTS || remaining > planned || failed > planned {
        return Err(format!(
            "holds planned {planned}, remaining {remaining}, failed {failed}: not counts of at most {MAX_STARTS} starts that a request planned"
        ));
    }
    match extra {
        Some((key, max)) if count(fields, key) > max => {
            Err(format!("holds {key} {}, more than {max}", count(fields, key)))
        }
        _ => Ok(()),
    }
}

/// A time the loop's file holds: a loop's starts are at most
/// [`MAX_STARTS`] back-offs apart, so a time further back than that from
/// the file's own time (or after it) is garbage, logged and not used.
fn time(fields: &Map<String, Value>, key: &str, written: SystemTime) -> Option<SystemTime> {
    let span = PREVIOUS_LIFE.saturating_mul(MAX_STARTS as u32 + 1);
    time_field(key, fields.get(key), written, span).unwrap_or_else(|why| {
        log::warn!("the crash loop record {why}: not used");
        None
    })
}

fn ms_or_null(t: Option<SystemTime>) -> String {
    t.map_or("null".to_string(), |t| unix_ms(t).to_string())
}

/// Decides what this start does, from the files in `dir`: fail (a crash
/// loop has starts left), or serve, with a loop that just ended and a slow
/// start to hold. `cancel` is `CRASHLOOP_CANCEL`; `slow_start` is
/// `SLOW_START_SECONDS` (0: none).
pub fn at_start(dir: &Path, identity: Identity, cancel: bool, slow_start: u64, now: SystemTime) -> AtStart {
    let file = loop_file(dir, identity.clone());
    let mut startup = Startup::default();
    if let Some((fields, written)) = load(&file, "the crash loop record", now, |f| counts_fit(f, None)) {
        let (planned, remaining, failed) = (
            count(&fields, "planned"),
            count(&fields, "remaining"),
            count(&fields, "failed"),
        );
        let first = time(&fields, "first_failed_at_unix_ms", written);
        let last = time(&fields, "last_failed_at_unix_ms", written);
        let mut ended = LoopEnded {
            failed_starts: failed,
            first_failed_at: first,
            last_failed_at: last,
            left: remaining,
        };
        if remaining > 0 && cancel {
            log::warn!(
                "crash loop ended by CRASHLOOP_CANCEL=true after {failed} failing start(s), {remaining} of {planned} left: serving"
            );
        } else if remaining > 0 {
            let this = failed + 1;
            let fields = format!(
                "{{\"planned\":{planned},\"remaining\":{},\"failed\":{this},\"requested_at_unix_ms\":{},\"first_failed_at_unix_ms\":{},\"last_failed_at_unix_ms\":{}}}",
                remaining - 1,
                ms_or_null(time(&fields, "requested_at_unix_ms", written)),
                unix_ms(first.unwrap_or(now)),
                unix_ms(now)
            );
            match file.write(&fields, now, false) {
                Ok(()) => {
                    // The crash that began the loop is not timed to a
                    // start-up: the loop is (from its first failing start
                    // to the start that serves).
                    if let Err(e) = crash_marker::take_marker(dir, identity.clone(), now) {
                        log::warn!("{e}");
                    }
                    // What the lives before the loop kept must outlive its
                    // back-offs: each failing start dates it anew.
                    let healing = StateFile::new(dir, kept::FILE, kept::KIND, identity);
                    if let Err(e) = healing.refresh(now) {
                        log::warn!("cannot keep {} through the crash loop: {e}", healing.path().display());
                    }
                    return AtStart::Fail {
                        message: format!(
                            "crash-loop start {this} of {planned} (POST /fault/crashloop): exiting with {CRASHLOOP_EXIT_CODE} before listening; {} more to fail (CRASHLOOP_CANCEL=true ends the loop)",
                            remaining - 1
                        ),
                    };
                }
                Err(e) => log::error!(
                    "crash-loop start {this} of {planned} not carried out: cannot count it in {} ({e}); serving, so that the loop cannot go on for ever",
                    file.path().display()
                ),
            }
        } else {
            ended.left = 0;
            log::info!("crash loop over: {failed} start(s) failed; this one serves");
        }
        if let Err(e) = file.remove() {
            log::warn!(
                "cannot remove {} ({e}): the next start will read the loop again",
                file.path().display()
            );
        }
        startup.loop_ended = Some(ended);
    }
    startup.hold = (slow_start > 0).then(|| Hold {
        seconds: slow_start,
        source: "SLOW_START_SECONDS".to_string(),
    });
    let file = slow_file(dir, identity);
    let slow_fits = |f: &Map<String, Value>| counts_fit(f, Some(("seconds", MAX_SLOW_START_SECONDS)));
    if let Some((fields, _)) = load(&file, "the slow start record", now, slow_fits) {
        let (seconds, planned, remaining) = (
            count(&fields, "seconds"),
            count(&fields, "planned"),
            count(&fields, "remaining"),
        );
        let this = planned.saturating_sub(remaining) + 1;
        let counted = if remaining <= 1 {
            file.remove()
        } else {
            let fields = format!(
                "{{\"seconds\":{seconds},\"planned\":{planned},\"remaining\":{}}}",
                remaining - 1
            );
            file.write(&fields, now, false)
        };
        match counted {
            Ok(()) if remaining > 0 && seconds > startup.hold.as_ref().map_or(0, |h| h.seconds) => {
                startup.hold = Some(Hold {
                    seconds,
                    source: format!("POST /fault/slowstart, start {this} of {planned}"),
                });
            }
            Ok(()) => {}
            Err(e) => log::error!(
                "slow start {this} of {planned} not carried out: cannot count it in {} ({e}), so that it cannot go on for ever",
                file.path().display()
            ),
        }
    }
    if let Some(hold) = &startup.hold {
        log::info!(
            "slow start: /health and /ready answer 503 for {} s ({})",
            hold.seconds,
            hold.source
        );
    }
    AtStart::Serve(startup)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::state_file::testing::{identity as me, temp_dir};
    use std::time::{Duration, UNIX_EPOCH};

    fn serve(at: AtStart) -> Startup {
        match at {
            AtStart::Serve(s) => s,
            AtStart::Fail { message } => panic!("failed: {message}"),
        }
    }

    #[test]
    fn a_loop_of_three_fails_three_starts_then_serves_with_its_counts() {
        let dir = temp_dir("loop3");
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        plan_crash_loop(&dir, me(), 3, t0).unwrap();
        for (i, after) in [1u64, 11, 31].into_iter().enumerate() {
            match at_start(&dir, me(), false, 0, t0 + Duration::from_secs(after)) {
                AtStart::Fail { message } => {
                    assert!(
                        message.starts_with(&format!("crash-loop start {} of 3", i + 1)),
                        "{message}"
                    )
                }
                other => panic!("start {i}: {other:?}"),
            }
        }
        let s = serve(at_start(&dir, me(), false, 0, t0 + Duration::from_secs(71)));
        let ended = s.loop_ended.unwrap();
        assert_eq!((ended.failed_starts, ended.left), (3, 0));
        assert_eq!(ended.first_failed_at, Some(t0 + Duration::from_secs(1)));
        assert_eq!(ended.last_failed_at, Some(t0 + Duration::from_secs(31)));
        assert_eq!(s.hold, None);
        // Counted once: the next start knows nothing of it.
        assert_eq!(
            serve(at_start(&dir, me(), false, 0, t0 + Duration::from_secs(72))),
            Startup::default()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A loop of eight starts takes 10 + 20 + 40 + 80 + 160 + 300 + 300 s
    /// of back-off, more than a state file's 360 s: the healing figures the
    /// lives before it kept are dated anew by each failing start, so the
    /// start that serves still finds them.
    #[test]
    fn the_healing_figures_outlive_a_long_loop() {
        let dir = temp_dir("loop-long");
        let t0 = SystemTime::now() - Duration::from_secs(2000);
        let healing = StateFile::new(&dir, kept::FILE, kept::KIND, me());
        healing.write("{\"recoveries\":7}", t0, false).unwrap();
        plan_crash_loop(&dir, me(), 8, t0).unwrap();
        let mut at = t0;
        for gap in [0u64, 10, 20, 40, 80, 160, 300, 300] {
            at += Duration::from_secs(gap + 1);
            assert!(matches!(at_start(&dir, me(), false, 0, at), AtStart::Fail { .. }));
        }
        at += Duration::from_secs(300);
        serve(at_start(&dir, me(), false, 0, at));
        match healing.load(at) {
            Loaded::Found(fields, _) => assert_eq!(fields["recoveries"], 7),
            other => panic!("the healing figures were lost: {other:?}"),
        }
    }

    #[test]
    fn cancel_ends_a_loop_and_keeps_what_it_counted() {
        let dir = temp_dir("loop-cancel");
        let t0 = SystemTime::now();
        plan_crash_loop(&dir, me(), 5, t0).unwrap();
        assert!(matches!(at_start(&dir, me(), false, 0, t0), AtStart::Fail { .. }));
        let ended = serve(at_start(&dir, me(), true, 0, t0)).loop_ended.unwrap();
        assert_eq!((ended.failed_starts, ended.left), (1, 4));
        assert_eq!(serve(at_start(&dir, me(), false, 0, t0)).loop_ended, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A start that cannot count itself does not fail: the loop would never
    /// end. (A directory where the writer's temporary file goes stands in
    /// for a full or read-only STATE_DIR.)
    #[test]
    fn a_start_that_cannot_count_itself_serves() {
        let dir = temp_dir("loop-stuck");
        let t0 = SystemTime::now();
        plan_crash_loop(&dir, me(), 2, t0).unwrap();
        std::fs::create_dir_all(dir.join(format!(".{LOOP_FILE}.tmp"))).unwrap();
        let ended = serve(at_start(&dir, me(), false, 0, t0)).loop_ended.unwrap();
        assert_eq!((ended.failed_starts, ended.left), (0, 2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_slow_start_holds_the_next_starts_then_the_variable_alone() {
        let dir = temp_dir("slow");
        let t0 = SystemTime::now();
        plan_slow_start(&dir, me(), 12, 2, t0).unwrap();
        let first = serve(at_start(&dir, me(), false, 3, t0)).hold.unwrap();
        assert_eq!(
            (first.seconds, first.source.as_str()),
            (12, "POST /fault/slowstart, start 1 of 2")
        );
        let second = serve(at_start(&dir, me(), false, 0, t0)).hold.unwrap();
        assert_eq!(
            (second.seconds, second.source.as_str()),
            (12, "POST /fault/slowstart, start 2 of 2")
        );
        let third = serve(at_start(&dir, me(), false, 3, t0)).hold.unwrap();
        assert_eq!((third.seconds, third.source.as_str()), (3, "SLOW_START_SECONDS"));
        assert_eq!(serve(at_start(&dir, me(), false, 0, t0)).hold, None);
        plan_slow_start(&dir, me(), 5, 3, t0).unwrap();
        assert!(cancel_slow_start(&dir, me()).unwrap());
        assert!(!cancel_slow_start(&dir, me()).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A record of this container's envelope whose counts no request
    /// could have planned is removed and logged, not followed: a remaining
    /// count of 10^15 failed every start for ever (each failing start dates
    /// the file anew, so it never ages out), and a hold of 10^12 s held
    /// every start. A first failing start "at" 1970 is not measured from.
    #[test]
    fn a_record_with_counts_or_times_no_request_planned_is_not_followed() {
        let dir = temp_dir("loop-garbage");
        let t0 = SystemTime::now();
        let loop_file = loop_file(&dir, me());
        for fields in [
            "{\"planned\":2,\"remaining\":1000000000000000,\"failed\":0}",
            "{\"planned\":21,\"remaining\":21,\"failed\":0}",
            "{\"planned\":2,\"remaining\":1,\"failed\":9}",
        ] {
            loop_file.write(fields, t0, false).unwrap();
            assert_eq!(
                serve(at_start(&dir, me(), false, 0, t0)),
                Startup::default(),
                "{fields}"
            );
            assert!(!loop_file.path().exists(), "{fields}: removed");
        }
        let slow = slow_file(&dir, me());
        slow.write("{\"seconds\":1000000000000,\"planned\":1,\"remaining\":1}", t0, false)
            .unwrap();
        assert_eq!(serve(at_start(&dir, me(), false, 0, t0)).hold, None);
        slow.write("{\"seconds\":5,\"planned\":1,\"remaining\":99}", t0, false)
            .unwrap();
        assert_eq!(serve(at_start(&dir, me(), false, 0, t0)).hold, None);
        loop_file
            .write(
                "{\"planned\":1,\"remaining\":0,\"failed\":1,\"first_failed_at_unix_ms\":0,\"last_failed_at_unix_ms\":0}",
                t0,
                false,
            )
            .unwrap();
        let ended = serve(at_start(&dir, me(), false, 0, t0)).loop_ended.unwrap();
        assert_eq!(
            (ended.failed_starts, ended.first_failed_at, ended.last_failed_at),
            (1, None, None)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A loop planned by another pod, or long ago, is not this one's.
    #[test]
    fn a_loop_of_another_life_is_removed_not_followed() {
        let dir = temp_dir("loop-stale");
        let t0 = SystemTime::now();
        plan_crash_loop(&dir, me(), 3, t0).unwrap();
        let later = t0 + Duration::from_secs(400);
        assert_eq!(serve(at_start(&dir, me(), false, 0, later)), Startup::default());
        assert!(!dir.join(LOOP_FILE).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
