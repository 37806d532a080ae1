//! Recording and reading back, as root, with real processes: a run with an EPIPE/EAGAIN storm,
//! a writer stuck on a full pipe that dies of SIGPIPE when its reader exits, and a SIGPIPE
//! death of its own, recorded into rotated files; `report` of them against the live run; a
//! recorder killed with SIGKILL; one process's story; SIGHUP and logrotate. (`report` of
//! hand-written files, bad input and the command line's errors, without root: `report.rs`.)

#[path = "support/can_run.rs"]
mod can_run;
#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/stdtrace.rs"]
mod stdtrace;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::Duration,
};

use can_run::Need;
use serde_json::Value;
use stdtrace::{Lines, json_lines};

fn fixture(source: &str, name: &str) -> PathBuf {
    fixtures::build_c(source, name, &["-O1", "-g", "-fno-omit-frame-pointer"])
}

/// The run every test records: a storm of 3,000 EPIPEs and 3,000 EAGAINs, a writer stuck
/// into `sleep 2` (which then dies of SIGPIPE), and a writer killed by SIGPIPE at once.
fn incident_script() -> String {
    let failing = fixture("writers/failing_writes.c", "failing_writes-fp");
    let blocked = fixture("writers/blocked_writer.c", "blocked_writer");
    let sigpipe = fixture("writers/sigpipe_writer.c", "sigpipe_writer");
    format!(
        "{} 3000 3000; {} | sleep 2; {} default 5; true",
        failing.display(),
        blocked.display(),
        sigpipe.display()
    )
}

/// A fresh directory for one test's recording.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stdtrace-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the scratch directory");
    dir
}

fn recorded_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("reading the recording directory")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    files.sort();
    files
}

fn report(args: &[&str]) -> Output {
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    let output = stdtrace::run(&all);
    assert!(
        output.status.success(),
        "report {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Counts of each record type.
fn types(records: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for record in records {
        *counts
            .entry(record["type"].as_str().unwrap_or("?").to_owned())
            .or_insert(0) += 1;
    }
    counts
}

/// Text with its `HH:MM:SS.mmm` times blanked.
fn without_times(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| {
            let mut out = String::new();
            let bytes = line.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                let is_time = bytes.len() >= i + 12
                    && line.is_char_boundary(i)
                    && line.is_char_boundary(i + 12)
                    && line[i..i + 12].bytes().enumerate().all(|(k, b)| match k {
                        2 | 5 => b == b':',
                        8 => b == b'.',
                        _ => b.is_ascii_digit(),
                    });
                if is_time {
                    out.push_str("TIME");
                    i += 12;
                } else {
                    let c = line[i..].chars().next().unwrap_or(' ');
                    out.push(c);
                    i += c.len_utf8();
                }
            }
            out
        })
        .collect()
}

/// The live run's text and `report`'s, compared: every block and the summary the same, in the
/// same order, only times differing. The "... N more from the same stack" lines are said when
/// counts come in (once a second live, at each `repeats` record read back): their final
/// totals must be the same.
fn assert_same_text(live: &str, reported: &str) {
    let (live, reported) = (without_times(live), without_times(reported));
    let (live_blocks, live_repeats): (Vec<_>, Vec<_>) =
        live.iter().partition(|line| !line.starts_with("  ... "));
    let (reported_blocks, reported_repeats): (Vec<_>, Vec<_>) = reported
        .iter()
        .partition(|line| !line.starts_with("  ... "));
    assert_eq!(
        live_blocks, reported_blocks,
        "live:\n{live:#?}\nreported:\n{reported:#?}"
    );
    let finals = |lines: &[&String]| {
        let mut last = BTreeMap::new();
        for line in lines {
            let (what, _) = line.split_once(':').expect("a repeat line has a colon");
            let total = line.rsplit_once('(').map(|(_, total)| total.to_owned());
            last.insert(what.to_owned(), total);
        }
        last
    };
    assert_eq!(finals(&live_repeats), finals(&reported_repeats));
    assert!(!live_repeats.is_empty(), "the storm repeats: {live:#?}");
}

