//! Process lifecycle: keep the target set in step with forks and exits, and tell userspace when
//! a traced process replaces its address space (exec) or ends.
//!
//! Raw tracepoint arguments are the tracepoints' `TP_PROTO`s:
//! - `sched_process_fork(struct task_struct *parent, struct task_struct *child)`, called in the
//!   parent before the child is first woken, so the child is a target before it runs;
//! - `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`,
//!   called in the task once the new image is loaded;
//! - `sched_process_exit(struct task_struct *p, bool group_dead)` (`group_dead` since 6.16;
//!   older kernels pass only the task, and the loader says which).

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::RawTracePointContext,
};
use stdtrace_common::{ProcessExec, ProcessExit, counter, record_kind};

use crate::{
    config, filter, kernel,
    maps::{
        EVENTS, EXITS_LOST, GO_PROCESSES, PROCESSES_WITH_ENTRIES, READER_WATCH,
        SIGPIPE_DELIVERY_WANTED, SIGPIPE_PENDING, TARGETS, bump, is_target,
    },
};

#[inline(always)]
pub fn on_fork(ctx: &RawTracePointContext) {
    if !config::targets_only() {
        return;
    }
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_target(parent_tgid) {
        return;
    }
    let child: u64 = ctx.arg(1);
    let Some(child_tgid) = kernel::read::<u32>(child, config::layout().task_tgid) else {
        return;
    };
    // A new thread shares its parent's tgid and is already covered.
    if child_tgid == parent_tgid {
        return;
    }
    if TARGETS.insert(&child_tgid, &1, 0).is_ok() {
        bump(counter::CHILDREN_FOLLOWED);
    } else {
        bump(counter::TARGETS_FULL);
    }
}

#[inline(always)]
pub fn on_exec(_ctx: &RawTracePointContext) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == config::self_tgid() || !filter::traced_current(tgid) {
        return;
    }
    let image = crate::image::current();
    let record = ProcessExec {
        kind: record_kind::PROCESS_EXEC,
        tgid,
        // SAFETY: plain helper call.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        comm: bpf_get_current_comm().unwrap_or_default(),
        dev: image.dev,
        _pad: 0,
        ino: image.ino,
    };
    if EVENTS.output::<_>(record, 0).is_err() {
        bump(counter::LIFECYCLE_DROPPED);
    }
}

#[inline(always)]
pub fn on_exit(ctx: &RawTracePointContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // A thread killed while blocked in a write never returns from it.
    crate::blocked::forget(pid_tgid as u32);
    let tgid = (pid_tgid >> 32) as u32;
    let layout = config::layout();
    let group_dead = if layout.exit_has_group_dead != 0 {
        ctx.arg::<u64>(1) & 0xff != 0
    } else {
        // Without the argument, the group leader's exit stands for the process's.
        pid_tgid as u32 == tgid
    };
    if !group_dead {
        return;
    }
    crate::readers::on_process_exit(tgid);
    // What is keyed by the process alone goes with it; what is keyed by (process, fd, ...) is
    // folded and removed by userspace, told by this exit's record.
    let _ = SIGPIPE_DELIVERY_WANTED.remove(&tgid);
    let _ = READER_WATCH.remove(&tgid);
    let _ = GO_PROCESSES.remove(&tgid);
    // Reported for targets, for any process a SIGPIPE was generated for (its fate), and for
    // any with entries to fold. A process traced for its cgroup is not in the target set; it
    // is still in its cgroup here (`cgroup_exit` comes later in `do_exit`).
    let was_target =
        config::targets_only() && (TARGETS.remove(&tgid).is_ok() || filter::in_watched_cgroup());
    let sigpipe = SIGPIPE_PENDING.remove(&tgid).is_ok();
    // SAFETY: the value is copied out at once.
    let tracked = unsafe { PROCESSES_WITH_ENTRIES.get(&tgid) }.copied();
    let has_entries = tracked.is_some() && PROCESSES_WITH_ENTRIES.remove(&tgid).is_ok();
    if !was_target && !sigpipe && !has_entries {
        return;
    }
    // The binary: from the mm where this kernel still has it at this tracepoint (6.16 on),
    // else as it was when the process's first entry was made.
    let mut image = crate::image::current();
    if image.ino == 0
        && let Some(tracked) = tracked
    {
        image.dev = tracked.dev;
        image.ino = tracked.ino;
    }
    let record = ProcessExit {
        kind: record_kind::PROCESS_EXIT,
        tgid,
        // SAFETY: plain helper call.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        exit_code: kernel::read::<u32>(kernel::current_task(), layout.task_exit_code).unwrap_or(0),
        dev: image.dev,
        ino: image.ino,
    };
    if EVENTS.output::<_>(record, 0).is_err() {
        bump(counter::LIFECYCLE_DROPPED);
        // Kept for userspace to find: an exit is never lost without a trace.
        if EXITS_LOST.insert(&tgid, &record, 0).is_err() {
            bump(counter::PROCESSES_FULL);
        }
    }
}
