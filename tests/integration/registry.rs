//! The fault registry: stop means stop, released memory leaves
//! RSS, a ramp is size-checked up front, one crash at a time, and a leak
//! holds its guardrail slot until it is released.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    Service, assert_rss_back, describe, exclusive, files, metric_value, poll, race, request, temp_dir, try_request,
};

const MIB: u64 = 1 << 20;

fn delete(svc: &Service, path: &str) -> crate::harness::Response {
    request(svc.addr, "DELETE", path, &[], "")
}

fn active(svc: &Service) -> u64 {
    svc.get("/chaos").json()["active"].as_u64().expect("active is a number")
}

fn leaked(svc: &Service) -> u64 {
    svc.metric("chaos_leaked_bytes") as u64
}

/// RSS after some traffic, so that thread stacks and buffers of the first
/// requests are not counted as leak.
fn warm_baseline(svc: &Service) -> u64 {
    for _ in 0..20 {
        svc.get("/metrics");
        svc.get("/chaos");
        svc.get("/ready");
    }
    svc.rss_bytes()
}

/// A stopped ramp stops growing, and gives its slot back.
#[test]
fn a_stopped_ramp_stays_stopped_and_frees_its_slot() {
    let _x = exclusive();
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0"), ("MAX_CONCURRENT_CHAOS", "1")]);
    let baseline = warm_baseline(&svc);
    for stop in ["POST /chaos/stop", "DELETE /load/memory"] {
        let r = svc.post("/load/memory?mb=60&ramp=3");
        assert_eq!(r.status, 202, "{}", r.body);
        thread::sleep(Duration::from_millis(400));
        assert!(leaked(&svc) > 0, "the ramp has begun");
        let r = match stop {
            "POST /chaos/stop" => svc.post("/chaos/stop"),
            _ => delete(&svc, "/load/memory"),
        };
        assert_eq!(r.status, 200, "{stop}: {}", r.body);
        // Answered means stopped: nothing is added later, nothing listed.
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            assert_eq!(leaked(&svc), 0, "{stop}: the ramp came back");
            assert_eq!(active(&svc), 0, "{stop}: still listed");
            thread::sleep(Duration::from_millis(100));
        }
        assert_rss_back(&svc, baseline, 60 * MIB, stop);
    }
    // An hour-long ramp gives its slot back when stopped.
    assert_eq!(svc.post("/load/memory?mb=1&ramp=3600").status, 202);
    assert_eq!(svc.post("/load/cpu?duration=1&millicores=10").status, 429, "one slot");
    assert_eq!(svc.post("/chaos/stop").status, 200);
    let r = svc.post("/load/cpu?duration=1&millicores=10");
    assert_eq!(r.status, 202, "the slot is free after the stop: {}", r.body);
}

/// A ramp's total is checked before it starts, like an at-once leak.
#[test]
fn a_ramp_beyond_memory_plus_swap_is_refused_up_front() {
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let r = svc.post("/load/memory?mb=1048576&ramp=3600");
    assert_eq!(r.status, 507, "{}", r.body);
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("1048576 MiB") && error.contains("memory plus swap"),
        "{error}"
    );
    assert_eq!(active(&svc), 0);
    assert_eq!(leaked(&svc), 0);
    assert_eq!(svc.post("/load/memory?mb=1").status, 200, "nothing holds the slot");
}

/// Of many parallel crash requests exactly one is accepted, the
/// others get 409, and the marker records the accepted mode.
#[test]
fn parallel_crashes_accept_exactly_one() {
    let _x = exclusive();
    let state = temp_dir("crash-race");
    let mut svc = Service::start_in(&state, &[("WORKERS", "8")]);
    let modes = ["mode=exit&code=3", "mode=exit&code=4", "mode=kill", "mode=abort"];
    // A client whose connection the ending process cuts gets no answer.
    let answers: Vec<_> = race(svc.addr, 40, "POST", |i| format!("/crash?{}", modes[i % modes.len()]))
        .into_iter()
        .filter_map(Result::ok)
        .collect();
    let accepted: Vec<Value> = answers.iter().filter(|r| r.status == 202).map(|r| r.json()).collect();
    assert_eq!(accepted.len(), 1, "exactly one crash accepted: {accepted:?}");
    for r in answers.iter().filter(|r| r.status != 202) {
        assert_eq!(r.status, 409, "{}", r.body);
        let error = r.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains("crash") && error.contains("in progress"), "{error}");
    }
    let mode = accepted[0]["mode"].as_str().unwrap().to_string();
    let expected = match (mode.as_str(), accepted[0]["exit_code"].as_u64()) {
        ("exit", Some(code)) => format!("exit code {code}"),
        ("kill", _) => "signal 9".to_string(),
        ("abort", _) => "signal 6".to_string(),
        other => panic!("unexpected accepted crash {other:?}"),
    };
    let status = svc.wait_exit(Duration::from_secs(10)).expect("the process ends");
    assert_eq!(describe(status), expected, "it ends as the accepted request said");
    drop(svc);
    let svc = Service::start_in(&state, &[]);
    // The harness hands over the address before the line reaches events().
    assert_eq!(svc.event_count("POD_STARTED", 1), 1);
    let started = svc
        .events()
        .into_iter()
        .find(|e| e["event"] == "POD_STARTED")
        .expect("POD_STARTED");
    assert_eq!(started["crash_mode"], mode.as_str(), "{started}");
}

