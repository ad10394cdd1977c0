//! Timed faults that change how the service answers rather than what it
//! consumes: a failing or hanging liveness probe, a forced readiness
//! failure, extra latency on `GET /`.
//!
//! A fault is active while `now < ends_at`, so nothing has to wake up for it
//! to end; a timer thread only emits CHAOS_FINISHED and frees the guardrail
//! slot. Ending a fault early drops its state at once.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::guard::Permit;

/// The faults, as the `fault` label and in `GET /chaos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Liveness,
    Readiness,
    Latency,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Liveness, Kind::Readiness, Kind::Latency];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Liveness => "liveness",
            Kind::Readiness => "readiness",
            Kind::Latency => "latency",
        }
    }
}

/// How a liveness fault fails /health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LivenessMode {
    /// /health answers 500.
    Fail,
    /// /health answers nothing until the fault ends.
    Hang,
}

/// One active fault: its setting, when it ends, and the slot it holds.
#[derive(Debug)]
struct Active {
    setting: Setting,
    ends_at: Instant,
    ends_wall: SystemTime,
    id: u64,
    _permit: Permit,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Setting {
    Liveness(LivenessMode),
    Readiness,
    Latency(Duration),
}

impl Setting {
    pub fn kind(self) -> Kind {
        match self {
            Setting::Liveness(_) => Kind::Liveness,
            Setting::Readiness => Kind::Readiness,
            Setting::Latency(_) => Kind::Latency,
        }
    }

    pub fn detail(self) -> String {
        match self {
            Setting::Liveness(LivenessMode::Fail) => "mode=fail".to_string(),
            Setting::Liveness(LivenessMode::Hang) => "mode=hang".to_string(),
            Setting::Readiness => "forced".to_string(),
            Setting::Latency(d) => format!("ms={}", d.as_millis()),
        }
    }
}

/// What `GET /chaos` shows of a fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub kind: Kind,
    pub detail: String,
    pub ends_at: SystemTime,
}

#[derive(Debug, Default)]
struct State {
    active: Vec<Active>,
    next_id: u64,
}

#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<State>,
}

impl Faults {
    /// Starts (or replaces) the fault of `setting`'s kind; returns its id,
    /// which the timer thread hands back to `expire`.
    pub fn start(&self, setting: Setting, now: Instant, duration: Duration, permit: Permit) -> u64 {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.active.retain(|a| a.setting.kind() != setting.kind());
        let id = s.next_id;
        s.next_id += 1;
        s.active.push(Active {
            setting,
            ends_at: now + duration,
            ends_wall: SystemTime::now() + duration,
            id,
            _permit: permit,
        });
        id
    }

    fn find<T>(&self, now: Instant, pick: impl Fn(&Active) -> Option<T>) -> Option<T> {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.active.iter().filter(|a| now < a.ends_at).find_map(pick)
    }

    /// The liveness fault in force, and when it ends.
    pub fn liveness(&self, now: Instant) -> Option<(LivenessMode, Instant)> {
        self.find(now, |a| match a.setting {
            Setting::Liveness(mode) => Some((mode, a.ends_at)),
            _ => None,
        })
    }

    pub fn readiness_forced(&self, now: Instant) -> bool {
        self.find(now, |a| (a.setting == Setting::Readiness).then_some(()))
            .is_some()
    }

    /// The extra latency of `GET /` in force.
    pub fn latency(&self, now: Instant) -> Option<Duration> {
        self.find(now, |a| match a.setting {
            Setting::Latency(d) => Some(d),
            _ => None,
        })
    }

    pub fn is_active(&self, kind: Kind, now: Instant) -> bool {
        self.find(now, |a| (a.setting.kind() == kind).then_some(())).is_some()
    }

    /// Ends the fault of `kind` now; whether one was active.
    pub fn end(&self, kind: Kind, now: Instant) -> bool {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let before = s.active.iter().filter(|a| now < a.ends_at).count();
        s.active.retain(|a| a.setting.kind() != kind);
        s.active.iter().filter(|a| now < a.ends_at).count() < before
    }

    /// Ends every fault now; the kinds that were active.
    pub fn end_all(&self, now: Instant) -> Vec<Kind> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let ended = s
            .active
            .iter()
            .filter(|a| now < a.ends_at)
            .map(|a| a.setting.kind())
            .collect();
        s.active.clear();
        ended
    }

    /// The timer of fault `id` ran out: drop it if it is still the current
    /// one. Returns whether it was (and so whether it ended on time).
    pub fn expire(&self, id: u64) -> bool {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let before = s.active.len();
        s.active.retain(|a| a.id != id);
        s.active.len() < before
    }

    pub fn list(&self, now: Instant) -> Vec<Listed> {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.active
            .iter()
            .filter(|a| now < a.ends_at)
            .map(|a| Listed {
                kind: a.setting.kind(),
                detail: a.setting.detail(),
                ends_at: a.ends_wall,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::Guard;

    fn permit(g: &Guard, now: Instant) -> Permit {
        g.try_acquire(now, Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn faults_end_by_time_by_request_and_free_their_slot() {
        let g = Guard::new(5, Duration::ZERO);
        let f = Faults::default();
        let t0 = Instant::now();
        f.start(
            Setting::Liveness(LivenessMode::Hang),
            t0,
            Duration::from_secs(10),
            permit(&g, t0),
        );
        let id = f.start(
            Setting::Latency(Duration::from_millis(700)),
            t0,
            Duration::from_secs(5),
            permit(&g, t0),
        );
        assert_eq!(f.liveness(t0).map(|l| l.0), Some(LivenessMode::Hang));
        assert_eq!(f.latency(t0 + Duration::from_secs(4)), Some(Duration::from_millis(700)));
        assert_eq!(f.latency(t0 + Duration::from_secs(5)), None, "over by time");
        assert!(!f.readiness_forced(t0));
        assert_eq!(g.active(), 2);
        assert!(f.expire(id));
        assert_eq!(g.active(), 1, "the expired fault's slot is free");
        assert!(f.end(Kind::Liveness, t0));
        assert!(!f.end(Kind::Liveness, t0), "nothing left to end");
        assert_eq!(g.active(), 0);
        assert!(f.list(t0).is_empty());
    }

    #[test]
    fn a_new_fault_of_the_same_kind_replaces_the_old_and_its_timer() {
        let g = Guard::new(5, Duration::ZERO);
        let f = Faults::default();
        let t0 = Instant::now();
        let old = f.start(Setting::Readiness, t0, Duration::from_secs(1), permit(&g, t0));
        f.start(Setting::Readiness, t0, Duration::from_secs(9), permit(&g, t0));
        assert!(!f.expire(old), "the old timer must not end the new fault");
        assert!(f.readiness_forced(t0 + Duration::from_secs(5)));
        assert_eq!(f.end_all(t0), vec![Kind::Readiness]);
    }
}
