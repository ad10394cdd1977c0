use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufReader, BufWriter, ErrorKind, Write};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::common::HTTPVersion;
use crate::head::{read_head, Head, HeadError};
use crate::util::RefinedTcpStream;
use crate::util::{SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder};
use crate::Request;
use crate::ServerOptions;

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    remote_addr: IoResult<Option<SocketAddr>>,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<BufReader<RefinedTcpStream>>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<BufWriter<RefinedTcpStream>>,

    // Reader to read the next header from
    next_header_source: SequentialReader<BufReader<RefinedTcpStream>>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // true if the connection goes through SSL
    secure: bool,

    // Patch (chaos-backend): the server's limits and hooks.
    options: Arc<ServerOptions>,

    // Patch (chaos-backend): set when a request's body was dropped before
    // its end; the connection then reads no further request.
    body_left: Arc<AtomicBool>,
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
    pub fn new(
        write_socket: RefinedTcpStream,
        mut read_socket: RefinedTcpStream,
        options: Arc<ServerOptions>,
    ) -> ClientConnection {
        let remote_addr = read_socket.peer_addr();
        let secure = read_socket.secure();

        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(1024, read_socket));
        let first_header = source.next().unwrap();

        ClientConnection {
            source,
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            remote_addr,
            next_header_source: first_header,
            no_more_requests: false,
            secure,
            options,
            body_left: Arc::new(AtomicBool::new(false)),
        }
    }

    /// true if the connection is HTTPS
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Reads a request from the stream.
    /// Blocks until the header has been read.
    ///
    /// Patch (chaos-backend): the head is read by `head::read_head`, bounded
    /// by `ServerOptions::head` and strict (see head.rs), instead of line by
    /// line with no limit. It waits first for the previous request's body to
    /// be dropped, and stops if that body was not read to its end: the rest
    /// of it must never be parsed as a request (tiny-http#147).
    fn read(&mut self) -> Result<Request, ReadError> {
        self.next_header_source.wait_turn();
        if self.body_left.load(Ordering::SeqCst) {
            return Err(ReadError::ReadIoError(IoError::new(
                ErrorKind::ConnectionAborted,
                "the previous request's body was not read to its end",
            )));
        }
        let Head {
            method,
            target: path,
            version,
            headers,
        } = read_head(&mut self.next_header_source, &self.options.head).map_err(|e| match e.status() {
            Some(status) => ReadError::Refused(status, e.reason()),
            None => ReadError::ReadIoError(match e {
                HeadError::Io(io) => io,
                other => IoError::new(ErrorKind::InvalidData, other.reason()),
            }),
        })?;

        // building the writer for the request
        let writer = self.sink.next().unwrap();

        // follow-up for next potential request
        let mut data_source = self.source.next().unwrap();
        std::mem::swap(&mut self.next_header_source, &mut data_source);

        // building the next reader
        let request = crate::request::new_request(
            self.secure,
            method,
            path,
            version.clone(),
            headers,
            *self.remote_addr.as_ref().unwrap(),
            data_source,
            writer,
        )
        .map_err(|e| {
            use crate::request;
            match e {
                request::RequestCreationError::CreationIoError(e) => ReadError::ReadIoError(e),
                request::RequestCreationError::ExpectationFailed => ReadError::ExpectationFailed(version),
            }
        })?
        .watch_body(Arc::clone(&self.body_left));

        // return the request
        Ok(request)
    }
}

impl Iterator for ClientConnection {
    type Item = Request;

    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Request> {
        use crate::{Response, StatusCode};

        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests {
            return None;
        }

        loop {
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
                    self.refuse(408, "the request head did not arrive in time", HTTPVersion(1, 1));
                    return None; // closing the connection
                }

                Err(ReadError::ExpectationFailed(ver)) => {
                    self.refuse(417, "only the expectation 100-continue is supported", ver);
                    return None; // TODO: should be recoverable, but needs handling in case of body
                }

                Err(ReadError::ReadIoError(_)) => return None,

                Ok(rq) => rq,
            };

            // checking HTTP version
            if *rq.http_version() > (1, 1) {
                let writer = self.sink.next().unwrap();
                let response = Response::from_string("This server only supports HTTP versions 1.0 and 1.1".to_owned())
                    .with_status_code(StatusCode(505));
                response.raw_print(writer, HTTPVersion(1, 1), &[], false, None).ok();
                continue;
            }

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
                Some(ref val) if !val.contains("keep-alive") && *rq.http_version() == HTTPVersion(1, 0) => {
                    self.no_more_requests = true
                }
                None if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
                _ => (),
            };

            // returning the request
            return Some(rq);
        }
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
        response.raw_print(&mut writer, version, &[], false, None).ok();
        writer.flush().ok();
    }
}
