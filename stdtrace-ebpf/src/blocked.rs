//! Writes that block: seen where they go to sleep, in the scheduler, not by timing every write.
//!
//! `sched_switch` runs in the task being switched out. When that task goes to sleep (not
//! preempted, not runnable) inside a write-family syscall, its slot in `BLOCKED` records when,
//! the syscall's arguments and user registers, and its goroutine. The syscall's exit finds the
//! slot (an inlined array lookup), clears it, and reports the write if it was slow. Userspace
//! reads the slots to report writes that are stuck right now.
//!
//! Raw tracepoint arguments (`TP_PROTO`): `sched_switch(bool preempt, struct task_struct
//! *prev, struct task_struct *next, unsigned int prev_state)` (`prev_state` since 5.18).

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::RawTracePointContext,
};
use stdtrace_common::{BLOCKED_SLOTS, BlockedWrite, Goroutine, counter, syscall};

use crate::{
    config, filter,
    kernel::{self, read_fd, user_registers},
    maps::{BLOCKED, GO_PROCESSES, bump},
};

/// The slot of thread `tid`, if it holds a write of that thread.
#[inline(always)]
pub fn slot_of(tid: u32) -> Option<*mut BlockedWrite> {
    let slot = BLOCKED.get_ptr_mut(tid & (BLOCKED_SLOTS - 1))?;
    // SAFETY: a pointer into the array's value memory, valid for the program's run.
    (unsafe { (*slot).tid } == tid && tid != 0).then_some(slot)
}

/// Frees the slot of a thread that exits while blocked.
#[inline(always)]
pub fn forget(tid: u32) {
    if let Some(slot) = slot_of(tid) {
        // SAFETY: as in slot_of.
        unsafe { (*slot).tid = 0 };
    }
}

#[inline(always)]
pub fn on_switch(ctx: &RawTracePointContext) {
    if !config::has_prev_state() {
        return;
    }
    let preempt: u64 = ctx.arg(0);
    let prev_state: u64 = ctx.arg(3);
    // Preempted, or still runnable: not waiting for anything.
    if preempt & 0xff != 0 || prev_state & 0xffff_ffff == 0 {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    if tid == 0 || tgid == config::self_tgid() || !filter::traced_current(tgid) {
        return;
    }
    let layout = config::layout();
    let regs = user_registers();
    let Some(nr) = kernel::read::<u64>(regs, layout.pt_regs_orig_ax) else {
        return;
    };
    let Some(syscall) = syscall::from_nr(nr) else {
        return;
    };
    let Some(slot) = BLOCKED.get_ptr_mut(tid & (BLOCKED_SLOTS - 1)) else {
        return;
    };
    // SAFETY: a pointer into the array's value memory; this thread is the only writer of a
    // slot it owns, and only takes a free one.
    unsafe {
        match (*slot).tid {
            // Already recorded: the same write sleeping again.
            owner if owner == tid => return,
            0 => {}
            _ => {
                bump(counter::BLOCKED_UNTRACKED);
                return;
            }
        }
        (*slot).tgid = tgid;
        (*slot).seq = (*slot).seq.wrapping_add(1);
        (*slot).since_ns = bpf_ktime_get_ns();
        (*slot).syscall = syscall;
        (*slot).fd = read_fd(&layout, regs);
        (*slot).count = kernel::read::<u64>(regs, layout.pt_regs_dx).unwrap_or(0);
        (*slot).comm = bpf_get_current_comm().unwrap_or_default();
        (*slot).regs_len = kernel::copy_registers(&layout, regs, &raw mut (*slot).regs);
        (*slot).go = match GO_PROCESSES.get(&tgid) {
            Some(go_layout) => {
                let sp = kernel::read::<u64>(regs, layout.pt_regs_sp).unwrap_or(0);
                kernel::current_goroutine(&layout, go_layout, sp)
            }
            // Not known to be Go (yet): the thread pointer lets userspace find the goroutine
            // later, from memory, if the thread is still blocked then.
            None => Goroutine {
                fsbase: kernel::read::<u64>(kernel::current_task(), layout.task_fsbase)
                    .unwrap_or(0),
                ..Goroutine::default()
            },
        };
        // Published last: a slot is only read (by the exit, by userspace) once it has an owner.
        core::ptr::write_volatile(&raw mut (*slot).tid, tid);
    }
    bump(counter::BLOCKED);
}
