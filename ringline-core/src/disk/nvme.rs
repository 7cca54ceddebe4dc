//! [`NvmeDevice`]: NVMe passthrough commands on a generic char device (`/dev/ngXnY`), io_uring
//! only (`IORING_OP_URING_CMD` on a ring with 128-byte entries, `Config::nvme(true)`).

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::aligned::AlignedBuf;
use super::contract::{FileBuf, FileOp, NvmeError, NvmeOp, OpenFlags};
use super::file::{open_fd, run};
use super::op::{DiskOp, Request};
use super::table::Done;
use crate::error::Error;
use crate::runtime::context::with_core;

/// Most logical blocks one command may move (the 16-bit zero-based NLB field).
pub const MAX_BLOCKS: usize = 65_536;

/// Blocks covered by a buffer of `len` bytes: exact and 1 ..= 65 536.
///
/// # Errors
/// `InvalidInput` otherwise.
pub fn block_count(len: usize, lba_size: usize) -> Result<u32, Error> {
    if lba_size == 0 || len % lba_size != 0 {
        return Err(Error::InvalidInput("NVMe buffer length is not a whole number of logical blocks"));
    }
    match len / lba_size {
        n @ 1..=MAX_BLOCKS => Ok(n as u32),
        _ => Err(Error::InvalidInput("NVMe transfer must cover 1 ..= 65536 logical blocks")),
    }
}

/// One NVMe namespace opened through its generic char device. `!Send`.
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<ringline_core::disk::NvmeDevice>();
/// ```
#[derive(Debug)]
pub struct NvmeDevice {
    fd: Arc<OwnedFd>,
    nsid: u32,
    lba_size: usize,
    _not_send: PhantomData<*const ()>,
}

impl NvmeDevice {
    /// Opens namespace `nsid` through `path` (a generic char device such as `/dev/ng0n1`) and
    /// reads its logical block size from `/sys/block/nvmeXnY/queue/logical_block_size`.
    ///
    /// # Errors
    /// `Unsupported("NVMe passthrough needs the io_uring backend")` on other backends;
    /// `NotConfigured("nvme")` without `Config::nvme(true)`; `InvalidInput` for a path that is
    /// not `ngXnY`; `Io`; `NotInRuntime`.
    pub fn open(
        path: impl AsRef<Path>,
        nsid: u32,
    ) -> impl Future<Output = Result<NvmeDevice, Error>> + 'static {
        let path = path.as_ref().to_path_buf();
        async move {
            let (capable, configured) =
                with_core(|core| (core.caps.get().nvme, core.cfg.nvme())).ok_or(Error::NotInRuntime)?;
            if !capable {
                return Err(Error::Unsupported("NVMe passthrough needs the io_uring backend"));
            }
            if !configured {
                return Err(Error::NotConfigured("nvme"));
            }
            let sysfs = sysfs_block_size_path(&path)?;
            let flags = OpenFlags { read: true, write: true, ..OpenFlags::default() };
            let fd = open_fd(&path, flags).await?;
            let lba_size = read_block_size(&sysfs).await?;
            Ok(NvmeDevice { fd, nsid, lba_size, _not_send: PhantomData })
        }
    }

    /// The logical block size in bytes.
    pub fn lba_size(&self) -> usize {
        self.lba_size
    }

    /// The namespace id.
    pub fn nsid(&self) -> u32 {
        self.nsid
    }

    /// Reads `buf.len() / lba_size()` blocks starting at `lba` into `buf`.
    ///
    /// # Errors
    /// `InvalidInput` unless the length is 1 ..= 65 536 whole blocks; `Nvme { status }` for a
    /// non-zero completion status; `Io`.
    pub fn read(
        &self,
        lba: u64,
        buf: AlignedBuf,
    ) -> impl Future<Output = (Result<(), Error>, AlignedBuf)> + 'static {
        let blocks = block_count(buf.len(), self.lba_size);
        let (fd, nsid) = (self.fd.clone(), self.nsid);
        async move {
            match blocks {
                Ok(blocks) => command(NvmeOp::Read { fd, nsid, lba, blocks, buf }).await,
                Err(e) => (Err(e), buf),
            }
        }
    }

    /// Writes `buf` (1 ..= 65 536 whole blocks) starting at `lba`.
    ///
    /// # Errors
    /// As [`NvmeDevice::read`].
    pub fn write(
        &self,
        lba: u64,
        buf: AlignedBuf,
    ) -> impl Future<Output = (Result<(), Error>, AlignedBuf)> + 'static {
        let blocks = block_count(buf.len(), self.lba_size);
        let (fd, nsid) = (self.fd.clone(), self.nsid);
        async move {
            match blocks {
                Ok(blocks) => command(NvmeOp::Write { fd, nsid, lba, blocks, buf }).await,
                Err(e) => (Err(e), buf),
            }
        }
    }

    /// Flushes the device's volatile write cache.
    ///
    /// # Errors
    /// `Nvme { status }`; `Io`.
    pub fn flush(&self) -> impl Future<Output = Result<(), Error>> + 'static {
        let op = NvmeOp::Flush { fd: self.fd.clone(), nsid: self.nsid };
        async move { command(op).await.0 }
    }
}

