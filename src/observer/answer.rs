//! Reading one HTTP/1.x answer from the bytes received so far, and what it
//! means for a user: ok (served by a named pod) or an error class.

use super::tally::{Class, RequestEnd};

/// The longest head accepted; a longer one is not an answer the service gives.
const MAX_HEAD: usize = 16 * 1024;
/// The longest body kept; the service's answers are a few hundred bytes.
pub const MAX_BODY: usize = 1 << 20;

/// How far the answer has come.
#[derive(Debug, PartialEq)]
pub enum Progress {
    /// Not complete yet: read more.
    More,
    /// A whole answer (or one cut short by the end of the stream).
    Answer(Answer),
    /// The stream ended before a complete head: nothing was answered.
    Closed,
    /// Bytes that are not an HTTP/1.x answer.
    Malformed,
    /// An interim (1xx) answer of this many bytes: the answer follows it.
    Interim(usize),
}

#[derive(Debug, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// False when the stream ended before the body announced was complete.
    pub complete: bool,
    /// Whether the connection may carry another request: HTTP/1.1 without
    /// `Connection: close`, a body delimited by length, nothing extra after it.
    pub reusable: bool,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

/// Parses `buf`, all the bytes received on the connection for this request;
/// `eof` says whether the peer has closed its side.
pub fn parse(buf: &[u8], eof: bool) -> Progress {
    let mut from = 0;
    loop {
        match parse_one(&buf[from..], eof) {
            Progress::Interim(used) => from += used,
            p => return p,
        }
    }
}

/// Parses one answer at the start of `buf`.
fn parse_one(buf: &[u8], eof: bool) -> Progress {
    let Some(head_end) = find(&buf[..buf.len().min(MAX_HEAD + 4)], b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Progress::Malformed
        } else if eof {
            Progress::Closed
        } else {
            Progress::More
        };
    };
    let Ok(head) = std::str::from_utf8(&buf[..head_end]) else {
        return Progress::Malformed;
    };
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next().unwrap_or("").splitn(3, ' ');
    let version = status_line.next().unwrap_or("");
    let status = match (version, status_line.next()) {
        ("HTTP/1.1" | "HTTP/1.0", Some(code)) if code.len() == 3 => match code.parse::<u16>() {
            Ok(s) if (100..=599).contains(&s) => s,
            _ => return Progress::Malformed,
        },
        _ => return Progress::Malformed,
    };
    let mut length = None;
    let mut chunked = false;
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Progress::Malformed;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) => length = Some(n),
                Err(_) => return Progress::Malformed,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && version == "HTTP/1.0" {
                    close = false;
                }
            }
        }
    }
    // An interim answer (103 Early Hints, an unasked 100 Continue) is not
    // the answer: clients skip it and read the final one after it. (101
    // would switch protocols; the observer never asks for it.)
    if (100..=199).contains(&status) && status != 101 {
        return Progress::Interim(head_end + 4);
    }
    let progress = body(buf, head_end, status, length, chunked, close, eof);
    // A status that is not 2xx says what the user saw from the head alone:
    // a 503 with a body too large to keep, or badly framed, is still an
    // http_5xx (a 404 an http_other), never a bad_body.
    match progress {
        Progress::Malformed if !(200..=299).contains(&status) => Progress::Answer(Answer {
            status,
            body: Vec::new(),
            complete: false,
            reusable: false,
        }),
        p => p,
    }
}

