//! The provided-buffer ring: `count` receive buffers of `size` bytes handed to the kernel through a
//! ring registered with `IORING_REGISTER_PBUF_RING`.
//!
//! Both the ring of descriptors and the buffer memory are anonymous `mmap`s, so they are page
//! aligned and never move. The kernel picks a buffer for each multishot receive completion; the
//! driver copies the bytes out at once and returns the id with [`BufRing::release`] in the same
//! iteration (PITFALLS P10, P11). The memory is unmapped only after [`BufRing::unregister`]
//! succeeded; a ring that could not be unregistered is leaked on purpose.

use std::io;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::Submitter;
use io_uring::types::BufRingEntry;

/// One anonymous, private, read-write mapping.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY:
        // - a null hint with MAP_PRIVATE | MAP_ANONYMOUS asks for fresh memory and touches nothing
        //   that exists; `len` is non-zero (callers pass at least one entry or buffer).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY:
        // - `ptr`/`len` describe exactly the mapping made in `Mapping::new`, unmapped only here;
        // - the owner drops a mapping only when the kernel can no longer access it (the buffer ring
        //   was unregistered or never registered).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// A registered ring of provided receive buffers (buffer group `bgid`).
pub(crate) struct BufRing {
    ring: ManuallyDrop<Mapping>,
    bufs: ManuallyDrop<Mapping>,
    entries: u16,
    buf_size: usize,
    /// Next tail value to publish (kept locally; the kernel only reads it).
    tail: u16,
    /// Buffers currently in the ring (not handed out by a completion yet).
    free: usize,
    bgid: u16,
    registered: bool,
}

impl BufRing {
    /// Allocates `count` buffers of `size` bytes (count a power of two, at most 32768).
    pub(crate) fn new(count: usize, size: usize, bgid: u16) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 32_768 || size == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad provided-buffer ring size"));
        }
        let ring = Mapping::new(count * std::mem::size_of::<BufRingEntry>())?;
        let bufs = Mapping::new(count * size)?;
        Ok(BufRing {
            ring: ManuallyDrop::new(ring),
            bufs: ManuallyDrop::new(bufs),
            entries: count as u16,
            buf_size: size,
            tail: 0,
            free: 0,
            bgid,
            registered: false,
        })
    }

    /// Registers the ring with the kernel and fills it with every buffer.
    pub(crate) fn register(&mut self, submitter: &Submitter<'_>) -> io::Result<()> {
        let entries = self.count();
        // SAFETY:
        // - the ring mapping is page aligned, `entries * 16` bytes long and zeroed (fresh anonymous
        //   memory), as IORING_REGISTER_PBUF_RING requires;
        // - it stays mapped until `unregister` succeeded: `Drop` leaks it while `registered` is set.
        unsafe {
            submitter.register_buf_ring_with_flags(
                self.ring.ptr.as_ptr() as u64,
                entries as u16,
                self.bgid,
                0,
            )?;
        }
        self.registered = true;
        for bid in 0..entries {
            self.write_entry(bid as u16);
        }
        self.publish();
        Ok(())
    }

    /// Unregisters the ring; afterwards dropping it frees the memory.
    pub(crate) fn unregister(&mut self, submitter: &Submitter<'_>) -> io::Result<()> {
        if self.registered {
            submitter.unregister_buf_ring(self.bgid)?;
            self.registered = false;
        }
        Ok(())
    }

    /// The buffer group id used in receive SQEs.
    pub(crate) fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Number of buffers.
    pub(crate) fn count(&self) -> usize {
        usize::from(self.entries)
    }

    /// Buffers currently available to the kernel.
    pub(crate) fn free(&self) -> usize {
        self.free
    }

    /// Notes that a completion handed out buffer `bid`; returns false for an id out of range.
    pub(crate) fn taken(&mut self, bid: u16) -> bool {
        if usize::from(bid) >= self.count() {
            return false;
        }
        self.free = self.free.saturating_sub(1);
        true
    }

    /// The first `len` bytes of buffer `bid` (clamped to the buffer size).
    pub(crate) fn data(&self, bid: u16, len: usize) -> &[u8] {
        let bid = usize::from(bid);
        assert!(bid < self.count(), "buffer id out of range");
        let len = len.min(self.buf_size);
        // SAFETY:
        // - `bid < count`, so `bid * buf_size + len` stays inside the `count * buf_size` mapping;
        // - the kernel wrote these bytes before posting the completion that named `bid`, and it
        //   does not touch the buffer again until `release` puts it back in the ring.
        unsafe { std::slice::from_raw_parts(self.bufs.ptr.as_ptr().add(bid * self.buf_size), len) }
    }

    /// Returns buffer `bid` to the kernel (after `taken`).
    pub(crate) fn release(&mut self, bid: u16) {
        if usize::from(bid) >= self.count() {
            return;
        }
        self.write_entry(bid);
        self.publish();
    }

    /// Writes the descriptor of `bid` at the current tail and advances the local tail.
    fn write_entry(&mut self, bid: u16) {
        let mask = self.count() - 1;
        let slot = usize::from(self.tail) & mask;
        let entry = self.ring.ptr.as_ptr().cast::<BufRingEntry>();
        let addr = self.bufs.ptr.as_ptr() as u64 + (usize::from(bid) * self.buf_size) as u64;
        // SAFETY:
        // - `slot < count`, so the entry lies inside the ring mapping, which is suitably aligned
        //   (page aligned, entries of 16 bytes);
        // - the kernel reads only entries between its head and the published tail; `slot` is past
        //   the published tail, so nobody reads it concurrently;
        // - the setters write `addr`, `len` and `bid` only, never the `resv` field that doubles as
        //   the tail of entry 0.
        unsafe {
            let e = &mut *entry.add(slot);
            e.set_addr(addr);
            e.set_len(self.buf_size as u32);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        self.free += 1;
    }

    /// Publishes the local tail with release ordering, after the entries it covers were written.
    fn publish(&mut self) {
        let base = self.ring.ptr.as_ptr().cast::<BufRingEntry>();
        // SAFETY:
        // - `base` is the first entry of a live ring mapping, so `tail` points at its `resv` field,
        //   a naturally aligned u16 inside the mapping;
        // - the kernel only reads that field and we are its only writer, so treating it as an
        //   `AtomicU16` for the duration of the store is sound.
        unsafe {
            let tail = BufRingEntry::tail(base).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.registered {
            tracing::error!(
                bgid = self.bgid,
                "provided-buffer ring dropped while registered; leaking its memory"
            );
            return;
        }
        // SAFETY:
        // - the ring is not registered, so the kernel no longer reads the descriptors nor writes
        //   the buffers; each field is dropped exactly once, here, and never used afterwards.
        unsafe {
            ManuallyDrop::drop(&mut self.ring);
            ManuallyDrop::drop(&mut self.bufs);
        }
    }
}
