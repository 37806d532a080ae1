//! SIGPIPE for traced processes: when it is generated (by a write into a pipe with no reader,
//! in the writer's own context; or sent by a process), with the disposition and signal mask
//! that decide its fate, and when it is delivered. The process's exit (with its exit code)
//! tells whether it was killed.
//!
//! Raw tracepoint arguments (`TP_PROTO`):
//! - `signal_generate(int sig, struct kernel_siginfo *info, struct task_struct *task, int
//!   group, int result)`; `info` may be `SEND_SIG_NOINFO` (0, reported as `SI_USER`) or
//!   `SEND_SIG_PRIV` (1, `SI_KERNEL`) instead of a pointer;
//! - `signal_deliver(int sig, struct kernel_siginfo *info, struct k_sigaction *ka)`, in the
//!   receiving thread.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::RawTracePointContext,
};
use stdtrace_common::{SigpipeRecord, counter, record_kind, syscall};

use crate::{
    config, filter,
    kernel::{self, user_register, user_registers},
    maps::{
        EVENTS, SCRATCH, SCRATCH_SIGNAL, SIGPIPE_COUNTS, SIGPIPE_DELIVERY_WANTED, SIGPIPE_PENDING,
        SIGPIPE_SEEN, SIGPIPE_WRITER, SIGPIPES_LOST, bump, is_target, track_process,
    },
};

const SIGPIPE: u64 = 13;
const EPIPE: u64 = 32;
const SI_USER: i32 = 0;
const SI_KERNEL: i32 = 0x80;

/// Whether x86_64 syscall `nr` is an output syscall (write and send families).
fn is_write_syscall(nr: u64) -> bool {
    syscall::from_nr(nr).is_some()
}

/// `BPF_NOEXIST`: insert only if the key is new.
const BPF_NOEXIST: u64 = 1;

fn sigpipe_key(tgid: u32, fd: i32) -> u64 {
    (u64::from(tgid) << 32) | u64::from(fd as u32)
}

/// The fd of the write-family syscall the current thread is in, if it is in one.
#[inline(always)]
fn write_fd() -> Option<i32> {
    let regs = user_registers();
    if regs == 0 {
        return None;
    }
    let register = |offset: u32| user_register(regs, offset);
    if !is_write_syscall(register(config::layout_field!(pt_regs_orig_ax))) {
        return None;
    }
    // The kernel declares the fd `unsigned int`; the register holds it zero-extended.
    Some(register(config::layout_field!(pt_regs_di)) as u32 as i32)
}

