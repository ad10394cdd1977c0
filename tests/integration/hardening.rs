//! Hostile and careless clients: bad input of every kind, slow and idle
//! connections, and who may start chaos (token, kill switch).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::{Service, exclusive, percentile, repo, request, temp_dir};

/// Sends raw bytes on a new connection and returns what came back before the
/// server closed it (or 2 s passed).
fn raw(svc: &Service, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(svc.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn post_request(target: &str) -> Vec<u8> {
    format!("POST {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").into_bytes()
}

#[test]
fn every_bad_input_gets_a_clear_answer_and_the_service_keeps_serving() {
    // Two leaks below are accepted; each holds a slot until released.
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0"), ("MAX_CONCURRENT_CHAOS", "4")]);
    let long_value = "9".repeat(100_000);
    let long_header = format!(
        "GET /health HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(200_000)
    );
    let big_body = format!(
        "POST /load/memory?mb=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 4096\r\n\r\n{}",
        "b".repeat(4096)
    );
    // (what, request bytes, status line, text the answer must contain)
    let cases: Vec<(&str, Vec<u8>, &str, String)> = vec![
        ("non-numeric", post_request("/load/cpu?duration=abc"), "400", "invalid duration \\\"abc\\\"".into()),
        ("negative", post_request("/load/cpu?duration=-5"), "400", "invalid duration \\\"-5\\\"".into()),
        ("zero", post_request("/load/cpu?millicores=0"), "400", "invalid millicores \\\"0\\\"".into()),
        ("fractional", post_request("/load/memory?mb=1.5"), "400", "invalid mb \\\"1.5\\\"".into()),
        ("overflowing", post_request("/load/memory?mb=99999999999999999999"), "400", "99999999999999999999".into()),
        ("empty", post_request("/load/cpu?duration="), "400", "invalid duration \\\"\\\"".into()),
        ("repeated", post_request("/load/cpu?duration=1&duration=2"), "400", "given more than once".into()),
        ("unknown parameter", post_request("/load/cpu?durration=5"), "400", "unknown parameter \\\"durration\\\"".into()),
        ("broken escape", post_request("/load/memory?mb=%zz"), "400", "invalid percent-encoding".into()),
        ("long URL", post_request(&format!("/load/cpu?duration={}", &long_value[..10_000])), "400", "(10000 bytes)".into()),
        // Heads over MAX_REQUEST_HEAD_BYTES (16 KiB): see heads.rs.
        ("very long URL", post_request(&format!("/load/cpu?duration={long_value}")), "431", "larger than 16384 bytes".into()),
        ("oversized header", long_header.into_bytes(), "431", "larger than 16384 bytes".into()),
        ("body on POST, never read", big_body.into_bytes(), "200", "\"leaked_mb\":1".into()),
        (
            "absurd Content-Length",
            b"POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999\r\n\r\nabc".to_vec(),
            "413",
            // Answered, then closed rather than drained.
            "Connection: close".into(),
        ),
        (
            "unknown method",
            b"BREW /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
            "405",
            "method BREW is not allowed".into(),
        ),
        ("HTTP/1.0", b"GET /health HTTP/1.0\r\n\r\n".to_vec(), "HTTP/1.0 200", "healthy".into()),
        ("Expect: 100-continue", b"POST /load/memory?mb=1 HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n".to_vec(), "200", "leaked".into()),
        ("unknown expectation", b"POST /health HTTP/1.1\r\nHost: t\r\nExpect: tea\r\nConnection: close\r\n\r\n".to_vec(), "417", "100-continue".into()),
        ("not HTTP at all", b"\x00\x01garbage\r\n\r\n".to_vec(), "400", "malformed request line".into()),
    ];
    for (what, bytes, status, text) in cases {
        let answer = raw(&svc, &bytes);
        let status_line = answer.lines().next().unwrap_or("");
        assert!(
            status_line.contains(status),
            "{what}: expected {status}, got {status_line:?}"
        );
        assert!(
            answer.contains(&text),
            "{what}: {text:?} not in {:?}",
            &answer[..answer.len().min(400)]
        );
        assert!(
            answer.len() < 20_000,
            "{what}: the answer echoes too much ({} bytes)",
            answer.len()
        );
        assert_eq!(
            request(svc.addr, "GET", "/health", &[], "").status,
            200,
            "{what}: /health afterwards"
        );
    }
    // Two pipelined requests on one connection get two answers, in order.
    let both = raw(
        &svc,
        b"GET /health HTTP/1.1\r\nHost: t\r\n\r\nGET /ready HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(both.matches("HTTP/1.1 200").count(), 2, "{both}");
    assert!(both.find("healthy").unwrap() < both.find("\"ready\"").unwrap());
}

/// tiny_http runs a thread per connection and reads headers there, so idle
/// and slow-header clients hold no worker; a slow *body* is drained by the
/// connection's thread, never by a worker (the patched tiny_http). 200 such
/// connections must leave /health fast.
#[test]
fn two_hundred_slow_or_idle_clients_do_not_starve_the_probes() {
    let _x = exclusive();
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let mut held = Vec::new();
    for i in 0..200 {
        let mut s = TcpStream::connect(svc.addr).unwrap();
        match i % 4 {
            // Idle: connected, nothing sent.
            0 => {}
            // Slow headers: half a request line.
            1 => s.write_all(b"GET /hea").unwrap(),
            // Slow body: headers say 4 KiB, 10 bytes come.
            2 => s
                .write_all(b"POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 4096\r\n\r\n0123456789")
                .unwrap(),
            // Idle keep-alive after one answered request, never read.
            _ => s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n").unwrap(),
        }
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut samples = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        let r = crate::harness::try_request(svc.addr, "GET", "/health", &[], "", Duration::from_secs(2))
            .expect("/health answers while 200 clients hang on");
        samples.push(t.elapsed());
        assert_eq!(r.status, 200);
    }
    let p99 = percentile(&mut samples, 99.0);
    eprintln!("/health p99 with 200 slow or idle connections held: {p99:?}");
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");
    assert_eq!(request(svc.addr, "GET", "/ready", &[], "").status, 200);
    drop(held);
}

#[test]
fn token_guards_chaos_and_leaves_probes_open() {
    let svc = Service::start(&[
        ("CHAOS_TOKEN", "s3cret-token"),
        ("CHAOS_COOLDOWN_SECONDS", "0"),
        ("MAX_CONCURRENT_CHAOS", "2"),
    ]);
    for (auth, status) in [
        (None, 401),
        (Some("Bearer wrong"), 401),
        (Some("Basic s3cret-token"), 401),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
        for target in ["/load/cpu?duration=1&millicores=10", "/load/memory?mb=1", "/crash"] {
            let r = request(svc.addr, "POST", target, &headers, "");
            assert_eq!(r.status, status, "{target} with {auth:?}");
            assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));
            assert!(
                !r.body.contains("s3cret-token"),
                "the token must never be echoed: {}",
                r.body
            );
        }
    }
    let ok = [("Authorization", "Bearer s3cret-token")];
    assert_eq!(request(svc.addr, "POST", "/load/memory?mb=1", &ok, "").status, 200);
    assert_eq!(
        request(svc.addr, "POST", "/load/cpu?duration=1&millicores=10", &ok, "").status,
        202
    );
    for open in ["/", "/health", "/metrics"] {
        assert_eq!(svc.get(open).status, 200, "{open} stays open");
    }
    assert_eq!(
        svc.get("/ready").status,
        503,
        "open, and failing only because the CPU load runs"
    );
    assert_eq!(
        svc.metric("chaos_actions_total{action=\"crash\",outcome=\"unauthorized\"}"),
        3.0
    );
    assert_eq!(
        svc.metric("chaos_actions_total{action=\"memory\",outcome=\"accepted\"}"),
        1.0
    );
}

#[test]
fn kill_switch_answers_403_even_with_the_right_token() {
    let svc = Service::start(&[("CHAOS_ENABLED", "false"), ("CHAOS_TOKEN", "t0ken")]);
    let ok = [("Authorization", "Bearer t0ken")];
    for target in ["/load/cpu", "/load/memory", "/crash"] {
        let r = request(svc.addr, "POST", target, &ok, "");
        assert_eq!(r.status, 403, "{target}");
        assert!(r.json()["error"].as_str().unwrap().contains("CHAOS_ENABLED=false"));
    }
    assert_eq!(
        request(svc.addr, "POST", "/crash", &[], "").status,
        401,
        "the token is checked first"
    );
    assert_eq!(svc.get("/health").status, 200, "and nothing crashed");
    assert_eq!(
        svc.metric("chaos_actions_total{action=\"crash\",outcome=\"disabled\"}"),
        1.0
    );
}

#[test]
fn missing_token_file_closes_chaos_without_a_crash_loop() {
    let missing = temp_dir("token").join("absent");
    let svc = Service::start(&[("CHAOS_TOKEN_FILE", missing.to_str().unwrap())]);
    let r = request(svc.addr, "POST", "/crash", &[("Authorization", "Bearer guess")], "");
    assert_eq!(r.status, 401);
    assert!(
        r.json()["error"].as_str().unwrap().contains("could not be read"),
        "{}",
        r.body
    );
    assert_eq!(svc.get("/ready").status, 200);
    // With the file present, its token works.
    let file = temp_dir("token").join("token");
    std::fs::write(&file, "from-a-secret\n").unwrap();
    let svc = Service::start(&[("CHAOS_TOKEN_FILE", file.to_str().unwrap())]);
    let r = request(
        svc.addr,
        "POST",
        "/load/memory?mb=1",
        &[("Authorization", "Bearer from-a-secret")],
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

/// scripts/soak.sh in its short mode (about a minute): RSS, fds and threads
/// do not grow beyond the intended leak.
#[test]
fn soak_short_mode_passes() {
    // It times its answers and runs chaos cycles: alone, like the other timing tests.
    let _x = exclusive();
    let out = std::process::Command::new("bash")
        .arg(repo().join("scripts/soak.sh"))
        .args(["--short", "--binary", env!("CARGO_BIN_EXE_chaos-backend")])
        .output()
        .expect("run scripts/soak.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "soak failed:\n{stdout}");
    assert!(stdout.contains("soak: pass"));
    assert!(stdout.contains("unexpected answers: 0"));
}

/// Sets `SO_LINGER` to zero seconds: `close` then sends a reset (RST)
/// instead of a FIN, and drops whatever was not yet sent.
fn linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a `linger` of the size given.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_LINGER)");
}

/// A client that sends a whole request and resets the connection (often
/// before the server has accepted it, so that `getpeername` fails with
/// ENOTCONN) made the connection's thread panic in tiny_http
/// (`remote_addr.unwrap()`): 200 of 200 such connections panicked. 1,000
/// of them must leave no panic, no extra thread or fd, and the service
/// serving.
#[test]
fn a_thousand_requests_reset_by_their_clients_panic_nothing_and_leave_nothing() {
    let _x = exclusive();
    let svc = Service::start(&[]);
    assert_eq!(svc.get("/health").status, 200);
    let base = svc.threads_and_fds();
    for i in 0..1000 {
        let mut s = TcpStream::connect(svc.addr).unwrap();
        let target = ["/health", "/", "/metrics", "/ready"][i % 4];
        s.write_all(format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        linger_zero(&s);
        drop(s);
    }
    let back = crate::harness::poll(Duration::from_secs(10), Duration::from_millis(50), || {
        let (threads, fds) = svc.threads_and_fds();
        (threads <= base.0 && fds <= base.1).then_some(())
    });
    assert_eq!(request(svc.addr, "GET", "/health", &[], "").status, 200);
    let stderr = svc.stderr();
    assert!(!stderr.contains("panicked"), "a thread panicked:\n{stderr}");
    assert!(
        back.is_some(),
        "threads and fds {:?}, {base:?} before the resets",
        svc.threads_and_fds()
    );
}

/// Sends `count` copies of `request` pipelined on one connection (the last
/// one closing it) and counts the answers whose status line starts with
/// `status`; a writer thread sends while this one reads.
fn pipelined(svc: &Service, request: &str, count: usize, status: &str) -> usize {
    let mut stream = TcpStream::connect(svc.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let closing = request.replacen("\r\n", "\r\nConnection: close\r\n", 1);
    let mut all = request.repeat(count - 1);
    all.push_str(&closing);
    let sender = std::thread::spawn(move || writer.write_all(all.as_bytes()));
    let mut answers = Vec::new();
    stream.read_to_end(&mut answers).unwrap();
    sender.join().unwrap().unwrap();
    String::from_utf8_lossy(&answers)
        .matches(&format!("HTTP/1.1 {status}"))
        .count()
}

/// The bytes of stderr from `svc`'s start to its exit (SIGTERM), and the
/// stderr itself, after checking that each of the `rejected` refusals was
/// written or counted.
fn stderr_until_exit(mut svc: Service, rejected: u64) -> (usize, String) {
    svc.signal(libc::SIGTERM);
    let status = svc.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(0));
    // The pipe is read to its end by the harness's thread.
    let all = crate::harness::poll(Duration::from_secs(5), Duration::from_millis(10), || {
        let text = svc.stderr();
        text.contains("INFO  chaos_backend: stopped").then_some(text)
    })
    .expect("the last line");
    assert_eq!(svc.events_written_or_counted("CHAOS_REJECTED"), rejected);
    (all.len(), all)
}

/// A pipelined flood of `POST /chaos/stop` without the token wrote a
/// CHAOS_REJECTED line per request (126 B each, 7.1 MB/s): enough for an
/// unauthenticated client to fill the pod's ephemeral storage and get it
/// evicted. 10,000 now add a few KB (the first few lines in full, one
/// summary with the count), and the metrics count every one.
#[test]
fn ten_thousand_unauthenticated_stops_add_a_few_kb_to_the_log() {
    let _x = exclusive();
    let quiet = Service::start(&[("CHAOS_TOKEN", "t0ken")]);
    let (baseline, _) = stderr_until_exit(quiet, 0);
    let svc = Service::start(&[("CHAOS_TOKEN", "t0ken")]);
    let answered = pipelined(&svc, "POST /chaos/stop HTTP/1.1\r\nHost: t\r\n\r\n", 10_000, "401");
    assert_eq!(answered, 10_000);
    assert_eq!(
        svc.metric("http_requests_total{code=\"401\",endpoint=\"/chaos/stop\",method=\"POST\"}"),
        10_000.0
    );
    let (bytes, stderr) = stderr_until_exit(svc, 10_000);
    let grown = bytes - baseline;
    eprintln!("10,000 unauthenticated stops: stderr {bytes} bytes, {grown} more than a life without them");
    assert!(grown <= 3 * 1024, "stderr grew by {grown} bytes:\n{stderr}");
    let rejected = stderr.matches("\"event\":\"CHAOS_REJECTED\"").count();
    assert!((1..=5).contains(&rejected), "{rejected} CHAOS_REJECTED lines");
}

/// Every kind of request a client can repeat to be refused (a scanner's
/// 404s and 405s, broken heads, bodies too large to read, 401, 429, 507)
/// adds at most a few lines per kind, however many come; each is counted.
#[test]
fn floods_of_every_kind_of_refusal_add_a_few_lines_each() {
    let _x = exclusive();
    let env = [
        ("CHAOS_TOKEN", "t0ken"),
        ("CHAOS_COOLDOWN_SECONDS", "0"),
        ("MAX_CONCURRENT_CHAOS", "1"),
    ];
    let quiet = Service::start(&env);
    let (baseline, _) = stderr_until_exit(quiet, 0);
    let svc = Service::start(&env);
    const N: usize = 2_000;
    let auth = "Authorization: Bearer t0ken\r\n";
    // A leak holds the one slot: every CPU load after it is a 429.
    assert_eq!(
        request(
            svc.addr,
            "POST",
            "/load/memory?mb=1",
            &[("Authorization", "Bearer t0ken")],
            ""
        )
        .status,
        200
    );
    let floods = [
        ("GET /wp-login.php HTTP/1.1\r\nHost: t\r\n\r\n".to_string(), "404"),
        ("PUT /health HTTP/1.1\r\nHost: t\r\n\r\n".to_string(), "405"),
        ("POST /load/cpu HTTP/1.1\r\nHost: t\r\n\r\n".to_string(), "401"),
        (
            format!("POST /load/cpu?duration=1 HTTP/1.1\r\nHost: t\r\n{auth}\r\n"),
            "429",
        ),
        (
            format!("POST /load/memory?mb=1048576 HTTP/1.1\r\nHost: t\r\n{auth}\r\n"),
            "507",
        ),
    ];
    for (request, status) in &floods {
        assert_eq!(pipelined(&svc, request, N, status), N, "{request:?}");
    }
    // Each of these closes its connection.
    for (bytes, status) in [
        (&b"\x00\x01garbage\r\n\r\n"[..], "400"),
        (
            &b"POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999\r\n\r\n"[..],
            "413",
        ),
    ] {
        for _ in 0..200 {
            assert!(raw(&svc, bytes).starts_with(&format!("HTTP/1.1 {status}")), "{status}");
        }
    }
    assert_eq!(
        svc.metric("chaos_actions_total{action=\"cpu\",outcome=\"rejected\"}"),
        N as f64
    );
    assert_eq!(
        svc.metric("chaos_actions_total{action=\"memory\",outcome=\"failed\"}"),
        N as f64
    );
    assert_eq!(
        svc.metric("http_requests_total{code=\"413\",endpoint=\"/health\",method=\"POST\"}"),
        200.0
    );
    let (bytes, stderr) = stderr_until_exit(svc, 3 * N as u64);
    let grown = bytes - baseline;
    eprintln!(
        "{} refused requests of 7 kinds: stderr {grown} bytes more than a quiet life",
        5 * N + 400
    );
    assert!(grown <= 12 * 1024, "stderr grew by {grown} bytes:\n{stderr}");
    // At most the burst per kind of event and per log line, and one
    // summary each.
    let events = |outcome: &str| {
        stderr
            .lines()
            .filter(|l| l.contains("\"event\":\"CHAOS_REJECTED\"") && l.contains(&format!("\"outcome\":\"{outcome}\"")))
            .count()
    };
    let logs = |text: &str| {
        stderr
            .lines()
            .filter(|l| !l.starts_with('{') && l.contains(text))
            .count()
    };
    for (what, lines) in [
        ("401", events("unauthorized")),
        ("429", events("rejected")),
        ("507", events("failed")),
        ("507 log", logs("cannot leak")),
        ("413 log", logs("refusing a 99999999999999-byte body")),
    ] {
        assert!((1..=5).contains(&lines), "{lines} lines for {what}:\n{stderr}");
    }
    assert_eq!(stderr.matches("\"event\":\"EVENTS_SUPPRESSED\"").count(), 3, "{stderr}");
    assert_eq!(stderr.matches(" left out in the last ").count(), 2, "{stderr}");

    // The kill switch's 403, on a service of its own.
    let disabled = Service::start(&[("CHAOS_TOKEN", "t0ken"), ("CHAOS_ENABLED", "false")]);
    let request = format!("POST /load/cpu HTTP/1.1\r\nHost: t\r\n{auth}\r\n");
    assert_eq!(pipelined(&disabled, &request, N, "403"), N);
    assert_eq!(
        disabled.metric("chaos_actions_total{action=\"cpu\",outcome=\"disabled\"}"),
        N as f64
    );
    let (_, stderr) = stderr_until_exit(disabled, N as u64);
    let written = stderr.matches("\"outcome\":\"disabled\"").count();
    assert!((1..=6).contains(&written), "{written} lines for 403:\n{stderr}");
}
