//! SIGPIPE, as root, with real processes: a C writer killed, ignoring it, handling it and
//! blocking it after its reader exited; a Go program killed for writing to its stdout (and
//! one that lives, catching it with signal.Notify; and one that gets EPIPE on another pipe
//! and goes on); a shell pipeline's first stage killed when the last exits early; a writer
//! stuck in a full pipe, then killed when its reader goes; SIGPIPE sent with kill(1).

#[path = "support/can_run.rs"]
mod can_run;
#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/stdtrace.rs"]
mod stdtrace;

use std::{path::PathBuf, process::Output};

use can_run::Need;
use serde_json::Value;
use stdtrace::{announcement, field, json_lines, of_type, summary};

fn sigpipe_writer() -> PathBuf {
    fixtures::build_c(
        "writers/sigpipe_writer.c",
        "sigpipe_writer",
        &["-O1", "-g", "-fno-omit-frame-pointer"],
    )
}

fn blocked_writer() -> PathBuf {
    fixtures::build_c(
        "writers/blocked_writer.c",
        "blocked_writer",
        &["-O1", "-g", "-fno-omit-frame-pointer"],
    )
}

/// A Go fixture built with `version` in its default flavour; fails under `CI=true` when it
/// is missing, skips otherwise.
fn go_fixture(version: &str, program: &str) -> Option<PathBuf> {
    let path = fixtures::workspace_root()
        .join("target/fixtures/go")
        .join(version)
        .join("default")
        .join(program);
    can_run::require(Need::GoFixture(&path)).then_some(path)
}

