//! The exit of an output syscall (the write family, the send family): filter, tally, and send
//! what userspace needs.
//!
//! Every `syscalls:sys_exit_*` tracepoint record has the same layout:
//!
//! ```text
//! name: sys_exit_write
//! format:
//!     field:unsigned short common_type;        offset:0;  size:2; signed:0;
//!     field:unsigned char common_flags;        offset:2;  size:1; signed:0;
//!     field:unsigned char common_preempt_count; offset:3; size:1; signed:0;
//!     field:int common_pid;                     offset:4;  size:4; signed:1;
//!
//!     field:int __syscall_nr;                   offset:8;  size:4; signed:1;
//!     field:long ret;                           offset:16; size:8; signed:1;
//! ```
//!
//! The syscall's arguments are not in the record; they are read from the task's saved user
//! registers (`struct pt_regs`), which the kernel leaves untouched until the return to user mode.

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::bpf_probe_read_user,
    },
    programs::{RawTracePointContext, TracePointContext},
};
use stdtrace_common::{
    BlockedWrite, FailureKey, G_SNAPSHOT_BYTES, Goroutine, KernelLayout, MSG_NOSIGNAL, PAGE_SIZE,
    REGS_COPY_WORDS, STACK_PAGES, WriteRecord, blocked_state, counter, go_flags, record_kind,
    syscall, write_flags,
};

use crate::{
    blocked, callsite, config, filter, image,
    kernel::{self, read_fd, user_register, user_registers},
    maps::{EVENTS, GO_PROCESSES, SCRATCH, SCRATCH_WRITE_EXIT, SIGPIPE_WRITER, bump, tally},
    parked,
};

const EAGAIN: u64 = 11;
const EPIPE: u64 = 32;

/// Offset of `long ret` in every `sys_exit_*` record.
const RET_OFFSET: usize = 16;

/// How many iovecs of a vectored write are summed into `count`.
const MAX_IOVECS: u64 = 8;

/// How many messages of a `sendmmsg` are summed into `count`.
const MAX_MESSAGES: u64 = 4;

/// `struct user_msghdr`: `msg_iov` and `msg_iovlen` offsets (x86_64 ABI, not a kernel layout).
const MSGHDR_IOV: u64 = 16;
const MSGHDR_IOVLEN: u64 = 24;
/// `sizeof(struct mmsghdr)`: a `user_msghdr` (56 bytes), `unsigned int msg_len`, padding.
const MMSGHDR_SIZE: u64 = 64;

/// The return value in a `sys_exit_*` tracepoint record.
#[inline(always)]
pub fn ret_of(ctx: &TracePointContext) -> i64 {
    // SAFETY: `ret` is a `long` at offset 16 of every sys_exit record (format above), and the
    // verifier allows direct reads of a tracepoint's record.
    unsafe { *(ctx.as_ptr().add(RET_OFFSET) as *const i64) }
}

/// `raw_syscalls:sys_exit` (`TP_PROTO(struct pt_regs *regs, long ret)`), for every syscall of
/// every task: the write family is picked out by the syscall number in the saved registers.
#[inline(always)]
pub fn on_raw_sys_exit(ctx: &RawTracePointContext) {
    let regs: u64 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    let layout = config::layout();
    let Some(nr) = kernel::read::<u64>(regs, layout.pt_regs_orig_ax) else {
        return;
    };
    let Some(syscall) = syscall::from_nr(nr) else {
        return;
    };
    on_write_return(syscall, ret);
}

#[inline(always)]
pub fn on_write_exit(ctx: &TracePointContext, syscall: u32) {
    on_write_return(syscall, ret_of(ctx));
}

