//! A bound on what a flood of requests can make the service write: per
//! key (a log call site, or a kind of refused chaos request), the first
//! `BURST` lines of each `WINDOW` are written in full and the rest only
//! counted; once the window is over, one summary line says how many were
//! left out. The metrics count every request whatever is written.
//!
//! Container logs count against the pod's ephemeral storage: a pipelined
//! flood of unauthenticated requests wrote 7.1 MB/s of `CHAOS_REJECTED`
//! lines, enough for any client to get the pod evicted. Keys come from the
//! code (call sites, route actions and outcomes), never from a request, so
//! their number is bounded.
//!
//! Time is handed in, so that tests drive it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Lines written in full per key and window.
pub const BURST: u32 = 5;
/// The window, and so the longest a summary waits once a flood is over
/// (plus the housekeeping period of `main`, which writes it).
pub const WINDOW: Duration = Duration::from_secs(10);

/// What one window of one key left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Suppressed<K> {
    pub key: K,
    pub count: u64,
    /// From the window's first line to its end (or to now, before an exit).
    pub over: Duration,
}

#[derive(Debug)]
struct Window {
    began: Instant,
    written: u32,
    suppressed: u64,
}

/// The windows of every key seen.
#[derive(Debug)]
pub struct Throttle<K> {
    burst: u32,
    window: Duration,
    keys: Mutex<HashMap<K, Window>>,
}

impl<K: Eq + Hash + Clone> Throttle<K> {
    pub fn new(burst: u32, window: Duration) -> Throttle<K> {
        Throttle {
            burst,
            window,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a line of `key` at `now` is written in full; and, when the
    /// key's previous window is over and left lines out, its summary, to
    /// be written first.
    pub fn admit(&self, key: &K, now: Instant) -> (bool, Option<Suppressed<K>>) {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let mut summary = None;
        let window = keys.entry(key.clone()).or_insert(Window {
            began: now,
            written: 0,
            suppressed: 0,
        });
        if now.saturating_duration_since(window.began) >= self.window {
            summary = self.summary(key, window, window.began + self.window);
            *window = Window {
                began: now,
                written: 0,
                suppressed: 0,
            };
        }
        if window.written < self.burst {
            window.written += 1;
            (true, summary)
        } else {
            window.suppressed += 1;
            (false, summary)
        }
    }

    /// The summaries of the windows over by `now` that left lines out
    /// (those windows start afresh); with `all`, of every window that left
    /// lines out, over or not (before the process exits).
    pub fn take_summaries(&self, now: Instant, all: bool) -> Vec<Suppressed<K>> {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        keys.retain(|key, window| {
            let over = now.saturating_duration_since(window.began) >= self.window;
            if !over && !all {
                return true;
            }
            let end = if over { window.began + self.window } else { now };
            out.extend(self.summary(key, window, end));
            // An idle key is forgotten; one left mid-window (an exit) too.
            false
        });
        out
    }

    fn summary(&self, key: &K, window: &Window, end: Instant) -> Option<Suppressed<K>> {
        (window.suppressed > 0).then(|| Suppressed {
            key: key.clone(),
            count: window.suppressed,
            over: end.saturating_duration_since(window.began),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_lines_of_each_window_are_written_then_the_rest_counted() {
        let t = Throttle::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let written: Vec<bool> = (0..10).map(|i| t.admit(&"a", ms(i)).0).collect();
        assert_eq!(
            written,
            [true, true, true, false, false, false, false, false, false, false]
        );
        // Another key has its own window.
        assert_eq!(t.admit(&"b", ms(20)), (true, None));
        assert_eq!(t.take_summaries(ms(9_000), false), vec![], "no window is over");
        // The next line after the window: its summary first, then written.
        let (write, summary) = t.admit(&"a", ms(10_500));
        assert!(write);
        assert_eq!(
            summary,
            Some(Suppressed {
                key: "a",
                count: 7,
                over: Duration::from_secs(10)
            })
        );
        assert_eq!(t.admit(&"a", ms(10_600)), (true, None), "a new window");
    }

    #[test]
    fn housekeeping_reports_windows_that_are_over_and_an_exit_reports_all() {
        let t = Throttle::new(1, Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..5 {
            t.admit(&"flood", t0 + Duration::from_millis(i));
        }
        t.admit(&"quiet", t0);
        t.admit(&"late", t0 + Duration::from_secs(8));
        t.admit(&"late", t0 + Duration::from_secs(8));
        let due = t.take_summaries(t0 + Duration::from_secs(11), false);
        assert_eq!(due.iter().map(|s| (s.key, s.count)).collect::<Vec<_>>(), [("flood", 4)]);
        assert!(t.take_summaries(t0 + Duration::from_secs(12), false).is_empty());
        let all = t.take_summaries(t0 + Duration::from_secs(12), true);
        assert_eq!(
            all,
            vec![Suppressed {
                key: "late",
                count: 1,
                over: Duration::from_secs(4)
            }]
        );
        assert_eq!(t.admit(&"flood", t0 + Duration::from_secs(13)), (true, None));
    }
}
