//! Goroutines parked in Go's netpoller after their write got EAGAIN.

/// Slots flagging, per process (tgid modulo the size), that goroutines may be parked after
/// EAGAIN: a successful write looks further only when its process's flag is set.
pub const PARKED_PROCESS_SLOTS: u32 = 4096;

/// The slot of `PARKED_PROCESSES` (after the per-process ones) set while any goroutine of any
/// process may be parked: successful writes check it before anything else.
pub const PARKED_ANY_SLOT: u32 = PARKED_PROCESS_SLOTS;

/// Key of a goroutine parked in Go's netpoller after its write got EAGAIN.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ParkedKey {
    /// Process id.
    pub tgid: u32,
    /// The fd it wrote to.
    pub fd: i32,
    /// The goroutine.
    pub goid: u64,
}

/// A goroutine whose write got EAGAIN, and which the Go runtime then parks until the fd is
/// writable.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParkedWrite {
    /// When its write got EAGAIN (`bpf_ktime_get_ns()`).
    pub since_ns: u64,
    /// Its `g`, to check it is still parked.
    pub g: u64,
    /// The thread that wrote.
    pub tid: u32,
    /// Which syscall, one of [`syscall`](crate::syscall).
    pub syscall: u32,
    /// Set by userspace once it has reported the goroutine parked: its next successful write
    /// on the fd is then reported as resumed.
    pub reported: u32,
    /// Explicit padding.
    pub _pad: u32,
}

const _: () = {
    assert!(core::mem::size_of::<ParkedKey>() == 16);
    assert!(core::mem::size_of::<ParkedWrite>() == 32);
};

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, made only of integers and arrays of integers, with no implicit
    // padding (checked by the size assertions above): every bit pattern is valid.
    unsafe impl aya::Pod for super::ParkedKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ParkedWrite {}
}
