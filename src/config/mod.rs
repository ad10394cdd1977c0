//! The service's configuration: every environment variable parsed, within
//! its bounds, into a `Config`, once at start-up.
//!
//! The variables themselves (names, defaults, bounds, meanings) are one
//! table, `variables::VARIABLES`; the parser reads its defaults and bounds
//! from there. A bad value is a `ConfigError` that names the variable and
//! quotes the value, and a misspelt name is refused naming the name meant
//! (`misspelling`); `main` turns either into exit code 2 before anything
//! binds a port. `access` turns the chaos token's source into the rule a
//! request is checked against.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub mod access;
pub mod misspelling;
pub mod variables;

use variables::{Accepts, Unset, Variable, known_names, variable};
pub use variables::{MAX_DURATION_SECONDS, MAX_MB};

/// The service's configuration, read once at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub cpu_load_duration: Duration,
    pub memory_mb: u64,
    pub random_crash_enabled: bool,
    pub random_crash_mean: Duration,
    /// `RANDOM_CRASH_SEED`; `None`: the one kept in STATE_DIR, else the clock's.
    pub random_crash_seed: Option<u64>,
    pub max_memory_mb_ready: u64,
    pub max_concurrent_chaos: usize,
    pub chaos_cooldown: Duration,
    pub max_latency: Duration,
    pub port: u16,
    /// `PROBE_PORT`: the probe listener's port; None when `off`.
    pub probe_port: Option<u16>,
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
    /// `SLOW_START_SECONDS`: every start holds /health and /ready this long.
    pub slow_start: Duration,
    /// `CRASHLOOP_CANCEL`: a pending crash loop ends at this start.
    pub crashloop_cancel: bool,
    /// Request line and headers together, in bytes: more is 431 and a close.
    pub max_request_head_bytes: usize,
    /// Header fields in one request: more is 431 and a close.
    pub max_request_headers: usize,
    /// The `HTTP_*` connection settings.
    pub connections: ConnectionSettings,
}

/// The connection layer's settings (`HTTP_*`). The cap that `auto` stands
/// for is computed at start-up from the process's limits
/// (`http::limits`).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionSettings {
    /// `HTTP_MAX_CONNECTIONS`; None: computed (`auto`).
    pub max_connections: Option<usize>,
    pub idle_timeout: Duration,
    pub head_timeout: Duration,
    pub write_timeout: Duration,
    pub drain_timeout: Duration,
    pub drain_limit: u64,
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
    /// The value, quoted in the message; None for a secret, never shown.
    pub value: Option<String>,
    pub expected: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "invalid {} {value:?}: expected {}", self.variable, self.expected),
            None => write!(
                f,
                "invalid {} (the value is not shown): expected {}",
                self.variable, self.expected
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

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
        let vars = Reader { lookup };
        let bind_address = vars.address("BIND_ADDRESS")?;
        let state_dir = vars.text("STATE_DIR")?.unwrap_or_default();
        let disk_fill_dir = vars
            .text("DISK_FILL_DIR")?
            .map_or_else(|| PathBuf::from(&state_dir).join("fill"), PathBuf::from);
        Ok(Config {
            cpu_load_duration: vars.seconds("CPU_LOAD_DURATION")?,
            memory_mb: vars.whole("MEMORY_MB")?,
            random_crash_enabled: vars.boolean("RANDOM_CRASH_ENABLED")?,
            random_crash_mean: vars.seconds("RANDOM_CRASH_MEAN_SECONDS")?,
            random_crash_seed: vars.optional_whole("RANDOM_CRASH_SEED")?,
            max_memory_mb_ready: vars.whole("MAX_MEMORY_MB_READY")?,
            max_concurrent_chaos: vars.whole("MAX_CONCURRENT_CHAOS")? as usize,
            chaos_cooldown: vars.seconds("CHAOS_COOLDOWN_SECONDS")?,
            max_latency: Duration::from_millis(vars.whole("MAX_LATENCY_MS")?),
            port: vars.whole("PORT")? as u16,
            probe_port: probe_port(&vars)?,
            bind_address,
            workers: vars.whole("WORKERS")? as usize,
            disk_fill_dir,
            state_dir: PathBuf::from(state_dir),
            latency_window: vars.seconds("LATENCY_WINDOW_SECONDS")?,
            shutdown_delay: vars.seconds("SHUTDOWN_DELAY_SECONDS")?,
            ready_fail_on_cpu_stress: vars.boolean("READY_FAIL_ON_CPU_STRESS")?,
            chaos_enabled: vars.boolean("CHAOS_ENABLED")?,
            chaos_token: token_source(&vars)?,
            startup_delay: vars.seconds("STARTUP_DELAY_SECONDS")?,
            slow_start: vars.seconds("SLOW_START_SECONDS")?,
            crashloop_cancel: vars.boolean("CRASHLOOP_CANCEL")?,
            max_request_head_bytes: vars.whole("MAX_REQUEST_HEAD_BYTES")? as usize,
            max_request_headers: vars.whole("MAX_REQUEST_HEADERS")? as usize,
            connections: ConnectionSettings {
                max_connections: vars.auto_or_whole("HTTP_MAX_CONNECTIONS")?.map(|n| n as usize),
                idle_timeout: vars.seconds("HTTP_IDLE_TIMEOUT_SECONDS")?,
                head_timeout: vars.seconds("HTTP_HEAD_TIMEOUT_SECONDS")?,
                write_timeout: vars.seconds("HTTP_WRITE_TIMEOUT_SECONDS")?,
                drain_timeout: vars.seconds("HTTP_DRAIN_TIMEOUT_SECONDS")?,
                drain_limit: vars.whole("HTTP_DRAIN_LIMIT_BYTES")?,
            },
        })
    }

    /// The RSS above which /ready fails.
    pub fn max_rss_bytes(&self) -> u64 {
        self.max_memory_mb_ready << 20
    }
}

