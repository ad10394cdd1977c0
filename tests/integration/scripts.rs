//! scripts/chaos-generator.sh and scripts/analyze-recovery.sh, run as a user
//! would, against the real binary and committed fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::harness::{Service, exclusive, poll, repo, temp_dir};

fn script(name: &str) -> PathBuf {
    repo().join("scripts").join(name)
}

fn fixture(name: &str) -> String {
    repo().join("tests/fixtures").join(name).display().to_string()
}

fn run(name: &str, args: &[&str]) -> Output {
    let out = Command::new("bash")
        .arg(script(name))
        .args(args)
        .output()
        .expect("run script");
    eprintln!(
        "$ {name} {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// chaos-generator.sh against `svc`, writing `csv`, with `args` after that.
fn generate(svc: &Service, csv: &Path, args: &[&str]) -> Output {
    let url = format!("http://{}", svc.addr);
    let mut all = vec!["--url", &url, "--out", csv.to_str().unwrap()];
    all.extend_from_slice(args);
    run("chaos-generator.sh", &all)
}

/// The data rows of a results file, split into their 7 fields.
fn rows(csv: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(csv).expect("results file");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("iteration,type,triggered_at_ms,detected_s,recovered_s,outcome,detail")
    );
    lines.map(|l| l.split(',').map(str::to_string).collect()).collect()
}

fn secs(field: &str) -> f64 {
    field.parse().unwrap_or_else(|_| panic!("not seconds: {field:?}"))
}

#[test]
fn cpu_run_of_three_iterations_recovers_each_time() {
    let _x = exclusive();
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let csv = temp_dir("gen-cpu").join("results.csv");
    let out = generate(
        &svc,
        &csv,
        &[
            "--type",
            "cpu",
            "--iterations",
            "3",
            "--cooldown",
            "0",
            "--duration",
            "1",
        ],
    );
    assert!(out.status.success());
    let rows = rows(&csv);
    assert_eq!(rows.len(), 3);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.len(), 7, "{row:?}");
        assert_eq!(row[0], (i + 1).to_string());
        assert_eq!(row[1], "cpu");
        assert_eq!(row[5], "recovered", "{row:?}");
        // Reported to the millisecond.
        assert!(row[3].split('.').nth(1).is_some_and(|d| d.len() == 3), "{row:?}");
        let (detected, recovered) = (secs(&row[3]), secs(&row[4]));
        assert!(detected < 1.5, "detection {detected}");
        assert!((0.8..=3.0).contains(&recovered), "recovery {recovered}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("summary: 3 of 3 iterations finished, 3 recovered"),
        "{stdout}"
    );
    // The service saw the same cycles.
    assert_eq!(svc.metric("readiness_failure_to_recovery_seconds_count"), 3.0);
}

/// MAX_MEMORY_MB_READY below one leak: /ready fails at once and, with no
/// restart and no release, never recovers: the first row is `timeout`, and
/// the next is `trigger-failed` because /ready is not 200 before its trigger.
#[test]
fn memory_run_past_the_threshold_times_out_then_cannot_trigger() {
    let _x = exclusive();
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0"), ("MAX_MEMORY_MB_READY", "40")]);
    let csv = temp_dir("gen-mem").join("results.csv");
    let out = generate(
        &svc,
        &csv,
        &[
            "--type",
            "memory",
            "--mb",
            "64",
            "--iterations",
            "2",
            "--cooldown",
            "0",
            "--timeout",
            "2",
        ],
    );
    assert!(out.status.success());
    let rows = rows(&csv);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][5], "timeout", "{:?}", rows[0]);
    assert!(secs(&rows[0][3]) < 1.0);
    assert_eq!(rows[0][4], "");
    assert_eq!(rows[1][5], "trigger-failed", "{:?}", rows[1]);
    assert!(rows[1][6].contains("/ready was 503"), "{:?}", rows[1]);
    assert_eq!(
        svc.metric("chaos_actions_total{action=\"memory\",outcome=\"accepted\"}"),
        1.0
    );
}

#[test]
fn sigint_after_the_first_iteration_keeps_a_valid_file() {
    let _x = exclusive();
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let csv = temp_dir("gen-int").join("results.csv");
    let url = format!("http://{}", svc.addr);
    let child = Command::new("bash")
        .arg(script("chaos-generator.sh"))
        .args([
            "--url",
            &url,
            "--type",
            "cpu",
            "--iterations",
            "5",
            "--cooldown",
            "30",
            "--duration",
            "1",
        ])
        .args(["--out", csv.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first_row = poll(Duration::from_secs(10), Duration::from_millis(50), || {
        let text = std::fs::read_to_string(&csv).ok()?;
        (text.lines().count() == 2).then_some(())
    });
    assert!(first_row.is_some(), "the first iteration should finish");
    // SAFETY: kill(2) on our own child with a valid signal.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}");
    assert!(
        stdout.contains("summary: 1 of 5 iterations finished, 1 recovered"),
        "{stdout}"
    );
    let rows = rows(&csv);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][5], "recovered");
    // The file is valid input for the analyzer (INCONCLUSIVE: one sample).
    let analysis = run("analyze-recovery.sh", &[csv.to_str().unwrap()]);
    assert_eq!(analysis.status.code(), Some(3));
}

