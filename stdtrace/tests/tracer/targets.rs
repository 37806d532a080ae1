//! Targets not launched by stdtrace: a running process by `--pid`, and node-wide tracing.

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use crate::{
    C_CALLERS, Drops, EAGAINS, EPIPES, Peers, announced, c_writer,
    can_run::{self, Need},
    check_failed_writes,
    stdtrace::{self, StderrLines},
};

#[test]
fn attach_to_a_running_c_writer() {
    if !can_run::require(Need::Root) {
        return;
    }
    let writer = c_writer(false);
    let mut fixture = Command::new(&writer)
        .args([&EPIPES.to_string(), &EAGAINS.to_string(), "--hold"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the fixture");
    let mut fixture_stderr = StderrLines::new(fixture.stderr.take().unwrap());
    let line = fixture_stderr.wait_for("pid=", Duration::from_secs(10));
    let announced_fixture = announced(&line, "failing_writes:");
    assert_eq!(announced_fixture.pid, fixture.id());

    let pid = fixture.id().to_string();
    let mut tracer = stdtrace::command(&["--format", "json", "--pid", &pid])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting stdtrace");
    let mut tracer_stderr = StderrLines::new(tracer.stderr.take().unwrap());
    tracer_stderr.wait_for("stdtrace: tracing pid", Duration::from_secs(20));

    let mut stdout = stdtrace::Lines::new(tracer.stdout.take().unwrap());
    let mut stdin = fixture.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    // One report per call path.
    stdout.wait_for_count(2, Duration::from_secs(20), |line| {
        stdtrace::is_write_error_of(line, announced_fixture.pid)
    });
    // Released a second time, it exits; stdtrace then ends by itself.
    stdin.write_all(b"exit\n").unwrap();
    drop(stdin);
    assert!(fixture.wait().unwrap().success());
    let status = stdtrace::wait_with_timeout(tracer, Duration::from_secs(20)).status;
    assert_eq!(
        status.code(),
        Some(0),
        "stderr: {:?}",
        tracer_stderr.rest(Duration::from_millis(100))
    );
    let lines = stdout.all(Duration::from_secs(5));
    let records = stdtrace::parse_json_lines(lines.iter().map(String::as_str));
    check_failed_writes(
        &records,
        &announced_fixture,
        C_CALLERS.0,
        C_CALLERS.1,
        Peers::Alive,
        Drops::None,
    );
    assert_eq!(records.last().unwrap()["stopped"], "every target exited");
}

#[test]
fn node_wide_sees_a_writer_it_did_not_start() {
    if !can_run::require(Need::Root) {
        return;
    }
    let writer = c_writer(true);
    let mut tracer = stdtrace::command(&["--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting stdtrace");
    let mut tracer_stderr = StderrLines::new(tracer.stderr.take().unwrap());
    tracer_stderr.wait_for("tracing every process", Duration::from_secs(20));

    let mut stdout = stdtrace::Lines::new(tracer.stdout.take().unwrap());
    let mut fixture = Command::new(&writer)
        .args([&EPIPES.to_string(), &EAGAINS.to_string(), "--hold"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the fixture");
    let mut fixture_stderr = StderrLines::new(fixture.stderr.take().unwrap());
    let line = fixture_stderr.wait_for("pid=", Duration::from_secs(10));
    let announced_fixture = announced(&line, "failing_writes:");
    let mut stdin = fixture.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    // One report per call path.
    stdout.wait_for_count(2, Duration::from_secs(20), |line| {
        stdtrace::is_write_error_of(line, announced_fixture.pid)
    });
    stdin.write_all(b"exit\n").unwrap();
    drop(stdin);
    assert!(fixture.wait().unwrap().success());

    // Ctrl-C ends tracing cleanly, with a summary.
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    let status = stdtrace::wait_with_timeout(tracer, Duration::from_secs(20)).status;
    assert_eq!(status.code(), Some(130));
    let lines = stdout.all(Duration::from_secs(5));
    let records = stdtrace::parse_json_lines(lines.iter().map(String::as_str));
    check_failed_writes(
        &records,
        &announced_fixture,
        C_CALLERS.0,
        C_CALLERS.1,
        Peers::Alive,
        Drops::Elsewhere,
    );
    assert_eq!(records.last().unwrap()["stopped"], "interrupted");
}