/// The one parser of variables: each method takes a variable's default and
/// bounds from its row in the table, and refuses a value the row does not
/// accept with the row's own words.
struct Reader<L> {
    lookup: L,
}

impl<L: Fn(&str) -> Option<String>> Reader<L> {
    /// The value set, or the default; `None` when unset means off.
    fn value(&self, v: &Variable) -> Option<String> {
        (self.lookup)(v.name).or(match v.unset {
            Unset::Default(value) => Some(value.to_string()),
            Unset::Derived(_) | Unset::Off => None,
        })
    }

    fn refuse(v: &Variable, value: String) -> ConfigError {
        ConfigError {
            variable: v.name,
            value: Some(value),
            expected: v.accepts.expected(),
        }
    }

    /// A whole number (or a port) within the row's bounds.
    fn whole(&self, name: &str) -> Result<u64, ConfigError> {
        let v = variable(name);
        let (min, max) = match v.accepts {
            Accepts::Whole { min, max, .. } => (min, max),
            Accepts::Port => (0, u64::from(u16::MAX)),
            other => panic!("{name} accepts {other:?}, not a whole number"),
        };
        let value = self.value(v).unwrap_or_default();
        parse_bounded(&value, min, max).ok_or_else(|| Self::refuse(v, value))
    }

    /// A whole number within the row's bounds, or `None` when unset (a row
    /// whose unset value means off).
    fn optional_whole(&self, name: &str) -> Result<Option<u64>, ConfigError> {
        match self.value(variable(name)) {
            None => Ok(None),
            Some(_) => self.whole(name).map(Some),
        }
    }

    fn seconds(&self, name: &str) -> Result<Duration, ConfigError> {
        self.whole(name).map(Duration::from_secs)
    }

    /// `auto` (`None`), or a whole number within the row's bounds.
    fn auto_or_whole(&self, name: &str) -> Result<Option<u64>, ConfigError> {
        let v = variable(name);
        let Accepts::AutoOrWhole { min, max, .. } = v.accepts else {
            panic!("{name} accepts {:?}, not auto or a whole number", v.accepts);
        };
        let value = self.value(v).unwrap_or_default();
        if value.eq_ignore_ascii_case("auto") {
            return Ok(None);
        }
        parse_bounded(&value, min, max)
            .map(Some)
            .ok_or_else(|| Self::refuse(v, value))
    }

    fn boolean(&self, name: &str) -> Result<bool, ConfigError> {
        let v = variable(name);
        assert_eq!(v.accepts, Accepts::Bool, "{name} is not a boolean");
        let value = self.value(v).unwrap_or_default();
        parse_bool(&value).ok_or_else(|| Self::refuse(v, value))
    }

    fn address(&self, name: &str) -> Result<IpAddr, ConfigError> {
        let v = variable(name);
        assert_eq!(v.accepts, Accepts::Address, "{name} is not an address");
        let value = self.value(v).unwrap_or_default();
        value.parse().map_err(|_| Self::refuse(v, value))
    }

