//! Guardrails for chaos actions: at most `MAX_CONCURRENT_CHAOS` at once, and
//! `CHAOS_COOLDOWN_SECONDS` between two accepted ones.
//!
//! Check and claim happen under one lock, so of many simultaneous requests
//! exactly the allowed number gets a [`Permit`]. A permit frees its slot when
//! dropped, wherever the action ends (a spin thread, a handler, a panic).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Why an action was refused, and when it may be tried again.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub reason: RejectReason,
    /// Whole seconds to wait, never 0: the `Retry-After` header.
    pub retry_after_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RejectReason {
    Concurrency,
    Cooldown,
}

impl Rejected {
    pub fn message(&self, max_concurrent: usize, cooldown: Duration) -> String {
        match self.reason {
            RejectReason::Concurrency => format!(
                "{max_concurrent} chaos action(s) already active (MAX_CONCURRENT_CHAOS={max_concurrent}); retry in {} s",
                self.retry_after_secs
            ),
            RejectReason::Cooldown => format!(
                "chaos cooldown of {} s (CHAOS_COOLDOWN_SECONDS) has not passed; retry in {} s",
                cooldown.as_secs(),
                self.retry_after_secs
            ),
        }
    }
}

#[derive(Debug)]
struct Slots {
    /// When each active action is expected to end (it may end earlier);
    /// `None` for one that lasts until it is released (a leak).
    active: Vec<(u64, Option<Instant>)>,
    last_accepted: Option<Instant>,
    next_id: u64,
}

/// The shared guard; cheap to clone.
#[derive(Debug, Clone)]
pub struct Guard {
    max_concurrent: usize,
    cooldown: Duration,
    state: Arc<Mutex<Slots>>,
}

/// A claimed slot; dropping it ends the action for the guard.
#[derive(Debug)]
pub struct Permit {
    id: u64,
    state: Arc<Mutex<Slots>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.active.retain(|(id, _)| *id != self.id);
    }
}

impl Guard {
    pub fn new(max_concurrent: usize, cooldown: Duration) -> Guard {
        Guard {
            max_concurrent,
            cooldown,
            state: Arc::new(Mutex::new(Slots {
                active: Vec::new(),
                last_accepted: None,
                next_id: 0,
            })),
        }
    }

    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    pub fn cooldown(&self) -> Duration {
        self.cooldown
    }

    /// Claims a slot for an action expected to last `expected` (`None`:
    /// until it is released), or says why not.
    pub fn try_acquire(&self, now: Instant, expected: Option<Duration>) -> Result<Permit, Rejected> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.active.len() >= self.max_concurrent {
            // Only actions that end by themselves say when a slot frees; a
            // leak that stays frees it when released, at a time nobody knows.
            let soonest = state.active.iter().filter_map(|(_, end)| *end).min();
            let wait = soonest.map_or(UNKNOWN_END_RETRY, |end| end.saturating_duration_since(now));
            return Err(Rejected {
                reason: RejectReason::Concurrency,
                retry_after_secs: whole_seconds_at_least_one(wait),
            });
        }
        if let Some(last) = state.last_accepted {
            let since = now.saturating_duration_since(last);
            if since < self.cooldown {
                return Err(Rejected {
                    reason: RejectReason::Cooldown,
                    retry_after_secs: whole_seconds_at_least_one(self.cooldown - since),
                });
            }
        }
        let id = state.next_id;
        state.next_id += 1;
        state.active.push((id, expected.and_then(|e| now.checked_add(e))));
        state.last_accepted = Some(now);
        Ok(Permit {
            id,
            state: Arc::clone(&self.state),
        })
    }

    /// Number of actions holding a permit now.
    #[cfg(test)]
    pub fn active(&self) -> usize {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).active.len()
    }
}

/// The `Retry-After` while every slot is held by something that lasts until
/// it is released.
const UNKNOWN_END_RETRY: Duration = Duration::from_secs(60);

/// Rounds up to whole seconds, and never says 0 (a client told "retry in 0 s"
/// would spin).
fn whole_seconds_at_least_one(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_limit_then_release() {
        let guard = Guard::new(2, Duration::ZERO);
        let t0 = Instant::now();
        let a = guard.try_acquire(t0, Some(Duration::from_secs(10))).unwrap();
        let _b = guard.try_acquire(t0, Some(Duration::from_secs(3))).unwrap();
        let rejected = guard.try_acquire(t0, Some(Duration::from_secs(1))).unwrap_err();
        assert_eq!(rejected.reason, RejectReason::Concurrency);
        assert_eq!(rejected.retry_after_secs, 3, "soonest active action ends in 3 s");
        drop(a);
        assert_eq!(guard.active(), 1);
        assert!(guard.try_acquire(t0, Some(Duration::from_secs(1))).is_ok());
    }

    #[test]
    fn an_action_without_an_end_says_retry_in_a_minute() {
        let guard = Guard::new(2, Duration::ZERO);
        let t0 = Instant::now();
        let _leak = guard.try_acquire(t0, None).unwrap();
        let _other = guard.try_acquire(t0, None).unwrap();
        let rejected = guard.try_acquire(t0, Some(Duration::from_secs(1))).unwrap_err();
        assert_eq!(rejected.reason, RejectReason::Concurrency);
        assert_eq!(rejected.retry_after_secs, 60);
    }

    #[test]
    fn cooldown_counts_from_last_accept() {
        let guard = Guard::new(5, Duration::from_secs(60));
        let t0 = Instant::now();
        drop(guard.try_acquire(t0, Some(Duration::ZERO)).unwrap());
        let r = guard
            .try_acquire(t0 + Duration::from_millis(100), Some(Duration::ZERO))
            .unwrap_err();
        assert_eq!(r.reason, RejectReason::Cooldown);
        assert_eq!(r.retry_after_secs, 60, "59.9 s rounds up to 60");
        let r = guard
            .try_acquire(t0 + Duration::from_secs(59), Some(Duration::ZERO))
            .unwrap_err();
        assert_eq!(r.retry_after_secs, 1);
        assert!(
            guard
                .try_acquire(t0 + Duration::from_secs(60), Some(Duration::ZERO))
                .is_ok()
        );
    }

    #[test]
    fn retry_after_is_never_zero() {
        assert_eq!(whole_seconds_at_least_one(Duration::ZERO), 1);
        assert_eq!(whole_seconds_at_least_one(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds_at_least_one(Duration::from_millis(1001)), 2);
    }

    #[test]
    fn exactly_the_limit_wins_a_race() {
        let guard = Guard::new(3, Duration::ZERO);
        let now = Instant::now();
        let permits: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..50)
                .map(|_| s.spawn(|| guard.try_acquire(now, Some(Duration::from_secs(5))).ok()))
                .collect();
            handles.into_iter().filter_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(permits.len(), 3);
    }
}
