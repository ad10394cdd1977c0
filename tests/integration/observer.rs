//! `chaos-backend observe` against real counterparts on loopback: the
//! service itself (ok answers, its 404s and 503s), a closed port, a
//! listener that resets, one that never answers, one that stalls, and
//! servers that answer badly. Every figure is read from the observer's own
//! output, as a user reads it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Service, bin, binary_command, describe, exclusive, output_within};

/// The binary with `observe` and `args`.
pub fn observe_command(args: &[&str]) -> Command {
    let mut cmd = binary_command();
    cmd.arg("observe").args(args).env_clear();
    cmd
}

/// What one run printed: the per-second lines and the summary.
pub struct Run {
    pub output: Output,
    pub lines: Vec<Value>,
    pub summary: Value,
}

impl Run {
    pub fn from_output(output: Output) -> Run {
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let mut lines: Vec<Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\n{stdout}")))
            .collect();
        let last = lines.pop().unwrap_or_else(|| {
            panic!(
                "no output ({}); stderr:\n{}",
                describe(output.status),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        let summary = last["summary"].clone();
        assert!(summary.is_object(), "the last line is the summary: {last}");
        Run { output, lines, summary }
    }

    /// The total of one error class, from the summary.
    pub fn errors(&self, class: &str) -> u64 {
        self.summary["errors"][class]
            .as_u64()
            .unwrap_or_else(|| panic!("no class {class}"))
    }

    pub fn error_total(&self) -> u64 {
        self.summary["errors"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum()
    }

    pub fn describe(&self) -> String {
        format!(
            "{}\n{}{}",
            describe(self.output.status),
            String::from_utf8_lossy(&self.output.stdout),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }
}

/// Runs the observer to its end (it must end within `limit`).
pub fn observe(args: &[&str], limit: Duration) -> Run {
    Run::from_output(output_within(observe_command(args), limit))
}

/// A loopback listener that hands each connection to `handler` on a
/// thread of its own, and counts them; stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl TestServer {
    pub fn start(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let (flag, count) = (Arc::clone(&stop), Arc::clone(&accepted));
        let thread = thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let h = Arc::clone(&handler);
                thread::spawn(move || h(stream));
            }
        });
        TestServer {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request head; false at the end of the stream.
pub fn read_head(stream: &mut TcpStream) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    true
}

/// An answer with a JSON body naming `pod`.
pub fn pod_answer(pod: &str, close: bool) -> String {
    let body = format!("{{\"pod\":\"{pod}\"}}");
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
}

fn set_linger_zero(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an open socket with a valid linger struct.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER");
}

#[test]
fn help_documents_every_flag_and_bad_values_exit_2_naming_them() {
    let out = output_within(observe_command(&["--help"]), Duration::from_secs(5));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    for needle in [
        "--url URL",
        "--rate R",
        "--duration S",
        "--timeout S",
        "--keepalive",
        "--slo PERCENT",
        "refused, reset, timeout, http_5xx",
        "http_other, bad_body",
        "due time",
        "Exit status",
        "docs/observer.md",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
    let mut top = Command::new(bin());
    top.arg("--help");
    let top = output_within(top, Duration::from_secs(5));
    assert!(String::from_utf8_lossy(&top.stdout).contains("chaos-backend observe --url URL"));

    for (args, quoted) in [
        (&["--url", "http://127.0.0.1:9/", "--rate", "abc"][..], "\"abc\""),
        (&["--url", "http://127.0.0.1:9/", "--rate", "0"], "\"0\""),
        (&["--url", "ftp://127.0.0.1/"], "\"ftp://127.0.0.1/\""),
        (&["--url", "http://127.0.0.1:9/", "--duration", "0"], "\"0\""),
        (&["--url", "http://127.0.0.1:9/", "--timeout", "-1"], "\"-1\""),
        (&["--url", "http://127.0.0.1:9/", "--slo", "150"], "\"150\""),
        (&["--url", "http://no-such-host.invalid/"], "\"no-such-host.invalid\""),
        (&["--rate", "5"], "--url"),
        (&["--url", "http://127.0.0.1:9/", "--frobnicate"], "\"--frobnicate\""),
    ] {
        let out = output_within(observe_command(args), Duration::from_secs(10));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}\n{stderr}",
            describe(out.status)
        );
        assert!(stderr.contains(quoted), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing measured, nothing printed");
    }
}

#[test]
fn answers_are_counted_per_second_and_per_pod_and_agree_with_the_service() {
    let svc = Service::start(&[("HOSTNAME", "observed-pod")]);
    let before = svc.metric("http_requests_total{code=\"200\",endpoint=\"/\",method=\"GET\"}");
    let url = format!("http://{}/", svc.addr);
    let run = observe(
        &["--url", &url, "--rate", "40", "--duration", "2"],
        Duration::from_secs(20),
    );
    let s = &run.summary;
    assert_eq!(run.output.status.code(), Some(0), "{}", run.describe());
    assert_eq!((s["requests"].as_u64(), s["ok"].as_u64()), (Some(80), Some(80)), "{s}");
    assert_eq!(run.error_total(), 0);
    assert_eq!(s["availability"], 100.0);
    assert_eq!(s["unfinished"], 0);
    assert_eq!(s["ended_by"], "duration");
    assert_eq!(s["pods"]["observed-pod"]["requests"], 80);
    assert_eq!(s["pods"]["observed-pod"]["gaps"], serde_json::json!([]));
    assert_eq!(s["longest_error_streak_s"], 0.0);
    for field in [
        "p50_ms",
        "p99_ms",
        "max_ms",
        "lateness_p50_ms",
        "lateness_p99_ms",
        "max_rss_mb",
    ] {
        assert!(s[field].as_f64().is_some_and(|v| v > 0.0), "{field}: {s}");
    }
    assert!(s["p50_ms"].as_f64() <= s["p99_ms"].as_f64() && s["p99_ms"].as_f64() <= s["max_ms"].as_f64());
    // The service counted the same requests (an outside check).
    let after = svc.metric("http_requests_total{code=\"200\",endpoint=\"/\",method=\"GET\"}");
    assert_eq!(after - before, 80.0, "the service's own count");
    // One line a second with every field; t is first.
    let first = &run.lines[0];
    assert_eq!(first["t"], 1.0);
    let raw = String::from_utf8_lossy(&run.output.stdout);
    assert!(raw.starts_with("{\"t\":1.0,\"sent\":"), "{raw}");
    for field in [
        "sent",
        "ok",
        "errors",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "pods",
        "in_flight",
        "late_max_ms",
    ] {
        assert!(!first[field].is_null(), "{field} missing: {first}");
    }
    assert!((39..=41).contains(&first["sent"].as_u64().unwrap()), "{first}");
    assert_eq!(first["pods"]["observed-pod"], first["ok"]);
    let sent: u64 = run.lines.iter().map(|l| l["sent"].as_u64().unwrap()).sum();
    assert_eq!(sent, 80);
}

#[test]
fn each_error_class_against_a_real_counterpart() {
    // refused: nothing listens on the port.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    // reset: accepts, reads the request, closes with SO_LINGER 0 (an RST).
    let resetter = TestServer::start(|mut s| {
        read_head(&mut s);
        set_linger_zero(&s);
    });
    // timeout: accepts and never answers.
    let held = Arc::new(Mutex::new(Vec::new()));
    let holder = Arc::clone(&held);
    let silent = TestServer::start(move |s| holder.lock().unwrap_or_else(PoisonError::into_inner).push(s));
    // http_5xx and http_other: the service's own 503 (/ready under a
    // readiness fault) and 404.
    let svc = Service::start(&[]);
    assert_eq!(svc.post("/fault/readiness?duration=60").status, 202);
    // bad_body: a 200 that is not JSON, and one cut short.
    let not_json = TestServer::start(|mut s| {
        if read_head(&mut s) {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
        }
    });
    let cut_short = TestServer::start(|mut s| {
        if read_head(&mut s) {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"pod\":");
        }
    });
    let cases = [
        ("refused", format!("http://{closed}/")),
        ("reset", resetter.url()),
        ("timeout", silent.url()),
        ("http_5xx", format!("http://{}/ready", svc.addr)),
        ("http_other", format!("http://{}/no-such-path", svc.addr)),
        ("bad_body", not_json.url()),
        ("bad_body", cut_short.url()),
    ];
    for (class, url) in &cases {
        let run = observe(
            &["--url", url, "--rate", "20", "--duration", "1", "--timeout", "0.3"],
            Duration::from_secs(20),
        );
        let s = &run.summary;
        assert_eq!(s["requests"], 20, "{class}: {}", run.describe());
        assert_eq!(run.errors(class), 20, "{class} ({url}): {}", run.describe());
        assert_eq!(
            (s["ok"].as_u64(), s["availability"].as_f64()),
            (Some(0), Some(0.0)),
            "{class}"
        );
        assert_eq!(run.error_total(), 20, "{class}: one class only: {}", run.describe());
        // Every request failed: one streak as long as the run.
        assert!(s["longest_error_streak_s"].as_f64().unwrap() >= 0.99, "{class}: {s}");
        let per_second: u64 = run.lines.iter().map(|l| l["errors"][class].as_u64().unwrap()).sum();
        assert_eq!(per_second, 20, "{class}: the lines add up to the summary");
        assert_eq!(run.output.status.code(), Some(0), "no --slo: exit 0");
    }
    // The timeouts were measured at the timeout, from the due time.
    let run = observe(
        &[
            "--url",
            &silent.url(),
            "--rate",
            "10",
            "--duration",
            "0.5",
            "--timeout",
            "0.4",
        ],
        Duration::from_secs(20),
    );
    let max = run.summary["max_ms"].as_f64().unwrap();
    assert!(
        (400.0..700.0).contains(&max),
        "timeouts end at the 0.4 s deadline: {max}"
    );
}

/// What a user saw, however the answer is dressed: an error status with a
/// body larger than the observer keeps is still that status (it was a
/// `bad_body`), and a `103 Early Hints` before the 200 is skipped as
/// clients skip it (it was an `http_other`).
#[test]
fn an_error_status_keeps_its_class_however_large_and_interim_answers_are_skipped() {
    let large = |status: &'static str| {
        TestServer::start(move |mut s| {
            if read_head(&mut s) {
                let body = vec![b'x'; 2 << 20];
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&body);
            }
        })
    };
    let (unavailable, not_found) = (large("503 Service Unavailable"), large("404 Not Found"));
    let hinted = TestServer::start(|mut s| {
        if read_head(&mut s) {
            let _ = s.write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n");
            let _ = s.write_all(pod_answer("hinted", true).as_bytes());
        }
    });
    for (class, url) in [
        ("http_5xx", unavailable.url()),
        ("http_other", not_found.url()),
        ("ok", hinted.url()),
    ] {
        let run = observe(
            &["--url", &url, "--rate", "20", "--duration", "1", "--timeout", "1"],
            Duration::from_secs(20),
        );
        let s = &run.summary;
        assert_eq!(s["requests"], 20, "{class}: {}", run.describe());
        if class == "ok" {
            assert_eq!(
                (s["ok"].as_u64(), run.error_total()),
                (Some(20), 0),
                "{}",
                run.describe()
            );
            assert_eq!(s["pods"]["hinted"]["requests"], 20);
        } else {
            assert_eq!(run.errors(class), 20, "{class}: {}", run.describe());
            assert_eq!(run.error_total(), 20, "{class}: one class only: {}", run.describe());
        }
    }
}

