//! Query strings of the chaos endpoints, parsed into typed values with errors
//! that name the parameter and quote the bad value.
//!
//! Strict on purpose: an unknown parameter (`durration=5`) or a repeated one
//! is a 400, because silently falling back to a default would start a fault
//! the caller did not ask for.

use std::fmt;

use crate::http::reply::shown;

/// A parameter that cannot be used. `parameter` and `value` are as sent
/// (`Reply::bad_parameter` shortens them); `message` quotes them shortened.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamError {
    pub parameter: String,
    pub value: Option<String>,
    pub message: String,
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The decoded `name=value` pairs of one query string.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses `raw` (without the `?`), accepting only the names in `allowed`.
    pub fn parse(raw: &str, allowed: &[&str]) -> Result<Query, ParamError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for piece in raw.split('&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = piece.split_once('=').unwrap_or((piece, ""));
            let name = decode(raw_name).map_err(|why| ParamError {
                parameter: raw_name.to_string(),
                value: None,
                message: format!(
                    "invalid percent-encoding in parameter name {:?}: {why}",
                    shown(raw_name)
                ),
            })?;
            let value = decode(raw_value).map_err(|why| ParamError {
                parameter: name.to_string(),
                value: Some(raw_value.to_string()),
                message: format!(
                    "invalid percent-encoding in {} {:?}: {why}",
                    shown(&name),
                    shown(raw_value)
                ),
            })?;
            if !allowed.contains(&name.as_str()) {
                let known = if allowed.is_empty() {
                    "this endpoint takes no parameters".to_string()
                } else {
                    format!("known: {}", allowed.join(", "))
                };
                return Err(ParamError {
                    message: format!(
                        "unknown parameter {:?} (value {:?}); {known}",
                        shown(&name),
                        shown(&value)
                    ),
                    parameter: name.to_string(),
                    value: Some(value.to_string()),
                });
            }
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(ParamError {
                    message: format!("parameter {} given more than once", shown(&name)),
                    parameter: name.to_string(),
                    value: Some(value.to_string()),
                });
            }
            pairs.push((name, value));
        }
        Ok(Query { pairs })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// One of `choices`, or `None` when absent.
    pub fn choice(&self, name: &str, choices: &[&'static str]) -> Result<Option<&'static str>, ParamError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        choices
            .iter()
            .find(|c| **c == value)
            .map(|c| Some(*c))
            .ok_or_else(|| ParamError {
                parameter: name.to_string(),
                value: Some(value.to_string()),
                message: format!(
                    "invalid {name} {:?}: expected one of {}",
                    shown(value),
                    choices.join(", ")
                ),
            })
    }

    /// A whole number within `min..=max` of `unit`, or `None` when absent.
    pub fn bounded(&self, name: &str, min: u64, max: u64, unit: &str) -> Result<Option<u64>, ParamError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        crate::config::parse_bounded(value, min, max)
            .map(Some)
            .ok_or_else(|| ParamError {
                parameter: name.to_string(),
                value: Some(value.to_string()),
                message: format!(
                    "invalid {name} {:?}: expected a whole number of {unit} from {min} to {max}",
                    shown(value)
                ),
            })
    }
}

/// Why a query component cannot be decoded.
#[derive(Debug, Clone, PartialEq)]
enum DecodeError {
    /// A `%` not followed by two hex digits; holds the escape as sent.
    BrokenEscape(String),
    NotUtf8,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::BrokenEscape(escape) => {
                write!(f, "broken escape {escape:?} (a % must be followed by two hex digits)")
            }
            DecodeError::NotUtf8 => f.write_str("the decoded bytes are not UTF-8"),
        }
    }
}

/// Percent-decodes a query component (`+` is a space). A broken escape or
/// bytes that are not UTF-8 are an error, never a guess.
fn decode(text: &str) -> Result<String, DecodeError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                // Both digits checked here: `from_str_radix` alone would
                // take a sign, so `%+5` would decode to 0x05.
                let byte = match bytes.get(i + 1..i + 3) {
                    Some(&[hi, lo]) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                        hex_value(hi) << 4 | hex_value(lo)
                    }
                    _ => return Err(DecodeError::BrokenEscape(text[i..].chars().take(3).collect())),
                };
                out.push(byte);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| DecodeError::NotUtf8)
}

