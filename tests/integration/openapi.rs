//! The OpenAPI document (`api/openapi.json`) against what the server really
//! does: the routes it answers, the endpoint tables of README.md and
//! docs/api.md, every parameter bound one step inside and outside, the HTTP
//! layer's own answers; and,
//! with the tools scripts/test.sh installs, openapi-spec-validator, Redocly's
//! lint and a schemathesis run against the live release binary.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    BIN, Service, describe, exclusive, in_tmpfs, output_within, repo, request, temp_dir, with_service_env,
};

const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

pub fn repo_document() -> Value {
    let text = std::fs::read_to_string(repo().join("api/openapi.json")).expect("read api/openapi.json");
    serde_json::from_str(&text).expect("api/openapi.json is JSON")
}

fn served_document(svc: &Service) -> Value {
    let r = svc.get("/openapi.json");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    r.json()
}

/// (METHOD, path) of every operation in `doc`.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method.to_lowercase()).is_some() {
                out.insert((method.to_string(), path.clone()));
            }
        }
    }
    out
}

fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    &doc["paths"][path][method.to_lowercase()]
}

/// The status codes `doc` lists for one operation.
fn documented_statuses(doc: &Value, method: &str, path: &str) -> BTreeSet<u16> {
    operation(doc, method, path)["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} has responses"))
        .keys()
        .map(|k| {
            k.parse()
                .unwrap_or_else(|_| panic!("{method} {path}: status {k:?} is a number"))
        })
        .collect()
}

/// The document served is the repository's, with only the `millicores`
/// maximum filled in; every path in it answers exactly its documented
/// methods (any other method is 405 with the same `Allow`), and a path it
/// does not list is 404.
#[test]
fn served_document_is_the_repositorys_and_lists_every_route_the_server_answers() {
    let svc = Service::start(&[]);
    let mut served = served_document(&svc);
    let millicores = served
        .pointer_mut("/paths/~1load~1cpu/post/parameters")
        .and_then(Value::as_array_mut)
        .and_then(|ps| ps.iter_mut().find(|p| p["name"] == "millicores"))
        .and_then(|p| p["schema"].as_object_mut())
        .expect("millicores schema");
    // What this process may burn; every_parameter_bound_in_the_document_is_the_parsers
    // proves the parser agrees.
    let maximum = millicores.remove("maximum").and_then(|m| m.as_u64());
    assert!(maximum.is_some_and(|m| m >= 1), "millicores maximum: {maximum:?}");
    assert_eq!(served, repo_document(), "GET /openapi.json is api/openapi.json");

    let documented = operations(&served);
    for path in served["paths"].as_object().unwrap().keys() {
        let mine: BTreeSet<&str> = METHODS
            .into_iter()
            .filter(|m| documented.contains(&(m.to_string(), path.clone())))
            .collect();
        assert!(!mine.is_empty(), "{path} has no operation");
        for method in METHODS.into_iter().filter(|m| !mine.contains(m)) {
            let r = request(svc.addr, method, path, &[], "");
            assert_eq!(r.status, 405, "{method} {path} is not documented, so it must be 405");
            let allow: BTreeSet<&str> = r.header("Allow").unwrap_or("").split(", ").collect();
            assert_eq!(allow, mine, "Allow of {path} against the document");
        }
    }
    for unlisted in ["/openapi.yaml", "/docs", "/health/", "/load"] {
        assert_eq!(svc.get(unlisted).status, 404, "{unlisted} is not in the document");
    }
}

/// The rows of a markdown table whose first cell is `` `METHOD /path...` ``,
/// by (method, path); a second row for the same pair is an error.
fn api_rows(file: &str) -> BTreeMap<(String, String), String> {
    let text = std::fs::read_to_string(repo().join(file)).unwrap_or_else(|e| panic!("read {file}: {e}"));
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        let Some(cell) = line.strip_prefix("| `") else { continue };
        let Some((method, rest)) = cell.split_once(' ') else {
            continue;
        };
        if !METHODS.contains(&method) {
            continue;
        }
        let path: String = rest.chars().take_while(|c| !matches!(c, '?' | '`' | ' ')).collect();
        let previous = rows.insert((method.to_string(), path.clone()), line.to_string());
        assert!(previous.is_none(), "two {file} rows for {method} {path}");
    }
    rows
}

