//! The healing figures of readiness: detection (from a chaos action being
//! accepted to the first 503 served by /ready) and recovery (from that 503
//! to the next 200), from the 200/503 transitions of /ready.
//!
//! They are measured at the moments /ready is *served*, because that is when
//! the kubelet (or the chaos generator) sees the change. Evaluating the
//! checks for a scrape changes no timer. Crash to start-up, the third
//! figure, is measured from the crash marker (`chaos::crash_marker`).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::observe::readiness::Reason;

/// What serving one /ready changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Unchanged,
    /// First 503 after a 200 (or after start-up); `detection` is the time
    /// since the chaos action that caused it, when one did.
    Degraded {
        detection: Option<Duration>,
    },
    /// First 200 after a 503, `after` the time since that first 503.
    Recovered {
        after: Duration,
    },
}

#[derive(Debug, Default)]
struct Served {
    last_served_ready: Option<bool>,
    degraded_at: Option<Instant>,
    /// When the chaos action we wait to see detected was accepted.
    armed_at: Option<Instant>,
}

/// The served-state machine behind the detection and recovery timers.
#[derive(Debug, Default)]
pub struct Tracker {
    state: Mutex<Served>,
}

impl Tracker {
    /// A chaos action was accepted at `now`. It starts a detection timer
    /// unless /ready already fails (then nothing new can be detected).
    pub fn chaos_accepted(&self, now: Instant) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.last_served_ready != Some(false) {
            s.armed_at = Some(now);
        }
    }

    /// /ready was served at `now` with these failing checks. `chaos_active`
    /// says whether a chaos action still runs: a 200 served after every action
    /// has ended, with no 503 in between, means that action degraded nothing,
    /// and its timer is dropped rather than charged to some later 503.
    pub fn served(&self, now: Instant, reasons: &[Reason], chaos_active: bool) -> Transition {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let ready = reasons.is_empty();
        let previous = s.last_served_ready.replace(ready);
        if !ready {
            if previous == Some(false) {
                return Transition::Unchanged;
            }
            s.degraded_at = Some(now);
            let detection = if reasons.iter().any(Reason::may_come_from_chaos) {
                s.armed_at.take().map(|t| now.saturating_duration_since(t))
            } else {
                None
            };
            return Transition::Degraded { detection };
        }
        if !chaos_active {
            s.armed_at = None;
        }
        match (previous, s.degraded_at.take()) {
            (Some(false), Some(since)) => Transition::Recovered {
                after: now.saturating_duration_since(since),
            },
            _ => Transition::Unchanged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_then_recovery_each_once() {
        let t = Tracker::default();
        let t0 = Instant::now();
        assert_eq!(t.served(t0, &[], false), Transition::Unchanged);
        t.chaos_accepted(t0);
        // Still ready while the action runs: the timer stays armed.
        assert_eq!(
            t.served(t0 + Duration::from_millis(100), &[], true),
            Transition::Unchanged
        );
        let busy = [Reason::CpuStress];
        assert_eq!(
            t.served(t0 + Duration::from_millis(300), &busy, true),
            Transition::Degraded {
                detection: Some(Duration::from_millis(300))
            }
        );
        assert_eq!(
            t.served(t0 + Duration::from_millis(500), &busy, true),
            Transition::Unchanged
        );
        assert_eq!(
            t.served(t0 + Duration::from_millis(2300), &[], false),
            Transition::Recovered {
                after: Duration::from_secs(2)
            }
        );
        assert_eq!(
            t.served(t0 + Duration::from_millis(2400), &[], false),
            Transition::Unchanged
        );
    }

    #[test]
    fn an_action_that_degraded_nothing_is_not_charged_to_a_later_failure() {
        let t = Tracker::default();
        let t0 = Instant::now();
        t.chaos_accepted(t0);
        assert_eq!(t.served(t0 + Duration::from_secs(1), &[], false), Transition::Unchanged);
        let later = [Reason::Memory {
            rss_bytes: 1,
            max_bytes: 0,
        }];
        assert_eq!(
            t.served(t0 + Duration::from_secs(600), &later, false),
            Transition::Degraded { detection: None }
        );
    }

    #[test]
    fn shutting_down_is_not_a_detection() {
        let t = Tracker::default();
        let t0 = Instant::now();
        t.served(t0, &[], false);
        t.chaos_accepted(t0);
        assert_eq!(
            t.served(t0 + Duration::from_secs(1), &[Reason::ShuttingDown], true),
            Transition::Degraded { detection: None }
        );
    }

    #[test]
    fn chaos_while_degraded_arms_nothing() {
        let t = Tracker::default();
        let t0 = Instant::now();
        t.served(t0, &[Reason::CpuStress], true);
        t.chaos_accepted(t0 + Duration::from_secs(1));
        assert_eq!(
            t.served(t0 + Duration::from_secs(2), &[], false),
            Transition::Recovered {
                after: Duration::from_secs(2)
            }
        );
        assert_eq!(
            t.served(t0 + Duration::from_secs(3), &[Reason::CpuStress], true),
            Transition::Degraded { detection: None }
        );
    }
}
