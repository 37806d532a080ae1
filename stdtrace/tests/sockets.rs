//! The send family, as root, with real programs: a real rsyslogd, stopped, that `logger` loops
//! send into (launched, and attached to with `--pid`): stuck, with rsyslogd as the receiver and
//! its datagram queue full; a Python client blocked in `sendall()` to a loopback TCP server that
//! never reads; a C program's EPIPE sends with and without `MSG_NOSIGNAL` (killed by SIGPIPE,
//! or no SIGPIPE story); `sendmsg` and `sendmmsg` byte counts; a Go program's EPIPE through
//! `net.Conn.Write` (write, not send) counted once.

#[path = "support/can_run.rs"]
mod can_run;
#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/rsyslogd.rs"]
mod rsyslogd;
#[path = "support/stdtrace.rs"]
mod stdtrace;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use can_run::Need;
use rsyslogd::{StoppedRsyslogd, children_named, in_send, signal};
use serde_json::Value;
use stdtrace::{
    StderrLines, announcement, field, function_names, json_lines, of_type, summary, write_errors,
};

fn send_epipe() -> PathBuf {
    fixtures::build_c(
        "sockets/send_epipe.c",
        "send_epipe",
        &["-O1", "-g", "-fno-omit-frame-pointer"],
    )
}

/// The stuck `logger` record: into the stopped rsyslogd's socket, its queue full.
fn check_stuck_logger(stuck: &Value, rsyslogd: &StoppedRsyslogd) {
    assert_eq!(stuck["comm"], "logger", "{stuck}");
    let syscall = stuck["syscall"].as_str().unwrap();
    assert!(
        matches!(syscall, "sendto" | "sendmsg" | "sendmmsg"),
        "{stuck}"
    );
    assert!(stuck["count"].as_u64().unwrap() > 0, "{stuck}");
    let target = &stuck["target"];
    assert_eq!(target["kind"], "socket", "{stuck}");
    let socket = &target["socket"];
    assert_eq!(socket["family"], "unix", "{stuck}");
    assert_eq!(socket["socket_type"], "dgram", "{stuck}");
    assert_eq!(
        socket["remote"].as_str(),
        rsyslogd.socket.to_str(),
        "{stuck}"
    );
    let readers = target["readers"].as_array().expect("receivers");
    assert_eq!(readers.len(), 1, "{stuck}");
    assert_eq!(readers[0]["pid"], rsyslogd.pid(), "{stuck}");
    assert_eq!(readers[0]["comm"], "rsyslogd", "{stuck}");
    assert_eq!(readers[0]["state"], "stopped", "{stuck}");
    let limit: u64 = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let peer = &socket["peer"];
    assert_eq!(peer["max_datagrams"], limit, "{stuck}");
    // Full: a sender blocks once more than the limit are queued.
    assert!(
        peer["receive_datagrams"].as_u64().unwrap() > limit,
        "{stuck}"
    );
    // logger is stripped: libc's wrapper and libc's start are named.
    let names = function_names(stuck);
    assert_eq!(
        names.first().map(String::as_str),
        Some(syscall),
        "{names:?}"
    );
    assert!(
        names.iter().any(|name| name == "__libc_start_main_impl"),
        "{names:?}"
    );
}

