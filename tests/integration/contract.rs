//! The live service's answers against `api/openapi.json` while faults run.
//! The first schemathesis pass stops every fault after every call, so an
//! answer that only occurs while one runs (`DELETE /load/cpu` stopping a
//! load, `/health` under a liveness fault, a second disk fill's 409, a
//! guardrail's 429) was never held to the document: here each is, by status,
//! content type and body schema. Plain `cargo test`: no outside tool.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::harness::{Response, Service, exclusive, request};
use crate::openapi::repo_document;

/// Follows `$ref`s (`#/components/...`) to the object they name.
fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("only local $refs: {r}"));
        v = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("$ref {r} points nowhere"));
    }
    v
}

fn type_fits(name: &str, value: &Value) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        other => panic!("unknown JSON Schema type {other:?}"),
    }
}

/// The JSON Schema keywords the document uses, checked; any other keyword is
/// an error, so a schema this validator cannot read never passes unread.
pub fn validate(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    let Some(keywords) = schema.as_object() else {
        errors.push(format!("{at}: schema is not an object: {schema}"));
        return;
    };
    for (keyword, s) in keywords {
        match keyword.as_str() {
            "description" | "title" | "format" | "example" | "examples" => {}
            "type" => {
                let names: Vec<&str> = match s {
                    Value::String(n) => vec![n.as_str()],
                    Value::Array(ns) => ns.iter().filter_map(Value::as_str).collect(),
                    _ => panic!("{at}: bad type keyword {s}"),
                };
                if !names.iter().any(|n| type_fits(n, value)) {
                    errors.push(format!("{at}: {value} is not of type {names:?}"));
                }
            }
            "enum" => {
                if !s.as_array().is_some_and(|a| a.contains(value)) {
                    errors.push(format!("{at}: {value} is not one of {s}"));
                }
            }
            "const" => {
                if s != value {
                    errors.push(format!("{at}: {value} is not {s}"));
                }
            }
            "required" => {
                if let Some(object) = value.as_object() {
                    for key in s.as_array().into_iter().flatten().filter_map(Value::as_str) {
                        if !object.contains_key(key) {
                            errors.push(format!("{at}: required property {key:?} is missing"));
                        }
                    }
                }
            }
            "properties" => {
                if let (Some(object), Some(properties)) = (value.as_object(), s.as_object()) {
                    for (key, v) in object {
                        if let Some(p) = properties.get(key) {
                            validate(doc, p, v, &format!("{at}.{key}"), errors);
                        }
                    }
                }
            }
            "additionalProperties" => {
                let Some(object) = value.as_object() else { continue };
                let known = schema.get("properties").and_then(Value::as_object);
                for (key, v) in object {
                    if known.is_some_and(|k| k.contains_key(key)) {
                        continue;
                    }
                    match s {
                        Value::Bool(false) => errors.push(format!("{at}: property {key:?} is not in the schema")),
                        Value::Bool(true) => {}
                        extra => validate(doc, extra, v, &format!("{at}.{key}"), errors),
                    }
                }
            }
            "items" => {
                for (i, v) in value.as_array().into_iter().flatten().enumerate() {
                    validate(doc, s, v, &format!("{at}[{i}]"), errors);
                }
            }
            "minItems" => {
                let (Some(a), Some(min)) = (value.as_array(), s.as_u64()) else {
                    continue;
                };
                if (a.len() as u64) < min {
                    errors.push(format!("{at}: {} items, fewer than {min}", a.len()));
                }
            }
            "anyOf" | "oneOf" => {
                let fits = s
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|alternative| {
                        let mut inner = Vec::new();
                        validate(doc, alternative, value, at, &mut inner);
                        inner.is_empty()
                    })
                    .count();
                if fits == 0 || (keyword == "oneOf" && fits > 1) {
                    errors.push(format!("{at}: {value} fits {fits} of the {keyword} alternatives"));
                }
            }
            "pattern" => {
                // Only the form the document uses: an anchored literal prefix.
                let pattern = s.as_str().unwrap_or("");
                let literal = pattern
                    .strip_prefix('^')
                    .filter(|rest| {
                        !rest
                            .replace("\\.", "")
                            .contains(['*', '+', '?', '[', '(', '|', '$', '{'])
                    })
                    .map(|rest| rest.replace("\\.", "."));
                match (literal, value.as_str()) {
                    (Some(prefix), Some(text)) if !text.starts_with(&prefix) => {
                        errors.push(format!("{at}: {text:?} does not match {pattern:?}"))
                    }
                    (None, _) => errors.push(format!(
                        "{at}: the test's validator cannot read the pattern {pattern:?}"
                    )),
                    _ => {}
                }
            }
            "minimum" | "maximum" => {
                if let (Some(v), Some(bound)) = (value.as_f64(), s.as_f64()) {
                    let ok = if keyword == "minimum" { v >= bound } else { v <= bound };
                    if !ok {
                        errors.push(format!("{at}: {v} is beyond the {keyword} {bound}"));
                    }
                }
            }
            other => errors.push(format!(
                "{at}: the test's validator does not know the keyword {other:?}"
            )),
        }
    }
}

