//! A host name to addresses, as glibc's `getaddrinfo` finds them in a
//! Kubernetes pod (`hosts: files dns`), without glibc's resolver: a static
//! `getaddrinfo` pulls in NSS, `dlopen`, iconv and locales, about 64 KB of
//! the compressed image for one lookup at the observer's start.
//!
//! An IP literal is itself; then `/etc/hosts`; then DNS as `/etc/resolv.conf`
//! asks: up to 3 `nameserver`s in order, the `search` list and `options
//! ndots:N timeout:N attempts:N` with glibc's defaults and bounds. A name
//! with fewer dots than `ndots` is tried with each search suffix first, then
//! as is; with at least `ndots` dots (or a final dot) as is first. Each
//! candidate is asked for A and AAAA over UDP (both queries on one socket,
//! random ids; an answer with another id or question is ignored), over TCP
//! when the answer is truncated. NXDOMAIN or no address moves on to the next
//! candidate, SERVFAIL or silence to the next server; no server answering
//! within `attempts` rounds of `timeout` each ends the lookup, as in glibc.
//! Not done: `RES_OPTIONS`/`LOCALDOMAIN`, `rotate`, `single-request`, EDNS,
//! gai.conf sorting (A addresses come before AAAA ones).
//!
//! One extension for tests: a `nameserver [ADDRESS]:PORT` line (OpenBSD's
//! syntax, which glibc ignores as not an address) asks that port.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

const RESOLV_CONF: &str = "/etc/resolv.conf";
const HOSTS: &str = "/etc/hosts";
const A: u16 = 1;
const CNAME: u16 = 5;
const AAAA: u16 = 28;
const IN: u16 = 1;
/// Longest CNAME chain followed within one answer.
const MAX_CHAIN: usize = 16;

/// What `/etc/resolv.conf` asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Conf {
    pub servers: Vec<SocketAddr>,
    pub search: Vec<String>,
    pub ndots: usize,
    pub timeout: Duration,
    pub attempts: u32,
}

