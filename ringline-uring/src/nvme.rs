//! NVMe passthrough: the kernel's `struct nvme_uring_cmd`, the `NVME_URING_CMD_IO` command
//! number, and [`NvmeRing`], the small ring with 128-byte entries the commands run on.
//!
//! The worker's main ring keeps 64-byte entries (its sockets need nothing more), so
//! `Config::nvme(true)` builds a second ring with `SQE128 | CQE32`. Its fd is watched by a
//! `PollAdd` on the main ring while commands are in flight, so a completion wakes the worker's
//! one wait; the NVMe ring itself is only ever entered to submit (never to wait).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use ringline_core::driver::{AlignedBuf, DiskKey};

/// NVMe I/O command set opcodes.
pub(crate) const NVME_CMD_FLUSH: u8 = 0x00;
/// NVMe Write.
pub(crate) const NVME_CMD_WRITE: u8 = 0x01;
/// NVMe Read.
pub(crate) const NVME_CMD_READ: u8 = 0x02;

/// `_IOWR(type, nr, size)` of `<asm-generic/ioctl.h>`.
const fn iowr(ty: u8, nr: u8, size: usize) -> u32 {
    (3 << 30) | ((size as u32) << 16) | ((ty as u32) << 8) | nr as u32
}

/// `NVME_URING_CMD_IO`: `_IOWR('N', 0x80, struct nvme_uring_cmd)` (`<linux/nvme_ioctl.h>`).
pub(crate) const NVME_URING_CMD_IO: u32 = iowr(b'N', 0x80, std::mem::size_of::<NvmeUringCmd>());

/// `struct nvme_uring_cmd` of `<linux/nvme_ioctl.h>` (72 bytes, native endianness).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct NvmeUringCmd {
    pub(crate) opcode: u8,
    pub(crate) flags: u8,
    pub(crate) rsvd1: u16,
    pub(crate) nsid: u32,
    pub(crate) cdw2: u32,
    pub(crate) cdw3: u32,
    pub(crate) metadata: u64,
    pub(crate) addr: u64,
    pub(crate) metadata_len: u32,
    pub(crate) data_len: u32,
    pub(crate) cdw10: u32,
    pub(crate) cdw11: u32,
    pub(crate) cdw12: u32,
    pub(crate) cdw13: u32,
    pub(crate) cdw14: u32,
    pub(crate) cdw15: u32,
    pub(crate) timeout_ms: u32,
    pub(crate) rsvd2: u32,
}

impl NvmeUringCmd {
    /// A Read or Write of `blocks` (1 ..= 65 536) blocks at `lba` to or from `addr`/`len`:
    /// the starting LBA in CDW10 (low) and CDW11 (high), the zero-based block count in CDW12.
    pub(crate) fn rw(opcode: u8, nsid: u32, lba: u64, blocks: u32, addr: u64, len: u32) -> NvmeUringCmd {
        NvmeUringCmd {
            opcode,
            nsid,
            addr,
            data_len: len,
            cdw10: lba as u32,
            cdw11: (lba >> 32) as u32,
            cdw12: blocks.saturating_sub(1) & 0xFFFF,
            ..NvmeUringCmd::default()
        }
    }

    /// A Flush of namespace `nsid`.
    pub(crate) fn flush(nsid: u32) -> NvmeUringCmd {
        NvmeUringCmd { opcode: NVME_CMD_FLUSH, nsid, ..NvmeUringCmd::default() }
    }

    /// The command as the 80-byte `cmd` area of a 128-byte SQE (the first 72 bytes used).
    pub(crate) fn to_bytes(self) -> [u8; 80] {
        let mut b = [0u8; 80];
        b[0] = self.opcode;
        b[1] = self.flags;
        b[2..4].copy_from_slice(&self.rsvd1.to_ne_bytes());
        let words32 = [
            (4, self.nsid),
            (8, self.cdw2),
            (12, self.cdw3),
            (32, self.metadata_len),
            (36, self.data_len),
            (40, self.cdw10),
            (44, self.cdw11),
            (48, self.cdw12),
            (52, self.cdw13),
            (56, self.cdw14),
            (60, self.cdw15),
            (64, self.timeout_ms),
            (68, self.rsvd2),
        ];
        for (at, v) in words32 {
            b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        }
        b[16..24].copy_from_slice(&self.metadata.to_ne_bytes());
        b[24..32].copy_from_slice(&self.addr.to_ne_bytes());
        b
    }
}

