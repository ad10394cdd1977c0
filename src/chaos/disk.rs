//! The disk fill: one file of real blocks in `DISK_FILL_DIR`, written in
//! 1 MiB chunks of incompressible, non-zero bytes and fsynced, so that `du`,
//! the kubelet's volume accounting and a quota all see every byte (a sparse
//! file or a run of zeros on a compressing file system would fool them).
//!
//! `DiskFill` owns the file, the bytes written, a cancel flag and the writer
//! thread. Every fill is written by a thread of its own, with or without a
//! ramp; `stop` returns only once that thread has confirmed it stopped and the
//! file is gone. When the disk runs out (ENOSPC, EDQUOT) the writer removes
//! the partial file (unless `keep`), so the crash marker and the probes keep
//! working, and reports why it ended.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

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
    /// Any other I/O error.
    IoError,
}

impl EndReason {
    pub const ALL: [EndReason; 4] = [
        EndReason::Removed,
        EndReason::NoSpace,
        EndReason::Quota,
        EndReason::IoError,
    ];

    pub fn label(self) -> &'static str {
        match self {
            EndReason::Removed => "removed",
            EndReason::NoSpace => "no_space",
            EndReason::Quota => "quota",
            EndReason::IoError => "io_error",
        }
    }

    fn of(e: &std::io::Error) -> EndReason {
        match e.raw_os_error() {
            Some(libc::ENOSPC) => EndReason::NoSpace,
            Some(libc::EDQUOT) => EndReason::Quota,
            _ => EndReason::IoError,
        }
    }
}

/// How one fill ended (or that it reached its target).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// All bytes written and synced; the file stays until removed.
    Complete { bytes: u64, took: Duration },
    /// Ended early.
    Ended(Ended),
}

/// How a fill ended early: why, how many bytes had been written, whether
/// the partial file was kept, the error text, and when (for `GET /chaos`).
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
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

/// A fill could not start.
#[derive(Debug, Clone, PartialEq)]
pub enum StartError {
    /// DISK_FILL_DIR could not be created at start-up.
    Unavailable(String),
    /// A fill is already running or held.
    Busy { written: u64, writing: bool },
    /// The file or the thread could not be made.
    Failed(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Unavailable(why) => write!(f, "disk fill unavailable: {why}"),
            StartError::Busy { written, writing } => write!(
                f,
                "a disk fill is already {} ({} MiB written); DELETE /load/disk first",
                if *writing { "running" } else { "held" },
                written >> 20
            ),
            StartError::Failed(why) => f.write_str(why),
        }
    }
}

/// Called by the writer thread when a fill ends early, at that moment (the
/// client of a ramp already has its 202): it logs, counts and emits.
pub type OnEnd = Arc<dyn Fn(&Outcome, &Path) + Send + Sync>;

struct Running {
    path: PathBuf,
    target: u64,
    ends_at: Option<SystemTime>,
    cancel: Arc<AtomicBool>,
    thread: JoinHandle<Outcome>,
}

#[derive(Default)]
struct Inner {
    running: Option<Running>,
    /// A file left by a finished fill (complete, or kept after ENOSPC).
    held: Option<PathBuf>,
    last_ended: Option<Ended>,
}

