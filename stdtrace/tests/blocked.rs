//! Blocked writers, as root, with real processes: stuck while still blocked (launched, and
//! attached to after the writer blocked), into a pipe and into a pty, slow-but-finishing, and
//! resumed; the pipe's fill and what its reader is doing; Go goroutine ids.

#[path = "support/can_run.rs"]
mod can_run;
#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/stdtrace.rs"]
mod stdtrace;

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use can_run::Need;
use serde_json::Value;
use stdtrace::{StderrLines, field, function_names, json_lines};

fn blocked_writer() -> PathBuf {
    fixtures::build_c(
        "writers/blocked_writer.c",
        "blocked_writer",
        &["-O1", "-g", "-fno-omit-frame-pointer"],
    )
}

/// The Go blocker fixture built with the newest toolchain, if present.
fn go_blocker() -> Option<(PathBuf, String)> {
    let dir = fixtures::workspace_root().join("target/fixtures/go/1.25.5");
    let blocker = dir.join("default/blocker");
    can_run::require(Need::GoFixture(&blocker)).then(|| (blocker, "go1.25.5".to_owned()))
}

fn records_of(records: &[Value], kind: &str, state: Option<&str>) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r["type"] == kind && state.is_none_or(|state| r["state"] == state))
        .cloned()
        .collect()
}

/// A stuck record into a full pipe whose one reader is `reader_comm`, asleep.
fn check_stuck_into_full_pipe(stuck: &Value, writer_pid: u64, reader_comm: &str) {
    assert_eq!(stuck["pid"], writer_pid, "{stuck}");
    assert_eq!(stuck["syscall"], "write");
    assert_eq!(stuck["fd"], 1);
    assert!(stuck["duration_ms"].as_u64().unwrap() >= 300, "{stuck}");
    let target = &stuck["target"];
    assert_eq!(target["kind"], "pipe", "{stuck}");
    assert_eq!(target["capacity"], 65536, "{stuck}");
    assert!(target["queued"].as_u64().unwrap() >= 64512, "{stuck}");
    let readers = target["readers"].as_array().expect("readers");
    assert_eq!(readers.len(), 1, "{stuck}");
    assert_eq!(readers[0]["comm"], reader_comm, "{stuck}");
    assert_eq!(readers[0]["state"], "sleeping", "{stuck}");
    assert_eq!(readers[0]["reading"], false, "{stuck}");
    assert_eq!(readers[0]["blocked"], false, "{stuck}");
}

