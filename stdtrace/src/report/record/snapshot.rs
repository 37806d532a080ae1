//! The records only `stdtrace snapshot` makes: a goroutine of a dump, and its summary line.
//! (Its blocked writes are the same `blocked_write` records as `trace` gives.)

use serde::Serialize;

use super::{CreatedBy, FrameReport, Node, RecordType};

/// `{"type":"goroutine",...}`: one goroutine of a Go process, from `snapshot --goroutines`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GoroutineRecord {
    #[serde(rename = "type")]
    pub record_type: RecordType,
    /// The node it was made on (`NODE_NAME`, else the host name).
    #[serde(default, skip_serializing_if = "Node::is_unknown")]
    pub node: Node,
    pub pid: u32,
    pub comm: String,
    /// As `runtime.Stack` prints it.
    pub goid: u64,
    /// `running`, `runnable`, `syscall`, `waiting`, ... (`g.atomicstatus`).
    pub status: &'static str,
    /// Why a waiting goroutine waits (`chan receive`, `select`, `sleep`, ...), in the binary's
    /// own words (`runtime.waitReasonStrings`); `null` when they cannot be found.
    pub wait_reason: Option<String>,
    /// The runtime's number for the wait reason (its meaning depends on the Go version).
    pub wait_reason_code: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_goid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<CreatedBy>,
    /// For a goroutine in a system call: the thread blocked in it, when that is a write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_write_tid: Option<u32>,
    /// Where it stopped: from `g.sched` when parked, from `g.syscallsp`/`g.syscallpc` in a
    /// system call; empty for a goroutine running now (its registers are the thread's).
    pub stack: Vec<FrameReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack_end: Option<String>,
}

/// `{"type":"snapshot_summary",...}`: the last line of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotSummary {
    #[serde(rename = "type")]
    pub record_type: RecordType,
    /// The node it was made on (`NODE_NAME`, else the host name).
    #[serde(default, skip_serializing_if = "Node::is_unknown")]
    pub node: Node,
    /// How long the snapshot took.
    pub duration_ms: u64,
    /// Processes looked at (readable), and those that could not be read (node-wide only:
    /// an explicit `--pid` that cannot be read is an error).
    pub processes: usize,
    pub unreadable: usize,
    /// Threads looked at.
    pub threads: usize,
    /// `blocked_write` records reported.
    pub blocked_writes: usize,
    /// `goroutine` records reported (`--goroutines`).
    pub goroutines: usize,
    /// The `--pid`s asked for (empty: every process).
    pub pids: Vec<u32>,
}
