//! `App`: the state every handler shares, and the few operations that touch
//! several parts of it at once (readiness, start-up, shutdown); and
//! `Control`, what the rest of the process tells `main`.
//!
//! Nothing here blocks or spins: spin threads and the leak only touch their
//! own atomics and the metrics, never a lock a worker waits on for long.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use crate::chaos::cpu::CpuLoads;
use crate::chaos::crash_marker::{self, Crash};
use crate::chaos::disk::{DiskFill, EndReason};
use crate::chaos::faults::Faults;
use crate::chaos::guard::Guard;
use crate::chaos::memory::Leak;
use crate::chaos::random_crash::{self, RandomCrash};
use crate::chaos::registry::{Ended, FaultKind, Registry, Watcher};
use crate::chaos::startup::{self, Startup};
use crate::config::Config;
use crate::config::access::Access;
use crate::observe::events::{Event, Events};
use crate::observe::healing::{FaultEnd, Tracker, Transition};
use crate::observe::kept::{self, Healed, Kept};
use crate::observe::latency::LatencyWindow;
use crate::observe::metrics::{Endpoint, KnownLabels, Metrics};
use crate::observe::readiness::{self, Inputs, Limits, Reason};
use crate::observe::state_file::{self, Identity, StateFile};
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

/// What the ordered stop did, for its SHUTDOWN_FINISHED event.
#[derive(Debug, Default)]
pub struct ShutdownReport {
    /// Faults the stop ended (and undid).
    pub faults_stopped: usize,
    /// Workers still busy when the drain's time ran out (0: all finished).
    pub workers_busy: usize,
    /// Answers not yet written when the drain's time ran out (0: all sent).
    pub unwritten_answers: usize,
    /// From the signal to the exit.
    pub took: std::time::Duration,
}

pub struct App {
    pub config: Config,
    /// Shared with the threads that answer later (a leak made at once).
    pub metrics: Arc<Metrics>,
    /// Every running fault: the guardrails, GET /chaos, stop and DELETE.
    pub registry: Arc<Registry>,
    pub tracker: Arc<Tracker>,
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
    /// This process's boot and pod, written into every state file.
    pub identity: Identity,
    /// The crash marker of the previous life, taken at start-up.
    crash: Option<Crash>,
    /// What the start-up faults left this start: a crash loop that ended,
    /// a slow start to hold (`main` read them before the port was bound).
    pub startup: Startup,
    /// The slow start was ended early (`DELETE /fault/slowstart`).
    hold_lifted: AtomicBool,
    /// The random crash this life waits for (`RANDOM_CRASH_ENABLED`).
    pub random_crash: Option<Arc<RandomCrash>>,
    pub access: Access,
    shutting_down: AtomicBool,
    /// `main`'s channel: a deliberate panic must happen on the main thread.
    pub to_main: Sender<Control>,
}

