//! An output syscall (the write family, and the send family) that failed with a watched errno, or returned after blocking: the
//! record the kernel sends, what its fd pointed at, and the kernel's exact tallies.

use crate::{Goroutine, ImageBases, REGS_COPY_WORDS, STACK_COPY_BYTES, TASK_COMM_LEN};

/// The output syscalls stdtrace traces (the write family and the send family), as carried in
/// [`WriteRecord::syscall`].
pub mod syscall {
    /// `write(fd, buf, count)`
    pub const WRITE: u32 = 0;
    /// `writev(fd, iov, iovcnt)`
    pub const WRITEV: u32 = 1;
    /// `pwrite64(fd, buf, count, offset)`
    pub const PWRITE64: u32 = 2;
    /// `pwritev(fd, iov, iovcnt, offset_lo, offset_hi)`
    pub const PWRITEV: u32 = 3;
    /// `pwritev2(fd, iov, iovcnt, offset_lo, offset_hi, flags)`
    pub const PWRITEV2: u32 = 4;
    /// `sendto(fd, buf, len, flags, dest_addr, addrlen)`
    pub const SENDTO: u32 = 5;
    /// `sendmsg(fd, msg, flags)`
    pub const SENDMSG: u32 = 6;
    /// `sendmmsg(fd, msgvec, vlen, flags)`
    pub const SENDMMSG: u32 = 7;

    /// Whether `syscall` is one of the send family, whose flags may hold `MSG_NOSIGNAL`.
    pub const fn is_send(syscall: u32) -> bool {
        matches!(syscall, SENDTO | SENDMSG | SENDMMSG)
    }

    /// The output syscall with x86_64 syscall number `nr` (`pt_regs.orig_ax`), if it is one.
    #[inline(always)]
    pub const fn from_nr(nr: u64) -> Option<u32> {
        Some(match nr {
            1 => WRITE,
            20 => WRITEV,
            18 => PWRITE64,
            296 => PWRITEV,
            328 => PWRITEV2,
            44 => SENDTO,
            46 => SENDMSG,
            307 => SENDMMSG,
            _ => return None,
        })
    }
}

/// `MSG_NOSIGNAL`: a send-family flag that makes EPIPE not raise SIGPIPE.
pub const MSG_NOSIGNAL: u64 = 0x4000;

/// Bits of [`WriteRecord::flags`].
pub mod write_flags {
    /// `regs` holds the task's saved user registers.
    pub const REGS_VALID: u32 = 1 << 0;
    /// `file` describes what the fd pointed at when the write failed.
    pub const FILE_VALID: u32 = 1 << 1;
    /// A vectored write had more iovecs than the kernel program sums; `count` is a lower bound.
    pub const COUNT_PARTIAL: u32 = 1 << 2;
    /// The iovec array could not be read; `count` is 0.
    pub const COUNT_UNKNOWN: u32 = 1 << 3;
    /// `file.pipe_readers` and `file.pipe_writers` were read from the pipe.
    pub const PIPE_ENDS_VALID: u32 = 1 << 4;
    /// `g_snapshot` holds the first [`G_SNAPSHOT_BYTES`](crate::G_SNAPSHOT_BYTES) bytes of the
    /// `g` in register r14, which owns the thread's stack: a write by Go code in a process
    /// the kernel program was not yet told is Go (`go.g` is that `g`).
    pub const G_SNAPSHOT: u32 = 1 << 5;
    /// A send-family call whose flags held `MSG_NOSIGNAL`: EPIPE raised no SIGPIPE.
    pub const NOSIGNAL: u32 = 1 << 6;
}

/// Bytes of a `runtime.g` copied for a write in a process not yet known to be Go: enough for
/// `goid`, `atomicstatus`, `gopc` and `parentGoid` in every Go release so far (all below 320).
pub const G_SNAPSHOT_BYTES: usize = 512;

