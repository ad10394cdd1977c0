//! What the HTTP layer is told at start-up: the head limits, the connection
//! settings, the cap on open connections that `HTTP_MAX_CONNECTIONS=auto`
//! stands for, and the budget of answers waiting to be written, computed
//! from every limit the process runs under (memory, readiness, fds,
//! threads, address space) so that no client can make it run out of any
//! of them, fail readiness, or abort.
//!
//! Each connection costs one pooled thread and one fd (the patched
//! tiny_http shares one socket between reader and writer, where upstream
//! cloned it and so needed two), about `CONNECTION_COST_BYTES` of memory as
//! the cgroup counts it, `CONNECTION_RSS_BYTES` plus its head of resident
//! memory, and a thread stack of address space. What connections may hold
//! together is half the smallest headroom (under the memory limit, under
//! `MAX_MEMORY_MB_READY`, under `RLIMIT_AS`); a quarter of that is the
//! budget of rendered answers not yet written, the rest is for the
//! connections themselves.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ConnectionSettings};
use crate::http::reply;
use crate::os::{cgroup, sys};

/// Memory one connection may cost, as the cgroup counts it: its thread's
/// touched stack and kernel stack, the socket and its buffers, the read
/// buffer and the table entry. Measured 39.8 KiB for an idle one (15.6 KiB
/// of it RSS); see docs/performance.md.
pub const CONNECTION_COST_BYTES: u64 = 64 << 10;
/// Resident memory one connection may cost besides its request head: its
/// thread's touched stack, the read buffer, the table entry (measured
/// about 16 KiB).
pub const CONNECTION_RSS_BYTES: u64 = 24 << 10;
/// Stack of a connection thread. Connection threads only read heads and
/// queue requests: a few KiB of stack. 256 KiB of address space each keeps
/// the cap under `RLIMIT_AS` eight times higher than Rust's default 2 MiB.
/// glibc keeps ended threads' stacks for reuse (up to 40 MiB of them, 160
/// of this size); an ending connection thread first gives back the pages
/// it no longer uses (`sys::release_unused_stack`), so each keeps 8 KiB
/// resident (its thread control block and top frame): 1.25 MiB at most.
pub const CONNECTION_STACK_BYTES: u64 = 256 << 10;
/// Stack of every other thread (Rust's default) and the guard page below
/// each stack.
const OTHER_STACK_BYTES: u64 = 2 << 20;
const GUARD_BYTES: u64 = 4 << 10;
/// Fds kept for everything but connections and listeners: /proc and cgroup
/// reads, the state directory, a disk fill, a scrape; plus one a worker.
pub const FD_RESERVE: u64 = 16;
/// Threads kept beyond those counted in `other_threads`.
pub const THREAD_RESERVE: u64 = 8;
/// The share of each headroom connections may take (percent); the rest
/// stays for the service and the faults it is asked to run.
pub const MEMORY_SHARE_PERCENT: u64 = 50;
/// The share of what connections may hold that rendered answers waiting
/// to be written may take (percent).
pub const ANSWER_SHARE_PERCENT: u64 = 25;
/// The cap when nothing limits the process, and the most it ever is.
pub const UNLIMITED_CAP: u64 = 10_000;
/// Connection threads kept, however idle (upstream kept 4 too).
pub const MIN_THREADS: usize = 4;
/// The most connection threads that wait idle for a connection; beyond,
/// a thread whose connection ends ends too.
pub const MAX_IDLE_THREADS: usize = 16;
/// A connection thread idle this long since its last connection ends (one
/// of the `MIN_THREADS` is replaced by a fresh one), so that what it holds
/// (its stack's pages, its allocator cache) goes back.
pub const THREAD_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// What bounds the process, read at start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bounds {
    /// The cgroup's memory limit, in bytes.
    pub memory_limit: Option<u64>,
    /// RSS at start-up, in bytes.
    pub rss: u64,
    /// The soft `RLIMIT_NOFILE`.
    pub nofile: Option<u64>,
    /// Fds open at start-up.
    pub open_fds: u64,
    /// The cgroup's `pids.max`.
    pub pids_max: Option<u64>,
    /// Tasks in the cgroup that are not this process's threads (an init,
    /// a shell).
    pub other_tasks: u64,
    /// The soft `RLIMIT_AS`, in bytes.
    pub address_space: Option<u64>,
    /// Address space mapped at start-up (`VmSize`), in bytes.
    pub mapped: u64,
}