/// A leak is a running fault until it is released, and holds its
/// guardrail slot that long; GET /chaos and the metrics agree.
#[test]
fn a_leak_holds_its_slot_until_released() {
    let _x = exclusive();
    let svc = Service::start(&[
        ("CHAOS_COOLDOWN_SECONDS", "0"),
        ("MAX_CONCURRENT_CHAOS", "1"),
        ("WORKERS", "8"),
    ]);
    let n = 100;
    let answers: Vec<_> = race(svc.addr, n, "POST", |_| "/load/memory?mb=10".to_string())
        .into_iter()
        .map(|r| r.expect("every racing client gets an answer"))
        .collect();
    let accepted = answers.iter().filter(|r| r.status == 200).count();
    let refused = answers.iter().filter(|r| r.status == 429).count();
    assert_eq!((accepted, refused), (1, n - 1), "exactly one leak accepted");
    let listing = svc.get("/chaos").json();
    assert_eq!(listing["active"], 1, "{listing}");
    assert_eq!(listing["faults"][0]["fault"], "memory", "{listing}");
    let metrics = svc.get("/metrics").body;
    assert_eq!(
        metric_value(&metrics, "chaos_fault_active{fault=\"memory\"}"),
        Some(1.0)
    );
    assert_eq!(metric_value(&metrics, "chaos_leaked_bytes"), Some((10 * MIB) as f64));
    assert_eq!(
        svc.post("/load/memory?mb=1").status,
        429,
        "still held after the allocation"
    );
    assert_eq!(delete(&svc, "/load/memory").status, 200);
    assert_eq!(active(&svc), 0);
    let metrics = svc.get("/metrics").body;
    assert_eq!(
        metric_value(&metrics, "chaos_fault_active{fault=\"memory\"}"),
        Some(0.0)
    );
    assert_eq!(metric_value(&metrics, "chaos_leaked_bytes"), Some(0.0));
    assert_eq!(svc.post("/load/memory?mb=1").status, 200, "released: the slot is free");
}

/// One leak pattern, released twice: the second release runs after glibc
/// would have raised its mmap threshold. Each time the leak is first seen
/// resident (for a hold, before it ends), then seen leave RSS.
fn released_memory_leaves_rss(pattern: &str) {
    let _x = exclusive();
    let svc = Service::start(&[
        ("CHAOS_COOLDOWN_SECONDS", "0"),
        ("MAX_CONCURRENT_CHAOS", "64"),
        ("WORKERS", "4"),
    ]);
    let baseline = warm_baseline(&svc);
    for round in ["first release", "later release"] {
        let what = format!("{pattern}, {round}");
        let resident = |total: u64| assert_rss_grew(&svc, baseline, total, &what);
        let total = match pattern {
            "at once" => {
                assert_eq!(svc.post("/load/memory?mb=24").status, 200);
                resident(24 * MIB);
                24 * MIB
            }
            "ramp" => {
                assert_eq!(svc.post("/load/memory?mb=40&ramp=1").status, 202);
                let done = poll(Duration::from_secs(5), Duration::from_millis(50), || {
                    (leaked(&svc) == 40 * MIB).then_some(())
                });
                assert!(done.is_some(), "the ramp completes");
                resident(40 * MIB);
                40 * MIB
            }
            "many small" => {
                for _ in 0..48 {
                    assert_eq!(svc.post("/load/memory?mb=1").status, 200);
                }
                resident(48 * MIB);
                48 * MIB
            }
            "hold" => {
                // Answered once made; held for a second from then.
                assert_eq!(svc.post("/load/memory?mb=24&hold=1").status, 200);
                resident(24 * MIB);
                assert_eq!(leaked(&svc), 24 * MIB);
                let freed = poll(Duration::from_secs(4), Duration::from_millis(50), || {
                    (leaked(&svc) == 0).then_some(())
                });
                assert!(freed.is_some(), "the hold ends by itself");
                24 * MIB
            }
            other => panic!("unknown pattern {other}"),
        };
        if pattern != "hold" {
            let r = delete(&svc, "/load/memory");
            assert_eq!(r.json()["released_mb"].as_u64(), Some(total / MIB), "{}", r.body);
        }
        assert_eq!(leaked(&svc), 0);
        assert_rss_back(&svc, baseline, total, &what);
    }
}