/// What a file descriptor pointed at, read from the kernel's `file` and `inode` at event time,
/// so that it is known even if the process has exited before userspace looks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenFile {
    /// `inode.i_ino`: the pipe or socket inode number, or the file's inode.
    pub ino: u64,
    /// `super_block.s_dev` in the kernel's encoding (`major << 20 | minor`).
    pub dev: u32,
    /// `inode.i_rdev` in the kernel's encoding: which device a character device is.
    pub rdev: u32,
    /// `inode.i_mode`: file type and permissions.
    pub mode: u32,
    /// `file.f_flags`: access mode and `O_NONBLOCK`, `O_APPEND`, ...
    pub flags: u32,
    /// For a pipe or FIFO: how many read ends were open (`pipe_inode_info.readers`).
    pub pipe_readers: u32,
    /// For a pipe or FIFO: how many write ends were open (`pipe_inode_info.writers`).
    pub pipe_writers: u32,
}

/// Key of the per-CPU tally of failed writes: exact totals per process, fd, errno and syscall,
/// kept in the kernel so that they are right even when events are dropped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FailureKey {
    /// Process id.
    pub tgid: u32,
    /// The fd written to.
    pub fd: i32,
    /// The errno the write failed with.
    pub errno: u32,
    /// Which syscall, one of [`syscall`].
    pub syscall: u32,
}

/// One write-family syscall that failed with a watched errno, or returned after blocking, with
/// everything userspace needs to name its fd, its peers and its call stack.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WriteRecord {
    /// [`record_kind::FAILED_WRITE`](crate::record_kind::FAILED_WRITE) or
    /// [`record_kind::BLOCKED_WRITE`](crate::record_kind::BLOCKED_WRITE).
    pub kind: u32,
    /// Which syscall, one of [`syscall`].
    pub syscall: u32,
    /// `bpf_ktime_get_ns()` at syscall exit (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Process id.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// The thread's command name, NUL-padded.
    pub comm: [u8; TASK_COMM_LEN],
    /// The fd argument.
    pub fd: i64,
    /// Bytes the caller asked to write (summed over the iovecs for vectored writes and
    /// `sendmsg`, and over the messages for `sendmmsg`).
    pub count: u64,
    /// The syscall's return value: a negative errno, or the bytes written.
    pub ret: i64,
    /// Bits from [`write_flags`].
    pub flags: u32,
    /// Bytes of `stack` that hold user memory.
    pub stack_len: u32,
    /// What the fd pointed at, when `flags` has [`write_flags::FILE_VALID`].
    pub file: OpenFile,
    /// Bytes of `regs` that hold the task's `struct pt_regs`.
    pub regs_len: u32,
    /// For a [`record_kind::BLOCKED_WRITE`](crate::record_kind::BLOCKED_WRITE): one of
    /// [`blocked_state`](crate::blocked_state).
    pub blocked: u32,
    /// For a [`record_kind::BLOCKED_WRITE`](crate::record_kind::BLOCKED_WRITE): from the first time
    /// it blocked to its return.
    pub blocked_ns: u64,
    /// Raw copy of the task's saved user registers (`struct pt_regs`); userspace reads it with
    /// the same BTF offsets the kernel program was given.
    pub regs: [u64; REGS_COPY_WORDS],
    /// The goroutine, for a Go process.
    pub go: Goroutine,
    /// With [`write_flags::G_SNAPSHOT`]: the start of the running `g`, copied at event time.
    pub g_snapshot: [u8; G_SNAPSHOT_BYTES],
    /// The process's binary and code bases, for failed writes: how its call path is keyed.
    pub image: ImageBases,
    /// User address of `stack[0]`: the start of the page holding the stack pointer.
    pub stack_base: u64,
    /// Copy of the user stack from `stack_base` upwards.
    pub stack: [u8; STACK_COPY_BYTES],
}

const _: () = {
    assert!(core::mem::size_of::<OpenFile>() == 32);
    assert!(core::mem::size_of::<FailureKey>() == 16);
    assert!(
        core::mem::size_of::<WriteRecord>()
            == 8 + 8
                + 8
                + 16
                + 8
                + 8
                + 8
                + 8
                + 32
                + 16
                + REGS_COPY_WORDS * 8
                + 72
                + G_SNAPSHOT_BYTES
                + 40
                + 8
                + STACK_COPY_BYTES
    );
};

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, made only of integers and arrays of integers, with no implicit
    // padding (checked by the size assertions above): every bit pattern is valid.
    unsafe impl aya::Pod for super::FailureKey {}
}
