//! Every record stdtrace serializes, in one place: what `--format json` prints (one object per
//! line, documented in the README) and what the text renderer reads.
//!
//! This module is the pipeline's vocabulary: it imports nothing from the rest of the crate but
//! the errno table, so that every stage can build records without an import circle. Record
//! types, blocked states and SIGPIPE fates are enums that serialize to the documented strings;
//! an errno keeps its number (for its description) and serializes as its name.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

mod bounded;
mod chain;
mod container;
pub mod node;
mod snapshot;

pub use self::{
    bounded::{BinaryTotal, KernelMapEntries, SigpipeFates, TOP_SIGPIPE_STORIES, TrackedProcesses},
    chain::{ChainedWrite, MAX_CHAIN_DEPTH, MasterSide, PtyBuffers},
    container::{Container, OutputSink, Pod, Runtime, RuntimeRole},
    node::Node,
    snapshot::{GoroutineRecord, SnapshotSummary},
};
pub use crate::errno::Errno;

/// A name that is usually one of a known few (a syscall, a state), owned when read back from
/// a recording.
pub type Name = Cow<'static, str>;

/// The `type` of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordType {
    /// A write that failed with a watched errno.
    WriteError,
    /// A write that blocked: slow, stuck, resumed or parked.
    BlockedWrite,
    /// Failures counted at a call site already reported.
    Repeats,
    /// A SIGPIPE and its fate.
    Sigpipe,
    /// The last line of every run (and of every recorded file: the summary so far).
    Summary,
    /// One goroutine of a `snapshot --goroutines` dump.
    Goroutine,
    /// The last line of a snapshot.
    SnapshotSummary,
    /// The first line of every recorded file.
    Header,
}

impl RecordType {
    /// The name as it appears in the `type` field.
    pub fn name(self) -> &'static str {
        match self {
            RecordType::WriteError => "write_error",
            RecordType::BlockedWrite => "blocked_write",
            RecordType::Repeats => "repeats",
            RecordType::Sigpipe => "sigpipe",
            RecordType::Summary => "summary",
            RecordType::Goroutine => "goroutine",
            RecordType::SnapshotSummary => "snapshot_summary",
            RecordType::Header => "header",
        }
    }
}

/// How a blocked write stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockedState {
    /// It returned after blocking at least `--slow`.
    Slow,
    /// Blocked at least `--stuck`, and not returned.
    Stuck,
    /// It returned after being reported stuck or parked.
    Resumed,
    /// A goroutine parked in Go's netpoller after EAGAIN.
    Parked,
}

/// What became of a process that got SIGPIPE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fate {
    /// The default action: the exit status says SIGPIPE killed it.
    Killed,
    /// SIG_IGN: the write got EPIPE and the process went on.
    Ignored,
    /// A handler ran.
    Handled,
    /// Pending in the thread's signal mask.
    Blocked,
    /// Not sealed yet: the exit or the handler will tell (never in a record told).
    Pending,
}

/// One frame of a stack, as reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedBy {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// `"go":{...}`: the goroutine behind an event in a Go process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoReport {
    /// The goroutine id, as `runtime.Stack` and panics print it; `null` when it could not be
    /// read with certainty (`unknown` says why).
    pub goid: Option<u64>,
    /// The Go toolchain that built the program, e.g. `go1.25.5`.
    pub version: String,
    /// `running`, `syscall`, `waiting`, ... (`g.atomicstatus`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Name>,
    /// The goroutine that created this one (Go 1.21+).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_goid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<CreatedBy>,
    /// The thread was on its system stack (running C code called through cgo, or the
    /// runtime) on behalf of the goroutine.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteReport {
    #[serde(rename = "type")]
    pub record_type: RecordType,
    /// The node it was made on (`NODE_NAME`, else the host name).
    #[serde(default, skip_serializing_if = "Node::is_unknown")]
    pub node: Node,
    /// CLOCK_MONOTONIC nanoseconds: the syscall's exit, or when a stuck write was seen.
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// The container the writer runs in; absent for a process outside containers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    pub syscall: Name,
    pub fd: i32,
    /// For a `write_error`: the errno it failed with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<Errno>,
    /// For a `blocked_write`: `slow`, `stuck`, `resumed` or `parked`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<BlockedState>,
    /// For a `blocked_write`: how long it was (or has been) blocked, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// `duration_ms` is a lower bound: a snapshot (without BPF) knows only when the thread
    /// last ran, not when the write began.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duration_at_least: bool,
    /// Bytes the caller asked to write; `null` if they could not be read.
    pub count: Option<u64>,
    /// `count` is a lower bound (a vectored write with many iovecs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub count_partial: bool,
    /// A send-family call made with `MSG_NOSIGNAL`: EPIPE raised no SIGPIPE.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nosignal: bool,
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

