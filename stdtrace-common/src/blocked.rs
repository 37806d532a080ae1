//! Writes that block: the slot of a write blocked right now, and the state of a thread that
//! was already blocked when stdtrace started.

use crate::{Goroutine, REGS_COPY_WORDS, TASK_COMM_LEN};

/// Values of [`WriteRecord::blocked`](crate::WriteRecord::blocked).
pub mod blocked_state {
    /// Not a blocked write.
    pub const NONE: u32 = 0;
    /// It blocked for at least the slow threshold, then returned.
    pub const SLOW: u32 = 1;
    /// It had been reported stuck, and has now returned.
    pub const RESUMED: u32 = 2;
    /// A goroutine parked in Go's netpoller after EAGAIN, reported parked, wrote again on
    /// that fd successfully.
    pub const RESUMED_PARKED: u32 = 3;
}

/// Number of slots for writes blocked right now; a power of two (slot = tid % BLOCKED_SLOTS).
pub const BLOCKED_SLOTS: u32 = 8192;

/// A write that blocked and has not returned yet: written by the scheduler program when the
/// writing thread first sleeps in it, cleared when the syscall returns. Userspace reads these
/// slots (the map is memory-mapped) to report writes stuck for longer than the slow threshold,
/// while they are still stuck.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BlockedWrite {
    /// The blocked thread; 0 for a free slot. Written last when the slot is filled.
    pub tid: u32,
    /// Its process.
    pub tgid: u32,
    /// Increases with every write recorded in the slot, so that userspace's mark below is
    /// never mistaken for one on a later write.
    pub seq: u32,
    /// Set by userspace to `seq` once it has reported this write stuck: its return is then
    /// reported as resumed.
    pub reported_seq: u32,
    /// When the write first blocked (`bpf_ktime_get_ns()`).
    pub since_ns: u64,
    /// Which syscall, one of [`syscall`](crate::syscall).
    pub syscall: u32,
    /// The fd argument.
    pub fd: i32,
    /// The third argument: bytes asked for by `write`, `pwrite64` and `sendto`; the iovec count
    /// of a vectored write, the flags of `sendmsg`, the message count of `sendmmsg` (userspace
    /// sums their bytes from the thread's memory, from the saved registers).
    pub count: u64,
    /// The thread's command name, NUL-padded.
    pub comm: [u8; TASK_COMM_LEN],
    /// Bytes of `regs` that hold the task's `struct pt_regs`.
    pub regs_len: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// The user registers at the syscall (the stack itself is read from `/proc/PID/mem` while
    /// the thread is still blocked: nothing changes it).
    pub regs: [u64; REGS_COPY_WORDS],
    /// The goroutine, for a Go process.
    pub go: Goroutine,
}

/// A thread's state, read by the inspection program through a pidfd of the thread: for a
/// writer that was already blocked when stdtrace started.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ThreadState {
    /// 1 when the fields below were read.
    pub valid: u32,
    /// `task_struct.__state`.
    pub state: u32,
    /// Bytes of `regs` that hold the thread's `struct pt_regs`.
    pub regs_len: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// When the thread last got a CPU (sched clock): about when it went to sleep.
    pub last_arrival: u64,
    /// When stdtrace itself last got a CPU (sched clock): about now, on that clock.
    pub own_arrival: u64,
    /// `bpf_ktime_get_ns()` now.
    pub now_ns: u64,
    /// The thread pointer (FS base).
    pub fsbase: u64,
    /// The thread's saved user registers.
    pub regs: [u64; REGS_COPY_WORDS],
}

const _: () = {
    assert!(core::mem::size_of::<BlockedWrite>() == 64 + REGS_COPY_WORDS * 8 + 72);
    assert!(core::mem::size_of::<ThreadState>() == 48 + REGS_COPY_WORDS * 8);
};

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, made only of integers and arrays of integers, with no implicit
    // padding (checked by the size assertions above): every bit pattern is valid.
    unsafe impl aya::Pod for super::BlockedWrite {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ThreadState {}
}
