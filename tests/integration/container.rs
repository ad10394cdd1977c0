//! The scratch image in a real engine: Debian's podman with runc (installed
//! by scripts/test.sh). Each test runs podman from its own temporary
//! directory, because conmon writes a file `oom` into the current directory
//! after an OOM kill.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::harness::{Response, exclusive, poll, repo, request, temp_dir, try_request};

/// The tag the container tests build; `CHAOS_TEST_IMAGE` overrides it, so
/// that two checkouts on one machine do not replace each other's image.
pub fn image_tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| std::env::var("CHAOS_TEST_IMAGE").unwrap_or_else(|_| "localhost/chaos-backend:test".into()))
}

pub fn podman(cwd: &Path, args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .current_dir(cwd)
        .env("CONTAINERS_CONF", repo().join("tests/podman/containers.conf"))
        .output()
        .expect("podman must be installed (scripts/test.sh installs Debian's podman and runc)")
}

pub fn podman_ok(cwd: &Path, args: &[&str]) -> String {
    let out = podman(cwd, args);
    assert!(
        out.status.success(),
        "podman {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Each platform's image must stay at or under this, uncompressed: the
/// image's size goal (the observer mode is in the binary).
pub const MAX_IMAGE_BYTES: u64 = 3_000_000;
/// And its layers as users pull them, compressed.
pub const MAX_PULLED_BYTES: u64 = 1_300_000;

/// What one run of scripts/build-image.sh produced.
pub struct Built {
    /// (platform, bytes) as the script printed them, one per platform.
    pub sizes: Vec<(String, u64)>,
    /// The `--oci-archive` it wrote.
    pub archive: PathBuf,
    /// A copy of docs/containers.md that `--write-doc` rewrote.
    pub doc: PathBuf,
}

/// Builds the multi-arch image once per test run with the script users run
/// (both platforms, and the OCI archive); a failed build is reported by
/// every container test, but attempted only once.
pub fn built() -> &'static Built {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let dir = temp_dir("build");
        let archive = dir.join("chaos-backend.oci.tar");
        let doc = dir.join("containers.md");
        std::fs::copy(repo().join("docs/containers.md"), &doc).map_err(|e| format!("copy docs/containers.md: {e}"))?;
        let out = Command::new("bash")
            .arg(repo().join("scripts/build-image.sh"))
            .arg("--oci-archive")
            .arg(&archive)
            .arg("--write-doc")
            .arg(&doc)
            .arg(image_tag())
            .env("CONTAINER_ENGINE", "podman")
            .env("CONTAINERS_CONF", repo().join("tests/podman/containers.conf"))
            .current_dir(&dir)
            .output()
            .map_err(|e| format!("cannot run scripts/build-image.sh: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "build-image.sh failed:\n{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(Built {
            sizes: image_sizes(&stdout)?,
            archive,
            doc,
        })
    });
    built.as_ref().unwrap_or_else(|e| panic!("{e}"))
}

/// The `image TAG PLATFORM: N bytes` lines of build-image.sh's output.
pub fn image_sizes(stdout: &str) -> Result<Vec<(String, u64)>, String> {
    let sizes: Vec<(String, u64)> = stdout
        .lines()
        .filter(|l| l.starts_with("image "))
        .map(|line| {
            eprintln!("{line}");
            let fields: Vec<&str> = line.split_whitespace().collect();
            match (fields.get(2), fields.get(3).and_then(|n| n.parse().ok())) {
                (Some(p), Some(n)) => Ok((p.trim_end_matches(':').to_string(), n)),
                _ => Err(format!("bad size line {line:?}")),
            }
        })
        .collect::<Result<_, _>>()?;
    if sizes.is_empty() {
        return Err(format!("no size line in:\n{stdout}"));
    }
    Ok(sizes)
}

pub fn image() -> &'static str {
    for (platform, size) in &built().sizes {
        assert!(
            *size <= MAX_IMAGE_BYTES,
            "{platform} image is {size} bytes; the goal is <= {MAX_IMAGE_BYTES}"
        );
    }
    image_tag()
}

/// A container that is removed when the test ends.
pub struct Container {
    name: String,
    dir: PathBuf,
}

impl Container {
    pub fn run(extra: &[&str]) -> Container {
        let image = image();
        let dir = temp_dir("podman");
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &name,
            "-p",
            "127.0.0.1::8080",
            "-p",
            "127.0.0.1::8081",
        ];
        args.extend_from_slice(extra);
        args.push(image);
        podman_ok(&dir, &args);
        let c = Container { name, dir };
        let up = poll(Duration::from_secs(10), Duration::from_millis(20), || {
            try_request(c.addr()?, "GET", "/health", &[], "", Duration::from_millis(300)).ok()
        });
        assert!(
            up.is_some_and(|r| r.status == 200),
            "container never answered /health\n{}",
            c.logs()
        );
        c
    }

    pub fn addr(&self) -> Option<std::net::SocketAddr> {
        let out = podman(&self.dir, &["port", &self.name, "8080/tcp"]);
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    /// The probe listener's published address (the image's `PROBE_PORT`,
    /// 8081).
    pub fn probe_addr(&self) -> Option<std::net::SocketAddr> {
        let out = podman(&self.dir, &["port", &self.name, "8081/tcp"]);
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    fn get(&self, path: &str) -> Response {
        request(self.addr().expect("published port"), "GET", path, &[], "")
    }

    fn post(&self, path: &str) -> Response {
        request(self.addr().expect("published port"), "POST", path, &[], "")
    }

    pub fn inspect(&self, format: &str) -> String {
        podman_ok(&self.dir, &["inspect", "--format", format, &self.name])
    }

    /// `podman diff`: what changed in the container's own filesystem
    /// (volumes excluded), sorted.
    pub fn diff(&self) -> Vec<String> {
        let mut lines: Vec<String> = podman_ok(&self.dir, &["diff", &self.name])
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }

    pub fn logs(&self) -> String {
        let out = podman(&self.dir, &["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Waits for the container to stop; its exit code.
    pub fn wait_exit(&self, timeout: Duration) -> Option<i32> {
        poll(timeout, Duration::from_millis(20), || {
            (self.inspect("{{.State.Status}}") == "exited")
                .then(|| self.inspect("{{.State.ExitCode}}").parse().unwrap())
        })
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- podman logs {} ----\n{}", self.name, self.logs());
        }
        let _ = podman(&self.dir, &["rm", "-f", "-t", "0", &self.name]);
    }
}

#[test]
#[ignore = "needs podman: scripts/test.sh runs it"]
fn image_runs_as_65532_and_answers_health_on_a_published_port() {
    let _x = exclusive();
    let c = Container::run(&[]);
    assert_eq!(c.get("/health").json(), serde_json::json!({"status": "healthy"}));
    assert_eq!(c.inspect("{{.Config.User}}"), "65532:65532");
    let pid = c.inspect("{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(uid.split_whitespace().collect::<Vec<_>>()[1..], ["65532"; 4], "{uid}");
    // The image's HEALTHCHECK runs the binary's own probe.
    podman_ok(&c.dir, &["healthcheck", "run", &c.name]);
    assert_eq!(
        c.inspect("{{.Config.Healthcheck.Test}}"),
        "[CMD /chaos-backend healthcheck]"
    );
}

#[test]
#[ignore = "needs podman: scripts/test.sh runs it"]
fn leak_past_the_memory_limit_is_oom_killed_with_137() {
    let _x = exclusive();
    let c = Container::run(&["--memory", "64m", "--memory-swap", "64m"]);
    let id = c.inspect("{{.Id}}");
    let addr = c.addr().unwrap();
    // The kernel kills the process while it writes the pages: no answer.
    let r = try_request(addr, "POST", "/load/memory?mb=128", &[], "", Duration::from_secs(10));
    assert!(r.is_err(), "the leak should not be answered: {r:?}");
    let code = c.wait_exit(Duration::from_secs(10)).expect("container exits");
    assert_eq!(code, 137, "SIGKILL from the OOM killer");
    assert!(c.dir.join("oom").exists(), "conmon's oom file in the working directory");
    if let Ok(out) = Command::new("dmesg").output() {
        let log = String::from_utf8_lossy(&out.stdout);
        if !log.is_empty() {
            assert!(
                log.lines().any(|l| l.contains("oom-kill") && l.contains(&id)),
                "no kernel oom-kill record for {id}"
            );
        }
    }
}

#[test]
#[ignore = "needs podman: scripts/test.sh runs it"]
fn crash_restarts_and_the_new_instance_counts_crash_to_startup_once() {
    let _x = exclusive();
    let c = Container::run(&["--restart", "on-failure"]);
    assert_eq!(c.inspect("{{.RestartCount}}"), "0");
    assert_eq!(c.post("/crash").status, 202);
    let restarted = poll(Duration::from_secs(15), Duration::from_millis(50), || {
        (c.inspect("{{.RestartCount}}") == "1").then_some(())
    });
    assert!(restarted.is_some(), "restart count should rise");
    let ready = poll(Duration::from_secs(10), Duration::from_millis(50), || {
        let addr = c.addr()?;
        let r = try_request(addr, "GET", "/ready", &[], "", Duration::from_millis(300)).ok()?;
        (r.status == 200).then_some(())
    });
    assert!(ready.is_some(), "/ready returns to 200");
    let metrics = c.get("/metrics").body;
    let count = crate::harness::metric_value(&metrics, "crash_to_startup_seconds_count");
    assert_eq!(count, Some(1.0));
    let secs = crate::harness::metric_value(&metrics, "crash_to_startup_seconds_sum").unwrap();
    eprintln!("crash to start-up under podman --restart on-failure: {secs:.3} s");
}

/// Records what abort() gives as PID 1: docs/containers.md states the figure.
#[test]
#[ignore = "needs podman: scripts/test.sh runs it"]
fn abort_as_pid_1_exit_code_is_observed() {
    let _x = exclusive();
    let c = Container::run(&[]);
    assert_eq!(c.post("/crash").status, 202);
    let code = c.wait_exit(Duration::from_secs(10)).expect("container exits");
    eprintln!("abort() as PID 1 in the container: exit code {code}");
    // PID 1 ignores the SIGABRT it raises (no handler: the kernel drops it),
    // so glibc's abort() falls through to an illegal instruction: SIGSEGV.
    assert_eq!(code, 139, "docs/containers.md documents 139; update it if this changes");
    assert!(c.logs().contains("\"CRASH_REQUESTED\""));
}

#[test]
#[ignore = "needs podman: scripts/test.sh runs it"]
fn podman_stop_ends_with_0_after_the_shutdown_delay() {
    let _x = exclusive();
    let c = Container::run(&["-e", "SHUTDOWN_DELAY_SECONDS=2"]);
    let started = Instant::now();
    let out = podman(&c.dir, &["stop", "-t", "10", &c.name]);
    assert!(out.status.success());
    let took = started.elapsed();
    assert_eq!(c.inspect("{{.State.ExitCode}}"), "0", "{}", c.logs());
    assert!(
        took < Duration::from_secs(4),
        "took {took:?}: SHUTDOWN_DELAY_SECONDS + 2 s at most"
    );
    assert!(took >= Duration::from_secs(2), "took {took:?}: the delay was waited");
    assert!(c.logs().contains("\"SHUTDOWN_STARTED\""));
}

#[test]
#[ignore = "needs podman: scripts/test.sh runs it"]
fn read_only_root_with_a_state_volume_keeps_the_marker_across_restarts() {
    let _x = exclusive();
    let volume = temp_dir("state-volume");
    std::fs::set_permissions(&volume, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let mount = format!("{}:/var/lib/chaos-backend", volume.display());
    let c = Container::run(&["--read-only", "-v", &mount, "--restart", "on-failure"]);
    assert_eq!(c.post("/crash").status, 202);
    let counted = poll(Duration::from_secs(15), Duration::from_millis(100), || {
        let addr = c.addr()?;
        let r = try_request(addr, "GET", "/metrics", &[], "", Duration::from_millis(500)).ok()?;
        (crate::harness::metric_value(&r.body, "crash_to_startup_seconds_count") == Some(1.0)).then_some(())
    });
    assert!(
        counted.is_some(),
        "the marker on the volume is counted after the restart"
    );
    assert!(!volume.join("last-crash.json").exists(), "and removed");
}

/// percent_of_limit sizes the leak from the container's memory limit, not
/// the node's memory.
#[test]
#[ignore = "needs podman: scripts/test.sh runs it"]
fn percent_of_limit_follows_the_container_limit() {
    let _x = exclusive();
    let c = Container::run(&[
        "--memory",
        "128m",
        "--memory-swap",
        "128m",
        "-e",
        "MAX_MEMORY_MB_READY=1000",
    ]);
    let before = crate::harness::metric_value(&c.get("/metrics").body, "memory_usage_bytes").unwrap();
    let r = c.post("/load/memory?percent_of_limit=50");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["limit_bytes"].as_u64(), Some(128 << 20));
    assert_eq!(r.json()["leaked_mb"].as_u64(), Some(64));
    let after = crate::harness::metric_value(&c.get("/metrics").body, "memory_usage_bytes").unwrap();
    let grown = (after - before) / 1048576.0;
    assert!(
        (grown - 64.0).abs() <= 64.0 * 0.05,
        "RSS grew {grown:.1} MiB for 50% of 128 MiB"
    );
}
