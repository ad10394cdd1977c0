//! Misspelt variable names, refused at start-up.
//!
//! A variable the service does not read is silently ignored, so a typo can
//! change behaviour without a word: with `CHAOS_TOKENFILE=/run/token` the
//! token is never read and chaos is open to anyone. A name close to a known
//! one is therefore refused, naming the name meant.
//!
//! The rule (the README's configuration section states it too):
//! - names are compared with case ignored; a known name in its exact case is
//!   fine, and a known name in another case (`port`) is refused;
//! - Kubernetes service links (`*_SERVICE_HOST`, `*_SERVICE_PORT*`, `*_PORT`,
//!   `*_PORT_<n>_<TCP|UDP|SCTP>*`) are never refused: a Service in the
//!   namespace injects them into every pod (always in upper case, so
//!   `probe_port` is still a known name in another case);
//! - a few real variables of other programs near a known name ([`OTHERS`],
//!   such as rustc's `RUSTC_LOG`) are never refused;
//! - otherwise a name is refused when its Damerau–Levenshtein distance to a
//!   known name is at most 2, or at most 1 when the known name is shorter
//!   than [`LONG_NAME`] characters. Short names have too many neighbours at
//!   distance 2 in ordinary environments (`HOST` is 2 from `PORT`).

use std::collections::HashMap;
use std::fmt;

/// Known names at least this long accept distance 2; shorter ones only 1.
pub const LONG_NAME: usize = 8;

/// Real variables of other programs that happen to lie within the distance
/// of a known name: never refused.
const OTHERS: &[&str] = &[
    // rustc's own log filter, 1 from RUST_LOG.
    "RUSTC_LOG",
];

/// A variable whose name looks like a misspelling of a known one. Its value
/// is not shown: it may be a token.
#[derive(Debug, Clone, PartialEq)]
pub struct Misspelt {
    pub name: String,
    pub meant: &'static str,
}

/// Every misspelt name found, sorted by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Misspellings(pub Vec<Misspelt>);