/// A write-family syscall of the current task returned `ret`.
#[inline(always)]
fn on_write_return(syscall: u32, ret: i64) {
    // (The record's `common_pid` would spare this helper call, but the verifier refuses reads
    // of a tracepoint record's first 8 bytes.)
    let pid_tgid = bpf_get_current_pid_tgid();
    // Did this write block? An array lookup (inlined by the verifier) and a compare: writes
    // that did not block pay next to nothing for slow and stuck write detection.
    if let Some(slot) = blocked::slot_of(pid_tgid as u32) {
        finish_blocked(slot, syscall, ret, pid_tgid);
    }
    if ret >= 0 {
        // A goroutine parked after EAGAIN that writes again: only while some goroutine may be
        // parked, and then only for processes with parked goroutines, inlined array lookups.
        if parked::any() && parked::any_in((pid_tgid >> 32) as u32) {
            resume_parked(syscall, ret, pid_tgid);
        }
        return;
    }
    report_failure(syscall, ret, pid_tgid);
}

/// The goroutine of the current thread, for a process known to be Go.
#[inline(always)]
fn current_goroutine(layout: &KernelLayout, tgid: u32, regs: u64) -> Goroutine {
    // SAFETY: the value is only read during this call.
    match unsafe { GO_PROCESSES.get(&tgid) } {
        Some(go_layout) => {
            let sp = kernel::read::<u64>(regs, layout.pt_regs_sp).unwrap_or(0);
            kernel::current_goroutine(layout, go_layout, sp)
        }
        None => Goroutine::default(),
    }
}

/// A successful write in a process with parked goroutines: if this goroutine was parked on
/// this fd and reported so, it has resumed.
#[inline(always)]
fn resume_parked(syscall: u32, ret: i64, pid_tgid: u64) {
    let tgid = (pid_tgid >> 32) as u32;
    let layout = config::layout();
    let regs = user_registers();
    let fd = read_fd(&layout, regs);
    let go = current_goroutine(&layout, tgid, regs);
    if go.flags & go_flags::FOUND == 0 {
        return;
    }
    let Some(parked) = parked::take(tgid, fd, go.goid) else {
        return;
    };
    if parked.reported == 0 {
        return;
    }
    // SAFETY: plain helper call.
    let blocked_ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(parked.since_ns);
    let outcome = Outcome {
        kind: record_kind::BLOCKED_WRITE,
        blocked: blocked_state::RESUMED_PARKED,
        blocked_ns,
    };
    if !send_record(&layout, outcome, syscall, ret, pid_tgid, regs, fd, go) {
        bump(counter::BLOCKED_DROPPED);
    }
}

#[inline(always)]
fn report_failure(syscall: u32, ret: i64, pid_tgid: u64) {
    let errno = ret.wrapping_neg() as u64;
    if !config::watches_errno(errno) {
        return;
    }
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == config::self_tgid() {
        return;
    }
    if !filter::traced_current(tgid) {
        return;
    }
    bump(counter::MATCHED);

    // From here on, every way out is counted: sent (`reported`), counted at its call site
    // (`REPEATS`), or lost (`RINGBUF_FULL`), so that `reported + dropped + repeats =
    // failed_writes` holds exactly.
    let regs = user_registers();
    // The saved registers, loaded directly through the trusted pointer the kernel gives.
    let have_regs = regs != 0;
    let register = |offset: u32| user_register(regs, offset);
    let fd = if have_regs {
        register(config::layout_field!(pt_regs_di)) as u32 as i32
    } else {
        -1
    };
    let key = FailureKey {
        tgid,
        fd,
        errno: errno as u32,
        syscall,
    };
    let tid = pid_tgid as u32;
    // A goroutine parked after EAGAIN is tracked whatever the call site.
    if errno == EAGAIN {
        let layout = config::layout();
        let go = current_goroutine(&layout, tgid, regs);
        parked::record(tgid, tid, fd, syscall, &go);
    }
    // The write that raised its process's first SIGPIPE on this fd is the one its SIGPIPE
    // story is told with; from a call path its binary already reported, it is counted there
    // like any other (the story goes on without it: a churn of `cmd | head` processes sends
    // the path once, not once per process).
    if errno == EPIPE {
        take_sigpipe_writer(tid);
    }
    // Without its scratch memory (never, in practice) the write is sent, not lost.
    if have_regs && let Some(scratch) = SCRATCH.get_ptr_mut(SCRATCH_WRITE_EXIT) {
        let ip = register(config::layout_field!(pt_regs_ip));
        let sp = register(config::layout_field!(pt_regs_sp));
        // SAFETY: plain helper call.
        let now = unsafe { bpf_ktime_get_ns() };
        if callsite::counted_at_known_site(scratch, ip, sp, &key, now) {
            return;
        }
    }
    tally(&key);
    let layout = config::layout();
    let go = current_goroutine(&layout, tgid, regs);
    if !send_record(
        &layout,
        Outcome {
            kind: record_kind::FAILED_WRITE,
            blocked: blocked_state::NONE,
            blocked_ns: 0,
        },
        syscall,
        ret,
        pid_tgid,
        regs,
        fd,
        go,
    ) {
        bump(counter::RINGBUF_FULL);
    }
}

