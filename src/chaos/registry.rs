//! The one owner of every running fault.
//!
//! Each entry holds the fault's guardrail permit, its cancel handle, the
//! threads that carry it out and the clean-up that undoes it. `GET /chaos`,
//! `POST /chaos/stop`, every `DELETE`, SIGTERM and the guardrails act
//! through here and nothing else, so what is listed, what is counted against
//! `MAX_CONCURRENT_CHAOS` and what is stopped are one and the same.
//!
//! A fault is active from the moment its slot is claimed until its clean-up
//! has run: when it ends by itself (`Ticket::finish` on its own thread), or
//! when it is stopped. Stopping cancels, then joins every thread of the
//! fault, then runs the clean-up, then frees the slot: once `stop` returns,
//! nothing of the fault runs and nothing it made is left.
//!
//! Once closed (the first step of an ordered stop), the registry starts
//! nothing more, and claims no crash, under the same lock: a request that
//! was queued when the stop began, and reaches the registry after it, is
//! refused ([`StartError::Closed`]) rather than started after the stop.
//!
//! A [`Watcher`] is told of every start and every end (the healing figures
//! time recovery from a fault's end, and keep, across a restart, which
//! faults ran when the process died).
//!
//! Adding a fault kind: a `FaultKind` variant (its label, and whether a new
//! one replaces the running one), and a start function in its module that
//! calls [`Registry::start`] with a launch closure returning a [`Running`]:
//! the threads it spawned (each watching the ticket's [`Cancel`]) and the
//! clean-up. Listing, stop, DELETE, SIGTERM and the guardrails need nothing
//! more.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::chaos::guard::{Guard, Permit, Rejected, SLOT_GRACE};

/// The kinds of fault the registry holds, as the `fault` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Cpu,
    Memory,
    Liveness,
    Readiness,
    Latency,
    Disk,
    Errors,
}

impl FaultKind {
    pub const ALL: [FaultKind; 7] = [
        FaultKind::Cpu,
        FaultKind::Memory,
        FaultKind::Liveness,
        FaultKind::Readiness,
        FaultKind::Latency,
        FaultKind::Disk,
        FaultKind::Errors,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FaultKind::Cpu => "cpu",
            FaultKind::Memory => "memory",
            FaultKind::Liveness => "liveness",
            FaultKind::Readiness => "readiness",
            FaultKind::Latency => "latency",
            FaultKind::Disk => "disk",
            FaultKind::Errors => "errors",
        }
    }

    /// Whether at most one fault of this kind may exist, a second start
    /// being refused (409) rather than added or replacing it: the disk fill
    /// has one file, and replacing it would throw away what was asked for.
    pub fn one_at_a_time(self) -> bool {
        self == FaultKind::Disk
    }

    /// Whether a new fault of this kind replaces the running one (a probe
    /// can only be failed one way at a time); CPU loads and leaks add up.
    pub fn replaces(self) -> bool {
        matches!(
            self,
            FaultKind::Liveness | FaultKind::Readiness | FaultKind::Latency | FaultKind::Errors
        )
    }
}

/// Why a fault ended, for its clean-up and its CHAOS_FINISHED event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Its time ran out, or its work is done (a hold's release).
    OnTime,
    /// `DELETE` or `POST /chaos/stop`.
    OnRequest,
    /// A new fault of the same kind took its place.
    Replaced,
    /// SIGTERM.
    Shutdown,
    /// It could not be carried out (the caller reports why).
    Failed,
}

impl Ended {
    pub fn label(self) -> &'static str {
        match self {
            Ended::OnTime => "on time",
            Ended::OnRequest => "on request",
            Ended::Replaced => "replaced",
            Ended::Shutdown => "shutdown",
            Ended::Failed => "failed",
        }
    }
}

/// A cancel handle: a flag the fault's threads poll, and a condition that
/// wakes them from a sleep at once.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<CancelState>);

#[derive(Debug, Default)]
struct CancelState {
    /// Shared with the HTTP layer, which writes the answers a fault holds
    /// (`Request::respond_held`) and sends them as soon as this is set.
    flag: Arc<AtomicBool>,
    lock: Mutex<()>,
    wake: Condvar,
}

