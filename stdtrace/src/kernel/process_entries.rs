//! The kernel's per-process entries keyed by (process, ...) — failure tallies, SIGPIPE counts
//! and first SIGPIPEs per fd — folded into userspace and removed once their process exited,
//! so that the maps hold live processes only; and how many entries every map holds, for the
//! summary's `kernel_map_entries`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    os::fd::AsFd,
};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuHashMap};
use stdtrace_common::{FailureKey, ProcessExit, SigpipeRecord};

use super::loader::{LoadError, Tracer};

/// Failures per (pid, fd, errno, syscall).
pub type FailureCounts = HashMap<(u32, i32, u32, u32), u64>;

/// What the kernel held for processes that exited, now removed from its maps.
#[derive(Debug, Default)]
pub struct Folded {
    /// Their failure tallies.
    pub failures: FailureCounts,
    /// Their SIGPIPEs raised by writes, per (pid, fd).
    pub sigpipes: HashMap<(u32, i32), u64>,
}

/// The maps whose element counts the summary reports: every map with per-process or
/// per-call-path entries.
pub const COUNTED_MAPS: [&str; 16] = [
    "TARGETS",
    "GO_PROCESSES",
    "PARKED",
    "LAST_READERS",
    "READERS_CLOSED",
    "READER_WATCH",
    "CALL_SITES",
    "FINGERPRINTS",
    "SITE_COUNTS",
    "SIGPIPE_PENDING",
    "SIGPIPE_COUNTS",
    "SIGPIPE_SEEN",
    "SIGPIPE_DELIVERY_WANTED",
    "PROCESSES_WITH_ENTRIES",
    "EXITS_LOST",
    "SIGPIPES_LOST",
];

fn map_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> LoadError {
    move |source| LoadError::Map { map, source }
}

impl Tracer {
    /// Removes the entries of the processes in `exited` from the maps keyed by (process, ...),
    /// and returns what they held.
    pub fn fold_exited(&mut self, exited: &HashSet<u32>) -> Result<Folded, LoadError> {
        let mut folded = Folded::default();
        if exited.is_empty() {
            return Ok(folded);
        }
        {
            let map = self
                .ebpf
                .map_mut("FAILURES")
                .ok_or(LoadError::MissingMap("FAILURES"))?;
            let mut failures: PerCpuHashMap<&mut MapData, FailureKey, u64> =
                PerCpuHashMap::try_from(map).map_err(map_error("FAILURES"))?;
            let gone: Vec<(FailureKey, u64)> = failures
                .iter()
                .filter_map(Result::ok)
                .filter(|(key, _)| exited.contains(&key.tgid))
                .map(|(key, per_cpu)| (key, per_cpu.iter().sum()))
                .collect();
            for (key, count) in gone {
                // Read again after the removal could lose a failure counted in between; the
                // process has exited, so nothing more is counted under its key.
                let _ = failures.remove(&key);
                *folded
                    .failures
                    .entry((key.tgid, key.fd, key.errno, key.syscall))
                    .or_insert(0) += count;
            }
        }
        {
            let map = self
                .ebpf
                .map_mut("SIGPIPE_COUNTS")
                .ok_or(LoadError::MissingMap("SIGPIPE_COUNTS"))?;
            let mut counts: PerCpuHashMap<&mut MapData, u64, u64> =
                PerCpuHashMap::try_from(map).map_err(map_error("SIGPIPE_COUNTS"))?;
            let gone: Vec<(u64, u64)> = counts
                .iter()
                .filter_map(Result::ok)
                .filter(|(key, _)| exited.contains(&((key >> 32) as u32)))
                .map(|(key, per_cpu)| (key, per_cpu.iter().sum()))
                .collect();
            for (key, count) in gone {
                let _ = counts.remove(&key);
                folded
                    .sigpipes
                    .insert(((key >> 32) as u32, key as u32 as i32), count);
            }
        }
        {
            let map = self
                .ebpf
                .map_mut("SIGPIPE_SEEN")
                .ok_or(LoadError::MissingMap("SIGPIPE_SEEN"))?;
            let mut seen: BpfHashMap<&mut MapData, u64, u32> =
                BpfHashMap::try_from(map).map_err(map_error("SIGPIPE_SEEN"))?;
            let gone: Vec<u64> = seen
                .keys()
                .filter_map(Result::ok)
                .filter(|key| exited.contains(&((key >> 32) as u32)))
                .collect();
            for key in gone {
                let _ = seen.remove(&key);
            }
        }
        Ok(folded)
    }

