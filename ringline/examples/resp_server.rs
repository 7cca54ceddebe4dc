//! A minimal RESP2 (Redis protocol) key-value server, enough for `redis-cli` and `redis-benchmark`.
//!
//! `cargo run --release -p ringline --example resp_server -- --addr 127.0.0.1:6380 --workers 2`
//! then `redis-cli -p 6380 set k v` or
//! `redis-benchmark -p 6380 -t ping,set,get -P 16 -n 100000 -q`.
//! `--addr 127.0.0.1:0` picks a free port; the `listening on ADDR` line shows the real one.
//! Exits cleanly on SIGINT/SIGTERM. Log level: `RUST_LOG` (default `info`), on stderr.
//!
//! Requests are arrays of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) or inline commands
//! (`PING\r\n`, split on whitespace, no quoting); every complete command in the buffer is
//! answered in order (pipelining), into one `Vec` sent with an awaited `send` (lossless).
//!
//! Commands (case-insensitive):
//! - `PING [message]`, `ECHO message`;
//! - `SET key value` — options after the value (`EX 10`, `NX`, …) are accepted and **ignored**:
//!   the value is always stored without expiry and the reply is always `+OK`;
//! - `GET key`, `DEL key [key ...]`;
//! - `COMMAND …` answers an empty array, and `CONFIG GET save|appendonly|*` a plausible value,
//!   which is what `redis-benchmark` asks at startup; `QUIT` answers `+OK` and closes;
//! - anything else: `-ERR unknown command '…'`.
//!
//! A protocol error (a malformed array or bulk header, a bulk string not followed by CRLF, an
//! oversized inline command) answers `-ERR Protocol error: …` and closes the connection.
//!
//! Storage is one `HashMap` **per worker**, held by that worker's handler in an `Rc<RefCell<…>>`:
//! no locks, no sharing. A connection sees the map of the worker that accepted it, so with more
//! than one worker two clients may see different values for a key. `redis-benchmark` is fine with
//! that (every connection only reads what it wrote); use `--workers 1` for one shared map.

#[path = "support/requests.rs"]
mod requests;
mod support;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use ringline::{AsyncEventHandler, ConnCtx, ParseResult};

/// A worker's key-value map.
type Store = Rc<RefCell<HashMap<Vec<u8>, Vec<u8>>>>;

/// The longest inline command or `*`/`$` header line accepted.
const MAX_LINE: usize = 64 * 1024;

/// The most elements of a request array.
const MAX_ARGS: usize = 1024 * 1024;

/// The longest bulk string accepted (keys and values).
const MAX_BULK: usize = 16 * 1024 * 1024;

/// Parsing stops once this many reply bytes are pending, so a long pipeline is answered in
/// bounded chunks; the rest stays buffered for the next round.
const MAX_PENDING_OUT: usize = 64 * 1024;

/// The handler of one worker: owns the worker's map.
struct Resp {
    /// Shared by the worker's connections.
    store: Store,
}

impl AsyncEventHandler for Resp {
    fn create_for_worker(_worker: usize) -> Self {
        Resp { store: Store::default() }
    }

    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        let store = Rc::clone(&self.store);
        requests::answer_requests(conn, move |data, out, close| serve(data, &store, out, close))
    }
}

/// Answers every complete command at the front of `data` into `out`; returns what to consume.
fn serve(data: &[u8], store: &Store, out: &mut Vec<u8>, close: &mut bool) -> ParseResult {
    let mut pos = 0;
    while !*close && pos < data.len() && out.len() < MAX_PENDING_OUT {
        match parse_command(&data[pos..]) {
            Ok(Parsed::Command(args, len)) => {
                pos += len;
                if !args.is_empty() {
                    *close = execute(&args, store, out);
                }
            }
            Ok(Parsed::Incomplete(need)) => {
                // Nothing answered yet: no need to look again before `need` bytes are buffered.
                return match need {
                    Some(need) if pos == 0 => ParseResult::NeedAtLeast(need),
                    _ => ParseResult::Consumed(pos),
                };
            }
            Err(detail) => {
                tracing::debug!(detail, "protocol error");
                out.extend_from_slice(b"-ERR Protocol error: ");
                out.extend_from_slice(detail.as_bytes());
                out.extend_from_slice(b"\r\n");
                *close = true;
                pos = data.len(); // drop the rest: the connection closes
            }
        }
    }
    ParseResult::Consumed(pos)
}