/// The body of an answer whose head ends at `head_end`, as far as it has come.
fn body(
    buf: &[u8],
    head_end: usize,
    status: u16,
    length: Option<usize>,
    chunked: bool,
    close: bool,
    eof: bool,
) -> Progress {
    let framing = if status < 200 || status == 204 || status == 304 {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    let rest = &buf[head_end + 4..];
    let answer = |body: &[u8], complete: bool, used: usize, delimited: bool| {
        Progress::Answer(Answer {
            status,
            body: body.to_vec(),
            complete,
            reusable: complete && delimited && !close && used == rest.len(),
        })
    };
    match framing {
        Framing::None => answer(&[], true, 0, true),
        Framing::Length(n) if n > MAX_BODY => Progress::Malformed,
        Framing::Length(n) if rest.len() >= n => answer(&rest[..n], true, n, true),
        Framing::Length(_) if eof => answer(rest, false, rest.len(), true),
        Framing::Length(_) => Progress::More,
        Framing::UntilClose if rest.len() > MAX_BODY => Progress::Malformed,
        Framing::UntilClose if eof => answer(rest, true, rest.len(), false),
        Framing::UntilClose => Progress::More,
        Framing::Chunked => match dechunk(rest) {
            Chunks::Done(body, used) => answer(&body, true, used, true),
            Chunks::More(body) if eof => answer(&body, false, rest.len(), true),
            Chunks::More(_) => Progress::More,
            Chunks::Bad => Progress::Malformed,
        },
    }
}

enum Chunks {
    Done(Vec<u8>, usize),
    More(Vec<u8>),
    Bad,
}

/// Decodes a chunked body as far as it has come.
fn dechunk(raw: &[u8]) -> Chunks {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(eol) = find(&raw[at..], b"\r\n") else {
            return if raw.len() - at > 64 {
                Chunks::Bad
            } else {
                Chunks::More(body)
            };
        };
        let line = String::from_utf8_lossy(&raw[at..at + eol]);
        let Ok(size) = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16) else {
            return Chunks::Bad;
        };
        at += eol + 2;
        if size == 0 {
            // Trailer fields, if any, end with an empty line.
            return match find(&raw[at..], b"\r\n") {
                Some(0) => Chunks::Done(body, at + 2),
                Some(_) => match find(&raw[at..], b"\r\n\r\n") {
                    Some(end) => Chunks::Done(body, at + end + 4),
                    None => Chunks::More(body),
                },
                None => Chunks::More(body),
            };
        }
        if body.len() + size > MAX_BODY {
            return Chunks::Bad;
        }
        if raw.len() < at + size + 2 {
            body.extend_from_slice(&raw[at..raw.len().min(at + size)]);
            return Chunks::More(body);
        }
        body.extend_from_slice(&raw[at..at + size]);
        if &raw[at + size..at + size + 2] != b"\r\n" {
            return Chunks::Bad;
        }
        at += size + 2;
    }
}

