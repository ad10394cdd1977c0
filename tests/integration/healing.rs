//! The healing figures mean what their names say, across restarts: recovery
//! from a fault's end (its time running out, a DELETE, a release, a death),
//! counts that survive the process in STATE_DIR, and crash markers of
//! another life ignored. Each is held against what the test itself saw:
//! when it ended a fault or killed the process, and when /ready answered.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::harness::{Service, exclusive, poll, temp_dir};

/// Polls /ready every 20 ms until it is `status`; when it was seen.
fn ready_is(svc: &Service, status: u16, within: Duration) -> Instant {
    poll(within, Duration::from_millis(20), || {
        (svc.get("/ready").status == status).then(Instant::now)
    })
    .unwrap_or_else(|| panic!("/ready never answered {status} within {within:?}\n{}", svc.stderr()))
}

fn fault_end(svc: &Service, fault: &str) -> (f64, f64) {
    (
        svc.metric(&format!("fault_end_to_recovery_seconds_count{{fault=\"{fault}\"}}")),
        svc.metric(&format!("fault_end_to_recovery_seconds_sum{{fault=\"{fault}\"}}")),
    )
}

pub(crate) fn unix_ms_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A file in the state-file format, as this machine's boot and the
/// harness's pod would write it, `age` ago.
fn state_file(kind: &str, age: Duration, fields: serde_json::Value) -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let written = unix_ms_now() - age.as_millis() as u64;
    let mut v = json!({
        "format": "chaos-backend-state",
        "kind": kind,
        "version": 1,
        "boot_id": boot.trim(),
        "pod": "test-pod",
        "written_at_unix_ms": written,
    });
    v.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
    v.to_string()
}

fn crash_marker(age: Duration) -> String {
    let at = unix_ms_now() - age.as_millis() as u64;
    state_file(
        "crash-marker",
        age,
        json!({"crashed_at_unix_ms": at, "mode": "abort", "cause": "POST /crash", "pid": 1}),
    )
}

/// A 2 s readiness fault, a CPU load, a DELETE and a leak's release: each
/// degraded time is the fault's length, each recovery the moment from its
/// end to the next 200. (Fails on the code before issue 22, which has no
/// `fault_end_to_recovery_seconds`.)
#[test]
fn recovery_counts_from_each_faults_end() {
    let _x = exclusive();
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0"), ("MAX_MEMORY_MB_READY", "40")]);
    ready_is(&svc, 200, Duration::from_secs(2));

    // Its time runs out.
    assert_eq!(svc.post("/fault/readiness?duration=2").status, 202);
    ready_is(&svc, 503, Duration::from_secs(1));
    ready_is(&svc, 200, Duration::from_secs(5));
    let degraded = svc.metric("readiness_failure_to_recovery_seconds_sum");
    let (n, recovered) = fault_end(&svc, "readiness");
    assert_eq!(n, 1.0);
    assert!((1.5..3.0).contains(&degraded), "degraded {degraded} s for a 2 s fault");
    assert!(
        recovered < 0.5,
        "recovered {recovered} s after its end (polled every 20 ms)"
    );

    // Stopped early: from the DELETE.
    assert_eq!(svc.post("/fault/readiness?duration=60").status, 202);
    ready_is(&svc, 503, Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(500));
    let deleted = Instant::now();
    assert_eq!(
        crate::harness::request(svc.addr, "DELETE", "/fault/readiness", &[], "").status,
        200
    );
    let back = ready_is(&svc, 200, Duration::from_secs(2));
    let (n, sum) = fault_end(&svc, "readiness");
    assert_eq!(n, 2.0);
    assert!(
        sum - recovered <= back.duration_since(deleted).as_secs_f64() + 0.05,
        "{} s, but /ready was 200 {:?} after the DELETE",
        sum - recovered,
        back.duration_since(deleted)
    );

    // A CPU load's end.
    assert_eq!(svc.post("/load/cpu?duration=1&millicores=100").status, 202);
    ready_is(&svc, 503, Duration::from_secs(1));
    ready_is(&svc, 200, Duration::from_secs(5));
    let (n, sum) = fault_end(&svc, "cpu");
    assert_eq!(n, 1.0);
    assert!(sum < 0.5, "{sum}");

    // A leak past MAX_MEMORY_MB_READY, released.
    assert_eq!(svc.post("/load/memory?mb=64").status, 200);
    ready_is(&svc, 503, Duration::from_secs(1));
    assert_eq!(
        crate::harness::request(svc.addr, "DELETE", "/load/memory", &[], "").status,
        200
    );
    ready_is(&svc, 200, Duration::from_secs(2));
    assert_eq!(fault_end(&svc, "memory").0, 1.0);
    assert_eq!(svc.metric("readiness_failure_to_recovery_seconds_count"), 4.0);
    assert_eq!(svc.event_count("FAULT_RECOVERED", 4), 4);
}