/// Whether `r`, the answer to `method path`, is one the document promises:
/// a documented status, its content type, and a body that fits its schema.
pub fn conformance(doc: &Value, method: &str, path: &str, r: &Response) -> Result<(), String> {
    let operation = &doc["paths"][path][method.to_lowercase()];
    let Some(answer) = operation["responses"].get(r.status.to_string()) else {
        return Err(format!("{method} {path}: status {} is not documented", r.status));
    };
    let answer = resolve(doc, answer);
    let content_type = r.header("Content-Type").unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    let Some(content) = answer["content"].as_object() else {
        return Ok(());
    };
    let Some(documented) = content.get(media) else {
        let listed: Vec<&String> = content.keys().collect();
        return Err(format!(
            "{method} {path} {}: content type {content_type:?}, documented {listed:?}",
            r.status
        ));
    };
    if media != "application/json" {
        return Ok(());
    }
    let body: Value = serde_json::from_str(&r.body)
        .map_err(|e| format!("{method} {path} {}: body is not JSON ({e}): {}", r.status, r.body))?;
    let mut errors = Vec::new();
    validate(doc, &documented["schema"], &body, "body", &mut errors);
    if errors.is_empty() {
        return Ok(());
    }
    let mut shown = body.to_string();
    if shown.len() > 300 {
        shown = format!(
            "{}... ({} bytes)",
            shown.chars().take(300).collect::<String>(),
            shown.len()
        );
    }
    Err(format!(
        "{method} {path} {} answered {shown}, off the document:\n  {}",
        r.status,
        errors.join("\n  ")
    ))
}

/// Requests and checks answers, collecting every mismatch, so that one run
/// shows them all.
struct Checker<'a> {
    doc: Value,
    svc: &'a Service,
    failures: Vec<String>,
}