/// The result of parsing the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
enum Parsed<'a> {
    /// A command (empty for a blank inline line or an empty array) and the bytes it took.
    Command(Vec<&'a [u8]>, usize),
    /// More bytes are needed; at least this many in all, when known.
    Incomplete(Option<usize>),
}

/// Parses one command at the front of `buf`.
fn parse_command(buf: &[u8]) -> Result<Parsed<'_>, &'static str> {
    if buf.first() != Some(&b'*') {
        return parse_inline(buf);
    }
    let Some((count, mut pos)) = header_line(buf, 0)? else { return Ok(Parsed::Incomplete(None)) };
    let count = parse_int(count).ok_or("invalid multibulk length")?;
    if count <= 0 {
        return Ok(Parsed::Command(Vec::new(), pos));
    }
    let count = usize::try_from(count).ok().filter(|&n| n <= MAX_ARGS).ok_or("invalid multibulk length")?;
    let mut args = Vec::with_capacity(count.min(16));
    for _ in 0..count {
        match buf.get(pos) {
            None => return Ok(Parsed::Incomplete(None)),
            Some(b'$') => {}
            Some(_) => return Err("expected '$'"),
        }
        let Some((len, start)) = header_line(buf, pos)? else { return Ok(Parsed::Incomplete(None)) };
        let len = parse_int(len)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n <= MAX_BULK)
            .ok_or("invalid bulk length")?;
        let end = start + len;
        if buf.len() < end + 2 {
            return Ok(Parsed::Incomplete(Some(end + 2)));
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err("bulk string not followed by CRLF");
        }
        args.push(&buf[start..end]);
        pos = end + 2;
    }
    Ok(Parsed::Command(args, pos))
}

/// The CRLF-terminated line at `buf[at..]` without its first byte (the type marker), and the
/// offset after it; `None` while incomplete.
fn header_line(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, &'static str> {
    let rest = &buf[at..];
    let window = &rest[..rest.len().min(MAX_LINE)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some((&rest[1..i], at + i + 2))),
        None if rest.len() >= MAX_LINE => Err("too big header line"),
        None => Ok(None),
    }
}

/// An inline command: one line split on whitespace.
fn parse_inline(buf: &[u8]) -> Result<Parsed<'_>, &'static str> {
    let window = &buf[..buf.len().min(MAX_LINE)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_LINE {
            Err("too big inline request")
        } else {
            Ok(Parsed::Incomplete(None))
        };
    };
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    let args = line.split(u8::is_ascii_whitespace).filter(|a| !a.is_empty()).collect();
    Ok(Parsed::Command(args, nl + 1))
}

