//! scripts/chaos-generator.sh and scripts/analyze-recovery.sh, run as a user
//! would, against the real binary and committed fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::harness::{Service, exclusive, free_port, poll, repo, temp_dir};

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

/// chaos-generator.sh against `svc` as `generate` runs it, but as a child
/// the test can signal, with its output piped.
fn spawn_generator(svc: &Service, csv: &Path, args: &[&str]) -> std::process::Child {
    Command::new("bash")
        .arg(script("chaos-generator.sh"))
        .args(["--url", &format!("http://{}", svc.addr), "--out", csv.to_str().unwrap()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

const HEADER: &str = "iteration,type,triggered_at_ms,detected_s,degraded_s,recovered_s,outcome,detail";

/// Columns of a results row.
const TYPE: usize = 1;
const DETECTED: usize = 3;
const DEGRADED: usize = 4;
const RECOVERED: usize = 5;
const OUTCOME: usize = 6;
const DETAIL: usize = 7;

/// The data rows of a results file, split into their 8 fields.
fn rows(csv: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(csv).expect("results file");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(HEADER));
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
        assert_eq!(row.len(), 8, "{row:?}");
        assert_eq!(row[0], (i + 1).to_string());
        assert_eq!(row[TYPE], "cpu");
        assert_eq!(row[OUTCOME], "recovered", "{row:?}");
        // Reported to the millisecond.
        assert!(row[DETECTED].split('.').nth(1).is_some_and(|d| d.len() == 3), "{row:?}");
        let (detected, degraded, recovered) = (secs(&row[DETECTED]), secs(&row[DEGRADED]), secs(&row[RECOVERED]));
        assert!(detected < 1.5, "detection {detected}");
        // Degraded for the 1 s load, recovered soon after its end.
        assert!((0.3..=1.5).contains(&degraded), "degraded {degraded}");
        assert!(recovered <= 1.5, "recovery {recovered} s after the load's end");
        assert!(row[DETAIL].contains("restart=no"), "{row:?}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("summary: 3 of 3 iterations finished, 3 recovered"),
        "{stdout}"
    );
    // The service saw the same cycles.
    assert_eq!(svc.metric("readiness_failure_to_recovery_seconds_count"), 3.0);
    assert_eq!(svc.metric("fault_end_to_recovery_seconds_count{fault=\"cpu\"}"), 3.0);
}

/// A leak past MAX_MEMORY_MB_READY with no memory limit and no restart:
/// the service releases it after the ramp and the hold, so each row is
/// recovered, timed from that release, and no leak is left after the run.
/// (Before issue 22 the first row was a timeout, the next trigger-failed,
/// and the leak stayed.)
#[test]
fn memory_run_recovers_from_the_release_and_leaves_no_leak() {
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
            "--ramp",
            "1",
            "--hold",
            "2",
            "--iterations",
            "2",
        ],
    );
    assert!(out.status.success());
    let found = rows(&csv);
    assert_eq!(found.len(), 2, "{found:?}");
    for row in &found {
        assert_eq!(row[OUTCOME], "recovered", "{row:?}");
        // Past 40 of 64 MiB about 0.6 s into the 1 s ramp; released 2 s
        // after it: about 2.4 s degraded.
        assert!(secs(&row[DETECTED]) < 1.5, "{row:?}");
        assert!((1.0..=3.5).contains(&secs(&row[DEGRADED])), "{row:?}");
        assert!(secs(&row[RECOVERED]) < 1.0, "{row:?}");
        assert!(row[DETAIL].contains("restart=no"), "{row:?}");
    }
    assert_eq!(svc.metric("fault_end_to_recovery_seconds_count{fault=\"memory\"}"), 2.0);
    // Below the threshold nothing degrades; the run ends with its leak held,
    // and the generator releases it on the way out.
    let csv = temp_dir("gen-mem-held").join("results.csv");
    let out = generate(
        &svc,
        &csv,
        &[
            "--type",
            "memory",
            "--mb",
            "8",
            "--ramp",
            "1",
            "--hold",
            "600",
            "--iterations",
            "1",
        ],
    );
    assert!(out.status.success());
    assert_eq!(rows(&csv)[0][OUTCOME], "no-degradation");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("stopped the memory fault it started: DELETE /load/memory answered 200"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(svc.metric("chaos_leaked_bytes"), 0.0);
    assert_eq!(svc.get("/chaos").json()["active"], 0);
}

/// TERM while a readiness fault keeps /ready failing: the generator stops
/// the fault it started, prints the summary and exits 130; the pod is
/// ready again at once. (Before issue 22 the fault ran on.)
#[test]
fn sigterm_during_a_row_stops_the_fault_it_started() {
    let _x = exclusive();
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let csv = temp_dir("gen-term").join("results.csv");
    let child = spawn_generator(
        &svc,
        &csv,
        &["--type", "readiness", "--duration", "120", "--iterations", "3"],
    );
    let failing = poll(Duration::from_secs(10), Duration::from_millis(50), || {
        (svc.get("/ready").status == 503).then_some(())
    });
    assert!(failing.is_some(), "the readiness fault never showed");
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on our own child with a valid signal.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(130), "{stdout}{stderr}");
    assert!(stdout.contains("summary: 0 of 3 iterations finished"), "{stdout}");
    assert!(
        stderr.contains("stopped the readiness fault it started: DELETE /fault/readiness answered 200"),
        "{stderr}"
    );
    assert_eq!(svc.get("/chaos").json()["active"], 0);
    assert_eq!(svc.get("/ready").status, 200);
}

