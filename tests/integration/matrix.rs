//! scripts/validate-matrix.sh without a cluster: the triggers go to the real
//! binary (`--url`), and the Kubernetes side is replayed from recorded
//! `kubectl get -o json` outputs (tests/matrix/fake-kubectl.sh). The fixtures
//! are written by hand from the Kubernetes API reference and kept to the
//! fields the script reads: a Pod's status.podIP, Ready condition and
//! containerStatuses[0] (restartCount, lastState.terminated), an
//! EndpointSlice list's endpoints, an HPA's status. The JSONPath extraction
//! itself runs in the real kubectl. The observer pods' logs are a real
//! observer's output (run here against the binary), edited per case.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Service, poll, repo, temp_dir};
use crate::observer::observe;

const IP: &str = "10.244.1.7";
const POD: &str = "chaos-backend-7d9f-abcde";
const IMAGE: &str = "registry.example/chaos-backend:0.1.0";

fn pod(restarts: u32, terminated: Option<(&str, i32)>, ready: bool) -> Value {
    let last_state = match terminated {
        Some((reason, code)) => {
            json!({"terminated": {"reason": reason, "exitCode": code, "finishedAt": "2026-11-29T10:00:00Z"}})
        }
        None => json!({}),
    };
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": POD, "namespace": "chaos-lab", "labels": {"app.kubernetes.io/name": "chaos-backend"}},
        "spec": {"containers": [{"name": "chaos-backend", "image": IMAGE}]},
        "status": {
            "phase": "Running",
            "podIP": IP,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            "containerStatuses": [{"name": "chaos-backend", "ready": ready, "restartCount": restarts, "lastState": last_state}]
        }
    })
}

fn pods_list() -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": [pod(0, None, true)]})
}

fn slices(ready: Option<bool>) -> Value {
    let endpoints: Vec<Value> = ready
        .map(|r| vec![json!({"addresses": [IP], "conditions": {"ready": r}})])
        .unwrap_or_default();
    json!({"apiVersion": "v1", "kind": "List", "items": [{
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "chaos-backend-x7k2p", "namespace": "chaos-lab", "labels": {"kubernetes.io/service-name": "chaos-backend"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }]})
}

fn hpa(desired: u32) -> Value {
    json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "chaos-backend", "namespace": "chaos-lab"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chaos-backend"}, "minReplicas": 2, "maxReplicas": 6},
        "status": {"currentReplicas": 2, "desiredReplicas": desired}
    })
}

/// Writes the recorded observations: `kind.1.json`, `kind.2.json`, ...,
/// and a healthy observer's log for every row.
fn fixtures(series: &[(&str, Vec<Value>)]) -> PathBuf {
    fixtures_with_observer(series, &[healthy_log()])
}

/// As `fixtures`, with the observer logs given (`observer.1.jsonl`, ...).
fn fixtures_with_observer(series: &[(&str, Vec<Value>)], logs: &[String]) -> PathBuf {
    let dir = temp_dir("matrix-fixtures");
    for (kind, objects) in series {
        for (i, o) in objects.iter().enumerate() {
            std::fs::write(dir.join(format!("{kind}.{}.json", i + 1)), o.to_string()).unwrap();
        }
    }
    for (i, log) in logs.iter().enumerate() {
        std::fs::write(dir.join(format!("observer.{}.jsonl", i + 1)), log).unwrap();
    }
    dir
}

/// A real observer's log: one second of GET / against the binary, as the
/// pod POD (its HOSTNAME), with no fault. Made once per test run.
fn healthy_log() -> String {
    static LOG: OnceLock<String> = OnceLock::new();
    LOG.get_or_init(|| observed_second(None, "ok", 20)).clone()
}

/// A real observer's log of one second of GET / at 20 a second against the
/// binary, as the pod POD, with the fault `start` started first (if any);
/// its summary's `field` (`ok`, `errors.http_5xx`) must be `expected`.
fn observed_second(start: Option<&str>, field: &str, expected: u64) -> String {
    let svc = Service::start(&[("HOSTNAME", POD)]);
    if let Some(path) = start {
        assert_eq!(svc.post(path).status, 202, "{path}");
    }
    let run = observe(
        &[
            "--url",
            &format!("http://{}/", svc.addr),
            "--rate",
            "20",
            "--duration",
            "1",
        ],
        Duration::from_secs(20),
    );
    let got = field.split('.').fold(&run.summary, |v, k| &v[k]);
    assert_eq!(got, expected, "{field}: {}", run.describe());
    String::from_utf8(run.output.stdout).unwrap()
}

