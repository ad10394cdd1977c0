//! Patch (chaos-backend): the counters of the connection layer, and the
//! snapshot `Server::connection_stats` returns.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the connection layer; see `Server::connection_stats`.
#[derive(Default)]
pub(crate) struct Counters {
    pub accepted: AtomicU64,
    pub rejected_cap: AtomicU64,
    pub rejected_spawn: AtomicU64,
    pub accept_errors: AtomicU64,
    pub evicted: AtomicU64,
    pub shed: AtomicU64,
    pub idle_timeouts: AtomicU64,
    pub head_timeouts: AtomicU64,
    pub write_timeouts: AtomicU64,
    pub drain_timeouts: AtomicU64,
}

impl Counters {
    /// The counters now, with `open` connections and `answers_waiting`
    /// bytes.
    pub(super) fn snapshot(&self, open: usize, answers_waiting: usize) -> ConnectionStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ConnectionStats {
            open,
            answers_waiting,
            accepted: get(&self.accepted),
            rejected_cap: get(&self.rejected_cap),
            rejected_spawn: get(&self.rejected_spawn),
            accept_errors: get(&self.accept_errors),
            evicted: get(&self.evicted),
            shed: get(&self.shed),
            idle_timeouts: get(&self.idle_timeouts),
            head_timeouts: get(&self.head_timeouts),
            write_timeouts: get(&self.write_timeouts),
            drain_timeouts: get(&self.drain_timeouts),
        }
    }
}

/// A snapshot of the connection layer's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Connections open now.
    pub open: usize,
    /// Bytes of rendered answers waiting to be written now (shared bodies
    /// not counted).
    pub answers_waiting: usize,
    /// Connections accepted since start.
    pub accepted: u64,
    /// New connections closed at the cap because none could be evicted.
    pub rejected_cap: u64,
    /// New connections closed because their thread could not be spawned.
    pub rejected_spawn: u64,
    /// `accept` calls that failed (EMFILE, ENFILE, ENOBUFS, ...).
    pub accept_errors: u64,
    /// Connections closed to make room for a new one.
    pub evicted: u64,
    /// Connections closed because the answers waiting to be written, all
    /// connections together, passed `ConnectionLimits::answer_budget`:
    /// those whose writes had made no progress for longest.
    pub shed: u64,
    /// Connections closed after idling for the idle timeout.
    pub idle_timeouts: u64,
    /// Connections closed because a head took longer than its deadline.
    pub head_timeouts: u64,
    /// Connections closed because a write made no progress in time.
    pub write_timeouts: u64,
    /// Connections closed because an unread body did not come in time.
    pub drain_timeouts: u64,
}
