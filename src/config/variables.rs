//! The table of every environment variable the service knows, each declared
//! once: its name, what an unset variable means, what it accepts (bounds,
//! allowed values) and a one-line meaning.
//!
//! Three readers, one table: the parser (`Config::from_lookup` takes bounds
//! and defaults from here), the misspelling check (its known names), and
//! `chaos-backend --help` (one line per variable, rendered by [`help`]). A
//! new variable is one row here and one read in the parser; a unit test
//! holds the two together.

/// The largest leak one request may ask for, in MiB (1 TiB): a guard against
/// typos, far above any real memory limit.
pub const MAX_MB: u64 = 1 << 20;
/// The largest `MAX_REQUEST_HEAD_BYTES` (1 MiB): each connection may hold
/// this much head, so it is a memory bound per connection.
pub const MAX_REQUEST_HEAD_BYTES: u64 = 1 << 20;
/// The longest CPU load or delay one request may ask for, in seconds.
pub const MAX_DURATION_SECONDS: u64 = 3600;

/// One environment variable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Variable {
    pub name: &'static str,
    pub unset: Unset,
    pub accepts: Accepts,
    /// What it does, in one line.
    pub meaning: &'static str,
}

/// What an unset variable means.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unset {
    /// This value, as if it were set to it.
    Default(&'static str),
    /// A value made from other variables, described here.
    Derived(&'static str),
    /// Nothing: the feature is off.
    Off,
}

/// What a set variable accepts. A set but empty variable is refused
/// whatever it is (`PORT=` is more likely a mistake than a wish), except
/// `RUST_LOG`, which env_logger reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Accepts {
    /// A whole decimal number of `unit` (none: a plain number, such as a
    /// seed) from `min` to `max`: no sign, no
    /// fraction, no spaces.
    Whole { min: u64, max: u64, unit: &'static str },
    /// A TCP port, 0 to 65535 (0 picks a free one).
    Port,
    /// `off` in any case, or a TCP port, 0 to 65535 (0 picks a free one).
    PortOrOff,
    /// `auto` in any case, or a whole number of `unit` from `min` to `max`.
    AutoOrWhole { min: u64, max: u64, unit: &'static str },
    /// `true`/`false` in any case, or `1`/`0`.
    Bool,
    /// An IPv4 or IPv6 address.
    Address,
    /// Any text but the empty one; the text says what is expected.
    NonEmpty(&'static str),
    /// A bearer token (`config::bearer_token`): whitespace around it is
    /// trimmed, the rest must be visible ASCII; never shown in an error
    /// but when empty. The text says what is expected.
    Secret(&'static str),
    /// env_logger's filter: read by env_logger, never refused.
    LogFilter,
}

impl Accepts {
    /// What a value must be, as a bad value's error and `--help` say it.
    pub fn expected(&self) -> String {
        match *self {
            Accepts::Whole { min, max, unit: "" } => format!("a whole number from {min} to {max}"),
            Accepts::Whole { min, max, unit } => format!("a whole number of {unit} from {min} to {max}"),
            Accepts::Port => "a TCP port from 0 to 65535 (0 picks a free one)".to_string(),
            Accepts::PortOrOff => "off, or a TCP port from 0 to 65535 (0 picks a free one)".to_string(),
            Accepts::AutoOrWhole { min, max, unit } => {
                format!("auto, or a whole number of {unit} from {min} to {max}")
            }
            Accepts::Bool => "true or false".to_string(),
            Accepts::Address => "an IPv4 or IPv6 address such as 0.0.0.0 or ::".to_string(),
            Accepts::NonEmpty(what) | Accepts::Secret(what) => what.to_string(),
            Accepts::LogFilter => "an env_logger filter such as warn or debug (never refused)".to_string(),
        }
    }
}

const fn seconds(min: u64, max: u64) -> Accepts {
    Accepts::Whole {
        min,
        max,
        unit: "seconds",
    }
}

/// Every variable the service knows, in the order `--help` lists them.
pub const VARIABLES: &[Variable] = &[
    Variable {
        name: "CPU_LOAD_DURATION",
        unset: Unset::Default("10"),
        accepts: seconds(1, MAX_DURATION_SECONDS),
        meaning: "seconds a CPU load lasts when the request gives no duration",
    },
    Variable {
        name: "MEMORY_MB",
        unset: Unset::Default("100"),
        accepts: Accepts::Whole {
            min: 1,
            max: MAX_MB,
            unit: "MiB",
        },
        meaning: "MiB leaked per request when the request gives no mb",
    },
    Variable {
        name: "RANDOM_CRASH_ENABLED",
        unset: Unset::Default("false"),
        accepts: Accepts::Bool,
        meaning: "crash at seeded random times (an exponential schedule, each crash announced ahead)",
    },
    Variable {
        name: "RANDOM_CRASH_MEAN_SECONDS",
        unset: Unset::Default("300"),
        accepts: seconds(1, 86_400),
        meaning: "mean time between random crashes (each life waits one draw of the schedule)",
    },
    Variable {
        name: "RANDOM_CRASH_SEED",
        unset: Unset::Off,
        accepts: Accepts::Whole {
            min: 0,
            max: 4_294_967_295,
            unit: "",
        },
        meaning: "the random crash schedule's seed (unset: the one kept in STATE_DIR, else the clock's, logged)",
    },
    Variable {
        name: "MAX_MEMORY_MB_READY",
        unset: Unset::Default("400"),
        accepts: Accepts::Whole {
            min: 1,
            max: MAX_MB,
            unit: "MiB",
        },
        meaning: "RSS in MiB above which /ready fails",
    },
    Variable {
        name: "MAX_CONCURRENT_CHAOS",
        unset: Unset::Default("1"),
        accepts: Accepts::Whole {
            min: 1,
            max: 64,
            unit: "actions",
        },
        meaning: "faults running at once (a leak or a disk fill counts until it is removed)",
    },
    Variable {
        name: "CHAOS_COOLDOWN_SECONDS",
        unset: Unset::Default("60"),
        accepts: seconds(0, 86_400),
        meaning: "seconds between two accepted chaos actions",
    },
    Variable {
        name: "MAX_LATENCY_MS",
        unset: Unset::Default("500"),
        accepts: Accepts::Whole {
            min: 1,
            max: 600_000,
            unit: "milliseconds",
        },
        meaning: "p95 of GET / in milliseconds above which /ready fails",
    },
    Variable {
        name: "PORT",
        unset: Unset::Default("8080"),
        accepts: Accepts::Port,
        meaning: "TCP port to listen on (the one bound is logged in POD_STARTED)",
    },
    Variable {
        name: "PROBE_PORT",
        unset: Unset::Default("8081"),
        accepts: Accepts::PortOrOff,
        meaning: "TCP port of the probe listener: GET/HEAD /health and /ready only, served ahead of all other traffic",
    },
    Variable {
        name: "BIND_ADDRESS",
        unset: Unset::Default("0.0.0.0"),
        accepts: Accepts::Address,
        meaning: "address to listen on (:: for both families)",
    },
    Variable {
        name: "WORKERS",
        unset: Unset::Default("4"),
        accepts: Accepts::Whole {
            min: 1,
            max: 256,
            unit: "threads",
        },
        meaning: "worker threads serving requests",
    },
    Variable {
        name: "STATE_DIR",
        unset: Unset::Default("/tmp/chaos-backend"),
        accepts: Accepts::NonEmpty("a directory path"),
        meaning: "where the crash marker and the healing figures live across restarts (an emptyDir in Kubernetes); created if missing",
    },
    Variable {
        name: "LATENCY_WINDOW_SECONDS",
        unset: Unset::Default("30"),
        accepts: seconds(1, 3600),
        meaning: "the window of the readiness p95",
    },
    Variable {
        name: "SHUTDOWN_DELAY_SECONDS",
        unset: Unset::Default("5"),
        accepts: seconds(0, 3600),
        meaning: "seconds between SIGTERM (/ready fails at once) and the stop",
    },
    Variable {
        name: "READY_FAIL_ON_CPU_STRESS",
        unset: Unset::Default("true"),
        accepts: Accepts::Bool,
        meaning: "whether a CPU load fails readiness (false for HPA experiments)",
    },
    Variable {
        name: "CHAOS_ENABLED",
        unset: Unset::Default("true"),
        accepts: Accepts::Bool,
        meaning: "the kill switch: false answers 403 on every chaos endpoint",
    },
    Variable {
        name: "STARTUP_DELAY_SECONDS",
        unset: Unset::Default("0"),
        accepts: seconds(0, 3600),
        meaning: "/ready (only) answers 503 starting for this long after start",
    },
    Variable {
        name: "SLOW_START_SECONDS",
        unset: Unset::Default("0"),
        accepts: seconds(0, 3600),
        meaning: "every start holds /health and /ready at 503 for this long (the startup probe sees it)",
    },
    Variable {
        name: "CRASHLOOP_CANCEL",
        unset: Unset::Default("false"),
        accepts: Accepts::Bool,
        meaning: "true ends a crash loop (POST /fault/crashloop) at this start: it serves",
    },
    Variable {
        name: "MAX_REQUEST_HEAD_BYTES",
        unset: Unset::Default("16384"),
        accepts: Accepts::Whole {
            min: 1024,
            max: MAX_REQUEST_HEAD_BYTES,
            unit: "bytes",
        },
        meaning: "request line and headers together; a longer head gets 431 and a close",
    },
    Variable {
        name: "MAX_REQUEST_HEADERS",
        unset: Unset::Default("100"),
        accepts: Accepts::Whole {
            min: 1,
            max: 10_000,
            unit: "header fields",
        },
        meaning: "header fields in one request; more get 431 and a close",
    },
    Variable {
        name: "HTTP_MAX_CONNECTIONS",
        unset: Unset::Default("auto"),
        accepts: Accepts::AutoOrWhole {
            min: 1,
            max: 1_000_000,
            unit: "connections",
        },
        meaning: "open connections at once; auto computes it from the memory, fd and pids limits",
    },
    Variable {
        name: "HTTP_IDLE_TIMEOUT_SECONDS",
        unset: Unset::Default("30"),
        accepts: seconds(1, 3600),
        meaning: "a connection waiting for its next request is closed after this long",
    },
    Variable {
        name: "HTTP_HEAD_TIMEOUT_SECONDS",
        unset: Unset::Default("10"),
        accepts: seconds(1, 3600),
        meaning: "the whole request head must arrive within this long of its first byte, else 408",
    },
    Variable {
        name: "HTTP_WRITE_TIMEOUT_SECONDS",
        unset: Unset::Default("10"),
        accepts: seconds(1, 3600),
        meaning: "an answer whose write makes no progress this long closes its connection",
    },
    Variable {
        name: "HTTP_DRAIN_TIMEOUT_SECONDS",
        unset: Unset::Default("10"),
        accepts: seconds(1, 3600),
        meaning: "an unread request body must be drained within this long, else the connection closes",
    },
    Variable {
        name: "HTTP_DRAIN_LIMIT_BYTES",
        unset: Unset::Default("1048576"),
        accepts: Accepts::Whole {
            min: 0,
            max: 1 << 30,
            unit: "bytes",
        },
        meaning: "the largest unread body drained to keep a connection",
    },
    Variable {
        name: "DISK_FILL_DIR",
        unset: Unset::Derived("$STATE_DIR/fill"),
        accepts: Accepts::NonEmpty("a directory path, or no DISK_FILL_DIR at all (STATE_DIR/fill)"),
        meaning: "where POST /load/disk writes; created at start-up",
    },
    Variable {
        name: "CHAOS_TOKEN",
        unset: Unset::Off,
        accepts: Accepts::Secret("a bearer token of visible ASCII characters, or no CHAOS_TOKEN at all"),
        meaning: "the bearer token the chaos endpoints require (unset: open to anyone)",
    },
    Variable {
        name: "CHAOS_TOKEN_FILE",
        unset: Unset::Off,
        accepts: Accepts::NonEmpty("the path of a file holding the bearer token"),
        meaning: "read the token from this file at start-up instead (a mounted Secret)",
    },
    Variable {
        name: "RUST_LOG",
        unset: Unset::Default("info"),
        accepts: Accepts::LogFilter,
        meaning: "log level (error, warn, info, debug); events are written whatever it says",
    },
];

/// The row of `name`. Every name the parser reads has one (a unit test
/// parses the defaults, which reads them all), so a miss is a bug here.
pub fn variable(name: &str) -> &'static Variable {
    VARIABLES
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("{name} is read but has no row in config::variables::VARIABLES"))
}

/// Every variable name the service knows.
pub fn known_names() -> Vec<&'static str> {
    VARIABLES.iter().map(|v| v.name).collect()
}

impl Unset {
    /// As `--help` shows it: one word, no spaces.
    fn shown(self) -> &'static str {
        match self {
            Unset::Default(value) | Unset::Derived(value) => value,
            Unset::Off => "unset",
        }
    }
}

/// The variables as `--help` lists them, after a header line: one line a
/// variable, `NAME DEFAULT ACCEPTS; MEANING`. The name and the default are
/// one word each (`unset` when unset means off), and what a variable
/// accepts never holds a `;`, so the first `; ` ends it.
pub fn help() -> String {
    let mut text = String::from("environment variables (name, default, accepted values; meaning):\n");
    for v in VARIABLES {
        text.push_str(&format!(
            "{:<26} {:<19} {}; {}\n",
            v.name,
            v.unset.shown(),
            v.accepts.expected(),
            v.meaning
        ));
    }
    text
}
