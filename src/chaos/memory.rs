//! The memory leak: chunks mapped straight from the kernel, every page
//! written so that the resident set really grows (an untouched mapping costs
//! nothing until used, and would fool both /ready and the OOM killer), and
//! the thread that makes each leak: at once, or as a ramp, then the hold.
//!
//! Chunks are `mmap`ed and `munmap`ed (`sys::Mapping`), not allocated:
//! glibc raises its mmap threshold after the first large free, and later
//! chunks would come from the heap, where `free` may keep them in the
//! process. A released chunk leaves RSS at once, whatever came before.
//!
//! A size beyond the machine's memory plus swap is refused before anything
//! starts, and under `RLIMIT_AS` one that would take the address space the
//! connections are promised. A mapping the kernel refuses is an error the handler answers
//! (507), not an abort. Under a cgroup memory limit the kernel's OOM killer
//! ends the process while pages are being touched: the intended OOMKill path.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::chaos::registry::{Cancel, Ended, Ticket};
use crate::observe::events::{Event, Events};
use crate::os::sys::{self, Mapping};

/// How often a ramp grows the leak.
pub const RAMP_STEP: Duration = Duration::from_millis(100);

/// Pages touched between two looks at the cancel flag (1 MiB of 4 KiB pages).
const TOUCH_BATCH: usize = 256;

/// How often a leak being made re-estimates its end.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Why a leak could not be made.
#[derive(Debug, Clone, PartialEq)]
pub enum LeakError {
    LargerThanMachine {
        machine: u64,
    },
    /// It would take address space (`RLIMIT_AS`) that the connections are
    /// promised: `kept` bytes of `limit`.
    AddressSpace {
        limit: u64,
        kept: u64,
    },
    Refused(String),
    /// Stopped (DELETE or /chaos/stop) while it was being made.
    Cancelled,
}

impl fmt::Display for LeakError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeakError::LargerThanMachine { machine } => {
                write!(f, "more than this machine's memory plus swap ({} MiB)", machine >> 20)
            }
            LeakError::AddressSpace { limit, kept } => write!(
                f,
                "more than the address space allows (RLIMIT_AS {} MiB, of which {} MiB are kept for connections)",
                limit >> 20,
                kept >> 20
            ),
            LeakError::Refused(e) => write!(f, "allocation refused: {e}"),
            LeakError::Cancelled => write!(f, "stopped while it was being made"),
        }
    }
}

/// A size beyond the machine's memory plus swap is refused up front, for a
/// ramp's total as for a leak made at once: with `vm.overcommit_memory=1`
/// (the kubelet's setting) the kernel would accept the mapping, and outside
/// a memory limit the node would pay.
pub fn check_size(bytes: u64) -> Result<(), LeakError> {
    if let Some(machine) = sys::machine_memory_bytes()
        && bytes > machine
    {
        return Err(LeakError::LargerThanMachine { machine });
    }
    if let Some(limit) = sys::address_space_limit() {
        let kept = ADDRESS_SPACE_KEPT.load(Ordering::Relaxed);
        if sys::address_space_bytes().saturating_add(bytes).saturating_add(kept) > limit {
            return Err(LeakError::AddressSpace { limit, kept });
        }
    }
    Ok(())
}

/// Address space (`RLIMIT_AS`) a leak must leave free: what the
/// connection cap promises connections (their threads' stacks, the answers'
/// budget). A leak that took it would make a connection's thread, or an
/// allocation, fail later (Rust aborts on a failed allocation).
static ADDRESS_SPACE_KEPT: AtomicU64 = AtomicU64::new(0);

/// Sets the address space a leak must leave free (`main`, from the cap).
pub fn keep_address_space(bytes: u64) {
    ADDRESS_SPACE_KEPT.store(bytes, Ordering::Relaxed);
}

/// The leaked chunks. Their bytes are never read; holding them is the point.
#[derive(Debug, Default)]
pub struct Leak {
    /// Each chunk with the registry id of the leak that made it, so that a
    /// leak is released by its own id and no other's chunks.
    chunks: Mutex<Vec<(u64, Mapping)>>,
    total_bytes: AtomicU64,
}

impl Leak {
    /// Maps `bytes` more for leak `id` and touches every page of them,
    /// looking at `cancel` every MiB; a cancelled chunk is unmapped at once.
    pub fn grow(&self, id: u64, bytes: usize, cancel: &Cancel) -> Result<(), LeakError> {
        self.grow_reporting(id, bytes, cancel, &mut |_| {})
    }

