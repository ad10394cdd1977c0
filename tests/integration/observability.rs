//! grafana/ and prometheus/ proven with the real tools: a real Prometheus
//! scraping the real binary answers every query of the dashboard and the
//! rules; promtool checks and unit-tests the rules; the dashboard
//! type-checks against Grafana's own `Dashboard` type from npm.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Service, exclusive, poll, repo, request, temp_dir, try_request};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub(crate) fn dashboard() -> Value {
    let raw = std::fs::read_to_string(repo().join("grafana/chaos-backend-dashboard.json")).unwrap();
    serde_json::from_str(&raw).expect("dashboard is JSON")
}

/// Every panel, rows' nested panels included.
pub(crate) fn panels(d: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        all.push(p);
        if let Some(nested) = p["panels"].as_array() {
            all.extend(nested);
        }
    }
    all
}

/// (panel title, expression) for every query of the dashboard, template
/// variables and annotations included (`label_values(m, l)` becomes `m`).
fn dashboard_queries(d: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for a in d["annotations"]["list"].as_array().unwrap() {
        // The Prometheus data source's annotation: its query in `target`, and
        // the same at the top (the form older Grafanas read).
        for expr in [&a["expr"], &a["target"]["expr"]] {
            if let Some(expr) = expr.as_str() {
                queries.push((format!("annotation {}", a["name"]), expr.to_string()));
            }
        }
    }
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            queries.push((
                p["title"].as_str().unwrap().to_string(),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(m, _)| m);
            queries.push((
                format!("variable ${}", v["name"].as_str().unwrap()),
                inner.unwrap_or(q).to_string(),
            ));
        }
    }
    queries
}

/// What Grafana would send for a query in this test's setting: a 1 s
/// scrape interval gives `$__rate_interval` = 4 x 1 s.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "4s")
        .replace("$__interval", "1s")
        .replace("$__range", "10m")
        .replace("$namespace", "local")
        .replace("$pod", "chaos-backend")
        .replace("$sla", "10")
}

