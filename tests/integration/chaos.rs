//! The faults against the real binary: readiness under CPU load, millicores
//! accuracy, probe latency under saturation, the memory leak, the crash.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use crate::harness::{Service, describe, exclusive, percentile, poll, request, temp_dir};

#[test]
fn two_second_cpu_load_fails_readiness_then_recovers() {
    let _x = exclusive();
    let svc = Service::start(&[]);
    assert_eq!(svc.get("/ready").status, 200);
    let r = svc.post("/load/cpu?duration=2");
    assert_eq!(r.status, 202, "{}", r.body);
    let accepted = Instant::now();
    let first_503 = poll(Duration::from_secs(1), Duration::from_millis(20), || {
        let r = svc.get("/ready");
        (r.status == 503).then_some((Instant::now(), r))
    });
    let (degraded_at, r) = first_503.expect("/ready 503 within 1 s of the 202");
    assert_eq!(r.json()["reasons"], serde_json::json!(["cpu stress active"]));
    let load_ends = accepted + Duration::from_secs(2);
    let recovered = poll(Duration::from_millis(3500), Duration::from_millis(20), || {
        (svc.get("/ready").status == 200).then(Instant::now)
    })
    .expect("/ready 200 again");
    assert!(
        recovered <= load_ends + Duration::from_millis(1500),
        "recovered {:?} after the load ended",
        recovered.saturating_duration_since(load_ends)
    );
    assert_eq!(svc.metric("failure_to_readiness_failure_seconds_count"), 1.0);
    assert_eq!(svc.metric("readiness_failure_to_recovery_seconds_count"), 1.0);
    let detection = svc.metric("failure_to_readiness_failure_seconds_sum");
    assert!(detection < 1.0, "detection {detection} s");
    let recovery = svc.metric("readiness_failure_to_recovery_seconds_sum");
    let seen = (recovered - degraded_at).as_secs_f64();
    assert!(
        (recovery - seen).abs() < 0.1,
        "histogram {recovery} s, client saw {seen} s"
    );
    assert_eq!(svc.metric("pod_recovery_count_total"), 2.0, "start-up + one recovery");
    assert_eq!(svc.event_count("READINESS_DEGRADED", 1), 1);
    assert_eq!(svc.event_count("READINESS_RECOVERED", 1), 1);
    assert_eq!(svc.event_count("CHAOS_FINISHED", 1), 1);
}

#[test]
fn cpu_stress_can_leave_readiness_alone() {
    let _x = exclusive();
    let svc = Service::start(&[("READY_FAIL_ON_CPU_STRESS", "false")]);
    assert_eq!(svc.post("/load/cpu?duration=1&millicores=100").status, 202);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(svc.get("/ready").status, 200);
    assert_eq!(svc.metric("cpu_stress_active"), 1.0);
}

#[test]
fn millicores_500_for_3_seconds_uses_1_5_cpu_seconds() {
    let _x = exclusive();
    let svc = Service::start(&[]);
    let before = svc.cpu_time();
    assert_eq!(svc.post("/load/cpu?duration=3&millicores=500").status, 202);
    std::thread::sleep(Duration::from_millis(3300));
    let used = (svc.cpu_time() - before).as_secs_f64();
    assert!(
        (1.275..=1.725).contains(&used),
        "used {used:.3} CPU s for 1.5 asked (±15%)"
    );
    assert_eq!(svc.metric("cpu_stress_active"), 0.0, "load over");
}