/// Runs one command; the buffer comes back (an empty one for `Flush`).
async fn command(op: NvmeOp) -> (Result<(), Error>, AlignedBuf) {
    match DiskOp::new(Request::Nvme(op)).await {
        Ok(Done::Nvme { result, buf }) => {
            let result = result.map_err(|e| match e {
                NvmeError::Status(status) => Error::Nvme { status },
                NvmeError::Io(e) => Error::Io(e),
            });
            (result, buf.unwrap_or_else(|| AlignedBuf::new(0)))
        }
        Ok(Done::File { .. }) => {
            (Err(Error::Io(io::Error::other("file completion for NVMe"))), AlignedBuf::new(0))
        }
        Err((e, req)) => {
            let buf = match req {
                Some(Request::Nvme(op)) => op.into_buf(),
                _ => None,
            };
            (Err(e), buf.unwrap_or_else(|| AlignedBuf::new(0)))
        }
    }
}

/// `/dev/ngXnY` → `/sys/block/nvmeXnY/queue/logical_block_size`.
fn sysfs_block_size_path(dev: &Path) -> Result<PathBuf, Error> {
    let name = dev.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match name.strip_prefix("ng") {
        Some(rest) if !rest.is_empty() && rest.contains('n') => {
            Ok(PathBuf::from(format!("/sys/block/nvme{rest}/queue/logical_block_size")))
        }
        _ => Err(Error::InvalidInput("NVMe passthrough needs a generic char device path like /dev/ng0n1")),
    }
}

/// Reads and parses a sysfs number through the runtime's file operations.
async fn read_block_size(path: &Path) -> Result<usize, Error> {
    let flags = OpenFlags { read: true, ..OpenFlags::default() };
    let fd = open_fd(path, flags).await?;
    let out = run(FileOp::Read { fd, buf: FileBuf::Vec(vec![0; 32]), offset: 0 }).await;
    let n = out.result?;
    let text = match &out.buf {
        Some(b) => String::from_utf8_lossy(&b.as_slice()[..n]).trim().to_string(),
        None => String::new(),
    };
    match text.parse::<usize>() {
        Ok(size) if size >= 512 && size.is_power_of_two() => Ok(size),
        _ => Err(Error::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad logical block size {text:?}"),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_count_is_exact_and_bounded() {
        assert_eq!(block_count(4096, 512).unwrap(), 8);
        assert_eq!(block_count(512 * MAX_BLOCKS, 512).unwrap(), MAX_BLOCKS as u32);
        assert!(matches!(block_count(0, 512), Err(Error::InvalidInput(_))));
        assert!(matches!(block_count(513, 512), Err(Error::InvalidInput(_))));
        assert!(matches!(block_count(512 * (MAX_BLOCKS + 1), 512), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn sysfs_path_follows_the_generic_device_name() {
        let p = sysfs_block_size_path(Path::new("/dev/ng0n1")).unwrap();
        assert_eq!(p, PathBuf::from("/sys/block/nvme0n1/queue/logical_block_size"));
        assert!(sysfs_block_size_path(Path::new("/dev/sda")).is_err());
    }
}
