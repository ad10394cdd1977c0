//! The healing figures that outlive the process: `pod_recovery_count_total`
//! and the histograms of detection, degraded time, recovery from a fault's
//! end and crash to start-up. They are kept in one state file
//! (`STATE_DIR/healing.json`, `observe::state_file`) and restored at the
//! next start, so that a container's restarts add to them instead of
//! resetting them: Prometheus sees a counter reset only when a value goes
//! down, and a count that is 1 in every life of a crashing process never
//! increases. A new `STATE_DIR` (a new pod) starts from zero.
//!
//! Every change is written to the file before a scrape can see it (one
//! lock covers the change, the write and `collect`), so no scrape ever sees
//! a value that the next life would take back.
//!
//! The file also holds the current life: which faults run, rewritten every
//! [`HEARTBEAT_WITH_FAULT`] while one does (every [`HEARTBEAT_IDLE`]
//! otherwise, so the file's age says the process lives), and when a stop
//! ended it (the faults running when the stop began end with it). The next start learns from it when a fault ended with the
//! process: a liveness fault when the kubelet stopped it (the stop's time),
//! a leak when the OOM killer ended it (no stop was written: the last
//! heartbeat, plus half its period).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use prometheus::core::{Collector, Desc};
use prometheus::proto;
use serde_json::{Map, Value};

use crate::observe::events::unix_ms;
use crate::observe::healing::FaultEnd;
use crate::observe::state_file::{Loaded, StateFile, time_field};

/// Healing-time buckets in seconds: from a fast probe to a slow CrashLoopBackOff.
pub const HEALING_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0, 600.0,
];
/// Crash-to-start-up buckets: a local restart takes milliseconds, a pod seconds.
pub const STARTUP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// The life record's period while a fault runs: an OOM kill's time is
/// known to within this.
pub const HEARTBEAT_WITH_FAULT: Duration = Duration::from_millis(200);
/// The life record's period otherwise: well inside the window in which a
/// state file still belongs to the previous life.
pub const HEARTBEAT_IDLE: Duration = Duration::from_secs(10);

/// The file, and the kind it holds.
pub const FILE: &str = "healing.json";
pub const KIND: &str = "healing";

const RECOVERIES: &str = "pod_recovery_count_total";
const CRASHLOOP_STARTS: &str = "crashloop_starts_total";
const DETECTION: usize = 0;
const DEGRADED: usize = 1;
const CRASH_TO_STARTUP: usize = 2;
const FAULT_END: usize = 3;
const CRASHLOOP: usize = 4;

/// The histogram families, in the order above: name, help, buckets, label.
const HISTOGRAMS: [(&str, &str, &[f64], Option<&str>); 5] = [
    (
        "failure_to_readiness_failure_seconds",
        "Detection: from a chaos action being accepted to the first 503 served by /ready.",
        HEALING_BUCKETS,
        None,
    ),
    (
        "readiness_failure_to_recovery_seconds",
        "Degraded time: from the first 503 served by /ready to the next 200.",
        HEALING_BUCKETS,
        None,
    ),
    (
        "crash_to_startup_seconds",
        "From the crash marker written before a deliberate crash to the next start-up.",
        STARTUP_BUCKETS,
        None,
    ),
    (
        "fault_end_to_recovery_seconds",
        "Recovery: from a fault's end (its time ran out, it was stopped or released, or the process died with it) to the next 200 served by /ready, by fault.",
        HEALING_BUCKETS,
        Some("fault"),
    ),
    (
        "crashloop_to_healthy_start_seconds",
        "A crash loop (POST /fault/crashloop): from its first failing start to the start that served.",
        HEALING_BUCKETS,
        None,
    ),
];

/// One change to the kept figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Healed {
    /// A start-up: `pod_recovery_count_total` +1.
    Started,
    /// Detection time (chaos accepted to the first 503).
    Detected(Duration),
    /// A flip of /ready back to 200 after this long degraded:
    /// `readiness_failure_to_recovery_seconds`, and a recovery counted.
    Recovered(Duration),
    CrashToStartup(Duration),
    /// `fault_end_to_recovery_seconds{fault}`.
    FaultEnd(FaultEnd),
    /// A crash loop ended: `crashloop_starts_total` + `starts`, and the
    /// time from its first failing start to this start, if one failed.
    CrashLoop {
        starts: u64,
        took: Option<Duration>,
    },
}

