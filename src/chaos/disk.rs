//! The disk fill: one file of real blocks in `DISK_FILL_DIR`, written in
//! 1 MiB chunks of incompressible, non-zero bytes and fsynced, so that `du`,
//! the kubelet's volume accounting and a quota all see every byte (a sparse
//! file or a run of zeros on a compressing file system would fool them).
//!
//! The registry owns a running fill (a `FaultKind::Disk` entry: its
//! guardrail slot, its cancel handle, its writer thread and its removal);
//! `DiskFill` carries it out and reports on it (the file, the bytes written,
//! how the last fill ended). Every fill is written by a thread of its own,
//! with or without a ramp; a stop cancels it, joins it, then removes the
//! file (`DiskFill::remove`), all before the stop answers. When the disk runs out (ENOSPC, EDQUOT), or the process's
//! file-size limit is reached (EFBIG), the writer removes the partial file
//! (unless `keep`), so the crash marker and the probes keep working, and
//! reports why it ended.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::registry::{Cancel, Ended, Ticket};
use crate::os::sys::Mapping;

/// Every file this fault writes starts with this; start-up removes only
/// files so named, so a `DISK_FILL_DIR` shared with other data is safe.
pub const FILE_PREFIX: &str = "chaos-disk-fill";
const FILE_NAME: &str = "chaos-disk-fill.bin";
/// The write size: large enough to be fast, small enough that a stop is
/// noticed within one chunk.
pub const CHUNK: usize = 1 << 20;
/// How often a ramp writes (and fsyncs) its next share.
const RAMP_STEP: Duration = Duration::from_millis(100);
/// A fill without a ramp fsyncs this often, so that the bytes reach the
/// disk (and an EDQUOT reported only at writeback surfaces) while it runs.
const SYNC_EVERY: u64 = 16 << 20;

/// Why a fill ended before its target, as the `reason` label and in events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// `DELETE /load/disk`, `POST /chaos/stop` or shutdown.
    Removed,
    /// ENOSPC: the file system (or the emptyDir's tmpfs) is full.
    NoSpace,
    /// EDQUOT: a disk quota (an XFS project quota on an emptyDir) is used up.
    Quota,
    /// EFBIG: the process's file-size limit (`RLIMIT_FSIZE`, `ulimit -f`)
    /// was reached. SIGXFSZ, which would end the process there, is
    /// ignored (`os::signals`), so the write fails with EFBIG instead.
    FileSizeLimit,
    /// Any other I/O error.
    IoError,
}

impl EndReason {
    pub const ALL: [EndReason; 5] = [
        EndReason::Removed,
        EndReason::NoSpace,
        EndReason::Quota,
        EndReason::FileSizeLimit,
        EndReason::IoError,
    ];

    pub fn label(self) -> &'static str {
        match self {
            EndReason::Removed => "removed",
            EndReason::NoSpace => "no_space",
            EndReason::Quota => "quota",
            EndReason::FileSizeLimit => "file_size_limit",
            EndReason::IoError => "io_error",
        }
    }

    fn of(e: &std::io::Error) -> EndReason {
        match e.raw_os_error() {
            Some(libc::ENOSPC) => EndReason::NoSpace,
            Some(libc::EDQUOT) => EndReason::Quota,
            Some(libc::EFBIG) => EndReason::FileSizeLimit,
            _ => EndReason::IoError,
        }
    }
}

/// How one fill ended (or that it reached its target).
#[derive(Debug, Clone, PartialEq)]
pub enum FillOutcome {
    /// All bytes written and synced; the file stays until removed.
    Complete { bytes: u64, took: Duration },
    /// Ended early.
    Ended(FillEnd),
}

/// How a fill ended early: why, how many bytes had been written, whether
/// the partial file was kept, the error text, and when (for `GET /chaos`).
#[derive(Debug, Clone, PartialEq)]
pub struct FillEnd {
    pub reason: EndReason,
    pub written: u64,
    pub kept: bool,
    pub error: String,
    pub at: SystemTime,
}

/// What `GET /chaos` shows of the fill.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub path: PathBuf,
    pub written: u64,
    pub target: u64,
    /// Still writing (a ramp, or a fill being answered).
    pub writing: bool,
    pub ends_at: Option<SystemTime>,
}

/// Called by the writer thread when a fill ends early, at that moment (the
/// client of a ramp already has its 202): it logs, counts and emits.
pub type OnEnd = Arc<dyn Fn(&FillOutcome, &Path) + Send + Sync>;

/// The fill that exists now: being written, or written and held.
struct Current {
    path: PathBuf,
    target: u64,
    writing: bool,
    ends_at: Option<SystemTime>,
}

