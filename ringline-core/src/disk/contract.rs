//! The disk part of the backend contract: [`DiskKey`], [`FileOp`], [`NvmeOp`], [`FileBuf`].
//!
//! Buffers and descriptors travel by value: an operation owns its buffer and a reference to its
//! file descriptor until the backend hands them back in `Completion::File` / `Completion::Nvme`,
//! so neither the kernel nor a blocking thread can touch freed memory or a reused fd number.

use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use super::aligned::AlignedBuf;

/// A disk-operation slot: index plus generation, in the worker's disk table (one table for
/// files, direct I/O and NVMe: two operations in flight never share a key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DiskKey {
    /// Slot index (< 2^24).
    pub index: u32,
    /// Generation of the slot; bumped on every release.
    pub generation: u32,
}

impl DiskKey {
    /// Packs the key into 56 bits, as [`ConnKey::to_u64`](crate::driver::ConnKey::to_u64) does.
    pub fn to_u64(self) -> u64 {
        (u64::from(self.generation) << 24) | u64::from(self.index & 0x00FF_FFFF)
    }
    /// The inverse of [`DiskKey::to_u64`] (ignores bits above 56).
    pub fn from_u64(v: u64) -> DiskKey {
        DiskKey { index: (v & 0x00FF_FFFF) as u32, generation: ((v >> 24) & 0xFFFF_FFFF) as u32 }
    }
}

/// How a file is opened; the backend turns it into `open(2)` flags (`O_CLOEXEC` always).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenFlags {
    /// Open for reading.
    pub read: bool,
    /// Open for writing.
    pub write: bool,
    /// Create the file if missing (mode 0o644 before the umask).
    pub create: bool,
    /// Truncate an existing file to zero length.
    pub truncate: bool,
    /// `O_DIRECT`: bypass the page cache.
    pub direct: bool,
}

/// A buffer owned by a file operation.
#[derive(Debug)]
pub enum FileBuf {
    /// A plain vector (`fs::File`).
    Vec(Vec<u8>),
    /// An aligned buffer (`DirectIoFile`).
    Aligned(AlignedBuf),
}

impl FileBuf {
    /// The bytes of the buffer (what a write sends; where a read lands).
    pub fn as_slice(&self) -> &[u8] {
        match self {
            FileBuf::Vec(v) => v,
            FileBuf::Aligned(a) => a,
        }
    }
    /// The bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            FileBuf::Vec(v) => v,
            FileBuf::Aligned(a) => a,
        }
    }
}

/// One file operation. Completes with exactly one `Completion::File` carrying the same key.
#[derive(Debug)]
pub enum FileOp {
    /// `openat(AT_FDCWD, path, flags)`: `result` `Ok(0)` and `fd: Some(..)` on success.
    Open {
        /// The path.
        path: PathBuf,
        /// How to open it.
        flags: OpenFlags,
    },
    /// `pread` into `buf` (all of its length): `Ok(bytes read)` and the buffer back.
    Read {
        /// The file.
        fd: Arc<OwnedFd>,
        /// Where the bytes land.
        buf: FileBuf,
        /// File offset.
        offset: u64,
    },
    /// `pwrite` of `buf`: `Ok(bytes written)` and the buffer back.
    Write {
        /// The file.
        fd: Arc<OwnedFd>,
        /// The bytes.
        buf: FileBuf,
        /// File offset.
        offset: u64,
    },
    /// `fsync` (or `fdatasync` with `data_only`): `Ok(0)`.
    Sync {
        /// The file.
        fd: Arc<OwnedFd>,
        /// `fdatasync` semantics.
        data_only: bool,
    },
    /// `statx` for the size: `Ok(size in bytes)`.
    Size {
        /// The file.
        fd: Arc<OwnedFd>,
    },
    /// `statx` with `STATX_DIOALIGN`: `Ok(max(dio_mem_align, dio_offset_align))`, or `Ok(0)`
    /// when the kernel or filesystem does not report it.
    DioAlignment {
        /// The file.
        fd: Arc<OwnedFd>,
    },
    /// `close`: `Ok(0)` or the close error.
    Close {
        /// The descriptor, owned by the operation from now on.
        fd: OwnedFd,
    },
}

impl FileOp {
    /// Takes the buffer and descriptor out of an operation that will not run.
    pub fn into_parts(self) -> (Option<FileBuf>, Option<OwnedFd>) {
        match self {
            FileOp::Read { buf, .. } | FileOp::Write { buf, .. } => (Some(buf), None),
            FileOp::Close { fd } => (None, Some(fd)),
            _ => (None, None),
        }
    }
}

/// One NVMe passthrough command (io_uring only). Completes with one `Completion::Nvme`.
#[derive(Debug)]
pub enum NvmeOp {
    /// NVMe Read (opcode 0x02) of `blocks` logical blocks from `lba` into `buf`.
    Read {
        /// The generic char device (`/dev/ngXnY`).
        fd: Arc<OwnedFd>,
        /// Namespace id.
        nsid: u32,
        /// First logical block.
        lba: u64,
        /// Number of blocks (1 ..= 65 536); encoded zero-based.
        blocks: u32,
        /// Exactly `blocks × lba_size` bytes.
        buf: AlignedBuf,
    },
    /// NVMe Write (opcode 0x01) of `buf` at `lba`.
    Write {
        /// The generic char device.
        fd: Arc<OwnedFd>,
        /// Namespace id.
        nsid: u32,
        /// First logical block.
        lba: u64,
        /// Number of blocks (1 ..= 65 536); encoded zero-based.
        blocks: u32,
        /// Exactly `blocks × lba_size` bytes.
        buf: AlignedBuf,
    },
    /// NVMe Flush (opcode 0x00).
    Flush {
        /// The generic char device.
        fd: Arc<OwnedFd>,
        /// Namespace id.
        nsid: u32,
    },
}

impl NvmeOp {
    /// Takes the buffer out of a command that will not run.
    pub fn into_buf(self) -> Option<AlignedBuf> {
        match self {
            NvmeOp::Read { buf, .. } | NvmeOp::Write { buf, .. } => Some(buf),
            NvmeOp::Flush { .. } => None,
        }
    }
}

/// Why an NVMe command failed.
#[derive(Debug)]
pub enum NvmeError {
    /// The device completed it with this non-zero status word.
    Status(u16),
    /// The submission failed (an errno from the kernel).
    Io(io::Error),
}
