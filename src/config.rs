//! Every environment variable the service reads, its default and its bounds.
//!
//! A bad value is a `ConfigError` that names the variable and quotes the
//! value, and a misspelt name is refused naming the name meant; `main` turns
//! either into exit code 2 before anything binds a port.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::misspelling;

/// The largest leak one request may ask for, in MiB (1 TiB): a guard against
/// typos, far above any real memory limit.
pub const MAX_MB: u64 = 1 << 20;
/// The largest `MAX_REQUEST_HEAD_BYTES` (1 MiB): each connection may hold
/// this much head, so it is a memory bound per connection.
pub const MAX_REQUEST_HEAD_BYTES: u64 = 1 << 20;
/// The longest CPU load or delay one request may ask for, in seconds.
pub const MAX_DURATION_SECONDS: u64 = 3600;

/// The service's configuration, read once at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub cpu_load_duration: Duration,
    pub memory_mb: u64,
    pub random_crash_enabled: bool,
    pub max_memory_mb_ready: u64,
    pub max_concurrent_chaos: usize,
    pub chaos_cooldown: Duration,
    pub max_latency: Duration,
    pub port: u16,
    pub bind_address: IpAddr,
    pub workers: usize,
    pub state_dir: PathBuf,
    /// `DISK_FILL_DIR`: where `POST /load/disk` writes; `STATE_DIR/fill`
    /// unless set.
    pub disk_fill_dir: PathBuf,
    pub latency_window: Duration,
    pub shutdown_delay: Duration,
    pub ready_fail_on_cpu_stress: bool,
    pub chaos_enabled: bool,
    pub chaos_token: TokenSource,
    pub startup_delay: Duration,
    /// Request line and headers together, in bytes: more is 431 and a close.
    pub max_request_head_bytes: usize,
    /// Header fields in one request: more is 431 and a close.
    pub max_request_headers: usize,
    /// The `HTTP_*` connection limits (see `limits.rs`).
    pub connections: crate::limits::ConnectionSettings,
}

/// Where the bearer token that guards the chaos endpoints comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenSource {
    /// Neither `CHAOS_TOKEN` nor `CHAOS_TOKEN_FILE`: the endpoints are open.
    Open,
    /// `CHAOS_TOKEN`.
    Value(String),
    /// `CHAOS_TOKEN_FILE`: read at start-up (a mounted Secret).
    File(PathBuf),
}

/// A variable whose value cannot be used.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub expected: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} {:?}: expected {}",
            self.variable, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

/// The configuration table: each variable's name and default. The table of
/// docs/configuration.md gives the same facts with their meaning; a unit
/// test keeps them in step.
pub const VARIABLES: &[(&str, &str)] = &[
    ("CPU_LOAD_DURATION", "10"),
    ("MEMORY_MB", "100"),
    ("RANDOM_CRASH_ENABLED", "false"),
    ("MAX_MEMORY_MB_READY", "400"),
    ("MAX_CONCURRENT_CHAOS", "1"),
    ("CHAOS_COOLDOWN_SECONDS", "60"),
    ("MAX_LATENCY_MS", "500"),
    ("PORT", "8080"),
    ("BIND_ADDRESS", "0.0.0.0"),
    ("WORKERS", "4"),
    ("STATE_DIR", "/tmp/chaos-backend"),
    ("LATENCY_WINDOW_SECONDS", "30"),
    ("SHUTDOWN_DELAY_SECONDS", "5"),
    ("READY_FAIL_ON_CPU_STRESS", "true"),
    ("CHAOS_ENABLED", "true"),
    ("STARTUP_DELAY_SECONDS", "0"),
    ("MAX_REQUEST_HEAD_BYTES", "16384"),
    ("MAX_REQUEST_HEADERS", "100"),
    ("HTTP_MAX_CONNECTIONS", "auto"),
    ("HTTP_IDLE_TIMEOUT_SECONDS", "30"),
    ("HTTP_HEAD_TIMEOUT_SECONDS", "10"),
    ("HTTP_WRITE_TIMEOUT_SECONDS", "10"),
    ("HTTP_DRAIN_TIMEOUT_SECONDS", "10"),
    ("HTTP_DRAIN_LIMIT_BYTES", "1048576"),
];

