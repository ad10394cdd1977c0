//! The ordered stop, against the real binary: from the signal on, no fault
//! starts (503 naming the shutdown, stops still answer); the faults that
//! run are stopped and undone; the answers they held are sent; the workers
//! finish what was queued; the process exits 0. Each case with no delay
//! and with `SHUTDOWN_DELAY_SECONDS`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Service, describe, exclusive, files, poll, request, temp_dir, try_request};

/// Every route and method that starts a fault (the `POST`s of the route
/// table but `/chaos/stop`), with a query each accepts.
const STARTS: &[&str] = &[
    "/load/cpu?duration=30&millicores=10",
    "/load/memory?mb=1",
    "/load/disk?mb=1",
    "/load/latency?ms=100&duration=30",
    "/fault/liveness?duration=30",
    "/fault/readiness?duration=30",
    "/crash?mode=exit&code=3",
];

/// The events written, by name, in order.
fn names(svc: &Service) -> Vec<String> {
    svc.events()
        .iter()
        .map(|e| e["event"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// No fault started after the stop began, and every fault that started
/// finished (was stopped and undone) before the process ended.
fn assert_every_fault_ended_and_none_started_after_the_signal(svc: &Service) {
    let events = svc.events();
    let signal_at = events
        .iter()
        .position(|e| e["event"] == "SHUTDOWN_STARTED")
        .expect("SHUTDOWN_STARTED");
    let started = |e: &&Value| e["event"] == "CHAOS_STARTED";
    let late: Vec<&Value> = events[signal_at..].iter().filter(started).collect();
    assert!(
        late.is_empty(),
        "faults started after the signal: {late:?}\n{}",
        svc.stderr()
    );
    let starts = events.iter().filter(started).count();
    let ends = events.iter().filter(|e| e["event"] == "CHAOS_FINISHED").count();
    assert!(ends >= starts, "{starts} started, {ends} finished:\n{}", svc.stderr());
    let finished = events.last().expect("events");
    assert_eq!(finished["event"], "SHUTDOWN_FINISHED", "{}", svc.stderr());
    assert_eq!(finished["unwritten_answers"], 0, "{finished}");
}

/// A request whose answer is held by a fault, on a connection of its own;
/// the thread returns the whole raw answer once the server closes.
fn held_request(svc: &Service, target: &str) -> std::thread::JoinHandle<std::io::Result<String>> {
    held_request_to(svc.addr, target)
}

/// `held_request` to `addr` (the probe port's, say).
fn held_request_to(addr: std::net::SocketAddr, target: &str) -> std::thread::JoinHandle<std::io::Result<String>> {
    let head = format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.write_all(head.as_bytes())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        Ok(String::from_utf8_lossy(&raw).into_owned())
    })
}

/// Whether `raw` is one complete HTTP answer: a status line, headers and
/// as many body bytes as `Content-Length` says.
fn complete(raw: &str) -> bool {
    let Some((head, body)) = raw.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.trim().parse::<usize>().ok());
    head.starts_with("HTTP/1.1 ") && length == Some(body.len())
}

fn held_answers_are_sent_before_the_exit(delay: u64) {
    let mut svc = Service::start(&[
        ("SHUTDOWN_DELAY_SECONDS", &delay.to_string()),
        ("CHAOS_COOLDOWN_SECONDS", "0"),
        ("MAX_CONCURRENT_CHAOS", "2"),
    ]);
    assert_eq!(svc.post("/fault/liveness?mode=hang&duration=120").status, 202);
    assert_eq!(svc.post("/load/latency?ms=60000&duration=120").status, 202);
    let health = held_request(&svc, "/health");
    let root = held_request(&svc, "/");
    // The probe port holds a hang's answer too, on its own thread.
    let probe = held_request_to(svc.probe_addr.expect("the probe port"), "/health");
    // All are answered (and counted), then held.
    let held = poll(Duration::from_secs(5), Duration::from_millis(20), || {
        let counted = |s: &str| crate::harness::metric_value(&svc.get("/metrics").body, s).unwrap_or(0.0);
        let h = counted("http_requests_total{code=\"500\",endpoint=\"/health\",method=\"GET\"}");
        let r = counted("http_requests_total{code=\"200\",endpoint=\"/\",method=\"GET\"}");
        (h >= 2.0 && r >= 1.0).then_some(())
    });
    assert!(
        held.is_some(),
        "the held requests were not answered:\n{}",
        svc.get("/metrics").body
    );
    let sent = Instant::now();
    svc.signal(libc::SIGTERM);
    let status = svc
        .wait_exit(Duration::from_secs(delay + 10))
        .expect("exits after the delay");
    assert_eq!(status.code(), Some(0), "{}", describe(status));
    for (what, client) in [("/health", health), ("/", root), ("/health on the probe port", probe)] {
        let raw = client.join().unwrap().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            complete(&raw),
            "{what}: not a complete answer: {raw:?}\n{}",
            svc.stderr()
        );
    }
    assert!(sent.elapsed() < Duration::from_secs(delay + 10), "{:?}", sent.elapsed());
    assert_every_fault_ended_and_none_started_after_the_signal(&svc);
}

