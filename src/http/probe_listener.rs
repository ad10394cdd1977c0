//! The probe listener (`PROBE_PORT`): a port of its own for the kubelet's
//! probes and the image's HEALTHCHECK, as Spring Boot's management port,
//! Envoy's admin port and Istio's and Linkerd's probe ports are.
//!
//! On the main port, probes share the connection cap, the connection
//! threads, the workers' queue and the CPU with every client: a client
//! that fills the cap, pipelines, or reads slowly can make a probe wait or
//! be refused. Here nothing is shared with the main port but
//! the handlers: one thread runs an event loop (epoll) over at most
//! `CAPACITY` non-blocking connections, reads each head (at most
//! `HEAD_BYTES`, within `DEADLINE` of the accept), answers `GET` or `HEAD`
//! `/health` and `/ready` inline from the same handlers as the main port
//! (a liveness `hang` holds the answer until its fault ends or is stopped,
//! as there), anything else with the main port's 404 or 405, writes the
//! answer (at most `OUTPUT_BYTES`, within `DEADLINE`) and closes. When
//! `CAPACITY` connections are open, a new one evicts a finished one still
//! closing, else the oldest whose head has not all come, else the oldest
//! held answer: a probe, whose head follows its connect at once, always
//! gets in. Its threads (one), fds (`fds()`) and memory (`CAPACITY` ×
//! (`HEAD_BYTES` + `OUTPUT_BYTES`)) are fixed, and subtracted from what
//! the main port's cap may use.
//!
//! Those fds are also held, not only counted: the fds of a process are one
//! table, and a burst on the main port (a connection accepted and then
//! refused at the cap, a closed one whose thread has not let go yet) can
//! take the last one for a moment. So the loop keeps `SPARES` duplicates of
//! the listener's fd while it has room; an accept that fails for want of an
//! fd (EMFILE, ENFILE) closes one and accepts into its place, and with no
//! spare left one of its connections is closed to make room, chosen as at
//! `CAPACITY`, and with none open either it is retried every `ACCEPT_RETRY` (the listener is
//! edge-triggered: waiting for the next connection's event would leave this
//! probe in the backlog until the next probe came, a second later). Seen
//! once under `--ulimit nofile=64` with pipelining clients at the cap: a
//! `/ready` probe unanswered for 1 s.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::app::App;
use crate::http::reply::Reply;
use crate::http::routes::{self, Method, RequestLine, Route};
use crate::http::server;
use crate::os::poll::Epoll;

/// Connections open at once.
pub const CAPACITY: usize = 16;
/// The most bytes of request line and headers read from one connection.
pub const HEAD_BYTES: usize = 8 << 10;
/// The most bytes of one answer (a probe's is a few hundred).
pub const OUTPUT_BYTES: usize = 4 << 10;
/// The head must have come, and then the answer have been written (a held
/// answer: once its hold ends), within this long.
pub const DEADLINE: Duration = Duration::from_secs(2);
/// A connection that has its answer waits this long for the client to
/// close first (so that the answer is never cut by a reset), then closes.
const LINGER: Duration = Duration::from_secs(1);
/// How often a held answer's release flag is looked at (as the main
/// port's timer does).
const RELEASE_TICK: Duration = Duration::from_millis(250);
/// The only paths answered; every other is a 404.
const PATHS: [&str; 2] = ["/health", "/ready"];

/// Answers the loop holds (a liveness hang) or is writing, as of its last
/// turn: the ordered stop's drain waits for them as for the main port's
/// (`unwritten_answers`).
static UNWRITTEN: AtomicUsize = AtomicUsize::new(0);

/// How many probe answers are held or not yet all written. A stop
/// releases the held ones; the loop sees that within `RELEASE_TICK` and
/// writes them. Before, the process could exit first (SIGTERM with
/// `SHUTDOWN_DELAY_SECONDS=0`: 30 of 30 held `/health` on the probe port
/// closed without an answer).
pub fn unwritten_answers() -> usize {
    UNWRITTEN.load(Ordering::SeqCst)
}

/// The fds the probe listener may hold: its connections, the listener and
/// the epoll instance.
pub fn fds() -> u64 {
    CAPACITY as u64 + 2
}

const LISTENER: u64 = u64::MAX;

/// Duplicates of the listener's fd kept to give up when an accept finds no
/// fd free; they are counted within `CAPACITY` (open connections plus
/// spares never exceed it), so `fds()` holds.
const SPARES: usize = 2;
/// How soon an accept that found no fd free, and no spare, is tried again.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// Whether an accept failed for want of an fd, in the process or the system.
fn out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Binds the probe port (non-blocking, `TCP_NODELAY` inherited by accepted
/// sockets).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen for probes on {addr}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot make the probe listener on {addr} non-blocking: {e}"))?;
    if let Err(e) = crate::os::sys::set_nodelay(&listener) {
        log::warn!("cannot set TCP_NODELAY on the probe listener {addr} ({e})");
    }
    Ok(listener)
}