/// `logger` in a loop into a stopped rsyslogd, launched by stdtrace: stuck, with rsyslogd as
/// the receiver, stopped, its queue full; the one-liner tells it.
#[test]
fn logger_into_a_stopped_rsyslogd_launched() {
    if !can_run::require(Need::Root) {
        return;
    }
    let Some(rsyslogd) = StoppedRsyslogd::start("rsyslog-launched") else {
        return;
    };
    let script = rsyslogd.logger_loop();
    let output = stdtrace::run(&[
        "--format",
        "json",
        "--slow",
        "500ms",
        "--duration",
        "3",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let shell = stderr
        .lines()
        .find(|line| line.starts_with("stdtrace: tracing pid "))
        .and_then(|line| line.split_whitespace().nth(3)?.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("{stderr}"));
    // Stop what the test started, by pid: the loop, then its blocked logger.
    let loggers = children_named(shell, "logger");
    signal(shell, libc::SIGKILL);
    for logger in loggers {
        signal(logger, libc::SIGKILL);
    }
    let records = json_lines(&output.stdout);
    let stuck: Vec<&Value> = of_type(&records, "blocked_write")
        .into_iter()
        .filter(|r| r["state"] == "stuck")
        .collect();
    assert_eq!(stuck.len(), 1, "{records:#?}");
    check_stuck_logger(stuck[0], &rsyslogd);
    let summary = summary(&records);
    assert_eq!(summary["stuck"].as_array().unwrap().len(), 1, "{summary}");
    assert_eq!(summary["stuck"][0]["comm"], "logger", "{summary}");
}

/// The same, attached with `--pid` to a logger already blocked: found at start-up.
#[test]
fn logger_into_a_stopped_rsyslogd_attached() {
    if !can_run::require(Need::Root) {
        return;
    }
    let Some(rsyslogd) = StoppedRsyslogd::start("rsyslog-attached") else {
        return;
    };
    let mut shell = Command::new("sh")
        .args(["-c", &rsyslogd.logger_loop()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let logger = loop {
        if let Some(&logger) = children_named(shell.id(), "logger")
            .iter()
            .find(|pid| in_send(**pid))
        {
            break logger;
        }
        assert!(Instant::now() < deadline, "no logger ever blocked");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(800));
    let pid = logger.to_string();
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
    signal(shell.id(), libc::SIGKILL);
    signal(logger, libc::SIGKILL);
    let _ = shell.wait();
    let records = json_lines(&output.stdout);
    let stuck: Vec<&Value> = of_type(&records, "blocked_write")
        .into_iter()
        .filter(|r| r["state"] == "stuck")
        .collect();
    assert_eq!(stuck.len(), 1, "{records:#?}");
    assert_eq!(stuck[0]["pid"], logger, "{}", stuck[0]);
    check_stuck_logger(stuck[0], &rsyslogd);
    // It had been blocked since before stdtrace started.
    assert!(
        stuck[0]["duration_ms"].as_u64().unwrap() >= 800,
        "{}",
        stuck[0]
    );
}

/// The text one-liner of the syslog story.
#[test]
fn logger_into_a_stopped_rsyslogd_in_text() {
    if !can_run::require(Need::Root) {
        return;
    }
    let Some(rsyslogd) = StoppedRsyslogd::start("rsyslog-text") else {
        return;
    };
    let script = rsyslogd.logger_loop();
    let mut cmd = stdtrace::command(&["--slow", "500ms", "--", "sh", "-c", &script]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdout = StderrLines::new(child.stdout.take().unwrap());
    let mut stderr = StderrLines::new(child.stderr.take().unwrap());
    let tracing = stderr.wait_for("stdtrace: tracing pid ", Duration::from_secs(30));
    let shell: u32 = tracing.split_whitespace().nth(3).unwrap().parse().unwrap();
    let line = stdout.wait_for(" stuck ", Duration::from_secs(30));
    let loggers = children_named(shell, "logger");
    signal(shell, libc::SIGKILL);
    for logger in &loggers {
        signal(*logger, libc::SIGKILL);
    }
    let _ = child.wait();
    let expected = format!(
        "-> unix dgram {}, receiver pid {} (rsyslogd) stopped, queue ",
        rsyslogd.socket.display(),
        rsyslogd.pid()
    );
    assert!(line.contains(&expected), "{line:?} lacks {expected:?}");
    assert!(line.contains(" (logger): send"), "{line:?}");
    assert!(line.contains(" datagrams"), "{line:?}");
}

/// A Python client blocked in `sendall()` to a loopback TCP server that accepts and never
/// reads: stuck in sendto, the server the peer, both queues told.
#[test]
fn python_sendall_to_a_server_that_never_reads() {
    if !can_run::require(Need::Root) {
        return;
    }
    let script = fixtures::workspace_root().join("fixtures/sockets/tcp_client.py");
    // The client and server outlive stdtrace: their output goes to a file, not its pipes.
    let announced = std::env::temp_dir().join(format!("stdtrace-tcp-{}", std::process::id()));
    let shell = format!(
        "exec python3 {} >/dev/null 2>{}",
        script.display(),
        announced.display()
    );
    let output = stdtrace::run(&[
        "--format",
        "json",
        "--slow",
        "500ms",
        "--duration",
        "3",
        "--",
        "sh",
        "-c",
        &shell,
    ]);
    let announced_text = std::fs::read_to_string(&announced).unwrap_or_default();
    let _ = std::fs::remove_file(&announced);
    let line = announced_text
        .lines()
        .find(|line| line.starts_with("tcp_client:"))
        .unwrap_or_else(|| panic!("no announcement in {announced_text:?}"))
        .to_owned();
    let (client, server) = (field(&line, "pid"), field(&line, "server"));
    signal(client, libc::SIGKILL);
    signal(server, libc::SIGKILL);
    let records = json_lines(&output.stdout);
    let stuck: Vec<&Value> = of_type(&records, "blocked_write")
        .into_iter()
        .filter(|r| r["state"] == "stuck" && r["pid"] == client)
        .collect();
    assert_eq!(stuck.len(), 1, "{records:#?}");
    let stuck = stuck[0];
    assert_eq!(stuck["syscall"], "sendto", "{stuck}");
    assert_eq!(stuck["count"], 64u64 << 20, "{stuck}");
    let socket = &stuck["target"]["socket"];
    assert_eq!(socket["family"], "tcp", "{stuck}");
    assert_eq!(socket["state"], "established", "{stuck}");
    let readers = stuck["target"]["readers"].as_array().expect("receivers");
    assert_eq!(readers.len(), 1, "{stuck}");
    assert_eq!(readers[0]["pid"], server, "{stuck}");
    assert_eq!(readers[0]["reading"], false, "{stuck}");
    // Both queues: what the client could not send, what the server did not read.
    assert!(socket["send_queue"].as_u64().unwrap() > 0, "{stuck}");
    assert!(socket["send_buffer"].as_u64().unwrap() > 0, "{stuck}");
    assert_eq!(socket["peer"]["inode"], socket["peer_inode"], "{stuck}");
    assert!(
        socket["peer"]["receive_queue"].as_u64().unwrap() > 0,
        "{stuck}"
    );
    let names = function_names(stuck);
    assert!(names.iter().any(|name| name == "sock_sendall"), "{names:?}");
}

/// The C fixture's run under stdtrace: its records, and its own count of EPIPE sends.
fn run_send_epipe(mode: &str, k: u32) -> (Output, Vec<Value>) {
    run_send_epipe_with(&[], mode, k)
}

/// The same, with more stdtrace options.
fn run_send_epipe_with(options: &[&str], mode: &str, k: u32) -> (Output, Vec<Value>) {
    let fixture = send_epipe();
    let k = k.to_string();
    let mut args = vec!["--format", "json"];
    args.extend_from_slice(options);
    args.extend_from_slice(&["--", fixture.to_str().unwrap(), mode, &k]);
    let output = stdtrace::run(&args);
    let records = json_lines(&output.stdout);
    (output, records)
}

/// The summary's totals, as (syscall, errno, failures).
fn totals(records: &[Value]) -> Vec<(String, String, u64)> {
    summary(records)["totals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|total| {
            (
                total["syscall"].as_str().unwrap().to_owned(),
                total["errno"].as_str().unwrap().to_owned(),
                total["failures"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// k EPIPE sends, the last without MSG_NOSIGNAL: SIGPIPE kills it, one story, exit 141.
#[test]
fn send_epipe_without_msg_nosignal_is_killed() {
    if !can_run::require(Need::Root) {
        return;
    }
    let (output, records) = run_send_epipe("signal", 4);
    assert_eq!(output.status.code(), Some(141), "{records:#?}");
    let pid = field(&announcement(&output, "send_epipe:"), "pid");
    assert_eq!(totals(&records), [("sendto".into(), "EPIPE".into(), 4)]);
    let errors = write_errors(&records, pid);
    assert_eq!(errors.len(), 2, "{records:#?}");
    // The quiet call site once (its repeats counted), the one that raised SIGPIPE in full.
    assert_eq!(errors[0]["nosignal"], true, "{}", errors[0]);
    stdtrace::assert_calls(errors[0], "send", "emit_nosignal");
    assert_eq!(errors[1].get("nosignal"), None, "{}", errors[1]);
    assert_eq!(errors[1]["count"], 5, "{}", errors[1]);
    stdtrace::assert_calls(errors[1], "send", "emit_signal");
    stdtrace::assert_calls(errors[1], "emit_signal", "main");
    let stories = of_type(&records, "sigpipe");
    assert_eq!(stories.len(), 1, "{records:#?}");
    assert_eq!(stories[0]["fate"], "killed", "{}", stories[0]);
    assert_eq!(stories[0]["fd"], 3, "{}", stories[0]);
    stdtrace::assert_calls(stories[0], "send", "emit_signal");
    let summary = summary(&records);
    assert_eq!(summary["command"]["exit_code"], 141, "{summary}");
    assert_eq!(summary["failed_writes"], 4, "{summary}");
}

/// k EPIPE sends with MSG_NOSIGNAL: k EPIPE, no SIGPIPE story, and it exits normally.
#[test]
fn send_epipe_with_msg_nosignal_tells_no_sigpipe() {
    if !can_run::require(Need::Root) {
        return;
    }
    let (output, records) = run_send_epipe("nosignal", 5);
    assert_eq!(output.status.code(), Some(0), "{records:#?}");
    assert_eq!(
        field(&announcement(&output, "send_epipe: epipes="), "epipes"),
        5
    );
    assert_eq!(totals(&records), [("sendto".into(), "EPIPE".into(), 5)]);
    let pid = field(&announcement(&output, "send_epipe: pid="), "pid");
    let errors = write_errors(&records, pid);
    assert_eq!(errors.len(), 1, "{records:#?}");
    assert_eq!(errors[0]["nosignal"], true, "{}", errors[0]);
    assert_eq!(errors[0]["count"], 6, "{}", errors[0]);
    stdtrace::assert_calls(errors[0], "send", "emit_nosignal");
    stdtrace::assert_calls(errors[0], "emit_nosignal", "main");
    assert!(of_type(&records, "sigpipe").is_empty(), "{records:#?}");
    assert_eq!(summary(&records)["sigpipes"], serde_json::json!([]));
}

/// sendmmsg of three messages (10, 20 + 5 and 30 bytes): each call counted once, 65 bytes.
#[test]
fn sendmmsg_counted_once_per_call_with_its_bytes() {
    if !can_run::require(Need::Root) {
        return;
    }
    let (output, records) = run_send_epipe("mmsg", 4);
    assert_eq!(output.status.code(), Some(0), "{records:#?}");
    assert_eq!(totals(&records), [("sendmmsg".into(), "EPIPE".into(), 4)]);
    let pid = field(&announcement(&output, "send_epipe: pid="), "pid");
    let errors = write_errors(&records, pid);
    assert_eq!(errors.len(), 1, "{records:#?}");
    assert_eq!(errors[0]["syscall"], "sendmmsg", "{}", errors[0]);
    assert_eq!(errors[0]["count"], 65, "{}", errors[0]);
    assert_eq!(errors[0].get("count_partial"), None, "{}", errors[0]);
    stdtrace::assert_calls(errors[0], "sendmmsg", "emit_batch");
    assert_eq!(summary(&records)["repeats"], 3);
}

/// The raw `sys_exit` hook sees the send family too, with the same counts.
#[test]
fn send_family_on_the_raw_hook() {
    if !can_run::require(Need::Root) {
        return;
    }
    let (output, records) = run_send_epipe_with(&["--hook", "raw"], "mmsg", 3);
    assert_eq!(output.status.code(), Some(0), "{records:#?}");
    assert_eq!(totals(&records), [("sendmmsg".into(), "EPIPE".into(), 3)]);
    let pid = field(&announcement(&output, "send_epipe: pid="), "pid");
    let errors = write_errors(&records, pid);
    assert_eq!(errors.len(), 1, "{records:#?}");
    assert_eq!(errors[0]["count"], 65, "{}", errors[0]);
    assert_eq!(errors[0]["nosignal"], true, "{}", errors[0]);
    let (output, records) = run_send_epipe_with(&["--hook", "raw"], "signal", 2);
    assert_eq!(output.status.code(), Some(141), "{records:#?}");
    assert_eq!(totals(&records), [("sendto".into(), "EPIPE".into(), 2)]);
    assert_eq!(of_type(&records, "sigpipe").len(), 1, "{records:#?}");
}

/// sendmsg of two iovecs (3 + 4 bytes): 7 bytes.
#[test]
fn sendmsg_counts_its_iovecs() {
    if !can_run::require(Need::Root) {
        return;
    }
    let (output, records) = run_send_epipe("msg", 3);
    assert_eq!(output.status.code(), Some(0), "{records:#?}");
    assert_eq!(totals(&records), [("sendmsg".into(), "EPIPE".into(), 3)]);
    let pid = field(&announcement(&output, "send_epipe: pid="), "pid");
    let errors = write_errors(&records, pid);
    assert_eq!(errors.len(), 1, "{records:#?}");
    assert_eq!(errors[0]["count"], 7, "{}", errors[0]);
    stdtrace::assert_calls(errors[0], "sendmsg", "emit_message");
}

/// A Go toolchain: the system's 1.19, or one `cargo xtask setup` installed.
fn go_toolchain() -> Option<PathBuf> {
    let system = PathBuf::from("/usr/lib/go-1.19/bin/go");
    if system.exists() {
        return Some(system);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    let installed = home.join(".local/share/stdtrace/go");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(installed)
        .ok()?
        .filter_map(|entry| Some(entry.ok()?.path().join("go/bin/go")))
        .filter(|go| go.exists())
        .collect();
    versions.sort();
    versions.pop()
}

/// `fixtures/sockets/conn_write.go`, built into `target/fixtures`.
fn conn_write() -> Option<PathBuf> {
    let Some(go) = go_toolchain() else {
        can_run::require(Need::GoFixture(Path::new("/usr/lib/go-1.19/bin/go")));
        return None;
    };
    let source = fixtures::workspace_root().join("fixtures/sockets/conn_write.go");
    let out = fixtures::fixtures_out().join("sockets-conn_write");
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let status = Command::new(go)
        .arg("build")
        .arg("-o")
        .arg(&tmp)
        .arg(&source)
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .status()
        .expect("running go build");
    assert!(status.success(), "go build {}", source.display());
    std::fs::rename(&tmp, &out).unwrap();
    Some(out)
}

/// Go's `net.Conn.Write` to a connection the peer closed uses write(2), not send: its EPIPE
/// writes are reported as writes, counted once, with no SIGPIPE story (not fd 1 or 2).
#[test]
fn go_conn_write_epipe_is_a_write_counted_once() {
    if !can_run::require(Need::Root) {
        return;
    }
    let Some(program) = conn_write() else {
        return;
    };
    let output = stdtrace::run(&["--format", "json", "--", program.to_str().unwrap(), "3"]);
    assert_eq!(output.status.code(), Some(0));
    let pid = field(&announcement(&output, "conn_write: pid="), "pid");
    let epipes = field(&announcement(&output, "conn_write: epipes="), "epipes");
    assert_eq!(epipes, 3);
    let records = json_lines(&output.stdout);
    assert_eq!(totals(&records), [("write".into(), "EPIPE".into(), 3)]);
    let errors = write_errors(&records, pid);
    assert_eq!(errors.len(), 1, "{records:#?}");
    assert_eq!(errors[0]["syscall"], "write", "{}", errors[0]);
    assert!(errors[0]["go"]["goid"].as_u64().is_some(), "{}", errors[0]);
    let names = function_names(errors[0]);
    assert!(
        names.iter().any(|name| name == "net.(*conn).Write"),
        "{names:?}"
    );
    assert!(of_type(&records, "sigpipe").is_empty(), "{records:#?}");
}