    /// Text that must not be empty when set; `None` when unset means off
    /// or a value made from others.
    fn text(&self, name: &str) -> Result<Option<String>, ConfigError> {
        let v = variable(name);
        let value = self.value(v);
        match (v.accepts, value) {
            (Accepts::NonEmpty(_), Some(value)) if value.is_empty() => Err(Self::refuse(v, value)),
            (Accepts::NonEmpty(_), value) => Ok(value),
            (other, _) => panic!("{name} accepts {other:?}, not text"),
        }
    }

    /// A bearer token (`bearer_token`), trimmed; an error never shows it
    /// (but for an empty one, which holds nothing to hide).
    fn secret(&self, name: &str) -> Result<Option<String>, ConfigError> {
        let v = variable(name);
        assert!(matches!(v.accepts, Accepts::Secret(_)), "{name} is not a secret");
        let Some(value) = self.value(v) else {
            return Ok(None);
        };
        match bearer_token(value.as_bytes()) {
            Ok(token) => Ok(Some(String::from_utf8_lossy(token).into_owned())),
            Err(why) => Err(ConfigError {
                variable: v.name,
                value: value.is_empty().then(String::new),
                expected: format!("{}; {why}", v.accepts.expected()),
            }),
        }
    }

    /// Whether `name` is set at all, empty or not.
    fn is_set(&self, name: &str) -> bool {
        (self.lookup)(variable(name).name).is_some()
    }
}

/// `PROBE_PORT`: `off`, or a port that is not `PORT` (0, a free one, is
/// never the same).
fn probe_port<L: Fn(&str) -> Option<String>>(vars: &Reader<L>) -> Result<Option<u16>, ConfigError> {
    let v = variable("PROBE_PORT");
    let value = vars.value(v).unwrap_or_default();
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let port =
        parse_bounded(&value, 0, u64::from(u16::MAX)).ok_or_else(|| Reader::<L>::refuse(v, value.clone()))? as u16;
    let main = vars.whole("PORT")? as u16;
    if port != 0 && port == main {
        return Err(ConfigError {
            variable: v.name,
            value: Some(value),
            expected: format!("a port other than PORT ({main}), or off"),
        });
    }
    Ok(Some(port))
}

/// `CHAOS_TOKEN` or `CHAOS_TOKEN_FILE`, not both.
fn token_source<L: Fn(&str) -> Option<String>>(vars: &Reader<L>) -> Result<TokenSource, ConfigError> {
    if vars.is_set("CHAOS_TOKEN") && vars.is_set("CHAOS_TOKEN_FILE") {
        return Err(ConfigError {
            variable: "CHAOS_TOKEN_FILE",
            value: Some((vars.lookup)("CHAOS_TOKEN_FILE").unwrap_or_default()),
            expected: "to be unset when CHAOS_TOKEN is set (give one or the other)".to_string(),
        });
    }
    Ok(match (vars.secret("CHAOS_TOKEN")?, vars.text("CHAOS_TOKEN_FILE")?) {
        (Some(token), _) => TokenSource::Value(token),
        (None, Some(file)) => TokenSource::File(PathBuf::from(file)),
        (None, None) => TokenSource::Open,
    })
}

