//! Patch (chaos-backend): the connection table, its watchdog, and the
//! writer of answers.
//!
//! Upstream tiny_http 0.12 gives every connection a thread and two fds
//! (`try_clone`), never times a connection out (tiny-http#143) and never
//! bounds how many there are (tiny-http#221). Here:
//!
//! - every connection is one socket (`Conn`), shared by its reader, the
//!   writer of its answers and the table: one fd per connection;
//! - the table knows what each connection is doing (`Phase`) and since
//!   when; one watchdog thread per server enforces the idle timeout, the
//!   whole-head deadline, the write-progress timeout and the body-drain
//!   deadline by shutting the socket down, which wakes the blocked read or
//!   write at once (no `SO_RCVTIMEO`: on a listener it also times out
//!   `accept`);
//! - at the cap a new connection evicts the oldest idle one, else the
//!   oldest one still sending a head or a body nobody reads; never one
//!   whose request is being answered;
//! - workers never block on a client: an answer is rendered in memory and
//!   written with one non-blocking attempt; what does not fit, and answers
//!   held back on purpose (`Request::respond_held`), are written by the
//!   same server thread as the watchdog, without blocking, retried with a
//!   back-off under the write-progress timeout (upstream's
//!   `SequentialWriter` made every worker with a later answer on the same
//!   connection wait behind a stuck write);
//! - one request in flight per connection: its thread waits for the first
//!   byte of the next head at once (so that a plain keep-alive request costs
//!   no extra thread wake-up), but reads that head only once the previous
//!   answer is written.

use std::collections::HashMap;
use std::convert::TryFrom;
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::connection::Connection;
use crate::ConnectionLimits;

/// What a connection is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for the first byte of the next head.
    Idle,
    /// The first byte of a head has come; the rest has not.
    ReadingHead,
    /// A worker holds its request, or the next head waits for the
    /// previous answer to be written.
    Busy,
    /// Reading and discarding a request body nobody read.
    Draining,
}

/// Why the table closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expiry {
    Evicted,
    IdleTimeout,
    HeadTimeout,
    WriteTimeout,
    DrainTimeout,
    /// A write failed: the client is gone.
    Broken,
}

/// How the body of the request being answered is framed, to know what is
/// left to drain once it is answered.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BodyPlan {
    pub content_length: u64,
    pub chunked: bool,
    pub expect_continue: bool,
}

struct State {
    phase: Phase,
    since: Instant,
    /// Answer writers alive (0 or 1 but for tiny_http's own error answers).
    writers: usize,
    /// Bytes of answers not written yet, in order.
    out: Vec<u8>,
    /// The timer thread holds bytes taken from `out` and is writing them.
    flushing: bool,
    /// Last time bytes of `out` went out (or `out` was filled).
    progress: Instant,
    /// Last time every answer was complete.
    done_at: Instant,
    /// Queued with the timer thread.
    scheduled: bool,
    /// Next retry delay of a write that did not progress.
    backoff: Duration,
    hold_until: Option<Instant>,
    close_after: bool,
    body: BodyPlan,
    expired: Option<Expiry>,
}

impl State {
    /// Every answer dispatched so far is written (or abandoned).
    fn complete(&self) -> bool {
        self.writers == 0 && self.out.is_empty() && !self.flushing && self.hold_until.is_none()
    }

    /// Answers can still be written: not closed, or only its read side
    /// (a head that timed out still gets its 408).
    fn writable(&self) -> bool {
        matches!(self.expired, None | Some(Expiry::HeadTimeout))
    }
}

/// One connection: its socket and what it is doing.
pub(crate) struct Conn {
    id: u64,
    stream: Connection,
    state: Mutex<State>,
    cond: Condvar,
    /// Held while a writer has the socket non-blocking (`write_now`).
    nonblocking: Mutex<()>,
    /// Body bytes of the current request read so far (by anyone).
    body_read: AtomicU64,
    drain_limit: u64,
    timer: Arc<Timer>,
    /// Ends the current hold early once set (`Request::respond_held`): the
    /// timer thread looks at it on every tick. Its own lock, only ever
    /// taken last (after the timer queue's or the state's).
    release: Mutex<Option<Arc<AtomicBool>>>,
}

