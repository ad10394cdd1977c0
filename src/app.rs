//! `App`: the state every handler shares, and the few operations that touch
//! several parts of it at once (readiness, start-up, shutdown); and
//! `Control`, what the rest of the process tells `main`.
//!
//! Nothing here blocks or spins: spin threads and the leak only touch their
//! own atomics and the metrics, never a lock a worker waits on for long.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Instant, SystemTime};

use serde_json::json;

use crate::chaos::cpu::CpuLoads;
use crate::chaos::crash_marker;
use crate::chaos::disk::{DiskFill, EndReason};
use crate::chaos::faults::Faults;
use crate::chaos::guard::Guard;
use crate::chaos::memory::Leak;
use crate::chaos::registry::{FaultKind, Registry};
use crate::config::Config;
use crate::http::access::Access;
use crate::observe::events::{Event, Events};
use crate::observe::healing::{Tracker, Transition};
use crate::observe::latency::LatencyWindow;
use crate::observe::metrics::{Endpoint, KnownLabels, Metrics};
use crate::observe::readiness::{self, Inputs, Limits, Reason};
use crate::os::sys;

/// One message to `main`, over the channel it owns: from the signal thread,
/// the workers, the accept watch, and a deliberate panic.
#[derive(Debug)]
pub enum Control {
    Signal(&'static str),
    /// `POST /crash?mode=panic`: main panics, so the process ends with 101.
    Panic(String),
    AcceptFailed(String),
    WorkerExited,
}

pub struct App {
    pub config: Config,
    /// Shared with the threads that answer later (a leak made at once).
    pub metrics: Arc<Metrics>,
    /// Every running fault: the guardrails, GET /chaos, stop and DELETE.
    pub registry: Arc<Registry>,
    pub tracker: Tracker,
    pub latency: LatencyWindow,
    pub cpu: Arc<CpuLoads>,
    pub leak: Arc<Leak>,
    pub faults: Arc<Faults>,
    /// The disk: where fills go and what is written; a running fill is a
    /// registry entry (`FaultKind::Disk`).
    pub disk: Arc<DiskFill>,
    pub events: Arc<Events>,
    pub started: Instant,
    pub pod: String,
    pub access: Access,
    shutting_down: AtomicBool,
    /// Whether STATE_DIR was writable at start-up (warned about once if not).
    pub state_dir_ok: bool,
    /// `main`'s channel: a deliberate panic must happen on the main thread.
    pub to_main: Sender<Control>,
}

impl App {
    /// `endpoints` are the HTTP series that exist from start-up (the route
    /// table's, which `main` hands over); `to_main` is `main`'s channel.
    pub fn new(
        config: Config,
        endpoints: &[Endpoint],
        events: Events,
        started: Instant,
        to_main: Sender<Control>,
    ) -> Result<App, prometheus::Error> {
        let state_dir_ok = match crash_marker::prepare_state_dir(&config.state_dir) {
            Ok(()) => true,
            Err(e) => {
                log::warn!("{e}; the crash marker will not be written, crash_to_startup_seconds cannot be measured");
                false
            }
        };
        let (disk, notes) = DiskFill::prepare(&config.disk_fill_dir);
        for note in notes {
            log::info!("{note}");
        }
        if let Some(why) = disk.unavailable() {
            log::warn!("{why}; POST /load/disk will answer 503");
        }
        let faults: Vec<&str> = FaultKind::ALL.iter().map(|k| k.label()).collect();
        let disk_fill_ends: Vec<&str> = EndReason::ALL.iter().map(|r| r.label()).collect();
        let metrics = Metrics::new(&KnownLabels {
            endpoints,
            faults: &faults,
            disk_fill_ends: &disk_fill_ends,
        })?;
        metrics
            .readiness_max_memory_bytes
            .set(i64::try_from(config.max_rss_bytes()).unwrap_or(i64::MAX));
        metrics
            .readiness_max_latency_seconds
            .set(config.max_latency.as_secs_f64());
        let access = Access::from_source(&config.chaos_token);
        match &access {
            Access::Closed(why) => log::warn!("chaos endpoints closed: {why}"),
            Access::Open if config.chaos_enabled => {
                log::info!("chaos endpoints are open to anyone who reaches the port (no CHAOS_TOKEN)")
            }
            _ => {}
        }
        Ok(App {
            access,
            metrics: Arc::new(metrics),
            registry: Registry::new(Guard::new(config.max_concurrent_chaos, config.chaos_cooldown)),
            tracker: Tracker::default(),
            latency: LatencyWindow::new(started, config.latency_window, config.max_latency),
            cpu: Arc::new(CpuLoads::default()),
            leak: Arc::new(Leak::default()),
            faults: Arc::new(Faults::default()),
            disk: Arc::new(disk),
            events: Arc::new(events),
            started,
            pod: pod_name(),
            shutting_down: AtomicBool::new(false),
            state_dir_ok,
            to_main,
            config,
        })
    }

