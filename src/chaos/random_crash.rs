//! The random crash (`RANDOM_CRASH_ENABLED=true`): the process crashes at
//! times drawn from a seeded exponential schedule, each crash announced
//! ahead (a log line with its time, and an entry in `GET /chaos`), through
//! the crash path and marker of `POST /crash` (mode `abort`).
//!
//! The schedule is a list of gaps: gap `k` is the `k`-th draw of
//! `RANDOM_CRASH_SEED`'s stream, exponential with mean
//! `RANDOM_CRASH_MEAN_SECONDS`. Life by life it continues: a life waits
//! the gap of the next crash, counted from its own start, and `STATE_DIR`
//! keeps how many crashes happened (and the seed, so that an unset seed
//! stays the same across restarts). Two runs with the same seed and mean
//! wait the same gaps, whatever the restarts take; a new pod (a new
//! `STATE_DIR`) begins at the first gap again.
//!
//! It takes no guardrail slot (it lasts the whole life; it would block
//! every other fault) and is not a fault of the registry; `POST
//! /chaos/stop` and SIGTERM end it (this life's only: the next life plans
//! the same crash again), and a crash it cannot claim (one is already in
//! progress, or the stop began) does not happen.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::chaos::crash::{self, CrashMode};
use crate::chaos::registry::{Cancel, CrashRefused, Registry};
use crate::observe::events::{Events, rfc3339_utc, unix_ms};
use crate::observe::state_file::{Identity, Loaded, StateFile};

const FILE: &str = "random-crash.json";
const KIND: &str = "random-crash";

/// The seeded schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub seed: u64,
    pub mean: Duration,
}

/// SplitMix64: a tiny, well-mixed generator whose `k`-th output needs no
/// state but `k`, so any gap of the schedule is computed directly.
fn splitmix64(seed: u64, k: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(k.wrapping_add(1)));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `ln(u)` for `u` in (0, 1], in plain arithmetic: `u = m * 2^e` with `m`
/// in [1, 2), and `ln(m) = 2 atanh(s)`, `s = (m - 1) / (m + 1)` at most 1/3,
/// summed until the terms vanish. glibc's `log` picks an implementation by
/// CPU (FMA, AVX, SSE2), and a gap rounded to the millisecond must not
/// depend on the machine; it is also four copies of code the image would
/// carry.
fn ln(u: f64) -> f64 {
    let bits = u.to_bits();
    let e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    let s = (m - 1.0) / (m + 1.0);
    let (s2, mut term, mut sum, mut n) = (s * s, s, 0.0, 1.0);
    while term.abs() > 1e-18 {
        sum += term / n;
        term *= s2;
        n += 2.0;
    }
    e as f64 * std::f64::consts::LN_2 + 2.0 * sum
}

