//! The few raw system interfaces more than one module needs: a shared memory mapping of a
//! descriptor (the kernel's blocked-write slots, the perf buffers of mapping records) and
//! pidfds (watching a process for its exit, inspecting a blocked thread). Each is written once
//! here, with its safety argument.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    ptr::NonNull,
};

/// A `MAP_SHARED`, read-write mapping of a descriptor, unmapped on drop.
pub struct SharedMapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by this value; what it points at is shared with the kernel,
// which every user reads and writes with volatile or atomic accesses.
unsafe impl Send for SharedMapping {}

impl SharedMapping {
    /// Maps `len` bytes of `fd` from offset 0.
    pub fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<Self> {
        // SAFETY: mapping a descriptor the caller holds open, shared, for `len` bytes; the
        // kernel checks that the descriptor supports it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Self { base, len })
    }

    /// The start of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it maps nothing (never: mmap refuses an empty mapping).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly what mmap returned; nothing refers to it any more.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// A pidfd for process `pid`: readable once it exits. No signal, no ptrace.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    pidfd_with_flags(pid, 0)
}

/// A pidfd for thread `tid` of process `pid` (`PIDFD_THREAD`, Linux 6.9+, for threads other
/// than the leader).
pub fn pidfd_of_thread(pid: u32, tid: u32) -> Option<OwnedFd> {
    const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;
    let flags = if tid == pid { 0 } else { PIDFD_THREAD };
    pidfd_with_flags(tid, flags).ok()
}

fn pidfd_with_flags(pid: u32, flags: libc::c_uint) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
