//! The worker pool over one tiny_http server, and the per-request wrapper:
//! time it, run the handler (a panic becomes a 500 and the worker lives),
//! count it, feed the readiness window, respond, then run any after-work.
//!
//! Upstream tiny_http ended `incoming_requests()` for good on any accept
//! error (tiny-http#283); the patched one (`patches/tiny_http`) counts the
//! error and goes on. Should its accept loop still end, the fork says so
//! (`tiny_http::AcceptThread`), `watch_accept_thread` tells `main`, and
//! `main` exits non-zero so that the orchestrator restarts a process that
//! would otherwise live on accepting nothing.

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::app::{App, Control};
use crate::http::reply::{Reply, Unanswered};
use crate::http::routes::{self, Method, RequestLine, Route};
use crate::os::sys;

/// Sends `Control::WorkerExited` when dropped, unless a fresh worker took
/// over (`renewed`).
struct ExitNotice {
    control: Sender<Control>,
    renewed: bool,
}

impl Drop for ExitNotice {
    fn drop(&mut self) {
        if !self.renewed {
            let _ = self.control.send(Control::WorkerExited);
        }
    }
}

/// A worker that has served and then idled this long hands over to a fresh
/// thread and ends: the blocks its allocator's per-thread cache holds
/// (glibc's tcache, freed there by this worker but allocated by connection
/// threads, scattered over every arena) pin pages that only the thread's
/// end gives back. Measured: 0.6 MiB a worker after a burst of 1,585
/// connections.
const WORKER_RENEW_AFTER: Duration = Duration::from_secs(2);

/// What every worker shares.
#[derive(Clone)]
struct Worker {
    server: Arc<tiny_http::Server>,
    app: Arc<App>,
    stopping: Arc<AtomicBool>,
    control: Sender<Control>,
}

impl Worker {
    /// Starts worker `i`, which serves until stopped (or renewed).
    fn spawn(self, i: usize) -> std::io::Result<JoinHandle<()>> {
        thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || self.serve(i))
    }

    fn serve(self, i: usize) {
        // Reports the exit however the thread ends, a panic included.
        let mut exit = ExitNotice {
            control: self.control.clone(),
            renewed: false,
        };
        let mut served = false;
        loop {
            match self.server.recv_timeout(WORKER_RENEW_AFTER) {
                Ok(Some(rq)) => {
                    handle(rq, &self.app);
                    served = true;
                }
                // An unblock (`Pool::stop`) or the timeout.
                Ok(None) if self.stopping.load(Ordering::SeqCst) => break,
                Ok(None) if served => {
                    if self.clone().spawn(i).is_ok() {
                        exit.renewed = true;
                        break;
                    }
                    served = false;
                }
                Ok(None) => {}
                Err(_) if self.stopping.load(Ordering::SeqCst) => break,
                Err(e) => {
                    let _ = self.control.send(Control::AcceptFailed(e.to_string()));
                    break;
                }
            }
        }
    }
}

/// The running pool.
pub struct Pool {
    server: Arc<tiny_http::Server>,
    stopping: Arc<AtomicBool>,
    count: usize,
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
        let worker = Worker {
            server: Arc::clone(&server),
            app,
            stopping: Arc::clone(&stopping),
            control,
        };
        for i in 0..count {
            worker.clone().spawn(i)?;
        }
        Ok(Pool {
            server,
            stopping,
            count,
        })
    }

    /// Tells every worker to exit once it is idle: one unblock per worker
    /// (tiny-http#146: `unblock` wakes a single waiting thread).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for _ in 0..self.count {
            self.server.unblock();
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }
}

/// A bound server, before any worker runs.
pub struct Listening {
    pub server: tiny_http::Server,
    /// Whether tiny_http's accept loop still runs (`watch_accept_thread`).
    pub accept_thread: tiny_http::AcceptThread,
    /// The address actually bound (`PORT=0` picks one), for logs and events.
    pub listen: String,
}

/// Binds `addr` with `TCP_NODELAY` (accepted sockets inherit it) and starts
/// tiny_http's accept loop on it, with `options` (head limits, error bodies:
/// `http::server_options`).
pub fn listen(addr: SocketAddr, options: tiny_http::ServerOptions) -> Result<Listening, String> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    if let Err(e) = sys::set_nodelay(&listener) {
        log::warn!("cannot set TCP_NODELAY on {addr} ({e}); large answers may wait for delayed ACKs");
    }
    let server = tiny_http::Server::from_listener_with(listener, None, options)
        .map_err(|e| format!("cannot serve on {addr}: {e}"))?;
    let accept_thread = server.accept_thread();
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

/// Watches tiny_http's accept loop. Upstream's ended on an accept error or
/// panicked on EMFILE; the patched one does neither, and this watch stays
/// as a guard: if the loop ever ends, the server is deaf, so `main` is told
/// to exit. The watch blocks on the fork's own signal: no polling.
pub fn watch_accept_thread(accept: tiny_http::AcceptThread, control: Sender<Control>) -> std::io::Result<()> {
    thread::Builder::new().name("accept-watch".into()).spawn(move || {
        accept.wait();
        let _ = control.send(Control::AcceptFailed("tiny_http's accept thread ended".to_string()));
    })?;
    Ok(())
}

/// Serves one request from start to finish.
fn handle(rq: tiny_http::Request, app: &Arc<App>) {
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
    let Some(later) = reply.later.take() else {
        answer(rq, reply, app, started, method, route);
        return;
    };
    // The answer comes later (a leak being made): a thread of its own waits
    // for it, so that this worker serves the next request now. Should no
    // thread be had, the worker waits, as it did before.
    let waiting = Arc::new(std::sync::Mutex::new(Some((rq, later))));
    let handed = Arc::clone(&waiting);
    let owner = Arc::clone(app);
    let spawned = thread::Builder::new().name("answer-later".into()).spawn(move || {
        let taken = handed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some((rq, later)) = taken {
            let reply = run_guarded(|| later.wait());
            answer(rq, reply, &owner, started, method, route);
        }
    });
    if spawned.is_err() {
        let taken = waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some((rq, later)) = taken {
            answer(rq, run_guarded(|| later.wait()), app, started, method, route);
        }
    }
}