impl<'a> Checker<'a> {
    fn new(svc: &'a Service) -> Checker<'a> {
        Checker {
            doc: repo_document(),
            svc,
            failures: Vec::new(),
        }
    }

    fn call(&mut self, method: &str, target: &str) -> Response {
        let r = request(self.svc.addr, method, target, &[], "");
        let path = target.split('?').next().unwrap_or(target);
        if let Err(e) = conformance(&self.doc, method, path, &r) {
            self.failures.push(format!("{target}: {e}"));
        }
        r
    }

    fn expect(&mut self, method: &str, target: &str, status: u16) -> Response {
        let r = self.call(method, target);
        if r.status != status {
            self.failures.push(format!(
                "{method} {target}: {} where {status} was meant: {}",
                r.status, r.body
            ));
        }
        r
    }
}

/// Starts every kind of fault, two leaks (one made, one ramping).
const EVERY_FAULT: &[(&str, u16)] = &[
    ("/load/cpu?millicores=100&duration=30", 202),
    ("/load/memory?mb=1", 200),
    ("/load/memory?mb=4&ramp=30", 202),
    ("/load/disk?mb=2&ramp=30", 202),
    ("/fault/readiness?duration=30", 202),
    ("/fault/liveness?mode=fail&duration=30", 202),
    ("/load/latency?ms=20&duration=30", 202),
];

/// A second start of each kind while the first runs: the disk fill is one
/// at a time (409); the others add or replace.
const SECOND_STARTS: &[(&str, u16)] = &[
    ("/load/disk?mb=1", 409),
    ("/load/cpu?millicores=100&duration=30", 202),
    ("/load/memory?mb=1&hold=30", 200),
    ("/fault/readiness?duration=30", 202),
    ("/fault/liveness?mode=hang&duration=30", 202),
    ("/load/latency?ms=20&duration=30", 202),
];

fn start_every_fault(c: &mut Checker) {
    for (target, status) in EVERY_FAULT {
        c.expect("POST", target, *status);
    }
}

/// With every kind of fault running, each operation but `POST /crash` is
/// called, and each answer (starts, the reads, a second start of each kind,
/// each stop while its fault runs and again once it does not, the stop of
/// everything, the guardrail's 429) must be the document's: a document
/// that says `"stopping"` where `DELETE /load/cpu` answers `"stopped"` fails
/// it.
#[test]
fn answers_while_faults_run_match_the_document() {
    let _x = exclusive();
    let svc = Service::start(&[
        ("CHAOS_COOLDOWN_SECONDS", "0"),
        ("MAX_CONCURRENT_CHAOS", "64"),
        ("LATENCY_WINDOW_SECONDS", "1"),
    ]);
    let mut c = Checker::new(&svc);
    start_every_fault(&mut c);
    // The reads, each while every fault runs.
    c.expect("GET", "/", 200);
    c.expect("GET", "/health", 500);
    c.expect("GET", "/ready", 503);
    let listed = c.expect("GET", "/chaos", 200).json();
    let kinds: BTreeSet<&str> = listed["faults"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["fault"].as_str())
        .collect();
    let every: BTreeSet<&str> = ["cpu", "memory", "disk", "readiness", "liveness", "latency"].into();
    assert_eq!(kinds, every, "GET /chaos lists every kind started: {listed}");
    c.expect("GET", "/metrics", 200);
    c.expect("GET", "/openapi.json", 200);
    for (target, status) in SECOND_STARTS {
        c.expect("POST", target, *status);
    }
    // Each stop while its fault runs, then again when none does.
    for path in [
        "/load/cpu",
        "/load/memory",
        "/load/disk",
        "/fault/liveness",
        "/fault/readiness",
        "/load/latency",
    ] {
        let running = c.expect("DELETE", path, 200).json();
        let idle = c.expect("DELETE", path, 200).json();
        assert_ne!(
            running["status"], "not active",
            "DELETE {path} with its fault running: {running}"
        );
        assert_eq!(idle["status"], "not active", "DELETE {path} a second time: {idle}");
    }
    // The disk fill that is written, not ramping, and its stop.
    c.expect("POST", "/load/disk?mb=1", 200);
    c.expect("DELETE", "/load/disk", 200);
    // Everything again, and the stop of everything.
    start_every_fault(&mut c);
    let stopped = c.expect("POST", "/chaos/stop", 200).json();
    assert!(stopped["stopped"].as_array().is_some_and(|s| s.len() >= 6), "{stopped}");
    c.expect("POST", "/chaos/stop", 200);
    c.expect("GET", "/ready", 200);
    let failures = std::mem::take(&mut c.failures);
    assert!(
        failures.is_empty(),
        "answers off api/openapi.json:\n{}\nservice stderr:\n{}",
        failures.join("\n"),
        svc.stderr()
    );
}

/// A start of each fault the guardrails count, short and small.
const SHORT_STARTS: &[&str] = &[
    "/load/cpu?millicores=100&duration=5",
    "/load/memory?mb=1",
    "/load/disk?mb=1",
    "/fault/readiness?duration=5",
    "/fault/liveness?duration=5",
    "/load/latency?ms=5&duration=5",
];

/// A guardrail's refusal of each start (429 with `Retry-After`), while one
/// leak holds the only slot, is the document's.
#[test]
fn guardrail_refusals_match_the_document() {
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0"), ("MAX_CONCURRENT_CHAOS", "1")]);
    let mut c = Checker::new(&svc);
    c.expect("POST", "/load/memory?mb=1", 200);
    for target in SHORT_STARTS {
        let r = c.expect("POST", target, 429);
        assert!(r.header("Retry-After").is_some(), "{target}: 429 without Retry-After");
    }
    c.expect("DELETE", "/load/memory", 200);
    assert!(
        c.failures.is_empty(),
        "answers off api/openapi.json:\n{}",
        c.failures.join("\n")
    );
}

/// A stop that arrives while a leak is being made ends it, and the leak's
/// request gets the documented 409 (nothing of it is kept). The leak is
/// large enough (512 MiB, about 0.3 s of page writes) that the stop, sent
/// once `GET /chaos` lists it, lands while it is made; a few tries make
/// that certain on a loaded machine, where the leak is only slower.
#[test]
fn a_leak_stopped_while_it_is_made_answers_the_documented_409() {
    let _x = exclusive();
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let doc = repo_document();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let leak = std::thread::scope(|s| {
            let leak = s.spawn(|| request(svc.addr, "POST", "/load/memory?mb=512", &[], ""));
            let listed = crate::harness::poll(
                std::time::Duration::from_secs(5),
                std::time::Duration::from_millis(1),
                || (svc.get("/chaos").json()["active"] == 1).then_some(()),
            );
            assert!(listed.is_some(), "the leak never showed in GET /chaos");
            let stop = svc.post("/chaos/stop");
            assert_eq!(stop.status, 200, "{}", stop.body);
            leak.join().expect("leak request")
        });
        if let Err(e) = conformance(&doc, "POST", "/load/memory", &leak) {
            panic!("{e}");
        }
        statuses.push(leak.status);
        if leak.status == 409 {
            assert_eq!(leak.json()["leaked_mb"], 0, "{}", leak.body);
            break;
        }
        assert_eq!(svc.post("/chaos/stop").status, 200);
    }
    assert_eq!(
        statuses.last(),
        Some(&409),
        "no stop landed while a leak was made: {statuses:?}"
    );
    assert_eq!(svc.get("/chaos").json()["active"], 0);
}

