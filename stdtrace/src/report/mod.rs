//! Reports: the enriched, owned records stdtrace prints, and the two ways it prints them (text
//! for people, JSON Lines for machines).
//!
//! Data flows one way: kernel record (`events`) -> enriched report (here) -> output.

mod json;
mod text;

use std::io::{self, Write};

use serde::Serialize;

pub use self::{
    json::JsonOutput,
    text::{Clock, TextOutput},
};
use crate::{callpaths::RepeatReport, process::fd::FdTarget, sigpipe::SigpipeReport};

/// One frame of a stack, as reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FrameReport {
    /// Runtime address, `0x`-prefixed hex: the pc for the first frame, the return address for
    /// the others.
    pub address: String,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// The file the address is mapped from.
    pub object: Option<String>,
    /// The address inside that object (what `addr2line -e OBJECT` takes), `0x`-prefixed hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_address: Option<String>,
    /// Expanded from inline debug info: the function was inlined into the next frame.
    pub inlined: bool,
    /// Why the frame could not be (fully) named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
}

/// Where a goroutine was created: the `go` statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CreatedBy {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// `"go":{...}`: the goroutine behind an event in a Go process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GoReport {
    /// The goroutine id, as `runtime.Stack` and panics print it; `null` when it could not be
    /// read with certainty (`unknown` says why).
    pub goid: Option<u64>,
    /// The Go toolchain that built the program, e.g. `go1.25.5`.
    pub version: String,
    /// `running`, `syscall`, `waiting`, ... (`g.atomicstatus`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    /// The goroutine that created this one (Go 1.21+).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_goid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<CreatedBy>,
    /// The thread was on its system stack (running C code called through cgo, or the
    /// runtime) on behalf of the goroutine.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub system_stack: bool,
    /// Why the goroutine is not known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
    /// A caveat on what is reported (e.g. runtime offsets guessed for an unknown Go version).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caveat: Option<String>,
}

/// `{"type":"write_error",...}`: a write that failed with a watched errno; and
/// `{"type":"blocked_write",...}`: a write that blocked (slow, stuck, resumed, parked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WriteReport {
    #[serde(rename = "type")]
    pub record_type: &'static str,
    /// CLOCK_MONOTONIC nanoseconds: the syscall's exit, or when a stuck write was seen.
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub syscall: &'static str,
    pub fd: i32,
    /// For a `write_error`: the errno it failed with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    /// For a `blocked_write`: `slow`, `stuck`, `resumed` or `parked`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    /// For a `blocked_write`: how long it was (or has been) blocked, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Bytes the caller asked to write; `null` if they could not be read.
    pub count: Option<u64>,
    /// `count` is a lower bound (a vectored write with many iovecs).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub count_partial: bool,
    pub target: FdTarget,
    pub stack: Vec<FrameReport>,
    /// Why the stack ends where it does, when it ends early.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack_end: Option<String>,
    /// The goroutine, for a Go process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub go: Option<GoReport>,
    /// For a `write_error`: its call site's id. Later failures from the same call path are
    /// counted in the kernel and reported as `repeats` of this site.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<u32>,
    /// Its call path was reported before: sent in full only because the kernel had not been
    /// told the path yet. It is counted with the site's repeats, not printed again.
    #[serde(skip)]
    pub repeat: bool,
}

impl WriteReport {
    pub const WRITE_ERROR: &'static str = "write_error";
    pub const BLOCKED_WRITE: &'static str = "blocked_write";
}

/// Failed writes of one (process, fd, errno, syscall).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Total {
    pub pid: u32,
    pub comm: String,
    pub fd: i32,
    pub errno: String,
    pub syscall: &'static str,
    /// How many writes failed this way: exact, counted in the kernel.
    pub failures: u64,
}

/// A write still stuck when tracing stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StuckWrite {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub syscall: &'static str,
    pub fd: i32,
    /// How long it has been blocked, in milliseconds.
    pub duration_ms: u64,
    /// Its goroutine, for a Go process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goid: Option<u64>,
}

/// How a launched command ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CommandOutcome {
    pub pid: u32,
    /// Its exit code, or `128 + signal` if a signal killed it (what a shell shows in `$?`).
    pub exit_code: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

/// Counters of what the kernel programs could not do, for diagnosis.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KernelCounters {
    pub registers_unreadable: u64,
    pub fd_unreadable: u64,
    pub stack_unreadable: u64,
    pub tally_full: u64,
    pub children_followed: u64,
    pub lifecycle_dropped: u64,
    /// Writes that blocked (the writer slept in them), slow or not.
    pub writes_blocked: u64,
    /// Blocked writes not tracked because another blocked thread had their slot.
    pub blocked_untracked: u64,
    /// Slow or resumed write records the ring buffer had no room for.
    pub blocked_dropped: u64,
    /// Repeated failures not counted per call site because its map was full (still in the
    /// totals and in `repeats`).
    pub sites_full: u64,
    /// Goroutines parked after EAGAIN not recorded because the kernel's map of them was full.
    pub parked_full: u64,
}

