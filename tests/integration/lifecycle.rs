//! Start-up and stop: bad configuration, SIGTERM (also as PID 1), and the
//! listener failure that tiny_http cannot recover from.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Service, as_pid_1, command, describe, poll, temp_dir, try_request, wrapped};

#[test]
fn bad_environment_values_exit_2_naming_variable_and_value() {
    for (name, value) in [
        ("MEMORY_MB", "abc"),
        ("CPU_LOAD_DURATION", "0"),
        ("MAX_CONCURRENT_CHAOS", "-1"),
        ("CHAOS_COOLDOWN_SECONDS", "1.5"),
        ("MAX_LATENCY_MS", "99999999999999999999"),
        ("PORT", "65536"),
        ("WORKERS", "0"),
        ("BIND_ADDRESS", "not-an-ip"),
        ("READY_FAIL_ON_CPU_STRESS", "maybe"),
        ("RANDOM_CRASH_ENABLED", "sometimes"),
        ("LATENCY_WINDOW_SECONDS", ""),
        ("MAX_REQUEST_HEAD_BYTES", "16k"),
        ("MAX_REQUEST_HEADERS", "0"),
    ] {
        let out = command(&temp_dir("env"), &[(name, value)])
            .stdin(Stdio::null())
            .output()
            .expect("run binary");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{name}={value:?}: {}\n{stderr}",
            describe(out.status)
        );
        assert!(
            stderr.contains(name) && stderr.contains(&format!("{value:?}")),
            "{name}={value:?}: {stderr}"
        );
        assert!(!stderr.contains("POD_STARTED"), "must fail before binding");
    }
}

#[test]
fn port_in_use_exits_non_zero_with_the_address() {
    let first = Service::start(&[]);
    let port = first.addr.port().to_string();
    let out = command(&temp_dir("busy"), &[("PORT", &port)]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("127.0.0.1:{port}")));
}

#[test]
fn sigterm_fails_readiness_at_once_then_exits_0() {
    let mut svc = Service::start(&[("SHUTDOWN_DELAY_SECONDS", "2")]);
    assert_eq!(svc.get("/ready").status, 200);
    let sent = Instant::now();
    svc.signal(libc::SIGTERM);
    let r = poll(Duration::from_millis(500), Duration::from_millis(5), || {
        let r = svc.get("/ready");
        (r.status == 503).then_some(r)
    })
    .expect("/ready 503 right after SIGTERM");
    assert!(sent.elapsed() < Duration::from_millis(200), "took {:?}", sent.elapsed());
    assert_eq!(r.json()["reasons"], serde_json::json!(["shutting down"]));
    // Liveness stays up while draining: a restart now would be a bug.
    assert_eq!(svc.get("/health").status, 200);
    let status = svc.wait_exit(Duration::from_secs(3)).expect("exits within delay + 1 s");
    assert_eq!(status.code(), Some(0), "{}", describe(status));
    assert!(
        sent.elapsed() >= Duration::from_secs(2),
        "waited the delay: {:?}",
        sent.elapsed()
    );
}

#[test]
fn second_signal_skips_the_delay() {
    let mut svc = Service::start(&[("SHUTDOWN_DELAY_SECONDS", "30")]);
    svc.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(100));
    svc.signal(libc::SIGTERM);
    let status = svc.wait_exit(Duration::from_secs(3)).expect("exits at once");
    assert_eq!(status.code(), Some(0));
}

/// As PID 1 of its own PID namespace (what a scratch container gives), a
/// process without a handler would ignore SIGTERM.
#[test]
fn sigterm_works_as_pid_1() {
    let mut svc = Service::spawn(as_pid_1(&command(&temp_dir("pid1"), &[])));
    assert_eq!(svc.get("/health").status, 200);
    // SAFETY: kill(2) with a valid pid and signal.
    assert_eq!(unsafe { libc::kill(svc.inner_pid(), libc::SIGTERM) }, 0);
    let status = svc.wait_exit(Duration::from_secs(3)).expect("PID 1 stops on SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", describe(status));
}

