//! A minimal HTTP/1.1 server: every well-formed request gets `200 OK` and `Hello, world!`.
//!
//! `cargo run --release -p ringline --example http_hello -- --addr 127.0.0.1:8080 --workers 2`
//! then `curl -v http://127.0.0.1:8080/` or `wrk -t2 -c100 -d5s http://127.0.0.1:8080/`.
//! `--addr 127.0.0.1:0` picks a free port; the `listening on ADDR` line shows the real one.
//! Exits cleanly on SIGINT/SIGTERM. Log level: `RUST_LOG` (default `info`), on stderr.
//!
//! The parser reads with [`ConnCtx::with_data`] and answers every complete request in the buffer,
//! in order (pipelining), building the responses into one `Vec` that is sent with an awaited
//! `send`, so nothing is dropped when the send queue is full. Connections are kept alive
//! (HTTP/1.1 by default, HTTP/1.0 only with `Connection: keep-alive`); `Connection: close`
//! closes after the response. A `Content-Length` body is read and discarded.
//!
//! Malformed requests (bad request line, a header without a colon, a non-numeric or conflicting
//! `Content-Length`, control bytes, non-ASCII bytes outside header values) get `400 Bad Request`;
//! a head that reaches 8 KiB without its blank line gets `431 Request Header Fields Too Large`;
//! `Transfer-Encoding` (chunked bodies) is not supported and gets `501 Not Implemented`. Each of
//! those closes the connection after the response.

#[path = "support/requests.rs"]
mod requests;
mod support;

use ringline::{AsyncEventHandler, ConnCtx, ParseResult};

/// The most bytes a request head (request line, headers and the blank line) may take.
const MAX_HEAD: usize = 8 * 1024;

/// Parsing stops once this many response bytes are pending, so a long pipeline is answered in
/// bounded chunks; the rest stays buffered for the next round.
const MAX_PENDING_OUT: usize = 64 * 1024;

/// The body of every `200 OK`.
const BODY: &[u8] = b"Hello, world!\n";

/// The handler: stateless, one per worker.
struct Http;

impl AsyncEventHandler for Http {
    fn create_for_worker(_worker: usize) -> Self {
        Http
    }

    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        let mut parser = Parser::default();
        requests::answer_requests(conn, move |data, out, close| {
            let consumed = parser.parse(data, out);
            *close = parser.close;
            consumed
        })
    }
}

/// Why a request was refused; the connection closes after the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// `400 Bad Request`.
    BadRequest(&'static str),
    /// `431 Request Header Fields Too Large`.
    HeadTooLarge,
    /// `501 Not Implemented`.
    NotImplemented(&'static str),
}

/// A request head that parsed.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    /// Bytes of the head, blank line included.
    len: usize,
    /// Bytes of the body that follows.
    body: u64,
    /// Whether the connection stays open after the response.
    keep_alive: bool,
    /// `HEAD` requests get the headers of the response without its body.
    head_method: bool,
}

/// Per-connection parser state, kept across reads.
#[derive(Default)]
struct Parser {
    /// Body bytes of the last request still to be discarded.
    skip: u64,
    /// Set once the connection must close after the pending responses.
    close: bool,
}

impl Parser {
    /// Answers every complete request at the front of `data` into `out`; returns what to consume.
    fn parse(&mut self, data: &[u8], out: &mut Vec<u8>) -> ParseResult {
        let mut pos = 0;
        while !self.close && out.len() < MAX_PENDING_OUT {
            if self.skip > 0 {
                let n = usize::try_from(self.skip).unwrap_or(usize::MAX).min(data.len() - pos);
                pos += n;
                self.skip -= n as u64;
                if self.skip > 0 {
                    break;
                }
            }
            let rest = &data[pos..];
            if rest.is_empty() {
                break;
            }
            match parse_head(rest) {
                Ok(Some(head)) => {
                    respond_ok(out, &head);
                    pos += head.len;
                    self.skip = head.body;
                    self.close = !head.keep_alive;
                }
                Ok(None) => break, // incomplete: wait for more bytes
                Err(refusal) => {
                    tracing::debug!(?refusal, "refusing request");
                    respond_refusal(out, refusal);
                    self.close = true;
                    // Drop whatever else was buffered: the connection closes.
                    pos = data.len();
                }
            }
        }
        // Consumed(0) means "call again with more bytes", which is right for a partial head.
        ParseResult::Consumed(pos)
    }
}

