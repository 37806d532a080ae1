//! Writes blocked right now, read from the kernel's `BLOCKED` slots.
//!
//! The map is an array created memory-mappable: it is mapped here once, and each tick reads
//! it without a system call. The kernel fills a slot when a traced thread first sleeps in a
//! write and frees it when the write returns; userspace only marks a slot it has reported
//! stuck (`reported_seq = seq`), so that the kernel reports the write's return as resumed.

use std::{
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    ptr::NonNull,
    sync::atomic::{Ordering, fence},
};

use aya::maps::{Map, MapData};
use stdtrace_common::{BLOCKED_SLOTS, BlockedWrite, go_flags};

use crate::{
    btf::RegsLayout,
    events::{ByteCount, WriteEvent, WriteOutcome, WriteSyscall, saved_registers},
    gotrack::{self, GoTracker},
    loader::Tracer,
    process::{
        activity::{self, SyscallState},
        memory, status, syscalls,
    },
};

/// Errors mapping the slots.
#[derive(Debug, thiserror::Error)]
pub enum BlockedError {
    #[error("the BLOCKED map is not an array")]
    NotAnArray,
    #[error("mapping the BLOCKED map: {0}")]
    Mmap(#[source] std::io::Error),
}

/// A write blocked right now.
#[derive(Clone, Copy)]
pub struct Blocked {
    /// Which slot, to mark it reported.
    pub slot: usize,
    pub write: BlockedWrite,
}

/// The kernel's slots of blocked writes, mapped into this process.
pub struct BlockedSlots {
    /// Keeps the map (and so the mapping's backing) alive.
    _map: MapData,
    base: NonNull<BlockedWrite>,
    len: usize,
}

// SAFETY: the mapping is only accessed through `&self`/`&mut self` of this owner.
unsafe impl Send for BlockedSlots {}

impl BlockedSlots {
    /// Maps the `BLOCKED` array.
    pub fn map(map: Map) -> Result<Self, BlockedError> {
        let Map::Array(data) = map else {
            return Err(BlockedError::NotAnArray);
        };
        let len = BLOCKED_SLOTS as usize * size_of::<BlockedWrite>();
        // SAFETY: mapping a BPF_F_MMAPABLE array by its own descriptor, shared, for as many
        // bytes as its values take (the kernel rounds the mapping up to pages).
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                data.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(BlockedError::Mmap(std::io::Error::last_os_error()));
        }
        let base = NonNull::new(base.cast::<BlockedWrite>())
            .ok_or_else(|| BlockedError::Mmap(std::io::Error::other("mmap returned NULL")))?;
        Ok(Self {
            _map: data,
            base,
            len,
        })
    }

    /// Every slot holding a blocked write, as of now.
    pub fn blocked(&self) -> Vec<Blocked> {
        let mut found = Vec::new();
        for slot in 0..BLOCKED_SLOTS as usize {
            // SAFETY: `slot` is within the mapping; the kernel may change the slot meanwhile,
            // so the copy is checked: the owner read before and after the copy must agree.
            let (before, write) = unsafe {
                let pointer = self.base.as_ptr().add(slot);
                let before = std::ptr::read_volatile(&raw const (*pointer).tid);
                fence(Ordering::Acquire);
                (before, std::ptr::read_volatile(pointer))
            };
            fence(Ordering::Acquire);
            // SAFETY: as above.
            let after =
                unsafe { std::ptr::read_volatile(&raw const (*self.base.as_ptr().add(slot)).tid) };
            if before != 0 && before == after && write.tid == before {
                found.push(Blocked { slot, write });
            }
        }
        found
    }

    /// Marks a write reported stuck, so that its return is reported as resumed.
    pub fn mark_reported(&mut self, blocked: &Blocked) {
        if blocked.slot >= BLOCKED_SLOTS as usize {
            return;
        }
        // SAFETY: the slot is within the mapping; writing one u32 the kernel only reads.
        unsafe {
            let pointer = self.base.as_ptr().add(blocked.slot);
            std::ptr::write_volatile(&raw mut (*pointer).reported_seq, blocked.write.seq);
        }
    }
}

