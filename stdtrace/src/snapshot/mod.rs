//! `stdtrace snapshot`: every thread blocked in a write right now, without BPF.
//!
//! A thin front over the same stages as `trace`: [`threads`] builds the same [`WriteEvent`]s
//! (outcome `Stuck`) from procfs that the kernel's blocked-write slots give, [`go`] finds each
//! one's goroutine in the runtime's list of goroutines, and `enrich::capture` (with
//! [`fill::WriteEndInspector`] for pipe fills) and `enrich::namer` make the same
//! `blocked_write` records, printed by the same outputs. Nothing here loads BPF, attaches
//! (ptrace), signals or stops a process.
//!
//! [`WriteEvent`]: crate::events::WriteEvent

pub mod args;
mod dump;
pub mod fill;
pub mod go;
mod output;
pub mod threads;

use std::{collections::HashMap, io::IsTerminal, time::Instant};

use stdtrace_common::{Goroutine, go_flags};

pub use self::args::SnapshotArgs;
use self::{
    go::{GoRuntime, GoroutineState},
    output::SnapshotOutput,
    threads::{BlockedWriter, ScanError},
};
use crate::{
    enrich::{capture::Capture, go::GoTracker, namer::Namer},
    process::status,
    report::record::{RecordType, SnapshotSummary, TargetKind, WriteReport},
};

/// Exit codes: something blocked, nothing blocked, an error.
pub const FOUND: i32 = 0;
pub const NOTHING: i32 = 1;

/// Runs a snapshot; `Ok(0)` when a thread is blocked writing, `Ok(1)` when none is. An error
/// (a pid that does not exist or cannot be read) is for the caller to print; it exits 2.
pub fn run(args: SnapshotArgs) -> anyhow::Result<i32> {
    let started = Instant::now();
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    let color = args.color(std::io::stdout().is_terminal(), no_color);
    let own_pid = std::process::id();
    let node_wide = args.pids.is_empty();
    let targets: Vec<u32> = if node_wide {
        let mut all = status::all_processes();
        all.retain(|pid| *pid != own_pid);
        all.sort_unstable();
        all
    } else {
        args.pids.clone()
    };

    let mut summary = SnapshotSummary {
        node: crate::report::record::Node::here(),
        record_type: RecordType::SnapshotSummary,
        duration_ms: 0,
        processes: 0,
        unreadable: 0,
        threads: 0,
        blocked_writes: 0,
        goroutines: 0,
        pids: args.pids.clone(),
    };
    let mut writers = Vec::new();
    let mut looked_at = Vec::new();
    for &pid in &targets {
        match threads::blocked_writers(pid) {
            Ok((found, threads)) => {
                summary.processes += 1;
                summary.threads += threads;
                writers.extend(found);
                looked_at.push(pid);
            }
            Err(err) if !node_wide => return Err(err.into()),
            // Node-wide, a process gone meanwhile is nothing; one we may not read is counted.
            Err(ScanError::NoSuchProcess(_)) => {}
            Err(err) => {
                log::debug!("{err}");
                summary.unreadable += 1;
            }
        }
    }

    let mut go_tracker = GoTracker::new(None);
    let mut goroutines = Goroutines::default();
    let mut why_no_goroutine: HashMap<u32, String> = HashMap::new();
    for writer in &mut writers {
        let pid = writer.event.pid;
        if go_tracker.process(pid).is_none() {
            continue;
        }
        match goroutines.of(pid).and_then(|(_, all)| {
            let sp = writer.event.registers.and_then(|r| r.sp()).unwrap_or(0);
            go::owner_of(all, sp).map(|(owner, how)| (*owner, how))
        }) {
            Ok((owner, how)) => writer.event.goroutine = Some(goroutine_event(&owner, how)),
            Err(why) => {
                writer.event.goroutine = Some(Goroutine {
                    flags: go_flags::GO_PROCESS,
                    ..Goroutine::default()
                });
                why_no_goroutine.insert(writer.event.tid, why);
            }
        }
    }

    let mut out = SnapshotOutput::new(args.format, color);
    let reports = name_writers(&writers, &mut go_tracker, &why_no_goroutine);
    summary.blocked_writes = reports.len();
    for report in &reports {
        out.write(report)?;
    }
    if args.goroutines {
        let blocked: HashMap<(u32, u64), u32> = reports
            .iter()
            .filter_map(|r| Some(((r.pid, r.go.as_ref()?.goid?), r.tid)))
            .collect();
        for &pid in &looked_at {
            if go_tracker.process(pid).is_none() {
                continue;
            }
            match goroutines.of(pid) {
                Ok((runtime, all)) => {
                    let records = dump::goroutines(pid, runtime, all, &blocked);
                    summary.goroutines += records.len();
                    for record in &records {
                        out.goroutine(record)?;
                    }
                }
                Err(why) if !node_wide => {
                    anyhow::bail!("reading the goroutines of pid {pid}: {why}")
                }
                Err(why) => log::info!("goroutines of pid {pid}: {why}"),
            }
        }
    }
    summary.duration_ms = started.elapsed().as_millis() as u64;
    out.summary(&summary)?;
    Ok(if summary.blocked_writes > 0 {
        FOUND
    } else {
        NOTHING
    })
}

