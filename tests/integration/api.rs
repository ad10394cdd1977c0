//! Every row of the API table, including the 400/404/405 bodies.

use crate::harness::{Service, request};

#[test]
fn root_names_service_version_pod_and_uptime() {
    let svc = Service::start(&[]);
    let r = svc.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["service"], "chaos-backend");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["pod"], "test-pod", "pod comes from HOSTNAME");
    assert!(body["uptime_seconds"].as_f64().unwrap() >= 0.0);
}

#[test]
fn probes_answer_json() {
    let svc = Service::start(&[]);
    let r = svc.get("/health");
    assert_eq!((r.status, r.json()), (200, serde_json::json!({"status": "healthy"})));
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let r = svc.get("/ready");
    assert_eq!((r.status, r.json()), (200, serde_json::json!({"status": "ready"})));
    // A cache-buster query does not change a probe.
    assert_eq!(svc.get("/health?_=123").status, 200);
}

#[test]
fn head_gets_headers_without_body() {
    let svc = Service::start(&[]);
    let r = request(svc.addr, "HEAD", "/health", &[], "");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "");
}

#[test]
fn metrics_is_prometheus_text_without_redirect() {
    let svc = Service::start(&[]);
    let r = svc.get("/metrics");
    assert_eq!(r.status, 200, "no redirect to /metrics/");
    assert!(
        r.header("Content-Type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    for series in [
        "pod_recovery_count_total",
        "pod_ready_status",
        "cpu_stress_active",
        "memory_chunks",
        "failure_to_readiness_failure_seconds_count",
        "readiness_failure_to_recovery_seconds_count",
        "crash_to_startup_seconds_count",
        "process_cpu_seconds_total",
        "chaos_actions_total{action=\"cpu\",outcome=\"rejected\"}",
    ] {
        svc.metric(series);
    }
    assert_eq!(svc.metric("pod_recovery_count_total"), 1.0, "one start-up");
    assert!(svc.metric("memory_usage_bytes") > 1e6);
}

#[test]
fn cpu_load_answers_202_with_what_started() {
    let svc = Service::start(&[]);
    let r = svc.post("/load/cpu?duration=1&millicores=50");
    assert_eq!(r.status, 202, "{}", r.body);
    let b = r.json();
    assert_eq!(b["status"], "started");
    assert_eq!(b["mode"], "millicores");
    assert_eq!(b["millicores"], 50);
    assert_eq!(b["duration_seconds"], 1);
    let started = b["started_at_unix_ms"].as_u64().unwrap();
    assert_eq!(b["ends_at_unix_ms"].as_u64().unwrap(), started + 1000);
    assert_eq!(svc.metric("cpu_stress_active"), 1.0);
}

#[test]
fn memory_leak_answers_with_totals() {
    // Each leak holds a guardrail slot until it is released.
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0"), ("MAX_CONCURRENT_CHAOS", "2")]);
    let r = svc.post("/load/memory?mb=4");
    assert_eq!(r.status, 200, "{}", r.body);
    let b = r.json();
    assert_eq!(
        (
            b["leaked_mb"].clone(),
            b["total_leaked_mb"].clone(),
            b["chunks"].clone()
        ),
        (4.into(), 4.into(), 1.into())
    );
    assert!(b["rss_bytes"].as_u64().unwrap() > 4 << 20);
    let b = svc.post("/load/memory?mb=2").json();
    assert_eq!(
        (b["total_leaked_mb"].clone(), b["chunks"].clone()),
        (6.into(), 2.into())
    );
    assert_eq!(svc.metric("memory_chunks"), 2.0);
}

#[test]
fn memory_default_size_is_memory_mb() {
    let svc = Service::start(&[("MEMORY_MB", "3")]);
    assert_eq!(svc.post("/load/memory").json()["leaked_mb"], 3);
}

#[test]
fn refused_allocation_is_507_and_service_lives() {
    let svc = Service::start(&[]);
    let r = svc.post("/load/memory?mb=1048576");
    assert_eq!(r.status, 507, "{}", r.body);
    assert!(
        r.json()["error"].as_str().unwrap().contains("1048576 MiB"),
        "{}",
        r.body
    );
    assert_eq!(svc.get("/health").status, 200);
    assert_eq!(
        svc.metric("chaos_actions_total{action=\"memory\",outcome=\"failed\"}"),
        1.0
    );
}

#[test]
fn unknown_path_is_404_json() {
    let svc = Service::start(&[]);
    let r = svc.get("/nope?x=1");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no route for path \"/nope\"");
    // Every unknown path shares one label value, so scanners cannot add series.
    svc.get("/wp-admin");
    assert_eq!(
        svc.metric("http_requests_total{code=\"404\",endpoint=\"unmatched\",method=\"GET\"}"),
        2.0
    );
}

