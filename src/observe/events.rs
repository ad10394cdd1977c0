//! Recovery events: one JSON object per line on stderr, each event once.
//!
//! These are the service's record of what happened (chaos started, readiness
//! degraded, recovered, crashed, started), meant for `kubectl logs | jq`. They
//! are written whatever `RUST_LOG` says, because losing them would lose the
//! measurement. Ordinary logs go through `log`, with the same timestamps.
//!
//! What a client can make the service write is bounded (`throttle`): the
//! one event a request can cause over and over, CHAOS_REJECTED, is written
//! in full for the first `throttle::BURST` of each kind (action and
//! outcome) in a `throttle::WINDOW`, then summed up in one
//! EVENTS_SUPPRESSED; the events of the healing record are never left
//! out. Ordinary logs at `info` and above get the same bound per call site
//! (tiny_http's included); `debug` and `trace`, asked for, are not bounded.

use std::io::Write;
use std::sync::{Mutex, OnceLock, PoisonError};

use log::Log;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::throttle::{self, Suppressed, Throttle};

use serde_json::{Map, Value, json};

/// The events the service emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    PodStarted,
    ChaosStarted,
    ChaosFinished,
    ChaosRejected,
    ReadinessDegraded,
    ReadinessRecovered,
    FaultRecovered,
    CrashRequested,
    ShutdownStarted,
    ShutdownFinished,
    /// How many CHAOS_REJECTED of one kind a window left out.
    EventsSuppressed,
}

impl Event {
    pub fn name(self) -> &'static str {
        match self {
            Event::PodStarted => "POD_STARTED",
            Event::ChaosStarted => "CHAOS_STARTED",
            Event::ChaosFinished => "CHAOS_FINISHED",
            Event::ChaosRejected => "CHAOS_REJECTED",
            Event::ReadinessDegraded => "READINESS_DEGRADED",
            Event::ReadinessRecovered => "READINESS_RECOVERED",
            Event::FaultRecovered => "FAULT_RECOVERED",
            Event::CrashRequested => "CRASH_REQUESTED",
            Event::ShutdownStarted => "SHUTDOWN_STARTED",
            Event::ShutdownFinished => "SHUTDOWN_FINISHED",
            Event::EventsSuppressed => "EVENTS_SUPPRESSED",
        }
    }

    /// Whether a request can cause it over and over, so that it is bounded
    /// (`throttle`). The healing record (chaos started and finished,
    /// readiness, start-up, crash, shutdown) never is.
    fn bounded(self) -> bool {
        self == Event::ChaosRejected
    }
}

/// The kind of a bounded event: its name, and its `action` and `outcome`
/// fields (from the route table and the code, never from a request).
type Kind = (Event, String, String);

/// Where events go: stderr in the service, a buffer in tests.
pub struct Events {
    sink: Mutex<Box<dyn Write + Send>>,
    throttle: Throttle<Kind>,
}

impl Events {
    pub fn to_stderr() -> Events {
        Events::to_writer(Box::new(std::io::stderr()))
    }

    pub fn to_writer(w: Box<dyn Write + Send>) -> Events {
        Events {
            sink: Mutex::new(w),
            throttle: Throttle::new(throttle::BURST, throttle::WINDOW),
        }
    }

    /// Writes one event line; `fields` must be a JSON object. A bounded
    /// event (CHAOS_REJECTED) may be left out and counted instead.
    pub fn emit(&self, event: Event, fields: Value) {
        self.emit_at(event, fields, Instant::now());
    }

    fn emit_at(&self, event: Event, fields: Value, now: Instant) {
        if event.bounded() {
            let field = |name: &str| fields.get(name).and_then(Value::as_str).unwrap_or_default().to_string();
            let kind = (event, field("action"), field("outcome"));
            let (write, summary) = self.throttle.admit(&kind, now);
            if let Some(s) = summary {
                self.write_suppressed(&s);
            }
            if !write {
                return;
            }
        }
        self.write(event, fields);
    }

    /// Writes the EVENTS_SUPPRESSED of every window over by `now` (`main`'s
    /// housekeeping), or of every window with `all` (before the exit).
    pub fn write_suppressed_summaries(&self, now: Instant, all: bool) {
        for s in self.throttle.take_summaries(now, all) {
            self.write_suppressed(&s);
        }
    }

    fn write_suppressed(&self, s: &Suppressed<Kind>) {
        let (event, action, outcome) = &s.key;
        self.write(
            Event::EventsSuppressed,
            json!({
                "suppressed_event": event.name(),
                "action": action,
                "outcome": outcome,
                "count": s.count,
                "seconds": s.over.as_secs_f64(),
            }),
        );
    }

