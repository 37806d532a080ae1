//! Writes blocked right now, from the kernel's slots: which are stuck (blocked at least the
//! stuck threshold and not reported yet), as events; and the writes that were blocked before
//! stdtrace started, found in procfs and put in the slots as the scheduler program would have.
//!
//! The slots are behind [`SlotTable`] (`kernel::blocked` maps the real ones), the kernel's view
//! of a thread behind [`Inspector`], so that this logic runs in tests without root.

use stdtrace_common::{BlockedWrite, go_flags, syscall};

use crate::{
    enrich::{Inspector, go::GoTracker},
    events::{
        ByteCount, SavedRegisters, WriteEvent, WriteOutcome, WriteSyscall, decode::saved_registers,
    },
    kernel::btf::RegsLayout,
    process::{
        activity::{self, SyscallState},
        memory, status, syscalls,
    },
};

/// A write blocked right now.
#[derive(Clone, Copy)]
pub struct Blocked {
    /// Which slot, to mark it reported.
    pub slot: usize,
    pub write: BlockedWrite,
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
}

/// The kernel's slots of blocked writes.
pub trait SlotTable {
    /// Every slot holding a blocked write, as of now.
    fn blocked(&self) -> Vec<Blocked>;
    /// Marks a write reported stuck, so that its return is reported as resumed.
    fn mark_reported(&mut self, blocked: &Blocked);
    /// Fills the free slot of `write.tid` (a write blocked before stdtrace started); false if
    /// the slot is taken.
    fn adopt(&mut self, write: BlockedWrite) -> bool;
    /// Frees the slot of `tid` if it still holds that thread's write.
    fn release(&mut self, tid: u32);
}

/// Writes blocked at least `stuck_ns` and not reported yet, as events with their slots: their
/// stacks read now from `/proc/PID/mem` (the thread is blocked: nothing moves it), with the
/// registers saved when they blocked. The caller marks them reported once they are sent.
pub fn newly_stuck(
    slots: &dyn SlotTable,
    now_ns: u64,
    stuck_ns: u64,
    regs_layout: &RegsLayout,
    go: &mut GoTracker,
) -> Vec<(Blocked, WriteEvent)> {
    let all = slots.blocked();
    log::trace!("{} writes blocked right now", all.len());
    all.into_iter()
        .filter(|blocked| !blocked.reported() && blocked.blocked_ns(now_ns) >= stuck_ns)
        .filter_map(|blocked| {
            let mut event = stuck_event(&blocked, now_ns, regs_layout)?;
            // The kernel did not know it was Go when it blocked; it is still blocked, so its
            // goroutine can be read from memory now.
            if event.goroutine.is_none()
                && let Some(program) = go.process(event.pid)
                && let Ok(layout) = &program.kernel
                && let Some(sp) = event.registers.and_then(|registers| registers.sp())
            {
                event.goroutine = Some(crate::enrich::go::read_goroutine(
                    event.pid,
                    layout,
                    blocked.write.go.fsbase,
                    sp,
                ));
            }
            Some((blocked, event))
        })
        .collect()
}

/// The stuck write as an event; `None` if the thread is no longer in a write (it returned
/// meanwhile, or is gone).
fn stuck_event(blocked: &Blocked, now_ns: u64, regs_layout: &RegsLayout) -> Option<WriteEvent> {
    let write = &blocked.write;
    let sp = match activity::syscall_of(write.tgid, write.tid)? {
        SyscallState::In { number, sp, .. } if syscalls::is_output(number) => sp,
        _ => return None,
    };
    let syscall = WriteSyscall::from_raw(write.syscall)?;
    let registers =
        (write.regs_len > 0).then(|| saved_registers(&write.regs, write.regs_len, regs_layout));
    let count = requested_bytes(write.tgid, syscall, write.count, registers.as_ref());
    Some(WriteEvent {
        ts_ns: now_ns,
        pid: write.tgid,
        tid: write.tid,
        comm: status::comm_from_bytes(&write.comm),
        syscall,
        fd: write.fd,
        count,
        outcome: WriteOutcome::Stuck {
            blocked_ns: blocked.blocked_ns(now_ns),
        },
        file: None,
        registers,
        stack: memory::read_stack(write.tgid, sp),
        goroutine: (write.go.flags & go_flags::GO_PROCESS != 0).then_some(write.go),
        running_g: None,
        nosignal: false,
        image: None,
    })
}

