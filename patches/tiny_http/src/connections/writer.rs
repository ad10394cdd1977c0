//! Patch (chaos-backend): the writer of answers. An answer is rendered in
//! memory and sent with one non-blocking attempt; what does not fit, and
//! answers held back on purpose, are left to the timer (`timer.rs`, run by
//! the watchdog's thread), which writes them without blocking either,
//! retried with a back-off. A worker never waits for a client.
//!
//! What waits to be written is an `Output`: rendered bytes of its own, and
//! bodies shared between answers (`Arc<[u8]>`, queued, not copied). Every
//! owned byte waiting anywhere counts against the server's `Budget`.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, IoSlice, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use super::conn::{Conn, Expiry, State};

/// Bytes of rendered answers not yet written, all connections of a server
/// together (`ConnectionLimits::answer_budget`).
pub(crate) struct Budget {
    queued: AtomicUsize,
    limit: usize,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            queued: AtomicUsize::new(0),
            limit,
        })
    }

    /// Counts `n` more bytes; true if the total is now past the limit.
    fn add(&self, n: usize) -> bool {
        self.queued.fetch_add(n, Ordering::Relaxed) + n > self.limit
    }

    fn sub(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
    }

    /// Bytes counted now.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Bytes past the limit now (0 within it).
    pub(crate) fn excess(&self) -> usize {
        self.queued().saturating_sub(self.limit)
    }
}

enum Chunk {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(a) => a,
        }
    }
}

/// Bytes waiting to be written, in order: rendered ones (counted against
/// the budget until they are written or dropped) and shared bodies.
pub(crate) struct Output {
    chunks: VecDeque<Chunk>,
    /// Bytes of the first chunk already written.
    front: usize,
    /// Bytes of the owned chunks, counted against `budget`.
    owned: usize,
    budget: Arc<Budget>,
}

impl Output {
    pub(super) fn new(budget: &Arc<Budget>) -> Output {
        Output {
            chunks: VecDeque::new(),
            front: 0,
            owned: 0,
            budget: Arc::clone(budget),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Rendered bytes waiting, counted against the budget.
    pub(super) fn owned(&self) -> usize {
        self.owned
    }

    /// Queues rendered bytes; true if the budget is now exceeded.
    fn push_owned(&mut self, bytes: Vec<u8>) -> bool {
        if bytes.is_empty() {
            return false;
        }
        self.owned += bytes.len();
        let over = self.budget.add(bytes.len());
        self.chunks.push_back(Chunk::Owned(bytes));
        over
    }

    fn push_shared(&mut self, body: Arc<[u8]>) {
        if !body.is_empty() {
            self.chunks.push_back(Chunk::Shared(body));
        }
    }

    /// Moves everything of `later` behind what is here.
    fn append(&mut self, mut later: Output) {
        if self.chunks.is_empty() {
            self.front = later.front;
        } else {
            debug_assert_eq!(
                later.front, 0,
                "only the first output may be partly written"
            );
        }
        self.chunks.append(&mut later.chunks);
        self.owned += later.owned;
        // Its bytes are counted here now.
        later.owned = 0;
    }

    /// The next bytes to write, as slices for one vectored write.
    fn slices(&self) -> Vec<IoSlice<'_>> {
        self.chunks
            .iter()
            .take(64)
            .enumerate()
            .map(|(i, c)| IoSlice::new(&c.bytes()[if i == 0 { self.front } else { 0 }..]))
            .collect()
    }

    /// `n` bytes were written: drops the chunks that are all written.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(first) = self.chunks.front() else {
                break;
            };
            let left = first.bytes().len() - self.front;
            if n < left {
                self.front += n;
                break;
            }
            n -= left;
            self.front = 0;
            if let Some(Chunk::Owned(v)) = self.chunks.pop_front() {
                self.owned -= v.len();
                self.budget.sub(v.len());
            }
        }
    }

    /// Drops everything waiting.
    pub(super) fn clear(&mut self) {
        self.chunks.clear();
        self.front = 0;
        self.budget.sub(self.owned);
        self.owned = 0;
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        self.budget.sub(self.owned);
    }
}

/// First retry of a write that did not progress, and the longest pause
/// between retries (doubling in between).
pub(super) const FIRST_RETRY: Duration = Duration::from_millis(5);
const LAST_RETRY: Duration = Duration::from_millis(500);

/// Writes one answer. Everything is rendered in memory; `flush` (and the
/// drop) sends it with one non-blocking attempt, and leaves what did not
/// fit (or a held answer) to the timer, so a worker never waits for a
/// client.
pub(crate) struct AnswerWriter {
    conn: Arc<Conn>,
    buf: Vec<u8>,
    /// A body shared between answers, to go after `buf`.
    shared: Option<Arc<[u8]>>,
    /// The final (non-1xx) status line has been seen and the close decided.
    decided: bool,
}

