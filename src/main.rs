//! chaos-backend: an HTTP service that fails on purpose, in controlled ways,
//! so that platform engineers can prove that Kubernetes heals it.
//!
//! `main` picks the mode (serve, or `healthcheck`), wires the parts
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
//!    for a route that starts or stops chaos, the token (`http::access`)
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

use app::{App, Control};
use config::Config;
use http::server::{Listening, Pool};
use observe::events::Events;

const USAGE: &str = "\
usage: chaos-backend               serve (configured by the environment variables below)
       chaos-backend healthcheck   exit 0 if GET /health on the local PROBE_PORT (else PORT) answers 200, else 1
       chaos-backend observe --url URL [options]   what users of URL see: GET at a fixed rate, JSON Lines (observe --help)
       chaos-backend --version
       chaos-backend --help";

/// How long stopped workers get to finish the requests they hold.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let started = Instant::now();
    // Before any thread exists, so that every thread inherits the mask.
    os::signals::block_termination_signals();
    // Before any thread exists too: bounded malloc arenas (under RLIMIT_AS
    // they would take the address space that connection threads' stacks
    // need) and fixed thresholds, so that freed memory goes back after a
    // burst of clients.
    os::sys::limit_malloc_arenas(http::limits::malloc_arenas(
        os::sys::affinity_cpu_count(),
        os::sys::address_space_limit(),
    ));
    os::sys::fix_malloc_thresholds();
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
            println!("{USAGE}\n\n{}", config::variables::help().trim_end());
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
    if config.random_crash_enabled {
        log::warn!("RANDOM_CRASH_ENABLED=true is accepted but reserved: no random crash will happen");
    }
    match run(config, started) {
        Ok(code) => code,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config, started: Instant) -> Result<ExitCode, String> {
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
            &http::routes::endpoint_series(),
            Events::to_stderr(),
            started,
            tx.clone(),
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
    let pool =
        Pool::start(server, Arc::clone(&app), workers, tx).map_err(|e| format!("cannot start worker threads: {e}"))?;
    let probe_listen = probe_listen.map(|a| a.to_string());
    match &probe_listen {
        Some(probes) => log::info!(
            "listening on http://{listen} with {workers} workers; probes (GET /health, /ready) on http://{probes}, served first"
        ),
        None => log::info!("listening on http://{listen} with {workers} workers; no probe port (PROBE_PORT=off)"),
    }
    app.record_start(&listen, probe_listen.as_deref());

    match wait_trimming_the_heap(&rx) {
        Ok(Control::Signal(name)) => Ok(shut_down(&app, &pool, &rx, name)),
        Ok(Control::Panic(cause)) => panic!("deliberate panic, requested by {cause}"),
        Ok(Control::AcceptFailed(e)) => {
            log::error!(
                "the listener failed ({e}); tiny_http accepts nothing more (tiny-http#283), so exit for a restart"
            );
            Ok(ExitCode::FAILURE)
        }
        Ok(Control::WorkerExited) => {
            log::error!("a worker exited unexpectedly; exit for a restart");
            Ok(ExitCode::FAILURE)
        }
        Err(_) => Err("control channel closed".to_string()),
    }
}

/// How often the main thread hands freed heap memory back to the kernel.
const HEAP_TRIM_PERIOD: Duration = Duration::from_secs(2);

/// Waits for the next control message, meanwhile handing freed heap memory
/// back every `HEAP_TRIM_PERIOD`. After a burst of connections (each thread
/// allocates from one of glibc's per-thread arenas), freed memory would
/// otherwise stay resident: 1,200 connections left RSS 5 to 7 MiB above
/// its baseline for good.
fn wait_trimming_the_heap(rx: &mpsc::Receiver<Control>) -> Result<Control, mpsc::RecvError> {
    loop {
        match rx.recv_timeout(HEAP_TRIM_PERIOD) {
            Ok(message) => return Ok(message),
            Err(RecvTimeoutError::Disconnected) => return Err(mpsc::RecvError),
            Err(RecvTimeoutError::Timeout) => os::sys::trim_heap(),
        }
    }
}

/// Graceful stop: fail readiness at once, wait `SHUTDOWN_DELAY_SECONDS` so
/// the endpoints controller takes the pod out of its Services, then stop the
/// workers. A second signal skips the rest of the wait.
fn shut_down(app: &App, pool: &Pool, rx: &mpsc::Receiver<Control>, signal: &str) -> ExitCode {
    app.begin_shutdown(signal);
    log::info!(
        "{signal}: /ready now fails; stopping in {} s",
        app.config.shutdown_delay.as_secs()
    );
    let deadline = Instant::now() + app.config.shutdown_delay;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Control::Signal(again)) => {
                log::info!("{again} again: stopping now");
                break;
            }
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    // Every fault ends, and its threads with it, before the workers stop.
    app.registry.stop(None, chaos::registry::Ended::Shutdown);
    pool.stop();
    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut exited = 0;
    while exited < pool.len() {
        match rx.recv_timeout(drain_deadline.saturating_duration_since(Instant::now())) {
            Ok(Control::WorkerExited) => exited += 1,
            Ok(_) => {}
            Err(_) => {
                log::warn!(
                    "{} worker(s) still busy after {DRAIN_TIMEOUT:?}; exiting anyway",
                    pool.len() - exited
                );
                break;
            }
        }
    }
    log::info!("stopped");
    ExitCode::SUCCESS
}
