//! The tracer end to end, as root: the real kernel programs, real fixture programs, exact
//! counts, fds, targets, peers and function names, in launch, `--pid` and node-wide mode.

#[path = "support/can_run.rs"]
mod can_run;
#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/stdtrace.rs"]
mod stdtrace;

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use can_run::Need;
use serde_json::Value;
use stdtrace::{StderrLines, assert_calls, field, json_lines, write_errors};

const EPIPES: usize = 5;
const EAGAINS: usize = 3;

/// The C writer, with frame pointers or without.
fn c_writer(frame_pointers: bool) -> PathBuf {
    if frame_pointers {
        fixtures::build_c(
            "writers/failing_writes.c",
            "failing_writes-fp",
            &["-O1", "-g", "-fno-omit-frame-pointer"],
        )
    } else {
        fixtures::build_c(
            "writers/failing_writes.c",
            "failing_writes-nofp",
            &["-O1", "-g", "-fomit-frame-pointer"],
        )
    }
}

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

/// What the fixture said about itself on stderr.
struct Announced {
    pid: u32,
    epipe_fd: u32,
    eagain_fd: u32,
}

fn announced(stderr: &str, prefix: &str) -> Announced {
    let line = stderr
        .lines()
        .find(|line| line.starts_with(prefix) && line.contains("pid="))
        .unwrap_or_else(|| panic!("the fixture did not announce itself: {stderr}"));
    Announced {
        pid: field(line, "pid"),
        epipe_fd: field(line, "epipe_fd"),
        eagain_fd: field(line, "eagain_fd"),
    }
}

/// Whether the fixture was still running when stdtrace looked for who holds its pipes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Peers {
    /// Kept alive until stdtrace had reported: the holders are named.
    Alive,
    /// Exited at once: only the kernel's counts of open ends are certain.
    Gone,
}