/// A `/health` held by a liveness hang and a `GET /` held by a 60 s
/// latency fault were closed without an answer when the process exited;
/// both are released by the stop, and written before the exit. So is a
/// `/health` the probe port holds (once it held them at all: 30 of 30
/// closed unanswered with no delay, as the drain did not wait for them).
#[test]
fn held_answers_are_sent_before_the_exit_with_no_delay() {
    held_answers_are_sent_before_the_exit(0);
}

#[test]
fn held_answers_are_sent_before_the_exit_with_a_delay() {
    held_answers_are_sent_before_the_exit(2);
}

/// Queues `target` behind a request that holds the service's one worker
/// (a 512 MiB disk fill without a ramp: its answer waits for the writing,
/// fsynced, on the worker; a leak made at once does not hold a worker),
/// sends SIGTERM while it waits, and returns `target`'s
/// answer. The stop cancels the fill and removes its file.
fn queued_at_the_signal(svc: &Service, target: &str) -> crate::harness::Response {
    let addr = svc.addr;
    let blocker =
        std::thread::spawn(move || try_request(addr, "POST", "/load/disk?mb=512", &[], "", Duration::from_secs(30)));
    // The fill is being written, and the worker waits for it.
    assert_eq!(svc.event_count("CHAOS_STARTED", 1), 1, "{}", svc.stderr());
    let target = target.to_string();
    let queued = std::thread::spawn(move || try_request(addr, "POST", &target, &[], "", Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(100));
    svc.signal(libc::SIGTERM);
    let answer = queued.join().unwrap().expect("the queued request is answered");
    let blocked = blocker.join().unwrap().expect("the fill is answered");
    assert!(blocked.status >= 200, "the fill: {} {}", blocked.status, blocked.body);
    answer
}

fn assert_refused_for_the_shutdown(r: &crate::harness::Response, what: &str) {
    assert_eq!(r.status, 503, "{what}: {}", r.body);
    let error = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("shutting down") && error.contains("SIGTERM"),
        "{what}: {error}"
    );
    assert_eq!(r.json()["reason"], "shutting_down", "{what}");
}

/// A ramped disk fill queued behind other requests when SIGTERM came
/// started after the stop and left its file on disk (5 of 5 tries): now it
/// is refused, and nothing is written.
#[test]
fn a_disk_fill_queued_at_sigterm_never_starts_and_leaves_no_file() {
    let _x = exclusive();
    let fill_dir = temp_dir("queued-fill");
    let mut svc = Service::start(&[
        ("WORKERS", "1"),
        ("CHAOS_COOLDOWN_SECONDS", "0"),
        ("MAX_CONCURRENT_CHAOS", "2"),
        ("DISK_FILL_DIR", fill_dir.to_str().unwrap()),
    ]);
    let r = queued_at_the_signal(&svc, "/load/disk?mb=64&ramp=5");
    assert_refused_for_the_shutdown(&r, "queued disk fill");
    let status = svc.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", describe(status));
    assert_no_fill_left(&fill_dir);
    std::thread::sleep(Duration::from_millis(300));
    assert_no_fill_left(&fill_dir);
    assert_every_fault_ended_and_none_started_after_the_signal(&svc);
}

fn assert_no_fill_left(dir: &Path) {
    let left: Vec<String> = files(dir)
        .into_iter()
        .filter(|f| f.starts_with("chaos-disk-fill"))
        .collect();
    assert!(left.is_empty(), "left in {}: {left:?}", dir.display());
}

