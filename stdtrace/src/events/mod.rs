//! Owned events: what the kernel programs recorded, as userspace values ([`decode`] turns
//! ring-buffer bytes into them). The next stage (`enrich`) adds what procfs and the binaries
//! say.

pub mod decode;

use stdtrace_common::{Goroutine, go_flags, syscall};

pub use self::decode::{DecodeError, decode};
use crate::{
    goruntime::offsets::GOffsets, process::fd::FileIdentity, report::record::BlockedState,
};

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of the kernel programs' timestamps.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The output syscall (write or send family) a record is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WriteSyscall {
    Write,
    Writev,
    Pwrite64,
    Pwritev,
    Pwritev2,
    Sendto,
    Sendmsg,
    Sendmmsg,
}

impl WriteSyscall {
    pub fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            syscall::WRITE => Self::Write,
            syscall::WRITEV => Self::Writev,
            syscall::PWRITE64 => Self::Pwrite64,
            syscall::PWRITEV => Self::Pwritev,
            syscall::PWRITEV2 => Self::Pwritev2,
            syscall::SENDTO => Self::Sendto,
            syscall::SENDMSG => Self::Sendmsg,
            syscall::SENDMMSG => Self::Sendmmsg,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Write => "write",
            Self::Writev => "writev",
            Self::Pwrite64 => "pwrite64",
            Self::Pwritev => "pwritev",
            Self::Pwritev2 => "pwritev2",
            Self::Sendto => "sendto",
            Self::Sendmsg => "sendmsg",
            Self::Sendmmsg => "sendmmsg",
        }
    }
}

/// How much of the requested byte count is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteCount {
    Exact(u64),
    /// A vectored write with more iovecs than the kernel program sums: at least this many.
    AtLeast(u64),
    Unknown,
}

/// The saved user registers, indexed by x86_64 DWARF register number (rax, rdx, rcx, rbx, rsi,
/// rdi, rbp, rsp, r8..r15), then the instruction pointer at index 16.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SavedRegisters(pub [Option<u64>; 17]);

impl SavedRegisters {
    pub fn ip(&self) -> Option<u64> {
        self.0[16]
    }

    pub fn sp(&self) -> Option<u64> {
        self.0[7]
    }
}

/// A copy of the top of a thread's user stack.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StackSnapshot {
    /// User address of `bytes[0]`.
    pub base: u64,
    pub bytes: Vec<u8>,
}

/// How a write went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// It failed with this errno.
    Failed { errno: u32 },
    /// It returned after blocking for `blocked_ns`; `resumed` if it had been reported stuck.
    Blocked { blocked_ns: u64, resumed: bool },
    /// It has been blocked for `blocked_ns` and has not returned.
    Stuck { blocked_ns: u64 },
    /// Its write got EAGAIN `blocked_ns` ago, and the goroutine has been parked in Go's
    /// netpoller since, waiting for the fd to be writable.
    Parked { blocked_ns: u64 },
}

impl WriteOutcome {
    /// The errno, for a failed write.
    pub fn errno(self) -> Option<u32> {
        match self {
            WriteOutcome::Failed { errno } => Some(errno),
            WriteOutcome::Blocked { .. }
            | WriteOutcome::Stuck { .. }
            | WriteOutcome::Parked { .. } => None,
        }
    }

    /// `slow`, `resumed`, `stuck` or `parked`, for a blocked write.
    pub fn blocked_state(self) -> Option<BlockedState> {
        match self {
            WriteOutcome::Failed { .. } => None,
            WriteOutcome::Blocked { resumed: false, .. } => Some(BlockedState::Slow),
            WriteOutcome::Blocked { resumed: true, .. } => Some(BlockedState::Resumed),
            WriteOutcome::Stuck { .. } => Some(BlockedState::Stuck),
            WriteOutcome::Parked { .. } => Some(BlockedState::Parked),
        }
    }

    /// How long it blocked, for a blocked write.
    pub fn blocked_ns(self) -> Option<u64> {
        match self {
            WriteOutcome::Failed { .. } => None,
            WriteOutcome::Blocked { blocked_ns, .. }
            | WriteOutcome::Stuck { blocked_ns }
            | WriteOutcome::Parked { blocked_ns } => Some(blocked_ns),
        }
    }
}

/// A write that failed with a watched errno, or returned after blocking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteEvent {
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub syscall: WriteSyscall,
    pub fd: i32,
    pub count: ByteCount,
    pub outcome: WriteOutcome,
    /// What the fd pointed at, as the kernel saw it.
    pub file: Option<FileIdentity>,
    pub registers: Option<SavedRegisters>,
    pub stack: StackSnapshot,
    /// For a process the kernel program knew to be Go: its goroutine, as read at event time.
    pub goroutine: Option<Goroutine>,
    /// For a process it did not know yet: the start of the running `g`, if Go code wrote.
    pub running_g: Option<RunningG>,
    /// A send-family call made with `MSG_NOSIGNAL`: EPIPE raised no SIGPIPE.
    pub nosignal: bool,
    /// For a failed write: the process's binary and code bases, which key its call path.
    pub image: Option<stdtrace_common::ImageBases>,
}