#[test]
fn analyzer_prints_hand_computed_figures_in_every_format() {
    let sample = fixture("recovery-sample.csv");
    // By hand: recovered 1..9 and 12 s (n 10): mean 5.7, p50 rank 5 = 5,
    // p95 rank 10 = 12, worst 12. Detected 0.1..1.0 and 0.5 (n 11): mean
    // 6/11 = 0.545, p50 rank 6 = 0.5, p95 rank 11 = 1.0. Within 10 s: 9 of
    // 11 detected (the timeout is a miss) = 81.82%.
    let text = run("analyze-recovery.sh", &[&sample]);
    assert_eq!(text.status.code(), Some(1), "81.82% < 95%: FAIL");
    let text = String::from_utf8_lossy(&text.stdout);
    for line in [
        "iterations: 13 (recovered 10, timeout 1, no-degradation 1, trigger-failed 1); types: cpu",
        "recovery (s): n 10, mean 5.700, p50 5.000, p95 12.000, worst 12.000",
        "detection (s): n 11, mean 0.545, p50 0.500, p95 1.000, worst 1.000",
        "SLA: 9 of 11 detected faults recovered within 10 s = 81.82% (target 95%, basis exact)",
        "verdict: FAIL",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }

    let json = run("analyze-recovery.sh", &["--format", "json", &sample]);
    assert_eq!(json.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON output");
    let s = &v["sources"][0];
    assert_eq!(v["verdict"], "FAIL");
    assert_eq!((s["rec_mean"].as_f64(), s["rec_p50"].as_f64()), (Some(5.7), Some(5.0)));
    assert_eq!(
        (s["rec_p95"].as_f64(), s["rec_worst"].as_f64()),
        (Some(12.0), Some(12.0))
    );
    assert_eq!(
        (s["det_mean"].as_f64(), s["det_p50"].as_f64()),
        (Some(0.545), Some(0.5))
    );
    assert_eq!((s["det_p95"].as_f64(), s["det_worst"].as_f64()), (Some(1.0), Some(1.0)));
    assert_eq!(s["compliance"].as_f64(), Some(81.82));
    assert_eq!(s["outcomes"]["timeout"], 1);

    let md = run("analyze-recovery.sh", &["--format", "markdown", &sample]);
    assert_eq!(md.status.code(), Some(1));
    let md = String::from_utf8_lossy(&md.stdout);
    for line in [
        "| mean | 5.700 | 0.545 |",
        "| p50 | 5.000 | 0.500 |",
        "| p95 | 12.000 | 1.000 |",
        "| worst | 12.000 | 1.000 |",
        "| recovered within 10 s | 9 of 11 detected (81.82%) |",
        "| verdict | **FAIL** |",
    ] {
        assert!(md.lines().any(|l| l == line), "missing {line:?} in\n{md}");
    }
}

#[test]
fn analyzer_exit_codes_gate_pipelines() {
    let sample = fixture("recovery-sample.csv");
    assert_eq!(
        run("analyze-recovery.sh", &["--target", "80", &sample]).status.code(),
        Some(0),
        "PASS"
    );
    assert_eq!(
        run("analyze-recovery.sh", &["--sla", "12", &sample]).status.code(),
        Some(1),
        "10/11 < 95%"
    );
    assert_eq!(
        run("analyze-recovery.sh", &["--min-samples", "12", &sample])
            .status
            .code(),
        Some(3)
    );
    let corrupt = run("analyze-recovery.sh", &[&fixture("recovery-corrupt.csv")]);
    assert_eq!(corrupt.status.code(), Some(2));
    let err = String::from_utf8_lossy(&corrupt.stderr);
    assert!(err.contains("recovery-corrupt.csv:4: recovered_s \"abc\""), "{err}");
    for bad in [["--sla", "ten"], ["--format", "xml"], ["--target", "101"]] {
        let out = run("analyze-recovery.sh", &[bad[0], bad[1], &sample]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(bad[1]), "{bad:?}");
    }
}

#[test]
fn analyzer_reads_the_service_histograms() {
    let _x = exclusive();
    let svc = Service::start(&[]);
    assert_eq!(svc.get("/ready").status, 200);
    assert_eq!(svc.post("/load/cpu?duration=1").status, 202);
    let down = poll(Duration::from_secs(2), Duration::from_millis(20), || {
        (svc.get("/ready").status == 503).then_some(())
    });
    assert!(down.is_some());
    let up = poll(Duration::from_secs(4), Duration::from_millis(20), || {
        (svc.get("/ready").status == 200).then_some(())
    });
    assert!(up.is_some());
    let url = format!("http://{}/metrics", svc.addr);
    let out = run(
        "analyze-recovery.sh",
        &["--metrics-url", &url, "--min-samples", "1", "--format", "json"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "one recovery of about 1 s is within the 10 s SLA"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["sources"][0];
    assert_eq!(s["kind"], "metrics");
    assert_eq!((s["rec_n"].as_u64(), s["det_n"].as_u64()), (Some(1), Some(1)));
    let mean = s["rec_mean"].as_f64().unwrap();
    assert!((0.8..2.0).contains(&mean), "{mean}");
    assert_eq!(s["within_sla"], 1);
    assert_eq!(s["sla_basis"], "le=10");
}

#[test]
fn generator_sends_the_token_when_given() {
    let _x = exclusive();
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0"), ("CHAOS_TOKEN", "gen-token")]);
    let dir = temp_dir("gen-auth");
    // One 1 s CPU iteration, with `extra` options; its row and stdout.
    let one_cycle = |name: &str, extra: &[&str]| {
        let csv = dir.join(name);
        let mut args = vec!["--iterations", "1", "--duration", "1"];
        args.extend_from_slice(extra);
        let out = generate(&svc, &csv, &args);
        assert!(out.status.success());
        assert!(
            !std::fs::read_to_string(&csv).unwrap().contains("gen-token"),
            "token in the file"
        );
        (rows(&csv).remove(0), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (row, _) = one_cycle("without.csv", &[]);
    assert_eq!(row[5], "trigger-failed");
    assert!(row[6].contains("HTTP 401"), "{row:?}");
    let (row, stdout) = one_cycle("with.csv", &["--token", "gen-token"]);
    assert_eq!(row[5], "recovered", "{row:?}");
    assert!(!stdout.contains("gen-token"), "token in the output: {stdout}");
}

/// A forced readiness failure: /ready is 503 for the fault's duration and
/// recovers without a restart.
#[test]
fn readiness_run_recovers_after_the_fault() {
    let _x = exclusive();
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let csv = temp_dir("gen-ready").join("results.csv");
    let out = generate(
        &svc,
        &csv,
        &[
            "--type",
            "readiness",
            "--iterations",
            "2",
            "--cooldown",
            "0",
            "--duration",
            "1",
        ],
    );
    assert!(out.status.success());
    let rows = rows(&csv);
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in &rows {
        assert_eq!(
            (row[1].as_str(), row[5].as_str()),
            ("readiness", "recovered"),
            "{row:?}"
        );
        // A poll's instant is when it was sent: on a loaded machine the
        // answer can come much later, so only bounds that cannot flake.
        assert!(secs(&row[3]) < 1.0, "{row:?}");
        assert!(secs(&row[4]) <= 3.0, "{row:?}");
    }
    // The service's own clock: two 1 s faults, each seen failing ~1 s.
    assert_eq!(svc.metric("readiness_failure_to_recovery_seconds_count"), 2.0);
    let sum = svc.metric("readiness_failure_to_recovery_seconds_sum");
    assert!((1.0..=6.0).contains(&sum), "{sum} s for two 1 s faults");
    assert_eq!(
        svc.metric("chaos_actions_total{action=\"readiness\",outcome=\"accepted\"}"),
        2.0
    );
}

/// A latency fault fails readiness through the p95 of GET /, which the
/// generator's own slow traffic feeds, and recovers once that ages out.
#[test]
fn latency_run_fails_readiness_through_slow_traffic() {
    let _x = exclusive();
    let svc = Service::start(&[
        ("CHAOS_COOLDOWN_SECONDS", "0"),
        ("MAX_LATENCY_MS", "100"),
        ("LATENCY_WINDOW_SECONDS", "2"),
    ]);
    let csv = temp_dir("gen-latency").join("results.csv");
    let out = generate(
        &svc,
        &csv,
        &[
            "--type",
            "latency",
            "--ms",
            "300",
            "--duration",
            "2",
            "--iterations",
            "1",
            "--timeout",
            "10",
        ],
    );
    assert!(out.status.success());
    let row = rows(&csv).remove(0);
    assert_eq!((row[1].as_str(), row[5].as_str()), ("latency", "recovered"), "{row:?}");
    assert!(secs(&row[3]) < 2.0, "{row:?}");
    assert!(secs(&row[4]) <= 8.0, "recovery after the 2 s window: {row:?}");
    let fast = svc.metric("http_request_duration_seconds_bucket{endpoint=\"/\",le=\"0.25\"}");
    let all = svc.metric("http_request_duration_seconds_count{endpoint=\"/\"}");
    assert_eq!(all, 10.0, "the generator sent ten GET /");
    assert!(all - fast >= 1.0, "slowed by the fault: {all} in all, {fast} fast");
}

/// A liveness fault leaves /ready alone: without a supervisor to restart
/// the process the row is no-degradation, but the fault was started (and
/// the option reaches the service).
#[test]
fn liveness_run_needs_a_supervisor() {
    let _x = exclusive();
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let csv = temp_dir("gen-live").join("results.csv");
    let out = generate(
        &svc,
        &csv,
        &[
            "--type",
            "liveness",
            "--mode",
            "fail",
            "--duration",
            "30",
            "--iterations",
            "1",
            "--timeout",
            "2",
        ],
    );
    assert!(out.status.success());
    let row = rows(&csv).remove(0);
    assert_eq!(
        (row[1].as_str(), row[5].as_str()),
        ("liveness", "no-degradation"),
        "{row:?}"
    );
    assert_eq!(svc.get("/health").status, 500, "the liveness fault runs");
    let listed = svc.get("/chaos").json();
    assert_eq!(listed["faults"][0]["detail"], "mode=fail", "{listed}");
    // Options that do not fit the type are refused before anything starts.
    for (args, message) in [
        (&["--type", "liveness", "--ms", "5"][..], "--ms is for --type latency"),
        (
            &["--type", "liveness", "--mode", "sleep"][..],
            "--mode \"sleep\": expected fail or hang",
        ),
        (
            &["--type", "crash", "--duration", "5"][..],
            "--duration is not for --type crash",
        ),
        (
            &["--type", "network"][..],
            "expected cpu, memory, crash, disk, readiness, latency or liveness",
        ),
        (
            &["--type", "disk", "--duration", "5"][..],
            "--duration is not for --type disk",
        ),
    ] {
        let out = generate(&svc, &csv, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(message), "{args:?}");
    }
}

/// `--type disk` against one pod: outside Kubernetes nothing evicts, so the
/// row is no-degradation; when the pod is killed after the fill (as the
/// kubelet evicts it), detection is the pod going dark and, since an evicted
/// pod never returns, the row is `timeout`. The help says where the time to
/// a replacement is measured instead.
#[test]
fn disk_run_detects_the_pod_going_dark_and_sends_replacement_timing_elsewhere() {
    let state = temp_dir("gen-disk");
    let svc = Service::start_in(&state, &[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let csv = temp_dir("gen-disk-out").join("results.csv");
    let args = ["--type", "disk", "--mb", "2", "--iterations", "1", "--timeout", "2"];
    let out = generate(&svc, &csv, &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(rows(&csv)[0][5], "no-degradation", "{:?}", rows(&csv));
    assert_eq!(svc.metric("chaos_disk_fill_bytes{state=\"written\"}"), (2 << 20) as f64);
    assert_eq!(svc.post("/chaos/stop").status, 200);

    // The "kubelet": kills the pod a little after the fill was answered.
    let csv = temp_dir("gen-disk-evicted").join("results.csv");
    let out = std::thread::scope(|scope| {
        let evictor = scope.spawn(|| {
            let filled = poll(Duration::from_secs(10), Duration::from_millis(5), || {
                (svc.event_count("CHAOS_FINISHED", 3) >= 3).then_some(())
            });
            std::thread::sleep(Duration::from_millis(300));
            // SAFETY: kill(2) on the test's own child.
            filled.is_some() && unsafe { libc::kill(svc.pid() as i32, libc::SIGKILL) } == 0
        });
        let out = generate(&svc, &csv, &args);
        assert!(evictor.join().unwrap(), "the second fill never finished");
        out
    });
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let row = &rows(&csv)[0];
    assert_eq!((row[1].as_str(), row[5].as_str()), ("disk", "timeout"), "{row:?}");
    assert!(secs(&row[3]) < 2.0 && row[4].is_empty(), "{row:?}");
    assert!(
        row[6].contains("first_down_code=000") && row[6].contains("still_code=000"),
        "{row:?}"
    );

    let help = run("chaos-generator.sh", &["--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "disk",
        "port-forward dies with its pod",
        "never becomes",
        "validate-matrix.sh",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}");
    }
    let bad = run("chaos-generator.sh", &["--type", "cpu", "--mb", "2"]);
    assert_eq!(bad.status.code(), Some(2));
}
