//! Patch (chaos-backend): one connection: its socket, what it is doing and
//! since when, what is left of its request's body, and the hold of its
//! answer. Writing answers is in `writer.rs`.

use std::convert::TryFrom;
use std::io::{self, ErrorKind, Read};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::lock;
use super::timer::Timer;
use super::writer::{Budget, Output, FIRST_RETRY};
use crate::connection::Connection;

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
    /// Closed to bring the answers waiting to be written back within the
    /// server's budget: its writes had made no progress for longest.
    Shed,
    IdleTimeout,
    HeadTimeout,
    WriteTimeout,
    DrainTimeout,
    /// A write failed: the client is gone.
    Broken,
    /// Closed on purpose without an answer (`Request::end_unanswered`).
    Unanswered,
}

/// How the body of the request being answered is framed, to know what is
/// left to drain once it is answered.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BodyPlan {
    pub content_length: u64,
    pub chunked: bool,
    pub expect_continue: bool,
}

/// What a connection is doing, behind `Conn::state`.
pub(super) struct State {
    pub(super) phase: Phase,
    pub(super) since: Instant,
    /// Answer writers alive (0 or 1 but for tiny_http's own error answers).
    pub(super) writers: usize,
    /// A worker has taken the request (`Server::recv`): until then it waits
    /// in the queue, and the connection may be evicted at the cap.
    pub(super) taken: bool,
    /// Requests started on this connection so far.
    pub(super) requests: u64,
    /// Answers not written yet, in order.
    pub(super) out: Output,
    /// A thread (a worker or the timer's) holds bytes taken from `out` and
    /// is writing them.
    pub(super) flushing: bool,
    /// Last time bytes of `out` went out (or `out` was filled).
    pub(super) progress: Instant,
    /// Last time every answer was complete.
    pub(super) done_at: Instant,
    /// Queued with the timer.
    pub(super) scheduled: bool,
    /// Next retry delay of a write that did not progress.
    pub(super) backoff: Duration,
    pub(super) hold_until: Option<Instant>,
    pub(super) close_after: bool,
    /// The request being answered is the connection's last (`Connection:
    /// close`, HTTP/1.0): once its answer is all written, the writer sends
    /// the end of the stream itself, without waiting for the connection's
    /// thread to wake up and close.
    pub(super) last: bool,
    pub(super) body: BodyPlan,
    pub(super) expired: Option<Expiry>,
    /// The request is ended without an answer (`Request::end_unanswered`):
    /// once its hold, if any, is over, the connection closes.
    pub(super) unanswered: bool,
}

impl State {
    fn new(now: Instant, budget: &Arc<Budget>) -> State {
        State {
            phase: Phase::Idle,
            since: now,
            writers: 0,
            taken: false,
            requests: 0,
            out: Output::new(budget),
            flushing: false,
            progress: now,
            done_at: now,
            scheduled: false,
            backoff: FIRST_RETRY,
            hold_until: None,
            close_after: false,
            last: false,
            body: BodyPlan::default(),
            expired: None,
            unanswered: false,
        }
    }

    /// Every answer dispatched so far is written (or abandoned).
    pub(super) fn complete(&self) -> bool {
        self.writers == 0 && self.out.is_empty() && !self.flushing && self.hold_until.is_none()
    }

    /// An answer is rendered and not all written yet (held, or partly
    /// written), and the connection can still take it.
    pub(super) fn unwritten(&self) -> bool {
        self.writable() && (!self.out.is_empty() || self.flushing || self.hold_until.is_some())
    }

    /// Answers can still be written: not closed, or only its read side
    /// (a head that timed out still gets its 408).
    pub(super) fn writable(&self) -> bool {
        matches!(self.expired, None | Some(Expiry::HeadTimeout))
    }
}

/// One connection: its socket and what it is doing.
pub(crate) struct Conn {
    pub(super) id: u64,
    pub(super) stream: Connection,
    state: Mutex<State>,
    /// Signalled when answers complete or the connection expires; waited
    /// on with `state`.
    pub(super) cond: Condvar,
    /// Held while a writer has the socket non-blocking (`Conn::write_now`).
    nonblocking: Mutex<()>,
    /// Non-blocking windows closed so far: a read that met `WouldBlock`
    /// retries only if one closed since it began (see `SharedStream`).
    pub(super) windows_closed: AtomicU64,
    /// Body bytes of the current request read so far (by anyone).
    pub(super) body_read: AtomicU64,
    drain_limit: u64,
    pub(super) timer: Arc<Timer>,
    /// The server's budget of rendered answers not yet written.
    pub(super) budget: Arc<Budget>,
    /// Ends the current hold early once set (`Request::respond_held`): the
    /// timer looks at it on every tick.
    release: Mutex<Option<Arc<AtomicBool>>>,
    /// Closed (`expire`), read by the timer without the state's lock: a
    /// held answer of a closed connection is due at once.
    closed: AtomicBool,
}

