//! The metrics' state: the instruments `/metrics` exposes, and the bookkeeping that keeps
//! `stdtrace_write_errors_total` exact and its series bounded.
//!
//! Failed writes are counted in the kernel (the tally the summary's totals come from). The
//! session hands [`WriteErrorSeries::observe`] each tally entry's count as now known, keyed by
//! its source (pid, fd, errno, syscall); the series grow by the difference, so that a counter
//! never goes backwards when a source disappears (its process exited and its kernel entry was
//! folded or deleted), and a source that comes back smaller (deleted, then counted afresh) adds
//! what it counted since. Cardinality is bounded three ways: the labels chosen
//! (`--metrics-labels`), a cap on series past which new label sets fold into one `other`
//! series (`--metrics-max-series`), and a TTL after which the series of processes gone are
//! dropped (`--metrics-ttl`).
//!
//! Nothing here does I/O: the exposition and the server are `report::metrics`.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    str::FromStr,
    sync::Arc,
    time::{Duration, Instant},
};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::{
    errno,
    report::record::{BlockedState, Container, Fate, TargetKind},
};

/// A label `--metrics-labels` can choose for `stdtrace_write_errors_total` (`errno` is always
/// there: its values are bounded by `--errno`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Label {
    FdKind,
    Comm,
    K8sNamespace,
    K8sPod,
    K8sContainer,
}

impl Label {
    pub const ALL: [Label; 5] = [
        Label::FdKind,
        Label::Comm,
        Label::K8sNamespace,
        Label::K8sPod,
        Label::K8sContainer,
    ];

    /// The label's name on `/metrics`. The Kubernetes ones are prefixed so that they never
    /// clash with the `namespace` and `pod` target labels Prometheus-operator adds.
    pub fn name(self) -> &'static str {
        match self {
            Label::FdKind => "fd_kind",
            Label::Comm => "comm",
            Label::K8sNamespace => "k8s_namespace",
            Label::K8sPod => "k8s_pod",
            Label::K8sContainer => "k8s_container",
        }
    }
}

/// The labels chosen, in the order given, without repeats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelChoice(pub Vec<Label>);

impl LabelChoice {
    /// Every label: the default.
    pub const DEFAULT: &'static str = "fd_kind,comm,k8s_namespace,k8s_pod,k8s_container";
}

impl FromStr for LabelChoice {
    type Err = String;

    /// Parses `comm,fd_kind`; an empty list (`""`) keeps only `errno`.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut chosen = Vec::new();
        for item in text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let label = Label::ALL
                .into_iter()
                .find(|label| label.name() == item)
                .ok_or_else(|| {
                    let known: Vec<&str> = Label::ALL.iter().map(|label| label.name()).collect();
                    format!("unknown metrics label `{item}` (use {})", known.join(", "))
                })?;
            if !chosen.contains(&label) {
                chosen.push(label);
            }
        }
        Ok(LabelChoice(chosen))
    }
}

/// What `--metrics-labels`, `--metrics-max-series` and `--metrics-ttl` asked for.
#[derive(Clone, Debug)]
pub struct SeriesLimits {
    pub labels: LabelChoice,
    /// Series of `stdtrace_write_errors_total` at most, besides the `other` ones.
    pub max_series: usize,
    /// How long the series of a process are kept after it exited.
    pub ttl: Duration,
}