/// Whether the current thread's write raised its process's first SIGPIPE on its fd (and
/// forgets it).
#[inline(always)]
fn take_sigpipe_writer(tid: u32) -> bool {
    match SIGPIPE_WRITER.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, written only from this CPU.
        Some(writer) if unsafe { *writer } == tid => {
            unsafe { *writer = 0 };
            true
        }
        _ => false,
    }
}

/// The write of the thread owning `slot` returned after blocking: report it if it was slow,
/// or if it had been reported stuck.
#[inline(always)]
fn finish_blocked(slot: *mut BlockedWrite, syscall: u32, ret: i64, pid_tgid: u64) {
    // SAFETY: `slot` is this thread's entry in the BLOCKED array; only this thread fills or
    // clears it while it is set (userspace only writes `reported_seq`).
    let (since, reported) = unsafe {
        let since = (*slot).since_ns;
        let reported = (*slot).reported_seq == (*slot).seq;
        (*slot).tid = 0;
        (since, reported)
    };
    // SAFETY: plain helper call.
    let blocked_ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(since);
    if blocked_ns < config::slow_ns() && !reported {
        return;
    }
    let layout = config::layout();
    let regs = user_registers();
    let fd = read_fd(&layout, regs);
    let outcome = Outcome {
        kind: record_kind::BLOCKED_WRITE,
        blocked: if reported {
            blocked_state::RESUMED
        } else {
            blocked_state::SLOW
        },
        blocked_ns,
    };
    let go = current_goroutine(&layout, (pid_tgid >> 32) as u32, regs);
    if !send_record(&layout, outcome, syscall, ret, pid_tgid, regs, fd, go) {
        bump(counter::BLOCKED_DROPPED);
    }
}

/// What kind of record to send.
struct Outcome {
    kind: u32,
    blocked: u32,
    blocked_ns: u64,
}

