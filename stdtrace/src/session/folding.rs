//! Folding exited processes: once a process has exited, its entries in the kernel's maps
//! (failure tallies, call-site counts, SIGPIPE counts, parked goroutines) are read one last
//! time, added to its binary's totals, and removed, so that the maps and stdtrace's own tables
//! hold live processes only. Exits come from the kernel's exit records, and from those it kept
//! (`EXITS_LOST`) when the ring buffer had no room for them; when the kernel had to drop some
//! (`lifecycle_dropped` moved) or could not arrange or keep one (`processes_full`), and every
//! [`RESCAN_EVERY_FOLDS`] folds anyway, the processes the maps and tables know are checked
//! against `/proc`, which finds the exits that were not told.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
};

use stdtrace_common::counter;

use super::reporter::{Reporter, ToReporter};
use crate::{
    aggregate::{
        binaries::BinaryTotals,
        processes::{Processes, alive},
    },
    events::BinaryId,
    kernel::{
        call_sites::CallPaths, loader::Tracer, parked::ParkedGoroutines,
        process_entries::FailureCounts,
    },
    report::record::{BinaryTotal, Container, TrackedProcesses},
};

const EPIPE: u32 = 32;

/// Folds between two rescans of `/proc` when no drop says one is needed.
pub const RESCAN_EVERY_FOLDS: u64 = 10;

/// Exited processes whose per-process totals the summary still lists (beyond them, only
/// their binaries' totals).
pub const RECENT_EXITED_TOTALS: usize = 256;

/// The session's side of folding.
#[derive(Default)]
pub struct Folding {
    pub processes: Processes,
    binaries: BinaryTotals,
    /// Exited (the binary their exit record named), to fold at the next fold.
    exiting: HashMap<u32, Option<BinaryId>>,
    /// The last exited processes' totals, newest last, with their command names.
    recent: VecDeque<(u32, String, FailureCounts)>,
    /// With `/metrics`: the final counts of the processes folded since they were last taken
    /// (each second), so that none is missed when more exit in a second than `recent` holds.
    final_counts: Option<Vec<(u32, String, FailureCounts)>>,
    recovered_exits: u64,
    /// `lifecycle_dropped + processes_full` at the last rescan.
    drops_seen: u64,
    folds: u64,
}

impl Folding {
    pub fn new() -> Self {
        Self::default()
    }

    /// The kernel told of a process's exit.
    pub fn exited(&mut self, pid: u32, binary: Option<BinaryId>) {
        self.exiting.insert(pid, binary);
    }

    /// An exit whose record the ring buffer had no room for was found in the kernel's keeping.
    pub fn recovered_exit(&mut self) {
        self.recovered_exits += 1;
    }

    /// Reads the call sites' counts (sending those that changed), folds the processes that
    /// exited since the last fold, and finds exits that were not told; returns the pids a
    /// rescan found gone.
    pub fn fold(
        &mut self,
        tracer: &mut Tracer,
        call_paths: Option<&mut CallPaths>,
        parked: Option<&mut ParkedGoroutines>,
        reporter: &Reporter,
        containers: &HashMap<u32, Arc<Container>>,
    ) -> Vec<u32> {
        self.folds += 1;
        let gone = self.rescan_if_needed(tracer, call_paths.as_deref());
        let pids: HashSet<u32> = self.exiting.keys().copied().collect();
        let mut failures: FailureCounts = HashMap::new();
        if let Some(call_paths) = call_paths {
            call_paths.processes_exited(&pids);
            let processes = &self.processes;
            let counted = call_paths.read(|pid| {
                processes
                    .comm(pid)
                    .or_else(|| crate::process::status::comm(pid))
                    .unwrap_or_else(|| "?".to_owned())
            });
            failures = counted.folded;
            let mut changed = counted.changed;
            for repeats in &mut changed {
                repeats.container = containers
                    .get(&repeats.pid)
                    .map(|container| Container::clone(container));
            }
            if !changed.is_empty() {
                reporter.send(ToReporter::Repeats(changed));
            }
        }
        if pids.is_empty() {
            return gone;
        }
        let folded = match tracer.fold_exited(&pids) {
            Ok(folded) => folded,
            Err(err) => {
                log::warn!("folding the kernel entries of exited processes: {err:#}");
                return gone;
            }
        };
        for (key, count) in folded.failures {
            *failures.entry(key).or_insert(0) += count;
        }
        // With EPIPE watched, the kernel counts SIGPIPEs raised by writes as the failed
        // writes' EPIPE tallies (each such write raises one), as the summary does.
        let mut sigpipes = folded.sigpipes;
        for (&(pid, fd, errno, _), &count) in &failures {
            if errno == EPIPE {
                let raised = sigpipes.entry((pid, fd)).or_insert(0);
                *raised = (*raised).max(count);
            }
        }
        let mut by_pid: HashMap<u32, FailureCounts> = HashMap::new();
        for (key, count) in failures {
            by_pid.entry(key.0).or_default().insert(key, count);
        }
        for (pid, binary) in std::mem::take(&mut self.exiting) {
            let process = self.processes.exited(pid, binary);
            if let Some(failures) = by_pid.remove(&pid) {
                self.binaries.fold(&process, &failures);
                if let Some(finals) = &mut self.final_counts {
                    finals.push((pid, process.comm.clone(), failures.clone()));
                }
                self.recent.push_back((pid, process.comm, failures));
                if self.recent.len() > RECENT_EXITED_TOTALS {
                    self.recent.pop_front();
                }
            }
        }
        if let Some(parked) = parked {
            parked.forget_processes(&pids);
        }
        reporter.send(ToReporter::Folded { pids, sigpipes });
        gone
    }