/// A series' labels: `errno` first, then the chosen ones in the order given.
pub type Labels = Vec<(&'static str, String)>;

/// A label set of one fixed label (`state`, `fate`, `reason`).
type OneLabel = [(&'static str, &'static str); 1];

/// The value of a label that folded into the `other` series, or of a series' whole label set.
pub const OTHER: &str = "other";

/// Buckets of `stdtrace_write_blocked_seconds`: a blocked write is seen from `--slow` (1 s by
/// default) on, so they start below it and reach half an hour.
const BLOCKED_BUCKETS: [f64; 12] = [
    0.01, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

/// Every instrument on `/metrics` that stdtrace updates. Cloning shares them.
#[derive(Clone, Debug)]
pub struct Instruments {
    pub write_errors: Family<Labels, Counter>,
    pub blocked_writes: Family<OneLabel, Gauge>,
    pub write_blocked_seconds: Histogram,
    pub sigpipes: Family<OneLabel, Counter>,
    pub events_dropped: Family<OneLabel, Counter>,
    pub output_records_dropped: Counter,
    pub series_folded: Counter,
}

impl Default for Instruments {
    fn default() -> Self {
        Self::new()
    }
}

impl Instruments {
    pub fn new() -> Self {
        Self {
            write_errors: Family::default(),
            blocked_writes: Family::default(),
            write_blocked_seconds: Histogram::new(BLOCKED_BUCKETS),
            sigpipes: Family::default(),
            events_dropped: Family::default(),
            output_records_dropped: Counter::default(),
            series_folded: Counter::default(),
        }
    }

    /// Registers them (counters without their `_total`: the encoder adds it).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "stdtrace_write_errors",
            "Writes that failed with a watched errno, counted in the kernel (the summary's totals)",
            self.write_errors.clone(),
        );
        registry.register(
            "stdtrace_blocked_writes",
            "Writes blocked now: stuck (blocked at least --stuck, not returned) or parked (Go goroutines parked after EAGAIN)",
            self.blocked_writes.clone(),
        );
        registry.register(
            "stdtrace_write_blocked_seconds",
            "How long blocked writes were blocked, observed when they returned (from --slow on)",
            self.write_blocked_seconds.clone(),
        );
        registry.register(
            "stdtrace_sigpipe",
            "Processes told of a SIGPIPE raised by their writes, by what became of them",
            self.sigpipes.clone(),
        );
        registry.register(
            "stdtrace_events_dropped",
            "Events the kernel or stdtrace could not keep, by why",
            self.events_dropped.clone(),
        );
        registry.register(
            "stdtrace_output_records_dropped",
            "Records stdtrace's own output (the recording, stdout) could not take and dropped",
            self.output_records_dropped.clone(),
        );
        registry.register(
            "stdtrace_metrics_series_folded",
            "Label sets of stdtrace_write_errors_total folded into the `other` series by --metrics-max-series",
            self.series_folded.clone(),
        );
        // Both states and every fate told are there from the start, at 0.
        for state in [BlockedState::Stuck, BlockedState::Parked] {
            drop(self.blocked_writes.get_or_create(&state_label(state)));
        }
        for fate in [Fate::Killed, Fate::Ignored, Fate::Handled, Fate::Blocked] {
            drop(self.sigpipes.get_or_create(&[("fate", fate_name(fate))]));
        }
    }

    /// Sets a gauge of `stdtrace_blocked_writes`.
    pub fn set_blocked(&self, state: BlockedState, now: usize) {
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        self.blocked_writes
            .get_or_create(&state_label(state))
            .set(now);
    }

    /// A blocked write returned (`slow` or `resumed`) after `duration`.
    pub fn blocked_write_ended(&self, duration: Duration) {
        self.write_blocked_seconds.observe(duration.as_secs_f64());
    }

    /// A SIGPIPE story was told with its fate.
    pub fn sigpipe_told(&self, fate: Fate) {
        self.sigpipes
            .get_or_create(&[("fate", fate_name(fate))])
            .inc();
    }

    /// A drop counter kept elsewhere (the kernel's, a queue's) now stands at `total`.
    pub fn dropped_total(&self, reason: &'static str, total: u64) {
        advance_to(
            &self.events_dropped.get_or_create(&[("reason", reason)]),
            total,
        );
    }

    /// Records the outputs could not take now stand at `total`, summed over them.
    pub fn output_dropped_total(&self, total: u64) {
        advance_to(&self.output_records_dropped, total);
    }
}

