//! File operations of the `MockDriver`: the same syscalls through `std`, run during `park`
//! (never inline from `submit`). `O_DIRECT` is ignored and the direct I/O alignment reported
//! as unknown (`Ok(0)`); NVMe commands fail with `Unsupported` (the mock reports no NVMe).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;

use crate::disk::{FileBuf, FileOp};

/// What one file operation produced: result, buffer, new descriptor.
pub(crate) type FileDone = (io::Result<usize>, Option<FileBuf>, Option<OwnedFd>);

/// Runs `op` synchronously.
pub(crate) fn run(op: FileOp) -> FileDone {
    let file = |fd: &OwnedFd| fd.try_clone().map(File::from);
    match op {
        FileOp::Open { path, flags } => {
            let opened = OpenOptions::new()
                .read(flags.read)
                .write(flags.write)
                .create(flags.create)
                .truncate(flags.truncate)
                .open(path);
            match opened {
                Ok(f) => (Ok(0), None, Some(OwnedFd::from(f))),
                Err(e) => (Err(e), None, None),
            }
        }
        FileOp::Read { fd, mut buf, offset } => {
            let r = file(&fd).and_then(|f| read_full(&f, buf.as_mut_slice(), offset));
            (r, Some(buf), None)
        }
        FileOp::Write { fd, buf, offset } => {
            let r = file(&fd).and_then(|f| f.write_at(buf.as_slice(), offset));
            (r, Some(buf), None)
        }
        FileOp::Sync { fd, data_only } => {
            let r = file(&fd).and_then(|f| if data_only { f.sync_data() } else { f.sync_all() });
            (r.map(|()| 0), None, None)
        }
        FileOp::Size { fd } => (file(&fd).and_then(|f| f.metadata()).map(|m| m.len() as usize), None, None),
        FileOp::DioAlignment { .. } => (Ok(0), None, None),
        FileOp::Close { fd } => {
            drop(fd);
            (Ok(0), None, None)
        }
    }
}

/// `pread` until the buffer is full or end of file (one `pread` may return less on a regular
/// file only at its end, so this is what the real backends' single call returns too).
fn read_full(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], offset + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
