//! The one response type handlers return, with constructors named by intent.
//!
//! A `Reply` is plain data, so handlers are tested without sockets; the
//! server turns it into a `tiny_http::Response` at the last moment. Every
//! error is JSON with an `error` field that says what was wrong and quotes
//! the bad input.

use std::io::Cursor;

use serde_json::{Value, json};

use crate::chaos::registry::Cancel;

/// Work to do after the response has been written and flushed.
#[derive(Debug, Clone, PartialEq)]
pub enum After {
    /// Crash the process (the 202 must reach the client first).
    Crash { mode: CrashMode, cause: String },
}

/// How `POST /crash` ends the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// `abort()`: SIGABRT (139 as PID 1 in a container, see README).
    Abort,
    /// `exit(code)`.
    Exit(u8),
    /// SIGKILL to itself.
    Kill,
    /// A Rust panic on the main thread, which the process does not survive.
    Panic,
}

impl CrashMode {
    pub fn label(self) -> &'static str {
        match self {
            CrashMode::Abort => "abort",
            CrashMode::Exit(_) => "exit",
            CrashMode::Kill => "kill",
            CrashMode::Panic => "panic",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
    /// Boxed: rare, and it keeps `Reply` small enough to return in a `Result`.
    pub after: Option<Box<After>>,
    /// Send the answer only after this long (a latency or hang fault); the
    /// worker does not wait, a thread of its own does.
    pub hold: Option<std::time::Duration>,
    /// Ends the hold early: the fault that asked for it was stopped.
    pub released_by: Option<Cancel>,
}

impl Reply {
    pub fn json(status: u16, value: &Value) -> Reply {
        let mut body = value.to_string().into_bytes();
        body.push(b'\n');
        Reply {
            status,
            content_type: "application/json",
            body,
            headers: Vec::new(),
            after: None,
            hold: None,
            released_by: None,
        }
    }

    pub fn ok(value: &Value) -> Reply {
        Reply::json(200, value)
    }

    pub fn accepted(value: &Value) -> Reply {
        Reply::json(202, value)
    }

    /// 400 for a query parameter that cannot be used. `message` must
    /// already quote client input with `shown`; the parameter and its value
    /// are shown here.
    pub fn bad_parameter(message: &str, parameter: &str, value: Option<&str>) -> Reply {
        Reply::json(
            400,
            &json!({"error": message, "parameter": shown(parameter), "value": value.map(shown)}),
        )
    }

    pub fn not_found(path: &str) -> Reply {
        let path = shown(path);
        Reply::json(
            404,
            &json!({"error": format!("no route for path {path:?}"), "path": path}),
        )
    }

    pub fn method_not_allowed(method: &str, path: &str, allowed: &str) -> Reply {
        let method = shown(method);
        Reply::json(
            405,
            &json!({
                "error": format!("method {method} is not allowed on {path}; allowed: {allowed}"),
                "allowed": allowed,
            }),
        )
        .with_header("Allow", allowed.to_string())
    }

    pub fn too_many_requests(message: &str, retry_after_secs: u64) -> Reply {
        Reply::json(429, &json!({"error": message, "retry_after_seconds": retry_after_secs}))
            .with_header("Retry-After", retry_after_secs.to_string())
    }

    pub fn unauthorized(message: &str) -> Reply {
        Reply::json(401, &json!({"error": message})).with_header("WWW-Authenticate", "Bearer".to_string())
    }

    pub fn internal_error(message: &str) -> Reply {
        Reply::json(500, &json!({"error": message}))
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }

    pub fn held_for(mut self, hold: std::time::Duration) -> Reply {
        self.hold = Some(hold);
        self
    }

    /// The hold ends early when `cancel` fires (its fault was stopped).
    pub fn released_by(mut self, cancel: Cancel) -> Reply {
        self.released_by = Some(cancel);
        self
    }

    pub fn then(mut self, after: After) -> Reply {
        self.after = Some(Box::new(after));
        self
    }

    /// The body as JSON, for tests.
    #[cfg(test)]
    pub fn body_json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("reply body is JSON")
    }

    /// The tiny_http response; the body length is known, so no chunking.
    pub fn into_response(self) -> tiny_http::Response<Cursor<Vec<u8>>> {
        let mut response = tiny_http::Response::from_data(self.body).with_status_code(self.status);
        response.add_header(header("Content-Type", self.content_type));
        response.add_header(header("Cache-Control", "no-store"));
        for (name, value) in &self.headers {
            response.add_header(header(name, value));
        }
        response
    }
}

/// The most characters of client input an answer (or a log line) quotes.
pub const QUOTE_CHARS: usize = 64;

/// Client input as answers and logs show it: at most `QUOTE_CHARS`
/// characters, then `... (N bytes)`, so a 1 MiB path or parameter is named
/// without being echoed back whole.
pub fn shown(value: &str) -> String {
    match value.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("{}... ({} bytes)", &value[..cut], value.len()),
        None => value.to_string(),
    }
}

/// What the HTTP layer is told: the head limits, and a JSON body
/// `{"error": ...}` for the answers tiny_http writes itself (400, 408, 417,
/// 431, 505), whose reasons already quote client bytes escaped and short.
pub fn server_options(config: &crate::config::Config) -> tiny_http::ServerOptions {
    tiny_http::ServerOptions {
        head: tiny_http::HeadLimits {
            max_bytes: config.max_request_head_bytes,
            max_headers: config.max_request_headers,
        },
        error_body: Some(std::sync::Arc::new(|_status: u16, reason: &str| {
            let mut body = json!({"error": reason}).to_string().into_bytes();
            body.push(b'\n');
            ("application/json".to_string(), body)
        })),
        ..tiny_http::ServerOptions::default()
    }
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    // Names are our literals and values are digits, JSON-free text or our
    // literals: always valid header bytes.
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("header names and values are ASCII literals")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_json_with_reason() {
        let r = Reply::method_not_allowed("DELETE", "/health", "GET, HEAD");
        assert_eq!(r.status, 405);
        assert_eq!(r.headers, vec![("Allow", "GET, HEAD".to_string())]);
        assert!(r.body_json()["error"].as_str().unwrap().contains("DELETE"));
        let r = Reply::too_many_requests("busy", 7);
        assert_eq!(r.headers, vec![("Retry-After", "7".to_string())]);
        assert_eq!(r.body_json()["retry_after_seconds"], 7);
    }

    #[test]
    fn echoes_of_client_input_are_short() {
        let long = "/x".repeat(500_000);
        for r in [
            Reply::not_found(&long),
            Reply::method_not_allowed(&long, "/health", "GET, HEAD"),
            Reply::bad_parameter("bad", &long, Some(&long)),
        ] {
            assert!(r.body.len() < 400, "{} bytes", r.body.len());
            assert!(String::from_utf8_lossy(&r.body).contains("(1000000 bytes)"));
        }
        assert_eq!(shown("é".repeat(70).as_str()).chars().filter(|c| *c == 'é').count(), 64);
        assert_eq!(shown("/health"), "/health");
    }
}
