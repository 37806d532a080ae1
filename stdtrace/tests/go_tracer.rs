//! Go, end to end, as root: for every Go toolchain from 1.19 to 1.27 and every build flavour
//! (default, stripped, PIE, cgo, cgo with C thread-locals), each goroutine's failed write is
//! reported with exactly the goroutine id that goroutine printed itself, the right Go version,
//! and its function in the stack.
//!
//! The fixtures are built by `cargo xtask setup` (`cargo xtask go-fixtures`) into
//! `target/fixtures/go/<version>/<flavour>/writer`.

#[path = "support/can_run.rs"]
mod can_run;
#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/stdtrace.rs"]
mod stdtrace;

use std::{collections::BTreeMap, io::Write, path::PathBuf, process::Stdio, time::Duration};

use can_run::Need;
use serde_json::Value;
use stdtrace::{StderrLines, function_names};

/// The toolchains the issue names, by their fixture directory.
const VERSIONS: [&str; 5] = ["1.19", "1.21.13", "1.23.9", "1.25.5", "1.27.3"];
const FLAVOURS: [&str; 5] = ["default", "stripped", "pie", "cgo", "cgo-tls"];

/// What each of the fixture's writers does: the label it prints, the errno its write fails
/// with, and the function that must be in its stack.
const WRITERS: [(&str, &str, &str); 4] = [
    ("EAGAIN", "EAGAIN", "main.writeUntilEAGAIN"),
    ("EAGAIN-POLLER", "EAGAIN", "main.writeViaPollerUntilEAGAIN"),
    ("EPIPE", "EPIPE", "main.writeAfterReaderClosed"),
    // From C, on the thread's system stack: the C function is on that stack.
    ("EAGAIN-CGO", "EAGAIN", "stdtrace_c_write_until_eagain"),
];

fn fixture(version: &str, flavour: &str) -> Option<(PathBuf, String)> {
    let dir = fixtures::workspace_root()
        .join("target/fixtures/go")
        .join(version);
    let writer = dir.join(flavour).join("writer");
    let manifest = dir.join("toolchain");
    if !(can_run::require(Need::GoFixture(&writer)) && can_run::require(Need::GoFixture(&manifest)))
    {
        return None;
    }
    let toolchain = std::fs::read_to_string(&manifest).ok();
    let go_version = toolchain.as_deref().and_then(|text| {
        text.lines()
            .find_map(|line| line.strip_prefix("go_version="))
            .map(str::to_owned)
    });
    if go_version.is_none() {
        can_run::cannot_run(
            Need::GoFixtures,
            format_args!("{} has no go_version", manifest.display()),
        );
    }
    Some((writer, go_version?))
}

/// Runs one fixture under stdtrace and checks every writer's goroutine.
fn check(version: &str, flavour: &str) -> Result<(), String> {
    let Some((writer, go_version)) = fixture(version, flavour) else {
        return Ok(());
    };
    let mut tracer = stdtrace::command(&["--format", "json", "--", writer.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("starting stdtrace: {err}"))?;
    let mut stderr = StderrLines::new(tracer.stderr.take().unwrap());
    stderr.wait_for("ready pid=", Duration::from_secs(20));
    let mut stdin = tracer.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let output = stdtrace::wait_with_timeout(tracer, Duration::from_secs(60));
    let lines = stderr.all(Duration::from_secs(2));
    if output.status.code() != Some(0) {
        return Err(format!("exit {:?}: {lines:#?}", output.status));
    }
    // "EAGAIN goroutine=19 writes=16"
    let printed: BTreeMap<String, u64> = lines
        .iter()
        .filter_map(|line| {
            let (label, rest) = line.split_once(" goroutine=")?;
            let goid = rest.split_whitespace().next()?.parse().ok()?;
            Some((label.to_owned(), goid))
        })
        .collect();
    let cgo = flavour.starts_with("cgo");
    let expected: Vec<_> = WRITERS
        .iter()
        .filter(|(label, ..)| cgo || *label != "EAGAIN-CGO")
        .collect();
    if printed.len() != expected.len() {
        return Err(format!("the fixture printed {printed:?}"));
    }
    let records = stdtrace::json_lines(&output.stdout);
    let errors: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "write_error")
        .collect();
    if errors.len() != expected.len() {
        return Err(format!(
            "{} write errors for {} writers: {errors:#?}",
            errors.len(),
            expected.len()
        ));
    }
    for (label, errno, function) in expected {
        let goid = printed[*label];
        let matching: Vec<&&Value> = errors.iter().filter(|r| r["go"]["goid"] == goid).collect();
        let [record] = matching.as_slice() else {
            return Err(format!(
                "{label}: {} events with goroutine {goid}: {errors:#?}",
                matching.len()
            ));
        };
        let go = &record["go"];
        let names = function_names(record);
        let problems = [
            (
                record["errno"] != *errno,
                format!("errno {}", record["errno"]),
            ),
            (
                go["version"] != go_version.as_str(),
                format!("version {}", go["version"]),
            ),
            (
                go["status"] != "syscall",
                format!("status {}", go["status"]),
            ),
            (
                go["created_by"]["function"] != "main.main",
                format!("created by {}", go["created_by"]),
            ),
            (
                go_version != "go1.19.8" && go["parent_goid"] != 1,
                format!("parent {}", go["parent_goid"]),
            ),
            (
                *label == "EAGAIN-CGO" && go["system_stack"] != true,
                "not on the system stack".to_owned(),
            ),
            (
                !names.iter().any(|name| name == function),
                format!("{function} not in {names:?}"),
            ),
        ];
        for (wrong, what) in problems {
            if wrong {
                return Err(format!("{label} (goroutine {goid}): {what}: {record}"));
            }
        }
    }
    Ok(())
}