/// One row per (method, path), HEAD aside (both say once that HEAD works
/// wherever GET does), in the README's endpoint list and in docs/api.md:
/// each lists the document's pairs, so neither can drift from it, and the
/// document is held to the route table (`document_matches_the_route_table`
/// in the binary's unit tests) and to the live server (above).
#[test]
fn api_tables_have_one_row_per_documented_operation() {
    let doc = repo_document();
    let all = operations(&doc);
    let gets: BTreeSet<&String> = all.iter().filter(|(m, _)| m == "GET").map(|(_, p)| p).collect();
    let heads: BTreeSet<&String> = all.iter().filter(|(m, _)| m == "HEAD").map(|(_, p)| p).collect();
    assert_eq!(gets, heads, "HEAD is documented wherever GET is");
    let without_head: BTreeSet<(String, String)> = all.into_iter().filter(|(m, _)| m != "HEAD").collect();
    for file in ["README.md", "docs/api.md"] {
        let table: BTreeSet<(String, String)> = api_rows(file).into_keys().collect();
        let missing: Vec<_> = without_head.difference(&table).collect();
        let extra: Vec<_> = table.difference(&without_head).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{file}'s endpoint rows against api/openapi.json: missing {missing:?}, not in the document {extra:?}"
        );
    }
}

/// Size of the tmpfs under STATE_DIR of a service that faults are started
/// on: a disk fill asked for more (up to 1 TiB is in bounds) ends in a 507
/// there instead of filling the machine's disk.
const FILL_ROOM: &str = "64m";

/// Runs `program` (its path, then its arguments; `env` over the tests'
/// environment) with STATE_DIR on a fresh tmpfs of FILL_ROOM (see
/// `harness::in_tmpfs`).
fn on_small_tmpfs(program: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Service {
    let state = temp_dir("openapi-tmpfs");
    let mut inner = Command::new(program[0]);
    inner.args(&program[1..]);
    Service::spawn(in_tmpfs(FILL_ROOM, &state, &with_service_env(inner, &state, env)))
}

/// The query that makes a parameter's probe start as little as possible, or
/// makes it meaningful (`code` is only for `mode=exit`).
fn companion(path: &str, parameter: &str) -> &'static str {
    match (path, parameter) {
        ("/load/cpu", "duration") => "millicores=1&",
        ("/load/memory", "ramp" | "hold") => "mb=1&",
        ("/load/disk", "ramp") => "mb=1&",
        // 200% of a container's limit would OOM-kill the service: ramp it
        // over an hour, and stop it at once.
        ("/load/memory", "percent_of_limit") => "ramp=3600&",
        ("/crash", "code") => "mode=exit&",
        ("/fault/slowstart", "starts") => "seconds=1&",
        _ => "",
    }
}

/// What an in-bounds value may be refused for without contradicting the
/// document: `percent_of_limit` where the process has no memory limit.
fn refused_for_another_reason(path: &str, parameter: &str, body: &Value) -> bool {
    (path, parameter) == ("/load/memory", "percent_of_limit")
        && body["error"]
            .as_str()
            .is_some_and(|e| e.contains("needs a cgroup memory limit"))
}

