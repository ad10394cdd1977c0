//! The worker pool over one tiny_http server, and the per-request wrapper:
//! time it, run the handler (a panic becomes a 500 and the worker lives),
//! count it, feed the readiness window, respond, then run any after-work.
//!
//! tiny_http ends `incoming_requests()` for good on any accept error
//! (tiny-http#283): the accept thread pushes one error and exits. A worker
//! that gets an error while we are not stopping reports it, and `main` exits
//! non-zero so that the orchestrator restarts a process that would otherwise
//! live on accepting nothing.

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::app::App;
use crate::chaos::crash;
use crate::chaos::registry::Cancel;
use crate::control::Control;
use crate::http::{After, Reply};
use crate::routes::{self, Method, RequestLine, Route};
use crate::sys;

/// How often the accept thread is checked; a deaf server lives at most this long.
const ACCEPT_WATCH_PERIOD: Duration = Duration::from_millis(200);

/// Sends `Control::WorkerExited` when dropped.
struct ExitNotice(Sender<Control>);

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let _ = self.0.send(Control::WorkerExited);
    }
}

/// The running pool.
pub struct Pool {
    server: Arc<tiny_http::Server>,
    stopping: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Spawns `count` named workers that serve `server` until stopped.
    pub fn start(
        server: Arc<tiny_http::Server>,
        app: Arc<App>,
        count: usize,
        control: Sender<Control>,
    ) -> std::io::Result<Pool> {
        let stopping = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::with_capacity(count);
        for i in 0..count {
            let (server, app, stopping, control) = (
                Arc::clone(&server),
                Arc::clone(&app),
                Arc::clone(&stopping),
                control.clone(),
            );
            let handle = thread::Builder::new().name(format!("worker-{i}")).spawn(move || {
                // Reports the exit however the thread ends, a panic included.
                let _exit = ExitNotice(control.clone());
                loop {
                    match server.recv() {
                        Ok(rq) => handle(rq, &app, &control),
                        Err(_) if stopping.load(Ordering::SeqCst) => break,
                        Err(e) => {
                            let _ = control.send(Control::AcceptFailed(e.to_string()));
                            break;
                        }
                    }
                }
            })?;
            workers.push(handle);
        }
        Ok(Pool {
            server,
            stopping,
            workers,
        })
    }

    /// Tells every worker to exit once it is idle: one unblock per worker
    /// (tiny-http#146: `unblock` wakes a single waiting thread).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for _ in &self.workers {
            self.server.unblock();
        }
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }
}

/// A bound server, before any worker runs.
pub struct Listening {
    pub server: tiny_http::Server,
    /// The kernel thread id of tiny_http's accept loop, when it was found.
    pub accept_thread: Option<u32>,
    /// The address actually bound (`PORT=0` picks one), for logs and events.
    pub listen: String,
}

/// Binds `addr` with `TCP_NODELAY` (accepted sockets inherit it) and starts
/// tiny_http's accept loop on it, with `options` (head limits, error bodies:
/// `http::server_options`).
pub fn listen(addr: SocketAddr, options: tiny_http::ServerOptions) -> Result<Listening, String> {
    let threads_before = sys::thread_ids();
    let listener = std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    if let Err(e) = sys::set_nodelay(&listener) {
        log::warn!("cannot set TCP_NODELAY on {addr} ({e}); large answers may wait for delayed ACKs");
    }
    let server = tiny_http::Server::from_listener_with(listener, None, options)
        .map_err(|e| format!("cannot serve on {addr}: {e}"))?;
    // Server::from_listener_with starts one thread, the accept loop, which
    // at once starts the four threads of its connection pool: the accept
    // thread is the first, so the lowest new thread id (ids only decrease on
    // wrap-around).
    let accept_thread = sys::thread_ids()
        .into_iter()
        .filter(|t| !threads_before.contains(t))
        .min();
    let listen = server
        .server_addr()
        .to_ip()
        .map_or_else(|| addr.to_string(), |a| a.to_string());
    Ok(Listening {
        server,
        accept_thread,
        listen,
    })
}

/// Watches tiny_http's accept thread (kernel thread id `tid`). It ends on an
/// accept error, and it panics when it cannot clone a socket (EMFILE in
/// `RefinedTcpStream::new`), in which case no error reaches the workers at
/// all: either way the server is deaf, so `main` is told to exit.
pub fn watch_accept_thread(tid: u32, control: Sender<Control>) -> std::io::Result<()> {
    thread::Builder::new().name("accept-watch".into()).spawn(move || {
        while sys::thread_alive(tid) {
            thread::sleep(ACCEPT_WATCH_PERIOD);
        }
        let _ = control.send(Control::AcceptFailed("tiny_http's accept thread ended".to_string()));
    })?;
    Ok(())
}

