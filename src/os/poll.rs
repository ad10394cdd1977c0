//! The Linux calls an event loop needs and std does not offer: epoll, a
//! timerfd for due times, a signalfd for SIGTERM and SIGINT, a non-blocking
//! connect, and two process limits. Used by the observer mode and by the
//! probe listener (`http::probe_listener`).
#![allow(unsafe_code)]

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Takes ownership of a descriptor a call just returned.
fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: `fd` was just returned by the kernel, is open, and is owned by
    // nothing else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

/// Readiness of one descriptor: the token it was added with and its events.
pub struct Ready {
    pub token: u64,
    pub events: u32,
}

pub const IN: u32 = libc::EPOLLIN as u32;
pub const OUT: u32 = libc::EPOLLOUT as u32;
pub const ERR_OR_HUP: u32 = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
const RDHUP: u32 = libc::EPOLLRDHUP as u32;
const EDGE: u32 = libc::EPOLLET as u32;

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: no pointers; the result is checked.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Epoll {
            fd: owned(fd),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 256],
        })
    }

    /// Watches `fd` for reading and writing, edge-triggered: each change is
    /// reported once, and the caller reads or writes until it would block.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: IN | OUT | RDHUP | EDGE,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        check(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
        Ok(())
    }

    /// Waits for readiness (no timeout: the timerfd bounds every wait).
    pub fn wait(&mut self, into: &mut Vec<Ready>) -> io::Result<()> {
        self.wait_for(into, None)
    }

    /// Waits for readiness, at most `timeout` (rounded up to a whole
    /// millisecond) when given.
    pub fn wait_for(&mut self, into: &mut Vec<Ready>, timeout: Option<Duration>) -> io::Result<()> {
        into.clear();
        let ms = timeout.map_or(-1, |t| {
            let ms = t.as_nanos().div_ceil(1_000_000);
            libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
        });
        // SAFETY: the buffer holds `len` epoll_event slots the kernel may fill.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        for ev in &self.events[..n as usize] {
            // Copies out of the (on x86_64 packed) struct.
            let (token, events) = (ev.u64, ev.events);
            into.push(Ready { token, events });
        }
        Ok(())
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A one-shot monotonic timer with nanosecond resolution.
pub struct Timer {
    fd: OwnedFd,
}

impl Timer {
    pub fn new() -> io::Result<Timer> {
        // SAFETY: no pointers; the result is checked.
        let fd = check(unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) })?;
        Ok(Timer { fd: owned(fd) })
    }

    /// Fires once, `after` from now (at least a nanosecond: zero disarms).
    pub fn set(&self, after: Duration) -> io::Result<()> {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as _,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is valid for the call; the old value is not wanted.
        check(unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) })?;
        Ok(())
    }

    /// Clears the expiry count so that the next expiry is reported again.
    pub fn clear(&self) {
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into an 8-byte buffer; EAGAIN is fine.
        unsafe { libc::read(self.fd.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
    }
}

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// SIGTERM and SIGINT as a readable descriptor. The signals are blocked in
/// the calling thread (the observer runs on one thread), so they wait in
/// the descriptor instead of ending the process; blocked signals are queued
/// even for PID 1 in a container.
pub struct Signals {
    fd: OwnedFd,
}

impl Signals {
    pub fn new() -> io::Result<Signals> {
        // SAFETY: sigset_t is plain data that sigemptyset initialises.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t owned by this frame.
        let fd = unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC)
        };
        Ok(Signals { fd: owned(check(fd)?) })
    }

    /// The name of a signal received, if one is waiting.
    pub fn take(&self) -> Option<&'static str> {
        // SAFETY: signalfd_siginfo is plain data.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reads at most `size` bytes into `info`.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), (&raw mut info).cast(), size) };
        if n as usize != size {
            return None;
        }
        Some(if info.ssi_signo == libc::SIGINT as u32 {
            "SIGINT"
        } else {
            "SIGTERM"
        })
    }
}

impl AsRawFd for Signals {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A non-blocking TCP socket whose connect to `addr` has started (or, on
/// loopback, may already be done). Refusals usually come later, through
/// `take_error` once the socket is writable.
pub fn connect(addr: &SocketAddr) -> io::Result<TcpStream> {
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: no pointers; the result is checked.
    let fd = owned(check(unsafe {
        libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0)
    })?);
    // SAFETY: sockaddr_storage is plain data, large enough for either family.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is aligned and sized for sockaddr_in.
            let sin = unsafe { &mut *(&raw mut storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is aligned and sized for sockaddr_in6.
            let sin6 = unsafe { &mut *(&raw mut storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    // SAFETY: `storage` holds a valid address of `len` bytes.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), (&raw const storage).cast(), len as libc::socklen_t) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    let stream = TcpStream::from(fd);
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Raises the soft limit on open descriptors to the hard limit: an open
/// loop against a stalled target holds rate x timeout connections.
pub fn raise_descriptor_limit() {
    // SAFETY: rlimit is plain data; both calls only read or write it.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The process's peak resident set size in KiB (`VmHWM`), 0 if unknown.
/// Not getrusage's `ru_maxrss`: Linux carries that across execve, so a
/// process started by a large parent would report the parent's peak.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_refused_connect_shows_in_take_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let refused = match connect(&addr) {
            Err(e) => e,
            Ok(s) => {
                let mut ep = Epoll::new().unwrap();
                ep.add(s.as_raw_fd(), 7).unwrap();
                let mut ready = Vec::new();
                ep.wait(&mut ready).unwrap();
                assert_eq!(ready[0].token, 7);
                s.take_error().unwrap().expect("an error")
            }
        };
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn the_timer_wakes_the_epoll_wait() {
        let mut ep = Epoll::new().unwrap();
        let timer = Timer::new().unwrap();
        ep.add(timer.as_raw_fd(), 1).unwrap();
        let t0 = Instant::now();
        timer.set(Duration::from_millis(20)).unwrap();
        let mut ready = Vec::new();
        ep.wait(&mut ready).unwrap();
        assert_eq!(ready[0].token, 1);
        assert!(t0.elapsed() >= Duration::from_millis(20));
        timer.clear();
    }

    #[test]
    fn the_peak_rss_is_this_process_s() {
        let now = std::fs::read_to_string("/proc/self/status").unwrap();
        let peak = peak_rss_kib();
        let rss: u64 = now
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        assert!(peak >= rss && rss > 0, "peak {peak} KiB, now {rss} KiB");
    }
}