    /// Rescans when the kernel lost exit records (or could not arrange some), and every
    /// [`RESCAN_EVERY_FOLDS`] folds: processes the kernel's maps or the tables know that are
    /// no longer in `/proc` exited unseen; live ones unknown to the table are learnt.
    fn rescan_if_needed(&mut self, tracer: &Tracer, call_paths: Option<&CallPaths>) -> Vec<u32> {
        let mut gone = Vec::new();
        let drops = match tracer.counters() {
            Ok(counters) => {
                counters[counter::LIFECYCLE_DROPPED as usize]
                    + counters[counter::PROCESSES_FULL as usize]
            }
            Err(_) => self.drops_seen,
        };
        if drops == self.drops_seen && !self.folds.is_multiple_of(RESCAN_EVERY_FOLDS) {
            return gone;
        }
        self.drops_seen = drops;
        let mut candidates: HashSet<u32> = tracer.processes_with_entries().unwrap_or_default();
        if let Some(call_paths) = call_paths {
            candidates.extend(call_paths.pids());
        }
        let with_entries = candidates.clone();
        candidates.extend(self.processes.pids());
        for pid in candidates {
            if self.exiting.contains_key(&pid) {
                continue;
            }
            if alive(pid) {
                if with_entries.contains(&pid) {
                    self.processes.learn_from_proc(pid);
                }
                continue;
            }
            self.exiting.insert(pid, None);
            gone.push(pid);
            if with_entries.contains(&pid) {
                self.recovered_exits += 1;
            }
        }
        gone
    }

    /// From now on, keep the final counts of folded processes for [`take_final_counts`].
    ///
    /// [`take_final_counts`]: Self::take_final_counts
    pub fn keep_final_counts(&mut self) {
        self.final_counts = Some(Vec::new());
    }

    /// The final counts of the processes folded since the last call (with their command names).
    pub fn take_final_counts(&mut self) -> Vec<(u32, String, FailureCounts)> {
        self.final_counts
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Keeps in `by_pid` only processes live, exiting, or among the exited ones the summary
    /// still lists.
    pub fn retain_listed<T>(&self, by_pid: &mut HashMap<u32, T>) {
        let recent: HashSet<u32> = self.recent.iter().map(|(pid, _, _)| *pid).collect();
        by_pid.retain(|pid, _| {
            self.processes.get(*pid).is_some()
                || self.exiting.contains_key(pid)
                || recent.contains(pid)
        });
    }

    /// The totals of the recently exited processes the summary still lists.
    pub fn recent_totals(&self) -> impl Iterator<Item = (&u32, &String, &FailureCounts)> {
        self.recent
            .iter()
            .map(|(pid, comm, failures)| (pid, comm, failures))
    }

    /// Totals per binary: the folded ones plus `live`'s (per pid).
    pub fn by_binary(&self, live: &FailureCounts) -> Vec<BinaryTotal> {
        self.binaries.with_live(live, &self.processes)
    }

    pub fn tracked(&self) -> TrackedProcesses {
        TrackedProcesses {
            processes: self.processes.len() as u64,
            exiting: self.exiting.len() as u64,
            recovered_exits: self.recovered_exits,
        }
    }
}