/// Starts the probe listener's thread on `listener`.
pub fn spawn(listener: TcpListener, app: Arc<App>) -> io::Result<()> {
    let epoll = Epoll::new()?;
    epoll.add(listener.as_raw_fd(), LISTENER)?;
    std::thread::Builder::new()
        .name("probe-listener".into())
        .spawn(move || Loop::new(listener, epoll, app).run())?;
    Ok(())
}

/// What a probe connection is doing.
enum ProbePhase {
    /// Its head has not all come.
    Reading,
    /// Its answer is held (a liveness `hang`) until then, or until the flag.
    Held {
        until: Instant,
        release: Option<Arc<AtomicBool>>,
    },
    /// Its answer is being written.
    Writing,
    /// Answered: waiting for the client to close first, until then.
    Closing,
}

struct Probe {
    stream: TcpStream,
    /// Tells the events of this connection from those of an earlier one
    /// in the same slot.
    token: u64,
    accepted: Instant,
    /// Until when the current phase may last.
    deadline: Instant,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    phase: ProbePhase,
}

struct Loop {
    listener: TcpListener,
    epoll: Epoll,
    app: Arc<App>,
    slots: Vec<Option<Probe>>,
    next_token: u64,
    /// Fds to give up when an accept finds none free (see the top comment).
    spares: Vec<TcpListener>,
    /// When to try an accept again that found no fd free.
    accept_retry: Option<Instant>,
}

impl Loop {
    fn new(listener: TcpListener, epoll: Epoll, app: Arc<App>) -> Loop {
        Loop {
            listener,
            epoll,
            app,
            slots: (0..CAPACITY).map(|_| None).collect(),
            next_token: 0,
            spares: Vec::new(),
            accept_retry: None,
        }
    }