    fn write(&self, event: Event, fields: Value) {
        let mut line = Map::new();
        line.insert("event".into(), json!(event.name()));
        let now = SystemTime::now();
        line.insert("ts".into(), json!(rfc3339_utc(now)));
        line.insert("ts_unix_ms".into(), json!(unix_ms(now)));
        if let Value::Object(extra) = fields {
            line.extend(extra);
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        let mut sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        // A closed stderr must not take the service down; nothing else to do.
        let _ = sink.write_all(text.as_bytes()).and_then(|()| sink.flush());
    }
}

/// Milliseconds since the Unix epoch (0 for a clock set before 1970).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `2026-11-29T17:54:02.123Z`: the civil date from days since the epoch, by
/// Howard Hinnant's algorithm, so that no date crate is needed.
pub fn rfc3339_utc(t: SystemTime) -> String {
    let ms = unix_ms(t);
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Sets up `log` to stderr with UTC timestamps, `info` unless `RUST_LOG`
/// says, with lines at `info` and above bounded per call site.
pub fn init_logging() {
    let inner = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Info)
        .parse_env("RUST_LOG")
        .format(|buf, record| {
            writeln!(
                buf,
                "{} {:5} {}: {}",
                rfc3339_utc(SystemTime::now()),
                record.level(),
                record.target(),
                record.args()
            )
        })
        .build();
    let max = inner.filter();
    let logger = LOGGER.get_or_init(|| Bounded {
        inner,
        throttle: Throttle::new(throttle::BURST, throttle::WINDOW),
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(max);
    }
}

/// The logger `init_logging` installed.
static LOGGER: OnceLock<Bounded> = OnceLock::new();

/// Writes the summary of every log call site whose window is over by
/// `now` (`main`'s housekeeping), or of every one with `all` (before the
/// exit).
pub fn write_log_summaries(now: Instant, all: bool) {
    if let Some(logger) = LOGGER.get() {
        for s in logger.throttle.take_summaries(now, all) {
            logger.summary(&s);
        }
    }
}

/// env_logger, with the lines of each call site at `info` and above
/// bounded (`throttle`).
struct Bounded {
    inner: env_logger::Logger,
    /// Keyed by call site: target and line.
    throttle: Throttle<(String, u32)>,
}

impl Bounded {
    fn summary(&self, s: &Suppressed<(String, u32)>) {
        let (target, line) = &s.key;
        self.inner.log(
            &log::Record::builder()
                .level(log::Level::Warn)
                .target(target)
                .args(format_args!(
                    "{} more lines from {target} (line {line}) left out in the last {:.1} s: at most {} in {} s are written",
                    s.count,
                    s.over.as_secs_f64(),
                    throttle::BURST,
                    throttle::WINDOW.as_secs()
                ))
                .build(),
        );
    }
}

impl log::Log for Bounded {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.inner.enabled(record.metadata()) {
            return;
        }
        if record.level() > log::Level::Info {
            self.inner.log(record);
            return;
        }
        let key = (record.target().to_string(), record.line().unwrap_or(0));
        let (write, summary) = self.throttle.admit(&key, Instant::now());
        if let Some(s) = summary {
            self.summary(&s);
        }
        if write {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
pub mod testing {
    //! A sink that keeps the events written, for unit tests.

    use std::io::Write;
    use std::sync::{Arc, Mutex, PoisonError};

    #[derive(Clone, Default)]
    pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        /// The names of the events written so far.
        pub fn event_names(&self) -> Vec<String> {
            let text = String::from_utf8(self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()).unwrap();
            text.lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Captured;
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_known_dates() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_007); // leap day 2000
        assert_eq!(rfc3339_utc(t), "2000-02-29T00:00:00.007Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        assert_eq!(rfc3339_utc(t), "2026-11-30T00:53:20.000Z");
    }

    #[test]
    fn one_json_line_per_event() {
        let buf = Captured::default();
        let events = Events::to_writer(Box::new(buf.clone()));
        events.emit(Event::ReadinessRecovered, json!({"seconds": 1.5}));
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1);
        let v: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["event"], "READINESS_RECOVERED");
        assert_eq!(v["seconds"], 1.5);
        assert!(v["ts_unix_ms"].as_u64().unwrap() > 1_700_000_000_000);
    }

    /// A flood of one kind of refusal writes the first few in full and one
    /// summary with the count; other kinds have their own; the healing
    /// record is never left out.
    #[test]
    fn refusals_are_bounded_per_kind_and_the_healing_record_is_not() {
        let buf = Captured::default();
        let events = Events::to_writer(Box::new(buf.clone()));
        let t0 = Instant::now();
        for i in 0..1000 {
            let at = t0 + Duration::from_millis(i);
            let fields = json!({"action": "stop", "outcome": "unauthorized", "reason": "unauthorized"});
            events.emit_at(Event::ChaosRejected, fields, at);
            events.emit_at(Event::ChaosStarted, json!({"action": "cpu"}), at);
        }
        let other = json!({"action": "cpu", "outcome": "rejected", "reason": "MAX_CONCURRENT_CHAOS"});
        events.emit_at(Event::ChaosRejected, other, t0);
        events.write_suppressed_summaries(t0 + Duration::from_secs(5), false);
        let names = buf.event_names();
        assert_eq!(names.iter().filter(|n| *n == "CHAOS_STARTED").count(), 1000);
        let burst = throttle::BURST as usize;
        assert_eq!(names.iter().filter(|n| *n == "CHAOS_REJECTED").count(), burst + 1);
        assert!(
            !names.contains(&"EVENTS_SUPPRESSED".to_string()),
            "the window is not over"
        );
        events.write_suppressed_summaries(t0 + throttle::WINDOW, false);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let summaries: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v["event"] == "EVENTS_SUPPRESSED")
            .collect();
        assert_eq!(summaries.len(), 1, "{summaries:?}");
        let s = &summaries[0];
        assert_eq!(
            (&s["suppressed_event"], &s["action"], &s["outcome"], &s["count"]),
            (
                &json!("CHAOS_REJECTED"),
                &json!("stop"),
                &json!("unauthorized"),
                &json!(1000 - burst)
            )
        );
    }
}
