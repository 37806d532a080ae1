//! What a chain of stuck writers adds to a record: a reader that is itself blocked writing
//! (`blocked_write` under the reader), and a pty's buffers and master side. Part of [`super`],
//! in a file of its own so that the record module stays readable in one sitting.

use serde::{Deserialize, Deserializer, Serialize};

use super::{FdTarget, Name, Peer};

/// How deep a chain of readers blocked writing is followed (the first writer's target is
/// depth 1).
pub const MAX_CHAIN_DEPTH: usize = 4;

/// A reader (or holder of the other end) that is itself blocked in a write: what it writes
/// to, how full that is, and who reads it, described as the first writer's target is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainedWrite {
    /// The blocked thread.
    pub tid: u32,
    pub syscall: Name,
    pub fd: i32,
    /// Bytes it asked to write, when they could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// How long it has been blocked at least (it last ran then), in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    pub target: FdTarget,
    /// Why the chain stops here although this target's readers may be blocked too: `depth`
    /// (followed [`MAX_CHAIN_DEPTH`] deep) or `cycle` (a thread or target met before).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cut: Option<Name>,
}

/// A pty's kernel buffers between the slave's writer and a reader of the master, read from
/// the kernel by the inspection program. The target's `queued` is `flip_queued +
/// ldisc_queued`, its `capacity` `2 * flip_limit + ldisc_size` (a flip buffer without per-byte
/// flags, as a pty's are, holds data in its flag half too).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtyBuffers {
    /// Bytes in the flip buffers of the master's port (`tty_buffer`s: `commit - read`).
    pub flip_queued: u64,
    /// The flip buffers' memory limit (`tty_bufhead.mem_limit`): the writer waits when the
    /// buffers allocated reach it.
    pub flip_limit: u64,
    /// Bytes of flip buffers allocated (`tty_bufhead.mem_used`).
    pub flip_allocated: u64,
    /// Bytes in the master's line discipline (n_tty's `read_head - read_tail`); absent if the
    /// master's line discipline is not n_tty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ldisc_queued: Option<u64>,
    /// The line discipline buffer's size (`N_TTY_BUF_SIZE`).
    pub ldisc_size: u64,
    /// `flip_queued` is a lower bound (more buffers than the program walks).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    /// Open files of the master side, as the kernel counts them: more than zero with no
    /// process holding one means the master is held only in flight (a descriptor sent over a
    /// unix socket and not received yet).
    pub master_open: u32,
    /// The master side was closed (`TTY_OTHER_CLOSED` on the slave): writes fail with EIO.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub master_closed: bool,
    /// The slave was hung up (`TTY_HUPPED` or `TTY_IO_ERROR`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hung_up: bool,
}

/// Who holds the master side of a pty: `null` in JSON when no process does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MasterSide(pub Option<Box<Peer>>);

/// Reads a field that may be `null` (a present `null` is `Some(null)`, an absent one `None`).
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}