/// How the previous life ended, when a fault ended with it.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviousLife {
    /// The fault it died with (its label); a leak before any other.
    pub fault: &'static str,
    pub died_at: SystemTime,
    /// `stopped` (SIGTERM: the stop's time) or `killed` (no stop written:
    /// the last heartbeat plus half its period).
    pub how: &'static str,
}

/// One histogram: a count per bucket (the last is +Inf) and the sum.
#[derive(Debug, Clone, PartialEq)]
struct Counts {
    buckets: Vec<u64>,
    sum: f64,
}

impl Counts {
    fn new(bounds: &[f64]) -> Counts {
        Counts {
            buckets: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    fn observe(&mut self, bounds: &[f64], v: f64) {
        let i = bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len());
        // Saturating: a count restored from a file may be anything a u64
        // holds, and a wrap would read to Prometheus as a reset.
        self.buckets[i] = self.buckets[i].saturating_add(1);
        self.sum += v;
    }

    fn count(&self) -> u64 {
        self.buckets.iter().fold(0, |total, n| total.saturating_add(*n))
    }

    /// The counts saved as `[sum, count, count, ...]`, if there are `n`
    /// counts and a sum that can be one.
    fn from_json(v: &Value, n: usize) -> Option<Counts> {
        let (sum, counts) = v.as_array()?.split_first()?;
        let sum = sum.as_f64().filter(|s| s.is_finite() && *s >= 0.0)?;
        let buckets: Vec<u64> = counts.iter().map(Value::as_u64).collect::<Option<_>>()?;
        (buckets.len() == n).then_some(Counts { buckets, sum })
    }

    fn proto(&self, bounds: &[f64]) -> proto::Histogram {
        let mut h = proto::Histogram::default();
        let mut cumulative = 0;
        let buckets = bounds
            .iter()
            .zip(&self.buckets)
            .map(|(bound, n)| {
                cumulative = n.saturating_add(cumulative);
                let mut b = proto::Bucket::default();
                b.set_upper_bound(*bound);
                b.set_cumulative_count(cumulative);
                b
            })
            .collect();
        h.set_bucket(buckets);
        h.set_sample_count(self.count());
        h.set_sample_sum(self.sum);
        h
    }
}

/// The figures themselves.
#[derive(Debug)]
struct Figures {
    recoveries: u64,
    /// Starts that failed in a crash loop.
    crashloop_starts: u64,
    /// Per family of [`HISTOGRAMS`]: each series, by label value ("" for
    /// a family without a label). A few series each: a list, not a map
    /// (every map type is code the image carries).
    histograms: Vec<Vec<(&'static str, Counts)>>,
}

/// The current life, as the file records it.
#[derive(Debug)]
struct Life {
    started_at: SystemTime,
    /// Running faults, by label, and how many of each.
    faults: Vec<(&'static str, usize)>,
    /// The stop began (SIGTERM): the faults running then end with the
    /// process, so they stay listed as its faults.
    stopping: bool,
    stopped_at: Option<SystemTime>,
}

impl Life {
    fn running(&self) -> Vec<&'static str> {
        self.faults.iter().filter(|(_, n)| *n > 0).map(|(k, _)| *k).collect()
    }
}

struct State {
    figures: Figures,
    life: Life,
    /// Where the figures are kept; `None`: in memory only (no writable
    /// STATE_DIR, or before `keep_in`).
    file: Option<StateFile>,
    /// Whether a failed write was logged (once, not at every change).
    write_failed: bool,
}

/// The kept figures; also the Prometheus collector of their families.
pub struct Kept {
    state: Mutex<State>,
    wake: Condvar,
    descs: Vec<Desc>,
    /// The `fault` label's values: each series exists from start-up.
    fault_labels: Vec<&'static str>,
}

impl Kept {
    /// Figures at zero, kept in memory until [`Kept::keep_in`].
    pub fn new(fault_labels: &[&'static str]) -> Result<Kept, prometheus::Error> {
        let mut descs = vec![Desc::new(
            RECOVERIES.into(),
            "Start-ups plus flips of /ready from 503 back to 200.".into(),
            vec![],
            HashMap::new(),
        )?];
        let mut histograms = Vec::new();
        for (name, help, bounds, label) in HISTOGRAMS {
            descs.push(Desc::new(
                name.into(),
                help.into(),
                label.iter().map(|l| l.to_string()).collect(),
                HashMap::new(),
            )?);
            let series: Vec<(&'static str, Counts)> = match label {
                Some(_) => fault_labels.iter().map(|l| (*l, Counts::new(bounds))).collect(),
                None => vec![("", Counts::new(bounds))],
            };
            histograms.push(series);
        }
        descs.push(Desc::new(
            CRASHLOOP_STARTS.into(),
            "Starts that failed on purpose in a crash loop (POST /fault/crashloop), kept across restarts.".into(),
            vec![],
            HashMap::new(),
        )?);
        Ok(Kept {
            state: Mutex::new(State {
                figures: Figures {
                    recoveries: 0,
                    crashloop_starts: 0,
                    histograms,
                },
                life: Life {
                    started_at: SystemTime::now(),
                    faults: Vec::new(),
                    stopping: false,
                    stopped_at: None,
                },
                file: None,
                write_failed: false,
            }),
            wake: Condvar::new(),
            descs,
            fault_labels: fault_labels.to_vec(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps the figures in `file` from now on: restores what the previous
    /// life of this container left there (a file of another life, a
    /// corrupt or a foreign one is logged and ignored; a foreign one is set
    /// aside, not overwritten), writes this life's record, and says how the
    /// previous life ended if a fault ended with it.
    pub fn keep_in(&self, file: StateFile, now: SystemTime) -> Option<PreviousLife> {
        let path = file.path();
        let mut previous = None;
        {
            let mut state = self.lock();
            match file.load(now) {
                Loaded::Missing => log::info!("no healing figures in {}: counting from zero", path.display()),
                Loaded::Ignored { reason, ours } => {
                    log::warn!(
                        "healing figures in {} ignored: it {reason}; counting from zero",
                        path.display()
                    );
                    if !ours {
                        match file.set_aside() {
                            Ok(aside) => log::warn!("{} moved to {}", path.display(), aside.display()),
                            Err(e) => log::warn!("cannot move {} aside: {e}", path.display()),
                        }
                    }
                }
                Loaded::Found(fields, written) => {
                    self.restore(&mut state.figures, &fields, &path);
                    previous = self.previous_life(&fields, written);
                    log::info!(
                        "healing figures restored from {}: {} recoveries, {} crashes to start-up",
                        path.display(),
                        state.figures.recoveries,
                        state.figures.histograms[CRASH_TO_STARTUP][0].1.count()
                    );
                }
            }
            state.life.started_at = now;
            state.file = Some(file);
            self.write(&mut state);
        }
        previous
    }

    /// Puts the counts of `fields` into `figures`, series by series; a
    /// series that does not fit this binary is logged and left at zero.
    fn restore(&self, figures: &mut Figures, fields: &Map<String, Value>, path: &std::path::Path) {
        // `get`, not `fields["figures"]`: indexing a `Map` panics on a
        // missing key, and a file of ours without it would stop every start.
        let saved = fields.get("figures").unwrap_or(&Value::Null);
        match saved[RECOVERIES].as_u64() {
            Some(n) => figures.recoveries = n,
            None => log::warn!("{}: {RECOVERIES} missing or not a count: from zero", path.display()),
        }
        // Absent from files written before crash loops were counted: zero.
        figures.crashloop_starts = saved[CRASHLOOP_STARTS].as_u64().unwrap_or(0);
        for (i, (name, _, bounds, _)) in HISTOGRAMS.iter().enumerate() {
            let family = &saved["histograms"][name];
            if family.is_null() {
                // A family the binary that wrote the file did not have.
                continue;
            }
            let saved_bounds: Option<Vec<f64>> = family["bounds"]
                .as_array()
                .and_then(|a| a.iter().map(Value::as_f64).collect());
            if saved_bounds.as_deref() != Some(*bounds) {
                log::warn!(
                    "{}: {name} from zero: its buckets are not this binary's",
                    path.display()
                );
                continue;
            }
            for (label, counts) in figures.histograms[i].iter_mut() {
                match Counts::from_json(&family[*label], bounds.len() + 1) {
                    Some(c) => *counts = c,
                    None => log::warn!("{}: {name}{{{label}}} from zero: no valid counts", path.display()),
                }
            }
        }
    }

    /// How the life recorded in `fields` ended, if a fault ended with it.
    fn previous_life(&self, fields: &Map<String, Value>, written: SystemTime) -> Option<PreviousLife> {
        let life = fields.get("life").unwrap_or(&Value::Null);
        let labels = |key: &str| -> Vec<&'static str> {
            life[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter_map(|s| self.fault_labels.iter().find(|l| **l == s).copied())
                .collect()
        };
        let faults = labels("faults");
        // The stop's time is written with the file: one far from it is
        // garbage, and would be kept in fault_end_to_recovery_seconds.
        let stopped_at = time_field(
            "stopped_at_unix_ms",
            life.get("stopped_at_unix_ms"),
            written,
            Duration::ZERO,
        )
        .unwrap_or_else(|why| {
            log::warn!("the healing file's life record {why}: timed as a kill, from the file's own time");
            None
        });
        let (died_at, how) = match stopped_at {
            Some(at) => (at, "stopped"),
            None => (written + HEARTBEAT_WITH_FAULT / 2, "killed"),
        };
        let fault = faults
            .iter()
            .find(|f| **f == "memory")
            .or_else(|| faults.first())
            .copied()?;
        Some(PreviousLife { fault, died_at, how })
    }

    /// Applies `changes` and keeps them, in one write.
    #[inline(never)]
    pub fn record(&self, changes: &[Healed]) {
        let mut state = self.lock();
        let figures = &mut state.figures;
        for change in changes {
            let (family, label, secs) = match *change {
                Healed::Started => {
                    figures.recoveries = figures.recoveries.saturating_add(1);
                    continue;
                }
                Healed::Detected(d) => (DETECTION, "", d),
                Healed::Recovered(d) => {
                    figures.recoveries = figures.recoveries.saturating_add(1);
                    (DEGRADED, "", d)
                }
                Healed::CrashToStartup(d) => (CRASH_TO_STARTUP, "", d),
                Healed::FaultEnd(end) => (FAULT_END, end.fault, end.after),
                Healed::CrashLoop { starts, took } => {
                    figures.crashloop_starts = figures.crashloop_starts.saturating_add(starts);
                    match took {
                        Some(d) => (CRASHLOOP, "", d),
                        None => continue,
                    }
                }
            };
            match figures.histograms[family].iter_mut().find(|(l, _)| *l == label) {
                Some((_, counts)) => counts.observe(HISTOGRAMS[family].2, secs.as_secs_f64()),
                None => log::error!("{} has no series {label:?}", HISTOGRAMS[family].0),
            }
        }
        self.write(&mut state);
    }

    /// A fault of this label started. (Not inlined, nor is `fault_ended`:
    /// the registry's start is generic over each fault's launch, and LTO
    /// would copy them into every one; the image has a size goal.)
    #[inline(never)]
    pub fn fault_started(&self, fault: &'static str) {
        let mut state = self.lock();
        match state.life.faults.iter_mut().find(|(f, _)| *f == fault) {
            Some((_, n)) => *n += 1,
            None => state.life.faults.push((fault, 1)),
        }
        self.write(&mut state);
        self.wake.notify_all();
    }

    /// A fault of this label ended.
    #[inline(never)]
    pub fn fault_ended(&self, fault: &'static str) {
        let mut state = self.lock();
        if state.life.stopping {
            return;
        }
        if let Some((_, n)) = state.life.faults.iter_mut().find(|(f, _)| *f == fault) {
            *n = n.saturating_sub(1);
        }
        self.write(&mut state);
    }

    /// The stop began (SIGTERM): the faults running now end with it.
    pub fn stopping(&self) {
        self.lock().life.stopping = true;
    }

    /// The process is about to exit: the stop's time, and no more heartbeats.
    pub fn stopped(&self) {
        let mut state = self.lock();
        state.life.stopping = true;
        state.life.stopped_at = Some(SystemTime::now());
        self.write(&mut state);
        self.wake.notify_all();
    }

    /// Starts the thread that rewrites the life record: every
    /// [`HEARTBEAT_WITH_FAULT`] while a fault runs, else every
    /// [`HEARTBEAT_IDLE`]; it ends once the process has stopped.
    pub fn spawn_heartbeat(self: &Arc<Self>) -> std::io::Result<()> {
        let kept = Arc::clone(self);
        std::thread::Builder::new()
            .name("healing-heartbeat".into())
            .spawn(move || {
                let mut state = kept.lock();
                while state.life.stopped_at.is_none() {
                    let period = if state.life.running().is_empty() {
                        HEARTBEAT_IDLE
                    } else {
                        HEARTBEAT_WITH_FAULT
                    };
                    state = kept
                        .wake
                        .wait_timeout(state, period)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    if state.life.stopped_at.is_none() {
                        kept.write(&mut state);
                    }
                }
            })
            .map(|_| ())
    }

    /// Writes everything to the file, if there is one. A failure is logged
    /// once; the figures go on in memory. Not inlined: every fault's start
    /// and end, and /ready's flips, call it.
    #[inline(never)]
    fn write(&self, state: &mut State) {
        let Some(file) = &state.file else { return };
        let fields = fields_text(&state.figures, &state.life);
        match file.write(&fields, SystemTime::now(), false) {
            Ok(()) => state.write_failed = false,
            Err(e) if !state.write_failed => {
                log::warn!("cannot keep the healing figures in {}: {e}", file.path().display());
                state.write_failed = true;
            }
            Err(_) => {}
        }
    }

    /// The count and sum of one histogram series (`label` "" for a family
    /// without one), for tests.
    #[cfg(test)]
    pub fn sample(&self, family: &str, label: &str) -> (u64, f64) {
        let state = self.lock();
        let i = HISTOGRAMS.iter().position(|h| h.0 == family).expect("a kept histogram");
        let counts = &state.figures.histograms[i]
            .iter()
            .find(|(l, _)| *l == label)
            .expect("a series")
            .1;
        (counts.count(), counts.sum)
    }
}

/// The state file's fields: `figures` (the counter; per histogram its
/// bounds, and per series `[sum, count per bucket ...]`, +Inf last) and
/// `life`. Written as text: every name and label is one of this binary's
/// (no escaping needed), and numbers print as JSON numbers.
fn fields_text(figures: &Figures, life: &Life) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(4096);
    let _ = write!(
        out,
        "{{\"figures\":{{\"{RECOVERIES}\":{},\"{CRASHLOOP_STARTS}\":{},\"histograms\":{{",
        figures.recoveries, figures.crashloop_starts
    );
    for (i, (name, _, bounds, _)) in HISTOGRAMS.iter().enumerate() {
        let _ = write!(
            out,
            "{}\"{name}\":{{\"bounds\":{bounds:?}",
            if i > 0 { "," } else { "" }
        );
        for (label, counts) in &figures.histograms[i] {
            let _ = write!(out, ",\"{label}\":[{:?}", counts.sum);
            for n in &counts.buckets {
                let _ = write!(out, ",{n}");
            }
            out.push(']');
        }
        out.push('}');
    }
    let _ = write!(
        out,
        "}}}},\"life\":{{\"pid\":{},\"started_at_unix_ms\":{},\"faults\":{},\"stopped_at_unix_ms\":{}}}}}",
        std::process::id(),
        unix_ms(life.started_at),
        labels_text(&life.running()),
        life.stopped_at.map_or("null".to_string(), |t| unix_ms(t).to_string()),
    );
    out
}

/// `["cpu","memory"]`.
fn labels_text(labels: &[&str]) -> String {
    let mut out = String::from("[");
    for (i, l) in labels.iter().enumerate() {
        out.push_str(if i > 0 { ",\"" } else { "\"" });
        out.push_str(l);
        out.push('"');
    }
    out.push(']');
    out
}

/// The Prometheus side of [`Kept`]: its families, read under its lock.
#[derive(Clone)]
pub struct KeptCollector(pub Arc<Kept>);

impl Collector for KeptCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.0.descs.iter().collect()
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        let state = self.0.lock();
        let mut families = Vec::new();
        let mut counter = proto::Counter::default();
        counter.set_value(state.figures.recoveries as f64);
        let mut metric = proto::Metric::default();
        metric.set_counter(counter);
        families.push(family(&self.0.descs[0], proto::MetricType::COUNTER, vec![metric]));
        for (i, (_, _, bounds, label)) in HISTOGRAMS.iter().enumerate() {
            let metrics = state.figures.histograms[i]
                .iter()
                .map(|(value, counts)| {
                    let mut m = proto::Metric::default();
                    if let Some(name) = label {
                        let mut pair = proto::LabelPair::default();
                        pair.set_name(name.to_string());
                        pair.set_value(value.to_string());
                        m.set_label(vec![pair]);
                    }
                    m.set_histogram(counts.proto(bounds));
                    m
                })
                .collect();
            families.push(family(&self.0.descs[i + 1], proto::MetricType::HISTOGRAM, metrics));
        }
        let mut counter = proto::Counter::default();
        counter.set_value(state.figures.crashloop_starts as f64);
        let mut metric = proto::Metric::default();
        metric.set_counter(counter);
        families.push(family(
            &self.0.descs[HISTOGRAMS.len() + 1],
            proto::MetricType::COUNTER,
            vec![metric],
        ));
        families
    }
}

fn family(desc: &Desc, kind: proto::MetricType, metrics: Vec<proto::Metric>) -> proto::MetricFamily {
    let mut f = proto::MetricFamily::default();
    f.set_name(desc.fq_name.clone());
    f.set_help(desc.help.clone());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::state_file::testing::{identity as me, temp_dir};
    use prometheus::{Encoder, Registry, TextEncoder};

    const FAULTS: &[&str] = &["cpu", "memory", "liveness", "crash"];

    fn render(kept: &Arc<Kept>) -> String {
        let registry = Registry::new();
        registry.register(Box::new(KeptCollector(Arc::clone(kept)))).unwrap();
        let mut out = Vec::new();
        TextEncoder::new().encode(&registry.gather(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn file(dir: &std::path::Path) -> StateFile {
        StateFile::new(dir, FILE, KIND, me())
    }

    #[test]
    fn exported_like_the_crates_own_histograms() {
        let kept = Arc::new(Kept::new(FAULTS).unwrap());
        kept.record(&[
            Healed::Started,
            Healed::CrashToStartup(Duration::from_millis(300)),
            Healed::FaultEnd(FaultEnd {
                fault: "memory",
                after: Duration::from_millis(700),
            }),
        ]);
        let text = render(&kept);
        for line in [
            "# TYPE pod_recovery_count_total counter",
            "pod_recovery_count_total 1",
            "# TYPE crash_to_startup_seconds histogram",
            "crash_to_startup_seconds_bucket{le=\"0.25\"} 0",
            "crash_to_startup_seconds_bucket{le=\"0.5\"} 1",
            "crash_to_startup_seconds_bucket{le=\"+Inf\"} 1",
            "crash_to_startup_seconds_sum 0.3",
            "crash_to_startup_seconds_count 1",
            "fault_end_to_recovery_seconds_bucket{fault=\"memory\",le=\"1\"} 1",
            "fault_end_to_recovery_seconds_count{fault=\"memory\"} 1",
            "fault_end_to_recovery_seconds_count{fault=\"cpu\"} 0",
            "readiness_failure_to_recovery_seconds_count 0",
            "failure_to_readiness_failure_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn a_restart_adds_to_the_figures_of_the_previous_life() {
        let dir = temp_dir("kept-restart");
        let first = Kept::new(FAULTS).unwrap();
        assert_eq!(first.keep_in(file(&dir), SystemTime::now()), None);
        first.record(&[Healed::Started, Healed::Recovered(Duration::from_secs(2))]);
        first.record(&[Healed::CrashToStartup(Duration::from_millis(400))]);
        drop(first);
        let second = Arc::new(Kept::new(FAULTS).unwrap());
        second.keep_in(file(&dir), SystemTime::now());
        second.record(&[Healed::Started, Healed::CrashToStartup(Duration::from_millis(600))]);
        let text = render(&second);
        assert!(text.contains("pod_recovery_count_total 3"), "{text}");
        assert!(text.contains("crash_to_startup_seconds_count 2"), "{text}");
        assert!(text.contains("crash_to_startup_seconds_sum 1"), "{text}");
        assert!(text.contains("readiness_failure_to_recovery_seconds_sum 2"), "{text}");
        // A new STATE_DIR, a new pod: from zero.
        let fresh = Arc::new(Kept::new(FAULTS).unwrap());
        fresh.keep_in(file(&temp_dir("kept-fresh")), SystemTime::now());
        assert!(render(&fresh).contains("pod_recovery_count_total 0"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_foreign_file_is_set_aside_and_a_bad_series_starts_from_zero() {
        let dir = temp_dir("kept-foreign");
        std::fs::write(dir.join(FILE), "my notes, not yours").unwrap();
        let kept = Kept::new(FAULTS).unwrap();
        kept.keep_in(file(&dir), SystemTime::now());
        assert_eq!(
            std::fs::read_to_string(dir.join("healing.json.ignored")).unwrap(),
            "my notes, not yours",
            "kept, not overwritten"
        );
        kept.record(&[Healed::Recovered(Duration::from_secs(1))]);
        drop(kept);
        // Buckets of another binary: that series only starts from zero.
        let path = dir.join(FILE);
        let text = std::fs::read_to_string(&path).unwrap().replace("0.05,", "0.06,");
        std::fs::write(&path, text).unwrap();
        let kept = Kept::new(FAULTS).unwrap();
        kept.keep_in(file(&dir), SystemTime::now());
        assert_eq!(kept.sample("readiness_failure_to_recovery_seconds", ""), (0, 0.0));
        assert!(render(&Arc::new(kept)).contains("pod_recovery_count_total 1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_previous_life_says_which_fault_ended_with_it() {
        let dir = temp_dir("kept-life");
        let now = SystemTime::now();
        // Killed while leaking: no stop, the last heartbeat plus half a period.
        let first = Kept::new(FAULTS).unwrap();
        first.keep_in(file(&dir), now);
        first.fault_started("cpu");
        first.fault_started("memory");
        drop(first);
        let written = SystemTime::now();
        let second = Kept::new(FAULTS).unwrap();
        let previous = second.keep_in(file(&dir), SystemTime::now()).unwrap();
        assert_eq!((previous.fault, previous.how), ("memory", "killed"));
        let late = previous
            .died_at
            .duration_since(written - Duration::from_millis(50))
            .unwrap();
        assert!(late <= Duration::from_millis(200), "{late:?}");
        // Stopped by SIGTERM during a liveness fault: the stop's time.
        second.fault_started("liveness");
        second.stopping();
        second.fault_ended("liveness");
        second.stopped();
        let third = Kept::new(FAULTS).unwrap();
        let previous = third.keep_in(file(&dir), SystemTime::now()).unwrap();
        assert_eq!((previous.fault, previous.how), ("liveness", "stopped"));
        // A stop with nothing running: nothing ended with it.
        third.stopped();
        assert_eq!(Kept::new(FAULTS).unwrap().keep_in(file(&dir), SystemTime::now()), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A healing file of this life's envelope without its `figures` or
    /// its `life` is restored as far as it goes: indexing the missing key
    /// panicked, at every start, for as long as the file was this
    /// container's previous life's. A stop time that is not the file's own
    /// is not measured from.
    #[test]
    fn a_healing_file_missing_its_parts_or_with_a_garbage_stop_is_not_fatal() {
        let dir = temp_dir("kept-partial");
        for fields in [
            "{}",
            "{\"figures\":{\"pod_recovery_count_total\":4}}",
            "{\"life\":{\"faults\":[\"cpu\"]}}",
        ] {
            file(&dir).write(fields, SystemTime::now(), false).unwrap();
            let kept = Arc::new(Kept::new(FAULTS).unwrap());
            kept.keep_in(file(&dir), SystemTime::now());
            kept.record(&[Healed::Started]);
            let n = if fields.contains(":4") { 5 } else { 1 };
            assert!(
                render(&kept).contains(&format!("pod_recovery_count_total {n}")),
                "{fields}"
            );
        }
        let now = SystemTime::now();
        file(&dir)
            .write("{\"life\":{\"faults\":[\"cpu\"],\"stopped_at_unix_ms\":0}}", now, false)
            .unwrap();
        let previous = Kept::new(FAULTS).unwrap().keep_in(file(&dir), now).unwrap();
        assert_eq!((previous.fault, previous.how), ("cpu", "killed"));
        assert!(previous.died_at >= now, "from the file's own time, not 1970");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_heartbeat_runs_faster_while_a_fault_runs() {
        let dir = temp_dir("kept-heartbeat");
        let kept = Arc::new(Kept::new(FAULTS).unwrap());
        kept.keep_in(file(&dir), SystemTime::now());
        kept.spawn_heartbeat().unwrap();
        kept.fault_started("memory");
        let written = || match file(&dir).load(SystemTime::now()) {
            Loaded::Found(_, at) => at,
            other => panic!("{other:?}"),
        };
        let first = written();
        std::thread::sleep(HEARTBEAT_WITH_FAULT * 3);
        assert!(written() > first, "rewritten while the fault runs");
        kept.stopped();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