impl Blocked {
    /// How long it has been blocked, as of `now_ns` (CLOCK_MONOTONIC).
    pub fn blocked_ns(&self, now_ns: u64) -> u64 {
        now_ns.saturating_sub(self.write.since_ns)
    }

    /// Whether it was already reported stuck.
    pub fn reported(&self) -> bool {
        self.write.reported_seq == self.write.seq
    }

    /// The stuck write as an event: its stack read now from `/proc/PID/mem` (the thread is
    /// blocked: nothing moves it), with the registers saved when it blocked. `None` if the
    /// thread is no longer in a write (it returned meanwhile, or is gone).
    pub fn stuck_event(&self, now_ns: u64, regs_layout: &RegsLayout) -> Option<WriteEvent> {
        let write = &self.write;
        let sp = match activity::syscall_of(write.tgid, write.tid)? {
            SyscallState::In { number, sp, .. } if syscalls::is_write(number) => sp,
            _ => return None,
        };
        let syscall = WriteSyscall::from_raw(write.syscall)?;
        let count = match syscall {
            WriteSyscall::Write | WriteSyscall::Pwrite64 => ByteCount::Exact(write.count),
            // The count argument of a vectored write is the number of iovecs.
            _ => ByteCount::Unknown,
        };
        let registers =
            (write.regs_len > 0).then(|| saved_registers(&write.regs, write.regs_len, regs_layout));
        Some(WriteEvent {
            ts_ns: now_ns,
            pid: write.tgid,
            tid: write.tid,
            comm: status::comm_from_bytes(&write.comm),
            syscall,
            fd: write.fd,
            count,
            outcome: WriteOutcome::Stuck {
                blocked_ns: self.blocked_ns(now_ns),
            },
            file: None,
            registers,
            stack: memory::read_stack(write.tgid, sp),
            goroutine: (write.go.flags & go_flags::GO_PROCESS != 0).then_some(write.go),
            running_g: None,
        })
    }
}

impl BlockedSlots {
    /// Fills a free slot with a write that was blocked before stdtrace started, as the
    /// scheduler program would have; false if its slot is taken.
    fn adopt(&mut self, write: BlockedWrite) -> bool {
        let slot = (write.tid & (BLOCKED_SLOTS - 1)) as usize;
        // SAFETY: `slot` is within the mapping. The kernel only fills a free slot from the
        // thread that owns it, and this thread is asleep in its write: nobody else writes it.
        unsafe {
            let pointer = self.base.as_ptr().add(slot);
            if std::ptr::read_volatile(&raw const (*pointer).tid) != 0 {
                return false;
            }
            let seq = std::ptr::read_volatile(&raw const (*pointer).seq).wrapping_add(1);
            std::ptr::write_volatile(
                pointer,
                BlockedWrite {
                    tid: 0,
                    seq,
                    reported_seq: seq.wrapping_sub(1),
                    ..write
                },
            );
            fence(Ordering::Release);
            std::ptr::write_volatile(&raw mut (*pointer).tid, write.tid);
        }
        true
    }

    /// Frees the slot of `tid` if it still holds that thread's write.
    fn release(&mut self, tid: u32) {
        let slot = (tid & (BLOCKED_SLOTS - 1)) as usize;
        // SAFETY: as in `adopt`.
        unsafe {
            let pointer = self.base.as_ptr().add(slot);
            if std::ptr::read_volatile(&raw const (*pointer).tid) == tid {
                std::ptr::write_volatile(&raw mut (*pointer).tid, 0);
            }
        }
    }

