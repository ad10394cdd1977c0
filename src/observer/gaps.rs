//! The run in due order: the longest error streak, and each pod's gaps (the
//! times it served nothing while other pods did).
//!
//! Requests end out of order (a stalled one ends after later ones), so they
//! are held until every earlier request has ended and then taken in due
//! order. The memory held is bounded by the requests in flight.
//!
//! The gap rule. Taken in due order, a pod P has a gap from the due time of
//! the first request after P's last answer (`start`) to the due time of P's
//! next answer (`end`, or none if it never answered again), when at least
//! `GAP_K x N` requests in between were answered by other pods, N being
//! the number of pods seen so far. Requests that failed count neither way:
//! they were answered by no pod. Under random balancing over N pods, a pod
//! that is still in rotation goes without any of `K x N` answers with a
//! chance of (1 - 1/N)^(K x N) < e^-K (3e-7 for K = 15) per request, so a
//! gap is the balancer (the Service) having taken P out, not chance. The
//! shortest gap seen is K x N / rate seconds (2.25 s for 3 pods at 20/s).

use std::collections::VecDeque;

/// The answers other pods must have given, per pod seen, for a gap.
pub const GAP_K: u64 = 15;
/// Gaps listed per pod; more are counted, not listed.
pub const MAX_GAPS: usize = 1000;

/// When one pod served nothing, in seconds since the start (due times).
#[derive(Debug, Clone, PartialEq)]
pub struct Gap {
    pub start: f64,
    /// `None`: the pod had not served again when the run ended.
    pub end: Option<f64>,
}

#[derive(Default)]
struct Track {
    /// Whether the pod has answered at all yet.
    seen: bool,
    /// Due time of the first request after the pod's last answer.
    since: Option<f64>,
    /// Answers by other pods since the pod's last answer.
    others: u64,
    gaps: Vec<Gap>,
    unlisted: u64,
}

/// The due-order view of the run.
pub struct DueOrder {
    rate: f64,
    /// Ended requests not yet taken, from `first` on: `Some(pod)` for an
    /// answer (`Some(None)` for an error), `None` while in flight.
    pending: VecDeque<Option<Option<usize>>>,
    first: u64,
    streak_start: Option<f64>,
    longest_streak: f64,
    last_due: Option<f64>,
    tracks: Vec<Track>,
}

impl DueOrder {
    /// `rate`: requests per second; request `seq` is due at `seq / rate`.
    pub fn new(rate: f64) -> DueOrder {
        DueOrder {
            rate,
            pending: VecDeque::new(),
            first: 0,
            streak_start: None,
            longest_streak: 0.0,
            last_due: None,
            tracks: Vec::new(),
        }
    }

    /// Request `seq` has ended: `Some(pod id)` answered ok, `None` failed.
    pub fn ended(&mut self, seq: u64, pod: Option<usize>) {
        let Some(at) = seq.checked_sub(self.first).map(|i| i as usize) else {
            return;
        };
        if self.pending.len() <= at {
            self.pending.resize(at + 1, None);
        }
        self.pending[at] = Some(pod);
        while let Some(Some(pod)) = self.pending.front().copied() {
            self.pending.pop_front();
            let due = self.first as f64 / self.rate;
            self.first += 1;
            self.take(due, pod);
        }
    }

    fn take(&mut self, due: f64, pod: Option<usize>) {
        self.last_due = Some(due);
        match (pod, self.streak_start) {
            (None, None) => self.streak_start = Some(due),
            (Some(_), Some(start)) => {
                self.longest_streak = self.longest_streak.max(due - start);
                self.streak_start = None;
            }
            _ => {}
        }
        if let Some(id) = pod
            && self.tracks.len() <= id
        {
            self.tracks.resize_with(id + 1, Track::default);
        }
        let threshold = GAP_K * self.tracks.iter().filter(|t| t.seen).count().max(1) as u64;
        for (i, t) in self.tracks.iter_mut().enumerate() {
            if !t.seen {
                continue;
            }
            if Some(i) == pod {
                continue;
            }
            if t.since.is_none() {
                t.since = Some(due);
            }
            if pod.is_some() {
                t.others += 1;
            }
        }
        if let Some(id) = pod {
            let t = &mut self.tracks[id];
            if let Some(start) = t.since
                && t.seen
                && t.others >= threshold
            {
                push(t, Gap { start, end: Some(due) });
            }
            *t = Track {
                seen: true,
                since: None,
                others: 0,
                gaps: std::mem::take(&mut t.gaps),
                unlisted: t.unlisted,
            };
        }
    }

    /// The run is over: the longest error streak in seconds (from the first
    /// failure's due time to the next answer's, or to one interval after
    /// the last request, but not past `end`, when sending stopped, in
    /// seconds since the start: at 0.001/s one failed request in a 1 s run
    /// is a streak of 1 s, not 1,000), and each pod's gaps and unlisted gap
    /// count, by pod id. Requests still in flight are left out.
    pub fn finish(mut self, end: f64) -> (f64, Vec<(Vec<Gap>, u64)>) {
        while let Some(slot) = self.pending.pop_front() {
            let due = self.first as f64 / self.rate;
            self.first += 1;
            if let Some(pod) = slot {
                self.take(due, pod);
            }
        }
        if let (Some(start), Some(last)) = (self.streak_start, self.last_due) {
            let until = (last + 1.0 / self.rate).min(end.max(last));
            self.longest_streak = self.longest_streak.max(until - start);
        }
        let threshold = GAP_K * self.tracks.iter().filter(|t| t.seen).count().max(1) as u64;
        let gaps = self
            .tracks
            .into_iter()
            .map(|mut t| {
                if let Some(start) = t.since
                    && t.seen
                    && t.others >= threshold
                {
                    push(&mut t, Gap { start, end: None });
                }
                (t.gaps, t.unlisted)
            })
            .collect();
        (self.longest_streak, gaps)
    }
}

