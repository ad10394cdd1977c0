//! The few operating-system calls the service needs, behind safe functions.
//!
//! Every `unsafe` block of the crate that is not about signals lives here or in
//! `signals.rs`, each with a `SAFETY:` comment. Everything else reads files
//! under `/proc`, which needs no `unsafe`.
#![allow(unsafe_code)]

use std::time::Duration;

/// The size of a memory page in bytes (4096 on x86_64 Linux).
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions and only reads a constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}

/// The clock ticks a second that `/proc` counts CPU times in (`USER_HZ`).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions and only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// Resident set size of this process in bytes, from `/proc/self/statm`.
///
/// Returns 0 when the file cannot be read (not Linux, or /proc not mounted);
/// callers treat that as "unknown", never as a reason to fail.
pub fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse::<u64>().ok())
        .map_or(0, |pages| pages * page_size() as u64)
}

/// The kernel thread ids of this process, from `/proc/self/task`.
pub fn thread_ids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// Hands free heap memory of every malloc arena back to the kernel.
///
/// glibc only (the amd64 image): it keeps freed memory in per-thread arenas.
/// musl (the arm64 image) has no `malloc_trim`; its allocator returns freed
/// memory to the kernel by itself, so there is nothing to do.
#[cfg(target_env = "gnu")]
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// See the glibc version: a no-op on other C libraries.
#[cfg(not(target_env = "gnu"))]
pub fn trim_heap() {}

/// The soft limit on open fds (`RLIMIT_NOFILE`), `None` when unlimited.
pub fn nofile_limit() -> Option<u64> {
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    soft_limit(|limit| unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, limit) })
}

/// The soft limit on the address space (`RLIMIT_AS`, what `prlimit --as`
/// sets), in bytes; `None` when unlimited.
pub fn address_space_limit() -> Option<u64> {
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    soft_limit(|limit| unsafe { libc::getrlimit(libc::RLIMIT_AS, limit) })
}

/// The soft limit `read` (a `getrlimit`) gives, `None` when unlimited.
/// (The resource's type differs between glibc and musl.)
fn soft_limit(read: impl FnOnce(&mut libc::rlimit) -> libc::c_int) -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let rc = read(&mut limit);
    (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// The address space this process has mapped (`VmSize` of
/// `/proc/self/status`), in bytes; what `RLIMIT_AS` counts. 0 if unknown.
pub fn address_space_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    statm
        .split_whitespace()
        .next()
        .and_then(|pages| pages.parse::<u64>().ok())
        .map_or(0, |pages| pages * page_size() as u64)
}

/// Fds this process has open now (`/proc/self/fd`, not counting the one
/// that reads it). 0 if unknown.
pub fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1) as u64)
}

/// Bounds glibc's malloc arenas to `arenas`. Each arena beyond the first
/// reserves 64 MiB of address space (128 MiB while it is being made), and
/// glibc makes up to 8 a CPU as threads contend: under `RLIMIT_AS` they
/// would take the room that thread stacks need. Call it before any thread
/// exists. musl has no arenas: nothing to do.
#[cfg(target_env = "gnu")]
pub fn limit_malloc_arenas(arenas: usize) {
    let n = libc::c_int::try_from(arenas.max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets a parameter of glibc's allocator; M_ARENA_MAX
    // is a valid parameter and any positive value is accepted.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, n);
    }
}

/// See the glibc version: a no-op on other C libraries.
#[cfg(not(target_env = "gnu"))]
pub fn limit_malloc_arenas(_arenas: usize) {}

/// Fixes glibc's mmap and trim thresholds at their defaults (128 KiB).
/// glibc raises both whenever a block above the mmap threshold is freed
/// (up to 32 and 64 MiB): after a burst of connections (a queue of 1,585
/// requests is one such block when it grows) every arena then kept up to
/// twice that block's size of free memory at its top, resident, and
/// `malloc_trim` does not trim the top of the per-thread arenas. Measured
/// after 1,585 connections: +5.2 MiB of RSS that never came back, about
/// 0.5 to 0.75 MiB in each of 7 arenas. Call it before any thread exists.
#[cfg(target_env = "gnu")]
pub fn fix_malloc_thresholds() {
    const THRESHOLD: libc::c_int = 128 << 10;
    // SAFETY: mallopt only sets parameters of glibc's allocator; both are
    // valid parameters and 128 KiB (their default) is a valid value.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD);
    }
}

