//! The event loop: one thread, non-blocking sockets under epoll, and a
//! timerfd set to whatever comes next (a request's due time, the end of a
//! second, a deadline). Nothing waits on the target, so requests leave on
//! time and each second's line is written on time even while every
//! connection is stalled; a thread per request would need hundreds of
//! threads (and their stacks) at 500 requests a second against a stalled
//! target.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::answer::{self, MAX_BODY, Progress};
use super::gaps::DueOrder;
use super::options::Options;
use super::tally::{Class, Object, Pods, RequestEnd, Second, Totals, errors_json, round3};
use crate::os::poll::{self as sys, ERR_OR_HUP, Epoll, OUT, Ready, Signals, Timer};

const TIMER: u64 = u64::MAX;
const SIGNALS: u64 = u64::MAX - 1;
/// After a whole answer on a connection asked to close, how long to wait for
/// the peer to close first (so that TIME_WAIT, and its local port, stays on
/// the server's side) before closing anyway.
const DRAIN: Duration = Duration::from_secs(1);
/// Idle connections kept for `--keepalive`; more are closed.
const MAX_IDLE: usize = 64;
/// Bytes read for one answer before it is called malformed.
const MAX_ANSWER: usize = 16 * 1024 + MAX_BODY + 64;

/// Why the run ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RunEnd {
    /// `--duration` passed and every request ended.
    Duration,
    /// SIGTERM or SIGINT.
    Signal(&'static str),
}

impl RunEnd {
    fn name(self) -> &'static str {
        match self {
            RunEnd::Duration => "duration",
            RunEnd::Signal(s) => s,
        }
    }
}

enum RequestPhase {
    Connecting,
    Writing(usize),
    Reading,
    /// Answered; waiting for the peer's close.
    Draining,
    /// Answered; kept for the next request (`--keepalive`).
    Idle,
}

struct Conn {
    stream: TcpStream,
    /// Tells this connection from an earlier one in the same slot.
    serial: u32,
    phase: RequestPhase,
    /// The request it carries, while it carries one.
    seq: Option<u64>,
    /// The address it was opened to (an index in `addrs`), and how many
    /// addresses this request has tried so far.
    addr: usize,
    tries: usize,
    /// Kept from an earlier request (`--keepalive`).
    reused: bool,
    buf: Vec<u8>,
    eof: bool,
}

pub struct Observer<'a> {
    options: &'a Options,
    request: Vec<u8>,
    addrs: &'a [SocketAddr],
    next_addr: usize,
    epoll: Epoll,
    timer: Timer,
    signals: Signals,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    serial: u32,
    idle: Vec<usize>,
    /// Requests sent again on a new connection after a kept one closed.
    retried: u64,
    /// (due + timeout, slot, serial, seq) in due order.
    deadlines: VecDeque<(Instant, usize, u32, u64)>,
    /// (close by, slot, serial) in the order the answers ended.
    draining: VecDeque<(Instant, usize, u32)>,
    start: Instant,
    start_unix_ms: u64,
    /// Requests to send; `None` until a signal.
    total: Option<u64>,
    next_seq: u64,
    in_flight: usize,
    second: Second,
    next_tick: u64,
    totals: Totals,
    due_order: DueOrder,
    pods: Pods,
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

/// The class of a failed connect.
fn connect_class(e: &io::Error) -> Class {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN | libc::ENETDOWN) => {
            Class::Refused
        }
        Some(libc::ETIMEDOUT) => Class::Timeout,
        Some(libc::ECONNRESET | libc::ECONNABORTED | libc::EPIPE) => Class::Reset,
        Some(libc::EMFILE | libc::ENFILE | libc::EADDRNOTAVAIL | libc::ENOBUFS | libc::ENOMEM) => Class::Local,
        _ => Class::Refused,
    }
}

