//! Patch (chaos-backend): the accept loop, and a handle on its liveness.
//!
//! Upstream ended the loop for good on any accept error (tiny-http#283)
//! and started connection threads with `thread::spawn` (`TaskPool`), which
//! panics when no thread can be had: the server was then deaf, and nothing
//! told its owner. Here every connection goes through the table (cap with
//! eviction, timeouts; see `connections`), an accept error is counted and
//! followed by a short back-off (and, for EMFILE/ENFILE, an eviction to
//! free an fd), and a connection whose thread cannot be started is closed
//! and counted. Connections are served by a pool of reused threads
//! (`connections::Pool`), never more than the cap. Should the loop still
//! end (the server is dropped, or a panic), `AcceptThread` says so, so
//! that the owner need not guess which of the process's threads it was.

use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::client::ClientConnection;
use crate::connection::Listener;
use crate::connections::{Pool, PoolLimits, Table};
use crate::util::MessagesQueue;
use crate::{Message, ServerOptions};

/// The shortest and longest pause after a failed `accept`, doubled on each
/// failure in a row.
const BACKOFF_MIN: Duration = Duration::from_millis(1);
const BACKOFF_MAX: Duration = Duration::from_millis(100);

/// Whether a server's accept loop still runs (`Server::accept_thread`).
/// Cloned handles see the same loop; they outlive the server.
#[derive(Clone, Debug)]
pub struct AcceptThread {
    ended: Arc<(Mutex<bool>, Condvar)>,
}

impl AcceptThread {
    fn new() -> AcceptThread {
        AcceptThread {
            ended: Arc::new((Mutex::new(false), Condvar::new())),
        }
    }

    /// Never held with any other lock.
    fn ended(&self) -> MutexGuard<'_, bool> {
        self.ended.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True until the accept loop has ended (returned or panicked).
    pub fn is_alive(&self) -> bool {
        !*self.ended()
    }

    /// Blocks until the accept loop has ended.
    pub fn wait(&self) {
        let mut ended = self.ended();
        while !*ended {
            ended = self
                .ended
                .1
                .wait(ended)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Blocks until the accept loop has ended, at most `timeout`; true if
    /// it has.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut ended = self.ended();
        while !*ended {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            ended = self
                .ended
                .1
                .wait_timeout(ended, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

/// Held by the accept loop's thread: marks the loop ended when dropped,
/// which happens however the thread ends, a panic included.
struct EndsOnDrop(AcceptThread);

impl Drop for EndsOnDrop {
    fn drop(&mut self) {
        *self.0.ended() = true;
        self.0.ended.1.notify_all();
    }
}

/// Starts the accept loop on `listener`; it ends once `close` is set.
pub(crate) fn spawn(
    listener: Listener,
    table: Arc<Table>,
    options: Arc<ServerOptions>,
    messages: Arc<MessagesQueue<Message>>,
    close: Arc<AtomicBool>,
) -> io::Result<AcceptThread> {
    let alive = AcceptThread::new();
    let ends = EndsOnDrop(alive.clone());
    let limits = &table.limits;
    let pool = Pool::new(
        PoolLimits {
            max_threads: limits.max_connections,
            min: limits.min_threads,
            max_idle: limits.max_idle_threads,
            idle_timeout: limits.thread_idle_timeout,
            stack_size: limits.thread_stack_size,
        },
        options.thread_idle.clone(),
    );
    thread::Builder::new()
        .name("http-accept".into())
        .spawn(move || {
            let _ends = ends;
            // Dropped with the loop: its idle threads end.
            let pool = pool;
            let mut backoff = BACKOFF_MIN;
            log::debug!("Running accept thread");
            while !close.load(Relaxed) {
                let sock = match listener.accept() {
                    Ok((sock, _)) => {
                        backoff = BACKOFF_MIN;
                        sock
                    }
                    Err(e) => {
                        table.counters.accept_errors.fetch_add(1, Relaxed);
                        log::warn!("Error accepting new client: {}", e);
                        // EMFILE, ENFILE: free an fd for the next one.
                        if matches!(e.raw_os_error(), Some(23) | Some(24)) {
                            table.evict_one();
                        }
                        thread::sleep(backoff);
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                };
                if close.load(Relaxed) {
                    break;
                }
                let Some(conn) = table.admit(sock) else {
                    continue;
                };
                let client = ClientConnection::new(conn, Arc::clone(&table), Arc::clone(&options));
                serve(&pool, client, &table, &messages);
            }
            log::debug!("Terminating accept thread");
        })?;
    Ok(alive)
}

/// Has a pool thread read `client`'s requests and queue them for the
/// workers. When no thread can be started the connection is dropped (its
/// socket closes, the table forgets it) and counted.
fn serve(
    pool: &Pool,
    client: ClientConnection,
    table: &Table,
    messages: &Arc<MessagesQueue<Message>>,
) {
    let messages = Arc::clone(messages);
    let spawned = pool.run(Box::new(move || {
        for rq in client {
            messages.push(rq.into());
        }
    }));
    if let Err(e) = spawned {
        table.counters.rejected_spawn.fetch_add(1, Relaxed);
        log::warn!("cannot start a connection thread: {}", e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handle_says_the_loop_ended_when_it_returns_or_panics() {
        for panics in [false, true] {
            let alive = AcceptThread::new();
            let ends = EndsOnDrop(alive.clone());
            assert!(alive.is_alive());
            assert!(!alive.wait_timeout(Duration::from_millis(20)));
            let thread = thread::spawn(move || {
                let _ends = ends;
                assert!(!panics, "a panic in the accept loop");
            });
            assert!(
                alive.wait_timeout(Duration::from_secs(10)),
                "panics: {}",
                panics
            );
            assert!(!alive.is_alive());
            alive.wait(); // returns at once
            assert_eq!(thread.join().is_err(), panics);
        }
    }
}
