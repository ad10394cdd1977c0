//! Patch (chaos-backend): limits and hooks for one server. Upstream
//! tiny_http 0.12 has no way to bound connections or request heads, nor to
//! give a body to the answers it writes itself; `ServerOptions::default()`
//! keeps upstream's behaviour, so the patch changes nothing for a server
//! built with `Server::from_listener`.

use std::fmt;
use std::sync::Arc;

/// Everything `Server::from_listener_with` can be told.
#[derive(Clone, Default)]
pub struct ServerOptions {
    /// Bounds on connections: how many, how long they may idle or take
    /// to send a head, how long a write may make no progress.
    pub connections: ConnectionLimits,
    /// Bounds on one request head.
    pub head: HeadLimits,
    /// Renders the body of an answer tiny_http writes itself (400, 408,
    /// 417, 431, 505 ...): given the status code and a short reason, the
    /// content type and the body. `None`: empty bodies, as upstream.
    pub error_body: Option<ErrorBody>,
}

/// See `ServerOptions::error_body`.
pub type ErrorBody = Arc<dyn Fn(u16, &str) -> (String, Vec<u8>) + Send + Sync>;

impl fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerOptions")
            .field("connections", &self.connections)
            .field("head", &self.head)
            .field("error_body", &self.error_body.as_ref().map(|_| "fn"))
            .finish()
    }
}

/// Connection limits. The default is upstream's: none.
#[derive(Clone, Debug, Default)]
pub struct ConnectionLimits {}

/// Request-head limits. The default is upstream's: none (but the head is
/// parsed strictly either way, see `head.rs`).
#[derive(Clone, Debug)]
pub struct HeadLimits {
    /// The most bytes of request line and header lines together, line ends
    /// included. A longer head gets 431 and a close; nothing past this many
    /// bytes is read or held.
    pub max_bytes: usize,
    /// The most header fields in one head: more get 431 and a close.
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_bytes: usize::MAX,
            max_headers: usize::MAX,
        }
    }
}