/// The healing counts are the pod's: a restart with the same STATE_DIR
/// adds to them, a new STATE_DIR starts from zero. (Before issue 22 every
/// start began from zero.)
#[test]
fn healing_counts_survive_a_restart_and_a_new_state_dir_starts_from_zero() {
    let _x = exclusive();
    let state = temp_dir("kept");
    let mut first = Service::start_in(&state, &[("CHAOS_COOLDOWN_SECONDS", "0")]);
    assert_eq!(first.post("/fault/readiness?duration=1").status, 202);
    ready_is(&first, 503, Duration::from_secs(1));
    ready_is(&first, 200, Duration::from_secs(3));
    assert_eq!(first.metric("pod_recovery_count_total"), 2.0, "start-up and one flip");
    first.signal(libc::SIGTERM);
    first.wait_exit(Duration::from_secs(5)).expect("stops on SIGTERM");

    let second = Service::start_in(&state, &[]);
    assert_eq!(
        second.metric("pod_recovery_count_total"),
        3.0,
        "two before, one start-up"
    );
    assert_eq!(second.metric("readiness_failure_to_recovery_seconds_count"), 1.0);
    assert_eq!(second.metric("failure_to_readiness_failure_seconds_count"), 1.0);
    assert_eq!(fault_end(&second, "readiness").0, 1.0);
    assert!(
        second.stderr().contains("healing figures restored from"),
        "{}",
        second.stderr()
    );
    drop(second);

    let fresh = Service::start(&[]);
    assert_eq!(fresh.metric("pod_recovery_count_total"), 1.0);
    assert_eq!(fresh.metric("readiness_failure_to_recovery_seconds_count"), 0.0);
}

/// Three crashes in one STATE_DIR count three, each timed to the next
/// start, and each a recovery from the crash. (Before issue 22 the count
/// was 1 after every start.)
#[test]
fn crash_counts_add_up_across_restarts() {
    let _x = exclusive();
    let state = temp_dir("crashes");
    for crashes in 1..=3 {
        let mut svc = Service::start_in(&state, &[]);
        // The kubelet's readiness probe: the first 200 closes the recovery.
        ready_is(&svc, 200, Duration::from_secs(2));
        assert_eq!(svc.metric("crash_to_startup_seconds_count"), f64::from(crashes - 1));
        assert_eq!(svc.post("/crash?mode=exit&code=3").status, 202);
        svc.wait_exit(Duration::from_secs(5)).expect("exits");
    }
    let svc = Service::start_in(&state, &[]);
    ready_is(&svc, 200, Duration::from_secs(2));
    assert_eq!(svc.metric("crash_to_startup_seconds_count"), 3.0);
    assert_eq!(svc.metric("pod_recovery_count_total"), 4.0);
    let (n, sum) = fault_end(&svc, "crash");
    assert_eq!(n, 3.0);
    let to_startup = svc.metric("crash_to_startup_seconds_sum");
    assert!(
        sum >= to_startup,
        "death to ready ({sum} s) includes death to start-up ({to_startup} s)\n{}",
        svc.stderr()
    );
    assert!(sum < 6.0, "{sum}");
}

