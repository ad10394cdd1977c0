//! Patch (chaos-backend): the timer: connections with answers to write
//! later (held ones, and what a non-blocking write left), each with the
//! time it is due. The watchdog's thread runs it (`watchdog.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::conn::Conn;
use super::lock;

pub(crate) struct Timer {
    queue: Mutex<Vec<(Instant, Arc<Conn>)>>,
    /// Signalled when an entry earlier than every other one comes in, or
    /// when answers waiting to be written pass the budget.
    cond: Condvar,
    /// Answers waiting to be written have passed the budget: the watchdog
    /// closes the slowest readers (`Table::shed`).
    shed: AtomicBool,
}

impl Timer {
    pub(super) fn new() -> Timer {
        Timer {
            queue: Mutex::new(Vec::new()),
            cond: Condvar::new(),
            shed: AtomicBool::new(false),
        }
    }

    /// Asks the watchdog to bring the answers waiting back within budget.
    pub(super) fn shed_soon(&self) {
        if !self.shed.swap(true, Ordering::AcqRel) {
            // Taken so that the wake-up cannot fall between the watchdog's
            // look at the flag and its wait.
            drop(self.queue());
            self.cond.notify_one();
        }
    }

    /// Whether the budget was passed since the last call.
    pub(super) fn take_shed(&self) -> bool {
        self.shed.swap(false, Ordering::AcqRel)
    }

    /// Lock order: see `connections`.
    fn queue(&self) -> MutexGuard<'_, Vec<(Instant, Arc<Conn>)>> {
        lock(&self.queue)
    }

    /// `conn` has something to write at `at`.
    pub(super) fn add(&self, at: Instant, conn: Arc<Conn>) {
        let mut q = self.queue();
        let earliest = q.iter().all(|(t, _)| at < *t);
        q.push((at, conn));
        drop(q);
        if earliest {
            self.cond.notify_one();
        }
    }

    /// Waits until the earliest entry is due, or until `deadline`, and
    /// takes the entries due by then. A hold whose release flag was set is
    /// due at once, and so is any of a closed connection.
    pub(super) fn take_due(&self, deadline: Instant) -> Vec<Arc<Conn>> {
        let mut q = self.queue();
        let now = Instant::now();
        let next = q
            .iter()
            .map(|(t, _)| *t)
            .min()
            .map_or(deadline, |t| t.min(deadline));
        if next > now && !self.shed.load(Ordering::Acquire) {
            q = self
                .cond
                .wait_timeout(q, next - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = q
            .drain(..)
            .partition(|(t, c)| *t <= now || c.released() || c.closed());
        *q = later;
        due.into_iter().map(|(_, c)| c).collect()
    }
}