#[test]
fn a_cpu_load_queued_at_sigterm_never_starts() {
    let _x = exclusive();
    let mut svc = Service::start(&[
        ("WORKERS", "1"),
        ("CHAOS_COOLDOWN_SECONDS", "0"),
        ("MAX_CONCURRENT_CHAOS", "2"),
    ]);
    let r = queued_at_the_signal(&svc, "/load/cpu?duration=30");
    assert_refused_for_the_shutdown(&r, "queued CPU load");
    let status = svc.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", describe(status));
    assert_every_fault_ended_and_none_started_after_the_signal(&svc);
}

/// From SIGTERM on, during the delay: every start is 503 naming the
/// shutdown (after the token, which is checked first); the faults that
/// ran are already stopped and undone (no file, no load, nothing listed);
/// stops and reads still answer.
#[test]
fn during_the_delay_starts_are_refused_faults_are_gone_and_stops_answer() {
    let fill_dir = temp_dir("delay-fill");
    let mut svc = Service::start(&[
        ("SHUTDOWN_DELAY_SECONDS", "30"),
        ("CHAOS_COOLDOWN_SECONDS", "0"),
        ("MAX_CONCURRENT_CHAOS", "4"),
        ("CHAOS_TOKEN", "t0ken"),
        ("DISK_FILL_DIR", fill_dir.to_str().unwrap()),
    ]);
    let auth = [("Authorization", "Bearer t0ken")];
    let post = |target: &str| request(svc.addr, "POST", target, &auth, "");
    assert_eq!(post("/load/disk?mb=2").status, 200);
    assert_eq!(post("/load/cpu?duration=60&millicores=200").status, 202);
    assert_eq!(post("/load/memory?mb=8").status, 200);
    assert_eq!(post("/fault/readiness?duration=60").status, 202);
    assert_eq!(files(&fill_dir).len(), 1);
    svc.signal(libc::SIGTERM);
    // Stopped and undone: nothing listed, nothing leaked, no file.
    let gone = poll(Duration::from_secs(5), Duration::from_millis(20), || {
        let listed = svc.get("/chaos").json()["faults"].as_array().map_or(1, Vec::len);
        let fills = files(&fill_dir).len();
        (listed == 0 && fills == 0 && svc.metric("chaos_leaked_bytes") == 0.0).then_some(())
    });
    assert!(gone.is_some(), "{}\n{:?}", svc.get("/chaos").body, files(&fill_dir));
    let cpu = svc.cpu_time();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        svc.cpu_time() - cpu < Duration::from_millis(100),
        "a load still runs: {:?}",
        svc.cpu_time() - cpu
    );
    for target in STARTS {
        assert_eq!(
            request(svc.addr, "POST", target, &[], "").status,
            401,
            "{target}: token first"
        );
        assert_refused_for_the_shutdown(&post(target), target);
    }
    assert_no_fill_left(&fill_dir);
    assert_eq!(
        svc.metric("chaos_actions_total{action=\"cpu\",outcome=\"shutting_down\"}"),
        1.0
    );
    for (method, target) in [
        ("DELETE", "/load/cpu"),
        ("DELETE", "/load/disk"),
        ("DELETE", "/fault/liveness"),
        ("POST", "/chaos/stop"),
    ] {
        assert_eq!(
            request(svc.addr, method, target, &auth, "").status,
            200,
            "{method} {target}"
        );
    }
    assert_eq!(svc.get("/health").status, 200);
    assert_eq!(svc.get("/ready").status, 503);
    let events = names(&svc);
    let signal_at = events.iter().position(|n| n == "SHUTDOWN_STARTED").unwrap();
    let finished = events[signal_at..].iter().filter(|n| *n == "CHAOS_FINISHED").count();
    assert_eq!(finished, 4, "each fault that ran ended with the stop: {events:?}");
    svc.signal(libc::SIGTERM);
    let status = svc
        .wait_exit(Duration::from_secs(5))
        .expect("a second signal skips the delay");
    assert_eq!(status.code(), Some(0), "{}", describe(status));
    assert_every_fault_ended_and_none_started_after_the_signal(&svc);
    assert_eq!(names(&svc).iter().filter(|n| *n == "SHUTDOWN_STARTED").count(), 1);
}