impl<'a> Observer<'a> {
    pub fn new(options: &'a Options, addrs: &'a [SocketAddr]) -> io::Result<Observer<'a>> {
        sys::raise_descriptor_limit();
        let epoll = Epoll::new()?;
        let timer = Timer::new()?;
        let signals = Signals::new()?;
        epoll.add(timer.as_raw_fd(), TIMER)?;
        epoll.add(signals.as_raw_fd(), SIGNALS)?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: chaos-backend-observe/{}\r\nAccept: application/json\r\nConnection: {}\r\n\r\n",
            options.target.path,
            options.target.host_header(),
            env!("CARGO_PKG_VERSION"),
            if options.keepalive { "keep-alive" } else { "close" }
        )
        .into_bytes();
        let total = options.duration.map(|d| (d.as_secs_f64() * options.rate).ceil() as u64);
        Ok(Observer {
            options,
            request,
            addrs,
            next_addr: 0,
            epoll,
            timer,
            signals,
            conns: Vec::new(),
            free: Vec::new(),
            serial: 0,
            idle: Vec::new(),
            retried: 0,
            deadlines: VecDeque::new(),
            draining: VecDeque::new(),
            start: Instant::now(),
            start_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            total,
            next_seq: 0,
            in_flight: 0,
            second: Second::default(),
            next_tick: 1,
            totals: Totals::default(),
            due_order: DueOrder::new(options.rate),
            pods: Pods::default(),
        })
    }

    fn due(&self, seq: u64) -> Instant {
        self.start + Duration::from_secs_f64(seq as f64 / self.options.rate)
    }

    fn sending(&self) -> bool {
        self.total.is_none_or(|t| self.next_seq < t)
    }

    /// Runs until `--duration` has passed and every request has ended, or
    /// until a signal; writes a JSON line a second to `out`.
    pub fn run(&mut self, out: &mut dyn Write) -> io::Result<RunEnd> {
        self.start = Instant::now();
        let mut ready = Vec::new();
        loop {
            self.tick(out)?;
            self.expire(Instant::now());
            while self.sending() && self.due(self.next_seq) <= Instant::now() {
                self.send();
            }
            if !self.sending() && self.in_flight == 0 {
                return self.last_line(out).map(|()| RunEnd::Duration);
            }
            let now = Instant::now();
            self.timer.set(self.next_wake(now).saturating_duration_since(now))?;
            self.epoll.wait(&mut ready)?;
            self.tick(out)?;
            for r in &ready {
                match r.token {
                    TIMER => self.timer.clear(),
                    SIGNALS => {
                        if let Some(name) = self.signals.take() {
                            return self.last_line(out).map(|()| RunEnd::Signal(name));
                        }
                    }
                    token => self.on_ready(token, r),
                }
            }
        }
    }

    /// The earliest of: the next due time, the end of this second, the
    /// oldest deadline.
    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = self.start + Duration::from_secs(self.next_tick);
        if self.sending() {
            wake = wake.min(self.due(self.next_seq));
        }
        if let Some(&(deadline, ..)) = self.deadlines.front() {
            wake = wake.min(deadline);
        }
        if let Some(&(by, ..)) = self.draining.front() {
            wake = wake.min(by);
        }
        wake.max(now)
    }

    /// Writes the line of every second that has ended.
    fn tick(&mut self, out: &mut dyn Write) -> io::Result<()> {
        let now = Instant::now();
        while now >= self.start + Duration::from_secs(self.next_tick) {
            let line = self.second.line(self.next_tick as f64, &self.pods, self.in_flight);
            writeln!(out, "{line}")?;
            out.flush()?;
            self.next_tick += 1;
        }
        Ok(())
    }

    /// The line of the second under way, if anything happened in it: its
    /// `t` is fractional.
    fn last_line(&mut self, out: &mut dyn Write) -> io::Result<()> {
        if self.second.is_empty() {
            return Ok(());
        }
        let t = self.start.elapsed().as_secs_f64();
        let line = self.second.line(t, &self.pods, self.in_flight);
        writeln!(out, "{line}")?;
        out.flush()
    }

    fn send(&mut self) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let now = Instant::now();
        let late = micros(now.saturating_duration_since(self.due(seq)));
        self.second.sent(late);
        self.totals.sent(late);
        self.in_flight += 1;
        let deadline = self.due(seq) + self.options.timeout;
        if self.options.keepalive
            && let Some(slot) = self.idle.pop()
            && let Some(c) = self.conns[slot].as_mut()
        {
            c.seq = Some(seq);
            c.phase = RequestPhase::Writing(0);
            c.reused = true;
            c.buf.clear();
            self.deadlines.push_back((deadline, slot, c.serial, seq));
            return self.advance(slot, OUT);
        }
        let first = self.next_addr % self.addrs.len();
        self.next_addr = self.next_addr.wrapping_add(1);
        self.open(seq, first, 1, deadline, now);
    }

    /// Opens a connection to address `addr` for request `seq`, its `tries`th
    /// address. A refused connection goes on to the next address for the
    /// same request, as clients do (curl, Go's dialer, any getaddrinfo
    /// loop): a name with 127.0.0.1 and ::1 against a server on 0.0.0.0 is
    /// not half refused. Refused when every address refused.
    fn open(&mut self, seq: u64, mut addr: usize, mut tries: usize, deadline: Instant, now: Instant) {
        let stream = loop {
            match sys::connect(&self.addrs[addr]) {
                Ok(s) => break s,
                Err(e) => {
                    let class = connect_class(&e);
                    if class != Class::Refused || tries >= self.addrs.len() {
                        return self.record(seq, RequestEnd::Failed(class), now);
                    }
                    addr = (addr + 1) % self.addrs.len();
                    tries += 1;
                }
            }
        };
        self.serial = self.serial.wrapping_add(1);
        let conn = Conn {
            stream,
            serial: self.serial,
            phase: RequestPhase::Connecting,
            seq: Some(seq),
            addr,
            tries,
            reused: false,
            buf: Vec::new(),
            eof: false,
        };
        let fd = conn.stream.as_raw_fd();
        let slot = match self.free.pop() {
            Some(s) => {
                self.conns[s] = Some(conn);
                s
            }
            None => {
                self.conns.push(Some(conn));
                self.conns.len() - 1
            }
        };
        let token = slot as u64 | (u64::from(self.serial) << 32);
        if self.epoll.add(fd, token).is_err() {
            return self.fail(slot, Class::Local);
        }
        // In deadline order: a request that moved on to its next address
        // keeps its own, earlier than those of the requests sent since.
        let at = self.deadlines.partition_point(|d| d.0 <= deadline);
        self.deadlines.insert(at, (deadline, slot, self.serial, seq));
    }

    /// A connect that failed: on to the next address when refused and one
    /// is left untried, else the request fails with `class`.
    fn connect_failed(&mut self, slot: usize, class: Class) {
        let Some(c) = self.conns[slot].as_mut() else { return };
        if class != Class::Refused || c.tries >= self.addrs.len() {
            return self.fail(slot, class);
        }
        let Some(seq) = c.seq.take() else { return };
        let (next, tries) = ((c.addr + 1) % self.addrs.len(), c.tries + 1);
        self.close(slot);
        let deadline = self.due(seq) + self.options.timeout;
        self.open(seq, next, tries, deadline, Instant::now());
    }

    fn on_ready(&mut self, token: u64, ready: &Ready) {
        let slot = (token & 0xffff_ffff) as usize;
        let serial = (token >> 32) as u32;
        if self
            .conns
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.serial == serial)
        {
            self.advance(slot, ready.events);
        }
    }

    /// Moves a connection on as far as its socket allows.
    fn advance(&mut self, slot: usize, events: u32) {
        loop {
            let Some(c) = self.conns[slot].as_mut() else { return };
            match c.phase {
                RequestPhase::Connecting => {
                    if events & (OUT | ERR_OR_HUP) == 0 {
                        return;
                    }
                    match c.stream.take_error() {
                        Ok(None) if events & OUT != 0 => c.phase = RequestPhase::Writing(0),
                        Ok(None) => return self.fail(slot, Class::Reset),
                        Ok(Some(e)) | Err(e) => return self.connect_failed(slot, connect_class(&e)),
                    }
                }
                RequestPhase::Writing(off) => match (&c.stream).write(&self.request[off..]) {
                    Ok(0) => return self.fail(slot, Class::Reset),
                    Ok(n) if off + n == self.request.len() => c.phase = RequestPhase::Reading,
                    Ok(n) => c.phase = RequestPhase::Writing(off + n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return self.fail(slot, Class::Reset),
                },
                RequestPhase::Reading => return self.read_answer(slot),
                RequestPhase::Draining | RequestPhase::Idle => return self.read_to_close(slot),
            }
        }
    }

    fn read_answer(&mut self, slot: usize) {
        let Some(c) = self.conns[slot].as_mut() else { return };
        let mut chunk = [0u8; 4096];
        let mut broken = false;
        // More than any answer kept: what came so far decides (an error
        // status keeps its class; a 2xx that large is a bad body).
        let mut overflow = false;
        loop {
            match (&c.stream).read(&mut chunk) {
                Ok(0) => {
                    c.eof = true;
                    break;
                }
                Ok(n) => {
                    c.buf.extend_from_slice(&chunk[..n]);
                    if c.buf.len() > MAX_ANSWER {
                        overflow = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // A reset: what came before it may still be a whole answer.
                    broken = true;
                    break;
                }
            }
        }
        match answer::parse(&c.buf, c.eof || broken || overflow) {
            Progress::More | Progress::Interim(_) if overflow => self.fail(slot, Class::BadBody),
            Progress::More if broken => self.fail(slot, Class::Reset),
            Progress::More | Progress::Interim(_) => {}
            Progress::Closed => self.fail(slot, Class::Reset),
            Progress::Malformed => self.fail(slot, Class::BadBody),
            Progress::Answer(a) => {
                let outcome = answer::outcome(&a);
                let keep = a.reusable && !broken && !c.eof && !overflow;
                self.end(slot, outcome, keep);
            }
        }
    }

    /// An answered connection: close it once the peer has closed (or on
    /// any data, which no request asked for).
    fn read_to_close(&mut self, slot: usize) {
        let Some(c) = self.conns[slot].as_mut() else { return };
        let mut chunk = [0u8; 512];
        loop {
            match (&c.stream).read(&mut chunk) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => return self.close(slot),
            }
        }
    }

    fn fail(&mut self, slot: usize, class: Class) {
        // A kept connection the server closed as this request came (its
        // idle timeout) and nothing of an answer: sent once more on a new
        // connection, as HTTP clients do with an idempotent request on a
        // reused connection (Go's net/http, curl, browsers); users would
        // not see this error. A new connection that fails counts.
        if class == Class::Reset
            && let Some(c) = self.conns[slot].as_mut()
            && c.reused
            && c.buf.is_empty()
            && let Some(seq) = c.seq.take()
        {
            self.close(slot);
            self.retried += 1;
            let first = self.next_addr % self.addrs.len();
            self.next_addr = self.next_addr.wrapping_add(1);
            let deadline = self.due(seq) + self.options.timeout;
            return self.open(seq, first, 1, deadline, Instant::now());
        }
        self.end(slot, RequestEnd::Failed(class), false);
    }

    /// The request on `slot` has ended; the connection is kept, drained or
    /// closed.
    fn end(&mut self, slot: usize, outcome: RequestEnd, reusable: bool) {
        let now = Instant::now();
        let Some(c) = self.conns[slot].as_mut() else { return };
        let Some(seq) = c.seq.take() else { return };
        let answered = matches!(
            outcome,
            RequestEnd::Ok(_) | RequestEnd::Failed(Class::Http5xx | Class::HttpOther)
        );
        if answered && reusable && self.options.keepalive && self.idle.len() < MAX_IDLE {
            c.phase = RequestPhase::Idle;
            c.buf.clear();
            self.idle.push(slot);
        } else if answered && !c.eof {
            c.phase = RequestPhase::Draining;
            self.draining.push_back((now + DRAIN, slot, c.serial));
        } else {
            self.close(slot);
        }
        self.record(seq, outcome, now);
    }

    fn close(&mut self, slot: usize) {
        if self.conns[slot].take().is_some() {
            self.free.push(slot);
            self.idle.retain(|&s| s != slot);
        }
    }

    fn record(&mut self, seq: u64, outcome: RequestEnd, now: Instant) {
        self.in_flight -= 1;
        let latency = micros(now.saturating_duration_since(self.due(seq)));
        let (pod, class) = match outcome {
            RequestEnd::Ok(name) => (Some(self.pods.id(&name)), None),
            RequestEnd::Failed(c) => (None, Some(c)),
        };
        self.second.ended(pod, class, latency);
        self.totals.ended(pod, class, latency);
        self.due_order.ended(seq, if class.is_some() { None } else { pod });
    }

    /// Times out the requests past their deadline; closes drained
    /// connections whose peer never closed.
    fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, slot, serial, seq)) = self.deadlines.front() {
            let live = self.conns[slot]
                .as_ref()
                .is_some_and(|c| c.serial == serial && c.seq == Some(seq));
            if live && deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if live {
                self.fail(slot, Class::Timeout);
            }
        }
        while let Some(&(by, slot, serial)) = self.draining.front() {
            let live = self.conns[slot]
                .as_ref()
                .is_some_and(|c| c.serial == serial && matches!(c.phase, RequestPhase::Draining));
            if live && by > now {
                break;
            }
            self.draining.pop_front();
            if live {
                self.close(slot);
            }
        }
    }

    /// The summary line of the run, and its availability.
    pub fn summary(self, ended: RunEnd) -> (String, Option<f64>) {
        let o = self.options;
        let availability = self.totals.availability();
        // The window the requests were spread over: `--duration` (even when
        // the last answer came sooner), or up to the signal.
        let elapsed = self.start.elapsed().as_secs_f64();
        let sending_ended = match (ended, o.duration) {
            (RunEnd::Duration, Some(d)) => d.as_secs_f64(),
            (_, d) => d.map_or(elapsed, |d| d.as_secs_f64().min(elapsed)),
        };
        let (streak, gaps) = self.due_order.finish(sending_ended);
        let mut pods = Object::default();
        for id in 0..self.pods.len() {
            let (list, unlisted) = gaps.get(id).cloned().unwrap_or_default();
            let listed = list.iter().map(|g| {
                Object::default()
                    .put("start", json!(round3(g.start)))
                    .put("end", json!(g.end.map(round3)))
            });
            let mut entry = Object::default()
                .put("requests", json!(self.totals.served.get(id).copied().unwrap_or(0)))
                .put_objects("gaps", listed);
            if unlisted > 0 {
                entry = entry.put("gaps_not_listed", json!(unlisted));
            }
            pods = pods.put_object(self.pods.name(id), entry);
        }
        let summary = Object::default()
            .put("requests", json!(self.totals.sent))
            .put("ok", json!(self.totals.ok))
            .put_object("errors", errors_json(&self.totals.errors))
            .put("unfinished", json!(self.in_flight))
            .put("retried", json!(self.retried))
            .put("availability", json!(availability.map(round3)))
            .put("longest_error_streak_s", json!(round3(streak)));
        let summary = self
            .totals
            .latency_fields(summary)
            .put_object("pods", pods)
            .put("url", json!(o.url))
            .put("rate", json!(o.rate))
            .put("keepalive", json!(o.keepalive))
            .put("timeout_s", json!(o.timeout.as_secs_f64()))
            .put("slo", json!(o.slo))
            .put(
                "slo_met",
                json!(o.slo.map(|slo| availability.is_some_and(|a| a >= slo))),
            )
            .put("ended_by", json!(ended.name()))
            .put("start_unix_ms", json!(self.start_unix_ms))
            .put("duration_s", json!(round3(self.start.elapsed().as_secs_f64())))
            .put("max_rss_mb", json!(round3(sys::peak_rss_kib() as f64 / 1024.0)));
        let line = Object::default().put_object("summary", summary).finish();
        (line, availability)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observer::options::{Command, parse};
    use std::net::TcpListener;

    /// A loopback server that answers every request `{"pod":"only"}` and
    /// closes; its address.
    fn answering() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && matches!(s.read(&mut byte), Ok(1)) {
                    head.push(byte[0]);
                }
                let body = "{\"pod\":\"only\"}";
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        addr
    }

    fn observe(addrs: &[SocketAddr]) -> serde_json::Value {
        observe_with(addrs, &[])
    }

    fn observe_with(addrs: &[SocketAddr], more: &[&str]) -> serde_json::Value {
        let url = format!("http://{}/", addrs[0]);
        let args: Vec<String> = ["--url", &url, "--rate", "20", "--duration", "1", "--timeout", "1"]
            .iter()
            .chain(more)
            .map(|s| s.to_string())
            .collect();
        let Ok(Command::Run(options)) = parse(&args) else {
            panic!("options")
        };
        let mut observer = Observer::new(&options, addrs).unwrap();
        let mut out = Vec::new();
        let ended = observer.run(&mut out).unwrap();
        let (line, _) = observer.summary(ended);
        serde_json::from_str::<serde_json::Value>(&line).unwrap()["summary"].clone()
    }

    /// A keep-alive server that answers the first request on each
    /// connection and closes it when the next one comes, as a server whose
    /// idle timeout fires just then does; its address.
    fn closing_on_the_second_request() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    for answered in 0.. {
                        let mut head = Vec::new();
                        let mut byte = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") && matches!(s.read(&mut byte), Ok(1)) {
                            head.push(byte[0]);
                        }
                        if answered > 0 || !head.ends_with(b"\r\n\r\n") {
                            return;
                        }
                        let body = "{\"pod\":\"only\"}";
                        let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn a_kept_connection_closed_as_a_request_came_is_retried_once_on_a_new_one() {
        // Counted as a reset before: every second request of a --keepalive
        // run against this server, where HTTP clients retry and users see
        // nothing.
        let s = observe_with(&[closing_on_the_second_request()], &["--keepalive"]);
        assert_eq!((s["requests"].as_u64(), s["ok"].as_u64()), (Some(20), Some(20)), "{s}");
        assert_eq!(s["errors"]["reset"], 0, "{s}");
        assert!(s["retried"].as_u64().unwrap() >= 5, "{s}");
        // Without --keepalive nothing is reused, so nothing is retried.
        let s = observe(&[closing_on_the_second_request()]);
        assert_eq!((s["ok"].as_u64(), s["retried"].as_u64()), (Some(20), Some(0)), "{s}");
    }

    #[test]
    fn a_refused_address_moves_the_request_on_to_the_next_one() {
        // As in a pod's /etc/hosts, localhost is 127.0.0.1 and ::1, and a
        // server on 0.0.0.0 listens on one of them only: clients (curl, Go)
        // fall back to the next address, so users see no error. Taken in
        // turn without that, half the requests were counted refused.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let live = answering();
        let s = observe(&[closed, live]);
        assert_eq!((s["requests"].as_u64(), s["ok"].as_u64()), (Some(20), Some(20)), "{s}");
        assert_eq!(s["errors"]["refused"], 0, "{s}");
        let s = observe(&[live, closed]);
        assert_eq!(s["ok"], 20, "{s}");
        // Refused only when every address refuses.
        let other = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let s = observe(&[closed, other]);
        assert_eq!(
            (s["ok"].as_u64(), s["errors"]["refused"].as_u64()),
            (Some(0), Some(20)),
            "{s}"
        );
    }
}
