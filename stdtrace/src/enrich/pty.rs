//! A pty slave as a write's target: its kernel buffers toward the master (read by the
//! inspector, never by opening the tty), and who holds the master side.

use stdtrace_common::{
    PtyState,
    pty::{N_TTY_BUF_SIZE, tty_flags},
};

use crate::{
    enrich::Inspector,
    report::record::{FdTarget, MasterSide, PtyBuffers, TargetKind},
};

/// What the kernel's figures say, as the record tells them.
pub fn buffers(state: &PtyState) -> PtyBuffers {
    PtyBuffers {
        flip_queued: state.flip_queued,
        flip_limit: u64::from(state.mem_limit),
        flip_allocated: u64::from(state.mem_used),
        ldisc_queued: (state.ldisc_valid != 0).then_some(state.ldisc_queued),
        ldisc_size: u64::from(N_TTY_BUF_SIZE),
        partial: state.partial != 0,
        master_open: state.master_count,
        master_closed: state.slave_flags & tty_flags::OTHER_CLOSED != 0,
        hung_up: state.slave_flags & (tty_flags::HUPPED | tty_flags::IO_ERROR) != 0,
    }
}

/// Fills a pty slave target's buffers, `queued` and `capacity` (on a pipe's terms: what is
/// written and not read yet, against what the kernel holds before the writer must wait).
///
/// `mem_limit` bounds the flip buffers' *allocated* size, and a buffer that holds no per-byte
/// flags (a pty's writes are all `TTY_NORMAL`) keeps data in its flag half too
/// (`tty_buffer_space`: `2 * size - used`), so the flip buffers hold up to twice the limit.
pub fn fill(target: &mut FdTarget, pid: u32, fd: i32, inspector: &mut dyn Inspector) {
    if target.kind != TargetKind::Pty || target.pts.is_none() {
        return;
    }
    let Some(state) = inspector.pty_state(pid, fd) else {
        return;
    };
    let buffers = buffers(&state);
    target.queued = Some(buffers.flip_queued + buffers.ldisc_queued.unwrap_or(0));
    target.capacity = Some(2 * buffers.flip_limit + buffers.ldisc_size);
    target.pty = Some(buffers);
}

/// Names the master side's holder from the target's readers (those holding the master): the
/// one reading, else the first. `null` when no process holds it. The copy carries no chain:
/// that stays under `readers`.
pub fn name_master(target: &mut FdTarget) {
    if target.kind != TargetKind::Pty || target.pts.is_none() {
        return;
    }
    let Some(readers) = &target.readers else {
        return;
    };
    let holder = readers
        .iter()
        .find(|reader| reader.activity.as_ref().is_some_and(|doing| doing.reading))
        .or_else(|| readers.first())
        .map(|reader| {
            let mut master = reader.clone();
            master.blocked_write = None;
            Box::new(master)
        });
    target.master = Some(MasterSide(holder));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        enrich::inspector::fake::FakeInspector,
        report::record::{Activity, Peer},
    };

    fn pty_target() -> FdTarget {
        let mut target = crate::report::record::samples::report().target;
        target.kind = TargetKind::Pty;
        target.pts = Some(3);
        target.readers = Some(vec![]);
        target.writers = None;
        target
    }

    #[test]
    fn the_fill_counts_the_flip_buffers_and_the_line_discipline() {
        let mut inspector = FakeInspector {
            pty: Some(PtyState {
                valid: 1,
                ldisc_valid: 1,
                flip_queued: 12416,
                ldisc_queued: 4095,
                mem_used: 12544,
                mem_limit: 8192,
                buffers: 7,
                partial: 0,
                master_count: 1,
                index: 3,
                slave_flags: 0,
                master_flags: 0,
            }),
            ..FakeInspector::default()
        };
        let mut target = pty_target();
        fill(&mut target, 42, 1, &mut inspector);
        assert_eq!(inspector.asked_pty, vec![(42, 1)]);
        assert_eq!(target.queued, Some(12416 + 4095));
        assert_eq!(target.capacity, Some(2 * 8192 + 4096));
        let pty = target.pty.clone().expect("buffers");
        assert_eq!((pty.flip_allocated, pty.master_open), (12544, 1));
        assert!(!pty.master_closed && !pty.hung_up);
        // Nobody holds the master: `null`, not absent.
        name_master(&mut target);
        assert_eq!(target.master, Some(MasterSide(None)));
        let json = serde_json::to_value(&target).unwrap();
        assert!(json["master"].is_null() && json.get("master").is_some());
        let back: FdTarget = serde_json::from_value(json).unwrap();
        assert_eq!(back.master, Some(MasterSide(None)));
    }

    #[test]
    fn the_master_is_the_holder_reading_and_carries_no_chain() {
        let peer = |pid, reading| Peer {
            pid,
            comm: "holder".into(),
            fds: vec![5],
            activity: Some(Activity {
                state: "sleeping".into(),
                wchan: None,
                syscall: Some("read".into()),
                reading,
                blocked: false,
            }),
            container: None,
            runtime: None,
            blocked_write: None,
        };
        let mut target = pty_target();
        target.readers = Some(vec![peer(7, false), peer(8, true)]);
        name_master(&mut target);
        let master = target.master.and_then(|side| side.0).expect("a master");
        assert_eq!(master.pid, 8);
        // Not a pty: nothing.
        let mut pipe = crate::report::record::samples::report().target;
        name_master(&mut pipe);
        assert_eq!(pipe.master, None);
        assert!(serde_json::to_value(&pipe).unwrap().get("master").is_none());
    }
}