#[test]
fn wrong_method_is_405_with_allow() {
    let svc = Service::start(&[]);
    for (method, path, allow) in [
        ("GET", "/load/cpu", "POST, DELETE"),
        ("GET", "/load/memory", "POST, DELETE"),
        ("GET", "/fault/liveness", "POST, DELETE"),
        ("DELETE", "/chaos", "GET, HEAD"),
        ("GET", "/chaos/stop", "POST"),
        ("GET", "/crash", "POST"),
        ("POST", "/health", "GET, HEAD"),
        ("DELETE", "/ready", "GET, HEAD"),
        ("PUT", "/", "GET, HEAD"),
    ] {
        let r = request(svc.addr, method, path, &[], "");
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.header("Allow"), Some(allow), "{method} {path}");
        let err = r.json()["error"].as_str().unwrap().to_string();
        assert!(err.contains(method) && err.contains(path), "{err}");
    }
    assert_eq!(svc.get("/health").status, 200);
}

#[test]
fn bad_query_values_are_400_naming_parameter_and_value() {
    let svc = Service::start(&[]);
    for (target, parameter, value) in [
        ("/load/cpu?duration=abc", "duration", "abc"),
        ("/load/cpu?duration=0", "duration", "0"),
        ("/load/cpu?duration=-5", "duration", "-5"),
        ("/load/cpu?millicores=0", "millicores", "0"),
        ("/load/cpu?millicores=1.5", "millicores", "1.5"),
        ("/load/memory?mb=-1", "mb", "-1"),
        ("/load/memory?mb=99999999999999999999", "mb", "99999999999999999999"),
        ("/load/memory?mb=", "mb", ""),
        ("/load/memory?size=5", "size", "5"),
        ("/crash?now=1", "now", "1"),
    ] {
        let r = svc.post(target);
        assert_eq!(r.status, 400, "{target}: {}", r.body);
        let b = r.json();
        assert_eq!(b["parameter"], parameter, "{target}");
        assert_eq!(b["value"], value, "{target}");
        let err = b["error"].as_str().unwrap();
        assert!(
            err.contains(parameter) && err.contains(&format!("{value:?}")),
            "{target}: {err}"
        );
    }
    // Nothing started, and the service still serves.
    assert_eq!(svc.metric("cpu_stress_active"), 0.0);
    assert_eq!(
        svc.metric("chaos_actions_total{action=\"cpu\",outcome=\"accepted\"}"),
        0.0
    );
    assert_eq!(svc.get("/health").status, 200);
}

/// tiny_http 0.12 allocates the whole announced body length when it drops an
/// unread request; without a guard this one request aborts the process.
#[test]
fn absurd_content_length_does_not_kill_the_service() {
    use std::io::{Read, Write};
    let svc = Service::start(&[]);
    for path in ["/health", "/load/cpu", "/nope"] {
        let mut s = std::net::TcpStream::connect(svc.addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_millis(500))).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999\r\n\r\nabc"
        )
        .unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 413"), "{path}: {head}");
    }
    assert_eq!(svc.get("/health").status, 200);
    assert_eq!(
        svc.metric("http_requests_total{code=\"413\",endpoint=\"/health\",method=\"POST\"}"),
        1.0
    );
    // A body of ordinary size is drained and the request answered normally.
    let body = "x".repeat(4096);
    let r = request(svc.addr, "POST", "/health", &[], &body);
    assert_eq!(r.status, 405);
    assert_eq!(svc.get("/health").status, 200);
}

/// A `%` not followed by two hex digits is a broken escape, whatever follows
/// it: `%+5` once decoded to the byte 0x05, because the hex parser took a sign.
#[test]
fn broken_percent_escape_is_400_that_names_it() {
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    for (target, escape) in [
        ("/load/cpu?duration=%+5", "%+5"),
        ("/load/cpu?duration=%-5", "%-5"),
        ("/load/memory?mb=%5", "%5"),
        ("/load/memory?mb=%G0", "%G0"),
        ("/load/cpu?%+5duration=1", "%+5"),
    ] {
        let r = svc.post(target);
        assert_eq!(r.status, 400, "{target}: {}", r.body);
        let error = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(
            error.contains(&format!("broken escape \"{escape}\"")),
            "{target}: {error}"
        );
    }
    assert_eq!(
        svc.get("/chaos").json()["faults"],
        serde_json::json!([]),
        "nothing started"
    );
}