/// One command in flight: what the kernel may touch until its completion.
pub(crate) struct NvmeInFlight {
    pub(crate) key: DiskKey,
    /// Keeps the device fd open.
    pub(crate) _fd: Arc<OwnedFd>,
    /// The data buffer (none for Flush).
    pub(crate) buf: Option<AlignedBuf>,
}

/// The ring with 128-byte SQEs and 32-byte CQEs that NVMe commands run on.
pub(crate) struct NvmeRing {
    ring: IoUring<squeue::Entry128, cqueue::Entry32>,
    /// Commands in flight by key index.
    pub(crate) inflight: HashMap<u32, NvmeInFlight>,
    /// A `PollAdd` on this ring's fd is armed on the main ring.
    pub(crate) poll_armed: bool,
}

impl NvmeRing {
    /// Builds a small ring with `entries` SQEs.
    pub(crate) fn new(entries: u32) -> io::Result<NvmeRing> {
        let ring = IoUring::<squeue::Entry128, cqueue::Entry32>::builder().build(entries)?;
        Ok(NvmeRing { ring, inflight: HashMap::new(), poll_armed: false })
    }

    /// The ring's fd, for the main ring's `PollAdd`.
    pub(crate) fn fd(&self) -> i32 {
        self.ring.as_raw_fd()
    }

