//! manifests/ checked by the real tools (kubernetes-validate in strict mode,
//! checkov offline, yamllint, kubectl kustomize) and against the app itself:
//! the env vars, probes, ports and limits must agree with the binary's
//! behaviour, under podman with the Deployment's own limits.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::container::Container;
use crate::harness::{
    Service, command, exclusive, output_within, percentile, poll, repo, request, temp_dir, try_request,
};

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(repo())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} must be installed (scripts/test.sh installs it): {e}"));
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `kubectl kustomize manifests/`: what `kubectl apply -k` would send.
fn rendered() -> String {
    let out = run("kubectl", &["kustomize", "manifests/"], None);
    assert!(out.status.success(), "kubectl kustomize failed: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// The rendered documents as JSON values.
fn documents() -> Vec<Value> {
    let code = "import sys, yaml, json; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)";
    let out = run("python3", &["-c", code], Some(&rendered()));
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The documents of one file under manifests/, as JSON values.
fn file_documents(file: &str) -> Vec<Value> {
    let code = "import sys, yaml, json; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)";
    let yaml = std::fs::read_to_string(repo().join(file)).unwrap();
    let out = run("python3", &["-c", code], Some(&yaml));
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn resource_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo().join("manifests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml") && !p.ends_with("kustomization.yaml"))
        .map(|p| p.strip_prefix(repo()).unwrap().display().to_string())
        .collect();
    files.sort();
    files
}

/// The container of the Deployment, and its env as (name, value) pairs.
fn container(docs: &[Value]) -> (&Value, Vec<(String, String)>) {
    let c = &find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let env = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (c, env)
}

fn env_value<'a>(env: &'a [(String, String)], name: &str) -> &'a str {
    &env.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} not set"))
        .1
}

/// "200Mi" -> MiB, "250m" / "1" -> millicores.
fn mebibytes(q: &str) -> u64 {
    q.strip_suffix("Mi").expect("memory in Mi").parse().unwrap()
}

fn millicores(q: &str) -> u64 {
    q.strip_suffix('m')
        .map_or_else(|| q.parse::<u64>().unwrap() * 1000, |m| m.parse().unwrap())
}

