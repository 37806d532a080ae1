//! Bad input and missing privileges: one clear line on stderr and a non-zero exit, never a
//! panic; and what degrades instead of failing (a binary deleted while it runs).

#[path = "support/can_run.rs"]
mod can_run;
#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/stdtrace.rs"]
mod stdtrace;

use std::{
    io::Write,
    process::{Command, Output, Stdio},
    time::Duration,
};

use can_run::Need;
use stdtrace::{StderrLines, json_lines, write_errors};

/// Asserts a failure with exactly one line on stderr that contains `message`.
fn assert_fails_with(output: &Output, message: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "should fail: {stderr}");
    assert_ne!(output.status.code(), None, "killed by a signal: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line, not {lines:#?}");
    assert!(lines[0].starts_with("stdtrace: "), "{}", lines[0]);
    assert!(
        lines[0].contains(message),
        "{:?} should say {message:?}",
        lines[0]
    );
}

#[test]
fn a_pid_that_does_not_exist() {
    let output = stdtrace::run(&["--pid", "2147483000"]);
    assert_fails_with(&output, "no process with pid 2147483000");
}

#[test]
fn a_command_that_does_not_exist() {
    let output = stdtrace::run(&["--", "no-such-command-for-stdtrace"]);
    assert_fails_with(&output, "no-such-command-for-stdtrace: command not found");
}

#[test]
fn a_command_that_is_not_executable() {
    let output = stdtrace::run(&["--", "/"]);
    assert_fails_with(&output, "/: is a directory");
    let plain = std::env::temp_dir().join(format!("stdtrace-noexec-{}", std::process::id()));
    std::fs::write(&plain, "data").unwrap();
    let output = stdtrace::run(&["--", plain.to_str().unwrap()]);
    std::fs::remove_file(&plain).unwrap();
    assert_fails_with(&output, "permission denied");
}

#[test]
fn an_unknown_errno_name() {
    let output = stdtrace::run(&["--errno", "EPIPE,EBOGUS"]);
    assert_fails_with(&output, "unknown errno `EBOGUS`");
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn a_bad_duration() {
    let output = stdtrace::run(&["--duration", "soon"]);
    assert_fails_with(&output, "`soon` is not a duration");
}

#[test]
fn not_root() {
    if !can_run::require(Need::Root) {
        return;
    }
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        stdtrace::binary(),
        "--duration",
        "1",
    ]);
    let output = stdtrace::run_command(cmd);
    assert_fails_with(&output, "lacks CAP_BPF and CAP_PERFMON (run it with sudo)");
}

#[test]
fn root_without_cap_bpf() {
    if !can_run::require(Need::Root) {
        return;
    }
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--bounding-set=-bpf,-sys_admin",
        "--inh-caps=-bpf,-sys_admin",
        stdtrace::binary(),
        "--duration",
        "1",
    ]);
    let output = stdtrace::run_command(cmd);
    assert_fails_with(&output, "lacks CAP_BPF (run it with sudo)");
}

#[test]
fn a_kernel_without_btf() {
    if !can_run::require(Need::Root) {
        return;
    }
    let output = stdtrace::run(&["--btf", "/nonexistent/vmlinux", "--duration", "1"]);
    assert_fails_with(&output, "publishes no BTF at /nonexistent/vmlinux");
    let garbage = std::env::temp_dir().join(format!("stdtrace-btf-{}", std::process::id()));
    std::fs::write(&garbage, b"this is not BTF at all").unwrap();
    let output = stdtrace::run(&["--btf", garbage.to_str().unwrap(), "--duration", "1"]);
    std::fs::remove_file(&garbage).unwrap();
    assert_fails_with(&output, "malformed BTF");
}

#[test]
fn tracefs_that_cannot_be_mounted() {
    if !can_run::require(Need::Root) {
        return;
    }
    // In a private mount namespace without tracefs, and without CAP_SYS_ADMIN to mount it.
    let script = format!(
        "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug 2>/dev/null; \
         exec setpriv --bounding-set=-sys_admin --inh-caps=-sys_admin {} --duration 1",
        stdtrace::binary()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
    let output = stdtrace::run_command(cmd);
    assert_fails_with(
        &output,
        "tracefs is not mounted at /sys/kernel/tracing and stdtrace could not mount it: permission denied",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("mount -t tracefs nodev /sys/kernel/tracing"),
        "{stderr}"
    );
}

#[test]
fn a_binary_deleted_while_running_is_still_named() {
    if !can_run::require(Need::Root) {
        return;
    }
    let built = fixtures::build_c(
        "writers/failing_writes.c",
        "failing_writes-deleted",
        &["-O1", "-g", "-fomit-frame-pointer"],
    );
    let copy = std::env::temp_dir().join(format!("failing_writes-{}", std::process::id()));
    std::fs::copy(&built, &copy).unwrap();
    let mut fixture = Command::new(&copy)
        .args(["2", "1", "--hold"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut fixture_stderr = StderrLines::new(fixture.stderr.take().unwrap());
    fixture_stderr.wait_for("pid=", Duration::from_secs(10));
    std::fs::remove_file(&copy).unwrap();

    let pid = fixture.id().to_string();
    let mut tracer = stdtrace::command(&["--format", "json", "--pid", &pid])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut tracer_stderr = StderrLines::new(tracer.stderr.take().unwrap());
    tracer_stderr.wait_for("stdtrace: tracing pid", Duration::from_secs(20));
    let mut stdin = fixture.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    fixture_stderr.wait_for("epipe=", Duration::from_secs(10));
    stdin.write_all(b"exit\n").unwrap();
    drop(stdin);
    fixture.wait().unwrap();
    let output = stdtrace::wait_with_timeout(tracer, Duration::from_secs(20));
    let records = json_lines(&output.stdout);
    // One report per call path (the second EPIPE is a repeat of the first's).
    let errors = write_errors(&records, fixture.id());
    assert_eq!(errors.len(), 2, "{records:#?}");
    assert_eq!(records.last().unwrap()["failed_writes"], 3, "{records:#?}");
    for record in errors {
        if record["errno"] == "EPIPE" {
            stdtrace::assert_calls(record, "emit_epipe", "run_epipe_phase");
        } else {
            stdtrace::assert_calls(record, "emit_eagain", "run_eagain_phase");
        }
    }
}
