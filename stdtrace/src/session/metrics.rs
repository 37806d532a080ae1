//! Feeding `/metrics` from the session: once a second and when tracing ends, the kernel's
//! tally (read as the summary reads it, [`Ending::read`]) and counters, the writes blocked now,
//! and the outputs' drops. The server runs on its own thread (`report::metrics`); here only
//! the instruments are updated, which never waits for a scraper.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use stdtrace_common::counter;

use super::{
    pipeline::Session,
    summary::{Ending, Stop},
};
use crate::{
    aggregate::metrics::{Instruments, Label, Source, WriteErrorSeries, Writer},
    cli::MetricsConfig,
    enrich::{blocked::SlotTable, parked::ParkedTable},
    events,
    process::status,
    report::{
        metrics::{MetricsError, MetricsServer},
        queue::OutputStats,
        record::{BlockedState, TargetKind},
    },
};

/// The kernel's drop counters, by the `reason` they have on `stdtrace_events_dropped_total`
/// (the names of the summary's `kernel` fields; `ringbuf_full` is the summary's `dropped`).
const KERNEL_DROPS: [(&str, u32); 7] = [
    ("ringbuf_full", counter::RINGBUF_FULL),
    ("lifecycle_dropped", counter::LIFECYCLE_DROPPED),
    ("blocked_dropped", counter::BLOCKED_DROPPED),
    ("blocked_untracked", counter::BLOCKED_UNTRACKED),
    ("tally_full", counter::TALLY_FULL),
    ("sites_full", counter::SITES_FULL),
    ("parked_full", counter::PARKED_FULL),
];

/// The `reason` of mapping records (perf MMAP2, EXEC, EXIT) the kernel dropped: userspace's.
const MAPPING_RECORDS_LOST: &str = "mapping_records_lost";

/// Every this many updates (seconds), the processes counted in a series are looked for in
/// procfs: node-wide, the kernel tells the exits of only some.
const SWEEP_EVERY: u64 = 5;

/// The session's side of `--metrics`.
pub struct SessionMetrics {
    pub instruments: Instruments,
    series: WriteErrorSeries,
    server: MetricsServer,
    /// What each failing fd pointed at when a failed write on it was captured.
    fd_kinds: HashMap<(u32, i32), TargetKind>,
    /// Processes that exited since the last update, and in the update before.
    exited: (Vec<u32>, Vec<u32>),
    /// What stdtrace's own outputs dropped (`stdtrace_output_records_dropped_total`).
    output_stats: Option<Arc<OutputStats>>,
    /// Whether a label needs the writer's container.
    containers: bool,
    updates: u64,
}

impl SessionMetrics {
    /// Listens on `--metrics`' address; `/healthz` says 503 until [`Self::attached`].
    pub fn start(config: &MetricsConfig) -> Result<Self, MetricsError> {
        let instruments = Instruments::new();
        // Every reason is there from the first scrape, at 0.
        for (reason, _) in KERNEL_DROPS {
            instruments.dropped_total(reason, 0);
        }
        instruments.dropped_total(MAPPING_RECORDS_LOST, 0);
        let server = MetricsServer::start(config.addr, &instruments)?;
        log::info!("serving /metrics on {}", server.local_addr());
        let containers = config.limits.labels.0.iter().any(|label| {
            matches!(
                label,
                Label::K8sNamespace | Label::K8sPod | Label::K8sContainer
            )
        });
        Ok(Self {
            series: WriteErrorSeries::new(config.limits.clone(), instruments.clone()),
            instruments,
            server,
            fd_kinds: HashMap::new(),
            exited: (Vec::new(), Vec::new()),
            output_stats: None,
            containers,
            updates: 0,
        })
    }

    /// The programs are attached.
    pub fn attached(&self) {
        self.server.attached();
    }

    /// Counts an output's dropped records in `stdtrace_output_records_dropped_total`.
    pub fn count_output_drops(&mut self, stats: Arc<OutputStats>) {
        self.output_stats = Some(stats);
    }

    /// A failed write on `fd` of `pid` was captured, pointing at `kind`.
    pub fn write_captured(&mut self, pid: u32, fd: i32, kind: TargetKind) {
        self.fd_kinds.insert((pid, fd), kind);
    }

    pub fn process_exited(&mut self, pid: u32) {
        self.series.process_exited(pid, Instant::now());
        self.exited.0.push(pid);
    }
}