impl Conf {
    /// glibc's reading: the last `search` or `domain` line wins, unknown
    /// lines and options are skipped, bounds as glibc's (ndots 15, timeout
    /// 30 s, attempts 5), and 127.0.0.1 when no server is named.
    pub fn parse(text: &str) -> Conf {
        let mut conf = Conf {
            servers: Vec::new(),
            search: Vec::new(),
            ndots: 1,
            timeout: Duration::from_secs(5),
            attempts: 2,
        };
        let domains = |words: std::str::SplitWhitespace| -> Vec<String> {
            words
                .map(|d| d.trim_end_matches('.').to_string())
                .filter(|d| !d.is_empty())
                .collect()
        };
        for line in text.lines() {
            let mut words = line.split(['#', ';']).next().unwrap_or("").split_whitespace();
            match words.next() {
                Some("nameserver") if conf.servers.len() < 3 => {
                    conf.servers.extend(words.next().and_then(server));
                }
                Some("domain") => conf.search = domains(words).into_iter().take(1).collect(),
                Some("search") => conf.search = domains(words),
                Some("options") => {
                    for option in words {
                        let number = |v: &str, max: u64| v.parse::<u64>().ok().map(|n| n.min(max));
                        match option.split_once(':') {
                            Some(("ndots", v)) => conf.ndots = number(v, 15).map_or(conf.ndots, |n| n as usize),
                            Some(("timeout", v)) => {
                                conf.timeout = number(v, 30).map_or(conf.timeout, |n| Duration::from_secs(n.max(1)))
                            }
                            Some(("attempts", v)) => {
                                conf.attempts = number(v, 5).map_or(conf.attempts, |n| n.max(1) as u32)
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if conf.servers.is_empty() {
            conf.servers.push(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 53));
        }
        conf
    }
}

/// A `nameserver` value: an address (an IPv6 scope is dropped), or
/// `[ADDRESS]:PORT`.
fn server(word: &str) -> Option<SocketAddr> {
    if let Some((ip, port)) = word.strip_prefix('[').and_then(|w| w.split_once("]:")) {
        return Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?));
    }
    let ip = word.split('%').next()?.parse().ok()?;
    Some(SocketAddr::new(ip, 53))
}

/// The names to ask for, in order (see the module's comment).
pub fn candidates(name: &str, conf: &Conf) -> Vec<String> {
    if let Some(absolute) = name.strip_suffix('.') {
        return vec![absolute.to_string()];
    }
    let searched = conf.search.iter().map(|domain| format!("{name}.{domain}"));
    let as_is = std::iter::once(name.to_string());
    if name.matches('.').count() >= conf.ndots {
        as_is.chain(searched).collect()
    } else {
        searched.chain(as_is).collect()
    }
}

/// The addresses `/etc/hosts` (its text) gives `name`, in file order.
pub fn in_hosts(text: &str, name: &str) -> Vec<IpAddr> {
    let mut found = Vec::new();
    for line in text.lines() {
        let mut words = line.split('#').next().unwrap_or("").split_whitespace();
        let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) else {
            continue;
        };
        if words.any(|w| w.trim_end_matches('.').eq_ignore_ascii_case(name)) && !found.contains(&ip) {
            found.push(ip);
        }
    }
    found
}

/// A query for `name`'s records of `qtype` (recursion desired); `None`
/// when `name` is not a valid DNS name (an empty label, a label over 63
/// bytes, over 253 bytes in all).
pub fn query(id: u16, name: &str, qtype: u16) -> Option<Vec<u8>> {
    if name.len() > 253 {
        return None;
    }
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&IN.to_be_bytes());
    Some(q)
}

/// What a server answered to one query.
#[derive(Debug, Clone, PartialEq)]
pub enum DnsReply {
    Addresses(Vec<IpAddr>),
    NxDomain,
    /// The name exists (or the chain ends) without an address of the type.
    NoData,
    /// The answer did not fit in UDP: ask again over TCP.
    Truncated,
    /// Another response code (2 SERVFAIL, 5 REFUSED ...): ask the next server.
    Failed(u8),
}

/// The reply in `msg` to the query `id` for `name`/`qtype`; `None` when
/// `msg` is not that reply (another id, not a response, another question,
/// malformed), which the caller ignores as glibc does. CNAMEs are followed
/// within the answer section.
pub fn parse(msg: &[u8], id: u16, name: &str, qtype: u16) -> Option<DnsReply> {
    let word = |at: usize| msg.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    if word(0)? != id || msg[2] & 0x80 == 0 || word(4)? != 1 {
        return None;
    }
    let (truncated, rcode, answers) = (msg[2] & 0x02 != 0, msg[3] & 0x0f, word(6)?);
    let (asked, mut at) = read_name(msg, 12)?;
    if !asked.eq_ignore_ascii_case(name) || word(at)? != qtype || word(at + 2)? != IN {
        return None;
    }
    at += 4;
    if truncated {
        return Some(DnsReply::Truncated);
    }
    match rcode {
        0 => {}
        3 => return Some(DnsReply::NxDomain),
        other => return Some(DnsReply::Failed(other)),
    }
    // (owner, type, offset of the data, data) of each IN record.
    let mut records = Vec::new();
    for _ in 0..answers {
        let (owner, next) = read_name(msg, at)?;
        let (rtype, class, len) = (word(next)?, word(next + 2)?, word(next + 8)? as usize);
        let data = msg.get(next + 10..next + 10 + len)?;
        if class == IN {
            records.push((owner, rtype, next + 10, data));
        }
        at = next + 10 + len;
    }
    let mut current = name.to_string();
    for _ in 0..MAX_CHAIN {
        let owner = current.as_str();
        let owned = |t: u16| {
            records
                .iter()
                .filter(move |r| r.1 == t && r.0.eq_ignore_ascii_case(owner))
        };
        let found: Vec<IpAddr> = owned(qtype)
            .filter_map(|r| match r.3.len() {
                4 => Some(IpAddr::from(<[u8; 4]>::try_from(r.3).ok()?)),
                16 => Some(IpAddr::from(<[u8; 16]>::try_from(r.3).ok()?)),
                _ => None,
            })
            .collect();
        if !found.is_empty() {
            return Some(DnsReply::Addresses(found));
        }
        let Some(alias) = owned(CNAME).next() else { break };
        let target = read_name(msg, alias.2)?.0;
        current = target;
    }
    Some(DnsReply::NoData)
}

/// The name at `at` (following compression pointers) and the offset after
/// it where it was written.
fn read_name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let (mut name, mut end, mut jumps) = (String::new(), None, 0);
    loop {
        let len = *msg.get(at)? as usize;
        if len == 0 {
            return Some((name, end.unwrap_or(at + 1)));
        } else if len & 0xc0 == 0xc0 {
            jumps += 1;
            if jumps > 32 {
                return None;
            }
            end = end.or(Some(at + 2));
            at = (len & 0x3f) << 8 | *msg.get(at + 1)? as usize;
        } else if len < 64 {
            if !name.is_empty() {
                name.push('.');
            }
            name.extend(msg.get(at + 1..at + 1 + len)?.iter().map(|&b| b as char));
            if name.len() > 254 {
                return None;
            }
            at += 1 + len;
        } else {
            return None;
        }
    }
}

