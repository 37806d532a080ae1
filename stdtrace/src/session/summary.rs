//! The summary: the one place every field of the last record is built.
//!
//! Its parts come from two sides. What the kernel counted (exact totals, drops, SIGPIPEs per
//! fd) and what is still stuck are read once tracing has stopped ([`Ending::read`]); what was
//! told (reports, blocked writes, folded repeats, SIGPIPE stories) is known to the reporter
//! ([`Told`]). [`build`] puts them together.

use std::{collections::HashMap, sync::Arc, time::Duration};

use stdtrace_common::{FailureKey, counter};

use super::{folding::Folding, launch::ExitStatus};
use crate::{
    aggregate::sigpipe::SigpipeTracker,
    enrich::blocked::SlotTable,
    errno::Errno,
    events::{self, WriteSyscall},
    kernel::{call_sites::CallPaths, loader::Tracer},
    process::status,
    report::record::{
        BinaryTotal, CommandOutcome, Container, KernelCounters, KernelMapEntries, RecordType,
        StuckWrite, Summary, Total, TrackedProcesses,
    },
};

/// Why tracing stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    CommandExited,
    TargetsExited,
    Duration,
    Interrupted,
    Terminated,
    OutputClosed,
    /// Not stopped: the summary so far, that ends a recorded file when it rotates.
    StillTracing,
}

impl Stop {
    pub fn describe(self) -> &'static str {
        match self {
            Stop::CommandExited => "the command exited",
            Stop::TargetsExited => "every target exited",
            Stop::Duration => "the duration ran out",
            Stop::Interrupted => "interrupted",
            Stop::Terminated => "terminated",
            Stop::OutputClosed => "the output was closed",
            Stop::StillTracing => "still tracing",
        }
    }
}

/// Failures per (pid, fd, errno, syscall).
pub type Failures = HashMap<(u32, i32, u32, u32), u64>;

/// What the session and the kernel know when tracing has stopped.
pub struct Ending {
    pub stop: Stop,
    pub elapsed: Duration,
    /// The launched command, and how it ended.
    pub command: Option<(u32, ExitStatus)>,
    /// The kernel's per-CPU counters, summed.
    pub counters: [u64; counter::COUNT as usize],
    /// Every failure, tallied by the kernel or counted at a call site.
    pub failures: Failures,
    /// The kernel's count of SIGPIPEs raised by writes, per (pid, fd).
    pub sigpipe_counts: HashMap<(u32, i32), u64>,
    /// Writes blocked for at least the stuck threshold right now.
    pub stuck: Vec<StuckWrite>,
    /// Command names of the processes in `failures`.
    pub comms: HashMap<u32, String>,
    /// Failures per binary, exited and live processes' (`totals_by_binary`).
    pub by_binary: Vec<BinaryTotal>,
    pub tracked: TrackedProcesses,
    pub map_entries: KernelMapEntries,
    /// Call paths the kernel had no room for.
    pub call_sites_full: u64,
    /// The container of every process seen in one, as captured at its events (set by the
    /// session after [`Ending::read`]).
    pub containers: HashMap<u32, Arc<Container>>,
}

impl Ending {
    /// Reads the kernel's side of the summary.
    pub fn read(
        tracer: &Tracer,
        call_paths: Option<&CallPaths>,
        stuck: Vec<StuckWrite>,
        folding: &Folding,
        (stop, elapsed, command): (Stop, Duration, Option<(u32, ExitStatus)>),
    ) -> Result<Self, crate::kernel::loader::LoadError> {
        let counters = tracer.counters()?;
        // Repeats counted at their call site are not tallied again: they are added here.
        let mut failures: Failures = call_paths.map(CallPaths::totals).unwrap_or_default();
        for (key, count) in tracer.failures()? {
            *failures
                .entry((key.tgid, key.fd, key.errno, key.syscall))
                .or_insert(0) += count;
        }
        let by_binary = folding.by_binary(&failures);
        let mut comms: HashMap<u32, String> = failures
            .keys()
            .filter_map(|&(pid, ..)| Some((pid, folding.processes.comm(pid)?)))
            .collect();
        // The processes that exited last are still listed one by one.
        for (&pid, comm, recent) in folding.recent_totals() {
            comms.insert(pid, comm.clone());
            for (&key, &count) in recent {
                *failures.entry(key).or_insert(0) += count;
            }
        }
        let sigpipe_counts = tracer.sigpipe_counts().unwrap_or_else(|err| {
            log::warn!("reading the SIGPIPE counts: {err}");
            HashMap::new()
        });
        Ok(Self {
            stop,
            elapsed,
            command,
            counters,
            failures,
            sigpipe_counts,
            stuck,
            comms,
            by_binary,
            tracked: folding.tracked(),
            // A walk of every key of the maps, one syscall each: for the final summary only,
            // not for the summaries so far (each second, for recordings and `/metrics`).
            map_entries: if matches!(stop, Stop::StillTracing) {
                KernelMapEntries::new()
            } else {
                tracer.map_entries()
            },
            call_sites_full: call_paths.map_or(0, CallPaths::full),
            containers: HashMap::new(),
        })
    }
}