/// `{"type":"summary",...}`: the last line of every run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Summary {
    #[serde(rename = "type")]
    pub record_type: &'static str,
    /// How long tracing ran, in milliseconds.
    pub duration_ms: u64,
    /// Why tracing stopped.
    pub stopped: &'static str,
    /// Failed writes matched in the kernel (exact, including those whose event was dropped).
    pub failed_writes: u64,
    /// Failed writes that reached stdtrace and were reported.
    pub reported: u64,
    /// Events the ring buffer had no room for: counted in `failed_writes` and `totals`, but
    /// not reported one by one.
    pub dropped: u64,
    /// Failed writes from call paths already reported, counted in the kernel at their call
    /// site (`repeats` records) instead of sent: `reported + dropped + repeats =
    /// failed_writes`.
    pub repeats: u64,
    pub totals: Vec<Total>,
    /// Blocked writes reported (slow, stuck, resumed).
    pub blocked_writes: u64,
    /// Writes blocked for at least the slow threshold when tracing stopped, still stuck.
    pub stuck: Vec<StuckWrite>,
    /// Every SIGPIPE story, with its final count (without the stacks told already).
    pub sigpipes: Vec<SigpipeReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandOutcome>,
    pub kernel: KernelCounters,
}

impl Summary {
    pub const TYPE: &'static str = "summary";
}

/// Where reports go.
pub enum Output {
    Text(TextOutput),
    /// JSON Lines; `quiet` leaves out everything but the summary.
    Json {
        json: JsonOutput,
        quiet: bool,
    },
}

impl Output {
    pub fn write_error(&mut self, report: &WriteReport) -> io::Result<()> {
        match self {
            Output::Text(text) => text.write(report),
            Output::Json { quiet: true, .. } => Ok(()),
            Output::Json { json, .. } => json.record(report),
        }
    }

    /// Periodic work between batches (text mode prints how often a stack repeated).
    pub fn tick(&mut self) -> io::Result<()> {
        match self {
            Output::Text(text) => text.flush_repeats(false),
            Output::Json { json, .. } => json.flush(),
        }
    }

    /// Failures counted in the kernel at call sites already reported.
    pub fn repeats(&mut self, reports: &[RepeatReport]) -> io::Result<()> {
        match self {
            Output::Text(text) => {
                text.repeats(reports);
                Ok(())
            }
            Output::Json { quiet: true, .. } => Ok(()),
            Output::Json { json, .. } => reports.iter().try_for_each(|report| json.record(report)),
        }
    }

    pub fn sigpipe(&mut self, report: &SigpipeReport) -> io::Result<()> {
        match self {
            Output::Text(text) => text.sigpipe(report),
            Output::Json { quiet: true, .. } => Ok(()),
            Output::Json { json, .. } => json.record(report),
        }
    }

    pub fn summary(&mut self, summary: &Summary) -> io::Result<()> {
        match self {
            Output::Text(text) => {
                text.flush_repeats(true)?;
                text.summary(summary)
            }
            Output::Json { json, .. } => json.record(summary),
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Text(text) => text.flush(),
            Output::Json { json, .. } => json.flush(),
        }
    }
}

/// Replaces control characters (escape sequences in a hostile comm or path) with visible
/// escapes before text goes to a terminal.
pub fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Writes and flushes, for outputs built on any writer.
pub(crate) fn write_line(out: &mut dyn Write, line: &str) -> io::Result<()> {
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")
}

/// Reports for unit tests.
#[cfg(test)]
pub(crate) mod samples {
    use super::*;
    use crate::process::fd::{Peer, TargetKind};

    pub fn frame(address: &str, function: Option<&str>, line: Option<u32>) -> FrameReport {
        FrameReport {
            address: address.into(),
            function: function.map(Into::into),
            file: line.map(|_| "/src/writer.c".into()),
            line,
            object: Some("/usr/bin/writer".into()),
            object_address: Some("0x1234".into()),
            inlined: false,
            unknown: function
                .is_none()
                .then(|| "no symbol covers this address".into()),
        }
    }

