//! The faults and their stops: liveness (fail, hang), forced readiness,
//! latency, stopping CPU loads and releasing the leak, crash modes, a
//! start-up delay, and stop-all, each against the real binary.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Service, assert_rss_back, describe, exclusive, poll, request, temp_dir, try_request};

fn chaos_list(svc: &Service) -> Vec<Value> {
    svc.get("/chaos").json()["faults"].as_array().unwrap().clone()
}

fn listed(svc: &Service, fault: &str) -> bool {
    chaos_list(svc).iter().any(|f| f["fault"] == fault)
}

fn active_metric(svc: &Service, fault: &str) -> f64 {
    svc.metric(&format!("chaos_fault_active{{fault=\"{fault}\"}}"))
}

#[test]
fn liveness_fail_answers_500_until_it_ends_on_time_or_on_request() {
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let r = svc.post("/fault/liveness?mode=fail&duration=1");
    assert_eq!(r.status, 202, "{}", r.body);
    let started = Instant::now();
    let h = svc.get("/health");
    assert_eq!(
        (h.status, h.json()["reason"].as_str()),
        (500, Some("forced by /fault/liveness"))
    );
    assert_eq!(svc.get("/").status, 200, "other endpoints keep working");
    assert!(listed(&svc, "liveness"));
    assert_eq!(active_metric(&svc, "liveness"), 1.0);
    let healthy = poll(Duration::from_secs(3), Duration::from_millis(20), || {
        (svc.get("/health").status == 200).then(Instant::now)
    });
    let ended = healthy.expect("ends on time") - started;
    assert!(
        ended >= Duration::from_millis(900) && ended < Duration::from_millis(1500),
        "{ended:?}"
    );
    assert_eq!(active_metric(&svc, "liveness"), 0.0);
    assert_eq!(svc.event_count("CHAOS_FINISHED", 1), 1);
    // On request.
    assert_eq!(svc.post("/fault/liveness?duration=60").status, 202);
    assert_eq!(svc.get("/health").status, 500);
    let r = request(svc.addr, "DELETE", "/fault/liveness", &[], "");
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("stopped")));
    assert_eq!(svc.get("/health").status, 200);
    assert!(!listed(&svc, "liveness"));
}

#[test]
fn liveness_hang_times_out_a_probe_while_root_answers() {
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    assert_eq!(svc.post("/fault/liveness?mode=hang&duration=5").status, 202);
    let t = Instant::now();
    let probe = try_request(svc.addr, "GET", "/health", &[], "", Duration::from_secs(1));
    assert!(probe.is_err(), "a 1 s probe must time out: {probe:?}");
    assert!(t.elapsed() >= Duration::from_millis(990));
    let root = try_request(svc.addr, "GET", "/", &[], "", Duration::from_secs(1)).expect("GET / answers");
    assert_eq!(root.status, 200);
    // Even many hung probes hold no worker.
    let hung: Vec<_> = (0..8)
        .map(|_| {
            let addr = svc.addr;
            std::thread::spawn(move || try_request(addr, "GET", "/health", &[], "", Duration::from_millis(500)))
        })
        .collect();
    for h in hung {
        assert!(h.join().unwrap().is_err());
    }
    assert_eq!(svc.get("/ready").status, 200);
    assert_eq!(active_metric(&svc, "liveness"), 1.0);
}

