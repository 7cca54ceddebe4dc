//! The frame format spoken by the `soak_server` and `soak_client` examples (driven by
//! `cargo xtask soak`).
//!
//! A frame is a 13-byte header, `op (u8) | seq (u32 LE) | len (u32 LE) | fnv (u32 LE)`, then
//! `len` payload bytes whose FNV-1a hash is `fnv`. The server answers every frame, in order, with
//! the same bytes; what it does before answering depends on `op` (see [`Op`]). When it finds a
//! payload whose hash does not match, it answers [`Op::Mismatch`] instead, so corruption on the
//! way in is reported even if the way back would hide it.
// Each of the two examples uses part of this module.
#![allow(dead_code)]

/// Bytes of a frame header.
pub(crate) const HEADER: usize = 13;

/// Largest payload either side accepts.
pub(crate) const MAX_PAYLOAD: usize = 256 * 1024;

/// What the server does with a frame before echoing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Echo at once.
    Echo,
    /// `sleep` for the millisecond count in the first two payload bytes, then echo.
    Sleep,
    /// Race a 10 s `sleep` against a `timeout` of that many milliseconds (the timeout must
    /// win, so a timer is cancelled), then echo.
    Timeout,
    /// `spawn` a task that sleeps that long and hashes the payload; await it, check the hash,
    /// then echo. Also spawns a detached task that sleeps and ends on its own.
    Spawn,
    /// On the blocking pool (`spawn_blocking`), sleep that many milliseconds and hash the
    /// payload; check the hash, then echo.
    Blocking,
    /// The server's answer to a frame whose payload did not match its hash (empty payload).
    Mismatch,
}

impl Op {
    /// The op's wire byte.
    pub(crate) fn byte(self) -> u8 {
        match self {
            Op::Echo => b'E',
            Op::Sleep => b'S',
            Op::Timeout => b'T',
            Op::Spawn => b'P',
            Op::Blocking => b'B',
            Op::Mismatch => b'X',
        }
    }

    /// The op of a wire byte.
    pub(crate) fn from_byte(b: u8) -> Option<Op> {
        [Op::Echo, Op::Sleep, Op::Timeout, Op::Spawn, Op::Blocking, Op::Mismatch]
            .into_iter()
            .find(|op| op.byte() == b)
    }
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// The op byte (maybe unknown).
    pub(crate) op: u8,
    /// The sender's sequence number.
    pub(crate) seq: u32,
    /// Payload length.
    pub(crate) len: u32,
    /// FNV-1a of the payload.
    pub(crate) fnv: u32,
}

impl Header {
    /// Parses the first [`HEADER`] bytes, or `None` when fewer are given.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Header> {
        let b = bytes.get(..HEADER)?;
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(Header { op: b[0], seq: word(1), len: word(5), fnv: word(9) })
    }

    /// Header plus payload bytes.
    pub(crate) fn frame_len(&self) -> usize {
        HEADER + self.len as usize
    }
}

/// FNV-1a, 32 bits.
pub(crate) fn fnv1a(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// Appends a whole frame (header and payload) to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, op: Op, seq: u32, payload: &[u8]) {
    out.push(op.byte());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&fnv1a(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The millisecond argument of a timer op: the first two payload bytes (0 when shorter).
pub(crate) fn millis_arg(payload: &[u8]) -> u64 {
    match payload {
        [a, b, ..] => u64::from(u16::from_le_bytes([*a, *b])),
        _ => 0,
    }
}

/// A small xorshift generator: payloads and scenario choices, reproducible from a seed.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, 0 included).
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Fills `buf` with random bytes.
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_through_its_header() {
        let mut out = Vec::new();
        encode(&mut out, Op::Sleep, 7, &[5, 0, 9]);
        let h = Header::parse(&out).unwrap();
        assert_eq!((Op::from_byte(h.op), h.seq, h.len, h.frame_len()), (Some(Op::Sleep), 7, 3, 16));
        assert_eq!(h.fnv, fnv1a(&out[HEADER..]));
        assert_eq!(millis_arg(&out[HEADER..]), 5);
        assert!(Header::parse(&out[..HEADER - 1]).is_none());
    }

    #[test]
    fn fnv_matches_the_published_vectors() {
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
    }
}