/// Failed writes of one (process, fd, errno, syscall).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Total {
    pub pid: u32,
    pub comm: String,
    pub fd: i32,
    pub errno: Errno,
    pub syscall: Name,
    /// How many writes failed this way: exact, counted in the kernel.
    pub failures: u64,
    /// The container the process runs in, as captured at its events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
}

/// A write still stuck when tracing stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StuckWrite {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub syscall: Name,
    pub fd: i32,
    /// How long it has been blocked, in milliseconds.
    pub duration_ms: u64,
    /// Its goroutine, for a Go process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goid: Option<u64>,
    /// The container the writer runs in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
}

/// How a launched command ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutcome {
    pub pid: u32,
    /// Its exit code, or `128 + signal` if a signal killed it (what a shell shows in `$?`).
    pub exit_code: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

/// Counters of what the kernel programs could not do, for diagnosis.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
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
    /// Processes whose exit the kernel could not arrange to report (its map of processes
    /// with entries was full); found by rescanning `/proc` instead.
    pub processes_full: u64,
    /// SIGPIPE state the kernel had no room for.
    pub sigpipe_full: u64,
    /// Call paths the kernel had no room for (their failures are sent in full, counted).
    pub call_sites_full: u64,
    /// Children of targets not traced because the kernel's target set was full.
    pub targets_full: u64,
}

/// `{"type":"summary",...}`: the last line of every run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    #[serde(rename = "type")]
    pub record_type: RecordType,
    /// The node it was made on (`NODE_NAME`, else the host name).
    #[serde(default, skip_serializing_if = "Node::is_unknown")]
    pub node: Node,
    /// How long tracing ran, in milliseconds.
    pub duration_ms: u64,
    /// Why tracing stopped.
    pub stopped: Name,
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
    /// Failures of live processes (exited ones are folded into `totals_by_binary`).
    pub totals: Vec<Total>,
    /// Failures per binary, over every process of it: exited and live.
    #[serde(default)]
    pub totals_by_binary: Vec<BinaryTotal>,
    /// Blocked writes reported (slow, stuck, resumed).
    pub blocked_writes: u64,
    /// Writes blocked for at least the slow threshold when tracing stopped, still stuck.
    pub stuck: Vec<StuckWrite>,
    /// SIGPIPE stories, with their final count (without the stacks told already): those of
    /// live processes and the largest of exited ones (`sigpipe_fates` counts them all).
    pub sigpipes: Vec<SigpipeReport>,
    #[serde(default)]
    pub sigpipe_fates: SigpipeFates,
    /// What stdtrace tracks per process, and how full the kernel's maps are.
    #[serde(default)]
    pub tracked_processes: TrackedProcesses,
    /// Read for the final summary only (absent from the summaries so far).
    #[serde(default, skip_serializing_if = "KernelMapEntries::is_empty")]
    pub kernel_map_entries: KernelMapEntries,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandOutcome>,
    pub kernel: KernelCounters,
    /// Records stdtrace's own output could not write, stdout's and the recording's
    /// together: `stdout_records_dropped + recording_records_dropped`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_records_dropped: Option<u64>,
    /// Records for stdout dropped: its queue was full (nobody read stdout fast enough), or
    /// writing them failed (a full disk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout_records_dropped: Option<u64>,
    /// When recording (`record`, `--output`): records the recording could not keep (its
    /// queue was full, or the disk failed them); they were still shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_records_dropped: Option<u64>,
}

impl Summary {
    /// `output_records_dropped` from the counts of each output.
    pub fn add_up_output_drops(&mut self) {
        self.output_records_dropped =
            match (self.stdout_records_dropped, self.recording_records_dropped) {
                (None, None) => self.output_records_dropped,
                (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
            };
    }
}

/// The version of the recording format this stdtrace writes and reads; a recording from a
/// newer format is refused (new fields and record types keep the version).
pub const RECORDING_SCHEMA: u32 = 1;

/// `{"type":"header",...}`: the first line of every recorded file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    #[serde(rename = "type")]
    pub record_type: RecordType,
    /// [`RECORDING_SCHEMA`] of the stdtrace that wrote it.
    pub schema: u32,
    /// The version of the stdtrace that wrote it.
    pub stdtrace: String,
    /// The recording this file belongs to (its files share it) and its place in it, from 0.
    pub recording: String,
    pub file: u32,
    /// `uname -r`.
    pub kernel: String,
    /// The node (`NODE_NAME`, else the host name) and the host name.
    pub node: String,
    pub host: String,
    /// `/proc/sys/kernel/random/boot_id`: CLOCK_MONOTONIC times are only comparable within
    /// one boot.
    pub boot_id: String,
    /// The command line, after `stdtrace`.
    pub options: Vec<String>,
    /// Wall-clock nanoseconds since the epoch minus CLOCK_MONOTONIC nanoseconds: add it to a
    /// `ts_ns` for wall time.
    pub wall_minus_monotonic_ns: i64,
    /// When the file was started (CLOCK_MONOTONIC nanoseconds).
    pub ts_ns: u64,
}