    /// Start-up bookkeeping: the crash marker of a previous run, the recovery
    /// counter, and the POD_STARTED event. `listen` is the bound address,
    /// `probe_listen` the probe listener's (None: `PROBE_PORT=off`).
    pub fn record_start(&self, listen: &str, probe_listen: Option<&str>) {
        self.metrics.pod_recovery_count_total.inc();
        let crash = if self.state_dir_ok {
            match crash_marker::take_marker(&self.config.state_dir) {
                Ok(found) => found,
                Err(e) => {
                    log::warn!("{e}");
                    None
                }
            }
        } else {
            None
        };
        let crash_to_startup = crash.as_ref().map(|c| {
            let secs = c.elapsed_until(SystemTime::now()).as_secs_f64();
            self.metrics.crash_to_startup_seconds.observe(secs);
            log::info!("started {secs:.3} s after a deliberate crash ({})", c.mode);
            secs
        });
        self.events.emit(
            Event::PodStarted,
            json!({
                "listen": listen,
                "probe_listen": probe_listen,
                "pod": self.pod,
                "version": env!("CARGO_PKG_VERSION"),
                "workers": self.config.workers,
                "crash_to_startup_seconds": crash_to_startup,
                "crash_mode": crash.map(|c| c.mode),
                "startup_ms": self.started.elapsed().as_secs_f64() * 1000.0,
            }),
        );
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// First step of a graceful stop: /ready fails from now on.
    pub fn begin_shutdown(&self, signal: &str) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.metrics.pod_ready_status.set(0);
        self.events.emit(
            Event::ShutdownStarted,
            json!({"signal": signal, "delay_seconds": self.config.shutdown_delay.as_secs()}),
        );
    }

    /// Every failing readiness check at `now`; also sets `pod_ready_status`.
    pub fn readiness_reasons(&self, now: Instant) -> Vec<Reason> {
        let inputs = Inputs {
            starting: now.saturating_duration_since(self.started) < self.config.startup_delay,
            forced: self.faults.readiness_forced(now),
            cpu_stress_active: self.cpu.active() > 0,
            rss_bytes: sys::rss_bytes(),
            latency: self.latency.summary(now),
            shutting_down: self.shutting_down(),
        };
        let limits = Limits {
            fail_on_cpu_stress: self.config.ready_fail_on_cpu_stress,
            max_rss_bytes: self.config.max_rss_bytes(),
            max_latency: self.config.max_latency,
        };
        let reasons = readiness::evaluate(&inputs, &limits);
        self.metrics.pod_ready_status.set(i64::from(reasons.is_empty()));
        reasons
    }

    /// /ready is being served at `now` with these reasons: advance the
    /// detection and recovery timers and record what changed.
    pub fn readiness_served(&self, now: Instant, reasons: &[Reason]) {
        let chaos_active = self.registry.active() > 0;
        match self.tracker.served(now, reasons, chaos_active) {
            Transition::Unchanged => {}
            Transition::Degraded { detection } => {
                let secs = detection.map(|d| d.as_secs_f64());
                if let Some(s) = secs {
                    self.metrics.failure_to_readiness_failure_seconds.observe(s);
                }
                let texts: Vec<String> = reasons.iter().map(Reason::text).collect();
                self.events.emit(
                    Event::ReadinessDegraded,
                    json!({"reasons": texts, "detection_seconds": secs}),
                );
            }
            Transition::Recovered { after } => {
                let secs = after.as_secs_f64();
                self.metrics.readiness_failure_to_recovery_seconds.observe(secs);
                self.metrics.pod_recovery_count_total.inc();
                self.events.emit(Event::ReadinessRecovered, json!({"seconds": secs}));
            }
        }
    }
}

/// The pod name: `HOSTNAME` (Kubernetes and docker set it), else the kernel's
/// host name of our UTS namespace.
fn pod_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
pub mod testing {
    //! An `App` for handler unit tests: defaults, a private STATE_DIR, and
    //! events captured in memory.

    use super::*;
    use crate::observe::events::testing::Captured;
    use std::collections::HashMap;

    /// An App with `vars` over the defaults and a private STATE_DIR.
    pub fn app(name: &str, vars: &[(&str, &str)]) -> (App, Captured) {
        let dir = std::env::temp_dir().join(format!("chaos-backend-app-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        map.insert("STATE_DIR".into(), dir.display().to_string());
        let config = Config::from_lookup(|n| map.get(n).cloned()).unwrap();
        let captured = Captured::default();
        // Nothing reads `main`'s channel in a unit test: a send is dropped.
        let (to_main, _) = std::sync::mpsc::channel();
        let app = App::new(
            config,
            &[],
            Events::to_writer(Box::new(captured.clone())),
            Instant::now(),
            to_main,
        )
        .unwrap();
        (app, captured)
    }
}
