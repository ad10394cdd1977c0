//! The errors fault on `GET /` (issue 25), against the real binary, counted
//! by the client as a user sees it: status codes, resets (ECONNRESET),
//! closes (EOF before any byte of an answer) and stalls (nothing at all).

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{Service, exclusive, poll, request};

/// What one `GET /` on a new connection came to, for its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Status(u16),
    /// ECONNRESET.
    Reset,
    /// EOF before any byte of an answer.
    Closed,
    /// Nothing within the client's timeout.
    NoAnswer,
}

/// One `GET /` on a new connection, waiting at most `timeout` for the
/// first bytes of the answer.
fn user_get(addr: SocketAddr, timeout: Duration) -> Outcome {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n").expect("send");
    let mut buf = [0u8; 64];
    let mut got = 0;
    loop {
        match s.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Outcome::Closed,
            Ok(0) => panic!("EOF inside a status line: {:?}", String::from_utf8_lossy(&buf[..got])),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset && got == 0 => return Outcome::Reset,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) && got == 0 => {
                return Outcome::NoAnswer;
            }
            Err(e) => panic!("after {got} bytes: {e}"),
        }
        if got >= 12 {
            let line = String::from_utf8_lossy(&buf[..got]);
            return Outcome::Status(line[9..12].parse().unwrap_or_else(|_| panic!("status line {line:?}")));
        }
    }
}

