//! Framed streams for integrity tests (TESTPLAN §0): each message carries its connection id,
//! sequence number, length and a payload generated from (id, sequence), so a receiver checks
//! order and content message by message; both ends also keep a running hash of the whole stream.
//!
//! Random choices come from a seed printed once per test and overridable with
//! `RINGLINE_TEST_SEED`; counts scale with `RINGLINE_TEST_SCALE` (default 1).

use std::io::{self, Read, Write};

/// Bytes of the frame header: id, sequence, payload length (little-endian u32 each).
pub const HEADER: usize = 12;

/// The seed of this test run, printed with the test's name so a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("RINGLINE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!("{test}: RINGLINE_TEST_SEED={seed} (backend {})", super::backend_label());
    seed
}

/// `base` multiplied by `RINGLINE_TEST_SCALE` (default 1, at least 1).
pub fn scaled(base: usize) -> usize {
    let scale: usize = std::env::var("RINGLINE_TEST_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    base * scale.max(1)
}

/// A small deterministic PRNG (xorshift64*).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (0 is remapped).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `lo ..= hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Payload sizes that land below, on and above the interesting boundaries (`edges`), mixed with
/// small and large random sizes up to `max`.
pub fn size(rng: &mut Rng, edges: &[usize], max: usize) -> usize {
    match rng.range(0, 9) {
        0..=3 => rng.range(1, 512),
        4..=6 => {
            let edge = edges[rng.range(0, edges.len() - 1)];
            (edge + rng.range(0, 2)).saturating_sub(1).clamp(1, max)
        }
        7 | 8 => rng.range(1, 64 * 1024).min(max),
        _ => rng.range(1, max),
    }
}

/// One framed message: header plus the payload of (`id`, `seq`).
pub fn frame(id: u32, seq: u32, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + len);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
    let start = out.len();
    out.resize(start + len, 0);
    Rng::new((u64::from(id) << 32) ^ u64::from(seq) ^ 0x5EED).fill(&mut out[start..]);
    out
}

/// A running FNV-1a hash of a byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamHash(u64);

impl Default for StreamHash {
    fn default() -> Self {
        StreamHash(0xcbf2_9ce4_8422_2325)
    }
}

impl StreamHash {
    /// Adds `bytes` to the hash.
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Writes `count` framed messages of connection `id` with sizes from `sizes`; returns the hash of
/// everything written.
pub fn write_frames(w: &mut impl Write, id: u32, sizes: &[usize]) -> io::Result<StreamHash> {
    let mut hash = StreamHash::default();
    for (seq, &len) in sizes.iter().enumerate() {
        let f = frame(id, seq as u32, len);
        hash.update(&f);
        w.write_all(&f)?;
    }
    Ok(hash)
}

/// Reads `sizes.len()` framed messages of connection `id` and checks each header and payload;
/// returns the hash of everything read, or a description of the first mismatch.
pub fn read_frames(r: &mut impl Read, id: u32, sizes: &[usize]) -> Result<StreamHash, String> {
    let mut hash = StreamHash::default();
    let mut header = [0u8; HEADER];
    for (seq, &len) in sizes.iter().enumerate() {
        r.read_exact(&mut header).map_err(|e| format!("conn {id} seq {seq}: header: {e}"))?;
        let word = |i: usize| u32::from_le_bytes(header[i * 4..i * 4 + 4].try_into().unwrap());
        if (word(0), word(1), word(2)) != (id, seq as u32, len as u32) {
            return Err(format!(
                "conn {id} seq {seq}: header says conn {} seq {} len {}, expected len {len}",
                word(0),
                word(1),
                word(2)
            ));
        }
        let want = frame(id, seq as u32, len);
        let mut got = vec![0u8; len];
        r.read_exact(&mut got).map_err(|e| format!("conn {id} seq {seq}: payload of {len}: {e}"))?;
        if got[..] != want[HEADER..] {
            let at = got.iter().zip(&want[HEADER..]).position(|(a, b)| a != b).unwrap_or(0);
            return Err(format!("conn {id} seq {seq}: payload differs at byte {at} of {len}"));
        }
        hash.update(&want);
    }
    Ok(hash)
}
