use std::io::Error as IoError;
use std::io::{self, ErrorKind, Read, Write};

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use std::sync::mpsc::Sender;

use crate::connections::{AnswerWriter, Conn};
use crate::util::{EqualReader, FusedReader};
use crate::{HTTPVersion, Header, Method, Response, StatusCode};
use chunked_transfer::Decoder;
use std::sync::Arc;

/// Represents an HTTP request made by a client.
///
/// A `Request` object is what is produced by the server, and is your what
/// your code must analyse and answer.
///
/// This object implements the `Send` trait, therefore you can dispatch your requests to
/// worker threads.
///
/// # Pipelining
///
/// If a client sends multiple requests in a row (without waiting for the response), then you will
/// get multiple `Request` objects simultaneously. This is called *requests pipelining*.
/// Tiny-http automatically reorders the responses so that you don't need to worry about the order
/// in which you call `respond` or `into_writer`.
///
/// This mechanic is disabled if:
///
///  - The body of a request is large enough (handling requires pipelining requires storing the
///    body of the request in a buffer ; if the body is too big, tiny-http will avoid doing that)
///  - A request sends a `Expect: 100-continue` header (which means that the client waits to
///    know whether its body will be processed before sending it)
///  - A request sends a `Connection: close` header or `Connection: upgrade` header (used for
///    websockets), which indicates that this is the last request that will be received on this
///    connection
///
/// # Automatic cleanup
///
/// If a `Request` object is destroyed without `into_writer` or `respond` being called,
/// an empty response with a 500 status code (internal server error) will automatically be
/// sent back to the client.
/// This means that if your code fails during the handling of a request, this "internal server
/// error" response will automatically be sent during the stack unwinding.
///
/// # Testing
///
/// If you want to build fake requests to test your server, use [`TestRequest`](crate::test::TestRequest).
pub struct Request {
    // where to read the body from
    data_reader: Option<Box<dyn Read + Send + 'static>>,

    // if this writer is empty, then the request has been answered
    // Patch (chaos-backend): the connection's own writer, or any other
    // (a `TestRequest`'s).
    response_writer: Option<ResponseWriter>,

    remote_addr: Option<SocketAddr>,

    // true if HTTPS, false if HTTP
    secure: bool,

    method: Method,

    path: String,

    http_version: HTTPVersion,

    headers: Vec<Header>,

    body_length: Option<usize>,

    // true if a `100 Continue` response must be sent when `as_reader()` is called
    must_send_continue: bool,

    // If Some, a message must be sent after responding
    notify_when_responded: Option<Sender<()>>,

    // Patch (chaos-backend): the connection, to hold an answer back on its
    // own thread (`respond_held`). None for `TestRequest`s.
    connection: Option<Arc<Conn>>,
}

/// Patch (chaos-backend): where an answer goes: the connection's writer,
/// which can queue a body shared between answers instead of copying it
/// (`Request::respond_shared`), or any other writer.
enum ResponseWriter {
    Connection(Box<AnswerWriter>),
    Other(Box<dyn Write + Send + 'static>),
}

impl ResponseWriter {
    /// Writes `body` after what was written so far: queued as it is by a
    /// connection's writer, copied by any other.
    fn write_shared(&mut self, body: Arc<[u8]>) -> io::Result<()> {
        match self {
            ResponseWriter::Connection(w) => {
                w.write_shared(body);
                Ok(())
            }
            ResponseWriter::Other(w) => w.write_all(&body),
        }
    }

    fn into_box(self) -> Box<dyn Write + Send + 'static> {
        match self {
            ResponseWriter::Connection(w) => w,
            ResponseWriter::Other(w) => w,
        }
    }
}

impl Write for ResponseWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ResponseWriter::Connection(w) => w.write(buf),
            ResponseWriter::Other(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ResponseWriter::Connection(w) => w.flush(),
            ResponseWriter::Other(w) => w.flush(),
        }
    }
}

struct NotifyOnDrop<R> {
    sender: Sender<()>,
    inner: R,
}

impl<R: Read> Read for NotifyOnDrop<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}
impl<R: Write> Write for NotifyOnDrop<R> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
impl<R> Drop for NotifyOnDrop<R> {
    fn drop(&mut self) {
        self.sender.send(()).unwrap();
    }
}

/// Error that can happen when building a `Request` object.
#[derive(Debug)]
pub enum RequestCreationError {
    /// The client sent an `Expect` header that was not recognized by tiny-http.
    ExpectationFailed,