fn push(t: &mut Track, gap: Gap) {
    if t.gaps.len() < MAX_GAPS {
        t.gaps.push(gap);
    } else {
        t.unlisted += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pattern` in due order at 10/s: a digit is the pod that
    /// answered, `x` an error.
    fn run(pattern: &str) -> (f64, Vec<(Vec<Gap>, u64)>) {
        let mut d = DueOrder::new(10.0);
        for (seq, c) in pattern.chars().enumerate() {
            d.ended(seq as u64, c.to_digit(10).map(|p| p as usize));
        }
        d.finish(f64::INFINITY)
    }

    fn gaps(pattern: &str) -> Vec<Vec<Gap>> {
        run(pattern).1.into_iter().map(|(g, _)| g).collect()
    }

    #[test]
    fn a_pod_out_for_more_than_k_times_n_answers_has_a_gap_with_start_and_end() {
        // Pods 0, 1, 2 in turn; then pod 0 out for 45 answers (15 x 3), back.
        let mut p = "012".repeat(5);
        p.push_str(&"12".repeat(22)); // with seq 13 and 14: 46 answers by others
        p.push_str(&"012".repeat(3));
        let g = gaps(&p);
        // Pod 0 answered last at seq 12; the first request after it is 13.
        assert_eq!(
            g[0],
            [Gap {
                start: 1.3,
                end: Some(5.9)
            }]
        );
        assert!(g[1].is_empty() && g[2].is_empty());
    }

    #[test]
    fn fewer_answers_elsewhere_than_the_threshold_is_no_gap() {
        let mut p = "012".repeat(5);
        p.push_str(&"12".repeat(21)); // with seq 13 and 14: 44 < 45
        p.push_str("012");
        assert!(gaps(&p).iter().all(Vec::is_empty));
    }

    #[test]
    fn errors_count_neither_way_and_a_pod_never_back_has_an_open_gap() {
        // Pod 0 killed: its share fails, the others answer.
        let mut p = "012".repeat(4);
        p.push_str(&"x12".repeat(10)); // 20 answers elsewhere, 10 errors
        p.push_str(&"12".repeat(12)); // 2 + 20 + 24 = 46 in all
        let g = gaps(&p);
        // Pod 0 answered last at seq 9.
        assert_eq!(g[0], [Gap { start: 1.0, end: None }]);
        // 40 more errors would not make a gap on their own.
        let mut q = "012".repeat(4);
        q.push_str(&"x".repeat(100));
        assert!(gaps(&q).iter().all(Vec::is_empty));
    }

    #[test]
    fn the_threshold_grows_with_the_pods_seen() {
        // Two pods: 30 answers by the other make a gap.
        let mut p = "01".repeat(3);
        p.push_str(&"1".repeat(30));
        p.push('0');
        assert_eq!(
            gaps(&p)[0],
            [Gap {
                start: 0.5,
                end: Some(3.6)
            }]
        );
        // A pod that only appears later has no gap before its first answer.
        let mut q = "0".repeat(100);
        q.push('1');
        assert!(gaps(&q)[1].is_empty());
    }

    #[test]
    fn the_longest_streak_runs_from_the_first_failure_to_the_next_answer() {
        assert_eq!(run("000").0, 0.0);
        let (streak, _) = run("00xxx0x0");
        assert!((streak - 0.3).abs() < 1e-9, "{streak}");
        // A streak still on at the end lasts to one interval after the last.
        let (streak, _) = run("0xxxxx");
        assert!((streak - 0.5).abs() < 1e-9, "{streak}");
    }

    #[test]
    fn a_streak_still_on_at_the_end_stops_where_sending_stopped() {
        // One request at 0.001/s that failed, in a run that stopped sending
        // at 1 s: the user saw 1 s of failures, not the 1,000 s interval.
        let mut d = DueOrder::new(0.001);
        d.ended(0, None);
        let (streak, _) = d.finish(1.0);
        assert!((streak - 1.0).abs() < 1e-9, "{streak}");
        // An end later than one interval after the last request changes nothing.
        let mut d = DueOrder::new(10.0);
        d.ended(0, Some(0));
        d.ended(1, None);
        let (streak, _) = d.finish(60.0);
        assert!((streak - 0.1).abs() < 1e-9, "{streak}");
    }

    #[test]
    fn out_of_order_ends_are_taken_in_due_order_and_unfinished_ones_skipped() {
        let mut d = DueOrder::new(10.0);
        // 0 ends last; 1..4 fail first: one streak of 4 (0.1 .. 0.5).
        for seq in 1..5 {
            d.ended(seq, None);
        }
        d.ended(5, Some(0));
        d.ended(0, Some(0));
        d.ended(7, None);
        // 6 never ends (in flight at a signal).
        let (streak, _) = d.finish(f64::INFINITY);
        assert!((streak - 0.4).abs() < 1e-9, "{streak}");
    }
}
