//! Traced processes' exec and exit.

use crate::TASK_COMM_LEN;

/// A traced process called `execve`: userspace drops what it knew of its old address space.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessExec {
    /// Always [`record_kind::PROCESS_EXEC`](crate::record_kind::PROCESS_EXEC).
    pub kind: u32,
    /// Process id.
    pub tgid: u32,
    /// `bpf_ktime_get_ns()` at the exec.
    pub ts_ns: u64,
    /// The new command name, NUL-padded.
    pub comm: [u8; TASK_COMM_LEN],
    /// The new binary: its device and inode (0 when unreadable).
    pub dev: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// Its inode.
    pub ino: u64,
}

/// A traced process ended (its last thread exited).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessExit {
    /// Always [`record_kind::PROCESS_EXIT`](crate::record_kind::PROCESS_EXIT).
    pub kind: u32,
    /// Process id.
    pub tgid: u32,
    /// `bpf_ktime_get_ns()` at the exit.
    pub ts_ns: u64,
    /// `task_struct.exit_code`: the wait status (`code << 8`, or the killing signal number).
    pub exit_code: u32,
    /// The binary it ran: its device and inode, where the kernel still has its `mm` at this
    /// tracepoint (since Linux 6.16); 0 otherwise.
    pub dev: u32,
    /// Its inode.
    pub ino: u64,
}

const _: () = {
    assert!(core::mem::size_of::<ProcessExec>() == 48);
    assert!(core::mem::size_of::<ProcessExit>() == 32);
};

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, made only of integers, with no implicit padding (checked by the
    // size assertions above): every bit pattern is valid.
    unsafe impl aya::Pod for super::ProcessExit {}
}
