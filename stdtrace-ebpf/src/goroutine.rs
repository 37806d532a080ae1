//! The goroutine behind a failed write in a Go process, read at event time: the goroutine may
//! run on, or its `g` be reused, by the time userspace looks.
//!
//! The thread's current `g` sits in thread-local storage at a per-binary offset from the FS base
//! (`task_struct.thread.fsbase`). On the system stack (g0, running C code called through cgo,
//! or the runtime) that `g` is not the goroutine: `g.m.curg` is. The `g` found is checked
//! against the thread's stack pointer: it must own the stack the thread is on.

use stdtrace_common::{GoLayout, Goroutine, go_flags};

use crate::kernel::{read, read_user};

#[inline(always)]
pub fn read_goroutine(layout: &GoLayout, fsbase_offset: u32, task: u64, sp: u64) -> Goroutine {
    let mut found = Goroutine {
        flags: go_flags::GO_PROCESS,
        ..Goroutine::default()
    };
    let Some(fsbase) = read::<u64>(task, fsbase_offset) else {
        return found;
    };
    found.fsbase = fsbase;
    let Some(g) = read_user::<u64>(fsbase, layout.tls_offset) else {
        return found;
    };
    if g == 0 {
        return found;
    }
    found.g = g;
    found.stack_lo = read_user::<u64>(g, layout.g_stack_lo as i64).unwrap_or(0);
    found.stack_hi = read_user::<u64>(g, layout.g_stack_hi as i64).unwrap_or(0);
    if found.stack_lo <= sp && sp < found.stack_hi {
        found.flags |= go_flags::STACK_OWNED;
    }
    let curg = read_user::<u64>(g, layout.g_m as i64)
        .and_then(|m| read_user::<u64>(m, layout.m_curg as i64))
        .unwrap_or(0);
    let goroutine = if curg != 0 { curg } else { g };
    if goroutine != g {
        found.flags |= go_flags::ON_SYSTEM_STACK;
    }
    found.goroutine = goroutine;
    let (Some(goid), Some(status), Some(gopc)) = (
        read_user::<u64>(goroutine, layout.g_goid as i64),
        read_user::<u32>(goroutine, layout.g_status as i64),
        read_user::<u64>(goroutine, layout.g_gopc as i64),
    ) else {
        return found;
    };
    found.goid = goid;
    found.status = status;
    found.gopc = gopc;
    if layout.flags & go_flags::HAS_PARENT_GOID != 0 {
        found.parent_goid = read_user::<u64>(goroutine, layout.g_parent_goid as i64).unwrap_or(0);
    }
    found.flags |= go_flags::FOUND;
    found
}
