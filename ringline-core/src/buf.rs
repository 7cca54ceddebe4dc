//! Send memory that travels by value between the core and a backend: [`SendBuf`], [`GuardBox`].
//!
//! A backend takes pointers from [`SendBuf::slices`] and may use them until it hands the `SendBuf`
//! back in `Completion::Sent`. Moving a `SendBuf` never moves the bytes it describes: every part
//! lives on the heap (a pool slot, a `Vec`, or a boxed guard), so the kernel may read it while the
//! owning struct is moved around (API R7).

use std::io::IoSlice;
use std::rc::Rc;
use std::sync::Arc;

/// Memory the runtime may keep and send from without copying (zero-copy sends).
///
/// The runtime calls `bytes()` after moving the guard into a box that stays put, writes from that
/// memory, and drops the guard only after the operation's terminal completion.
pub trait SendGuard: 'static {
    /// The bytes to send; must return the same memory on every call.
    fn bytes(&self) -> &[u8];
}

impl SendGuard for bytes::Bytes {
    fn bytes(&self) -> &[u8] {
        self
    }
}
impl SendGuard for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}
impl SendGuard for Box<[u8]> {
    fn bytes(&self) -> &[u8] {
        self
    }
}
impl SendGuard for String {
    fn bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}
impl SendGuard for Rc<[u8]> {
    fn bytes(&self) -> &[u8] {
        self
    }
}
impl SendGuard for Arc<[u8]> {
    fn bytes(&self) -> &[u8] {
        self
    }
}
impl SendGuard for Rc<Vec<u8>> {
    fn bytes(&self) -> &[u8] {
        self
    }
}
impl SendGuard for Arc<Vec<u8>> {
    fn bytes(&self) -> &[u8] {
        self
    }
}
impl SendGuard for &'static [u8] {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// A type-erased [`SendGuard`], always boxed so its memory never moves.
pub struct GuardBox {
    guard: Box<dyn SendGuard>,
}

impl GuardBox {
    /// Boxes `g`.
    pub fn new<G: SendGuard>(g: G) -> Self {
        GuardBox { guard: Box::new(g) }
    }
    /// Number of bytes the guard holds.
    pub fn len(&self) -> usize {
        self.guard.bytes().len()
    }
    /// True when the guard holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The guarded bytes.
    pub fn bytes(&self) -> &[u8] {
        self.guard.bytes()
    }
}

impl std::fmt::Debug for GuardBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardBox").field("len", &self.len()).finish()
    }
}

/// Where the bytes of one [`SendPart`] live.
#[derive(Debug)]
pub enum PartMemory {
    /// A send-pool slot (returned to the pool when the part is released).
    Pool(Box<[u8]>),
    /// Runtime-owned heap memory (sends larger than the free pool).
    Heap(Vec<u8>),
    /// The user's memory, sent without a copy.
    Guard(GuardBox),
}

impl PartMemory {
    fn bytes(&self) -> &[u8] {
        match self {
            PartMemory::Pool(b) => b,
            PartMemory::Heap(v) => v,
            PartMemory::Guard(g) => g.bytes(),
        }
    }
}

/// One contiguous range of bytes to send.
#[derive(Debug)]
pub struct SendPart {
    /// The memory holding the range.
    pub memory: PartMemory,
    /// First unsent byte within `memory`.
    pub start: usize,
    /// End of the range within `memory`.
    pub end: usize,
}

impl SendPart {
    /// The unsent bytes of this part.
    pub fn bytes(&self) -> &[u8] {
        &self.memory.bytes()[self.start..self.end]
    }
    /// Unsent length.
    pub fn len(&self) -> usize {
        self.end - self.start
    }
    /// True when every byte was sent.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// An ordered list of parts forming one write on one connection.
///
/// The backend writes all of it (finishing partial writes itself with [`SendBuf::advance`]) and
/// returns it in `Completion::Sent`. The core then releases pool slots and drops guards.
#[derive(Debug, Default)]
pub struct SendBuf {
    parts: Vec<SendPart>,
    /// Index of the first part with unsent bytes.
    first: usize,
    total: usize,
    sent: usize,
}

impl SendBuf {
    /// An empty buffer.
    pub fn new() -> Self {
        SendBuf::default()
    }
    /// A buffer over `parts` (reusing the vector's allocation).
    pub fn from_parts(parts: Vec<SendPart>) -> Self {
        let total = parts.iter().map(SendPart::len).sum();
        let mut buf = SendBuf { parts, first: 0, total, sent: 0 };
        while buf.first < buf.parts.len() && buf.parts[buf.first].is_empty() {
            buf.first += 1;
        }
        buf
    }

