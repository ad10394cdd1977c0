//! Start-up faults under a supervisor (issue 24): the crash loop's failing
//! starts, the slow start against the startup probe's own numbers, and the
//! seeded random crash. The supervisor is a loop in the test (it starts
//! the binary again with the same STATE_DIR, as the kubelet restarts a
//! container in its pod) or Docker Engine's `--restart on-failure`.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{Service, command, describe, exclusive, output_within, poll, repo, temp_dir, try_request};

/// The exit code of a crash-loop start (docs/chaos-runs.md).
const CRASHLOOP_EXIT: i32 = 75;

/// A field of a probe of the Deployment in `manifests/deployment.yaml`.
pub fn probe_field(probe: &str, name: &str) -> u64 {
    let text = std::fs::read_to_string(repo().join("manifests/deployment.yaml")).expect("the Deployment");
    let head = format!("{probe}:");
    let mut lines = text.lines().skip_while(|l| l.trim() != head);
    let first = lines.next().unwrap_or_else(|| panic!("no {probe}"));
    let indent = first.len() - first.trim_start().len();
    lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
        .find_map(|l| l.trim().strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("{probe}.{name}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{probe}.{name}: {e}"))
}

/// One start that must fail as a crash-loop start: exit code 75, soon,
/// never listening; what it logged of its own time (ms from main), and how
/// long the process took from spawn to exit as the test saw it.
fn failing_start(state: &Path, env: &[(&str, &str)], n: u64, of: u64) -> (f64, Duration) {
    let began = Instant::now();
    let out = output_within(command(state, env), Duration::from_secs(10));
    let took = began.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(CRASHLOOP_EXIT),
        "start {n} of {of}: {}\n{stderr}",
        describe(out.status)
    );
    assert!(
        stderr.contains(&format!("crash-loop start {n} of {of} (POST /fault/crashloop)")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("listening on"),
        "a failing start never listens:\n{stderr}"
    );
    assert!(!stderr.contains("POD_STARTED"), "{stderr}");
    let own_ms: f64 = stderr
        .rsplit_once(" ms after start)")
        .and_then(|(before, _)| before.rsplit_once('(')?.1.parse().ok())
        .unwrap_or_else(|| panic!("no time in:\n{stderr}"));
    (own_ms, took)
}

/// `svc`'s /ready, polled until it is `status`.
fn ready_is(svc: &Service, status: u16) {
    let seen = poll(Duration::from_secs(5), Duration::from_millis(20), || {
        (svc.get("/ready").status == status).then_some(())
    });
    assert!(seen.is_some(), "/ready never {status}\n{}", svc.stderr());
}