/// The value of one ASCII hex digit (the caller has checked it is one).
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPU: &[&str] = &["duration", "millicores"];

    #[test]
    fn parses_and_bounds() {
        let q = Query::parse("duration=5&millicores=250", CPU).unwrap();
        assert_eq!(q.bounded("duration", 1, 3600, "seconds").unwrap(), Some(5));
        assert_eq!(q.bounded("millicores", 1, 2000, "millicores").unwrap(), Some(250));
        assert_eq!(Query::parse("", CPU).unwrap().get("duration"), None);
        assert_eq!(Query::parse("&&duration=%35&", CPU).unwrap().get("duration"), Some("5"));
    }

    #[test]
    fn bad_values_are_named_and_quoted() {
        for (raw, expected) in [
            (
                "duration=abc",
                "invalid duration \"abc\": expected a whole number of seconds from 1 to 3600",
            ),
            ("duration=-1", "invalid duration \"-1\""),
            ("duration=0", "invalid duration \"0\""),
            ("duration=1.5", "invalid duration \"1.5\""),
            ("duration=", "invalid duration \"\""),
            ("duration", "invalid duration \"\""),
            (
                "duration=99999999999999999999",
                "invalid duration \"99999999999999999999\"",
            ),
            ("duration=%2B5", "invalid duration \"+5\""),
        ] {
            let q = Query::parse(raw, CPU).unwrap();
            let err = q.bounded("duration", 1, 3600, "seconds").unwrap_err();
            assert!(err.message.starts_with(expected), "{raw}: {}", err.message);
            assert_eq!(err.parameter, "duration");
        }
    }

    #[test]
    fn unknown_repeated_and_broken_parameters_are_refused() {
        let err = Query::parse("durration=5", CPU).unwrap_err();
        assert_eq!(
            err.message,
            "unknown parameter \"durration\" (value \"5\"); known: duration, millicores"
        );
        let err = Query::parse("duration=1&duration=2", CPU).unwrap_err();
        assert_eq!(err.message, "parameter duration given more than once");
        let err = Query::parse("duration=%zz", CPU).unwrap_err();
        assert!(err.message.contains("%zz"), "{}", err.message);
        let err = Query::parse("mode=x", &[]).unwrap_err();
        assert!(err.message.contains("takes no parameters"), "{}", err.message);
        assert!(Query::parse("duration=%", CPU).is_err());
        assert_eq!(
            Query::parse("duration=%35%2b%2B", CPU).unwrap().get("duration"),
            Some("5++")
        );
        assert!(Query::parse("duration=%ff", CPU).is_err(), "not UTF-8");
    }

    #[test]
    fn long_values_are_named_not_echoed() {
        let long = "9".repeat(100_000);
        let q = Query::parse(&format!("duration={long}"), CPU).unwrap();
        let err = q.bounded("duration", 1, 3600, "seconds").unwrap_err();
        assert!(err.message.len() < 200, "{}", err.message);
        assert!(err.message.contains("(100000 bytes)"), "{}", err.message);
    }

    /// A small deterministic fuzz: random bytes never panic the parser.
    #[test]
    fn random_input_never_panics() {
        let alphabet = b"%+=&?abcdefxyz0123456789-._~ \xc3\xa9";
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            let mut s = Vec::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 40) as usize;
            let mut x = seed;
            for _ in 0..len {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                s.push(alphabet[(x >> 33) as usize % alphabet.len()]);
            }
            let raw = String::from_utf8_lossy(&s);
            if let Ok(q) = Query::parse(&raw, CPU) {
                let _ = q.bounded("duration", 1, 3600, "seconds");
            }
        }
    }

    /// `from_str_radix` takes a sign: `%+5` once decoded to 0x05. Every `%`
    /// not followed by two hex digits is a broken escape, named as sent.
    #[test]
    fn broken_escapes_are_refused_and_quoted() {
        for (raw, escape) in [
            ("duration=%+5", "%+5"),
            ("duration=%-5", "%-5"),
            ("duration=% 5", "% 5"),
            ("duration=%5", "%5"),
            ("duration=1%5", "%5"),
            ("duration=%G0", "%G0"),
            ("duration=%0G", "%0G"),
            ("duration=%", "%"),
            ("duration=%é1", "%é1"),
            ("%+5duration=1", "%+5"),
        ] {
            let err = Query::parse(raw, CPU).unwrap_err();
            assert!(
                err.message.contains(&format!("broken escape {escape:?}")),
                "{raw}: {}",
                err.message
            );
        }
        let err = Query::parse("duration=%ff", CPU).unwrap_err();
        assert!(err.message.contains("not UTF-8"), "{}", err.message);
        for (escape, byte) in [("%00", 0u8), ("%7f", 0x7f), ("%7F", 0x7f), ("%4a", b'J'), ("%4A", b'J')] {
            assert_eq!(decode(escape).unwrap().as_bytes(), [byte], "{escape}");
        }
    }
}