/// What the reporter told.
pub struct Told<'a> {
    /// `write_error` records written.
    pub reported: u64,
    /// `blocked_write` records written.
    pub blocked: u64,
    /// Failures from known call paths that reached userspace before the kernel knew the path,
    /// counted with the repeats.
    pub folded: u64,
    pub sigpipes: &'a SigpipeTracker,
}

/// The summary.
pub fn build(ending: Ending, told: Told<'_>) -> Summary {
    let counters = &ending.counters;
    let comm = |pid: u32| {
        ending
            .comms
            .get(&pid)
            .cloned()
            .or_else(|| status::comm(pid))
            .unwrap_or_else(|| "?".to_owned())
    };
    let mut totals: Vec<Total> = ending
        .failures
        .iter()
        .filter_map(|(&(tgid, fd, errno, syscall), &failures)| {
            let key = FailureKey {
                tgid,
                fd,
                errno,
                syscall,
            };
            let syscall = WriteSyscall::from_raw(key.syscall)?;
            Some(Total {
                pid: key.tgid,
                comm: comm(key.tgid),
                fd: key.fd,
                errno: Errno(key.errno),
                syscall: syscall.name().into(),
                failures,
                container: ending
                    .containers
                    .get(&key.tgid)
                    .map(|container| Container::clone(container)),
            })
        })
        .collect();
    totals.sort_by(|a, b| {
        (a.pid, a.fd, a.errno, &a.syscall).cmp(&(b.pid, b.fd, b.errno, &b.syscall))
    });
    // With EPIPE watched, the kernel counts SIGPIPEs raised by writes as the failed writes'
    // EPIPE tallies (each such write raises one).
    let mut sigpipe_counts = ending.sigpipe_counts.clone();
    for total in totals.iter().filter(|total| total.errno == Errno::EPIPE) {
        let count = sigpipe_counts.entry((total.pid, total.fd)).or_insert(0);
        *count = (*count).max(total.failures);
    }
    let (sigpipes, sigpipe_fates) = told.sigpipes.summary(&sigpipe_counts);
    Summary {
        node: crate::report::record::Node::here(),
        record_type: RecordType::Summary,
        duration_ms: ending.elapsed.as_millis() as u64,
        stopped: ending.stop.describe().into(),
        failed_writes: counters[counter::MATCHED as usize],
        reported: told.reported,
        dropped: counters[counter::RINGBUF_FULL as usize],
        repeats: counters[counter::REPEATS as usize] + told.folded,
        totals,
        totals_by_binary: ending.by_binary,
        blocked_writes: told.blocked,
        stuck: ending.stuck,
        sigpipes,
        sigpipe_fates,
        tracked_processes: ending.tracked,
        kernel_map_entries: ending.map_entries,
        command: ending.command.map(|(pid, status)| CommandOutcome {
            pid,
            exit_code: status.shell_code(),
            signal: match status {
                ExitStatus::Signaled(signal) => Some(signal),
                ExitStatus::Exited(_) => None,
            },
        }),
        kernel: KernelCounters {
            registers_unreadable: counters[counter::REGS_UNREADABLE as usize],
            fd_unreadable: counters[counter::FILE_UNREADABLE as usize],
            stack_unreadable: counters[counter::STACK_UNREADABLE as usize],
            tally_full: counters[counter::TALLY_FULL as usize],
            children_followed: counters[counter::CHILDREN_FOLLOWED as usize],
            lifecycle_dropped: counters[counter::LIFECYCLE_DROPPED as usize],
            writes_blocked: counters[counter::BLOCKED as usize],
            blocked_untracked: counters[counter::BLOCKED_UNTRACKED as usize],
            blocked_dropped: counters[counter::BLOCKED_DROPPED as usize],
            sites_full: counters[counter::SITES_FULL as usize],
            parked_full: counters[counter::PARKED_FULL as usize],
            processes_full: counters[counter::PROCESSES_FULL as usize],
            sigpipe_full: counters[counter::SIGPIPE_FULL as usize],
            call_sites_full: ending.call_sites_full,
            targets_full: counters[counter::TARGETS_FULL as usize],
        },
        // The outputs fill them in when they have written everything before the summary.
        output_records_dropped: None,
        stdout_records_dropped: None,
        recording_records_dropped: None,
    }
}

/// Writes blocked for at least `stuck_ns` right now, with how long they have been, for the
/// summary's `stuck` list.
pub fn still_stuck(slots: &dyn SlotTable, stuck_ns: u64) -> Vec<StuckWrite> {
    let now = events::monotonic_ns();
    let mut stuck: Vec<StuckWrite> = slots
        .blocked()
        .into_iter()
        .filter(|blocked| blocked.blocked_ns(now) >= stuck_ns)
        .map(|blocked| {
            let write = &blocked.write;
            StuckWrite {
                pid: write.tgid,
                tid: write.tid,
                comm: status::comm_from_bytes(&write.comm),
                syscall: WriteSyscall::from_raw(write.syscall)
                    .map_or("write", WriteSyscall::name)
                    .into(),
                fd: write.fd,
                duration_ms: blocked.blocked_ns(now) / 1_000_000,
                goid: write.go.certain_goid(),
                container: None,
            }
        })
        .collect();
    stuck.sort_by_key(|write| (write.pid, write.tid));
    stuck
}