/// TERM while the trigger's POST is still in flight (a 192 MiB disk fill
/// answers once written, about a second here): bash runs the trap only
/// after that curl returns, and the fault the POST started must be stopped
/// too. (Before, the generator exited 130 and left the fill on disk, its
/// slot held: `GET /chaos` listed it.)
#[test]
fn sigterm_while_the_trigger_is_in_flight_stops_what_it_started() {
    let _x = exclusive();
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let csv = temp_dir("gen-term-trigger").join("results.csv");
    let child = spawn_generator(&svc, &csv, &["--type", "disk", "--mb", "192", "--iterations", "1"]);
    let sent = poll(Duration::from_secs(10), Duration::from_millis(10), || {
        svc.stderr().contains("\"CHAOS_STARTED\"").then_some(())
    });
    assert!(sent.is_some(), "the fill never started\n{}", svc.stderr());
    assert_eq!(
        svc.get("/chaos").json()["faults"][0]["writing"],
        true,
        "still in flight"
    );
    // SAFETY: kill(2) on our own child with a valid signal.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(130), "{stdout}{stderr}");
    assert!(
        stderr.contains("stopped the disk fault it started: DELETE /load/disk answered 200"),
        "{stderr}"
    );
    assert_eq!(svc.get("/chaos").json()["active"], 0, "{}", svc.get("/chaos").body);
}

#[test]
fn sigint_after_the_first_iteration_keeps_a_valid_file() {
    let _x = exclusive();
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let csv = temp_dir("gen-int").join("results.csv");
    let child = spawn_generator(
        &svc,
        &csv,
        &[
            "--type",
            "cpu",
            "--iterations",
            "5",
            "--cooldown",
            "30",
            "--duration",
            "1",
        ],
    );
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
    assert_eq!(rows[0][OUTCOME], "recovered");
    // The file is valid input for the analyzer (INCONCLUSIVE: one sample).
    let analysis = run("analyze-recovery.sh", &[csv.to_str().unwrap()]);
    assert_eq!(analysis.status.code(), Some(3));
}