/// See the glibc version: musl returns freed memory by itself.
#[cfg(not(target_env = "gnu"))]
pub fn fix_malloc_thresholds() {}

/// Gives back to the kernel the pages of the calling thread's stack that
/// lie below what it uses now (they stay mapped and read as zero if
/// touched again), so that an idle connection thread, or one about to end
/// (glibc keeps up to 40 MiB of ended threads' stacks for reuse, with
/// their pages), holds only the few pages its current frames use. A no-op
/// on a thread whose stack cannot be found.
pub fn release_unused_stack() {
    thread_local! {
        /// The lowest address of this thread's stack, once found.
        static STACK_LOW: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
    }
    let low = STACK_LOW.with(|cell| {
        if cell.get().is_none() {
            cell.set(stack_low());
        }
        cell.get()
    });
    let Some(low) = low else {
        return;
    };
    let here = 0u8;
    let sp = std::ptr::addr_of!(here) as usize;
    // Keep what this frame and the madvise call below it may use (and the
    // red zone below the stack pointer), with room to spare.
    const KEEP_BELOW: usize = 16 << 10;
    let page = page_size();
    let end = sp.saturating_sub(KEEP_BELOW) / page * page;
    if end <= low {
        return;
    }
    // SAFETY: [low, end) lies inside this thread's own stack mapping, below
    // the current stack pointer minus KEEP_BELOW: no live frame of this
    // thread is there, and no other thread uses another thread's stack.
    // MADV_DONTNEED keeps the mapping; its pages read as zero when used
    // again. Signal handlers run below the stack pointer only after this
    // call has returned.
    unsafe {
        libc::madvise(low as *mut libc::c_void, end - low, libc::MADV_DONTNEED);
    }
}

/// The lowest address of the calling thread's stack (above its guard
/// page), from `pthread_getattr_np`.
fn stack_low() -> Option<usize> {
    // SAFETY: pthread_attr_t is plain data; pthread_getattr_np initialises
    // it for the calling thread, and it is destroyed once read.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        (rc == 0 && !addr.is_null()).then_some(addr as usize)
    }
}

/// Physical memory plus swap of the machine, from `/proc/meminfo`; `None`
/// when it cannot be read.
pub fn machine_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()?;
        Some(kib * 1024)
    };
    Some(field("MemTotal:")? + field("SwapTotal:").unwrap_or(0))
}

/// The kernel's id of this boot (`/proc/sys/kernel/random/boot_id`), the
/// same in every container of the machine; `None` when it cannot be read.
pub fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_string())
}

/// The container this process runs in, as its engine names it: the host
/// path of the file mounted at `/etc/hostname` (`/proc/self/mountinfo`).
/// Docker and podman make one per container, kept across its restarts;
/// the kubelet's runtime (containerd, CRI-O) one per pod sandbox, shared by
/// the pod's containers and kept across their restarts. Unlike `HOSTNAME`,
/// it differs between two containers that share the host's network (and so
/// its host name). `None` outside a container (no such mount).
pub fn container_id() -> Option<String> {
    container_id_in(&std::fs::read_to_string("/proc/self/mountinfo").ok()?)
}

/// [`container_id`] from the text of a mountinfo file: the root (field 4)
/// of the mount whose mount point (field 5) is `/etc/hostname`.
pub fn container_id_in(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let mut fields = line.split(' ');
        let root = fields.nth(3)?;
        (fields.next()? == "/etc/hostname" && !root.is_empty() && root != "/").then(|| root.to_string())
    })
}

/// CPU time (user + system) consumed so far by all threads of this process.
///
/// Uses `CLOCK_PROCESS_CPUTIME_ID`, which has nanosecond resolution, unlike
/// `process_cpu_seconds_total` (whole seconds) or `/proc/self/stat` (ticks).
pub fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant
    // that Linux always supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Number of CPUs this process may run on (its affinity mask).
pub fn affinity_cpu_count() -> usize {
    // SAFETY: cpu_set_t is plain data; all-zero is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t and we pass its exact size; pid 0
    // means the calling thread.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return std::thread::available_parallelism().map_or(1, |n| n.get());
    }
    // SAFETY: `set` was filled in by sched_getaffinity above.
    let count = unsafe { libc::CPU_COUNT(&set) };
    usize::try_from(count).ok().filter(|c| *c > 0).unwrap_or(1)
}