/// The healthy log with its summary edited by `edit`.
fn observer_log(edit: impl FnOnce(&mut Value)) -> String {
    let log = healthy_log();
    let (lines, summary) = log.trim_end().rsplit_once('\n').unwrap_or(("", log.trim_end()));
    let mut summary: Value = serde_json::from_str(summary).unwrap();
    edit(&mut summary["summary"]);
    format!("{lines}\n{summary}\n")
}

fn script() -> PathBuf {
    repo().join("scripts/validate-matrix.sh")
}

fn fake_kubectl() -> PathBuf {
    repo().join("tests/matrix/fake-kubectl.sh")
}

fn hypotheses(lines: &str) -> PathBuf {
    let file = temp_dir("matrix-hyp").join("hypotheses");
    std::fs::write(&file, lines).unwrap();
    file
}

fn command(svc: &Service, fixtures: &Path, rows: &str, hyp: &Path, out: &Path) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(script())
        .args([
            "--namespace",
            "chaos-lab",
            "--rows",
            rows,
            "--poll",
            "0.05",
            "--observer-tail",
            "0",
        ])
        .arg("--url")
        .arg(format!("http://{}", svc.addr))
        .arg("--hypotheses")
        .arg(hyp)
        .arg("--out")
        .arg(out)
        .env("KUBECTL", fake_kubectl())
        .env("FIXTURES", fixtures);
    cmd
}

fn run_matrix(svc: &Service, fixtures: &Path, rows: &str, hyp: &Path) -> (Output, String, Vec<Value>) {
    let out_dir = temp_dir("matrix-out");
    let out = command(svc, fixtures, rows, hyp, &out_dir)
        .output()
        .expect("run validate-matrix.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out, stdout, journal(&out_dir))
}

fn journal(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("journal.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("journal line is not JSON ({e}): {l}")))
        .collect()
}

fn verdict_line<'a>(stdout: &'a str, row: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("| {row} |")))
        .unwrap_or_else(|| panic!("no verdict for {row}"))
}

