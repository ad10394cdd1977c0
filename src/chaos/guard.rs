//! Guardrails for chaos actions: at most `MAX_CONCURRENT_CHAOS` at once, and
//! `CHAOS_COOLDOWN_SECONDS` between two accepted ones.
//!
//! Check and claim happen under one lock, so of many simultaneous requests
//! exactly the allowed number gets a [`Permit`]. A permit frees its slot when
//! dropped, wherever the action ends (a spin thread, a handler, a panic).
//!
//! A refusal's `Retry-After` is the earliest whole second at which the same
//! start would be accepted if nothing else changed: a slot free (the
//! planned end of the fault whose slot frees first) *and* the cooldown
//! over, whichever comes later. A fault frees its slot a few milliseconds
//! after its planned end, once its threads have stopped and its clean-up
//! has run; a start that finds only such overdue slots in its way is told
//! so ([`Rejected::overdue`]), and the registry waits for them (at most
//! [`SLOT_GRACE`]) instead of refusing.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Why an action was refused, and when it may be tried again.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub reason: RejectReason,
    /// Whole seconds to wait, never 0: the `Retry-After` header.
    pub retry_after_secs: u64,
    /// Only slots past their planned end stand in the way (and no
    /// cooldown): their faults are stopping and free them in moments.
    pub overdue: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RejectReason {
    /// Every slot is taken; `cooling` when the cooldown has not passed
    /// either.
    Concurrency {
        cooling: bool,
    },
    Cooldown,
}

