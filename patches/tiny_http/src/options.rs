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
    /// Called by a connection thread about to end, on that thread: the
    /// owner may give back the pages of its stack that it no longer uses
    /// (the fork has no `unsafe` code to do it itself) before the C library
    /// keeps the stack for reuse. `None`: nothing is called.
    pub thread_idle: Option<ThreadHook>,
}

/// See `ServerOptions::thread_idle`.
pub type ThreadHook = Arc<dyn Fn() + Send + Sync>;

/// See `ServerOptions::error_body`.
pub type ErrorBody = Arc<dyn Fn(u16, &str) -> (String, Vec<u8>) + Send + Sync>;

impl fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerOptions")
            .field("connections", &self.connections)
            .field("head", &self.head)
            .field("error_body", &self.error_body.as_ref().map(|_| "fn"))
            .field("thread_idle", &self.thread_idle.as_ref().map(|_| "fn"))
            .finish()
    }
}

/// Connection limits. The default is upstream's: none (no cap, no
/// timeouts, no budget), and upstream's thread pool (4 threads kept, any
/// other idle thread ends after 5 s).
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Connections open at once. At the cap a new connection evicts the
    /// oldest idle one, else the oldest one still sending a head or an
    /// unread body, else the one whose rendered answer has waited longest
    /// to be written, else the one whose request has waited longest for a
    /// worker; if none can go (every one is being answered by a worker),
    /// the new one is closed. It is also the most connection threads that
    /// exist at once, busy, idle or ending.
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
    /// Connection threads kept waiting for a connection once started,
    /// however long they idle (started with the server).
    pub min_threads: usize,
    /// The most connection threads that wait idle for a connection; one
    /// that ends its connection when this many already wait ends too.
    pub max_idle_threads: usize,
    /// A connection thread that has idled this long since its last
    /// connection ends; one of the `min_threads` is replaced by a fresh
    /// thread (which gives back what the allocator's per-thread caches of
    /// the old one held).
    pub thread_idle_timeout: Duration,
    /// Bytes of rendered answers not yet written (not read by their
    /// clients, held, or waiting for the socket), all connections
    /// together. Past it, the connections whose answers have made no
    /// progress for longest are closed until the rest fits. A body shared
    /// between answers (`Request::respond_shared`) is not counted: it is
    /// not copied per answer.
    pub answer_budget: usize,
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
            min_threads: 4,
            max_idle_threads: usize::MAX,
            thread_idle_timeout: Duration::from_secs(5),
            answer_budget: usize::MAX,
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
