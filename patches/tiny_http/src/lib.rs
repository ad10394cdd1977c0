//! # Simple usage
//!
//! ## Creating the server
//!
//! The easiest way to create a server is to call `Server::http()`.
//!
//! The `http()` function returns an `IoResult<Server>` which will return an error
//! in the case where the server creation fails (for example if the listening port is already
//! occupied).
//!
//! ```no_run
//! let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! ```
//!
//! A newly-created `Server` will immediately start listening for incoming connections and HTTP
//! requests.
//!
//! ## Receiving requests
//!
//! Calling `server.recv()` will block until the next request is available.
//! This function returns an `IoResult<Request>`, so you need to handle the possible errors.
//!
//! ```no_run
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//!
//! loop {
//!     // blocks until the next request is received
//!     let request = match server.recv() {
//!         Ok(rq) => rq,
//!         Err(e) => { println!("error: {}", e); break }
//!     };
//!
//!     // do something with the request
//!     // ...
//! }
//! ```
//!
//! In a real-case scenario, you will probably want to spawn multiple worker tasks and call
//! `server.recv()` on all of them. Like this:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::thread;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! let server = Arc::new(server);
//! let mut guards = Vec::with_capacity(4);
//!
//! for _ in (0 .. 4) {
//!     let server = server.clone();
//!
//!     let guard = thread::spawn(move || {
//!         loop {
//!             let rq = server.recv().unwrap();
//!
//!             // ...
//!         }
//!     });
//!
//!     guards.push(guard);
//! }
//! ```
//!
//! If you don't want to block, you can call `server.try_recv()` instead.
//!
//! ## Handling requests
//!
//! The `Request` object returned by `server.recv()` contains informations about the client's request.
//! The most useful methods are probably `request.method()` and `request.url()` which return
//! the requested method (`GET`, `POST`, etc.) and url.
//!
//! To handle a request, you need to create a `Response` object. See the docs of this object for
//! more infos. Here is an example of creating a `Response` from a file:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! ```
//!
//! All that remains to do is call `request.respond()`:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! # let request = server.recv().unwrap();
//! # let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! let _ = request.respond(response);
//! ```
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![allow(clippy::match_like_matches_macro)]
// Patch (chaos-backend): lints newer than upstream's code, which stays as
// upstream wrote it so that the fork's diff shows real changes only.
#![allow(
    clippy::doc_overindented_list_items,
    clippy::io_other_error,
    clippy::needless_borrow,
    clippy::unnecessary_map_or
)]

use std::error::Error;
use std::io::Error as IoError;
use std::io::ErrorKind as IoErrorKind;
use std::io::Result as IoResult;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use connection::Connection;
use util::MessagesQueue;

pub use accept::AcceptThread;
pub use common::{HTTPVersion, Header, HeaderField, Method, StatusCode};
pub use connection::{ConfigListenAddr, ListenAddr, Listener};
pub use connections::ConnectionStats;
pub use options::{ConnectionLimits, ErrorBody, HeadLimits, ServerOptions, ThreadHook};
pub use request::{ReadWrite, Request, Unanswered};
pub use response::{Response, ResponseBox};
pub use test::TestRequest;

mod accept;
mod client;
mod common;
mod connection;
mod connections;
mod head;
mod options;
mod request;
mod response;
mod test;
mod util;

/// The main class of this library.
///
/// Destroying this object will immediately close the listening socket and the reading
///  part of all the client's connections. Requests that have already been returned by
///  the `recv()` function will not close and the responses will be transferred to the client.
pub struct Server {
    // should be false as long as the server exists
    // when set to true, all the subtasks will close within a few hundreds ms
    close: Arc<AtomicBool>,

    // queue for messages received by child threads
    messages: Arc<MessagesQueue<Message>>,

    // result of TcpListener::local_addr()
    listening_addr: ListenAddr,

    // Patch (chaos-backend): the open connections.
    table: Arc<connections::Table>,

    // Patch (chaos-backend): whether the accept loop still runs.
    accept_thread: AcceptThread,
}

enum Message {
    Error(IoError),
    NewRequest(Request),
}

impl From<IoError> for Message {
    fn from(e: IoError) -> Message {
        Message::Error(e)
    }
}

impl From<Request> for Message {
    fn from(rq: Request) -> Message {
        Message::NewRequest(rq)
    }
}

