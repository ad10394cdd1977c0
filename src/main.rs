//! chaos-backend: an HTTP service that fails on purpose, in controlled ways,
//! so that platform engineers can prove that Kubernetes heals it.
//!
//! `main` picks the mode (serve, `healthcheck` or `observe`), wires the parts
//! together, and is the one place where an error becomes an exit code: 2
//! for bad configuration, 1 for a failure to serve.
//!
//! # The path of one request
//!
//! 1. **accept**: the patched tiny_http accepts the connection, within the
//!    cap `http::limits` computed at start-up, and the connection's own
//!    thread reads a bounded head (431 past `MAX_REQUEST_HEAD_BYTES`, 408
//!    past `HTTP_HEAD_TIMEOUT_SECONDS`);
//! 2. **worker**: a thread of the pool (`http::server`) takes the request
//!    and times it; a body too large to drain is a 413 here;
//! 3. **`http::routes::dispatch`**: 404 or 405 from the route table, then,
//!    for a route that starts or stops chaos, the token (`config::access`)
//!    and, to start, the kill switch;
//! 4. **handler** (`handlers::*`): parses typed parameters
//!    (`http::query`; a 400 names the value), and for chaos hands the fault
//!    to **the registry** (`chaos::registry`), which takes a guardrail
//!    permit (`chaos::guard`) and starts the fault's threads;
//! 5. **answer**: the handler's `http::reply::Reply` becomes the response,
//!    written without blocking the worker (a held or slow answer is the
//!    connection thread's to finish);
//! 6. **metrics**: the request is counted and its latency feeds readiness
//!    (`observe`), just before the answer is written, so that a client
//!    that has its answer finds it in the next scrape. Work the reply
//!    carries (a crash) runs last.
//!
//! A probe on the probe port (`PROBE_PORT`) takes a shorter path: one epoll
//! thread (`http::probe_listener`) reads it and calls `http::routes::dispatch`
//! itself, so no client of the main port (its cap, its connection threads,
//! its workers) stands between the kubelet and `/health` or `/ready`.
//!
//! # Where things live
//!
//! `os` (the only `unsafe` code) is at the bottom; `config` reads the
//! environment; `http`, `observe` and `chaos` sit on those; `handlers` on
//! all of them. Dependencies point down: `handlers` -> `chaos`, `observe`,
//! `http` -> `config` -> `os`. Among the middle three, `chaos` may emit
//! events (`observe`), `observe` knows nothing of faults (the label sets it
//! needs are handed in), and `http` knows nothing of either, but for its
//! junction: `http::routes` names the handlers and `http::server` runs them
//! with the `App`. `app.rs` holds the state they share.
#![deny(unsafe_code)]

mod app;
mod chaos;
mod config;
mod handlers;
mod http;
mod observe;
mod observer;
mod os;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use app::{App, Control, ShutdownReport};
use config::Config;
use http::server::{Listening, Pool};
use observe::events::Events;

const USAGE: &str = "\
usage: chaos-backend               serve (configured by the environment variables below)
       chaos-backend healthcheck   exit 0 if GET /health on the local PROBE_PORT (else PORT) answers 200, else 1
       chaos-backend observe --url URL [options]   what users of URL see: GET at a fixed rate, JSON Lines (observe --help)
       chaos-backend --version
       chaos-backend --help";