/// Once the ordered stop has begun, each start's 503 (`/crash` included)
/// and each stop's and read's answer are the document's; so is the 507 of
/// a disk fill past the process's file-size limit.
#[test]
fn answers_during_the_stop_and_past_the_file_size_limit_match_the_document() {
    let mut prlimit = std::process::Command::new("prlimit");
    prlimit.args(["--fsize=1048576", "--"]);
    let inner = crate::harness::command(
        &crate::harness::temp_dir("contract-stop"),
        &[("SHUTDOWN_DELAY_SECONDS", "30"), ("CHAOS_COOLDOWN_SECONDS", "0")],
    );
    let svc = Service::spawn(crate::harness::wrapped(prlimit, &inner));
    let mut c = Checker::new(&svc);
    let full = c.expect("POST", "/load/disk?mb=2", 507);
    assert_eq!(full.json()["reason"], "file_size_limit", "{}", full.body);
    svc.signal(libc::SIGTERM);
    let stopping = crate::harness::poll(
        std::time::Duration::from_secs(5),
        std::time::Duration::from_millis(10),
        || (svc.get("/ready").status == 503).then_some(()),
    );
    assert!(stopping.is_some());
    for target in SHORT_STARTS.iter().chain(&["/crash?mode=exit&code=3"]) {
        let r = c.expect("POST", target, 503);
        assert_eq!(r.json()["reason"], "shutting_down", "{target}: {}", r.body);
    }
    c.expect("POST", "/chaos/stop", 200);
    c.expect("DELETE", "/load/disk", 200);
    c.expect("GET", "/ready", 503);
    c.expect("GET", "/health", 200);
    assert!(
        c.failures.is_empty(),
        "answers off api/openapi.json:\n{}",
        c.failures.join("\n")
    );
}