/// A marker older than the longest restart back-off plus a margin, one from
/// another boot, and one in the format of an older binary are logged and
/// ignored; a marker left 200 s ago, as a pod's last back-off leaves it, is
/// counted. (Before issue 22 the 400 s marker counted 400 s.)
#[test]
fn a_crash_marker_of_another_life_is_logged_and_ignored() {
    let marker = |state: &Path, text: &str| std::fs::write(state.join("last-crash.json"), text).unwrap();
    let cases = [
        (
            crash_marker(Duration::from_secs(400)),
            "ignored: it was written 400 s ago",
        ),
        (
            crash_marker(Duration::from_secs(1)).replace("\"boot_id\":\"", "\"boot_id\":\"another-"),
            "ignored: it was written before the machine's last boot",
        ),
        (
            format!(
                "{{\"crashed_at_unix_ms\":{},\"mode\":\"abort\",\"cause\":\"POST /crash\",\"pid\":7}}",
                unix_ms_now() - 214_000
            ),
            "ignored: it is not a chaos-backend-state file",
        ),
    ];
    for (text, logged) in cases {
        let state = temp_dir("stale-marker");
        marker(&state, &text);
        let svc = Service::start_in(&state, &[]);
        assert_eq!(svc.metric("crash_to_startup_seconds_count"), 0.0, "{text}");
        assert!(svc.stderr().contains(logged), "{logged:?} not in\n{}", svc.stderr());
        assert!(!state.join("last-crash.json").exists(), "reported once");
        let started = svc.events().into_iter().find(|e| e["event"] == "POD_STARTED").unwrap();
        assert_eq!(started["crash_to_startup_seconds"], serde_json::Value::Null);
    }
    let state = temp_dir("backoff-marker");
    marker(&state, &crash_marker(Duration::from_secs(200)));
    let svc = Service::start_in(&state, &[]);
    assert_eq!(svc.metric("crash_to_startup_seconds_count"), 1.0);
    let secs = svc.metric("crash_to_startup_seconds_sum");
    assert!((200.0..205.0).contains(&secs), "{secs}");
}

/// A corrupt or foreign healing file never stops the service: it is logged,
/// set aside (not overwritten) and counting starts from zero; a file of
/// another life (older than the window) is ours and simply replaced.
#[test]
fn a_corrupt_foreign_or_old_healing_file_is_logged_and_ignored() {
    for (text, logged, aside) in [
        (
            "{\"format\": \"chaos-backend-st".to_string(),
            "is not a JSON object",
            true,
        ),
        ("PK\u{3}\u{4} a zip file".to_string(), "is not a JSON object", true),
        ("x".repeat(70_000), "is larger than 64 KiB", true),
        (
            state_file(
                "healing",
                Duration::from_secs(3600),
                json!({"figures": {"pod_recovery_count_total": 50}}),
            ),
            "was written 3600 s ago",
            false,
        ),
    ] {
        let state = temp_dir("bad-healing");
        std::fs::write(state.join("healing.json"), &text).unwrap();
        let svc = Service::start_in(&state, &[]);
        assert_eq!(svc.get("/health").status, 200);
        assert_eq!(svc.metric("pod_recovery_count_total"), 1.0, "from zero");
        assert!(svc.stderr().contains(logged), "{logged:?} not in\n{}", svc.stderr());
        assert_eq!(
            std::fs::read_to_string(state.join("healing.json.ignored"))
                .ok()
                .as_deref()
                == Some(text.as_str()),
            aside,
            "set aside: {aside}"
        );
    }
}