    fn run(mut self) {
        let mut ready = Vec::new();
        loop {
            self.refill_spares();
            let timeout = self.next_due().map(|due| due.saturating_duration_since(Instant::now()));
            if let Err(e) = self.epoll.wait_for(&mut ready, timeout) {
                log::error!("the probe listener cannot wait for events: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            for event in &ready {
                if event.token == LISTENER {
                    self.accept();
                } else if let Some(slot) = self.slot_of(event.token) {
                    self.serve(slot);
                }
            }
            let now = Instant::now();
            self.tick(now);
            if self.accept_retry.is_some_and(|at| now >= at) {
                self.accept_retry = None;
                self.accept();
            }
            let unwritten = self
                .slots
                .iter()
                .flatten()
                .filter(|p| matches!(p.phase, ProbePhase::Held { .. } | ProbePhase::Writing))
                .count();
            UNWRITTEN.store(unwritten, Ordering::SeqCst);
        }
    }

    /// Takes spare fds back while open connections and spares leave room
    /// within `CAPACITY`; an fd that cannot be had now is tried again on
    /// the next turn of the loop.
    fn refill_spares(&mut self) {
        let open = self.slots.iter().flatten().count();
        while self.spares.len() < SPARES && open + self.spares.len() < CAPACITY {
            match self.listener.try_clone() {
                Ok(spare) => self.spares.push(spare),
                Err(_) => return,
            }
        }
    }

    /// The earliest time something is due: a deadline, a hold's end, or a
    /// look at a hold's release flag.
    fn next_due(&self) -> Option<Instant> {
        let now = Instant::now();
        self.slots
            .iter()
            .flatten()
            .map(|p| match &p.phase {
                ProbePhase::Held { until, release } => {
                    let tick = release.as_ref().map(|_| now + RELEASE_TICK);
                    tick.map_or(*until, |t| t.min(*until))
                }
                _ => p.deadline,
            })
            .min()
            .into_iter()
            .chain(self.accept_retry)
            .min()
    }

    fn slot_of(&self, token: u64) -> Option<usize> {
        self.slots
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.token == token))
    }

    /// Accepts every waiting connection (the listener is edge-triggered),
    /// making room by eviction when all slots are taken.
    fn accept(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if out_of_fds(&e) => {
                    // An fd of our own given up makes room for this one.
                    if self.spares.pop().is_some() {
                        continue;
                    }
                    // No spare (a `RLIMIT_NOFILE` too small for them and
                    // `CAPACITY` together): a connection of our own makes
                    // room, chosen as at `CAPACITY`. Before, slow heads on
                    // 10 connections under `--nofile=16` held every fd until
                    // their deadline and kept 4 of 12 probes out for 1 s.
                    if self.slots.iter().any(Option::is_some) {
                        let victim = self.victim();
                        self.slots[victim] = None;
                        continue;
                    }
                    if self.accept_retry.is_none() {
                        log::warn!(
                            "the probe listener cannot accept: {e}; trying again every {} ms",
                            ACCEPT_RETRY.as_millis()
                        );
                    }
                    self.accept_retry = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
                Err(e) => {
                    log::warn!("the probe listener cannot accept: {e}");
                    self.accept_retry = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            };
            let slot = match self.slots.iter().position(Option::is_none) {
                Some(free) => free,
                None => {
                    let victim = self.victim();
                    self.slots[victim] = None;
                    victim
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let token = self.next_token;
            self.next_token += 1;
            if self.epoll.add(stream.as_raw_fd(), token).is_err() {
                continue;
            }
            let now = Instant::now();
            self.slots[slot] = Some(Probe {
                stream,
                token,
                accepted: now,
                deadline: now + DEADLINE,
                input: Vec::new(),
                output: Vec::new(),
                written: 0,
                phase: ProbePhase::Reading,
            });
            // Its head may already be there: edge-triggered, the event for
            // it may have come before the registration.
            self.serve(slot);
        }
    }

    /// The slot to free for a new connection: one that is answered and
    /// closing, else the oldest whose head has not all come, else the
    /// oldest held or unwritten answer.
    fn victim(&self) -> usize {
        let rank = |p: &Probe| match p.phase {
            ProbePhase::Closing => 0,
            ProbePhase::Reading => 1,
            ProbePhase::Held { .. } | ProbePhase::Writing => 2,
        };
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| (rank(p), p.accepted, i)))
            .min()
            .map_or(0, |(_, _, i)| i)
    }

    /// Reads, answers and writes what the connection in `slot` allows now.
    fn serve(&mut self, slot: usize) {
        let Some(probe) = self.slots[slot].as_mut() else {
            return;
        };
        let open = match probe.phase {
            ProbePhase::Reading => read_head(probe).is_ok_and(|complete| {
                if complete {
                    answer(probe, &self.app);
                    // A held answer (a liveness hang) is written by `tick`
                    // when its hold ends or is released, not now: before,
                    // it was flushed here at once, and the probe port
                    // answered a hang's 500 in under a millisecond.
                    matches!(probe.phase, ProbePhase::Held { .. }) || probe.flush()
                } else {
                    true
                }
            }),
            ProbePhase::Held { .. } | ProbePhase::Closing => probe.client_open(),
            ProbePhase::Writing => probe.flush(),
        };
        if !open {
            self.slots[slot] = None;
        }
    }

    /// Ends holds that are due or released, and closes what is late.
    fn tick(&mut self, now: Instant) {
        for slot in 0..self.slots.len() {
            let Some(probe) = self.slots[slot].as_mut() else {
                continue;
            };
            let open = match &probe.phase {
                ProbePhase::Held { until, release } => {
                    let released = release.as_ref().is_some_and(|r| r.load(Ordering::SeqCst));
                    if now >= *until || released {
                        probe.phase = ProbePhase::Writing;
                        probe.deadline = now + DEADLINE;
                        probe.flush()
                    } else {
                        true
                    }
                }
                ProbePhase::Reading if now >= probe.deadline => {
                    let reply = Reply::json(408, &json!({"error": "the request head did not arrive in time"}));
                    probe.output = render(&reply, false);
                    probe.phase = ProbePhase::Writing;
                    probe.deadline = now + DEADLINE;
                    probe.flush()
                }
                _ => now < probe.deadline,
            };
            if !open {
                self.slots[slot] = None;
            }
        }
    }
}