impl Session {
    /// Brings the metrics up to date with the kernel; `last` when tracing has ended.
    pub fn update_metrics(&mut self, last: bool) {
        let Some(metrics) = &mut self.metrics else {
            return;
        };
        let ending = match Ending::read(
            &self.tracer,
            self.call_paths.as_ref(),
            Vec::new(),
            &self.folding,
            (Stop::StillTracing, Duration::ZERO, None),
        ) {
            Ok(ending) => ending,
            Err(err) => {
                log::debug!("reading the kernel's counts for /metrics: {err}");
                return;
            }
        };
        // Processes folded since the last update, with their final counts: observed as they
        // end (not waiting for an fd kind), since they may be gone from the summary's bounded
        // list by the next update.
        let finals = self.folding.take_final_counts();
        let final_comms: HashMap<u32, &str> = finals
            .iter()
            .map(|(pid, comm, _)| (*pid, comm.as_str()))
            .collect();
        let processes = &self.folding.processes;
        let comms = &ending.comms;
        let capture = &mut self.capture;
        let fd_kinds = &metrics.fd_kinds;
        let containers = metrics.containers;
        metrics.series.observe(
            sources(finals.iter().flat_map(|(_, _, counts)| counts.iter())),
            |source| Writer {
                comm: final_comms
                    .get(&source.pid)
                    .map_or_else(|| "?".to_owned(), |comm| (*comm).to_owned()),
                fd_kind: fd_kinds.get(&(source.pid, source.fd)).copied(),
                container: containers
                    .then(|| capture.container_of(source.pid))
                    .flatten(),
            },
            true,
        );
        metrics.series.observe(
            sources(ending.failures.iter()),
            |source| Writer {
                comm: comms
                    .get(&source.pid)
                    .cloned()
                    .or_else(|| processes.comm(source.pid))
                    .or_else(|| status::comm(source.pid))
                    .unwrap_or_else(|| "?".into()),
                fd_kind: fd_kinds.get(&(source.pid, source.fd)).copied(),
                container: containers
                    .then(|| capture.container_of(source.pid))
                    .flatten(),
            },
            last,
        );
        let now = Instant::now();
        metrics.updates += 1;
        if last || metrics.updates.is_multiple_of(SWEEP_EVERY) {
            metrics.series.sweep_gone(now, status::exists);
        }
        metrics.series.expire(now);
        // The kinds of fds of processes gone before the last update are no longer needed.
        let (since, before) = &mut metrics.exited;
        if !before.is_empty() {
            let gone: std::collections::HashSet<u32> = before.drain(..).collect();
            metrics
                .fd_kinds
                .retain(|(owner, _), _| !gone.contains(owner));
        }
        std::mem::swap(since, before);

        let instruments = &metrics.instruments;
        for (reason, index) in KERNEL_DROPS {
            instruments.dropped_total(reason, ending.counters[index as usize]);
        }
        // Userspace's own: mapping records the perf buffers had no room for.
        instruments.dropped_total(MAPPING_RECORDS_LOST, self.capture.mapping_records_lost());
        instruments.output_dropped_total(
            metrics
                .output_stats
                .as_ref()
                .map_or(0, |stats| stats.total()),
        );
        if let Some(slots) = &self.blocked {
            let now = events::monotonic_ns();
            let stuck = slots
                .blocked()
                .iter()
                .filter(|blocked| blocked.blocked_ns(now) >= self.stuck_ns)
                .count();
            instruments.set_blocked(BlockedState::Stuck, stuck);
        }
        if let Some(parked) = &self.parked {
            // Those reported parked, and not forgotten since (they went on, or exited).
            let reported = parked
                .entries()
                .iter()
                .filter(|(_, parked)| parked.reported != 0)
                .count();
            instruments.set_blocked(BlockedState::Parked, reported);
        }
    }
}

/// The kernel tally's entries, as the metrics' sources of counts.
fn sources<'a>(
    counts: impl Iterator<Item = (&'a (u32, i32, u32, u32), &'a u64)>,
) -> impl Iterator<Item = (Source, u64)> {
    counts.map(|(&(pid, fd, errno, syscall), &count)| {
        (
            Source {
                pid,
                fd,
                errno,
                syscall,
            },
            count,
        )
    })
}
