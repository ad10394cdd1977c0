//! What users of a Service see while one of three replicas fails, with the
//! real parts of this machine: three replicas of the binary on loopback
//! ports behind Debian's HAProxy in TCP mode as the Service. Like
//! kube-proxy it balances connections and neither retries nor
//! redispatches (`retries 0`, no `option redispatch`); `option httpchk GET
//! /ready` with the readiness probe's period, timeout and thresholds from
//! manifests/deployment.yaml stands in for the kubelet's probe and the
//! EndpointSlice update. The replicas and the observer are the release
//! build, static as the image ships it. The observer drives the traffic;
//! every figure below is read from its own output (and HAProxy's DOWN
//! line).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Service, describe, exclusive, poll, release_bin, repo, temp_dir, try_request, with_service_env};
use crate::observer::Run;

/// The Deployment's readiness probe: period, timeout, failure and success
/// thresholds, in seconds and counts.
struct Probe {
    period: u64,
    timeout: u64,
    fall: u64,
    rise: u64,
}

fn readiness_probe() -> Probe {
    let text = std::fs::read_to_string(repo().join("manifests/deployment.yaml")).expect("manifests/deployment.yaml");
    let mut lines = text.lines().skip_while(|l| l.trim() != "readinessProbe:");
    let head = lines.next().expect("a readinessProbe");
    let indent = head.len() - head.trim_start().len();
    let field = |name: &str| -> u64 {
        text.lines()
            .skip_while(|l| l.trim() != "readinessProbe:")
            .skip(1)
            .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
            .find_map(|l| l.trim().strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("readinessProbe.{name}"))
            .trim()
            .parse()
            .unwrap()
    };
    Probe {
        period: field("periodSeconds"),
        timeout: field("timeoutSeconds"),
        fall: field("failureThreshold"),
        rise: field("successThreshold"),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Three replicas r1, r2, r3 behind HAProxy.
struct Balancer {
    replicas: Vec<Service>,
    haproxy: Child,
    addr: SocketAddr,
    /// HAProxy's stderr lines with the time each arrived.
    log: Arc<Mutex<Vec<(Instant, String)>>>,
    probe: Probe,
}

impl Balancer {
    fn start(env: &[(&str, &str)]) -> Balancer {
        let probe = readiness_probe();
        let replicas: Vec<Service> = ["r1", "r2", "r3"]
            .iter()
            .map(|name| {
                let mut vars = vec![("HOSTNAME", *name), ("CHAOS_COOLDOWN_SECONDS", "0")];
                vars.extend_from_slice(env);
                Service::spawn(with_service_env(Command::new(release_bin()), &temp_dir("state"), &vars))
            })
            .collect();
        let port = free_port();
        let servers: String = replicas
            .iter()
            .zip(["r1", "r2", "r3"])
            .map(|(r, name)| format!("    server {name} {} check\n", r.addr))
            .collect();
        let config = format!(
            "global\n    maxconn 4096\n\
             defaults\n    mode tcp\n    retries 0\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n    timeout check {}s\n\
             frontend svc\n    bind 127.0.0.1:{port}\n    default_backend svc\n\
             backend svc\n    balance roundrobin\n    option httpchk GET /ready\n    default-server inter {}s fall {} rise {}\n{servers}",
            probe.timeout, probe.period, probe.fall, probe.rise
        );
        let file = temp_dir("haproxy").join("haproxy.cfg");
        std::fs::write(&file, &config).unwrap();
        let mut haproxy = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("haproxy must be installed (scripts/test.sh installs Debian's haproxy)");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let stderr = haproxy.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((Instant::now(), line));
            }
        });
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let b = Balancer {
            replicas,
            haproxy,
            addr,
            log,
            probe,
        };
        // Up when a round of requests reaches every replica.
        let all = poll(Duration::from_secs(10), Duration::from_millis(100), || {
            let mut seen: Vec<String> = (0..6)
                .filter_map(|_| try_request(b.addr, "GET", "/", &[], "", Duration::from_secs(1)).ok())
                .filter_map(|r| serde_json::from_str::<Value>(&r.body).ok())
                .filter_map(|v| v["pod"].as_str().map(str::to_string))
                .collect();
            seen.sort();
            seen.dedup();
            (seen.len() == 3).then_some(())
        });
        assert!(
            all.is_some(),
            "haproxy did not reach all replicas:\n{config}\n{}",
            b.log_text()
        );
        b
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(_, l)| format!("{l}\n"))
            .collect()
    }

    /// When HAProxy logged `Server svc/NAME is STATE` first after `after`.
    fn logged(&self, name: &str, state: &str, after: Instant) -> Option<Instant> {
        let needle = format!("Server svc/{name} is {state}");
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(t, l)| *t >= after && l.contains(&needle))
            .map(|(t, _)| *t)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.haproxy.kill();
        let _ = self.haproxy.wait();
        if thread::panicking() {
            eprintln!("---- haproxy ----\n{}---- end ----", self.log_text());
        }
    }
}

const RATE: f64 = 50.0;