/// The goroutines of each Go process, read once per snapshot.
#[derive(Default)]
struct Goroutines {
    read: HashMap<u32, Result<(GoRuntime, Vec<GoroutineState>), String>>,
}

impl Goroutines {
    fn of(&mut self, pid: u32) -> Result<&(GoRuntime, Vec<GoroutineState>), String> {
        self.read
            .entry(pid)
            .or_insert_with(|| {
                let runtime = GoRuntime::of_process(pid)?;
                let all = runtime.goroutines(pid)?;
                Ok((runtime, all))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// The goroutine as the kernel program would have read it: found, owning the stack.
fn goroutine_event(owner: &GoroutineState, how: go::Owner) -> Goroutine {
    let on_system_stack = match how {
        go::Owner::OwnStack => 0,
        go::Owner::SystemStack => go_flags::ON_SYSTEM_STACK,
    };
    Goroutine {
        flags: go_flags::GO_PROCESS | go_flags::FOUND | go_flags::STACK_OWNED | on_system_stack,
        status: owner.status,
        fsbase: 0,
        g: owner.g,
        stack_lo: owner.stack_lo,
        stack_hi: owner.stack_hi,
        goroutine: owner.g,
        goid: owner.goid,
        parent_goid: owner.parent_goid,
        gopc: owner.gopc,
    }
}

/// The blocked writers through the same capture and namer as `trace`'s stuck writes.
fn name_writers(
    writers: &[BlockedWriter],
    go_tracker: &mut GoTracker,
    why_no_goroutine: &HashMap<u32, String>,
) -> Vec<WriteReport> {
    let mut capture = Capture::new();
    let mut inspector = fill::WriteEndInspector::default();
    let events = writers.iter().map(|writer| writer.event.clone()).collect();
    let captured = capture.capture(events, go_tracker, &mut inspector);
    // No kernel to hand call paths to: what the namer learns goes nowhere.
    let (learned, _) = std::sync::mpsc::channel();
    let mut namer = Namer::new(learned);
    captured
        .into_iter()
        .zip(writers)
        .map(|(captured, writer)| {
            let mut report = namer.report(captured);
            report.duration_at_least = writer.at_least;
            if matches!(report.target.kind, TargetKind::Pipe | TargetKind::Fifo)
                && report.target.queued.is_none()
                && let Some(why) = inspector.unknown.get(&(report.pid, report.fd))
            {
                let why = format!("pipe fill unknown: {why}");
                report.target.unknown = Some(match report.target.unknown.take() {
                    Some(before) => format!("{before}; {why}"),
                    None => why,
                });
            }
            if let Some(end) = &mut report.stack_end
                && end.starts_with("register ")
            {
                end.push_str(
                    " (a snapshot knows only SP and PC: the other registers were saved at syscall entry, where only the kernel or ptrace can read them)",
                );
            }
            if let (Some(go), Some(why)) = (&mut report.go, why_no_goroutine.get(&report.tid)) {
                go.goid = None;
                go.unknown = Some(why.clone());
            }
            report
        })
        .collect()
}