/// Serves one request from start to finish.
fn handle(rq: tiny_http::Request, app: &App, control: &Sender<Control>) {
    let started = Instant::now();
    let method = Method::from_tiny(rq.method());
    let target = rq.url().to_string();
    let authorization = rq
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str().to_string());
    let method_name = rq.method().as_str().to_string();
    let line = RequestLine::new(method, &target)
        .with_authorization(authorization.as_deref())
        .with_method_name(&method_name);
    let route = Route::from_path(line.path);
    if let Some(length) = rq.body_length().filter(|l| *l > MAX_DRAINABLE_BODY) {
        refuse_huge_body(rq, app, method, route, length);
        return;
    }
    let mut reply = run_guarded(|| routes::dispatch(&line, app, started));
    let after = reply.after.take().map(|a| *a);
    let hold = reply.hold.take().unwrap_or_default();
    let released_by = reply.released_by.take();
    // Counted before the response is written, so a client that has its
    // answer finds it in the next scrape. The duration is the time to produce
    // the answer; writing a small body to the socket is a copy into the
    // kernel.
    let ended = Instant::now();
    // A held answer is as slow as the client will see it.
    let elapsed = ended - started + hold;
    let endpoint = route.map_or(Route::UNMATCHED_LABEL, Route::label);
    let m = &app.metrics;
    m.http_requests_total
        .with_label_values(&[method.label(), endpoint, &reply.status.to_string()])
        .inc();
    m.http_request_duration_seconds
        .with_label_values(&[endpoint])
        .observe(elapsed.as_secs_f64());
    if route.is_some_and(Route::feeds_readiness) {
        app.latency.record(ended, elapsed);
    }
    let response = reply.into_response();
    if after.is_none() && (has_unread_body(&rq) || !hold.is_zero()) {
        respond_off_the_worker(rq, response, hold, released_by);
    } else if let Err(e) = rq.respond(response) {
        log::debug!(
            "response to {} {} not delivered: {e}",
            method.label(),
            crate::http::shown(line.path)
        );
    }
    match after {
        Some(After::Crash { mode, cause }) => {
            crash::crash_now(&app.config.state_dir, mode, &cause, &app.events, control)
        }
        None => {}
    }
}

/// Whether tiny_http left the body in the socket: it reads bodies of up to
/// 1 KiB before handing the request over, but a larger, chunked or
/// `Expect: 100-continue` body is drained when the request is dropped, that
/// is inside `respond`, at whatever pace the client sends it.
fn has_unread_body(rq: &tiny_http::Request) -> bool {
    rq.body_length().is_some_and(|l| l > 1024)
        || rq
            .headers()
            .iter()
            .any(|h| h.field.equiv("Transfer-Encoding") || h.field.equiv("Expect"))
}

/// Threads answering off the workers now (slow bodies, held answers), and
/// the most there may be; past that a request is answered on its worker at
/// once, as tiny_http would.
static DRAINERS: AtomicUsize = AtomicUsize::new(0);
const MAX_DRAINERS: usize = 1024;

/// Answers on a thread of its own, after `hold`, so that neither a client
/// trickling its body nor a latency or hang fault holds a worker: otherwise
/// four slow uploads would starve every probe. tiny_http already runs a
/// thread per connection; this adds at most one per such request.
fn respond_off_the_worker(
    rq: tiny_http::Request,
    response: tiny_http::Response<std::io::Cursor<Vec<u8>>>,
    hold: Duration,
    released_by: Option<Cancel>,
) {
    if DRAINERS.fetch_add(1, Ordering::SeqCst) >= MAX_DRAINERS {
        DRAINERS.fetch_sub(1, Ordering::SeqCst);
        let _ = rq.respond(response);
        return;
    }
    let spawned = thread::Builder::new().name("answer-later".into()).spawn(move || {
        // A stopped fault releases the answers it holds at once.
        match released_by {
            Some(cancel) => {
                cancel.sleep_until(Instant::now() + hold);
            }
            None => thread::sleep(hold),
        }
        let _ = rq.respond(response);
        DRAINERS.fetch_sub(1, Ordering::SeqCst);
    });
    if spawned.is_err() {
        // The closure, and with it the request, is gone: tiny_http answers
        // 500 as it drops it.
        DRAINERS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers 413 to a request that announces a body too large to drain, and
/// never drops it.
///
/// tiny_http 0.12 drains an unread body when the request is dropped, by
/// first allocating a zeroed buffer of the whole remaining length
/// (`EqualReader::drop`): `Content-Length: 99999999999999` on any path makes
/// that allocation fail, and the process aborts. No handler reads bodies, so
/// the request is answered through `upgrade` (which hands us the body reader
/// instead of dropping it) and the stream is leaked on purpose: one parked
/// connection thread and its socket per such request, instead of a dead
/// service. The client gets the 413 status line and headers, but tiny_http
/// sends neither a body nor a `Content-Length` on upgrade, so it waits until
/// it gives up.
fn refuse_huge_body(rq: tiny_http::Request, app: &App, method: Method, route: Option<&'static Route>, length: usize) {
    log::warn!(
        "refusing a {length}-byte body on {} {}: larger than {MAX_DRAINABLE_BODY} bytes",
        method.label(),
        crate::http::shown(rq.url())
    );
    let endpoint = route.map_or(Route::UNMATCHED_LABEL, Route::label);
    app.metrics
        .http_requests_total
        .with_label_values(&[method.label(), endpoint, "413"])
        .inc();
    let reply = Reply::json(
        413,
        &serde_json::json!({
            "error": format!("request body of {length} bytes is larger than {MAX_DRAINABLE_BODY}; no endpoint reads a body"),
        }),
    );
    std::mem::forget(rq.upgrade("none", reply.into_response()));
}

/// The largest request body a worker drains after answering. Larger ones are
/// refused without draining (see `refuse_huge_body`).
const MAX_DRAINABLE_BODY: usize = 64 << 20;

/// Runs a handler; a panic is logged and becomes a 500, and the worker goes on.
fn run_guarded(handler: impl FnOnce() -> Reply) -> Reply {
    catch_unwind(AssertUnwindSafe(handler)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        log::error!("handler panicked: {what}");
        Reply::internal_error("internal error: the handler panicked; the service goes on")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_handler_becomes_a_500() {
        let r = run_guarded(|| panic!("boom"));
        assert_eq!(r.status, 500);
        assert!(r.body_json()["error"].as_str().unwrap().contains("panicked"));
        let r = run_guarded(|| Reply::internal_error("fine"));
        assert_eq!(r.body_json()["error"], "fine");
    }
}