#[test]
#[ignore = "needs kubectl: scripts/test.sh runs it"]
fn crash_row_passes_on_a_restart_with_the_abort_code_then_ready() {
    let svc = Service::start(&[]);
    let fx = fixtures(&[
        ("pods", vec![pods_list()]),
        (
            "pod",
            vec![
                pod(0, None, true),
                pod(0, None, true),
                pod(1, Some(("Error", 139)), false),
                pod(1, Some(("Error", 139)), true),
            ],
        ),
    ]);
    let (out, stdout, journal) = run_matrix(
        &svc,
        &fx,
        "crash",
        &hypotheses("crash.restart_within=5\ncrash.ready_within=5\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(verdict_line(&stdout, "crash").ends_with("| PASS |"));
    assert!(verdict_line(&stdout, "crash").contains("exit code 139"));
    assert!(
        journal.iter().any(|j| j["phase"] == "trigger" && j["code"] == "202"),
        "the real binary took the crash"
    );
}

#[test]
#[ignore = "needs kubectl: scripts/test.sh runs it"]
fn crash_row_fails_on_another_exit_code_or_no_restart() {
    let hyp = hypotheses("crash.restart_within=1\ncrash.ready_within=1\n");
    let svc = Service::start(&[]);
    let fx = fixtures(&[
        ("pods", vec![pods_list()]),
        ("pod", vec![pod(0, None, true), pod(1, Some(("Error", 1)), true)]),
    ]);
    let (out, stdout, _) = run_matrix(&svc, &fx, "crash", &hyp);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(verdict_line(&stdout, "crash").contains("exit code 1,"), "{stdout}");
    let svc = Service::start(&[]);
    let fx = fixtures(&[("pods", vec![pods_list()]), ("pod", vec![pod(0, None, true)])]);
    let (out, stdout, _) = run_matrix(&svc, &fx, "crash", &hyp);
    assert_eq!(out.status.code(), Some(1));
    assert!(verdict_line(&stdout, "crash").contains("no restart seen"));
}

#[test]
#[ignore = "needs kubectl: scripts/test.sh runs it"]
fn oom_row_fails_when_the_restart_reason_is_error() {
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let restart = |reason| {
        vec![
            pod(0, None, true),
            pod(1, Some((reason, 137)), false),
            pod(1, Some((reason, 137)), true),
        ]
    };
    let hyp = hypotheses(
        "oom.within=5\noom.ready_within=5\n# the host has no limit to exceed\noom.trigger=/load/memory?mb=1\n",
    );
    let fx = fixtures(&[("pods", vec![pods_list()]), ("pod", restart("OOMKilled"))]);
    let (out, stdout, _) = run_matrix(&svc, &fx, "oom", &hyp);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let fx = fixtures(&[("pods", vec![pods_list()]), ("pod", restart("Error"))]);
    let (out, stdout, _) = run_matrix(&svc, &fx, "oom", &hyp);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = verdict_line(&stdout, "oom");
    assert!(line.ends_with("| FAIL |") && line.contains("reason Error"), "{line}");
}

#[test]
#[ignore = "needs kubectl: scripts/test.sh runs it"]
fn degraded_row_passes_when_the_endpoint_leaves_and_returns() {
    let svc = Service::start(&[]);
    let fx = fixtures(&[
        ("pods", vec![pods_list()]),
        ("pod", vec![pod(0, None, true)]),
        (
            "endpointslices",
            vec![
                slices(Some(true)),
                slices(Some(false)),
                slices(None),
                slices(Some(true)),
            ],
        ),
    ]);
    let (out, stdout, journal) = run_matrix(
        &svc,
        &fx,
        "degraded",
        &hypotheses("degraded.removed_within=5\ndegraded.back_within=5\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(verdict_line(&stdout, "degraded").ends_with("| PASS |"));
    assert!(journal.iter().any(|j| j["endpoint"] == "not-ready"));
    assert!(journal.iter().any(|j| j["phase"] == "release" && j["code"] == "200"));
    assert_eq!(svc.get("/ready").status, 200, "the forced readiness fault was ended");
}

#[test]
#[ignore = "needs kubectl: scripts/test.sh runs it"]
fn degraded_row_fails_when_the_endpoint_never_leaves_or_the_pod_restarts() {
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let hyp = hypotheses("degraded.removed_within=1\ndegraded.back_within=1\n");
    let fx = fixtures(&[
        ("pods", vec![pods_list()]),
        ("pod", vec![pod(0, None, true)]),
        ("endpointslices", vec![slices(Some(true))]),
    ]);
    let (out, stdout, _) = run_matrix(&svc, &fx, "degraded", &hyp);
    assert_eq!(out.status.code(), Some(1));
    assert!(verdict_line(&stdout, "degraded").contains("the endpoint never left"));
    let fx = fixtures(&[
        ("pods", vec![pods_list()]),
        ("pod", vec![pod(0, None, true), pod(1, Some(("Error", 137)), false)]),
        ("endpointslices", vec![slices(Some(false)), slices(Some(true))]),
    ]);
    let (out, stdout, _) = run_matrix(&svc, &fx, "degraded", &hyp);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        verdict_line(&stdout, "degraded").contains("but the pod restarted"),
        "{stdout}"
    );
}

#[test]
#[ignore = "needs kubectl: scripts/test.sh runs it"]
fn hpa_row_passes_on_a_scale_up_and_fails_without_one() {
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let hyp = hypotheses("hpa.scale_within=1\nhpa.load_seconds=5\n");
    let fx = fixtures(&[("pods", vec![pods_list()]), ("hpa", vec![hpa(2), hpa(2), hpa(4)])]);
    let (out, stdout, _) = run_matrix(&svc, &fx, "hpa", &hyp);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(verdict_line(&stdout, "hpa").contains("2 -> 4"));
    // DELETE /load/cpu answers once the spin threads have stopped and the
    // guardrail slot is free.
    let stopped = || {
        poll(Duration::from_secs(3), Duration::from_millis(20), || {
            (svc.metric("cpu_stress_active") == 0.0).then_some(())
        })
    };
    assert!(stopped().is_some(), "the load was stopped after the row");
    let fx = fixtures(&[("pods", vec![pods_list()]), ("hpa", vec![hpa(2)])]);
    let (out, stdout, _) = run_matrix(&svc, &fx, "hpa", &hyp);
    assert_eq!(out.status.code(), Some(1));
    let line = verdict_line(&stdout, "hpa");
    assert!(line.ends_with("| FAIL |") && line.contains("stayed at 2"), "{line}");
    assert!(stopped().is_some(), "the load was stopped after the failed row too");
}

/// A pod of the Deployment by name, in `phase` (with `reason` when Failed).
fn named_pod(name: &str, phase: &str, reason: Option<&str>, ready: bool) -> Value {
    let mut status = json!({
        "phase": phase,
        "podIP": IP,
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
        "containerStatuses": [{"name": "chaos-backend", "ready": ready, "restartCount": 0, "lastState": {}}]
    });
    if let Some(reason) = reason {
        status["reason"] = json!(reason);
        status["message"] = json!("Usage of EmptyDir volume \"state\" exceeds the limit \"64Mi\". ");
        status["containerStatuses"][0]["state"] =
            json!({"terminated": {"reason": "Error", "exitCode": 137, "finishedAt": "2026-11-29T10:00:00Z"}});
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "chaos-lab", "labels": {"app.kubernetes.io/name": "chaos-backend"}},
        "spec": {"containers": [{"name": "chaos-backend", "image": IMAGE}]},
        "status": status
    })
}

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

const A: &str = "chaos-backend-7d9f-aaaaa";
const B: &str = "chaos-backend-7d9f-bbbbb";
const C: &str = "chaos-backend-7d9f-ccccc";

#[test]
#[ignore = "needs kubectl: scripts/test.sh runs it"]
fn evict_row_passes_on_failed_evicted_then_a_new_ready_pod() {
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let running = |name| named_pod(name, "Running", None, true);
    let evicted = || named_pod(A, "Failed", Some("Evicted"), false);
    let fx = fixtures(&[
        (
            "pods",
            vec![
                list(vec![running(A), running(B)]),
                list(vec![running(A), running(B)]),
                list(vec![evicted(), running(B), named_pod(C, "Pending", None, false)]),
                list(vec![evicted(), running(B), running(C)]),
            ],
        ),
        ("pod", vec![running(A), running(A), evicted()]),
    ]);
    let hyp = hypotheses(
        "evict.evicted_within=5\nevict.replacement_within=5\n# a small fill: the real binary writes it\nevict.trigger=/load/disk?mb=1\n",
    );
    let (out, stdout, journal) = run_matrix(&svc, &fx, "evict", &hyp);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let line = verdict_line(&stdout, "evict");
    assert!(line.ends_with("| PASS |"), "{line}");
    assert!(
        line.contains("reason Evicted") && line.contains(&format!("{C} Ready")),
        "{line}"
    );
    assert!(
        journal.iter().any(|j| j["phase"] == "trigger" && j["code"] == "200"),
        "the real binary took the fill"
    );
    assert!(
        journal
            .iter()
            .any(|j| j["message"].as_str().is_some_and(|m| m.contains("EmptyDir")))
    );
    assert_eq!(svc.get("/chaos").json()["active"], 0, "the fill was removed on exit");
}

#[test]
#[ignore = "needs kubectl: scripts/test.sh runs it"]
fn evict_row_fails_without_an_eviction_or_without_a_replacement() {
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let running = |name| named_pod(name, "Running", None, true);
    let hyp = hypotheses("evict.evicted_within=1\nevict.replacement_within=1\nevict.trigger=/load/disk?mb=1\n");
    // The pod keeps running.
    let fx = fixtures(&[
        ("pods", vec![list(vec![running(A), running(B)])]),
        ("pod", vec![running(A)]),
    ]);
    let (out, stdout, _) = run_matrix(&svc, &fx, "evict", &hyp);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        verdict_line(&stdout, "evict").contains("not evicted (phase Running)"),
        "{stdout}"
    );
    // Evicted, but no new pod becomes Ready (the old neighbour B does not count).
    let evicted = named_pod(A, "Failed", Some("Evicted"), false);
    let fx = fixtures(&[
        (
            "pods",
            vec![
                list(vec![running(A), running(B)]),
                list(vec![running(A), running(B)]),
                list(vec![evicted.clone(), running(B), named_pod(C, "Pending", None, false)]),
            ],
        ),
        ("pod", vec![running(A), evicted.clone()]),
    ]);
    let (out, stdout, _) = run_matrix(&svc, &fx, "evict", &hyp);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = verdict_line(&stdout, "evict");
    assert!(
        line.ends_with("| FAIL |") && line.contains("no new pod Ready within 1 s"),
        "{line}"
    );
    // Failed for another reason is not the eviction hypothesis.
    let fx = fixtures(&[
        ("pods", vec![list(vec![running(A), running(B)])]),
        (
            "pod",
            vec![running(A), named_pod(A, "Failed", Some("DeadlineExceeded"), false)],
        ),
    ]);
    let (out, stdout, _) = run_matrix(&svc, &fx, "evict", &hyp);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        verdict_line(&stdout, "evict").contains("reason DeadlineExceeded"),
        "{stdout}"
    );
}

