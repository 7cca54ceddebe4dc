//! [`DirectIoFile`]: `O_DIRECT` reads and writes of [`AlignedBuf`]s, alignment checked before
//! anything is submitted.

use std::future::Future;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use super::aligned::{ALIGN, AlignedBuf};
use super::contract::{FileBuf, FileOp, OpenFlags};
use super::file::{FileOutcome, close_fd, open_fd, run};
use crate::error::Error;

/// Checks a direct transfer against `alignment`: buffer address, file offset and length must
/// all be multiples of it.
///
/// # Errors
/// `InvalidInput` naming what is misaligned.
pub fn check_alignment(addr: usize, offset: u64, len: usize, alignment: usize) -> Result<(), Error> {
    let align = alignment.max(1);
    if addr % align != 0 {
        return Err(Error::InvalidInput("buffer address does not meet the direct I/O alignment"));
    }
    if offset % align as u64 != 0 {
        return Err(Error::InvalidInput("offset does not meet the direct I/O alignment"));
    }
    if len % align != 0 {
        return Err(Error::InvalidInput("length does not meet the direct I/O alignment"));
    }
    Ok(())
}

/// A file opened with `O_DIRECT` (no page cache). `!Send`.
///
/// Transfers use [`AlignedBuf`]; buffer address, offset and length must be multiples of
/// [`DirectIoFile::alignment`], checked before submission (`Err(InvalidInput)`, no syscall).
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<ringline_core::disk::DirectIoFile>();
/// ```
#[derive(Debug)]
pub struct DirectIoFile {
    fd: Arc<OwnedFd>,
    alignment: usize,
    _not_send: PhantomData<*const ()>,
}

impl DirectIoFile {
    /// Opens an existing file for reading and writing with `O_DIRECT`.
    ///
    /// # Errors
    /// `Io` with the OS error (`InvalidInput` kind, `EINVAL`, where the filesystem refuses
    /// `O_DIRECT`); `Unsupported` where the platform has no `O_DIRECT`; `NotInRuntime`.
    pub fn open(path: impl AsRef<Path>) -> impl Future<Output = Result<DirectIoFile, Error>> + 'static {
        let path = path.as_ref().to_path_buf();
        let flags = OpenFlags { read: true, write: true, direct: true, ..OpenFlags::default() };
        async move { DirectIoFile::open_with(&path, flags).await }
    }

    /// Creates (or truncates) a file for reading and writing with `O_DIRECT`.
    ///
    /// # Errors
    /// As [`DirectIoFile::open`].
    pub fn create(path: impl AsRef<Path>) -> impl Future<Output = Result<DirectIoFile, Error>> + 'static {
        let path = path.as_ref().to_path_buf();
        let flags = OpenFlags { read: true, write: true, create: true, truncate: true, direct: true };
        async move { DirectIoFile::open_with(&path, flags).await }
    }

    async fn open_with(path: &Path, flags: OpenFlags) -> Result<DirectIoFile, Error> {
        let fd = open_fd(path, flags).await?;
        let reported = run(FileOp::DioAlignment { fd: fd.clone() }).await.result;
        let alignment = match reported {
            Ok(n) if n > 0 => n,
            _ => ALIGN,
        };
        Ok(DirectIoFile { fd, alignment, _not_send: PhantomData })
    }

    /// The granularity of offsets, lengths and buffer addresses: the larger of the kernel's
    /// `STATX_DIOALIGN` memory and offset alignments, or 4096 when it does not report them.
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// Reads up to `buf.len()` bytes at `offset`; a short count means end of file.
    ///
    /// # Errors
    /// `InvalidInput` for a misaligned buffer, offset or length (nothing submitted); `Io`.
    pub fn read_at(
        &self,
        buf: AlignedBuf,
        offset: u64,
    ) -> impl Future<Output = (Result<usize, Error>, AlignedBuf)> + 'static {
        let checked = check_alignment(buf.as_ptr() as usize, offset, buf.len(), self.alignment);
        let fd = self.fd.clone();
        async move {
            if let Err(e) = checked {
                return (Err(e), buf);
            }
            aligned_outcome(run(FileOp::Read { fd, buf: FileBuf::Aligned(buf), offset }).await)
        }
    }

    /// Writes `buf` at `offset`: `Ok(buf.len())` or the short count.
    ///
    /// # Errors
    /// `InvalidInput` for a misaligned buffer, offset or length (nothing submitted); `Io`.
    pub fn write_at(
        &self,
        buf: AlignedBuf,
        offset: u64,
    ) -> impl Future<Output = (Result<usize, Error>, AlignedBuf)> + 'static {
        let checked = check_alignment(buf.as_ptr() as usize, offset, buf.len(), self.alignment);
        let fd = self.fd.clone();
        async move {
            if let Err(e) = checked {
                return (Err(e), buf);
            }
            aligned_outcome(run(FileOp::Write { fd, buf: FileBuf::Aligned(buf), offset }).await)
        }
    }

    /// `fsync`: data and metadata.
    ///
    /// # Errors
    /// `Io` with the OS error.
    pub fn sync_all(&self) -> impl Future<Output = Result<(), Error>> + 'static {
        let op = FileOp::Sync { fd: self.fd.clone(), data_only: false };
        async move { run(op).await.result.map(|_| ()) }
    }

    /// `fdatasync`: data and the metadata needed to read it back.
    ///
    /// # Errors
    /// `Io` with the OS error.
    pub fn sync_data(&self) -> impl Future<Output = Result<(), Error>> + 'static {
        let op = FileOp::Sync { fd: self.fd.clone(), data_only: true };
        async move { run(op).await.result.map(|_| ()) }
    }

    /// The file's size in bytes.
    ///
    /// # Errors
    /// `Io` with the OS error.
    #[allow(clippy::len_without_is_empty)] // an async size query; emptiness is `len() == 0`
    pub fn len(&self) -> impl Future<Output = Result<u64, Error>> + 'static {
        let op = FileOp::Size { fd: self.fd.clone() };
        async move { run(op).await.result.map(|n| n as u64) }
    }

    /// Closes the file (see [`File::close`](super::fs::File::close)).
    ///
    /// # Errors
    /// `Io` with the error of `close(2)`.
    pub fn close(self) -> impl Future<Output = Result<(), Error>> + 'static {
        close_fd(self.fd)
    }
}

/// Splits an outcome with an aligned buffer.
fn aligned_outcome(out: FileOutcome) -> (Result<usize, Error>, AlignedBuf) {
    let buf = match out.buf {
        Some(FileBuf::Aligned(a)) => a,
        _ => AlignedBuf::new(0),
    };
    (out.result, buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_check_names_what_is_misaligned() {
        assert!(check_alignment(8192, 4096, 4096, 4096).is_ok());
        let msg = |r: Result<(), Error>| match r {
            Err(Error::InvalidInput(m)) => m,
            other => panic!("expected InvalidInput, got {other:?}"),
        };
        assert!(msg(check_alignment(8193, 0, 4096, 4096)).contains("address"));
        assert!(msg(check_alignment(8192, 512, 4096, 4096)).contains("offset"));
        assert!(msg(check_alignment(8192, 0, 100, 4096)).contains("length"));
        assert!(msg(check_alignment(8192, 0, 100, 512)).contains("alignment"));
        assert!(check_alignment(512, 512, 512, 512).is_ok());
    }
}