/// `record` with a tiny --max-size: files rotate, each starts with a header and ends with a
/// summary; the records across them are what `--format json` printed on stdout in the same
/// run, the same types and counts and the same exact totals.
#[test]
fn recorded_files_hold_what_stdout_printed() {
    if !can_run::require(Need::Root) {
        return;
    }
    let dir = scratch("record");
    let script = incident_script();
    let output = stdtrace::run(&[
        "record",
        "--output",
        dir.to_str().unwrap(),
        "--max-size",
        "8KiB",
        "--max-files",
        "50",
        "--slow",
        "500ms",
        "--format",
        "json",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let live = json_lines(&output.stdout);
    let files = recorded_files(&dir);
    assert!(files.len() >= 2, "8KiB files rotate: {files:?}");
    let mut in_files = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let text = std::fs::read_to_string(file).expect("reading a recorded file");
        let records = stdtrace::parse_json_lines(text.lines());
        let header = &records[0];
        assert_eq!(header["type"], "header", "{file:?}");
        assert_eq!(header["file"], index as u64);
        assert_eq!(header["schema"], 1);
        assert!(header["wall_minus_monotonic_ns"].as_i64().unwrap() > 0);
        assert_eq!(
            header["boot_id"].as_str().unwrap(),
            std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .unwrap()
                .trim()
        );
        assert!(
            header["options"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o == "--max-size")
        );
        let last = records.last().unwrap();
        assert_eq!(
            last["type"], "summary",
            "{file:?} ends with the summary so far"
        );
        if index + 1 < files.len() {
            assert_eq!(last["stopped"], "still tracing");
            // Rotated before the record that would take it past 8KiB (with the summary
            // that ends it), unless that record alone is larger.
            let summary_len = text.lines().last().unwrap().len() + 1;
            assert!(
                records.len() == 3 || text.len() <= 8 * 1024 + summary_len,
                "{file:?}: {} bytes",
                text.len()
            );
        }
        in_files.extend(
            records
                .into_iter()
                .filter(|record| record["type"] != "header" && record["type"] != "summary"),
        );
    }
    let final_summary = live.last().unwrap().clone();
    assert_eq!(final_summary["type"], "summary");
    assert_eq!(final_summary["output_records_dropped"], 0);
    let live_records: Vec<Value> = live[..live.len() - 1].to_vec();
    assert_eq!(types(&in_files), types(&live_records));
    assert_eq!(
        in_files, live_records,
        "the same records, in the same order"
    );
    // The story's parts are there: the storm, stuck, killed.
    let counts = types(&live_records);
    assert_eq!(counts.get("sigpipe"), Some(&3), "{counts:?}");
    assert!(
        counts.get("blocked_write").is_some_and(|&n| n >= 1),
        "{counts:?}"
    );
    // `report --format json` passes them through and ends with the same summary.
    let reported = json_lines(&report(&["--format", "json", dir.to_str().unwrap()]).stdout);
    assert_eq!(reported.last(), Some(&final_summary));
    assert_eq!(&reported[..reported.len() - 1], &live_records[..]);
    let totals: Vec<(u64, &str, u64)> = final_summary["totals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|total| total["comm"] == "failing_writes-")
        .map(|total| {
            (
                total["fd"].as_u64().unwrap(),
                total["errno"].as_str().unwrap(),
                total["failures"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(totals, [(4, "EPIPE", 3000), (6, "EAGAIN", 3000)]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--max-files` bounds the recording: the oldest files are removed, the last is complete.
#[test]
fn max_files_bounds_the_recording() {
    if !can_run::require(Need::Root) {
        return;
    }
    let dir = scratch("max-files");
    let script = incident_script();
    let output = stdtrace::run(&[
        "record",
        "--output",
        dir.to_str().unwrap(),
        "--max-size",
        "4KiB",
        "--max-files",
        "2",
        "--slow",
        "500ms",
        "-q",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let files = recorded_files(&dir);
    assert_eq!(files.len(), 2, "{files:?}");
    let last = std::fs::read_to_string(&files[1]).unwrap();
    let records = stdtrace::parse_json_lines(last.lines());
    let header = &records[0];
    assert!(
        header["file"].as_u64().unwrap() >= 2,
        "older files were removed: {header}"
    );
    let summary = records.last().unwrap();
    assert_eq!(summary["stopped"], "the command exited");
    // The summary is the whole run's, even with the first files gone.
    let epipes: u64 = summary["totals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|total| total["comm"] == "failing_writes-" && total["errno"] == "EPIPE")
        .map(|total| total["failures"].as_u64().unwrap())
        .sum();
    assert_eq!(epipes, 3000);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--output FILE` on `trace`: the live text on stdout, the records in the file; `report` of
/// the file prints the same text, only times differing. `--story` tells the stuck writer's
/// death in order.
#[test]
fn report_prints_what_the_live_run_printed() {
    if !can_run::require(Need::Root) {
        return;
    }
    let dir = scratch("output-file");
    let file = dir.join("trace.jsonl");
    let script = incident_script();
    let output = stdtrace::run(&[
        "--output",
        file.to_str().unwrap(),
        "--slow",
        "500ms",
        "--color",
        "never",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let live = String::from_utf8(output.stdout).unwrap();
    let reported = report(&["--color", "never", file.to_str().unwrap()]);
    let reported = String::from_utf8(reported.stdout).unwrap();
    assert_same_text(&live, &reported);
    assert!(live.contains("killed by SIGPIPE"), "{live}");

    // The stuck writer's story, in order: blocked, stuck, its reader gone, killed.
    let records: Vec<Value> =
        stdtrace::parse_json_lines(std::fs::read_to_string(&file).unwrap().lines());
    let stuck = records
        .iter()
        .find(|record| record["type"] == "blocked_write" && record["comm"] == "blocked_writer")
        .expect("the stuck writer");
    let pid = stuck["pid"].to_string();
    let story =
        String::from_utf8(report(&["--story", &pid, file.to_str().unwrap()]).stdout).unwrap();
    let lines: Vec<&str> = story.lines().collect();
    assert_eq!(lines[0], format!("story of pid {pid} (blocked_writer)"));
    // The line whose text (after its time) starts with `needle`.
    let position = |needle: &str| {
        lines
            .iter()
            .position(|line| {
                line.split_once("  ")
                    .is_some_and(|(_, text)| text.starts_with(needle))
            })
            .unwrap_or_else(|| panic!("no {needle:?} in the story:\n{story}"))
    };
    let blocked = position("write(1) blocked -> pipe:");
    let still = position("write(1) still blocked, for");
    let reader_gone = position("reader pid ");
    let failed = position("write(1) failed: EPIPE");
    let killed = position("killed by SIGPIPE");
    assert!(
        blocked < still && still < reader_gone && reader_gone < failed && failed < killed,
        "{story}"
    );
    assert!(lines[reader_gone].contains("(sleep) exited"), "{story}");
    assert_eq!(story.matches("killed by SIGPIPE").count(), 1, "{story}");
    // Only that process.
    assert!(!story.contains("failing_writes"), "{story}");
    // Filters: one type, one pid.
    let sigpipes = json_lines(
        &report(&[
            "--format",
            "json",
            "--type",
            "sigpipe",
            file.to_str().unwrap(),
        ])
        .stdout,
    );
    assert_eq!(types(&sigpipes).get("sigpipe"), Some(&3));
    assert_eq!(sigpipes.len(), 4, "three stories and the summary");
    let of_pid =
        json_lines(&report(&["--format", "json", "--pid", &pid, file.to_str().unwrap()]).stdout);
    assert!(
        of_pid[..of_pid.len() - 1]
            .iter()
            .all(|r| r["pid"] == stuck["pid"]),
        "{of_pid:?}"
    );
    assert!(
        of_pid.len() >= 4,
        "stuck, resumed, the failed write, the SIGPIPE: {of_pid:?}"
    );
    let of_comm = json_lines(
        &report(&[
            "--format",
            "json",
            "--comm",
            "sigpipe_writer",
            file.to_str().unwrap(),
        ])
        .stdout,
    );
    assert_eq!(
        types(&of_comm[..of_comm.len() - 1]),
        BTreeMap::from([("sigpipe".to_owned(), 1), ("write_error".to_owned(), 1)])
    );
    let from_the_end =
        json_lines(&report(&["--format", "json", "--since", "1h", file.to_str().unwrap()]).stdout);
    assert_eq!(
        from_the_end.len(),
        records.len() - 1,
        "all of it is within the last hour"
    );
    let none = json_lines(
        &report(&[
            "--format",
            "json",
            "--until",
            "1970-01-02T00:00:00Z",
            file.to_str().unwrap(),
        ])
        .stdout,
    );
    assert_eq!(
        none.len(),
        1,
        "only the summary before 1970-01-02: {none:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A recorder killed with SIGKILL leaves files `report` reads, a line cut short said and
/// skipped.
#[test]
fn a_recorder_killed_leaves_readable_files() {
    if !can_run::require(Need::Root) {
        return;
    }
    let dir = scratch("killed");
    let blocked = fixture("writers/blocked_writer.c", "blocked_writer");
    // The pipeline ends by itself (sleep exits, the writer dies of SIGPIPE): nothing traced
    // is signalled by the test.
    // Long enough for the first report to be named on a loaded machine.
    let script = format!("{} | sleep 10", blocked.display());
    let mut recorder = stdtrace::command(&[
        "record",
        "--output",
        dir.to_str().unwrap(),
        "--slow",
        "500ms",
        "--format",
        "json",
        "--",
        "sh",
        "-c",
        &script,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("starting the recorder");
    let mut stdout = Lines::new(recorder.stdout.take().unwrap());
    stdout.wait_for("\"state\":\"stuck\"", Duration::from_secs(20));
    // Flushed in batches at least every 200 ms.
    std::thread::sleep(Duration::from_millis(600));
    recorder.kill().expect("SIGKILL of our own recorder");
    recorder.wait().expect("reaping the recorder");

    let files = recorded_files(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let reported = json_lines(&report(&["--format", "json", dir.to_str().unwrap()]).stdout);
    let stuck: Vec<&Value> = reported
        .iter()
        .filter(|record| record["type"] == "blocked_write" && record["state"] == "stuck")
        .collect();
    assert_eq!(stuck.len(), 1, "{reported:?}");
    assert_eq!(stuck[0]["comm"], "blocked_writer");
    let summary = reported.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["blocked_writes"], 1, "{summary}");

    // A line cut short by the kill: said on stderr, skipped.
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&files[0])
        .unwrap()
        .write_all(br#"{"type":"write_error","ts_ns":12,"pi"#)
        .unwrap();
    let output = report(&[files[0].to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the last line is cut short"), "{stderr}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("stuck"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--output FILE` and logrotate: after the file is moved away, SIGHUP makes stdtrace end it
/// with the summary so far and start the path again with a header; nothing is lost between.
#[test]
fn sighup_reopens_the_output_file() {
    if !can_run::require(Need::Root) {
        return;
    }
    let dir = scratch("sighup");
    let file = dir.join("stdtrace.jsonl");
    let rotated = dir.join("stdtrace.jsonl.1");
    let blocked = fixture("writers/blocked_writer.c", "blocked_writer");
    let script = format!("{} | sleep 8", blocked.display());
    let mut tracer = stdtrace::command(&[
        "--output",
        file.to_str().unwrap(),
        "--slow",
        "500ms",
        "--format",
        "json",
        "--",
        "sh",
        "-c",
        &script,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("starting stdtrace");
    let mut stdout = Lines::new(tracer.stdout.take().unwrap());
    stdout.wait_for("\"state\":\"stuck\"", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(600));
    std::fs::rename(&file, &rotated).expect("rotating the file as logrotate does");
    // SAFETY: signalling our own stdtrace by its pid (not a traced process).
    assert_eq!(unsafe { libc::kill(tracer.id() as i32, libc::SIGHUP) }, 0);
    let live = stdout.all(Duration::from_secs(30));
    let status = tracer.wait().expect("waiting for stdtrace");
    assert_eq!(status.code(), Some(0), "SIGHUP does not end tracing");

    let read =
        |path: &Path| stdtrace::parse_json_lines(std::fs::read_to_string(path).unwrap().lines());
    let (before, after) = (read(&rotated), read(&file));
    assert_eq!(
        (&before[0]["type"], &before[0]["file"]),
        (&"header".into(), &0.into())
    );
    assert_eq!(
        (&after[0]["type"], &after[0]["file"]),
        (&"header".into(), &1.into())
    );
    assert_eq!(before.last().unwrap()["stopped"], "still tracing");
    assert_eq!(after.last().unwrap()["stopped"], "the command exited");
    let records: Vec<Value> = before[1..before.len() - 1]
        .iter()
        .chain(&after[1..after.len() - 1])
        .cloned()
        .collect();
    let live = stdtrace::parse_json_lines(live.iter().map(String::as_str));
    assert_eq!(
        records,
        live[..live.len() - 1],
        "every record, in one file or the other"
    );
    assert!(
        after[1..].iter().any(|r| r["type"] == "sigpipe"),
        "the end of the story is in the new file: {after:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
