//! The observer's arguments: their parsing, defaults and bounds. A bad value
//! is an error that names the flag and quotes the value; `observer::main`
//! turns it into exit code 2, as the server does with its variables.

use std::net::SocketAddr;
use std::time::Duration;

pub const USAGE: &str = "\
usage: chaos-backend observe --url URL [--rate R] [--duration S] [--timeout S] [--keepalive] [--slo PERCENT]

Sends GET URL at a fixed rate and reports what users of the URL saw. The
loop is open: request i is due at start + i/R whatever became of the earlier
ones, and its latency is measured from that due time, so a target that
stalls shows as latency, never as fewer requests. Each request opens a new
connection (kube-proxy balances connections, so this spreads them over the
pods), and the `pod` field of each JSON answer says which pod served it.

  --url URL        http://HOST[:PORT][/PATH] (required). HOST is resolved
                   once, at the start; several addresses are used in turn
                   (a refused one moves the request on to the next)
  --rate R         requests per second, decimals allowed (default 20, from 0.001 to 100000)
  --duration S     stop sending after S seconds and wait for the answers in
                   flight (default: run until SIGTERM or SIGINT)
  --timeout S      a request without its whole answer S seconds after its
                   due time is a timeout (default 2)
  --keepalive      reuse connections instead of a new one per request
  --slo PERCENT    exit 1 when availability (ok / finished requests) is below PERCENT
  -h, --help       this help

Output (stdout, JSON Lines): one line a second, {\"t\", \"sent\", \"ok\",
\"errors\": {class: n}, \"p50_ms\", \"p99_ms\", \"max_ms\", \"pods\": {name: n},
\"in_flight\", \"late_max_ms\"}, then {\"summary\": {...}} at the end, or at
once on SIGTERM or SIGINT. Error classes: refused, reset, timeout, http_5xx,
http_other, bad_body, and local (the observer could not open a socket).
A pod's gaps in the summary are the times it served nothing while others
did. docs/observer.md describes every field and rule.

Exit status: 0; 1 when --slo is given and availability fell below it (or
nothing finished); 2 for bad arguments or a URL whose host does not resolve.";

/// Where the requests go: `http://HOST[:PORT][/PATH]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// A name, an IPv4 address, or an IPv6 address without brackets.
    pub host: String,
    pub port: u16,
    /// The request target: starts with `/`, may hold a query.
    pub path: String,
}

impl Target {
    pub fn parse(raw: &str) -> Result<Target, String> {
        let bad = |why: &str| format!("invalid --url {raw:?}: {why}");
        let rest = match raw.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case("http://") => &raw[7..],
            _ => {
                return Err(bad(
                    "expected http://HOST[:PORT][/PATH] (no TLS: the observer speaks to a Service inside the cluster)",
                ));
            }
        };
        if raw.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad("spaces and control characters are not allowed"));
        }
        if rest.contains('#') {
            return Err(bad("a fragment (#...) is never sent; leave it out"));
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let path = match path.chars().next() {
            None => "/".to_string(),
            Some('?') => format!("/{path}"),
            Some(_) => path.to_string(),
        };
        if authority.contains('@') {
            return Err(bad("user information (user@host) is not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address needs its closing ]"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("expected an IPv6 address between [ and ]"));
            }
            match after {
                "" => (host, None),
                p => (
                    host,
                    Some(p.strip_prefix(':').ok_or_else(|| bad("expected :PORT after ]"))?),
                ),
            }
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let valid_name = |h: &str| h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if host.is_empty() || !(authority.starts_with('[') || valid_name(host)) {
            return Err(bad("expected a host name or address"));
        }
        let port = match port {
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(bad("expected a port from 1 to 65535")),
            },
        };
        Ok(Target {
            host: host.to_string(),
            port,
            path,
        })
    }

    /// The `Host` header: the port only when it is not 80.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The addresses of the host, resolved once (a Service's name has one
    /// stable ClusterIP; kube-proxy balances behind it).
    pub fn resolve(&self) -> Result<Vec<SocketAddr>, String> {
        super::resolve::resolve(&self.host, self.port)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The URL as given, for the summary.
    pub url: String,
    pub target: Target,
    /// Requests per second.
    pub rate: f64,
    /// Stop sending after this long; `None` runs until a signal.
    pub duration: Option<Duration>,
    pub timeout: Duration,
    pub keepalive: bool,
    /// The availability (percent) below which the exit status is 1.
    pub slo: Option<f64>,
}

