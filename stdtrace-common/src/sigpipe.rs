//! SIGPIPEs for traced processes.

use crate::TASK_COMM_LEN;

/// A SIGPIPE for a traced process: generated (by a write to a pipe with no reader, or sent by
/// a process), or delivered (about to run a handler, or the default action).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SigpipeRecord {
    /// [`record_kind::SIGPIPE_GENERATED`](crate::record_kind::SIGPIPE_GENERATED) or
    /// [`record_kind::SIGPIPE_DELIVERED`](crate::record_kind::SIGPIPE_DELIVERED).
    pub kind: u32,
    /// The process the signal is for.
    pub tgid: u32,
    /// Its thread.
    pub tid: u32,
    /// The process that generated it (for a broken pipe: the writer itself).
    pub sender_tgid: u32,
    /// The thread that generated it.
    pub sender_tid: u32,
    /// `si_code` as the kernel's tracepoint reports it (`SI_USER` 0, `SI_KERNEL` 0x80,
    /// `SI_TKILL` -6, ...).
    pub code: i32,
    /// For a generated signal, the kernel's result (0 delivered, 1 ignored, 2 already pending).
    pub result: i32,
    /// 1 when SIGPIPE is blocked in the thread's signal mask.
    pub blocked: u32,
    /// 1 when the sender was in a write-family syscall: the signal comes from a broken pipe.
    pub from_write: u32,
    /// For a broken pipe: the fd of the write.
    pub fd: i32,
    /// The disposition: 0 default (terminate), 1 ignore, else the handler's address.
    pub handler: u64,
    /// `bpf_ktime_get_ns()`.
    pub ts_ns: u64,
    /// The sender's command name.
    pub sender_comm: [u8; TASK_COMM_LEN],
}

const _: () = {
    assert!(core::mem::size_of::<SigpipeRecord>() == 72);
};

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, made only of integers and arrays of integers, with no implicit
    // padding (checked by the size assertion above): every bit pattern is valid.
    unsafe impl aya::Pod for super::SigpipeRecord {}
}