// this trait is to make sure that Server implements Share and Send
#[doc(hidden)]
#[allow(dead_code)]
trait MustBeShareDummy: Sync + Send {}
#[doc(hidden)]
impl MustBeShareDummy for Server {}

pub struct IncomingRequests<'a> {
    server: &'a Server,
}

/// Represents the parameters required to create a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The addresses to try to listen to.
    pub addr: ConfigListenAddr,

    /// If `Some`, then the server will use SSL to encode the communications.
    pub ssl: Option<SslConfig>,
}

/// Configuration of the server for SSL.
#[derive(Debug, Clone)]
pub struct SslConfig {
    /// Contains the public certificate to send to clients.
    pub certificate: Vec<u8>,
    /// Contains the ultra-secret private key used to decode communications.
    pub private_key: Vec<u8>,
}

impl Server {
    /// Shortcut for a simple server on a specific address.
    #[inline]
    pub fn http<A>(addr: A) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: None,
        })
    }

    #[cfg(unix)]
    #[inline]
    /// Shortcut for a UNIX socket server at a specific path
    pub fn http_unix(
        path: &std::path::Path,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::unix_from_path(path),
            ssl: None,
        })
    }

    /// Builds a new server that listens on the specified address.
    pub fn new(config: ServerConfig) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = config.addr.bind()?;
        Self::from_listener(listener, config.ssl)
    }

    /// Builds a new server using the specified TCP listener.
    ///
    /// This is useful if you've constructed TcpListener using some less usual method
    /// such as from systemd. For other cases, you probably want the `new()` function.
    pub fn from_listener<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Self::from_listener_with(listener, ssl_config, ServerOptions::default())
    }

    /// Patch (chaos-backend): like `from_listener`, with limits and hooks
    /// (see `ServerOptions`).
    pub fn from_listener_with<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
        options: ServerOptions,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let options = Arc::new(options);
        let listener = listener.into();
        // building the "close" variable
        let close_trigger = Arc::new(AtomicBool::new(false));

        // building the TcpListener
        let (server, local_addr) = {
            let local_addr = listener.local_addr()?;
            log::debug!("Server listening on {}", local_addr);
            (listener, local_addr)
        };

        // Patch (chaos-backend): the SSL code and features are removed (the
        // patched connection layer has no TLS): an SSL configuration is an
        // error, never a server that answers in plain HTTP.
        if ssl_config.is_some() {
            return Err("SSL is not supported by this patched tiny_http".into());
        }

        // Patch (chaos-backend): the accept loop is in accept.rs, with the
        // table of connections (connections/) that it admits to.
        let messages = MessagesQueue::with_capacity(8);
        let table = connections::Table::new(options.connections.clone());
        let accept_thread = accept::spawn(
            server,
            Arc::clone(&table),
            options,
            messages.clone(),
            close_trigger.clone(),
        )?;
        connections::spawn_watchdog(Arc::clone(&table), close_trigger.clone())?;

        // result
        Ok(Server {
            messages,
            close: close_trigger,
            listening_addr: local_addr,
            table,
            accept_thread,
        })
    }

    /// Returns an iterator for all the incoming requests.
    ///
    /// The iterator will return `None` if the server socket is shutdown.
    #[inline]
    pub fn incoming_requests(&self) -> IncomingRequests<'_> {
        IncomingRequests { server: self }
    }

    /// Returns the address the server is listening to.
    #[inline]
    pub fn server_addr(&self) -> ListenAddr {
        self.listening_addr.clone()
    }

    /// Returns the number of clients currently connected to the server.
    /// Patch (chaos-backend): upstream left this `unimplemented!()`.
    pub fn num_connections(&self) -> usize {
        self.table.stats().open
    }

    /// Patch (chaos-backend): counters of the connection layer.
    pub fn connection_stats(&self) -> ConnectionStats {
        self.table.stats()
    }

    /// Patch (chaos-backend): connections with an answer that was handed
    /// over (`respond`, `respond_held`) and is not all written yet: held
    /// back, or waiting for its client to read. An owner that stops polls
    /// it to know that the answers it gave were sent before it exits.
    pub fn unwritten_answers(&self) -> usize {
        self.table.unwritten()
    }

    /// Patch (chaos-backend): whether the accept loop still runs, as a
    /// handle that outlives the server. Once the loop has ended the server
    /// accepts nothing more, though `recv` may still block.
    pub fn accept_thread(&self) -> AcceptThread {
        self.accept_thread.clone()
    }

    /// Blocks until an HTTP request has been submitted and returns it.
    ///
    /// Patch (chaos-backend): a request whose connection was closed while
    /// it waited in the queue (evicted at the cap) is dropped unanswered,
    /// here and in `recv_timeout` and `try_recv`; the request returned is
    /// marked as taken by a worker, and its connection is no longer
    /// evicted.
    pub fn recv(&self) -> IoResult<Request> {
        loop {
            match self.messages.pop() {
                Some(Message::Error(err)) => return Err(err),
                Some(Message::NewRequest(rq)) if rq.take() => return Ok(rq),
                Some(Message::NewRequest(rq)) => rq.abandon(),
                None => return Err(IoError::new(IoErrorKind::Other, "thread unblocked")),
            }
        }
    }

    /// Same as `recv()` but doesn't block longer than timeout
    pub fn recv_timeout(&self, timeout: Duration) -> IoResult<Option<Request>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.messages.pop_timeout(left) {
                Some(Message::Error(err)) => return Err(err),
                Some(Message::NewRequest(rq)) if rq.take() => return Ok(Some(rq)),
                Some(Message::NewRequest(rq)) => rq.abandon(),
                None => return Ok(None),
            }
        }
    }

    /// Same as `recv()` but doesn't block.
    pub fn try_recv(&self) -> IoResult<Option<Request>> {
        loop {
            match self.messages.try_pop() {
                Some(Message::Error(err)) => return Err(err),
                Some(Message::NewRequest(rq)) if rq.take() => return Ok(Some(rq)),
                Some(Message::NewRequest(rq)) => rq.abandon(),
                None => return Ok(None),
            }
        }
    }

    /// Unblock thread stuck in recv() or incoming_requests().
    /// If there are several such threads, only one is unblocked.
    /// This method allows graceful shutdown of server.
    pub fn unblock(&self) {
        self.messages.unblock();
    }
}