/// Checks the failed writes of one fixture run: exact counts per errno, the fds, the target,
/// the peers, and who called `write`.
fn check_failed_writes(
    records: &[Value],
    fixture: &Announced,
    epipe_callers: [&str; 2],
    eagain_callers: [&str; 2],
    peers: Peers,
) {
    let errors = write_errors(records, fixture.pid);
    let epipe: Vec<&Value> = errors
        .iter()
        .copied()
        .filter(|r| r["errno"] == "EPIPE")
        .collect();
    let eagain: Vec<&Value> = errors
        .iter()
        .copied()
        .filter(|r| r["errno"] == "EAGAIN")
        .collect();
    // Each phase fails at one call path: its first failure is reported in full, the rest are
    // counted as repeats of its site.
    assert_eq!(epipe.len(), 1, "EPIPE events: {errors:#?}");
    assert_eq!(eagain.len(), 1, "EAGAIN events: {errors:#?}");
    assert_eq!(errors.len(), 2);
    assert_repeats(records, epipe[0], EPIPES as u64 - 1);
    assert_repeats(records, eagain[0], EAGAINS as u64 - 1);
    for record in &epipe {
        assert_eq!(record["fd"], fixture.epipe_fd, "{record}");
        assert_eq!(record["syscall"], "write");
        assert_eq!(record["count"], 1);
        assert_eq!(record["tid"], fixture.pid);
        assert_eq!(record["target"]["kind"], "pipe", "{record}");
        assert_eq!(record["target"]["nonblocking"], false, "{record}");
        // The read end was closed: nobody can read, which is why the write failed.
        assert_eq!(record["target"]["read_ends"], 0, "{record}");
        assert_eq!(record["target"]["write_ends"], 1, "{record}");
        assert_eq!(
            record["target"]["readers"],
            serde_json::json!([]),
            "{record}"
        );
        if peers == Peers::Alive {
            let writers = record["target"]["writers"].as_array().expect("writers");
            assert_eq!(writers.len(), 1, "{record}");
            assert_eq!(writers[0]["pid"], fixture.pid, "{record}");
            assert_eq!(
                writers[0]["fds"],
                serde_json::json!([fixture.epipe_fd]),
                "{record}"
            );
        }
        assert_calls(record, "write", epipe_callers[0]);
        assert_calls(record, epipe_callers[0], epipe_callers[1]);
    }
    for record in &eagain {
        assert_eq!(record["fd"], fixture.eagain_fd, "{record}");
        assert_eq!(record["count"], 1);
        assert_eq!(record["target"]["kind"], "pipe", "{record}");
        assert_eq!(record["target"]["nonblocking"], true, "{record}");
        // The fixture holds the read end of its full pipe itself and never reads it.
        assert_eq!(record["target"]["read_ends"], 1, "{record}");
        assert_eq!(record["target"]["write_ends"], 1, "{record}");
        if peers == Peers::Alive {
            let readers = record["target"]["readers"].as_array().expect("readers");
            assert_eq!(readers.len(), 1, "{record}");
            assert_eq!(readers[0]["pid"], fixture.pid, "{record}");
            assert_eq!(readers[0]["comm"], record["comm"], "{record}");
        }
        assert_calls(record, "write", eagain_callers[0]);
        assert_calls(record, eagain_callers[0], eagain_callers[1]);
    }
    let summary = records.last().expect("some output");
    assert_eq!(summary["type"], "summary", "the last line is the summary");
    let totals: Vec<&Value> = summary["totals"]
        .as_array()
        .expect("totals")
        .iter()
        .filter(|total| total["pid"] == fixture.pid)
        .collect();
    assert_eq!(totals.len(), 2, "{totals:#?}");
    let total = |errno: &str, fd: u32| {
        totals
            .iter()
            .find(|total| total["errno"] == errno && total["fd"] == fd)
            .map(|total| total["failures"].as_u64().unwrap_or(0))
            .unwrap_or(0)
    };
    assert_eq!(total("EPIPE", fixture.epipe_fd), EPIPES as u64);
    assert_eq!(total("EAGAIN", fixture.eagain_fd), EAGAINS as u64);
    assert_eq!(summary["dropped"], 0);
    assert_eq!(summary["kernel"]["parked_full"], 0, "{summary}");
}

/// The failures repeated at `first`'s call site (its pid, fd, errno and site), as the last
/// `repeats` record for it says, are `expected`.
fn assert_repeats(records: &[Value], first: &Value, expected: u64) {
    let site = first["site"].as_u64().expect("a write_error has a site");
    let repeats: Vec<&Value> = records
        .iter()
        .filter(|record| {
            record["type"] == "repeats"
                && record["pid"] == first["pid"]
                && record["fd"] == first["fd"]
                && record["errno"] == first["errno"]
                && record["site"] == site
        })
        .collect();
    let counted = repeats
        .last()
        .map_or(0, |record| record["count"].as_u64().unwrap());
    assert_eq!(counted, expected, "repeats of {first}: {repeats:#?}");
    if let Some(last) = repeats.last() {
        let first_ts = last["first_ts_ns"].as_u64().unwrap();
        let last_ts = last["last_ts_ns"].as_u64().unwrap();
        let reported_ts = first["ts_ns"].as_u64().unwrap();
        assert!(
            reported_ts <= first_ts && first_ts <= last_ts,
            "repeat times {first_ts}..{last_ts} after the first at {reported_ts}"
        );
    }
}