impl Probe {
    /// Writes what it can of the answer; once all is written, shuts the
    /// write side and waits for the client to close. False when the
    /// connection is done with.
    fn flush(&mut self) -> bool {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return false,
                Ok(n) => {
                    self.written += n;
                    self.deadline = Instant::now() + DEADLINE;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        self.output = Vec::new();
        self.input = Vec::new();
        self.phase = ProbePhase::Closing;
        self.deadline = Instant::now() + LINGER;
        self.client_open()
    }

    /// Reads and drops whatever the client sends; false once it has closed
    /// (or failed).
    fn client_open(&mut self) -> bool {
        let mut buf = [0u8; 512];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
    }
}

/// Reads what has come of the head: `Ok(true)` once it is complete (or too
/// long: the answer says so), `Ok(false)` while more must come, `Err` when
/// the client closed or failed first.
fn read_head(probe: &mut Probe) -> Result<bool, ()> {
    let mut buf = [0u8; 1024];
    loop {
        if head_end(&probe.input).is_some() || probe.input.len() >= HEAD_BYTES {
            return Ok(true);
        }
        let room = (HEAD_BYTES - probe.input.len()).min(buf.len());
        match probe.stream.read(&mut buf[..room]) {
            Ok(0) => return Err(()),
            Ok(n) => probe.input.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(_) => return Err(()),
        }
    }
}

/// Where the head ends (after its blank line), if it has.
fn head_end(input: &[u8]) -> Option<usize> {
    let crlf = input.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = input.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    crlf.into_iter().chain(lf).min()
}

/// Renders the answer to the head read: the handler's, held if it says so.
fn answer(probe: &mut Probe, app: &App) {
    let started = Instant::now();
    let (reply, method, route, head_only) = match parse(&probe.input) {
        Err(reply) => (reply, Method::Other, None, false),
        Ok((method, target)) => {
            let line = RequestLine::new(method, &target);
            let route = Route::from_path(line.path).filter(|r| PATHS.contains(&r.path));
            let reply = match route {
                Some(_) => routes::dispatch(&line.with_method_name(&method_name(&probe.input)), app, started),
                None => Reply::not_found(line.path),
            };
            (reply, method, route, method == Method::Head)
        }
    };
    let hold = reply.hold.unwrap_or_default();
    let release = reply.released_by.clone();
    server::record(app, method, route, reply.status, started.elapsed() + hold);
    let mut output = render(&reply, head_only);
    if output.len() > OUTPUT_BYTES {
        log::error!("a probe answer of {} bytes is over {OUTPUT_BYTES}", output.len());
        output = render(
            &Reply::internal_error("the answer is too large for the probe port"),
            false,
        );
    }
    probe.output = output;
    let now = Instant::now();
    if hold.is_zero() {
        probe.phase = ProbePhase::Writing;
        probe.deadline = now + DEADLINE;
    } else {
        probe.phase = ProbePhase::Held {
            until: now + hold,
            release,
        };
        probe.deadline = now + hold + DEADLINE;
    }
}

/// The method as sent, for a 405's message.
fn method_name(input: &[u8]) -> String {
    let end = input.iter().position(|b| *b == b' ').unwrap_or(0).min(32);
    String::from_utf8_lossy(&input[..end]).into_owned()
}

/// The method and target of a head's request line; a 400 or 431 when it
/// is not one.
fn parse(input: &[u8]) -> Result<(Method, String), Reply> {
    let Some(end) = head_end(input) else {
        return Err(Reply::json(
            431,
            &json!({"error": format!("request head larger than {HEAD_BYTES} bytes")}),
        ));
    };
    let head = String::from_utf8_lossy(&input[..end]);
    let line = head.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad_line(line));
    };
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") || !target.starts_with(['/', 'h', 'H']) {
        return Err(bad_line(line));
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        _ => Method::Other,
    };
    Ok((method, target.to_string()))
}

fn bad_line(line: &str) -> Reply {
    Reply::json(
        400,
        &json!({"error": format!("malformed request line {:?}", crate::http::reply::shown(line))}),
    )
}

/// The answer's bytes: status line, headers, `Connection: close`, and the
/// body unless `head_only`.
fn render(reply: &Reply, head_only: bool) -> Vec<u8> {
    let reason = tiny_http::StatusCode(reply.status).default_reason_phrase();
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nCache-Control: no-store\r\n",
        reply.status, reply.content_type
    );
    for (name, value) in &reply.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        reply.body.len()
    ));
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(&reply.body);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_end_at_the_blank_line_either_way() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: x\n\n"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    #[test]
    fn request_lines_are_read_strictly() {
        let (m, t) = parse(b"HEAD /ready?x=1 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((m, t.as_str()), (Method::Head, "/ready?x=1"));
        assert_eq!(
            parse(b"GET http://h/health HTTP/1.0\r\n\r\n").unwrap().1,
            "http://h/health"
        );
        for bad in [
            &b"GET /health\r\n\r\n"[..],
            b"GET  /health HTTP/1.1\r\n\r\n",
            b"GET /health HTTP/2.0\r\n\r\n",
            b"GET * HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse(bad).unwrap_err().status, 400, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(&[b'a'; HEAD_BYTES]).unwrap_err().status, 431);
    }

    #[test]
    fn answers_close_and_head_gets_no_body() {
        let reply = Reply::ok(&json!({"status": "healthy"}));
        let full = String::from_utf8(render(&reply, false)).unwrap();
        assert!(
            full.starts_with("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"),
            "{full}"
        );
        assert!(
            full.contains("Content-Length: 21\r\nConnection: close\r\n\r\n{\"status\":\"healthy\"}\n"),
            "{full}"
        );
        let head = String::from_utf8(render(&reply, true)).unwrap();
        assert!(
            head.ends_with("Content-Length: 21\r\nConnection: close\r\n\r\n"),
            "{head}"
        );
    }
}