/// Runs the observer through the balancer for `seconds`; `during` runs on
/// this thread with the instant the observer was started, and returns
/// what it wants to keep. Seconds since that instant are the observer's
/// `t` (which starts a little later, so a bound in observer time taken
/// from it errs on the safe side).
fn watch<T>(b: &Balancer, seconds: u32, during: impl FnOnce(Instant) -> T) -> (Run, T) {
    let child = Command::new(release_bin())
        .args(["observe", "--url", &b.url(), "--rate", &RATE.to_string()])
        .args(["--duration", &seconds.to_string()])
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let kept = during(started);
    let out = child.wait_with_output().unwrap();
    let run = Run::from_output(out);
    eprintln!("{}", String::from_utf8_lossy(&run.output.stdout));
    (run, kept)
}

/// One request to a replica directly (a fault's trigger); its status.
fn call(replica: &Service, method: &str, path: &str) -> Option<u16> {
    try_request(replica.addr, method, path, &[], "", Duration::from_secs(2))
        .ok()
        .map(|r| r.status)
}

fn since(start: Instant, t: Instant) -> f64 {
    t.saturating_duration_since(start).as_secs_f64()
}

fn sleep_until(start: Instant, seconds: f64) {
    thread::sleep((start + Duration::from_secs_f64(seconds)).saturating_duration_since(Instant::now()));
}

/// The whole-second lines: (t, line).
fn seconds(run: &Run) -> Vec<(f64, &Value)> {
    run.lines
        .iter()
        .map(|l| (l["t"].as_f64().unwrap(), l))
        .filter(|(t, _)| t.fract() == 0.0)
        .collect()
}

fn served(line: &Value, pod: &str) -> u64 {
    line["pods"][pod].as_u64().unwrap_or(0)
}

fn gaps(run: &Run, pod: &str) -> Vec<(f64, Option<f64>)> {
    run.summary["pods"][pod]["gaps"]
        .as_array()
        .unwrap_or_else(|| panic!("no pod {pod}: {}", run.summary))
        .iter()
        .map(|g| (g["start"].as_f64().unwrap(), g["end"].as_f64()))
        .collect()
}

#[test]
#[ignore = "needs haproxy: scripts/test.sh runs it"]
fn readiness_fault_takes_one_replica_out_within_a_check_interval_without_errors() {
    let _x = exclusive();
    let b = Balancer::start(&[]);
    let inter = b.probe.period as f64;
    let (run, (fault, release)) = watch(&b, 12, |start| {
        sleep_until(start, 3.0);
        let fault = since(start, Instant::now());
        assert_eq!(call(&b.replicas[0], "POST", "/fault/readiness?duration=60"), Some(202));
        sleep_until(start, 8.0);
        let release = since(start, Instant::now());
        assert_eq!(call(&b.replicas[0], "DELETE", "/fault/readiness"), Some(200));
        (fault, release)
    });
    assert_eq!(run.error_total(), 0, "no user saw an error: {}", run.summary);
    assert_eq!(run.summary["requests"], 600);
    // r1 served nothing from one check interval plus a second after the
    // fault until the release.
    for (t, line) in seconds(&run) {
        if t - 1.0 >= fault + inter + 1.0 && t <= release {
            assert_eq!(served(line, "r1"), 0, "r1 still served at t={t}: {line}");
        }
    }
    // The summary's gap is that removal, seen from the data plane: it
    // starts within the interval plus a second of the fault and ends
    // within the same after the release.
    let g = gaps(&run, "r1");
    assert_eq!(g.len(), 1, "{g:?}");
    let (start, end) = g[0];
    assert!(
        start >= fault - 0.5 && start <= fault + inter + 1.0,
        "gap {g:?}, fault at {fault:.2}"
    );
    let end = end.expect("r1 came back");
    assert!(
        end >= release && end <= release + inter + 1.0,
        "gap {g:?}, released at {release:.2}"
    );
    assert!(
        gaps(&run, "r2").is_empty() && gaps(&run, "r3").is_empty(),
        "{}",
        run.summary
    );
    eprintln!("readiness fault at {fault:.2} s: r1 out from {start} s to {end} s (released at {release:.2} s)");
}