/// `{"type":"repeats",...}`: failed writes counted in the kernel at a call site already
/// reported, since its first report. A call site is a binary's: its repeats are counted over
/// every process of that binary (`processes`); `pid` and `comm` are the first process's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepeatReport {
    #[serde(rename = "type")]
    pub record_type: RecordType,
    /// The node it was made on (`NODE_NAME`, else the host name).
    #[serde(default, skip_serializing_if = "Node::is_unknown")]
    pub node: Node,
    pub pid: u32,
    /// How many processes failed at this call path (the one reported included).
    #[serde(default = "one")]
    pub processes: u64,
    pub comm: String,
    pub syscall: Name,
    pub fd: i32,
    pub errno: Errno,
    /// The call site: the `site` of the `write_error` whose stack these repeat.
    pub site: u32,
    /// How many so far (after the reported ones), exact.
    pub count: u64,
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
    /// The container the process runs in, as captured at its reported write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
}

fn one() -> u64 {
    1
}

/// Who sent a SIGPIPE that no write raised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderReport {
    pub pid: u32,
    pub comm: String,
}

/// `{"type":"sigpipe",...}`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigpipeReport {
    #[serde(rename = "type")]
    pub record_type: RecordType,
    /// The node it was made on (`NODE_NAME`, else the host name).
    #[serde(default, skip_serializing_if = "Node::is_unknown")]
    pub node: Node,
    /// When the (first) SIGPIPE was generated.
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// The container the process runs in (from the write that raised it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    /// The fd of the write that raised it; `null` when no write did (sent by a process).
    pub fd: Option<i32>,
    /// How many SIGPIPEs (failed writes) on this fd.
    pub count: u64,
    /// `killed`, `ignored`, `handled` or `blocked`.
    pub fate: Fate,
    /// When the fate was sealed: the exit of a killed process, the handler's run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fate_ts_ns: Option<u64>,
    /// When the write that raised it had blocked (the pipe full, its reader not reading),
    /// and for how long, if it was reported as a blocked write: the start of the story.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_since_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_ms: Option<u64>,
    /// The reader that went away.
    pub reader: Option<LastReader>,
    /// For a SIGPIPE sent by a process rather than raised by a write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_by: Option<SenderReport>,
    /// What the fd pointed at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<FdTarget>,
    pub stack: Vec<FrameReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub go: Option<GoReport>,
}

/// What kind of thing an fd points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Pipe,
    Fifo,
    Pty,
    Tty,
    Socket,
    File,
    Char,
    Other,
}

/// A process holding one end of what an fd points at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub pid: u32,
    pub comm: String,
    /// Its fds that refer to it.
    pub fds: Vec<i32>,
    /// What it is doing, when that matters (the reader of a blocked write).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub activity: Option<Activity>,
    /// The container it runs in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    /// For a container runtime process: `role`, the container it `serves`, and where it
    /// `sends_to` that container's output.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeRole>,
    /// It is itself blocked writing: that write, described (a chain of stuck writers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_write: Option<Box<ChainedWrite>>,
}

/// The process that held a pipe's read end last and let it go, as the kernel remembered it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastReader {
    pub pid: u32,
    pub comm: String,
    /// It has exited (whether or not it closed the read end first).
    pub exited: bool,
    /// When it exited (CLOCK_MONOTONIC nanoseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_ts_ns: Option<u64>,
    /// When it closed the read end, if it did so before exiting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_ts_ns: Option<u64>,
}