/// An errors fault never fails /ready; ending while /ready fails for a
/// warm-up (`STARTUP_DELAY_SECONDS`), it is not what the next 200
/// recovered from: no `fault_end_to_recovery_seconds{fault="errors"}`
/// (before: 2.8 s of "recovery" from it, the warm-up's rest). A crash
/// followed by the same warm-up is timed from the crash.
#[test]
fn a_fault_that_ends_during_a_warm_up_alone_is_not_timed_as_its_recovery() {
    let state = temp_dir("warm-up");
    let env = [("CHAOS_COOLDOWN_SECONDS", "0"), ("STARTUP_DELAY_SECONDS", "2")];
    let mut svc = Service::start_in(&state, &env);
    assert_eq!(svc.get("/ready").status, 503);
    assert_eq!(svc.post("/fault/errors?duration=1").status, 202);
    let back = ready_is(&svc, 200, Duration::from_secs(4));
    std::thread::sleep(Duration::from_millis(1_200).saturating_sub(back.elapsed()));
    assert_eq!(svc.get("/chaos").json()["active"], 0, "the errors fault ended");
    assert_eq!(fault_end(&svc, "errors"), (0.0, 0.0), "{}", svc.stderr());
    assert_eq!(svc.metric("readiness_failure_to_recovery_seconds_count"), 1.0);

    assert_eq!(svc.post("/crash").status, 202);
    let crashed = Instant::now();
    svc.wait_exit(Duration::from_secs(5)).expect("crashed");
    let next = Service::start_in(&state, &env);
    assert_eq!(next.get("/ready").status, 503, "its warm-up");
    let ready = ready_is(&next, 200, Duration::from_secs(4));
    let (n, secs) = fault_end(&next, "crash");
    assert_eq!(n, 1.0, "{}", next.stderr());
    let seen = ready.duration_since(crashed).as_secs_f64();
    assert!((secs - seen).abs() < 0.2, "{secs} s, the test saw {seen:.3} s");
}

/// A file of this container's previous life (the right envelope, recent)
/// whose fields are garbage: a healing file without its `life` or its
/// `figures` made every start panic (exit 101, a crash loop until the
/// file aged out); a crash marker "crashed at" 1970, or a stop at 0, put
/// 1.8e9 s into histograms kept for the pod's life. Each is logged and its
/// figure not measured.
#[test]
fn garbage_inside_a_good_envelope_is_logged_and_never_measured_nor_fatal() {
    let state = temp_dir("garbage-healing");
    std::fs::write(
        state.join("healing.json"),
        state_file(
            "healing",
            Duration::from_secs(1),
            json!({"figures": {"pod_recovery_count_total": 4}}),
        ),
    )
    .unwrap();
    let svc = Service::start_in(&state, &[]);
    assert_eq!(svc.get("/health").status, 200, "{}", svc.stderr());
    assert_eq!(svc.metric("pod_recovery_count_total"), 5.0, "restored, plus this start");
    drop(svc);

    let state = temp_dir("garbage-marker");
    let at = unix_ms_now();
    std::fs::write(
        state.join("last-crash.json"),
        state_file(
            "crash-marker",
            Duration::ZERO,
            json!({"crashed_at_unix_ms": 0, "mode": "abort", "cause": "POST /crash", "pid": 1}),
        ),
    )
    .unwrap();
    std::fs::write(
        state.join("healing.json"),
        state_file(
            "healing",
            Duration::ZERO,
            json!({"life": {"faults": ["readiness"], "stopped_at_unix_ms": 0, "started_at_unix_ms": at}}),
        ),
    )
    .unwrap();
    let svc = Service::start_in(&state, &[]);
    ready_is(&svc, 200, Duration::from_secs(2));
    let stderr = svc.stderr();
    assert!(stderr.contains("ignored: it has crashed_at_unix_ms 0"), "{stderr}");
    assert!(stderr.contains("has stopped_at_unix_ms 0"), "{stderr}");
    assert_eq!(svc.metric("crash_to_startup_seconds_count"), 0.0);
    let (n, secs) = fault_end(&svc, "readiness");
    assert_eq!(n, 1.0, "the fault ended with that life: {stderr}");
    let seen = (unix_ms_now() - at) as f64 / 1000.0;
    assert!(
        secs <= seen + 0.5,
        "{secs} s from the fault's end, but the file was written {seen:.3} s ago"
    );
}