impl Bounds {
    pub fn read() -> Bounds {
        let own_threads = sys::thread_ids().len() as u64;
        let (pids_max, pids_current) = cgroup::pids();
        Bounds {
            memory_limit: cgroup::memory_limit(),
            rss: sys::rss_bytes(),
            nofile: sys::nofile_limit(),
            open_fds: sys::open_fds(),
            pids_max,
            other_tasks: pids_current.map_or(0, |c| c.saturating_sub(own_threads)),
            address_space: sys::address_space_limit(),
            mapped: sys::address_space_bytes(),
        }
    }
}

/// What the service itself needs besides connections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Needs {
    /// Threads that are not connection threads (`other_threads`).
    pub threads: u64,
    /// Fds of listeners and of the probe listener's connections.
    pub fds: u64,
    /// `MAX_MEMORY_MB_READY`, in bytes.
    pub max_rss_ready: u64,
    /// `MAX_REQUEST_HEAD_BYTES`: the head a connection may hold.
    pub head_bytes: u64,
    /// Workers: each may hold a transient fd.
    pub workers: u64,
}

/// One bound on the cap: what it allows, and the arithmetic behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    pub allows: u64,
    pub why: String,
}

/// The cap, the budgets, and what each limit allows, for the start-up log.
#[derive(Debug, Clone, PartialEq)]
pub struct Cap {
    pub chosen: usize,
    pub configured: bool,
    /// What connections may hold together, in bytes (None: nothing bounds
    /// it).
    pub share: Option<u64>,
    /// Rendered answers waiting to be written, all connections together.
    pub answers: u64,
    pub by_memory: Option<Bound>,
    pub by_readiness: Bound,
    pub by_fds: Option<Bound>,
    pub by_threads: Option<Bound>,
    pub by_address_space: Option<Bound>,
}

/// Threads the service may run besides connection threads: main, signals,
/// accept, watchdog, accept-watch, the healing heartbeat, the probe
/// listener, the workers, and per concurrent chaos action a CPU load (a
/// controller and a spin thread per CPU), a memory leak or ramp, its hold,
/// and the thread that answers a leak made at once; plus a timer per fault
/// kind.
pub fn other_threads(workers: usize, max_concurrent_chaos: usize, cpus: usize) -> u64 {
    const FIXED: u64 = 7;
    const FAULT_TIMERS: u64 = 5;
    let per_action = 1 + cpus as u64 + 3;
    FIXED + workers as u64 + max_concurrent_chaos as u64 * per_action + FAULT_TIMERS
}

/// The malloc arenas glibc may make (`sys::limit_malloc_arenas`): one under
/// `RLIMIT_AS` (each further one reserves 64 MiB of address space, 128 MiB
/// while it is made), else 2 a CPU. glibc's own default is 8 a CPU; after
/// a burst of connections each arena keeps some freed memory resident (a
/// top it does not trim, blocks between live ones). Measured after 1,585
/// connections on 2 CPUs: 2 a CPU kept half of what 8 a CPU kept (about
/// 1 MiB, not 2 to 4), at the same `/health` throughput; 1 a CPU cost a
/// tenth of it.
pub fn malloc_arenas(cpus: usize, address_space: Option<u64>) -> usize {
    match address_space {
        Some(_) => 1,
        None => 2 * cpus.max(1),
    }
}

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;

/// Bytes in MiB with one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