/// The variables read that have no fixed default (unset means "off", or, for
/// `DISK_FILL_DIR`, a default made from `STATE_DIR`), and those read for
/// others (`RUST_LOG` by env_logger). With [`VARIABLES`] they are the known
/// names that the misspelling check compares every variable of the
/// environment against: a new variable is one line in `VARIABLES` (with its
/// default) or here.
pub const KNOWN_WITHOUT_DEFAULT: &[&str] = &["CHAOS_TOKEN", "CHAOS_TOKEN_FILE", "RUST_LOG", "DISK_FILL_DIR"];

/// Every variable name the service knows.
pub fn known_names() -> Vec<&'static str> {
    VARIABLES
        .iter()
        .map(|(name, _)| *name)
        .chain(KNOWN_WITHOUT_DEFAULT.iter().copied())
        .collect()
}

impl Config {
    /// Reads the configuration from the process environment, after refusing
    /// any variable whose name looks like a misspelt known one (see
    /// `misspelling`): a misspelt name would otherwise be ignored in silence.
    pub fn from_env() -> Result<Config, Box<dyn std::error::Error>> {
        let names: Vec<String> = std::env::vars_os()
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        misspelling::check(names.iter().map(String::as_str), &known_names())?;
        Ok(Config::from_lookup(|name| {
            std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
        })?)
    }

    /// Reads the configuration through `lookup`, so tests need no real
    /// environment. An unset variable takes its default; a set but empty one
    /// is an error, because `PORT=` is more likely a mistake than a wish.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &'static str| -> String {
            lookup(name).unwrap_or_else(|| {
                VARIABLES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, d)| (*d).to_string())
                    .unwrap_or_default()
            })
        };
        let int = |name: &'static str, min: u64, max: u64, unit: &str| -> Result<u64, ConfigError> {
            let value = get(name);
            parse_bounded(&value, min, max).ok_or_else(|| ConfigError {
                variable: name,
                value,
                expected: format!("a whole number of {unit} from {min} to {max}"),
            })
        };
        let boolean = |name: &'static str| -> Result<bool, ConfigError> {
            let value = get(name);
            parse_bool(&value).ok_or_else(|| ConfigError {
                variable: name,
                value,
                expected: "true or false".to_string(),
            })
        };
        let bind_value = get("BIND_ADDRESS");
        let bind_address = bind_value.parse::<IpAddr>().map_err(|_| ConfigError {
            variable: "BIND_ADDRESS",
            value: bind_value.clone(),
            expected: "an IPv4 or IPv6 address such as 0.0.0.0 or ::".to_string(),
        })?;
        let state_value = get("STATE_DIR");
        if state_value.is_empty() {
            return Err(ConfigError {
                variable: "STATE_DIR",
                value: state_value,
                expected: "a directory path".to_string(),
            });
        }
        let disk_fill_dir = match lookup("DISK_FILL_DIR") {
            None => PathBuf::from(&state_value).join("fill"),
            Some(dir) if dir.is_empty() => {
                return Err(ConfigError {
                    variable: "DISK_FILL_DIR",
                    value: dir,
                    expected: "a directory path, or no DISK_FILL_DIR at all (STATE_DIR/fill)".to_string(),
                });
            }
            Some(dir) => PathBuf::from(dir),
        };
        Ok(Config {
            cpu_load_duration: Duration::from_secs(int("CPU_LOAD_DURATION", 1, MAX_DURATION_SECONDS, "seconds")?),
            memory_mb: int("MEMORY_MB", 1, MAX_MB, "MiB")?,
            random_crash_enabled: boolean("RANDOM_CRASH_ENABLED")?,
            max_memory_mb_ready: int("MAX_MEMORY_MB_READY", 1, MAX_MB, "MiB")?,
            max_concurrent_chaos: int("MAX_CONCURRENT_CHAOS", 1, 64, "actions")? as usize,
            chaos_cooldown: Duration::from_secs(int("CHAOS_COOLDOWN_SECONDS", 0, 86_400, "seconds")?),
            max_latency: Duration::from_millis(int("MAX_LATENCY_MS", 1, 600_000, "milliseconds")?),
            port: int("PORT", 0, 65_535, "a TCP port (0 picks a free one)").map_err(|e| ConfigError {
                expected: "a TCP port from 0 to 65535 (0 picks a free one)".to_string(),
                ..e
            })? as u16,
            bind_address,
            workers: int("WORKERS", 1, 256, "threads")? as usize,
            state_dir: PathBuf::from(state_value),
            disk_fill_dir,
            latency_window: Duration::from_secs(int("LATENCY_WINDOW_SECONDS", 1, 3600, "seconds")?),
            shutdown_delay: Duration::from_secs(int("SHUTDOWN_DELAY_SECONDS", 0, 3600, "seconds")?),
            ready_fail_on_cpu_stress: boolean("READY_FAIL_ON_CPU_STRESS")?,
            chaos_enabled: boolean("CHAOS_ENABLED")?,
            chaos_token: token_source(&lookup)?,
            startup_delay: Duration::from_secs(int("STARTUP_DELAY_SECONDS", 0, 3600, "seconds")?),
            max_request_head_bytes: int("MAX_REQUEST_HEAD_BYTES", 1024, MAX_REQUEST_HEAD_BYTES, "bytes")? as usize,
            max_request_headers: int("MAX_REQUEST_HEADERS", 1, 10_000, "header fields")? as usize,
            connections: crate::limits::ConnectionSettings::from_lookup(&lookup)?,
        })
    }

    /// The RSS above which /ready fails.
    pub fn max_rss_bytes(&self) -> u64 {
        self.max_memory_mb_ready << 20
    }
}