#[test]
#[ignore = "needs haproxy: scripts/test.sh runs it"]
fn sigkill_of_one_replica_fails_requests_by_class_until_it_is_marked_down() {
    let _x = exclusive();
    let b = Balancer::start(&[]);
    let probe = &b.probe;
    let (run, (start, killed)) = watch(&b, 10, |start| {
        sleep_until(start, 3.0);
        b.replicas[0].signal(libc::SIGKILL);
        (start, since(start, Instant::now()))
    });
    let down_at = b
        .logged("r1", "DOWN", start)
        .unwrap_or_else(|| panic!("haproxy never marked r1 down:\n{}", b.log_text()));
    let down = since(start, down_at);
    eprintln!("killed at {killed:.2} s, marked down at {down:.2} s; {}", run.summary);
    assert!(
        down - killed <= (probe.period + probe.timeout) as f64 + 0.5,
        "down {down:.2} s after the kill at {killed:.2} s"
    );
    // Errors were counted, by class: HAProxy, a proxy, had accepted the
    // connection and closes it when r1 refuses (kube-proxy's NAT would show
    // the refusal itself).
    let errors = run.error_total();
    assert!(errors > 0, "the dead replica's share failed: {}", run.summary);
    assert_eq!(run.errors("reset"), errors, "all reset: {}", run.summary["errors"]);
    // ...about one in three, and only until the balancer marked it down.
    let bound = (RATE / 3.0 * (down - killed + 0.5)).ceil() as u64 + 2;
    assert!(errors <= bound, "{errors} errors, at most {bound} expected");
    for (t, line) in seconds(&run) {
        let n: u64 = line["errors"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        if n > 0 {
            assert!(
                t - 1.0 <= down + 0.5,
                "errors at t={t} after the DOWN at {down:.2}: {line}"
            );
            assert!(t >= killed, "errors before the kill at t={t}: {line}");
        }
    }
    // The Service never went dark: the streak is one request long.
    assert!(
        run.summary["longest_error_streak_s"].as_f64().unwrap() <= 2.0 / RATE + 1e-9,
        "{}",
        run.summary
    );
    let g = gaps(&run, "r1");
    assert_eq!(g.len(), 1, "{g:?}");
    assert!(
        g[0].0 >= killed - 0.5 && g[0].0 <= killed + 0.5,
        "{g:?}, killed at {killed:.2}"
    );
    assert_eq!(g[0].1, None, "r1 never came back");
}

#[test]
#[ignore = "needs haproxy: scripts/test.sh runs it"]
fn latency_fault_on_one_replica_raises_p99_without_errors() {
    let _x = exclusive();
    let b = Balancer::start(&[]);
    let (run, fault) = watch(&b, 8, |start| {
        sleep_until(start, 3.0);
        assert_eq!(
            call(&b.replicas[0], "POST", "/load/latency?ms=300&duration=30"),
            Some(202)
        );
        since(start, Instant::now())
    });
    assert_eq!(run.error_total(), 0, "{}", run.summary);
    let lines = seconds(&run);
    let before: Vec<f64> = lines
        .iter()
        .filter(|(t, _)| *t <= fault)
        .map(|(_, l)| l["p99_ms"].as_f64().unwrap())
        .collect();
    let after: Vec<f64> = lines
        .iter()
        .filter(|(t, _)| t - 1.0 >= fault + 0.5)
        .map(|(_, l)| l["p99_ms"].as_f64().unwrap())
        .collect();
    assert!(!before.is_empty() && !after.is_empty(), "{lines:?}");
    // Every second after the fault: a third of the answers are held 300 ms.
    let slowed = after.iter().cloned().fold(f64::INFINITY, f64::min);
    assert!(
        slowed >= 300.0,
        "every second after the fault has p99 >= 300 ms: {after:?}"
    );
    // A ratio within the run, of medians: one slow second of a loaded
    // machine before the fault does not decide it.
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (calm, raised) = (median(&before), median(&after));
    eprintln!("p99 per second, median: {calm} ms before the fault, {raised} ms after it");
    assert!(raised >= 3.0 * calm, "p99 rose: before {before:?}, after {after:?}");
    assert!(run.summary["p99_ms"].as_f64().unwrap() >= 300.0, "{}", run.summary);
    // r1 stayed in the Service (300 ms is under MAX_LATENCY_MS): no gap.
    assert!(gaps(&run, "r1").is_empty(), "{}", run.summary);
}

#[test]
#[ignore = "needs haproxy: scripts/test.sh runs it"]
fn sigterm_with_shutdown_delay_drains_one_replica_without_errors() {
    let _x = exclusive();
    // The delay outlasts one failed check (interval + timeout) with a
    // second to spare, as the Deployment's SHUTDOWN_DELAY_SECONDS does.
    let probe = readiness_probe();
    let delay = (probe.period + probe.timeout + 1).to_string();
    let mut b = Balancer::start(&[("SHUTDOWN_DELAY_SECONDS", &delay)]);
    let inter = b.probe.period as f64;
    let (run, term) = watch(&b, 10, |start| {
        sleep_until(start, 3.0);
        b.replicas[0].signal(libc::SIGTERM);
        since(start, Instant::now())
    });
    assert_eq!(run.error_total(), 0, "no user saw an error: {}", run.summary);
    let status = b.replicas[0].wait_exit(Duration::from_secs(10)).expect("r1 exited");
    assert_eq!(status.code(), Some(0), "{}", describe(status));
    for (t, line) in seconds(&run) {
        if t - 1.0 >= term + inter + 1.0 {
            assert_eq!(served(line, "r1"), 0, "r1 still served at t={t}: {line}");
        }
    }
    let g = gaps(&run, "r1");
    assert_eq!(g.len(), 1, "{g:?}");
    assert!(g[0].0 <= term + inter + 1.0, "{g:?}, SIGTERM at {term:.2}");
    assert_eq!(g[0].1, None);
}