    /// Error while reading data from the socket during the creation of the `Request`.
    CreationIoError(IoError),
}

impl From<IoError> for RequestCreationError {
    fn from(err: IoError) -> RequestCreationError {
        RequestCreationError::CreationIoError(err)
    }
}

/// Builds a new request.
///
/// After the request line and headers have been read from the socket, a new `Request` object
/// is built.
///
/// You must pass a `Read` that will allow the `Request` object to read from the incoming data.
/// It is the responsibility of the `Request` to read only the data of the request and not further.
///
/// The `Write` object will be used by the `Request` to write the response.
#[allow(clippy::too_many_arguments)]
pub fn new_request<R, W>(
    secure: bool,
    method: Method,
    path: String,
    version: HTTPVersion,
    headers: Vec<Header>,
    remote_addr: Option<SocketAddr>,
    source_data: R,
    writer: W,
) -> Result<Request, RequestCreationError>
where
    R: Read + Send + 'static,
    W: Write + Send + 'static,
{
    // finding the transfer-encoding header
    let transfer_encoding = headers
        .iter()
        .find(|h: &&Header| h.field.equiv("Transfer-Encoding"))
        .map(|h| h.value.clone());

    // finding the content-length header
    let content_length = if transfer_encoding.is_some() {
        // if transfer-encoding is specified, the Content-Length
        // header must be ignored (RFC2616 #4.4)
        None
    } else {
        headers
            .iter()
            .find(|h: &&Header| h.field.equiv("Content-Length"))
            .and_then(|h| FromStr::from_str(h.value.as_str()).ok())
    };

    // true if the client sent a `Expect: 100-continue` header
    let expects_continue = {
        match headers
            .iter()
            .find(|h: &&Header| h.field.equiv("Expect"))
            .map(|h| h.value.as_str())
        {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("100-continue") => true,
            _ => return Err(RequestCreationError::ExpectationFailed),
        }
    };

    // true if the client sent a `Connection: upgrade` header
    let connection_upgrade = {
        match headers
            .iter()
            .find(|h: &&Header| h.field.equiv("Connection"))
            .map(|h| h.value.as_str())
        {
            Some(v) if v.to_ascii_lowercase().contains("upgrade") => true,
            _ => false,
        }
    };

    // we wrap `source_data` around a reading whose nature depends on the transfer-encoding and
    // content-length headers
    let reader = if connection_upgrade {
        // if we have a `Connection: upgrade`, always keeping the whole reader
        Box::new(source_data) as Box<dyn Read + Send + 'static>
    } else if let Some(content_length) = content_length {
        if content_length == 0 {
            Box::new(io::empty()) as Box<dyn Read + Send + 'static>
        } else {
            // Patch (chaos-backend): no body is read before the request is
            // handed over, however small. Upstream read bodies of up to 1 KiB
            // here, on the connection's thread, with no deadline: a client
            // announcing `Content-Length: 1` and sending nothing held its
            // connection (a thread and an fd) for ever, out of reach of
            // every timeout. The body is now drained after the answer, like
            // a larger one, within the drain deadline.
            let (data_reader, _) = EqualReader::new(source_data, content_length);
            Box::new(FusedReader::new(data_reader)) as Box<dyn Read + Send + 'static>
        }
    } else if transfer_encoding.is_some() {
        // if a transfer-encoding was specified, then "chunked" is ALWAYS applied
        // over the message (RFC2616 #3.6)
        Box::new(FusedReader::new(Decoder::new(source_data))) as Box<dyn Read + Send + 'static>
    } else {
        // if we have neither a Content-Length nor a Transfer-Encoding,
        // assuming that we have no data
        // TODO: could also be multipart/byteranges
        Box::new(io::empty()) as Box<dyn Read + Send + 'static>
    };

    Ok(Request {
        data_reader: Some(reader),
        response_writer: Some(ResponseWriter::Other(
            Box::new(writer) as Box<dyn Write + Send + 'static>
        )),
        remote_addr,
        secure,
        method,
        path,
        http_version: version,
        headers,
        body_length: content_length,
        must_send_continue: expects_continue,
        notify_when_responded: None,
        connection: None,
    })
}

