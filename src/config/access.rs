//! Who may start chaos: the bearer token (`CHAOS_TOKEN` or the file named by
//! `CHAOS_TOKEN_FILE`, typically a mounted Secret). Probes, `/metrics` and
//! `GET /` are never guarded.
//!
//! A token file that cannot be read at start-up (or is empty) closes the
//! chaos endpoints instead of stopping the service: a missing Secret then
//! shows as 401s with a reason, not as a crash loop, and never as open
//! endpoints. A token no client could send (`config::bearer_token`: a line
//! break, a space or a byte outside ASCII inside it) is a configuration
//! error instead, exit 2 before the port is bound: it would close them for
//! good, saying nothing but 401.

use crate::config::{ConfigError, TokenSource, bearer_token};

/// The access rule in force, decided once at start-up.
#[derive(Debug, Clone, PartialEq)]
pub enum Access {
    Open,
    Token(Vec<u8>),
    /// No request can pass; the text says why.
    Closed(String),
}

/// Why a request was refused; the text never contains a token.
#[derive(Debug, Clone, PartialEq)]
pub struct Denied(pub String);

impl Access {
    /// The rule `source` gives, read once at start-up: `CHAOS_TOKEN` was
    /// checked (and trimmed) with the rest of the configuration, the file
    /// is read and checked here, the same way.
    pub fn from_source(source: &TokenSource) -> Result<Access, ConfigError> {
        let path = match source {
            TokenSource::Open => return Ok(Access::Open),
            TokenSource::Value(token) => return Ok(Access::Token(token.as_bytes().to_vec())),
            TokenSource::File(path) => path,
        };
        let shown = path.display();
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                return Ok(Access::Closed(format!(
                    "CHAOS_TOKEN_FILE {shown} could not be read at start-up: {e}"
                )));
            }
        };
        if bytes.trim_ascii().is_empty() {
            return Ok(Access::Closed(format!("CHAOS_TOKEN_FILE {shown} is empty")));
        }
        match bearer_token(&bytes) {
            Ok(token) => Ok(Access::Token(token.to_vec())),
            Err(why) => Err(ConfigError {
                variable: "CHAOS_TOKEN_FILE",
                value: Some(shown.to_string()),
                expected: format!(
                    "a file holding a bearer token of visible ASCII characters; in this one, {why} (the token is not shown)"
                ),
            }),
        }
    }

    /// Checks an `Authorization` header value.
    pub fn check(&self, authorization: Option<&str>) -> Result<(), Denied> {
        let expected = match self {
            Access::Open => return Ok(()),
            Access::Closed(why) => return Err(Denied(format!("chaos endpoints are closed: {why}"))),
            Access::Token(t) => t,
        };
        let Some(value) = authorization else {
            return Err(Denied(
                "missing Authorization: Bearer <token> (CHAOS_TOKEN is set)".to_string(),
            ));
        };
        let presented = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        match presented {
            Some(token) if constant_time_eq(token.as_bytes(), expected) => Ok(()),
            Some(_) => Err(Denied("wrong bearer token".to_string())),
            None => Err(Denied(
                "the Authorization header is not of the form \"Bearer <token>\"".to_string(),
            )),
        }
    }
}

/// Compares without stopping at the first difference, so the time taken does
/// not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let len = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..len {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_lets_everyone_in() {
        assert_eq!(Access::Open.check(None), Ok(()));
    }

    #[test]
    fn token_must_match_exactly() {
        let a = Access::from_source(&TokenSource::Value("s3cret".into())).unwrap();
        assert_eq!(a.check(Some("Bearer s3cret")), Ok(()));
        assert_eq!(a.check(Some("bearer s3cret")), Ok(()));
        for bad in ["Bearer s3cre", "Bearer s3crett", "Bearer ", "Basic s3cret", "s3cret"] {
            let denied = a.check(Some(bad)).unwrap_err();
            assert!(!denied.0.contains("s3cret"), "{bad}: {denied:?} leaks the token");
        }
        assert!(a.check(None).unwrap_err().0.contains("missing"));
    }

    #[test]
    fn unreadable_token_file_closes_the_door() {
        let a = Access::from_source(&TokenSource::File("/nonexistent/token".into())).unwrap();
        let denied = a.check(Some("Bearer anything")).unwrap_err();
        assert!(denied.0.contains("/nonexistent/token"), "{denied:?}");
    }

    /// The line end a file ends with (and any whitespace around the
    /// token) is trimmed; a token a header cannot carry is an error that
    /// names the file, not the token; an empty file closes the door.
    #[test]
    fn token_file_is_trimmed_and_checked() {
        let path = std::env::temp_dir().join(format!("chaos-token-{}", std::process::id()));
        let source = TokenSource::File(path.clone());
        for text in [&b"abc\n"[..], b"abc\r\n", b"  abc \n\n"] {
            std::fs::write(&path, text).unwrap();
            let a = Access::from_source(&source).unwrap();
            assert_eq!(a.check(Some("Bearer abc")), Ok(()), "{text:?}");
        }
        for text in [&b"ab\nzq9x\n"[..], b"ab zq9x", b"ab\xffzq9x", b"t\xc3\xb6zq9x"] {
            std::fs::write(&path, text).unwrap();
            let e = Access::from_source(&source).unwrap_err();
            assert_eq!(e.variable, "CHAOS_TOKEN_FILE");
            let message = e.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(!message.contains("zq9x"), "{message}");
        }
        std::fs::write(&path, " \n").unwrap();
        assert!(matches!(Access::from_source(&source), Ok(Access::Closed(why)) if why.contains("is empty")));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