impl Iterator for IncomingRequests<'_> {
    type Item = Request;
    fn next(&mut self) -> Option<Request> {
        self.server.recv().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close.store(true, Relaxed);
        // Connect briefly to ourselves to unblock the accept thread
        let maybe_stream = match &self.listening_addr {
            ListenAddr::IP(addr) => TcpStream::connect(addr).map(Connection::from),
            #[cfg(unix)]
            ListenAddr::Unix(addr) => {
                // TODO: use connect_addr when its stabilized.
                let path = addr.as_pathname().unwrap();
                std::os::unix::net::UnixStream::connect(path).map(Connection::from)
            }
        };
        if let Ok(stream) = maybe_stream {
            let _ = stream.shutdown(Shutdown::Both);
        }

        #[cfg(unix)]
        if let ListenAddr::Unix(addr) = &self.listening_addr {
            if let Some(path) = addr.as_pathname() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Patch (chaos-backend): no SSL code is left, so an SSL configuration
    /// must fail rather than serve plain HTTP.
    #[test]
    fn an_ssl_configuration_is_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ssl = SslConfig {
            certificate: b"cert".to_vec(),
            private_key: b"key".to_vec(),
        };
        let err = Server::from_listener(listener, Some(ssl))
            .err()
            .expect("an error");
        assert!(err.to_string().contains("SSL is not supported"), "{}", err);
    }

    /// Patch (chaos-backend): the accept loop's liveness comes from the
    /// server itself; it flips when the loop ends (here: the server is
    /// dropped, which ends the loop).
    #[test]
    fn the_accept_thread_handle_flips_when_the_loop_ends() {
        let server = Server::http("127.0.0.1:0").unwrap();
        let accept = server.accept_thread();
        assert!(accept.is_alive());
        // It keeps running while the server accepts.
        let addr = server.server_addr().to_ip().unwrap();
        drop(TcpStream::connect(addr).unwrap());
        assert!(!accept.wait_timeout(Duration::from_millis(100)));
        assert!(accept.is_alive());
        drop(server);
        assert!(
            accept.wait_timeout(Duration::from_secs(10)),
            "the accept loop did not end"
        );
        assert!(!accept.is_alive());
    }
}