    /// [`Leak::grow`], telling `progress` the share made so far (0 to 1)
    /// every `PROGRESS_EVERY` while it takes.
    pub fn grow_reporting(
        &self,
        id: u64,
        bytes: usize,
        cancel: &Cancel,
        progress: &mut dyn FnMut(f64),
    ) -> Result<(), LeakError> {
        check_size(bytes as u64)?;
        let mut chunk = Mapping::anonymous(bytes).map_err(|e| LeakError::Refused(e.to_string()))?;
        let mut offset = 0;
        let mut next_report = Instant::now() + PROGRESS_EVERY;
        while offset < chunk.len() {
            if cancel.is_cancelled() {
                return Err(LeakError::Cancelled);
            }
            offset = chunk.touch(offset, TOUCH_BATCH);
            if Instant::now() >= next_report {
                progress(offset as f64 / chunk.len() as f64);
                next_report = Instant::now() + PROGRESS_EVERY;
            }
        }
        let held = chunk.len() as u64;
        self.chunks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, chunk));
        self.total_bytes.fetch_add(held, Ordering::SeqCst);
        Ok(())
    }

    /// Unmaps the chunks of leak `id`; returns how many chunks and bytes.
    pub fn release_id(&self, id: u64) -> (usize, u64) {
        let taken: Vec<Mapping> = {
            let mut chunks = self.chunks.lock().unwrap_or_else(PoisonError::into_inner);
            let (out, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut *chunks)
                .into_iter()
                .partition(|(chunk_id, _)| *chunk_id == id);
            *chunks = keep;
            out.into_iter().map(|(_, c)| c).collect()
        };
        let bytes: u64 = taken.iter().map(|c| c.len() as u64).sum();
        self.total_bytes.fetch_sub(bytes, Ordering::SeqCst);
        (taken.len(), bytes)
    }

    /// Bytes held by leak `id`.
    pub fn bytes_of(&self, id: u64) -> u64 {
        self.chunks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(chunk_id, _)| *chunk_id == id)
            .map(|(_, c)| c.len() as u64)
            .sum()
    }

    pub fn chunks(&self) -> usize {
        self.chunks.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn total_bytes(&self) -> u64 {
        self.total_bytes.load(Ordering::SeqCst)
    }
}

/// What one leak request asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeakPlan {
    pub bytes: u64,
    /// Grow evenly over this long, instead of at once.
    pub ramp: Option<Duration>,
    /// Release this long after the leak is complete.
    pub hold: Option<Duration>,
}

/// Starts the thread that makes leak `ticket.id` as `plan` says, then holds
/// it. A leak made at once allocates nothing on that thread but its chunk
/// (mapped, not allocated; the list has room reserved here): a thread's first
/// `malloc` gives it a glibc arena of its own, half a MiB of RSS. A leak made at once sends how long it took, or why it failed, on
/// `made`. The thread ends the fault itself when a hold runs out or the
/// growth fails; when the fault is stopped it just returns (the stopper
/// releases the chunks after joining it).
pub fn spawn(
    leak: Arc<Leak>,
    events: Arc<Events>,
    plan: LeakPlan,
    ticket: Ticket,
    made: SyncSender<Result<Duration, LeakError>>,
) -> std::io::Result<JoinHandle<()>> {
    let name = if plan.ramp.is_some() {
        "memory-ramp"
    } else {
        "memory-leak"
    };
    leak.chunks.lock().unwrap_or_else(PoisonError::into_inner).reserve(1);
    std::thread::Builder::new().name(name.into()).spawn(move || {
        let cancel = &ticket.cancel;
        let grown = match plan.ramp {
            None => {
                let t0 = Instant::now();
                // While a large leak is made (seconds, under memory
                // pressure), its planned end is the hold after an estimate
                // of the rest, from the pace so far: what Retry-After and
                // GET /chaos count on until the leak is made.
                let mut progress = |done: f64| {
                    if let Some(hold) = plan.hold
                        && done > 0.0
                    {
                        let rest = t0.elapsed().mul_f64((1.0 - done) / done);
                        ticket.expect_end(rest + hold);
                    }
                };
                let result = leak.grow_reporting(ticket.id, plan.bytes as usize, cancel, &mut progress);
                if matches!(result, Err(ref e) if *e != LeakError::Cancelled) {
                    ticket.finish(Ended::Failed);
                }
                let ok = result.is_ok();
                let _ = made.send(result.map(|()| t0.elapsed()));
                ok
            }
            Some(ramp) => ramp_up(&leak, &events, plan.bytes, ramp, &ticket),
        };
        if !grown {
            return;
        }
        if let Some(hold) = plan.hold {
            // The hold starts now, not when the leak was asked for: the
            // guardrail's Retry-After and GET /chaos count on its real end.
            ticket.expect_end(hold);
            if !cancel.sleep_until(Instant::now() + hold) {
                ticket.finish(Ended::OnTime);
            }
        }
    })
}