/// The cap: the configured one, else the smallest of what each limit
/// allows (at least 1, at most `UNLIMITED_CAP`); and the budgets.
pub fn cap(settings: &ConnectionSettings, bounds: &Bounds, needs: &Needs) -> Cap {
    let half = |headroom: u64| headroom * MEMORY_SHARE_PERCENT / 100;
    let memory_share = bounds.memory_limit.map(|limit| half(limit.saturating_sub(bounds.rss)));
    let ready_share = half(needs.max_rss_ready.saturating_sub(bounds.rss));
    let other_stacks = needs.threads * (OTHER_STACK_BYTES + GUARD_BYTES);
    let space_share = bounds
        .address_space
        .map(|limit| half(limit.saturating_sub(bounds.mapped + other_stacks)));
    let share = [memory_share, Some(ready_share), space_share]
        .into_iter()
        .flatten()
        .min();
    let answers = share.map_or(u64::MAX, |s| s * ANSWER_SHARE_PERCENT / 100);

    let by_memory = bounds.memory_limit.zip(memory_share).map(|(limit, s)| {
        let allows = s.saturating_sub(answers) / CONNECTION_COST_BYTES;
        Bound {
            allows,
            why: format!(
                "memory ({} limit - {} RSS at start) / 2 - {} for answers, / {} KiB a connection = {allows}",
                mib(limit),
                mib(bounds.rss),
                mib(answers),
                CONNECTION_COST_BYTES / KIB
            ),
        }
    });
    let per_rss = CONNECTION_RSS_BYTES + needs.head_bytes;
    let by_readiness = {
        let allows = ready_share.saturating_sub(answers) / per_rss;
        Bound {
            allows,
            why: format!(
                "readiness ({} MAX_MEMORY_MB_READY - {} RSS at start) / 2 - {} for answers, / {} KiB RSS a connection ({} KiB + a {} KiB head) = {allows}",
                mib(needs.max_rss_ready),
                mib(bounds.rss),
                mib(answers),
                per_rss / KIB,
                CONNECTION_RSS_BYTES / KIB,
                needs.head_bytes / KIB
            ),
        }
    };
    let by_fds = bounds.nofile.map(|n| {
        let kept = FD_RESERVE + needs.workers;
        let allows = n.saturating_sub(bounds.open_fds + kept + needs.fds);
        Bound {
            allows,
            why: format!(
                "fds RLIMIT_NOFILE {n} - {} open at start - {kept} kept - {} for listeners and probes = {allows}",
                bounds.open_fds, needs.fds
            ),
        }
    });
    let by_threads = bounds.pids_max.map(|max| {
        let allows = max.saturating_sub(needs.threads + bounds.other_tasks + THREAD_RESERVE);
        Bound {
            allows,
            why: format!(
                "threads pids.max {max} - {} other threads - {} other tasks - {THREAD_RESERVE} kept = {allows}",
                needs.threads, bounds.other_tasks
            ),
        }
    });
    let per_thread = CONNECTION_STACK_BYTES + GUARD_BYTES;
    let by_address_space = bounds.address_space.zip(space_share).map(|(limit, s)| {
        let allows = s.saturating_sub(answers) / per_thread;
        Bound {
            allows,
            why: format!(
                "address space (RLIMIT_AS {} - {} mapped at start - {} of other threads' stacks) / 2 - {} for answers, / {} KiB a connection thread = {allows}",
                mib(limit),
                mib(bounds.mapped),
                mib(other_stacks),
                mib(answers),
                per_thread / KIB
            ),
        }
    });
    let computed = [
        by_memory.as_ref(),
        Some(&by_readiness),
        by_fds.as_ref(),
        by_threads.as_ref(),
        by_address_space.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|b| b.allows)
    .min()
    .unwrap_or(UNLIMITED_CAP)
    .clamp(1, UNLIMITED_CAP);
    Cap {
        chosen: settings.max_connections.unwrap_or(computed as usize),
        configured: settings.max_connections.is_some(),
        share,
        answers,
        by_memory,
        by_readiness,
        by_fds,
        by_threads,
        by_address_space,
    }
}

