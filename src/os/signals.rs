//! What every signal means to the service, in one table (`SIGNALS`), and
//! the thread that takes them: the stopping ones are handed to a callback
//! (`main` sends each on its channel and stops in order), the others are
//! logged and ignored.
//!
//! The signals taken are blocked in every thread (the mask is set before
//! any thread exists, and threads inherit it) and taken by one thread with
//! `sigwait`, so nothing runs in signal-handler context. A do-nothing
//! handler is also installed for each: as PID 1 in a container the kernel
//! drops a signal whose action is the default before it is queued, so
//! `sigwait` would never see it, and every `docker stop` would wait out
//! the grace period and end in SIGKILL. With the handler, a signal means
//! the same whether the service is PID 1 or not.
#![allow(unsafe_code)]

use std::thread;

/// What a signal does to the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meaning {
    /// The ordered stop (`main::shut_down`); a second one skips the delay.
    Stop,
    /// Logged (a warning) and otherwise ignored: the service goes on.
    Logged,
    /// Ignored (`SIG_IGN`): the call that raised it fails instead.
    Ignored,
}

/// One signal and what it means.
#[derive(Debug, Clone, Copy)]
pub struct Signal {
    pub number: libc::c_int,
    pub name: &'static str,
    pub meaning: Meaning,
    /// Why, in a few words (`--help`, and the docs' table).
    pub why: &'static str,
}

const fn signal(number: libc::c_int, name: &'static str, meaning: Meaning, why: &'static str) -> Signal {
    Signal {
        number,
        name,
        meaning,
        why,
    }
}

/// Every signal whose default action would end the process, and its
/// meaning here. The others keep the kernel's: SIGKILL and SIGSTOP cannot
/// be caught; SIGCHLD, SIGCONT, SIGURG and SIGWINCH do nothing by default;
/// SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS and SIGABRT are the
/// process's own faults (and SIGABRT is what `POST /crash` raises); the
/// real-time signals, SIGRTMIN to SIGRTMAX, are `Logged` (`rt_name`).
pub const SIGNALS: &[Signal] = &[
    signal(
        libc::SIGTERM,
        "SIGTERM",
        Meaning::Stop,
        "what Kubernetes, docker stop and podman stop send",
    ),
    signal(libc::SIGINT, "SIGINT", Meaning::Stop, "Ctrl-C"),
    signal(
        libc::SIGQUIT,
        "SIGQUIT",
        Meaning::Stop,
        "its core dump is dropped for PID 1 and has nowhere to go in a scratch container; some images stop with it (STOPSIGNAL SIGQUIT)",
    ),
    signal(
        libc::SIGXCPU,
        "SIGXCPU",
        Meaning::Stop,
        "the soft CPU-time limit (RLIMIT_CPU) was reached; the kernel's SIGKILL follows at the hard one",
    ),
    signal(
        libc::SIGHUP,
        "SIGHUP",
        Meaning::Logged,
        "no configuration is reloaded: it is read once at start-up",
    ),
    signal(libc::SIGUSR1, "SIGUSR1", Meaning::Logged, "no use"),
    signal(libc::SIGUSR2, "SIGUSR2", Meaning::Logged, "no use"),
    signal(libc::SIGALRM, "SIGALRM", Meaning::Logged, "no timer uses it"),
    signal(libc::SIGVTALRM, "SIGVTALRM", Meaning::Logged, "no timer uses it"),
    signal(libc::SIGPROF, "SIGPROF", Meaning::Logged, "no profiler uses it"),
    signal(libc::SIGIO, "SIGIO", Meaning::Logged, "no asynchronous I/O uses it"),
    signal(libc::SIGPWR, "SIGPWR", Meaning::Logged, "no use"),
    signal(libc::SIGSTKFLT, "SIGSTKFLT", Meaning::Logged, "no use"),
    signal(
        libc::SIGXFSZ,
        "SIGXFSZ",
        Meaning::Ignored,
        "a write past the file-size limit (RLIMIT_FSIZE) fails with EFBIG instead: the disk fill answers 507",
    ),
    signal(
        libc::SIGPIPE,
        "SIGPIPE",
        Meaning::Ignored,
        "a write to a closed connection fails with EPIPE instead (Rust's default)",
    ),
];

extern "C" fn do_nothing(_: libc::c_int) {}

/// The real-time signals, SIGRTMIN to SIGRTMAX (glibc keeps the two below
/// SIGRTMIN for itself).
fn real_time() -> std::ops::RangeInclusive<libc::c_int> {
    libc::SIGRTMIN()..=libc::SIGRTMAX()
}

