//! Patch (chaos-backend): a bounded, strict reader of one request head
//! (request line and header fields, RFC 9112 §2-§5) and the framing checks
//! of RFC 9112 §6.
//!
//! Upstream 0.12 reads each line into a `Vec` with no limit (a 100 MB header
//! value is held whole: tiny-http#56, PR #232), needs CRLF (a bare-LF client waits
//! for ever), turns a non-ASCII byte into a silent close, and accepts
//! `Content-Length: -1` or two different lengths. This reader never holds
//! more than `HeadLimits::max_bytes` of head, and every refusal is a
//! `HeadError` that says which answer the client gets: 431, 400 or 505.
//! A version other than 1.0/1.1 is refused here, before a `Request` (and its
//! writer) exists, which is what ends upstream's HTTP/2.0 deadlock (its 505
//! path asked for a second writer while the request held the first).

use std::fmt::Write as _;
use std::io::{ErrorKind, Read};

use ascii::AsciiString;

use crate::common::{HTTPVersion, Header, HeaderField, Method};
use crate::HeadLimits;

/// Why a head was refused, or why reading it stopped.
#[derive(Debug)]
pub(crate) enum HeadError {
    /// The connection failed or ended: nothing to answer.
    Io(std::io::Error),
    /// 431: the head is larger than a limit.
    TooLarge(String),
    /// 400: the head or its framing is malformed.
    Malformed(String),
    /// 505: a well-formed version other than HTTP/1.0 and HTTP/1.1.
    Version(String),
}

impl HeadError {
    /// The status of the answer, if there is one to give.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            HeadError::Io(_) => None,
            HeadError::TooLarge(_) => Some(431),
            HeadError::Malformed(_) => Some(400),
            HeadError::Version(_) => Some(505),
        }
    }

    /// A short reason for the client; quotes of client bytes are escaped
    /// and at most 64 characters.
    pub(crate) fn reason(&self) -> String {
        match self {
            HeadError::Io(e) => e.to_string(),
            HeadError::TooLarge(r) | HeadError::Malformed(r) | HeadError::Version(r) => r.clone(),
        }
    }
}

/// One request head, checked.
#[derive(Debug)]
pub(crate) struct Head {
    pub method: Method,
    pub target: String,
    pub version: HTTPVersion,
    pub headers: Vec<Header>,
}

/// Reads one head from `source` within `limits`. Nothing past
/// `limits.max_bytes` is read. Leading empty lines are skipped (RFC 9112
/// §2.2); bare LF ends a line like CRLF does (§2.2 allows it).
pub(crate) fn read_head<R: Read>(source: &mut R, limits: &HeadLimits) -> Result<Head, HeadError> {
    let mut budget = Budget {
        left: limits.max_bytes,
        limit: limits.max_bytes,
    };
    let mut line = Vec::new();
    // Blank lines before the request line are skipped (within the budget).
    while line.is_empty() {
        line_into(source, &mut budget, &mut line, true)?;
    }
    let (method, target, version) = request_line(&line)?;
    let mut headers = Vec::new();
    loop {
        line_into(source, &mut budget, &mut line, false)?;
        if line.is_empty() {
            break;
        }
        if headers.len() >= limits.max_headers {
            return Err(HeadError::TooLarge(format!(
                "more than {} header fields",
                limits.max_headers
            )));
        }
        headers.push(header_line(&line)?);
    }
    check_framing(&version, &mut headers)?;
    Ok(Head {
        method,
        target,
        version,
        headers,
    })
}

/// Bytes of head still allowed.
struct Budget {
    left: usize,
    limit: usize,
}

/// Reads one line into `line` (without its end). EOF before the first byte
/// of a head is a clean close between requests.
fn line_into<R: Read>(
    source: &mut R,
    budget: &mut Budget,
    line: &mut Vec<u8>,
    at_start: bool,
) -> Result<(), HeadError> {
    line.clear();
    let mut any = false;
    loop {
        let byte = match next_byte(source, budget)? {
            Some(b) => b,
            None if at_start && !any => {
                return Err(HeadError::Io(std::io::Error::new(
                    ErrorKind::ConnectionAborted,
                    "connection closed between requests",
                )))
            }
            None => {
                return Err(HeadError::Io(std::io::Error::new(
                    ErrorKind::ConnectionAborted,
                    "connection closed inside a request head",
                )))
            }
        };
        any = true;
        match byte {
            b'\n' => return Ok(()),
            b'\r' => match next_byte(source, budget)? {
                Some(b'\n') => return Ok(()),
                _ => return Err(HeadError::Malformed("bare CR in the request head".into())),
            },
            b => line.push(b),
        }
    }
}

