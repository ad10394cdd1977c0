//! The healing figures of readiness, from the 200/503 transitions of
//! /ready: detection (from a chaos action being accepted to the first 503
//! served), degraded time (from that 503 to the next 200, which the first version of
//! this service called "recovery": `readiness_failure_to_recovery_seconds`), and recovery from
//! a fault's end (from the moment its cause was gone to the next 200:
//! `fault_end_to_recovery_seconds`).
//!
//! They are measured at the moments /ready is *served*, because that is when
//! the kubelet (or the chaos generator) sees the change. Evaluating the
//! checks for a scrape changes no timer. Crash to start-up is measured from
//! the crash marker (`chaos::crash_marker`); a death (a crash, an OOM kill,
//! a liveness restart) is a fault's end like any other, handed in at
//! start-up.

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
    /// First 200 after a 503, `after` the time since that first 503;
    /// `fault_end`, when the degradation outlived a fault, the time since
    /// that fault's end.
    Recovered {
        after: Duration,
        fault_end: Option<FaultEnd>,
    },
    /// The first 200 of this process, after a fault that ended with the
    /// previous one's death (a crash, an OOM kill, a liveness restart).
    ReadyAfterDeath {
        fault_end: FaultEnd,
    },
}

/// Recovery from one fault's end: which fault (its label) and how long
/// from its end to the 200.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultEnd {
    pub fault: &'static str,
    pub after: Duration,
}

#[derive(Debug, Default)]
struct Served {
    last_served_ready: Option<bool>,
    degraded_at: Option<Instant>,
    /// When the chaos action we wait to see detected was accepted.
    armed_at: Option<Instant>,
    /// The latest fault's end that no 200 has been served after yet.
    ended: Option<(&'static str, Instant)>,
    /// `ended` is the previous life's death, handed in at start-up: the
    /// process was down, so whatever this life's first 503 says (its
    /// warm-up), the next 200 is the recovery from it.
    ended_by_death: bool,
    /// The current degraded stretch failed for a reason a fault can cause
    /// at least once. A stretch that was only a warm-up
    /// (`STARTUP_DELAY_SECONDS`, a slow start) or a stop is no recovery
    /// from a fault that ended meanwhile: an errors fault that ended during
    /// a warm-up read as 2.8 s of recovery from it.
    chaos_reason_seen: bool,
    /// The last flip back to 200 that no fault's end was charged to: a
    /// fault whose end is told a moment after the 200 it allowed (its
    /// timer thread ran late) is charged to it.
    unclaimed_recovery: Option<Instant>,
}

/// How much earlier than a fault's recorded end the 200 it allowed may be
/// served and still be charged to it (as 0 s): far more than the skew
/// between a fault's own clock and its recorded end (milliseconds), far
/// less than the time between two faults a client can start.
const END_SKEW: Duration = Duration::from_millis(250);

/// The served-state machine behind the detection and recovery timers.
#[derive(Debug, Default)]
pub struct Tracker {
    state: Mutex<Served>,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Served> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A chaos action was accepted at `now`. It starts a detection timer
    /// unless /ready already fails (then nothing new can be detected).
    pub fn chaos_accepted(&self, now: Instant) {
        let mut s = self.lock();
        if s.last_served_ready != Some(false) {
            s.armed_at = Some(now);
        }
    }

    /// A fault's cause was gone at `at` (its time ran out, it was stopped or
    /// released, or the process died). The next 200 served closes it: a
    /// recovery from its end. If a 200 was already served after `at` with
    /// nothing charged to it (the end was told late), that one closes it
    /// now, and the recovery is returned.
    ///
    /// A 200 up to [`END_SKEW`] *before* `at` closes it too, as a recovery
    /// of 0 s: the cause was gone a moment before the end was recorded (a
    /// CPU load's threads stop on their own clock, a leak's pages are
    /// unmapped before its clean-up returns), and /ready was served in
    /// between. Without it that recovery was dropped (the next 200 finds
    /// nothing degraded), one time in a few.
    pub fn fault_ended(&self, fault: &'static str, at: Instant) -> Option<FaultEnd> {
        self.end(fault, at, false)
    }

    /// The previous life died at `at` with this fault (a crash, an OOM
    /// kill, a stop): called at start-up, before /ready is served. This
    /// life's first 200 closes it, even if a warm-up came first.
    pub fn died(&self, fault: &'static str, at: Instant) {
        self.end(fault, at, true);
    }

