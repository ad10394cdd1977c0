//! The p95 latency of user traffic over the last `LATENCY_WINDOW_SECONDS`,
//! by time, not by count.
//!
//! The window is a ring of one-second slots. Each slot keeps how many
//! requests it saw, how many were slower than the readiness threshold, and a
//! coarse log-scale histogram. "Is p95 above the threshold?" is answered
//! exactly from the counts; the p95 figure shown to people is the upper edge
//! of the histogram bucket that holds it (at most 19% high). Memory is fixed
//! whatever the request rate, and a burst of slow requests ages out when its
//! seconds leave the window, however little traffic follows.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Buckets per doubling of latency.
const STEPS_PER_OCTAVE: f64 = 4.0;
/// Upper edge of bucket 0.
const FIRST_EDGE_US: f64 = 10.0;
/// 10 µs * 2^(100/4) is about 335 s: anything slower shares the last bucket.
const BUCKETS: usize = 100;

#[derive(Clone)]
struct Slot {
    second: u64,
    total: u64,
    over: u64,
    buckets: [u32; BUCKETS],
}

impl Slot {
    fn empty(second: u64) -> Slot {
        Slot {
            second,
            total: 0,
            over: 0,
            buckets: [0; BUCKETS],
        }
    }
}

/// What the window says now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub samples: u64,
    /// Upper edge of the bucket holding the p95 sample; `None` with no samples.
    pub p95: Option<Duration>,
    /// Exactly: is the nearest-rank p95 above the threshold?
    pub p95_above_threshold: bool,
}

/// A thread-safe sliding window of latencies.
pub struct LatencyWindow {
    origin: Instant,
    threshold: Duration,
    slots: Mutex<Vec<Slot>>,
}

impl LatencyWindow {
    pub fn new(origin: Instant, window: Duration, threshold: Duration) -> LatencyWindow {
        let len = window.as_secs().max(1) as usize;
        LatencyWindow {
            origin,
            threshold,
            slots: Mutex::new((0..len).map(|_| Slot::empty(u64::MAX)).collect()),
        }
    }

    fn second_of(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs()
    }

    /// Adds one request that took `latency` and ended at `now`.
    pub fn record(&self, now: Instant, latency: Duration) {
        let second = self.second_of(now);
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let len = slots.len() as u64;
        let slot = &mut slots[(second % len) as usize];
        if slot.second != second {
            *slot = Slot::empty(second);
        }
        slot.total += 1;
        slot.over += u64::from(latency > self.threshold);
        slot.buckets[bucket_of(latency)] += 1;
    }

    /// The p95 over the seconds `now` still sees in the window.
    pub fn summary(&self, now: Instant) -> Summary {
        let second = self.second_of(now);
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let len = slots.len() as u64;
        let oldest = second.saturating_sub(len - 1);
        let (mut total, mut over) = (0u64, 0u64);
        let mut merged = [0u64; BUCKETS];
        for slot in slots
            .iter()
            .filter(|s| s.second != u64::MAX && s.second >= oldest && s.second <= second)
        {
            total += slot.total;
            over += slot.over;
            for (m, b) in merged.iter_mut().zip(slot.buckets.iter()) {
                *m += u64::from(*b);
            }
        }
        if total == 0 {
            return Summary {
                samples: 0,
                p95: None,
                p95_above_threshold: false,
            };
        }
        // Nearest rank: the p95 is the ceil(0.95 n)-th smallest sample.
        let rank = (95 * total).div_ceil(100);
        let mut seen = 0;
        let mut p95 = None;
        for (i, count) in merged.iter().enumerate() {
            seen += count;
            if seen >= rank {
                p95 = Some(upper_edge(i));
                break;
            }
        }
        Summary {
            samples: total,
            p95,
            p95_above_threshold: total - over < rank,
        }
    }
}

fn bucket_of(latency: Duration) -> usize {
    let us = latency.as_secs_f64() * 1e6;
    if us <= FIRST_EDGE_US {
        return 0;
    }
    let index = ((us / FIRST_EDGE_US).log2() * STEPS_PER_OCTAVE).ceil() as usize;
    index.min(BUCKETS - 1)
}

/// The floor of the last bucket (about 237 s): a p95 shown at or above it
/// says only "slower than this" (requests held without an answer, such as
/// an errors fault's stalls, are recorded there), not a measured time.
pub fn slowest_floor() -> Duration {
    upper_edge(BUCKETS - 2)
}

fn upper_edge(bucket: usize) -> Duration {
    let us = FIRST_EDGE_US * (bucket as f64 / STEPS_PER_OCTAVE).exp2();
    Duration::from_secs_f64(us / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn empty_window_passes() {
        let w = LatencyWindow::new(Instant::now(), Duration::from_secs(30), ms(500));
        let s = w.summary(Instant::now());
        assert_eq!(s.samples, 0);
        assert!(!s.p95_above_threshold);
    }

    #[test]
    fn exact_threshold_decision_at_five_percent() {
        let t0 = Instant::now();
        let w = LatencyWindow::new(t0, Duration::from_secs(30), ms(500));
        for _ in 0..95 {
            w.record(t0, ms(1));
        }
        for _ in 0..5 {
            w.record(t0, ms(900));
        }
        // 5 of 100 slow: the 95th sample is fast.
        assert!(!w.summary(t0).p95_above_threshold);
        w.record(t0, ms(900));
        // 6 of 101 slow: rank 96 is slow.
        let s = w.summary(t0);
        assert!(s.p95_above_threshold);
        let p95 = s.p95.unwrap();
        assert!(p95 >= ms(900) && p95 <= ms(1100), "{p95:?}");
    }

    #[test]
    fn a_single_slow_request_ages_out_by_time() {
        // The Python original kept a slow sample until 20 more requests came.
        let t0 = Instant::now();
        let w = LatencyWindow::new(t0, Duration::from_secs(30), ms(500));
        w.record(t0, ms(2000));
        assert!(w.summary(t0 + Duration::from_secs(29)).p95_above_threshold);
        assert!(!w.summary(t0 + Duration::from_secs(30)).p95_above_threshold);
        assert_eq!(w.summary(t0 + Duration::from_secs(30)).samples, 0);
    }

    #[test]
    fn ring_slots_are_reused_without_stale_counts() {
        let t0 = Instant::now();
        let w = LatencyWindow::new(t0, Duration::from_secs(2), ms(500));
        w.record(t0, ms(900));
        w.record(t0 + Duration::from_secs(2), ms(1));
        let s = w.summary(t0 + Duration::from_secs(2));
        assert_eq!(s.samples, 1);
        assert!(!s.p95_above_threshold);
    }

    #[test]
    fn buckets_are_monotonic_and_cover_the_value() {
        for us in [1u64, 10, 11, 250, 999, 5_000, 499_999, 500_000, 60_000_000] {
            let d = Duration::from_micros(us);
            let b = bucket_of(d);
            assert!(upper_edge(b) >= d || b == BUCKETS - 1, "{us} µs in bucket {b}");
            if b > 0 {
                assert!(upper_edge(b - 1) < d, "{us} µs should not fit bucket {}", b - 1);
            }
        }
    }
}
