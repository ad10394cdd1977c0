use std::io::Error as IoError;
use std::io::{BufRead, BufReader, ErrorKind, Write};

use std::net::SocketAddr;
use std::sync::Arc;

use crate::common::HTTPVersion;
use crate::connections::{
    AnswerWriter, BodyPlan, Conn, CountingReader, Phase, SharedStream, Table,
};
use crate::head::{read_head, Head, HeadError};
use crate::util::{SequentialReader, SequentialReaderBuilder};
use crate::Request;
use crate::ServerOptions;

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    // Patch (chaos-backend): None when it cannot be had. Upstream kept the
    // `getpeername` result and unwrapped it for every request: a client
    // that sent a request and reset the connection before it was accepted
    // (ENOTCONN) made the connection's thread panic.
    remote_addr: Option<SocketAddr>,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<BufReader<SharedStream>>,

    // Patch (chaos-backend): writers of answers. Upstream chained them in a
    // `SequentialWriter` so that answer #2 waits for answer #1; here a
    // connection has one request in flight at a time (its thread reads the
    // next head once the answer is written), so answers are in order
    // without any worker waiting for another.
    sink: AnswerSink,

    // Reader to read the next header from
    next_header_source: SequentialReader<BufReader<SharedStream>>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // true if the connection goes through SSL
    secure: bool,

    // Patch (chaos-backend): the server's limits and hooks.
    options: Arc<ServerOptions>,

    // Patch (chaos-backend): the socket, shared with the table and the
    // answer writers, and the table that times it out.
    conn: Arc<Conn>,
    table: Arc<Table>,
}

/// Patch (chaos-backend): hands out the writer of each answer.
struct AnswerSink {
    conn: Arc<Conn>,
}

impl Iterator for AnswerSink {
    type Item = AnswerWriter;
    fn next(&mut self) -> Option<AnswerWriter> {
        Some(AnswerWriter::new(&self.conn))
    }
}

/// Error that can happen when reading a request.
#[derive(Debug)]
enum ReadError {
    /// Patch (chaos-backend): the head was refused (431, 400 or 505, see
    /// head.rs), with a reason for the client.
    Refused(u16, String),
    /// the client sent an unrecognized `Expect` header
    ExpectationFailed(HTTPVersion),
    ReadIoError(IoError),
}

impl ClientConnection {
    /// Creates a new `ClientConnection` that takes ownership of the `TcpStream`.
    pub(crate) fn new(
        conn: Arc<Conn>,
        table: Arc<Table>,
        options: Arc<ServerOptions>,
    ) -> ClientConnection {
        let remote_addr = conn.peer_addr().ok().flatten();
        let secure = false;

        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(
            1024,
            SharedStream(Arc::clone(&conn)),
        ));
        let first_header = source.next().unwrap();

        ClientConnection {
            source,
            sink: AnswerSink {
                conn: Arc::clone(&conn),
            },
            remote_addr,
            next_header_source: first_header,
            no_more_requests: false,
            secure,
            options,
            conn,
            table,
        }
    }

    /// Patch (chaos-backend): everything between two requests, on the
    /// connection's thread: drain what is left of the previous request's
    /// body (its reader comes back when the request is dropped), wait for
    /// the first byte of the next head under the idle timeout (at once: a
    /// worker may still be writing the previous answer), then wait for that
    /// answer to be written before reading the head (one request in flight
    /// per connection). False when the connection ends (at once if it was
    /// closed meanwhile).
    fn between_requests(&mut self) -> bool {
        let conn = Arc::clone(&self.conn);
        if conn.expired().is_some() {
            // Closed (evicted at the cap, say) while its request waited for
            // a worker: end now, without waiting for that request.
            return false;
        }
        let drained = self
            .next_header_source
            .with_inner(|r| match conn.body_left() {
                None => false,
                Some(left) => conn.drain(r, left),
            })
            .unwrap_or(false);
        if !drained {
            return false;
        }
        conn.enter(Phase::Idle);
        let more = self
            .next_header_source
            .with_inner(|r| r.fill_buf().map(|b| !b.is_empty()).unwrap_or(false))
            .unwrap_or(false);
        if !more {
            return false;
        }
        conn.enter(Phase::Busy);
        if !conn.wait_answers(false) {
            return false;
        }
        conn.enter(Phase::ReadingHead);
        conn.new_head();
        true
    }

    /// Patch (chaos-backend): the framing of `rq`'s body, to know what is
    /// left to drain once it is answered.
    fn body_plan(rq: &Request) -> BodyPlan {
        let headers = rq.headers();
        BodyPlan {
            content_length: rq.body_length().map_or(0, |l| l as u64),
            chunked: headers.iter().any(|h| h.field.equiv("Transfer-Encoding")),
            expect_continue: headers.iter().any(|h| h.field.equiv("Expect")),
        }
    }

    /// Reads a request from the stream.
    /// Blocks until the header has been read.
    ///
    /// Patch (chaos-backend): the head is read by `head::read_head`, bounded
    /// by `ServerOptions::head` and strict (see head.rs), instead of line by
    /// line with no limit. The previous request's body was drained (or the
    /// connection ended) by `between_requests`, so the rest of a body is
    /// never parsed as a request (tiny-http#147).
    fn read(&mut self) -> Result<Request, ReadError> {
        let Head {
            method,
            target: path,
            version,
            headers,
        } = read_head(&mut self.next_header_source, &self.options.head).map_err(|e| {
            match e.status() {
                Some(status) => ReadError::Refused(status, e.reason()),
                None => ReadError::ReadIoError(match e {
                    HeadError::Io(io) => io,
                    other => IoError::new(ErrorKind::InvalidData, other.reason()),
                }),
            }
        })?;

        // building the writer for the request
        // Patch (chaos-backend): it is handed over with the connection
        // (`Request::set_connection`), so that a shared body is queued,
        // not copied.
        let writer = self.sink.next().unwrap();

        // follow-up for next potential request
        let mut data_source = self.source.next().unwrap();
        std::mem::swap(&mut self.next_header_source, &mut data_source);
        // Patch (chaos-backend): count the body bytes read, to drain the rest.
        let data_source = CountingReader::new(data_source, &self.conn);

        // building the next reader
        let request = crate::request::new_request(
            self.secure,
            method,
            path,
            version.clone(),
            headers,
            self.remote_addr,
            data_source,
            std::io::sink(),
        )
        .map_err(|e| {
            use crate::request;
            match e {
                request::RequestCreationError::CreationIoError(e) => ReadError::ReadIoError(e),
                request::RequestCreationError::ExpectationFailed => {
                    ReadError::ExpectationFailed(version)
                }
            }
        })?;
        let mut request = request;
        request.set_connection(Arc::clone(&self.conn), writer);

        // return the request
        Ok(request)
    }
}