/// The bearer token in `raw` (`CHAOS_TOKEN`, or the file
/// `CHAOS_TOKEN_FILE` names), or what is wrong with it, never quoting it.
/// ASCII whitespace around it (spaces, tabs, line ends: the newline at the
/// end of a file) is trimmed; what is left must be visible ASCII
/// characters, `!` to `~`: a client must be able to send it in an
/// `Authorization: Bearer` header (the head reader refuses control
/// characters and bytes outside ASCII, and the header's value ends at a
/// line break), and one with a space inside could never be matched. Such a
/// token would make every chaos request a 401, stops included.
pub fn bearer_token(raw: &[u8]) -> Result<&[u8], String> {
    let token = raw.trim_ascii();
    if token.is_empty() {
        return Err("it is empty or blank".to_string());
    }
    let Some(at) = token.iter().position(|b| !(b'!'..=b'~').contains(b)) else {
        return Ok(token);
    };
    let what = match token[at] {
        b' ' => "a space",
        b'\t' => "a tab",
        b'\n' | b'\r' => "a line break",
        0x80.. => "a byte outside ASCII",
        _ => "a control character",
    };
    Err(format!(
        "byte {} of its {} (once trimmed) is {what}, which an Authorization header cannot carry",
        at + 1,
        token.len()
    ))
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
    fn defaults_are_the_documented_ones() {
        let c = with(&[]).unwrap();
        assert_eq!(c.cpu_load_duration, Duration::from_secs(10));
        assert_eq!(c.memory_mb, 100);
        assert!(!c.random_crash_enabled);
        assert_eq!(c.max_memory_mb_ready, 400);
        assert_eq!(c.max_concurrent_chaos, 1);
        assert_eq!(c.chaos_cooldown, Duration::from_secs(60));
        assert_eq!(c.max_latency, Duration::from_millis(500));
        assert_eq!(c.port, 8080);
        assert_eq!(c.probe_port, Some(8081));
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

    /// A token a header cannot carry is refused, naming the variable and
    /// what is wrong, never the token; whitespace around it is trimmed.
    #[test]
    fn a_token_an_authorization_header_cannot_carry_is_refused_unseen() {
        for bad in [
            "s3cr3t\nzq9x",
            "t4b\tzq9x",
            "sp4c3 zq9x",
            "t\u{f6}k\u{e9}nzq9x",
            "nul\0zq9x",
            "d3l\u{7f}zq9x",
            "b3ll\u{7}zq9x",
            "\u{a0}zq9x",
        ] {
            let e = with(&[("CHAOS_TOKEN", bad)]).unwrap_err();
            assert_eq!((e.variable, &e.value), ("CHAOS_TOKEN", &None), "{bad:?}");
            let text = e.to_string();
            let shown = bad.split(|c: char| !c.is_ascii_graphic()).filter(|p| p.len() >= 3);
            for part in shown {
                assert!(!text.contains(part), "{bad:?} shows in {text}");
            }
            assert!(text.contains("cannot carry"), "{text}");
        }
        for (raw, token) in [
            ("abc", "abc"),
            ("abc\n", "abc"),
            ("abc\r\n", "abc"),
            ("  abc\t", "abc"),
            ("A-z0.9_~+/=!#$%&'*^`|", "A-z0.9_~+/=!#$%&'*^`|"),
        ] {
            assert_eq!(
                with(&[("CHAOS_TOKEN", raw)]).unwrap().chaos_token,
                TokenSource::Value(token.into()),
                "{raw:?}"
            );
        }
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
            ("PROBE_PORT", "70000"),
            ("PROBE_PORT", "no"),
            ("PROBE_PORT", ""),
            ("PROBE_PORT", "8080"),
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

    /// The parser reads every variable of the table (but `RUST_LOG`, which
    /// env_logger reads) and no other: the table is the whole truth.
    #[test]
    fn the_parser_reads_exactly_the_table() {
        let asked = std::cell::RefCell::new(std::collections::BTreeSet::new());
        Config::from_lookup(|name| {
            asked.borrow_mut().insert(name.to_string());
            None
        })
        .unwrap();
        let table: std::collections::BTreeSet<String> = variables::VARIABLES
            .iter()
            .filter(|v| v.accepts != Accepts::LogFilter)
            .map(|v| v.name.to_string())
            .collect();
        assert_eq!(asked.into_inner(), table);
    }

    #[test]
    fn connection_settings_defaults_and_bad_values() {
        let s = with(&[]).unwrap().connections;
        assert_eq!(s.max_connections, None);
        assert_eq!(s.idle_timeout, Duration::from_secs(30));
        assert_eq!(s.drain_limit, 1 << 20);
        let auto = with(&[("HTTP_MAX_CONNECTIONS", "AUTO")]).unwrap().connections;
        assert_eq!(auto.max_connections, None);
        let twelve = with(&[("HTTP_MAX_CONNECTIONS", "12")]).unwrap().connections;
        assert_eq!(twelve.max_connections, Some(12));
        for (name, value) in [
            ("HTTP_MAX_CONNECTIONS", "0"),
            ("HTTP_MAX_CONNECTIONS", "lots"),
            ("HTTP_IDLE_TIMEOUT_SECONDS", "0"),
            ("HTTP_HEAD_TIMEOUT_SECONDS", "1.5"),
            ("HTTP_WRITE_TIMEOUT_SECONDS", ""),
            ("HTTP_DRAIN_LIMIT_BYTES", "-1"),
        ] {
            let e = with(&[(name, value)]).unwrap_err();
            assert_eq!(e.variable, name);
            assert!(e.to_string().contains(&format!("{value:?}")), "{e}");
        }
    }

    /// The words of every error are the table's, and stay as they were.
    #[test]
    fn error_messages_are_the_documented_ones() {
        for (vars, text) in [
            (
                &[("MEMORY_MB", "abc")][..],
                "invalid MEMORY_MB \"abc\": expected a whole number of MiB from 1 to 1048576",
            ),
            (
                &[("PORT", "70000")],
                "invalid PORT \"70000\": expected a TCP port from 0 to 65535 (0 picks a free one)",
            ),
            (
                &[("RANDOM_CRASH_SEED", "-1")],
                "invalid RANDOM_CRASH_SEED \"-1\": expected a whole number from 0 to 4294967295",
            ),
            (
                &[("HTTP_MAX_CONNECTIONS", "0")],
                "invalid HTTP_MAX_CONNECTIONS \"0\": expected auto, or a whole number of connections from 1 to 1000000",
            ),
            (
                &[("PROBE_PORT", "http")],
                "invalid PROBE_PORT \"http\": expected off, or a TCP port from 0 to 65535 (0 picks a free one)",
            ),
            (
                &[("PROBE_PORT", "8080")],
                "invalid PROBE_PORT \"8080\": expected a port other than PORT (8080), or off",
            ),
            (
                &[("CHAOS_ENABLED", "no")],
                "invalid CHAOS_ENABLED \"no\": expected true or false",
            ),
            (
                &[("BIND_ADDRESS", "localhost")],
                "invalid BIND_ADDRESS \"localhost\": expected an IPv4 or IPv6 address such as 0.0.0.0 or ::",
            ),
            (
                &[("STATE_DIR", "")],
                "invalid STATE_DIR \"\": expected a directory path",
            ),
            (
                &[("DISK_FILL_DIR", "")],
                "invalid DISK_FILL_DIR \"\": expected a directory path, or no DISK_FILL_DIR at all (STATE_DIR/fill)",
            ),
            (
                &[("CHAOS_TOKEN", "")],
                "invalid CHAOS_TOKEN \"\": expected a bearer token of visible ASCII characters, or no CHAOS_TOKEN at all; it is empty or blank",
            ),
            (
                &[("CHAOS_TOKEN", "  ")],
                "invalid CHAOS_TOKEN (the value is not shown): expected a bearer token of visible ASCII characters, or no CHAOS_TOKEN at all; it is empty or blank",
            ),
            (
                &[("CHAOS_TOKEN", "s3cret\nline")],
                "invalid CHAOS_TOKEN (the value is not shown): expected a bearer token of visible ASCII characters, or no CHAOS_TOKEN at all; byte 7 of its 11 (once trimmed) is a line break, which an Authorization header cannot carry",
            ),
            (
                &[("CHAOS_TOKEN_FILE", "")],
                "invalid CHAOS_TOKEN_FILE \"\": expected the path of a file holding the bearer token",
            ),
            (
                &[("CHAOS_TOKEN", ""), ("CHAOS_TOKEN_FILE", "/b")],
                "invalid CHAOS_TOKEN_FILE \"/b\": expected to be unset when CHAOS_TOKEN is set (give one or the other)",
            ),
            (
                &[("MAX_REQUEST_HEAD_BYTES", "1023")],
                "invalid MAX_REQUEST_HEAD_BYTES \"1023\": expected a whole number of bytes from 1024 to 1048576",
            ),
        ] {
            assert_eq!(with(vars).unwrap_err().to_string(), text);
        }
    }

    /// `--help` gives every variable on a line of its own that starts with
    /// its name, then its default and what it accepts, from the table.
    #[test]
    fn help_lists_every_variable_with_its_default_and_bounds() {
        let help = variables::help();
        let lines: Vec<&str> = help.lines().skip(1).collect();
        assert_eq!(lines.len(), variables::VARIABLES.len());
        for (line, v) in lines.iter().zip(variables::VARIABLES) {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(words[0], v.name, "{line}");
            let accepts = v.accepts.expected();
            assert!(!accepts.contains(';'), "{accepts}");
            assert!(line.contains(&format!(" {accepts}; {}", v.meaning)), "{line}");
        }
        assert!(
            help.contains(
                "\nCPU_LOAD_DURATION          10                  a whole number of seconds from 1 to 3600; "
            )
        );
        assert!(help.contains("\nCHAOS_TOKEN                unset               a bearer token of visible ASCII"));
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
        for (value, port) in [("OFF", None), ("off", None), ("0", Some(0)), ("65535", Some(65535))] {
            assert_eq!(with(&[("PROBE_PORT", value)]).unwrap().probe_port, port, "{value}");
        }
        // Two free ports are never the same one.
        assert_eq!(with(&[("PORT", "0"), ("PROBE_PORT", "0")]).unwrap().probe_port, Some(0));
        assert!(!c.ready_fail_on_cpu_stress);
        assert_eq!(c.memory_mb, MAX_MB);
    }
}