#[test]
#[ignore = "needs kubectl, kubernetes-validate: scripts/test.sh runs it"]
fn schemas_pass_strict_validation_for_1_30_and_the_newest() {
    let mut args = vec!["tests/manifests/validate.py", "1.30,latest"];
    let files = resource_files();
    args.extend(files.iter().map(String::as_str));
    let out = run("python3", &args, None);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(
        "python3",
        &["tests/manifests/validate.py", "1.30,latest", "-"],
        Some(&rendered()),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("12 passed, 0 failed"),
        "6 documents x 2 versions: {}",
        text(&out)
    );
    // A removed apiVersion has no schema: that must fail, not warn.
    let removed =
        "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata: {name: x}\nspec: {minAvailable: 1}\n";
    let out = run("python3", &["tests/manifests/validate.py", "1.30", "-"], Some(removed));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no schema for policy/v1beta1"), "{}", text(&out));
    // Strict mode: an unknown field fails.
    let typo = "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {portz: []}\n";
    let out = run("python3", &["tests/manifests/validate.py", "1.30", "-"], Some(typo));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
#[ignore = "needs checkov, kubectl: scripts/test.sh runs it"]
fn checkov_offline_finds_no_failed_check_and_every_skip_has_a_reason() {
    let dir = temp_dir("checkov");
    std::fs::write(dir.join("rendered.yaml"), rendered()).unwrap();
    for target in ["manifests", dir.to_str().unwrap()] {
        let out = run(
            "checkov",
            &[
                "--framework",
                "kubernetes",
                "--skip-download",
                "--compact",
                "--quiet",
                "-d",
                target,
            ],
            None,
        );
        let report = text(&out);
        assert!(out.status.success(), "checkov on {target}: {report}");
        assert!(report.contains("Failed checks: 0"), "checkov on {target}: {report}");
    }
    let deployment = std::fs::read_to_string(repo().join("manifests/deployment.yaml")).unwrap();
    let skips: Vec<&str> = deployment.lines().filter(|l| l.contains("checkov.io/skip")).collect();
    assert!(!skips.is_empty());
    for skip in skips {
        let reason = skip.split_once('=').map(|(_, r)| r.trim()).unwrap_or("");
        assert!(reason.len() > 30, "skip without a reason: {skip}");
    }
}

#[test]
#[ignore = "needs yamllint, kubectl, pyyaml: scripts/test.sh runs it"]
fn yamllint_and_kustomize_succeed() {
    let out = run(
        "yamllint",
        &["--strict", "-c", ".yamllint.yaml", "manifests/", ".yamllint.yaml"],
        None,
    );
    assert!(out.status.success(), "yamllint: {}", text(&out));
    let docs = documents();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for kind in [
        "Namespace",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    for d in docs.iter().filter(|d| d["kind"] != "Namespace") {
        assert_eq!(d["metadata"]["namespace"], "chaos-lab", "{}", d["kind"]);
        assert_eq!(d["metadata"]["labels"]["app.kubernetes.io/name"], "chaos-backend");
    }
}

#[test]
#[ignore = "needs kubectl, pyyaml: scripts/test.sh runs it"]
fn deployment_agrees_with_the_app() {
    let docs = documents();
    let (c, env) = container(&docs);
    let pod = &find(&docs, "Deployment")["spec"]["template"]["spec"];

    // Every env var is one the app reads: an empty value (invalid for every
    // variable the app reads) is refused by name, before binding.
    for (name, _) in &env {
        let out = output_within(command(&temp_dir("env-check"), &[(name, "")]), Duration::from_secs(5));
        assert_eq!(out.status.code(), Some(2), "{name}: the app does not read it");
        assert!(String::from_utf8_lossy(&out.stderr).contains(name.as_str()), "{name}");
    }
    // And the Deployment's values start the service (on a free port here).
    let mut vars: Vec<(&str, &str)> = env
        .iter()
        .filter(|(n, _)| n != "PORT" && n != "PROBE_PORT" && n != "STATE_DIR")
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    vars.push(("SHUTDOWN_DELAY_SECONDS", "0"));
    let svc = Service::start(&vars);

    // Ports: the named ports are the app's PORT and PROBE_PORT, and every
    // reference resolves.
    for (i, (name, variable)) in [("http", "PORT"), ("probes", "PROBE_PORT")].into_iter().enumerate() {
        let port = &c["ports"][i];
        assert_eq!(port["name"], name);
        assert_eq!(
            port["containerPort"].as_u64().unwrap().to_string(),
            env_value(&env, variable)
        );
    }
    assert_eq!(find(&docs, "Service")["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(
        find(&docs, "Service")["spec"]["ports"].as_array().unwrap().len(),
        1,
        "the Service leaves the probe port out"
    );
    // Probes: the probe port, and the paths answer 200 there on the
    // running app (and on the main port, kept for compatibility).
    let probes = svc.probe_addr.expect("the probe listener runs");
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["port"], "probes", "{probe}");
        let path = get["path"].as_str().unwrap();
        assert_eq!(request(probes, "GET", path, &[], "").status, 200, "{probe} {path}");
        assert_eq!(svc.get(path).status, 200, "{probe} {path} on the main port");
    }
    // The NetworkPolicy admits the main port only: the probes come from
    // the node, which NetworkPolicy never blocks.
    let ingress = &find(&docs, "NetworkPolicy")["spec"]["ingress"];
    let admitted: Vec<&Value> = ingress
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["ports"].as_array().unwrap())
        .map(|p| &p["port"])
        .collect();
    assert_eq!(admitted, [&Value::from("http")], "NetworkPolicy ingress ports");
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"], "/health",
        "liveness must not fail under chaos"
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
    // The STATE_DIR is the emptyDir's mount.
    assert_eq!(
        c["volumeMounts"][0]["mountPath"].as_str().unwrap(),
        env_value(&env, "STATE_DIR")
    );
    assert!(pod["volumes"][0]["emptyDir"].is_object());
    // Grace period above the shutdown delay plus the drain (at most 5 s:
    // `DRAIN_TIMEOUT` in main.rs, docs/api.md#the-ordered-stop).
    let delay: u64 = env_value(&env, "SHUTDOWN_DELAY_SECONDS").parse().unwrap();
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > delay + 5);
    // Restricted pod security.
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(pod["automountServiceAccountToken"], false);
    let sc = &c["securityContext"];
    assert_eq!(
        (
            sc["readOnlyRootFilesystem"].clone(),
            sc["allowPrivilegeEscalation"].clone()
        ),
        (true.into(), false.into())
    );
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));

    // Memory: measured idle RSS plus a leak of k × MEMORY_MB gives ready,
    // then 503, then OOM (the ramp of the README's recipe passes all three).
    let base_mib = svc.rss_bytes() as f64 / 1048576.0;
    let leak = env_value(&env, "MEMORY_MB").parse::<f64>().unwrap();
    let ready_max = env_value(&env, "MAX_MEMORY_MB_READY").parse::<f64>().unwrap();
    let limit = mebibytes(c["resources"]["limits"]["memory"].as_str().unwrap()) as f64;
    let margin = 16.0;
    assert!(
        base_mib + leak < ready_max - margin,
        "1st leak: {base_mib:.1} + {leak} keeps the pod ready"
    );
    assert!(
        base_mib + 2.0 * leak > ready_max + margin,
        "2 × MEMORY_MB fails readiness"
    );
    assert!(
        base_mib + 2.0 * leak < limit - margin,
        "2 × MEMORY_MB stays under the limit"
    );
    assert!(base_mib + 3.0 * leak > limit + margin, "3 × MEMORY_MB passes the limit");

    // CPU: one saturated pod alone pushes the average over the HPA target.
    let hpa = &find(&docs, "HorizontalPodAutoscaler")["spec"];
    let target = hpa["metrics"][0]["resource"]["target"]["averageUtilization"]
        .as_u64()
        .unwrap();
    let request = millicores(c["resources"]["requests"]["cpu"].as_str().unwrap());
    let cpu_limit = millicores(c["resources"]["limits"]["cpu"].as_str().unwrap());
    let replicas = hpa["minReplicas"].as_u64().unwrap();
    let average = cpu_limit * 100 / request / replicas;
    assert!(
        average > target,
        "one saturated pod of {replicas}: {average}% <= {target}%"
    );
    assert_eq!(
        hpa["scaleTargetRef"]["name"],
        find(&docs, "Deployment")["metadata"]["name"]
    );
}

