//! Recovery events: one JSON object per line on stderr, each event once.
//!
//! These are the service's record of what happened (chaos started, readiness
//! degraded, recovered, crashed, started), meant for `kubectl logs | jq`. They
//! are written whatever `RUST_LOG` says, because losing them would lose the
//! measurement. Ordinary logs go through `log`, with the same timestamps.

use std::io::Write;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// The events the service emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
        }
    }
}

/// Where events go: stderr in the service, a buffer in tests.
pub struct Events {
    sink: Mutex<Box<dyn Write + Send>>,
}

impl Events {
    pub fn to_stderr() -> Events {
        Events {
            sink: Mutex::new(Box::new(std::io::stderr())),
        }
    }

    #[cfg(test)]
    pub fn to_writer(w: Box<dyn Write + Send>) -> Events {
        Events { sink: Mutex::new(w) }
    }

    /// Writes one event line; `fields` must be a JSON object.
    pub fn emit(&self, event: Event, fields: Value) {
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

/// Sets up `log` to stderr with UTC timestamps, `info` unless `RUST_LOG` says.
pub fn init_logging() {
    env_logger::Builder::new()
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
        .init();
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
}
