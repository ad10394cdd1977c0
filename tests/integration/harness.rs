//! Runs the real binary on a free loopback port, speaks HTTP/1.1 to it, and
//! kills it when the test ends. When a test fails, the child's environment,
//! its exit status and its stderr (logs and events) are printed, so the
//! failure explains itself.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_chaos-backend");

/// The repository's root: where Cargo.toml, scripts/ and manifests/ are.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The binary under test: `CHAOS_BIN` when set (scripts/test.sh points it
/// at the arm64 build for the smoke subset), else the one cargo built.
pub fn bin() -> PathBuf {
    std::env::var_os("CHAOS_BIN").map_or_else(|| PathBuf::from(BIN), PathBuf::from)
}

/// The release binary, static as the image ships it, built with
/// scripts/build-image.sh's cargo command and flags so that either reuses
/// the other's build (scripts/test.sh runs both). Once per test run.
/// `CHAOS_RELEASE_BIN` runs the tests that use it against another build
/// (an earlier commit's, to see a test fail on it).
pub fn release_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(other) = std::env::var_os("CHAOS_RELEASE_BIN") {
            return PathBuf::from(other);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let x86 = cfg!(all(target_os = "linux", target_arch = "x86_64"));
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "--release", "--locked", "--bin", "chaos-backend"])
            .current_dir(root);
        if x86 {
            cmd.args(["--target", "x86_64-unknown-linux-gnu"])
                .env("RUSTFLAGS", "-C target-feature=+crt-static -C relocation-model=static");
        }
        let out = cmd.output().expect("run cargo build --release");
        assert!(
            out.status.success(),
            "cargo build --release failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        let dir = if x86 {
            "x86_64-unknown-linux-gnu/release"
        } else {
            "release"
        };
        target.join(dir).join("chaos-backend")
    })
}