/// A leak's process killed without a word (as the OOM killer does) left
/// only its heartbeat: the next life times the leak's recovery from it, to
/// within the heartbeat's period of the kill the test made.
#[test]
fn a_leak_killed_without_a_marker_is_timed_from_its_heartbeat() {
    let _x = exclusive();
    let state = temp_dir("killed-leak");
    let mut svc = Service::start_in(&state, &[("MAX_MEMORY_MB_READY", "4000")]);
    assert_eq!(svc.post("/load/memory?mb=16&ramp=30").status, 202);
    std::thread::sleep(Duration::from_millis(700));
    svc.signal(libc::SIGKILL);
    let killed = Instant::now();
    svc.wait_exit(Duration::from_secs(5)).expect("killed");
    std::thread::sleep(Duration::from_millis(300));
    let next = Service::start_in(&state, &[]);
    let ready = ready_is(&next, 200, Duration::from_secs(2));
    let (n, secs) = fault_end(&next, "memory");
    assert_eq!(n, 1.0, "{}", next.stderr());
    let seen = ready.duration_since(killed).as_secs_f64();
    assert!(
        (secs - seen).abs() <= 0.25,
        "the service says {secs:.3} s from the kill to ready, the test saw {seen:.3} s"
    );
    assert!(
        next.stderr().contains("killed) with a memory fault running"),
        "{}",
        next.stderr()
    );
    assert_eq!(
        next.metric("crash_to_startup_seconds_count"),
        0.0,
        "not a deliberate crash"
    );
}

/// A liveness fault that a stop ended (the kubelet's restart): its recovery
/// is timed from the stop.
#[test]
fn a_liveness_fault_ended_by_a_stop_is_timed_from_the_stop() {
    let _x = exclusive();
    let state = temp_dir("liveness-stop");
    let mut svc = Service::start_in(&state, &[]);
    assert_eq!(svc.post("/fault/liveness?duration=60").status, 202);
    assert_eq!(svc.get("/health").status, 500);
    svc.signal(libc::SIGTERM);
    svc.wait_exit(Duration::from_secs(5)).expect("stops");
    let stopped = Instant::now();
    let next = Service::start_in(&state, &[]);
    let ready = ready_is(&next, 200, Duration::from_secs(2));
    let (n, secs) = fault_end(&next, "liveness");
    assert_eq!(n, 1.0, "{}", next.stderr());
    let seen = ready.duration_since(stopped).as_secs_f64();
    assert!(
        secs <= seen + 0.05 && secs > 0.0,
        "{secs:.3} s, the test saw {seen:.3} s"
    );
    assert_eq!(next.get("/health").status, 200);
}

/// `docker ARGS`, its stdout trimmed; a failure is a panic naming it.
pub(crate) fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A container removed on drop.
pub(crate) struct Container(String);

impl Container {
    pub(crate) fn name(&self) -> &str {
        &self.0
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
    }
}

/// The image under Docker Engine with `--restart on-failure`, on a free
/// port of the host's network (and a free probe port: the default 8081 of
/// another test's container on the host's network would make this one
/// exit 1 at start, an unplanned restart), named `TAG-PID-PORT`: the
/// container (removed on drop) and its address.
pub(crate) fn restarting_container(tag: &str) -> (Container, std::net::SocketAddr) {
    restarting_container_with(tag, &[])
}

/// [`restarting_container`] with more `docker run` arguments (a volume).
pub(crate) fn restarting_container_with(tag: &str, more: &[&str]) -> (Container, std::net::SocketAddr) {
    let image = crate::engines::docker_image();
    let port = crate::harness::free_port();
    let probe_port = crate::harness::free_port();
    let name = format!("{tag}-{}-{port}", std::process::id());
    let (port_env, probe_env) = (format!("PORT={port}"), format!("PROBE_PORT={probe_port}"));
    let mut args = vec![
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "host",
        "-e",
        &port_env,
        "-e",
        &probe_env,
    ];
    args.extend_from_slice(more);
    args.extend_from_slice(&["--restart", "on-failure", &image]);
    docker(&args);
    (Container(name), format!("127.0.0.1:{port}").parse().unwrap())
}