impl Schedule {
    /// The wait before crash `k` (0 is the first), to the millisecond:
    /// `-mean * ln(u)` for `u` uniform in (0, 1] (53 bits: a normal number,
    /// at least 2^-53).
    pub fn gap(&self, k: u64) -> Duration {
        let u = ((splitmix64(self.seed, k) >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let secs = -self.mean.as_secs_f64() * ln(u);
        Duration::from_millis((secs * 1000.0).round() as u64)
    }
}

/// How often a life dates its schedule's file anew: well inside the 360 s
/// in which a state file belongs to the previous life.
const KEEP_FRESH: Duration = Duration::from_secs(60);

/// The crash this life waits for.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// How many random crashes happened before it in this pod.
    pub number: u64,
    pub schedule: Schedule,
    pub at: SystemTime,
}

impl Planned {
    /// What `GET /chaos` and the log say of it.
    pub fn detail(&self) -> String {
        format!(
            "random crash #{} at {} (RANDOM_CRASH_SEED={}, RANDOM_CRASH_MEAN_SECONDS={})",
            self.number + 1,
            rfc3339_utc(self.at),
            self.schedule.seed,
            self.schedule.mean.as_secs()
        )
    }
}

fn file(dir: &Path, identity: Identity) -> StateFile {
    StateFile::new(dir, FILE, KIND, identity)
}

/// The crash this life waits for: the next of the schedule kept in `dir`
/// when its seed and mean are these (`seed` None: the kept seed, else one
/// from the clock), else the first of a new one. `started` is this life's
/// start.
pub fn plan(dir: &Path, identity: Identity, seed: Option<u64>, mean: Duration, started: SystemTime) -> Planned {
    let kept = match file(dir, identity).load(started) {
        Loaded::Found(fields, _) => {
            let n = |k: &str| fields.get(k).and_then(serde_json::Value::as_u64);
            match (n("seed"), n("mean_ms"), n("crashes")) {
                (Some(s), Some(m), Some(c)) if m == mean.as_millis() as u64 => Some((s, c)),
                _ => None,
            }
        }
        Loaded::Missing => None,
        Loaded::Ignored { reason, .. } => {
            log::warn!("random crash schedule in STATE_DIR ignored: it {reason}; starting it again");
            None
        }
    };
    let (seed, number) = match (seed, kept) {
        (Some(seed), Some((s, c))) if s == seed => (seed, c),
        (Some(seed), _) => (seed, 0),
        (None, Some((s, c))) => (s, c),
        (None, None) => {
            // Within RANDOM_CRASH_SEED's bounds, so that it can be set.
            let seed = (unix_ms(SystemTime::now()) ^ u64::from(std::process::id()) << 20) & 0xFFFF_FFFF;
            log::warn!("RANDOM_CRASH_SEED is not set: the schedule's seed is {seed} (set it to repeat this run)");
            (seed, 0)
        }
    };
    let schedule = Schedule { seed, mean };
    Planned {
        number,
        schedule,
        at: started + schedule.gap(number),
    }
}

/// The planned crash of this life, and its timer.
pub struct RandomCrash {
    pub planned: Planned,
    cancel: Cancel,
    /// Why it was stopped, once it was.
    stopped: Mutex<Option<String>>,
}

impl RandomCrash {
    /// Announces `planned` and starts its timer thread, which crashes the
    /// process at its time (the crash claimed from `registry`, the marker
    /// written in `state_dir`) unless stopped first.
    pub fn start(
        planned: Planned,
        state_dir: PathBuf,
        identity: Identity,
        registry: Arc<Registry>,
        events: Arc<Events>,
    ) -> std::io::Result<Arc<RandomCrash>> {
        let now = SystemTime::now();
        let wait = planned.at.duration_since(now).unwrap_or(Duration::ZERO);
        log::warn!("{} planned: in {:.3} s", planned.detail(), wait.as_secs_f64());
        let timer = Arc::new(RandomCrash {
            planned,
            cancel: Cancel::default(),
            stopped: Mutex::new(None),
        });
        let this = Arc::clone(&timer);
        std::thread::Builder::new().name("random-crash".into()).spawn(move || {
            let p = &this.planned;
            let keep = |crashes: u64, durable: bool| {
                let kept = format!(
                    "{{\"seed\":{},\"mean_ms\":{},\"crashes\":{crashes}}}",
                    p.schedule.seed,
                    p.schedule.mean.as_millis(),
                );
                file(&state_dir, identity.clone()).write(&kept, SystemTime::now(), durable)
            };
            // The schedule is kept from the start of the life and dated
            // anew every KEEP_FRESH, also once stopped: a restart that is
            // not this crash (a stop, an OOM kill, a liveness restart),
            // however long the life lasted, continues it (before, only a
            // crash wrote the file, and a life of more than 360 s after
            // it, or an unset seed, began the schedule again).
            if let Err(e) = keep(p.number, false) {
                log::warn!(
                    "random crash schedule not kept in STATE_DIR ({e}): a restart before the crash begins it again"
                );
            }
            let crash_at = Instant::now() + wait;
            loop {
                let next = (Instant::now() + KEEP_FRESH).min(crash_at);
                if this.cancel.is_cancelled() {
                    std::thread::sleep(KEEP_FRESH);
                } else if !this.cancel.sleep_until(next) && Instant::now() >= crash_at {
                    break;
                }
                let _ = keep(p.number, false);
            }
            if let Err(e) = keep(p.number + 1, true) {
                log::warn!("random crash not counted in STATE_DIR ({e}): the next life waits the same gap again");
            }
            let cause = format!("random crash #{} (RANDOM_CRASH_SEED={})", p.number + 1, p.schedule.seed);
            if let Err(refused) = registry.claim_crash(&cause) {
                let why = match refused {
                    CrashRefused::InProgress(first) => first.mode,
                    CrashRefused::Closed(signal) => signal,
                };
                log::warn!("{cause} not carried out: a crash ({why}) or a stop came first");
                return;
            }
            crash::crash_now(&state_dir, identity, CrashMode::Abort, &cause, &events, |_| {})
        })?;
        Ok(timer)
    }