/// The rules as JSON (through PyYAML, which the test command installs).
fn yaml_file_as_json(path: &Path) -> Value {
    let code = "import sys, yaml, json; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)";
    let out = Command::new("python3")
        .args(["-c", code])
        .arg(path)
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn alert_rules() -> Vec<(String, String)> {
    rules_of_kind("alert")
}

/// The recording rules: (the series they record, expression).
fn record_rules() -> Vec<(String, String)> {
    rules_of_kind("record")
}

/// (name, expression) of every rule of `kind` (`alert` or `record`).
fn rules_of_kind(kind: &str) -> Vec<(String, String)> {
    let rules = yaml_file_as_json(&repo().join("prometheus/rules.yml"));
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .filter_map(|r| Some((r[kind].as_str()?.to_string(), r["expr"].as_str().unwrap().to_string())))
        .collect()
}

/// An alert expression without its final `<op> <number>`: the query whose
/// series the alert compares (the rules file keeps to that shape).
fn without_threshold(expr: &str) -> &str {
    let trimmed = expr.trim_end();
    let number_start = trimmed.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.').len();
    let head = trimmed[..number_start].trim_end();
    for op in ["==", "!=", ">=", "<=", ">", "<"] {
        if let Some(lhs) = head.strip_suffix(op) {
            return lhs.trim_end();
        }
    }
    panic!("alert expression does not end in a comparison with a number: {expr}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Prometheus server from Debian's package, on loopback, killed on drop.
pub(crate) struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: PathBuf,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        Prometheus::scraping_every(target, "1s")
    }

    /// Scrapes `target` every `interval` (`1s`, `5s`), with the labels the
    /// dashboard's variables select (`namespace="local"`, `pod="chaos-backend"`).
    pub(crate) fn scraping_every(target: SocketAddr, interval: &str) -> Prometheus {
        Prometheus::scraping_as(target, interval, "local")
    }

    /// As `scraping_every`, with the label `namespace="NAMESPACE"`.
    pub(crate) fn scraping_as(target: SocketAddr, interval: &str, namespace: &str) -> Prometheus {
        let dir = temp_dir("prometheus");
        let config = format!(
            "global:\n  scrape_interval: {interval}\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: chaos-backend-local\n    static_configs:\n      - targets: [\"{target}\"]\n        labels:\n          namespace: {namespace}\n          pod: chaos-backend\n",
            rules = repo().join("prometheus/rules.yml").display()
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus must be installed (scripts/test.sh installs Debian's prometheus)");
        let p = Prometheus { child, addr, _dir: dir };
        let ready = poll(Duration::from_secs(20), Duration::from_millis(100), || {
            let r = try_request(p.addr, "GET", "/-/ready", &[], "", Duration::from_secs(1)).ok()?;
            (r.status == 200).then_some(())
        });
        assert!(ready.is_some(), "prometheus did not become ready");
        p
    }

    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        self.query_at(expr, None)
    }

    /// `expr` evaluated at `at` (Unix seconds; `None`: now).
    pub(crate) fn query_at(&self, expr: &str, at: Option<f64>) -> Result<Vec<Value>, String> {
        let time = at.map(|t| format!("&time={t:.3}")).unwrap_or_default();
        let r = request(
            self.addr,
            "GET",
            &format!("/api/v1/query?query={}{time}", url_encode(expr)),
            &[],
            "",
        );
        let v = r.json();
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(match v["data"]["resultType"].as_str() {
            Some("vector" | "matrix") => v["data"]["result"].as_array().unwrap().clone(),
            _ => vec![v["data"]["result"].clone()],
        })
    }

    /// Where its HTTP API answers.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn value(&self, expr: &str) -> Option<f64> {
        self.value_at(expr, None)
    }

    /// The first series' value of `expr` at `at`.
    pub(crate) fn value_at(&self, expr: &str, at: Option<f64>) -> Option<f64> {
        let result = self.query_at(expr, at).ok()?;
        result.first()?["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
#[ignore = "needs prometheus, pyyaml: scripts/test.sh runs it"]
fn every_dashboard_and_rule_query_returns_data_from_a_real_prometheus() {
    let _x = exclusive();
    let svc = Service::start(&[
        ("CHAOS_COOLDOWN_SECONDS", "0"),
        ("MAX_MEMORY_MB_READY", "40"),
        ("MAX_CONCURRENT_CHAOS", "2"),
    ]);
    let prom = Prometheus::start(svc.addr);
    let up = poll(Duration::from_secs(20), Duration::from_millis(200), || {
        (prom.value("up{job=\"chaos-backend-local\"}") == Some(1.0)).then_some(())
    });
    assert!(up.is_some(), "the first scrape never landed (up != 1)");

    // A short chaos cycle: user traffic, a CPU load that fails and recovers
    // readiness, then a leak past the readiness threshold.
    for _ in 0..50 {
        svc.get("/");
    }
    assert_eq!(svc.post("/load/cpu?duration=1").status, 202);
    assert!(
        poll(Duration::from_secs(2), Duration::from_millis(20), || (svc
            .get("/ready")
            .status
            == 503)
            .then_some(()))
        .is_some()
    );
    assert!(
        poll(Duration::from_secs(4), Duration::from_millis(20), || (svc
            .get("/ready")
            .status
            == 200)
            .then_some(()))
        .is_some()
    );
    assert_eq!(svc.post("/load/memory?mb=64").status, 200);
    assert_eq!(svc.get("/ready").status, 503);
    assert_eq!(svc.post("/load/cpu?duration=1&millicores=100").status, 202);
    for _ in 0..50 {
        svc.get("/");
    }
    // Let a few scrapes land after the cycle.
    let seen = poll(Duration::from_secs(10), Duration::from_millis(200), || {
        (prom.value("readiness_failure_to_recovery_seconds_count") == Some(1.0)
            && prom.value("pod_ready_status") == Some(0.0))
        .then_some(())
    });
    assert!(
        seen.is_some(),
        "prometheus never saw the recovery and the degraded state"
    );

    let mut empty = Vec::new();
    let mut queries = dashboard_queries(&dashboard());
    for (alert, expr) in alert_rules() {
        queries.push((format!("alert {alert}"), without_threshold(&expr).to_string()));
    }
    for (record, _) in record_rules() {
        queries.push((format!("recording rule {record}"), record));
    }
    assert!(queries.len() >= 20, "{} queries", queries.len());
    for (title, expr) in &queries {
        let sent = substitute(expr);
        match prom.query(&sent) {
            Ok(series) if !series.is_empty() => {}
            Ok(_) => empty.push(format!("{title}: no series for {sent}")),
            Err(e) => empty.push(format!("{title}: {e} in {sent}")),
        }
    }
    assert!(empty.is_empty(), "queries without data:\n{}", empty.join("\n"));
    eprintln!("{} queries returned data", queries.len());

    // The rules loaded and evaluate without error.
    let rules = request(prom.addr, "GET", "/api/v1/rules", &[], "").json();
    let loaded: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .collect();
    assert_eq!(loaded.len(), alert_rules().len() + record_rules().len());
    for r in loaded {
        assert_ne!(r["health"], "err", "{}: {}", r["name"], r["lastError"]);
    }
}

#[test]
#[ignore = "needs promtool, pyyaml: scripts/test.sh runs it"]
fn promtool_checks_the_rules_and_tests_each_alert_firing_and_quiet() {
    let dir = repo().join("prometheus");
    let out = Command::new("promtool")
        .args(["check", "rules", "rules.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = Command::new("promtool")
        .args(["check", "config", "prometheus.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = Command::new("promtool")
        .args(["test", "rules", "rules.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // Each alert has a test where it fires and one where it stays quiet.
    let tests = yaml_file_as_json(&dir.join("rules.test.yml"));
    for (alert, _) in alert_rules() {
        let cases: Vec<&Value> = tests["tests"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["alert_rule_test"].as_array().unwrap().iter())
            .filter(|c| c["alertname"] == alert.as_str())
            .collect();
        let fires = cases
            .iter()
            .any(|c| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()));
        let quiet = cases
            .iter()
            .any(|c| c["exp_alerts"].as_array().is_some_and(|a| a.is_empty()));
        assert!(fires && quiet, "{alert}: fires {fires}, quiet {quiet}");
    }
}

/// The Faults annotation (from `chaos_fault_active`: a region from each
/// fault's start to its end) is on every time-series panel whose curve a
/// fault explains: latency, memory, disk, user traffic.
#[test]
fn fault_annotations_mark_the_panels_a_fault_explains() {
    let d = dashboard();
    let faults = d["annotations"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "Faults")
        .expect("a Faults annotation");
    assert!(faults["expr"].as_str().unwrap().contains("chaos_fault_active"));
    assert_eq!(faults["expr"], faults["target"]["expr"]);
    assert_eq!(faults["filter"]["exclude"], false);
    let ids: Vec<u64> = faults["filter"]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let explained = [
        "Request latency p50 / p95 by endpoint",
        "Tail latency outliers (p99)",
        "CPU stress and latency",
        "Memory against the readiness threshold",
        "Disk fill written and target",
        "Disk fills ended, by reason",
        "GET / requests by code",
        "GET / error ratio by code",
    ];
    for title in explained {
        let p = panels(&d)
            .into_iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("no panel {title}"));
        assert_eq!(p["type"], "timeseries", "{title}");
        assert!(
            ids.contains(&p["id"].as_u64().unwrap()),
            "{title} lacks the Faults annotation"
        );
    }
    for id in &ids {
        assert!(
            panels(&d)
                .iter()
                .any(|p| p["id"].as_u64() == Some(*id) && p["type"] == "timeseries"),
            "annotation filter names panel {id}, which is no time series"
        );
    }
}

/// The Faults annotation is queried every `step` (15 s), but a fault can
/// run for less than that: under a 5 s scrape a 6 s fault leaves one or two
/// samples of 1 between two steps, which an instant query at each step
/// never sees. Under a 60 s scrape the region must still be one piece, not
/// a point per scrape. promtool evaluates the dashboard's own expression
/// at the steps Grafana would.
#[test]
#[ignore = "needs promtool: scripts/test.sh runs it"]
fn fault_annotation_marks_a_fault_shorter_than_its_step_and_spans_slow_scrapes() {
    let d = dashboard();
    let faults = d["annotations"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "Faults")
        .expect("a Faults annotation");
    assert_eq!(faults["step"], "15s");
    let expr = substitute(faults["expr"].as_str().unwrap());
    let series = r#"chaos_fault_active{fault="cpu", namespace="local", pod="chaos-backend"}"#;
    let case = |name: &str, interval: &str, values: &str, at: &[(&str, u8)]| {
        let mut t = format!(
            "  - name: {name}\n    interval: {interval}\n    input_series:\n      - series: '{series}'\n        values: '{values}'\n    promql_expr_test:\n"
        );
        for (time, value) in at {
            t.push_str(&format!(
                "      - expr: '{}'\n        eval_time: {time}\n        exp_samples: [{{labels: '{{fault=\"cpu\"}}', value: {value}}}]\n",
                expr.replace('\'', "''")
            ));
        }
        t
    };
    // 5 s scrapes see the fault at 20 s and 25 s only, between the steps at
    // 15 s and 30 s; 60 s scrapes see it at 60 s and 120 s, with three steps
    // between two scrapes.
    let tests = format!(
        "rule_files: []\nevaluation_interval: 15s\ntests:\n{}{}",
        case(
            "a 6 s fault between two steps under a 5 s scrape",
            "5s",
            "0 0 0 0 1 1 0 0 0 0 0 0 0",
            &[("15s", 0), ("30s", 1), ("45s", 0)],
        ),
        case(
            "a 2 minute fault under a 60 s scrape is one region",
            "60s",
            "0 1 1 0 0",
            &[
                ("45s", 0),
                ("60s", 1),
                ("75s", 1),
                ("90s", 1),
                ("105s", 1),
                ("120s", 1),
                ("135s", 1),
                ("195s", 0),
            ],
        ),
    );
    let dir = temp_dir("annotation");
    std::fs::write(dir.join("annotation.test.yml"), tests).unwrap();
    let out = Command::new("promtool")
        .args(["test", "rules", "annotation.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
#[ignore = "needs promtool, pyyaml: scripts/test.sh runs it"]
fn prometheusrule_is_generated_from_the_rules_file() {
    let out = Command::new("bash")
        .arg(repo().join("scripts/gen-prometheusrule.sh"))
        .arg("--check")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // Unwrapped to its spec, the PrometheusRule passes promtool.
    let manifest = yaml_file_as_json(&repo().join("prometheus/prometheusrule.yaml"));
    assert_eq!(manifest["kind"], "PrometheusRule");
    let spec = temp_dir("prometheusrule").join("spec.json");
    std::fs::write(&spec, manifest["spec"].to_string()).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&spec)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "SUCCESS: {} rules found",
            alert_rules().len() + record_rules().len()
        )),
        "{}",
        text(&out)
    );
}

#[test]
fn dashboard_is_importable_with_units_and_variables() {
    let d = dashboard();
    let inputs = d["__inputs"].as_array().unwrap();
    assert_eq!(inputs[0]["type"], "datasource");
    assert_eq!(inputs[0]["pluginId"], "prometheus");
    let input = format!("${{{}}}", inputs[0]["name"].as_str().unwrap());
    // Panels use the datasource variable, whose default is the import input:
    // that works for an import (the input is filled in) and for provisioning
    // (the variable picks the default Prometheus).
    let ds_var = &d["templating"]["list"][0];
    assert_eq!(
        (ds_var["type"].as_str(), ds_var["query"].as_str()),
        (Some("datasource"), Some("prometheus"))
    );
    assert_eq!(ds_var["current"]["value"], input.as_str());
    let requires: Vec<&str> = d["__requires"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(requires.contains(&"grafana") && requires.contains(&"prometheus"));
    assert!(d["schemaVersion"].as_u64().unwrap() >= 39, "a recent schemaVersion");
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "namespace", "pod", "sla"]);
    for p in panels(&d).into_iter().filter(|p| p["type"] != "row") {
        let title = p["title"].as_str().unwrap();
        assert!(
            requires.contains(&p["type"].as_str().unwrap()),
            "{title}: panel type not in __requires"
        );
        assert!(p["fieldConfig"]["defaults"]["unit"].is_string(), "{title}: no unit");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            assert!(
                expr.contains("$namespace") && expr.contains("$pod"),
                "{title}: {expr} ignores the variables"
            );
        }
    }
    // Thresholds where a figure has a good and a bad side.
    for title in [
        "SLA compliance",
        "Readiness per pod",
        "Detection and recovery p50 / p95",
    ] {
        let p = panels(&d).into_iter().find(|p| p["title"] == title).unwrap();
        assert!(
            p["fieldConfig"]["defaults"]["thresholds"]["steps"]
                .as_array()
                .unwrap()
                .len()
                >= 2,
            "{title}"
        );
    }
    let sla = panels(&d).into_iter().find(|p| p["title"] == "SLA compliance").unwrap();
    assert!(
        sla["targets"][0]["expr"].as_str().unwrap().contains("le=\"$sla\""),
        "the SLA is the dashboard variable"
    );
}

#[test]
#[ignore = "needs npm: scripts/test.sh runs it"]
fn dashboard_type_checks_against_grafanas_own_dashboard_type() {
    let project = repo().join("grafana/typecheck");
    let schema = project.join("node_modules/@grafana/schema");
    assert!(
        schema.exists(),
        "run `npm ci --prefix grafana/typecheck` (scripts/test.sh does)"
    );
    let mut d = dashboard();
    // Import-time metadata that Grafana reads and strips; not dashboard fields.
    let object = d.as_object_mut().unwrap();
    object.remove("__inputs");
    object.remove("__requires");
    let wrapped = format!(
        "import type {{ AnnotationQuery, Dashboard, DataQuery }} from '@grafana/schema';\n\
         // The Prometheus data source's query and the annotation fields it\n\
         // reads (Grafana's packages/grafana-prometheus: PromQuery and its\n\
         // annotation support), which @grafana/schema does not ship: its\n\
         // AnnotationQuery is generic over the data source's query type.\n\
         interface PromQuery extends DataQuery {{ expr: string; interval?: string; }}\n\
         interface PromAnnotation extends AnnotationQuery<PromQuery> {{ expr?: string; step?: string; titleFormat?: string; textFormat?: string; tagKeys?: string; useValueForTime?: boolean; }}\n\
         type Typed = Omit<Dashboard, 'annotations'> & {{ annotations?: {{ list?: PromAnnotation[] }} }};\n\
         // JSON holds strings where the types have string enums: accept each\n\
         // enum's values, keep every other check (unknown fields, types).\n\
         type Json<T> = T extends string ? `${{T}}` : T extends Array<infer U> ? Array<Json<U>> : T extends object ? {{ [K in keyof T]: Json<T[K]> }} : T;\n\
         const d: Json<Typed> = {};\nexport default d;\n",
        serde_json::to_string_pretty(&d).unwrap()
    );
    let generated = project.join(".generated");
    std::fs::create_dir_all(&generated).unwrap();
    let check = |source: &str| -> Output {
        std::fs::File::create(generated.join("dashboard.ts"))
            .unwrap()
            .write_all(source.as_bytes())
            .unwrap();
        Command::new(project.join("node_modules/.bin/tsc"))
            .args(["-p", "tsconfig.json"])
            .current_dir(&project)
            .output()
            .expect("tsc")
    };
    let out = check(&wrapped);
    assert!(out.status.success(), "tsc:\n{}", text(&out));
    // The check has teeth: a misspelt field fails it, in a panel and in an
    // annotation.
    let out = check(&wrapped.replacen("\"gridPos\"", "\"gridPosition\"", 1));
    assert!(
        !out.status.success() && text(&out).contains("gridPosition"),
        "tsc accepted a misspelt field"
    );
    let out = check(&wrapped.replacen("\"titleFormat\"", "\"titelFormat\"", 1));
    assert!(
        !out.status.success() && text(&out).contains("titelFormat"),
        "tsc accepted a misspelt annotation field"
    );

    // Every panel type is one Grafana ships: a panel schema in @grafana/schema.
    let shipped: Vec<String> = std::fs::read_dir(schema.join("dist/types/raw/composable"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    for p in panels(&dashboard()) {
        let t = p["type"].as_str().unwrap();
        assert!(
            t == "row" || shipped.iter().any(|s| s == &t.replace('-', "")),
            "{t} is not a Grafana panel"
        );
    }
}

/// compose.yaml, read by a real compose implementation (PyPI podman-compose,
/// which the test command installs): it resolves, it has the three services,
/// and every file it mounts or builds from exists.
#[test]
#[ignore = "needs podman-compose, promtool, pyyaml: scripts/test.sh runs it"]
fn compose_lab_resolves_and_every_mounted_file_exists() {
    let out = Command::new("podman-compose")
        .args(["-f", "compose.yaml", "config"])
        .current_dir(repo())
        .env("CONTAINERS_CONF", repo().join("tests/podman/containers.conf"))
        .output()
        .expect("podman-compose must be installed (scripts/test.sh installs it)");
    assert!(out.status.success(), "podman-compose config: {}", text(&out));
    let resolved = temp_dir("compose").join("resolved.yaml");
    std::fs::write(&resolved, &out.stdout).unwrap();
    let config = yaml_file_as_json(&resolved);
    let services = config["services"].as_object().unwrap();
    let mut names: Vec<&str> = services.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["chaos-backend", "grafana", "prometheus"]);
    for (name, service) in services {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if source.starts_with('/') {
                assert!(
                    Path::new(source).exists(),
                    "{name} mounts {source}, which does not exist"
                );
            }
        }
    }
    let build = &services["chaos-backend"]["build"];
    let context = Path::new(build["context"].as_str().unwrap());
    assert!(
        context.ends_with("target/image"),
        "the context scripts/build-image.sh lays out: {context:?}"
    );
    let containerfile = lexical(&context.join(build["dockerfile"].as_str().unwrap()));
    assert_eq!(
        containerfile,
        repo().join("Containerfile"),
        "the lab builds the Containerfile that ships"
    );
    // The lab's Prometheus config is valid, and loads the same rules file.
    let out = Command::new("promtool")
        .args(["check", "config", "--syntax-only", "prometheus/compose-prometheus.yml"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let prometheus_mounts = services["prometheus"]["volumes"].to_string();
    assert!(
        prometheus_mounts.contains("prometheus/rules.yml:/etc/prometheus/rules.yml"),
        "{prometheus_mounts}"
    );
    let grafana_mounts = services["grafana"]["volumes"].to_string();
    assert!(
        grafana_mounts.contains("chaos-backend-dashboard.json:/var/lib/grafana/dashboards/"),
        "{grafana_mounts}"
    );
}

/// `a/b/../c` -> `a/c`, without touching the file system (the build context
/// exists only after scripts/build-image.sh).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// What `/metrics` exports: family -> (type, label -> values), histogram
/// series folded into their family and `le` left out.
type Families = std::collections::BTreeMap<String, (String, std::collections::BTreeMap<String, BTreeSet<String>>)>;

fn exported(body: &str) -> Families {
    let mut out: Families = Families::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            out.entry(name.to_string()).or_default().0 = kind.to_string();
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|f| out.get(*f).is_some_and(|(kind, _)| kind == "histogram"))
            .unwrap_or(name);
        let entry = out.entry(family.to_string()).or_default();
        for pair in labels.trim_end_matches('}').split("\",").filter(|p| !p.is_empty()) {
            let (label, value) = pair.split_once("=\"").expect("label=\"value\"");
            if label != "le" {
                entry
                    .1
                    .entry(label.to_string())
                    .or_default()
                    .insert(value.trim_end_matches('"').to_string());
            }
        }
    }
    out
}

/// The metrics table of docs/observability.md: family -> (type, label ->
/// the values its cell lists in code spans, and the cell's text).
type Documented =
    std::collections::BTreeMap<String, (String, std::collections::BTreeMap<String, (BTreeSet<String>, String)>)>;

fn documented_metrics() -> Documented {
    let doc = std::fs::read_to_string(repo().join("docs/observability.md")).expect("docs/observability.md");
    let table = doc
        .split("\n## Metrics\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Metrics section");
    let mut out = Documented::new();
    for line in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).skip(1).collect();
        let name = cells[0].trim_matches('`').to_string();
        let mut labels = std::collections::BTreeMap::new();
        for part in cells[2].split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (label, rest) = part
                .split_once(':')
                .unwrap_or_else(|| panic!("{name}: label cell {part:?}"));
            let values: BTreeSet<String> = rest.split('`').skip(1).step_by(2).map(str::to_string).collect();
            labels.insert(label.trim().trim_matches('`').to_string(), (values, rest.to_string()));
        }
        let previous = out.insert(name.clone(), (cells[1].to_string(), labels));
        assert!(previous.is_none(), "two rows for {name}");
    }
    out
}

/// The metrics table in docs/observability.md is what the binary exports,
/// after every kind of fault has run and every method has been seen: each
/// family with its type, its labels, and each bounded label's values; no row
/// names a metric the binary lacks. `endpoint` is each path of
/// api/openapi.json plus the values the row lists; `code`, a status code, is
/// described, not listed. (A table that gave `chaos_actions_total{action}`
/// as only cpu, memory, disk, crash fails it.)
#[test]
fn the_metrics_table_is_what_the_binary_exports() {
    let _x = exclusive();
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0"), ("MAX_CONCURRENT_CHAOS", "64")]);
    for target in [
        "/load/cpu?millicores=100&duration=1",
        "/load/memory?mb=1&hold=1",
        "/load/disk?mb=1",
        "/load/latency?ms=1&duration=1",
        "/fault/liveness?duration=1",
        "/fault/readiness?duration=1",
    ] {
        let r = svc.post(target);
        assert!(r.status < 300, "{target}: {} {}", r.status, r.body);
    }
    for method in ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"] {
        request(svc.addr, method, "/no-such-path", &[], "");
    }
    let metrics = exported(&svc.get("/metrics").body);
    assert_eq!(svc.post("/chaos/stop").status, 200);
    let documented = documented_metrics();

    let document: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("api/openapi.json")).unwrap()).unwrap();
    let paths: BTreeSet<String> = document["paths"].as_object().unwrap().keys().cloned().collect();
    let mut problems = Vec::new();
    for (family, (kind, labels)) in &metrics {
        let Some((doc_kind, doc_labels)) = documented.get(family) else {
            problems.push(format!("{family} ({kind}) is exported and has no row"));
            continue;
        };
        if doc_kind != kind {
            problems.push(format!("{family}: the row says {doc_kind}, the binary {kind}"));
        }
        let names: BTreeSet<&String> = labels.keys().collect();
        let doc_names: BTreeSet<&String> = doc_labels.keys().collect();
        if names != doc_names {
            problems.push(format!("{family}: labels {names:?}, the row says {doc_names:?}"));
            continue;
        }
        for (label, values) in labels {
            let (listed, text) = &doc_labels[label];
            let ok = match label.as_str() {
                "code" => {
                    listed.is_empty()
                        && text.contains("status code")
                        && values
                            .iter()
                            .all(|v| v.len() == 3 && v.bytes().all(|b| b.is_ascii_digit()))
                }
                "endpoint" => {
                    let expected: BTreeSet<String> = paths.union(listed).cloned().collect();
                    *values == expected
                }
                _ => values == listed,
            };
            if !ok {
                problems.push(format!(
                    "{family}{{{label}}}: exported {values:?}, the row lists {listed:?}"
                ));
            }
        }
    }
    for family in documented.keys().filter(|f| !metrics.contains_key(*f)) {
        problems.push(format!("{family} has a row and is not exported"));
    }
    problems.extend(metric_names_not_exported(&metrics));
    assert!(
        problems.is_empty(),
        "docs/observability.md against /metrics:\n{}",
        problems.join("\n")
    );
}

