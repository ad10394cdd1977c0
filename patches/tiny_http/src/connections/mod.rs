//! Patch (chaos-backend): the connection layer: one socket per connection,
//! a table of the open ones, the writer of answers, and one watchdog thread
//! per server.
//!
//! Upstream tiny_http 0.12 gives every connection a thread and two fds
//! (`try_clone`), never times a connection out (tiny-http#143) and never
//! bounds how many there are (tiny-http#221). Here:
//!
//! - every connection is one socket (`Conn`), shared by its reader, the
//!   writer of its answers and the table: one fd per connection;
//! - the table knows what each connection is doing (`Phase`) and since
//!   when; the watchdog enforces the idle timeout, the whole-head deadline,
//!   the write-progress timeout and the body-drain deadline by shutting the
//!   socket down, which wakes the blocked read or write at once (no
//!   `SO_RCVTIMEO`: on a listener it also times out `accept`);
//! - at the cap a new connection evicts the oldest idle one, else the
//!   oldest one still sending a head or a body nobody reads, else the one
//!   whose rendered answer has waited longest, else the one whose request
//!   has waited longest for a worker; never one a worker is answering;
//! - connections are served by a pool of reused threads, never more than
//!   the cap, counted until they end (`pool`);
//! - workers never block on a client: an answer is rendered in memory and
//!   written with one non-blocking attempt; what does not fit, and answers
//!   held back on purpose (`Request::respond_held`), are written by the
//!   watchdog's thread, without blocking, retried with a back-off under the
//!   write-progress timeout (upstream's `SequentialWriter` made every worker
//!   with a later answer on the same connection wait behind a stuck write);
//!   a body shared between answers is queued, not copied, and the rendered
//!   bytes waiting on every connection have one budget, past which the
//!   slowest readers are closed;
//! - one request in flight per connection: its thread waits for the first
//!   byte of the next head at once (so that a plain keep-alive request costs
//!   no extra thread wake-up), but reads that head only once the previous
//!   answer is written.
//!
//! The parts, one file each:
//!
//! | part | what it owns |
//! |---|---|
//! | `conn` | one connection: its socket, its `Phase` and clock, what is left of its request's body, the hold of its answer |
//! | `pool` | the threads that serve connections, reused |
//! | `stream` | what the request reader reads through: `SharedStream`, `CountingReader` |
//! | `writer` | `AnswerWriter`, the `Output` of answers waiting and their `Budget`, and writing a connection's answers without blocking |
//! | `timer` | the queue of connections with answers to write later |
//! | `table` | every open connection: admission at the cap, eviction, timeouts, shedding past the budget |
//! | `stats` | the counters behind `Server::connection_stats` |
//! | `watchdog` | the one thread per server that runs the timer and the timeouts |
//!
//! # Lock order
//!
//! There are five mutexes. A thread that holds one of them only ever takes
//! one further down this list, never one further up, so no two threads can
//! wait for each other:
//!
//! 1. `Table::conns`, the open connections;
//! 2. `Conn::nonblocking`, held by a writer for its non-blocking window;
//! 3. `Conn::state`, what a connection is doing (with its condvar);
//! 4. `Timer::queue`, the deferred writes (with its condvar);
//! 5. `Conn::release`, the flag that ends a hold early.
//!
//! Every place that takes one of these locks goes through a helper that
//! says "lock order: see `connections`" (`Table::conns`, `Conn::state`,
//! `Conn::window`, `Timer::queue`, `Conn::release`). The pool's lock
//! (`pool::Shared::state`) is never held with any other.

mod conn;
mod pool;
mod stats;
mod stream;
mod table;
mod timer;
mod watchdog;
mod writer;

pub(crate) use self::conn::{BodyPlan, Conn, Phase};
pub(crate) use self::pool::{Pool, PoolLimits};
pub use self::stats::ConnectionStats;
pub(crate) use self::stream::{CountingReader, SharedStream};
pub(crate) use self::table::Table;
pub(crate) use self::watchdog::spawn_watchdog;
pub(crate) use self::writer::AnswerWriter;

/// Takes a lock whose holder panicked as if it had not: the data behind
/// these locks stays consistent across a panic (plain fields and queues).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
