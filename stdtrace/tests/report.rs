//! `stdtrace report` and the command line without root: recordings written by hand (wall
//! time from the header, colour rules, a newer stdtrace's records), bad input, and unknown
//! options. The recordings of real runs are tested in `forensics.rs`.

#[path = "support/stdtrace.rs"]
mod stdtrace;

use std::{
    path::PathBuf,
    process::{Output, Stdio},
    time::Duration,
};

use stdtrace::json_lines;

/// A fresh directory for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stdtrace-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the scratch directory");
    dir
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

/// Bad input: one clear line on stderr, a non-zero exit, no panic.
#[test]
fn bad_recordings_and_options_get_one_clear_line() {
    let dir = scratch("bad");
    let cases: [(&str, &[u8], &str); 4] = [
        ("empty.jsonl", b"", "empty: no records"),
        ("garbage.jsonl", b"hello\n", "line 1: not JSON"),
        (
            "future.jsonl",
            br#"{"type":"header","schema":9,"stdtrace":"9.0.0","recording":"r","file":0,"kernel":"k","node":"n","host":"h","boot_id":"b","options":[],"wall_minus_monotonic_ns":0,"ts_ns":0}
"#,
            "recorded by stdtrace 9.0.0 in format 9",
        ),
        ("cut.jsonl", br#"{"type":"head"#, "not JSON"),
    ];
    for (name, bytes, message) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let output = stdtrace::run(&["report", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        assert!(stderr.contains(message), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
    // An unknown option is named, with clap's suggestion; it is not taken as the command.
    let output = stdtrace::run(&["--pdi", "5"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("unexpected argument '--pdi'"), "{stderr}");
    assert!(stderr.contains("use '-- --pdi'"), "{stderr}");
    assert!(!stderr.contains("command not found"), "{stderr}");
    let output = stdtrace::run(&["--formt", "json"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("a similar argument exists: '--format'"),
        "{stderr}"
    );
    let output = stdtrace::run(&["record", "--", "true"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--output <DIR>"), "{stderr}");
    let output = stdtrace::run(&["record", "--output", "/tmp", "--max-size", "12parsecs"]);
    assert_eq!(output.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `report` without root: wall time from the header, the live run's colour rules, a newer
/// stdtrace's record types skipped and counted.
#[test]
fn report_reads_a_hand_written_recording() {
    let dir = scratch("hand-written");
    let path = dir.join("recording.jsonl");
    // 2026-12-01T14:26:18.500Z is 1796135178.5 s after the epoch; the event at ts_ns 5 s.
    let offset: i64 = 1_796_135_173_500_000_000;
    let lines = [
        format!(
            r#"{{"type":"header","schema":1,"stdtrace":"0.2.0","recording":"r","file":0,"kernel":"6.18.0","node":"n","host":"h","boot_id":"b","options":[],"wall_minus_monotonic_ns":{offset},"ts_ns":1}}"#
        ),
        r#"{"type":"write_error","ts_ns":5000000000,"pid":812,"tid":812,"comm":"writer","syscall":"write","fd":4,"errno":"EPIPE","count":1,"target":{"kind":"pipe","path":"pipe:[7]","readers":[]},"stack":[{"address":"0x401000","function":"emit_epipe","file":"/src/w.c","line":42,"object":"/opt/writer","inlined":false}],"new_field":{"x":1}}"#.to_owned(),
        r#"{"type":"container_started","id":"abc"}"#.to_owned(),
    ];
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let file = path.to_str().unwrap();
    let output = stdtrace::command(&["report", "--color", "never", file])
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.starts_with(
            "14:26:18.500 pid 812 (writer): write(4, 1 byte) failed: EPIPE (Broken pipe)\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("    #0  emit_epipe at w.c:42  in writer\n"),
        "{text}"
    );
    assert!(
        text.contains("the recording ends without a summary"),
        "a summary counted from the records: {text}"
    );
    assert!(text.contains("failed writes: 1 (1 reported"), "{text}");
    assert!(!text.contains('\x1b'), "{text}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("skipped 1 records of types this stdtrace does not know"),
        "{stderr}"
    );
    let colored = report(&["--color", "always", file]);
    assert!(String::from_utf8_lossy(&colored.stdout).contains("\x1b[1;31mEPIPE\x1b[0m"));
    // JSON passes the record through as recorded, its unknown field included.
    let json = json_lines(&report(&["--format", "json", file]).stdout);
    assert_eq!(json[0]["new_field"]["x"], 1);
    assert_eq!(json[1]["type"], "summary");
    // From stdin too.
    let mut child = stdtrace::command(&["report", "--format", "json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all((lines.join("\n") + "\n").as_bytes())
        .unwrap();
    let from_stdin = stdtrace::wait_with_timeout(child, Duration::from_secs(20));
    assert_eq!(json_lines(&from_stdin.stdout), json);
    let _ = std::fs::remove_dir_all(&dir);
}
