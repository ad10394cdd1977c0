//! Patch (chaos-backend): limits and hooks for one server. Upstream
//! tiny_http 0.12 has no way to bound connections or request heads, nor to
//! give a body to the answers it writes itself; `ServerOptions::default()`
//! keeps upstream's behaviour, so the patch changes nothing for a server
//! built with `Server::from_listener`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

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

/// Connection limits. The default is upstream's: none (no cap, no
/// timeouts).
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Connections open at once. At the cap a new connection evicts the
    /// oldest idle one, else the oldest one still sending a head or an
    /// unread body; if none can go, the new one is closed.
    pub max_connections: usize,
    /// A connection waiting for the first byte of its next request is
    /// closed after this long.
    pub idle_timeout: Option<Duration>,
    /// The whole head (and a body of up to 1 KiB, read with it) must come
    /// within this long of its first byte, else 408 and close.
    pub head_timeout: Option<Duration>,
    /// A write of an answer that makes no progress for this long closes
    /// the connection.
    pub write_timeout: Option<Duration>,
    /// An answered request's unread body is drained before the next head,
    /// up to `drain_limit` bytes within this long, else the connection
    /// closes. A larger body: the answer says `Connection: close`.
    pub drain_timeout: Option<Duration>,
    /// See `drain_timeout`.
    pub drain_limit: u64,
    /// Stack size of connection threads (None: Rust's default, 2 MiB of
    /// address space, touched pages only count).
    pub thread_stack_size: Option<usize>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: usize::MAX,
            idle_timeout: None,
            head_timeout: None,
            write_timeout: None,
            drain_timeout: None,
            drain_limit: u64::MAX,
            thread_stack_size: None,
        }
    }
}

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
