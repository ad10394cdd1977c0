//! What the HTTP layer is told at start-up: the head limits, the connection
//! settings, and the cap on open connections that `HTTP_MAX_CONNECTIONS=auto`
//! stands for, computed from what the process may have (memory, fds,
//! threads) so that no client can make it run out of any of them.
//!
//! Each connection costs one thread and one fd (the patched tiny_http shares
//! one socket between reader and writer, where upstream cloned it and so
//! needed two) and about `CONNECTION_COST_BYTES` of memory.

use std::sync::Arc;

use crate::config::{Config, ConnectionSettings};
use crate::http::reply;
use crate::os::{cgroup, sys};

/// Memory one idle connection may cost, as the cgroup counts it: its
/// thread's touched stack and kernel stack, the socket, buffers and the
/// table entry. Measured 39.8 KiB (15.6 KiB of it RSS); see the README
/// ("Hostile and careless clients").
pub const CONNECTION_COST_BYTES: u64 = 64 << 10;
/// Stack of a connection thread: Rust's default (2 MiB of address space).
/// A smaller one (128 KiB) was measured: the same RSS per connection (only
/// touched pages count), but more RSS kept after a burst, since glibc
/// caches up to 40 MiB of freed thread stacks, with their touched pages:
/// 1,200 connections left +8 MiB with 128 KiB stacks, +2.3 MiB with 2 MiB.
pub const CONNECTION_STACK_BYTES: Option<usize> = None;
/// Fds kept for everything but connections: the listener, stdio, /proc and
/// cgroup reads, the state directory, a scrape.
pub const FD_RESERVE: u64 = 64;
/// Threads kept beyond those counted in `other_threads`.
pub const THREAD_RESERVE: u64 = 8;
/// The share of the memory headroom connections may take; the rest stays
/// for the service and the faults it is asked to run.
pub const MEMORY_SHARE_PERCENT: u64 = 50;
/// The cap when nothing limits the process.
pub const UNLIMITED_CAP: u64 = 10_000;

/// What bounds the process, read at start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bounds {
    /// The cgroup's memory limit, in bytes.
    pub memory_limit: Option<u64>,
    /// RSS at start-up, in bytes.
    pub rss: u64,
    /// The soft `RLIMIT_NOFILE`.
    pub nofile: Option<u64>,
    /// The cgroup's `pids.max`.
    pub pids_max: Option<u64>,
    /// Tasks in the cgroup that are not this process's threads (an init,
    /// a shell).
    pub other_tasks: u64,
}

impl Bounds {
    pub fn read() -> Bounds {
        let own_threads = sys::thread_ids().len() as u64;
        let (pids_max, pids_current) = cgroup::pids();
        Bounds {
            memory_limit: cgroup::memory_limit(),
            rss: sys::rss_bytes(),
            nofile: sys::nofile_limit(),
            pids_max,
            other_tasks: pids_current.map_or(0, |c| c.saturating_sub(own_threads)),
        }
    }
}

/// The cap and what each bound allows, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cap {
    pub chosen: usize,
    pub by_memory: Option<u64>,
    pub by_fds: Option<u64>,
    pub by_threads: Option<u64>,
    pub configured: bool,
}

/// Threads the service may run besides connection threads: main, signals,
/// accept, watchdog, accept-watch, the healing heartbeat, the workers, and
/// per concurrent chaos
/// action a CPU load (a controller and a spin thread per CPU), a memory
/// ramp and a hold thread; plus a timer per fault kind.
pub fn other_threads(workers: usize, max_concurrent_chaos: usize, cpus: usize) -> u64 {
    const FIXED: u64 = 6;
    const FAULT_TIMERS: u64 = 5;
    let per_action = 1 + cpus as u64 + 2;
    FIXED + workers as u64 + max_concurrent_chaos as u64 * per_action + FAULT_TIMERS
}

/// The cap: the configured one, else the smallest of what memory, fds and
/// threads allow (at least 1).
pub fn cap(settings: &ConnectionSettings, bounds: &Bounds, other_threads: u64) -> Cap {
    let by_memory = bounds.memory_limit.map(|limit| {
        let headroom = limit.saturating_sub(bounds.rss);
        headroom * MEMORY_SHARE_PERCENT / 100 / CONNECTION_COST_BYTES
    });
    let by_fds = bounds.nofile.map(|n| n.saturating_sub(FD_RESERVE));
    let by_threads = bounds
        .pids_max
        .map(|max| max.saturating_sub(other_threads + bounds.other_tasks + THREAD_RESERVE));
    let computed = [by_memory, by_fds, by_threads]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(UNLIMITED_CAP)
        .clamp(1, UNLIMITED_CAP);
    Cap {
        chosen: settings.max_connections.unwrap_or(computed as usize),
        by_memory,
        by_fds,
        by_threads,
        configured: settings.max_connections.is_some(),
    }
}

/// What tiny_http is told: the head limits, the JSON error body, and the
/// connection limits, with the cap computed from what bounds the process
/// (logged). `cpus`: the CPUs a saturating CPU load spins on.
pub fn server_options(config: &Config, cpus: usize) -> tiny_http::ServerOptions {
    let settings = &config.connections;
    let other = other_threads(config.workers, config.max_concurrent_chaos, cpus);
    let cap = cap(settings, &Bounds::read(), other);
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
    tiny_http::ServerOptions {
        head: tiny_http::HeadLimits {
            max_bytes: config.max_request_head_bytes,
            max_headers: config.max_request_headers,
        },
        error_body: Some(Arc::new(reply::error_body)),
        connections: tiny_http::ConnectionLimits {
            max_connections: cap.chosen,
            idle_timeout: Some(settings.idle_timeout),
            head_timeout: Some(settings.head_timeout),
            write_timeout: Some(settings.write_timeout),
            drain_timeout: Some(settings.drain_timeout),
            drain_limit: settings.drain_limit,
            thread_stack_size: CONNECTION_STACK_BYTES,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> ConnectionSettings {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        crate::config::Config::from_lookup(|name| map.get(name).cloned())
            .unwrap()
            .connections
    }

    #[test]
    fn the_tightest_bound_wins() {
        let s = settings(&[]);
        let b = Bounds {
            memory_limit: Some(200 << 20),
            rss: 8 << 20,
            nofile: Some(256),
            pids_max: Some(64),
            other_tasks: 1,
        };
        let other = other_threads(4, 1, 2);
        assert_eq!(other, 6 + 4 + 5 + 5);
        let c = cap(&s, &b, other);
        assert_eq!(c.by_fds, Some(192));
        assert_eq!(c.by_threads, Some(64 - 20 - 1 - 8));
        assert_eq!(c.by_memory, Some((192u64 << 20) / 2 / CONNECTION_COST_BYTES));
        assert_eq!(c.chosen, 35);
        assert!(!c.configured);
        let unbounded = cap(&s, &Bounds::default(), other);
        assert_eq!(unbounded.chosen, UNLIMITED_CAP as usize);
        let tiny = Bounds {
            pids_max: Some(10),
            ..Bounds::default()
        };
        assert_eq!(cap(&s, &tiny, other).chosen, 1);
        let fixed = settings(&[("HTTP_MAX_CONNECTIONS", "7")]);
        assert_eq!(cap(&fixed, &b, other).chosen, 7);
    }
}
