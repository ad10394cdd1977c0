//! `chaos-backend healthcheck`: the probe for Docker's `HEALTHCHECK`, since a
//! scratch image has no curl. It asks `GET /health` of the service in the
//! same container (same `BIND_ADDRESS`, on `PROBE_PORT`, or on `PORT` when
//! the probe listener is off or on a free port) and exits 0 on a 200.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::config::Config;

const TIMEOUT: Duration = Duration::from_secs(2);

/// Where a local probe should connect: the bound address, or loopback when
/// the service listens on every address; the probe port, as the kubelet's
/// probes do, unless it is off or picked at start (0), then the main port.
pub fn probe_address(config: &Config) -> SocketAddr {
    let ip = match config.bind_address {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    let port = config.probe_port.filter(|p| *p != 0).unwrap_or(config.port);
    SocketAddr::new(ip, port)
}

/// Probes /health once; `Err` says why it is not healthy.
pub fn check(addr: SocketAddr) -> Result<(), String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| format!("cannot set timeouts: {e}"))?;
    stream
        .write_all(format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| format!("cannot send to {addr}: {e}"))?;
    let mut head = [0u8; 64];
    let n = stream
        .read(&mut head)
        .map_err(|e| format!("no answer from {addr}: {e}"))?;
    let status_line = String::from_utf8_lossy(&head[..n]);
    let status = status_line.split_whitespace().nth(1).unwrap_or("none");
    if status == "200" {
        Ok(())
    } else {
        Err(format!("GET /health on {addr} answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_bind_probes_loopback() {
        let mut config = Config::from_lookup(|_| None).unwrap();
        assert_eq!(probe_address(&config).to_string(), "127.0.0.1:8081");
        config.bind_address = "::".parse().unwrap();
        assert_eq!(probe_address(&config).to_string(), "[::1]:8081");
        config.bind_address = "10.1.2.3".parse().unwrap();
        assert_eq!(probe_address(&config).to_string(), "10.1.2.3:8081");
        // Off, or a port picked at start that a second process cannot
        // know: the main port.
        for off in [None, Some(0)] {
            config.probe_port = off;
            assert_eq!(probe_address(&config).to_string(), "10.1.2.3:8080");
        }
    }

    #[test]
    fn nothing_listening_is_unhealthy() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        assert!(check(addr).unwrap_err().contains("cannot connect"));
    }
}