/// `total` `GET /` from `clients` threads at once, each on a new
/// connection; the outcomes counted.
fn user_traffic(addr: SocketAddr, total: usize, clients: usize, timeout: Duration) -> BTreeMap<Outcome, usize> {
    let counts = Arc::new(Mutex::new(BTreeMap::new()));
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let counts = Arc::clone(&counts);
            let mine = total / clients + usize::from(c < total % clients);
            std::thread::spawn(move || {
                for _ in 0..mine {
                    let o = user_get(addr, timeout);
                    *counts.lock().unwrap().entry(o).or_insert(0) += 1;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    Arc::try_unwrap(counts).unwrap().into_inner().unwrap()
}

/// Starts an errors fault; a slot that the fault before is still giving
/// back (its end and its clean-up are a moment apart) is waited for.
fn start_errors(svc: &Service, query: &str) {
    let started = poll(Duration::from_secs(2), Duration::from_millis(20), || {
        let r = svc.post(&format!("/fault/errors?{query}"));
        (r.status != 429).then_some(r)
    });
    let r = started.unwrap_or_else(|| panic!("{query}: refused for 2 s"));
    assert_eq!(r.status, 202, "{query}: {}", r.body);
}

fn stop_errors(svc: &Service) {
    let r = request(svc.addr, "DELETE", "/fault/errors", &[], "");
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("stopped")));
}

fn faulted_metric(svc: &Service, mode: &str) -> f64 {
    svc.metric(&format!("chaos_faulted_requests_total{{mode=\"{mode}\"}}"))
}

/// Out of 1,000 `GET /` from 10 clients at once, exactly `percent` of
/// every 100 fail as the mode says, as counted by the clients (the order
/// of concurrent requests is the order workers take them; the count over
/// the whole run is exact whatever it is), and by the service's counters.
#[test]
fn percent_is_exact_over_1000_requests_in_every_mode() {
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let patient = Duration::from_secs(5);
    let cases: [(&str, u64, Outcome, Duration); 4] = [
        ("mode=status&code=504", 20, Outcome::Status(504), patient),
        ("mode=reset", 7, Outcome::Reset, patient),
        ("mode=close", 13, Outcome::Closed, patient),
        // A stalled request holds its client until it gives up: 1.5 s.
        ("mode=stall", 5, Outcome::NoAnswer, Duration::from_millis(1500)),
    ];
    for (mode, percent, failure, timeout) in cases {
        start_errors(&svc, &format!("{mode}&percent={percent}&duration=600"));
        let counts = user_traffic(svc.addr, 1000, 10, timeout);
        let faulted = 10 * percent as usize;
        let expected = BTreeMap::from([(failure, faulted), (Outcome::Status(200), 1000 - faulted)]);
        assert_eq!(counts, expected, "{mode} at {percent}%");
        stop_errors(&svc);
        let label = mode.trim_start_matches("mode=").split('&').next().unwrap();
        assert_eq!(faulted_metric(&svc, label), faulted as f64, "{mode}");
    }
    assert_eq!(
        svc.metric("http_requests_total{code=\"504\",endpoint=\"/\",method=\"GET\"}"),
        200.0,
        "status answers are counted by code"
    );
    // 4,000 - 200 (504) - 70 - 130 - 50 (no answer, no code)
    assert_eq!(
        svc.metric("http_requests_total{code=\"200\",endpoint=\"/\",method=\"GET\"}"),
        3550.0,
        "resets, closes and stalls have no code"
    );
}

/// A status answer names the fault and, on 503 and 429, says how long the
/// fault has left; the default is 503 for every `GET /`.
#[test]
fn a_status_error_is_json_naming_the_fault() {
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    start_errors(&svc, "duration=30");
    let r = svc.get("/");
    assert_eq!(r.status, 503, "{}", r.body);
    let body = r.json();
    assert_eq!(
        (body["fault"].as_str(), body["code"].as_u64()),
        (Some("errors"), Some(503))
    );
    assert!(body["error"].as_str().unwrap().contains("errors fault"), "{body}");
    let retry: u64 = r.header("Retry-After").expect("Retry-After").parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    let listing = svc.get("/chaos").json();
    assert_eq!(listing["faults"][0]["detail"], "percent=100 mode=status code=503");
    for bad in ["percent=0", "code=404", "mode=drop", "mode=stall&code=500"] {
        let r = svc.post(&format!("/fault/errors?{bad}"));
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
}

/// With every `GET /` failing in each mode, the probes (on both ports),
/// `/metrics`, `/openapi.json` and the chaos endpoints answer at once as
/// before. Under stalls `/ready` fails on its p95: a stall is no healthy
/// request (it counts as slower than any threshold), while fast errors,
/// resets and closes leave it ready.
#[test]
fn probes_and_every_other_endpoint_are_untouched_in_every_mode() {
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0"), ("LATENCY_WINDOW_SECONDS", "60")]);
    let probe = svc.probe_addr.expect("a probe port");
    for mode in ["status", "reset", "close", "stall"] {
        start_errors(&svc, &format!("mode={mode}&duration=600"));
        let failure = user_get(svc.addr, Duration::from_millis(300));
        assert_ne!(failure, Outcome::Status(200), "{mode}: GET / fails");
        for _ in 0..20 {
            let _ = user_get(svc.addr, Duration::from_millis(20));
        }
        for (addr, path) in [
            (svc.addr, "/health"),
            (svc.addr, "/metrics"),
            (svc.addr, "/openapi.json"),
            (svc.addr, "/chaos"),
            (probe, "/health"),
        ] {
            let t = Instant::now();
            let r = request(addr, "GET", path, &[], "");
            assert_eq!(r.status, 200, "{mode}: {path} on {addr}: {}", r.body);
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "{mode}: {path} took {:?}",
                t.elapsed()
            );
        }
        for addr in [svc.addr, probe] {
            let r = request(addr, "GET", "/ready", &[], "");
            if mode == "stall" {
                assert_eq!(r.status, 503, "stalls fail readiness: {}", r.body);
                assert!(r.body.contains("p95 latency"), "{}", r.body);
                // A floor, not a time no request took (was "282158.0 ms").
                assert!(r.body.contains("get no answer"), "{}", r.body);
            } else {
                assert_eq!(r.status, 200, "{mode}: {}", r.body);
            }
        }
        stop_errors(&svc);
        assert_eq!(svc.get("/").status, 200, "{mode}: over once stopped");
    }
}

/// A stall ends with the fault: on time, on `DELETE`, on `/chaos/stop` and
/// on SIGTERM, every stalled client gets a clean close (no answer) at once,
/// and a client that sent `Connection: close` stalls too.
#[test]
fn a_stall_ends_at_once_when_the_fault_ends_or_is_stopped() {
    let mut svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let stalled = |svc: &Service, n: usize| -> Vec<std::thread::JoinHandle<(Outcome, Instant)>> {
        (0..n)
            .map(|i| {
                let addr = svc.addr;
                std::thread::spawn(move || {
                    let o = if i % 2 == 0 {
                        user_get(addr, Duration::from_secs(30))
                    } else {
                        let mut s = TcpStream::connect(addr).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                            .unwrap();
                        let mut b = [0u8; 16];
                        match s.read(&mut b) {
                            Ok(0) => Outcome::Closed,
                            other => panic!("{other:?}"),
                        }
                    };
                    (o, Instant::now())
                })
            })
            .collect()
    };
    let ended_within = |clients: Vec<std::thread::JoinHandle<(Outcome, Instant)>>, from: Instant| {
        for c in clients {
            let (o, at) = c.join().unwrap();
            assert_eq!(o, Outcome::Closed);
            let after = at.saturating_duration_since(from);
            assert!(after < Duration::from_secs(1), "closed {after:?} after the end");
        }
    };
    // On time.
    start_errors(&svc, "mode=stall&duration=2");
    let started = Instant::now();
    let clients = stalled(&svc, 4);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(svc.get("/health").status, 200);
    ended_within(clients, started + Duration::from_secs(2));
    // On DELETE and on POST /chaos/stop.
    for stop in ["DELETE /fault/errors", "POST /chaos/stop"] {
        start_errors(&svc, "mode=stall&duration=600");
        let clients = stalled(&svc, 6);
        std::thread::sleep(Duration::from_millis(500));
        let (method, path) = stop.split_once(' ').unwrap();
        let t = Instant::now();
        assert_eq!(request(svc.addr, method, path, &[], "").status, 200);
        ended_within(clients, t);
    }
    // On SIGTERM: the stop ends the stall, and the service exits.
    start_errors(&svc, "mode=stall&duration=600");
    let clients = stalled(&svc, 4);
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    svc.signal(libc::SIGTERM);
    ended_within(clients, t);
    let status = svc.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status:?}");
}

