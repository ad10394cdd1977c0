//! Readiness: which checks fail now, and the 200/503 transitions of /ready
//! that the healing timers measure.
//!
//! Detection and recovery are measured at the moments /ready is *served*,
//! because that is when the kubelet (or the chaos generator) sees the change.
//! Evaluating the checks for a scrape changes no timer.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::observe::latency::Summary;

/// What the checks look at, read at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Inputs {
    pub starting: bool,
    pub forced: bool,
    pub cpu_stress_active: bool,
    pub rss_bytes: u64,
    pub latency: Summary,
    pub shutting_down: bool,
}

/// The thresholds, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub fail_on_cpu_stress: bool,
    pub max_rss_bytes: u64,
    pub max_latency: Duration,
}

/// One failing check.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    Starting,
    Forced,
    CpuStress,
    Memory { rss_bytes: u64, max_bytes: u64 },
    Latency { p95: Duration, max: Duration },
    ShuttingDown,
}

impl Reason {
    /// The text shown in `reasons` of the 503 body and in events.
    pub fn text(&self) -> String {
        match self {
            Reason::Starting => "starting (STARTUP_DELAY_SECONDS)".to_string(),
            Reason::Forced => "forced by /fault/readiness".to_string(),
            Reason::CpuStress => "cpu stress active".to_string(),
            Reason::Memory { rss_bytes, max_bytes } => format!(
                "rss {:.1} MiB above MAX_MEMORY_MB_READY {} MiB",
                *rss_bytes as f64 / 1048576.0,
                max_bytes >> 20
            ),
            Reason::Latency { p95, max } => format!(
                "p95 latency {:.1} ms above MAX_LATENCY_MS {} ms",
                p95.as_secs_f64() * 1000.0,
                max.as_millis()
            ),
            Reason::ShuttingDown => "shutting down".to_string(),
        }
    }

    /// Whether a chaos action can be the cause (shutting down never is).
    fn may_come_from_chaos(&self) -> bool {
        !matches!(self, Reason::ShuttingDown | Reason::Starting)
    }
}

/// Every failing check, in a fixed order; empty means ready.
pub fn evaluate(inputs: &Inputs, limits: &Limits) -> Vec<Reason> {
    let mut reasons = Vec::new();
    if inputs.starting {
        reasons.push(Reason::Starting);
    }
    if inputs.forced {
        reasons.push(Reason::Forced);
    }
    if limits.fail_on_cpu_stress && inputs.cpu_stress_active {
        reasons.push(Reason::CpuStress);
    }
    if inputs.rss_bytes > limits.max_rss_bytes {
        reasons.push(Reason::Memory {
            rss_bytes: inputs.rss_bytes,
            max_bytes: limits.max_rss_bytes,
        });
    }
    if inputs.latency.p95_above_threshold {
        reasons.push(Reason::Latency {
            p95: inputs.latency.p95.unwrap_or(limits.max_latency),
            max: limits.max_latency,
        });
    }
    if inputs.shutting_down {
        reasons.push(Reason::ShuttingDown);
    }
    reasons
}

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

    const LIMITS: Limits = Limits {
        fail_on_cpu_stress: true,
        max_rss_bytes: 400 << 20,
        max_latency: Duration::from_millis(500),
    };

    fn inputs() -> Inputs {
        Inputs {
            starting: false,
            forced: false,
            cpu_stress_active: false,
            rss_bytes: 10 << 20,
            latency: Summary {
                samples: 0,
                p95: None,
                p95_above_threshold: false,
            },
            shutting_down: false,
        }
    }

    #[test]
    fn lists_every_failing_check() {
        assert!(evaluate(&inputs(), &LIMITS).is_empty());
        let all = Inputs {
            starting: false,
            forced: false,
            cpu_stress_active: true,
            rss_bytes: 500 << 20,
            latency: Summary {
                samples: 10,
                p95: Some(Duration::from_millis(800)),
                p95_above_threshold: true,
            },
            shutting_down: true,
        };
        let texts: Vec<String> = evaluate(&all, &LIMITS).iter().map(Reason::text).collect();
        assert_eq!(
            texts,
            [
                "cpu stress active",
                "rss 500.0 MiB above MAX_MEMORY_MB_READY 400 MiB",
                "p95 latency 800.0 ms above MAX_LATENCY_MS 500 ms",
                "shutting down"
            ]
        );
    }

    #[test]
    fn cpu_stress_can_be_ignored() {
        let limits = Limits {
            fail_on_cpu_stress: false,
            ..LIMITS
        };
        let i = Inputs {
            cpu_stress_active: true,
            ..inputs()
        };
        assert!(evaluate(&i, &limits).is_empty());
    }

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
