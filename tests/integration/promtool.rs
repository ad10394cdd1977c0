//! `promtool check metrics` (from Debian's prometheus package, installed by
//! scripts/test.sh) reports nothing on /metrics, before and after chaos.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::harness::Service;

fn promtool_check(body: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (scripts/test.sh installs Debian's prometheus)");
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

#[test]
#[ignore = "needs promtool: scripts/test.sh runs it"]
fn promtool_finds_nothing_to_report() {
    let svc = Service::start(&[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let (ok, report) = promtool_check(&svc.get("/metrics").body);
    assert!(ok && report.trim().is_empty(), "promtool: {report}");
    svc.post("/load/memory?mb=1");
    svc.get("/nope");
    let (ok, report) = promtool_check(&svc.get("/metrics").body);
    assert!(ok && report.trim().is_empty(), "promtool: {report}");
}

#[test]
#[ignore = "needs promtool: scripts/test.sh runs it"]
fn promtool_is_not_a_rubber_stamp() {
    // A gauge named like a histogram part must be flagged, or the test above
    // proves nothing.
    let (_, report) =
        promtool_check("# HELP memory_chunks_count x\n# TYPE memory_chunks_count gauge\nmemory_chunks_count 1\n");
    assert!(report.contains("memory_chunks_count"), "promtool said: {report:?}");
}