/// `CHAOS_TOKEN` or `CHAOS_TOKEN_FILE`, not both; neither may be empty (an
/// empty token is more likely a missing Secret than a wish for no token).
fn token_source(lookup: &impl Fn(&str) -> Option<String>) -> Result<TokenSource, ConfigError> {
    match (lookup("CHAOS_TOKEN"), lookup("CHAOS_TOKEN_FILE")) {
        (None, None) => Ok(TokenSource::Open),
        (Some(_), Some(file)) => Err(ConfigError {
            variable: "CHAOS_TOKEN_FILE",
            value: file,
            expected: "to be unset when CHAOS_TOKEN is set (give one or the other)".to_string(),
        }),
        (Some(token), None) if token.trim().is_empty() => Err(ConfigError {
            variable: "CHAOS_TOKEN",
            value: String::new(),
            expected: "a non-empty bearer token, or no CHAOS_TOKEN at all".to_string(),
        }),
        (Some(token), None) => Ok(TokenSource::Value(token)),
        (None, Some(file)) if file.is_empty() => Err(ConfigError {
            variable: "CHAOS_TOKEN_FILE",
            value: file,
            expected: "the path of a file holding the bearer token".to_string(),
        }),
        (None, Some(file)) => Ok(TokenSource::File(PathBuf::from(file))),
    }
}

/// Parses a whole decimal number within `min..=max`: no sign, no fraction, no
/// spaces, no leading `+`. Overflow is simply out of range.
pub fn parse_bounded(text: &str, min: u64, max: u64) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>().ok().filter(|v| (min..=max).contains(v))
}