impl Request {
    /// Returns true if the request was made through HTTPS.
    #[inline]
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Returns the method requested by the client (eg. `GET`, `POST`, etc.).
    #[inline]
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Returns the resource requested by the client.
    #[inline]
    pub fn url(&self) -> &str {
        &self.path
    }

    /// Returns a list of all headers sent by the client.
    #[inline]
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// Returns the HTTP version of the request.
    #[inline]
    pub fn http_version(&self) -> &HTTPVersion {
        &self.http_version
    }

    /// Returns the length of the body in bytes.
    ///
    /// Returns `None` if the length is unknown.
    #[inline]
    pub fn body_length(&self) -> Option<usize> {
        self.body_length
    }

    /// Returns the address of the client that sent this request.
    ///
    /// The address is always `Some` for TCP listeners, but always `None` for UNIX listeners
    /// (as the remote address of a UNIX client is almost always unnamed).
    ///
    /// Note that this is gathered from the socket. If you receive the request from a proxy,
    /// this function will return the address of the proxy and not the address of the actual
    /// user.
    #[inline]
    pub fn remote_addr(&self) -> Option<&SocketAddr> {
        self.remote_addr.as_ref()
    }

    /// Sends a response with a `Connection: upgrade` header, then turns the `Request` into a `Stream`.
    ///
    /// The main purpose of this function is to support websockets.
    /// If you detect that the request wants to use some kind of protocol upgrade, you can
    ///  call this function to obtain full control of the socket stream.
    ///
    /// If you call this on a non-websocket request, tiny-http will wait until this `Stream` object
    ///  is destroyed before continuing to read or write on the socket. Therefore you should always
    ///  destroy it as soon as possible.
    pub fn upgrade<R: Read>(
        mut self,
        protocol: &str,
        response: Response<R>,
    ) -> Box<dyn ReadWrite + Send> {
        use crate::util::CustomStream;

        response
            .raw_print(
                self.response_writer.as_mut().unwrap().by_ref(),
                self.http_version.clone(),
                &self.headers,
                false,
                Some(protocol),
            )
            .ok(); // TODO: unused result

        self.response_writer.as_mut().unwrap().flush().ok(); // TODO: unused result

        let stream = CustomStream::new(self.extract_reader_impl(), self.extract_writer_impl());
        if let Some(sender) = self.notify_when_responded.take() {
            let stream = NotifyOnDrop {
                sender,
                inner: stream,
            };
            Box::new(stream) as Box<dyn ReadWrite + Send>
        } else {
            Box::new(stream) as Box<dyn ReadWrite + Send>
        }
    }

    /// Allows to read the body of the request.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # extern crate tiny_http;
    /// # type Json = String; // Patch (chaos-backend): no rustc-serialize
    /// # use std::io::Read;
    /// # fn get_content_type(_: &tiny_http::Request) -> &'static str { "" }
    /// # fn main() {
    /// # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
    /// let mut request = server.recv().unwrap();
    ///
    /// if get_content_type(&request) == "application/json" {
    ///     let mut content = String::new();
    ///     request.as_reader().read_to_string(&mut content).unwrap();
    ///     let json: Json = content.parse().unwrap();
    /// }
    /// # }
    /// ```
    ///
    /// If the client sent a `Expect: 100-continue` header with the request, calling this
    ///  function will send back a `100 Continue` response.
    #[inline]
    pub fn as_reader(&mut self) -> &mut dyn Read {
        if self.must_send_continue {
            let msg = Response::new_empty(StatusCode(100));
            msg.raw_print(
                self.response_writer.as_mut().unwrap().by_ref(),
                self.http_version.clone(),
                &self.headers,
                true,
                None,
            )
            .ok();
            self.response_writer.as_mut().unwrap().flush().ok();
            self.must_send_continue = false;
        }

        self.data_reader.as_mut().unwrap()
    }