/// POST /fault/crashloop?starts=3: the process ends as /crash ends it
/// (SIGABRT, its marker written), the next three starts each exit with 75
/// within 100 ms of main (before listening, one log line), the fourth
/// serves, and its /metrics count the three starts and the time from the
/// first failing start to it; a later restart keeps the count (it is the
/// pod's, in STATE_DIR). Out-of-bounds and repeated requests are refused
/// and cost nothing.
#[test]
fn a_crash_loop_fails_the_next_starts_then_serves_and_counts_them() {
    let _x = exclusive();
    let state = temp_dir("crashloop");
    let mut svc = Service::start_in(&state, &[]);
    for bad in ["starts=0", "starts=21", "starts=-1", "starts=three"] {
        let r = svc.post(&format!("/fault/crashloop?{bad}"));
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.json()["parameter"], "starts", "{bad}");
        assert!(
            r.json()["error"].as_str().unwrap().contains("from 1 to 20"),
            "{}",
            r.body
        );
    }
    assert!(
        !state.join("crashloop.json").exists(),
        "a refused request records nothing"
    );
    let r = svc.post("/fault/crashloop?starts=3");
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["exit_code"], 75);
    let status = svc
        .wait_exit(Duration::from_secs(10))
        .expect("the crash ends the process");
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{}", describe(status));
    assert_eq!(svc.event_count("CRASH_REQUESTED", 1), 1, "{}", svc.stderr());

    let first_failing = Instant::now();
    let mut own = Vec::new();
    for n in 1..=3 {
        let (ms, took) = failing_start(&state, &[], n, 3);
        own.push((ms, took));
        // The supervisor's back-off, shortened.
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!("crash-loop starts: (ms from main to exit as logged, spawn to exit): {own:.3?}");
    for (ms, took) in &own {
        assert!(*ms < 100.0, "a failing start took {ms} ms from main to its exit");
        assert!(*took < Duration::from_secs(2), "spawn to exit {took:?}");
    }
    let healthy = Service::start_in(&state, &[]);
    let loop_took = first_failing.elapsed().as_secs_f64();
    ready_is(&healthy, 200);
    assert_eq!(healthy.get("/health").status, 200);
    assert_eq!(healthy.metric("crashloop_starts_total"), 3.0);
    assert_eq!(healthy.metric("crashloop_to_healthy_start_seconds_count"), 1.0);
    let sum = healthy.metric("crashloop_to_healthy_start_seconds_sum");
    assert!(
        sum > 0.9 && sum <= loop_took,
        "first failing start to the healthy one: {sum} s, the test saw at most {loop_took} s"
    );
    assert_eq!(
        healthy.metric("fault_end_to_recovery_seconds_count{fault=\"crashloop\"}"),
        1.0
    );
    // The crash that began the loop is timed by the loop, not as a crash
    // to start-up of four lives.
    assert_eq!(healthy.metric("crash_to_startup_seconds_count"), 0.0);
    let started = healthy
        .events()
        .into_iter()
        .find(|e| e["event"] == "POD_STARTED")
        .unwrap();
    assert_eq!(started["crashloop_starts"], 3, "{started}");
    healthy.signal(libc::SIGTERM);
    drop(healthy);
    let later = Service::start_in(&state, &[]);
    assert_eq!(later.metric("crashloop_starts_total"), 3.0, "kept, and counted once");
    assert_eq!(later.metric("crashloop_to_healthy_start_seconds_count"), 1.0);
}

/// CRASHLOOP_CANCEL=true ends a loop at the start that reads it (which
/// serves, counting the starts that failed); a request for a loop is
/// refused while it is set. A start that cannot count itself in STATE_DIR
/// serves (and says why) rather than fail for ever.
#[test]
fn a_crash_loop_ends_early_by_cancel_and_never_loops_for_ever() {
    let _x = exclusive();
    let state = temp_dir("crashloop-cancel");
    let mut svc = Service::start_in(&state, &[]);
    assert_eq!(svc.post("/fault/crashloop?starts=20").status, 202);
    svc.wait_exit(Duration::from_secs(10)).expect("exits");
    failing_start(&state, &[], 1, 20);
    let cancelled = Service::start_in(&state, &[("CRASHLOOP_CANCEL", "true")]);
    assert!(
        cancelled
            .stderr()
            .contains("crash loop ended by CRASHLOOP_CANCEL=true after 1 failing start(s), 19 of 20 left"),
        "{}",
        cancelled.stderr()
    );
    assert_eq!(cancelled.metric("crashloop_starts_total"), 1.0);
    let r = cancelled.post("/fault/crashloop?starts=2");
    assert_eq!(r.status, 409, "{}", r.body);
    drop(cancelled);
    // The next start without the variable serves too: the loop is gone.
    let mut next = Service::start_in(&state, &[]);
    assert_eq!(next.get("/health").status, 200);

    // STATE_DIR cannot take the count (the writer's temporary name is
    // taken by a directory, as a full disk would refuse it).
    assert_eq!(next.post("/fault/crashloop?starts=2").status, 202);
    next.wait_exit(Duration::from_secs(10)).expect("exits");
    std::fs::create_dir(state.join(".crashloop.json.tmp")).unwrap();
    let stuck = Service::start_in(&state, &[]);
    assert_eq!(stuck.get("/health").status, 200);
    assert!(
        stuck
            .stderr()
            .contains("crash-loop start 1 of 2 not carried out: cannot count it in"),
        "{}",
        stuck.stderr()
    );
    assert_eq!(stuck.metric("crashloop_starts_total"), 1.0, "nothing failed this time");
}