/// Parses the request head at the front of `buf`: `Ok(None)` while incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, Refusal> {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let Some(end) = find(window, b"\r\n\r\n") else {
        return if buf.len() >= MAX_HEAD { Err(Refusal::HeadTooLarge) } else { Ok(None) };
    };
    let len = end + 4;
    // Up to the `\r` ending the last header line: every line then ends with `\r` (or had a bare LF).
    let mut lines = buf[..end + 1].split(|&b| b == b'\n').map(|line| line.strip_suffix(b"\r"));
    let request_line = lines.next().flatten().ok_or(Refusal::BadRequest("bare LF"))?;
    let (method, http_10) = parse_request_line(request_line)?;
    let mut keep_alive = !http_10;
    let (mut close, mut keep) = (false, false);
    let mut body = None;
    for line in lines {
        let line = line.ok_or(Refusal::BadRequest("bare LF"))?;
        let colon =
            line.iter().position(|&b| b == b':').ok_or(Refusal::BadRequest("header without colon"))?;
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(Refusal::BadRequest("bad header name"));
        }
        // Field values may carry obs-text (bytes >= 0x80) but no control bytes besides HTAB.
        if value.iter().any(|&b| b == 0x7f || (b < 0x20 && b != b'\t')) {
            return Err(Refusal::BadRequest("control byte in header value"));
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(Refusal::BadRequest("non-numeric Content-Length"));
            }
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(Refusal::BadRequest("Content-Length out of range"))?;
            if body.is_some_and(|b| b != n) {
                return Err(Refusal::BadRequest("conflicting Content-Length"));
            }
            body = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(Refusal::NotImplemented("Transfer-Encoding"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(trim) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    if close {
        keep_alive = false;
    } else if keep {
        keep_alive = true;
    }
    Ok(Some(Head { len, body: body.unwrap_or(0), keep_alive, head_method: method == b"HEAD" }))
}

/// Checks `METHOD SP TARGET SP HTTP/1.x`; returns the method and whether the version is 1.0.
fn parse_request_line(line: &[u8]) -> Result<(&[u8], bool), Refusal> {
    const BAD: Refusal = Refusal::BadRequest("bad request line");
    if line.iter().any(|&b| !(b' '..0x7f).contains(&b)) {
        return Err(Refusal::BadRequest("control or non-ASCII byte in request line"));
    }
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BAD);
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) || target.is_empty() {
        return Err(BAD);
    }
    match version {
        b"HTTP/1.0" => Ok((method, true)),
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] if minor.is_ascii_digit() => Ok((method, false)),
        _ => Err(BAD),
    }
}

/// A `tchar` of RFC 9110: the bytes of methods and header names.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `bytes` without leading and trailing spaces and tabs.
fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// The offset of the first `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Appends the `200 OK` response to `head`.
fn respond_ok(out: &mut Vec<u8>, head: &Head) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ");
    out.extend_from_slice(BODY.len().to_string().as_bytes());
    out.extend_from_slice(if head.keep_alive { b"\r\n\r\n" } else { b"\r\nConnection: close\r\n\r\n" });
    if !head.head_method {
        out.extend_from_slice(BODY);
    }
}

/// Appends the error response for `refusal`, which closes the connection.
fn respond_refusal(out: &mut Vec<u8>, refusal: Refusal) {
    let status = match refusal {
        Refusal::BadRequest(_) => "400 Bad Request",
        Refusal::HeadTooLarge => "431 Request Header Fields Too Large",
        Refusal::NotImplemented(_) => "501 Not Implemented",
    };
    let body = format!("{status}\n");
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    out.extend_from_slice(response.as_bytes());
}

/// Set by the signal handler; polled by `main`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    support::serve::<Http>("http_hello", "127.0.0.1:8080")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> (String, usize, bool) {
        let mut parser = Parser::default();
        let mut out = Vec::new();
        let ParseResult::Consumed(n) = parser.parse(input, &mut out) else { unreachable!() };
        (String::from_utf8(out).unwrap(), n, parser.close)
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\ncontent-length: 3\r\n\r\nabcGET /";
        let (out, n, close) = run(req);
        assert_eq!(out.matches("200 OK").count(), 2);
        assert_eq!(n, req.len() - 5);
        assert!(!close);
    }

    #[test]
    fn refusals() {
        assert!(run(b"GET /\r\n\r\n").0.starts_with("HTTP/1.1 400"));
        assert!(run(b"GET / HTTP/1.1\r\nHost a\r\n\r\n").0.starts_with("HTTP/1.1 400"));
        assert!(run(b"GET / HTTP/1.1\r\nContent-Length: x1\r\n\r\n").0.starts_with("HTTP/1.1 400"));
        assert!(run(b"GET /\x01 HTTP/1.1\r\n\r\n").0.starts_with("HTTP/1.1 400"));
        assert!(run(&[b'a'; MAX_HEAD]).0.starts_with("HTTP/1.1 431"));
        assert_eq!(run(&[b'a'; MAX_HEAD - 1]).1, 0);
        let (_, _, close) = run(b"GET / HTTP/1.0\r\n\r\n");
        assert!(close);
        let (_, _, close) = run(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(!close);
        let (out, _, close) = run(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(close && out.contains("Connection: close"));
    }
}