    /// Turns the `Request` into a writer.
    ///
    /// The writer has a raw access to the stream to the user.
    /// This function is useful for things like CGI.
    ///
    /// Note that the destruction of the `Writer` object may trigger
    /// some events. For exemple if a client has sent multiple requests and the requests
    /// have been processed in parallel, the destruction of a writer will trigger
    /// the writing of the next response.
    /// Therefore you should always destroy the `Writer` as soon as possible.
    #[inline]
    pub fn into_writer(mut self) -> Box<dyn Write + Send + 'static> {
        let writer = self.extract_writer_impl().into_box();
        if let Some(sender) = self.notify_when_responded.take() {
            let writer = NotifyOnDrop {
                sender,
                inner: writer,
            };
            Box::new(writer) as Box<dyn Write + Send + 'static>
        } else {
            writer
        }
    }

    /// Extract the response `Writer` object from the Request, dropping this `Writer` has the same side effects
    /// as the object returned by `into_writer` above.
    ///
    /// This may only be called once on a single request.
    fn extract_writer_impl(&mut self) -> ResponseWriter {
        use std::mem;

        assert!(self.response_writer.is_some());

        let mut writer = None;
        mem::swap(&mut self.response_writer, &mut writer);
        writer.unwrap()
    }

    /// Extract the body `Reader` object from the Request.
    ///
    /// This may only be called once on a single request.
    fn extract_reader_impl(&mut self) -> Box<dyn Read + Send + 'static> {
        use std::mem;

        assert!(self.data_reader.is_some());

        let mut reader = None;
        mem::swap(&mut self.data_reader, &mut reader);
        reader.unwrap()
    }

    /// Sends a response to this request.
    #[inline]
    pub fn respond<R>(mut self, response: Response<R>) -> Result<(), IoError>
    where
        R: Read,
    {
        let res = self.respond_impl(response);
        if let Some(sender) = self.notify_when_responded.take() {
            sender.send(()).unwrap();
        }
        res
    }

    fn respond_impl<R>(&mut self, response: Response<R>) -> Result<(), IoError>
    where
        R: Read,
    {
        let mut writer = self.extract_writer_impl();

        let do_not_send_body = self.method == Method::Head;

        Self::ignore_client_closing_errors(response.raw_print(
            writer.by_ref(),
            self.http_version.clone(),
            &self.headers,
            do_not_send_body,
            None,
        ))?;

        // Patch (chaos-backend): the writer sends on drop; an explicit flush
        // first would make the answer reach the client while the writer
        // still counts as pending, and the connection's thread, seeing the
        // next request at once, would wait for this thread to drop it.
        drop(writer);
        Ok(())
    }

    fn ignore_client_closing_errors(result: io::Result<()>) -> io::Result<()> {
        result.or_else(|err| match err.kind() {
            ErrorKind::BrokenPipe => Ok(()),
            ErrorKind::ConnectionAborted => Ok(()),
            ErrorKind::ConnectionRefused => Ok(()),
            ErrorKind::ConnectionReset => Ok(()),
            _ => Err(err),
        })
    }

    /// Patch (chaos-backend): the connection the request came on, and the
    /// writer of its answer.
    pub(crate) fn set_connection(&mut self, conn: Arc<Conn>, writer: AnswerWriter) {
        self.connection = Some(conn);
        self.response_writer = Some(ResponseWriter::Connection(Box::new(writer)));
    }

    /// Patch (chaos-backend): a worker takes the request from the queue;
    /// false if its connection was closed meanwhile (evicted at the cap
    /// while it waited), when it is not worth answering.
    pub(crate) fn take(&self) -> bool {
        self.connection.as_ref().is_none_or(|c| c.take())
    }

    /// Patch (chaos-backend): drops a request whose connection is closed,
    /// without rendering the 500 that a dropped request sends.
    pub(crate) fn abandon(mut self) {
        self.response_writer = None;
    }

    /// Patch (chaos-backend): holds the answer about to be written for
    /// `hold` (`respond_held`), on the connection if there is one.
    fn hold(&self, hold: std::time::Duration, release: Option<Arc<std::sync::atomic::AtomicBool>>) {
        if let Some(conn) = &self.connection {
            if !hold.is_zero() {
                conn.hold_until(std::time::Instant::now() + hold, release);
            }
        }
    }

    /// Patch (chaos-backend): like `respond_held`, for an answer whose body
    /// is shared between answers (a large static document): only the head
    /// is rendered, and the connection queues `body` itself, not a copy, so
    /// that a thousand clients that do not read it cost a thousand heads.
    /// `response` gives the status and headers; its own data is ignored.
    /// The length is always sent (never chunked). A `HEAD` request gets
    /// the head only.
    pub fn respond_shared<R>(
        mut self,
        response: Response<R>,
        body: Arc<[u8]>,
        hold: std::time::Duration,
        release: Option<Arc<std::sync::atomic::AtomicBool>>,
    ) -> Result<(), IoError>
    where
        R: Read,
    {
        self.hold(hold, release);
        let response = response
            .with_data(io::empty(), Some(body.len()))
            .with_chunked_threshold(usize::MAX);
        let status = response.status_code().0;
        let mut writer = self.extract_writer_impl();
        let head_only = self.method == Method::Head || matches!(status, 100..=199 | 204 | 304);
        let result = Self::ignore_client_closing_errors(
            response
                .raw_print(
                    writer.by_ref(),
                    self.http_version.clone(),
                    &self.headers,
                    head_only,
                    None,
                )
                .and_then(|()| {
                    if head_only {
                        Ok(())
                    } else {
                        writer.write_shared(body)
                    }
                }),
        );
        drop(writer);
        if let Some(sender) = self.notify_when_responded.take() {
            sender.send(()).unwrap();
        }
        result
    }

    /// Patch (chaos-backend): like `respond`, but the answer reaches the
    /// client `hold` later. It is rendered now, on the calling thread, and
    /// written by the server's timer thread once `hold` has passed, so
    /// that a deliberately slow answer costs neither a worker nor a thread
    /// of its own. Without a connection (a `TestRequest`) it is `respond`.
    /// Setting `release` (when given) ends the hold early: the answer goes
    /// out within a tick of the server's timer thread (at most 250 ms).
    pub fn respond_held<R>(
        self,
        response: Response<R>,
        hold: std::time::Duration,
        release: Option<Arc<std::sync::atomic::AtomicBool>>,
    ) -> Result<(), IoError>
    where
        R: Read,
    {
        self.hold(hold, release);
        self.respond(response)
    }
}