/// An id no other host can guess: std's hasher keys come from the kernel's
/// random numbers.
fn random_id() -> u16 {
    RandomState::new().build_hasher().finish() as u16
}

/// Asks `server` once for the A and AAAA records of `name`, within `wait`:
/// the replies that came, in that order.
fn exchange(server: SocketAddr, name: &str, wait: Duration) -> std::io::Result<[Option<DnsReply>; 2]> {
    let deadline = Instant::now() + wait;
    let local = match server {
        SocketAddr::V4(_) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
        SocketAddr::V6(_) => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0),
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(server)?;
    let types = [A, AAAA];
    let ids = [random_id(), random_id()];
    for (id, qtype) in ids.iter().zip(types) {
        socket.send(&query(*id, name, qtype).ok_or(ErrorKind::InvalidInput)?)?;
    }
    let mut replies = [None, None];
    let mut buf = [0u8; 4096];
    while replies.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        socket.set_read_timeout(Some(left))?;
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => return Err(e),
        };
        for i in 0..2 {
            if replies[i].is_none()
                && let Some(reply) = parse(&buf[..n], ids[i], name, types[i])
            {
                replies[i] = Some(match reply {
                    DnsReply::Truncated => over_tcp(server, name, types[i], deadline)?,
                    reply => reply,
                });
            }
        }
    }
    Ok(replies)
}

/// The query again over TCP (the answer was truncated), by `deadline`.
fn over_tcp(server: SocketAddr, name: &str, qtype: u16, deadline: Instant) -> std::io::Result<DnsReply> {
    let left = || {
        Some(deadline.saturating_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
            .ok_or(ErrorKind::TimedOut)
    };
    let mut stream = TcpStream::connect_timeout(&server, left()?)?;
    let id = random_id();
    let q = query(id, name, qtype).ok_or(ErrorKind::InvalidInput)?;
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    stream.set_write_timeout(Some(left()?))?;
    stream.write_all(&framed)?;
    let mut len = [0u8; 2];
    stream.set_read_timeout(Some(left()?))?;
    stream.read_exact(&mut len)?;
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut msg)?;
    match parse(&msg, id, name, qtype) {
        Some(DnsReply::Truncated) | None => Err(ErrorKind::InvalidData.into()),
        Some(reply) => Ok(reply),
    }
}

