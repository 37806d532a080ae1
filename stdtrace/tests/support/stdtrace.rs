//! Running the real stdtrace binary, with its real kernel programs, in tests.
//!
//! These tests need root: each starts with `can_run::require(Need::Root)` (`can_run.rs`).

#![allow(
    dead_code,
    reason = "each test binary uses its own part of the support code"
)]

use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// The stdtrace binary cargo built for these tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_stdtrace")
}

/// A stdtrace command with the given arguments.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.args(args);
    cmd
}

/// Runs stdtrace to completion (with a watchdog) and returns its output.
pub fn run(args: &[&str]) -> Output {
    run_command(command(args))
}

pub fn run_command(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("starting stdtrace");
    wait_with_timeout(child, Duration::from_secs(60))
}

/// Waits for a child, killing it (by pid) if it outlives `limit`.
pub fn wait_with_timeout(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let (done, finished) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let output = child.wait_with_output();
        let _ = done.send(());
        output
    });
    if finished.recv_timeout(limit).is_err() {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        panic!("stdtrace (pid {pid}) did not finish within {limit:?}");
    }
    waiter
        .join()
        .expect("waiter thread")
        .expect("collecting output")
}

/// Reads lines from a child's stdout or stderr in the background, so a test can wait for one.
pub struct Lines {
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

/// The usual use: a child's stderr.
pub type StderrLines = Lines;

impl Lines {
    pub fn new(stream: impl Read + Send + 'static) -> Self {
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle` and returns it.
    pub fn wait_for(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no stderr line with {needle:?} within {limit:?}; saw {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Waits until `count` lines (counting those already seen) satisfy `matches`.
    pub fn wait_for_count(
        &mut self,
        count: usize,
        limit: Duration,
        matches: impl Fn(&str) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        while self.seen.iter().filter(|line| matches(line)).count() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "fewer than {count} matching lines within {limit:?}: {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Everything read so far plus whatever arrives until the stream ends (or `limit` passes
    /// without a line).
    pub fn all(&mut self, limit: Duration) -> Vec<String> {
        while let Ok(line) = self.lines.recv_timeout(limit) {
            self.seen.push(line);
        }
        self.seen.clone()
    }

    /// Everything read so far plus whatever arrives within `limit`.
    pub fn rest(&mut self, limit: Duration) -> Vec<String> {
        while let Ok(line) = self.lines.recv_timeout(limit) {
            self.seen.push(line);
        }
        self.seen.clone()
    }
}

/// Parses stdtrace's JSON Lines output. Every line must be a JSON object.
pub fn json_lines(stdout: &[u8]) -> Vec<Value> {
    parse_json_lines(String::from_utf8_lossy(stdout).lines())
}

/// Parses lines of JSON. Every line must be a JSON object.
pub fn parse_json_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<Value> {
    lines
        .into_iter()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"))
        })
        .collect()
}

/// Whether a line of JSON output is a `write_error` of `pid`.
pub fn is_write_error_of(line: &str, pid: u32) -> bool {
    serde_json::from_str::<Value>(line)
        .map(|record| record["type"] == "write_error" && record["pid"] == pid)
        .unwrap_or(false)
}

/// The `write_error` records of one process.
pub fn write_errors(records: &[Value], pid: u32) -> Vec<&Value> {
    records
        .iter()
        .filter(|record| record["type"] == "write_error" && record["pid"] == pid)
        .collect()
}

/// The names of a record's stack frames, in order.
pub fn function_names(record: &Value) -> Vec<String> {
    record["stack"]
        .as_array()
        .map(|frames| {
            frames
                .iter()
                .map(|frame| frame["function"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts that `caller` appears in the stack right after `callee` (the frame `callee` returns
/// to), with the libc `write` wrapper before `callee` when `libc_write` is set.
pub fn assert_calls(record: &Value, callee: &str, caller: &str) {
    let names = function_names(record);
    let position = names
        .iter()
        .position(|name| name == callee || name.ends_with(&format!("::{callee}")))
        .unwrap_or_else(|| panic!("{callee} not in the stack {names:?} of {record}"));
    let next = names
        .get(position + 1)
        .map(String::as_str)
        .unwrap_or("<end>");
    assert!(
        next == caller || next.ends_with(&format!("::{caller}")),
        "{callee} should be called by {caller}, but the next frame is {next}: {names:?}"
    );
}

/// Parses `key=value` pairs from a fixture's announcement line.
pub fn field(line: &str, key: &str) -> u32 {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(&format!("{key}=")))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// The records of one `type`.
pub fn of_type<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["type"] == kind).collect()
}

/// The last record, which must be the summary.
pub fn summary(records: &[Value]) -> &Value {
    let last = records.last().expect("no output");
    assert_eq!(last["type"], "summary", "{last}");
    last
}

/// The line of a fixture's stderr that starts with `prefix`.
pub fn announcement(output: &Output, prefix: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr
        .lines()
        .find(|line| line.starts_with(prefix))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{stderr}"))
}