/// Raises a counter to `total`, never lowers it.
fn advance_to(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

fn state_label(state: BlockedState) -> OneLabel {
    let name = match state {
        BlockedState::Slow => "slow",
        BlockedState::Stuck => "stuck",
        BlockedState::Resumed => "resumed",
        BlockedState::Parked => "parked",
    };
    [("state", name)]
}

fn fate_name(fate: Fate) -> &'static str {
    match fate {
        Fate::Killed => "killed",
        Fate::Ignored => "ignored",
        Fate::Handled => "handled",
        Fate::Blocked => "blocked",
        Fate::Pending => "pending",
    }
}

/// The `fd_kind` label's value, as the records' `target.kind` names it.
pub fn fd_kind_name(kind: Option<TargetKind>) -> &'static str {
    match kind {
        Some(TargetKind::Pipe) => "pipe",
        Some(TargetKind::Fifo) => "fifo",
        Some(TargetKind::Pty) => "pty",
        Some(TargetKind::Tty) => "tty",
        Some(TargetKind::Socket) => "socket",
        Some(TargetKind::File) => "file",
        Some(TargetKind::Char) => "char",
        Some(TargetKind::Other) => "other",
        None => "unknown",
    }
}

/// Where failures were counted: one entry of the kernel's tally.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Source {
    pub pid: u32,
    pub fd: i32,
    pub errno: u32,
    pub syscall: u32,
}

/// Who a source's failures are labelled with.
#[derive(Clone, Debug, Default)]
pub struct Writer {
    pub comm: String,
    /// What the fd points at, if a failed write on it was captured.
    pub fd_kind: Option<TargetKind>,
    pub container: Option<Arc<Container>>,
}

/// What is known of one source.
struct Counted {
    /// Its count as last observed (what the series were raised by).
    count: u64,
    /// Whether it was in the last observation.
    present: bool,
    /// Observed once already with no fd kind known: the next time, it is counted as it is.
    waited: bool,
}

/// A series of `stdtrace_write_errors_total`, or a label set folded into `other`.
struct Series {
    folded: bool,
    /// The processes that counted in it, for the TTL.
    pids: HashSet<u32>,
}

/// The write errors' series: exact, monotonic and bounded.
pub struct WriteErrorSeries {
    limits: SeriesLimits,
    instruments: Instruments,
    sources: HashMap<Source, Counted>,
    series: HashMap<Labels, Series>,
    /// Series that are not folded (at most `max_series`).
    real: usize,
    /// Processes that exited, and when.
    exited: HashMap<u32, Instant>,
}

impl WriteErrorSeries {
    pub fn new(limits: SeriesLimits, instruments: Instruments) -> Self {
        Self {
            limits,
            instruments,
            sources: HashMap::new(),
            series: HashMap::new(),
            real: 0,
            exited: HashMap::new(),
        }
    }

    /// Takes every source's count as now known. `writer` names a source whose count grew (it
    /// is asked only then). A source missing from `counts` keeps what it added. With `last`
    /// (the end of tracing), nothing waits for its fd kind to be known.
    pub fn observe(
        &mut self,
        counts: impl IntoIterator<Item = (Source, u64)>,
        mut writer: impl FnMut(Source) -> Writer,
        last: bool,
    ) {
        for counted in self.sources.values_mut() {
            counted.present = false;
        }
        for (source, count) in counts {
            let known = self.sources.entry(source).or_insert(Counted {
                count: 0,
                present: true,
                waited: false,
            });
            known.present = true;
            // Smaller than before: the kernel's entry was deleted and counts afresh.
            let grown = if count >= known.count {
                count - known.count
            } else {
                count
            };
            if grown == 0 {
                continue;
            }
            let who = writer(source);
            // A first failure's event may still be on its way when the tally already counts
            // it: wait one observation for it to name the fd's kind.
            if who.fd_kind.is_none() && known.count == 0 && !known.waited && !last {
                known.waited = true;
                continue;
            }
            // A process that exited may still be counted (its last failures, read after its
            // exit): it stays exited.
            known.count = count;
            let labels = self.labels(source, &who);
            let labels = self.series_for(labels, source.pid);
            self.instruments
                .write_errors
                .get_or_create(&labels)
                .inc_by(grown);
        }
    }