/// One candidate's outcome over every server and attempt.
enum Lookup {
    Found(Vec<IpAddr>),
    /// NXDOMAIN or no address: the next candidate.
    Missing(&'static str),
    /// The servers answered SERVFAIL: the next candidate, as glibc's
    /// search does (`res_query.c`: "try next search element"); why.
    ServerFailure(String),
    /// No server gave an answer; why, from the last server asked.
    Unanswered(String),
}

fn lookup(name: &str, conf: &Conf) -> Lookup {
    let mut why = String::new();
    // Whether the last server asked answered SERVFAIL.
    let mut server_failure = false;
    for _ in 0..conf.attempts {
        for &server in &conf.servers {
            match exchange(server, name, conf.timeout) {
                Ok([a, aaaa]) => {
                    let mut found = Vec::new();
                    for reply in [&a, &aaaa] {
                        if let Some(DnsReply::Addresses(ips)) = reply {
                            found.extend(ips);
                        }
                    }
                    match (a, aaaa) {
                        _ if !found.is_empty() => return Lookup::Found(found),
                        (Some(DnsReply::NxDomain), Some(_)) | (Some(_), Some(DnsReply::NxDomain)) => {
                            return Lookup::Missing("no such name (NXDOMAIN)");
                        }
                        (Some(DnsReply::NoData), Some(DnsReply::NoData)) => {
                            return Lookup::Missing("no A or AAAA record");
                        }
                        (Some(DnsReply::Failed(r)), _) | (_, Some(DnsReply::Failed(r))) => {
                            server_failure = r == 2;
                            why = format!("{server} answered with response code {r}")
                        }
                        _ => {
                            server_failure = false;
                            why = format!("{server} did not answer")
                        }
                    }
                }
                Err(e) => {
                    server_failure = false;
                    why = format!("{server}: {e}")
                }
            }
        }
    }
    if server_failure {
        Lookup::ServerFailure(why)
    } else {
        Lookup::Unanswered(why)
    }
}

/// The addresses of `host` with `port`, or why there are none (naming the
/// host, each name tried and the servers asked).
pub fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    resolve_with(host, port, Path::new(RESOLV_CONF), Path::new(HOSTS))
}