    /// Queues `cmd` for `op` and submits it (never waits). `Err(op)` when the SQ is full.
    pub(crate) fn push(&mut self, cmd: NvmeUringCmd, op: NvmeInFlight, fd: i32) -> Result<(), NvmeInFlight> {
        let entry = opcode::UringCmd80::new(types::Fd(fd), NVME_URING_CMD_IO)
            .cmd(cmd.to_bytes())
            .build()
            .user_data(op.key.to_u64());
        // SAFETY:
        // - `cmd.addr` points into `op.buf`, an `AlignedBuf` whose heap block does not move; `op`
        //   is stored in `inflight` below and dropped only after this entry's CQE is reaped (or
        //   leaked at shutdown when it never comes);
        // - `op._fd` keeps the device descriptor open until then.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            return Err(op);
        }
        self.inflight.insert(op.key.index, op);
        if let Err(e) = self.ring.submit() {
            tracing::debug!("NVMe ring submit: {e}; retried at the next park");
        }
        Ok(())
    }

    /// True when one more entry fits (after submitting once if the SQ was full).
    pub(crate) fn has_room(&mut self) -> bool {
        if self.ring.submission().is_full() {
            let _ = self.ring.submit();
        }
        !self.ring.submission().is_full()
    }

    /// Submits anything left queued.
    pub(crate) fn submit(&mut self) {
        let _ = self.ring.submit();
    }

    /// Moves every available completion into `out` as (key, res).
    pub(crate) fn reap(&mut self, out: &mut Vec<(DiskKey, i32)>) {
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in cq {
            out.push((DiskKey::from_u64(cqe.user_data()), cqe.result()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn struct_layout_matches_the_kernel_abi() {
        // Offsets of `struct nvme_uring_cmd` in <linux/nvme_ioctl.h>.
        assert_eq!(size_of::<NvmeUringCmd>(), 72);
        assert_eq!(offset_of!(NvmeUringCmd, opcode), 0);
        assert_eq!(offset_of!(NvmeUringCmd, flags), 1);
        assert_eq!(offset_of!(NvmeUringCmd, rsvd1), 2);
        assert_eq!(offset_of!(NvmeUringCmd, nsid), 4);
        assert_eq!(offset_of!(NvmeUringCmd, cdw2), 8);
        assert_eq!(offset_of!(NvmeUringCmd, cdw3), 12);
        assert_eq!(offset_of!(NvmeUringCmd, metadata), 16);
        assert_eq!(offset_of!(NvmeUringCmd, addr), 24);
        assert_eq!(offset_of!(NvmeUringCmd, metadata_len), 32);
        assert_eq!(offset_of!(NvmeUringCmd, data_len), 36);
        assert_eq!(offset_of!(NvmeUringCmd, cdw10), 40);
        assert_eq!(offset_of!(NvmeUringCmd, cdw11), 44);
        assert_eq!(offset_of!(NvmeUringCmd, cdw12), 48);
        assert_eq!(offset_of!(NvmeUringCmd, cdw13), 52);
        assert_eq!(offset_of!(NvmeUringCmd, cdw14), 56);
        assert_eq!(offset_of!(NvmeUringCmd, cdw15), 60);
        assert_eq!(offset_of!(NvmeUringCmd, timeout_ms), 64);
        assert_eq!(offset_of!(NvmeUringCmd, rsvd2), 68);
    }

    #[test]
    fn command_number_is_the_kernels() {
        // _IOWR('N', 0x80, struct nvme_uring_cmd) as the kernel computes it.
        assert_eq!(NVME_URING_CMD_IO, 0xC048_4E80);
    }

    #[test]
    fn read_encodes_lba_and_a_zero_based_block_count() {
        let lba = 0x1_2345_6789;
        let c = NvmeUringCmd::rw(NVME_CMD_READ, 1, lba, 8, 0xDEAD_B000, 4096);
        assert_eq!((c.opcode, c.nsid), (0x02, 1));
        assert_eq!((c.cdw10, c.cdw11, c.cdw12), (0x2345_6789, 0x1, 7));
        assert_eq!((c.addr, c.data_len), (0xDEAD_B000, 4096));
        assert_eq!((c.cdw13, c.cdw14, c.cdw15, c.metadata, c.metadata_len), (0, 0, 0, 0, 0));
        let w = NvmeUringCmd::rw(NVME_CMD_WRITE, 3, 0, 65_536, 0x1000, 1 << 25);
        assert_eq!((w.opcode, w.cdw12), (0x01, 0xFFFF));
        let f = NvmeUringCmd::flush(9);
        assert_eq!((f.opcode, f.nsid, f.addr, f.data_len, f.cdw12), (0x00, 9, 0, 0, 0));
    }

    #[test]
    fn bytes_put_every_field_at_its_abi_offset() {
        let c = NvmeUringCmd {
            opcode: 0x02,
            flags: 0x11,
            rsvd1: 0x2233,
            nsid: 0x4455_6677,
            cdw2: 2,
            cdw3: 3,
            metadata: 0x0102_0304_0506_0708,
            addr: 0x1112_1314_1516_1718,
            metadata_len: 32,
            data_len: 36,
            cdw10: 10,
            cdw11: 11,
            cdw12: 12,
            cdw13: 13,
            cdw14: 14,
            cdw15: 15,
            timeout_ms: 64,
            rsvd2: 68,
        };
        let b = c.to_bytes();
        let u32_at = |at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_ne_bytes(b[at..at + 8].try_into().unwrap());
        assert_eq!((b[0], b[1]), (0x02, 0x11));
        assert_eq!(u16::from_ne_bytes([b[2], b[3]]), 0x2233);
        assert_eq!(u32_at(4), 0x4455_6677);
        assert_eq!((u32_at(8), u32_at(12)), (2, 3));
        assert_eq!(u64_at(16), 0x0102_0304_0506_0708);
        assert_eq!(u64_at(24), 0x1112_1314_1516_1718);
        assert_eq!((u32_at(32), u32_at(36)), (32, 36));
        for (i, at) in (40..64).step_by(4).enumerate() {
            assert_eq!(u32_at(at), 10 + i as u32, "cdw{}", 10 + i);
        }
        assert_eq!((u32_at(64), u32_at(68)), (64, 68));
        assert!(b[72..].iter().all(|&x| x == 0));
    }
}