    fn end(&self, fault: &'static str, at: Instant, death: bool) -> Option<FaultEnd> {
        let mut s = self.lock();
        if s.last_served_ready == Some(true)
            && let Some(recovered) = s.unclaimed_recovery.filter(|r| *r + END_SKEW >= at)
        {
            s.unclaimed_recovery = None;
            return Some(FaultEnd {
                fault,
                after: recovered.saturating_duration_since(at),
            });
        }
        if s.ended.is_none_or(|(_, previous)| previous <= at) {
            s.ended = Some((fault, at));
            s.ended_by_death = death;
        }
        None
    }

    /// /ready was served at `now` with these failing checks. `chaos_active`
    /// says whether a chaos action still runs: a 200 served after every action
    /// has ended, with no 503 in between, means that action degraded nothing,
    /// and its timer is dropped rather than charged to some later 503. A
    /// 200 likewise closes a fault's end: served while nothing was degraded,
    /// there was nothing to recover from.
    pub fn served(&self, now: Instant, reasons: &[Reason], chaos_active: bool) -> Transition {
        let mut s = self.lock();
        let ready = reasons.is_empty();
        let previous = s.last_served_ready.replace(ready);
        let from_chaos = reasons.iter().any(Reason::may_come_from_chaos);
        if !ready {
            if previous == Some(false) {
                s.chaos_reason_seen |= from_chaos;
                return Transition::Unchanged;
            }
            s.chaos_reason_seen = from_chaos;
            s.degraded_at = Some(now);
            s.unclaimed_recovery = None;
            let detection = if from_chaos {
                s.armed_at.take().map(|t| now.saturating_duration_since(t))
            } else {
                None
            };
            return Transition::Degraded { detection };
        }
        if !chaos_active {
            s.armed_at = None;
        }
        let by_death = std::mem::take(&mut s.ended_by_death);
        let degraded_by_chaos = previous == Some(false) && std::mem::take(&mut s.chaos_reason_seen);
        let fault_end = s
            .ended
            .take()
            .filter(|_| by_death || degraded_by_chaos || previous.is_none())
            .map(|(fault, at)| FaultEnd {
                fault,
                after: now.saturating_duration_since(at),
            });
        match (previous, s.degraded_at.take()) {
            (Some(false), Some(since)) => {
                s.unclaimed_recovery = (fault_end.is_none() && degraded_by_chaos).then_some(now);
                Transition::Recovered {
                    after: now.saturating_duration_since(since),
                    fault_end,
                }
            }
            (None, _) => fault_end.map_or(Transition::Unchanged, |fault_end| Transition::ReadyAfterDeath {
                fault_end,
            }),
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
                after: Duration::from_secs(2),
                fault_end: None
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
                after: Duration::from_secs(2),
                fault_end: None
            }
        );
        assert_eq!(
            t.served(t0 + Duration::from_secs(3), &[Reason::CpuStress], true),
            Transition::Degraded { detection: None }
        );
    }

    #[test]
    fn recovery_is_timed_from_the_fault_end_too() {
        let t = Tracker::default();
        let t0 = Instant::now();
        t.served(t0, &[], false);
        t.chaos_accepted(t0);
        t.served(t0 + Duration::from_millis(10), &[Reason::Forced], true);
        // A 60 s fault: degraded for 60 s, recovered 300 ms after its end.
        assert_eq!(t.fault_ended("readiness", t0 + Duration::from_secs(60)), None);
        assert_eq!(
            t.served(t0 + Duration::from_millis(60_300), &[], false),
            Transition::Recovered {
                after: Duration::from_millis(60_290),
                fault_end: Some(FaultEnd {
                    fault: "readiness",
                    after: Duration::from_millis(300)
                })
            }
        );
    }

    #[test]
    fn an_end_told_after_the_200_it_allowed_is_charged_to_it() {
        let t = Tracker::default();
        let t0 = Instant::now();
        t.served(t0, &[Reason::Forced], true);
        let flip = t.served(t0 + Duration::from_millis(1_050), &[], false);
        assert!(
            matches!(flip, Transition::Recovered { fault_end: None, .. }),
            "{flip:?}"
        );
        // The fault's timer thread ran 80 ms late: its end is still 1 s.
        assert_eq!(
            t.fault_ended("readiness", t0 + Duration::from_secs(1)),
            Some(FaultEnd {
                fault: "readiness",
                after: Duration::from_millis(50)
            })
        );
        assert_eq!(t.fault_ended("cpu", t0 + Duration::from_secs(1)), None, "charged once");
    }