impl Iterator for ClientConnection {
    type Item = Request;

    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Request> {
        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests {
            return None;
        }

        // Patch (chaos-backend): see `between_requests`.
        if !self.between_requests() {
            return None;
        }
        let rq = match self.read() {
            // Patch (chaos-backend): every answer tiny_http writes itself
            // has a body (`ServerOptions::error_body`) and closes.
            Err(ReadError::Refused(status, reason)) => {
                self.refuse(status, &reason, HTTPVersion(1, 1));
                return None; // we don't know where the next request would start,
                             // se we have to close
            }

            Err(ReadError::ReadIoError(ref err)) if err.kind() == ErrorKind::TimedOut => {
                // request timeout
                self.refuse(
                    408,
                    "the request head did not arrive in time",
                    HTTPVersion(1, 1),
                );
                return None; // closing the connection
            }

            Err(ReadError::ExpectationFailed(ver)) => {
                self.refuse(417, "only the expectation 100-continue is supported", ver);
                return None; // TODO: should be recoverable, but needs handling in case of body
            }

            Err(ReadError::ReadIoError(_)) => return None,

            Ok(rq) => rq,
        };

        // Patch (chaos-backend): upstream checked the version here and
        // answered 505 with a second writer, then `continue`d; a version
        // other than 1.0/1.1 is now refused by head.rs before any
        // `Request` (and its writer) exists.

        // updating the status of the connection
        let connection_header = rq
            .headers()
            .iter()
            .find(|h| h.field.equiv("Connection"))
            .map(|h| h.value.as_str());

        let lowercase = connection_header.map(|h| h.to_ascii_lowercase());

        match lowercase {
            Some(ref val) if val.contains("close") => self.no_more_requests = true,
            Some(ref val) if val.contains("upgrade") => self.no_more_requests = true,
            Some(ref val)
                if !val.contains("keep-alive") && *rq.http_version() == HTTPVersion(1, 0) =>
            {
                self.no_more_requests = true
            }
            None if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
            _ => (),
        };

        // Patch (chaos-backend): the request is in flight until answered.
        self.conn
            .start_request(Self::body_plan(&rq), self.no_more_requests);
        self.conn.enter(Phase::Busy);

        // returning the request
        Some(rq)
    }
}

impl Drop for ClientConnection {
    /// Patch (chaos-backend): the last answer is written (under the write
    /// timeout) before the socket closes, and the table forgets it. A
    /// request held without an answer keeps the socket until its hold ends
    /// or the client goes (`Conn::wait_unanswered`).
    fn drop(&mut self) {
        self.conn.wait_answers(true);
        self.conn.wait_unanswered();
        self.conn.shutdown(std::net::Shutdown::Both);
        self.table.remove(&self.conn);
    }
}

impl ClientConnection {
    /// Patch (chaos-backend): writes an answer of tiny_http's own, with the
    /// body `ServerOptions::error_body` renders and `Connection: close`.
    fn refuse(&mut self, status: u16, reason: &str, version: HTTPVersion) {
        use crate::{Header, Response, StatusCode};
        let (content_type, body) = match self.options.error_body {
            Some(ref render) => render(status, reason),
            None => (String::new(), Vec::new()),
        };
        let mut response = Response::from_data(body).with_status_code(StatusCode(status));
        if let Ok(h) = Header::from_bytes("Content-Type", content_type) {
            if !h.value.is_empty() {
                response.add_header(h);
            }
        }
        let response = response.with_connection_close();
        let mut writer = self.sink.next().unwrap();
        response
            .raw_print(&mut writer, version, &[], false, None)
            .ok();
        writer.flush().ok();
    }
}