/// A crash-loop or slow-start record of this container (the right
/// envelope) with counts no request could have planned is removed and
/// logged, and the start serves: a `remaining` of 10^15 failed every start
/// for ever (each failing start dates the file anew, so it never aged out).
#[test]
fn a_loop_record_no_request_planned_is_not_followed() {
    let state = temp_dir("crashloop-garbage");
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let envelope = |kind: &str, fields: &str| {
        format!(
            "{{\"format\":\"chaos-backend-state\",\"kind\":\"{kind}\",\"version\":1,\"boot_id\":\"{}\",\"pod\":\"test-pod\",\"written_at_unix_ms\":{},{fields}}}",
            boot.trim(),
            crate::healing::unix_ms_now()
        )
    };
    std::fs::write(
        state.join("crashloop.json"),
        envelope("crashloop", "\"planned\":2,\"remaining\":1000000000000000,\"failed\":0"),
    )
    .unwrap();
    std::fs::write(
        state.join("slowstart.json"),
        envelope("slowstart", "\"seconds\":1000000000000,\"planned\":1,\"remaining\":1"),
    )
    .unwrap();
    let svc = Service::start_in(&state, &[]);
    assert_eq!(svc.get("/health").status, 200, "{}", svc.stderr());
    let stderr = svc.stderr();
    assert!(
        stderr.contains("the crash loop record in") && stderr.contains("remaining 1000000000000000"),
        "{stderr}"
    );
    assert!(
        stderr.contains("holds seconds 1000000000000, more than 3600"),
        "{stderr}"
    );
    assert!(!state.join("crashloop.json").exists() && !state.join("slowstart.json").exists());
    assert_eq!(svc.metric("crashloop_starts_total"), 0.0);
}

/// The kubelet's startup probe, done by the test with the Deployment's own
/// numbers against the real binary: GET /health every `periodSeconds`
/// (each within `timeoutSeconds`); `failureThreshold` failures in a row and
/// the container is killed. Returns when it passed (Ok) or the failures
/// that would have killed it (Err), with the time since `began`.
fn startup_probe(addr: std::net::SocketAddr, began: Instant) -> Result<Duration, (u64, Duration, String)> {
    let period = Duration::from_secs(probe_field("startupProbe", "periodSeconds"));
    let timeout = Duration::from_secs(probe_field("startupProbe", "timeoutSeconds"));
    let threshold = probe_field("startupProbe", "failureThreshold");
    let mut failures = 0;
    let mut next = began;
    loop {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += period;
        let last = match try_request(addr, "GET", "/health", &[], "", timeout) {
            Ok(r) if r.status == 200 => return Ok(began.elapsed()),
            Ok(r) => format!("{} {}", r.status, r.body),
            Err(e) => e.to_string(),
        };
        failures += 1;
        if failures >= threshold {
            return Err((failures, began.elapsed(), last));
        }
    }
}

