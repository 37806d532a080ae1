use super::*;
use crate::report::{Captured, record::samples::report};

#[test]
fn one_block_then_a_count_of_repeats() {
    let captured = Captured::default();
    let mut text = TextOutput::new(Box::new(captured.clone()), false, false, Clock::now());
    let mut repeats = Repeats::new();
    for _ in 0..3 {
        if repeats.observe(&report(), false) == crate::aggregate::repeats::Seen::New {
            text.write(&report()).unwrap();
        }
    }
    text.repeats(&mut repeats, true).unwrap();
    let out = captured.text();
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].ends_with("pid 812 (writer): write(4, 1 byte) failed: EPIPE (Broken pipe)"),
        "{out}"
    );
    assert_eq!(
        lines[1],
        "  fd 4 -> pipe:[40213]; readers: none, nobody holds the read end; writers: pid 812 (writer)"
    );
    assert_eq!(lines[2], "    #0  write  in writer");
    assert_eq!(lines[3], "    #1  emit_epipe at writer.c:42  in writer");
    assert_eq!(
        lines[4],
        "    #2  0x401300 in writer+0x1234 (no symbol covers this address)"
    );
    assert_eq!(lines[5], "    (stack ends: reached the outermost frame)");
    assert_eq!(
        lines[7],
        "  ... pid 812 (writer) write(4) EPIPE: 2 more from the same stack (3 in all)"
    );
    assert_eq!(lines.len(), 8, "{out}");
}

#[test]
fn colour_only_when_asked() {
    let captured = Captured::default();
    let mut text = TextOutput::new(Box::new(captured.clone()), true, false, Clock::now());
    text.write(&report()).unwrap();
    assert!(captured.text().contains("\x1b[1;31mEPIPE\x1b[0m"));
}

#[test]
fn quiet_prints_only_the_summary() {
    let captured = Captured::default();
    let mut text = TextOutput::new(Box::new(captured.clone()), false, true, Clock::now());
    let mut repeats = Repeats::new();
    repeats.observe(&report(), false);
    repeats.observe(&report(), false);
    text.write(&report()).unwrap();
    text.repeats(&mut repeats, true).unwrap();
    assert_eq!(captured.text(), "");
}

#[test]
fn names() {
    assert_eq!(signal_name(13), "SIGPIPE");
    assert_eq!(signal_name(64), "signal 64");
    assert_eq!(
        crate::errno::Errno::EAGAIN.describe(),
        "Resource temporarily unavailable"
    );
}

#[test]
fn a_chain_is_indented_under_its_writer_and_a_null_master_is_told() {
    use crate::report::record::{Activity, ChainedWrite, MasterSide, Peer, PtyBuffers};
    let mut record = report();
    let sleeping = |syscall: &str, blocked: bool| Activity {
        state: "sleeping".into(),
        wchan: None,
        syscall: Some(syscall.to_owned()),
        reading: false,
        blocked,
    };
    let mut pipe = record.target.clone();
    pipe.read_ends = None;
    pipe.writers = None;
    pipe.capacity = Some(65536);
    pipe.queued = Some(65536);
    pipe.readers = Some(vec![Peer {
        pid: 900,
        comm: "sleep".into(),
        fds: vec![0],
        activity: Some(sleeping("clock_nanosleep", false)),
        container: None,
        runtime: None,
        blocked_write: None,
    }]);
    record.target.readers = Some(vec![Peer {
        pid: 813,
        comm: "script".into(),
        fds: vec![3],
        activity: Some(sleeping("write", true)),
        container: None,
        runtime: None,
        blocked_write: Some(Box::new(ChainedWrite {
            tid: 813,
            syscall: "write".into(),
            fd: 1,
            count: Some(4096),
            duration_ms: Some(2500),
            target: pipe,
            cut: Some("depth".into()),
        })),
    }]);
    record.target.writers = None;
    // Read back (`stdtrace report`) as written.
    let json = serde_json::to_value(&record).unwrap();
    assert_eq!(
        json["target"]["readers"][0]["blocked_write"]["cut"],
        "depth"
    );
    let back: WriteReport = serde_json::from_value(json).unwrap();
    assert_eq!(back.target, record.target);
    let captured = Captured::default();
    let mut text = TextOutput::new(Box::new(captured.clone()), false, false, Clock::now());
    text.write(&record).unwrap();
    let out = captured.text();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[2],
        "  -> pid 813 (script) blocked 2.5s in write(1) -> pipe:[40213] 65536/65536 bytes queued; \
         reader pid 900 (sleep) sleeping in clock_nanosleep, not reading [chain cut: depth]",
        "{out}"
    );

    // A pty whose master no process holds, open only in flight.
    let mut pty = report().target;
    pty.kind = TargetKind::Pty;
    pty.path = Some("/dev/pts/3".into());
    pty.pts = Some(3);
    pty.readers = Some(vec![]);
    pty.writers = None;
    pty.read_ends = None;
    pty.queued = Some(19000);
    pty.capacity = Some(20480);
    pty.pty = Some(PtyBuffers {
        flip_queued: 15000,
        flip_limit: 8192,
        flip_allocated: 8192,
        ldisc_queued: Some(4000),
        ldisc_size: 4096,
        partial: false,
        master_open: 1,
        master_closed: false,
        hung_up: false,
    });
    pty.master = Some(MasterSide(None));
    assert_eq!(
        describe_target(&pty),
        "pty /dev/pts/3 19000/20480 bytes queued (15000 in flip buffers, 4000 in the line \
         discipline); master: no process holds it (1 open file(s) in no process: in flight in a \
         unix socket); readers: none, nobody holds the master side"
    );
}