/// Bytes a blocked output syscall asked for: its count argument, or for a vectored write and
/// the send family's messages, summed from its iovecs in the thread's memory (it is blocked:
/// they do not change).
fn requested_bytes(
    pid: u32,
    syscall: WriteSyscall,
    count_arg: u64,
    registers: Option<&SavedRegisters>,
) -> ByteCount {
    // rsi and rdx by DWARF register number.
    let arg = |index: usize| registers.and_then(|registers| registers.0[index]);
    let (Some(second), Some(third)) = (arg(4), arg(1)) else {
        return match syscall {
            WriteSyscall::Write | WriteSyscall::Pwrite64 | WriteSyscall::Sendto => {
                ByteCount::Exact(count_arg)
            }
            _ => ByteCount::Unknown,
        };
    };
    let total = match syscall {
        WriteSyscall::Write | WriteSyscall::Pwrite64 | WriteSyscall::Sendto => Some(third),
        WriteSyscall::Writev | WriteSyscall::Pwritev | WriteSyscall::Pwritev2 => {
            iovec_bytes(pid, second, third)
        }
        WriteSyscall::Sendmsg => message_bytes(pid, second),
        WriteSyscall::Sendmmsg => (0..third.min(MAX_MESSAGES))
            .map(|index| message_bytes(pid, second + index * MMSGHDR_SIZE))
            .sum(),
    };
    total.map_or(ByteCount::Unknown, ByteCount::Exact)
}

/// Messages of a blocked `sendmmsg` summed (the rest would not help a report).
const MAX_MESSAGES: u64 = 64;
/// `sizeof(struct mmsghdr)` on x86_64.
const MMSGHDR_SIZE: u64 = 64;

/// The bytes of the `struct user_msghdr` at `msg`: its `msg_iov` (offset 16), `msg_iovlen` (24).
fn message_bytes(pid: u32, msg: u64) -> Option<u64> {
    let header = memory::read(pid, msg + 16, 16)?;
    let word = |at: usize| {
        header
            .get(at..at + 8)?
            .try_into()
            .ok()
            .map(u64::from_ne_bytes)
    };
    iovec_bytes(pid, word(0)?, word(8)?)
}

/// The sum of `iov_len` over `count` iovecs at `iov` (at most `IOV_MAX`).
fn iovec_bytes(pid: u32, iov: u64, count: u64) -> Option<u64> {
    const IOV_MAX: u64 = 1024;
    let bytes = memory::read(pid, iov, (count.min(IOV_MAX) * 16) as usize)?;
    Some(
        bytes
            .chunks_exact(16)
            .filter_map(|iovec| iovec[8..16].try_into().ok().map(u64::from_ne_bytes))
            .sum(),
    )
}

/// Finds the threads of `pid` blocked in a write right now (they blocked before stdtrace
/// attached, so the scheduler program never saw them) and puts them in slots, with their
/// registers, an estimate of when they blocked, and their goroutine. Returns how many.
pub fn adopt_blocked_threads(
    slots: &mut dyn SlotTable,
    pid: u32,
    inspector: &mut dyn Inspector,
    go: &mut GoTracker,
) -> usize {
    let mut adopted = 0;
    for tid in status::threads(pid) {
        let Some(SyscallState::In {
            number, args, sp, ..
        }) = activity::syscall_of(pid, tid)
        else {
            continue;
        };
        if !syscalls::is_output(number) {
            continue;
        }
        let Some(write) = blocked_thread(pid, tid, number, &args, sp, inspector, go) else {
            continue;
        };
        if slots.adopt(write) {
            // It may have returned meanwhile: then its slot must not linger.
            match activity::syscall_of(pid, tid) {
                Some(SyscallState::In { number: now, .. }) if now == number => adopted += 1,
                _ => slots.release(tid),
            }
        }
    }
    adopted
}

/// The kernel's number for a write-family syscall, by its name.
fn write_syscall(name: &str) -> Option<u32> {
    Some(match name {
        "write" => syscall::WRITE,
        "writev" => syscall::WRITEV,
        "pwrite64" => syscall::PWRITE64,
        "pwritev" => syscall::PWRITEV,
        "pwritev2" => syscall::PWRITEV2,
        "sendto" => syscall::SENDTO,
        "sendmsg" => syscall::SENDMSG,
        "sendmmsg" => syscall::SENDMMSG,
        _ => return None,
    })
}

