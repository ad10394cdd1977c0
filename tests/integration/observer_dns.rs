//! `chaos-backend observe --url http://NAME/`: the binary's own resolver
//! (src/observer/resolve.rs) against a DNS server this test runs on
//! 127.0.0.1, with the resolv.conf and hosts file a pod would have
//! bind-mounted over /etc in a mount namespace of the binary's own.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use crate::harness::{Service, output_within, temp_dir, unshare, wrapped};
use crate::observer::{Run, observe_command};

/// A DNS server on 127.0.0.1, UDP and TCP on one port. It knows
/// `web.chaos.test` (a CNAME to `svc.chaos.test`, whose A is 127.0.0.1)
/// and `big.chaos.test` (truncated over UDP, its A over TCP); any other
/// name is NXDOMAIN. `asked` records each question as `NAME TYPE` (`tcp`
/// appended over TCP).
struct DnsServer {
    port: u16,
    asked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

/// The question of a query: its name and type.
fn question(q: &[u8]) -> Option<(String, u16)> {
    let (mut at, mut labels) = (12, Vec::new());
    loop {
        let len = *q.get(at)? as usize;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(at + 1..at + 1 + len)?).into_owned());
        at += 1 + len;
    }
    let qtype = u16::from_be_bytes([*q.get(at + 1)?, *q.get(at + 2)?]);
    Some((labels.join("."), qtype))
}

/// The answer to `q`; `udp` says whether it goes over UDP.
fn answer(q: &[u8], udp: bool) -> Option<Vec<u8>> {
    let (name, qtype) = question(q)?;
    let end = 12 + name.len() + 2 + 4;
    let mut r = q.get(..end)?.to_vec();
    r[2] = 0x80 | (q[2] & 0x01);
    r[3] = 0x80;
    let a_record = |owner: &[u8]| [owner, &[0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 127, 0, 0, 1]].concat();
    let answers: Vec<Vec<u8>> = match name.as_str() {
        "web.chaos.test" => {
            // CNAME svc.<chaos.test at offset 16>, then svc's A.
            let cname = [&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 30, 0, 6][..], b"\x03svc", &[0xc0, 16]].concat();
            let svc_at = (end + 12) as u8;
            let mut list = vec![cname];
            if qtype == 1 {
                list.push(a_record(&[0xc0, svc_at]));
            }
            list
        }
        "big.chaos.test" if udp => {
            r[2] |= 0x02;
            Vec::new()
        }
        "big.chaos.test" if qtype == 1 => vec![a_record(&[0xc0, 12])],
        "big.chaos.test" => Vec::new(),
        _ => {
            r[3] |= 3;
            Vec::new()
        }
    };
    r[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
    r.extend(answers.concat());
    Some(r)
}

impl DnsServer {
    fn start() -> DnsServer {
        let (udp, tcp) = (0..20)
            .find_map(|_| {
                let udp = UdpSocket::bind("127.0.0.1:0").ok()?;
                let tcp = TcpListener::bind(udp.local_addr().ok()?).ok()?;
                Some((udp, tcp))
            })
            .expect("a free port for UDP and TCP");
        let port = udp.local_addr().unwrap().port();
        udp.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let note = |asked: &Arc<Mutex<Vec<String>>>, q: &[u8], how: &str| {
            if let Some((name, qtype)) = question(q) {
                let mut list = asked.lock().unwrap_or_else(PoisonError::into_inner);
                list.push(format!("{name} {qtype}{how}"));
            }
        };
        let (u_asked, u_stop) = (Arc::clone(&asked), Arc::clone(&stop));
        let udp_thread = thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !u_stop.load(Ordering::SeqCst) {
                let Ok((n, from)) = udp.recv_from(&mut buf) else {
                    continue;
                };
                note(&u_asked, &buf[..n], "");
                if let Some(r) = answer(&buf[..n], true) {
                    let _ = udp.send_to(&r, from);
                }
            }
        });
        let (t_asked, t_stop) = (Arc::clone(&asked), Arc::clone(&stop));
        let tcp_thread = thread::spawn(move || {
            for stream in tcp.incoming() {
                if t_stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut len = [0u8; 2];
                if stream.read_exact(&mut len).is_err() {
                    continue;
                }
                let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                if stream.read_exact(&mut q).is_err() {
                    continue;
                }
                note(&t_asked, &q, " tcp");
                if let Some(r) = answer(&q, false) {
                    let _ = stream.write_all(&[&(r.len() as u16).to_be_bytes()[..], &r].concat());
                }
            }
        });
        DnsServer {
            port,
            asked,
            stop,
            threads: vec![udp_thread, tcp_thread],
        }
    }

    /// The questions asked since the last call.
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.asked.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), Duration::from_secs(1));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// `observe` with `args`, with `dir`'s resolv.conf and hosts bind-mounted
/// over /etc's in a mount namespace of its own.
fn observe_in(dir: &Path, args: &[&str]) -> Command {
    let mut mounts = unshare(&["--mount", "--", "sh", "-c"]);
    mounts
        .arg("mount --bind \"$0/resolv.conf\" /etc/resolv.conf && mount --bind \"$0/hosts\" /etc/hosts && exec \"$@\"")
        .arg(dir);
    wrapped(mounts, &observe_command(args))
}

