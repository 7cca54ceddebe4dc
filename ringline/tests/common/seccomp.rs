//! A seccomp filter that makes io_uring look forbidden to this process, as a container profile that
//! denies it does: `io_uring_setup`, `io_uring_enter` and `io_uring_register` fail with `EPERM`,
//! every other system call is allowed. Installed with `SECCOMP_FILTER_FLAG_TSYNC`, so every thread
//! of the process (the test harness already started some) and every thread started later has it.
//!
//! The filter cannot be removed again: install it only in a process started for that purpose.
#![allow(dead_code, unreachable_pub)]

use std::io;

/// `struct io_uring_params` is 120 bytes; a zeroed one asks for no setup flags.
const IO_URING_PARAMS_WORDS: usize = 120 / 4;

/// Installs the io_uring-denying filter on every thread of this process.
///
/// # Errors
/// Why the filter could not be installed (`EPERM`, `EINVAL`, `ENOSYS` under some sandboxes, or an
/// architecture this filter is not written for); the caller reports a skip, not a failure.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub fn deny_io_uring() -> Result<(), String> {
    let program = x86_64::program();
    let fprog = libc::sock_fprog {
        len: u16::try_from(program.len()).expect("a short program"),
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes only integer arguments and touches no memory of ours; it
    // is what lets an unprivileged process install a filter (root would not need it).
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0 as libc::c_ulong, 0, 0) };
    if rc != 0 {
        return Err(format!("prctl(PR_SET_NO_NEW_PRIVS): {}", io::Error::last_os_error()));
    }
    // SAFETY: `fprog` and the `program` array it points to are alive and unchanged for the whole
    // call (the kernel copies the program before returning and never reads it again); `len` is
    // the array's length. The filter only makes three syscalls fail, which breaks no memory
    // invariant of this process: every caller of io_uring sees an ordinary `EPERM`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &raw const fprog,
        )
    };
    match rc {
        0 => Ok(()),
        -1 => Err(format!("seccomp(SECCOMP_SET_MODE_FILTER, TSYNC): {}", io::Error::last_os_error())),
        tid => Err(format!("seccomp TSYNC: thread {tid} could not take the filter")),
    }
}

/// Installs the io_uring-denying filter: not written for this architecture.
///
/// # Errors
/// Always, naming the architecture.
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
pub fn deny_io_uring() -> Result<(), String> {
    Err(format!(
        "the seccomp filter is only written for x86_64 Linux, not {}/{}",
        std::env::consts::OS,
        std::env::consts::ARCH
    ))
}

/// Calls `io_uring_setup(2)` directly with one entry and no flags, closing the ring it gets:
/// `Ok` if the kernel (and any seccomp filter) let this process create a ring.
///
/// # Errors
/// The errno of `io_uring_setup`.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub fn raw_io_uring_setup() -> io::Result<()> {
    let mut params = [0u32; IO_URING_PARAMS_WORDS];
    // SAFETY: `params` is a zeroed, writable, 4-byte-aligned buffer of exactly
    // `size_of::<struct io_uring_params>()` bytes that outlives the call; the kernel reads the
    // (zero) flags from it and writes the ring offsets into it, nothing else.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1 as libc::c_ulong, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd).expect("a file descriptor fits a c_int");
    // SAFETY: `fd` was just returned by io_uring_setup, nothing else knows it, and it is closed
    // exactly once, here (nothing was mapped from it).
    unsafe { libc::close(fd) };
    Ok(())
}

/// Calls `io_uring_setup(2)` directly: not written for this architecture.
///
/// # Errors
/// Always `Unsupported`.
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
pub fn raw_io_uring_setup() -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod x86_64 {
    use std::mem::offset_of;

    /// `AUDIT_ARCH_X86_64`: `EM_X86_64` (62) | `__AUDIT_ARCH_64BIT` | `__AUDIT_ARCH_LE`.
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    /// Set in the syscall number by the x32 ABI; cleared so x32 io_uring calls are denied too.
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    /// io_uring_setup, io_uring_enter, io_uring_register (the same numbers in the x32 table).
    const IO_URING_SYSCALLS: [u32; 3] = [425, 426, 427];

    // Classic BPF opcodes (linux/filter.h).
    /// `BPF_LD (0x00) | BPF_W (0x00) | BPF_ABS (0x20)`: load a 32-bit word of `seccomp_data`.
    const BPF_LD_W_ABS: u16 = 0x20;
    /// `BPF_ALU (0x04) | BPF_AND (0x50) | BPF_K (0x00)`: accumulator &= k.
    const BPF_ALU_AND_K: u16 = 0x54;
    /// `BPF_JMP (0x05) | BPF_JEQ (0x10) | BPF_K (0x00)`: jump by `jt` if accumulator == k, else `jf`.
    const BPF_JMP_JEQ_K: u16 = 0x15;
    /// `BPF_RET (0x06) | BPF_K (0x00)`: return k.
    const BPF_RET_K: u16 = 0x06;

    fn stmt(code: u16, k: u32) -> libc::sock_filter {
        libc::sock_filter { code, jt: 0, jf: 0, k }
    }

    fn jump(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
        libc::sock_filter { code: BPF_JMP_JEQ_K, jt, jf, k }
    }

    /// The program: allow everything on a foreign architecture, `EPERM` for the io_uring calls,
    /// allow everything else.
    pub(super) fn program() -> Vec<libc::sock_filter> {
        let arch = offset_of!(libc::seccomp_data, arch) as u32;
        let nr = offset_of!(libc::seccomp_data, nr) as u32;
        let deny = libc::SECCOMP_RET_ERRNO | (libc::EPERM as u32 & libc::SECCOMP_RET_DATA);
        let n = IO_URING_SYSCALLS.len() as u8;
        let mut p = vec![
            stmt(BPF_LD_W_ABS, arch),
            // Not x86_64: skip the syscall checks and the final DENY, straight to ALLOW.
            jump(AUDIT_ARCH_X86_64, 0, 2 + n),
            stmt(BPF_LD_W_ABS, nr),
            stmt(BPF_ALU_AND_K, !X32_SYSCALL_BIT),
        ];
        for (i, &call) in IO_URING_SYSCALLS.iter().enumerate() {
            // Match: jump over the remaining checks and the ALLOW to the DENY.
            let to_deny = n - i as u8;
            p.push(jump(call, to_deny, 0));
        }
        p.push(stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW));
        p.push(stmt(BPF_RET_K, deny));
        p
    }

    #[test]
    fn jumps_land_on_allow_and_deny() {
        let p = program();
        let allow = p.len() - 2;
        let deny = p.len() - 1;
        assert_eq!(p[allow].k, libc::SECCOMP_RET_ALLOW);
        assert_eq!(p[deny].k, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32);
        assert_eq!(1 + 1 + p[1].jf as usize, allow, "a foreign arch goes to ALLOW");
        for (i, ins) in p.iter().enumerate().take(allow).skip(4) {
            assert_eq!(i + 1 + ins.jt as usize, deny, "io_uring check #{i} goes to DENY");
            assert_eq!(ins.jf, 0, "no match falls through to the next check");
        }
    }
}