#[test]
fn health_stays_fast_while_all_cpus_are_saturated() {
    let _x = exclusive();
    let svc = Service::start(&[]);
    let r = svc.post("/load/cpu?duration=30");
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["mode"], "saturate");
    std::thread::sleep(Duration::from_millis(300));
    // Every spin thread runs in SCHED_IDLE (policy 5 in /proc/PID/task/TID/stat).
    let spinners = spin_thread_policies(svc.pid());
    assert_eq!(
        spinners.len(),
        std::thread::available_parallelism().unwrap().get(),
        "{spinners:?}"
    );
    assert!(spinners.iter().all(|p| *p == libc::SCHED_IDLE as u32), "{spinners:?}");
    let mut samples = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        let r = request(svc.addr, "GET", "/health", &[], "");
        samples.push(t.elapsed());
        assert_eq!(r.status, 200);
    }
    let p99 = percentile(&mut samples, 99.0);
    let cpu = svc.metric("cpu_stress_active");
    assert_eq!(cpu, 1.0, "the load must still be running");
    assert!(p99 < Duration::from_millis(20), "/health p99 {p99:?} under saturation");
    eprintln!("/health p99 under saturation: {p99:?}");
}

/// The scheduling policy of each `cpu-spin-*` thread of `pid`.
fn spin_thread_policies(pid: u32) -> Vec<u32> {
    let mut policies = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (open, close) = (stat.find('(').unwrap(), stat.rfind(')').unwrap());
        if !stat[open + 1..close].starts_with("cpu-spin-") {
            continue;
        }
        // Field 41 is the policy; fields after the name start at field 3.
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        policies.push(fields[41 - 3].parse().unwrap());
    }
    policies
}

#[test]
fn leak_of_64_mib_grows_rss_and_metric_agrees_with_proc() {
    let _x = exclusive();
    let svc = Service::start(&[]);
    let before = svc.rss_bytes();
    let r = svc.post("/load/memory?mb=64");
    assert_eq!(r.status, 200, "{}", r.body);
    let after = svc.rss_bytes();
    assert!(after >= before + (61 << 20), "rss {before} -> {after}");
    let metric = svc.metric("memory_usage_bytes");
    let proc = svc.rss_bytes() as f64;
    assert!((metric - proc).abs() / proc < 0.02, "metric {metric} vs /proc {proc}");
}

#[test]
fn crash_answers_202_then_aborts_and_next_start_counts_it_once() {
    let state = temp_dir("crash");
    let mut svc = Service::start_in(&state, &[]);
    let r = svc.post("/crash");
    assert_eq!(r.status, 202);
    assert_eq!(
        r.json(),
        serde_json::json!({"status": "crashing", "mode": "abort", "exit_code": null})
    );
    let status = svc.wait_exit(Duration::from_secs(5)).expect("process ends");
    assert_eq!(status.signal(), Some(libc::SIGABRT), "ended by {}", describe(status));
    let marker: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("last-crash.json")).expect("marker written")).unwrap();
    assert_eq!(marker["mode"], "abort");
    assert!(marker["crashed_at_unix_ms"].as_u64().is_some());
    assert_eq!(svc.event_count("CRASH_REQUESTED", 1), 1);

    let second = Service::start_in(&state, &[]);
    assert_eq!(second.metric("crash_to_startup_seconds_count"), 1.0);
    let secs = second.metric("crash_to_startup_seconds_sum");
    assert!((0.0..5.0).contains(&secs), "{secs}");
    let started = second
        .events()
        .into_iter()
        .find(|e| e["event"] == "POD_STARTED")
        .unwrap();
    assert_eq!(started["crash_mode"], "abort");
    assert!(!state.join("last-crash.json").exists(), "marker removed");
    drop(second);

    // Counted once only, and kept: the count is the pod's, not the process's.
    let third = Service::start_in(&state, &[]);
    assert_eq!(third.metric("crash_to_startup_seconds_count"), 1.0, "counted once only");
    assert_eq!(third.metric("crash_to_startup_seconds_sum"), secs);
}

#[test]
fn unwritable_state_dir_warns_and_crash_still_works() {
    let mut svc = Service::start_in(std::path::Path::new("/proc/no-such-dir"), &[]);
    assert!(svc.stderr().contains("STATE_DIR"), "{}", svc.stderr());
    assert_eq!(svc.post("/crash").status, 202);
    let status = svc.wait_exit(Duration::from_secs(5)).expect("process ends");
    assert_eq!(status.signal(), Some(libc::SIGABRT));
}