/// What an fd points at, for reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdTarget {
    pub kind: TargetKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
    /// The path for files, FIFOs and terminals; `pipe:[N]`-style names for the rest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// For a pty, its number (`/dev/pts/N`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pts: Option<u32>,
    /// Whether the writer's open file is non-blocking (`O_NONBLOCK`): EAGAIN instead of waiting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonblocking: Option<bool>,
    /// Processes that can read what is written: the read end of a pipe or FIFO, the master side
    /// of a pty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readers: Option<Vec<Peer>>,
    /// Processes holding the write end of a pipe or FIFO.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writers: Option<Vec<Peer>>,
    /// For a pipe or FIFO: how many read ends were open when the write failed, as the kernel
    /// counted them (holders that exited since are counted here but not in `readers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_ends: Option<u32>,
    /// Likewise for write ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_ends: Option<u32>,
    /// For a pipe or FIFO: how many bytes it holds when full.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u64>,
    /// For a pipe or FIFO: bytes written and not read yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued: Option<u64>,
    /// For a socket: its family, addresses or peer, and queues.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<SocketInfo>,
    /// For a pipe nobody reads any more: who held the read end last, and when it let go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reader: Option<LastReader>,
    /// For a pty slave: its kernel buffers toward the master.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pty: Option<PtyBuffers>,
    /// For a pty slave: the process holding the master side and what it is doing (also among
    /// `readers`, where a chain continues); `null` when no process holds it.
    #[serde(
        default,
        deserialize_with = "chain::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub master: Option<MasterSide>,
    /// Why something could not be found out, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
}

/// A socket, described.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketInfo {
    /// `unix`, `tcp`, `tcp6`, `udp`, `udp6`, or `other`.
    pub family: Name,
    /// For a unix socket: `stream`, `dgram` or `seqpacket`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_type: Option<Name>,
    /// `established`, `listen`, `close-wait`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<Name>,
    /// The local address (`127.0.0.1:8080`), or a unix socket's path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    /// The remote address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// The inode of the socket at the other end: a unix socket's peer, or the local end of a
    /// loopback TCP connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_inode: Option<u64>,
    /// Bytes sent and not yet taken by the other end (`tx_queue`; a unix socket's
    /// `wqueue`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_queue: Option<u64>,
    /// Bytes received and not yet read here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receive_queue: Option<u64>,
    /// This socket's send buffer size in bytes (`sk_sndbuf`): a send blocks once the bytes in
    /// flight reach it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_buffer: Option<u64>,
    /// For TCP: retransmissions of the oldest unacknowledged segment (`retrnsmt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retransmits: Option<u64>,
    /// The other end's receiving side, as its kernel `struct sock` and the socket
    /// diagnostics say (for unix sockets and connections within this host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<SocketPeer>,
}

/// The receiving side of a socket's other end: how full its receive queue is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketPeer {
    /// The other end's socket inode.
    pub inode: u64,
    /// Bytes queued to be read there (stream sockets and TCP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receive_queue: Option<u64>,
    /// For a datagram socket: datagrams queued to be read there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receive_datagrams: Option<u64>,
    /// For a unix datagram socket: the queue's limit in datagrams (`net.unix.max_dgram_qlen`
    /// when it was created); senders block (or get EAGAIN) once more than this are queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_datagrams: Option<u64>,
    /// Memory its queued buffers take, overhead included (`sk_rmem_alloc`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receive_memory: Option<u64>,
    /// Its receive buffer's size (`sk_rcvbuf`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receive_buffer: Option<u64>,
}

/// What a process is doing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// `running`, `sleeping`, `disk-sleep`, `stopped`, `zombie`, ...
    pub state: Name,
    /// The kernel function it sleeps in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wchan: Option<String>,
    /// The system call it is in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
    /// It is reading one of the fds given to `process::activity::of_process` (a pipe's reader doing its job).
    pub reading: bool,
    /// It is itself blocked writing: stuck in a write of its own (a pipeline backing up).
    pub blocked: bool,
}

/// Reports for unit tests.
#[cfg(test)]
pub mod samples {
    use super::*;

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
            node: Node("node-1".into()),
            record_type: RecordType::WriteError,
            ts_ns: 1,
            pid: 812,
            tid: 812,
            comm: "writer".into(),
            container: None,
            syscall: "write".into(),
            fd: 4,
            errno: Some(Errno::EPIPE),
            state: None,
            duration_ms: None,
            duration_at_least: false,
            count: Some(1),
            count_partial: false,
            nosignal: false,
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
                pty: None,
                master: None,
                readers: Some(vec![]),
                writers: Some(vec![Peer {
                    pid: 812,
                    comm: "writer".into(),
                    fds: vec![4],
                    activity: None,
                    container: None,
                    runtime: None,
                    blocked_write: None,
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

    pub fn sigpipe() -> SigpipeReport {
        SigpipeReport {
            record_type: RecordType::Sigpipe,
            node: Node::here(),
            ts_ns: 1,
            pid: 812,
            tid: 812,
            comm: "writer".into(),
            container: None,
            fd: Some(4),
            count: 1,
            fate: Fate::Ignored,
            fate_ts_ns: None,
            blocked_since_ns: None,
            blocked_ms: None,
            reader: None,
            sent_by: None,
            target: None,
            stack: Vec::new(),
            go: None,
        }
    }
}

#[cfg(test)]
mod tests;