#[test]
fn observer_resolves_names_by_hosts_then_search_list_then_dns_and_says_why_not() {
    let dns = DnsServer::start();
    let svc = Service::start(&[("HOSTNAME", "dns-pod")]);
    let dir = temp_dir("observer-dns");
    std::fs::write(
        dir.join("resolv.conf"),
        format!(
            "nameserver [127.0.0.1]:{}\nsearch ns.test chaos.test\noptions ndots:5 timeout:2 attempts:1\n",
            dns.port
        ),
    )
    .unwrap();
    std::fs::write(dir.join("hosts"), "127.0.0.1 localhost\n127.0.0.1 pinned.example\n").unwrap();
    let port = svc.addr.port().to_string();
    let run_ok = |host: &str| {
        let url = format!("http://{host}:{port}/");
        let cmd = observe_in(&dir, &["--url", &url, "--rate", "20", "--duration", "0.5"]);
        let run = Run::from_output(output_within(cmd, Duration::from_secs(60)));
        assert_eq!(run.output.status.code(), Some(0), "{host}: {}", run.describe());
        assert_eq!(run.summary["ok"], 10, "{host}: {}", run.describe());
        assert_eq!(run.summary["pods"]["dns-pod"]["requests"], 10, "{host}");
    };

    // Fewer dots than ndots: each search suffix first, A and AAAA; a CNAME
    // in the answer is followed to the address.
    run_ok("web");
    let mut asked = dns.take();
    asked.sort();
    assert_eq!(
        asked,
        [
            "web.chaos.test 1",
            "web.chaos.test 28",
            "web.ns.test 1",
            "web.ns.test 28"
        ]
    );

    // A final dot: as is only. A truncated answer is asked again over TCP.
    run_ok("big.chaos.test.");
    let mut asked = dns.take();
    asked.sort();
    assert_eq!(
        asked,
        [
            "big.chaos.test 1",
            "big.chaos.test 1 tcp",
            "big.chaos.test 28",
            "big.chaos.test 28 tcp"
        ]
    );

    // /etc/hosts first: no DNS question at all.
    run_ok("pinned.example");
    assert_eq!(dns.take(), Vec::<String>::new());

    // A name the server does not know: exit 2, naming the host, every name
    // tried and the server.
    let url = format!("http://nothere:{port}/");
    let out = output_within(observe_in(&dir, &["--url", &url]), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let expected = format!(
        "chaos-backend observe: cannot resolve the host \"nothere\" of --url: nothere.ns.test: no such name (NXDOMAIN); \
         nothere.chaos.test: no such name (NXDOMAIN); nothere: no such name (NXDOMAIN) (asked 127.0.0.1:{})",
        dns.port
    );
    assert_eq!(stderr.trim_end(), expected);
    let _ = std::fs::remove_dir_all(&dir);
}