/// A command prefix that runs the binary, split on whitespace: for example
/// `CHAOS_RUNNER=qemu-aarch64-static`. qemu-user runs the guest inside its
/// own process, so pids, signals, /proc RSS and CPU time stay the service's.
pub fn runner() -> Vec<String> {
    std::env::var("CHAOS_RUNNER")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Whether the binary runs under an emulator; the few timing bounds that
/// emulation stretches are loosened only then, and say so where they are.
pub fn emulated() -> bool {
    !runner().is_empty()
}

/// Tests that load the CPUs or time things take this lock, so that two of
/// them never distort each other.
static EXCLUSIVE: Mutex<()> = Mutex::new(());

pub fn exclusive() -> MutexGuard<'static, ()> {
    EXCLUSIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A free loopback port, for a service that must keep its address across
/// a restart.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A fresh, empty directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "chaos-backend-it-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// The binary under test, behind its runner if any.
pub fn binary_command() -> Command {
    let mut prefix = runner();
    if prefix.is_empty() {
        Command::new(bin())
    } else {
        let mut c = Command::new(prefix.remove(0));
        c.args(prefix).arg(bin());
        c
    }
}

/// The command for the binary with a clean environment plus `env`.
pub fn command(state_dir: &Path, env: &[(&str, &str)]) -> Command {
    with_service_env(binary_command(), state_dir, env)
}

/// `cmd` with the service's test environment (and nothing else) plus `env`.
pub fn with_service_env(mut cmd: Command, state_dir: &Path, env: &[(&str, &str)]) -> Command {
    cmd.env_clear()
        .env("RUST_LOG", "info")
        .env("PORT", "0")
        .env("PROBE_PORT", "0")
        .env("BIND_ADDRESS", "127.0.0.1")
        .env("SHUTDOWN_DELAY_SECONDS", "0")
        .env("STATE_DIR", state_dir)
        .env("HOSTNAME", "test-pod");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// `inner` run by `wrapper` (`prlimit ... --`, `unshare ... --`): the
/// wrapper's arguments, then inner's program and arguments, in inner's
/// environment and no other.
pub fn wrapped(mut wrapper: Command, inner: &Command) -> Command {
    wrapper.arg(inner.get_program()).args(inner.get_args()).env_clear();
    for (name, value) in inner.get_envs() {
        if let Some(value) = value {
            wrapper.env(name, value);
        }
    }
    wrapper
}

/// `unshare` into new `namespaces` (`--pid`, `--mount`, `--net` ...). When
/// not root, a user namespace of our own (mapped to root) grants them, so
/// plain `cargo test` needs no root; files made inside then belong to the
/// user running the tests.
pub fn unshare(namespaces: &[&str]) -> Command {
    let mut cmd = Command::new("unshare");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        cmd.args(["--user", "--map-root-user"]);
    }
    cmd.args(namespaces);
    cmd
}

/// `inner` as PID 1 of a PID namespace of its own, as a container's entry
/// point runs (the kernel drops a signal PID 1 has no handler for). The
/// service is then the child of `unshare`: see `Service::inner_pid`.
pub fn as_pid_1(inner: &Command) -> Command {
    wrapped(unshare(&["--pid", "--fork", "--kill-child", "--"]), inner)
}

pub struct Service {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// The probe listener's address (`PROBE_PORT`), if it runs.
    pub probe_addr: Option<SocketAddr>,
    stderr: Arc<Mutex<String>>,
    /// The command line and environment it was started with.
    started_as: String,
}

/// The program, its arguments and the environment it was given, one
/// variable a line, for failure reports.
pub fn describe_command(cmd: &Command) -> String {
    let mut text = format!("{}", cmd.get_program().to_string_lossy());
    for arg in cmd.get_args() {
        text.push_str(&format!(" {:?}", arg.to_string_lossy()));
    }
    text.push_str("\nenvironment:");
    for (name, value) in cmd.get_envs() {
        match value {
            Some(v) => text.push_str(&format!("\n  {}={}", name.to_string_lossy(), v.to_string_lossy())),
            None => text.push_str(&format!("\n  {} (removed)", name.to_string_lossy())),
        }
    }
    text
}

impl Service {
    /// Starts the binary with its own STATE_DIR.
    pub fn start(env: &[(&str, &str)]) -> Service {
        Service::start_in(&temp_dir("state"), env)
    }

    /// Starts the binary with `state_dir` and waits for its POD_STARTED event.
    pub fn start_in(state_dir: &Path, env: &[(&str, &str)]) -> Service {
        Service::spawn(command(state_dir, env))
    }

    pub fn spawn(mut cmd: Command) -> Service {
        let started_as = describe_command(&cmd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chaos-backend");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().expect("stderr piped");
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if !sent && line.contains("\"POD_STARTED\"") {
                    let v: serde_json::Value = serde_json::from_str(&line).expect("POD_STARTED is JSON");
                    let listen = v["listen"].as_str().expect("listen field").to_string();
                    let _ = tx.send((listen, v["probe_listen"].as_str().map(str::to_string)));
                    sent = true;
                }
                let mut s = sink.lock().unwrap_or_else(PoisonError::into_inner);
                s.push_str(&line);
                s.push('\n');
            }
        });
        let (listen, probe_listen) = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(l) => l,
            Err(_) => {
                let status = match child.try_wait() {
                    Ok(Some(status)) => describe(status),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        "still running after 10 s, killed by the harness".to_string()
                    }
                };
                panic!(
                    "service did not start ({status})\ncommand: {started_as}\nstderr:\n{}",
                    stderr.lock().unwrap_or_else(PoisonError::into_inner)
                );
            }
        };
        Service {
            child: Some(child),
            addr: listen.parse().expect("listen address"),
            probe_addr: probe_listen.map(|a| a.parse().expect("probe listen address")),
            stderr,
            started_as,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child running").id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The recovery events written so far, parsed.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.stderr()
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).expect("event lines are JSON"))
            .collect()
    }

    /// How many `name` events were written, once at least `expected` have
    /// arrived through the stderr pipe (or after 2 s).
    pub fn event_count(&self, name: &str, expected: usize) -> usize {
        let count = || self.events().iter().filter(|e| e["event"] == name).count();
        poll(Duration::from_secs(2), Duration::from_millis(10), || {
            let n = count();
            (n >= expected).then_some(n)
        })
        .unwrap_or_else(count)
    }

    /// How many `name` events there were: written in full, or counted in
    /// the EVENTS_SUPPRESSED summaries of a flood (`observe::throttle`;
    /// the last summaries come with the stop).
    pub fn events_written_or_counted(&self, name: &str) -> u64 {
        self.events()
            .iter()
            .map(|e| match e["event"].as_str() {
                Some(n) if n == name => 1,
                Some("EVENTS_SUPPRESSED") if e["suppressed_event"] == name => e["count"].as_u64().unwrap_or(0),
                _ => 0,
            })
            .sum()
    }

    pub fn get(&self, path: &str) -> Response {
        request(self.addr, "GET", path, &[], "")
    }

    pub fn post(&self, path: &str) -> Response {
        request(self.addr, "POST", path, &[], "")
    }

    /// One sample's value from /metrics, by its full series text.
    pub fn metric(&self, series: &str) -> f64 {
        let body = self.get("/metrics").body;
        metric_value(&body, series).unwrap_or_else(|| panic!("no series {series} in /metrics:\n{body}"))
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("child running");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(5));
        }
        None
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid with a valid signal number.
        let rc = unsafe { libc::kill(self.pid() as i32, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid());
    }

    /// The connection cap the start-up log states (`connection cap N`).
    pub fn connection_cap(&self) -> usize {
        let log = self.stderr();
        log.lines()
            .find_map(|l| l.split("connection cap ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no connection cap in the start-up log:\n{log}"))
    }

    /// The pid, in our namespace, of the service started by `as_pid_1`
    /// (the one child of `unshare`), after checking that it is PID 1 in
    /// its own namespace.
    pub fn inner_pid(&self) -> i32 {
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.pid())).expect("children");
        let pid: i32 = children
            .split_whitespace()
            .next()
            .expect("unshare has a child")
            .parse()
            .expect("a pid");
        let ns_pid = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("status")
            .lines()
            .find(|l| l.starts_with("NSpid:"))
            .and_then(|l| l.split_whitespace().last().map(str::to_string));
        assert_eq!(
            ns_pid.as_deref(),
            Some("1"),
            "the service runs as PID 1 in its namespace"
        );
        pid
    }

    /// Threads and open fds of the child, from /proc.
    pub fn threads_and_fds(&self) -> (usize, usize) {
        let count = |dir: &str| std::fs::read_dir(format!("/proc/{}/{dir}", self.pid())).map_or(0, |d| d.count());
        (count("task"), count("fd"))
    }

    /// Resident set size of the child from /proc, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:") * 1024
    }

    /// User + system CPU time of the child, from /proc/PID/stat.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("read stat");
        // Fields after the command name, which may hold spaces: state is #3.
        let after = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_secs_f64(ticks as f64 / hz as f64)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let status = match self.child.take() {
            Some(mut child) => match child.try_wait() {
                Ok(Some(status)) => describe(status),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    "still running, killed by the harness".to_string()
                }
            },
            None => "already reaped".to_string(),
        };
        if thread::panicking() {
            eprintln!(
                "---- chaos-backend ----\nexit status: {status}\ncommand: {}\n---- stderr ----\n{}---- end ----",
                self.started_as,
                self.stderr()
            );
        }
    }
}

pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let line = status.lines().find(|l| l.starts_with(field)).expect("field in status");
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("kB value")
}

/// The value of one series in a Prometheus text body.
pub fn metric_value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().expect("metric value is a number"))
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

/// One HTTP/1.1 request on a new connection (`Connection: close`).
pub fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> Response {
    try_request(addr, method, target, headers, body, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}

pub fn try_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
        .ok_or_else(|| std::io::Error::other(format!("unparsable response: {:?}", String::from_utf8_lossy(&raw))))
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(body)? } else { body.to_string() };
    Some(Response { status, headers, body })
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn dechunk(mut rest: &str) -> Option<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.push_str(after.get(..size)?);
        rest = after.get(size + 2..)?;
    }
}

/// Runs `cmd` to completion, killing it after `timeout` (a test must never
/// hang on a child that unexpectedly starts serving).
pub fn output_within(mut cmd: Command, timeout: Duration) -> std::process::Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        if rx.recv_timeout(timeout).is_err() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let out = child.wait_with_output().expect("wait");
    let _ = tx.send(());
    out
}

/// How a child ended, for assertion messages.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (_, Some(s)) => format!("signal {s}"),
        _ => format!("{status:?}"),
    }
}

/// Polls `f` every `every` until it returns `Some` or `timeout` passes.
pub fn poll<T>(timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(every);
    }
}

/// `inner` with `state` (its STATE_DIR) on a fresh tmpfs of `size`, in
/// mount and PID namespaces of its own, so nothing is mounted on the host.
/// `unshare` and a shell (PID 1 there) stay up to 60 s after the service
/// exits, so the tmpfs can still be read through `/proc/<pid>/root` (a
/// crash's marker); killing `unshare` (the harness's child) ends them all.
pub fn in_tmpfs(size: &str, state: &Path, inner: &Command) -> Command {
    let mut cmd = unshare(&["--mount", "--pid", "--fork", "--kill-child", "--", "sh", "-c"]);
    cmd.arg("size=$0; dir=$1; shift; mount -t tmpfs -o \"size=$size,mode=0755\" tmpfs \"$dir\" && \"$@\"; sleep 60")
        .arg(size)
        .arg(state);
    wrapped(cmd, inner)
}

/// `n` clients that each send one request at the same moment (they wait at
/// a barrier first), `method` on `target(i)` for client `i`; their answers,
/// in client order. A client that gets no answer within 10 s gets the error.
pub fn race(
    addr: SocketAddr,
    n: usize,
    method: &str,
    target: impl Fn(usize) -> String + Sync,
) -> Vec<std::io::Result<Response>> {
    let barrier = Barrier::new(n);
    thread::scope(|s| {
        let clients: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, target) = (&barrier, &target);
                s.spawn(move || {
                    let target = target(i);
                    barrier.wait();
                    try_request(addr, method, &target, &[], "", Duration::from_secs(10))
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|c| c.join().expect("a racing client panicked"))
            .collect()
    })
}

/// The p-th percentile (nearest rank) of `samples`.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// What a release promises: RSS <= the RSS before the leak + max(5 MiB,
/// 10% of the leak), within a second. (Under qemu-user the RSS is
/// the emulator's too, whose translation cache grows as new code runs; the
/// 5 MiB floor covers that as well.)
pub fn assert_rss_back(svc: &Service, baseline: u64, leak_bytes: u64, what: &str) {
    const MIB: u64 = 1 << 20;
    let limit = baseline + (5 * MIB).max(leak_bytes / 10);
    let back = poll(Duration::from_secs(1), Duration::from_millis(20), || {
        (svc.rss_bytes() <= limit).then_some(())
    });
    assert!(
        back.is_some(),
        "{what}: RSS {} MiB, more than {} MiB (baseline {} MiB + slack)",
        svc.rss_bytes() / MIB,
        limit / MIB,
        baseline / MIB
    );
}

/// The names of the files in `dir` (none if it does not exist).
pub fn files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
