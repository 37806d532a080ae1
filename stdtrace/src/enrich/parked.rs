//! Goroutines parked in Go's netpoller after their write got EAGAIN: blocked writers with no
//! system call in progress.
//!
//! The kernel program records each such goroutine (process, fd, goroutine id, its `g`) when
//! the EAGAIN happens, and reports it resumed when its next write on that fd succeeds. Here,
//! each tick, the records are checked against the goroutines themselves (read from
//! `/proc/PID/mem`): one still waiting after the stuck threshold is reported parked, with the
//! stack it parked on (from `g.sched`); one that went on without writing again (it gave up, or
//! exited) is forgotten. The records are behind [`ParkedTable`] (`kernel::parked` has the real
//! ones).

use std::collections::BTreeSet;

use stdtrace_common::{
    Goroutine, PARKED_ANY_SLOT, PARKED_PROCESS_SLOTS, ParkedKey, ParkedWrite, go_flags,
};

use crate::{
    enrich::go::GoTracker,
    events::{ByteCount, SavedRegisters, WriteEvent, WriteOutcome, WriteSyscall},
    goruntime::offsets::GOffsets,
    process::{memory, status},
};

/// `_Gwaiting`: parked (the `_Gscan` bit, set while the collector scans it, is ignored).
const G_WAITING: u32 = 4;

/// The kernel's records of parked goroutines.
pub trait ParkedTable {
    /// Every record, as of now.
    fn entries(&self) -> Vec<(ParkedKey, ParkedWrite)>;
    /// Drops a record: the goroutine is no longer parked on that write.
    fn forget(&mut self, key: &ParkedKey);
    /// Marks a record reported, so that the kernel reports its next write as resumed.
    fn mark_reported(&mut self, key: ParkedKey, parked: ParkedWrite);
    /// Clears the "may have a parked goroutine" flags of the process slots not in `occupied`.
    fn clear_flags(&mut self, occupied: &BTreeSet<u32>);
}

/// Goroutines parked for at least `stuck_ns` and not reported yet, as events (marked
/// reported); forgets those that are no longer parked.
pub fn newly_parked(
    table: &mut dyn ParkedTable,
    now_ns: u64,
    stuck_ns: u64,
    go: &mut GoTracker,
) -> Vec<WriteEvent> {
    let mut events = Vec::new();
    let mut occupied = BTreeSet::new();
    for (key, parked) in table.entries() {
        let Some(g) = go
            .process(key.tgid)
            .and_then(|program| program.g)
            .filter(|_| status::exists(key.tgid))
        else {
            table.forget(&key);
            continue;
        };
        let Some(goroutine) = read_parked(key.tgid, &g, parked.g, key.goid) else {
            // It went on (or exited) without writing on the fd again.
            table.forget(&key);
            continue;
        };
        occupied.insert(key.tgid & (PARKED_PROCESS_SLOTS - 1));
        let blocked_ns = now_ns.saturating_sub(parked.since_ns);
        if parked.reported != 0 || blocked_ns < stuck_ns {
            continue;
        }
        events.push(parked_event(
            &key, &parked, &g, goroutine, now_ns, blocked_ns,
        ));
        table.mark_reported(key, parked);
    }
    if !occupied.is_empty() {
        occupied.insert(PARKED_ANY_SLOT);
    }
    table.clear_flags(&occupied);
    events
}

fn word(pid: u32, address: u64) -> Option<u64> {
    memory::read(pid, address, 8)?
        .try_into()
        .ok()
        .map(u64::from_le_bytes)
}

/// The parked goroutine, if `g` is still goroutine `goid` and still waiting.
fn read_parked(pid: u32, offsets: &GOffsets, g: u64, goid: u64) -> Option<Goroutine> {
    if word(pid, g + offsets.goid)? != goid {
        return None;
    }
    let status = memory::read(pid, g + offsets.atomicstatus, 4)?
        .try_into()
        .ok()
        .map(u32::from_le_bytes)?;
    if status & !0x1000 != G_WAITING {
        return None;
    }
    let mut goroutine = Goroutine {
        flags: go_flags::GO_PROCESS | go_flags::FOUND | go_flags::STACK_OWNED,
        status,
        g,
        goroutine: g,
        goid,
        gopc: word(pid, g + offsets.gopc).unwrap_or(0),
        stack_lo: word(pid, g + offsets.stack_lo).unwrap_or(0),
        stack_hi: word(pid, g + offsets.stack_hi).unwrap_or(0),
        ..Goroutine::default()
    };
    if let Some(parent) = offsets.parent_goid {
        goroutine.parent_goid = word(pid, g + parent).unwrap_or(0);
    }
    Some(goroutine)
}

/// The parked goroutine as an event: its stack from where it parked (`g.sched`).
fn parked_event(
    key: &ParkedKey,
    parked: &ParkedWrite,
    offsets: &GOffsets,
    goroutine: Goroutine,
    now_ns: u64,
    blocked_ns: u64,
) -> WriteEvent {
    let pid = key.tgid;
    let g = parked.g;
    let mut registers = SavedRegisters::default();
    // DWARF numbering: rbp 6, rsp 7, the instruction pointer at 16.
    registers.0[6] = word(pid, g + offsets.sched_bp);
    registers.0[7] = word(pid, g + offsets.sched_sp);
    registers.0[16] = word(pid, g + offsets.sched_pc);
    let stack = match registers.sp() {
        Some(sp) => memory::read_stack(pid, sp),
        None => Default::default(),
    };
    WriteEvent {
        ts_ns: now_ns,
        pid,
        tid: parked.tid,
        comm: status::comm(pid).unwrap_or_default(),
        syscall: WriteSyscall::from_raw(parked.syscall).unwrap_or(WriteSyscall::Write),
        fd: key.fd,
        count: ByteCount::Unknown,
        outcome: WriteOutcome::Parked { blocked_ns },
        file: None,
        registers: registers.sp().is_some().then_some(registers),
        stack,
        goroutine: Some(goroutine),
        running_g: None,
        nosignal: false,
        image: None,
    }
}
