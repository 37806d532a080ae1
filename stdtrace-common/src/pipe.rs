//! Pipes: their state read on demand, and the last reader that went away.

use crate::TASK_COMM_LEN;

/// Values of [`ReaderGone::how`].
pub mod reader_gone {
    /// The last reader exited.
    pub const EXITED: u32 = 1;
    /// The last reader closed its read end.
    pub const CLOSED: u32 = 2;
}

/// The state of a pipe, read by the inspection program from the kernel's `pipe_inode_info`
/// without opening either end of the pipe.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipeState {
    /// 1 when the fields below were read.
    pub valid: u32,
    /// 1 when more slots were in use than the program sums: `queued` is a lower bound.
    pub partial: u32,
    /// Slots a writer may fill (`max_usage`); times the page size is the capacity in bytes.
    pub max_usage: u32,
    /// Slots in use (`head - tail`).
    pub used: u32,
    /// Bytes written and not yet read.
    pub queued: u64,
    /// Open read ends.
    pub readers: u32,
    /// Open write ends.
    pub writers: u32,
}

/// The last reader of a pipe, gone: it exited, or closed its read end.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderGone {
    /// Its process.
    pub tgid: u32,
    /// 1: it exited; 2: it closed the read end.
    pub how: u32,
    /// When (`bpf_ktime_get_ns()`).
    pub ts_ns: u64,
    /// When it exited, if it has (after closing the read end, or by exiting); 0 if not.
    pub exit_ts_ns: u64,
    /// Its command name.
    pub comm: [u8; TASK_COMM_LEN],
}

const _: () = {
    assert!(core::mem::size_of::<ReaderGone>() == 40);
    assert!(core::mem::size_of::<PipeState>() == 32);
};

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, made only of integers and arrays of integers, with no implicit
    // padding (checked by the size assertions above): every bit pattern is valid.
    unsafe impl aya::Pod for super::PipeState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ReaderGone {}
}