/// With few file descriptors allowed, accept() fails with EMFILE. Upstream
/// tiny_http then stopped accepting for good (tiny-http#283) and the service
/// exited 1; the patched one counts the error, evicts an idle connection to
/// free an fd, and goes on: a client must not be able to make the process
/// exit.
#[test]
fn fd_exhaustion_is_not_fatal() {
    let state = temp_dir("emfile");
    // A cap above what the fds allow, so that accept() does fail.
    let inner = command(
        &state,
        &[("HTTP_MAX_CONNECTIONS", "1000"), ("HTTP_IDLE_TIMEOUT_SECONDS", "1")],
    );
    let mut prlimit = Command::new("prlimit");
    prlimit.args(["--nofile=12:12", "--"]);
    let mut svc = Service::spawn(wrapped(prlimit, &inner));
    let mut held = Vec::new();
    for _ in 0..20 {
        if let Ok(s) = std::net::TcpStream::connect_timeout(&svc.addr, Duration::from_millis(200)) {
            held.push(s);
        }
    }
    assert!(svc.wait_exit(Duration::from_millis(500)).is_none(), "{}", svc.stderr());
    let answered = poll(Duration::from_secs(3), Duration::from_millis(50), || {
        try_request(svc.addr, "GET", "/health", &[], "", Duration::from_millis(500))
            .ok()
            .filter(|r| r.status == 200)
    });
    assert!(answered.is_some(), "{}", svc.stderr());
    drop(held);
    let errors = poll(Duration::from_secs(5), Duration::from_millis(100), || {
        let body = try_request(svc.addr, "GET", "/metrics", &[], "", Duration::from_millis(500))
            .ok()?
            .body;
        crate::harness::metric_value(&body, "http_connections_rejected_total{reason=\"accept_error\"}")
    });
    assert!(errors.is_some_and(|n| n >= 1.0), "accept errors counted: {errors:?}");
    assert!(svc.wait_exit(Duration::from_millis(10)).is_none(), "{}", svc.stderr());
    // tiny_http's warning of each failed accept is bounded like any log
    // line (at most 5 in 10 s), however often the client makes it fail.
    let warned = svc.stderr().matches("Error accepting new client").count();
    assert!((1..=5).contains(&warned), "{warned} accept warnings:\n{}", svc.stderr());
}

/// A token no client can send (a line break, a space, a control character
/// or a byte outside ASCII inside it) started fine, and then every chaos
/// request was 401, stops included. Now it is a configuration error: exit
/// 2 before the port is bound, naming the variable (and the file) but
/// never the token. The line end a file ends with is trimmed.
#[test]
fn a_token_a_header_cannot_carry_refuses_to_start_without_showing_it() {
    use std::os::unix::ffi::OsStrExt;
    let secret = "zq9xSECRET";
    let bad: Vec<Vec<u8>> = [
        "\n2nd-line",
        " inner",
        "\u{e9}",
        "\u{1}",
        "\tx",
        "\r\n2nd-line",
        "\u{7f}",
    ]
    .iter()
    .map(|tail| format!("{secret}{tail}").into_bytes())
    .chain([[secret.as_bytes(), b"\xff"].concat()])
    .collect();
    let dir = temp_dir("bad-token");
    let file = dir.join("token");
    for value in &bad {
        let shown = String::from_utf8_lossy(value).into_owned();
        let mut by_variable = command(&temp_dir("bad-token"), &[]);
        by_variable.env("CHAOS_TOKEN", std::ffi::OsStr::from_bytes(value));
        std::fs::write(&file, [value.as_slice(), b"\n"].concat()).unwrap();
        let by_file = command(&temp_dir("bad-token"), &[("CHAOS_TOKEN_FILE", file.to_str().unwrap())]);
        for (variable, cmd) in [("CHAOS_TOKEN", by_variable), ("CHAOS_TOKEN_FILE", by_file)] {
            let out = crate::harness::output_within(cmd, Duration::from_secs(10));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{variable}={shown:?}: {stderr}");
            assert!(
                stderr.contains(&format!("invalid {variable}")),
                "{variable}={shown:?}: {stderr}"
            );
            assert!(
                !stderr.contains("zq9x"),
                "{variable}={shown:?} shows the token: {stderr}"
            );
            assert!(!stderr.contains("POD_STARTED"), "must fail before binding");
            if variable == "CHAOS_TOKEN_FILE" {
                assert!(stderr.contains(file.to_str().unwrap()), "names the file: {stderr}");
            }
        }
    }
    // A Secret written with a Windows line end still works.
    std::fs::write(&file, format!("{secret}\r\n")).unwrap();
    let svc = Service::start(&[("CHAOS_TOKEN_FILE", file.to_str().unwrap())]);
    let auth = format!("Bearer {secret}");
    let r = crate::harness::request(svc.addr, "POST", "/chaos/stop", &[("Authorization", &auth)], "");
    assert_eq!(r.status, 200, "{}", r.body);
}
