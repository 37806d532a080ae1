//! Totals folded per binary: when a process exits, its exact failure counts (the kernel's
//! tallies and call-site counts, removed from the kernel's maps) are added to its binary's.
//! Bounded by the binaries seen, not by the processes: a churn of a million processes of one
//! binary is a handful of entries.

use std::collections::{BTreeMap, HashSet};

use crate::{
    errno::Errno,
    events::{BinaryId, WriteSyscall},
    kernel::process_entries::FailureCounts,
    report::record::BinaryTotal,
};

use super::processes::{Process, Processes};

/// A binary: by its identity, or by the command name of processes whose binary could not be
/// read. (Its name, a path once one of its processes could be looked at, is taken when the
/// totals are told: it may be learnt after the first processes were folded.)
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum BinaryKey {
    Binary(BinaryId),
    Comm(String),
}

#[derive(Clone, Debug, Default)]
struct Folded {
    processes: u64,
    failures: u64,
}

/// Totals of exited processes, per binary, errno and syscall.
#[derive(Debug, Default)]
pub struct BinaryTotals {
    folded: BTreeMap<(BinaryKey, u32, u32), Folded>,
}

impl BinaryTotals {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an exited process's failures (per (fd, errno, syscall), any pid) to its binary.
    pub fn fold(&mut self, process: &Process, failures: &FailureCounts) {
        let key = binary_key(process);
        let mut counted: HashSet<(u32, u32)> = HashSet::new();
        for (&(_, _, errno, syscall), &count) in failures {
            let entry = self
                .folded
                .entry((key.clone(), errno, syscall))
                .or_default();
            entry.failures += count;
            if counted.insert((errno, syscall)) {
                entry.processes += 1;
            }
        }
    }

    /// The folded totals plus those of the live processes (`live`, per pid), per binary.
    pub fn with_live(&self, live: &FailureCounts, processes: &Processes) -> Vec<BinaryTotal> {
        let mut all = self.folded.clone();
        let mut counted: HashSet<(u32, u32, u32)> = HashSet::new();
        for (&(pid, _, errno, syscall), &count) in live {
            let process = processes.get(pid).cloned().unwrap_or_default();
            let key = binary_key(&process);
            let entry = all.entry((key, errno, syscall)).or_default();
            entry.failures += count;
            if counted.insert((pid, errno, syscall)) {
                entry.processes += 1;
            }
        }
        all.into_iter()
            .filter_map(|((key, errno, syscall), folded)| {
                let (binary, name) = match key {
                    BinaryKey::Binary(id) => (
                        Some(id),
                        processes
                            .binary_name(&id)
                            .unwrap_or_else(|| format!("inode {}", id.ino)),
                    ),
                    BinaryKey::Comm(comm) => (None, comm),
                };
                Some(BinaryTotal {
                    binary: name,
                    dev: binary.map(|id| format!("{}:{}", id.dev >> 20, id.dev & 0xf_ffff)),
                    ino: binary.map(|id| id.ino),
                    errno: Errno(errno),
                    syscall: WriteSyscall::from_raw(syscall)?.name().into(),
                    processes: folded.processes,
                    failures: folded.failures,
                })
            })
            .collect()
    }
}

fn binary_key(process: &Process) -> BinaryKey {
    match process.binary {
        Some(binary) => BinaryKey::Binary(binary),
        None if process.comm.is_empty() => BinaryKey::Comm("?".to_owned()),
        None => BinaryKey::Comm(process.comm.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exited_and_live_processes_of_a_binary_add_up() {
        let mut processes = Processes::new();
        let binary = BinaryId { dev: 8, ino: 42 };
        let mut totals = BinaryTotals::new();
        for pid in [u32::MAX - 10, u32::MAX - 11] {
            processes.exec(pid, "writer", Some(binary));
            let gone = processes.exited(pid, None);
            let failures = FailureCounts::from([((pid, 4, 32, 0), 5)]);
            totals.fold(&gone, &failures);
        }
        processes.exec(u32::MAX - 12, "writer", Some(binary));
        let live = FailureCounts::from([((u32::MAX - 12, 4, 32, 0), 3)]);
        let all = totals.with_live(&live, &processes);
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(
            (
                all[0].binary.as_str(),
                all[0].processes,
                all[0].failures,
                all[0].ino
            ),
            ("writer", 3, 13, Some(42))
        );
        assert_eq!(all[0].dev.as_deref(), Some("0:8"));
    }
}
