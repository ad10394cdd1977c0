//! scripts/bench.sh --short runs from the checkout with what the test
//! command installs and prints every row of the table. Times are not
//! checked here: the benchmark reports them, CI never gates on them.

use std::process::Command;

use crate::harness::exclusive;

#[test]
#[ignore = "needs podman, wrk: scripts/test.sh runs it"]
fn bench_short_mode_prints_the_whole_table() {
    let _x = exclusive();
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench.sh"))
        .arg("--short")
        .output()
        .expect("run scripts/bench.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench.sh failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}");
    for figure in [
        "start to first 200 on /ready",
        "idle RSS",
        "/health throughput, 16 connections",
        "/health p50 / p99, 16 connections",
        "/health, 16 connections, with 1000 idle and 200 one-byte-a-second connections held",
        "GET / throughput",
        "/metrics throughput and p99",
        "/health p99, all CPUs saturated, one probe at a time",
        "leak rate",
        "RSS growth / leak asked",
        "CPU 250m over 3 s (process CPU time)",
        "CPU 500m over 3 s (process CPU time)",
        "CPU 1500m over 3 s (process CPU time)",
        "observer at 500 req/s: due-time lateness p99",
        "observer at 500 req/s: RSS",
        "observer at 500 req/s, target never answers (1000 in flight)",
        "crash: request sent to process exit",
        "image size",
        "/health p99 in podman --cpus=1, held at 500m",
        "CPU 250m over 3 s in podman --cpus=2 (cgroup usage)",
        "CPU 1500m over 3 s in podman --cpus=2 (cgroup usage)",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {figure}")))
            .unwrap_or_else(|| panic!("no row {figure:?}"));
        assert!(!line.contains("NaN") && !line.contains("failed"), "{line}");
    }
    assert!(stdout.contains("(short mode:"), "{stdout}");
}