/// Two handles are equal when they cancel the same fault.
impl PartialEq for Cancel {
    fn eq(&self, other: &Cancel) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Cancel {
    pub fn cancel(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
        // Taken so that a sleeper between its check and its wait is not missed.
        let _guard = self.0.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.0.wake.notify_all();
    }

    /// The flag itself, for a holder that polls it without a wake-up: the
    /// patched tiny_http's timer thread, which writes held answers.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0.flag)
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.flag.load(Ordering::Relaxed)
    }

    /// Sleeps until `deadline`; returns early, with `true`, when cancelled.
    pub fn sleep_until(&self, deadline: Instant) -> bool {
        let mut guard = self.0.lock.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if self.0.flag.load(Ordering::SeqCst) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = self
                .0
                .wake
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// What a launch closure hands to the registry.
pub struct Running {
    /// Every thread of the fault; each must end soon after the cancel.
    pub threads: Vec<JoinHandle<()>>,
    /// Undoes the fault (frees memory, lifts a probe fault) and reports it;
    /// runs once, after the threads have ended, before the slot is freed.
    pub cleanup: Box<dyn FnOnce(Ended) + Send>,
    /// What `GET /chaos` says of it.
    pub detail: String,
    pub ends_at: Option<SystemTime>,
    /// Extra fields for `GET /chaos` (an object, or null).
    pub extra: Value,
}

/// Told of each fault's start (once its slot is claimed, before it is
/// launched) and of its end (once its clean-up has run; `at` is when its
/// cause was gone). Called on the thread that starts or ends the fault, the
/// start under the registry's lock: it must not call the registry.
pub trait Watcher: Send + Sync {
    fn started(&self, kind: FaultKind);
    fn ended(&self, kind: FaultKind, ended: Ended, at: Instant);
}

/// The watcher of a registry that nobody watches (the unit tests').
#[cfg(test)]
struct Unwatched;

#[cfg(test)]
impl Watcher for Unwatched {
    fn started(&self, _: FaultKind) {}
    fn ended(&self, _: FaultKind, _: Ended, _: Instant) {}
}

/// Handed to a launch closure: the fault's id, its cancel handle, and the
/// way for its own thread to end it.
#[derive(Clone)]
pub struct Ticket {
    pub id: u64,
    pub cancel: Cancel,
    registry: Arc<Registry>,
}

impl Ticket {
    /// The fault ended by itself: drop it from the registry, run its
    /// clean-up and free its slot. Does nothing if it was stopped meanwhile
    /// (the stopper runs the clean-up). Call from the fault's own thread.
    pub fn finish(&self, ended: Ended) {
        self.finish_at(ended, None);
    }

    /// [`Ticket::finish`] for a fault whose cause was gone at `at` (a
    /// timed setting, out of force at its deadline however late its timer
    /// thread runs); `None`: when its clean-up has run.
    pub fn finish_at(&self, ended: Ended, at: Option<Instant>) {
        let taken = {
            let mut state = self.registry.lock();
            let taken = state
                .entries
                .iter()
                .position(|e| e.id == self.id)
                .map(|i| state.entries.remove(i));
            if let Some(e) = &taken {
                state.ending.push((e.id, e.kind));
            }
            taken
        };
        if let Some(entry) = taken {
            // The calling thread is one of the entry's: never join it.
            let Entry {
                cleanup,
                threads,
                _permit,
                kind,
                ..
            } = entry;
            drop(threads);
            cleanup(ended);
            self.registry
                .watcher
                .ended(kind, ended, at.unwrap_or_else(Instant::now));
            self.registry.done_ending(&[self.id]);
        }
    }

    /// The fault now expects to end `from_now` from now (a leak's hold,
    /// which starts once the leak is made): what `GET /chaos` shows and
    /// what the guardrail's `Retry-After` counts on.
    pub fn expect_end(&self, from_now: Duration) {
        let mut state = self.registry.lock();
        if let Some(e) = state.entries.iter_mut().find(|e| e.id == self.id) {
            e.ends_at = Some(SystemTime::now() + from_now);
            e._permit.expect_end(Instant::now().checked_add(from_now));
        }
    }
}

struct Entry {
    id: u64,
    kind: FaultKind,
    detail: String,
    ends_at: Option<SystemTime>,
    extra: Value,
    cancel: Cancel,
    threads: Vec<JoinHandle<()>>,
    cleanup: Box<dyn FnOnce(Ended) + Send>,
    /// Freed last, after the clean-up: a new fault never overlaps the old.
    _permit: Permit,
}

impl Entry {
    fn listed(&self) -> Listed {
        Listed {
            id: self.id,
            kind: self.kind,
            detail: self.detail.clone(),
            ends_at: self.ends_at,
            extra: self.extra.clone(),
        }
    }
}

/// A crash that was accepted: the process is ending.
#[derive(Debug, Clone, PartialEq)]
pub struct CrashInProgress {
    pub mode: String,
    pub since: SystemTime,
}

/// What the registry holds, under its one lock.
#[derive(Default)]
struct Ledger {
    entries: Vec<Entry>,
    next_id: u64,
    crash: Option<CrashInProgress>,
    /// Faults taken out of `entries` whose clean-up has not finished yet
    /// (id, kind): a one-at-a-time kind may not start again until it has.
    ending: Vec<(u64, FaultKind)>,
    /// Why nothing starts any more (`Registry::close`), if it was closed.
    closed: Option<String>,
}

/// Why a fault did not start.
#[derive(Debug)]
pub enum StartError {
    /// A guardrail refused (429).
    Rejected(Rejected),
    /// The launch failed (no thread could be spawned, ...).
    Failed(String),
    /// A fault of this one-at-a-time kind exists, or is still being
    /// stopped (409); what `GET /chaos` shows of it, if listed.
    Busy(Option<Listed>),
    /// The registry is closed: the process is stopping (503); why.
    Closed(String),
}

/// Why a crash was not claimed.
#[derive(Debug, Clone, PartialEq)]
pub enum CrashRefused {
    /// A crash was claimed before: the process is ending already.
    InProgress(CrashInProgress),
    /// The registry is closed: the process is stopping; why.
    Closed(String),
}

/// What `GET /chaos` shows of one fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub id: u64,
    pub kind: FaultKind,
    pub detail: String,
    pub ends_at: Option<SystemTime>,
    pub extra: Value,
}

pub struct Registry {
    guard: Guard,
    state: Mutex<Ledger>,
    watcher: Arc<dyn Watcher>,
}

impl Registry {
    #[cfg(test)]
    pub fn new(guard: Guard) -> Arc<Registry> {
        Registry::watched(guard, Arc::new(Unwatched))
    }

