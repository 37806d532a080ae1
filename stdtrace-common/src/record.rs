//! The ring buffer's records: each starts with its kind.

/// The first field of every record in the ring buffer, telling which struct follows.
pub mod record_kind {
    /// A [`WriteRecord`](crate::WriteRecord) of a write that failed with a watched errno.
    pub const FAILED_WRITE: u32 = 1;
    /// A [`ProcessExec`](crate::ProcessExec).
    pub const PROCESS_EXEC: u32 = 2;
    /// A [`ProcessExit`](crate::ProcessExit).
    pub const PROCESS_EXIT: u32 = 3;
    /// A [`WriteRecord`](crate::WriteRecord) of a write that returned after blocking for at
    /// least the slow threshold (`blocked_ns`), or after being reported stuck.
    pub const BLOCKED_WRITE: u32 = 4;
    /// A [`SigpipeRecord`](crate::SigpipeRecord) of a SIGPIPE generated.
    pub const SIGPIPE_GENERATED: u32 = 5;
    /// A [`SigpipeRecord`](crate::SigpipeRecord) of a SIGPIPE delivered.
    pub const SIGPIPE_DELIVERED: u32 = 6;
}
