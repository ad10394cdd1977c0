//! Timed faults that change how the service answers rather than what it
//! consumes: a failing or hanging liveness probe, a forced readiness
//! failure, extra latency on `GET /`, errors on `GET /`.
//!
//! A setting is in force while `now < ends_at`, so the probes never see a
//! fault outlive its time; the registry entry's timer thread ends the fault
//! (its slot, its listing) and a stop lifts the setting at once.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::chaos::registry::{Cancel, Ended, FaultKind, Ticket};

/// How a liveness fault fails /health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LivenessMode {
    /// /health answers 500.
    Fail,
    /// /health answers nothing until the fault ends.
    Hang,
}

/// One active fault: its setting, when it ends, and its registry id.
#[derive(Debug)]
struct Active {
    setting: Setting,
    ends_at: Instant,
    id: u64,
    /// The registry's cancel handle of the fault: releases held answers.
    cancel: Cancel,
    /// `GET /` requests an errors fault has seen so far (`Faults::next_error`).
    seen: u64,
}

/// What an errors fault does to the `GET /` requests it picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorMode {
    /// Answers this status code with a JSON error body.
    Status(u16),
    /// Resets the connection (TCP RST), no answer.
    Reset,
    /// Closes the connection cleanly (FIN), no answer.
    Close,
    /// No answer until the fault ends, then a clean close.
    Stall,
}

impl ErrorMode {
    /// The `mode` parameter and metric label.
    pub const LABELS: [&'static str; 4] = ["status", "reset", "close", "stall"];

    pub fn label(self) -> &'static str {
        match self {
            ErrorMode::Status(_) => "status",
            ErrorMode::Reset => "reset",
            ErrorMode::Close => "close",
            ErrorMode::Stall => "stall",
        }
    }
}

/// An errors fault: `percent` of `GET /` requests get `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorFault {
    pub percent: u8,
    pub mode: ErrorMode,
}

/// Whether request `i` (0-based, in the order the fault sees them) of an
/// errors fault at `percent` is faulted: error diffusion, so that any
/// `100` consecutive requests hold exactly `percent` faulted ones, evenly
/// spaced (20: the 5th, 10th, 15th ...), and any `n` hold `n * percent /
/// 100` rounded down or up.
pub fn faulted(i: u64, percent: u8) -> bool {
    let p = u64::from(percent);
    (i + 1) * p / 100 > i * p / 100
}

/// What a fault changes, and how.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Setting {
    Liveness(LivenessMode),
    Readiness,
    Latency(Duration),
    Errors(ErrorFault),
}

impl Setting {
    /// The registry's kind of this fault.
    pub fn kind(self) -> FaultKind {
        match self {
            Setting::Liveness(_) => FaultKind::Liveness,
            Setting::Readiness => FaultKind::Readiness,
            Setting::Latency(_) => FaultKind::Latency,
            Setting::Errors(_) => FaultKind::Errors,
        }
    }

    pub fn detail(self) -> String {
        match self {
            Setting::Liveness(LivenessMode::Fail) => "mode=fail".to_string(),
            Setting::Liveness(LivenessMode::Hang) => "mode=hang".to_string(),
            Setting::Readiness => "forced".to_string(),
            Setting::Latency(d) => format!("ms={}", d.as_millis()),
            Setting::Errors(e) => match e.mode {
                ErrorMode::Status(code) => format!("percent={} mode=status code={code}", e.percent),
                mode => format!("percent={} mode={}", e.percent, mode.label()),
            },
        }
    }
}

/// The settings in force. The registry owns the faults (their slots, their
/// timers, their end); this is only what the probes and `GET /` read.
#[derive(Debug, Default)]
pub struct Faults {
    active: Mutex<Vec<Active>>,
}

impl Faults {
    /// Puts `setting` in force for `duration` from `now`, as fault `id`.
    pub fn start(&self, id: u64, setting: Setting, now: Instant, duration: Duration, cancel: Cancel) {
        self.active.lock().unwrap_or_else(PoisonError::into_inner).push(Active {
            setting,
            ends_at: now + duration,
            id,
            cancel,
            seen: 0,
        });
    }

    /// Lifts fault `id`; whether it was in force.
    pub fn remove(&self, id: u64) -> bool {
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        let before = active.len();
        active.retain(|a| a.id != id);
        active.len() < before
    }

    /// The newest matching setting still in force at `now`.
    fn find<T>(&self, now: Instant, pick: impl Fn(&Active) -> Option<T>) -> Option<T> {
        let active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        active.iter().rev().filter(|a| now < a.ends_at).find_map(pick)
    }