/// What a user would make of the answer: a 2xx whose body is a JSON object
/// is ok, attributed to its `pod` (or to `unknown`); any other status is an
/// HTTP error; a 2xx cut short or not a JSON object is a bad body.
pub fn outcome(answer: &Answer) -> RequestEnd {
    match answer.status {
        500..=599 => RequestEnd::Failed(Class::Http5xx),
        200..=299 if !answer.complete => RequestEnd::Failed(Class::BadBody),
        200..=299 => match serde_json::from_slice::<serde_json::Value>(&answer.body) {
            Ok(serde_json::Value::Object(o)) => {
                RequestEnd::Ok(o.get("pod").and_then(|p| p.as_str()).unwrap_or("unknown").to_string())
            }
            _ => RequestEnd::Failed(Class::BadBody),
        },
        _ => RequestEnd::Failed(Class::HttpOther),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(raw: &str, eof: bool) -> Answer {
        match parse(raw.as_bytes(), eof) {
            Progress::Answer(a) => a,
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    const OK: &str =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"pod\":\"web-1\"}";

    #[test]
    fn length_delimited_answers_complete_at_their_length() {
        for cut in 0..OK.len() {
            assert_eq!(parse(&OK.as_bytes()[..cut], false), Progress::More, "cut at {cut}");
        }
        let a = done(OK, false);
        assert_eq!((a.status, a.complete, a.reusable), (200, true, true));
        assert_eq!(outcome(&a), RequestEnd::Ok("web-1".into()));
        // Cut short by the peer: a 2xx is a bad body.
        let a = done(&OK[..OK.len() - 3], true);
        assert!(!a.complete);
        assert_eq!(outcome(&a), RequestEnd::Failed(Class::BadBody));
        // More bytes than announced: not reusable.
        assert!(!done(&format!("{OK}HTTP/1.1"), false).reusable);
    }

    #[test]
    fn closed_before_the_head_is_closed_and_garbage_is_malformed() {
        assert_eq!(parse(b"", true), Progress::Closed);
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\nContent-Le", true), Progress::Closed);
        assert_eq!(parse(b"SSH-2.0-OpenSSH\r\n\r\n", false), Progress::Malformed);
        assert_eq!(parse(b"HTTP/1.1 2000 OK\r\n\r\n", false), Progress::Malformed);
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", false),
            Progress::Malformed
        );
        assert_eq!(parse(&vec![b'a'; MAX_HEAD + 1], false), Progress::Malformed);
    }

    #[test]
    fn connection_close_and_http_1_0_are_not_reusable() {
        let close = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}";
        assert!(!done(close, false).reusable);
        let old = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert!(!done(old, false).reusable);
        let old_kept = "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\n{}";
        assert!(done(old_kept, false).reusable);
    }

    #[test]
    fn bodies_until_close_and_chunked() {
        let until_close = "HTTP/1.1 200 OK\r\n\r\n{\"pod\":\"a\"}";
        assert_eq!(parse(until_close.as_bytes(), false), Progress::More);
        let a = done(until_close, true);
        assert_eq!((outcome(&a), a.reusable), (RequestEnd::Ok("a".into()), false));
        let chunked =
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"po\r\n7;x=1\r\nd\":\"b\"}\r\n0\r\n\r\n";
        for cut in 0..chunked.len() {
            assert_eq!(parse(&chunked.as_bytes()[..cut], false), Progress::More, "cut at {cut}");
        }
        let a = done(chunked, false);
        assert_eq!((outcome(&a), a.reusable), (RequestEnd::Ok("b".into()), true));
        let trailer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-T: 1\r\n\r\n";
        assert!(done(trailer, false).complete);
        let cut = done(&chunked[..chunked.len() - 10], true);
        assert_eq!(outcome(&cut), RequestEnd::Failed(Class::BadBody));
        let bad = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(parse(bad.as_bytes(), false), Progress::Malformed);
    }

    #[test]
    fn statuses_and_bodies_map_to_classes() {
        let with = |status: &str, body: &str| {
            done(
                &format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
                false,
            )
        };
        assert_eq!(
            outcome(&with("503 Service Unavailable", "{}")),
            RequestEnd::Failed(Class::Http5xx)
        );
        assert_eq!(outcome(&with("500 Oops", "")), RequestEnd::Failed(Class::Http5xx));
        assert_eq!(
            outcome(&with("404 Not Found", "{}")),
            RequestEnd::Failed(Class::HttpOther)
        );
        assert_eq!(outcome(&with("301 Moved", "")), RequestEnd::Failed(Class::HttpOther));
        assert_eq!(outcome(&with("200 OK", "hello")), RequestEnd::Failed(Class::BadBody));
        assert_eq!(outcome(&with("200 OK", "[1]")), RequestEnd::Failed(Class::BadBody));
        assert_eq!(outcome(&with("200 OK", "{\"a\":1}")), RequestEnd::Ok("unknown".into()));
        let no_body = done("HTTP/1.1 204 No Content\r\n\r\n", false);
        assert_eq!(outcome(&no_body), RequestEnd::Failed(Class::BadBody));
    }

    #[test]
    fn interim_answers_are_skipped_for_the_final_one() {
        // 103 Early Hints before the answer: the user got the 200 (was an
        // http_other).
        let hints = format!("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n{OK}");
        for cut in 0..hints.len() {
            assert_eq!(parse(&hints.as_bytes()[..cut], false), Progress::More, "cut at {cut}");
        }
        let a = done(&hints, false);
        assert_eq!((outcome(&a), a.reusable), (RequestEnd::Ok("web-1".into()), true));
        let two = format!("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n{OK}");
        assert_eq!(outcome(&done(&two, false)), RequestEnd::Ok("web-1".into()));
        // Closed after the hints only: nothing was answered.
        assert_eq!(parse(b"HTTP/1.1 103 Early Hints\r\n\r\n", true), Progress::Closed);
        // Endless interim heads are no stack risk: a loop, not recursion.
        let many = "HTTP/1.1 100 Continue\r\n\r\n".repeat(60_000);
        assert_eq!(parse(many.as_bytes(), false), Progress::More);
    }

    #[test]
    fn an_error_status_keeps_its_class_whatever_its_body() {
        // Announced larger than any body kept (was a bad_body).
        let big = |status: &str| format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{{", MAX_BODY + 1);
        assert_eq!(
            outcome(&done(&big("503 Busy"), false)),
            RequestEnd::Failed(Class::Http5xx)
        );
        assert_eq!(
            outcome(&done(&big("404 Nope"), false)),
            RequestEnd::Failed(Class::HttpOther)
        );
        assert!(!done(&big("503 Busy"), false).reusable);
        // Until close, past the limit.
        let long = format!("HTTP/1.1 502 Bad Gateway\r\n\r\n{}", "a".repeat(MAX_BODY + 1));
        assert_eq!(outcome(&done(&long, true)), RequestEnd::Failed(Class::Http5xx));
        // Badly chunked.
        let bad = "HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(outcome(&done(bad, false)), RequestEnd::Failed(Class::Http5xx));
        // A 2xx that large is still a bad body: its pod cannot be read.
        assert_eq!(parse(big("200 OK").as_bytes(), false), Progress::Malformed);
    }
}