#[derive(Default)]
struct Inner {
    current: Option<Current>,
    last_ended: Option<FillEnd>,
}

/// The disk: where fills go, what is written now, and how the last one
/// ended. The registry owns the running fill (its slot, its writer thread,
/// its removal); this only carries it out and reports on it.
pub struct DiskFill {
    dir: PathBuf,
    unavailable: Option<String>,
    /// Bytes in the file now (written and not yet removed).
    written: Arc<AtomicU64>,
    inner: Mutex<Inner>,
}

impl DiskFill {
    /// Creates `dir` and removes any fill left there by an earlier run of
    /// the container (an emptyDir outlives restarts). Returns the fault and
    /// the lines to log. A directory that cannot be created does not stop
    /// the service: the fault answers 503 saying why, the rest works.
    pub fn prepare(dir: &Path) -> (DiskFill, Vec<String>) {
        let mut log = Vec::new();
        let unavailable = match fs::create_dir_all(dir) {
            Ok(()) => {
                log.extend(remove_leftovers(dir));
                // A read-only volume exists but takes no file: say so now,
                // not as a 500 at the first fill.
                let probe = dir.join(format!("{FILE_PREFIX}.probe"));
                File::create(&probe)
                    .and_then(|_| fs::remove_file(&probe))
                    .err()
                    .map(|e| format!("DISK_FILL_DIR {} is not writable: {e}", dir.display()))
            }
            Err(e) => Some(format!("cannot create DISK_FILL_DIR {}: {e}", dir.display())),
        };
        let fill = DiskFill {
            dir: dir.to_path_buf(),
            unavailable,
            written: Arc::new(AtomicU64::new(0)),
            inner: Mutex::new(Inner::default()),
        };
        (fill, log)
    }