    /// A process exited: its series go once it has been gone for the TTL.
    pub fn process_exited(&mut self, pid: u32, now: Instant) {
        self.exited.insert(pid, now);
    }

    /// Marks exited, as of `now`, the processes counted in a series that `alive` says are
    /// gone: for those whose exit no event told (node-wide, the kernel tells only some).
    pub fn sweep_gone(&mut self, now: Instant, alive: impl Fn(u32) -> bool) {
        let counted: HashSet<u32> = self
            .series
            .values()
            .flat_map(|series| series.pids.iter().copied())
            .collect();
        for pid in counted {
            if !self.exited.contains_key(&pid) && !alive(pid) {
                self.exited.insert(pid, now);
            }
        }
    }

    /// Drops the series whose processes have all been gone for the TTL, and what is kept of
    /// sources gone from the kernel's tally whose processes are.
    pub fn expire(&mut self, now: Instant) {
        let ttl = self.limits.ttl;
        let exited = &self.exited;
        let expired = |pid: &u32| {
            exited
                .get(pid)
                .is_some_and(|at| now.saturating_duration_since(*at) >= ttl)
        };
        let mut dropped = Vec::new();
        for (labels, series) in &self.series {
            if !series.pids.is_empty() && series.pids.iter().all(expired) {
                dropped.push(labels.clone());
            }
        }
        for labels in dropped {
            if let Some(series) = self.series.remove(&labels)
                && !series.folded
            {
                self.real -= 1;
                self.instruments.write_errors.remove(&labels);
            }
        }
        // A source still in the tally is kept, or its whole count would be added again.
        self.sources
            .retain(|source, counted| counted.present || !expired(&source.pid));
        let sources = &self.sources;
        let still_counted: HashSet<u32> = sources.keys().map(|source| source.pid).collect();
        self.exited.retain(|pid, at| {
            now.saturating_duration_since(*at) < ttl || still_counted.contains(pid)
        });
    }

    /// Series of `stdtrace_write_errors_total` now, besides `other`.
    pub fn series_count(&self) -> usize {
        self.real
    }

    fn labels(&self, source: Source, who: &Writer) -> Labels {
        let mut labels: Labels = vec![("errno", errno::name(source.errno))];
        let container = who.container.as_deref();
        for &label in &self.limits.labels.0 {
            let value = match label {
                Label::FdKind => fd_kind_name(who.fd_kind).to_owned(),
                Label::Comm => who.comm.clone(),
                Label::K8sNamespace => container
                    .and_then(|container| container.pod.namespace.clone())
                    .unwrap_or_default(),
                Label::K8sPod => container
                    .and_then(|container| container.pod.name.clone())
                    .unwrap_or_default(),
                Label::K8sContainer => container
                    .and_then(|container| {
                        container
                            .container_name
                            .clone()
                            .or_else(|| container.name.clone())
                    })
                    .unwrap_or_default(),
            };
            labels.push((label.name(), value));
        }
        labels
    }

    /// The series `labels` count in: their own, or `other` past the cap.
    fn series_for(&mut self, labels: Labels, pid: u32) -> Labels {
        let cap = self.limits.max_series;
        let folded = match self.series.get_mut(&labels) {
            Some(series) => {
                series.pids.insert(pid);
                series.folded
            }
            None => {
                let folded = self.real >= cap;
                if folded {
                    self.instruments.series_folded.inc();
                } else {
                    self.real += 1;
                }
                self.series.insert(
                    labels.clone(),
                    Series {
                        folded,
                        pids: HashSet::from([pid]),
                    },
                );
                folded
            }
        };
        if !folded {
            return labels;
        }
        labels
            .into_iter()
            .map(|(name, value)| match name {
                "errno" => (name, value),
                _ => (name, OTHER.to_owned()),
            })
            .collect()
    }
}

impl fmt::Debug for WriteErrorSeries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteErrorSeries")
            .field("sources", &self.sources.len())
            .field("series", &self.series.len())
            .field("real", &self.real)
            .finish()
    }
}

#[cfg(test)]
mod tests;