impl Conn {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn peer_addr(&self) -> io::Result<Option<std::net::SocketAddr>> {
        self.stream.peer_addr_ref()
    }

    /// Enters `phase`, starting its clock.
    pub(crate) fn enter(&self, phase: Phase) {
        let now = Instant::now();
        let mut s = self.state();
        s.phase = phase;
        s.since = now;
    }

    /// A new head starts: nothing of its body read yet.
    pub(crate) fn new_head(&self) {
        self.body_read.store(0, Ordering::Relaxed);
        self.start_request(BodyPlan::default());
    }

    /// Starts a request whose body is framed as `body`.
    pub(crate) fn start_request(&self, body: BodyPlan) {
        let mut s = self.state();
        s.body = body;
        s.close_after = false;
        s.hold_until = None;
        *self.release.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    pub(crate) fn expired(&self) -> Option<Expiry> {
        self.state().expired
    }

    /// Closes the connection from another thread: wakes its blocked read
    /// or write. A head that times out gets its read side shut only, so
    /// that its thread can still answer 408.
    pub(crate) fn expire(&self, why: Expiry) {
        {
            let mut s = self.state();
            // Only a head timeout (read side shut, a 408 on its way) may
            // still become a full close.
            if s.expired.is_some() && (!s.writable() || why == Expiry::HeadTimeout) {
                return;
            }
            s.expired = Some(why);
        }
        let how = if why == Expiry::HeadTimeout {
            Shutdown::Read
        } else {
            Shutdown::Both
        };
        let _ = self.stream.shutdown(how);
        self.cond.notify_all();
    }

    pub(crate) fn shutdown(&self, how: Shutdown) {
        let _ = self.stream.shutdown(how);
    }

    /// Whether the connection must close after this answer rather than
    /// drain what is left of the request body: a chunked body (its end
    /// cannot be known without parsing it), a body the client waits to be
    /// asked for (`Expect: 100-continue`, never asked), or more left than
    /// the drain limit.
    fn must_close(&self, s: &State) -> bool {
        let read = self.body_read.load(Ordering::Relaxed);
        let left = s.body.content_length.saturating_sub(read);
        s.body.chunked
            || (left > 0 && s.body.expect_continue && read == 0)
            || left > self.drain_limit
    }

    /// Body bytes still unread that the connection's thread must drain
    /// before the next head, or None when it must close instead.
    pub(crate) fn body_left(&self) -> Option<u64> {
        let s = self.state();
        if s.close_after || self.must_close(&s) {
            return None;
        }
        Some(
            s.body
                .content_length
                .saturating_sub(self.body_read.load(Ordering::Relaxed)),
        )
    }

    /// Holds the answer being written until `until`, or until `release`
    /// is set, whichever comes first.
    pub(crate) fn hold_until(&self, until: Instant, release: Option<Arc<AtomicBool>>) {
        let mut s = self.state();
        s.hold_until = Some(until);
        *self.release.lock().unwrap_or_else(PoisonError::into_inner) = release;
    }

    /// The current hold's release flag is set.
    fn released(&self) -> bool {
        self.release
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|r| r.load(Ordering::SeqCst))
    }