/// Counts `reply` and sends it, then runs the work it carries. `started`:
/// when a worker took the request.
fn answer(
    rq: tiny_http::Request,
    mut reply: Reply,
    app: &App,
    started: Instant,
    method: Method,
    route: Option<&'static Route>,
) {
    let after = reply.after.take();
    let hold = reply.hold.take().unwrap_or_default();
    let released_by = reply.released_by.take();
    if let Some(how) = reply.unanswered {
        end_unanswered(rq, how, hold, released_by, app, route);
        return;
    }
    // Counted before the response is written, so a client that has its
    // answer finds it in the next scrape. The duration is the time to produce
    // the answer; writing a small body to the socket is a copy into the
    // kernel.
    let ended = Instant::now();
    // A held answer is as slow as the client will see it.
    let elapsed = ended - started + hold;
    record(app, method, route, reply.status, elapsed);
    if route.is_some_and(Route::feeds_readiness) {
        app.latency.record(ended, elapsed);
    }
    // The patched tiny_http never blocks a worker on the client: the answer
    // is written without blocking, the rest (and a held answer, after its
    // hold) by the connection's own thread, which also drains an unread
    // body, bounded, or closes the connection. A shared body is queued as
    // it is, not copied.
    let path = rq.url().to_string();
    let (response, shared) = reply.into_response();
    let sent = match shared {
        Some(body) => rq.respond_shared(response, body, hold, released_by),
        None => rq.respond_held(response, hold, released_by),
    };
    if let Err(e) = sent {
        log::debug!(
            "response to {} {} not delivered: {e}",
            method.label(),
            crate::http::reply::shown(&path)
        );
    }
    if let Some(after) = after {
        after.run();
    }
}

/// What a stalled request adds to the readiness window: it gets no answer
/// at all, so it counts as slower than any threshold (the window's last
/// bucket), never as the fast request it would look like if timed from the
/// worker's side.
const STALLED: Duration = Duration::from_secs(86_400);

/// Ends a request without an answer (an errors fault): a reset, a clean
/// close, or a stall held off the workers for `hold` (ended early by
/// `released_by`), then a clean close. Not counted in
/// `http_requests_total`, which counts answers (the handler counted the
/// fault by mode); a stall counts in the readiness window as `STALLED`.
fn end_unanswered(
    rq: tiny_http::Request,
    how: Unanswered,
    hold: Duration,
    released_by: Option<Arc<AtomicBool>>,
    app: &App,
    route: Option<&'static Route>,
) {
    let ending = match how {
        Unanswered::Reset => tiny_http::Unanswered::Reset(sys::reset_connection),
        Unanswered::Close => tiny_http::Unanswered::Close,
        Unanswered::Stall => {
            if route.is_some_and(Route::feeds_readiness) {
                app.latency.record(Instant::now(), STALLED);
            }
            tiny_http::Unanswered::Stall(hold, released_by)
        }
    };
    rq.end_unanswered(ending);
}

/// Counts one answer (`http_requests_total`, and its time in
/// `http_request_duration_seconds`), on either port.
pub fn record(app: &App, method: Method, route: Option<&'static Route>, status: u16, elapsed: Duration) {
    let endpoint = route.map_or(Route::UNMATCHED_LABEL, Route::label);
    let m = &app.metrics;
    m.http_requests_total
        .with_label_values(&[method.label(), endpoint, &status.to_string()])
        .inc();
    m.http_request_duration_seconds
        .with_label_values(&[endpoint])
        .observe(elapsed.as_secs_f64());
}

/// Answers 413 to a request that announces a body larger than any the
/// service would drain, without running its handler. The connection layer
/// sends it with `Connection: close` and closes the connection rather than
/// read the body (the patched tiny_http drains at most
/// `HTTP_DRAIN_LIMIT_BYTES`).
fn refuse_huge_body(rq: tiny_http::Request, app: &App, method: Method, route: Option<&'static Route>, length: usize) {
    log::warn!(
        "refusing a {length}-byte body on {} {}: larger than {MAX_DRAINABLE_BODY} bytes",
        method.label(),
        crate::http::reply::shown(rq.url())
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
    let _ = rq.respond(reply.into_response().0);
}

/// The largest request body a handler is run for. Larger ones are refused
/// (see `refuse_huge_body`).
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
    use std::time::Duration;

    #[test]
    fn a_panicking_handler_becomes_a_500() {
        let r = run_guarded(|| panic!("boom"));
        assert_eq!(r.status, 500);
        assert!(r.body_json()["error"].as_str().unwrap().contains("panicked"));
        let r = run_guarded(|| Reply::internal_error("fine"));
        assert_eq!(r.body_json()["error"], "fine");
    }

    #[test]
    fn main_is_told_when_the_accept_loop_ends() {
        let listening = listen("127.0.0.1:0".parse().unwrap(), tiny_http::ServerOptions::default()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        watch_accept_thread(listening.accept_thread, tx).unwrap();
        assert!(
            rx.recv_timeout(Duration::from_millis(100)).is_err(),
            "nothing while it runs"
        );
        // Dropping the server ends its accept loop.
        drop(listening.server);
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Control::AcceptFailed(why)) => assert!(why.contains("accept thread ended"), "{why}"),
            other => panic!("expected AcceptFailed, got {other:?}"),
        }
    }
}