/// Patch (chaos-backend): how `Request::end_unanswered` ends a request
/// that gets no answer.
pub enum Unanswered {
    /// A clean close (FIN) at once.
    Close,
    /// A TCP reset at once: the hook is given the socket and must make the
    /// kernel send a reset without closing the fd, which the connection's
    /// thread still reads (the fork has no `unsafe` code: the owner sets
    /// `SO_LINGER` 0 and disconnects it, say); the connection is then
    /// closed. A Unix socket is just closed.
    Reset(fn(&std::net::TcpStream) -> io::Result<()>),
    /// Nothing until `hold` has passed, or within a tick of the server's
    /// timer thread (at most 250 ms) of `release` being set, then a clean
    /// close. No worker and no thread of its own waits: the timer ends it,
    /// and a client that gives up first (EOF) frees its connection at once.
    Stall(
        std::time::Duration,
        Option<Arc<std::sync::atomic::AtomicBool>>,
    ),
}

impl Request {
    /// Patch (chaos-backend): ends this request without any answer, as
    /// `how` says, rather than the 500 a dropped request sends. Without a
    /// connection (a `TestRequest`) nothing is sent.
    pub fn end_unanswered(mut self, how: Unanswered) {
        let conn = self.connection.clone();
        if let Some(conn) = &conn {
            conn.leave_unanswered();
            if let Unanswered::Stall(hold, release) = &how {
                conn.hold_until(std::time::Instant::now() + *hold, release.clone());
            }
        }
        // The writer goes with nothing rendered: a stall's hold is left to
        // the timer, which then closes. (No notify sender: the fork has no
        // `with_notify_sender`, see the SSL row of PATCHES.md.)
        self.response_writer = None;
        match (conn, how) {
            (Some(conn), Unanswered::Close) => conn.close_unanswered(None),
            (Some(conn), Unanswered::Reset(abort)) => conn.close_unanswered(Some(abort)),
            _ => {}
        }
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> Result<(), fmt::Error> {
        write!(
            formatter,
            "Request({} {} from {:?})",
            self.method, self.path, self.remote_addr
        )
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if self.response_writer.is_some() {
            let response = Response::empty(500);
            let _ = self.respond_impl(response); // ignoring any potential error
            if let Some(sender) = self.notify_when_responded.take() {
                sender.send(()).unwrap();
            }
        }
    }
}

/// Dummy trait that regroups the `Read` and `Write` traits.
///
/// Automatically implemented on all types that implement both `Read` and `Write`.
pub trait ReadWrite: Read + Write {}
impl<T> ReadWrite for T where T: Read + Write {}

#[cfg(test)]
mod tests {
    use super::Request;

    #[test]
    fn must_be_send() {
        #![allow(dead_code)]
        fn f<T: Send>(_: &T) {}
        fn bar(rq: &Request) {
            f(rq);
        }
    }
}
