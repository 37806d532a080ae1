//! Launch mode: the command run under stdtrace, its exit status, its children, and how tracing
//! ends.

use std::{io::Write, path::PathBuf, process::Stdio, time::Duration};

use serde_json::Value;

use crate::{
    Announced, C_CALLERS, Drops, EAGAINS, EPIPES, Peers, announced, assert_repeats, c_writer,
    can_run::{self, Need},
    check_failed_writes, fixtures,
    stdtrace::{self, StderrLines, assert_calls, json_lines, write_errors},
};

fn rust_writer() -> PathBuf {
    fixtures::build_with(
        "rustc",
        "writers/rust_writer.rs",
        "rust_writer",
        &[
            "--edition",
            "2024",
            "-C",
            "debuginfo=2",
            "-C",
            "opt-level=1",
        ],
    )
}

/// Launches the writer held (`--hold`, through stdtrace's stdin, which the command inherits),
/// lets it write, and lets it exit only once stdtrace has reported every failed write: its
/// pipes' holders are alive when stdtrace looks for them.
fn launch_held(writer: &std::path::Path) -> (Vec<Value>, Announced, Option<i32>) {
    let mut tracer = stdtrace::command(&[
        "--format",
        "json",
        "--",
        writer.to_str().unwrap(),
        &EPIPES.to_string(),
        &EAGAINS.to_string(),
        "--hold",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("starting stdtrace");
    let mut stderr = StderrLines::new(tracer.stderr.take().unwrap());
    let mut stdout = stdtrace::Lines::new(tracer.stdout.take().unwrap());
    let line = stderr.wait_for("failing_writes: pid=", Duration::from_secs(20));
    let fixture = announced(&line, "failing_writes:");
    let mut stdin = tracer.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    // One report per call path.
    stdout.wait_for_count(2, Duration::from_secs(20), |line| {
        stdtrace::is_write_error_of(line, fixture.pid)
    });
    stdin.write_all(b"exit\n").unwrap();
    drop(stdin);
    let status = stdtrace::wait_with_timeout(tracer, Duration::from_secs(20)).status;
    let lines = stdout.all(Duration::from_secs(5));
    let records = stdtrace::parse_json_lines(lines.iter().map(String::as_str));
    (records, fixture, status.code())
}

fn launch_and_check(frame_pointers: bool) {
    let (records, fixture, code) = launch_held(&c_writer(frame_pointers));
    assert_eq!(code, Some(0));
    check_failed_writes(
        &records,
        &fixture,
        C_CALLERS.0,
        C_CALLERS.1,
        Peers::Alive,
        Drops::None,
    );
    let summary = records.last().unwrap();
    assert_eq!(summary["command"]["pid"], fixture.pid);
    assert_eq!(summary["command"]["exit_code"], 0);
    assert_eq!(summary["failed_writes"], (EPIPES + EAGAINS) as u64);
    assert_eq!(summary["reported"], 2);
    assert_eq!(summary["repeats"], (EPIPES + EAGAINS - 2) as u64);
    assert_eq!(summary["stopped"], "the command exited");
}

#[test]
fn launch_c_writer_with_frame_pointers() {
    if !can_run::require(Need::Root) {
        return;
    }
    launch_and_check(true);
}

#[test]
fn launch_c_writer_without_frame_pointers() {
    if !can_run::require(Need::Root) {
        return;
    }
    launch_and_check(false);
}

/// A writer that fails and exits at once: its stack is still named (from the kernel's record of
/// its mappings), its fd's target and open ends still known (read in the kernel).
#[test]
fn launch_c_writer_that_exits_at_once() {
    if !can_run::require(Need::Root) {
        return;
    }
    let writer = c_writer(false);
    let output = stdtrace::run(&[
        "--format",
        "json",
        "--",
        writer.to_str().unwrap(),
        &EPIPES.to_string(),
        &EAGAINS.to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    let fixture = announced(&stderr, "failing_writes:");
    let records = json_lines(&output.stdout);
    check_failed_writes(
        &records,
        &fixture,
        C_CALLERS.0,
        C_CALLERS.1,
        Peers::Gone,
        Drops::None,
    );
}

#[test]
fn launch_rust_writer() {
    if !can_run::require(Need::Root) {
        return;
    }
    let writer = rust_writer();
    let output = stdtrace::run(&["--format", "json", "--", writer.to_str().unwrap(), "5", "3"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    let fixture = announced(&stderr, "rust_writer:");
    let records = json_lines(&output.stdout);
    let errors = write_errors(&records, fixture.pid);
    assert_eq!(errors.len(), 2, "one per call path: {errors:#?}");
    for record in &errors {
        let expected = if record["errno"] == "EPIPE" {
            EPIPES
        } else {
            EAGAINS
        };
        assert_repeats(&records, record, expected as u64 - 1);
        let (callee, caller) = if record["errno"] == "EPIPE" {
            ("rust_writer::emit_epipe", "rust_writer::run_epipe_phase")
        } else {
            ("rust_writer::emit_eagain", "rust_writer::run_eagain_phase")
        };
        let names = stdtrace::function_names(record);
        let at = names
            .iter()
            .position(|name| name == callee)
            .unwrap_or_else(|| panic!("{callee} not in {names:?}"));
        // The fixture's own caller is the next frame that is not Rust's iterator plumbing
        // inlined into it.
        assert!(
            names[at + 1..].iter().any(|name| name == caller),
            "{names:?}"
        );
        assert!(names[..at].iter().any(|name| name == "write"), "{names:?}");
    }
}

#[test]
fn launched_command_exit_status_is_propagated() {
    if !can_run::require(Need::Root) {
        return;
    }
    for (script, code) in [("exit 0", 0), ("exit 3", 3)] {
        let output = stdtrace::run(&["-q", "--", "sh", "-c", script]);
        assert_eq!(output.status.code(), Some(code), "{script}: {output:?}");
    }
    // Killed by SIGPIPE at its first EPIPE write: 128 + 13, and that write is reported.
    let writer = c_writer(true);
    let output = stdtrace::run(&[
        "--format",
        "json",
        "--",
        writer.to_str().unwrap(),
        "3",
        "0",
        "--sigpipe",
    ]);
    assert_eq!(output.status.code(), Some(141), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let fixture = announced(&stderr, "failing_writes:");
    let records = json_lines(&output.stdout);
    let errors = write_errors(&records, fixture.pid);
    assert_eq!(errors.len(), 1, "{records:#?}");
    assert_eq!(errors[0]["errno"], "EPIPE");
    assert_calls(errors[0], "emit_epipe", "run_epipe_phase");
    let summary = records.last().unwrap();
    assert_eq!(summary["command"]["exit_code"], 141);
    assert_eq!(summary["command"]["signal"], 13);
}

#[test]
fn children_of_a_launched_command_are_followed() {
    if !can_run::require(Need::Root) {
        return;
    }
    let writer = c_writer(true);
    // sh forks the writer: the writer is a child of the launched command.
    let script = format!("{} 2 1; echo done >&2", writer.display());
    let output = stdtrace::run(&["--format", "json", "--", "sh", "-c", &script]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let fixture = announced(&stderr, "failing_writes:");
    let records = json_lines(&output.stdout);
    // Two EPIPE failures at one call path, one EAGAIN at another.
    let errors = write_errors(&records, fixture.pid);
    assert_eq!(errors.len(), 2, "{records:#?}");
    let epipe = errors.iter().find(|r| r["errno"] == "EPIPE").unwrap();
    assert_repeats(&records, epipe, 1);
    assert_eq!(records.last().unwrap()["failed_writes"], 3);
    assert!(
        records.last().unwrap()["kernel"]["children_followed"]
            .as_u64()
            .unwrap()
            >= 1
    );
}

#[test]
fn duration_ends_tracing() {
    if !can_run::require(Need::Root) {
        return;
    }
    let output = stdtrace::run(&["--format", "json", "--duration", "500ms"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let records = json_lines(&output.stdout);
    let summary = records.last().unwrap();
    assert_eq!(summary["stopped"], "the duration ran out");
    // At least the duration; how much more depends on the machine's load (no upper bound in
    // a test: the run ending at all, with this reason, is what it shows).
    let ms = summary["duration_ms"].as_u64().unwrap();
    assert!(ms >= 500, "{ms}");
}