impl fmt::Display for Cap {
    /// The start-up log's line: the cap and where it comes from, the
    /// budget of answers, and every limit with its arithmetic.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = if self.configured {
            "HTTP_MAX_CONNECTIONS"
        } else {
            "the smallest of"
        };
        write!(f, "connection cap {} ({source}: ", self.chosen)?;
        let unbounded = |what: &str| format!("{what} unlimited");
        let parts = [
            self.by_memory
                .as_ref()
                .map_or_else(|| unbounded("memory"), |b| b.why.clone()),
            self.by_readiness.why.clone(),
            self.by_fds.as_ref().map_or_else(|| unbounded("fds"), |b| b.why.clone()),
            self.by_threads
                .as_ref()
                .map_or_else(|| unbounded("threads"), |b| b.why.clone()),
            self.by_address_space
                .as_ref()
                .map_or_else(|| unbounded("address space"), |b| b.why.clone()),
        ];
        write!(f, "{}", parts.join("; "))?;
        match self.share {
            Some(share) => write!(
                f,
                "); answers waiting to be written: at most {} in all ({ANSWER_SHARE_PERCENT}% of {}, the smallest half-headroom), beyond it the slowest readers are closed",
                mib(self.answers),
                mib(share)
            ),
            None => write!(f, "); answers waiting to be written: unbounded"),
        }
    }
}

impl Cap {
    /// The address space the connections may take (their threads' stacks
    /// and the answers' budget), which a leak must leave free.
    pub fn address_space_kept(&self) -> u64 {
        (self.chosen as u64)
            .saturating_mul(CONNECTION_STACK_BYTES + GUARD_BYTES)
            .saturating_add(self.answers)
    }
}