/// Moves the calling thread to the idle scheduling class, so that it only
/// gets a CPU that no other thread of the machine wants.
///
/// Falls back to nice 19 where SCHED_IDLE is refused. Returns which one took.
pub fn make_current_thread_idle() -> &'static str {
    // musl's sched_param has more fields than glibc's (the SCHED_SPORADIC
    // ones), so the struct is zeroed rather than written out field by field.
    // SAFETY: sched_param is plain integers and timespecs; all zero is a
    // valid value, and priority 0 is the one SCHED_IDLE takes.
    let param: libc::sched_param = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param and
    // priority 0 is the only valid one for SCHED_IDLE.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc == 0 {
        return "SCHED_IDLE";
    }
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: setpriority on our own thread id; raising niceness needs no
    // privilege. On Linux PRIO_PROCESS with a thread id affects that thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) };
    if rc == 0 { "nice 19" } else { "normal" }
}

/// Turns Nagle's algorithm off on a listening socket. Linux copies the
/// option to every socket it accepts, which is the only way to reach
/// tiny_http's connections: it writes headers and body separately, and with
/// Nagle a body over its 1 KiB buffer waits for the peer's delayed ACK
/// (40 ms per /metrics answer on a keep-alive connection).
pub fn set_nodelay(listener: &std::net::TcpListener) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: the fd is a valid socket owned by `listener` for the whole
    // call; we pass a pointer to a live c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Resets a connected TCP socket in place: the kernel sends a RST and the
/// peer's next read fails with ECONNRESET, while the fd stays open for the
/// thread that still reads it (closing it under that thread could hand the
/// number to another socket). `SO_LINGER` 0 makes any later close abortive
/// too; the reset itself is `connect(AF_UNSPEC)`, which disconnects the
/// socket the way a close with `SO_LINGER` 0 does (Linux `tcp_disconnect`).
pub fn reset_connection(stream: &std::net::TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is a valid socket owned by `stream` for the whole call;
    // we pass a pointer to a live `linger` and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above; an all-zero sockaddr with family AF_UNSPEC, and its
    // exact size.
    let rc = unsafe {
        let mut unspec: libc::sockaddr = std::mem::zeroed();
        unspec.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
        libc::connect(fd, &unspec, std::mem::size_of::<libc::sockaddr>() as libc::socklen_t)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sets the core-file size limit of this process to zero.
///
/// Called right before a deliberate abort: dumping a large leaked heap would
/// take seconds and distort the crash-to-restart time being measured.
pub fn disable_core_dumps() {
    let limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit; lowering our own limit needs no privilege.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &limit);
    }
}

