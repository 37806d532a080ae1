//! `--goroutines`: every goroutine of a Go process, with its status, wait reason and, where
//! it is parked, its stack from `g.sched` (a goroutine dump without SIGQUIT).

use std::collections::HashMap;

use super::go::{G_SYSCALL, GoRuntime, GoroutineState};
use crate::{
    enrich::{go::status_name, namer::frame_report},
    process::{maps::ProcessMaps, memory::ProcessMemory, status},
    report::record::{CreatedBy, GoroutineRecord, RecordType},
    symbolize::{StackCopy, Symbolizer, UserRegisters, register},
};

/// The most of a goroutine's stack copied to unwind it (goroutine stacks start at 8 KiB).
const MAX_STACK_COPY: u64 = 64 * 1024;

/// `_Grunning`: its registers are the thread's, not in the `g`.
const G_RUNNING: u32 = 2;

/// The records of every goroutine in `all`; `blocked` maps (pid, goid) of goroutines reported
/// blocked writing to their thread.
pub fn goroutines(
    pid: u32,
    runtime: &GoRuntime,
    all: &[GoroutineState],
    blocked: &HashMap<(u32, u64), u32>,
) -> Vec<GoroutineRecord> {
    let comm = status::comm(pid).unwrap_or_else(|| "?".to_owned());
    let maps = ProcessMaps::read(pid).ok();
    let memory = ProcessMemory::open(pid).ok();
    let mut symbolizer = Symbolizer::default();
    // Thousands of goroutines come from a few `go` statements.
    let mut creators: HashMap<u64, Option<CreatedBy>> = HashMap::new();
    all.iter()
        .map(|g| {
            let (stack, stack_end) = match (&maps, &memory) {
                (Some(maps), Some(memory)) => stack_of(pid, maps, memory, &mut symbolizer, g),
                _ => (Vec::new(), Some("its memory could not be read".to_owned())),
            };
            let created_by = match &maps {
                Some(maps) if g.gopc != 0 => creators
                    .entry(g.gopc)
                    .or_insert_with(|| {
                        let frames = symbolizer.symbolize(pid, maps, g.gopc, true);
                        let (outer, inner) = (frames.last()?, frames.first()?);
                        Some(CreatedBy {
                            function: outer.function.clone(),
                            file: inner.file.clone(),
                            line: inner.line,
                        })
                    })
                    .clone(),
                _ => None,
            };
            GoroutineRecord {
                node: crate::report::record::Node::here(),
                record_type: RecordType::Goroutine,
                pid,
                comm: comm.clone(),
                goid: g.goid,
                status: status_name(g.status),
                wait_reason: runtime
                    .wait_reason(g.waitreason)
                    .filter(|reason| !reason.is_empty())
                    .map(str::to_owned),
                wait_reason_code: g.waitreason,
                parent_goid: (g.parent_goid != 0).then_some(g.parent_goid),
                created_by,
                blocked_write_tid: blocked.get(&(pid, g.goid)).copied(),
                stack,
                stack_end,
            }
        })
        .collect()
}

/// The goroutine's stack: from `g.sched` when it is parked, from where it entered its system
/// call when it is in one.
fn stack_of(
    pid: u32,
    maps: &ProcessMaps,
    memory: &ProcessMemory,
    symbolizer: &mut Symbolizer,
    g: &GoroutineState,
) -> (Vec<crate::report::record::FrameReport>, Option<String>) {
    let registers = match g.plain_status() {
        G_RUNNING => {
            return (
                Vec::new(),
                Some("running: its registers are its thread's".to_owned()),
            );
        }
        G_SYSCALL => UserRegisters::from_ip_sp(g.syscallpc, g.syscallsp),
        _ => {
            let mut registers = UserRegisters::from_ip_sp(g.sched_pc, g.sched_sp);
            if g.sched_bp != 0 {
                registers.set(register::RBP, g.sched_bp);
            }
            registers
        }
    };
    let (Some(pc), Some(sp)) = (registers.ip(), registers.sp()) else {
        return (Vec::new(), Some("no saved pc".to_owned()));
    };
    if pc == 0 || sp < g.stack_lo || sp >= g.stack_hi {
        return (
            Vec::new(),
            Some(format!(
                "its saved stack pointer {sp:#x} is outside its stack [{:#x}, {:#x})",
                g.stack_lo, g.stack_hi
            )),
        );
    }
    let len = g.stack_hi.saturating_sub(sp).min(MAX_STACK_COPY);
    let Some(bytes) = usize::try_from(len)
        .ok()
        .and_then(|len| memory.read(sp, len))
    else {
        return (Vec::new(), Some("its stack could not be read".to_owned()));
    };
    let copy = StackCopy {
        base: sp,
        bytes: &bytes,
    };
    let stack = symbolizer.stack(pid, maps, &registers, &copy);
    (
        stack.frames.iter().map(frame_report).collect(),
        stack.end.describe_if_early(),
    )
}