/// A slow start below the startup probe's budget (failureThreshold x
/// periodSeconds of manifests/deployment.yaml) passes it without a
/// restart, at about S; one above it fails the probe `failureThreshold`
/// times (503 `starting` with the reason each time), at about the budget,
/// and is killed as the kubelet would (SIGTERM: an ordered stop, exit 0);
/// the start after the planned one is not held.
#[test]
fn a_slow_start_against_the_startup_probes_budget() {
    let _x = exclusive();
    let period = probe_field("startupProbe", "periodSeconds");
    let budget = probe_field("startupProbe", "failureThreshold") * period;
    assert_eq!(budget, 10, "docs/kubernetes.md quotes a 10 s budget");
    let under = budget / 2;
    let over = budget + 3;

    // Under the budget, every start (the variable).
    let began = Instant::now();
    let svc = Service::start(&[("SLOW_START_SECONDS", &under.to_string())]);
    let r = svc.get("/health");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["status"], "starting");
    assert!(
        r.json()["reason"].as_str().unwrap().contains("SLOW_START_SECONDS"),
        "{}",
        r.body
    );
    let ready = svc.get("/ready");
    assert_eq!(ready.status, 503);
    assert!(ready.body.contains("slow start"), "{}", ready.body);
    let passed = startup_probe(svc.addr, began).unwrap_or_else(|e| panic!("killed under the budget: {e:?}"));
    eprintln!("slow start {under} s: the startup probe passed after {passed:.2?} (budget {budget} s)");
    assert!(passed >= Duration::from_secs(under), "{passed:?}");
    assert!(passed < Duration::from_secs(budget), "{passed:?}");
    ready_is(&svc, 200);
    drop(svc);

    // Over the budget, the next start only (POST /fault/slowstart).
    let state = temp_dir("slowstart");
    let mut svc = Service::start_in(&state, &[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let r = svc.post(&format!("/fault/slowstart?seconds={over}&starts=1"));
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(svc.get("/health").status, 200, "it takes effect at the next start");
    svc.signal(libc::SIGTERM);
    svc.wait_exit(Duration::from_secs(10)).expect("stops");
    let began = Instant::now();
    let mut slow = Service::start_in(&state, &[]);
    let (failures, at, last) = match startup_probe(slow.addr, began) {
        Ok(after) => panic!("passed after {after:?}, over the budget"),
        Err(e) => e,
    };
    eprintln!("slow start {over} s: {failures} probe failures, the last after {at:.2?}: {last}");
    assert!(
        last.starts_with("503") && last.contains("POST /fault/slowstart, start 1 of 1"),
        "{last}"
    );
    assert!(at >= Duration::from_secs(budget - period), "{at:?}");
    assert!(
        at < Duration::from_secs(over),
        "killed before the hold would end: {at:?}"
    );
    slow.signal(libc::SIGTERM);
    let status = slow
        .wait_exit(Duration::from_secs(10))
        .expect("the kubelet's SIGTERM stops it");
    assert_eq!(status.code(), Some(0), "{}", describe(status));
    let began = Instant::now();
    let next = Service::start_in(&state, &[]);
    let passed = startup_probe(next.addr, began).expect("the restart is not held");
    assert!(passed < Duration::from_secs(period + 1), "{passed:?}");
}

/// DELETE /fault/slowstart ends this life's hold at once.
#[test]
fn a_held_start_can_be_released() {
    let svc = Service::start(&[("SLOW_START_SECONDS", "600")]);
    assert_eq!(svc.get("/health").status, 503);
    let r = crate::harness::request(svc.addr, "DELETE", "/fault/slowstart", &[], "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["hold_lifted"], true);
    assert_eq!(svc.get("/health").status, 200);
    ready_is(&svc, 200);
}

/// The random crash planned by each life: its entry in GET /chaos, with
/// the wait from this life's start.
fn planned(svc: &Service) -> serde_json::Value {
    let list = svc.get("/chaos").json();
    list["faults"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fault"] == "random_crash")
        .cloned()
        .unwrap_or_else(|| panic!("no random crash listed: {list}"))
}

/// Lives of one run with `seed` (mean 1 s): each life's planned wait, and
/// how it ended (each by SIGABRT, the /crash path, with a marker).
fn random_run(seed: &str, lives: usize) -> Vec<u64> {
    let state = temp_dir("random");
    let env = [
        ("RANDOM_CRASH_ENABLED", "true"),
        ("RANDOM_CRASH_SEED", seed),
        ("RANDOM_CRASH_MEAN_SECONDS", "1"),
    ];
    let mut waits = Vec::new();
    for life in 0..lives {
        let mut svc = Service::start_in(&state, &env);
        let p = planned(&svc);
        assert_eq!(p["crash"], (life + 1) as u64, "{p}");
        assert!(
            svc.stderr().contains(&format!("random crash #{} at ", life + 1)),
            "announced ahead in the log:\n{}",
            svc.stderr()
        );
        let wait = p["wait_ms"].as_u64().unwrap();
        waits.push(wait);
        let status = svc
            .wait_exit(Duration::from_millis(wait) + Duration::from_secs(10))
            .expect("the random crash ends the process");
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{}", describe(status));
        // The pipe's reader may still hold the last lines: wait for them.
        assert_eq!(svc.event_count("CRASH_REQUESTED", 1), 1, "{}", svc.stderr());
        let crash = svc
            .events()
            .into_iter()
            .find(|e| e["event"] == "CRASH_REQUESTED")
            .unwrap();
        assert!(
            crash["cause"]
                .as_str()
                .unwrap()
                .starts_with(&format!("random crash #{}", life + 1)),
            "{crash}"
        );
        assert!(state.join("last-crash.json").exists(), "the crash marker of /crash");
    }
    // Each crash is timed to the next start like any deliberate crash.
    let svc = Service::start_in(&state, &[("RANDOM_CRASH_ENABLED", "false")]);
    assert_eq!(svc.metric("crash_to_startup_seconds_count"), lives as f64);
    waits
}

/// A restart that is not the random crash (a SIGTERM, as the kubelet's
/// liveness restart or an OOM kill would end the life) continues the
/// schedule: an unset seed is the one the previous life chose and logged
/// (before, only a crash kept it, so the next life drew a new seed from the
/// clock), and the life's schedule is in STATE_DIR from its start.
#[test]
fn a_restart_before_the_random_crash_keeps_its_schedule() {
    let state = temp_dir("random-restart");
    let env = [("RANDOM_CRASH_ENABLED", "true"), ("RANDOM_CRASH_MEAN_SECONDS", "86400")];
    let mut first = Service::start_in(&state, &env);
    let p = planned(&first);
    assert_eq!(p["crash"], 1, "{p}");
    let seed = p["seed"].clone();
    let kept = poll(Duration::from_secs(2), Duration::from_millis(20), || {
        std::fs::read_to_string(state.join("random-crash.json")).ok()
    })
    .expect("the schedule is kept from the life's start");
    assert!(kept.contains(&format!("\"seed\":{seed}")), "{kept}");
    first.signal(libc::SIGTERM);
    first.wait_exit(Duration::from_secs(10)).expect("stops");
    let next = Service::start_in(&state, &env);
    let p = planned(&next);
    assert_eq!((p["seed"].clone(), p["crash"].clone()), (seed, 1.into()), "{p}");
    assert!(
        !next.stderr().contains("RANDOM_CRASH_SEED is not set"),
        "{}",
        next.stderr()
    );
}

/// Same seed, same schedule: two runs of three lives each wait the same
/// gaps, across restarts (the schedule goes on from STATE_DIR); another
/// seed waits others.
#[test]
fn the_random_crash_schedule_is_the_seeds_across_restarts() {
    let _x = exclusive();
    let a = random_run("424242", 3);
    let b = random_run("424242", 3);
    eprintln!("seed 424242, mean 1 s: waits {a:?} ms, then {b:?} ms");
    assert_eq!(a, b);
    assert!(a.windows(2).any(|w| w[0] != w[1]), "three equal gaps: {a:?}");
    let other = Service::start(&[
        ("RANDOM_CRASH_ENABLED", "true"),
        ("RANDOM_CRASH_SEED", "7"),
        ("RANDOM_CRASH_MEAN_SECONDS", "1"),
    ]);
    assert_ne!(planned(&other)["wait_ms"].as_u64().unwrap(), a[0]);
}

/// POST /chaos/stop and SIGTERM end the planned crash; CHAOS_ENABLED=false
/// plans none, and says so.
#[test]
fn the_random_crash_is_stopped_and_never_silent() {
    let env = [
        ("RANDOM_CRASH_ENABLED", "true"),
        ("RANDOM_CRASH_SEED", "1"),
        ("RANDOM_CRASH_MEAN_SECONDS", "3"),
    ];
    let mut svc = Service::start(&env);
    let wait = Duration::from_millis(planned(&svc)["wait_ms"].as_u64().unwrap());
    let r = svc.post("/chaos/stop");
    assert_eq!(r.json()["stopped"], serde_json::json!(["random_crash"]), "{}", r.body);
    assert_eq!(svc.get("/chaos").json()["active"], 0);
    assert!(
        svc.wait_exit(wait + Duration::from_secs(2)).is_none(),
        "stopped: no crash at its time"
    );

    let mut svc = Service::start(&env);
    planned(&svc);
    svc.signal(libc::SIGTERM);
    let status = svc.wait_exit(Duration::from_secs(10)).expect("stops");
    assert_eq!(status.code(), Some(0), "{}", describe(status));
    let said = poll(Duration::from_secs(2), Duration::from_millis(10), || {
        svc.stderr().contains("stopped by SIGTERM").then_some(())
    });
    assert!(said.is_some(), "{}", svc.stderr());

    let off = Service::start(&[("RANDOM_CRASH_ENABLED", "true"), ("CHAOS_ENABLED", "false")]);
    assert_eq!(off.get("/chaos").json()["active"], 0);
    assert!(
        off.stderr()
            .contains("RANDOM_CRASH_ENABLED=true has no effect: CHAOS_ENABLED=false"),
        "{}",
        off.stderr()
    );
}

use crate::healing::{docker, restarting_container, unix_ms_now};

/// The crash loop under Docker Engine's `--restart on-failure` (which backs
/// off too: 100 ms, doubling): the engine records the crash that began the
/// loop (SIGABRT as PID 1), then three deaths with exit code 75, then the
/// container runs; its /metrics count the three starts, and the time from
/// the first failing start to the healthy one covers the engine's
/// back-offs between them (its die and start events).
#[test]
#[ignore = "needs docker: scripts/test.sh runs it"]
fn a_crash_loop_under_docker_restart_on_failure() {
    const STARTS: usize = 3;
    let _x = exclusive();
    let since = unix_ms_now();
    let (container, addr) = restarting_container("chaos-crashloop");
    let name = container.name().to_string();
    let ready = || {
        poll(Duration::from_secs(30), Duration::from_millis(20), || {
            let r = try_request(addr, "GET", "/ready", &[], "", Duration::from_millis(500)).ok()?;
            (r.status == 200).then_some(())
        })
        .expect("/ready 200")
    };
    ready();
    let r = crate::harness::request(addr, "POST", &format!("/fault/crashloop?starts={STARTS}"), &[], "");
    assert_eq!(r.status, 202, "{}", r.body);
    std::thread::sleep(Duration::from_millis(500));
    ready();
    let metrics = crate::harness::request(addr, "GET", "/metrics", &[], "").body;
    let value = |series: &str| crate::harness::metric_value(&metrics, series).unwrap_or(f64::NAN);
    assert_eq!(value("crashloop_starts_total"), STARTS as f64, "{metrics}");
    assert_eq!(value("crashloop_to_healthy_start_seconds_count"), 1.0);
    let took = value("crashloop_to_healthy_start_seconds_sum");
    assert_eq!(
        docker(&["inspect", "-f", "{{.RestartCount}}", &name]),
        (STARTS + 1).to_string()
    );
    let events = docker(&[
        "events",
        "--since",
        &format!("{:.3}", since as f64 / 1000.0),
        "--until",
        &format!("{:.3}", unix_ms_now() as f64 / 1000.0),
        "--filter",
        &format!("container={name}"),
        "--format",
        "{{.Status}} {{.TimeNano}} {{index .Actor.Attributes \"exitCode\"}}",
    ]);
    let mut codes = Vec::new();
    let mut starts = Vec::new();
    for line in events.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields[..] {
            ["die", nanos, code] => codes.push((code.to_string(), nanos.parse::<u64>().unwrap())),
            ["start", nanos, ..] => starts.push(nanos.parse::<u64>().unwrap()),
            _ => {}
        }
    }
    let exit_codes: Vec<&str> = codes.iter().map(|(c, _)| c.as_str()).collect();
    eprintln!("docker: exit codes {exit_codes:?}; starts at {starts:?} ns");
    assert_eq!(exit_codes.len(), STARTS + 1, "{events}");
    assert!(
        ["134", "139"].contains(&exit_codes[0]),
        "the crash that began it: {events}"
    );
    assert!(exit_codes[1..].iter().all(|c| *c == "75"), "{events}");
    // Starts: the first run, then one after each death; the first failing
    // start is the second, the healthy one the last.
    assert_eq!(starts.len(), STARTS + 2, "{events}");
    let engine = (starts[STARTS + 1] - starts[1]) as f64 / 1e9;
    eprintln!("first failing start to healthy start: {took:.3} s by /metrics, {engine:.3} s by docker events");
    assert!((took - engine).abs() < 0.25, "metrics {took} s, engine {engine} s");
}

/// A supervisor as a container engine is one, for any start, failing or
/// not: it runs the binary on one port and one STATE_DIR, restarts it
/// 200 ms after each exit, and records how each life ended (the exit code,
/// or 128 + the signal, as engines report it). Stops (SIGTERM to the life
/// that runs) on drop.
struct Supervisor {
    pub addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<i32>>>,
}

impl Supervisor {
    fn start(env: &[(&str, &str)]) -> Supervisor {
        use std::sync::atomic::Ordering;
        let port = crate::harness::free_port();
        let state = temp_dir("supervised");
        let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        env.push(("PORT".into(), port.to_string()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let mut ends = Vec::new();
            while ends.len() < 30 && !flag.load(Ordering::SeqCst) {
                let log = std::fs::File::create(state.join("life.log")).unwrap();
                let mut child = command(&state, &env)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("spawn");
                let status = loop {
                    if let Some(status) = child.try_wait().unwrap() {
                        break Some(status);
                    }
                    if flag.load(Ordering::SeqCst) {
                        // SAFETY: kill(2) on our own child.
                        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                        let _ = child.wait();
                        break None;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                };
                let Some(status) = status else { break };
                ends.push(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)));
                std::thread::sleep(Duration::from_millis(200));
            }
            ends
        });
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let up = poll(Duration::from_secs(10), Duration::from_millis(20), || {
            try_request(addr, "GET", "/health", &[], "", Duration::from_millis(500)).ok()
        });
        assert!(up.is_some(), "the first life never answered");
        Supervisor {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the supervisor and its life; how each earlier life ended.
    fn ends(mut self) -> Vec<i32> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// chaos-generator.sh against `addr`, one iteration of `args`; the row.
fn generator_row(addr: std::net::SocketAddr, args: &[&str]) -> Vec<String> {
    let csv = temp_dir("gen-startup").join("results.csv");
    let out = std::process::Command::new("bash")
        .arg(repo().join("scripts/chaos-generator.sh"))
        .args(["--url", &format!("http://{addr}"), "--out", csv.to_str().unwrap()])
        .args(["--iterations", "1", "--timeout", "20"])
        .args(args)
        .output()
        .unwrap();
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
    let text = std::fs::read_to_string(&csv).unwrap();
    text.lines()
        .nth(1)
        .expect("a row")
        .split(',')
        .map(str::to_string)
        .collect()
}

/// `chaos-generator.sh --type crashloop` under a supervisor: the row
/// recovers, and carries the service's own count of failing starts and its
/// time from the first of them to the start that served; the supervisor
/// saw the crash (SIGABRT) and two exits with 75.
#[test]
fn the_generator_runs_a_crash_loop_under_a_supervisor() {
    let _x = exclusive();
    let sup = Supervisor::start(&[]);
    let row = generator_row(sup.addr, &["--type", "crashloop", "--starts", "2"]);
    let ends = sup.ends();
    assert_eq!(
        (row[1].as_str(), row[6].as_str()),
        ("crashloop", "recovered"),
        "{row:?}"
    );
    assert!(
        row[7].contains("crashloop_starts=2;") && row[7].contains("restart=yes"),
        "{row:?}"
    );
    let loop_s: f64 = row[7].rsplit_once("crashloop_s=").unwrap().1.parse().unwrap();
    let recovered: f64 = row[5].parse().unwrap();
    assert!(loop_s > 0.2 && loop_s < recovered, "{row:?}");
    assert_eq!(ends[..3], [128 + libc::SIGABRT, 75, 75], "{ends:?}");
}

/// `chaos-generator.sh --type startup`: the crash's restart holds /ready for
/// the slow start's seconds before it recovers.
#[test]
fn the_generator_runs_a_slow_start_under_a_supervisor() {
    let _x = exclusive();
    let sup = Supervisor::start(&[]);
    // The generator tells a restart by process_start_time_seconds, whole
    // seconds: the next life must start in another second.
    std::thread::sleep(Duration::from_millis(1100));
    let row = generator_row(sup.addr, &["--type", "startup", "--seconds", "2"]);
    let ends = sup.ends();
    assert_eq!((row[1].as_str(), row[6].as_str()), ("startup", "recovered"), "{row:?}");
    assert!(
        row[7].contains("slow_start_s=2") && row[7].contains("restart=yes"),
        "{row:?}"
    );
    let recovered: f64 = row[5].parse().unwrap();
    assert!(recovered >= 2.0, "held for the slow start: {row:?}");
    assert_eq!(ends[..1], [128 + libc::SIGABRT], "{ends:?}");
}
