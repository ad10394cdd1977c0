//! Patch (chaos-backend): the threads that serve connections, reused from
//! one connection to the next.
//!
//! Upstream's `TaskPool` reused idle threads too, but spawned one more for
//! every connection that found none idle, without bound, and panicked when
//! a spawn failed. An earlier version of this fork spawned a thread per
//! connection (a probe on a new connection paid for a spawn, and threads
//! that had left the table but not yet ended could push a burst past
//! `pids.max`). Here:
//!
//! - a connection goes to an idle thread, else to a new one, else it waits
//!   for the next thread to finish its connection: there are never more
//!   threads than `max_threads` (the connection cap), counted until each
//!   one's last instruction, so a thread still ending counts;
//! - a thread that finishes its connection serves the next one waiting,
//!   else waits idle, unless `max_idle` already wait: then it ends;
//! - the thread idle for the shortest time takes the next connection (each
//!   idle thread waits on a condvar of its own, on a stack), so that under
//!   light, steady traffic the others reach their idle timeout and end: with
//!   one shared condvar the kernel woke them in turn, and a request every
//!   200 ms kept up to ten idle threads alive for ever;
//! - a thread that has idled `idle_timeout` since its last connection
//!   ends; if it is one of the `min` kept, a fresh thread takes its place.
//!   A thread that has served keeps blocks in its allocator's per-thread
//!   cache (glibc's tcache: up to 7 blocks of each small size), freed by
//!   other threads and scattered over every arena, each of which pins a
//!   page: measured, 4 kept threads and 4 workers held 3 to 5 MiB after a
//!   burst of 1,585 connections. Only a thread's end gives them back;
//! - an ending thread first calls the owner's hook
//!   (`ServerOptions::thread_idle`): the service gives back the stack
//!   pages it no longer uses, before glibc keeps the stack for reuse;
//! - a failed spawn closes that connection only (the caller counts it).

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::ThreadHook;

type Job = Box<dyn FnOnce() + Send>;

/// How many threads, and how long they idle.
#[derive(Clone, Debug)]
pub(crate) struct PoolLimits {
    pub max_threads: usize,
    pub min: usize,
    pub max_idle: usize,
    pub idle_timeout: Duration,
    pub stack_size: Option<usize>,
}

struct State {
    jobs: VecDeque<Job>,
    /// Threads alive, busy, idle or ending.
    threads: usize,
    /// Threads waiting for a job.
    idle: usize,
    /// The condvars of idle threads not yet woken for a job, the most
    /// recently idle last.
    waiters: Vec<Arc<Condvar>>,
    closing: bool,
}

struct Shared {
    state: Mutex<State>,
    limits: PoolLimits,
    hook: Option<ThreadHook>,
}

impl Shared {
    /// Never held with any other lock.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn release(&self) {
        if let Some(hook) = &self.hook {
            hook();
        }
    }
}

/// The connection threads of one server.
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    /// A pool with its `min` threads started (those that cannot be are
    /// left out).
    pub(crate) fn new(limits: PoolLimits, hook: Option<ThreadHook>) -> Pool {
        let pool = Pool {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    jobs: VecDeque::new(),
                    threads: 0,
                    idle: 0,
                    waiters: Vec::new(),
                    closing: false,
                }),
                limits,
                hook,
            }),
        };
        let min = pool.shared.limits.min.min(pool.shared.limits.max_threads);
        for _ in 0..min {
            pool.shared.state().threads += 1;
            if pool.start(None).is_err() {
                pool.shared.state().threads -= 1;
                break;
            }
        }
        pool
    }

    /// Runs `job` on an idle thread, a new one, or (at `max_threads`) the
    /// next one to finish. An error when a thread was needed and could not
    /// be started: `job` is dropped.
    pub(crate) fn run(&self, job: Job) -> io::Result<()> {
        let mut s = self.shared.state();
        let free = s.idle.saturating_sub(s.jobs.len());
        if free > 0 || s.threads >= self.shared.limits.max_threads {
            s.jobs.push_back(job);
            let waiter = s.waiters.pop();
            drop(s);
            if let Some(w) = waiter {
                w.notify_one();
            }
            return Ok(());
        }
        s.threads += 1;
        drop(s);
        self.start(Some(job)).inspect_err(|_| {
            self.shared.state().threads -= 1;
        })
    }

    /// Threads alive now, and how many of them are idle.
    #[cfg(test)]
    pub(crate) fn threads(&self) -> (usize, usize) {
        let s = self.shared.state();
        (s.threads, s.idle)
    }

    /// Starts a thread (already counted) that runs `first`, then serves
    /// the queue.
    fn start(&self, first: Option<Job>) -> io::Result<()> {
        start(&self.shared, first)
    }
}