/// The bearer token the podman tests put in the Deployment's Secret mount.
const TOKEN: &str = "manifest-test-token";
const AUTH: [(&str, &str); 1] = [("Authorization", "Bearer manifest-test-token")];

/// Runs the image with the Deployment's limits, security settings and env
/// (`extra` overrides), as the kubelet would.
fn run_like_the_deployment(docs: &[Value], extra: &[(&str, &str)]) -> (Container, Vec<(String, String)>) {
    run_like_the_deployment_in(docs, extra, &temp_dir("emptydir"))
}

/// As `run_like_the_deployment`, with `state` as the emptyDir.
fn run_like_the_deployment_in(
    docs: &[Value],
    extra: &[(&str, &str)],
    state: &Path,
) -> (Container, Vec<(String, String)>) {
    run_like_the_deployment_with(docs, extra, state, &[])
}

/// The image as the kubelet runs the Deployment's container (limits,
/// security settings, env with `extra` overriding), with `podman_args`
/// added (a `--pids-limit`).
pub fn deployed_container(extra: &[(&str, &str)], podman_args: &[&str]) -> Container {
    run_like_the_deployment_with(&documents(), extra, &temp_dir("emptydir"), podman_args).0
}

fn run_like_the_deployment_with(
    docs: &[Value],
    extra: &[(&str, &str)],
    state: &Path,
    podman_args: &[&str],
) -> (Container, Vec<(String, String)>) {
    let (c, env) = container(docs);
    let limits = &c["resources"]["limits"];
    let cpus = format!("{:.3}", millicores(limits["cpu"].as_str().unwrap()) as f64 / 1000.0);
    let memory = format!("{}m", mebibytes(limits["memory"].as_str().unwrap()));
    std::fs::set_permissions(state, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let mount = format!("{}:{}", state.display(), env_value(&env, "STATE_DIR"));
    // The Secret the Deployment mounts, with the token the tests send.
    let token_file = Path::new(env_value(&env, "CHAOS_TOKEN_FILE"));
    let secret = temp_dir("secret");
    std::fs::write(secret.join(token_file.file_name().unwrap()), TOKEN).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let secret_mount = format!("{}:{}:ro", secret.display(), token_file.parent().unwrap().display());
    let mut args: Vec<String> = [
        "--cpus",
        &cpus,
        "--memory",
        &memory,
        "--memory-swap",
        &memory,
        // readOnlyRootFilesystem: no writable tmpfs on /tmp, /run and
        // /var/tmp either (podman adds them by default, Kubernetes does not).
        "--read-only",
        "--read-only-tmpfs=false",
        "-v",
        &mount,
        "-v",
        &secret_mount,
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--user",
        "65532:65532",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (name, value) in &env {
        let value = extra.iter().find(|(n, _)| n == name).map_or(value.as_str(), |(_, v)| v);
        args.push("-e".into());
        args.push(format!("{name}={value}"));
    }
    for (name, value) in extra.iter().filter(|(n, _)| !env.iter().any(|(e, _)| e == n)) {
        args.push("-e".into());
        args.push(format!("{name}={value}"));
    }
    args.extend(podman_args.iter().map(|a| a.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    (Container::run(&refs), env)
}

#[test]
#[ignore = "needs podman, kubectl, pyyaml: scripts/test.sh runs it"]
fn full_cpu_load_within_the_limit_keeps_liveness_fast_and_fails_readiness_in_one_period() {
    let _x = exclusive();
    let docs = documents();
    let (c, _) = container(&docs);
    let liveness_timeout = Duration::from_secs(c["livenessProbe"]["timeoutSeconds"].as_u64().unwrap());
    let readiness_period = Duration::from_secs(c["readinessProbe"]["periodSeconds"].as_u64().unwrap());
    let (pod, _) = run_like_the_deployment(&docs, &[]);
    let addr = pod.addr().unwrap();
    assert_eq!(request(addr, "GET", "/ready", &[], "").status, 200);
    let r = request(addr, "POST", "/load/cpu?duration=15", &AUTH, "");
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["threads"], 1, "the 1-CPU limit is honoured");
    let accepted = Instant::now();
    let down = poll(readiness_period, Duration::from_millis(50), || {
        (request(addr, "GET", "/ready", &[], "").status == 503).then(Instant::now)
    });
    let down = down.expect("/ready 503 within one readiness period");
    eprintln!("/ready 503 {:?} after the 202", down - accepted);
    let mut samples = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        let r = try_request(addr, "GET", "/health", &[], "", liveness_timeout).expect("/health answers");
        samples.push(t.elapsed());
        assert_eq!(r.status, 200);
    }
    let p99 = percentile(&mut samples, 99.0);
    eprintln!(
        "/health p99 under a full CPU load inside the 1-CPU limit: {p99:?} (liveness timeout {liveness_timeout:?})"
    );
    assert!(
        p99 < liveness_timeout / 10,
        "p99 {p99:?} is not below a tenth of the liveness timeout"
    );
    assert_eq!(
        request(addr, "GET", "/ready", &[], "").status,
        503,
        "the load still runs"
    );
}

#[test]
#[ignore = "needs podman, kubectl, pyyaml: scripts/test.sh runs it"]
fn memory_numbers_play_out_in_order_under_the_limit() {
    let _x = exclusive();
    let docs = documents();
    // The cooldown is not what is under test; the sizes and the limit are.
    let (pod, env) = run_like_the_deployment(&docs, &[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let addr = pod.addr().unwrap();
    let mb = env_value(&env, "MEMORY_MB");
    assert_eq!(
        request(addr, "POST", "/load/memory", &[], "").status,
        401,
        "closed without the token"
    );
    let first = request(addr, "POST", "/load/memory", &AUTH, "");
    assert_eq!(first.status, 200);
    assert_eq!(first.json()["leaked_mb"].as_u64().unwrap().to_string(), mb);
    assert_eq!(
        request(addr, "GET", "/ready", &[], "").status,
        200,
        "a leak of MEMORY_MB: still ready"
    );
    assert_eq!(
        request(addr, "POST", "/load/memory", &AUTH, "").status,
        429,
        "the leak holds the one guardrail slot until it is released"
    );
    assert_eq!(request(addr, "DELETE", "/load/memory", &AUTH, "").status, 200);
    let mb: u64 = mb.parse().unwrap();
    let twice = format!("/load/memory?mb={}", 2 * mb);
    assert_eq!(request(addr, "POST", &twice, &AUTH, "").status, 200);
    let ready = request(addr, "GET", "/ready", &[], "");
    assert_eq!(ready.status, 503, "2 × MEMORY_MB: traffic shed");
    assert!(
        ready.json()["reasons"][0]
            .as_str()
            .unwrap()
            .contains("MAX_MEMORY_MB_READY")
    );
    assert_eq!(
        request(addr, "GET", "/health", &[], "").status,
        200,
        "no restart wanted"
    );
    assert_eq!(request(addr, "DELETE", "/load/memory", &AUTH, "").status, 200);
    assert_eq!(
        request(addr, "GET", "/ready", &[], "").status,
        200,
        "released: ready again without a restart"
    );
    // The README's recipe, faster: one ramp to 3 × MEMORY_MB sheds traffic
    // on the way, then passes the limit.
    let ramp = format!("/load/memory?mb={}&ramp=6", 3 * mb);
    assert_eq!(request(addr, "POST", &ramp, &AUTH, "").status, 202);
    let shed = poll(Duration::from_secs(6), Duration::from_millis(100), || {
        let r = try_request(addr, "GET", "/ready", &[], "", Duration::from_secs(2)).ok()?;
        (r.status == 503).then_some(())
    });
    assert!(shed.is_some(), "the ramp fails readiness before the kill");
    assert_eq!(pod.wait_exit(Duration::from_secs(15)), Some(137), "OOM kill");
}

/// The emptyDir `sizeLimit` of the volume `name`, in MiB.
fn size_limit_mib(docs: &[Value], name: &str) -> u64 {
    let volumes = find(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    let v = volumes.iter().find(|v| v["name"] == name).expect("volume");
    mebibytes(v["emptyDir"]["sizeLimit"].as_str().expect("a sizeLimit"))
}

/// The eviction arithmetic of the Deployment's comment, checked: the
/// default fill (asked of the real binary) passes the emptyDir's sizeLimit,
/// the fill lands in that emptyDir, and the ephemeral-storage limit holds the
/// emptyDir plus the most logs the kubelet keeps (5 x 10Mi), so that only
/// the fill evicts, and by the emptyDir rule.
#[test]
#[ignore = "needs kubectl, pyyaml: scripts/test.sh runs it"]
fn disk_numbers_evict_by_the_emptydir_limit_and_nothing_else() {
    const MAX_LOGS_MIB: u64 = 5 * 10;
    let docs = documents();
    let (c, env) = container(&docs);
    let limit = &c["resources"]["limits"]["ephemeral-storage"];
    let request_mib = mebibytes(c["resources"]["requests"]["ephemeral-storage"].as_str().unwrap());
    let limit_mib = mebibytes(limit.as_str().unwrap());
    let size_limit = size_limit_mib(&docs, "state");
    assert!(
        !env.iter().any(|(n, _)| n == "DISK_FILL_DIR"),
        "the fill must land in the emptyDir: DISK_FILL_DIR defaults to STATE_DIR/fill"
    );
    assert_eq!(c["volumeMounts"][0]["name"], "state");
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let r = svc.post("/load/disk");
    assert_eq!(r.status, 200, "{}", r.body);
    let default_mb = r.json()["mb"].as_u64().unwrap();
    assert!(
        default_mb * 10 >= size_limit * 15,
        "the default fill ({default_mb} MiB) must clearly pass the sizeLimit ({size_limit}Mi)"
    );
    assert!(
        limit_mib >= size_limit + MAX_LOGS_MIB,
        "limit {limit_mib}Mi < sizeLimit {size_limit}Mi + {MAX_LOGS_MIB}Mi of logs: a fill below the sizeLimit could evict"
    );
    assert!(request_mib < size_limit && request_mib <= limit_mib);
}

/// Under podman with the Deployment's securityContext (read-only root,
/// uid 65532, all capabilities dropped) and a volume for STATE_DIR: the
/// fill works, lands in the volume, and nothing is written anywhere else.
#[test]
#[ignore = "needs podman, kubectl, pyyaml: scripts/test.sh runs it"]
fn disk_fill_in_podman_like_the_deployment_stays_in_the_volume() {
    let _x = exclusive();
    let docs = documents();
    let state = temp_dir("emptydir-disk");
    let (pod, env) = run_like_the_deployment_in(&docs, &[("CHAOS_COOLDOWN_SECONDS", "0")], &state);
    let addr = pod.addr().unwrap();
    let before = pod.diff();
    let r = request(addr, "POST", "/load/disk?mb=16", &AUTH, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let file = state.join("fill/chaos-disk-fill.bin");
    let meta = std::fs::metadata(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.len(), meta.uid()), (16 << 20, 65532));
    assert!(meta.blocks() * 512 >= 16 << 20, "not sparse");
    let chaos = request(addr, "GET", "/chaos", &[], "").json();
    let detail = chaos["faults"][0]["detail"].as_str().unwrap_or_default().to_string();
    assert!(
        detail.starts_with(&format!("16 MiB of 16 MiB in {}/fill/", env_value(&env, "STATE_DIR"))),
        "{chaos}"
    );
    assert_eq!(pod.diff(), before, "written outside the volume");
    // Only what podman itself adds before the start: /etc/passwd and
    // /etc/group for --user, and the Secret's mount point.
    assert!(
        before.iter().all(|l| l.starts_with("A /etc")),
        "the read-only root changed: {before:?}"
    );
    assert_eq!(request(addr, "DELETE", "/load/disk", &AUTH, "").status, 200);
    assert!(!file.exists());
    let mut left: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["fill", "healing.json"],
        "only the empty fill directory (and the healing figures) stay in the volume"
    );
}

/// manifests/observer.yaml against the Deployment, the Service and the
/// binary: the same image; the Service's name and port in the URL; labels
/// that no object of the Deployment selects; egress to the pods' named
/// port; and arguments the binary accepts (run here against a local
/// service, with the URL and duration swapped).
#[test]
#[ignore = "needs kubectl, pyyaml: scripts/test.sh runs it"]
fn observer_job_agrees_with_the_service_and_the_binary() {
    let docs = documents();
    let observer = file_documents("manifests/observer.yaml");
    let job = find(&observer, "Job");
    let pod = &job["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let (deployed, _) = container(&docs);
    assert_eq!(
        c["image"], deployed["image"],
        "the observer runs from the pods' own image"
    );
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "observe");
    let url = args[args.iter().position(|a| *a == "--url").expect("--url") + 1];
    let service = find(&docs, "Service");
    let port = service["spec"]["ports"][0]["port"].as_u64().unwrap();
    let expected = if port == 80 {
        format!("http://{}/", service["metadata"]["name"].as_str().unwrap())
    } else {
        format!("http://{}:{port}/", service["metadata"]["name"].as_str().unwrap())
    };
    assert_eq!(url, expected, "through the Service's name and port");
    // The Service, the PDB and the NetworkPolicy of the Deployment must not
    // select the observer's pods.
    let labels = pod_labels(job);
    for kind in ["Service", "PodDisruptionBudget", "NetworkPolicy"] {
        let d = find(&docs, kind);
        let selector = if kind == "Service" {
            &d["spec"]["selector"]
        } else if kind == "NetworkPolicy" {
            &d["spec"]["podSelector"]["matchLabels"]
        } else {
            &d["spec"]["selector"]["matchLabels"]
        };
        let selects = selector
            .as_object()
            .unwrap()
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v));
        assert!(!selects, "{kind} selects the observer");
    }
    // Its own NetworkPolicy: its pods, egress to the Deployment's pods on
    // their named port.
    let policy = find(&observer, "NetworkPolicy");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        labels["app.kubernetes.io/name"]
    );
    let to_pods = &policy["spec"]["egress"][0];
    assert_eq!(
        to_pods["to"][0]["podSelector"]["matchLabels"],
        find(&docs, "Deployment")["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(to_pods["ports"][0]["port"], deployed["ports"][0]["name"]);
    // The restricted securityContext, as the Deployment's.
    assert_eq!(c["securityContext"], deployed["securityContext"]);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    // The arguments run: the same flags against a local service.
    let svc = Service::start(&[("HOSTNAME", "job-check")]);
    let mut local: Vec<String> = args[1..].iter().map(|a| a.to_string()).collect();
    let at = local.iter().position(|a| a == "--url").unwrap() + 1;
    local[at] = format!("http://{}/", svc.addr);
    let at = local
        .iter()
        .position(|a| a == "--duration")
        .expect("a --duration bounds the Job")
        + 1;
    let bound: f64 = local[at].parse().unwrap();
    assert!(
        bound < job["spec"]["activeDeadlineSeconds"].as_f64().unwrap(),
        "the observer ends before the Job's deadline"
    );
    local[at] = "1".into();
    let refs: Vec<&str> = local.iter().map(String::as_str).collect();
    let run = crate::observer::observe(&refs, Duration::from_secs(20));
    assert_eq!(run.output.status.code(), Some(0), "{}", run.describe());
    assert!(run.summary["ok"].as_u64().unwrap() > 0, "{}", run.describe());
    let memory = mebibytes(c["resources"]["limits"]["memory"].as_str().unwrap()) as f64;
    let rss = run.summary["max_rss_mb"].as_f64().unwrap();
    assert!(rss * 2.0 < memory, "RSS {rss} MB, limit {memory}Mi");
}

fn pod_labels(workload: &Value) -> serde_json::Map<String, Value> {
    workload["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap()
        .clone()
}

/// YAML text as JSON values, one per document.
fn yaml_documents(yaml: &str) -> Vec<Value> {
    let code = "import sys, yaml, json; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)";
    let out = run("python3", &["-c", code], Some(yaml));
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `kubectl kustomize` of the monitoring component alone, and of the base
/// with it, as a user's overlay includes it. The overlay is written under
/// target/ (never tracked): kustomize refuses absolute paths, and a base
/// cannot contain its own overlay.
fn monitoring_renders() -> (String, String) {
    let alone = run("kubectl", &["kustomize", "manifests/components/monitoring"], None);
    assert!(
        alone.status.success(),
        "kubectl kustomize the component: {}",
        text(&alone)
    );
    let overlay = repo()
        .join("target")
        .join(format!("monitoring-overlay-{}", std::process::id()));
    std::fs::create_dir_all(&overlay).unwrap();
    std::fs::write(
        overlay.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../manifests\ncomponents:\n  - ../../manifests/components/monitoring\n",
    )
    .unwrap();
    let with_base = run("kubectl", &["kustomize", overlay.to_str().unwrap()], None);
    let _ = std::fs::remove_dir_all(&overlay);
    assert!(
        with_base.status.success(),
        "kubectl kustomize base + component: {}",
        text(&with_base)
    );
    (
        String::from_utf8(alone.stdout).unwrap(),
        String::from_utf8(with_base.stdout).unwrap(),
    )
}

/// For kube-prometheus-stack users: the component's PodMonitor selects the
/// Deployment's pods and scrapes the port /metrics answers on, and its
/// PrometheusRule is the one scripts/gen-prometheusrule.sh makes. Both
/// renders (the component alone, the base with it) are YAML that yamllint
/// accepts.
#[test]
#[ignore = "needs kubectl, yamllint, pyyaml: scripts/test.sh runs it"]
fn monitoring_component_matches_the_deployment_and_the_rules() {
    let (alone, with_base) = monitoring_renders();
    let dir = temp_dir("monitoring-render");
    // The project's yamllint rules, less two of style that kustomize's
    // output does not follow and no reader depends on: sequences not
    // indented under their key, no `---` before the first document. The
    // rules that catch what kubectl would misread (duplicate keys, syntax,
    // truthy values) all stay.
    let rendered_rules =
        "{extends: .yamllint.yaml, rules: {indentation: {indent-sequences: whatever}, document-start: disable}}";
    for (name, yaml) in [("alone.yaml", &alone), ("with-base.yaml", &with_base)] {
        let file = dir.join(name);
        std::fs::write(&file, yaml).unwrap();
        let out = run(
            "yamllint",
            &["--strict", "-d", rendered_rules, file.to_str().unwrap()],
            None,
        );
        assert!(out.status.success(), "yamllint {name}: {}", text(&out));
    }
    let dup = dir.join("duplicate.yaml");
    std::fs::write(&dup, format!("{alone}\n---\nkind: A\nkind: B\n")).unwrap();
    let out = run(
        "yamllint",
        &["--strict", "-d", rendered_rules, dup.to_str().unwrap()],
        None,
    );
    assert!(!out.status.success(), "the rules still catch a duplicate key");
    let kinds: Vec<String> = yaml_documents(&alone)
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["PodMonitor", "PrometheusRule"]);
    let docs = yaml_documents(&with_base);
    assert_eq!(docs.len(), documents().len() + 2, "the base and the two objects");
    let deployment = find(&docs, "Deployment");
    let monitor = find(&docs, "PodMonitor");
    for d in &docs {
        if d["kind"] != "Namespace" {
            assert_eq!(d["metadata"]["namespace"], "chaos-lab", "{}", d["kind"]);
        }
    }
    // The selector: the Deployment's own, met by its pods' labels.
    let selector = &monitor["spec"]["selector"]["matchLabels"];
    assert_eq!(selector, &deployment["spec"]["selector"]["matchLabels"]);
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (k, v) in selector.as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "pods lack {k}={v}");
    }
    // The port: a named port of the container, the one the app serves
    // /metrics on (PORT), not the probe port; the path the pods announce.
    let (c, env) = container(&docs);
    let endpoints = monitor["spec"]["podMetricsEndpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    let port_name = endpoints[0]["port"].as_str().unwrap();
    let port = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port_name)
        .unwrap_or_else(|| panic!("the container has no port named {port_name}"));
    assert_eq!(port["containerPort"].to_string(), env_value(&env, "PORT"));
    assert_ne!(port["containerPort"].to_string(), env_value(&env, "PROBE_PORT"));
    assert_eq!(endpoints[0]["path"], "/metrics");
    assert_eq!(
        endpoints[0]["path"],
        deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]
    );
    assert_eq!(monitor["metadata"]["labels"]["release"], "kube-prometheus-stack");
    // The rules: gen-prometheusrule.sh's, byte for byte in the component.
    let out = run("bash", &["scripts/gen-prometheusrule.sh", "--check"], None);
    assert!(out.status.success(), "{}", text(&out));
    let rule = find(&docs, "PrometheusRule");
    let generated = file_documents("prometheus/prometheusrule.yaml");
    assert_eq!(rule["spec"], generated[0]["spec"]);
    assert_eq!(rule["metadata"]["labels"]["release"], "kube-prometheus-stack");
}

/// kubernetes-validate has no schema for the Prometheus Operator's CRDs:
/// the component's objects are checked against the operator's own CRD
/// schemas instead, as npm's @kubernetes-models/prometheus-operator
/// compiles them (types, patterns, enums, required fields), and typed with
/// the TypeScript interfaces generated from the same schemas (an unknown
/// field fails, as the API server's strict field validation would).
#[test]
#[ignore = "needs kubectl, pyyaml, npm packages: scripts/test.sh runs it"]
fn monitoring_objects_pass_the_prometheus_operators_own_schemas() {
    let project = repo().join("tests/manifests/crds");
    assert!(
        project
            .join("node_modules/@kubernetes-models/prometheus-operator")
            .exists(),
        "run `npm ci --prefix tests/manifests/crds` (scripts/test.sh does)"
    );
    let (alone, _) = monitoring_renders();
    let docs = yaml_documents(&alone);
    let check = |docs: &Value| -> Output {
        let mut child = Command::new("node")
            .arg("check.mjs")
            .current_dir(&project)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(docs.to_string().as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let all = Value::Array(docs.clone());
    let out = check(&all);
    assert!(
        out.status.success() && text(&out).contains("2 passed, 0 failed"),
        "{}",
        text(&out)
    );
    let mut bad = all.clone();
    bad[0]["spec"]["podMetricsEndpoints"][0]["interval"] = "15 seconds".into();
    let out = check(&bad);
    assert!(
        !out.status.success() && text(&out).contains("interval"),
        "{}",
        text(&out)
    );

    let typed = |docs: &Value| -> Output {
        let source = format!(
            "import type {{ IPodMonitor }} from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor';\n\
             import type {{ IPrometheusRule }} from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule';\n\
             export const podMonitor: IPodMonitor = {};\nexport const rule: IPrometheusRule = {};\n",
            serde_json::to_string_pretty(&docs[0]).unwrap(),
            serde_json::to_string_pretty(&docs[1]).unwrap()
        );
        let generated = project.join(".generated");
        std::fs::create_dir_all(&generated).unwrap();
        std::fs::write(generated.join("documents.ts"), source).unwrap();
        Command::new(project.join("node_modules/.bin/tsc"))
            .args(["-p", "tsconfig.json"])
            .current_dir(&project)
            .output()
            .expect("tsc")
    };
    let out = typed(&all);
    assert!(out.status.success(), "tsc:\n{}", text(&out));
    let mut typo = all.clone();
    let endpoint = typo[0]["spec"]["podMetricsEndpoints"][0].as_object_mut().unwrap();
    let interval = endpoint.remove("interval").unwrap();
    endpoint.insert("intervall".into(), interval);
    let out = typed(&typo);
    assert!(
        !out.status.success() && text(&out).contains("intervall"),
        "tsc accepted an unknown field:\n{}",
        text(&out)
    );
}