    /// Finds the threads of `pid` blocked in a write right now (they blocked before stdtrace
    /// attached, so the scheduler program never saw them) and puts them in slots, with their
    /// registers, an estimate of when they blocked, and their goroutine. Returns how many.
    pub fn adopt_blocked_threads(
        &mut self,
        pid: u32,
        tracer: &mut Tracer,
        go: &mut GoTracker,
    ) -> usize {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return 0;
        };
        let mut adopted = 0;
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u32>().ok())
            else {
                continue;
            };
            let Some(SyscallState::In {
                number, args, sp, ..
            }) = activity::syscall_of(pid, tid)
            else {
                continue;
            };
            if !syscalls::is_write(number) {
                continue;
            }
            let Some(write) = blocked_thread(pid, tid, number, &args, sp, tracer, go) else {
                continue;
            };
            if self.adopt(write) {
                // It may have returned meanwhile: then its slot must not linger.
                match activity::syscall_of(pid, tid) {
                    Some(SyscallState::In { number: now, .. }) if now == number => adopted += 1,
                    _ => self.release(tid),
                }
            }
        }
        adopted
    }
}

/// A thread blocked in write-family syscall `number`, as a slot would hold it.
fn blocked_thread(
    pid: u32,
    tid: u32,
    number: i64,
    args: &[u64; 6],
    sp: u64,
    tracer: &mut Tracer,
    go: &mut GoTracker,
) -> Option<BlockedWrite> {
    let syscall = match syscalls::name(number)? {
        "write" => stdtrace_common::syscall::WRITE,
        "writev" => stdtrace_common::syscall::WRITEV,
        "pwrite64" => stdtrace_common::syscall::PWRITE64,
        "pwritev" => stdtrace_common::syscall::PWRITEV,
        "pwritev2" => stdtrace_common::syscall::PWRITEV2,
        _ => return None,
    };
    let Some(pidfd) = pidfd_of_thread(pid, tid) else {
        log::debug!(
            "no pidfd for thread {tid} of pid {pid}: {}",
            std::io::Error::last_os_error()
        );
        return None;
    };
    let state = match tracer.inspect_thread(&pidfd) {
        Ok(state) if state.valid != 0 => state,
        Ok(_) => {
            log::debug!("thread {tid} of pid {pid} could not be inspected");
            return None;
        }
        Err(err) => {
            log::debug!("inspecting thread {tid} of pid {pid}: {err:#}");
            return None;
        }
    };
    // When it last got a CPU is about when it went to sleep: translated from the scheduler's
    // clock to the monotonic one by stdtrace's own last arrival, which is about now.
    let since_ns = match state.own_arrival.checked_sub(state.last_arrival) {
        Some(asleep) if state.last_arrival != 0 => state.now_ns.saturating_sub(asleep),
        _ => state.now_ns,
    };
    let goroutine = match go.process(pid).as_deref().map(|program| &program.kernel) {
        Some(Ok(layout)) => gotrack::read_goroutine(pid, layout, state.fsbase, sp),
        _ => Default::default(),
    };
    let mut comm = [0u8; 16];
    if let Some(name) = status::comm(tid) {
        let bytes = name.as_bytes();
        let len = bytes.len().min(15);
        comm[..len].copy_from_slice(&bytes[..len]);
    }
    Some(BlockedWrite {
        tid,
        tgid: pid,
        seq: 0,
        reported_seq: 0,
        since_ns,
        syscall,
        fd: args[0] as u32 as i32,
        count: args[2],
        comm,
        regs_len: state.regs_len,
        _pad: 0,
        regs: state.regs,
        go: goroutine,
    })
}

/// A pidfd for thread `tid` of process `pid` (`PIDFD_THREAD`, Linux 6.9+, for threads other
/// than the leader).
fn pidfd_of_thread(pid: u32, tid: u32) -> Option<OwnedFd> {
    const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;
    let flags = if tid == pid { 0 } else { PIDFD_THREAD };
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tid as libc::c_int, flags) };
    // SAFETY: a fresh descriptor owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

impl Drop for BlockedSlots {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped; nothing refers to it any more.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