#[derive(Debug, PartialEq)]
pub enum Command {
    Run(Options),
    Help,
}

pub const DEFAULT_RATE: f64 = 20.0;
pub const MAX_RATE: f64 = 100_000.0;
/// One request in 1,000 s. Below it a due time (`i / R` seconds) leaves
/// what an `Instant` can hold (1e-19/s panicked on the second request),
/// and a run of one request says nothing a user would see.
pub const MIN_RATE: f64 = 0.001;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// A week: a guard against typos such as minutes given as seconds x 60.
const MAX_DURATION_S: f64 = 7.0 * 24.0 * 3600.0;
const MAX_TIMEOUT_S: f64 = 3600.0;

/// A finite number from `text`, or `None`.
fn number(text: &str) -> Option<f64> {
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

fn seconds(flag: &str, text: &str, max: f64) -> Result<Duration, String> {
    match number(text) {
        Some(v) if v >= 0.001 && v <= max => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!(
            "invalid {flag} {text:?}: expected seconds, from 0.001 to {max}"
        )),
    }
}

/// Parses the arguments after `observe`.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let mut url = None;
    let mut rate = DEFAULT_RATE;
    let mut duration = None;
    let mut timeout = DEFAULT_TIMEOUT;
    let mut keepalive = false;
    let mut slo = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        match flag {
            "-h" | "--help" if inline.is_none() => return Ok(Command::Help),
            "--keepalive" if inline.is_none() => keepalive = true,
            "--url" | "--rate" | "--duration" | "--timeout" | "--slo" => {
                let value = match inline.or_else(|| it.next().cloned()) {
                    Some(v) => v,
                    None => return Err(format!("{flag} needs a value")),
                };
                match flag {
                    "--url" => url = Some((value.clone(), Target::parse(&value)?)),
                    "--rate" => {
                        rate = match number(&value) {
                            Some(r) if (MIN_RATE..=MAX_RATE).contains(&r) => r,
                            _ => {
                                return Err(format!(
                                    "invalid --rate {value:?}: expected requests per second, from {MIN_RATE} to {MAX_RATE}"
                                ));
                            }
                        }
                    }
                    "--duration" => duration = Some(seconds("--duration", &value, MAX_DURATION_S)?),
                    "--timeout" => timeout = seconds("--timeout", &value, MAX_TIMEOUT_S)?,
                    _ => {
                        slo = match number(&value) {
                            Some(p) if (0.0..=100.0).contains(&p) => Some(p),
                            _ => return Err(format!("invalid --slo {value:?}: expected a percentage from 0 to 100")),
                        }
                    }
                }
            }
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    let (url, target) = url.ok_or_else(|| "--url is required".to_string())?;
    Ok(Command::Run(Options {
        url,
        target,
        rate,
        duration,
        timeout,
        keepalive,
        slo,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn run(list: &[&str]) -> Options {
        match parse(&args(list)).unwrap() {
            Command::Run(o) => o,
            Command::Help => panic!("help"),
        }
    }

    #[test]
    fn defaults_and_every_flag() {
        let o = run(&["--url", "http://chaos-backend/"]);
        assert_eq!(
            (o.rate, o.duration, o.timeout, o.keepalive, o.slo),
            (20.0, None, DEFAULT_TIMEOUT, false, None)
        );
        let o = run(&[
            "--url=http://10.0.0.1:8080/ready?x=1",
            "--rate",
            "500",
            "--duration=2.5",
            "--timeout",
            "0.25",
            "--keepalive",
            "--slo",
            "99.9",
        ]);
        assert_eq!(o.target.path, "/ready?x=1");
        assert_eq!(o.rate, 500.0);
        assert_eq!(o.duration, Some(Duration::from_millis(2500)));
        assert_eq!(o.timeout, Duration::from_millis(250));
        assert!(o.keepalive);
        assert_eq!(o.slo, Some(99.9));
        assert_eq!(parse(&args(&["--help"])), Ok(Command::Help));
        assert_eq!(parse(&args(&["--url", "http://x", "-h"])), Ok(Command::Help));
    }

    #[test]
    fn bad_values_name_the_flag_and_quote_the_value() {
        for (list, needle) in [
            (&["--url", "http://x", "--rate", "abc"][..], "--rate \"abc\""),
            (&["--url", "http://x", "--rate", "0"], "--rate \"0\""),
            (&["--url", "http://x", "--rate", "NaN"], "--rate \"NaN\""),
            (&["--url", "http://x", "--rate", "1000001"], "--rate \"1000001\""),
            // Below one request in 1,000 s (1e-19 panicked: a due time past
            // what an Instant holds).
            (
                &["--url", "http://x", "--rate", "1e-19"],
                "--rate \"1e-19\": expected requests per second, from 0.001",
            ),
            (&["--url", "http://x", "--rate", "0.0009"], "--rate \"0.0009\""),
            (&["--url", "http://x", "--duration", "-1"], "--duration \"-1\""),
            (&["--url", "http://x", "--timeout", "0"], "--timeout \"0\""),
            (&["--url", "http://x", "--slo", "101"], "--slo \"101\""),
            (&["--url", "http://x", "--slo=high"], "--slo \"high\""),
            (&["--url", "https://x/"], "--url \"https://x/\""),
            (&["--url", "http://x:0/"], "--url \"http://x:0/\""),
            (&["--url", "http://x:99999/"], "--url \"http://x:99999/\""),
            (&["--url", "http://u@x/"], "--url \"http://u@x/\""),
            (&["--url", "http://[::1/"], "--url \"http://[::1/\""),
            (&["--url", "http:///path"], "--url \"http:///path\""),
            (&["--url", "http://x/a b"], "--url \"http://x/a b\""),
            (&["--url", "http://x", "--rate"], "--rate needs a value"),
            (
                &["--url", "http://x", "--keepalive=yes"],
                "unknown argument \"--keepalive=yes\"",
            ),
            (&["--url", "http://x", "--bogus"], "unknown argument \"--bogus\""),
            (&["--rate", "5"], "--url is required"),
        ] {
            let e = parse(&args(list)).unwrap_err();
            assert!(e.contains(needle), "{list:?}: {e}");
        }
    }

    #[test]
    fn urls_split_into_host_port_and_path() {
        let t = |raw: &str| Target::parse(raw).unwrap();
        assert_eq!(
            t("http://chaos-backend"),
            Target {
                host: "chaos-backend".into(),
                port: 80,
                path: "/".into()
            }
        );
        assert_eq!(t("HTTP://svc.ns.svc.cluster.local:8080/ready").port, 8080);
        assert_eq!(t("http://svc?a=1").path, "/?a=1");
        let v6 = t("http://[::1]:9000/x");
        assert_eq!((v6.host.as_str(), v6.port, v6.path.as_str()), ("::1", 9000, "/x"));
        assert_eq!(v6.host_header(), "[::1]:9000");
        assert_eq!(t("http://svc/").host_header(), "svc");
        assert_eq!(t("http://127.0.0.1:81/").host_header(), "127.0.0.1:81");
    }

    #[test]
    fn address_literals_resolve_to_themselves() {
        let addrs = Target::parse("http://127.0.0.1:9/").unwrap().resolve().unwrap();
        assert_eq!(addrs, ["127.0.0.1:9".parse().unwrap()]);
        let addrs = Target::parse("http://[::1]:9/").unwrap().resolve().unwrap();
        assert_eq!(addrs, ["[::1]:9".parse().unwrap()]);
    }
}