/// The fault. One fill at a time.
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

    /// Starts writing `target` bytes, over `ramp` if given. The returned
    /// receiver gets the outcome when the writer ends (a handler without a
    /// ramp waits on it). `hold_until_done` is moved into the writer thread
    /// and dropped when writing ends (the guardrail permit).
    pub fn start<P: Send + 'static>(
        &self,
        target: u64,
        ramp: Option<Duration>,
        keep: bool,
        hold_until_done: P,
        on_end: OnEnd,
    ) -> Result<Receiver<Outcome>, StartError> {
        if let Some(why) = &self.unavailable {
            return Err(StartError::Unavailable(why.clone()));
        }
        let mut inner = self.lock();
        reap(&mut inner);
        if inner.running.is_some() || inner.held.is_some() {
            return Err(StartError::Busy {
                written: self.written.load(Ordering::SeqCst),
                writing: inner.running.is_some(),
            });
        }
        let path = self.dir.join(FILE_NAME);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StartError::Failed(format!("cannot create {}: {e}", path.display())))?;
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::sync_channel(1);
        let job = Job {
            file,
            path: path.clone(),
            target,
            ramp,
            keep,
            cancel: Arc::clone(&cancel),
            written: Arc::clone(&self.written),
        };
        self.written.store(0, Ordering::SeqCst);
        let spawned = std::thread::Builder::new().name("disk-fill".into()).spawn(move || {
            let outcome = job.run();
            drop(hold_until_done);
            if matches!(&outcome, Outcome::Ended(e) if e.reason != EndReason::Removed) {
                on_end(&outcome, &job.path);
            }
            report(&tx, &outcome);
            outcome
        });
        match spawned {
            Ok(thread) => {
                inner.running = Some(Running {
                    path,
                    target,
                    ends_at: ramp.map(|r| SystemTime::now() + r),
                    cancel,
                    thread,
                });
                Ok(rx)
            }
            Err(e) => {
                let _ = fs::remove_file(&path);
                Err(StartError::Failed(format!("cannot start the writer thread: {e}")))
            }
        }
    }

    /// Stops the writer (waiting until its thread has ended) and removes the
    /// file. Returns the bytes that were on disk, or `None` if there was no
    /// fill. Never holds the lock while waiting, so status stays answerable.
    pub fn stop(&self) -> Option<u64> {
        let (running, held) = {
            let mut inner = self.lock();
            (inner.running.take(), inner.held.take())
        };
        if running.is_none() && held.is_none() {
            return None;
        }
        let before = self.written.load(Ordering::SeqCst);
        let mut paths: Vec<PathBuf> = held.into_iter().collect();
        if let Some(r) = running {
            r.cancel.store(true, Ordering::SeqCst);
            r.thread.thread().unpark();
            // The writer checks the flag between chunks and while it sleeps;
            // a panicked writer has ended too, so its result does not matter.
            let _ = r.thread.join();
            paths.push(r.path);
        }
        for path in &paths {
            if let Err(e) = fs::remove_file(path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                log::warn!("cannot remove disk fill {}: {e}", path.display());
            }
        }
        sync_dir(&self.dir);
        self.written.store(0, Ordering::SeqCst);
        let mut inner = self.lock();
        inner.last_ended = Some(Ended {
            reason: EndReason::Removed,
            written: before,
            kept: false,
            error: String::new(),
            at: SystemTime::now(),
        });
        Some(before)
    }

    /// The fill, if one is running or held.
    pub fn status(&self) -> Option<Status> {
        let mut inner = self.lock();
        reap(&mut inner);
        let written = self.written.load(Ordering::SeqCst);
        if let Some(r) = &inner.running {
            return Some(Status {
                path: r.path.clone(),
                written,
                target: r.target,
                writing: true,
                ends_at: r.ends_at,
            });
        }
        inner.held.as_ref().map(|path| Status {
            path: path.clone(),
            written,
            target: written,
            writing: false,
            ends_at: None,
        })
    }

    /// The last fill that ended before it was removed on purpose or that ran
    /// out of space, with why.
    pub fn last_ended(&self) -> Option<Ended> {
        let mut inner = self.lock();
        reap(&mut inner);
        inner.last_ended.clone()
    }

    /// Bytes in the fill file now.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// Bytes the running fill aims at (0 when none runs).
    pub fn target(&self) -> u64 {
        let inner = self.lock();
        inner.running.as_ref().map_or(0, |r| r.target)
    }

    /// Called once the outcome from `start` has been received: waits for the
    /// writer thread to end, so that a `GET /chaos` right after the answer
    /// sees the fill as written, not as still writing. The writer touches
    /// nothing of ours after sending, so holding the lock here is safe.
    pub fn settle(&self) {
        reap_with(&mut self.lock(), true);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Moves a finished writer's result into the state; with `wait`, waits for
/// the writer to end (only once it has sent its outcome, so briefly).
fn reap_with(inner: &mut Inner, wait: bool) {
    if !wait && !inner.running.as_ref().is_some_and(|r| r.thread.is_finished()) {
        return;
    }
    let Some(r) = inner.running.take() else { return };
    match r.thread.join() {
        Ok(Outcome::Complete { .. }) => inner.held = Some(r.path),
        Ok(Outcome::Ended(ended)) => {
            if ended.kept {
                inner.held = Some(r.path);
            }
            inner.last_ended = Some(ended);
        }
        Err(_) => {
            // The writer panicked; treat its file as held so DELETE removes it.
            inner.held = Some(r.path);
        }
    }
}

fn reap(inner: &mut Inner) {
    reap_with(inner, false);
}

fn report(tx: &SyncSender<Outcome>, outcome: &Outcome) {
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
    cancel: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
}

impl Job {
    fn run(&self) -> Outcome {
        let t0 = Instant::now();
        let buf = pattern(CHUNK);
        let result = match self.ramp {
            None => self.write_until(self.target, &buf, SYNC_EVERY),
            Some(ramp) => {
                let steps = (ramp.as_millis() / RAMP_STEP.as_millis()).max(1) as u64;
                let mut result = Ok(());
                for step in 1..=steps {
                    let goal = (u128::from(self.target) * u128::from(step) / u128::from(steps)) as u64;
                    result = self.write_until(goal, &buf, u64::MAX).and_then(|()| self.sync());
                    if result.is_err() {
                        break;
                    }
                    let due = t0 + RAMP_STEP * step as u32;
                    while !self.cancelled() && Instant::now() < due {
                        std::thread::park_timeout(due.saturating_duration_since(Instant::now()));
                    }
                }
                result
            }
        };
        let result = result.and_then(|()| self.sync());
        match result {
            Ok(()) if !self.cancelled() => Outcome::Complete {
                bytes: self.written.load(Ordering::SeqCst),
                took: t0.elapsed(),
            },
            Ok(()) => self.ended(EndReason::Removed, "stopped on request".into()),
            Err(Stop::Cancelled) => self.ended(EndReason::Removed, "stopped on request".into()),
            Err(Stop::Io(e)) => self.ended(EndReason::of(&e), e.to_string()),
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
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
    fn ended(&self, reason: EndReason, error: String) -> Outcome {
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
        Outcome::Ended(Ended {
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
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&(x | 1).to_le_bytes());
    }
    out.truncate(len);
    out
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

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chaos-backend-disk-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn quiet() -> OnEnd {
        Arc::new(|_: &Outcome, _: &Path| {})
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
        assert!(log.is_empty(), "{log:?}");
        let rx = fill.start(3 << 20, None, false, (), quiet()).unwrap();
        let outcome = rx.recv().unwrap();
        fill.settle();
        assert!(
            matches!(outcome, Outcome::Complete { bytes, .. } if bytes == 3 << 20),
            "{outcome:?}"
        );
        let status = fill.status().unwrap();
        assert_eq!((status.written, status.writing), (3 << 20, false));
        // Not sparse: the blocks are allocated; and not zeros.
        assert!(allocated(&status.path) >= 3 << 20, "{}", allocated(&status.path));
        let head = fs::read(&status.path).unwrap();
        assert!(head.chunks(8).all(|w| w != [0u8; 8]));
        assert!(matches!(
            fill.start(1, None, false, (), quiet()),
            Err(StartError::Busy { .. })
        ));
        assert_eq!(fill.stop(), Some(3 << 20));
        assert!(!status.path.exists());
        assert_eq!(fill.status(), None);
        assert_eq!(fill.stop(), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stop_ends_a_ramp_at_once() {
        let dir = temp_dir("ramp");
        let (fill, _) = DiskFill::prepare(&dir);
        let permit = Arc::new(());
        let _rx = fill
            .start(
                64 << 20,
                Some(Duration::from_secs(60)),
                false,
                Arc::clone(&permit),
                quiet(),
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(250));
        let status = fill.status().unwrap();
        assert!(
            status.writing && status.written > 0 && status.written < 8 << 20,
            "{status:?}"
        );
        let t = Instant::now();
        assert!(fill.stop().is_some());
        assert!(t.elapsed() < Duration::from_secs(2), "stop took {:?}", t.elapsed());
        // The writer thread has ended: it dropped what it held.
        assert_eq!(Arc::strong_count(&permit), 1);
        assert!(!status.path.exists());
        assert_eq!(fill.written(), 0);
        assert_eq!(fill.last_ended().unwrap().reason, EndReason::Removed);
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
        assert!(matches!(
            fill.start(1, None, false, (), quiet()),
            Err(StartError::Unavailable(_))
        ));
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
        assert_eq!(EndReason::of(&Error::from_raw_os_error(libc::EIO)), EndReason::IoError);
    }

    #[test]
    fn the_pattern_is_never_zero_and_does_not_repeat_within_a_chunk() {
        let p = pattern(CHUNK);
        assert_eq!(p.len(), CHUNK);
        assert!(p.chunks(8).all(|w| w[0] & 1 == 1));
        assert_ne!(&p[..4096], &p[4096..8192]);
    }
}