/// A thread blocked in write-family syscall `number`, as a slot would hold it.
fn blocked_thread(
    pid: u32,
    tid: u32,
    number: i64,
    args: &[u64; 6],
    sp: u64,
    inspector: &mut dyn Inspector,
    go: &mut GoTracker,
) -> Option<BlockedWrite> {
    let syscall = write_syscall(syscalls::name(number)?)?;
    let state = inspector.blocked_thread(pid, tid)?;
    let goroutine = match go.process(pid).as_deref().map(|program| &program.kernel) {
        Some(Ok(layout)) => crate::enrich::go::read_goroutine(pid, layout, state.fsbase, sp),
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
        since_ns: state.asleep_since_ns(),
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

#[cfg(test)]
mod tests {
    use std::{
        io::Write as _,
        os::fd::{AsRawFd, FromRawFd, OwnedFd},
        sync::mpsc,
    };

    use super::*;
    use crate::enrich::inspector::{BlockedThread, fake::FakeInspector};

    /// Slots in a vector, as the kernel's array would hold them.
    #[derive(Default)]
    struct FakeSlots(Vec<BlockedWrite>);

    impl SlotTable for FakeSlots {
        fn blocked(&self) -> Vec<Blocked> {
            (self.0.iter().enumerate())
                .map(|(slot, write)| Blocked {
                    slot,
                    write: *write,
                })
                .collect()
        }
        fn mark_reported(&mut self, blocked: &Blocked) {
            self.0[blocked.slot].reported_seq = blocked.write.seq;
        }
        fn adopt(&mut self, write: BlockedWrite) -> bool {
            if self.0.iter().any(|held| held.tid == write.tid) {
                return false;
            }
            self.0.push(BlockedWrite {
                seq: 1,
                reported_seq: 0,
                ..write
            });
            true
        }
        fn release(&mut self, tid: u32) {
            self.0.retain(|write| write.tid != tid);
        }
    }

    #[test]
    fn a_thread_blocked_before_tracing_is_adopted_then_reported_stuck_once() {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two ints we own.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh descriptors owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let fd = write.as_raw_fd();
        let (tid_sender, tid) = mpsc::channel();
        // A writer whose pipe fills: its last write blocks, nobody reads.
        let writer = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tid_sender.send(unsafe { libc::gettid() } as u32).unwrap();
            let mut file = std::fs::File::from(write);
            let chunk = [b'x'; 4096];
            for _ in 0..17 {
                file.write_all(&chunk).unwrap();
            }
        });
        let tid = tid.recv().unwrap();
        let pid = std::process::id();
        // Until the kernel says it sleeps in write(2).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !matches!(activity::syscall_of(pid, tid),
            Some(SyscallState::In { number, .. }) if syscalls::is_output(number))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never blocked"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let mut inspector = FakeInspector {
            thread: Some(BlockedThread {
                regs: [0; stdtrace_common::REGS_COPY_WORDS],
                regs_len: 0,
                fsbase: 0,
                last_arrival: 1_000,
                own_arrival: 3_000,
                now_ns: 10_000,
            }),
            ..FakeInspector::default()
        };
        let mut slots = FakeSlots::default();
        let mut go = GoTracker::new(None);
        assert_eq!(
            adopt_blocked_threads(&mut slots, pid, &mut inspector, &mut go),
            1
        );
        assert!(inspector.asked_thread.contains(&(pid, tid)));
        let adopted = slots.0[0];
        assert_eq!((adopted.tgid, adopted.tid, adopted.fd), (pid, tid, fd));
        assert_eq!((adopted.syscall, adopted.count), (syscall::WRITE, 4096));
        // Asleep since the inspector's clock minus what the scheduler says it slept.
        assert_eq!(adopted.since_ns, 8_000);

        let layout = RegsLayout { offsets: [0; 17] };
        let stuck = newly_stuck(&slots, 20_000, 5_000, &layout, &mut go);
        assert_eq!(stuck.len(), 1);
        let (blocked, event) = &stuck[0];
        assert_eq!((event.pid, event.tid, event.fd), (pid, tid, fd));
        assert_eq!(event.outcome, WriteOutcome::Stuck { blocked_ns: 12_000 });
        assert_eq!(event.count, ByteCount::Exact(4096));
        slots.mark_reported(blocked);
        assert!(
            newly_stuck(&slots, 30_000, 5_000, &layout, &mut go).is_empty(),
            "once"
        );
        // Not stuck long enough yet: not reported.
        let mut fresh = FakeSlots::default();
        fresh.adopt(adopted);
        assert!(newly_stuck(&fresh, 9_000, 5_000, &layout, &mut go).is_empty());

        // Read what it wrote: it finishes.
        let mut reader = std::fs::File::from(read);
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut all).unwrap();
        writer.join().unwrap();
        assert_eq!(all.len(), 17 * 4096);
    }
}