    /// The liveness fault in force, when it ends, and its cancel handle.
    pub fn liveness(&self, now: Instant) -> Option<(LivenessMode, Instant, Cancel)> {
        self.find(now, |a| match a.setting {
            Setting::Liveness(mode) => Some((mode, a.ends_at, a.cancel.clone())),
            _ => None,
        })
    }

    pub fn readiness_forced(&self, now: Instant) -> bool {
        self.find(now, |a| (a.setting == Setting::Readiness).then_some(()))
            .is_some()
    }

    /// The extra latency of `GET /` in force, and its cancel handle.
    pub fn latency(&self, now: Instant) -> Option<(Duration, Cancel)> {
        self.find(now, |a| match a.setting {
            Setting::Latency(d) => Some((d, a.cancel.clone())),
            _ => None,
        })
    }
}

impl Faults {
    /// Counts one `GET /` against the errors fault in force at `now`, and
    /// says whether it is faulted: the fault, when it ends, and its cancel
    /// handle. The count is taken under the lock, so concurrent requests
    /// each get their own place in the fault's sequence (`faulted`): any
    /// 100 consecutive `GET /` the service handles hold exactly `percent`
    /// faulted ones, in the order workers take them.
    pub fn next_error(&self, now: Instant) -> Option<(ErrorFault, Instant, Cancel)> {
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        let a = active
            .iter_mut()
            .rev()
            .find(|a| now < a.ends_at && matches!(a.setting, Setting::Errors(_)))?;
        let Setting::Errors(fault) = a.setting else {
            return None;
        };
        let i = a.seen;
        a.seen += 1;
        faulted(i, fault.percent).then(|| (fault, a.ends_at, a.cancel.clone()))
    }
}

/// Starts the thread that ends fault `ticket` at `deadline`, unless it is
/// stopped first (then it just returns; the stopper cleans up).
pub fn spawn_timer(ticket: Ticket, kind: FaultKind, deadline: Instant) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("fault-{}", kind.label()))
        .spawn(move || {
            if !ticket.cancel.sleep_until(deadline) {
                let cancel = ticket.cancel.clone();
                // Out of force at its deadline, however late this thread ran.
                ticket.finish_at(Ended::OnTime, Some(deadline));
                // The answers this fault holds go out now too: a hold
                // longer than the fault (`ms` above its `duration`) ends
                // with the fault, as with a stop.
                cancel.cancel();
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_hundred_consecutive_requests_hold_exactly_percent_faulted() {
        for percent in 1..=100u8 {
            let picks: Vec<bool> = (0..1_000).map(|i| faulted(i, percent)).collect();
            assert_eq!(picks.iter().filter(|f| **f).count(), 10 * usize::from(percent));
            for window in picks.windows(100) {
                assert_eq!(
                    window.iter().filter(|f| **f).count(),
                    usize::from(percent),
                    "{percent}%"
                );
            }
        }
        assert!(faulted(4, 20) && !faulted(3, 20) && faulted(9, 20), "evenly spaced");
    }

    #[test]
    fn an_errors_fault_counts_only_while_in_force() {
        let f = Faults::default();
        let t0 = Instant::now();
        let fault = ErrorFault {
            percent: 50,
            mode: ErrorMode::Reset,
        };
        f.start(3, Setting::Errors(fault), t0, Duration::from_secs(5), Cancel::default());
        let hits = (0..10).filter(|_| f.next_error(t0).is_some()).count();
        assert_eq!(hits, 5);
        assert!(f.next_error(t0 + Duration::from_secs(5)).is_none(), "over by time");
        assert_eq!(Setting::Errors(fault).detail(), "percent=50 mode=reset");
    }

    #[test]
    fn settings_end_by_time_and_by_removal() {
        let f = Faults::default();
        let t0 = Instant::now();
        let c = Cancel::default();
        f.start(
            1,
            Setting::Liveness(LivenessMode::Hang),
            t0,
            Duration::from_secs(10),
            c.clone(),
        );
        f.start(
            2,
            Setting::Latency(Duration::from_millis(700)),
            t0,
            Duration::from_secs(5),
            c,
        );
        assert_eq!(f.liveness(t0).map(|l| l.0), Some(LivenessMode::Hang));
        assert_eq!(
            f.latency(t0 + Duration::from_secs(4)).map(|l| l.0),
            Some(Duration::from_millis(700))
        );
        assert_eq!(
            f.latency(t0 + Duration::from_secs(5)).map(|l| l.0),
            None,
            "over by time"
        );
        assert!(!f.readiness_forced(t0));
        assert!(f.remove(1));
        assert!(!f.remove(1), "nothing left to remove");
        assert!(f.liveness(t0).is_none());
    }
}