/// How much a ramp of `steps` steps to `bytes` holds after `step`: whole
/// pages until the last step, so that no chunk is smaller than a page (a
/// 29-byte chunk would still cost a whole page of RSS, and a mapping).
fn ramp_target(bytes: u64, step: u64, steps: u64, page: u64) -> u64 {
    if step >= steps {
        bytes
    } else {
        (bytes * step / steps) / page * page
    }
}

/// Grows leak `ticket.id` to `bytes` in even steps over `ramp`; whether it
/// got there (not stopped, not failed).
fn ramp_up(leak: &Leak, events: &Events, bytes: u64, ramp: Duration, ticket: &Ticket) -> bool {
    let steps = (ramp.as_millis() / RAMP_STEP.as_millis()).max(1) as u64;
    let t0 = Instant::now();
    let mut done = 0u64;
    for step in 1..=steps {
        let target = ramp_target(bytes, step, steps, sys::page_size() as u64);
        if target > done {
            match leak.grow(ticket.id, (target - done) as usize, &ticket.cancel) {
                Ok(()) => done = target,
                Err(LeakError::Cancelled) => return false,
                Err(e) => {
                    events.emit(
                        Event::ChaosFinished,
                        json!({"action": "memory", "error": e.to_string(), "leaked_mb": done >> 20}),
                    );
                    ticket.finish(Ended::Failed);
                    return false;
                }
            }
        }
        if step < steps && ticket.cancel.sleep_until(t0 + RAMP_STEP * step as u32) {
            return false;
        }
    }
    events.emit(
        Event::ChaosFinished,
        json!({"action": "memory", "leaked_mb": bytes >> 20, "ramp_seconds": ramp.as_secs()}),
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grow(leak: &Leak, id: u64, bytes: usize) -> Result<(), LeakError> {
        leak.grow(id, bytes, &Cancel::default())
    }

    #[test]
    fn grows_resident_memory_and_counts_chunks() {
        let _serial = sys::RSS_TEST_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        let leak = Leak::default();
        let before = sys::rss_bytes();
        grow(&leak, 1, 48 << 20).unwrap();
        grow(&leak, 1, 1 << 20).unwrap();
        let after = sys::rss_bytes();
        assert_eq!(leak.chunks(), 2);
        assert_eq!(leak.total_bytes(), 49 << 20);
        assert!(after >= before + (47 << 20), "rss {before} -> {after}");
    }

    #[test]
    fn release_gives_the_memory_back_every_time() {
        let _serial = sys::RSS_TEST_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        let leak = Leak::default();
        let before = sys::rss_bytes();
        for _ in 0..2 {
            grow(&leak, 7, 24 << 20).unwrap();
            for _ in 0..16 {
                grow(&leak, 7, 1 << 20).unwrap();
            }
            assert_eq!(leak.release_id(7), (17, 40 << 20));
            assert_eq!((leak.chunks(), leak.total_bytes()), (0, 0));
            let after = sys::rss_bytes();
            assert!(after < before + (4 << 20), "rss {before} -> {after}");
        }
    }

    #[test]
    fn release_by_id_keeps_the_other_chunks() {
        let leak = Leak::default();
        grow(&leak, 1, 1 << 20).unwrap();
        grow(&leak, 2, 2 << 20).unwrap();
        assert_eq!(leak.bytes_of(2), 2 << 20);
        assert_eq!(leak.release_id(1), (1, 1 << 20));
        assert_eq!((leak.chunks(), leak.total_bytes()), (1, 2 << 20));
    }

    #[test]
    fn an_impossible_size_is_an_error_not_an_abort() {
        let leak = Leak::default();
        assert!(grow(&leak, 1, usize::MAX / 2).is_err());
        assert!(check_size(u64::MAX / 2).is_err());
        assert_eq!((leak.chunks(), leak.total_bytes()), (0, 0));
    }

    #[test]
    fn a_slow_ramp_grows_by_whole_pages() {
        // mb=1&ramp=3600: 36000 steps of 100 ms, 256 pages to spread.
        let (bytes, steps, page) = (1u64 << 20, 36_000, 4096);
        let targets: Vec<u64> = (1..=steps).map(|s| ramp_target(bytes, s, steps, page)).collect();
        let mut chunks = 0;
        let mut done = 0;
        for t in targets {
            assert!(t >= done);
            if t > done {
                assert_eq!((t - done) % page, 0, "whole pages");
                chunks += 1;
                done = t;
            }
        }
        assert_eq!((done, chunks), (bytes, 256));
        assert_eq!(ramp_target(100 << 20, 20, 40, page), 50 << 20, "even steps");
    }

    #[test]
    fn a_cancelled_growth_keeps_nothing() {
        let leak = Leak::default();
        let cancel = Cancel::default();
        cancel.cancel();
        assert_eq!(leak.grow(1, 8 << 20, &cancel), Err(LeakError::Cancelled));
        assert_eq!((leak.chunks(), leak.total_bytes()), (0, 0));
    }
}