/// A leak of `total` bytes is resident: RSS is at least the baseline plus
/// 90% of it.
fn assert_rss_grew(svc: &Service, baseline: u64, total: u64, what: &str) {
    let rss = svc.rss_bytes();
    assert!(
        rss >= baseline + total * 9 / 10,
        "{what}: RSS {} MiB after a {} MiB leak, less than the baseline {} MiB plus 90%",
        rss / MIB,
        total / MIB,
        baseline / MIB
    );
}

#[test]
fn released_memory_leaves_rss_at_once() {
    released_memory_leaves_rss("at once");
}

#[test]
fn released_memory_leaves_rss_ramp() {
    released_memory_leaves_rss("ramp");
}

#[test]
fn released_memory_leaves_rss_many_small() {
    released_memory_leaves_rss("many small");
}

#[test]
fn released_memory_leaves_rss_hold() {
    released_memory_leaves_rss("hold");
}

/// A small seeded generator (xorshift64*): the sequence test must be
/// replayable from the seed it prints, without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number from `lo` to `hi`, both included.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Prints the seed when the test fails, so the run can be replayed with
/// CHAOS_TEST_SEED=<seed>.
struct SeedNote(u64);

impl Drop for SeedNote {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "random sequence seed: {} (replay: CHAOS_TEST_SEED={} cargo test --test integration random_)",
                self.0, self.0
            );
        }
    }
}

/// Counts a client as finished when dropped, however it ends.
struct Finished<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One random action against the service; what it did, for the failure log.
fn random_action(addr: std::net::SocketAddr, rng: &mut Rng) -> String {
    let d = rng.range(1, 4);
    let (method, target) = match rng.range(0, 12) {
        0 => (
            "POST",
            format!("/load/cpu?duration={d}&millicores={}", rng.range(10, 300)),
        ),
        1 | 2 => {
            let mut t = format!("/load/memory?mb={}", rng.range(1, 24));
            if rng.range(0, 1) == 1 {
                t.push_str(&format!("&ramp={}", rng.range(1, 3)));
            }
            if rng.range(0, 2) == 2 {
                t.push_str(&format!("&hold={}", rng.range(1, 2)));
            }
            ("POST", t)
        }
        3 => (
            "POST",
            format!(
                "/fault/liveness?mode={}&duration={d}",
                ["fail", "hang"][rng.range(0, 1) as usize]
            ),
        ),
        4 => ("POST", format!("/fault/readiness?duration={d}")),
        5 => ("POST", format!("/load/latency?ms={}&duration={d}", rng.range(1, 900))),
        6 => ("DELETE", "/load/cpu".to_string()),
        7 => ("DELETE", "/load/memory".to_string()),
        8 => ("DELETE", "/fault/liveness".to_string()),
        9 => ("DELETE", "/fault/readiness".to_string()),
        10 => ("DELETE", "/load/latency".to_string()),
        11 => {
            let mut t = format!("/load/disk?mb={}", rng.range(1, 8));
            if rng.range(0, 1) == 1 {
                t.push_str(&format!("&ramp={}", rng.range(1, 3)));
            }
            ("POST", t)
        }
        _ => ("DELETE", "/load/disk".to_string()),
    };
    let r = request(addr, method, &target, &[], "");
    // 409: a leak or a disk fill stopped by a DELETE or stop of another
    // client while it was being made, or a second disk fill.
    let expected: &[u16] = if method == "DELETE" {
        &[200]
    } else {
        &[200, 202, 409, 429]
    };
    assert!(
        expected.contains(&r.status),
        "{method} {target}: unexpected {} {}",
        r.status,
        r.body
    );
    if r.status == 409 {
        let why: String = r.body.chars().take(160).collect();
        return format!("{method} {target} -> 409 {why}");
    }
    format!("{method} {target} -> {}", r.status)
}