    /// Ends the timer of this life (`why`: what stopped it); whether it
    /// was still running.
    pub fn stop(&self, why: &str) -> bool {
        let mut stopped = self.stopped.lock().unwrap_or_else(PoisonError::into_inner);
        if stopped.is_some() {
            return false;
        }
        self.cancel.cancel();
        log::warn!(
            "{} stopped by {why}: no random crash in this life",
            self.planned.detail()
        );
        *stopped = Some(why.to_string());
        true
    }

    /// Whether it still waits to crash.
    pub fn pending(&self) -> bool {
        self.stopped.lock().unwrap_or_else(PoisonError::into_inner).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::state_file::testing::{identity as me, temp_dir};

    #[test]
    fn ln_is_the_logarithm() {
        for u in [1.0, 0.5, 0.999_999, 0.123_456, 1e-6, 2f64.powi(-53)] {
            assert!(
                (ln(u) - u.ln()).abs() <= 1e-12 * u.ln().abs().max(1.0),
                "{u}: {} {}",
                ln(u),
                u.ln()
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_gaps_and_their_mean_is_the_mean() {
        let s = Schedule {
            seed: 42,
            mean: Duration::from_secs(60),
        };
        let a: Vec<Duration> = (0..5).map(|k| s.gap(k)).collect();
        let b: Vec<Duration> = (0..5).map(|k| s.gap(k)).collect();
        assert_eq!(a, b);
        let other = Schedule { seed: 43, ..s };
        assert_ne!(a[0], other.gap(0));
        let n = 20_000;
        let mean = (0..n).map(|k| s.gap(k).as_secs_f64()).sum::<f64>() / n as f64;
        assert!((mean - 60.0).abs() < 2.0, "mean {mean}");
    }

    #[test]
    fn the_schedule_continues_from_state_dir_and_restarts_for_another_seed() {
        let dir = temp_dir("random-plan");
        let mean = Duration::from_secs(10);
        let t0 = SystemTime::now();
        let first = plan(&dir, me(), Some(7), mean, t0);
        assert_eq!(first.number, 0);
        assert_eq!(first.at, t0 + first.schedule.gap(0));
        file(&dir, me())
            .write("{\"seed\":7,\"mean_ms\":10000,\"crashes\":2}", t0, false)
            .unwrap();
        let third = plan(&dir, me(), Some(7), mean, t0);
        assert_eq!((third.number, third.at), (2, t0 + third.schedule.gap(2)));
        // An unset seed keeps the kept one; another seed or mean starts over.
        assert_eq!(plan(&dir, me(), None, mean, t0), third);
        assert_eq!(plan(&dir, me(), Some(8), mean, t0).number, 0);
        assert_eq!(plan(&dir, me(), Some(7), Duration::from_secs(11), t0).number, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