#[test]
fn every_goroutine_is_named_in_every_toolchain_and_flavour() {
    if !can_run::require(Need::Root) {
        return;
    }
    let mut failures = Vec::new();
    for version in VERSIONS {
        for flavour in FLAVOURS {
            if let Err(problem) = check(version, flavour) {
                failures.push(format!("Go {version} {flavour}: {problem}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Node-wide, executables are read in a background thread, never on the event loop: a Go
/// program started after stdtrace is still known as Go (version, goroutine ids) by the time it
/// fails its writes.
#[test]
fn node_wide_knows_a_go_program_started_after_it() {
    if !can_run::require(Need::Root) {
        return;
    }
    let Some((writer, go_version)) = fixture("1.25.5", "default") else {
        return;
    };
    let mut tracer = stdtrace::command(&["--format", "json", "-v"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting stdtrace");
    let mut tracer_stderr = StderrLines::new(tracer.stderr.take().unwrap());
    tracer_stderr.wait_for("tracing every process", Duration::from_secs(30));
    let mut stdout = stdtrace::Lines::new(tracer.stdout.take().unwrap());
    let mut go = std::process::Command::new(&writer)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the Go writer");
    let mut go_stderr = StderrLines::new(go.stderr.take().unwrap());
    go_stderr.wait_for("ready pid=", Duration::from_secs(20));
    let pid = go.id();
    // Its exec was seen and its executable read in the background.
    tracer_stderr.wait_for(
        &format!("/proc/{pid}/exe is a {go_version} program (read in the background)"),
        Duration::from_secs(60),
    );
    go.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(go.wait().unwrap().success());
    let printed = go_stderr.all(Duration::from_secs(2));
    let epipe_goid: u64 = printed
        .iter()
        .find_map(|line| line.strip_prefix("EPIPE goroutine="))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("the writer printed {printed:#?}"));
    stdout.wait_for_count(3, Duration::from_secs(30), |line| {
        stdtrace::is_write_error_of(line, pid)
    });
    // SAFETY: signalling stdtrace, our own child, by its pid.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGTERM) };
    let status = stdtrace::wait_with_timeout(tracer, Duration::from_secs(30)).status;
    assert_eq!(status.code(), Some(143));
    let lines = stdout.all(Duration::from_secs(5));
    let records = stdtrace::parse_json_lines(lines.iter().map(String::as_str));
    let errors = stdtrace::write_errors(&records, pid);
    assert!(
        errors
            .iter()
            .all(|r| r["go"]["version"] == go_version.as_str()),
        "{errors:#?}"
    );
    let epipe: Vec<_> = errors.iter().filter(|r| r["errno"] == "EPIPE").collect();
    assert_eq!(epipe.len(), 1, "{errors:#?}");
    assert_eq!(epipe[0]["go"]["goid"], epipe_goid, "{}", epipe[0]);
}

/// A Go binary whose build information is corrupted: the goroutine is not guessed; the event
/// says why it is unknown, and the stack is still named from the pc-line table.
#[test]
fn corrupted_build_information_gives_a_reason_not_a_goroutine() {
    if !can_run::require(Need::Root) {
        return;
    }
    let Some((writer, _)) = fixture("1.25.5", "stripped") else {
        return;
    };
    let mut bytes = std::fs::read(&writer).unwrap();
    let magic = b"\xff Go buildinf:";
    let at = bytes
        .windows(magic.len())
        .position(|window| window == magic)
        .expect("build information");
    // The version string's length: now longer than the block.
    bytes[at + 32] = 0xff;
    let corrupted = std::env::temp_dir().join(format!("go-badinfo-{}", std::process::id()));
    std::fs::write(&corrupted, &bytes).unwrap();
    std::fs::set_permissions(
        &corrupted,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    let mut tracer = stdtrace::command(&["--format", "json", "--", corrupted.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = tracer.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let output = stdtrace::wait_with_timeout(tracer, Duration::from_secs(60));
    std::fs::remove_file(&corrupted).unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let records = stdtrace::json_lines(&output.stdout);
    let errors: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "write_error")
        .collect();
    assert_eq!(errors.len(), 3, "{records:#?}");
    for record in errors {
        assert_eq!(record["go"]["goid"], Value::Null, "{record}");
        let why = record["go"]["unknown"].as_str().unwrap_or_default();
        assert!(why.contains("build information"), "{record}");
        assert!(
            function_names(record)
                .iter()
                .any(|name| name.starts_with("main.write")),
            "{record}"
        );
    }
}

/// A C program that merely contains Go's build-information magic is not taken for Go.
#[test]
fn a_c_program_with_the_magic_bytes_is_not_go() {
    if !can_run::require(Need::Root) {
        return;
    }
    let fake = fixtures::build_c("writers/fake_go.c", "fake_go", &["-O1", "-g"]);
    let output = stdtrace::run(&["--format", "json", "--", fake.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let records = stdtrace::json_lines(&output.stdout);
    let errors: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "write_error")
        .collect();
    assert_eq!(errors.len(), 1, "{records:#?}");
    assert_eq!(errors[0]["go"], Value::Null, "{}", errors[0]);
    stdtrace::assert_calls(errors[0], "emit_epipe", "main");
}