/// Names the seed used, mentioned as such where they were renamed.
const FORMER_NAMES: &[&str] = &["memory_chunks_count", "pod_recovery_count"];

/// Every name in a code span of README.md or docs/*.md that has the shape
/// of one of the binary's metrics (a family's first word, and a metric
/// suffix) but is not one, nor a histogram's series.
fn metric_names_not_exported(metrics: &Families) -> Vec<String> {
    const SUFFIXES: &[&str] = &[
        "_total",
        "_seconds",
        "_bytes",
        "_count",
        "_sum",
        "_bucket",
        "_status",
        "_active",
        "_millicores",
        "_open",
        "_chunks",
        "_fds",
        "_threads",
    ];
    let prefixes: BTreeSet<&str> = metrics.keys().filter_map(|f| f.split('_').next()).collect();
    let known = |name: &str| {
        metrics.contains_key(name)
            || ["_bucket", "_sum", "_count"].iter().any(|s| {
                name.strip_suffix(s)
                    .is_some_and(|f| metrics.get(f).is_some_and(|(k, _)| k == "histogram"))
            })
    };
    let mut pages = vec![repo().join("README.md")];
    pages.extend(
        std::fs::read_dir(repo().join("docs"))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "md")),
    );
    let mut problems = Vec::new();
    for page in pages {
        let text = std::fs::read_to_string(&page).unwrap();
        for (n, line) in text.lines().enumerate() {
            for span in line.split('`').skip(1).step_by(2) {
                for word in span.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    let shaped = word.contains('_')
                        && word
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                        && word.split('_').next().is_some_and(|p| prefixes.contains(p))
                        && SUFFIXES.iter().any(|s| word.ends_with(s));
                    if shaped && !known(word) && !FORMER_NAMES.contains(&word) {
                        problems.push(format!(
                            "{}:{}: `{word}` is not a metric the binary exports",
                            page.strip_prefix(repo()).unwrap_or(&page).display(),
                            n + 1
                        ));
                    }
                }
            }
        }
    }
    problems
}
