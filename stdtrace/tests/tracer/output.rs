//! What is reported and how: the errno filter, text, quiet and json output, the demonstration.

use serde_json::Value;

use crate::{
    announced, assert_repeats, c_writer,
    can_run::{self, Need},
    fixtures,
    stdtrace::{self, assert_calls, json_lines, write_errors},
};

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