fn u64_of(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

/// The checks every write-raised story shares: who, which fd, the reader (`head`) that exited
/// before the SIGPIPE, and the write's stack.
fn check_story(story: &Value, writer_pid: u32, reader_pid: u32, fate: &str) {
    assert_eq!(story["pid"], writer_pid, "{story}");
    assert_eq!(story["fd"], 1, "{story}");
    assert_eq!(story["fate"], fate, "{story}");
    assert_eq!(story["comm"], "sigpipe_writer", "{story}");
    assert!(story.get("sent_by").is_none(), "{story}");
    let reader = &story["reader"];
    assert_eq!(reader["pid"], reader_pid, "{story}");
    assert_eq!(reader["comm"], "head", "{story}");
    assert_eq!(reader["exited"], true, "{story}");
    // The writer waited for head to exit before writing again.
    assert!(
        u64_of(&reader["exit_ts_ns"]) <= u64_of(&story["ts_ns"]),
        "{story}"
    );
    assert!(
        u64_of(&story["fate_ts_ns"]) >= u64_of(&story["ts_ns"]),
        "{story}"
    );
    assert_eq!(story["target"]["kind"], "pipe", "{story}");
    assert_eq!(story["target"]["read_ends"], 0, "{story}");
    stdtrace::assert_calls(story, "write", "write_after_reader");
    stdtrace::assert_calls(story, "write_after_reader", "run_writes");
    stdtrace::assert_calls(story, "run_writes", "main");
}

/// The reader of a shell pipeline's last pipe: `last_stage`, which exited; or, when the shell
/// was slow to close its own copy of the read end (a loaded machine), the shell itself, which
/// then really was the last to hold it, and closed it.
fn check_pipeline_reader(story: &Value, summary: &Value, last_stage: &str) {
    let reader = &story["reader"];
    if reader["comm"] == "sh" {
        assert_eq!(reader["pid"], summary["command"]["pid"], "{story}");
        assert!(reader["closed_ts_ns"].is_u64(), "{story}");
    } else {
        assert_eq!(reader["comm"], last_stage, "{story}");
        assert_eq!(reader["exited"], true, "{story}");
    }
}

/// Runs `sigpipe_writer MODE WRITES` under stdtrace; returns the output, the writer's and the
/// reader's pids, and the records.
fn run_writer(mode: &str, writes: u32) -> (Output, u32, u32, Vec<Value>) {
    let writer = sigpipe_writer();
    let writes = writes.to_string();
    let output = stdtrace::run(&[
        "--format",
        "json",
        "--",
        writer.to_str().unwrap(),
        mode,
        &writes,
    ]);
    let line = announcement(&output, "sigpipe_writer: pid=");
    let records = json_lines(&output.stdout);
    (output, field(&line, "pid"), field(&line, "reader"), records)
}

/// SIGPIPE at its default: the first write after the reader exited kills the writer. One
/// record, fate `killed`, and stdtrace exits 141 as a shell would.
#[test]
fn c_writer_killed() {
    if !can_run::require(Need::Root) {
        return;
    }
    let (output, writer, reader, records) = run_writer("default", 5);
    assert_eq!(output.status.code(), Some(141), "{output:?}");
    let stories = of_type(&records, "sigpipe");
    assert_eq!(stories.len(), 1, "{records:#?}");
    check_story(stories[0], writer, reader, "killed");
    assert_eq!(stories[0]["count"], 1);

    let summary = summary(&records);
    assert_eq!(summary["command"]["signal"], 13, "{summary}");
    assert_eq!(summary["command"]["exit_code"], 141, "{summary}");
    let told = summary["sigpipes"].as_array().unwrap();
    assert_eq!(told.len(), 1, "{summary}");
    assert_eq!(told[0]["fate"], "killed");
    assert_eq!(told[0]["count"], 1);
    assert_eq!(told[0]["pid"], writer);
    assert_eq!(told[0]["reader"]["pid"], reader);
}

/// SIG_IGN: every write fails with EPIPE and the writer goes on. One record, fate `ignored`;
/// the summary counts every SIGPIPE exactly.
#[test]
fn c_writer_ignoring_sigpipe() {
    if !can_run::require(Need::Root) {
        return;
    }
    let (output, writer, reader, records) = run_writer("ignore", 3000);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stories = of_type(&records, "sigpipe");
    assert_eq!(stories.len(), 1, "{stories:#?}");
    check_story(stories[0], writer, reader, "ignored");
    assert_eq!(
        announcement(&output, "sigpipe_writer: epipe="),
        "sigpipe_writer: epipe=3000 handled=0"
    );

    let summary = summary(&records);
    let told = summary["sigpipes"].as_array().unwrap();
    assert_eq!(told.len(), 1, "{summary}");
    assert_eq!(told[0]["fate"], "ignored");
    assert_eq!(told[0]["count"], 3000, "{summary}");
    let epipes: u64 = summary["totals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|total| total["pid"] == writer && total["errno"] == "EPIPE")
        .map(|total| u64_of(&total["failures"]))
        .sum();
    assert_eq!(epipes, 3000, "{summary}");
}

/// A handler: it runs for every SIGPIPE; one record, fate `handled`.
#[test]
fn c_writer_handling_sigpipe() {
    if !can_run::require(Need::Root) {
        return;
    }
    let (output, writer, reader, records) = run_writer("handler", 200);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        announcement(&output, "sigpipe_writer: epipe="),
        "sigpipe_writer: epipe=200 handled=200"
    );
    let stories = of_type(&records, "sigpipe");
    assert_eq!(stories.len(), 1, "{stories:#?}");
    check_story(stories[0], writer, reader, "handled");
    let told = summary(&records)["sigpipes"].as_array().unwrap().clone();
    assert_eq!(told.len(), 1);
    assert_eq!(told[0]["fate"], "handled");
    assert_eq!(told[0]["count"], 200);
}

/// SIGPIPE blocked in the thread's mask: it stays pending, the writes fail with EPIPE.
#[test]
fn c_writer_blocking_sigpipe() {
    if !can_run::require(Need::Root) {
        return;
    }
    let (output, writer, reader, records) = run_writer("block", 20);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stories = of_type(&records, "sigpipe");
    assert_eq!(stories.len(), 1, "{stories:#?}");
    check_story(stories[0], writer, reader, "blocked");
    let told = summary(&records)["sigpipes"].as_array().unwrap().clone();
    assert_eq!(told[0]["count"], 20);
}

/// Go's rule: EPIPE on stdout makes the runtime raise SIGPIPE on itself and die. The kernel's
/// SIGPIPE and the runtime's re-raise are one story: one record, `killed`, with the goroutine
/// that wrote, even though the program died a millisecond after its exec.
#[test]
fn go_writer_killed_on_stdout() {
    if !can_run::require(Need::Root) {
        return;
    }
    for version in ["1.19", "1.22.10", "1.25.5", "1.27.3"] {
        let Some(piper) = go_fixture(version, "piper") else {
            return;
        };
        let script = format!("{} | head -c 16 >/dev/null", piper.display());
        let output = stdtrace::run(&["--format", "json", "--", "sh", "-c", &script]);
        let line = announcement(&output, "piper pid=");
        let (pid, goid) = (field(&line, "pid"), field(&line, "goroutine"));
        let records = json_lines(&output.stdout);
        let stories = of_type(&records, "sigpipe");
        assert_eq!(stories.len(), 1, "go{version}: {records:#?}");
        let story = stories[0];
        assert_eq!(story["pid"], pid, "go{version}: {story}");
        assert_eq!(story["fd"], 1, "go{version}: {story}");
        assert_eq!(story["fate"], "killed", "go{version}: {story}");
        assert_eq!(story["count"], 1, "go{version}: {story}");
        assert!(story.get("sent_by").is_none(), "go{version}: {story}");
        assert_eq!(story["go"]["goid"], goid, "go{version}: {story}");
        let summary = summary(&records);
        check_pipeline_reader(story, summary, "head");
        stdtrace::assert_calls(story, "fmt.Println", "main.printLines");

        let told = summary["sigpipes"].as_array().unwrap();
        assert_eq!(told.len(), 1, "go{version}: {summary}");
        assert_eq!(told[0]["fate"], "killed");
        // The shell's status is head's: 0.
        assert_eq!(output.status.code(), Some(0), "go{version}: {output:?}");
    }
}

/// A Go program that catches SIGPIPE with signal.Notify lives on: fate `handled`.
#[test]
fn go_writer_catching_sigpipe() {
    if !can_run::require(Need::Root) {
        return;
    }
    let Some(piper) = go_fixture("1.25.5", "piper") else {
        return;
    };
    let script = format!("{} notify | head -c 16 >/dev/null", piper.display());
    let output = stdtrace::run(&["--format", "json", "--", "sh", "-c", &script]);
    let line = announcement(&output, "piper epipe goroutine=");
    let goid = line
        .strip_prefix("piper epipe goroutine=")
        .and_then(|rest| rest.split(':').next())
        .and_then(|id| id.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{line}"));
    let records = json_lines(&output.stdout);
    let stories = of_type(&records, "sigpipe");
    assert_eq!(stories.len(), 1, "{records:#?}");
    assert_eq!(stories[0]["fate"], "handled", "{}", stories[0]);
    assert_eq!(stories[0]["go"]["goid"], goid, "{}", stories[0]);
}

/// EPIPE on a pipe that is not stdout or stderr: the Go program goes on, and there is no
/// SIGPIPE story, only the failed write.
#[test]
fn go_writer_epipe_on_another_pipe() {
    if !can_run::require(Need::Root) {
        return;
    }
    let Some(writer) = go_fixture("1.25.5", "writer") else {
        return;
    };
    let output = stdtrace::run(&["--format", "json", "--", writer.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let line = announcement(&output, "EPIPE goroutine=");
    let goid = field(&line, "goroutine");
    let records = json_lines(&output.stdout);
    let epipes: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "write_error" && r["errno"] == "EPIPE")
        .collect();
    assert_eq!(epipes.len(), 1, "{records:#?}");
    assert_eq!(epipes[0]["go"]["goid"], goid);
    assert!(of_type(&records, "sigpipe").is_empty(), "{records:#?}");
    assert_eq!(summary(&records)["sigpipes"], serde_json::json!([]));
}

/// `yes | head -n1`: head exits after one line, and yes is killed at its next write. The
/// story names yes, its fd 1, and head, which exited before the kill; the text tells it in
/// that order.
#[test]
fn pipeline_first_stage_killed() {
    if !can_run::require(Need::Root) {
        return;
    }
    let script = "yes | head -n1 >/dev/null";
    let output = stdtrace::run(&["--format", "json", "--", "sh", "-c", script]);
    let records = json_lines(&output.stdout);
    let stories = of_type(&records, "sigpipe");
    assert_eq!(stories.len(), 1, "{records:#?}");
    let story = stories[0];
    assert_eq!(story["comm"], "yes", "{story}");
    assert_eq!(story["fd"], 1, "{story}");
    assert_eq!(story["fate"], "killed", "{story}");
    check_pipeline_reader(story, summary(&records), "head");
    let reader_gone = story["reader"]["closed_ts_ns"]
        .as_u64()
        .unwrap_or_else(|| u64_of(&story["reader"]["exit_ts_ns"]));
    assert!(reader_gone <= u64_of(&story["ts_ns"]), "{story}");
    assert!(
        u64_of(&story["ts_ns"]) <= u64_of(&story["fate_ts_ns"]),
        "{story}"
    );
    let epipe = of_type(&records, "write_error");
    assert_eq!(epipe.len(), 1, "{records:#?}");
    assert_eq!(epipe[0]["pid"], story["pid"]);
    assert_eq!(epipe[0]["errno"], "EPIPE");

    let output = stdtrace::run(&["--color", "never", "--", "sh", "-c", script]);
    let text = String::from_utf8_lossy(&output.stdout);
    let reader_line = text
        .find(" reader pid ")
        .unwrap_or_else(|| panic!("{text}"));
    let killed_line = text
        .find("(yes): killed by SIGPIPE at write(1)")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(reader_line < killed_line, "{text}");
    assert!(
        text.contains("SIGPIPE: pid ") && text.contains("(yes) fd 1 killed (1 times)"),
        "{text}"
    );
}

/// A writer stuck in a full pipe whose reader never reads; the reader exits and the writer is
/// killed: stuck, reader gone, killed, in that order, with times.
#[test]
fn stuck_then_reader_gone_then_killed() {
    if !can_run::require(Need::Root) {
        return;
    }
    let script = format!("{} | sleep 1", blocked_writer().display());
    let output = stdtrace::run(&[
        "--format", "json", "--slow", "300ms", "--", "sh", "-c", &script,
    ]);
    let line = announcement(&output, "blocked_writer: pid=");
    let writer = field(&line, "pid");
    let records = json_lines(&output.stdout);
    let stuck: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "blocked_write" && r["state"] == "stuck")
        .collect();
    assert_eq!(stuck.len(), 1, "{records:#?}");
    let stories = of_type(&records, "sigpipe");
    assert_eq!(stories.len(), 1, "{records:#?}");
    let story = stories[0];
    assert_eq!(story["pid"], writer);
    assert_eq!(story["fate"], "killed");
    assert_eq!(story["reader"]["comm"], "sleep");
    let blocked_since = u64_of(&story["blocked_since_ns"]);
    assert!(u64_of(&story["blocked_ms"]) >= 900, "{story}");
    let reader_exit = u64_of(&story["reader"]["exit_ts_ns"]);
    let killed = u64_of(&story["fate_ts_ns"]);
    assert!(blocked_since < u64_of(&stuck[0]["ts_ns"]), "{story}");
    assert!(u64_of(&stuck[0]["ts_ns"]) < reader_exit, "{story}");
    assert!(reader_exit <= killed, "{story}");
    stdtrace::assert_calls(story, "emit_line", "log_forever");

    // The text tells it in that order, in one block.
    let output = stdtrace::run(&[
        "--color", "never", "--slow", "300ms", "--", "sh", "-c", &script,
    ]);
    let text = String::from_utf8_lossy(&output.stdout);
    // Each part after the one before it.
    let mut from = 0;
    for needle in [
        "(blocked_writer): write(1) blocked, for ",
        " reader pid ",
        ") exited\n",
        "(blocked_writer): killed by SIGPIPE at write(1)",
    ] {
        let at = text[from..]
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} after byte {from}:\n{text}"));
        from += at + needle.len();
    }
    assert!(
        text.contains("(blocked_writer) fd 1 killed (1 times), blocked "),
        "{text}"
    );
}

/// SIGPIPE sent by another process with kill(2): reported with its sender, not as a broken
/// pipe.
#[test]
fn sigpipe_sent_by_kill() {
    if !can_run::require(Need::Root) {
        return;
    }
    let script = "sleep 5 & echo \"killer pid=$$ victim=$!\" >&2; kill -PIPE $!; wait";
    let output = stdtrace::run(&["--format", "json", "--", "sh", "-c", script]);
    let line = announcement(&output, "killer pid=");
    let (killer, victim) = (field(&line, "pid"), field(&line, "victim"));
    let records = json_lines(&output.stdout);
    let stories = of_type(&records, "sigpipe");
    assert_eq!(stories.len(), 1, "{records:#?}");
    let story = stories[0];
    assert_eq!(story["pid"], victim, "{story}");
    assert_eq!(story["fd"], Value::Null, "{story}");
    assert_eq!(story["fate"], "killed", "{story}");
    assert_eq!(story["sent_by"]["pid"], killer, "{story}");
    assert_eq!(story["reader"], Value::Null, "{story}");
    assert!(of_type(&records, "write_error").is_empty(), "{records:#?}");
}