/// `SIGRTMIN+3` for a real-time signal.
fn rt_name(number: libc::c_int) -> String {
    format!("SIGRTMIN+{}", number - libc::SIGRTMIN())
}

/// The signals the waiter thread takes: every `Stop` and `Logged` one.
fn taken() -> Vec<libc::c_int> {
    SIGNALS
        .iter()
        .filter(|s| s.meaning != Meaning::Ignored)
        .map(|s| s.number)
        .chain(real_time())
        .collect()
}

fn set_of(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it fully.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame.
    unsafe {
        libc::sigemptyset(&mut set);
        for &sig in signals {
            libc::sigaddset(&mut set, sig);
        }
    }
    set
}

/// Sets `handler` (a function, `SIG_IGN`) for `sig`, with an empty mask.
fn set_action(sig: libc::c_int, handler: libc::sighandler_t) {
    // SAFETY: sigaction is zero-initialisable plain data; the handler is
    // `SIG_IGN` or a function that only returns; the mask is empty.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(sig, &action, std::ptr::null_mut());
    }
}

/// Gives every signal its meaning: the `Ignored` ones `SIG_IGN`, the
/// others the do-nothing handler, blocked in the calling thread. Call
/// first thing in `main`, before any thread starts.
pub fn take_signals() {
    for s in SIGNALS.iter().filter(|s| s.meaning == Meaning::Ignored) {
        set_action(s.number, libc::SIG_IGN);
    }
    let taken = taken();
    for &sig in &taken {
        set_action(sig, do_nothing as extern "C" fn(libc::c_int) as libc::sighandler_t);
    }
    let set = set_of(&taken);
    // SAFETY: `set` is initialised; the old mask is not wanted.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Starts the thread that waits for the signals taken: it hands the name
/// of each stopping one (`SIGTERM`, ...) to `deliver`, until `deliver`
/// returns false, and logs every other one.
pub fn spawn_waiter(deliver: impl Fn(&'static str) -> bool + Send + 'static) -> std::io::Result<()> {
    thread::Builder::new().name("signals".into()).spawn(move || {
        let set = set_of(&taken());
        loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` and `sig` are valid; the signals are blocked in
            // every thread, so sigwait is the only taker.
            let rc = unsafe { libc::sigwait(&set, &mut sig) };
            if rc != 0 {
                continue;
            }
            match SIGNALS.iter().find(|s| s.number == sig) {
                Some(s) if s.meaning == Meaning::Stop => {
                    if !deliver(s.name) {
                        return;
                    }
                }
                Some(s) => log::warn!("{} received: ignored ({})", s.name, s.why),
                None => log::warn!("{} received: ignored (no use)", rt_name(sig)),
            }
        }
    })?;
    Ok(())
}

/// The signals' meanings for `--help`: one line a meaning, the signals
/// that have it.
pub fn help() -> String {
    let names = |m: Meaning| {
        SIGNALS
            .iter()
            .filter(|s| s.meaning == m)
            .map(|s| s.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "signals:\n  {}: stop in order (a second one skips SHUTDOWN_DELAY_SECONDS)\n  {}, SIGRTMIN to SIGRTMAX: logged and ignored\n  {}: ignored (the write fails with EFBIG or EPIPE instead)",
        names(Meaning::Stop),
        names(Meaning::Logged),
        names(Meaning::Ignored)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every signal whose default action ends the process (but the
    /// process's own faults, and what cannot be caught) has a meaning, and
    /// each one once.
    #[test]
    fn every_terminating_signal_has_one_meaning() {
        let mut numbers: Vec<libc::c_int> = SIGNALS.iter().map(|s| s.number).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), SIGNALS.len(), "a signal twice");
        let faults = [
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGILL,
            libc::SIGFPE,
            libc::SIGTRAP,
            libc::SIGSYS,
            libc::SIGABRT,
            libc::SIGKILL,
            libc::SIGSTOP,
        ];
        let harmless = [
            libc::SIGCHLD,
            libc::SIGCONT,
            libc::SIGURG,
            libc::SIGWINCH,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
        ];
        for sig in 1..libc::SIGRTMIN() {
            // 32 and 33 are glibc's own (thread cancellation, setxid).
            if sig >= 32 || faults.contains(&sig) || harmless.contains(&sig) {
                continue;
            }
            assert!(SIGNALS.iter().any(|s| s.number == sig), "signal {sig} has no meaning");
        }
        assert_eq!(rt_name(libc::SIGRTMIN() + 3), "SIGRTMIN+3");
    }

    #[test]
    fn help_names_every_signal() {
        let help = help();
        for s in SIGNALS {
            assert!(help.contains(s.name), "{}: {help}", s.name);
        }
    }
}