/// Every integer parameter's `minimum` and `maximum` (and every enum) in the
/// served document are the parser's: the bound itself is accepted with a
/// documented answer, one step beyond it is 400 naming the parameter. `POST
/// /crash` is probed only outside its bounds here (inside, it ends the
/// process: `crash_code_bounds_are_the_documented_ones`).
#[test]
fn every_parameter_bound_in_the_document_is_the_parsers() {
    let _x = exclusive();
    let svc = on_small_tmpfs(
        &[BIN.as_ref()],
        &[
            ("CHAOS_COOLDOWN_SECONDS", "0"),
            ("MAX_CONCURRENT_CHAOS", "64"),
            ("CPU_LOAD_DURATION", "1"),
        ],
    );
    let doc = served_document(&svc);
    let mut probed = 0;
    for (method, path) in operations(&doc) {
        let Some(parameters) = operation(&doc, &method, &path)["parameters"].as_array() else {
            continue;
        };
        let statuses = documented_statuses(&doc, &method, &path);
        for p in parameters {
            let name = p["name"].as_str().expect("parameter name");
            let schema = &p["schema"];
            let base = companion(&path, name);
            let mut inside: Vec<String> = Vec::new();
            let mut outside: Vec<String> = vec!["x".into(), String::new()];
            if schema["type"] == "integer" && schema["enum"].is_null() {
                let lo = schema["minimum"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{path} {name}: minimum"));
                let hi = schema["maximum"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{path} {name}: maximum"));
                inside.extend([lo.to_string(), hi.to_string()]);
                outside.push(lo.checked_sub(1).map_or("-1".to_string(), |v| v.to_string()));
                outside.push((hi + 1).to_string());
            } else {
                let values = schema["enum"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{path} {name}: enum"));
                // Strings, or whole numbers (the errors fault's `code`).
                inside.extend(
                    values
                        .iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)),
                );
            }
            for value in &outside {
                let target = format!("{path}?{base}{name}={value}");
                let r = request(svc.addr, &method, &target, &[], "");
                assert_eq!(r.status, 400, "{method} {target}: beyond the documented bound");
                assert_eq!(r.json()["parameter"], name, "{method} {target}");
                probed += 1;
            }
            if path == "/crash" || path == "/fault/crashloop" {
                continue;
            }
            for value in &inside {
                let target = format!("{path}?{base}{name}={value}");
                let r = request(svc.addr, &method, &target, &[], "");
                let body = r.json();
                assert!(
                    statuses.contains(&r.status),
                    "{method} {target}: {} is not documented",
                    r.status
                );
                assert!(
                    r.status != 400 || refused_for_another_reason(&path, name, &body),
                    "{method} {target}: a documented bound refused: {body}"
                );
                assert_eq!(svc.post("/chaos/stop").status, 200);
                probed += 1;
            }
        }
    }
    assert!(probed >= 60, "only {probed} probes: the document lost its parameters?");
    // Every probe was followed by POST /chaos/stop: nothing may outlive it,
    // not even a ramp that was growing.
    assert_eq!(svc.get("/chaos").json()["active"], 0);
}

/// `code`'s documented bounds, 0 and 255, are exit codes the process really
/// ends with; -1 and 256 are 400 and it lives on.
#[test]
fn crash_code_bounds_are_the_documented_ones() {
    let doc = repo_document();
    let code = operation(&doc, "POST", "/crash")["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "code")
        .expect("code parameter")["schema"]
        .clone();
    let (lo, hi) = (code["minimum"].as_i64().unwrap(), code["maximum"].as_i64().unwrap());
    for v in [lo, hi] {
        let mut svc = Service::start(&[]);
        let r = svc.post(&format!("/crash?mode=exit&code={v}"));
        assert_eq!(r.status, 202, "code={v}");
        let status = svc.wait_exit(Duration::from_secs(10)).expect("the process ends");
        assert_eq!(status.code(), Some(v as i32), "code={v}: {}", describe(status));
    }
    let svc = Service::start(&[]);
    for v in [lo - 1, hi + 1] {
        assert_eq!(svc.post(&format!("/crash?mode=exit&code={v}")).status, 400, "code={v}");
    }
    assert_eq!(svc.get("/health").status, 200);
}

/// Status, headers and body of one raw request; the body is read only as far
/// as `Content-Length` says.
fn raw_answer(addr: SocketAddr, bytes: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(bytes).expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    let end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match s.read(&mut buf) {
            Ok(n) if n > 0 && Instant::now() < deadline => got.extend_from_slice(&buf[..n]),
            _ => panic!("no answer head: {:?}", String::from_utf8_lossy(&got)),
        }
    };
    let head = String::from_utf8_lossy(&got[..end]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = got[end + 4..].to_vec();
    while body.len() < length {
        match s.read(&mut buf) {
            Ok(n) if n > 0 => body.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    (status.expect("status code"), headers, body)
}

/// The answers the HTTP layer writes itself are documented on every
/// operation, and each answer to a malformed request is one the document
/// lists for it, with the documented JSON error and `Connection: close`: the
/// 413 for an absurd `Content-Length` too (the connection layer answers it
/// without reading the body, then closes).
#[test]
fn http_layer_answers_are_documented_on_every_operation() {
    let doc = repo_document();
    let edge: BTreeSet<u16> = [400, 405, 408, 413, 417, 431, 500, 505].into();
    for (method, path) in operations(&doc) {
        let statuses = documented_statuses(&doc, &method, &path);
        assert!(
            edge.is_subset(&statuses),
            "{method} {path} lacks some of {edge:?}: {statuses:?}"
        );
    }
    let svc = Service::start(&[]);
    let big_header = format!(
        "GET /health HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let cases: [(&str, Vec<u8>); 6] = [
        ("no version", b"GET /health\r\n\r\n".to_vec()),
        (
            "header without a colon",
            b"GET /health HTTP/1.1\r\nnocolon\r\n\r\n".to_vec(),
        ),
        (
            "unknown expectation",
            b"GET /health HTTP/1.1\r\nHost: t\r\nExpect: tea\r\n\r\n".to_vec(),
        ),
        (
            "absurd Content-Length",
            b"GET /health HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999\r\n\r\n".to_vec(),
        ),
        ("200 KB header", big_header.into_bytes()),
        ("HTTP/2.0", b"GET /health HTTP/2.0\r\nHost: t\r\n\r\n".to_vec()),
    ];
    let documented = documented_statuses(&doc, "GET", "/health");
    for (what, bytes) in cases {
        let (status, headers, body) = raw_answer(svc.addr, &bytes);
        assert!(
            documented.contains(&status),
            "{what}: {status} is not documented for GET /health"
        );
        assert!(!body.is_empty(), "{what}: {status} without a body");
        let json: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{what}: {status} body is not JSON ({e}): {body:?}"));
        let content_type = headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.as_str());
        assert_eq!(content_type, Some("application/json"), "{what}");
        let key = if status == 200 { "status" } else { "error" };
        assert!(json[key].is_string(), "{what}: {json}");
        // An answer of the HTTP layer closes the connection, as documented.
        if status != 200 {
            let connection = headers.iter().find(|(k, _)| k == "connection").map(|(_, v)| v.as_str());
            assert_eq!(connection, Some("close"), "{what}: {status}");
        }
    }
    assert_eq!(svc.get("/health").status, 200);
}

/// A tool from the Python virtualenv scripts/test.sh installs into.
fn venv_tool(name: &str) -> PathBuf {
    let venv = std::env::var_os("CHAOS_TOOLS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
            cache.join("chaos-backend/tools-venv")
        });
    let tool = venv.join("bin").join(name);
    assert!(
        tool.exists(),
        "{} is missing: scripts/test.sh installs it",
        tool.display()
    );
    tool
}

fn show(out: &std::process::Output) -> String {
    format!(
        "{}\n{}{}",
        describe(out.status),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The repository's document and the one a running service serves.
fn both_documents(tag: &str) -> Vec<PathBuf> {
    let svc = Service::start(&[]);
    let served = temp_dir(tag).join("served-openapi.json");
    std::fs::write(&served, svc.get("/openapi.json").body).expect("write served document");
    vec![repo().join("api/openapi.json"), served]
}

#[test]
#[ignore = "needs openapi-spec-validator: scripts/test.sh runs it"]
fn openapi_spec_validator_accepts_the_document() {
    for doc in both_documents("spec-validator") {
        let mut cmd = Command::new(venv_tool("openapi-spec-validator"));
        cmd.arg(&doc);
        let out = output_within(cmd, Duration::from_secs(120));
        assert!(out.status.success(), "{}: {}", doc.display(), show(&out));
    }
}

#[test]
#[ignore = "needs npm @redocly/cli: scripts/test.sh runs it"]
fn redocly_lint_accepts_the_document() {
    let redocly = repo().join("api/lint/node_modules/.bin/redocly");
    assert!(
        redocly.exists(),
        "run `npm ci --prefix api/lint` (scripts/test.sh does)"
    );
    for doc in both_documents("redocly") {
        let mut cmd = Command::new(&redocly);
        cmd.arg("lint")
            .arg(&doc)
            .arg("--config")
            .arg(repo().join("api/redocly.yaml"))
            .env("REDOCLY_TELEMETRY", "off")
            .env("REDOCLY_SUPPRESS_UPDATE_NOTICE", "true");
        let out = output_within(cmd, Duration::from_secs(120));
        assert!(out.status.success(), "{}: {}", doc.display(), show(&out));
    }
}

/// Address space the fuzzed service may map: about 750 MiB of it is thread
/// stacks and malloc arenas at idle, so a leak of up to ~800 MiB is really
/// made and anything larger is a 507, never a machine-wide squeeze.
const FUZZ_ADDRESS_SPACE: u64 = 1536 << 20;

/// schemathesis, every check but `not_a_server_error` (see
/// tests/api/schemathesis.toml), positive and negative data, against the
/// release binary: no undocumented status or content type, no body off its
/// schema, no invalid input accepted, no valid input refused. Every fault a
/// call starts is stopped after it, so each case meets an idle service.
#[test]
#[ignore = "needs schemathesis: scripts/test.sh runs it"]
fn schemathesis_finds_nothing_against_the_release_binary() {
    fuzz("stop");
}

/// The same run with faults left running between calls (durations cut
/// short by the hooks, each stop preceded by the start of what it stops):
/// the answers that only occur while a fault runs, such as `DELETE
/// /load/cpu` stopping a load, are checked too. On the document of issue
/// 27 it found `"stopped"` where the document said `"stopping"`.
#[test]
#[ignore = "needs schemathesis: scripts/test.sh runs it"]
fn schemathesis_finds_nothing_with_faults_left_running() {
    fuzz("keep");
}

/// One schemathesis pass; `faults` is the hooks' CHAOS_FUZZ_FAULTS.
fn fuzz(faults: &str) {
    let _x = exclusive();
    let schemathesis = venv_tool("schemathesis");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut build = Command::new(cargo);
    build
        .current_dir(repo())
        .args(["build", "--release", "--locked", "--bin", "chaos-backend"]);
    let out = output_within(build, Duration::from_secs(900));
    assert!(out.status.success(), "release build: {}", show(&out));

    let token = "schemathesis-token";
    // Where cargo put it: CARGO_TARGET_DIR (relative to the checkout) or target/.
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), |d| repo().join(d));
    let release = target.join("release/chaos-backend");
    let address_space = format!("--as={FUZZ_ADDRESS_SPACE}");
    let svc = on_small_tmpfs(
        &[
            "prlimit".as_ref(),
            address_space.as_ref(),
            "--".as_ref(),
            release.as_os_str(),
        ],
        &[
            ("RUST_LOG", "warn"),
            ("HOSTNAME", "fuzz-pod"),
            ("CHAOS_TOKEN", token),
            ("CHAOS_COOLDOWN_SECONDS", "0"),
            ("MAX_CONCURRENT_CHAOS", "64"),
            ("CPU_LOAD_DURATION", "2"),
        ],
    );
    let url = format!("http://{}", svc.addr);

    let work = temp_dir("schemathesis");
    let mut fuzz = Command::new(schemathesis);
    fuzz.current_dir(&work)
        .env("SCHEMATHESIS_HOOKS", repo().join("tests/api/schemathesis_hooks.py"))
        .env("CHAOS_FUZZ_URL", &url)
        .env("CHAOS_FUZZ_TOKEN", token)
        .env("CHAOS_FUZZ_FAULTS", faults)
        .arg("--no-color")
        .arg("--config-file")
        .arg(repo().join("tests/api/schemathesis.toml"))
        .arg("run")
        .arg(format!("{url}/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all", "--exclude-checks", "not_a_server_error"]);
    let started = Instant::now();
    let out = output_within(fuzz, Duration::from_secs(420));
    let took = started.elapsed();
    let report = show(&out);
    assert!(
        out.status.success(),
        "schemathesis (faults: {faults}) found failures:\n{report}\nservice stderr:\n{}",
        svc.stderr()
    );
    let generated: u64 = report
        .lines()
        .find_map(|l| l.trim().split_once(" generated"))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count of generated cases:\n{report}"));
    // Straight to stderr, past libtest's capture: the count shows in
    // scripts/test.sh's output even when the test passes.
    let summary: Vec<&str> = report.lines().skip_while(|l| !l.contains("SUMMARY")).collect();
    let _ = writeln!(
        std::io::stderr(),
        "schemathesis (faults: {faults}): {generated} cases generated, 0 failures, in {took:.1?}\n{}",
        summary.join("\n")
    );
    assert!(
        generated >= 200,
        "too few cases to mean anything: {generated}\n{report}"
    );
    // The service came through well, and whatever the fuzzing left running
    // ends with one stop.
    assert_eq!(svc.get("/health").status, 200);
    let stop = request(
        svc.addr,
        "POST",
        "/chaos/stop",
        &[("Authorization", &format!("Bearer {token}"))],
        "",
    );
    assert_eq!(stop.status, 200, "{}", stop.body);
    assert_eq!(svc.get("/chaos").json()["active"], 0);
    assert!(!svc.stderr().contains("panicked"), "{}", svc.stderr());
}