impl AnswerWriter {
    pub(crate) fn new(conn: &Arc<Conn>) -> AnswerWriter {
        conn.state().writers += 1;
        AnswerWriter {
            conn: Arc::clone(conn),
            buf: Vec::new(),
            shared: None,
            decided: false,
        }
    }

    /// Queues `body` after what was rendered so far, without copying it;
    /// it is sent with the rest (`flush`, or the drop).
    pub(crate) fn write_shared(&mut self, body: Arc<[u8]>) {
        if self.shared.is_some() {
            self.send(false);
        }
        self.shared = Some(body);
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
        let mut rendered = Output::new(&conn.budget);
        let over = rendered.push_owned(std::mem::take(&mut self.buf));
        if let Some(body) = self.shared.take() {
            rendered.push_shared(body);
        }
        if over {
            // Past the budget: the watchdog closes the slowest readers.
            conn.timer.shed_soon();
        }
        let now = Instant::now();
        if !rendered.is_empty() {
            if s.out.is_empty() && !s.flushing && s.hold_until.is_none() && s.writable() {
                s.flushing = true;
                drop(s);
                conn.pump(rendered);
                return;
            }
            // Earlier bytes queued, a write under way, or a held answer:
            // keep the order, queue behind.
            if s.out.is_empty() {
                s.progress = now;
            }
            s.out.append(rendered);
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
                // the timer still ends the hold.
                let at = s.hold_until.unwrap_or(now);
                conn.schedule(&mut s, at);
            }
        }
    }
}

impl Write for AnswerWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.shared.is_some() {
            // Keep the order: what was rendered and the shared body first.
            self.send(false);
        }
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

impl Conn {
    /// One non-blocking attempt to write `buf`; returns what was written.
    ///
    /// `O_NONBLOCK` belongs to the socket, which the connection's thread
    /// may be reading meanwhile: a read already waiting stays blocking, one
    /// that starts inside this window gets `WouldBlock`, waits for the
    /// window to close and reads again (see `SharedStream`).
    fn write_now(&self, buf: &mut Output) -> usize {
        let stream = &self.stream;
        let _window = self.window();
        if stream.set_nonblocking(true).is_err() {
            return 0;
        }
        let mut written = 0;
        let mut broken = false;
        while !buf.is_empty() {
            match stream.write_vectored_ref(&buf.slices()) {
                Ok(0) => break,
                Ok(n) => {
                    written += n;
                    buf.advance(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        // A socket left non-blocking would fail its reads: close it too.
        let restored = stream.set_nonblocking(false).is_ok();
        if !restored || broken {
            // The client is gone (EPIPE, ECONNRESET): no retries.
            self.expire(Expiry::Broken);
        }
        self.windows_closed.fetch_add(1, Ordering::Release);
        written
    }

    /// Queues this connection with the timer at `at`.
    pub(super) fn schedule(self: &Arc<Self>, s: &mut State, at: Instant) {
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
        // Patch (chaos-backend): a request held without an answer
        // (`Request::end_unanswered`) ends with the connection.
        let unanswered = done && s.unanswered;
        if done {
            s.done_at = now;
            if s.last || s.close_after {
                // The connection's last answer is out: end the stream now
                // (the client waits for it), not once the connection's
                // thread has woken up to close.
                let _ = self.stream.shutdown(std::net::Shutdown::Write);
            }
        }
        drop(s);
        if unanswered {
            self.expire(Expiry::Unanswered);
        } else if done {
            self.cond.notify_all();
        }
    }

    /// Run by the timer: writes what it can of `out` once any hold has
    /// passed. Returns when to try again, if ever.
    pub(super) fn flush_deferred(self: &Arc<Self>, now: Instant) -> Option<Instant> {
        let mut s = self.state();
        if !s.writable() {
            s.out.clear();
            self.end_hold(&mut s);
            s.scheduled = false;
            drop(s);
            self.cond.notify_all();
            return None;
        }
        if let Some(until) = s.hold_until {
            if until > now && !self.released() {
                return Some(until);
            }
            self.end_hold(&mut s);
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
        let out = std::mem::replace(&mut s.out, Output::new(&self.budget));
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
    /// front of `out` and the timer is told. True if bytes are left.
    fn pump(self: &Arc<Self>, mut buf: Output) -> bool {
        loop {
            let written = self.write_now(&mut buf);
            let now = Instant::now();
            let mut s = self.state();
            if written > 0 {
                s.progress = now;
                s.backoff = FIRST_RETRY;
            }
            if !s.writable() {
                s.out.clear();
                buf.clear();
            }
            if !buf.is_empty() {
                let later = std::mem::replace(&mut s.out, Output::new(&self.budget));
                buf.append(later);
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
            buf = std::mem::replace(&mut s.out, Output::new(&self.budget));
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

#[cfg(test)]
mod tests {
    use super::*;

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