pub fn resolve_with(host: &str, port: u16, resolv_conf: &Path, hosts: &Path) -> Result<Vec<SocketAddr>, String> {
    let with_port = |ips: Vec<IpAddr>| Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect());
    if let Ok(ip) = host.parse::<IpAddr>() {
        return with_port(vec![ip]);
    }
    let fail = |why: String| format!("cannot resolve the host {host:?} of --url: {why}");
    let read = |path: &Path| match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(fail(format!("cannot read {}: {e}", path.display()))),
    };
    let found = in_hosts(&read(hosts)?, host.strip_suffix('.').unwrap_or(host));
    if !found.is_empty() {
        return with_port(found);
    }
    let conf = Conf::parse(&read(resolv_conf)?);
    let servers = conf
        .servers
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut tried = Vec::new();
    for name in candidates(host, &conf) {
        if query(0, &name, A).is_none() {
            tried.push(format!("{name}: not a valid DNS name"));
            continue;
        }
        match lookup(&name, &conf) {
            Lookup::Found(ips) => return with_port(ips),
            Lookup::Missing(why) => tried.push(format!("{name}: {why}")),
            Lookup::ServerFailure(why) => tried.push(format!("{name}: server failure (SERVFAIL: {why})")),
            Lookup::Unanswered(why) => {
                return Err(fail(format!(
                    "no answer for {name} from {servers} within {} s x {} attempts (last: {why})",
                    conf.timeout.as_secs(),
                    conf.attempts
                )));
            }
        }
    }
    Err(fail(format!("{} (asked {servers})", tried.join("; "))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply to `q` (a query from `query`): its question copied, `flags`
    /// ORed into the header, `rcode`, then `answers` given as raw records.
    fn reply(q: &[u8], flags: u8, rcode: u8, answers: &[Vec<u8>]) -> Vec<u8> {
        let mut r = q.to_vec();
        r[2] |= 0x80 | flags;
        r[3] = 0x80 | rcode;
        r[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
        for a in answers {
            r.extend_from_slice(a);
        }
        r
    }

    /// A record: `owner` as raw name bytes (labels or a pointer).
    fn record(owner: &[u8], rtype: u16, data: &[u8]) -> Vec<u8> {
        let mut r = owner.to_vec();
        r.extend_from_slice(&rtype.to_be_bytes());
        r.extend_from_slice(&IN.to_be_bytes());
        r.extend_from_slice(&[0, 0, 0, 30]);
        r.extend_from_slice(&(data.len() as u16).to_be_bytes());
        r.extend_from_slice(data);
        r
    }

    /// The question's name, as a pointer to offset 12.
    const QNAME: [u8; 2] = [0xc0, 12];

    #[test]
    fn a_query_is_one_question_with_recursion_desired() {
        let q = query(0xbeef, "web.ns.svc", AAAA).unwrap();
        assert_eq!(
            q,
            [
                &[0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0][..],
                b"\x03web\x02ns\x03svc\x00",
                &[0, 28, 0, 1]
            ]
            .concat()
        );
        for bad in ["a..b", ".a", &"x".repeat(64), &["abc"; 64].join(".")] {
            assert_eq!(query(1, bad, A), None, "{bad}");
        }
    }

    #[test]
    fn addresses_behind_compression_pointers_and_a_cname_chain() {
        let q = query(7, "web.ns.svc.cluster.local", A).unwrap();
        // web... CNAME alias.ns.svc.cluster.local (a label, then a pointer
        // to "ns.svc.cluster.local" in the question at 12 + 4); the alias
        // CNAME real.<same>; then A records of real, and a stray A of
        // another name that must not be taken.
        let alias_at = q.len() + 12;
        let alias = record(&QNAME, CNAME, &[b"\x05alias".as_slice(), &[0xc0, 16]].concat());
        let real_data = [b"\x04real".as_slice(), &[0xc0, 16]].concat();
        let real_owner = [0xc0 | (alias_at >> 8) as u8, alias_at as u8];
        let real = record(&real_owner, CNAME, &real_data);
        let real_at = q.len() + alias.len() + 12;
        let a1 = record(&[0xc0 | (real_at >> 8) as u8, real_at as u8], A, &[10, 0, 0, 1]);
        let stray = record(b"\x05other\x00", A, &[10, 9, 9, 9]);
        let a2 = record(&[0xc0 | (real_at >> 8) as u8, real_at as u8], A, &[10, 0, 0, 2]);
        let msg = reply(&q, 0, 0, &[alias, real, stray, a1, a2]);
        assert_eq!(
            parse(&msg, 7, "web.ns.svc.cluster.local", A),
            Some(DnsReply::Addresses(vec![[10, 0, 0, 1].into(), [10, 0, 0, 2].into()]))
        );
        // The chain's end without an address is no data.
        let msg = reply(&q, 0, 0, &[record(&QNAME, CNAME, b"\x07nowhere\x00")]);
        assert_eq!(parse(&msg, 7, "web.ns.svc.cluster.local", A), Some(DnsReply::NoData));
    }

    #[test]
    fn aaaa_answers_are_v6_and_rcodes_and_truncation_are_told_apart() {
        let q = query(9, "svc", AAAA).unwrap();
        let v6: Ipv6Addr = "fd00::5".parse().unwrap();
        let msg = reply(&q, 0, 0, &[record(&QNAME, AAAA, &v6.octets())]);
        assert_eq!(parse(&msg, 9, "SVC", AAAA), Some(DnsReply::Addresses(vec![v6.into()])));
        assert_eq!(parse(&reply(&q, 0, 3, &[]), 9, "svc", AAAA), Some(DnsReply::NxDomain));
        assert_eq!(parse(&reply(&q, 0, 2, &[]), 9, "svc", AAAA), Some(DnsReply::Failed(2)));
        assert_eq!(parse(&reply(&q, 0, 0, &[]), 9, "svc", AAAA), Some(DnsReply::NoData));
        assert_eq!(
            parse(&reply(&q, 0x02, 0, &[]), 9, "svc", AAAA),
            Some(DnsReply::Truncated)
        );
    }

    #[test]
    fn what_is_not_the_reply_to_the_query_is_ignored() {
        let q = query(9, "svc", A).unwrap();
        let good = reply(&q, 0, 0, &[record(&QNAME, A, &[1, 2, 3, 4])]);
        assert!(parse(&good, 9, "svc", A).is_some());
        assert_eq!(parse(&good, 10, "svc", A), None, "another id");
        assert_eq!(parse(&q, 9, "svc", A), None, "a query, not a response");
        assert_eq!(parse(&good, 9, "other", A), None, "another question");
        assert_eq!(parse(&good, 9, "svc", AAAA), None, "another type");
        assert_eq!(parse(&good[..good.len() - 1], 9, "svc", A), None, "cut short");
        let mut looped = good.clone();
        let at = q.len();
        looped[at..at + 2].copy_from_slice(&[0xc0 | (at >> 8) as u8, at as u8]);
        assert_eq!(parse(&looped, 9, "svc", A), None, "a pointer loop");
    }

    #[test]
    fn resolv_conf_as_glibc_reads_it() {
        let conf = Conf::parse(
            "# kubelet\nnameserver 10.96.0.10\nnameserver fe80::1%eth0\nnameserver [127.0.0.1]:5353\n\
             nameserver 10.0.0.4\nnameserver not-an-address\ndomain old.example\n\
             search ns.svc.cluster.local svc.cluster.local cluster.local.\n\
             options ndots:5 timeout:1 attempts:9 rotate\n",
        );
        assert_eq!(
            conf.servers,
            [
                "10.96.0.10:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap(),
                "127.0.0.1:5353".parse().unwrap()
            ]
        );
        assert_eq!(
            conf.search,
            ["ns.svc.cluster.local", "svc.cluster.local", "cluster.local"]
        );
        assert_eq!(
            (conf.ndots, conf.timeout, conf.attempts),
            (5, Duration::from_secs(1), 5)
        );
        let empty = Conf::parse("");
        assert_eq!(empty.servers, ["127.0.0.1:53".parse().unwrap()]);
        assert_eq!(
            (empty.ndots, empty.timeout, empty.attempts),
            (1, Duration::from_secs(5), 2)
        );
        assert!(empty.search.is_empty());
    }

    #[test]
    fn search_order_follows_ndots() {
        let conf = Conf::parse("search ns.svc.cluster.local svc.cluster.local\noptions ndots:5");
        assert_eq!(
            candidates("web", &conf),
            ["web.ns.svc.cluster.local", "web.svc.cluster.local", "web"]
        );
        assert_eq!(
            candidates("a.b.c.d", &conf),
            ["a.b.c.d.ns.svc.cluster.local", "a.b.c.d.svc.cluster.local", "a.b.c.d"]
        );
        assert_eq!(
            candidates("a.b.c.d.e.f", &conf),
            [
                "a.b.c.d.e.f",
                "a.b.c.d.e.f.ns.svc.cluster.local",
                "a.b.c.d.e.f.svc.cluster.local"
            ]
        );
        assert_eq!(candidates("web.other.", &conf), ["web.other"]);
        let default = Conf::parse("search example.org");
        assert_eq!(candidates("web", &default), ["web.example.org", "web"]);
        assert_eq!(candidates("web.ns", &default), ["web.ns", "web.ns.example.org"]);
    }

    #[test]
    fn hosts_lines_give_every_address_of_a_name() {
        let text =
            "127.0.0.1 localhost\n# 10.0.0.9 web\n10.0.0.1\tweb web.ns # pod\nfd00::1 WEB\n10.0.0.1 web\nbad web\n";
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(in_hosts(text, "web"), [IpAddr::from([10, 0, 0, 1]), v6]);
        assert_eq!(in_hosts(text, "web.ns"), [IpAddr::from([10, 0, 0, 1])]);
        assert!(in_hosts(text, "we").is_empty());
    }

    /// A DNS server on 127.0.0.1 for `queries` queries: to each it first
    /// sends a reply with a wrong id, then `answer(query)`.
    fn server_for(queries: usize, answer: fn(&[u8]) -> Vec<u8>) -> (SocketAddr, std::thread::JoinHandle<()>) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let addr = socket.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            for _ in 0..queries {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    return;
                };
                let mut wrong = answer(&buf[..n]);
                wrong[1] ^= 0xff;
                socket.send_to(&wrong, from).unwrap();
                socket.send_to(&answer(&buf[..n]), from).unwrap();
            }
        });
        (addr, thread)
    }

    fn files(resolv: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("chaos-resolve-{}-{}", std::process::id(), random_id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("resolv.conf"), resolv).unwrap();
        std::fs::write(dir.join("hosts"), "10.1.1.1 pinned\n").unwrap();
        (dir.join("resolv.conf"), dir.join("hosts"))
    }

    #[test]
    fn a_server_on_loopback_answers_past_a_wrong_id_and_misses_name_the_host() {
        let (addr, server) = server_for(2, |q| {
            let qtype = u16::from_be_bytes([q[q.len() - 4], q[q.len() - 3]]);
            let data: &[u8] = if qtype == A {
                &[10, 2, 2, 2]
            } else {
                &[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]
            };
            reply(q, 0, 0, &[record(&QNAME, qtype, data)])
        });
        let (resolv, hosts) = files(&format!(
            "nameserver [{}]:{}\noptions timeout:5",
            addr.ip(),
            addr.port()
        ));
        let got = resolve_with("svc.example", 8080, &resolv, &hosts).unwrap();
        assert_eq!(
            got,
            ["10.2.2.2:8080".parse().unwrap(), "[fd00::2]:8080".parse().unwrap()]
        );
        server.join().unwrap();
        assert_eq!(
            resolve_with("pinned", 80, &resolv, &hosts).unwrap(),
            ["10.1.1.1:80".parse().unwrap()]
        );

        let (addr, server) = server_for(4, |q| reply(q, 0, 3, &[]));
        let (resolv, hosts) = files(&format!("nameserver [{}]:{}\nsearch ns.test", addr.ip(), addr.port()));
        let e = resolve_with("nothere.example", 80, &resolv, &hosts).unwrap_err();
        server.join().unwrap();
        assert!(
            e.starts_with(
                "cannot resolve the host \"nothere.example\" of --url: nothere.example: no such name (NXDOMAIN)"
            ),
            "{e}"
        );
        assert!(e.contains(&addr.to_string()), "{e}");

        // A closed port: refused at once, and said so with the server.
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let (resolv, hosts) = files(&format!(
            "nameserver [{}]:{}\noptions timeout:1 attempts:1",
            closed.ip(),
            closed.port()
        ));
        let e = resolve_with("web", 80, &resolv, &hosts).unwrap_err();
        assert!(
            e.contains("no answer for web from 127.0.0.1:") && e.contains("1 s x 1 attempts"),
            "{e}"
        );
    }

    #[test]
    fn a_search_domain_whose_server_fails_moves_on_to_the_next_as_glibc_does() {
        // SERVFAIL for names under bad.test, an address for the others.
        // glibc tries the next search element after a SERVFAIL; the
        // observer stopped with "no answer" (exit 2) where clients resolve.
        let (addr, server) = server_for(4, |q| {
            if q.windows(9).any(|w| w == b"\x03bad\x04test") {
                return reply(q, 0, 2, &[]);
            }
            let qtype = u16::from_be_bytes([q[q.len() - 4], q[q.len() - 3]]);
            match qtype {
                A => reply(q, 0, 0, &[record(&QNAME, A, &[10, 3, 3, 3])]),
                _ => reply(q, 0, 0, &[]),
            }
        });
        let (resolv, hosts) = files(&format!(
            "nameserver [{}]:{}\nsearch bad.test good.test\noptions ndots:5 timeout:5 attempts:1",
            addr.ip(),
            addr.port()
        ));
        let got = resolve_with("web", 80, &resolv, &hosts);
        server.join().unwrap();
        assert_eq!(got, Ok(vec!["10.3.3.3:80".parse().unwrap()]));
        // Failing everywhere: every name tried is named, with the failure.
        let (addr, server) = server_for(4, |q| reply(q, 0, 2, &[]));
        let (resolv, hosts) = files(&format!(
            "nameserver [{}]:{}\nsearch bad.test\noptions ndots:1 timeout:5 attempts:1",
            addr.ip(),
            addr.port()
        ));
        let e = resolve_with("web", 80, &resolv, &hosts).unwrap_err();
        server.join().unwrap();
        assert!(
            e.contains("web.bad.test: server failure (SERVFAIL") && e.contains("web: server failure"),
            "{e}"
        );
    }
}