    /// A registry that tells `watcher` of every start and end.
    pub fn watched(guard: Guard, watcher: Arc<dyn Watcher>) -> Arc<Registry> {
        Arc::new(Registry {
            guard,
            state: Mutex::new(Ledger::default()),
            watcher,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// Claims a guardrail slot for a fault of `kind` expected to last
    /// `expected` (`None`: until it is released), then runs `launch` with
    /// the fault's ticket and records what it started. Both happen under the
    /// registry's lock, so a stop never sees a fault half-started: `launch`
    /// must only spawn threads and return, never wait for them. Slots held
    /// only by faults past their planned end are waited for (at most
    /// `SLOT_GRACE`, outside the lock, which their clean-up needs), so that
    /// `Retry-After` needs no margin.
    pub fn start(
        self: &Arc<Self>,
        kind: FaultKind,
        now: Instant,
        expected: Option<Duration>,
        launch: impl FnOnce(Ticket) -> Result<Running, String>,
    ) -> Result<u64, StartError> {
        let grace_ends = Instant::now() + SLOT_GRACE;
        let (id, replaced) = loop {
            let mut state = self.lock();
            if let Some(why) = &state.closed {
                return Err(StartError::Closed(why.clone()));
            }
            if kind.one_at_a_time() {
                let listed = state.entries.iter().find(|e| e.kind == kind).map(Entry::listed);
                if listed.is_some() || state.ending.iter().any(|(_, k)| *k == kind) {
                    return Err(StartError::Busy(listed));
                }
            }
            let permit = match self.guard.try_acquire(now, expected) {
                Ok(permit) => permit,
                Err(rejected) if rejected.overdue && Instant::now() < grace_ends => {
                    drop(state);
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
                Err(rejected) => return Err(StartError::Rejected(rejected)),
            };
            let id = state.next_id;
            state.next_id += 1;
            let cancel = Cancel::default();
            let ticket = Ticket {
                id,
                cancel: cancel.clone(),
                registry: Arc::clone(self),
            };
            self.watcher.started(kind);
            let running = match launch(ticket) {
                Ok(running) => running,
                Err(e) => {
                    self.watcher.ended(kind, Ended::Failed, Instant::now());
                    return Err(StartError::Failed(e));
                }
            };
            let replaced = if kind.replaces() {
                take(&mut state.entries, |e| e.kind == kind)
            } else {
                Vec::new()
            };
            state.entries.push(Entry {
                id,
                kind,
                detail: running.detail,
                ends_at: running.ends_at,
                extra: running.extra,
                cancel,
                threads: running.threads,
                cleanup: running.cleanup,
                _permit: permit,
            });
            break (id, replaced);
        };
        self.end_all(replaced, Ended::Replaced);
        Ok(id)
    }

    /// Closes the registry for good: from now on no fault starts and no
    /// crash is claimed (`why` says why, in the refusals). The faults that
    /// run are left to `stop`.
    pub fn close(&self, why: &str) {
        self.lock().closed = Some(why.to_string());
    }

    /// Why the registry was closed, if it was.
    pub fn closed(&self) -> Option<String> {
        self.lock().closed.clone()
    }

    /// Stops every fault of `kind` (every fault when `None`) and returns
    /// the kind of each fault stopped, in start order, once their threads
    /// have ended and their clean-up has run.
    pub fn stop(&self, kind: Option<FaultKind>, ended: Ended) -> Vec<FaultKind> {
        let taken = {
            let mut state = self.lock();
            let taken = take(&mut state.entries, |e| kind.is_none_or(|k| e.kind == k));
            state.ending.extend(taken.iter().map(|e| (e.id, e.kind)));
            taken
        };
        let kinds = taken.iter().map(|e| e.kind).collect();
        let ids: Vec<u64> = taken.iter().map(|e| e.id).collect();
        self.end_all(taken, ended);
        self.done_ending(&ids);
        kinds
    }

    /// The clean-up of these faults has run.
    fn done_ending(&self, ids: &[u64]) {
        let mut state = self.lock();
        state.ending.retain(|(id, _)| !ids.contains(id));
    }

    /// The running faults, in start order.
    pub fn list(&self) -> Vec<Listed> {
        self.lock().entries.iter().map(Entry::listed).collect()
    }

    /// Whether a fault of `kind` is running.
    pub fn is_active(&self, kind: FaultKind) -> bool {
        self.lock().entries.iter().any(|e| e.kind == kind)
    }

    /// Faults that hold a guardrail slot now.
    pub fn active(&self) -> usize {
        self.lock().entries.len()
    }

    /// Claims the one crash this process may have; a later claim gets the
    /// crash already in progress, and none is claimed once the registry is
    /// closed. The guardrails do not apply to a crash (nothing of it
    /// outlives the process), and it is never stopped.
    pub fn claim_crash(&self, mode: &str) -> Result<(), CrashRefused> {
        let mut state = self.lock();
        if let Some(why) = &state.closed {
            return Err(CrashRefused::Closed(why.clone()));
        }
        match &state.crash {
            Some(crash) => Err(CrashRefused::InProgress(crash.clone())),
            None => {
                state.crash = Some(CrashInProgress {
                    mode: mode.to_string(),
                    since: SystemTime::now(),
                });
                Ok(())
            }
        }
    }

    /// Gives back a crash claimed by a request that then could not go on
    /// (a crash loop that could not be recorded): the process goes on.
    pub fn release_crash(&self) {
        self.lock().crash = None;
    }

    pub fn crash_in_progress(&self) -> Option<CrashInProgress> {
        self.lock().crash.clone()
    }

    /// Cancels every entry first (so they wind down together), then joins
    /// each one's threads, runs its clean-up, tells the watcher and frees
    /// its slot.
    fn end_all(&self, entries: Vec<Entry>, ended: Ended) {
        for e in &entries {
            e.cancel.cancel();
        }
        for e in entries {
            let Entry {
                threads,
                cleanup,
                _permit,
                kind,
                ..
            } = e;
            for t in threads {
                if t.join().is_err() {
                    log::error!("a thread of the {} fault panicked", kind.label());
                }
            }
            cleanup(ended);
            self.watcher.ended(kind, ended, Instant::now());
        }
    }
}

/// Removes the entries that match from `entries`, keeping their order.
fn take(entries: &mut Vec<Entry>, pick: impl Fn(&Entry) -> bool) -> Vec<Entry> {
    let (out, keep): (Vec<Entry>, Vec<Entry>) = std::mem::take(entries).into_iter().partition(|e| pick(e));
    *entries = keep;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn registry(max: usize) -> Arc<Registry> {
        Registry::new(Guard::new(max, Duration::ZERO))
    }

    /// A fault whose one thread sleeps until cancelled or `for_`, then
    /// finishes itself; its clean-up reports how it ended.
    fn sleeper(r: &Arc<Registry>, kind: FaultKind, for_: Duration, ended: mpsc::Sender<Ended>) -> u64 {
        r.start(kind, Instant::now(), Some(for_), |ticket| {
            let t = ticket.clone();
            let thread = std::thread::spawn(move || {
                if !t.cancel.sleep_until(Instant::now() + for_) {
                    t.finish(Ended::OnTime);
                }
            });
            Ok(Running {
                threads: vec![thread],
                cleanup: Box::new(move |e| ended.send(e).unwrap()),
                detail: "test".into(),
                ends_at: None,
                extra: Value::Null,
            })
        })
        .unwrap()
    }

    #[test]
    fn stop_joins_cleans_up_and_frees_the_slot() {
        let r = registry(1);
        let (tx, rx) = mpsc::channel();
        sleeper(&r, FaultKind::Cpu, Duration::from_secs(60), tx.clone());
        assert!(matches!(
            r.start(FaultKind::Memory, Instant::now(), None, |_| Err("unused".into())),
            Err(StartError::Rejected(_))
        ));
        let t0 = Instant::now();
        assert_eq!(r.stop(None, Ended::OnRequest), vec![FaultKind::Cpu]);
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(rx.try_recv(), Ok(Ended::OnRequest), "cleaned up before stop returned");
        assert_eq!((r.active(), r.guard().active()), (0, 0));
    }

    /// A start that finds only a slot past its planned end waits for the
    /// fault's clean-up (here 50 ms) instead of refusing; one that finds a
    /// slot still in force is refused at once.
    #[test]
    fn a_start_waits_for_a_slot_whose_fault_is_past_its_end() {
        let r = registry(1);
        let t0 = Instant::now();
        r.start(FaultKind::Cpu, t0, Some(Duration::from_millis(100)), |ticket| {
            let thread = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                ticket.finish_at(Ended::OnTime, None);
            });
            Ok(Running {
                threads: vec![thread],
                cleanup: Box::new(|_| std::thread::sleep(Duration::from_millis(50))),
                detail: "test".into(),
                ends_at: None,
                extra: Value::Null,
            })
        })
        .unwrap();
        let refused_at = Instant::now();
        let early = r.start(FaultKind::Memory, refused_at, None, |_| Err("unused".into()));
        assert!(matches!(early, Err(StartError::Rejected(_))));
        assert!(refused_at.elapsed() < Duration::from_millis(50), "refused at once");
        while Instant::now() < t0 + Duration::from_millis(110) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let now = Instant::now();
        let started = r.start(FaultKind::Memory, now, None, |_| {
            Ok(Running {
                threads: Vec::new(),
                cleanup: Box::new(|_| {}),
                detail: "test".into(),
                ends_at: None,
                extra: Value::Null,
            })
        });
        assert!(started.is_ok(), "accepted once the old fault's clean-up freed its slot");
        let waited = now.elapsed();
        assert!(waited < SLOT_GRACE, "{waited:?}");
    }

    #[test]
    fn a_fault_that_ends_by_itself_cleans_up_once() {
        let r = registry(2);
        let (tx, rx) = mpsc::channel();
        sleeper(&r, FaultKind::Memory, Duration::from_millis(10), tx);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(Ended::OnTime));
        assert_eq!(r.stop(None, Ended::OnRequest), vec![]);
        assert!(rx.try_recv().is_err());
        // The slot is freed right after the clean-up, on the fault's thread.
        let deadline = Instant::now() + Duration::from_secs(5);
        while r.guard().active() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(r.guard().active(), 0);
    }

    #[test]
    fn a_probe_fault_replaces_the_one_of_its_kind() {
        let r = registry(5);
        let (tx, rx) = mpsc::channel();
        sleeper(&r, FaultKind::Readiness, Duration::from_secs(60), tx.clone());
        let second = sleeper(&r, FaultKind::Readiness, Duration::from_secs(60), tx.clone());
        assert_eq!(rx.try_recv(), Ok(Ended::Replaced));
        assert_eq!(r.list().iter().map(|l| l.id).collect::<Vec<_>>(), vec![second]);
        sleeper(&r, FaultKind::Cpu, Duration::from_secs(60), tx.clone());
        sleeper(&r, FaultKind::Cpu, Duration::from_secs(60), tx);
        assert_eq!(r.active(), 3, "CPU loads add up");
        assert_eq!(
            r.stop(Some(FaultKind::Cpu), Ended::OnRequest),
            vec![FaultKind::Cpu, FaultKind::Cpu]
        );
        assert_eq!(r.active(), 1);
    }

    #[test]
    fn only_the_first_crash_is_claimed() {
        let r = registry(1);
        assert!(r.claim_crash("exit").is_ok());
        match r.claim_crash("abort") {
            Err(CrashRefused::InProgress(first)) => assert_eq!(first.mode, "exit"),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.active(), 0, "a crash holds no slot");
    }

    /// Once closed, nothing starts and no crash is claimed, whatever the
    /// guardrails say; the faults that ran are still stopped by `stop`.
    #[test]
    fn a_closed_registry_starts_nothing_and_still_stops() {
        let r = registry(4);
        let (tx, rx) = mpsc::channel();
        sleeper(&r, FaultKind::Cpu, Duration::from_secs(60), tx);
        r.close("SIGTERM");
        let launched = std::cell::Cell::new(false);
        let refused = r.start(FaultKind::Cpu, Instant::now(), None, |_| {
            launched.set(true);
            Err("unused".into())
        });
        assert!(matches!(refused, Err(StartError::Closed(ref why)) if why == "SIGTERM"));
        assert!(!launched.get(), "nothing was launched");
        assert_eq!(r.claim_crash("abort"), Err(CrashRefused::Closed("SIGTERM".into())));
        assert_eq!(r.stop(None, Ended::Shutdown), vec![FaultKind::Cpu]);
        assert_eq!(rx.try_recv(), Ok(Ended::Shutdown));
        assert_eq!((r.active(), r.guard().active()), (0, 0));
    }

    #[test]
    fn cancel_wakes_a_sleeper() {
        let c = Cancel::default();
        let c2 = c.clone();
        let t = std::thread::spawn(move || c2.sleep_until(Instant::now() + Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(20));
        c.cancel();
        assert!(t.join().unwrap());
        assert!(
            c.sleep_until(Instant::now() + Duration::from_secs(60)),
            "stays cancelled"
        );
    }

    /// A disk fill is one at a time: a second is refused (409, before any
    /// slot or cooldown is spent) while the first exists, and while it is
    /// still being removed, so two fills never share the file.
    #[test]
    fn a_one_at_a_time_kind_is_refused_while_one_exists_or_is_ending() {
        let r = registry(4);
        let (tx, _rx) = mpsc::channel();
        sleeper(&r, FaultKind::Disk, Duration::from_secs(60), tx);
        let busy = r.start(FaultKind::Disk, Instant::now(), None, |_| Err("unused".into()));
        assert!(matches!(busy, Err(StartError::Busy(Some(_)))));
        assert_eq!(r.active(), 1, "the refusal took no slot");
        r.stop(None, Ended::OnRequest);

        // A clean-up that takes its time: the kind stays refused until it ran.
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (entered_tx, entered_rx) = mpsc::channel::<()>();
        r.start(FaultKind::Disk, Instant::now(), None, |_| {
            Ok(Running {
                threads: Vec::new(),
                cleanup: Box::new(move |_| {
                    entered_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                }),
                detail: String::new(),
                ends_at: None,
                extra: Value::Null,
            })
        })
        .unwrap();
        let r2 = Arc::clone(&r);
        let stopper = std::thread::spawn(move || r2.stop(None, Ended::OnRequest));
        entered_rx.recv().unwrap();
        assert!(!r.is_active(FaultKind::Disk), "no longer listed");
        let busy = r.start(FaultKind::Disk, Instant::now(), None, |_| Err("unused".into()));
        assert!(matches!(busy, Err(StartError::Busy(None))));
        release_tx.send(()).unwrap();
        assert_eq!(stopper.join().unwrap(), vec![FaultKind::Disk]);
        let (tx, _rx) = mpsc::channel();
        sleeper(&r, FaultKind::Disk, Duration::from_secs(60), tx);
        assert_eq!(r.stop(None, Ended::OnRequest), vec![FaultKind::Disk]);
    }
}