/// What tiny_http is told: the head limits, the JSON error body, and the
/// connection limits, with the cap computed from what bounds the process
/// (logged); and the cap. `cpus`: the CPUs a saturating CPU load spins on;
/// `probe_fds`: the fds the probe listener may hold.
pub fn server_options(config: &Config, cpus: usize, probe_fds: u64) -> (tiny_http::ServerOptions, Cap) {
    let settings = &config.connections;
    let needs = Needs {
        threads: other_threads(config.workers, config.max_concurrent_chaos, cpus),
        // The main listener, and the probe listener's.
        fds: 1 + probe_fds,
        max_rss_ready: config.max_rss_bytes(),
        head_bytes: config.max_request_head_bytes as u64,
        workers: config.workers as u64,
    };
    let cap = cap(settings, &Bounds::read(), &needs);
    log::info!("{cap}");
    log::info!(
        "HTTP connections: idle timeout {:?}, head {:?}, write {:?}, body drain {} bytes in {:?}; threads: {} kept, at most {} idle, {} KiB stacks",
        settings.idle_timeout,
        settings.head_timeout,
        settings.write_timeout,
        settings.drain_limit,
        settings.drain_timeout,
        MIN_THREADS.min(cap.chosen),
        MAX_IDLE_THREADS,
        CONNECTION_STACK_BYTES / KIB,
    );
    let options = tiny_http::ServerOptions {
        head: tiny_http::HeadLimits {
            max_bytes: config.max_request_head_bytes,
            max_headers: config.max_request_headers,
        },
        error_body: Some(Arc::new(reply::error_body)),
        thread_idle: Some(Arc::new(sys::release_unused_stack)),
        connections: tiny_http::ConnectionLimits {
            max_connections: cap.chosen,
            idle_timeout: Some(settings.idle_timeout),
            head_timeout: Some(settings.head_timeout),
            write_timeout: Some(settings.write_timeout),
            drain_timeout: Some(settings.drain_timeout),
            drain_limit: settings.drain_limit,
            thread_stack_size: Some(CONNECTION_STACK_BYTES as usize),
            min_threads: MIN_THREADS,
            max_idle_threads: MAX_IDLE_THREADS,
            thread_idle_timeout: THREAD_IDLE_TIMEOUT,
            answer_budget: usize::try_from(cap.answers).unwrap_or(usize::MAX),
        },
    };
    (options, cap)
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

    fn needs() -> Needs {
        Needs {
            threads: other_threads(4, 1, 2),
            fds: 1 + 18,
            max_rss_ready: 120 << 20,
            head_bytes: 16 << 10,
            workers: 4,
        }
    }

    #[test]
    fn the_tightest_bound_wins() {
        let s = settings(&[]);
        let b = Bounds {
            memory_limit: Some(200 << 20),
            rss: 8 << 20,
            nofile: Some(256),
            open_fds: 5,
            pids_max: Some(64),
            other_tasks: 1,
            address_space: None,
            mapped: 0,
        };
        let n = needs();
        assert_eq!(n.threads, 7 + 4 + 6 + 5);
        let c = cap(&s, &b, &n);
        // Half of the smaller headroom (readiness: 112 MiB), a quarter of
        // it for answers.
        assert_eq!(c.share, Some(56 << 20));
        assert_eq!(c.answers, 14 << 20);
        assert_eq!(
            c.by_memory.as_ref().unwrap().allows,
            ((96u64 - 14) << 20) / CONNECTION_COST_BYTES
        );
        assert_eq!(c.by_readiness.allows, ((56u64 - 14) << 20) / (40 << 10));
        assert_eq!(c.by_fds.as_ref().unwrap().allows, 256 - 5 - 20 - 19);
        assert_eq!(c.by_threads.as_ref().unwrap().allows, 64 - 22 - 1 - 8);
        assert_eq!(c.chosen, 33);
        assert!(!c.configured);
        let line = c.to_string();
        assert!(line.starts_with("connection cap 33 (the smallest of: memory (200.0 MiB limit - 8.0 MiB RSS at start) / 2 - 14.0 MiB for answers, / 64 KiB a connection = 1312; readiness (120.0 MiB MAX_MEMORY_MB_READY"), "{line}");
        assert!(line.contains("threads pids.max 64 - 22 other threads - 1 other tasks - 8 kept = 33; address space unlimited); answers waiting to be written: at most 14.0 MiB in all"), "{line}");
        let fixed = settings(&[("HTTP_MAX_CONNECTIONS", "7")]);
        assert_eq!(cap(&fixed, &b, &n).chosen, 7);
    }

    #[test]
    fn without_limits_readiness_still_bounds_it() {
        let s = settings(&[]);
        let n = Needs {
            max_rss_ready: 400 << 20,
            ..needs()
        };
        let c = cap(&s, &Bounds::default(), &n);
        // (400 MiB / 2 - 50 MiB of answers) / 40 KiB.
        assert_eq!(c.answers, 50 << 20);
        assert_eq!(c.chosen, 3840);
        let tiny = Bounds {
            pids_max: Some(10),
            ..Bounds::default()
        };
        assert_eq!(cap(&s, &tiny, &n).chosen, 1);
    }

    #[test]
    fn the_address_space_counts_stacks_and_what_is_mapped() {
        let s = settings(&[]);
        let b = Bounds {
            address_space: Some(256 << 20),
            mapped: 20 << 20,
            ..Bounds::default()
        };
        let n = Needs {
            max_rss_ready: 1 << 30,
            ..needs()
        };
        let c = cap(&s, &b, &n);
        let other = 22 * ((2 << 20) + (4 << 10));
        let share = ((256u64 << 20) - (20 << 20) - other) / 2;
        assert_eq!(c.share, Some(share));
        assert_eq!(c.answers, share / 4);
        let by_space = c.by_address_space.as_ref().unwrap();
        assert_eq!(by_space.allows, (share - share / 4) / ((256 << 10) + (4 << 10)));
        assert_eq!(c.chosen as u64, by_space.allows);
        // Every connection thread's stack and the answers fit in the half
        // of the address space that is the connections'.
        assert!(c.chosen as u64 * ((256 << 10) + (4 << 10)) + c.answers <= share);
    }
}
