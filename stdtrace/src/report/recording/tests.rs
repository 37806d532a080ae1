//! The writer without root: rotation by size and count, headers and summaries, drops.

use super::{read::Record, *};
use crate::report::{
    Clock,
    record::{RecordType, samples},
};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stdtrace-unit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn summary(stopped: &str) -> Summary {
    serde_json::from_value(serde_json::json!({
        "type": "summary", "duration_ms": 1, "stopped": stopped, "failed_writes": 0,
        "reported": 0, "dropped": 0, "repeats": 0, "totals": [], "blocked_writes": 0,
        "stuck": [], "sigpipes": [], "kernel": {}
    }))
    .unwrap()
}

fn deadline() -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_secs(20)
}

fn files_in(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn files_rotate_by_size_and_count_each_with_a_header_and_a_summary() {
    let dir = scratch("rotate");
    let sink = Sink::Directory {
        dir: dir.clone(),
        max_size: 8 * 1024,
        max_files: 3,
    };
    let mut recording = Recording::start(
        sink,
        header::header(vec!["record".into()], Clock::now()),
        Arc::default(),
    )
    .unwrap();
    recording.summary_so_far(&summary("still tracing"));
    let report = samples::report();
    for _ in 0..100 {
        recording.record(&report);
        // A queue of 4,096 never fills here: nothing is dropped.
    }
    let mut last = summary("the command exited");
    recording.finish(&mut last, deadline());
    assert_eq!(last.recording_records_dropped, Some(0));
    assert_eq!(last.output_records_dropped, Some(0));

    let files = files_in(&dir);
    assert_eq!(files.len(), 3, "the oldest removed: {files:?}");
    let mut numbers = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let bytes = std::fs::read(file).unwrap();
        let parsed = read::parse_records(&bytes).unwrap();
        let Record::Header(header) = &parsed.lines[0].record else {
            panic!("{file:?} starts with its header");
        };
        numbers.push(header.file);
        let Some(Record::Summary(summary)) = parsed.lines.last().map(|line| &line.record) else {
            panic!("{file:?} ends with a summary");
        };
        if index + 1 < files.len() {
            assert_eq!(summary.stopped, "still tracing");
            assert!(bytes.len() <= 8 * 1024, "{file:?}: {} bytes", bytes.len());
        } else {
            assert_eq!(summary.stopped, "the command exited");
            assert_eq!(summary.output_records_dropped, Some(0));
        }
        assert!(
            parsed.lines[1..parsed.lines.len() - 1]
                .iter()
                .all(|line| matches!(&line.record, Record::Write(w) if **w == report))
        );
    }
    let first = numbers[0];
    assert!(first >= 2, "files 0.. were removed: {numbers:?}");
    assert_eq!(numbers, [first, first + 1, first + 2]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_file_that_cannot_be_opened_is_an_error_at_once() {
    let err = Recording::start(
        Sink::File("/nonexistent-dir/stdtrace.jsonl".into()),
        header::header(Vec::new(), Clock::now()),
        Arc::default(),
    )
    .err()
    .expect("an error");
    assert_eq!(
        err.to_string(),
        "opening /nonexistent-dir/stdtrace.jsonl for the recording"
    );
    let header = header::header(Vec::new(), Clock::now());
    assert_eq!(header.record_type, RecordType::Header);
    assert!(!header.kernel.is_empty() && !header.host.is_empty());
}