    /// Waits until every answer dispatched so far is written (`all`), or
    /// until none is pending but the one whose last bytes are being handed
    /// to the kernel right now (enough to read and dispatch the next
    /// request: its answer queues behind). False when the connection must
    /// close (an error, a timeout, or an answer that said so).
    pub(crate) fn wait_answers(&self, all: bool) -> bool {
        let mut s = self.state();
        loop {
            let done = if all {
                s.complete()
            } else {
                s.writers == 0 && s.out.is_empty() && s.hold_until.is_none()
            };
            if done || !s.writable() {
                break;
            }
            s = self.cond.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        !s.close_after && s.expired.is_none()
    }

    /// One non-blocking attempt to write `buf`; returns what was written.
    /// The connection's thread may be blocked in `read` meanwhile: a read
    /// already waiting stays blocking, one that starts in the window gets
    /// `WouldBlock` and retries (see `SharedStream`).
    fn write_now(&self, buf: &[u8]) -> usize {
        let stream = &self.stream;
        let _window = self
            .nonblocking
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if stream.set_nonblocking_ref(true).is_err() {
            return 0;
        }
        let mut written = 0;
        let mut broken = false;
        while written < buf.len() {
            match stream.write_ref(&buf[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        // A socket left non-blocking would fail its reads: close it too.
        if stream.set_nonblocking_ref(false).is_err() || broken {
            // The client is gone (EPIPE, ECONNRESET): no retries.
            self.expire(Expiry::Broken);
        }
        written
    }

    /// Queues this connection with the timer thread at `at`.
    fn schedule(self: &Arc<Self>, s: &mut State, at: Instant) {
        if !s.scheduled {
            s.scheduled = true;
            self.timer.add(at, Arc::clone(self));
        }
    }

    /// Nothing is left to write: if the answer is complete, note when, and
    /// wake whoever waits for it (the connection's thread, before its next
    /// head). Takes the lock so that the wake-up happens after its release.
    fn settle(&self, mut s: MutexGuard<'_, State>, now: Instant) {
        let done = s.complete();
        if done {
            s.done_at = now;
        }
        drop(s);
        if done {
            self.cond.notify_all();
        }
    }

    /// Run by the timer thread: writes what it can of `out` once any hold
    /// has passed. Returns when to try again, if ever.
    fn flush_deferred(self: &Arc<Self>, now: Instant) -> Option<Instant> {
        let mut s = self.state();
        if !s.writable() {
            s.out = Vec::new();
            s.hold_until = None;
            *self.release.lock().unwrap_or_else(PoisonError::into_inner) = None;
            s.scheduled = false;
            drop(s);
            self.cond.notify_all();
            return None;
        }
        if let Some(until) = s.hold_until {
            if until > now && !self.released() {
                return Some(until);
            }
            s.hold_until = None;
            *self.release.lock().unwrap_or_else(PoisonError::into_inner) = None;
            s.progress = now;
        }
        // The worker may still be rendering a held answer: it queues itself.
        if s.out.is_empty() {
            s.scheduled = false;
            self.settle(s, now);
            return None;
        }
        if s.flushing {
            // A worker is writing: it takes what is queued.
            s.scheduled = false;
            return None;
        }
        let out = std::mem::take(&mut s.out);
        s.flushing = true;
        drop(s);
        if !self.pump(out) {
            self.state().scheduled = false;
            return None;
        }
        let mut s = self.state();
        let retry = now + s.backoff;
        s.backoff = (s.backoff * 2).min(LAST_RETRY);
        Some(retry)
    }

    /// Writes `buf` without blocking, then whatever was queued meanwhile;
    /// the caller has set `flushing`. What does not fit goes back to the
    /// front of `out` and the timer thread is told. True if bytes are left.
    fn pump(self: &Arc<Self>, mut buf: Vec<u8>) -> bool {
        loop {
            let written = self.write_now(&buf);
            buf.drain(..written);
            let now = Instant::now();
            let mut s = self.state();
            if written > 0 {
                s.progress = now;
                s.backoff = FIRST_RETRY;
            }
            if !s.writable() {
                s.out = Vec::new();
                buf.clear();
            }
            if !buf.is_empty() {
                buf.extend_from_slice(&s.out);
                s.out = buf;
                s.flushing = false;
                self.schedule(&mut s, now + FIRST_RETRY);
                return true;
            }
            if s.out.is_empty() {
                s.flushing = false;
                self.settle(s, now);
                return false;
            }
            buf = std::mem::take(&mut s.out);
        }
    }

    /// Reads and discards `left` body bytes through `reader`, under the
    /// drain deadline. False when the connection must close.
    pub(crate) fn drain<R: Read>(&self, reader: &mut R, left: u64) -> bool {
        if left == 0 {
            return true;
        }
        self.enter(Phase::Draining);
        // On the heap: a stack array this size would be probed (touched) on
        // every call, adding 8 KiB to the RSS of every idle connection.
        let mut buf = vec![0u8; 8192];
        let mut left = left;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            match reader.read(&mut buf[..want]) {
                Ok(0) => return false,
                Ok(n) => left -= n as u64,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }
}

/// The read side of a connection, as its `BufReader` sees it.
pub(crate) struct SharedStream(pub(crate) Arc<Conn>);

impl Read for SharedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut tries = 0u32;
        loop {
            match self.0.stream.read_ref(buf) {
                // The watchdog shut the read side: the head came too slowly.
                Ok(0) if self.0.expired() == Some(Expiry::HeadTimeout) => {
                    return Err(io::Error::new(
                        ErrorKind::TimedOut,
                        "the request head did not arrive in time",
                    ))
                }
                // A writer made the socket non-blocking for one write: wait
                // for it to end, then read again.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    tries += 1;
                    drop(
                        self.0
                            .nonblocking
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner),
                    );
                    if tries > 1000 {
                        thread::sleep(Duration::from_millis(1));
                    }
                }
                other => return other,
            }
        }
    }
}

/// Counts the body bytes read by whoever holds the request's reader, so
/// that the connection's thread knows what is left to drain.
pub(crate) struct CountingReader<R> {
    inner: R,
    conn: Arc<Conn>,
}

impl<R> CountingReader<R> {
    pub(crate) fn new(inner: R, conn: &Arc<Conn>) -> Self {
        CountingReader {
            inner,
            conn: Arc::clone(conn),
        }
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.conn.body_read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Writes one answer. Everything is rendered in memory; `flush` (and the
/// drop) sends it with one non-blocking attempt, and leaves what did not
/// fit (or a held answer) to the timer thread, so a worker never waits for
/// a client.
pub(crate) struct AnswerWriter {
    conn: Arc<Conn>,
    buf: Vec<u8>,
    /// The final (non-1xx) status line has been seen and the close decided.
    decided: bool,
}

impl AnswerWriter {
    pub(crate) fn new(conn: &Arc<Conn>) -> AnswerWriter {
        conn.state().writers += 1;
        AnswerWriter {
            conn: Arc::clone(conn),
            buf: Vec::new(),
            decided: false,
        }
    }

    /// Sends what was rendered. `last`: the writer is being dropped; it
    /// stops counting as pending before its last write, so that the
    /// connection's thread, seeing the next request arrive the instant the
    /// client has its answer, need not wait for this thread to come back.
    fn send(&mut self, last: bool) {
        let conn = Arc::clone(&self.conn);
        let mut s = conn.state();
        if !self.decided && is_final_status_line(&self.buf) {
            self.decided = true;
            if conn.must_close(&s) {
                s.close_after = true;
                insert_connection_close(&mut self.buf);
            }
        }
        if last {
            s.writers -= 1;
        }
        let buf = std::mem::take(&mut self.buf);
        let now = Instant::now();
        if !buf.is_empty() {
            if s.out.is_empty() && !s.flushing && s.hold_until.is_none() && s.writable() {
                s.flushing = true;
                drop(s);
                conn.pump(buf);
                return;
            }
            // Earlier bytes queued, a write under way, or a held answer:
            // keep the order, queue behind.
            if s.out.is_empty() {
                s.progress = now;
            }
            s.out.extend_from_slice(&buf);
            if !s.flushing {
                let at = s.hold_until.unwrap_or(now);
                conn.schedule(&mut s, at);
            }
        }
        if last {
            if s.complete() {
                s.done_at = now;
                drop(s);
                conn.cond.notify_all();
            } else if s.writers == 0 && !s.flushing {
                // A held answer with nothing rendered (a body-less drop):
                // the timer thread still ends the hold.
                let at = s.hold_until.unwrap_or(now);
                conn.schedule(&mut s, at);
            }
        }
    }
}

impl Write for AnswerWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send(false);
        Ok(())
    }
}

impl Drop for AnswerWriter {
    fn drop(&mut self) {
        self.send(true);
    }
}

/// First retry of a write that did not progress, and the longest pause
/// between retries (doubling in between).
const FIRST_RETRY: Duration = Duration::from_millis(5);
const LAST_RETRY: Duration = Duration::from_millis(500);

/// The timer: connections with answers to write later (held, or what a
/// non-blocking write left).
pub(crate) struct Timer {
    queue: Mutex<Vec<(Instant, Arc<Conn>)>>,
    cond: Condvar,
}

impl Timer {
    fn add(&self, at: Instant, conn: Arc<Conn>) {
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let earliest = q.iter().all(|(t, _)| at < *t);
        q.push((at, conn));
        drop(q);
        if earliest {
            self.cond.notify_one();
        }
    }
}

fn is_final_status_line(buf: &[u8]) -> bool {
    // "HTTP/1.1 200 ..."
    buf.len() > 9 && buf.starts_with(b"HTTP/") && buf[9] != b'1'
}

/// Adds `Connection: close` after the status line (tiny_http's `Response`
/// refuses a `Connection` header from the handler).
fn insert_connection_close(buf: &mut Vec<u8>) {
    if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
        let at = end + 2;
        buf.splice(at..at, b"Connection: close\r\n".iter().copied());
    }
}

/// Counters of the connection layer; see `Server::connection_stats`.
#[derive(Default)]
pub(crate) struct Counters {
    pub accepted: AtomicU64,
    pub rejected_cap: AtomicU64,
    pub rejected_spawn: AtomicU64,
    pub accept_errors: AtomicU64,
    pub evicted: AtomicU64,
    pub idle_timeouts: AtomicU64,
    pub head_timeouts: AtomicU64,
    pub write_timeouts: AtomicU64,
    pub drain_timeouts: AtomicU64,
}

/// A snapshot of the connection layer's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Connections open now.
    pub open: usize,
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
    /// Connections closed after idling for the idle timeout.
    pub idle_timeouts: u64,
    /// Connections closed because a head took longer than its deadline.
    pub head_timeouts: u64,
    /// Connections closed because a write made no progress in time.
    pub write_timeouts: u64,
    /// Connections closed because an unread body did not come in time.
    pub drain_timeouts: u64,
}

