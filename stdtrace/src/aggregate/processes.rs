//! The processes stdtrace keeps state for, and the binaries they run: enough to fold a
//! process's totals into its binary's when it exits. Only live processes are kept; a binary's
//! name is kept per binary (bounded by the binaries on the node, not by the processes seen).

use std::collections::HashMap;

use crate::{events::BinaryId, process::status};

/// A live process, as far as folding needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Process {
    pub comm: String,
    pub binary: Option<BinaryId>,
}

/// Live processes by pid, and the names of the binaries seen.
#[derive(Debug, Default)]
pub struct Processes {
    live: HashMap<u32, Process>,
    names: HashMap<BinaryId, BinaryName>,
}

/// A binary's name: its path once `/proc/PID/exe` could be read, the command name until then.
#[derive(Clone, Debug, PartialEq, Eq)]
struct BinaryName {
    name: String,
    is_path: bool,
}

impl Processes {
    pub fn new() -> Self {
        Self::default()
    }

    /// A process replaced its image (or was first seen running one).
    pub fn exec(&mut self, pid: u32, comm: &str, binary: Option<BinaryId>) {
        self.live.insert(
            pid,
            Process {
                comm: comm.to_owned(),
                binary,
            },
        );
        if let Some(binary) = binary {
            self.name(pid, binary, comm);
        }
    }

    /// A process was seen (one of its events); what it tells of it is kept.
    pub fn seen(&mut self, pid: u32, comm: &str, binary: Option<BinaryId>) {
        let process = self.live.entry(pid).or_default();
        if process.comm != comm {
            process.comm = comm.to_owned();
        }
        if binary.is_some() {
            process.binary = binary;
        }
        if let Some(binary) = binary {
            self.name(pid, binary, comm);
        }
    }

    /// Names `binary` from `/proc/PID/exe` the first time it is met (and again while only its
    /// command name is known).
    fn name(&mut self, pid: u32, binary: BinaryId, comm: &str) {
        if self.names.get(&binary).is_some_and(|known| known.is_path) {
            return;
        }
        let name = match std::fs::read_link(format!("/proc/{pid}/exe")) {
            Ok(path) => BinaryName {
                name: path.to_string_lossy().into_owned(),
                is_path: true,
            },
            Err(_) => BinaryName {
                name: comm.to_owned(),
                is_path: false,
            },
        };
        self.names.insert(binary, name);
    }

    /// A process is known to be live (found in the kernel's maps without any record of it):
    /// its name and binary are read from `/proc`.
    pub fn learn_from_proc(&mut self, pid: u32) {
        if self.live.contains_key(&pid) {
            return;
        }
        let binary = std::fs::metadata(format!("/proc/{pid}/exe"))
            .ok()
            .and_then(|meta| {
                use std::os::unix::fs::MetadataExt;
                BinaryId::from_stat(meta.dev(), meta.ino())
            });
        let comm = status::comm(pid).unwrap_or_default();
        self.seen(pid, &comm, binary);
    }

    /// The process exited: it is forgotten, and returned (with the binary the exit record
    /// named, if the table had none).
    pub fn exited(&mut self, pid: u32, binary: Option<BinaryId>) -> Process {
        let mut process = self.live.remove(&pid).unwrap_or_default();
        if process.binary.is_none() {
            process.binary = binary;
        }
        process
    }

    pub fn get(&self, pid: u32) -> Option<&Process> {
        self.live.get(&pid)
    }

    /// The last known command name of a live process.
    pub fn comm(&self, pid: u32) -> Option<String> {
        self.live.get(&pid).map(|process| process.comm.clone())
    }

    /// The name of a binary: its path, else the command name of a process that ran it.
    pub fn binary_name(&self, binary: &BinaryId) -> Option<String> {
        self.names.get(binary).map(|known| known.name.clone())
    }

    /// How many live processes are kept.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The pids kept, to check which of them are still alive.
    pub fn pids(&self) -> Vec<u32> {
        self.live.keys().copied().collect()
    }
}

/// Whether process `pid` still exists (a zombie does, until it is reaped).
pub fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exited_processes_are_forgotten_and_keep_the_binary_their_exit_named() {
        let mut processes = Processes::new();
        let binary = BinaryId { dev: 8, ino: 42 };
        // A pid that does not exist: its binary is named by its command name.
        processes.exec(u32::MAX - 1, "writer", Some(binary));
        processes.seen(u32::MAX - 2, "other", None);
        assert_eq!(processes.len(), 2);
        assert_eq!(processes.binary_name(&binary).as_deref(), Some("writer"));
        let gone = processes.exited(u32::MAX - 1, None);
        assert_eq!(gone.binary, Some(binary));
        let other = processes.exited(u32::MAX - 2, Some(BinaryId { dev: 1, ino: 2 }));
        assert_eq!(other.binary, Some(BinaryId { dev: 1, ino: 2 }));
        assert!(processes.is_empty());
    }
}
