//! Patch (chaos-backend): the table of one server's open connections:
//! admission at the cap with eviction, the timeouts the watchdog
//! enforces, and the budget of answers waiting to be written.

use std::collections::HashMap;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::conn::{Conn, Expiry, Phase};
use super::lock;
use super::stats::{ConnectionStats, Counters};
use super::timer::Timer;
use super::writer::Budget;
use crate::connection::Connection;
use crate::ConnectionLimits;

/// Every open connection of one server.
pub(crate) struct Table {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    pub(crate) limits: ConnectionLimits,
    pub(crate) counters: Counters,
    open: AtomicUsize,
    pub(super) timer: Arc<Timer>,
    budget: Arc<Budget>,
}

impl Table {
    pub(crate) fn new(limits: ConnectionLimits) -> Arc<Table> {
        Arc::new(Table {
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            counters: Counters::default(),
            open: AtomicUsize::new(0),
            timer: Arc::new(Timer::new()),
            budget: Budget::new(limits.answer_budget),
            limits,
        })
    }

    /// Lock order: see `connections`.
    fn conns(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        lock(&self.conns)
    }

    /// Admits a new connection, evicting one at the cap; None when the cap
    /// is reached and nothing can be evicted (the socket is then closed).
    pub(crate) fn admit(&self, stream: Connection) -> Option<Arc<Conn>> {
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        let mut conns = self.conns();
        if conns.len() >= self.limits.max_connections {
            match pick_victim(&conns) {
                Some(victim) => {
                    if let Some(v) = conns.remove(&victim) {
                        v.expire(Expiry::Evicted);
                    }
                    self.counters.evicted.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    self.counters.rejected_cap.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.shutdown(Shutdown::Both);
                    return None;
                }
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(
            id,
            stream,
            self.limits.drain_limit,
            Arc::clone(&self.timer),
            Arc::clone(&self.budget),
        ));
        conns.insert(id, Arc::clone(&conn));
        self.open.store(conns.len(), Ordering::Relaxed);
        Some(conn)
    }

    /// Forgets a connection whose thread is ending (or never started).
    pub(crate) fn remove(&self, conn: &Conn) {
        let mut conns = self.conns();
        conns.remove(&conn.id);
        self.open.store(conns.len(), Ordering::Relaxed);
        // A burst of connections grew the table; give its room back once
        // most have gone, so that it does not stay resident for good.
        let left = conns.len();
        if conns.capacity() > 1024 && left < conns.capacity() / 8 {
            conns.shrink_to(left * 2);
        }
    }

    /// Evicts one connection to free an fd after EMFILE/ENFILE; true if
    /// one went.
    pub(crate) fn evict_one(&self) -> bool {
        let mut conns = self.conns();
        let victim = pick_victim(&conns).and_then(|id| conns.remove(&id));
        self.open.store(conns.len(), Ordering::Relaxed);
        drop(conns);
        match victim {
            Some(v) => {
                v.expire(Expiry::Evicted);
                self.counters.evicted.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Connections with an answer rendered and not all written yet (see
    /// `Server::unwritten_answers`).
    pub(crate) fn unwritten(&self) -> usize {
        let conns: Vec<Arc<Conn>> = self.conns().values().cloned().collect();
        conns.iter().filter(|c| c.state().unwritten()).count()
    }

    pub(crate) fn stats(&self) -> ConnectionStats {
        self.counters
            .snapshot(self.open.load(Ordering::Relaxed), self.budget.queued())
    }

    /// Closes connections until the answers waiting to be written fit the
    /// budget again: first those whose writes have made no progress for
    /// longest (the slowest readers), and never one a worker is still
    /// rendering into (it holds nothing waiting yet).
    pub(super) fn shed(&self) {
        let excess = self.budget.excess();
        if excess == 0 {
            return;
        }
        let mut waiting: Vec<(Instant, usize, Arc<Conn>)> = self
            .conns()
            .values()
            .filter_map(|c| {
                let s = c.state();
                (s.writable() && s.out.owned() > 0)
                    .then(|| (s.progress, s.out.owned(), Arc::clone(c)))
            })
            .collect();
        waiting.sort_by_key(|(progress, _, _)| *progress);
        let mut freed = 0;
        for (_, owned, conn) in waiting {
            if freed >= excess {
                break;
            }
            conn.expire(Expiry::Shed);
            self.counters.shed.fetch_add(1, Ordering::Relaxed);
            freed += owned;
        }
    }

    /// Closes every connection whose phase has outlived its limit.
    pub(super) fn enforce(&self, now: Instant) {
        let conns: Vec<Arc<Conn>> = self.conns().values().cloned().collect();
        let l = &self.limits;
        let late = |limit: Option<Duration>, from: Instant| {
            limit.is_some_and(|d| now.saturating_duration_since(from) > d)
        };
        for conn in conns {
            let why = {
                let s = conn.state();
                if !s.writable() {
                    continue;
                }
                let writing = !s.out.is_empty() || s.flushing;
                if writing && s.hold_until.is_none() && late(l.write_timeout, s.progress) {
                    Some((Expiry::WriteTimeout, &self.counters.write_timeouts))
                } else if !s.complete() || s.expired.is_some() {
                    None // a request in progress: no idle, head or drain clock
                } else {
                    match s.phase {
                        Phase::Idle if late(l.idle_timeout, s.since.max(s.done_at)) => {
                            Some((Expiry::IdleTimeout, &self.counters.idle_timeouts))
                        }
                        Phase::ReadingHead if late(l.head_timeout, s.since) => {
                            Some((Expiry::HeadTimeout, &self.counters.head_timeouts))
                        }
                        Phase::Draining if late(l.drain_timeout, s.since) => {
                            Some((Expiry::DrainTimeout, &self.counters.drain_timeouts))
                        }
                        _ => None,
                    }
                }
            };
            if let Some((why, counter)) = why {
                counter.fetch_add(1, Ordering::Relaxed);
                conn.expire(why);
            }
        }
    }
}

/// The oldest idle connection, else the oldest one whose input has not all
/// come (a head, or a body nobody reads), else the one whose rendered
/// answer has waited longest to be written, else the one whose request has
/// waited longest for a worker (first among connections answered before,
/// then among those on their first request). Never one a worker is
/// answering.
fn pick_victim(conns: &HashMap<u64, Arc<Conn>>) -> Option<u64> {
    let mut idle: Option<(Instant, u64)> = None;
    let mut incomplete: Option<(Instant, u64)> = None;
    // Requests read and queued that no worker has taken yet: nothing has
    // been spent on them. Without this tier, clients that pipeline (each
    // connection always has a request queued or being answered) filled
    // the cap and every new connection, probes included, was refused.
    // A connection on its first request (a probe's, a new client's) goes
    // after those that have had answers: else, at the cap, each new
    // connection of a pipelining client evicted the one before it, a
    // probe's among them.
    let mut queued: Option<(Instant, u64)> = None;
    let mut queued_first: Option<(Instant, u64)> = None;
    // Answers rendered but not written: the client does not read them, or a
    // hold keeps them back. Without this tier, connections that never read
    // (or enough held answers) filled the cap and every new connection,
    // probes included, was refused until the write timeout or the hold ran
    // out. Oldest progress first; one a worker is still rendering stays.
    let mut stalled: Option<(Instant, u64)> = None;
    for (id, c) in conns {
        let s = c.state();
        if s.expired.is_some() {
            continue;
        }
        if !s.complete() {
            if s.writers == 0 {
                if stalled.is_none_or(|(t, _)| s.progress < t) {
                    stalled = Some((s.progress, *id));
                }
            } else if !s.taken && s.phase == Phase::Busy {
                let slot = if s.requests > 1 {
                    &mut queued
                } else {
                    &mut queued_first
                };
                if slot.is_none_or(|(t, _)| s.since < t) {
                    *slot = Some((s.since, *id));
                }
            }
            continue;
        }
        let slot = match s.phase {
            Phase::Idle => &mut idle,
            Phase::ReadingHead | Phase::Draining => &mut incomplete,
            _ => continue,
        };
        if slot.is_none_or(|(t, _)| s.since < t) {
            *slot = Some((s.since, *id));
        }
    }
    idle.or(incomplete)
        .or(stalled)
        .or(queued)
        .or(queued_first)
        .map(|(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connections::AnswerWriter;

    /// A connected loopback socket, server side.
    fn socket(listener: &std::net::TcpListener) -> (Connection, std::net::TcpStream) {
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (Connection::from(server), client)
    }

    #[test]
    fn at_the_cap_the_oldest_idle_goes_then_the_oldest_head_never_a_busy_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let limits = ConnectionLimits {
            max_connections: 3,
            ..ConnectionLimits::default()
        };
        let table = Table::new(limits);
        let mut clients = Vec::new();
        let mut admit = |phase: Phase| {
            let (conn, client) = socket(&listener);
            clients.push(client);
            let c = table.admit(conn).expect("admitted");
            c.enter(phase);
            std::thread::sleep(Duration::from_millis(2));
            c
        };
        // A request a worker answers: a writer, and taken from the queue.
        let answering = |c: &Arc<Conn>| {
            let w = AnswerWriter::new(c);
            assert!(c.take());
            w
        };
        let head = admit(Phase::ReadingHead);
        let busy = admit(Phase::Busy);
        let _busy_writer = answering(&busy);
        let idle = admit(Phase::Idle);
        // The fourth evicts the idle one, though the head is older.
        let fourth = admit(Phase::Busy);
        let _fourth_writer = answering(&fourth);
        assert_eq!(idle.expired(), Some(Expiry::Evicted));
        assert_eq!(head.expired(), None);
        // The fifth evicts the head; the sixth finds only busy ones.
        let _fifth = admit(Phase::Busy);
        assert_eq!(head.expired(), Some(Expiry::Evicted));
        assert_eq!(busy.expired(), None);
        let _fifth_writer = answering(&_fifth);
        let (conn, _c) = socket(&listener);
        assert!(table.admit(conn).is_none());
        assert_eq!(table.stats().rejected_cap, 1);
        assert_eq!(table.stats().evicted, 2);
        assert_eq!(table.stats().open, 3);
    }

    #[test]
    fn at_the_cap_a_held_or_unread_answer_goes_before_the_new_connection_is_refused() {
        use std::io::Write as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let limits = ConnectionLimits {
            max_connections: 2,
            ..ConnectionLimits::default()
        };
        let table = Table::new(limits);
        let (conn, _c1) = socket(&listener);
        let busy = table.admit(conn).expect("admitted");
        busy.enter(Phase::Busy);
        let _rendering = AnswerWriter::new(&busy); // a worker still at it
        assert!(busy.take());
        let (conn, _c2) = socket(&listener);
        let held = table.admit(conn).expect("admitted");
        held.enter(Phase::Busy);
        held.hold_until(Instant::now() + Duration::from_secs(60), None);
        let mut w = AnswerWriter::new(&held);
        w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        drop(w); // rendered, held back by a fault

        // The third goes in: the held answer is evicted, the rendering one stays.
        let (conn, _c3) = socket(&listener);
        assert!(table.admit(conn).is_some());
        assert_eq!(held.expired(), Some(Expiry::Evicted));
        assert_eq!(busy.expired(), None);
    }

    /// A request still waiting for a worker has cost nothing yet: at the
    /// cap its connection goes (after idle ones, heads and unread answers,
    /// oldest first), so that clients that always have a request queued on
    /// every connection (pipelining) cannot lock new connections out.
    #[test]
    fn at_the_cap_a_request_still_queued_goes_one_being_answered_stays() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let limits = ConnectionLimits {
            max_connections: 3,
            ..ConnectionLimits::default()
        };
        let table = Table::new(limits);
        let mut held = Vec::new();
        let mut queued = |take: bool| {
            let (conn, client) = socket(&listener);
            let c = table.admit(conn).expect("admitted");
            c.start_request(crate::connections::BodyPlan::default(), false);
            c.enter(Phase::Busy);
            let w = AnswerWriter::new(&c);
            if take {
                assert!(c.take());
            }
            std::thread::sleep(Duration::from_millis(2));
            held.push((client, w));
            c
        };
        let older = queued(false);
        let answered = queued(true);
        let newer = queued(false);
        let (conn, _c4) = socket(&listener);
        assert!(table.admit(conn).is_some());
        assert_eq!(older.expired(), Some(Expiry::Evicted));
        assert_eq!(answered.expired(), None);
        assert_eq!(newer.expired(), None);
        // A worker that reaches the evicted one's request drops it.
        assert!(!older.take());
    }

    /// Among requests queued, one on a connection that has had answers
    /// goes before one on its first request (a probe's), though that one
    /// has waited longer.
    #[test]
    fn at_the_cap_a_first_request_goes_after_one_of_a_connection_answered_before() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let limits = ConnectionLimits {
            max_connections: 2,
            ..ConnectionLimits::default()
        };
        let table = Table::new(limits);
        let mut held = Vec::new();
        let mut queued = |requests: usize| {
            let (conn, client) = socket(&listener);
            let c = table.admit(conn).expect("admitted");
            for _ in 0..requests {
                c.start_request(crate::connections::BodyPlan::default(), false);
            }
            c.enter(Phase::Busy);
            held.push((client, AnswerWriter::new(&c)));
            std::thread::sleep(Duration::from_millis(2));
            c
        };
        let first = queued(1);
        let again = queued(5);
        let (conn, _c3) = socket(&listener);
        assert!(table.admit(conn).is_some());
        assert_eq!(again.expired(), Some(Expiry::Evicted));
        assert_eq!(first.expired(), None);
    }

    /// Past the budget, the connections whose answers have waited longest
    /// are closed (their memory freed at once) until the rest fits.
    #[test]
    fn past_the_answer_budget_the_slowest_readers_are_closed() {
        use std::io::Write as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let limits = ConnectionLimits {
            answer_budget: 20 << 20,
            ..ConnectionLimits::default()
        };
        let table = Table::new(limits);
        let mut clients = Vec::new();
        let mut conns = Vec::new();
        for _ in 0..4 {
            let (conn, client) = socket(&listener);
            client.set_nonblocking(true).unwrap();
            let c = table.admit(conn).expect("admitted");
            c.enter(Phase::Busy);
            let mut w = AnswerWriter::new(&c);
            // More than the socket buffers take (a few MiB on loopback):
            // most of it waits.
            w.write_all(&vec![b'x'; 16 << 20]).unwrap();
            drop(w);
            std::thread::sleep(Duration::from_millis(5));
            clients.push(client);
            conns.push(c);
        }
        let waiting = table.stats().answers_waiting;
        assert!(waiting > 20 << 20, "{} bytes waiting", waiting);
        table.shed();
        assert!(table.stats().answers_waiting <= 20 << 20);
        // The oldest went first; the newest stays.
        assert_eq!(conns[0].expired(), Some(Expiry::Shed));
        assert_eq!(conns[3].expired(), None);
        assert!(table.stats().shed >= 1);
    }

    #[test]
    fn a_held_answer_is_unwritten_until_its_release_and_its_write() {
        use std::io::{Read as _, Write as _};
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let table = Table::new(ConnectionLimits::default());
        let (conn, mut client) = socket(&listener);
        let held = table.admit(conn).expect("admitted");
        held.enter(Phase::Busy);
        let release = Arc::new(AtomicBool::new(false));
        held.hold_until(
            Instant::now() + Duration::from_secs(60),
            Some(Arc::clone(&release)),
        );
        let mut w = AnswerWriter::new(&held);
        assert_eq!(table.unwritten(), 1, "being rendered, with a hold");
        w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .unwrap();
        drop(w);
        assert_eq!(table.unwritten(), 1, "rendered, held");
        // What the watchdog does on its next tick once the flag is set.
        release.store(true, Ordering::SeqCst);
        let due = table.timer.take_due(Instant::now());
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].flush_deferred(Instant::now()), None);
        assert_eq!(table.unwritten(), 0, "written");
        let mut answer = [0u8; 40];
        client.read_exact(&mut answer).unwrap();
        assert!(answer.ends_with(b"ok"));
    }
}