/// Every open connection of one server.
pub(crate) struct Table {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    pub(crate) limits: ConnectionLimits,
    pub(crate) counters: Counters,
    open: AtomicUsize,
    timer: Arc<Timer>,
}

impl Table {
    pub(crate) fn new(limits: ConnectionLimits) -> Arc<Table> {
        Arc::new(Table {
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            limits,
            counters: Counters::default(),
            open: AtomicUsize::new(0),
            timer: Arc::new(Timer {
                queue: Mutex::new(Vec::new()),
                cond: Condvar::new(),
            }),
        })
    }

    fn conns(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
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
        let now = Instant::now();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            id,
            stream,
            state: Mutex::new(State {
                phase: Phase::Idle,
                since: now,
                writers: 0,
                out: Vec::new(),
                flushing: false,
                progress: now,
                done_at: now,
                scheduled: false,
                backoff: FIRST_RETRY,
                hold_until: None,
                close_after: false,
                body: BodyPlan::default(),
                expired: None,
            }),
            cond: Condvar::new(),
            nonblocking: Mutex::new(()),
            body_read: AtomicU64::new(0),
            drain_limit: self.limits.drain_limit,
            timer: Arc::clone(&self.timer),
            release: Mutex::new(None),
        });
        conns.insert(id, Arc::clone(&conn));
        self.open.store(conns.len(), Ordering::Relaxed);
        Some(conn)
    }

    /// Forgets a connection whose thread is ending (or never started).
    pub(crate) fn remove(&self, conn: &Conn) {
        let mut conns = self.conns();
        conns.remove(&conn.id);
        self.open.store(conns.len(), Ordering::Relaxed);
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

    pub(crate) fn stats(&self) -> ConnectionStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ConnectionStats {
            open: self.open.load(Ordering::Relaxed),
            accepted: get(&c.accepted),
            rejected_cap: get(&c.rejected_cap),
            rejected_spawn: get(&c.rejected_spawn),
            accept_errors: get(&c.accept_errors),
            evicted: get(&c.evicted),
            idle_timeouts: get(&c.idle_timeouts),
            head_timeouts: get(&c.head_timeouts),
            write_timeouts: get(&c.write_timeouts),
            drain_timeouts: get(&c.drain_timeouts),
        }
    }

    /// Closes every connection whose phase has outlived its limit.
    fn enforce(&self, now: Instant) {
        let conns: Vec<Arc<Conn>> = self.conns().values().cloned().collect();
        let l = &self.limits;
        let late = |limit: Option<Duration>, from: Instant| {
            limit.map_or(false, |d| now.saturating_duration_since(from) > d)
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
/// come (a head, or a body nobody reads). Never one being answered.
fn pick_victim(conns: &HashMap<u64, Arc<Conn>>) -> Option<u64> {
    let mut idle: Option<(Instant, u64)> = None;
    let mut incomplete: Option<(Instant, u64)> = None;
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
            if s.writers == 0 && stalled.map_or(true, |(t, _)| s.progress < t) {
                stalled = Some((s.progress, *id));
            }
            continue;
        }
        let slot = match s.phase {
            Phase::Idle => &mut idle,
            Phase::ReadingHead | Phase::Draining => &mut incomplete,
            _ => continue,
        };
        if slot.map_or(true, |(t, _)| s.since < t) {
            *slot = Some((s.since, *id));
        }
    }
    idle.or(incomplete).or(stalled).map(|(_, id)| id)
}

