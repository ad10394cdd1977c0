//! The one response type handlers return, with constructors named by intent.
//!
//! A `Reply` is data (and at most one piece of work to run once it is
//! written), so handlers are tested without sockets; the server turns it
//! into a `tiny_http::Response` at the last moment. It knows nothing of
//! faults: a held answer ends with a flag, a crash is work to run after. Every
//! error is JSON with an `error` field that says what was wrong and quotes
//! the bad input.

use std::fmt;
use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde_json::{Value, json};

/// An answer that is not ready when the handler returns: the work that
/// makes it (a leak being touched, say) runs on a thread of its own, which
/// answers when it is done, so that the worker goes on at once.
// A box in a box: one thin pointer in every `Reply`, which stays small.
#[allow(clippy::redundant_allocation)]
pub struct Later(Box<Box<dyn FnOnce() -> Reply + Send>>);

impl Later {
    pub fn new(make: impl FnOnce() -> Reply + Send + 'static) -> Later {
        Later(Box::new(Box::new(make)))
    }

    /// Waits for the answer (on the calling thread).
    pub fn wait(self) -> Reply {
        (self.0)()
    }
}

impl fmt::Debug for Later {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Later(..)")
    }
}

/// Work the worker runs once the answer has been written and flushed: the
/// client learns that its request was accepted before the work begins (a
/// crash ends the process).
// A box in a box: one thin pointer in every `Reply`, which stays small.
#[allow(clippy::redundant_allocation)]
pub struct AfterReply(Box<Box<dyn FnOnce() + Send>>);

impl AfterReply {
    pub fn new(work: impl FnOnce() + Send + 'static) -> AfterReply {
        AfterReply(Box::new(Box::new(work)))
    }

    pub fn run(self) {
        (self.0)()
    }
}

impl fmt::Debug for AfterReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AfterReply(..)")
    }
}

/// The tiny_http response a `Reply` becomes.
pub type Response = tiny_http::Response<Cursor<Vec<u8>>>;

/// A reply's body: bytes of its own, or bytes shared between answers (a
/// large static document), which the connection layer queues as they are,
/// never copied per answer.
#[derive(Debug)]
pub enum Body {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl std::ops::Deref for Body {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Body::Owned(bytes) => bytes,
            Body::Shared(bytes) => bytes,
        }
    }
}

/// How a request that gets no answer at all ends: what a broken backend or
/// proxy does to its clients (a reset has no status code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// A TCP reset (the client reads ECONNRESET).
    Reset,
    /// A clean close (FIN) without a byte of answer.
    Close,
    /// Nothing for the hold (`Reply::hold`, ended early by `released_by`),
    /// then a clean close; off the workers, like a held answer.
    Stall,
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Body,
    pub headers: Vec<(&'static str, String)>,
    pub after: Option<AfterReply>,
    /// Send the answer only after this long (a latency or hang fault); the
    /// worker does not wait, a thread of its own does.
    pub hold: Option<Duration>,
    /// Ends the hold early once set (the fault that asked for it was
    /// stopped); the connection layer polls it while it holds the answer.
    pub released_by: Option<Arc<AtomicBool>>,
    /// The real answer comes later (`Reply::later`); this one is a stand-in
    /// sent only when no thread can wait for it.
    pub later: Option<Later>,
    /// No answer at all: the status and body are not sent, and the
    /// request is not counted as answered.
    pub unanswered: Option<Unanswered>,
}

impl Reply {
    /// `body` as it is, of `content_type`.
    pub fn bytes(status: u16, content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type,
            body: Body::Owned(body),
            headers: Vec::new(),
            after: None,
            hold: None,
            released_by: None,
            later: None,
            unanswered: None,
        }
    }

    /// `body` shared between answers: the connection layer queues it
    /// rather than a copy per answer.
    pub fn shared(status: u16, content_type: &'static str, body: Arc<[u8]>) -> Reply {
        let mut reply = Reply::bytes(status, content_type, Vec::new());
        reply.body = Body::Shared(body);
        reply
    }

    /// An answer that `make` gives later, on a thread of its own (see
    /// `Later`); the worker goes on at once.
    pub fn later(make: impl FnOnce() -> Reply + Send + 'static) -> Reply {
        let mut reply = Reply::internal_error("the answer could not be waited for");
        reply.later = Some(Later::new(make));
        reply
    }

    pub fn json(status: u16, value: &Value) -> Reply {
        let mut body = value.to_string().into_bytes();
        body.push(b'\n');
        Reply::bytes(status, "application/json", body)
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

    /// No answer: the connection ends as `how` says.
    pub fn unanswered(how: Unanswered) -> Reply {
        let mut reply = Reply::bytes(0, "application/json", Vec::new());
        reply.unanswered = Some(how);
        reply
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }

    pub fn held_for(mut self, hold: Duration) -> Reply {
        self.hold = Some(hold);
        self
    }

    /// The hold ends early once `release` is set.
    pub fn released_by(mut self, release: Arc<AtomicBool>) -> Reply {
        self.released_by = Some(release);
        self
    }

    /// Runs `after` once this answer has been written and flushed.
    pub fn then(mut self, after: AfterReply) -> Reply {
        self.after = Some(after);
        self
    }

    /// This answer, or the one it stands for once it has come (tests call
    /// handlers without a server).
    #[cfg(test)]
    pub fn settled(mut self) -> Reply {
        match self.later.take() {
            Some(later) => later.wait(),
            None => self,
        }
    }

    /// The body as JSON, for tests.
    #[cfg(test)]
    pub fn body_json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("reply body is JSON")
    }

    /// The tiny_http response, and a shared body to send with it
    /// (`Request::respond_shared`), which is not in the response. The body
    /// length is known, so no chunking.
    pub fn into_response(self) -> (Response, Option<Arc<[u8]>>) {
        let (owned, shared) = match self.body {
            Body::Owned(bytes) => (bytes, None),
            Body::Shared(bytes) => (Vec::new(), Some(bytes)),
        };
        let mut response = tiny_http::Response::from_data(owned).with_status_code(self.status);
        response.add_header(header("Content-Type", self.content_type));
        response.add_header(header("Cache-Control", "no-store"));
        for (name, value) in &self.headers {
            response.add_header(header(name, value));
        }
        (response, shared)
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

/// The content type and body of an answer tiny_http writes itself (400,
/// 408, 417, 431, 505): JSON `{"error": ...}` like every other error. The
/// reasons it gives already quote client bytes escaped and short.
pub fn error_body(_status: u16, reason: &str) -> (String, Vec<u8>) {
    let reply = Reply::json(0, &json!({"error": reason}));
    (reply.content_type.to_string(), reply.body.to_vec())
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
