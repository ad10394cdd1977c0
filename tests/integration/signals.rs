//! Every signal has one meaning (`os::signals::SIGNALS`), the same whether
//! the service is PID 1 (of a PID namespace of its own, as in a container)
//! or not: the stopping ones stop in order, the others are logged and
//! ignored, SIGXFSZ and SIGPIPE are ignored. A disk fill runs through each,
//! so a signal that ended the process without its stop would leave its
//! file behind.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::{Service, as_pid_1, command, describe, files, poll, temp_dir, wrapped};

/// The service (as PID 1 when `pid_1`, under `prlimit` when `fsize` is
/// given), its disk-fill directory, and the pid to signal.
fn start(pid_1: bool, fsize: Option<u64>, env: &[(&str, &str)]) -> (Service, PathBuf, i32) {
    let fill_dir = temp_dir("signals-fill");
    let mut all = vec![
        ("CHAOS_COOLDOWN_SECONDS", "0"),
        ("DISK_FILL_DIR", fill_dir.to_str().unwrap()),
    ];
    all.extend_from_slice(env);
    let mut cmd = command(&temp_dir("signals"), &all);
    if let Some(bytes) = fsize {
        let mut prlimit = Command::new("prlimit");
        prlimit.arg(format!("--fsize={bytes}")).arg("--");
        cmd = wrapped(prlimit, &cmd);
    }
    if !pid_1 {
        let svc = Service::spawn(cmd);
        let pid = svc.pid() as i32;
        return (svc, fill_dir, pid);
    }
    let svc = Service::spawn(as_pid_1(&cmd));
    let pid = svc.inner_pid();
    (svc, fill_dir, pid)
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) on our own child with a valid signal number.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

/// The disk fill's files in `dir`.
fn fills(dir: &Path) -> Vec<String> {
    files(dir)
        .into_iter()
        .filter(|f| f.starts_with("chaos-disk-fill"))
        .collect()
}

/// Starts a slow ramped disk fill, and waits until its file exists.
fn fill_running(svc: &Service, dir: &Path) {
    let r = svc.post("/load/disk?mb=8&ramp=600");
    assert_eq!(r.status, 202, "{}", r.body);
    let there = poll(Duration::from_secs(5), Duration::from_millis(20), || {
        (!fills(dir).is_empty()).then_some(())
    });
    assert!(there.is_some(), "no fill file in {}", dir.display());
}

/// SIGTERM, SIGINT, SIGQUIT and SIGXCPU each stop in order: exit 0, the
/// fill removed, SHUTDOWN_STARTED naming the signal, SHUTDOWN_FINISHED.
/// SIGQUIT's default (a core dump) ended the process at once, leaving the
/// fill, or was dropped as PID 1.
#[test]
fn stopping_signals_stop_in_order_as_pid_1_and_not() {
    for pid_1 in [false, true] {
        for (sig, name) in [
            (libc::SIGTERM, "SIGTERM"),
            (libc::SIGINT, "SIGINT"),
            (libc::SIGQUIT, "SIGQUIT"),
            (libc::SIGXCPU, "SIGXCPU"),
        ] {
            let (mut svc, dir, pid) = start(pid_1, None, &[]);
            fill_running(&svc, &dir);
            kill(pid, sig);
            let status = svc
                .wait_exit(Duration::from_secs(10))
                .unwrap_or_else(|| panic!("{name} (PID 1: {pid_1}): still running"));
            let what = format!("{name} (PID 1: {pid_1})");
            assert_eq!(status.code(), Some(0), "{what}: {}\n{}", describe(status), svc.stderr());
            assert!(fills(&dir).is_empty(), "{what}: the fill was left: {:?}", fills(&dir));
            let events = svc.events();
            let started = events.iter().find(|e| e["event"] == "SHUTDOWN_STARTED");
            assert_eq!(started.map(|e| e["signal"].clone()), Some(name.into()), "{what}");
            assert!(
                events.iter().any(|e| e["event"] == "SHUTDOWN_FINISHED"),
                "{what}: {}",
                svc.stderr()
            );
        }
    }
}