/// Random starts, stops and DELETEs across every fault, cooldown 0; after
/// each POST /chaos/stop, within 1 s: nothing listed, nothing leaked, RSS
/// back near its baseline, and the next chaos request accepted.
#[test]
fn random_sequences_always_stop_cleanly() {
    let _x = exclusive();
    let seed = std::env::var("CHAOS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    let _note = SeedNote(seed);
    let mut rng = Rng(seed);
    let fill_dir = temp_dir("seq-fill");
    let svc = Service::start(&[
        ("CHAOS_COOLDOWN_SECONDS", "0"),
        ("MAX_CONCURRENT_CHAOS", "7"),
        ("WORKERS", "6"),
        ("MAX_MEMORY_MB_READY", "100000"),
        ("DISK_FILL_DIR", fill_dir.to_str().unwrap()),
    ]);
    let baseline = warm_baseline(&svc);
    let started = Instant::now();
    let mut rounds = 0;
    while rounds < 3 || started.elapsed() < Duration::from_secs(15) {
        rounds += 1;
        // Three clients at once, each with its own generator derived from
        // the seed; the main thread watches the peak of the leak meanwhile.
        let log = std::sync::Mutex::new(Vec::new());
        let finished = std::sync::atomic::AtomicUsize::new(0);
        let mut peak = 0;
        let clients: Vec<u64> = (0..3).map(|_| rng.next() | 1).collect();
        let addr = svc.addr;
        thread::scope(|s| {
            for client_seed in clients {
                let (log, finished) = (&log, &finished);
                s.spawn(move || {
                    // Counted even when the client panics, so the watch ends.
                    let _done = Finished(finished);
                    let mut rng = Rng(client_seed);
                    for _ in 0..rng.range(1, 5) {
                        let done = random_action(addr, &mut rng);
                        log.lock().unwrap().push(done);
                        thread::sleep(Duration::from_millis(rng.range(0, 300)));
                    }
                });
            }
            while finished.load(std::sync::atomic::Ordering::SeqCst) < 3 {
                peak = peak.max(leaked(&svc));
                thread::sleep(Duration::from_millis(20));
            }
        });
        let log = log.into_inner().unwrap();
        let r = svc.post("/chaos/stop");
        assert_eq!(r.status, 200, "{}", r.body);
        let stopped_at = Instant::now();
        // The stop answers once the disk fill's writer has ended and its
        // file is gone: nothing is on disk when it answers.
        assert_eq!(
            files(&fill_dir),
            Vec::<String>::new(),
            "round {rounds}: a disk fill left after the stop; {log:#?}"
        );
        let clean = poll(Duration::from_secs(1), Duration::from_millis(20), || {
            let metrics = svc.get("/metrics").body;
            let quiet = active(&svc) == 0
                && metric_value(&metrics, "chaos_leaked_bytes") == Some(0.0)
                && metric_value(&metrics, "cpu_stress_active") == Some(0.0)
                && metric_value(&metrics, "chaos_disk_fill_bytes{state=\"written\"}") == Some(0.0)
                && metric_value(&metrics, "chaos_fault_active{fault=\"disk\"}") == Some(0.0)
                && svc.rss_bytes() <= baseline + (5 * MIB).max(peak / 10);
            quiet.then_some(())
        });
        assert!(
            clean.is_some() && stopped_at.elapsed() <= Duration::from_millis(1500),
            "round {rounds}: not clean within 1 s of the stop: {} active, {} leaked, RSS {} MiB (baseline {} MiB); actions: {log:#?}",
            active(&svc),
            leaked(&svc),
            svc.rss_bytes() / MIB,
            baseline / MIB
        );
        // Nothing comes back (a ramp step is 100 ms).
        thread::sleep(Duration::from_millis(250));
        assert_eq!(
            (active(&svc), leaked(&svc), files(&fill_dir)),
            (0, 0, Vec::<String>::new()),
            "round {rounds}: a fault came back; {log:#?}"
        );
        let r = svc.post("/load/cpu?duration=1&millicores=10");
        assert_eq!(
            r.status, 202,
            "round {rounds}: the next chaos request: {}; {log:#?}",
            r.body
        );
        assert_eq!(delete(&svc, "/load/cpu").status, 200);
    }
}

/// Stop means stop, for every fault at once: when POST
/// /chaos/stop answers, no load burns CPU, no probe is failed or slowed, and
/// nothing is leaked, listed or holding a slot.
#[test]
fn every_fault_is_over_when_stop_answers() {
    let _x = exclusive();
    let fill_dir = temp_dir("stop-fill");
    let svc = Service::start(&[
        ("CHAOS_COOLDOWN_SECONDS", "0"),
        ("MAX_CONCURRENT_CHAOS", "6"),
        ("DISK_FILL_DIR", fill_dir.to_str().unwrap()),
    ]);
    for target in [
        "/load/cpu?duration=60&millicores=500",
        "/load/memory?mb=40&ramp=20",
        "/fault/liveness?mode=fail&duration=60",
        "/fault/readiness?duration=60",
        "/load/latency?ms=2000&duration=60",
        "/load/disk?mb=64&ramp=20",
    ] {
        let r = svc.post(target);
        assert!(matches!(r.status, 200 | 202), "{target}: {}", r.body);
    }
    thread::sleep(Duration::from_millis(300));
    assert_eq!(svc.get("/health").status, 500);
    assert_eq!(svc.get("/ready").status, 503);
    let r = svc.post("/chaos/stop");
    assert_eq!(
        r.json()["stopped"],
        serde_json::json!(["cpu", "memory", "liveness", "readiness", "latency", "disk"])
    );
    assert_eq!(files(&fill_dir), Vec::<String>::new(), "the disk fill removed");
    assert_eq!(svc.get("/health").status, 200, "liveness lifted");
    let t0 = Instant::now();
    assert_eq!(svc.get("/").status, 200);
    assert!(t0.elapsed() < Duration::from_millis(500), "latency lifted");
    assert_eq!(svc.get("/ready").status, 200, "readiness lifted, no load");
    assert_eq!((active(&svc), leaked(&svc)), (0, 0));
    let cpu0 = svc.cpu_time();
    thread::sleep(Duration::from_secs(1));
    let burnt = svc.cpu_time() - cpu0;
    assert!(
        burnt < Duration::from_millis(150),
        "the load still burns: {burnt:?} in 1 s"
    );
    assert_eq!((active(&svc), leaked(&svc)), (0, 0), "nothing came back");
    assert_eq!(files(&fill_dir), Vec::<String>::new(), "no disk fill came back");
    let metrics = svc.get("/metrics").body;
    for fault in ["cpu", "memory", "liveness", "readiness", "latency", "disk"] {
        let series = format!("chaos_fault_active{{fault=\"{fault}\"}}");
        assert_eq!(metric_value(&metrics, &series), Some(0.0), "{series}");
    }
}

/// SIGTERM stops every fault through the registry too: the process exits
/// promptly and cleanly with a ramp, a hold and a load running.
#[test]
fn sigterm_stops_every_fault() {
    let _x = exclusive();
    let mut svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0"), ("MAX_CONCURRENT_CHAOS", "5")]);
    assert_eq!(svc.post("/load/memory?mb=20&ramp=30").status, 202);
    assert_eq!(svc.post("/load/memory?mb=2&hold=600").status, 200);
    assert_eq!(svc.post("/load/cpu?duration=600&millicores=50").status, 202);
    thread::sleep(Duration::from_millis(300)); // the ramp's first steps
    svc.signal(libc::SIGTERM);
    let status = svc.wait_exit(Duration::from_secs(5)).expect("exits within 5 s");
    assert_eq!(describe(status), "exit code 0");
    // The last lines reach events() a moment after the exit.
    let finished = poll(Duration::from_secs(2), Duration::from_millis(10), || {
        let n = svc
            .events()
            .into_iter()
            .filter(|e| e["event"] == "CHAOS_FINISHED" && e["ended"] == "shutdown")
            .count();
        (n >= 2).then_some(n)
    });
    assert_eq!(finished, Some(2), "both leaks end as shut down: {}", svc.stderr());
}

/// Answers a hang or latency fault holds are released when the fault is
/// stopped, not at the time it would have ended.
#[test]
fn stopping_a_fault_releases_the_answers_it_holds() {
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0"), ("MAX_CONCURRENT_CHAOS", "2")]);
    assert_eq!(svc.post("/fault/liveness?mode=hang&duration=60").status, 202);
    assert_eq!(svc.post("/load/latency?ms=30000&duration=60").status, 202);
    let addr = svc.addr;
    let held: Vec<_> = ["/health", "/"]
        .into_iter()
        .map(|path| {
            thread::spawn(move || {
                let r = try_request(addr, "GET", path, &[], "", Duration::from_secs(20));
                (path, r.map(|r| r.status), Instant::now())
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    assert_eq!(svc.post("/chaos/stop").status, 200);
    let stopped = Instant::now();
    for h in held {
        let (path, status, answered) = h.join().unwrap();
        let status = status.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert!(
            answered.saturating_duration_since(stopped) < Duration::from_secs(1),
            "GET {path} ({status}) was held {:?} past the stop",
            answered.saturating_duration_since(stopped)
        );
    }
    assert_eq!(svc.get("/health").status, 200);
}