    /// Appends a part; empty parts are kept (their memory is released with the buffer).
    pub fn push(&mut self, part: SendPart) {
        self.total += part.len();
        self.parts.push(part);
    }
    /// Bytes not yet written.
    pub fn remaining(&self) -> usize {
        self.total - self.sent
    }
    /// Bytes in the whole buffer, written or not.
    pub fn total_len(&self) -> usize {
        self.total
    }
    /// True when nothing remains to write.
    pub fn is_done(&self) -> bool {
        self.remaining() == 0
    }
    /// Number of parts (written or not).
    pub fn part_count(&self) -> usize {
        self.parts.len()
    }
    /// The unwritten bytes, part by part, in order. Empty parts are skipped.
    pub fn slices(&self) -> impl Iterator<Item = &[u8]> {
        self.parts[self.first..].iter().map(SendPart::bytes).filter(|b| !b.is_empty())
    }
    /// Fills `out` with up to `max` `IoSlice`s of the unwritten bytes.
    pub fn io_slices<'a>(&'a self, out: &mut Vec<IoSlice<'a>>, max: usize) {
        out.extend(self.slices().take(max).map(IoSlice::new));
    }
    /// True when some part is a guard (zero-copy candidate).
    pub fn has_guard(&self) -> bool {
        self.parts.iter().any(|p| matches!(p.memory, PartMemory::Guard(_)))
    }
    /// How many zero-copy guards the buffer holds.
    pub fn guard_count(&self) -> usize {
        self.parts.iter().filter(|p| matches!(p.memory, PartMemory::Guard(_))).count()
    }
    /// Marks `n` more bytes as written. Panics if `n` exceeds [`SendBuf::remaining`].
    pub fn advance(&mut self, mut n: usize) {
        assert!(n <= self.remaining(), "advance past the end of a SendBuf");
        self.sent += n;
        while n > 0 {
            let part = &mut self.parts[self.first];
            let take = n.min(part.len());
            part.start += take;
            n -= take;
            if part.is_empty() {
                self.first += 1;
            }
        }
        while self.first < self.parts.len() && self.parts[self.first].is_empty() {
            self.first += 1;
        }
    }
    /// Takes the parts out, for release by the core.
    pub fn into_parts(self) -> Vec<SendPart> {
        self.parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heap(b: &[u8]) -> SendPart {
        SendPart { memory: PartMemory::Heap(b.to_vec()), start: 0, end: b.len() }
    }

    #[test]
    fn advance_walks_across_parts() {
        let mut buf = SendBuf::new();
        buf.push(heap(b"abc"));
        buf.push(SendPart { memory: PartMemory::Guard(GuardBox::new(&b"defg"[..])), start: 0, end: 4 });
        buf.push(heap(b""));
        buf.push(heap(b"hi"));
        assert_eq!(buf.remaining(), 9);
        buf.advance(4);
        let rest: Vec<u8> = buf.slices().flatten().copied().collect();
        assert_eq!(rest, b"efghi");
        buf.advance(5);
        assert!(buf.is_done());
        assert_eq!(buf.slices().count(), 0);
    }

    #[test]
    fn guard_memory_does_not_move_with_the_buffer() {
        let mut buf = SendBuf::new();
        buf.push(SendPart { memory: PartMemory::Guard(GuardBox::new(vec![7u8; 100])), start: 0, end: 100 });
        let before = buf.slices().next().unwrap().as_ptr();
        let moved = Box::new(buf);
        assert_eq!(moved.slices().next().unwrap().as_ptr(), before);
    }
}