/// 10,000 faulted `GET /` (2,500 per mode; stalled clients give up after
/// 20 ms) leave no thread, fd or memory behind once the traffic is over.
#[test]
fn ten_thousand_faulted_requests_leave_nothing_behind() {
    let _x = exclusive();
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    // Warm up: the pools and the allocator's arenas as steady traffic has them.
    user_traffic(svc.addr, 500, 10, Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(6));
    let (threads, fds) = svc.threads_and_fds();
    let rss = svc.rss_bytes();
    for (mode, timeout) in [
        ("status&code=500", Duration::from_secs(5)),
        ("reset", Duration::from_secs(5)),
        ("close", Duration::from_secs(5)),
        ("stall", Duration::from_millis(20)),
    ] {
        start_errors(&svc, &format!("mode={mode}&duration=600"));
        let counts = user_traffic(svc.addr, 2500, 10, timeout);
        assert_eq!(counts.values().sum::<usize>(), 2500);
        assert_eq!(counts.len(), 1, "{mode}: every one faulted: {counts:?}");
        stop_errors(&svc);
    }
    let mode_total: f64 = ["status", "reset", "close", "stall"]
        .iter()
        .map(|m| faulted_metric(&svc, m))
        .sum();
    assert_eq!(mode_total, 10_000.0);
    // Idle connection threads and renewed workers end within seconds.
    let back = poll(Duration::from_secs(20), Duration::from_millis(250), || {
        let (t, f) = svc.threads_and_fds();
        (t <= threads + 1 && f <= fds + 1).then_some((t, f))
    });
    assert!(
        back.is_some(),
        "threads {threads} -> {:?} (threads, fds; fds were {fds})",
        svc.threads_and_fds()
    );
    crate::harness::assert_rss_back(&svc, rss, 0, "after 10,000 faulted requests");
    assert_eq!(svc.get("/").status, 200);
}

/// With a latency fault running too, as documented: a status error is held
/// by the latency as well (slow errors), a reset comes at once, and the
/// requests the errors fault spares get the latency alone.
#[test]
fn a_latency_fault_and_an_errors_fault_run_together() {
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0"), ("MAX_CONCURRENT_CHAOS", "3")]);
    let r = svc.post("/load/latency?ms=2000&duration=120");
    assert_eq!(r.status, 202, "{}", r.body);
    start_errors(&svc, "percent=50&code=502&duration=120");
    let timed = |timeout: Duration| {
        let t = Instant::now();
        (user_get(svc.addr, timeout), t.elapsed())
    };
    let patient = Duration::from_secs(10);
    // At 50%, every second request fails: the 2nd, the 4th ...
    let (spared, spared_took) = timed(patient);
    let (failed, failed_took) = timed(patient);
    assert_eq!((spared, failed), (Outcome::Status(200), Outcome::Status(502)));
    assert!(spared_took >= Duration::from_millis(1950), "{spared_took:?}");
    assert!(
        failed_took >= Duration::from_millis(1950),
        "a slow error: {failed_took:?}"
    );
    assert_eq!(svc.get("/chaos").json()["active"], 2);
    start_errors(&svc, "percent=100&mode=reset&duration=120");
    let (reset, reset_took) = timed(patient);
    assert_eq!(reset, Outcome::Reset);
    assert!(
        reset_took < Duration::from_millis(1500),
        "a reset is not held: {reset_took:?}"
    );
}