/// `blocked_writer | sleep 2`, launched: stuck while blocked, then resumed (the reader exits,
/// the write fails with EPIPE and SIGPIPE kills the writer).
#[test]
fn c_writer_stuck_then_resumed() {
    if !can_run::require(Need::Root) {
        return;
    }
    let script = format!("{} | sleep 2", blocked_writer().display());
    let output = stdtrace::run(&[
        "--format", "json", "--slow", "300ms", "--", "sh", "-c", &script,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let writer_pid = stderr
        .lines()
        .find(|line| line.starts_with("blocked_writer:"))
        .map(|line| field(line, "pid") as u64)
        .unwrap_or_else(|| panic!("{stderr}"));
    let records = json_lines(&output.stdout);
    let stuck = records_of(&records, "blocked_write", Some("stuck"));
    assert_eq!(stuck.len(), 1, "{records:#?}");
    check_stuck_into_full_pipe(&stuck[0], writer_pid, "sleep");
    let names = function_names(&stuck[0]);
    stdtrace::assert_calls(&stuck[0], "emit_line", "log_forever");
    assert_eq!(
        names.first().map(String::as_str),
        Some("write"),
        "{names:?}"
    );

    // When the reader exits, the write returns: resumed, after the stuck report.
    let resumed = records_of(&records, "blocked_write", Some("resumed"));
    assert_eq!(resumed.len(), 1, "{records:#?}");
    assert_eq!(resumed[0]["tid"], stuck[0]["tid"]);
    assert!(resumed[0]["duration_ms"].as_u64() >= stuck[0]["duration_ms"].as_u64());
    assert!(resumed[0]["ts_ns"].as_u64() > stuck[0]["ts_ns"].as_u64());
    let epipe: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "write_error" && r["pid"] == writer_pid)
        .collect();
    assert_eq!(epipe.len(), 1, "{records:#?}");
    assert_eq!(epipe[0]["errno"], "EPIPE");
    let summary = records.last().unwrap();
    assert_eq!(
        summary["stuck"],
        serde_json::json!([]),
        "nothing is stuck at the end"
    );
    assert_eq!(summary["blocked_writes"], 2);
}

/// A writer blocked two seconds before stdtrace attaches: found at start-up, reported stuck
/// while still blocked, with its full stack (frame pointers need the registers the kernel
/// saved, read through a pidfd) and its reader.
#[test]
fn attach_to_a_writer_already_stuck() {
    if !can_run::require(Need::Root) {
        return;
    }
    let script = format!("{} | sleep 30", blocked_writer().display());
    let mut pipeline = Command::new("sh")
        .args(["-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipeline_stderr = StderrLines::new(pipeline.stderr.take().unwrap());
    let line = pipeline_stderr.wait_for("blocked_writer: pid=", Duration::from_secs(10));
    let writer_pid = field(&line, "pid");
    std::thread::sleep(Duration::from_secs(2));

    let pid = writer_pid.to_string();
    let output = stdtrace::run(&[
        "--format",
        "json",
        "--slow",
        "500ms",
        "--duration",
        "1",
        "--pid",
        &pid,
    ]);
    let reader_pid = sleep_child_of(pipeline.id());
    // Stop what the test started, by pid.
    // SAFETY: signalling processes this test started.
    unsafe {
        libc::kill(writer_pid as i32, libc::SIGKILL);
        if let Some(reader) = reader_pid {
            libc::kill(reader as i32, libc::SIGKILL);
        }
    }
    let _ = pipeline.wait();

    let records = json_lines(&output.stdout);
    let stuck = records_of(&records, "blocked_write", Some("stuck"));
    assert_eq!(stuck.len(), 1, "{records:#?}");
    check_stuck_into_full_pipe(&stuck[0], writer_pid as u64, "sleep");
    assert_eq!(
        stuck[0]["target"]["readers"][0]["pid"],
        reader_pid.unwrap_or(0)
    );
    // It was blocked for two seconds before stdtrace started.
    assert!(
        stuck[0]["duration_ms"].as_u64().unwrap() >= 2000,
        "{}",
        stuck[0]
    );
    stdtrace::assert_calls(&stuck[0], "write", "emit_line");
    stdtrace::assert_calls(&stuck[0], "emit_line", "log_forever");
    stdtrace::assert_calls(&stuck[0], "log_forever", "main");
    let summary = records.last().unwrap();
    assert_eq!(summary["stuck"].as_array().unwrap().len(), 1, "{summary}");
    assert_eq!(summary["stuck"][0]["pid"], writer_pid);
}

/// The pid of the `sleep` child of `parent`, if it has one.
fn sleep_child_of(parent: u32) -> Option<u32> {
    child_named(parent, "sleep")
}

/// The pid of the child of `parent` whose command name is `comm`, if it has one.
fn child_named(parent: u32, comm: &str) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|pid| pid.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|name| name.trim() == comm)
        })
}