impl App {
    /// `access` is the token's rule (read before the port was bound);
    /// `endpoints` are the HTTP series that exist from start-up (the route
    /// table's, which `main` hands over); `to_main` is `main`'s channel;
    /// `startup` what the start-up faults left this start.
    pub fn new(
        config: Config,
        access: Access,
        endpoints: &[Endpoint],
        events: Events,
        started: Instant,
        to_main: Sender<Control>,
        startup: Startup,
    ) -> Result<App, prometheus::Error> {
        let state_dir_ok = match state_file::prepare_dir(&config.state_dir) {
            Ok(()) => true,
            Err(e) => {
                log::warn!(
                    "{e}; the crash marker will not be written, crash_to_startup_seconds cannot be measured, and the healing figures will not survive a restart"
                );
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
        let mut fault_ends = faults.clone();
        fault_ends.push(crash_marker::FAULT_LABEL);
        fault_ends.push(startup::FAULT_LABEL);
        let disk_fill_ends: Vec<&str> = EndReason::ALL.iter().map(|r| r.label()).collect();
        let metrics = Metrics::new(&KnownLabels {
            endpoints,
            faults: &faults,
            fault_ends: &fault_ends,
            disk_fill_ends: &disk_fill_ends,
        })?;
        let pod = pod_name();
        let identity = Identity::current(&pod);
        let tracker = Arc::new(Tracker::default());
        let events = Arc::new(events);
        let crash = if state_dir_ok {
            // One moment on both clocks: a death is in wall-clock time, the
            // readiness timers in monotonic time.
            let (now, now_instant) = (SystemTime::now(), Instant::now());
            let previous = metrics.healing.keep_in(
                StateFile::new(&config.state_dir, kept::FILE, kept::KIND, identity.clone()),
                now,
            );
            let crash = match crash_marker::take_marker(&config.state_dir, identity.clone(), now) {
                Ok(found) => found,
                Err(e) => {
                    log::warn!("{e}");
                    None
                }
            };
            // The death that ended the previous life ended its fault too:
            // recovery from it is timed to this life's first 200. A crash
            // loop's, from its last failing start.
            let loop_end = startup.loop_ended.as_ref().and_then(|l| l.last_failed_at);
            let death = match (&crash, previous) {
                (Some(c), _) => Some((crash_marker::FAULT_LABEL, c.crashed_at())),
                (None, _) if loop_end.is_some() => loop_end.map(|at| (startup::FAULT_LABEL, at)),
                (None, Some(life)) => {
                    log::info!(
                        "the previous life ended ({}) with a {} fault running",
                        life.how,
                        life.fault
                    );
                    Some((life.fault, life.died_at))
                }
                (None, None) => None,
            };
            if let Some((fault, died_at)) = death {
                let ago = now.duration_since(died_at).unwrap_or(Duration::ZERO);
                let at = now_instant.checked_sub(ago).unwrap_or(now_instant);
                tracker.died(fault, at);
            }
            crash
        } else {
            None
        };
        if let Err(e) = metrics.healing.spawn_heartbeat() {
            log::warn!("cannot start the healing heartbeat: {e}; an OOM kill's time will not be known");
        }
        let watch = Arc::new(FaultWatch {
            tracker: Arc::clone(&tracker),
            healing: Arc::clone(&metrics.healing),
            events: Arc::clone(&events),
        });
        metrics
            .readiness_max_memory_bytes
            .set(i64::try_from(config.max_rss_bytes()).unwrap_or(i64::MAX));
        metrics
            .readiness_max_latency_seconds
            .set(config.max_latency.as_secs_f64());
        match &access {
            Access::Closed(why) => log::warn!("chaos endpoints closed: {why}"),
            Access::Open if config.chaos_enabled => {
                log::info!("chaos endpoints are open to anyone who reaches the port (no CHAOS_TOKEN)")
            }
            _ => {}
        }
        let registry = Registry::watched(Guard::new(config.max_concurrent_chaos, config.chaos_cooldown), watch);
        let random_crash = match (config.random_crash_enabled, config.chaos_enabled) {
            (true, false) => {
                log::warn!("RANDOM_CRASH_ENABLED=true has no effect: CHAOS_ENABLED=false");
                None
            }
            (true, true) => {
                let planned = random_crash::plan(
                    &config.state_dir,
                    identity.clone(),
                    config.random_crash_seed,
                    config.random_crash_mean,
                    SystemTime::now() - started.elapsed(),
                );
                match RandomCrash::start(
                    planned,
                    config.state_dir.clone(),
                    identity.clone(),
                    Arc::clone(&registry),
                    Arc::clone(&events),
                ) {
                    Ok(timer) => Some(timer),
                    Err(e) => {
                        log::error!("cannot start the random crash timer: {e}; no random crash will happen");
                        None
                    }
                }
            }
            (false, _) => None,
        };
        Ok(App {
            access,
            metrics: Arc::new(metrics),
            registry,
            startup,
            hold_lifted: AtomicBool::new(false),
            random_crash,
            tracker,
            latency: LatencyWindow::new(started, config.latency_window, config.max_latency),
            cpu: Arc::new(CpuLoads::default()),
            leak: Arc::new(Leak::default()),
            faults: Arc::new(Faults::default()),
            disk: Arc::new(disk),
            events,
            started,
            pod,
            identity,
            crash,
            shutting_down: AtomicBool::new(false),
            to_main,
            config,
        })
    }

    /// Start-up bookkeeping: crash to start-up (from the marker taken at
    /// start), the recovery counter, and the POD_STARTED event. `listen` is
    /// the bound address,
    /// `probe_listen` the probe listener's (None: `PROBE_PORT=off`).
    pub fn record_start(&self, listen: &str, probe_listen: Option<&str>) {
        let crash_to_startup = self.crash.as_ref().map(|c| {
            let elapsed = c.elapsed_until(SystemTime::now());
            log::info!(
                "started {:.3} s after a deliberate crash ({})",
                elapsed.as_secs_f64(),
                c.mode
            );
            elapsed
        });
        let mut changes = vec![Healed::Started];
        changes.extend(crash_to_startup.map(Healed::CrashToStartup));
        let crash_loop = self.startup.loop_ended.as_ref().map(|l| {
            let took = l
                .first_failed_at
                .map(|first| SystemTime::now().duration_since(first).unwrap_or(Duration::ZERO));
            log::info!(
                "started after a crash loop of {} failing start(s){}",
                l.failed_starts,
                took.map_or(String::new(), |t| format!(", {:.3} s after the first", t.as_secs_f64()))
            );
            (l.failed_starts, took)
        });
        changes.extend(crash_loop.map(|(starts, took)| Healed::CrashLoop { starts, took }));
        self.metrics.healing.record(&changes);
        self.events.emit(
            Event::PodStarted,
            json!({
                "listen": listen,
                "probe_listen": probe_listen,
                "pod": self.pod,
                "version": env!("CARGO_PKG_VERSION"),
                "workers": self.config.workers,
                "crash_to_startup_seconds": crash_to_startup.map(|d| d.as_secs_f64()),
                "crash_mode": self.crash.as_ref().map(|c| c.mode.clone()),
                "crashloop_starts": crash_loop.map(|(n, _)| n),
                "crashloop_ms": crash_loop.and_then(|(_, t)| t).map(|t| t.as_millis() as u64),
                "slow_start_s": self.startup.hold.as_ref().map(|h| h.seconds),
                "startup_ms": self.started.elapsed().as_secs_f64() * 1000.0,
            }),
        );
    }

    /// The last step of a stop: the healing figures record that this life
    /// ended now, with the faults that ran when the stop began.
    pub fn record_stop(&self) {
        self.metrics.healing.stopped();
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// First step of the ordered stop: no fault starts from now on (the
    /// registry is closed: 503 naming `signal`), and /ready fails.
    pub fn begin_shutdown(&self, signal: &str) {
        self.registry.close(signal);
        if let Some(timer) = &self.random_crash {
            timer.stop(signal);
        }
        self.shutting_down.store(true, Ordering::SeqCst);
        self.metrics.healing.stopping();
        self.metrics.pod_ready_status.set(0);
        self.events.emit(
            Event::ShutdownStarted,
            json!({"signal": signal, "delay_seconds": self.config.shutdown_delay.as_secs()}),
        );
    }

    /// Last step of the ordered stop, before the exit: what it did.
    pub fn finish_shutdown(&self, signal: &str, report: &ShutdownReport) {
        self.events.emit(
            Event::ShutdownFinished,
            json!({
                "signal": signal,
                "faults_stopped": report.faults_stopped,
                "workers_busy": report.workers_busy,
                "unwritten_answers": report.unwritten_answers,
                "seconds": report.took.as_secs_f64(),
            }),
        );
    }

    /// Why /health and /ready are held at `now`, during a slow start.
    pub fn held(&self, now: Instant) -> Option<String> {
        let hold = self.startup.hold.as_ref()?;
        let until = self.started + Duration::from_secs(hold.seconds);
        if now >= until || self.hold_lifted.load(Ordering::SeqCst) {
            return None;
        }
        Some(format!(
            "slow start: held for {} s ({}), {:.1} s left",
            hold.seconds,
            hold.source,
            until.saturating_duration_since(now).as_secs_f64()
        ))
    }

    /// Ends this life's slow start now; whether one was being held.
    pub fn lift_hold(&self, now: Instant) -> bool {
        let held = self.held(now).is_some();
        self.hold_lifted.store(true, Ordering::SeqCst);
        held
    }

    /// Every failing readiness check at `now`; also sets `pod_ready_status`.
    pub fn readiness_reasons(&self, now: Instant) -> Vec<Reason> {
        let inputs = Inputs {
            starting: now.saturating_duration_since(self.started) < self.config.startup_delay,
            slow_start: self.held(now).is_some(),
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
                if let Some(d) = detection {
                    self.metrics.healing.record(&[Healed::Detected(d)]);
                }
                let texts: Vec<String> = reasons.iter().map(Reason::text).collect();
                self.events.emit(
                    Event::ReadinessDegraded,
                    json!({"reasons": texts, "detection_seconds": secs}),
                );
            }
            Transition::Recovered { after, fault_end } => {
                let mut changes = vec![Healed::Recovered(after)];
                changes.extend(fault_end.map(Healed::FaultEnd));
                self.metrics.healing.record(&changes);
                self.events
                    .emit(Event::ReadinessRecovered, json!({"seconds": after.as_secs_f64()}));
                if let Some(end) = fault_end {
                    emit_fault_recovered(&self.events, end);
                }
            }
            Transition::ReadyAfterDeath { fault_end } => {
                self.metrics.healing.record(&[Healed::FaultEnd(fault_end)]);
                emit_fault_recovered(&self.events, fault_end);
            }
        }
    }
}

/// What the registry tells of each fault's start and end, for the healing
/// figures: recovery is timed from a fault's end, and the running faults
/// are kept across a death.
struct FaultWatch {
    tracker: Arc<Tracker>,
    healing: Arc<Kept>,
    events: Arc<Events>,
}

impl Watcher for FaultWatch {
    fn started(&self, kind: FaultKind) {
        self.healing.fault_started(kind.label());
    }

    fn ended(&self, kind: FaultKind, ended: Ended, at: Instant) {
        // A replaced fault's cause goes on in its successor.
        if ended != Ended::Replaced
            && let Some(end) = self.tracker.fault_ended(kind.label(), at)
        {
            self.healing.record(&[Healed::FaultEnd(end)]);
            emit_fault_recovered(&self.events, end);
        }
        self.healing.fault_ended(kind.label());
    }
}

fn emit_fault_recovered(events: &Events, end: FaultEnd) {
    events.emit(
        Event::FaultRecovered,
        json!({"fault": end.fault, "seconds": end.after.as_secs_f64()}),
    );
}

/// The pod name: `HOSTNAME` (Kubernetes and docker set it), else the kernel's
/// host name of our UTS namespace.
pub fn pod_name() -> String {
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
        let access = Access::from_source(&config.chaos_token).unwrap();
        let app = App::new(
            config,
            access,
            &[],
            Events::to_writer(Box::new(captured.clone())),
            Instant::now(),
            to_main,
            Startup::default(),
        )
        .unwrap();
        (app, captured)
    }
}