/// Whether a SIGPIPE of (process, fd) was seen before: counted (when EPIPE writes are not
/// tallied already), and answered from this CPU's memory of the last one in a storm.
#[inline(always)]
fn seen_before(tgid: u32, fd: i32) -> bool {
    let key = sigpipe_key(tgid, fd);
    // With EPIPE watched, the failed writes' tally is this count.
    if !config::watches_errno(EPIPE) {
        count(key);
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(SCRATCH_SIGNAL) else {
        return false;
    };
    // SAFETY: this CPU's scratch value, used by one program at a time.
    unsafe {
        if (*scratch).seen_sigpipe == key {
            return true;
        }
        // SAFETY: only the presence of the key is used.
        if SIGPIPE_SEEN.get(&key).is_some() {
            (*scratch).seen_sigpipe = key;
            return true;
        }
    }
    false
}

/// Adds one SIGPIPE to the count of (process, fd) `key`.
#[inline(always)]
fn count(key: u64) {
    if let Some(count) = SIGPIPE_COUNTS.get_ptr_mut(&key) {
        // SAFETY: per-CPU value of an existing entry, written only from this CPU.
        unsafe { *count += 1 };
        return;
    }
    if SIGPIPE_COUNTS.insert(&key, &1, 0).is_err() {
        bump(counter::SIGPIPE_FULL);
        return;
    }
    track_process((key >> 32) as u32);
}

#[inline(always)]
pub fn on_generate(ctx: &RawTracePointContext) {
    let sig: u64 = ctx.arg(0);
    if sig & 0xffff_ffff != SIGPIPE {
        return;
    }
    let task: u64 = ctx.arg(2);
    let sender = bpf_get_current_pid_tgid();
    // A broken pipe raises SIGPIPE from inside the writer's own write, for the writer itself.
    // In an error storm this runs for every failed write: the repeats are counted and leave
    // before anything else is read.
    let (tgid, tid, from_write, fd) = if task == kernel::current_task() {
        let (tgid, tid) = ((sender >> 32) as u32, sender as u32);
        match write_fd() {
            Some(fd) => {
                if seen_before(tgid, fd) {
                    return;
                }
                (tgid, tid, true, fd)
            }
            None => (tgid, tid, false, -1),
        }
    } else {
        let (Some(tgid), Some(tid)) = (
            kernel::read::<u32>(task, config::layout_field!(task_tgid)),
            kernel::read::<u32>(task, config::layout_field!(task_pid)),
        ) else {
            return;
        };
        (tgid, tid, false, -1)
    };
    // The cgroup filter sees the current task's cgroup: a SIGPIPE sent to another process
    // (kill -PIPE) is traced only for a target.
    let traced = if task == kernel::current_task() {
        filter::traced_current(tgid)
    } else {
        !config::targets_only() || is_target(tgid)
    };
    if tgid == config::self_tgid() || !traced {
        return;
    }
    if from_write {
        let key = sigpipe_key(tgid, fd);
        // Only the first SIGPIPE of each (process, fd) is sent.
        const EEXIST: i64 = 17;
        match SIGPIPE_SEEN.insert(&key, &1, BPF_NOEXIST) {
            Ok(()) => track_process(tgid),
            Err(err) if i64::from(err) == -EEXIST => return,
            Err(_) => {
                // Full: this process's SIGPIPEs on this fd are each told (and counted).
                bump(counter::SIGPIPE_FULL);
            }
        }
        // Its write goes out in full, even from a call site already reported.
        if let Some(writer) = SIGPIPE_WRITER.get_ptr_mut(0) {
            // SAFETY: this CPU's slot, written only from this CPU.
            unsafe { *writer = tid };
        }
    }
    let layout = config::layout();
    let info: u64 = ctx.arg(1);
    let code = match info {
        0 => SI_USER,
        1 => SI_KERNEL,
        info => kernel::read::<i32>(info, layout.siginfo_code).unwrap_or(SI_USER),
    };
    let result: u64 = ctx.arg(4);
    let handler = kernel::read::<u64>(task, layout.task_sighand)
        .and_then(|sighand| kernel::read::<u64>(sighand, layout.sighand_sigpipe_handler))
        .unwrap_or(0);
    let mask = kernel::read::<u64>(task, layout.task_blocked).unwrap_or(0);
    // Its exit must be reported even when its process is not a target (node-wide mode).
    if SIGPIPE_PENDING.insert(&tgid, &1, 0).is_err()
        || SIGPIPE_DELIVERY_WANTED.insert(&tgid, &1, 0).is_err()
    {
        bump(counter::SIGPIPE_FULL);
    }
    let record = SigpipeRecord {
        kind: record_kind::SIGPIPE_GENERATED,
        tgid,
        tid,
        sender_tgid: (sender >> 32) as u32,
        sender_tid: sender as u32,
        code,
        result: result as i32,
        blocked: ((mask >> (SIGPIPE - 1)) & 1) as u32,
        from_write: u32::from(from_write),
        fd,
        handler,
        // SAFETY: plain helper call.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        sender_comm: bpf_get_current_comm().unwrap_or_default(),
    };
    if EVENTS.output::<_>(record, 0).is_err() {
        bump(counter::LIFECYCLE_DROPPED);
        // Kept for userspace to find: the story is told late, not lost.
        if SIGPIPES_LOST
            .insert(&sigpipe_key(tgid, fd), &record, 0)
            .is_err()
        {
            bump(counter::SIGPIPE_FULL);
        }
    }
}

#[inline(always)]
pub fn on_deliver(ctx: &RawTracePointContext) {
    let sig: u64 = ctx.arg(0);
    if sig & 0xffff_ffff != SIGPIPE {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == config::self_tgid() || !filter::traced_current(tgid) {
        return;
    }
    // One delivery per SIGPIPE record sent: a handler that runs a million times is told once.
    if SIGPIPE_DELIVERY_WANTED.remove(&tgid).is_err() {
        return;
    }
    let action: u64 = ctx.arg(2);
    let record = SigpipeRecord {
        kind: record_kind::SIGPIPE_DELIVERED,
        tgid,
        tid: pid_tgid as u32,
        sender_tgid: 0,
        sender_tid: 0,
        code: 0,
        result: 0,
        blocked: 0,
        from_write: 0,
        fd: -1,
        // k_sigaction.sa.sa_handler is its first member.
        handler: kernel::read::<u64>(action, 0).unwrap_or(0),
        // SAFETY: plain helper call.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        sender_comm: [0; 16],
    };
    if EVENTS.output::<_>(record, 0).is_err() {
        bump(counter::LIFECYCLE_DROPPED);
    }
}