/// How long the drain of an ordered stop may take: the workers finishing
/// the requests they hold and those queued, then the connection layer
/// writing the answers it was given (held ones included, which the stop
/// released). Within Kubernetes' grace period (20 s in `manifests/`) after
/// `SHUTDOWN_DELAY_SECONDS` (5).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let started = Instant::now();
    observe::events::init_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Arguments first: --help and --version answer whatever the environment
    // holds, so a bad variable never hides the usage that explains it.
    let healthcheck = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => false,
        ["healthcheck"] => true,
        ["observe", ..] => return observer::main(&args[1..]),
        ["--version"] => {
            println!("chaos-backend {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        ["--help" | "-h"] => {
            println!(
                "{USAGE}\n\n{}\n\n{}",
                config::variables::help().trim_end(),
                os::signals::help()
            );
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("chaos-backend: unexpected arguments {args:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::from_env() {
        Ok(c) => c,
        // The probe's answer is 0 or 1 (Docker reserves 2 in a HEALTHCHECK).
        Err(e) if healthcheck => {
            eprintln!("chaos-backend healthcheck: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("chaos-backend: {e}");
            return ExitCode::from(2);
        }
    };
    if healthcheck {
        return match http::healthcheck::check(http::healthcheck::probe_address(&config)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("chaos-backend healthcheck: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // The token file too is configuration: a token no client could send
    // is refused here, before the port is bound (exit 2).
    let access = match config::access::Access::from_source(&config.chaos_token) {
        Ok(access) => access,
        Err(e) => {
            eprintln!("chaos-backend: {e}");
            return ExitCode::from(2);
        }
    };
    // The start-up faults, before anything else: a crash-loop start ends
    // here, within milliseconds of its start, before the port is bound.
    let startup = match chaos::startup::at_start(
        &config.state_dir,
        observe::state_file::Identity::current(&app::pod_name()),
        config.crashloop_cancel,
        config.slow_start.as_secs(),
        std::time::SystemTime::now(),
    ) {
        chaos::startup::AtStart::Fail { message } => {
            log::error!(
                "{message} ({:.1} ms after start)",
                started.elapsed().as_secs_f64() * 1000.0
            );
            return ExitCode::from(chaos::startup::CRASHLOOP_EXIT_CODE);
        }
        chaos::startup::AtStart::Serve(startup) => startup,
    };
    // Before any thread exists, so that every thread inherits the mask;
    // only when serving: the observer takes its own two, and the other
    // modes are short-lived.
    os::signals::take_signals();
    // Before any thread exists too: bounded malloc arenas (under RLIMIT_AS
    // they would take the address space that connection threads' stacks
    // need) and fixed thresholds, so that freed memory goes back after a
    // burst of clients.
    os::sys::limit_malloc_arenas(http::limits::malloc_arenas(
        os::sys::affinity_cpu_count(),
        os::sys::address_space_limit(),
    ));
    os::sys::fix_malloc_thresholds();
    match run(config, access, started, startup) {
        Ok(code) => code,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    config: Config,
    access: config::access::Access,
    started: Instant,
    startup: chaos::startup::Startup,
) -> Result<ExitCode, String> {
    let (tx, rx) = mpsc::channel::<Control>();
    let signals = tx.clone();
    os::signals::spawn_waiter(move |name| signals.send(Control::Signal(name)).is_ok())
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    // The probe listener first, so that the main port's cap knows its fds.
    let probes = config
        .probe_port
        .map(|port| http::probe_listener::bind(SocketAddr::new(config.bind_address, port)))
        .transpose()?;
    let probe_listen = probes.as_ref().and_then(|l| l.local_addr().ok());
    let (options, cap) = http::limits::server_options(
        &config,
        chaos::cpu::CpuBudget::detect().saturating_threads(),
        probes.as_ref().map_or(0, |_| http::probe_listener::fds()),
    );
    // A leak must leave the connections the address space the cap promises.
    chaos::memory::keep_address_space(cap.address_space_kept());
    let Listening {
        server,
        accept_thread,
        listen,
    } = http::server::listen(SocketAddr::new(config.bind_address, config.port), options)?;
    let workers = config.workers;
    log::debug!("bound after {:?}", started.elapsed());
    let app = Arc::new(
        App::new(
            config,
            access,
            &http::routes::endpoint_series(),
            Events::to_stderr(),
            started,
            tx.clone(),
            startup,
        )
        .map_err(|e| format!("cannot register metrics: {e}"))?,
    );
    http::server::watch_accept_thread(accept_thread, tx.clone())
        .map_err(|e| format!("cannot start the accept watch: {e}"))?;
    log::debug!("app ready after {:?}", started.elapsed());
    if let Some(listener) = probes {
        http::probe_listener::spawn(listener, Arc::clone(&app))
            .map_err(|e| format!("cannot start the probe listener: {e}"))?;
    }
    let server = Arc::new(server);
    app.metrics.connections.watch(Arc::clone(&server));
    let pool = Pool::start(Arc::clone(&server), Arc::clone(&app), workers, tx)
        .map_err(|e| format!("cannot start worker threads: {e}"))?;
    let probe_listen = probe_listen.map(|a| a.to_string());
    match &probe_listen {
        Some(probes) => log::info!(
            "listening on http://{listen} with {workers} workers; probes (GET /health, /ready) on http://{probes}, served first"
        ),
        None => log::info!("listening on http://{listen} with {workers} workers; no probe port (PROBE_PORT=off)"),
    }
    app.record_start(&listen, probe_listen.as_deref());

    match next_control(&rx, &app, None) {
        Some(Control::Signal(name)) => Ok(shut_down(&app, &pool, &server, &rx, name)),
        Some(Control::AcceptFailed(e)) => {
            log::error!(
                "the listener failed ({e}); tiny_http accepts nothing more (tiny-http#283), so exit for a restart"
            );
            Ok(ExitCode::FAILURE)
        }
        Some(Control::WorkerExited) => {
            log::error!("a worker exited unexpectedly; exit for a restart");
            Ok(ExitCode::FAILURE)
        }
        Some(Control::Panic(_)) => unreachable!("next_control panics itself"),
        None => Err("control channel closed".to_string()),
    }
}

/// How often the main thread does its housekeeping (`housekeeping`).
const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(2);

/// What the main thread does every `HOUSEKEEPING_PERIOD` while it waits:
/// hands freed heap memory back to the kernel (after a burst of
/// connections, each thread allocating from one of glibc's per-thread
/// arenas, freed memory would otherwise stay resident: 1,200 connections
/// left RSS 5 to 7 MiB above its baseline for good), and writes the
/// summaries of the log lines and events a flood left out.
fn housekeeping(app: &App) {
    os::sys::trim_heap();
    let now = Instant::now();
    app.events.write_suppressed_summaries(now, false);
    observe::events::write_log_summaries(now, false);
}

/// The next control message, before `deadline` if one is given (None once
/// it has passed, or if the channel is closed), doing the housekeeping
/// meanwhile. A deliberate panic happens here, on the main thread, even
/// during a stop: the crash was answered 202 before the stop began.
fn next_control(rx: &mpsc::Receiver<Control>, app: &App, deadline: Option<Instant>) -> Option<Control> {
    loop {
        let wait = deadline.map_or(HOUSEKEEPING_PERIOD, |d| {
            d.saturating_duration_since(Instant::now()).min(HOUSEKEEPING_PERIOD)
        });
        match rx.recv_timeout(wait) {
            Ok(Control::Panic(cause)) => panic!("deliberate panic, requested by {cause}"),
            Ok(message) => return Some(message),
            Err(RecvTimeoutError::Disconnected) => return None,
            Err(RecvTimeoutError::Timeout) if deadline.is_some_and(|d| Instant::now() >= d) => return None,
            Err(RecvTimeoutError::Timeout) => housekeeping(app),
        }
    }
}

/// The ordered stop, one step after the other:
///
/// 1. refuse new faults (the registry is closed: every start is 503 naming
///    the signal, even one queued before it) and fail readiness;
/// 2. stop the registry: every fault is cancelled, its threads joined, its
///    work undone, and the answers it held are released;
/// 3. wait `SHUTDOWN_DELAY_SECONDS`, serving as before, so that the
///    endpoints controller takes the pod out of its Services (a second
///    signal skips the rest of the wait);
/// 4. drain: the workers finish the requests they hold and those queued,
///    then the answers handed to the connection layer (the released ones
///    included) are written, within `DRAIN_TIMEOUT`;
/// 5. exit 0, after SHUTDOWN_FINISHED says what was left, if anything.
fn shut_down(
    app: &App,
    pool: &Pool,
    server: &tiny_http::Server,
    rx: &mpsc::Receiver<Control>,
    signal: &str,
) -> ExitCode {
    let began = Instant::now();
    app.begin_shutdown(signal);
    let faults_stopped = app.registry.stop(None, chaos::registry::Ended::Shutdown).len();
    log::info!(
        "{signal}: /ready fails and no fault starts; {faults_stopped} fault(s) stopped; stopping in {} s",
        app.config.shutdown_delay.as_secs()
    );
    let delay_ends = Instant::now() + app.config.shutdown_delay;
    loop {
        match next_control(rx, app, Some(delay_ends)) {
            Some(Control::Signal(again)) => {
                log::info!("{again} during the delay: stopping now");
                break;
            }
            Some(_) => {}
            None => break,
        }
    }
    pool.stop();
    let drained_by = Instant::now() + DRAIN_TIMEOUT;
    let mut exited = 0;
    while exited < pool.len() {
        match next_control(rx, app, Some(drained_by)) {
            Some(Control::WorkerExited) => exited += 1,
            Some(_) => {}
            None => break,
        }
    }
    let unwritten = wait_for_answers(server, drained_by);
    let report = ShutdownReport {
        faults_stopped,
        workers_busy: pool.len() - exited,
        unwritten_answers: unwritten,
        took: began.elapsed(),
    };
    if report.workers_busy > 0 || report.unwritten_answers > 0 {
        log::warn!(
            "after {DRAIN_TIMEOUT:?} of drain, {} worker(s) still busy and {} answer(s) not yet written; exiting anyway",
            report.workers_busy,
            report.unwritten_answers
        );
    }
    // What a flood left out is counted before the exit, not lost.
    let now = Instant::now();
    app.events.write_suppressed_summaries(now, true);
    observe::events::write_log_summaries(now, true);
    app.record_stop();
    app.finish_shutdown(signal, &report);
    log::info!("stopped");
    ExitCode::SUCCESS
}

/// How often the drain looks whether every answer was written.
const ANSWERS_POLL: Duration = Duration::from_millis(10);

/// Waits until the connection layer has written every answer it was
/// given, and the probe listener every answer it held, or until
/// `deadline`; returns how many were still unwritten.
fn wait_for_answers(server: &tiny_http::Server, deadline: Instant) -> usize {
    loop {
        let unwritten = server.unwritten_answers() + http::probe_listener::unwritten_answers();
        if unwritten == 0 || Instant::now() >= deadline {
            return unwritten;
        }
        std::thread::sleep(ANSWERS_POLL.min(deadline.saturating_duration_since(Instant::now())));
    }
}