/// A decimal integer with an optional leading `-`.
fn parse_int(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix(b"-") {
        Some(d) => (true, d),
        None => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits.iter().fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
    Some(if negative { -n } else { n })
}

/// Runs one command, appending its reply; returns whether the connection should close.
fn execute(args: &[&[u8]], store: &Store, out: &mut Vec<u8>) -> bool {
    let name = args[0];
    let is = |command: &str| name.eq_ignore_ascii_case(command.as_bytes());
    if is("PING") {
        match args.len() {
            1 => out.extend_from_slice(b"+PONG\r\n"),
            2 => bulk(out, args[1]),
            _ => wrong_arity(out, name),
        }
    } else if is("ECHO") {
        if arity_ok(out, name, args.len() == 2) {
            bulk(out, args[1]);
        }
    } else if is("SET") {
        // `SET key value [EX s | PX ms | NX | XX | ...]`: the options are ignored (see the docs).
        if arity_ok(out, name, args.len() >= 3) {
            store.borrow_mut().insert(args[1].to_vec(), args[2].to_vec());
            out.extend_from_slice(b"+OK\r\n");
        }
    } else if is("GET") {
        if arity_ok(out, name, args.len() == 2) {
            match store.borrow().get(args[1]) {
                Some(value) => bulk(out, value),
                None => out.extend_from_slice(b"$-1\r\n"),
            }
        }
    } else if is("DEL") {
        if arity_ok(out, name, args.len() >= 2) {
            let mut map = store.borrow_mut();
            let removed = args[1..].iter().filter(|key| map.remove(**key).is_some()).count();
            out.extend_from_slice(format!(":{removed}\r\n").as_bytes());
        }
    } else if is("COMMAND") {
        // `COMMAND DOCS` and friends: no command table here, an empty array is a valid answer.
        out.extend_from_slice(b"*0\r\n");
    } else if is("CONFIG") {
        if args.len() >= 3 && args[1].eq_ignore_ascii_case(b"GET") {
            config_get(out, &args[2..]);
        } else {
            out.extend_from_slice(b"-ERR only CONFIG GET is supported\r\n");
        }
    } else if is("QUIT") {
        out.extend_from_slice(b"+OK\r\n");
        return true;
    } else {
        out.extend_from_slice(b"-ERR unknown command '");
        out.extend_from_slice(&printable(name));
        out.extend_from_slice(b"'\r\n");
    }
    false
}

/// `CONFIG GET pattern...`: the settings `redis-benchmark` reads, as name/value pairs.
fn config_get(out: &mut Vec<u8>, patterns: &[&[u8]]) {
    const SETTINGS: &[(&[u8], &[u8])] = &[(b"save", b""), (b"appendonly", b"no")];
    let found: Vec<_> = SETTINGS
        .iter()
        .filter(|(name, _)| patterns.iter().any(|p| *p == b"*" || p.eq_ignore_ascii_case(name)))
        .collect();
    out.extend_from_slice(format!("*{}\r\n", found.len() * 2).as_bytes());
    for (name, value) in found {
        bulk(out, name);
        bulk(out, value);
    }
}

/// Appends a bulk string reply.
fn bulk(out: &mut Vec<u8>, value: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", value.len()).as_bytes());
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `ok`; when false, appends the wrong-number-of-arguments error of `name` first.
fn arity_ok(out: &mut Vec<u8>, name: &[u8], ok: bool) -> bool {
    if !ok {
        wrong_arity(out, name);
    }
    ok
}

/// Appends the wrong-number-of-arguments error of `name`.
fn wrong_arity(out: &mut Vec<u8>, name: &[u8]) {
    out.extend_from_slice(b"-ERR wrong number of arguments for '");
    out.extend_from_slice(&printable(name).to_ascii_lowercase());
    out.extend_from_slice(b"' command\r\n");
}

/// At most 64 bytes of `name`, with anything but printable ASCII replaced by `?`, so it fits in a
/// one-line error reply.
fn printable(name: &[u8]) -> Vec<u8> {
    name.iter().take(64).map(|&b| if b.is_ascii_graphic() || b == b' ' { b } else { b'?' }).collect()
}

/// Set by the signal handler; polled by `main`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    support::serve::<Resp>("resp_server", "127.0.0.1:6380")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> (String, ParseResult, bool) {
        let store = Store::default();
        let (mut out, mut close) = (Vec::new(), false);
        let r = serve(input, &store, &mut out, &mut close);
        (String::from_utf8(out).unwrap(), r, close)
    }

    #[test]
    fn pipelined_commands() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\n*2\r\n$3\r\nget\r\n$1\r\nk\r\nPING\r\n\
                      PING hi\n*3\r\n$3\r\nDEL\r\n$1\r\nk\r\n$1\r\nz\r\nGET k\r\nFOO\r\n*2\r\n$4\r\nECHO";
        let (out, r, close) = run(input);
        assert_eq!(
            out,
            "+OK\r\n$2\r\nv1\r\n+PONG\r\n$2\r\nhi\r\n:1\r\n$-1\r\n-ERR unknown command 'FOO'\r\n"
        );
        assert_eq!(r, ParseResult::Consumed(input.len() - 12));
        assert!(!close);
    }

    #[test]
    fn incomplete_and_errors() {
        assert_eq!(run(b"*2\r\n$3\r\nGET\r\n$5\r\nab").1, ParseResult::NeedAtLeast(24));
        assert_eq!(run(b"*2\r\n$3\r").1, ParseResult::Consumed(0));
        let (out, _, close) = run(b"*1\r\n:3\r\n");
        assert!(out.starts_with("-ERR Protocol error") && close);
        let (out, _, close) = run(b"*1\r\n$3\r\nGETxx");
        assert!(out.starts_with("-ERR Protocol error") && close);
        assert_eq!(run(b"CONFIG GET save\r\n").0, "*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
        assert_eq!(run(b"COMMAND DOCS\r\n").0, "*0\r\n");
    }
}