/// `true`/`false` in any case, and `1`/`0`.
fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_seed() {
        let c = with(&[]).unwrap();
        assert_eq!(c.cpu_load_duration, Duration::from_secs(10));
        assert_eq!(c.memory_mb, 100);
        assert!(!c.random_crash_enabled);
        assert_eq!(c.max_memory_mb_ready, 400);
        assert_eq!(c.max_concurrent_chaos, 1);
        assert_eq!(c.chaos_cooldown, Duration::from_secs(60));
        assert_eq!(c.max_latency, Duration::from_millis(500));
        assert_eq!(c.port, 8080);
        assert_eq!(c.bind_address.to_string(), "0.0.0.0");
        assert_eq!(c.workers, 4);
        assert_eq!(c.latency_window, Duration::from_secs(30));
        assert_eq!(c.shutdown_delay, Duration::from_secs(5));
        assert!(c.ready_fail_on_cpu_stress);
        assert!(c.chaos_enabled);
        assert_eq!(c.chaos_token, TokenSource::Open);
        assert_eq!(c.max_request_head_bytes, 16 * 1024);
        assert_eq!(c.max_request_headers, 100);
        assert_eq!(c.disk_fill_dir, PathBuf::from("/tmp/chaos-backend/fill"));
        let c = with(&[("STATE_DIR", "/s"), ("DISK_FILL_DIR", "/d")]).unwrap();
        assert_eq!(c.disk_fill_dir, PathBuf::from("/d"));
        assert_eq!(
            with(&[("STATE_DIR", "/s")]).unwrap().disk_fill_dir,
            PathBuf::from("/s/fill")
        );
    }

    #[test]
    fn token_comes_from_one_source() {
        assert_eq!(
            with(&[("CHAOS_TOKEN", "s3cret")]).unwrap().chaos_token,
            TokenSource::Value("s3cret".into())
        );
        assert_eq!(
            with(&[("CHAOS_TOKEN_FILE", "/run/token")]).unwrap().chaos_token,
            TokenSource::File("/run/token".into())
        );
        assert_eq!(with(&[("CHAOS_TOKEN", "")]).unwrap_err().variable, "CHAOS_TOKEN");
        assert_eq!(
            with(&[("CHAOS_TOKEN", "a"), ("CHAOS_TOKEN_FILE", "/b")])
                .unwrap_err()
                .variable,
            "CHAOS_TOKEN_FILE"
        );
        assert_eq!(with(&[("CHAOS_ENABLED", "no")]).unwrap_err().variable, "CHAOS_ENABLED");
    }

    #[test]
    fn bad_values_name_variable_and_value() {
        let cases: &[(&str, &str)] = &[
            ("MEMORY_MB", "abc"),
            ("MEMORY_MB", "-1"),
            ("MEMORY_MB", "0"),
            ("MEMORY_MB", "1.5"),
            ("MEMORY_MB", "99999999999999999999"),
            ("PORT", "70000"),
            ("PORT", ""),
            ("WORKERS", "0"),
            ("BIND_ADDRESS", "localhost"),
            ("READY_FAIL_ON_CPU_STRESS", "yes please"),
            ("CHAOS_COOLDOWN_SECONDS", " 5"),
            ("MAX_CONCURRENT_CHAOS", "+2"),
            ("STATE_DIR", ""),
            ("MAX_REQUEST_HEAD_BYTES", "1023"),
            ("MAX_REQUEST_HEAD_BYTES", "16k"),
            ("MAX_REQUEST_HEAD_BYTES", "1048577"),
            ("MAX_REQUEST_HEADERS", "0"),
            ("MAX_REQUEST_HEADERS", "-1"),
            ("DISK_FILL_DIR", ""),
        ];
        for (name, value) in cases {
            let err = with(&[(name, value)]).expect_err(&format!("{name}={value:?} should fail"));
            assert_eq!(err.variable, *name);
            let text = err.to_string();
            assert!(text.contains(name), "{text}");
            assert!(text.contains(&format!("{value:?}")), "{text}");
        }
    }

    #[test]
    fn docs_table_gives_every_variable_with_its_default() {
        let doc = include_str!("../docs/configuration.md");
        for (name, default) in VARIABLES {
            let row = format!("| `{name}` | `{default}` |");
            assert!(doc.contains(&row), "docs/configuration.md lacks the row {row}");
        }
        for extra in KNOWN_WITHOUT_DEFAULT {
            assert!(
                doc.contains(&format!("| `{extra}` |")),
                "docs/configuration.md lacks {extra}"
            );
        }
    }

    #[test]
    fn accepts_edge_values() {
        let c = with(&[
            ("PORT", "0"),
            ("CHAOS_COOLDOWN_SECONDS", "0"),
            ("BIND_ADDRESS", "::1"),
            ("READY_FAIL_ON_CPU_STRESS", "FALSE"),
            ("MEMORY_MB", "1048576"),
        ])
        .unwrap();
        assert_eq!(c.port, 0);
        assert_eq!(c.chaos_cooldown, Duration::ZERO);
        assert!(!c.ready_fail_on_cpu_stress);
        assert_eq!(c.memory_mb, MAX_MB);
    }
}