/// SIGHUP, SIGUSR1, SIGUSR2, SIGALRM and the other signals with no use
/// here each ended the process at once (their default action) when it was
/// not PID 1, and were dropped without a word when it was. Now each is
/// logged and changes nothing: the fill goes on, the service answers; the
/// stop that follows still stops in order.
#[test]
fn signals_with_no_use_are_logged_and_ignored_as_pid_1_and_not() {
    let mut logged = vec![
        (libc::SIGHUP, "SIGHUP".to_string()),
        (libc::SIGUSR1, "SIGUSR1".to_string()),
        (libc::SIGUSR2, "SIGUSR2".to_string()),
        (libc::SIGALRM, "SIGALRM".to_string()),
        (libc::SIGVTALRM, "SIGVTALRM".to_string()),
        (libc::SIGPROF, "SIGPROF".to_string()),
        (libc::SIGIO, "SIGIO".to_string()),
        (libc::SIGPWR, "SIGPWR".to_string()),
        (libc::SIGSTKFLT, "SIGSTKFLT".to_string()),
    ];
    logged.push((libc::SIGRTMIN() + 1, "SIGRTMIN+1".to_string()));
    logged.push((
        libc::SIGRTMAX(),
        format!("SIGRTMIN+{}", libc::SIGRTMAX() - libc::SIGRTMIN()),
    ));
    // A service each: the lines of one call site are bounded (5 in 10 s).
    for pid_1 in [false, true] {
        for (sig, name) in &logged {
            let what = format!("{name} (PID 1: {pid_1})");
            let (mut svc, dir, pid) = start(pid_1, None, &[]);
            fill_running(&svc, &dir);
            kill(pid, *sig);
            let line = format!("{name} received: ignored");
            let seen = poll(Duration::from_secs(5), Duration::from_millis(10), || {
                svc.stderr().contains(&line).then_some(())
            });
            assert!(seen.is_some(), "{what} not logged:\n{}", svc.stderr());
            assert!(
                svc.wait_exit(Duration::from_millis(1)).is_none(),
                "{what} ended the process"
            );
            assert_eq!(svc.get("/health").status, 200, "{what}");
            assert_eq!(fills(&dir).len(), 1, "{what}: the fill goes on");
            assert_eq!(svc.get("/chaos").json()["faults"][0]["fault"], "disk", "{what}");
            assert!(!svc.stderr().contains("SHUTDOWN_STARTED"), "{what}");
            kill(pid, libc::SIGTERM);
            let status = svc.wait_exit(Duration::from_secs(10)).expect("SIGTERM still stops");
            assert_eq!(status.code(), Some(0), "{what}: {}", describe(status));
            assert!(fills(&dir).is_empty(), "{what}");
        }
    }
}

/// SIGPIPE and SIGXFSZ are ignored, sent from outside too: the service
/// goes on, and says nothing (they only ever stand for a failed write).
#[test]
fn sigpipe_and_sigxfsz_are_ignored_as_pid_1_and_not() {
    for pid_1 in [false, true] {
        let (mut svc, dir, pid) = start(pid_1, None, &[]);
        fill_running(&svc, &dir);
        for sig in [libc::SIGPIPE, libc::SIGXFSZ] {
            kill(pid, sig);
            std::thread::sleep(Duration::from_millis(100));
            assert!(
                svc.wait_exit(Duration::from_millis(1)).is_none(),
                "signal {sig} ended the process"
            );
            assert_eq!(svc.get("/health").status, 200);
        }
        assert_eq!(fills(&dir).len(), 1);
        assert!(!svc.stderr().contains("received: ignored"), "{}", svc.stderr());
        kill(pid, libc::SIGTERM);
        assert_eq!(svc.wait_exit(Duration::from_secs(10)).and_then(|s| s.code()), Some(0));
        assert!(fills(&dir).is_empty());
    }
}

/// Under `prlimit --fsize=16M`, `POST /load/disk?mb=32` got no answer: the
/// kernel's SIGXFSZ killed the process and left a 16 MiB file. SIGXFSZ is
/// ignored, so the write fails with EFBIG: 507 `file_size_limit`, the file
/// removed, the slot freed (the next fill is accepted). With a ramp, the
/// fault ends by itself and says why.
#[test]
fn a_fill_past_the_file_size_limit_is_507_and_leaves_nothing_as_pid_1_and_not() {
    const LIMIT: u64 = 16 << 20;
    for pid_1 in [false, true] {
        let (mut svc, dir, _) = start(pid_1, Some(LIMIT), &[]);
        let r = svc.post("/load/disk?mb=32");
        assert_eq!(r.status, 507, "{}", r.body);
        let body = r.json();
        assert_eq!(body["reason"], "file_size_limit", "{body}");
        assert_eq!(body["written_bytes"], LIMIT, "{body}");
        assert!(body["error"].as_str().unwrap().contains("RLIMIT_FSIZE"), "{body}");
        assert!(fills(&dir).is_empty(), "{:?}", fills(&dir));
        assert_eq!(svc.get("/chaos").json()["faults"], serde_json::json!([]));
        assert_eq!(svc.post("/load/disk?mb=1").status, 200, "the slot is free");
        assert_eq!(
            crate::harness::request(svc.addr, "DELETE", "/load/disk", &[], "").status,
            200
        );

        assert_eq!(svc.post("/load/disk?mb=32&ramp=1").status, 202);
        // The second such end: the first was the fill without a ramp.
        let ended = poll(Duration::from_secs(10), Duration::from_millis(20), || {
            svc.events()
                .into_iter()
                .filter(|e| e["event"] == "CHAOS_FINISHED" && e["reason"] == "file_size_limit")
                .nth(1)
        });
        let ended = ended.unwrap_or_else(|| panic!("no CHAOS_FINISHED for the ramp:\n{}", svc.stderr()));
        assert_eq!(ended["written_bytes"], LIMIT, "{ended}");
        assert!(fills(&dir).is_empty(), "{:?}", fills(&dir));
        assert_eq!(svc.get("/chaos").json()["faults"], serde_json::json!([]));
        assert_eq!(
            svc.metric("chaos_disk_fill_ended_total{reason=\"file_size_limit\"}"),
            2.0
        );
        assert!(svc.wait_exit(Duration::from_millis(1)).is_none());
        let pid = if pid_1 { svc.inner_pid() } else { svc.pid() as i32 };
        kill(pid, libc::SIGTERM);
        assert_eq!(svc.wait_exit(Duration::from_secs(10)).and_then(|s| s.code()), Some(0));
    }
}
