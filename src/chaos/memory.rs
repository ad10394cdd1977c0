//! The memory leak: chunks kept in one global vector, every page written so
//! that the resident set really grows (an untouched allocation costs nothing
//! until used, and would fool both /ready and the OOM killer).
//!
//! The allocation is asked for with `try_reserve_exact`, so a size the
//! allocator refuses becomes an error the handler can answer (507) instead of
//! an abort. Under a cgroup memory limit the kernel's OOM killer ends the
//! process while pages are being touched: that is the intended OOMKill path.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::sys;

/// Why a leak could not be made.
#[derive(Debug, Clone, PartialEq)]
pub enum LeakError {
    LargerThanMachine { machine: u64 },
    Refused(String),
}

impl fmt::Display for LeakError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeakError::LargerThanMachine { machine } => {
                write!(f, "more than this machine's memory plus swap ({} MiB)", machine >> 20)
            }
            LeakError::Refused(e) => write!(f, "allocation refused: {e}"),
        }
    }
}

/// The leaked chunks. Their bytes are never read; holding them is the point.
#[derive(Debug, Default)]
pub struct Leak {
    /// Each chunk with the id of the leak request that made it, so that a
    /// `hold` can release its own chunks and no others.
    chunks: Mutex<Vec<(u64, Vec<u8>)>>,
    total_bytes: AtomicU64,
    next_id: AtomicU64,
}

impl Leak {
    /// Allocates `bytes` more and touches every page of them.
    ///
    /// A size beyond the machine's memory plus swap is refused up front:
    /// with `vm.overcommit_memory=1` (the kubelet's setting) the allocator
    /// would accept it, and outside a memory limit the node would pay.
    #[cfg(test)]
    pub fn grow(&self, bytes: usize) -> Result<(), LeakError> {
        self.grow_tagged(0, bytes)
    }

    /// A fresh id for the chunks of one leak request.
    pub fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Like `grow`, tagging the chunk with `id`.
    pub fn grow_tagged(&self, id: u64, bytes: usize) -> Result<(), LeakError> {
        if let Some(machine) = sys::machine_memory_bytes()
            && bytes as u64 > machine
        {
            return Err(LeakError::LargerThanMachine { machine });
        }
        let mut chunk: Vec<u8> = Vec::new();
        chunk
            .try_reserve_exact(bytes)
            .map_err(|e| LeakError::Refused(e.to_string()))?;
        // Writing one byte per page is enough to make the kernel back the
        // page; the bytes stay outside the vector's length, so no byte is
        // ever read uninitialised and no unsafe is needed.
        for page in chunk.spare_capacity_mut().chunks_mut(sys::page_size()) {
            page[0].write(0xA5);
        }
        let held = chunk.capacity() as u64;
        self.chunks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, chunk));
        self.total_bytes.fetch_add(held, Ordering::SeqCst);
        Ok(())
    }

    /// Frees every chunk; returns how many chunks and bytes were held. The
    /// chunks are large enough for the allocator to have mapped each one on
    /// its own, so freeing gives the pages back and RSS falls at once.
    pub fn release(&self) -> (usize, u64) {
        self.release_where(|_| true)
    }

    /// Frees the chunks of leak request `id` only.
    pub fn release_id(&self, id: u64) -> (usize, u64) {
        self.release_where(|chunk_id| chunk_id == id)
    }

    fn release_where(&self, pick: impl Fn(u64) -> bool) -> (usize, u64) {
        let taken: Vec<Vec<u8>> = {
            let mut chunks = self.chunks.lock().unwrap_or_else(PoisonError::into_inner);
            let (out, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut *chunks).into_iter().partition(|(id, _)| pick(*id));
            *chunks = keep;
            out.into_iter().map(|(_, c)| c).collect()
        };
        let bytes: u64 = taken.iter().map(|c| c.capacity() as u64).sum();
        self.total_bytes.fetch_sub(bytes, Ordering::SeqCst);
        (taken.len(), bytes)
    }

    pub fn chunks(&self) -> usize {
        self.chunks.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn total_bytes(&self) -> u64 {
        self.total_bytes.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_resident_memory_and_counts_chunks() {
        let _serial = sys::RSS_TEST_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        let leak = Leak::default();
        let before = sys::rss_bytes();
        leak.grow(48 << 20).unwrap();
        leak.grow(1 << 20).unwrap();
        let after = sys::rss_bytes();
        assert_eq!(leak.chunks(), 2);
        assert_eq!(leak.total_bytes(), 49 << 20);
        assert!(after >= before + (47 << 20), "rss {before} -> {after}");
    }

    #[test]
    fn release_gives_the_memory_back() {
        let _serial = sys::RSS_TEST_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        let leak = Leak::default();
        let before = sys::rss_bytes();
        leak.grow(64 << 20).unwrap();
        assert_eq!(leak.release(), (1, 64 << 20));
        assert_eq!((leak.chunks(), leak.total_bytes()), (0, 0));
        let after = sys::rss_bytes();
        assert!(after < before + (8 << 20), "rss {before} -> {after}");
    }

    #[test]
    fn release_by_id_keeps_the_other_chunks() {
        let leak = Leak::default();
        let (a, b) = (leak.new_id(), leak.new_id());
        leak.grow_tagged(a, 1 << 20).unwrap();
        leak.grow_tagged(b, 2 << 20).unwrap();
        assert_eq!(leak.release_id(a), (1, 1 << 20));
        assert_eq!((leak.chunks(), leak.total_bytes()), (1, 2 << 20));
    }

    #[test]
    fn an_impossible_size_is_an_error_not_an_abort() {
        let leak = Leak::default();
        assert!(leak.grow(usize::MAX / 2).is_err());
        assert_eq!(leak.chunks(), 0);
        assert_eq!(leak.total_bytes(), 0);
    }
}
