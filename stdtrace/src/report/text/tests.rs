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