/// Starts the server's timer thread: it writes deferred answers (held
/// ones when their hold ends, and what a non-blocking write left, retried
/// with a back-off) and enforces the limits; it ends once `closed` is set.
pub(crate) fn spawn_watchdog(table: Arc<Table>, closed: Arc<AtomicBool>) -> io::Result<()> {
    let l = &table.limits;
    let shortest = [
        l.idle_timeout,
        l.head_timeout,
        l.write_timeout,
        l.drain_timeout,
    ]
    .iter()
    .flatten()
    .min()
    .copied();
    // A limit is enforced at most a quarter of itself late (and at most
    // 250 ms): a scan of a few thousand entries.
    let period = shortest.map_or(Duration::from_millis(250), |d| {
        (d / 4).clamp(Duration::from_millis(10), Duration::from_millis(250))
    });
    let enforce = shortest.is_some();
    thread::Builder::new()
        .name("http-watchdog".into())
        .spawn(move || {
            let timer = Arc::clone(&table.timer);
            let mut next_scan = Instant::now() + period;
            while !closed.load(Ordering::Relaxed) {
                let due: Vec<Arc<Conn>> = {
                    let mut q = timer.queue.lock().unwrap_or_else(PoisonError::into_inner);
                    let now = Instant::now();
                    let next = q
                        .iter()
                        .map(|(t, _)| *t)
                        .min()
                        .map_or(next_scan, |t| t.min(next_scan));
                    if next > now {
                        q = timer
                            .cond
                            .wait_timeout(q, next - now)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                    }
                    let now = Instant::now();
                    // A hold whose release flag was set is due at once.
                    let (due, later): (Vec<_>, Vec<_>) =
                        q.drain(..).partition(|(t, c)| *t <= now || c.released());
                    *q = later;
                    due.into_iter().map(|(_, c)| c).collect()
                };
                let now = Instant::now();
                for conn in due {
                    if let Some(again) = conn.flush_deferred(now) {
                        timer
                            .queue
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push((again, conn));
                    }
                }
                if now >= next_scan {
                    if enforce {
                        table.enforce(now);
                    }
                    next_scan = now + period;
                }
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let head = admit(Phase::ReadingHead);
        let busy = admit(Phase::Busy);
        let _busy_writer = AnswerWriter::new(&busy); // a request in progress
        let idle = admit(Phase::Idle);
        // The fourth evicts the idle one, though the head is older.
        let fourth = admit(Phase::Busy);
        let _fourth_writer = AnswerWriter::new(&fourth);
        assert_eq!(idle.expired(), Some(Expiry::Evicted));
        assert_eq!(head.expired(), None);
        // The fifth evicts the head; the sixth finds only busy ones.
        let _fifth = admit(Phase::Busy);
        assert_eq!(head.expired(), Some(Expiry::Evicted));
        assert_eq!(busy.expired(), None);
        let _fifth_writer = AnswerWriter::new(&_fifth);
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

    #[test]
    fn connection_close_goes_after_the_status_line() {
        let mut buf = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec();
        insert_connection_close(&mut buf);
        assert_eq!(
            buf,
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".to_vec()
        );
        assert!(is_final_status_line(b"HTTP/1.1 413 Payload"));
        assert!(!is_final_status_line(b"HTTP/1.1 100 Continue"));
    }
}