    #[test]
    fn a_200_a_moment_before_the_end_is_recorded_is_a_recovery_of_0_s() {
        let t = Tracker::default();
        let t0 = Instant::now();
        t.served(t0, &[Reason::CpuStress], true);
        let flip = t.served(t0 + Duration::from_millis(995), &[], true);
        assert!(
            matches!(flip, Transition::Recovered { fault_end: None, .. }),
            "{flip:?}"
        );
        assert_eq!(
            t.fault_ended("cpu", t0 + Duration::from_secs(1)),
            Some(FaultEnd {
                fault: "cpu",
                after: Duration::ZERO
            })
        );
        // A recovery well before an end is not that end's.
        t.served(t0 + Duration::from_secs(2), &[Reason::CpuStress], true);
        t.served(t0 + Duration::from_secs(3), &[], true);
        assert_eq!(t.fault_ended("cpu", t0 + Duration::from_secs(4)), None);
    }

    #[test]
    fn an_end_with_nothing_to_recover_from_is_dropped() {
        let t = Tracker::default();
        let t0 = Instant::now();
        t.served(t0, &[], true);
        assert_eq!(t.fault_ended("cpu", t0 + Duration::from_secs(1)), None);
        assert_eq!(t.served(t0 + Duration::from_secs(2), &[], false), Transition::Unchanged);
        t.served(t0 + Duration::from_secs(600), &[Reason::CpuStress], false);
        assert_eq!(
            t.served(t0 + Duration::from_secs(601), &[], false),
            Transition::Recovered {
                after: Duration::from_secs(1),
                fault_end: None
            },
            "not charged to the end ten minutes earlier"
        );
    }

    #[test]
    fn a_residue_that_outlives_its_fault_is_charged_to_its_end() {
        // A latency fault ends before /ready first fails (the slow answers
        // still fill the window): the recovery counts from its end.
        let t = Tracker::default();
        let t0 = Instant::now();
        t.served(t0, &[], true);
        t.fault_ended("latency", t0 + Duration::from_secs(1));
        let slow = [Reason::Latency {
            p95: Duration::from_secs(1),
            max: Duration::from_millis(500),
        }];
        t.served(t0 + Duration::from_millis(1_100), &slow, false);
        let r = t.served(t0 + Duration::from_secs(31), &[], false);
        assert_eq!(
            r,
            Transition::Recovered {
                after: Duration::from_millis(29_900),
                fault_end: Some(FaultEnd {
                    fault: "latency",
                    after: Duration::from_secs(30)
                })
            }
        );
    }

    /// An errors fault cannot fail /ready: ending during a warm-up
    /// (`STARTUP_DELAY_SECONDS`), it is not what the next 200 recovered
    /// from. A death is, whatever the next life's warm-up.
    #[test]
    fn an_end_during_a_warm_up_alone_is_no_recovery_unless_it_was_a_death() {
        let t = Tracker::default();
        let t0 = Instant::now();
        t.served(t0, &[Reason::Starting], true);
        t.fault_ended("errors", t0 + Duration::from_secs(1));
        assert_eq!(
            t.served(t0 + Duration::from_secs(4), &[], false),
            Transition::Recovered {
                after: Duration::from_secs(4),
                fault_end: None
            }
        );
        assert_eq!(
            t.fault_ended("errors", t0 + Duration::from_secs(4)),
            None,
            "nothing left unclaimed"
        );
        let t = Tracker::default();
        t.died("crash", t0);
        t.served(t0 + Duration::from_millis(10), &[Reason::Starting], false);
        assert_eq!(
            t.served(t0 + Duration::from_secs(4), &[], false),
            Transition::Recovered {
                after: Duration::from_millis(3_990),
                fault_end: Some(FaultEnd {
                    fault: "crash",
                    after: Duration::from_secs(4)
                })
            }
        );
        // A warm-up, then a fault's own 503 in the same stretch: its end counts.
        let t = Tracker::default();
        t.served(t0, &[Reason::Starting], true);
        t.served(t0 + Duration::from_secs(1), &[Reason::Starting, Reason::Forced], true);
        t.fault_ended("readiness", t0 + Duration::from_secs(2));
        let r = t.served(t0 + Duration::from_secs(5), &[], false);
        assert!(matches!(r, Transition::Recovered { fault_end: Some(_), .. }), "{r:?}");
    }

    #[test]
    fn a_death_handed_in_at_start_up_is_closed_by_the_first_200() {
        let t = Tracker::default();
        let t0 = Instant::now();
        t.fault_ended("crash", t0);
        t.fault_ended("memory", t0 + Duration::from_millis(5));
        assert_eq!(
            t.served(t0 + Duration::from_millis(400), &[], false),
            Transition::ReadyAfterDeath {
                fault_end: FaultEnd {
                    fault: "memory",
                    after: Duration::from_millis(395)
                }
            },
            "the latest end wins"
        );
        assert_eq!(t.served(t0 + Duration::from_secs(1), &[], false), Transition::Unchanged);
    }
}