impl Rejected {
    pub fn message(&self, max_concurrent: usize, cooldown: Duration) -> String {
        let retry = self.retry_after_secs;
        match self.reason {
            RejectReason::Concurrency { cooling } => format!(
                "{max_concurrent} chaos action(s) already active (MAX_CONCURRENT_CHAOS={max_concurrent}){}; retry in {retry} s",
                if cooling {
                    format!(
                        " and the chaos cooldown of {} s (CHAOS_COOLDOWN_SECONDS) has not passed",
                        cooldown.as_secs()
                    )
                } else {
                    String::new()
                }
            ),
            RejectReason::Cooldown => format!(
                "chaos cooldown of {} s (CHAOS_COOLDOWN_SECONDS) has not passed; retry in {retry} s",
                cooldown.as_secs()
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

impl Permit {
    /// The action now expects to end at `end` (`None`: when released).
    pub fn expect_end(&self, end: Option<Instant>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = state.active.iter_mut().find(|(id, _)| *id == self.id) {
            slot.1 = end;
        }
    }
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
    /// until it is released), or says why not and when to retry.
    pub fn try_acquire(&self, now: Instant, expected: Option<Duration>) -> Result<Permit, Rejected> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // Measured from the last accepted start; a request whose `now` was
        // read just before that start's (a race) is as late as it.
        let cooldown_left = state.last_accepted.map_or(Duration::ZERO, |last| {
            self.cooldown.saturating_sub(now.saturating_duration_since(last))
        });
        let cooling = !cooldown_left.is_zero();
        let cooldown_over = now + cooldown_left;
        let full = state.active.len() >= self.max_concurrent;
        if full || cooling {
            // The earliest instant both hold: enough slots free (each
            // action frees its slot at its planned end, or, lasting until
            // released, at a time nobody knows) and the cooldown over.
            let slots_free_at = full.then(|| nth_end(&state.active, state.active.len() + 1 - self.max_concurrent));
            let retry_at = match slots_free_at {
                Some(end) => end.map(|end| end.max(cooldown_over)),
                None => Some(cooldown_over),
            };
            let overdue = !cooling && matches!(slots_free_at, Some(Some(end)) if end <= now);
            let retry_after_secs = match retry_at {
                Some(at) => whole_seconds_at_least_one(at.saturating_duration_since(now)),
                None => whole_seconds_at_least_one(cooldown_over.saturating_duration_since(now))
                    .max(UNKNOWN_END_RETRY.as_secs()),
            };
            let reason = if full {
                RejectReason::Concurrency { cooling }
            } else {
                RejectReason::Cooldown
            };
            return Err(Rejected {
                reason,
                retry_after_secs,
                overdue,
            });
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

/// The `Retry-After` while a slot is held by something that lasts until it
/// is released (a leak without `hold`, a disk fill): nobody knows when that
/// is, so this is a polling interval, not a promise (or the cooldown's
/// remainder, if longer).
const UNKNOWN_END_RETRY: Duration = Duration::from_secs(60);

/// How long a start waits for slots held past their planned end: their
/// faults' threads see the deadline, stop, and are cleaned up first (1 to
/// 6 ms measured on an idle machine; this much on a very loaded one).
/// Without the wait, a client that waited exactly `Retry-After` would be
/// refused in those milliseconds, and with a margin added to `Retry-After`
/// instead, told one second too many whenever the time left was just
/// under a whole second.
pub const SLOT_GRACE: Duration = Duration::from_millis(500);

/// When the `n`th of these actions (1 = the first) has ended, by their
/// planned ends; `None` when fewer than `n` have a planned end. (A few
/// entries at most: a loop, not a sort, which would weigh on the image.)
fn nth_end(active: &[(u64, Option<Instant>)], n: usize) -> Option<Instant> {
    let mut after: Option<Instant> = None;
    let mut found = 0;
    while found < n {
        let next = active
            .iter()
            .filter_map(|(_, end)| *end)
            .filter(|end| after.is_none_or(|a| *end > a))
            .min()?;
        found += active.iter().filter(|(_, end)| *end == Some(next)).count();
        after = Some(next);
    }
    after
}

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
        assert_eq!(rejected.reason, RejectReason::Concurrency { cooling: false });
        assert_eq!(rejected.retry_after_secs, 3, "the soonest action ends in 3 s");
        assert!(!rejected.overdue);
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
        assert_eq!(rejected.reason, RejectReason::Concurrency { cooling: false });
        assert_eq!(rejected.retry_after_secs, 60);
        // A longer cooldown is still waited out first.
        let guard = Guard::new(1, Duration::from_secs(100));
        let _leak = guard.try_acquire(t0, None).unwrap();
        let rejected = guard.try_acquire(t0 + Duration::from_secs(1), None).unwrap_err();
        assert_eq!(rejected.retry_after_secs, 99);
    }

    /// The case: a 60 s cooldown and a 5 s fault. One second in,
    /// the slot frees in 4 s but the cooldown holds for 59; once the fault
    /// has ended, the cooldown alone: 53 at 7 s.
    #[test]
    fn retry_after_waits_for_both_the_slot_and_the_cooldown() {
        let guard = Guard::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        let fault = guard.try_acquire(t0, Some(Duration::from_secs(5))).unwrap();
        let r = guard.try_acquire(t0 + Duration::from_secs(1), None).unwrap_err();
        assert_eq!(r.reason, RejectReason::Concurrency { cooling: true });
        assert_eq!(r.retry_after_secs, 59);
        assert!(r.message(1, Duration::from_secs(60)).contains("cooldown of 60 s"));
        drop(fault);
        let r = guard.try_acquire(t0 + Duration::from_secs(7), None).unwrap_err();
        assert_eq!((r.reason, r.retry_after_secs), (RejectReason::Cooldown, 53));
    }

    /// Waiting exactly Retry-After is accepted; a second less is not,
    /// wherever in its second the refusal fell. A fault frees its slot a
    /// few milliseconds after its planned end: until then the refusal says
    /// `overdue`, which the registry waits out (`SLOT_GRACE`).
    #[test]
    fn retry_after_is_the_earliest_whole_second_accepted() {
        let t0 = Instant::now();
        for (cooldown, fault) in [(10, 3), (0, 3), (2, 5), (0, 0)] {
            let (cooldown, fault) = (Duration::from_secs(cooldown), Duration::from_secs(fault));
            // A guard whose one fault started at t0 and, as a real one does,
            // freed its slot 5 ms after its planned end; asked at `when`.
            let accepted_at = |when: Instant| {
                let guard = Guard::new(1, cooldown);
                let permit = guard.try_acquire(t0, Some(fault)).unwrap();
                let freed = when >= t0 + fault + Duration::from_millis(5);
                if freed {
                    drop(permit);
                }
                match guard.try_acquire(when, None) {
                    Ok(_) => true,
                    Err(r) => r.overdue && !freed && when + SLOT_GRACE >= t0 + fault + Duration::from_millis(5),
                }
            };
            for asked_ms in [1, 50, 90, 500, 950, 999, 1_000] {
                let guard = Guard::new(1, cooldown);
                let _held = guard.try_acquire(t0, Some(fault)).unwrap();
                let asked = t0 + Duration::from_millis(asked_ms);
                let Err(r) = guard.try_acquire(asked, None) else {
                    continue;
                };
                let retry = r.retry_after_secs;
                let after = |secs: u64| asked + Duration::from_secs(secs);
                let case = format!("cooldown {cooldown:?}, fault {fault:?}, asked at {asked_ms} ms");
                assert!(accepted_at(after(retry)), "{case}: Retry-After {retry} refused");
                assert!(
                    retry == 1 || !accepted_at(after(retry - 1)),
                    "{case}: {} s would do, told {retry}",
                    retry - 1
                );
            }
        }
    }

    /// Overdue: only a slot past its planned end stands in the way.
    #[test]
    fn a_slot_past_its_planned_end_is_overdue_unless_cooling() {
        let t0 = Instant::now();
        let guard = Guard::new(1, Duration::ZERO);
        let _held = guard.try_acquire(t0, Some(Duration::from_secs(2))).unwrap();
        assert!(
            !guard
                .try_acquire(t0 + Duration::from_millis(1_999), None)
                .unwrap_err()
                .overdue
        );
        assert!(
            guard
                .try_acquire(t0 + Duration::from_secs(2), None)
                .unwrap_err()
                .overdue
        );
        let guard = Guard::new(1, Duration::from_secs(10));
        let _held = guard.try_acquire(t0, Some(Duration::from_secs(2))).unwrap();
        let r = guard.try_acquire(t0 + Duration::from_secs(3), None).unwrap_err();
        assert!(!r.overdue, "the cooldown refuses, not the slot");
        assert_eq!(r.retry_after_secs, 7);
        let guard = Guard::new(1, Duration::ZERO);
        let _leak = guard.try_acquire(t0, None).unwrap();
        assert!(
            !guard
                .try_acquire(t0 + Duration::from_secs(3), None)
                .unwrap_err()
                .overdue,
            "no end: not overdue"
        );
    }

    #[test]
    fn a_fault_that_learns_its_end_says_so() {
        let guard = Guard::new(1, Duration::ZERO);
        let t0 = Instant::now();
        let leak = guard.try_acquire(t0, None).unwrap();
        assert_eq!(guard.try_acquire(t0, None).unwrap_err().retry_after_secs, 60);
        leak.expect_end(Some(t0 + Duration::from_secs(5)));
        let r = guard.try_acquire(t0 + Duration::from_secs(1), None).unwrap_err();
        assert_eq!(r.retry_after_secs, 4);
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
    fn the_nth_end_counts_ties_and_skips_unknown_ends() {
        let t0 = Instant::now();
        let at = |s: u64| Some(t0 + Duration::from_secs(s));
        let active = [(1, at(5)), (2, None), (3, at(2)), (4, at(2)), (5, at(9))];
        assert_eq!(nth_end(&active, 1), at(2));
        assert_eq!(nth_end(&active, 2), at(2), "two end at 2 s");
        assert_eq!(nth_end(&active, 3), at(5));
        assert_eq!(nth_end(&active, 4), at(9));
        assert_eq!(nth_end(&active, 5), None, "one has no end");
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