impl Conn {
    pub(super) fn new(
        id: u64,
        stream: Connection,
        drain_limit: u64,
        timer: Arc<Timer>,
        budget: Arc<Budget>,
    ) -> Conn {
        Conn {
            id,
            stream,
            state: Mutex::new(State::new(Instant::now(), &budget)),
            cond: Condvar::new(),
            nonblocking: Mutex::new(()),
            windows_closed: AtomicU64::new(0),
            body_read: AtomicU64::new(0),
            drain_limit,
            timer,
            budget,
            release: Mutex::new(None),
            closed: AtomicBool::new(false),
        }
    }

    /// Lock order: see `connections`.
    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The non-blocking window of a writer (`Conn::write_now`). Lock order:
    /// see `connections`.
    pub(super) fn window(&self) -> MutexGuard<'_, ()> {
        lock(&self.nonblocking)
    }

    /// Lock order: see `connections`.
    fn release(&self) -> MutexGuard<'_, Option<Arc<AtomicBool>>> {
        lock(&self.release)
    }

    /// Waits on `cond` with the state's guard.
    pub(super) fn wait<'a>(&self, s: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.cond.wait(s).unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn peer_addr(&self) -> io::Result<Option<std::net::SocketAddr>> {
        self.stream.peer_addr()
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
        self.start_request(BodyPlan::default(), false);
    }

    /// Starts a request whose body is framed as `body`; `last` when no
    /// request follows it on this connection.
    pub(crate) fn start_request(&self, body: BodyPlan, last: bool) {
        let mut s = self.state();
        s.body = body;
        s.last = last;
        s.taken = false;
        s.requests += 1;
        s.close_after = false;
        s.unanswered = false;
        s.hold_until = None;
        *self.release() = None;
    }

    pub(crate) fn expired(&self) -> Option<Expiry> {
        self.state().expired
    }

    /// A worker takes the request waiting in the queue; false if the
    /// connection was closed meanwhile (evicted at the cap), when its
    /// request is not worth answering.
    pub(crate) fn take(&self) -> bool {
        let mut s = self.state();
        s.taken = true;
        s.writable()
    }

    /// Closes the connection from another thread: wakes its blocked read
    /// or write, and drops the answers waiting to be written. A head that
    /// times out gets its read side shut only, so that its thread can still
    /// answer 408.
    pub(crate) fn expire(&self, why: Expiry) {
        {
            let mut s = self.state();
            // Only a head timeout (read side shut, a 408 on its way) may
            // still become a full close.
            if s.expired.is_some() && (!s.writable() || why == Expiry::HeadTimeout) {
                return;
            }
            s.expired = Some(why);
            if !s.writable() {
                // Nothing more will be written: free what waits at once.
                s.out.clear();
                self.closed.store(true, Ordering::SeqCst);
            }
        }
        let how = if why == Expiry::HeadTimeout {
            Shutdown::Read
        } else {
            Shutdown::Both
        };
        let _ = self.stream.shutdown(how);
        self.cond.notify_all();
    }

    /// Closed for good: nothing more will be written.
    pub(super) fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// The request being answered gets no answer: once its hold (if any)
    /// is over, the connection closes (`Request::end_unanswered`).
    pub(crate) fn leave_unanswered(&self) {
        self.state().unanswered = true;
    }

    /// Closes the connection without an answer, after `abort` (the owner's
    /// hook that resets a TCP socket) when given.
    pub(crate) fn close_unanswered(
        &self,
        abort: Option<fn(&std::net::TcpStream) -> io::Result<()>>,
    ) {
        if let (Some(abort), Some(tcp)) = (abort, self.stream.tcp()) {
            // A socket the hook could not reset is closed all the same.
            let _ = abort(tcp);
        }
        self.expire(Expiry::Unanswered);
    }

    /// On the connection's thread as it ends: a request held without an
    /// answer keeps the connection open (a client that sent `Connection:
    /// close` waits too) until the hold is over (its end closes the
    /// socket, which ends this read) or until the client gives up (EOF),
    /// then closes it. Whatever the client sends meanwhile is discarded.
    pub(crate) fn wait_unanswered(&self) {
        if !self.state().unanswered {
            return;
        }
        let mut buf = [0u8; 512];
        loop {
            match self.stream.read_ref(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.expire(Expiry::Unanswered);
    }

    pub(crate) fn shutdown(&self, how: Shutdown) {
        let _ = self.stream.shutdown(how);
    }

    /// Whether the connection must close after this answer rather than
    /// drain what is left of the request body: a chunked body (its end
    /// cannot be known without parsing it), a body the client waits to be
    /// asked for (`Expect: 100-continue`, never asked), or more left than
    /// the drain limit.
    pub(super) fn must_close(&self, s: &State) -> bool {
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
        *self.release() = release;
    }

    /// Ends the hold (its time has come, or the connection is closed).
    pub(super) fn end_hold(&self, s: &mut State) {
        s.hold_until = None;
        *self.release() = None;
    }

    /// The current hold's release flag is set.
    pub(super) fn released(&self) -> bool {
        self.release()
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
                // A request left unanswered has nothing to write: the caller
                // waits for its end another way (`wait_unanswered`).
                s.complete() || (s.unanswered && s.writers == 0)
            } else {
                s.writers == 0 && s.out.is_empty() && s.hold_until.is_none()
            };
            if done || !s.writable() {
                break;
            }
            s = self.wait(s);
        }
        !s.close_after && s.expired.is_none()
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
