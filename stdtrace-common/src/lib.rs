//! Types shared by stdtrace's kernel programs (`stdtrace-ebpf`) and its userspace loader.
//!
//! Everything here is `#[repr(C)]`, `Copy`, made of fixed-size fields with explicit padding, so
//! that the kernel and userspace agree on every byte. Values that come from the kernel are
//! plain integers (never Rust enums or `bool`), so a corrupt or unexpected value can be rejected
//! by userspace instead of being undefined behaviour.
//!
//! One module per concept, each with the size assertions of its types and, behind the `user`
//! feature, their `aya::Pod` impls; everything is re-exported here, so `stdtrace_common::X`
//! names every item whatever module it lives in.
#![no_std]
#![warn(missing_docs)]

pub mod blocked;
pub mod callsite;
pub mod capture;
pub mod config;
pub mod counter;
pub mod goroutine;
pub mod lifecycle;
pub mod parked;
pub mod pipe;
pub mod pty;
pub mod record;
pub mod sigpipe;
pub mod socket;
pub mod write;

pub use blocked::{BLOCKED_SLOTS, BlockedWrite, ThreadState, blocked_state};
pub use callsite::{
    CallSiteKey, FINGERPRINT_ALTERNATIVES, FINGERPRINT_FRAMES, FINGERPRINT_SPAN, Fingerprint,
    FingerprintKey, Fingerprints, FirstReturn, SiteCount, SiteKey,
};
pub use capture::{PAGE_SIZE, REGS_COPY_WORDS, STACK_COPY_BYTES, STACK_PAGES, TASK_COMM_LEN};
pub use config::{KernelLayout, MAX_ERRNO, TracerConfig};
pub use goroutine::{GoLayout, GoMemory, Goroutine, go_flags};
pub use lifecycle::{ProcessExec, ProcessExit};
pub use parked::{PARKED_ANY_SLOT, PARKED_PROCESS_SLOTS, ParkedKey, ParkedWrite};
pub use pipe::{PipeState, ReaderGone, reader_gone};
pub use pty::{PtyState, TtyLayout};
pub use record::record_kind;
pub use sigpipe::SigpipeRecord;
pub use socket::SocketState;
pub use write::{
    FailureKey, G_SNAPSHOT_BYTES, MSG_NOSIGNAL, OpenFile, WriteRecord, syscall, write_flags,
};