/// A Go goroutine blocked writing to stdout two seconds before stdtrace attaches: found at
/// start-up, its goroutine read from the process's memory (never stopping it), its stack
/// unwound with pclntab from the registers read through a pidfd.
#[test]
fn attach_to_a_go_writer_already_stuck() {
    if !can_run::require(Need::Root) {
        return;
    }
    let Some((blocker, version)) = go_blocker() else {
        return;
    };
    let script = format!("{} | sleep 30", blocker.display());
    let mut pipeline = Command::new("sh")
        .args(["-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipeline_stderr = StderrLines::new(pipeline.stderr.take().unwrap());
    let line = pipeline_stderr.wait_for("goroutine=", Duration::from_secs(10));
    let goid: u64 = line
        .trim()
        .strip_prefix("goroutine=")
        .and_then(|goid| goid.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    std::thread::sleep(Duration::from_secs(2));
    let writer_pid = child_named(pipeline.id(), "blocker");
    let reader_pid = sleep_child_of(pipeline.id());

    let output = writer_pid.map(|pid| {
        let pid = pid.to_string();
        stdtrace::run(&[
            "--format",
            "json",
            "--slow",
            "500ms",
            "--duration",
            "1",
            "--pid",
            &pid,
        ])
    });
    // Stop what the test started, by pid.
    // SAFETY: signalling processes this test started.
    unsafe {
        for pid in [writer_pid, reader_pid].into_iter().flatten() {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
    let _ = pipeline.wait();
    let (Some(writer_pid), Some(output)) = (writer_pid, output) else {
        panic!("no blocker child of the shell {}", pipeline.id());
    };

    let records = json_lines(&output.stdout);
    let stuck = records_of(&records, "blocked_write", Some("stuck"));
    assert_eq!(stuck.len(), 1, "{records:#?}");
    let record = &stuck[0];
    assert_eq!(record["pid"], writer_pid, "{record}");
    assert_eq!(record["go"]["goid"], goid, "{record}");
    assert_eq!(record["go"]["version"], version.as_str());
    assert!(record["duration_ms"].as_u64().unwrap() >= 2000, "{record}");
    assert_eq!(record["target"]["capacity"], 65536);
    assert_eq!(
        record["target"]["readers"][0]["pid"],
        reader_pid.unwrap_or(0)
    );
    stdtrace::assert_calls(record, "main.emit", "main.blockedWriter");
}

/// A write that blocks until its reader starts draining 300 ms later: reported slow when it
/// returns, with a duration within the bounds the test set.
#[test]
fn a_slow_write_that_finishes() {
    if !can_run::require(Need::Root) {
        return;
    }
    // 17 lines of 4096 bytes: the pipe holds 16, the 17th waits for the reader.
    let script = format!(
        "{} 69632 | (sleep 0.3; cat > /dev/null)",
        blocked_writer().display()
    );
    let output = stdtrace::run(&[
        "--format", "json", "--slow", "100ms", "--stuck", "10s", "--", "sh", "-c", &script,
    ]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let records = json_lines(&output.stdout);
    let slow = records_of(&records, "blocked_write", Some("slow"));
    assert_eq!(slow.len(), 1, "{records:#?}");
    let duration = slow[0]["duration_ms"].as_u64().unwrap();
    assert!((200..3000).contains(&duration), "{duration} ms");
    assert_eq!(slow[0]["comm"], "blocked_writer");
    stdtrace::assert_calls(&slow[0], "emit_line", "log_forever");
    assert!(
        records_of(&records, "blocked_write", Some("stuck")).is_empty(),
        "{records:#?}"
    );
}

/// A writer whose stdout is a pty whose master side nobody reads (the test holds it).
#[test]
fn a_writer_into_an_unread_pty() {
    if !can_run::require(Need::Root) {
        return;
    }
    // SAFETY: opening a pty pair with the documented sequence; the fds are owned below.
    let (master, slave, pts) = unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(master >= 0);
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let mut name = [0 as libc::c_char; 64];
        assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
        let path = std::ffi::CStr::from_ptr(name.as_ptr()).to_owned();
        let slave = libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(slave >= 0);
        let pts: u32 = path
            .to_str()
            .unwrap()
            .trim_start_matches("/dev/pts/")
            .parse()
            .unwrap();
        (
            OwnedFd::from_raw_fd(master),
            OwnedFd::from_raw_fd(slave),
            pts,
        )
    };
    let mut writer = Command::new(blocked_writer())
        .stdout(Stdio::from(slave))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut writer_stderr = StderrLines::new(writer.stderr.take().unwrap());
    writer_stderr.wait_for("blocked_writer: pid=", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let pid = writer.id().to_string();
    let output = stdtrace::run(&[
        "--format",
        "json",
        "--slow",
        "200ms",
        "--duration",
        "1",
        "--pid",
        &pid,
    ]);
    writer.kill().unwrap();
    let _ = writer.wait();

    let records = json_lines(&output.stdout);
    let stuck = records_of(&records, "blocked_write", Some("stuck"));
    assert_eq!(stuck.len(), 1, "{records:#?}");
    let target = &stuck[0]["target"];
    assert_eq!(target["kind"], "pty", "{}", stuck[0]);
    assert_eq!(target["pts"], pts, "{}", stuck[0]);
    // The test itself holds the master side.
    let readers = target["readers"].as_array().expect("readers");
    assert_eq!(readers.len(), 1, "{}", stuck[0]);
    assert_eq!(readers[0]["pid"], std::process::id());
    assert!(
        readers[0]["fds"]
            .as_array()
            .unwrap()
            .contains(&master.as_raw_fd().into())
    );
    stdtrace::assert_calls(&stuck[0], "emit_line", "log_forever");
    drop(master);
}

/// A Go goroutine blocked writing to stdout (a full pipe whose reader sleeps): stuck, with the
/// goroutine id it printed, and its functions in the stack.
#[test]
fn go_writer_stuck_with_its_goroutine() {
    if !can_run::require(Need::Root) {
        return;
    }
    let Some((blocker, version)) = go_blocker() else {
        return;
    };
    let script = format!("{} | sleep 2", blocker.display());
    let output = stdtrace::run(&[
        "--format", "json", "--slow", "300ms", "--", "sh", "-c", &script,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let goid: u64 = stderr
        .lines()
        .find_map(|line| line.strip_prefix("goroutine="))
        .and_then(|goid| goid.trim().parse().ok())
        .unwrap_or_else(|| panic!("{stderr}"));
    let records = json_lines(&output.stdout);
    let stuck = records_of(&records, "blocked_write", Some("stuck"));
    assert_eq!(stuck.len(), 1, "{records:#?}");
    let record = &stuck[0];
    assert_eq!(record["go"]["goid"], goid, "{record}");
    assert_eq!(record["go"]["version"], version.as_str());
    assert_eq!(record["go"]["status"], "syscall");
    assert_eq!(record["target"]["capacity"], 65536);
    assert!(
        record["target"]["queued"].as_u64().unwrap() >= 64512,
        "{record}"
    );
    assert_eq!(record["target"]["readers"][0]["comm"], "sleep");
    let names = function_names(record);
    assert!(names.iter().any(|name| name == "main.emit"), "{names:?}");
    stdtrace::assert_calls(record, "main.emit", "main.blockedWriter");
}

/// A goroutine whose write on a non-blocking pipe gets EAGAIN and is parked by Go's netpoller
/// until its reader drains the pipe: `parked` while it waits (no system call in progress),
/// then `resumed` when its next write succeeds, with its goroutine id.
#[test]
fn go_writer_parked_then_resumed() {
    if !can_run::require(Need::Root) {
        return;
    }
    let parker = fixtures::workspace_root().join("target/fixtures/go/1.25.5/default/parker");
    if !can_run::require(Need::GoFixture(&parker)) {
        return;
    }
    let output = stdtrace::run(&[
        "--format",
        "json",
        "--slow",
        "300ms",
        "--",
        parker.to_str().unwrap(),
        "1500",
    ]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|line| line.starts_with("goroutine="))
        .unwrap_or_else(|| panic!("{stderr}"));
    let goid = field(line, "goroutine");
    let fd = field(line, "fd");
    let records = json_lines(&output.stdout);
    let eagain: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "write_error" && r["go"]["goid"] == goid)
        .collect();
    assert!(!eagain.is_empty(), "{records:#?}");
    assert!(
        eagain
            .iter()
            .all(|r| r["errno"] == "EAGAIN" && r["fd"] == fd)
    );
    let parked = records_of(&records, "blocked_write", Some("parked"));
    assert_eq!(parked.len(), 1, "{records:#?}");
    assert_eq!(parked[0]["go"]["goid"], goid, "{}", parked[0]);
    assert_eq!(parked[0]["go"]["status"], "waiting", "{}", parked[0]);
    assert_eq!(parked[0]["fd"], fd);
    assert!(parked[0]["duration_ms"].as_u64().unwrap() >= 300);
    // The stack it parked on, from g.sched: parked in the poller, inside its write.
    let names = function_names(&parked[0]);
    for expected in [
        "runtime.gopark",
        "internal/poll.(*FD).Write",
        "main.parkedWriter",
    ] {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} not in {names:?}"
        );
    }
    let resumed = records_of(&records, "blocked_write", Some("resumed"));
    assert_eq!(resumed.len(), 1, "{records:#?}");
    assert_eq!(resumed[0]["go"]["goid"], goid, "{}", resumed[0]);
    assert_eq!(resumed[0]["fd"], fd);
    assert!(resumed[0]["duration_ms"].as_u64() >= parked[0]["duration_ms"].as_u64());
    assert!(resumed[0]["ts_ns"].as_u64() > parked[0]["ts_ns"].as_u64());
    // The kernel had room for every goroutine that parked.
    let summary = records.last().unwrap();
    assert_eq!(summary["type"], "summary", "{summary}");
    assert_eq!(summary["kernel"]["parked_full"], 0, "{summary}");
}

/// A writer blocked on a unix socket whose other end (held by the test) is never read: the
/// socket's family, its peer and who holds it, and the bytes it could not send.
#[test]
fn a_writer_into_an_unread_unix_socket() {
    if !can_run::require(Need::Root) {
        return;
    }
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let our_inode = std::os::unix::fs::MetadataExt::ino(
        &std::fs::metadata(format!("/proc/self/fd/{}", ours.as_raw_fd())).unwrap(),
    );
    let mut writer = Command::new(blocked_writer())
        .stdout(Stdio::from(OwnedFd::from(theirs)))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut writer_stderr = StderrLines::new(writer.stderr.take().unwrap());
    writer_stderr.wait_for("blocked_writer: pid=", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let pid = writer.id().to_string();
    let output = stdtrace::run(&[
        "--format",
        "json",
        "--slow",
        "200ms",
        "--duration",
        "1",
        "--pid",
        &pid,
    ]);
    writer.kill().unwrap();
    let _ = writer.wait();

    let records = json_lines(&output.stdout);
    let stuck = records_of(&records, "blocked_write", Some("stuck"));
    assert_eq!(stuck.len(), 1, "{records:#?}");
    let target = &stuck[0]["target"];
    assert_eq!(target["kind"], "socket", "{}", stuck[0]);
    assert_eq!(target["socket"]["family"], "unix", "{}", stuck[0]);
    assert_eq!(target["socket"]["socket_type"], "stream");
    assert_eq!(target["socket"]["peer_inode"], our_inode, "{}", stuck[0]);
    assert!(
        target["socket"]["send_queue"].as_u64().unwrap() > 0,
        "{}",
        stuck[0]
    );
    let readers = target["readers"].as_array().expect("readers");
    assert_eq!(readers.len(), 1, "{}", stuck[0]);
    assert_eq!(readers[0]["pid"], std::process::id());
    assert_eq!(readers[0]["fds"], serde_json::json!([ours.as_raw_fd()]));
    stdtrace::assert_calls(&stuck[0], "emit_line", "log_forever");
}