    pub fn report() -> WriteReport {
        WriteReport {
            record_type: WriteReport::WRITE_ERROR,
            ts_ns: 1,
            pid: 812,
            tid: 812,
            comm: "writer".into(),
            syscall: "write",
            fd: 4,
            errno: Some("EPIPE".into()),
            state: None,
            duration_ms: None,
            count: Some(1),
            count_partial: false,
            target: FdTarget {
                kind: TargetKind::Pipe,
                inode: Some(40213),
                path: Some("pipe:[40213]".into()),
                pts: None,
                nonblocking: Some(false),
                read_ends: Some(0),
                write_ends: Some(1),
                capacity: None,
                queued: None,
                socket: None,
                last_reader: None,
                readers: Some(vec![]),
                writers: Some(vec![Peer {
                    pid: 812,
                    comm: "writer".into(),
                    fds: vec![4],
                    activity: None,
                }]),
                unknown: None,
            },
            stack: vec![
                frame("0x7f0000001000", Some("write"), None),
                frame("0x401234", Some("emit_epipe"), Some(42)),
                frame("0x401300", None, None),
            ],
            stack_end: Some("reached the outermost frame".into()),
            go: None,
            site: None,
            repeat: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::process::fd::{Peer, TargetKind};

    fn write_error() -> WriteReport {
        WriteReport {
            record_type: WriteReport::WRITE_ERROR,
            ts_ns: 5,
            pid: 812,
            tid: 813,
            comm: "writer".into(),
            syscall: "write",
            fd: 4,
            errno: Some("EPIPE".into()),
            state: None,
            duration_ms: None,
            count: Some(1),
            count_partial: false,
            target: FdTarget {
                kind: TargetKind::Pipe,
                inode: Some(40213),
                path: Some("pipe:[40213]".into()),
                pts: None,
                nonblocking: Some(false),
                readers: Some(vec![]),
                writers: Some(vec![Peer {
                    pid: 812,
                    comm: "writer".into(),
                    fds: vec![4],
                    activity: None,
                }]),
                read_ends: Some(0),
                write_ends: Some(1),
                capacity: None,
                queued: None,
                socket: None,
                last_reader: None,
                unknown: None,
            },
            stack: vec![FrameReport {
                address: "0x401000".into(),
                function: Some("emit_epipe".into()),
                file: Some("/src/writer.c".into()),
                line: Some(42),
                object: Some("/opt/writer".into()),
                object_address: Some("0x1000".into()),
                inlined: false,
                unknown: None,
            }],
            stack_end: None,
            go: None,
            site: None,
            repeat: false,
        }
    }

    /// The JSON Lines schema is a contract (documented in the README): these are its exact
    /// field names and shapes.
    #[test]
    fn write_error_schema() {
        let value = serde_json::to_value(write_error()).unwrap();
        assert_eq!(
            value,
            json!({
                "type": "write_error", "ts_ns": 5, "pid": 812, "tid": 813, "comm": "writer",
                "syscall": "write", "fd": 4, "errno": "EPIPE", "count": 1,
                "target": {
                    "kind": "pipe", "inode": 40213, "path": "pipe:[40213]", "nonblocking": false,
                    "readers": [], "writers": [{"pid": 812, "comm": "writer", "fds": [4]}],
                    "read_ends": 0, "write_ends": 1
                },
                "stack": [{
                    "address": "0x401000", "function": "emit_epipe", "file": "/src/writer.c",
                    "line": 42, "object": "/opt/writer", "object_address": "0x1000",
                    "inlined": false
                }]
            })
        );
        let mut partial = write_error();
        partial.count_partial = true;
        partial.stack_end = Some("stack copy exhausted".into());
        partial.stack[0].function = None;
        partial.stack[0].unknown = Some("no symbol covers 0x1000 (stripped)".into());
        let value = serde_json::to_value(partial).unwrap();
        assert_eq!(value["count_partial"], true);
        assert_eq!(value["stack_end"], "stack copy exhausted");
        assert_eq!(value["stack"][0]["function"], Value::Null);
        assert_eq!(
            value["stack"][0]["unknown"],
            "no symbol covers 0x1000 (stripped)"
        );
    }

    #[test]
    fn summary_schema() {
        let summary = Summary {
            record_type: Summary::TYPE,
            duration_ms: 1203,
            stopped: "the command exited",
            failed_writes: 11,
            reported: 8,
            dropped: 0,
            repeats: 3,
            totals: vec![Total {
                pid: 812,
                comm: "writer".into(),
                fd: 4,
                errno: "EPIPE".into(),
                syscall: "write",
                failures: 5,
            }],
            blocked_writes: 1,
            stuck: vec![StuckWrite {
                pid: 9,
                tid: 10,
                comm: "app".into(),
                syscall: "write",
                fd: 1,
                duration_ms: 42000,
                goid: Some(17),
            }],
            sigpipes: Vec::new(),
            command: Some(CommandOutcome {
                pid: 812,
                exit_code: 141,
                signal: Some(13),
            }),
            kernel: KernelCounters::default(),
        };
        assert_eq!(
            serde_json::to_value(summary).unwrap(),
            json!({
                "type": "summary", "duration_ms": 1203, "stopped": "the command exited",
                "failed_writes": 11, "reported": 8, "dropped": 0, "repeats": 3,
                "totals": [{"pid": 812, "comm": "writer", "fd": 4, "errno": "EPIPE",
                            "syscall": "write", "failures": 5}],
                "blocked_writes": 1,
                "stuck": [{"pid": 9, "tid": 10, "comm": "app", "syscall": "write", "fd": 1,
                           "duration_ms": 42000, "goid": 17}],
                "sigpipes": [],
                "command": {"pid": 812, "exit_code": 141, "signal": 13},
                "kernel": {"registers_unreadable": 0, "fd_unreadable": 0, "stack_unreadable": 0,
                           "tally_full": 0, "children_followed": 0, "lifecycle_dropped": 0,
                           "writes_blocked": 0, "blocked_untracked": 0, "blocked_dropped": 0,
                           "sites_full": 0, "parked_full": 0}
            })
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(sanitize("ok"), "ok");
        assert_eq!(sanitize("evil\x1b[31m"), "evil\\u{1b}[31m");
        assert_eq!(sanitize("a\nb"), "a\\nb");
    }
}