/// The probe port (where the Deployment's liveness probe asks) holds a
/// hang's answer as the main port does, until the fault is stopped, and
/// then sends it. Before, it wrote the held 500 at once (0.5 ms): the
/// kubelet saw a hang as a fail, and its timeout path was never tested.
#[test]
fn liveness_hang_times_out_a_probe_on_the_probe_port_too() {
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let probe_addr = svc.probe_addr.expect("the probe port");
    assert_eq!(svc.post("/fault/liveness?mode=hang&duration=30").status, 202);
    let t = Instant::now();
    let probe = try_request(probe_addr, "GET", "/health", &[], "", Duration::from_secs(1));
    assert!(probe.is_err(), "a 1 s probe on the probe port must time out: {probe:?}");
    assert!(t.elapsed() >= Duration::from_millis(990));
    let ready = try_request(probe_addr, "GET", "/ready", &[], "", Duration::from_secs(1)).expect("/ready answers");
    assert_eq!(ready.status, 200, "{}", ready.body);
    // A held probe gets its answer once the fault is stopped.
    let held = std::thread::spawn(move || {
        let t = Instant::now();
        let r = try_request(probe_addr, "GET", "/health", &[], "", Duration::from_secs(10));
        (r, t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(request(svc.addr, "DELETE", "/fault/liveness", &[], "").status, 200);
    let (r, took) = held.join().unwrap();
    let r = r.expect("the held answer is sent when the fault stops");
    assert_eq!(
        (r.status, r.json()["reason"].as_str()),
        (500, Some("hung by /fault/liveness"))
    );
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(2),
        "{took:?}"
    );
    let after = try_request(probe_addr, "GET", "/health", &[], "", Duration::from_secs(1)).expect("/health");
    assert_eq!(after.status, 200);
}

#[test]
fn forced_readiness_fails_and_recovers_on_request_with_the_timers() {
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    assert_eq!(svc.get("/ready").status, 200);
    assert_eq!(svc.post("/fault/readiness?duration=60").status, 202);
    let r = svc.get("/ready");
    assert_eq!(
        (r.status, r.json()["reasons"][0].as_str()),
        (503, Some("forced by /fault/readiness"))
    );
    assert_eq!(svc.get("/health").status, 200, "liveness untouched");
    assert!(listed(&svc, "readiness"));
    assert_eq!(request(svc.addr, "DELETE", "/fault/readiness", &[], "").status, 200);
    assert_eq!(svc.get("/ready").status, 200);
    assert_eq!(svc.metric("failure_to_readiness_failure_seconds_count"), 1.0);
    assert_eq!(svc.metric("readiness_failure_to_recovery_seconds_count"), 1.0);
}

#[test]
fn latency_fault_slows_root_and_trips_the_p95_check() {
    let _x = exclusive();
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0"), ("LATENCY_WINDOW_SECONDS", "2")]);
    assert_eq!(svc.post("/load/latency?ms=600&duration=2").status, 202);
    let t = Instant::now();
    assert_eq!(svc.get("/").status, 200);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(900),
        "{took:?}"
    );
    let t = Instant::now();
    assert_eq!(svc.get("/health").status, 200);
    assert!(t.elapsed() < Duration::from_millis(100), "probes are not slowed");
    let r = svc.get("/ready");
    assert_eq!(r.status, 503);
    assert!(
        r.json()["reasons"][0].as_str().unwrap().starts_with("p95 latency 6"),
        "{}",
        r.body
    );
    assert_eq!(active_metric(&svc, "latency"), 1.0);
    // Ends on time; the slow samples age out of the 2 s window.
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    svc.get("/");
    assert!(t.elapsed() < Duration::from_millis(100));
    let ready = poll(Duration::from_secs(4), Duration::from_millis(50), || {
        (svc.get("/ready").status == 200).then_some(())
    });
    assert!(
        ready.is_some(),
        "readiness recovers once the slow requests leave the window"
    );
}

#[test]
fn delete_ends_a_cpu_load_early() {
    let svc = Service::start(&[]);
    assert_eq!(svc.post("/load/cpu?duration=60&millicores=100").status, 202);
    assert_eq!(svc.metric("chaos_cpu_target_millicores"), 100.0);
    assert!(listed(&svc, "cpu"));
    let r = request(svc.addr, "DELETE", "/load/cpu", &[], "");
    assert_eq!((r.status, r.json()["loads"].as_u64()), (200, Some(1)));
    let over = poll(Duration::from_secs(1), Duration::from_millis(10), || {
        (svc.metric("cpu_stress_active") == 0.0).then_some(())
    });
    assert!(over.is_some(), "the load stops within a second");
    assert_eq!(svc.metric("chaos_cpu_target_millicores"), 0.0);
    assert_eq!(svc.event_count("CHAOS_FINISHED", 1), 1);
}

#[test]
fn releasing_the_leak_gives_rss_back_and_readiness_recovers() {
    let _x = exclusive();
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0"), ("MAX_MEMORY_MB_READY", "40")]);
    assert_eq!(svc.get("/ready").status, 200);
    let before = svc.rss_bytes();
    assert_eq!(svc.post("/load/memory?mb=64").status, 200);
    assert_eq!(svc.get("/ready").status, 503);
    assert_eq!(svc.metric("chaos_leaked_bytes"), (64u64 << 20) as f64);
    assert!(listed(&svc, "memory"));
    let r = request(svc.addr, "DELETE", "/load/memory", &[], "");
    assert_eq!((r.status, r.json()["released_mb"].as_u64()), (200, Some(64)));
    assert_rss_back(&svc, before, 64 << 20, "after DELETE /load/memory");
    assert_eq!(svc.get("/ready").status, 200);
    assert_eq!(
        svc.metric("readiness_failure_to_recovery_seconds_count"),
        1.0,
        "the memory recovery is measured"
    );
    assert_eq!(svc.metric("chaos_leaked_bytes"), 0.0);
}

#[test]
fn stop_all_ends_every_fault_and_lists_nothing() {
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0"), ("MAX_CONCURRENT_CHAOS", "5")]);
    assert_eq!(svc.post("/load/cpu?duration=60&millicores=50").status, 202);
    assert_eq!(svc.post("/load/memory?mb=2").status, 200);
    assert_eq!(svc.post("/fault/readiness").status, 202);
    assert_eq!(svc.post("/load/latency?ms=5&duration=60").status, 202);
    let faults: Vec<String> = chaos_list(&svc)
        .iter()
        .map(|f| f["fault"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(faults, ["cpu", "memory", "readiness", "latency"]);
    for f in &faults {
        assert!(
            chaos_list(&svc)
                .iter()
                .any(|x| x["fault"] == f.as_str() && (x["ends_at_unix_ms"].is_u64() || f == "memory"))
        );
    }
    let r = svc.post("/chaos/stop");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["stopped"],
        serde_json::json!(["cpu", "memory", "readiness", "latency"])
    );
    let empty = poll(Duration::from_secs(1), Duration::from_millis(10), || {
        chaos_list(&svc).is_empty().then_some(())
    });
    assert!(empty.is_some(), "{:?}", chaos_list(&svc));
    assert_eq!(svc.get("/ready").status, 200);
}

#[test]
fn guardrails_and_token_apply_to_every_fault() {
    let svc = Service::start(&[("CHAOS_TOKEN", "tk"), ("CHAOS_COOLDOWN_SECONDS", "60")]);
    let auth = [("Authorization", "Bearer tk")];
    for target in ["/fault/liveness", "/fault/readiness", "/load/latency"] {
        assert_eq!(request(svc.addr, "POST", target, &[], "").status, 401, "POST {target}");
        assert_eq!(
            request(svc.addr, "DELETE", target, &[], "").status,
            401,
            "DELETE {target}"
        );
    }
    assert_eq!(request(svc.addr, "POST", "/chaos/stop", &[], "").status, 401);
    assert_eq!(request(svc.addr, "DELETE", "/load/memory", &[], "").status, 401);
    assert_eq!(svc.get("/chaos").status, 200, "listing is open, like /metrics");
    assert_eq!(
        request(svc.addr, "POST", "/fault/readiness?duration=1", &auth, "").status,
        202
    );
    let r = request(svc.addr, "POST", "/load/latency", &auth, "");
    assert_eq!(r.status, 429, "the cooldown covers every fault");
    assert!(r.header("Retry-After").is_some());
    assert_eq!(
        svc.metric("chaos_actions_total{action=\"latency\",outcome=\"rejected\"}"),
        1.0
    );
    drop(svc);
    // The kill switch refuses starting chaos, never stopping it.
    let svc = Service::start(&[("CHAOS_ENABLED", "false")]);
    assert_eq!(svc.post("/fault/liveness").status, 403);
    assert_eq!(svc.post("/chaos/stop").status, 200);
    assert_eq!(request(svc.addr, "DELETE", "/load/cpu", &[], "").status, 200);
}

#[test]
fn each_crash_mode_ends_the_process_as_it_says_and_marks_it() {
    for (query, expected, mode) in [
        ("", "signal 6", "abort"),
        ("?mode=abort", "signal 6", "abort"),
        ("?mode=exit&code=3", "exit code 3", "exit"),
        ("?mode=exit", "exit code 1", "exit"),
        ("?mode=kill", "signal 9", "kill"),
        ("?mode=panic", "exit code 101", "panic"),
    ] {
        let state = temp_dir("crash-mode");
        let mut svc = Service::start_in(&state, &[]);
        let r = svc.post(&format!("/crash{query}"));
        assert_eq!((r.status, r.json()["mode"].as_str()), (202, Some(mode)), "{query}");
        let status = svc.wait_exit(Duration::from_secs(5)).expect("process ends");
        assert_eq!(describe(status), expected, "/crash{query}");
        let marker: Value =
            serde_json::from_str(&std::fs::read_to_string(state.join("last-crash.json")).unwrap()).unwrap();
        assert_eq!(marker["mode"], mode, "{query}");
        if mode == "kill" {
            assert_eq!(status.signal(), Some(libc::SIGKILL));
        }
    }
    let svc = Service::start(&[]);
    for bad in [
        "/crash?mode=explode",
        "/crash?mode=abort&code=3",
        "/crash?mode=exit&code=256",
    ] {
        assert_eq!(svc.post(bad).status, 400, "{bad}");
    }
    assert_eq!(svc.get("/health").status, 200);
}

#[test]
fn startup_delay_holds_readiness_then_releases_it() {
    let svc = Service::start(&[("STARTUP_DELAY_SECONDS", "1")]);
    let r = svc.get("/ready");
    assert_eq!(
        (r.status, r.json()["reasons"][0].as_str()),
        (503, Some("starting (STARTUP_DELAY_SECONDS)"))
    );
    assert_eq!(svc.get("/health").status, 200, "alive while starting");
    let ready = poll(Duration::from_secs(3), Duration::from_millis(20), || {
        (svc.get("/ready").status == 200).then_some(())
    });
    assert!(ready.is_some());
    assert_eq!(
        svc.metric("failure_to_readiness_failure_seconds_count"),
        0.0,
        "starting is no detection"
    );
}

#[test]
fn ramp_grows_the_leak_over_time_and_hold_releases_it() {
    let _x = exclusive();
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0"), ("MAX_CONCURRENT_CHAOS", "3")]);
    let r = svc.post("/load/memory?mb=40&ramp=2&hold=1");
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (202, Some("ramping")),
        "{}",
        r.body
    );
    std::thread::sleep(Duration::from_millis(1000));
    let halfway = svc.metric("chaos_leaked_bytes") / 1048576.0;
    assert!(
        (12.0..=28.0).contains(&halfway),
        "{halfway} MiB after 1 s of a 2 s ramp to 40"
    );
    let full = poll(Duration::from_secs(3), Duration::from_millis(50), || {
        (svc.metric("chaos_leaked_bytes") == (40u64 << 20) as f64).then(Instant::now)
    });
    assert!(full.is_some(), "the ramp reaches 40 MiB");
    let freed = poll(Duration::from_secs(3), Duration::from_millis(50), || {
        (svc.metric("chaos_leaked_bytes") == 0.0).then(Instant::now)
    });
    let held = freed.expect("hold releases it") - full.unwrap();
    assert!(
        held >= Duration::from_millis(800) && held < Duration::from_millis(1600),
        "{held:?}"
    );
    // A plain leak with hold answers at once and frees only its own chunks.
    assert_eq!(svc.post("/load/memory?mb=3").status, 200);
    let r = svc.post("/load/memory?mb=5&hold=1");
    assert_eq!(r.status, 200);
    assert!(r.json()["release_at_unix_ms"].is_u64());
    let left = poll(Duration::from_secs(3), Duration::from_millis(50), || {
        (svc.metric("chaos_leaked_bytes") == (3u64 << 20) as f64).then_some(())
    });
    assert!(left.is_some(), "the 3 MiB leak stays");
}

/// Each timed fault alike ends on time and on request.
#[test]
fn every_timed_fault_ends_on_time_and_on_request() {
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    for (path, fault) in [
        ("/fault/liveness?mode=hang", "liveness"),
        ("/fault/readiness", "readiness"),
        ("/load/latency?ms=5", "latency"),
    ] {
        let sep = if path.contains('?') { '&' } else { '?' };
        assert_eq!(svc.post(&format!("{path}{sep}duration=1")).status, 202, "{path}");
        assert!(listed(&svc, fault), "{fault} listed while active");
        assert_eq!(active_metric(&svc, fault), 1.0, "{fault}");
        let over = poll(Duration::from_secs(3), Duration::from_millis(20), || {
            (!listed(&svc, fault)).then_some(())
        });
        assert!(over.is_some(), "{fault} ends on time");
        assert_eq!(active_metric(&svc, fault), 0.0, "{fault}");
        assert_eq!(svc.post(&format!("{path}{sep}duration=60")).status, 202, "{path}");
        let base = path.split('?').next().unwrap();
        let r = request(svc.addr, "DELETE", base, &[], "");
        assert_eq!(
            (r.status, r.json()["status"].as_str()),
            (200, Some("stopped")),
            "{fault}"
        );
        assert!(!listed(&svc, fault), "{fault} ends on request");
    }
    assert_eq!(svc.get("/ready").status, 200);
    assert_eq!(svc.get("/health").status, 200);
}