/// Sends SIGKILL to this process. Returns only where the kernel ignores it
/// (a process that is PID 1 of its namespace).
pub fn kill_self() {
    // SAFETY: kill(2) on our own pid with a valid signal number.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

/// Ends the process with SIGABRT, without unwinding or running destructors.
pub fn abort() -> ! {
    disable_core_dumps();
    std::process::abort()
}

/// An anonymous private memory mapping, unmapped when dropped.
///
/// The leak maps its chunks itself rather than through the allocator: glibc
/// raises its mmap threshold after the first large free (up to 32 MiB), so a
/// later chunk would come from the heap, and `free` may keep those pages in
/// the process. `munmap` always gives them back to the kernel.
#[derive(Debug)]
pub struct Mapping {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value alone; no other
// code holds its address, so moving it to another thread is sound.
unsafe impl Send for Mapping {}
// SAFETY: `&Mapping` exposes `len` and a shared view of the bytes; the
// memory is written through `&mut self` only.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes (rounded up to whole pages by the kernel) of
    /// zero-filled, private, anonymous memory. Nothing is resident until a
    /// page is written.
    pub fn anonymous(len: usize) -> std::io::Result<Mapping> {
        if len == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty mapping"));
        }
        // SAFETY: a fresh anonymous mapping at an address the kernel picks;
        // no existing memory is touched. The result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr =
            std::ptr::NonNull::new(ptr.cast::<u8>()).ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points at `len` readable bytes owned by `self` for as
        // long as the borrow lasts (unmapped only in `drop`).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and the borrow is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Writes one byte into each page from `from` (bytes) on, up to `pages`
    /// pages, so that the kernel backs them; returns the offset reached.
    pub fn touch(&mut self, from: usize, pages: usize) -> usize {
        let page = page_size();
        let mut offset = from;
        for _ in 0..pages {
            if offset >= self.len {
                break;
            }
            // SAFETY: `offset < len`, so the byte lies inside the mapping,
            // which is readable and writable and owned by `self` (borrowed
            // mutably here).
            unsafe { self.ptr.as_ptr().add(offset).write_volatile(0xA5) };
            offset += page;
        }
        offset.min(self.len)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` are exactly what mmap returned and was
        // asked for; the mapping is unmapped once, here, and nothing refers
        // to it afterwards.
        let rc = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        if rc != 0 {
            log::error!(
                "munmap of {} bytes failed: {}",
                self.len,
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Unit tests that compare RSS before and after take this lock, so that
/// another test freeing memory at the same time cannot skew the figures.
#[cfg(test)]
pub static RSS_TEST_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_id_is_the_source_of_the_etc_hostname_mount() {
        // Docker Engine, as /proc/self/mountinfo shows it in a container.
        let docker = "196 170 0:60 / / rw,relatime - overlay overlay rw\n\
            213 196 254:0 /var/lib/docker/containers/9403/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda rw\n\
            214 196 254:0 /var/lib/docker/containers/9403/hostname /etc/hostname rw,relatime - ext4 /dev/vda rw\n";
        assert_eq!(
            container_id_in(docker).as_deref(),
            Some("/var/lib/docker/containers/9403/hostname")
        );
        // Not in a container: /etc/hostname is a file of the root mount.
        assert_eq!(container_id_in("22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"), None);
        assert_eq!(container_id_in(""), None);
    }

    #[test]
    fn rss_grows_when_pages_are_touched() {
        let _serial = RSS_TEST_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = rss_bytes();
        assert!(before > 0, "statm should report a resident size");
        let mut block: Vec<u8> = Vec::with_capacity(32 << 20);
        for page in block.spare_capacity_mut().chunks_mut(page_size()) {
            page[0].write(1);
        }
        let after = rss_bytes();
        assert!(after >= before + (30 << 20), "rss before {before} after {after}");
        drop(block);
    }

    #[test]
    fn cpu_time_counts_busy_work() {
        // Spin until 30 ms of CPU time show, within a wall-clock bound that
        // a loaded machine cannot reach by accident: 50 ms of wall clock
        // gave under 30 ms of CPU with other tests running on two cores.
        let start = process_cpu_time();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut x = 0u64;
        while process_cpu_time() - start < Duration::from_millis(30) && std::time::Instant::now() < deadline {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        let used = process_cpu_time() - start;
        assert!(used >= Duration::from_millis(30), "used {used:?} in 10 s of busy work");
    }

    #[test]
    fn sees_its_own_threads_come_and_go() {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            // "/proc/thread-self" links to "<pid>/task/<tid>".
            let me = std::fs::read_link("/proc/thread-self").unwrap();
            tid_tx
                .send(me.file_name().unwrap().to_str().unwrap().parse::<u32>().unwrap())
                .unwrap();
            stop_rx.recv().ok();
        });
        let tid = tid_rx.recv().unwrap();
        assert!(thread_ids().contains(&tid));
        drop(stop_tx);
        t.join().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while thread_ids().contains(&tid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!thread_ids().contains(&tid), "thread {tid} still listed after join");
    }

    #[test]
    fn accepted_sockets_inherit_nodelay_from_the_listener() {
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_nodelay(&listener).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: valid fd, pointers to live locals with their sizes.
        let rc = unsafe {
            libc::getsockopt(
                accepted.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        assert_eq!(value, 1, "TCP_NODELAY is inherited");
        assert!(accepted.nodelay().unwrap());
    }

    #[test]
    fn a_dropped_mapping_leaves_rss() {
        let _serial = RSS_TEST_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = rss_bytes();
        let mut m = Mapping::anonymous(24 << 20).unwrap();
        assert_eq!(m.touch(0, usize::MAX), 24 << 20);
        let full = rss_bytes();
        assert!(full >= before + (23 << 20), "rss {before} -> {full}");
        drop(m);
        // Other tests run meanwhile: what matters is that the pages left.
        let after = rss_bytes();
        assert!(after + (20 << 20) <= full, "rss {full} -> {after} after munmap");
    }

    #[test]
    fn machine_memory_is_known() {
        assert!(machine_memory_bytes().unwrap() > 64 << 20);
    }

    #[test]
    fn affinity_is_at_least_one_cpu() {
        assert!(affinity_cpu_count() >= 1);
        assert!(page_size() >= 4096);
    }
}