/// The start of the `g` that made a write, copied by the kernel program for a process it did
/// not know to be Go yet (see [`write_flags::G_SNAPSHOT`]): read with the binary's offsets
/// once userspace knows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningG {
    /// Its address.
    pub address: u64,
    /// Its stack bounds (it owns the stack the thread was on).
    pub stack_lo: u64,
    pub stack_hi: u64,
    /// Its first bytes.
    pub bytes: Vec<u8>,
}

impl RunningG {
    /// The goroutine, read with `offsets` (those of the process's binary).
    pub fn goroutine(&self, offsets: &GOffsets) -> Option<Goroutine> {
        let word = |offset: u64| {
            let start = usize::try_from(offset).ok()?;
            let bytes = self.bytes.get(start..start.checked_add(8)?)?;
            Some(u64::from_le_bytes(bytes.try_into().ok()?))
        };
        let goid = word(offsets.goid)?;
        let status = word(offsets.atomicstatus)? as u32;
        let gopc = word(offsets.gopc)?;
        let parent_goid = offsets.parent_goid.and_then(word).unwrap_or(0);
        Some(Goroutine {
            flags: go_flags::GO_PROCESS | go_flags::FOUND | go_flags::STACK_OWNED,
            status,
            fsbase: 0,
            g: self.address,
            stack_lo: self.stack_lo,
            stack_hi: self.stack_hi,
            goroutine: self.address,
            goid,
            parent_goid,
            gopc,
        })
    }
}

/// What a process does on SIGPIPE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// The default: terminate.
    Default,
    Ignore,
    /// A handler, at this address.
    Handler(u64),
}

impl Disposition {
    pub fn from_handler(handler: u64) -> Self {
        match handler {
            0 => Disposition::Default,
            1 => Disposition::Ignore,
            address => Disposition::Handler(address),
        }
    }
}

/// A SIGPIPE generated for, or delivered to, a traced process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigpipeEvent {
    /// Delivered (the thread is about to act on it), rather than generated.
    pub delivered: bool,
    pub pid: u32,
    pub tid: u32,
    /// Who generated it: for a broken pipe, the writer itself.
    pub sender_pid: u32,
    pub sender_tid: u32,
    pub sender_comm: String,
    /// `si_code` (`SI_USER` 0, `SI_KERNEL` 0x80, `SI_TKILL` -6, ...).
    pub code: i32,
    /// The kernel's result for a generated signal (0 delivered, 1 ignored, 2 already pending).
    pub result: i32,
    /// Blocked in the thread's signal mask: it stays pending.
    pub blocked: bool,
    /// Raised from inside a write-family syscall of the receiving thread: a broken pipe.
    pub from_write: bool,
    /// For a broken pipe, the fd of the write.
    pub fd: Option<i32>,
    /// The disposition (when generated), or the handler about to run (when delivered).
    pub disposition: Disposition,
    pub ts_ns: u64,
}

/// A binary: the device (the kernel's `dev_t` encoding) and inode of an executable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BinaryId {
    pub dev: u32,
    pub ino: u64,
}

impl BinaryId {
    /// The binary the kernel read, unless it could not (inode 0).
    pub fn known(dev: u32, ino: u64) -> Option<Self> {
        (ino != 0).then_some(Self { dev, ino })
    }

    /// The binary of a `stat` (userspace's `dev_t`), in the kernel's encoding
    /// (`major << 20 | minor`).
    pub fn from_stat(dev: u64, ino: u64) -> Option<Self> {
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        Self::known((major << 20) | (minor & 0xf_ffff), ino)
    }
}

/// One record from the ring buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Write(Box<WriteEvent>),
    Exec {
        pid: u32,
        ts_ns: u64,
        comm: String,
        binary: Option<BinaryId>,
    },
    /// The process ended; `exit_code` is its wait status (`code << 8`, or the signal).
    Exit {
        pid: u32,
        ts_ns: u64,
        exit_code: u32,
        /// Its binary, where the kernel still had it at the exit (Linux 6.16 on).
        binary: Option<BinaryId>,
    },
    Sigpipe(SigpipeEvent),
}

/// Events for tests.
#[cfg(test)]
pub mod samples {
    use super::*;

    /// A failed write of one byte by this test process, with no registers or stack.
    pub fn failed_write(fd: i32, errno: u32) -> WriteEvent {
        let pid = std::process::id();
        WriteEvent {
            ts_ns: 1_000,
            pid,
            tid: pid,
            comm: "writer".into(),
            syscall: WriteSyscall::Write,
            fd,
            count: ByteCount::Exact(1),
            outcome: WriteOutcome::Failed { errno },
            file: None,
            registers: None,
            stack: StackSnapshot::default(),
            goroutine: None,
            running_g: None,
            nosignal: false,
            image: None,
        }
    }
}
