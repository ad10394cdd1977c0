//! chaos-backend: an HTTP service that fails on purpose, in controlled ways,
//! so that platform engineers can prove that Kubernetes heals it.
//!
//! `main` only wires the parts together and is the one place where an error
//! becomes an exit code: 2 for bad configuration, 1 for a failure to serve.
#![deny(unsafe_code)]

mod access;
mod app;
mod cgroup;
mod chaos;
mod config;
mod connection_metrics;
mod control;
mod crash_marker;
mod events;
mod guard;
mod handlers;
mod healthcheck;
mod http;
mod latency;
mod limits;
mod metrics;
mod misspelling;
mod observer;
mod query;
mod readiness;
mod routes;
mod server;
mod signals;
mod sys;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use app::App;
use config::Config;
use control::Control;
use events::Events;
use server::{Listening, Pool};

const USAGE: &str = "\
usage: chaos-backend               serve (configured by environment variables, see README.md)
       chaos-backend healthcheck   exit 0 if GET /health on the local PORT answers 200, else 1
       chaos-backend observe --url URL [options]   what users of URL see: GET at a fixed rate, JSON Lines (observe --help)
       chaos-backend --version
       chaos-backend --help";

/// How long stopped workers get to finish the requests they hold.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let started = Instant::now();
    // Before any thread exists, so that every thread inherits the mask.
    signals::block_termination_signals();
    events::init_logging();
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
            println!("{USAGE}");
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
        return match healthcheck::check(healthcheck::probe_address(&config)) {
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
    signals::spawn_waiter(tx.clone()).map_err(|e| format!("cannot start the signal thread: {e}"))?;
    let Listening {
        server,
        accept_thread,
        listen,
    } = server::listen(
        SocketAddr::new(config.bind_address, config.port),
        tiny_http::ServerOptions {
            connections: connection_limits(&config),
            ..http::server_options(&config)
        },
    )?;
    let workers = config.workers;
    log::debug!("bound after {:?}", started.elapsed());
    let app =
        Arc::new(App::new(config, Events::to_stderr(), started).map_err(|e| format!("cannot register metrics: {e}"))?);
    match accept_thread {
        Some(tid) => {
            server::watch_accept_thread(tid, tx.clone()).map_err(|e| format!("cannot start the accept watch: {e}"))?
        }
        None => log::warn!("cannot find tiny_http's accept thread; a dead listener will not be noticed"),
    }
    log::debug!("app ready after {:?}", started.elapsed());
    let server = Arc::new(server);
    app.metrics.connections.watch(Arc::clone(&server));
    let pool =
        Pool::start(server, Arc::clone(&app), workers, tx).map_err(|e| format!("cannot start worker threads: {e}"))?;
    log::info!("listening on http://{listen} with {workers} workers");
    app.record_start(&listen);

    match limits::wait_trimming_the_heap(&rx) {
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

/// The connection limits: the configured ones, and the cap computed from
/// what bounds the process (see `limits.rs`), logged.
fn connection_limits(config: &Config) -> tiny_http::ConnectionLimits {
    let settings = &config.connections;
    let cpus = chaos::cpu::CpuBudget::detect().saturating_threads();
    let other = limits::other_threads(config.workers, config.max_concurrent_chaos, cpus);
    let bounds = limits::Bounds::read();
    let cap = limits::cap(settings, &bounds, other);
    let show = |v: Option<u64>| v.map_or_else(|| "unbounded".to_string(), |v| v.to_string());
    log::info!(
        "HTTP connections: cap {} ({}; memory allows {}, fds {}, threads {}); idle timeout {:?}, head {:?}, write {:?}, body drain {} bytes in {:?}",
        cap.chosen,
        if cap.configured {
            "HTTP_MAX_CONNECTIONS"
        } else {
            "computed"
        },
        show(cap.by_memory),
        show(cap.by_fds),
        show(cap.by_threads),
        settings.idle_timeout,
        settings.head_timeout,
        settings.write_timeout,
        settings.drain_limit,
        settings.drain_timeout,
    );
    limits::connection_limits(settings, &cap)
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