    /// The exit records the ring buffer had no room for, kept by the kernel: taken (removed).
    pub fn take_lost_exits(&mut self) -> Result<Vec<ProcessExit>, LoadError> {
        let map = self
            .ebpf
            .map_mut("EXITS_LOST")
            .ok_or(LoadError::MissingMap("EXITS_LOST"))?;
        let mut lost: BpfHashMap<&mut MapData, u32, ProcessExit> =
            BpfHashMap::try_from(map).map_err(map_error("EXITS_LOST"))?;
        let exits: Vec<ProcessExit> = lost
            .iter()
            .filter_map(Result::ok)
            .map(|(_, exit)| exit)
            .collect();
        for exit in &exits {
            let _ = lost.remove(&exit.tgid);
        }
        Ok(exits)
    }

    /// The SIGPIPE records the ring buffer had no room for, kept by the kernel: taken.
    pub fn take_lost_sigpipes(&mut self) -> Result<Vec<SigpipeRecord>, LoadError> {
        let map = self
            .ebpf
            .map_mut("SIGPIPES_LOST")
            .ok_or(LoadError::MissingMap("SIGPIPES_LOST"))?;
        let mut lost: BpfHashMap<&mut MapData, u64, SigpipeRecord> =
            BpfHashMap::try_from(map).map_err(map_error("SIGPIPES_LOST"))?;
        let kept: Vec<(u64, SigpipeRecord)> = lost.iter().filter_map(Result::ok).collect();
        for (key, _) in &kept {
            let _ = lost.remove(key);
        }
        let mut records: Vec<SigpipeRecord> = kept.into_iter().map(|(_, record)| record).collect();
        records.sort_by_key(|record| record.ts_ns);
        Ok(records)
    }

    /// Every process with an entry keyed by (process, ...) in a map userspace folds: to find,
    /// when exit records were lost, the ones that are gone.
    pub fn processes_with_entries(&self) -> Result<HashSet<u32>, LoadError> {
        let mut pids = HashSet::new();
        let map = self
            .ebpf
            .map("FAILURES")
            .ok_or(LoadError::MissingMap("FAILURES"))?;
        let failures: PerCpuHashMap<&MapData, FailureKey, u64> =
            PerCpuHashMap::try_from(map).map_err(map_error("FAILURES"))?;
        pids.extend(failures.keys().filter_map(Result::ok).map(|key| key.tgid));
        let map = self
            .ebpf
            .map("SIGPIPE_SEEN")
            .ok_or(LoadError::MissingMap("SIGPIPE_SEEN"))?;
        let seen: BpfHashMap<&MapData, u64, u32> =
            BpfHashMap::try_from(map).map_err(map_error("SIGPIPE_SEEN"))?;
        pids.extend(
            seen.keys()
                .filter_map(Result::ok)
                .map(|key| (key >> 32) as u32),
        );
        let map = self
            .ebpf
            .map("SIGPIPE_COUNTS")
            .ok_or(LoadError::MissingMap("SIGPIPE_COUNTS"))?;
        let counts: PerCpuHashMap<&MapData, u64, u64> =
            PerCpuHashMap::try_from(map).map_err(map_error("SIGPIPE_COUNTS"))?;
        pids.extend(
            counts
                .keys()
                .filter_map(Result::ok)
                .map(|key| (key >> 32) as u32),
        );
        Ok(pids)
    }

    /// How many entries each of [`COUNTED_MAPS`] holds now (lower-case names).
    pub fn map_entries(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for &(name, id) in &self.map_ids {
            let Ok(info) = aya::maps::MapInfo::from_id(id) else {
                continue;
            };
            let Ok(fd) = info.fd() else {
                continue;
            };
            let count = super::map_keys::count(fd.as_fd(), info.key_size() as usize);
            counts.insert(name.to_lowercase(), count);
        }
        counts
    }
}