#[test]
fn analyzer_prints_hand_computed_figures_in_every_format() {
    let sample = fixture("recovery-sample.csv");
    // By hand: recovered 1..9 and 12 s (n 10): mean 5.7, p50 rank 5 = 5,
    // p95 rank 10 = 12, worst 12. Degraded 2 s each. Detected 0.1..1.0 and
    // 0.5 (n 11): mean 6/11 = 0.545, p50 rank 6 = 0.5, p95 rank 11 = 1.0.
    // Within 10 s: 9 of 11 detected (the timeout is a miss) = 81.82%.
    let text = run("analyze-recovery.sh", &[&sample]);
    assert_eq!(text.status.code(), Some(1), "81.82% < 95%: FAIL");
    let text = String::from_utf8_lossy(&text.stdout);
    for line in [
        "types: cpu",
        "  iterations: 13 (recovered 10, timeout 1, no-degradation 1, trigger-failed 1)",
        "  recovery (s, fault's end to ready): n 10, mean 5.700, p50 5.000, p95 12.000, worst 12.000",
        "  degraded (s, first failure to the fault's end): n 10, mean 2.000, p50 2.000, p95 2.000, worst 2.000",
        "  detection (s, trigger to first failure): n 11, mean 0.545, p50 0.500, p95 1.000, worst 1.000",
        "  SLA: 9 of 11 detected faults recovered within 10 s of their end = 81.82% (target 95%, basis exact)",
        "verdict: FAIL",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }

    let json = run("analyze-recovery.sh", &["--format", "json", &sample]);
    assert_eq!(json.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON output");
    let s = &v["sources"][0]["all"];
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
    assert_eq!(s["deg_mean"].as_f64(), Some(2.0));
    assert_eq!(s["compliance"].as_f64(), Some(81.82));
    assert_eq!(s["outcomes"]["timeout"], 1);
    assert_eq!(v["sources"][0]["types"]["cpu"], *s, "one type: the same figures");

    let md = run("analyze-recovery.sh", &["--format", "markdown", &sample]);
    assert_eq!(md.status.code(), Some(1));
    let md = String::from_utf8_lossy(&md.stdout);
    for line in [
        "| mean | 5.700 | 2.000 | 0.545 |",
        "| p50 | 5.000 | 2.000 | 0.500 |",
        "| p95 | 12.000 | 2.000 | 1.000 |",
        "| worst | 12.000 | 2.000 | 1.000 |",
        "| recovered within 10 s | 9 of 11 detected faults recovered within 10 s of their end = 81.82% (target 95%, basis exact) |",
        "| verdict | **FAIL** |",
    ] {
        assert!(md.lines().any(|l| l == line), "missing {line:?} in\n{md}");
    }
}

/// Two files pooled: the figures of all faults, then of each type. Under
/// --min-samples a type's values are printed one by one with their count,
/// and it says why no percentile is given; nothing reads "n/a".
#[test]
fn analyzer_breaks_pooled_files_down_by_type() {
    let (cpu, memory) = (fixture("recovery-sample.csv"), fixture("recovery-memory.csv"));
    let out = run("analyze-recovery.sh", &[&cpu, &memory]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "types: cpu memory",
        "all types:",
        "  iterations: 16 (recovered 13, timeout 1, no-degradation 1, trigger-failed 1)",
        "type cpu:",
        "  recovery (s, fault's end to ready): n 10, mean 5.700, p50 5.000, p95 12.000, worst 12.000",
        "type memory:",
        "  iterations: 3 (recovered 3, timeout 0, no-degradation 0, trigger-failed 0)",
        "  recovery (s, fault's end to ready): n 3, mean 5.417, worst 15.200; values: 0.410 0.640 15.200 (no p50/p95: fewer than 10 samples, --min-samples)",
        "  SLA: 2 of 3 detected faults recovered within 10 s of their end = 66.67% (target 95%, basis exact)",
        "  verdict: INCONCLUSIVE",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert!(!text.contains("n/a"), "{text}");
    let json = run("analyze-recovery.sh", &["--format", "json", &cpu, &memory]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let m = &v["sources"][0]["types"]["memory"];
    assert_eq!(m["rec_values"], serde_json::json!([0.41, 0.64, 15.2]));
    assert_eq!(m["rec_p50"], serde_json::Value::Null);
    // No detected fault at all: no percentage, and it says why.
    let dir = temp_dir("analyze-none");
    let none = dir.join("none.csv");
    std::fs::write(&none, format!("{HEADER}\n1,cpu,1,,,,trigger-failed,HTTP 429\n")).unwrap();
    for format in ["text", "markdown", "json"] {
        let out = run("analyze-recovery.sh", &["--format", format, none.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(3), "{format}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("n/a"), "{format}: {text}");
        if format != "json" {
            assert!(
                text.contains("no detected faults, so no compliance"),
                "{format}: {text}"
            );
        }
    }
    // A file of the generator before degraded_s existed is refused, named.
    let old = dir.join("old.csv");
    std::fs::write(
        &old,
        "iteration,type,triggered_at_ms,detected_s,recovered_s,outcome,detail\n1,cpu,1,0.1,1.0,recovered,x\n",
    )
    .unwrap();
    let out = run("analyze-recovery.sh", &[old.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("old.csv:1: written by an older chaos-generator.sh"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The generator's file saved with Windows line endings (opened and saved
/// in a spreadsheet) gives the same figures and verdict. Before, it was
/// refused with "expected the header \"...\", found \"...\"": two strings
/// that printed the same, the difference an invisible carriage return.
#[test]
fn analyzer_reads_a_file_with_windows_line_endings() {
    let sample = fixture("recovery-sample.csv");
    let crlf = temp_dir("crlf").join("recovery-sample.csv");
    std::fs::write(&crlf, std::fs::read_to_string(&sample).unwrap().replace('\n', "\r\n")).unwrap();
    let (a, b) = (
        run("analyze-recovery.sh", &[&sample]),
        run("analyze-recovery.sh", &[crlf.to_str().unwrap()]),
    );
    assert_eq!(
        b.status.code(),
        a.status.code(),
        "{}",
        String::from_utf8_lossy(&b.stderr)
    );
    let body = |o: &Output| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .skip(1)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(body(&b), body(&a));
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
        "one recovery within the 10 s SLA of the load's end"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["sources"][0]["all"];
    assert_eq!(v["sources"][0]["kind"], "metrics");
    assert_eq!(
        (s["rec_n"].as_u64(), s["deg_n"].as_u64(), s["det_n"].as_u64()),
        (Some(1), Some(1), Some(1))
    );
    // Recovery from the load's end (polled every 20 ms); degraded about 1 s.
    let (recovered, degraded) = (s["rec_mean"].as_f64().unwrap(), s["deg_mean"].as_f64().unwrap());
    assert!(recovered < 0.5, "{recovered}");
    assert!((0.8..2.0).contains(&degraded), "{degraded}");
    assert_eq!(s["within_sla"], 1);
    assert_eq!(s["sla_basis"], "le=10");
    assert_eq!(v["sources"][0]["types"]["cpu"]["rec_n"], 1);
    // Under --min-samples the buckets are given, not percentiles.
    let out = run("analyze-recovery.sh", &["--metrics-url", &url]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("values: 1 in (") && text.contains("no p50/p95: fewer than 10 samples"),
        "{text}"
    );
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
    assert_eq!(row[OUTCOME], "trigger-failed");
    assert!(row[DETAIL].contains("HTTP 401"), "{row:?}");
    let (row, stdout) = one_cycle("with.csv", &["--token", "gen-token"]);
    assert_eq!(row[OUTCOME], "recovered", "{row:?}");
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
            (row[TYPE].as_str(), row[OUTCOME].as_str()),
            ("readiness", "recovered"),
            "{row:?}"
        );
        // A poll's instant is when it was sent: on a loaded machine the
        // answer can come much later, so only bounds that cannot flake.
        assert!(secs(&row[DETECTED]) < 1.0, "{row:?}");
        assert!(secs(&row[DEGRADED]) <= 1.5, "{row:?}");
        assert!(secs(&row[RECOVERED]) <= 1.5, "{row:?}");
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
    assert_eq!(
        (row[TYPE].as_str(), row[OUTCOME].as_str()),
        ("latency", "recovered"),
        "{row:?}"
    );
    assert!(secs(&row[DETECTED]) < 2.0, "{row:?}");
    // From the fault's end: the slow answers age out of the 2 s window.
    assert!(secs(&row[RECOVERED]) <= 6.0, "recovery after the 2 s window: {row:?}");
    let fast = svc.metric("http_request_duration_seconds_bucket{endpoint=\"/\",le=\"0.25\"}");
    let all = svc.metric("http_request_duration_seconds_count{endpoint=\"/\"}");
    assert_eq!(all, 10.0, "the generator sent ten GET /");
    assert!(all - fast >= 1.0, "slowed by the fault: {all} in all, {fast} fast");
}

/// A liveness fault fails /health and leaves /ready alone. Without a
/// supervisor to restart the process, the fault ends with its duration and
/// the row says restart=no; the option reaches the service.
#[test]
fn liveness_run_without_a_supervisor_says_no_restart() {
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
            "2",
            "--iterations",
            "1",
            "--timeout",
            "5",
        ],
    );
    assert!(out.status.success());
    let row = rows(&csv).remove(0);
    assert_eq!(
        (row[TYPE].as_str(), row[OUTCOME].as_str()),
        ("liveness", "recovered"),
        "{row:?}"
    );
    assert!(secs(&row[DETECTED]) < 1.0, "/health fails at once: {row:?}");
    assert!(
        (1.0..=2.5).contains(&secs(&row[DEGRADED])),
        "until its 2 s end: {row:?}"
    );
    assert!(
        row[DETAIL].contains("first_down_code=500") && row[DETAIL].contains("restart=no"),
        "{row:?}"
    );
    let started = svc
        .events()
        .into_iter()
        .find(|e| e["event"] == "CHAOS_STARTED")
        .unwrap();
    assert_eq!(started["detail"], "mode=fail", "{started}");
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
            "expected cpu, memory, crash, disk, readiness, latency, liveness, errors, crashloop or startup",
        ),
        (
            &["--type", "disk", "--duration", "5"][..],
            "--duration is not for --type disk",
        ),
    ] {
        assert_refused(&svc, &csv, args, message);
    }
}

/// Options that do not fit are refused (exit 2, the message on stderr)
/// before anything starts.
fn assert_refused(svc: &Service, csv: &Path, args: &[&str], message: &str) {
    let out = generate(svc, csv, args);
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(message), "{args:?}");
}

/// `--type errors`: detection is the first GET / that fails, what users
/// get, while /ready stays 200; the generator counts the GET / that failed
/// until the fault's end (exactly half at 50%: every other request, so
/// within one of half of what it sent), and the first 200 after the end is
/// the recovery. Resets show as 000. Options that do not fit are refused.
#[test]
fn errors_run_detects_failing_user_traffic_and_counts_it() {
    let _x = exclusive();
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let csv = temp_dir("gen-errors").join("results.csv");
    for (mode, code, first_down) in [("status", "502", "502"), ("reset", "", "000")] {
        let mut args = vec![
            "--type",
            "errors",
            "--percent",
            "50",
            "--mode",
            mode,
            "--duration",
            "2",
            "--iterations",
            "1",
            "--timeout",
            "5",
            "--poll-ms",
            "50",
        ];
        if !code.is_empty() {
            args.extend(["--code", code]);
        }
        let out = generate(&svc, &csv, &args);
        assert!(out.status.success());
        let row = rows(&csv).pop().unwrap();
        assert_eq!(
            (row[TYPE].as_str(), row[OUTCOME].as_str()),
            ("errors", "recovered"),
            "{row:?}"
        );
        assert!(secs(&row[DETECTED]) < 1.0, "{mode}: {row:?}");
        assert!((1.0..=2.5).contains(&secs(&row[DEGRADED])), "{mode}: {row:?}");
        assert!(secs(&row[RECOVERED]) < 1.0, "{mode}: {row:?}");
        assert!(
            row[DETAIL].contains(&format!("first_down_code={first_down}")),
            "{row:?}"
        );
        let counted = row[DETAIL]
            .split(';')
            .find_map(|kv| kv.strip_prefix("get_failed="))
            .unwrap_or_else(|| panic!("no get_failed: {row:?}"));
        let (failed, sent) = counted.split_once('/').unwrap();
        let (failed, sent): (i64, i64) = (failed.parse().unwrap(), sent.parse().unwrap());
        assert!(sent >= 10, "{row:?}");
        assert!((failed - sent / 2).abs() <= 1, "{mode}: {failed} of {sent} at 50%");
        assert_eq!(svc.get("/ready").status, 200);
    }
    for (args, message) in [
        (
            &["--type", "errors", "--mode", "hang"][..],
            "expected status, reset, close or stall",
        ),
        (
            &["--type", "errors", "--percent", "101"][..],
            "--percent \"101\": expected 1 to 100",
        ),
        (
            &["--type", "errors", "--mode", "reset", "--code", "500"][..],
            "--code is for --mode status",
        ),
        (
            &["--type", "cpu", "--percent", "5"][..],
            "--percent and --code are for --type errors",
        ),
    ] {
        assert_refused(&svc, &csv, args, message);
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
    assert_eq!(rows(&csv)[0][OUTCOME], "no-degradation", "{:?}", rows(&csv));
    // The fill stays until removed: the generator removes the one it made.
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("stopped the disk fault it started: DELETE /load/disk answered 200"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(svc.metric("chaos_disk_fill_bytes{state=\"written\"}"), 0.0);

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
    assert_eq!(
        (row[TYPE].as_str(), row[OUTCOME].as_str()),
        ("disk", "timeout"),
        "{row:?}"
    );
    assert!(secs(&row[DETECTED]) < 2.0 && row[RECOVERED].is_empty(), "{row:?}");
    assert!(
        row[DETAIL].contains("first_down_code=000") && row[DETAIL].contains("still_code=000"),
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

/// `--type liveness` with a supervisor, as the kubelet is: once /health
/// has failed for a second it stops the process (SIGTERM) and starts it
/// again with the same STATE_DIR and port. The generator detects the
/// failure on /health, the restart by the start time in /metrics, and times
/// the recovery from the death; the service's own figure, kept across the
/// restart, agrees. (Before issue 22 the row was no-degradation.)
#[test]
fn liveness_run_detects_the_restart_a_supervisor_makes() {
    let _x = exclusive();
    let state = temp_dir("gen-live-restart");
    let port = free_port().to_string();
    let env = [("CHAOS_COOLDOWN_SECONDS", "0"), ("PORT", port.as_str())];
    let first = Service::start_in(&state, &env);
    let url = format!("http://{}", first.addr);
    let csv = temp_dir("gen-live-restart-out").join("results.csv");
    let (out, second) = std::thread::scope(|scope| {
        let kubelet = scope.spawn(|| {
            let mut svc = first;
            let failing = poll(Duration::from_secs(20), Duration::from_millis(100), || {
                (svc.get("/health").status != 200).then_some(())
            });
            assert!(failing.is_some(), "the liveness fault never showed");
            std::thread::sleep(Duration::from_secs(1));
            svc.signal(libc::SIGTERM);
            svc.wait_exit(Duration::from_secs(5)).expect("stops on SIGTERM");
            Service::start_in(&state, &env)
        });
        let out = run(
            "chaos-generator.sh",
            &[
                "--url",
                &url,
                "--out",
                csv.to_str().unwrap(),
                "--type",
                "liveness",
                "--duration",
                "30",
                "--iterations",
                "1",
                "--timeout",
                "10",
            ],
        );
        (out, kubelet.join().unwrap())
    });
    assert!(out.status.success());
    let row = rows(&csv).remove(0);
    assert_eq!(
        (row[TYPE].as_str(), row[OUTCOME].as_str()),
        ("liveness", "recovered"),
        "{row:?}"
    );
    assert!(
        row[DETAIL].contains("first_down_code=500") && row[DETAIL].contains("restart=yes"),
        "{row:?}"
    );
    // Degraded from the first failing /health to the death, about a second.
    assert!((0.5..=4.0).contains(&secs(&row[DEGRADED])), "{row:?}");
    let seen = secs(&row[RECOVERED]);
    let (n, sum) = (
        second.metric("fault_end_to_recovery_seconds_count{fault=\"liveness\"}"),
        second.metric("fault_end_to_recovery_seconds_sum{fault=\"liveness\"}"),
    );
    assert_eq!(n, 1.0, "{}", second.stderr());
    assert!(
        (sum - seen).abs() <= 0.5,
        "the service says {sum:.3} s from the death to ready, the generator {seen:.3} s"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("restarts 1;"));
}

/// Every wait says so on stderr at least every 5 s: here a 429's
/// Retry-After (the service's 9 s cooldown), which the generator then waits
/// ahead of instead of being refused again.
#[test]
fn waits_are_announced_and_a_cooldown_is_waited_ahead_after_one_429() {
    let _x = exclusive();
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "9")]);
    let csv = temp_dir("gen-waits").join("results.csv");
    let mut child = spawn_generator(&svc, &csv, &["--type", "cpu", "--duration", "1", "--iterations", "3"]);
    // Each stderr line with when it arrived.
    let lines: Vec<(std::time::Instant, String)> = {
        use std::io::BufRead;
        let reader = std::io::BufReader::new(child.stderr.take().unwrap());
        reader
            .lines()
            .map_while(Result::ok)
            .map(|l| (std::time::Instant::now(), l))
            .collect()
    };
    let status = child.wait().unwrap();
    let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    assert!(status.success(), "{text:#?}");
    let refused = text
        .iter()
        .position(|l| {
            l.contains("429 from the guardrails: the service's cooldown (CHAOS_COOLDOWN_SECONDS); waiting Retry-After")
        })
        .unwrap_or_else(|| panic!("no 429 line: {text:#?}"));
    assert!(
        text.iter()
            .any(|l| l.contains("waiting") && l.contains("for the service's cooldown (about")),
        "the third trigger waits ahead: {text:#?}"
    );
    // From the 429 on, no silence longer than 5 s (and a little slack).
    let gaps = lines[refused..].windows(2).map(|w| w[1].0.duration_since(w[0].0));
    let longest = gaps.max().unwrap_or_default();
    assert!(
        longest <= Duration::from_millis(6_000),
        "{longest:?} of silence: {text:#?}"
    );
    assert!(text.iter().any(|l| l.starts_with("  ... waiting for ")), "{text:#?}");
    assert!(rows(&csv).iter().all(|r| r[OUTCOME] == "recovered"), "{:?}", rows(&csv));
    assert_eq!(
        svc.metric("chaos_actions_total{action=\"cpu\",outcome=\"rejected\"}"),
        1.0,
        "one 429, then waited ahead"
    );
}

/// A 429 for a slot another fault holds names that fault and the slot, even
/// when the cooldown has not passed either (its body names both): it used
/// to say "the service's cooldown" while a latency fault nobody in the run
/// started was what the wait was for.
#[test]
fn a_429_for_a_held_slot_says_which_fault_holds_it() {
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "3")]);
    assert_eq!(svc.post("/load/latency?duration=4&ms=1").status, 202);
    let csv = temp_dir("gen-slot").join("results.csv");
    let out = generate(
        &svc,
        &csv,
        &["--type", "readiness", "--duration", "1", "--iterations", "1"],
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "429 from the guardrails: a running fault (latency) holds the slot (MAX_CONCURRENT_CHAOS); waiting Retry-After"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("the service's cooldown"), "{stderr}");
    let rows = rows(&csv);
    assert_eq!(rows[0][OUTCOME], "recovered", "{rows:?}");
    assert!(rows[0][DETAIL].starts_with("guardrail_wait_s="), "{rows:?}");
}

/// With --min-samples 0, a file with no detected fault has no compliance:
/// it used to be FAIL (exit 1), or PASS (exit 0) with --target 0.
#[test]
fn analyzer_without_a_detected_fault_is_inconclusive_whatever_min_samples() {
    let csv = temp_dir("ana-none").join("results.csv");
    std::fs::write(&csv, format!("{HEADER}\n1,cpu,1,,,,no-degradation,x\n")).unwrap();
    for target in ["95", "0"] {
        let out = run(
            "analyze-recovery.sh",
            &["--min-samples", "0", "--target", target, csv.to_str().unwrap()],
        );
        assert_eq!(out.status.code(), Some(3), "--target {target}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("verdict: INCONCLUSIVE"), "{text}");
        assert!(text.contains("no detected faults, so no compliance"), "{text}");
    }
}