#[test]
#[ignore = "needs kubectl: scripts/test.sh runs it"]
fn interrupting_keeps_the_journal_and_stops_the_faults_it_started() {
    let svc = Service::start(&[]);
    let fx = fixtures(&[
        ("pods", vec![pods_list()]),
        ("pod", vec![pod(0, None, true)]),
        ("endpointslices", vec![slices(Some(true))]),
    ]);
    let out_dir = temp_dir("matrix-int");
    let child = command(
        &svc,
        &fx,
        "degraded",
        &hypotheses("degraded.removed_within=60\n"),
        &out_dir,
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let triggered = poll(Duration::from_secs(10), Duration::from_millis(50), || {
        journal(&out_dir).iter().any(|j| j["phase"] == "observe").then_some(())
    });
    assert!(triggered.is_some(), "the row should be watching");
    assert_eq!(svc.get("/chaos").json()["active"], 1, "the readiness fault is on");
    // SAFETY: kill(2) on our own child with a valid signal.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let j = journal(&out_dir);
    for phase in ["start", "before", "trigger", "observe", "interrupted", "restore"] {
        assert!(j.iter().any(|e| e["phase"] == phase), "no {phase} in the journal");
    }
    assert_eq!(svc.get("/chaos").json()["active"], 0, "no active fault remains");
    assert_eq!(svc.get("/ready").status, 200);
}

#[test]
fn help_documents_rows_hypotheses_and_exit_codes() {
    let out = Command::new("bash").arg(script()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for needle in [
        "crash",
        "oom",
        "degraded",
        "hpa",
        "evict",
        "evict.evicted_within",
        "chaos-generator.sh --type disk",
        "Hypotheses file",
        "row.key=value",
        "ROW.max_errors",
        "ROW.min_availability",
        "ROW.max_p99_ms",
        "ROW.max_streak_s",
        "min_availability=80",
        "--observer-rate",
        "--no-observer",
        "docs/observer.md",
        "Exit status",
        "130",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
    let bad = Command::new("bash")
        .arg(script())
        .args(["--namespace", "x", "--rows", "nope"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

fn manifest_observer_container() -> Value {
    let code = "import sys, yaml, json; json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)";
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/observer.yaml");
    let out = Command::new("python3").args(["-c", code]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let job = docs.iter().find(|d| d["kind"] == "Job").expect("a Job");
    job["spec"]["template"]["spec"]["containers"][0].clone()
}

#[test]
#[ignore = "needs kubectl, kubernetes-validate, pyyaml: scripts/test.sh runs it"]
fn degraded_row_shows_what_users_saw_and_the_observer_pod_is_the_manifests() {
    let svc = Service::start(&[]);
    let log = observer_log(|s| {
        s["pods"][POD]["gaps"] = json!([{"start": 4.1, "end": 12.35}]);
        s["pods"]["chaos-backend-7d9f-other"] = json!({"requests": 7, "gaps": []});
    });
    let fx = fixtures_with_observer(
        &[
            ("pods", vec![pods_list()]),
            ("pod", vec![pod(0, None, true)]),
            (
                "endpointslices",
                vec![slices(Some(true)), slices(Some(false)), slices(Some(true))],
            ),
        ],
        &[log],
    );
    let (out, stdout, journal) = run_matrix(
        &svc,
        &fx,
        "degraded",
        &hypotheses("degraded.removed_within=5\ndegraded.back_within=5\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("| requests | errors | availability | p99 | faulted pod traffic | verdict |"));
    let line = verdict_line(&stdout, "degraded");
    let cells: Vec<&str> = line.split(" | ").collect();
    assert!(
        cells[1].contains("users: errors <= 0, availability >= 100%, p99 <= 1000 ms"),
        "{line}"
    );
    assert_eq!(&cells[3..6], ["20", "0", "100%"], "{line}");
    assert!(cells[6].ends_with(" ms"), "{line}");
    assert!(
        cells[7].starts_with(&format!("{POD}: stopped t=4.1 s, back t=12.35 s (trigger t=")),
        "{line}"
    );
    assert!(line.ends_with("| PASS |"), "{line}");
    let users = journal
        .iter()
        .find(|j| j["phase"] == "users")
        .expect("a users line in the journal");
    assert_eq!(
        (users["requests"].as_str(), users["errors"].as_str()),
        (Some("20"), Some("0"))
    );
    assert!(
        users["faulted_pod_traffic"]
            .as_str()
            .unwrap()
            .contains("back t=12.35 s")
    );
    assert!(journal.iter().any(|j| j["phase"] == "observer" && j["image"] == IMAGE));

    // The pod it created: the pods' own image, through the Service's name,
    // with the manifest's securityContext and resources, valid in strict
    // mode; and it was deleted at the end of the row.
    let created = std::fs::read_to_string(fx.join("created.1.json")).expect("the observer pod was created");
    let pod_spec: Value = serde_json::from_str(&created).unwrap();
    let c = &pod_spec["spec"]["containers"][0];
    assert_eq!(c["image"], IMAGE);
    assert_eq!(
        c["args"],
        json!(["observe", "--url", "http://chaos-backend:80/", "--rate", "20"])
    );
    assert_eq!(
        pod_spec["metadata"]["labels"]["app.kubernetes.io/name"],
        "chaos-backend-observer"
    );
    let manifest = manifest_observer_container();
    for field in ["securityContext", "resources", "imagePullPolicy"] {
        assert_eq!(
            c[field], manifest[field],
            "{field} differs from manifests/observer.yaml"
        );
    }
    let validate = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/manifests/validate.py"))
        .args(["1.30,latest", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(created.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        validate.status.success(),
        "{}",
        String::from_utf8_lossy(&validate.stdout)
    );
    let calls = std::fs::read_to_string(fx.join(".calls.log")).unwrap();
    let name = pod_spec["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("chaos-backend-observer-degraded-"), "{name}");
    assert!(calls.contains(&format!("logs -f pod/{name}")), "{calls}");
    assert!(calls.contains(&format!("delete pod {name}")), "{calls}");
}

#[test]
#[ignore = "needs kubectl: scripts/test.sh runs it"]
fn degraded_row_fails_when_users_saw_errors() {
    let svc = Service::start(&[]);
    let log = observer_log(|s| {
        s["errors"]["http_5xx"] = json!(3);
        s["errors"]["reset"] = json!(1);
        s["ok"] = json!(16);
        s["availability"] = json!(80.0);
    });
    let fx = fixtures_with_observer(
        &[
            ("pods", vec![pods_list()]),
            ("pod", vec![pod(0, None, true)]),
            ("endpointslices", vec![slices(Some(false)), slices(Some(true))]),
        ],
        &[log],
    );
    let (out, stdout, _) = run_matrix(
        &svc,
        &fx,
        "degraded",
        &hypotheses("degraded.removed_within=5\ndegraded.back_within=5\n"),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = verdict_line(&stdout, "degraded");
    assert!(line.ends_with("| FAIL |"), "{line}");
    assert!(line.contains("users: errors <= 0 missed (4)"), "{line}");
    assert!(line.contains("users: availability >= 100% missed (80)"), "{line}");
    assert!(line.contains("| reset 1, http_5xx 3 | 80% |"), "{line}");
}

#[test]
#[ignore = "needs kubectl: scripts/test.sh runs it"]
fn crash_row_weighs_availability_and_the_error_streak() {
    let crash_pods = || {
        (
            "pod",
            vec![
                pod(0, None, true),
                pod(1, Some(("Error", 139)), false),
                pod(1, Some(("Error", 139)), true),
            ],
        )
    };
    // The dead pod's share failed for a while; the others answered.
    let log = observer_log(|s| {
        s["errors"]["refused"] = json!(12);
        s["ok"] = json!(148);
        s["requests"] = json!(160);
        s["availability"] = json!(92.5);
        s["longest_error_streak_s"] = json!(0.1);
        s["pods"][POD]["gaps"] = json!([{"start": 3.0, "end": 7.5}]);
    });
    let hyp = "crash.restart_within=5\ncrash.ready_within=5\n";
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let fx = fixtures_with_observer(&[("pods", vec![pods_list()]), crash_pods()], std::slice::from_ref(&log));
    let (out, stdout, _) = run_matrix(&svc, &fx, "crash", &hypotheses(hyp));
    assert_eq!(out.status.code(), Some(0), "the defaults hold: {stdout}");
    let line = verdict_line(&stdout, "crash");
    assert!(
        line.contains("users: availability >= 80%, p99 <= 1000 ms, error streak <= 1 s"),
        "{line}"
    );
    assert!(line.contains("| 160 | refused 12 | 92.5% |"), "{line}");
    assert!(line.contains("stopped t=3 s, back t=7.5 s"), "{line}");
    // A stricter user hypothesis from the file fails the row.
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let fx = fixtures_with_observer(&[("pods", vec![pods_list()]), crash_pods()], std::slice::from_ref(&log));
    let (out, stdout, _) = run_matrix(
        &svc,
        &fx,
        "crash",
        &hypotheses(&format!("{hyp}crash.min_availability=99\ncrash.max_errors=5\n")),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = verdict_line(&stdout, "crash");
    assert!(line.contains("users: availability >= 99% missed (92.5)"), "{line}");
    assert!(line.contains("users: errors <= 5 missed (12)"), "{line}");
    // The Service dark for two seconds fails the streak hypothesis.
    let dark = observer_log(|s| {
        s["errors"]["refused"] = json!(40);
        s["availability"] = json!(80.0);
        s["longest_error_streak_s"] = json!(2.0);
    });
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let fx = fixtures_with_observer(&[("pods", vec![pods_list()]), crash_pods()], &[dark]);
    let (out, stdout, _) = run_matrix(&svc, &fx, "crash", &hypotheses(hyp));
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        verdict_line(&stdout, "crash").contains("error streak <= 1 s missed (2)"),
        "{stdout}"
    );
    // A user hypothesis that is not a number is refused up front.
    let bad = Command::new("bash")
        .arg(script())
        .args(["--namespace", "x", "--hypotheses"])
        .arg(hypotheses("crash.min_availability=high\n"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("\"high\""));
}

#[test]
#[ignore = "needs kubectl: scripts/test.sh runs it"]
fn without_a_summary_the_row_fails_and_no_observer_keeps_the_kubernetes_verdict() {
    let fx_series = || {
        vec![
            ("pods", vec![pods_list()]),
            ("pod", vec![pod(0, None, true)]),
            ("endpointslices", vec![slices(Some(false)), slices(Some(true))]),
        ]
    };
    let hyp = hypotheses("degraded.removed_within=5\ndegraded.back_within=5\n");
    // The observer's log ends without its summary (it was killed).
    let cut = healthy_log().lines().next().unwrap().to_string();
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let fx = fixtures_with_observer(&fx_series(), &[cut]);
    let (out, stdout, _) = run_matrix(&svc, &fx, "degraded", &hyp);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = verdict_line(&stdout, "degraded");
    assert!(
        line.contains("no summary from the observer") && line.ends_with("| FAIL |"),
        "{line}"
    );
    // --no-observer: no pod, the Kubernetes verdict alone.
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let fx = fixtures_with_observer(&fx_series(), &[]);
    let out_dir = temp_dir("matrix-out");
    let out = command(&svc, &fx, "degraded", &hyp, &out_dir)
        .arg("--no-observer")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        verdict_line(&stdout, "degraded").ends_with("| - | - | - | - | - | PASS |"),
        "{stdout}"
    );
    assert!(!fx.join("created.1.json").exists(), "no observer pod");
}

/// A real observer's log of one second of GET / against the binary under
/// a 20% errors fault (mode status, 503): 4 of its 20 requests fail.
fn errors_log() -> String {
    observed_second(Some("/fault/errors?percent=20&duration=60"), "errors.http_5xx", 4)
}

/// The errors row against the binary and a real Prometheus that scrapes it
/// with prometheus/rules.yml: users saw the 503s (the observer's columns),
/// the pod stayed in the Service, and the page alert's expression became
/// true (its ALERTS series for the namespace).
#[test]
#[ignore = "needs kubectl, prometheus: scripts/test.sh runs it"]
fn errors_row_passes_when_users_see_errors_and_the_burn_rate_alert_fires() {
    let svc = Service::start(&[("HOSTNAME", POD), ("CHAOS_COOLDOWN_SECONDS", "0")]);
    let prom = crate::observability::Prometheus::scraping_as(svc.addr, "1s", "chaos-lab");
    // User traffic through the run, as the Service would bring it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (stop, addr) = (std::sync::Arc::clone(&stop), svc.addr);
        std::thread::spawn(move || {
            for _ in 0..2400 {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let _ = crate::harness::try_request(addr, "GET", "/", &[], "", Duration::from_secs(2));
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let fx = fixtures_with_observer(
        &[
            ("pods", vec![pods_list()]),
            ("pod", vec![pod(0, None, true)]),
            ("endpointslices", vec![slices(Some(true))]),
        ],
        &[errors_log()],
    );
    let out_dir = temp_dir("matrix-out");
    let out = command(
        &svc,
        &fx,
        "errors",
        &hypotheses("errors.fault_seconds=120\nerrors.alert_within=90\n"),
        &out_dir,
    )
    .arg("--prometheus")
    .arg(format!("http://{}", prom.addr()))
    .output()
    .expect("run validate-matrix.sh");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    traffic.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let line = verdict_line(&stdout, "errors");
    let cells: Vec<&str> = line.split(" | ").collect();
    assert!(
        cells[1].contains("ChaosBackendErrorBudgetBurn true within 90 s"),
        "{line}"
    );
    assert!(cells[1].contains("users: errors >= 1"), "{line}");
    assert!(
        cells[2].starts_with("ChaosBackendErrorBudgetBurn true after "),
        "{line}"
    );
    assert_eq!(&cells[3..6], ["20", "http_5xx 4", "80%"], "{line}");
    assert!(line.ends_with("| PASS |"), "{line}");
    let journal = journal(&out_dir);
    assert!(journal.iter().any(|j| j["phase"] == "trigger"
        && j["path"] == "/fault/errors?percent=20&mode=status&duration=120"
        && j["code"] == "202"));
    assert!(journal.iter().any(|j| j["phase"] == "release" && j["code"] == "200"));
    assert_eq!(svc.get("/chaos").json()["active"], 0, "the fault was ended");
}

/// Without errors seen by users, or with the pod out of the Service, the
/// errors row fails; without --prometheus it says the alert was not checked.
#[test]
#[ignore = "needs kubectl: scripts/test.sh runs it"]
fn errors_row_fails_without_user_errors_or_when_the_pod_leaves() {
    let svc = Service::start(&[("HOSTNAME", POD), ("CHAOS_COOLDOWN_SECONDS", "0")]);
    let fx = fixtures(&[
        ("pods", vec![pods_list()]),
        ("pod", vec![pod(0, None, true)]),
        ("endpointslices", vec![slices(Some(false))]),
    ]);
    let (out, stdout, _) = run_matrix(&svc, &fx, "errors", &hypotheses("errors.watch_seconds=1\n"));
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = verdict_line(&stdout, "errors");
    assert!(line.contains("alert not checked (no --prometheus)"), "{line}");
    assert!(line.contains("the endpoint left the Service (not-ready)"), "{line}");
    assert!(line.contains("users: errors >= 1 missed (0)"), "{line}");
    assert!(line.ends_with("| FAIL |"), "{line}");
}
