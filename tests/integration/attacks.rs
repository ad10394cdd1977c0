//! The clients of the attacks on the probes, shared by the integration tests
//! (`probes.rs`) and the benchmark (`examples/bench.rs`, which includes
//! this file with `#[path]`): connections that pipeline, that read
//! slowly through a small window, or that connect and reset at once. Every
//! loop ends when its stop flag is set.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A client's connections, run until stopped: those that the server
/// closes are opened again.
pub struct Clients {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Answers (status lines) the clients read, and connections opened.
    answers: Arc<AtomicU64>,
    opened: Arc<AtomicU64>,
}

/// One client connection of an attack.
struct Conn {
    stream: TcpStream,
    /// Requests sent and not yet answered.
    in_flight: usize,
    /// The last bytes read, to find a status line cut by a read.
    tail: Vec<u8>,
    last_read: Instant,
}

/// How the clients of one attack behave.
#[derive(Clone, Copy)]
pub struct Attack {
    /// Requests sent in turn, each a full request.
    pub requests: &'static [&'static [u8]],
    /// Requests kept in flight on each connection.
    pub depth: usize,
    /// The receive buffer to ask for (a small window), if any.
    pub receive_buffer: Option<i32>,
    /// Read at most this many bytes at most this often (a slow reader),
    /// else all there is, at once.
    pub slow_read: Option<(usize, Duration)>,
}

impl Clients {
    pub fn start(addr: SocketAddr, connections: usize, attack: Attack) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(AtomicU64::new(0));
        let opened = Arc::new(AtomicU64::new(0));
        let per_thread = 200;
        let threads = (0..connections.div_ceil(per_thread))
            .map(|t| {
                let n = per_thread.min(connections - t * per_thread);
                let (stop, answers, opened) = (Arc::clone(&stop), Arc::clone(&answers), Arc::clone(&opened));
                thread::spawn(move || run_clients(addr, n, attack, &stop, &answers, &opened))
            })
            .collect();
        Clients {
            stop,
            threads,
            answers,
            opened,
        }
    }

    /// Stops the clients; the answers they read and the connections they
    /// opened.
    pub fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        (self.answers.load(Ordering::SeqCst), self.opened.load(Ordering::SeqCst))
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn set_receive_buffer(stream: &TcpStream, bytes: i32) {
    // SAFETY: setsockopt on a socket we own, with a c_int option value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const bytes).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        );
    }
}

fn open(addr: SocketAddr, attack: &Attack, sent: &mut usize) -> Option<Conn> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    if let Some(bytes) = attack.receive_buffer {
        set_receive_buffer(&stream, bytes);
    }
    let mut conn = Conn {
        stream,
        in_flight: 0,
        tail: Vec::new(),
        last_read: Instant::now(),
    };
    for _ in 0..attack.depth {
        if conn
            .stream
            .write_all(attack.requests[*sent % attack.requests.len()])
            .is_err()
        {
            break;
        }
        *sent += 1;
        conn.in_flight += 1;
    }
    conn.stream.set_nonblocking(true).ok()?;
    Some(conn)
}

/// Runs `n` connections of `attack` against `addr` until `stop`.
fn run_clients(addr: SocketAddr, n: usize, attack: Attack, stop: &AtomicBool, answers: &AtomicU64, opened: &AtomicU64) {
    let mut sent = 0usize;
    let mut conns: Vec<Option<Conn>> = (0..n).map(|_| None).collect();
    let mut buf = vec![0u8; 64 << 10];
    while !stop.load(Ordering::SeqCst) {
        let mut busy = false;
        for slot in conns.iter_mut() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let Some(conn) = slot else {
                *slot = open(addr, &attack, &mut sent);
                opened.fetch_add(u64::from(slot.is_some()), Ordering::Relaxed);
                busy = true;
                continue;
            };
            let want = match attack.slow_read {
                Some((bytes, every)) if conn.last_read.elapsed() >= every => bytes,
                Some(_) => continue,
                None => buf.len(),
            };
            match conn.stream.read(&mut buf[..want]) {
                Ok(0) => *slot = None,
                Ok(got) => {
                    busy = true;
                    conn.last_read = Instant::now();
                    let mut seen = std::mem::take(&mut conn.tail);
                    seen.extend_from_slice(&buf[..got]);
                    let done = seen.windows(9).filter(|w| *w == b"HTTP/1.1 ").count();
                    conn.tail = seen[seen.len().saturating_sub(8)..].to_vec();
                    answers.fetch_add(done as u64, Ordering::Relaxed);
                    conn.in_flight = conn.in_flight.saturating_sub(done);
                    while conn.in_flight < attack.depth {
                        let rq = attack.requests[sent % attack.requests.len()];
                        match conn.stream.write(rq) {
                            Ok(n) if n == rq.len() => {
                                sent += 1;
                                conn.in_flight += 1;
                            }
                            _ => break,
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => *slot = None,
            }
        }
        if !busy {
            thread::sleep(Duration::from_millis(2));
        }
    }
}

pub fn pipelined(requests: &'static [&'static [u8]]) -> Attack {
    Attack {
        requests,
        depth: 8,
        receive_buffer: None,
        slow_read: None,
    }
}

pub const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n";
pub const HEAD_OPENAPI: &[u8] = b"HEAD /openapi.json HTTP/1.1\r\nHost: a\r\n\r\n";
pub const OPENAPI: &[u8] = b"GET /openapi.json HTTP/1.1\r\nHost: a\r\n\r\n";

/// Opens and resets connections in a loop from `threads` threads: each
/// connects, then closes with `SO_LINGER` 0 (a reset), at once.
pub fn churn(addr: SocketAddr, threads: usize, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<u64>> {
    (0..threads)
        .map(|_| {
            let stop = Arc::clone(stop);
            thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                        let linger = libc::linger {
                            l_onoff: 1,
                            l_linger: 0,
                        };
                        // SAFETY: setsockopt on a socket we own, with a linger struct.
                        unsafe {
                            libc::setsockopt(
                                s.as_raw_fd(),
                                libc::SOL_SOCKET,
                                libc::SO_LINGER,
                                (&raw const linger).cast(),
                                std::mem::size_of::<libc::linger>() as libc::socklen_t,
                            );
                        }
                        n += 1;
                    }
                }
                n
            })
        })
        .collect()
}

/// Pipelines `GET /openapi.json` with a 2 KiB receive window, reading 4 KiB
/// every 4 s (which beats the write timeout): attack 2.
pub fn slow_readers() -> Attack {
    Attack {
        requests: &[OPENAPI],
        depth: 8,
        receive_buffer: Some(2048),
        slow_read: Some((4096, Duration::from_secs(4))),
    }
}