impl fmt::Display for Misspellings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(
                f,
                "unknown variable {}: did you mean {}? A misspelt name is otherwise ignored without a word; rename or unset it",
                shown(&m.name),
                m.meant
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Misspellings {}

/// Checks every name in `names` against `known`.
pub fn check<'a>(names: impl IntoIterator<Item = &'a str>, known: &[&'static str]) -> Result<(), Misspellings> {
    let mut found: Vec<Misspelt> = names
        .into_iter()
        .filter_map(|name| {
            meant(name, known).map(|meant| Misspelt {
                name: name.to_string(),
                meant,
            })
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    if found.is_empty() {
        Ok(())
    } else {
        Err(Misspellings(found))
    }
}

/// The known name `name` is probably a misspelling of, if any.
pub fn meant(name: &str, known: &[&'static str]) -> Option<&'static str> {
    if known.contains(&name) || OTHERS.contains(&name) {
        return None;
    }
    let upper = name.to_uppercase();
    // A known name in another case (`probe_port`): only the known one is
    // read. Never a service link, which Kubernetes writes in upper case.
    if let Some(k) = known.iter().find(|k| k.to_uppercase() == upper) {
        return Some(k);
    }
    if is_service_link(name) {
        return None;
    }
    let limit = |k: &str| if k.chars().count() >= LONG_NAME { 2 } else { 1 };
    known
        .iter()
        .filter(|k| upper.chars().count().abs_diff(k.chars().count()) <= 2)
        .map(|k| (k.to_uppercase(), *k))
        // Most pairs are far apart: the cheap bound rules them out before
        // the full distance (which took four fifths of the start-up's
        // instructions with a shell's 40 variables; a pod in a namespace of
        // many Services has hundreds).
        .filter(|(upper_k, k)| count_bound(&upper, upper_k) <= limit(k))
        .map(|(upper_k, k)| (distance(&upper, &upper_k), k))
        .filter(|(d, k)| *d <= limit(k))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// A lower bound of [`distance`]: an edit changes the counts of the
/// characters by at most 2 (a substitution: one less of one, one more of
/// another; an insertion or deletion by 1, a transposition by 0), so half
/// the difference of the ASCII characters' counts, rounded up, is at most
/// the distance.
fn count_bound(a: &str, b: &str) -> usize {
    let mut counts = [0i32; 128];
    for c in a.chars().filter(char::is_ascii) {
        counts[c as usize] += 1;
    }
    for c in b.chars().filter(char::is_ascii) {
        counts[c as usize] -= 1;
    }
    let differ: u32 = counts.iter().map(|c| c.unsigned_abs()).sum();
    (differ as usize).div_ceil(2)
}

/// Whether `name` has the shape of a variable Kubernetes injects for a
/// Service (`enableServiceLinks`, on by default): for a Service `web`,
/// `WEB_SERVICE_HOST`, `WEB_SERVICE_PORT`, `WEB_SERVICE_PORT_HTTP`,
/// `WEB_PORT`, `WEB_PORT_80_TCP`, `WEB_PORT_80_TCP_PROTO`, `_PORT`, `_ADDR`.
pub fn is_service_link(name: &str) -> bool {
    let name = name.to_uppercase();
    if name.ends_with("_SERVICE_HOST") || name.contains("_SERVICE_PORT") || name.ends_with("_PORT") {
        return true;
    }
    // `_PORT_<n>_<PROTO>` anywhere after a Service name.
    name.match_indices("_PORT_").any(|(at, _)| {
        let rest = &name[at + "_PORT_".len()..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0
            && ["_TCP", "_UDP", "_SCTP"]
                .iter()
                .any(|proto| rest[digits..].starts_with(proto))
    })
}

/// The Damerau–Levenshtein distance between `a` and `b` in characters:
/// insertions, deletions, substitutions and transpositions of adjacent
/// characters, each costing 1 (the unrestricted distance, Lowrance–Wagner).
pub fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (n, m) = (a.len(), b.len());
    let far = n + m;
    // d[i + 1][j + 1] is the distance between a[..i] and b[..j]; row and
    // column 0 hold `far` as a sentinel.
    let mut d = vec![vec![0; m + 2]; n + 2];
    d[0][0] = far;
    for i in 0..=n {
        d[i + 1][0] = far;
        d[i + 1][1] = i;
    }
    for j in 0..=m {
        d[0][j + 1] = far;
        d[1][j + 1] = j;
    }
    // The last row of `a` in which each character was seen.
    let mut last_row: HashMap<char, usize> = HashMap::new();
    for i in 1..=n {
        let mut last_match_col = 0;
        for j in 1..=m {
            let i1 = last_row.get(&b[j - 1]).copied().unwrap_or(0);
            let j1 = last_match_col;
            let cost = if a[i - 1] == b[j - 1] {
                last_match_col = j;
                0
            } else {
                1
            };
            d[i + 1][j + 1] = (d[i][j] + cost)
                .min(d[i + 1][j] + 1)
                .min(d[i][j + 1] + 1)
                .min(d[i1][j1] + (i - i1 - 1) + 1 + (j - j1 - 1));
        }
        last_row.insert(a[i - 1], i);
    }
    d[n + 1][m + 1]
}

/// A name as messages show it: at most 64 characters.
fn shown(name: &str) -> String {
    match name.char_indices().nth(64) {
        Some((cut, _)) => format!("{}... ({} bytes)", &name[..cut], name.len()),
        None => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::variables::known_names;

    fn meant_here(name: &str) -> Option<&'static str> {
        meant(name, &known_names())
    }

    #[test]
    fn a_known_name_that_looks_like_a_service_link_is_still_checked_for_case() {
        let known = ["PORT", "PROBE_PORT"];
        assert_eq!(meant("probe_port", &known), Some("PROBE_PORT"));
        assert_eq!(meant("Probe_Port", &known), Some("PROBE_PORT"));
        assert_eq!(meant("PROBE_PORT", &known), None);
        // A Service named `probes` injects this one: never refused.
        assert_eq!(meant("PROBES_PORT", &known), None);
    }

    /// The bound never exceeds the distance, so it never hides a
    /// misspelling: every known name against its every one- and two-edit
    /// variant and against every other known name.
    #[test]
    fn the_count_bound_is_at_most_the_distance() {
        let known = known_names();
        let mut pairs = 0;
        for k in &known {
            let chars: Vec<char> = k.chars().collect();
            let mut variants = vec![k.to_string()];
            for i in 0..chars.len() {
                let mut deleted = chars.clone();
                deleted.remove(i);
                variants.push(deleted.iter().collect());
                let mut substituted = chars.clone();
                substituted[i] = 'Q';
                variants.push(substituted.iter().collect());
                if i + 1 < chars.len() {
                    let mut swapped = chars.clone();
                    swapped.swap(i, i + 1);
                    let twice: String = {
                        let mut t = swapped.clone();
                        t.insert(0, 'É');
                        t.iter().collect()
                    };
                    variants.push(swapped.iter().collect());
                    variants.push(twice);
                }
            }
            for v in variants.iter().map(String::as_str).chain(known.iter().copied()) {
                assert!(count_bound(v, k) <= distance(v, k), "{v} / {k}");
                pairs += 1;
            }
        }
        assert!(pairs > 1000, "{pairs}");
    }

    #[test]
    fn distance_counts_edits_and_adjacent_transpositions() {
        for (a, b, d) in [
            ("", "", 0),
            ("", "ABC", 3),
            ("PORT", "PORT", 0),
            ("PORT", "PROT", 1),
            ("PORT", "PORTS", 1),
            ("HOST", "PORT", 2),
            ("CHAOS_TOKENFILE", "CHAOS_TOKEN_FILE", 1),
            ("CHAOS_TOKN", "CHAOS_TOKEN", 1),
            ("MAX_MEMORY_MB_REDY", "MAX_MEMORY_MB_READY", 1),
            ("CPU_LOAD_DURATON", "CPU_LOAD_DURATION", 1),
            ("CPU_LAOD_DURATON", "CPU_LOAD_DURATION", 2),
            // Unrestricted: a transposition may be edited again (OSA says 3).
            ("CA", "ABC", 2),
            ("KITTEN", "SITTING", 3),
        ] {
            assert_eq!(distance(a, b), d, "{a} / {b}");
            assert_eq!(distance(b, a), d, "{b} / {a}");
        }
    }

    #[test]
    fn misspellings_name_the_variable_meant() {
        for (typo, known) in [
            ("CHAOS_TOKENFILE", "CHAOS_TOKEN_FILE"),
            ("CHAOS_TOKEN_FIEL", "CHAOS_TOKEN_FILE"),
            ("CHAOS_TOKN", "CHAOS_TOKEN"),
            ("CHAOS_TOKENS", "CHAOS_TOKEN"),
            ("chaos_token_file", "CHAOS_TOKEN_FILE"),
            ("MAX_MEMORY_MB_REDY", "MAX_MEMORY_MB_READY"),
            ("CPU_LOAD_DURATON", "CPU_LOAD_DURATION"),
            ("CPU_LAOD_DURATON", "CPU_LOAD_DURATION"),
            ("MEMROY_MB", "MEMORY_MB"),
            ("CHAOS_ENABLE", "CHAOS_ENABLED"),
            ("CHAOS_COOLDOWN_SECOND", "CHAOS_COOLDOWN_SECONDS"),
            ("STATEDIR", "STATE_DIR"),
            ("WORKER", "WORKERS"),
            ("PROT", "PORT"),
            ("port", "PORT"),
            ("Port", "PORT"),
            ("RUST_LGO", "RUST_LOG"),
            ("READY_FAIL_ON_CPU_STRES", "READY_FAIL_ON_CPU_STRESS"),
            ("DISK_FIL_DIR", "DISK_FILL_DIR"),
        ] {
            assert_eq!(meant_here(typo), Some(known), "{typo}");
        }
    }

    /// What Kubernetes, Docker, podman, a login shell, CI runners and
    /// language tool chains put in an environment: none may be refused.
    #[test]
    fn real_environments_are_never_refused() {
        let mut names = vec![
            // Kubernetes: the API server's Service, and the downward basics.
            "KUBERNETES_SERVICE_HOST",
            "KUBERNETES_SERVICE_PORT",
            "KUBERNETES_SERVICE_PORT_HTTPS",
            "KUBERNETES_PORT",
            "KUBERNETES_PORT_443_TCP",
            "KUBERNETES_PORT_443_TCP_PROTO",
            "KUBERNETES_PORT_443_TCP_PORT",
            "KUBERNETES_PORT_443_TCP_ADDR",
            "HOSTNAME",
            "HOME",
            "PATH",
            "TERM",
            // podman and Docker.
            "container",
            "HOST",
            // A shell.
            "USER",
            "LOGNAME",
            "SHELL",
            "PWD",
            "OLDPWD",
            "SHLVL",
            "_",
            "LANG",
            "LANGUAGE",
            "LC_ALL",
            "LC_CTYPE",
            "LC_MESSAGES",
            "LC_NUMERIC",
            "LC_TIME",
            "TZ",
            "MAIL",
            "EDITOR",
            "VISUAL",
            "PAGER",
            "LESS",
            "LS_COLORS",
            "DISPLAY",
            "TMPDIR",
            "TMP",
            "TEMP",
            "HOSTTYPE",
            "OSTYPE",
            "MACHTYPE",
            "COLORTERM",
            "TERM_PROGRAM",
            "SSH_AUTH_SOCK",
            "SSH_CONNECTION",
            "SSH_TTY",
            "XDG_RUNTIME_DIR",
            "XDG_SESSION_ID",
            "XDG_CONFIG_HOME",
            "XDG_DATA_HOME",
            "XDG_STATE_HOME",
            "XDG_CACHE_HOME",
            "DBUS_SESSION_BUS_ADDRESS",
            "MOTD_SHOWN",
            "http_proxy",
            "https_proxy",
            "no_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "NO_PROXY",
            // Rust and other tool chains, CI.
            "RUST_LOG",
            "RUST_BACKTRACE",
            "RUST_LIB_BACKTRACE",
            "RUST_LOG_STYLE",
            "RUSTC_LOG",
            "RUST_MIN_STACK",
            "RUSTFLAGS",
            "RUSTUP_HOME",
            "RUSTUP_TOOLCHAIN",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "GOPATH",
            "JAVA_HOME",
            "NODE_ENV",
            "PYTHONPATH",
            "VIRTUAL_ENV",
            "DEBUG",
            "CI",
            "GITHUB_ACTIONS",
            "GITHUB_WORKSPACE",
            "RUNNER_TEMP",
            "WORKDIR",
            "STATE",
            "MEMORY",
            "MEMORY_LIMIT",
            "MEMORY_REQUEST",
            "CPU_LIMIT",
            "CPU_REQUEST",
            "POD_NAME",
            "POD_NAMESPACE",
            "POD_IP",
            "NODE_NAME",
            "SERVICE_ACCOUNT",
        ];
        // Service links for Services named after this one, after common
        // software, and with names short or close to our variables.
        let mut links = Vec::new();
        for service in [
            "CHAOS_BACKEND",
            "CHAOS",
            "PROMETHEUS",
            "GRAFANA",
            "REDIS",
            "POSTGRES",
            "WEB",
            "API",
            "P",
            "DB",
            "HOST",
            "PORT",
            "WORKERS",
            "STATE",
            "MEMORY",
            "CHAOS_TOKEN",
        ] {
            links.push(format!("{service}_SERVICE_HOST"));
            links.push(format!("{service}_SERVICE_PORT"));
            links.push(format!("{service}_SERVICE_PORT_HTTP"));
            links.push(format!("{service}_SERVICE_PORT_METRICS"));
            links.push(format!("{service}_PORT"));
            for proto in ["TCP", "UDP", "SCTP"] {
                links.push(format!("{service}_PORT_8080_{proto}"));
                for part in ["PROTO", "PORT", "ADDR"] {
                    links.push(format!("{service}_PORT_8080_{proto}_{part}"));
                }
            }
        }
        names.extend(links.iter().map(String::as_str));
        names.extend(known_names());
        assert_eq!(check(names.iter().copied(), &known_names()), Ok(()));
    }

    #[test]
    fn every_name_found_is_reported_sorted_and_without_its_value() {
        let err = check(["WORKER", "HOME", "CHAOS_TOKN"], &known_names()).unwrap_err();
        assert_eq!(
            err.0.iter().map(|m| (m.name.as_str(), m.meant)).collect::<Vec<_>>(),
            [("CHAOS_TOKN", "CHAOS_TOKEN"), ("WORKER", "WORKERS")]
        );
        let text = err.to_string();
        assert!(
            text.starts_with("unknown variable CHAOS_TOKN: did you mean CHAOS_TOKEN?"),
            "{text}"
        );
        assert!(
            text.contains("\nunknown variable WORKER: did you mean WORKERS?"),
            "{text}"
        );
    }
}