/// One byte of head, counted; `None` at EOF.
fn next_byte<R: Read>(source: &mut R, budget: &mut Budget) -> Result<Option<u8>, HeadError> {
    if budget.left == 0 {
        return Err(HeadError::TooLarge(format!(
            "request head larger than {} bytes",
            budget.limit
        )));
    }
    let mut byte = [0u8; 1];
    loop {
        match source.read(&mut byte) {
            Ok(0) => return Ok(None),
            Ok(_) => {
                budget.left -= 1;
                return Ok(Some(byte[0]));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
}

/// `method SP request-target SP HTTP-version` (RFC 9112 §3), single spaces.
fn request_line(line: &[u8]) -> Result<(Method, String, HTTPVersion), HeadError> {
    let garbage = || HeadError::Malformed(format!("malformed request line {}", quote(line)));
    let mut parts = line.split(|b| *b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(garbage());
    };
    let version = match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            match (major - b'0', minor - b'0') {
                (1, 0) => HTTPVersion(1, 0),
                (1, 1) => HTTPVersion(1, 1),
                (major, minor) => {
                    return Err(HeadError::Version(format!(
                        "HTTP/{major}.{minor} is not supported; this server speaks HTTP/1.0 and HTTP/1.1"
                    )))
                }
            }
        }
        _ => return Err(garbage()),
    };
    if method.is_empty() || !method.iter().all(|b| is_tchar(*b)) {
        return Err(garbage());
    }
    if target.is_empty() {
        return Err(garbage());
    }
    if let Some(bad) = target.iter().find(|b| !(0x21..=0x7e).contains(*b)) {
        let what = if *bad >= 0x80 {
            "bytes that are not ASCII"
        } else {
            "a control character"
        };
        return Err(HeadError::Malformed(format!(
            "request target has {what}: {}",
            quote(target)
        )));
    }
    let method = std::str::from_utf8(method)
        .ok()
        .and_then(|m| m.parse().ok())
        .ok_or_else(garbage)?;
    // Checked above: visible ASCII only.
    let target = String::from_utf8_lossy(target).into_owned();
    Ok((method, target, version))
}

/// `field-name ":" OWS field-value OWS` (RFC 9112 §5).
fn header_line(line: &[u8]) -> Result<Header, HeadError> {
    if line[0] == b' ' || line[0] == b'\t' {
        return Err(HeadError::Malformed(format!(
            "header line starts with whitespace (obsolete line folding): {}",
            quote(line)
        )));
    }
    let Some(colon) = line.iter().position(|b| *b == b':') else {
        return Err(HeadError::Malformed(format!(
            "header line without a colon: {}",
            quote(line)
        )));
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() {
        return Err(HeadError::Malformed(
            "header line with an empty name".into(),
        ));
    }
    if name.ends_with(b" ") || name.ends_with(b"\t") {
        return Err(HeadError::Malformed(format!(
            "whitespace before the colon in header {}",
            quote(name)
        )));
    }
    if !name.iter().all(|b| is_tchar(*b)) {
        return Err(HeadError::Malformed(format!(
            "invalid character in header name {}",
            quote(name)
        )));
    }
    let value = trim_ows(value);
    // obs-text (0x80-0xFF) is refused with a 400 rather than served:
    // `Header` holds ASCII only, and a value passed on mangled (say an
    // `Authorization` with one byte replaced) would give a more confusing
    // answer than a 400 that names the header.
    if let Some(bad) = value
        .iter()
        .find(|b| !(**b == b'\t' || (0x20..=0x7e).contains(*b)))
    {
        let what = if *bad >= 0x80 {
            "bytes that are not ASCII"
        } else {
            "a control character"
        };
        return Err(HeadError::Malformed(format!(
            "header {} has {what} in its value: {}",
            quote(name),
            quote(value)
        )));
    }
    Ok(Header {
        field: HeaderField::from_bytes(name.to_vec())
            .map_err(|_| HeadError::Malformed("header name is not ASCII".into()))?,
        value: AsciiString::from_ascii(value.to_vec())
            .map_err(|_| HeadError::Malformed("header value is not ASCII".into()))?,
    })
}

/// RFC 9112 §6: how the body is framed must be unambiguous.
/// - `Content-Length` is 1*DIGIT; several values (lines, or a list in one
///   line) must agree, and are then folded into one header.
/// - `Transfer-Encoding` must be exactly `chunked` (no other coding is
///   decoded here), never in HTTP/1.0 (§6.1), never with `Content-Length`
///   (§6.1: a request smuggling vector; the connection is closed).
fn check_framing(version: &HTTPVersion, headers: &mut Vec<Header>) -> Result<(), HeadError> {
    let mut codings: Vec<String> = Vec::new();
    let mut lengths: Vec<&str> = Vec::new();
    let mut length_lines = 0;
    for h in headers.iter() {
        if h.field.equiv("Transfer-Encoding") {
            codings.extend(
                h.value
                    .as_str()
                    .split(',')
                    .map(|c| c.trim_matches([' ', '\t']).to_ascii_lowercase())
                    .filter(|c| !c.is_empty()),
            );
            if *version == (1, 0) {
                return Err(HeadError::Malformed(
                    "Transfer-Encoding in an HTTP/1.0 request".into(),
                ));
            }
            if codings.is_empty() {
                return Err(HeadError::Malformed("empty Transfer-Encoding".into()));
            }
        } else if h.field.equiv("Content-Length") {
            length_lines += 1;
            lengths.extend(
                h.value
                    .as_str()
                    .split(',')
                    .map(|v| v.trim_matches([' ', '\t'])),
            );
        }
    }
    if !codings.is_empty() {
        if !lengths.is_empty() {
            return Err(HeadError::Malformed(
                "both Transfer-Encoding and Content-Length".into(),
            ));
        }
        if codings != ["chunked"] {
            return Err(HeadError::Malformed(format!(
                "Transfer-Encoding {}: only chunked is supported",
                quote(codings.join(", ").as_bytes())
            )));
        }
        return Ok(());
    }
    let mut length: Option<usize> = None;
    for v in &lengths {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HeadError::Malformed(format!(
                "Content-Length {} is not a whole number of bytes",
                quote(v.as_bytes())
            )));
        }
        let n: usize = v.parse().map_err(|_| {
            HeadError::Malformed(format!(
                "Content-Length {} is too large",
                quote(v.as_bytes())
            ))
        })?;
        match length {
            Some(m) if m != n => {
                return Err(HeadError::Malformed(format!(
                    "Content-Length values disagree: {m} and {n}"
                )))
            }
            _ => length = Some(n),
        }
    }
    if let Some(n) = length.filter(|_| lengths.len() > 1 || length_lines > 1) {
        // One agreed value, as one header, so the body reader sees it.
        headers.retain(|h| !h.field.equiv("Content-Length"));
        headers.push(Header {
            field: HeaderField::from_bytes(&b"Content-Length"[..]).expect("ASCII literal"),
            value: AsciiString::from_ascii(n.to_string()).expect("digits are ASCII"),
        });
    }
    Ok(())
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The most characters of client input a reason quotes.
pub(crate) const QUOTE_CHARS: usize = 64;

/// Client bytes as a reason quotes them: in double quotes, printable ASCII
/// as is, anything else as `\xNN`, at most `QUOTE_CHARS` characters of it,
/// then `... (N bytes)` if cut.
pub(crate) fn quote(bytes: &[u8]) -> String {
    let mut shown = String::with_capacity(QUOTE_CHARS + 24);
    shown.push('"');
    let mut used = 0;
    let mut cut = false;
    for b in bytes {
        let piece_len = if (0x20..0x7f).contains(b) && *b != b'"' && *b != b'\\' {
            1
        } else {
            4
        };
        if used + piece_len > QUOTE_CHARS {
            cut = true;
            break;
        }
        used += piece_len;
        if piece_len == 1 {
            shown.push(*b as char);
        } else {
            let _ = write!(shown, "\\x{b:02x}");
        }
    }
    shown.push('"');
    if cut {
        let _ = write!(shown, "... ({} bytes)", bytes.len());
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HeadLimits {
        HeadLimits {
            max_bytes: 1024,
            max_headers: 8,
        }
    }

    fn read(bytes: &[u8]) -> Result<Head, HeadError> {
        read_head(&mut &bytes[..], &limits())
    }

    fn status(bytes: &[u8]) -> Option<u16> {
        match read(bytes) {
            Ok(_) => Some(200),
            Err(e) => e.status(),
        }
    }

    #[test]
    fn reads_a_plain_head() {
        let h = read(b"GET /health?x=1 HTTP/1.1\r\nHost: t\r\nX-A:  b c \r\n\r\nrest").unwrap();
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.target, "/health?x=1");
        assert_eq!(h.version, HTTPVersion(1, 1));
        assert_eq!(h.headers.len(), 2);
        assert_eq!(h.headers[1].value.as_str(), "b c");
    }

    #[test]
    fn bare_lf_ends_lines_and_leading_blank_lines_are_skipped() {
        let h = read(b"\r\n\nGET / HTTP/1.0\nHost: t\n\n").unwrap();
        assert_eq!(h.version, HTTPVersion(1, 0));
        assert_eq!(h.headers.len(), 1);
    }

    #[test]
    fn nothing_past_the_limit_is_read() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 10_000));
        let mut source = &big[..];
        let err = read_head(&mut source, &limits()).unwrap_err();
        assert_eq!(err.status(), Some(431), "{err:?}");
        assert_eq!(big.len() - source.len(), 1024, "read exactly the limit");
        let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(2000));
        assert_eq!(status(long_line.as_bytes()), Some(431));
        // Exactly at the limit is fine.
        let mut exact = b"GET / HTTP/1.1\r\nX: ".to_vec();
        exact.extend(std::iter::repeat_n(b'a', 1024 - exact.len() - 4));
        exact.extend(b"\r\n\r\n");
        assert_eq!(exact.len(), 1024);
        assert_eq!(status(&exact), Some(200));
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..9 {
            head.extend(format!("X-{i}: v\r\n").bytes());
        }
        head.extend(b"\r\n");
        let err = read(&head).unwrap_err();
        assert_eq!(err.status(), Some(431));
        assert!(
            err.reason().contains("more than 8 header fields"),
            "{}",
            err.reason()
        );
    }

    #[test]
    fn malformed_heads_are_400() {
        for (what, bytes) in [
            ("bare CR", &b"GET / HTTP/1.1\rHost: t\r\n\r\n"[..]),
            (
                "bare CR in a header",
                b"GET / HTTP/1.1\r\nHost: t\rX: y\r\n\r\n",
            ),
            ("obs-fold", b"GET / HTTP/1.1\r\nX: a\r\n  b\r\n\r\n"),
            ("space before colon", b"GET / HTTP/1.1\r\nHost : t\r\n\r\n"),
            ("no colon", b"GET / HTTP/1.1\r\nHost\r\n\r\n"),
            ("empty name", b"GET / HTTP/1.1\r\n: t\r\n\r\n"),
            ("bad name char", b"GET / HTTP/1.1\r\nHo(st: t\r\n\r\n"),
            ("control in value", b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n"),
            ("NUL in value", b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n"),
            (
                "obs-text value",
                b"GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n",
            ),
            ("garbage", b"\x00\x01garbage\r\n\r\n"),
            ("HTTP/0.9 style", b"GET /\r\n\r\n"),
            ("two spaces", b"GET  / HTTP/1.1\r\n\r\n"),
            ("trailing space", b"GET / HTTP/1.1 \r\n\r\n"),
            ("lowercase version", b"GET / http/1.1\r\n\r\n"),
            ("version without minor", b"GET / HTTP/2\r\n\r\n"),
            ("bad method", b"G(T / HTTP/1.1\r\n\r\n"),
            ("non-ASCII target", b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n"),
            ("control in target", b"GET /a\x7fb HTTP/1.1\r\n\r\n"),
        ] {
            let err = read(bytes).expect_err(what);
            assert_eq!(err.status(), Some(400), "{what}: {err:?}");
        }
    }

    #[test]
    fn other_versions_are_505_before_the_headers() {
        for line in [
            "GET / HTTP/2.0",
            "PRI * HTTP/2.0",
            "GET / HTTP/1.2",
            "GET / HTTP/0.9",
            "GET / HTTP/3.0",
        ] {
            // No header section follows: the version alone decides.
            let err = read(format!("{line}\r\n").as_bytes()).expect_err(line);
            assert_eq!(err.status(), Some(505), "{line}: {err:?}");
        }
    }

    #[test]
    fn non_ascii_targets_are_quoted_escaped_and_short() {
        let err = read(b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n").unwrap_err();
        assert_eq!(
            err.reason(),
            "request target has bytes that are not ASCII: \"/caf\\xc3\\xa9\""
        );
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(0xffu8, 500));
        long.extend(b" HTTP/1.1\r\n\r\n");
        let reason = read(&long).unwrap_err().reason();
        let quoted = &reason[reason.find('"').unwrap()..reason.rfind('"').unwrap() + 1];
        assert!(quoted.len() <= QUOTE_CHARS + 2, "{}", reason);
        assert!(reason.ends_with("... (501 bytes)"), "{}", reason);
    }

    #[test]
    fn framing_is_strict() {
        for (what, headers, expected) in [
            ("negative length", "Content-Length: -1\r\n", 400),
            ("signed length", "Content-Length: +5\r\n", 400),
            ("hex length", "Content-Length: 0x10\r\n", 400),
            ("empty length", "Content-Length:\r\n", 400),
            (
                "overflowing length",
                "Content-Length: 99999999999999999999999\r\n",
                400,
            ),
            (
                "two lengths",
                "Content-Length: 5\r\nContent-Length: 6\r\n",
                400,
            ),
            ("a list that disagrees", "Content-Length: 5, 6\r\n", 400),
            ("gzip", "Transfer-Encoding: gzip\r\n", 400),
            (
                "gzip then chunked",
                "Transfer-Encoding: gzip, chunked\r\n",
                400,
            ),
            (
                "chunked twice",
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                400,
            ),
            ("identity", "Transfer-Encoding: identity\r\n", 400),
            (
                "TE and CL",
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                400,
            ),
            ("chunked", "Transfer-Encoding: chunked\r\n", 200),
            ("Chunked, any case", "Transfer-Encoding: Chunked\r\n", 200),
            ("a length", "Content-Length: 5\r\n", 200),
            ("leading zeros", "Content-Length: 005\r\n", 200),
            (
                "two equal lengths",
                "Content-Length: 5\r\nContent-Length: 5\r\n",
                200,
            ),
            ("an equal list", "Content-Length: 5, 5\r\n", 200),
        ] {
            let head = format!("POST / HTTP/1.1\r\nHost: t\r\n{headers}\r\n");
            assert_eq!(status(head.as_bytes()), Some(expected), "{what}");
        }
        let te_in_10 = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(status(te_in_10), Some(400));
        let h =
            read(b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n").unwrap();
        let lengths: Vec<_> = h
            .headers
            .iter()
            .filter(|h| h.field.equiv("Content-Length"))
            .map(|h| h.value.as_str().to_string())
            .collect();
        assert_eq!(lengths, ["5"], "folded into one header");
    }

    #[test]
    fn eof_and_io_errors_are_not_answered() {
        assert_eq!(read(b"").unwrap_err().status(), None);
        assert_eq!(
            read(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap_err().status(),
            None
        );
    }

    #[test]
    fn quote_escapes_and_cuts() {
        assert_eq!(quote(b"a\"b\\c\n"), "\"a\\x22b\\x5cc\\x0a\"");
        let q = quote(&[b'a'; 100]);
        assert_eq!(q, format!("\"{}\"... (100 bytes)", "a".repeat(64)));
    }
}