const C_CALLERS: ([&str; 2], [&str; 2]) = (
    ["emit_epipe", "run_epipe_phase"],
    ["emit_eagain", "run_eagain_phase"],
);

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
    check_failed_writes(&records, &fixture, C_CALLERS.0, C_CALLERS.1, Peers::Alive);
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
    check_failed_writes(&records, &fixture, C_CALLERS.0, C_CALLERS.1, Peers::Gone);
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
    );
    assert_eq!(records.last().unwrap()["stopped"], "interrupted");
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
fn errno_list_selects_what_is_reported() {
    if !can_run::require(Need::Root) {
        return;
    }
    let writer = c_writer(true);
    let output = stdtrace::run(&[
        "--format",
        "json",
        "--errno",
        "EPIPE,EIO",
        "--",
        writer.to_str().unwrap(),
        "4",
        "2",
    ]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let fixture = announced(&stderr, "failing_writes:");
    let records = json_lines(&output.stdout);
    let errors = write_errors(&records, fixture.pid);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0]["errno"], "EPIPE");
    assert_repeats(&records, errors[0], 3);
    assert!(records.iter().all(|record| record["errno"] != "EAGAIN"));
    assert_eq!(records.last().unwrap()["failed_writes"], 4);
}

#[test]
fn text_output_tells_the_story() {
    if !can_run::require(Need::Root) {
        return;
    }
    let writer = c_writer(true);
    let output = stdtrace::run(&["--color", "never", "--", writer.to_str().unwrap(), "3", "2"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let fixture = announced(&stderr, "failing_writes:");
    let header = format!(
        "pid {} (failing_writes-): write({}, 1 byte) failed: EPIPE (Broken pipe)",
        fixture.pid, fixture.epipe_fd
    );
    assert!(text.contains(&header), "{text}");
    assert!(
        text.contains("readers: none, nobody holds the read end"),
        "{text}"
    );
    assert!(text.contains("emit_epipe at failing_writes.c:"), "{text}");
    // Repeats of the same stack are counted, not printed again.
    assert_eq!(text.matches("failed: EPIPE").count(), 1, "{text}");
    assert!(
        text.contains("2 more from the same stack (3 in all)"),
        "{text}"
    );
    assert!(text.contains("stdtrace: traced for"), "{text}");
    assert!(
        text.contains("failed writes: 5 (2 reported, 3 repeats of them counted, 0 dropped)"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "no colour when asked for none");
}

#[test]
fn quiet_prints_only_the_summary() {
    if !can_run::require(Need::Root) {
        return;
    }
    let writer = c_writer(true);
    let output = stdtrace::run(&[
        "-q",
        "--format",
        "json",
        "--",
        writer.to_str().unwrap(),
        "3",
        "2",
    ]);
    assert_eq!(output.status.code(), Some(0));
    let records = json_lines(&output.stdout);
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["type"], "summary");
    assert_eq!(records[0]["failed_writes"], 5);
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

/// The README's demonstration: a log collector that died (EPIPE) and a metrics agent that
/// stopped reading (EAGAIN), each named where it matters.
#[test]
fn the_demonstration_tells_its_story() {
    if !can_run::require(Need::Root) {
        return;
    }
    let demo = fixtures::build_c("demo/writer.c", "demo-writer", &["-O1", "-g"]);
    let output = stdtrace::run(&["--format", "json", "--", demo.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let records: Vec<Value> = json_lines(&output.stdout)
        .into_iter()
        .filter(|record| record["type"] != "write_error" || record["comm"] == "demo-writer")
        .collect();
    let errors: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "write_error")
        .collect();
    // Three lines lost and two metrics dropped, each at one call path: the first of each is
    // reported, the others counted as its repeats.
    assert_eq!(errors.len(), 2, "{records:#?}");
    assert_repeats(&records, errors[0], 2);
    assert_repeats(&records, errors[1], 1);
    for record in &errors[..1] {
        assert_eq!(record["errno"], "EPIPE");
        assert_calls(record, "ship_log_line", "main");
    }
    for record in &errors[1..] {
        assert_eq!(record["errno"], "EAGAIN");
        assert_calls(record, "publish_metric", "main");
        let readers = record["target"]["readers"].as_array().unwrap();
        assert_eq!(readers.len(), 1, "{record}");
        assert_eq!(readers[0]["comm"], "metrics-agent");
    }
}
