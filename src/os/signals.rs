//! SIGTERM and SIGINT, taken by one thread and handed to a callback (`main`
//! sends each on its channel).
//!
//! The signals are blocked in every thread (the mask is set before any thread
//! exists, and threads inherit it) and taken by one thread with `sigwait`,
//! so nothing runs in signal-handler context. A do-nothing handler is also
//! installed: as PID 1 in a container a signal whose action is the default is
//! dropped by the kernel, and every `docker stop` would then wait out the
//! grace period and end in SIGKILL.
#![allow(unsafe_code)]

use std::thread;

extern "C" fn ignore(_: libc::c_int) {}

fn termination_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it fully.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
    }
    set
}

/// Blocks SIGTERM and SIGINT in the calling thread and installs the
/// do-nothing handler. Call first thing in `main`, before any thread starts.
pub fn block_termination_signals() {
    let set = termination_set();
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: sigaction is zero-initialisable plain data; we set a valid
        // handler that only returns, and an empty mask.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
    // SAFETY: `set` is initialised; the old mask is not wanted.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Starts the thread that waits for the signals and hands the name of each
/// (`SIGTERM`, `SIGINT`) to `deliver`, until `deliver` returns false.
pub fn spawn_waiter(deliver: impl Fn(&'static str) -> bool + Send + 'static) -> std::io::Result<()> {
    thread::Builder::new().name("signals".into()).spawn(move || {
        let set = termination_set();
        loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` and `sig` are valid; the signals are blocked in
            // every thread, so sigwait is the only taker.
            let rc = unsafe { libc::sigwait(&set, &mut sig) };
            if rc != 0 {
                continue;
            }
            let name = if sig == libc::SIGINT { "SIGINT" } else { "SIGTERM" };
            if !deliver(name) {
                return;
            }
        }
    })?;
    Ok(())
}