/// The dashboard query of the panel titled `title` whose legend is `legend`.
fn dashboard_query(title: &str, legend: &str) -> String {
    let d = crate::observability::dashboard();
    let panel = crate::observability::panels(&d)
        .into_iter()
        .find(|p| p["title"] == title)
        .unwrap_or_else(|| panic!("no panel {title:?}"))
        .clone();
    let target = panel["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["legendFormat"] == legend)
        .unwrap_or_else(|| panic!("{title:?} has no query {legend:?}"));
    target["expr"].as_str().unwrap().to_string()
}

/// The healing counts across real restarts, as a real Prometheus sees them:
/// Docker Engine runs the image with `--restart on-failure`, it is crashed
/// four times, one Prometheus scrapes every second (more often than the
/// crashes, about every 3 s) and one every 5 s (less often). In each,
/// `increase(crash_to_startup_seconds_count[run])` is the number of
/// crashes, and the dashboard's own expressions give the total recoveries
/// and a mean crash to start-up within 10% of the truth: the crash markers'
/// times against the next start's (the events in `docker logs`); the
/// engine's die and start events bound it from below. (Before issue 22 the count was 1 in every
/// life, so `increase()` saw at most one crash and the mean was wrong.)
#[test]
#[ignore = "needs docker, prometheus: scripts/test.sh runs it"]
fn crash_counts_survive_docker_restarts_in_a_real_prometheus() {
    const CRASHES: usize = 4;
    let _x = exclusive();
    let started_at = unix_ms_now();
    let (container, addr) = restarting_container("chaos-healing");
    let name = container.name().to_string();
    let ready = || {
        poll(Duration::from_secs(20), Duration::from_millis(50), || {
            let r = crate::harness::try_request(addr, "GET", "/ready", &[], "", Duration::from_millis(500)).ok()?;
            (r.status == 200).then_some(())
        })
        .expect("/ready 200")
    };
    ready();
    let scrapers = [
        (
            "every 1 s",
            crate::observability::Prometheus::scraping_every(addr, "1s"),
        ),
        (
            "every 5 s",
            crate::observability::Prometheus::scraping_every(addr, "5s"),
        ),
    ];
    for (every, prom) in &scrapers {
        let first = poll(Duration::from_secs(40), Duration::from_millis(200), || {
            (prom.value("crash_to_startup_seconds_count") == Some(0.0)).then_some(())
        });
        assert!(
            first.is_some(),
            "the Prometheus scraping {every} never saw the first life"
        );
    }
    // The test's own timing of each recovery: from the crash's answer to the
    // first 200 of the next life's /ready (which the service also serves
    // as its first, and times from the marker).
    let mut seen = Vec::new();
    let mut crashed: Option<Instant> = None;
    for _ in 0..CRASHES {
        ready();
        if let Some(c) = crashed {
            seen.push(c.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_secs(2));
        let r = crate::harness::request(addr, "POST", "/crash", &[], "");
        crashed = Some(Instant::now());
        assert_eq!(r.status, 202);
        let gone = poll(Duration::from_secs(5), Duration::from_millis(10), || {
            crate::harness::try_request(addr, "GET", "/health", &[], "", Duration::from_millis(200))
                .is_err()
                .then_some(())
        });
        assert!(gone.is_some(), "the crash did not end the process");
    }
    ready();
    seen.push(crashed.unwrap().elapsed().as_secs_f64());
    // Both Prometheus servers scrape the last life at least twice.
    std::thread::sleep(Duration::from_secs(12));

    // The engine's record: four restarts, and when each life died and began.
    assert_eq!(
        docker(&["inspect", "-f", "{{.RestartCount}}", &name]),
        CRASHES.to_string()
    );
    let events = docker(&[
        "events",
        "--since",
        &format!("{:.3}", started_at as f64 / 1000.0),
        "--until",
        &format!("{:.3}", unix_ms_now() as f64 / 1000.0),
        "--filter",
        &format!("container={name}"),
        "--format",
        "{{.Status}} {{.TimeNano}}",
    ]);
    let mut engine = Vec::new();
    let mut died: Option<u64> = None;
    for line in events.lines() {
        let Some((status, nanos)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(nanos) = nanos.parse::<u64>() else { continue };
        match status {
            "die" => died = Some(nanos),
            "start" => {
                if let Some(d) = died.take() {
                    engine.push((nanos - d) as f64 / 1e9);
                }
            }
            _ => {}
        }
    }
    assert_eq!(engine.len(), CRASHES, "{events}");
    // The crash markers' truth: each CRASH_REQUESTED (written with its
    // marker) to the next life's POD_STARTED, from the container's log.
    let out = std::process::Command::new("docker")
        .args(["logs", &name])
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut crashed_at = None;
    let mut markers = Vec::new();
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let ms = v["ts_unix_ms"].as_u64().unwrap();
        match v["event"].as_str() {
            Some("CRASH_REQUESTED") => crashed_at = Some(ms),
            Some("POD_STARTED") => {
                if let Some(c) = crashed_at.take() {
                    markers.push((ms - c) as f64 / 1000.0);
                }
            }
            _ => {}
        }
    }
    assert_eq!(markers.len(), CRASHES, "{log}");
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (true_mean, engine_mean, seen_mean) = (mean(&markers), mean(&engine), mean(&seen));
    eprintln!("crash to ready, as the test saw it: {seen:.3?} (mean {seen_mean:.3} s)");
    eprintln!(
        "crash to start-up: markers {markers:.3?} (mean {true_mean:.3} s); engine die to start {engine:.3?} (mean {engine_mean:.3} s)"
    );

    for (every, prom) in &scrapers {
        // Evaluated at the last sample, over a range that starts at the
        // first: increase() then extrapolates nothing.
        let series = prom
            .query_at("crash_to_startup_seconds_count[30m]", None)
            .expect("a range query");
        let samples = series[0]["values"].as_array().unwrap();
        let (first, last) = (samples.first().unwrap(), samples.last().unwrap());
        assert_eq!(first[1], "0", "{every}: the first sample is before the first crash");
        let (t0, t1) = (first[0].as_f64().unwrap(), last[0].as_f64().unwrap());
        let range = format!("{}ms", ((t1 - t0) * 1000.0).round() as u64);
        let at = Some(t1);
        let sub = |expr: &str| {
            expr.replace("$__range", &range)
                .replace("$namespace", "local")
                .replace("$pod", "chaos-backend")
        };
        let value = |expr: &str| prom.value_at(expr, at).unwrap_or(f64::NAN);
        let crashes = value(&format!("increase(crash_to_startup_seconds_count[{range}])"));
        let recoveries = value(&sub(&dashboard_query("Total recoveries", "recoveries")));
        let dashboard_mean = value(&sub(&dashboard_query(
            "Restarts and crash to start-up",
            "mean crash to start-up",
        )));
        let recovered_from_crashes = value(&format!(
            "increase(fault_end_to_recovery_seconds_count{{fault=\"crash\"}}[{range}])"
        ));
        let mean_recovery = prom
            .query_at(&sub(&dashboard_query("Mean recovery by fault", "{{fault}}")), at)
            .unwrap_or_default()
            .iter()
            .find(|s| s["metric"]["fault"] == "crash")
            .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
            .unwrap_or(f64::NAN);
        eprintln!(
            "Prometheus scraping {every} ({} samples): {crashes} crashes, {recoveries} recoveries, {recovered_from_crashes} recoveries from a crash, mean crash to start-up {dashboard_mean:.3} s, mean recovery from a crash {mean_recovery:.3} s",
            samples.len()
        );
        assert_eq!(
            crashes, CRASHES as f64,
            "{every}: increase(crash_to_startup_seconds_count)"
        );
        assert_eq!(
            recoveries, CRASHES as f64,
            "{every}: the dashboard's total recoveries (one start-up a crash)"
        );
        assert!(
            (dashboard_mean - true_mean).abs() <= 0.1 * true_mean,
            "{every}: the dashboard's mean {dashboard_mean:.3} s, the crash markers' {true_mean:.3} s"
        );
        assert_eq!(recovered_from_crashes, CRASHES as f64, "{every}");
        assert!(
            (mean_recovery - seen_mean).abs() <= 0.1 * seen_mean,
            "{every}: the dashboard's mean recovery from a crash {mean_recovery:.3} s, the test saw {seen_mean:.3} s"
        );
        // The engine's die-to-start leaves out the marker's last
        // milliseconds and the new process's own start (exec to serving,
        // longer on a loaded machine): the dashboard's mean is longer,
        // never shorter.
        assert!(
            dashboard_mean >= engine_mean,
            "{every}: the dashboard's mean {dashboard_mean:.3} s, the engine's die to start {engine_mean:.3} s"
        );
    }
}

/// A new container on the volume of one that crashed starts from zero, as
/// a new pod does: the crash was another container's, even on the host's
/// network, where every container's `HOSTNAME` is the host's name. The
/// crashed container's own restart, on the same volume, still counts its
/// crash. Found by an attack: with `--network host`, a container run 5 s
/// after another one on its volume was removed reported the removed one's
/// crash as its own `crash_to_startup_seconds` (6.4 s).
#[test]
#[ignore = "needs docker: scripts/test.sh runs it"]
fn a_new_container_on_a_crashed_containers_volume_does_not_count_its_crash() {
    let _x = exclusive();
    let volume = format!("chaos-volume-{}-{}", std::process::id(), crate::harness::free_port());
    struct Volume(String);
    impl Drop for Volume {
        fn drop(&mut self) {
            let _ = std::process::Command::new("docker")
                .args(["volume", "rm", "-f", &self.0])
                .output();
        }
    }
    let _volume = Volume(volume.clone());
    let mount = format!("{volume}:/var/lib/chaos-backend");
    let run = |tag: &str| restarting_container_with(tag, &["-v", &mount]);
    let ready = |addr| {
        poll(Duration::from_secs(30), Duration::from_millis(50), || {
            let r = crate::harness::try_request(addr, "GET", "/ready", &[], "", Duration::from_millis(500)).ok()?;
            (r.status == 200).then_some(())
        })
        .expect("/ready 200")
    };
    let metric = |addr, series: &str| {
        let body = crate::harness::request(addr, "GET", "/metrics", &[], "").body;
        crate::harness::metric_value(&body, series).unwrap_or(f64::NAN)
    };

    let (first, addr) = run("chaos-first");
    ready(addr);
    assert_eq!(crate::harness::request(addr, "POST", "/crash", &[], "").status, 202);
    poll(Duration::from_secs(20), Duration::from_millis(100), || {
        (docker(&["inspect", "-f", "{{.RestartCount}}", first.name()]) == "1").then_some(())
    })
    .expect("the engine restarts the first container");
    ready(addr);
    assert_eq!(
        metric(addr, "crash_to_startup_seconds_count"),
        1.0,
        "its own restart counts its crash"
    );

    // It crashes again and is not restarted; a new container takes its volume.
    docker(&["update", "--restart", "no", first.name()]);
    assert_eq!(crate::harness::request(addr, "POST", "/crash", &[], "").status, 202);
    poll(Duration::from_secs(20), Duration::from_millis(100), || {
        (docker(&["inspect", "-f", "{{.State.Status}}", first.name()]) == "exited").then_some(())
    })
    .expect("the first container ends");
    drop(first);
    let (second, addr) = run("chaos-second");
    ready(addr);
    let logs = std::process::Command::new("docker")
        .args(["logs", second.name()])
        .output()
        .expect("docker logs");
    let logs = String::from_utf8_lossy(&logs.stderr).to_string() + &String::from_utf8_lossy(&logs.stdout);
    assert_eq!(metric(addr, "crash_to_startup_seconds_count"), 0.0, "{logs}");
    assert_eq!(
        metric(addr, "pod_recovery_count_total"),
        1.0,
        "a new container starts from zero: {logs}"
    );
    assert!(
        logs.contains("another container"),
        "the ignored marker is logged: {logs}"
    );
    assert!(logs.contains("\"crash_to_startup_seconds\":null"), "{logs}");
}
