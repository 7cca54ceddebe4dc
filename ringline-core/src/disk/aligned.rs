//! [`AlignedBuf`]: heap memory whose first byte sits on a 4096-byte boundary, for direct I/O.
//!
//! The core has no `unsafe` code (`#![forbid(unsafe_code)]`), so the buffer is not allocated with
//! `std::alloc` and a `Layout`: it over-allocates a zeroed `Vec<u8>` by `ALIGN - 1` bytes and
//! views the aligned window inside it. The heap block never moves or resizes while the buffer
//! lives, so the address a backend hands to the kernel stays valid until the buffer is dropped.

use std::fmt;
use std::ops::{Deref, DerefMut};

/// Alignment of every [`AlignedBuf`], in bytes.
pub const ALIGN: usize = 4096;

/// An owned, heap-allocated byte buffer aligned to 4096 bytes; `Send`.
///
/// Used for [`DirectIoFile`](crate::disk::DirectIoFile) and
/// [`NvmeDevice`](crate::disk::NvmeDevice) transfers, which need the buffer address aligned.
/// The buffer moves into an operation and comes back with its result.
///
/// # Examples
/// ```
/// use ringline_core::disk::AlignedBuf;
/// let mut buf = AlignedBuf::zeroed(8192);
/// assert_eq!(buf.as_ptr() as usize % 4096, 0);
/// buf[0] = 7;
/// buf.truncate(4096);
/// assert_eq!((buf.len(), buf[0]), (4096, 7));
/// ```
pub struct AlignedBuf {
    /// `len + ALIGN - 1` bytes, never resized.
    mem: Vec<u8>,
    /// Offset of the first aligned byte in `mem`.
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A buffer of `len` bytes. Safe code cannot expose uninitialised memory, so it is zeroed,
    /// as by [`AlignedBuf::zeroed`] (a large zeroed allocation is cheap: fresh pages).
    ///
    /// # Panics
    /// If `len + 4095` overflows `usize`, or the allocation fails.
    pub fn new(len: usize) -> AlignedBuf {
        AlignedBuf::zeroed(len)
    }

    /// A zero-filled buffer of `len` bytes.
    ///
    /// # Panics
    /// If `len + 4095` overflows `usize`, or the allocation fails.
    pub fn zeroed(len: usize) -> AlignedBuf {
        let total = len.checked_add(ALIGN - 1).expect("AlignedBuf length overflows usize");
        let mem = vec![0u8; total];
        let addr = mem.as_ptr() as usize;
        let start = (ALIGN - addr % ALIGN) % ALIGN;
        AlignedBuf { mem, start, len }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length buffer.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Shortens the buffer to `len` bytes; no effect if `len >= self.len()`. The start address
    /// (and so its alignment) does not change.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + self.len]
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf").field("len", &self.len).field("addr", &self.as_ptr()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_is_aligned_zeroed_and_writable() {
        for len in [0, 1, 511, 4096, 4097, 65536, 1 << 20] {
            let mut b = AlignedBuf::new(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr() as usize % ALIGN, 0, "len {len}");
            assert!(b.iter().all(|&x| x == 0));
            b.fill(0xAB);
            assert!(b.iter().all(|&x| x == 0xAB));
        }
    }

    #[test]
    fn truncate_only_shortens_and_keeps_the_address() {
        let mut b = AlignedBuf::zeroed(8192);
        let p = b.as_ptr();
        b.truncate(100_000);
        assert_eq!(b.len(), 8192);
        b.truncate(4096);
        assert_eq!((b.len(), b.as_ptr()), (4096, p));
    }

    #[test]
    fn is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<AlignedBuf>();
    }
}