    /// Why the fault cannot run, if it cannot.
    pub fn unavailable(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts the writer thread of the registry entry `ticket`: `target`
    /// bytes, over `ramp` if given. Returns the thread (the registry joins it
    /// on a stop) and a receiver that gets the outcome when writing ends (a
    /// handler without a ramp waits on it). When the disk runs out and the
    /// partial file is not kept, the writer removes it, calls `on_end` and
    /// ends the entry itself (`Ended::Failed`), before sending the outcome;
    /// a complete or kept file stays, and its entry with it, until removed.
    /// Only spawns: never waits (it runs under the registry's lock).
    pub fn spawn(
        self: &Arc<Self>,
        ticket: Ticket,
        target: u64,
        ramp: Option<Duration>,
        keep: bool,
        on_end: OnEnd,
    ) -> Result<(JoinHandle<()>, Receiver<FillOutcome>), String> {
        if let Some(why) = &self.unavailable {
            return Err(format!("disk fill unavailable: {why}"));
        }
        let mut inner = self.lock();
        // The registry lets one disk fill exist at a time, its removal
        // included; this only guards that promise.
        if inner.current.is_some() {
            return Err("a disk fill still exists".to_string());
        }
        let path = self.dir.join(FILE_NAME);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let (tx, rx) = mpsc::sync_channel(1);
        let job = Job {
            file,
            path: path.clone(),
            target,
            ramp,
            keep,
            cancel: ticket.cancel.clone(),
            written: Arc::clone(&self.written),
        };
        self.written.store(0, Ordering::SeqCst);
        let fill = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("disk-fill".into()).spawn(move || {
            let outcome = job.run();
            let early = match &outcome {
                FillOutcome::Ended(e) if e.reason != EndReason::Removed => Some(e.kept),
                _ => None,
            };
            fill.written_out(&outcome);
            if let (Some(kept), FillOutcome::Ended(e)) = (early, &outcome) {
                on_end(&outcome, &job.path);
                if !kept {
                    // Nothing is left on disk: the entry and its slot go now.
                    ticket.finish(Ended::Failed);
                }
                // Last: whoever reads why it ended (GET /chaos) also sees
                // the entry gone and the end counted.
                fill.lock().last_ended = Some(e.clone());
            }
            report(&tx, &outcome);
        });
        match spawned {
            Ok(thread) => {
                inner.current = Some(Current {
                    path,
                    target,
                    writing: true,
                    ends_at: ramp.map(|r| SystemTime::now() + r),
                });
                Ok((thread, rx))
            }
            Err(e) => {
                let _ = fs::remove_file(&path);
                Err(format!("cannot start the writer thread: {e}"))
            }
        }
    }

    /// The writer is done: a complete or kept file is held; after an early
    /// end without `keep` there is no file left.
    fn written_out(&self, outcome: &FillOutcome) {
        let mut inner = self.lock();
        if let Some(c) = inner.current.as_mut() {
            c.writing = false;
        }
        if let FillOutcome::Ended(e) = outcome
            && e.reason != EndReason::Removed
            && !e.kept
        {
            inner.current = None;
        }
    }

    /// Removes the fill's file; the registry calls it once the writer
    /// thread has ended. Returns the bytes that were on disk, or `None` if
    /// no fill existed (it had already ended and removed its file).
    pub fn remove(&self) -> Option<u64> {
        let current = self.lock().current.take()?;
        let before = self.written.load(Ordering::SeqCst);
        if let Err(e) = fs::remove_file(&current.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            log::warn!("cannot remove disk fill {}: {e}", current.path.display());
        }
        sync_dir(&self.dir);
        self.written.store(0, Ordering::SeqCst);
        self.lock().last_ended = Some(FillEnd {
            reason: EndReason::Removed,
            written: before,
            kept: false,
            error: String::new(),
            at: SystemTime::now(),
        });
        Some(before)
    }

    /// The fill, if one is being written or held.
    pub fn status(&self) -> Option<Status> {
        let inner = self.lock();
        let written = self.written.load(Ordering::SeqCst);
        inner.current.as_ref().map(|c| Status {
            path: c.path.clone(),
            written,
            target: if c.writing { c.target } else { written },
            writing: c.writing,
            ends_at: if c.writing { c.ends_at } else { None },
        })
    }

    /// How the last fill ended (removed, or ran out of space), with why.
    pub fn last_ended(&self) -> Option<FillEnd> {
        self.lock().last_ended.clone()
    }

    /// Bytes in the fill file now.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// Bytes the running fill aims at (0 when none is being written).
    pub fn target(&self) -> u64 {
        let inner = self.lock();
        inner.current.as_ref().filter(|c| c.writing).map_or(0, |c| c.target)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn report(tx: &SyncSender<FillOutcome>, outcome: &FillOutcome) {
    // Nobody waits for a ramp's outcome: a closed channel is expected.
    let _ = tx.try_send(outcome.clone());
}

/// One fill's writer.
struct Job {
    file: File,
    path: PathBuf,
    target: u64,
    ramp: Option<Duration>,
    keep: bool,
    cancel: Cancel,
    written: Arc<AtomicU64>,
}

impl Job {
    fn run(&self) -> FillOutcome {
        let t0 = Instant::now();
        let map = match pattern(CHUNK) {
            Ok(map) => map,
            Err(e) => return self.ended(EndReason::IoError, format!("cannot map the write buffer: {e}")),
        };
        let buf = map.as_slice();
        let result = match self.ramp {
            None => self.write_until(self.target, buf, SYNC_EVERY),
            Some(ramp) => {
                let steps = (ramp.as_millis() / RAMP_STEP.as_millis()).max(1) as u64;
                let mut result = Ok(());
                for step in 1..=steps {
                    let goal = (u128::from(self.target) * u128::from(step) / u128::from(steps)) as u64;
                    result = self.write_until(goal, buf, u64::MAX).and_then(|()| self.sync());
                    if result.is_err() {
                        break;
                    }
                    self.cancel.sleep_until(t0 + RAMP_STEP * step as u32);
                }
                result
            }
        };
        let result = result.and_then(|()| self.sync());
        match result {
            Ok(()) if !self.cancelled() => FillOutcome::Complete {
                bytes: self.written.load(Ordering::SeqCst),
                took: t0.elapsed(),
            },
            Ok(()) => self.ended(EndReason::Removed, "stopped on request".into()),
            Err(Stop::Cancelled) => self.ended(EndReason::Removed, "stopped on request".into()),
            Err(Stop::Io(e)) => self.ended(EndReason::of(&e), e.to_string()),
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Writes until the file holds `goal` bytes, syncing every `sync_every`.
    fn write_until(&self, goal: u64, buf: &[u8], sync_every: u64) -> Result<(), Stop> {
        let mut done = self.written.load(Ordering::SeqCst);
        let mut since_sync = 0u64;
        while done < goal {
            if self.cancelled() {
                return Err(Stop::Cancelled);
            }
            let n = (goal - done).min(buf.len() as u64) as usize;
            // A short write is how a nearly full disk answers; the next
            // write then fails with ENOSPC, so count what each one wrote.
            let wrote = (&self.file).write(&buf[..n]).map_err(Stop::Io)?;
            if wrote == 0 {
                return Err(Stop::Io(std::io::Error::from_raw_os_error(libc::ENOSPC)));
            }
            done += wrote as u64;
            since_sync += wrote as u64;
            self.written.store(done, Ordering::SeqCst);
            if since_sync >= sync_every {
                self.sync()?;
                since_sync = 0;
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), Stop> {
        self.file.sync_data().map_err(Stop::Io)
    }

    /// Builds the early end; removes the partial file unless `keep` (or
    /// unless a stop is in progress, which removes it itself).
    fn ended(&self, reason: EndReason, error: String) -> FillOutcome {
        let written = self.written.load(Ordering::SeqCst);
        let kept = self.keep && reason != EndReason::Removed;
        if !kept && reason != EndReason::Removed {
            if let Err(e) = fs::remove_file(&self.path) {
                log::warn!("cannot remove the partial disk fill {}: {e}", self.path.display());
            }
            self.written.store(0, Ordering::SeqCst);
            if let Some(dir) = self.path.parent() {
                sync_dir(dir);
            }
        }
        FillOutcome::Ended(FillEnd {
            reason,
            written,
            kept,
            error,
            at: SystemTime::now(),
        })
    }
}

enum Stop {
    Cancelled,
    Io(std::io::Error),
}

/// `len` bytes that no file system compresses or deduplicates within a
/// chunk and that are never all zero (xorshift64; the seed is not zero).
/// Mapped, not allocated: a writer thread that allocated 1 MiB would give
/// itself a glibc arena whose freed memory stays in RSS after the fill is
/// removed (see `memory.rs` on the mmap threshold); a mapping is returned
/// to the kernel when dropped.
fn pattern(len: usize) -> std::io::Result<Mapping> {
    let mut map = Mapping::anonymous(len)?;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for word in map.as_mut_slice().chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = (x | 1).to_le_bytes();
        word.copy_from_slice(&bytes[..word.len()]);
    }
    Ok(map)
}

/// Removes the fill files an earlier run left in `dir`; says what it did.
fn remove_leftovers(dir: &Path) -> Vec<String> {
    let mut log = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return log;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(FILE_PREFIX) {
            continue;
        }
        let path = entry.path();
        let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&path) {
            Ok(()) => log.push(format!(
                "removed a disk fill left by an earlier run: {} ({} MiB)",
                path.display(),
                bytes >> 20
            )),
            Err(e) => log.push(format!("cannot remove the leftover disk fill {}: {e}", path.display())),
        }
    }
    if !log.is_empty() {
        sync_dir(dir);
    }
    log
}

/// Makes a removal durable; best effort (a read-only or gone directory only
/// means there is nothing to sync).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::guard::Guard;
    use crate::chaos::registry::{FaultKind, Registry, Running, StartError};

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chaos-backend-disk-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn quiet() -> OnEnd {
        Arc::new(|_: &FillOutcome, _: &Path| {})
    }

    /// Starts a fill as the handler does: a registry entry whose clean-up
    /// removes the file.
    fn start(
        registry: &Arc<Registry>,
        fill: &Arc<DiskFill>,
        target: u64,
        ramp: Option<Duration>,
    ) -> Result<Receiver<FillOutcome>, StartError> {
        let mut done = None;
        registry.start(FaultKind::Disk, Instant::now(), None, |ticket| {
            let (thread, rx) = fill.spawn(ticket, target, ramp, false, quiet())?;
            done = Some(rx);
            let remover = Arc::clone(fill);
            Ok(Running {
                threads: vec![thread],
                cleanup: Box::new(move |_| {
                    remover.remove();
                }),
                detail: String::new(),
                ends_at: None,
                extra: serde_json::Value::Null,
            })
        })?;
        Ok(done.expect("launched"))
    }

    fn registry() -> Arc<Registry> {
        Registry::new(Guard::new(4, Duration::ZERO))
    }

    /// Allocated bytes of a file, as `du` counts them.
    fn allocated(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(path).map(|m| m.blocks() * 512).unwrap_or(0)
    }

    #[test]
    fn writes_real_blocks_and_stop_removes_them() {
        let dir = temp_dir("real");
        let (fill, log) = DiskFill::prepare(&dir);
        let fill = Arc::new(fill);
        assert!(log.is_empty(), "{log:?}");
        let registry = registry();
        let rx = start(&registry, &fill, 3 << 20, None).unwrap();
        let outcome = rx.recv().unwrap();
        assert!(
            matches!(outcome, FillOutcome::Complete { bytes, .. } if bytes == 3 << 20),
            "{outcome:?}"
        );
        let status = fill.status().unwrap();
        assert_eq!((status.written, status.writing), (3 << 20, false));
        // Not sparse: the blocks are allocated; and not zeros.
        assert!(allocated(&status.path) >= 3 << 20, "{}", allocated(&status.path));
        let head = fs::read(&status.path).unwrap();
        assert!(head.chunks(8).all(|w| w != [0u8; 8]));
        // A written fill stays, and so does its entry: one at a time.
        assert!(registry.is_active(FaultKind::Disk));
        assert!(matches!(
            start(&registry, &fill, 1, None),
            Err(StartError::Busy(Some(_)))
        ));
        assert_eq!(registry.stop(Some(FaultKind::Disk), Ended::OnRequest).len(), 1);
        assert!(!status.path.exists());
        assert_eq!(fill.status(), None);
        assert_eq!(fill.last_ended().unwrap().written, 3 << 20);
        assert_eq!(fill.remove(), None);
        assert_eq!(registry.active(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stop_ends_a_ramp_at_once() {
        let dir = temp_dir("ramp");
        let (fill, _) = DiskFill::prepare(&dir);
        let fill = Arc::new(fill);
        let registry = registry();
        let _rx = start(&registry, &fill, 64 << 20, Some(Duration::from_secs(60))).unwrap();
        std::thread::sleep(Duration::from_millis(250));
        let status = fill.status().unwrap();
        assert!(
            status.writing && status.written > 0 && status.written < 8 << 20,
            "{status:?}"
        );
        let t = Instant::now();
        assert_eq!(registry.stop(None, Ended::OnRequest), [FaultKind::Disk]);
        assert!(t.elapsed() < Duration::from_secs(2), "stop took {:?}", t.elapsed());
        // The writer thread has ended and the file is gone: nothing comes back.
        assert!(!status.path.exists());
        std::thread::sleep(Duration::from_millis(300));
        assert!(!status.path.exists());
        assert_eq!(fill.written(), 0);
        assert_eq!(fill.last_ended().unwrap().reason, EndReason::Removed);
        assert_eq!(registry.active(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn leftovers_of_an_earlier_run_are_removed_and_others_kept() {
        let dir = temp_dir("leftover");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(FILE_NAME), vec![1u8; 2 << 20]).unwrap();
        fs::write(dir.join("someone-elses.dat"), b"keep me").unwrap();
        let (fill, log) = DiskFill::prepare(&dir);
        assert_eq!(log.len(), 1, "{log:?}");
        assert!(log[0].contains("earlier run") && log[0].contains("(2 MiB)"), "{log:?}");
        assert!(!dir.join(FILE_NAME).exists());
        assert!(dir.join("someone-elses.dat").exists());
        assert_eq!(fill.status(), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_uncreatable_dir_makes_the_fault_unavailable() {
        let (fill, _) = DiskFill::prepare(Path::new("/proc/chaos-backend-no-such-dir/fill"));
        let why = fill.unavailable().unwrap().to_string();
        assert!(why.contains("/proc/chaos-backend-no-such-dir/fill"), "{why}");
        let fill = Arc::new(fill);
        let registry = registry();
        match start(&registry, &fill, 1, None) {
            Err(StartError::Failed(e)) => assert!(e.contains("unavailable"), "{e}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert_eq!(registry.active(), 0);
    }

    #[test]
    fn a_read_only_dir_makes_the_fault_unavailable() {
        // /proc/self exists and takes no new file, even for root.
        let (fill, _) = DiskFill::prepare(Path::new("/proc/self"));
        let why = fill.unavailable().unwrap().to_string();
        assert!(why.contains("/proc/self is not writable"), "{why}");
    }

    #[test]
    fn a_full_disk_and_a_used_up_quota_are_told_apart() {
        use std::io::Error;
        assert_eq!(
            EndReason::of(&Error::from_raw_os_error(libc::ENOSPC)),
            EndReason::NoSpace
        );
        assert_eq!(EndReason::of(&Error::from_raw_os_error(libc::EDQUOT)), EndReason::Quota);
        assert_eq!(
            EndReason::of(&Error::from_raw_os_error(libc::EFBIG)),
            EndReason::FileSizeLimit
        );
        assert_eq!(EndReason::of(&Error::from_raw_os_error(libc::EIO)), EndReason::IoError);
    }

    #[test]
    fn the_pattern_is_never_zero_and_does_not_repeat_within_a_chunk() {
        let map = pattern(CHUNK).unwrap();
        let p = map.as_slice();
        assert_eq!(p.len(), CHUNK);
        assert!(p.chunks(8).all(|w| w[0] & 1 == 1));
        assert_ne!(&p[..4096], &p[4096..8192]);
    }
}