/// A tiny rate is refused (exit 2, naming the value), not a panic on the
/// second due time; and a streak still on at the end lasts no longer than
/// the run: one failed request at 0.5/s in a 3 s run is 3 s, not 4.
#[test]
fn a_rate_too_low_exits_2_and_a_final_streak_ends_with_the_run() {
    let out = output_within(
        observe_command(&["--url", "http://127.0.0.1:9/", "--rate", "1e-19"]),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(out.status));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid --rate \"1e-19\""), "{stderr}");
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let run = observe(
        &[
            "--url",
            &format!("http://{closed}/"),
            "--rate",
            "0.5",
            "--duration",
            "3",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(run.summary["requests"], 2, "{}", run.describe());
    assert_eq!(run.summary["longest_error_streak_s"], 3.0, "{}", run.describe());
}

#[test]
fn a_stalled_target_shows_as_latency_from_due_times_not_as_fewer_requests() {
    let _x = exclusive();
    // Connections that arrive from 1 s to 3 s after the observer starts get
    // no answer until 3 s; the others are answered at once.
    let t0 = Arc::new(Mutex::new(Instant::now()));
    let clock = Arc::clone(&t0);
    let server = TestServer::start(move |mut s| {
        if !read_head(&mut s) {
            return;
        }
        let start = *clock.lock().unwrap_or_else(PoisonError::into_inner);
        let since = start.elapsed();
        if since >= Duration::from_secs(1) && since < Duration::from_secs(3) {
            thread::sleep(Duration::from_secs(3) - since);
        }
        let _ = s.write_all(pod_answer("stalling", true).as_bytes());
    });
    let mut child = observe_command(&[
        "--url",
        &server.url(),
        "--rate",
        "50",
        "--duration",
        "5",
        "--timeout",
        "5",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    *t0.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    let spawned = Instant::now();
    // Each line with the time it arrived.
    let mut arrived = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        arrived.push((spawned.elapsed(), serde_json::from_str::<Value>(&line).unwrap()));
    }
    let status = child.wait().unwrap();
    let (_, last) = arrived.pop().expect("a summary");
    let s = &last["summary"];
    assert_eq!(status.code(), Some(0));
    // Open loop: every request was sent on time, stall or not.
    assert_eq!(s["requests"], 250, "{s}");
    assert_eq!(
        (s["ok"].as_u64(), s["unfinished"].as_u64()),
        (Some(250), Some(0)),
        "{s}"
    );
    for (_, line) in arrived.iter().filter(|(_, l)| l["t"].as_f64().unwrap().fract() == 0.0) {
        let sent = line["sent"].as_u64().unwrap();
        assert!((49..=51).contains(&sent), "sent {sent} in {line}");
    }
    // The line for the second in the middle of the stall came out on time
    // (well before the stall ended), with nothing answered and the
    // requests in flight.
    let (when, mid) = arrived.iter().find(|(_, l)| l["t"] == 2.0).expect("a line for t=2");
    assert!(*when < Duration::from_millis(2800), "t=2 written at {when:?}");
    assert!(mid["ok"].as_u64().unwrap() <= 5, "{mid}");
    assert!(mid["in_flight"].as_u64().unwrap() >= 45, "{mid}");
    // When the stall ends, the held requests end with latencies from their
    // due times: up to the 2 s they waited, not the time since they were
    // answered.
    let burst = arrived
        .iter()
        .map(|(_, l)| l)
        .max_by_key(|l| l["ok"].as_u64().unwrap())
        .unwrap();
    assert!(burst["ok"].as_u64().unwrap() >= 90, "{burst}");
    let max = burst["max_ms"].as_f64().unwrap();
    assert!(
        (1800.0..2600.0).contains(&max),
        "the first stalled request waited about 2 s: {burst}"
    );
    let p99 = s["p99_ms"].as_f64().unwrap();
    assert!(p99 >= 1500.0, "p99 over the run shows the stall: {s}");
    let p50 = s["p50_ms"].as_f64().unwrap();
    assert!(p50 < 100.0, "most requests were not stalled: {s}");
    let lateness = s["lateness_p99_ms"].as_f64().unwrap();
    assert!(lateness < 100.0, "the observer itself kept time: {s}");
}

#[test]
fn keepalive_reuses_connections_and_the_default_opens_one_per_request() {
    let server = TestServer::start(|mut s| {
        while read_head(&mut s) {
            if s.write_all(pod_answer("kept", false).as_bytes()).is_err() {
                return;
            }
        }
    });
    let run = observe(
        &["--url", &server.url(), "--rate", "20", "--duration", "1"],
        Duration::from_secs(20),
    );
    assert_eq!(run.summary["ok"], 20, "{}", run.describe());
    assert_eq!(server.accepted.load(Ordering::SeqCst), 20, "one connection per request");
    assert_eq!(run.summary["keepalive"], false);
    let before = server.accepted.load(Ordering::SeqCst);
    let run = observe(
        &["--url", &server.url(), "--rate", "20", "--duration", "1", "--keepalive"],
        Duration::from_secs(20),
    );
    assert_eq!(run.summary["ok"], 20, "{}", run.describe());
    let opened = server.accepted.load(Ordering::SeqCst) - before;
    assert!(
        (1..=3).contains(&opened),
        "--keepalive reused connections: {opened} opened"
    );
    assert_eq!(run.summary["pods"]["kept"]["requests"], 20);
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child with a valid signal.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// Waits for `child` up to `limit`; kills it after that.
fn wait_output(child: Child, limit: Duration) -> Output {
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let guard = thread::spawn(move || {
        if rx.recv_timeout(limit).is_err() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let out = child.wait_with_output().unwrap();
    let _ = tx.send(());
    let _ = guard.join();
    out
}

#[test]
fn sigterm_and_sigint_print_the_summary_at_once_and_slo_sets_the_exit_status() {
    // A target that never answers: SIGTERM must not wait for it.
    let held = Arc::new(Mutex::new(Vec::new()));
    let holder = Arc::clone(&held);
    let silent = TestServer::start(move |s| holder.lock().unwrap_or_else(PoisonError::into_inner).push(s));
    let child = observe_command(&["--url", &silent.url(), "--rate", "20", "--timeout", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(1500));
    let sent = Instant::now();
    signal(&child, libc::SIGTERM);
    let run = Run::from_output(wait_output(child, Duration::from_secs(10)));
    assert!(sent.elapsed() < Duration::from_secs(1), "took {:?}", sent.elapsed());
    assert_eq!(run.output.status.code(), Some(0), "{}", run.describe());
    let s = &run.summary;
    assert_eq!(s["ended_by"], "SIGTERM");
    let requests = s["requests"].as_u64().unwrap();
    assert!((20..=40).contains(&requests), "{s}");
    assert_eq!(s["unfinished"].as_u64(), Some(requests), "all still waiting: {s}");
    assert_eq!(s["availability"], Value::Null, "nothing finished");
    assert_eq!(run.lines[0]["t"], 1.0, "a line each second before the signal");

    // SIGINT (Ctrl-C) with an SLO that was missed: exit 1.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let child = observe_command(&["--url", &format!("http://{closed}/"), "--rate", "20", "--slo", "99"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(700));
    signal(&child, libc::SIGINT);
    let run = Run::from_output(wait_output(child, Duration::from_secs(10)));
    assert_eq!(run.output.status.code(), Some(1), "{}", run.describe());
    assert_eq!(run.summary["ended_by"], "SIGINT");
    assert_eq!(run.summary["slo_met"], false);
    assert!(run.errors("refused") > 0);

    // The SLO met: exit 0.
    let svc = Service::start(&[]);
    let url = format!("http://{}/", svc.addr);
    let run = observe(
        &["--url", &url, "--rate", "20", "--duration", "1", "--slo", "99.5"],
        Duration::from_secs(20),
    );
    assert_eq!(run.output.status.code(), Some(0), "{}", run.describe());
    assert_eq!(run.summary["slo_met"], true);
}

/// The observer as the Job runs it: from the scratch image, as 65532 with
/// a read-only root and no capabilities, reaching the service by a name
/// (here from the container's /etc/hosts; in a cluster from its DNS).
#[test]
#[ignore = "needs podman: scripts/test.sh runs it"]
fn the_image_observes_a_service_by_name_with_the_jobs_security_settings() {
    let image = crate::container::image();
    let _x = exclusive();
    let svc = Service::start(&[("HOSTNAME", "named-pod")]);
    let dir = crate::harness::temp_dir("observer-image");
    let url = format!("http://chaos-backend:{}/", svc.addr.port());
    let mut cmd = Command::new("podman");
    cmd.args([
        "run",
        "--rm",
        "--network",
        "host",
        "--add-host",
        "chaos-backend:127.0.0.1",
    ])
    .args([
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
    ])
    .args(["--user", "65532:65532", "--memory", "32m", "--memory-swap", "32m"])
    .args([image, "observe", "--url", &url, "--rate", "20", "--duration", "1"])
    .current_dir(&dir)
    .env(
        "CONTAINERS_CONF",
        crate::harness::repo().join("tests/podman/containers.conf"),
    );
    let run = Run::from_output(output_within(cmd, Duration::from_secs(60)));
    assert_eq!(run.output.status.code(), Some(0), "{}", run.describe());
    assert_eq!(run.summary["ok"], 20, "{}", run.describe());
    assert_eq!(run.summary["pods"]["named-pod"]["requests"], 20);
    let rss = run.summary["max_rss_mb"].as_f64().unwrap();
    assert!(rss < 16.0, "well inside the Job's 32Mi limit: {rss} MB");
}