/// Starts a pool thread (already counted) that runs `first`, then serves
/// the queue.
fn start(shared: &Arc<Shared>, first: Option<Job>) -> io::Result<()> {
    let mut builder = thread::Builder::new().name("http-conn".into());
    if let Some(size) = shared.limits.stack_size {
        builder = builder.stack_size(size);
    }
    let shared = Arc::clone(shared);
    builder.spawn(move || serve(&shared, first)).map(|_| ())
}

impl Drop for Pool {
    /// Idle threads end; busy ones end with their connection.
    fn drop(&mut self) {
        let mut s = self.shared.state();
        s.closing = true;
        for w in s.waiters.drain(..) {
            w.notify_one();
        }
    }
}

/// A pool thread's life: its first job, then each job queued, idling in
/// between, until it is one idle thread too many, idles `idle_timeout`
/// after a job (a fresh thread replaces one of the `min`), or the pool
/// closes. It stops counting only with the lock held and no job queued, so
/// a queued job always has a thread to come.
fn serve(shared: &Arc<Shared>, first: Option<Job>) {
    // Whether this thread has run a job, and so holds allocator caches.
    let mut served = first.is_some();
    if let Some(job) = first {
        job();
    }
    let limits = &shared.limits;
    let mut s = shared.state();
    loop {
        if let Some(job) = s.jobs.pop_front() {
            drop(s);
            job();
            served = true;
            s = shared.state();
            continue;
        }
        if !s.closing && s.idle < limits.max_idle {
            // Idle: a thread that has served until the idle timeout, a
            // fresh one of the `min` for ever.
            s.idle += 1;
            let since = Instant::now();
            let me = Arc::new(Condvar::new());
            let mut timed_out = false;
            while s.jobs.is_empty() && !s.closing {
                // Newly idle, or woken for a job another thread took
                // first: back on top of the stack.
                if !s.waiters.iter().any(|w| Arc::ptr_eq(w, &me)) {
                    s.waiters.push(Arc::clone(&me));
                }
                let wait = if served || s.threads > limits.min {
                    limits.idle_timeout.saturating_sub(since.elapsed())
                } else {
                    Duration::MAX
                };
                if wait.is_zero() {
                    timed_out = true;
                    break;
                }
                s = if wait == Duration::MAX {
                    me.wait(s).unwrap_or_else(PoisonError::into_inner)
                } else {
                    me.wait_timeout(s, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                };
            }
            s.waiters.retain(|w| !Arc::ptr_eq(w, &me));
            s.idle -= 1;
            if !timed_out {
                continue;
            }
            if served && s.threads <= limits.min {
                // One of the `min`: a fresh thread takes its place. Should
                // none start, this one stays, its stack given back at least.
                s.threads += 1;
                drop(s);
                let renewed = start(shared, None).is_ok();
                s = shared.state();
                if !renewed {
                    s.threads -= 1;
                    drop(s);
                    shared.release();
                    served = false;
                    s = shared.state();
                    continue;
                }
            }
        }
        // Ending: the hook first, outside the lock; a job that came
        // meanwhile is served after all.
        drop(s);
        shared.release();
        s = shared.state();
        if s.jobs.is_empty() || s.closing {
            break;
        }
    }
    // Counted until here, with the lock held and no job queued.
    s.threads -= 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    fn limits(max_threads: usize, max_idle: usize) -> PoolLimits {
        PoolLimits {
            max_threads,
            min: 0,
            max_idle,
            idle_timeout: Duration::from_secs(60),
            stack_size: None,
        }
    }

    fn wait_for(pool: &Pool, what: (usize, usize)) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.threads() != what {
            assert!(
                Instant::now() < deadline,
                "{:?} != {:?}",
                pool.threads(),
                what
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_thread_is_reused_for_the_next_job() {
        let pool = Pool::new(limits(8, 8), None);
        let (tx, rx) = mpsc::channel();
        let mut ids = std::collections::HashSet::new();
        for _ in 0..20 {
            let tx = tx.clone();
            pool.run(Box::new(move || tx.send(thread::current().id()).unwrap()))
                .unwrap();
            ids.insert(rx.recv().unwrap());
            wait_for(&pool, (1, 1));
        }
        assert_eq!(ids.len(), 1, "one thread served all 20");
    }

    #[test]
    fn never_more_threads_than_the_most_the_rest_wait() {
        let pool = Pool::new(limits(3, 8), None);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..10 {
            let (rx, done) = (Arc::clone(&release_rx), Arc::clone(&done));
            pool.run(Box::new(move || {
                rx.lock().unwrap().recv().unwrap();
                done.fetch_add(1, Ordering::SeqCst);
            }))
            .unwrap();
        }
        wait_for(&pool, (3, 0));
        for _ in 0..10 {
            release_tx.send(()).unwrap();
        }
        wait_for(&pool, (3, 3));
        assert_eq!(done.load(Ordering::SeqCst), 10);
    }

    #[test]
    fn threads_beyond_the_idle_bound_end_and_the_hook_runs_first() {
        let calls = Arc::new(AtomicUsize::new(0));
        let hook_calls = Arc::clone(&calls);
        let hook: ThreadHook = Arc::new(move || {
            hook_calls.fetch_add(1, Ordering::SeqCst);
        });
        let pool = Pool::new(limits(16, 2), Some(hook));
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        for _ in 0..6 {
            let rx = Arc::clone(&release_rx);
            pool.run(Box::new(move || rx.lock().unwrap().recv().unwrap()))
                .unwrap();
        }
        wait_for(&pool, (6, 0));
        for _ in 0..6 {
            release_tx.send(()).unwrap();
        }
        wait_for(&pool, (2, 2));
        assert_eq!(calls.load(Ordering::SeqCst), 4, "each ending thread");
    }

    /// Light, steady traffic keeps one thread busy and lets the rest idle
    /// out: the thread idle for the shortest time takes each job.
    #[test]
    fn under_light_traffic_the_surplus_idles_out() {
        let pool = Pool::new(
            PoolLimits {
                max_threads: 8,
                min: 0,
                max_idle: 8,
                idle_timeout: Duration::from_millis(300),
                stack_size: None,
            },
            None,
        );
        let (tx, rx) = mpsc::channel::<()>();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..6 {
            let rx = Arc::clone(&rx);
            pool.run(Box::new(move || rx.lock().unwrap().recv().unwrap()))
                .unwrap();
        }
        wait_for(&pool, (6, 0));
        for _ in 0..6 {
            tx.send(()).unwrap();
        }
        wait_for(&pool, (6, 6));
        // A job every 50 ms for 1.2 s: with each idle thread woken in turn,
        // all six stayed (each used every 300 ms at most).
        let (done_tx, done_rx) = mpsc::channel();
        for _ in 0..24 {
            let done_tx = done_tx.clone();
            pool.run(Box::new(move || done_tx.send(()).unwrap()))
                .unwrap();
            done_rx.recv().unwrap();
            thread::sleep(Duration::from_millis(50));
        }
        let (threads, _) = pool.threads();
        assert!(threads <= 2, "{} threads for one job at a time", threads);
    }

    /// Idle threads end after the idle timeout; each of the `min` that has
    /// served is replaced by a fresh thread (its allocator caches go with
    /// it), which then waits for ever.
    #[test]
    fn idle_threads_end_after_the_timeout_and_the_min_are_renewed() {
        let pool = Pool::new(
            PoolLimits {
                max_threads: 8,
                min: 1,
                max_idle: 8,
                idle_timeout: Duration::from_millis(100),
                stack_size: None,
            },
            None,
        );
        wait_for(&pool, (1, 1));
        let (tx, rx) = mpsc::channel::<()>();
        let rx = Arc::new(Mutex::new(rx));
        let (ids_tx, ids_rx) = mpsc::channel();
        for _ in 0..3 {
            let (rx, ids_tx) = (Arc::clone(&rx), ids_tx.clone());
            pool.run(Box::new(move || {
                ids_tx.send(thread::current().id()).unwrap();
                rx.lock().unwrap().recv().unwrap();
            }))
            .unwrap();
        }
        wait_for(&pool, (3, 0));
        for _ in 0..3 {
            tx.send(()).unwrap();
        }
        // All idle out; one fresh thread stays.
        thread::sleep(Duration::from_millis(400));
        wait_for(&pool, (1, 1));
        let served: std::collections::HashSet<_> = ids_rx.try_iter().collect();
        let (id_tx, id_rx) = mpsc::channel();
        pool.run(Box::new(move || {
            id_tx.send(thread::current().id()).unwrap()
        }))
        .unwrap();
        let fresh = id_rx.recv().unwrap();
        assert!(!served.contains(&fresh), "a thread that had served stayed");
    }
}