/// Sends a record with everything userspace needs; false if the ring buffer was full.
#[inline(always)]
fn send_record(
    layout: &KernelLayout,
    outcome: Outcome,
    syscall: u32,
    ret: i64,
    pid_tgid: u64,
    regs: u64,
    fd: i32,
    go: Goroutine,
) -> bool {
    let tgid = (pid_tgid >> 32) as u32;
    let Some(mut entry) = EVENTS.reserve::<WriteRecord>(0) else {
        return false;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a ring-buffer reservation of exactly `size_of::<WriteRecord>()`
    // bytes that this program owns until it submits it; every field is written before then.
    unsafe {
        (*event).kind = outcome.kind;
        (*event).syscall = syscall;
        (*event).ts_ns = bpf_ktime_get_ns();
        (*event).tgid = tgid;
        (*event).tid = pid_tgid as u32;
        (*event).comm = bpf_get_current_comm().unwrap_or_default();
        (*event).fd = fd as i64;
        (*event).ret = ret;
        (*event).flags = 0;
        (*event).count = 0;
        (*event).stack_len = 0;
        (*event).stack_base = 0;
        (*event).blocked = outcome.blocked;
        (*event).blocked_ns = outcome.blocked_ns;
        (*event).file = Default::default();
        (*event).image = if outcome.kind == record_kind::FAILED_WRITE {
            image::current()
        } else {
            Default::default()
        };
        fill_registers_and_stack(layout, regs, syscall, event);
        let task = kernel::current_task();
        (*event).go = go;
        if go.flags & go_flags::GO_PROCESS == 0 && (*event).flags & write_flags::REGS_VALID != 0 {
            snapshot_running_g(layout, event);
        }
        match kernel::open_file(layout, task, fd) {
            Some((file, pipe_ends)) => {
                (*event).file = file;
                (*event).flags |= write_flags::FILE_VALID;
                if pipe_ends {
                    (*event).flags |= write_flags::PIPE_ENDS_VALID;
                }
            }
            None => bump(counter::FILE_UNREADABLE),
        }
    }
    entry.submit(0);
    true
}

/// A process not (yet) known to be Go may be one that wrote before userspace read its binary
/// (a pipeline stage killed by SIGPIPE within a millisecond of its exec). Go code (register
/// ABI, Go 1.17+ on x86_64) keeps the running `g` in r14, and every `runtime.g` starts with its
/// stack bounds: if r14 points at a struct whose stack holds the stack pointer, it is the
/// running goroutine, and the start of it is copied for userspace to read its id from, with
/// the offsets of the binary, once it knows them.
///
/// # Safety
/// `event` must point at a writable `WriteRecord` whose registers are valid.
#[inline(always)]
unsafe fn snapshot_running_g(layout: &KernelLayout, event: *mut WriteRecord) {
    // SAFETY: `event` is valid (caller's contract).
    let (g, sp) = unsafe {
        (
            saved_register(event, layout.pt_regs_r14),
            saved_register(event, layout.pt_regs_sp),
        )
    };
    if g == 0 || g & 7 != 0 {
        return;
    }
    let (Some(lo), Some(hi)) = (
        kernel::read_user::<u64>(g, 0),
        kernel::read_user::<u64>(g, 8),
    ) else {
        return;
    };
    if !(lo <= sp && sp < hi) || hi - lo > MAX_GOROUTINE_STACK {
        return;
    }
    // SAFETY: the destination is the event's snapshot array, `G_SNAPSHOT_BYTES` long;
    // bpf_probe_read_user faults safely on a bad user address.
    unsafe {
        let copied = bpf_probe_read_user(
            (*event).g_snapshot.as_mut_ptr().cast(),
            G_SNAPSHOT_BYTES as u32,
            g as *const _,
        );
        if copied != 0 {
            return;
        }
        (*event).go.g = g;
        (*event).go.goroutine = g;
        (*event).go.stack_lo = lo;
        (*event).go.stack_hi = hi;
        (*event).go.flags |= go_flags::STACK_OWNED;
        (*event).flags |= write_flags::G_SNAPSHOT;
    }
}

/// Go's largest goroutine stack (1 GB on 64-bit): bounds further apart are not a `g`'s.
const MAX_GOROUTINE_STACK: u64 = 1 << 30;

/// Copies the saved user registers, the requested byte count and the top of the user stack.
///
/// # Safety
/// `event` must point at a writable `WriteRecord`.
#[inline(always)]
unsafe fn fill_registers_and_stack(
    layout: &KernelLayout,
    regs: u64,
    syscall: u32,
    event: *mut WriteRecord,
) {
    // SAFETY: the destination is the event's `regs` array (caller's contract).
    let size = unsafe { kernel::copy_registers(layout, regs, &raw mut (*event).regs) };
    unsafe { (*event).regs_len = size };
    if size == 0 {
        bump(counter::REGS_UNREADABLE);
        return;
    }
    unsafe {
        (*event).flags |= write_flags::REGS_VALID;
    }
    // SAFETY: `event` is valid for the whole function (caller's contract).
    let reg = move |offset: u32| unsafe { saved_register(event, offset) };

    let count_arg = reg(layout.pt_regs_dx);
    let (count, flags) = match syscall {
        syscall::WRITE | syscall::PWRITE64 | syscall::SENDTO => (count_arg, 0),
        syscall::SENDMSG => sum_message(reg(layout.pt_regs_si)),
        // `unsigned int vlen`: only the low half of the register is the kernel's.
        syscall::SENDMMSG => sum_messages(reg(layout.pt_regs_si), count_arg & 0xffff_ffff),
        _ => sum_iovecs(reg(layout.pt_regs_si), count_arg),
    };
    // The send family's flags: `sendmsg(fd, msg, flags)` has them third, `sendto` and
    // `sendmmsg` fourth.
    let send_flags = match syscall {
        syscall::SENDMSG => count_arg,
        syscall::SENDTO | syscall::SENDMMSG => reg(layout.pt_regs_r10),
        _ => 0,
    };
    let nosignal = if send_flags & MSG_NOSIGNAL != 0 {
        write_flags::NOSIGNAL
    } else {
        0
    };
    unsafe { (*event).flags |= flags | nosignal };
    unsafe { (*event).count = count };

    let base = reg(layout.pt_regs_sp) & !(PAGE_SIZE as u64 - 1);
    unsafe { (*event).stack_base = base };
    let mut len = 0u32;
    for page in 0..STACK_PAGES {
        // SAFETY: the destination is page `page` of the event's stack copy.
        let failed = unsafe {
            bpf_probe_read_user(
                (*event).stack.as_mut_ptr().add(page * PAGE_SIZE).cast(),
                PAGE_SIZE as u32,
                (base + (page * PAGE_SIZE) as u64) as *const _,
            )
        } != 0;
        if failed {
            // The first page that is not mapped (or not present) ends the copy.
            break;
        }
        len += PAGE_SIZE as u32;
    }
    if len == 0 {
        bump(counter::STACK_UNREADABLE);
    }
    unsafe { (*event).stack_len = len };
}

/// The saved register at `offset` in the event's copy of `struct pt_regs`.
///
/// # Safety
/// `event` must point at a readable `WriteRecord`.
#[inline(always)]
unsafe fn saved_register(event: *const WriteRecord, offset: u32) -> u64 {
    // The index is masked into the array, which the verifier needs to see.
    unsafe { (*event).regs[(offset as usize / 8) & (REGS_COPY_WORDS - 1)] }
}

/// Sums `iov_len` over the iovecs of the `struct user_msghdr` at `msg`.
#[inline(always)]
fn sum_message(msg: u64) -> (u64, u32) {
    let (Some(iov), Some(iovlen)) = (
        kernel::read_user::<u64>(msg, MSGHDR_IOV as i64),
        kernel::read_user::<u64>(msg, MSGHDR_IOVLEN as i64),
    ) else {
        return (0, write_flags::COUNT_UNKNOWN);
    };
    sum_iovecs(iov, iovlen)
}

/// Sums the bytes of the first messages of a `sendmmsg` (`vlen` of them at `vec`).
#[inline(always)]
fn sum_messages(vec: u64, vlen: u64) -> (u64, u32) {
    let mut total = 0u64;
    let mut flags = 0;
    for i in 0..MAX_MESSAGES {
        if i >= vlen {
            return (total, flags);
        }
        let (bytes, message_flags) = sum_message(vec + i * MMSGHDR_SIZE);
        if message_flags & write_flags::COUNT_UNKNOWN != 0 {
            return (0, write_flags::COUNT_UNKNOWN);
        }
        total = total.wrapping_add(bytes);
        flags |= message_flags;
    }
    if vlen > MAX_MESSAGES {
        flags |= write_flags::COUNT_PARTIAL;
    }
    (total, flags)
}

/// Sums `iov_len` over the first iovecs of a vectored write.
#[inline(always)]
fn sum_iovecs(iov: u64, iovcnt: u64) -> (u64, u32) {
    let mut total = 0u64;
    for i in 0..MAX_IOVECS {
        if i >= iovcnt {
            return (total, 0);
        }
        // struct iovec { void *iov_base; size_t iov_len; }: the length is the second word.
        let len_addr = iov + i * 16 + 8;
        // SAFETY: bpf_probe_read_user faults safely on a bad user address.
        match unsafe { aya_ebpf::helpers::bpf_probe_read_user(len_addr as *const u64) } {
            Ok(len) => total = total.wrapping_add(len),
            Err(_) => return (0, write_flags::COUNT_UNKNOWN),
        }
    }
    let flags = if iovcnt > MAX_IOVECS {
        write_flags::COUNT_PARTIAL
    } else {
        0
    };
    (total, flags)
}
