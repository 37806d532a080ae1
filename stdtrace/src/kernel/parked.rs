//! The kernel's records of goroutines parked in Go's netpoller after their write got EAGAIN
//! (`PARKED`), and the per-process flags that say a process may have one (`PARKED_FLAGS`).
//! `enrich::parked` decides which are still parked and reports them.

use std::collections::BTreeSet;

use aya::maps::{Array, HashMap, MapData};
use stdtrace_common::{PARKED_ANY_SLOT, ParkedKey, ParkedWrite};

use crate::enrich::parked::ParkedTable;

/// The kernel's records of parked goroutines.
pub struct ParkedGoroutines {
    parked: HashMap<MapData, ParkedKey, ParkedWrite>,
    flags: Array<MapData, u64>,
    /// The kernel's global `PARKED_ANY` (its `.bss`): the flag of slot `PARKED_ANY_SLOT`.
    any: Option<Array<MapData, u64>>,
    /// Process slots found with no parked goroutine at the last check.
    empty_before: BTreeSet<u32>,
}

impl ParkedGoroutines {
    pub fn new(
        parked: HashMap<MapData, ParkedKey, ParkedWrite>,
        flags: Array<MapData, u64>,
        any: Option<Array<MapData, u64>>,
    ) -> Self {
        Self {
            parked,
            flags,
            any,
            empty_before: BTreeSet::new(),
        }
    }
}

impl ParkedGoroutines {
    /// Forgets the goroutines of processes that exited.
    pub fn forget_processes(&mut self, pids: &std::collections::HashSet<u32>) {
        let gone: Vec<ParkedKey> = self
            .parked
            .keys()
            .filter_map(Result::ok)
            .filter(|key| pids.contains(&key.tgid))
            .collect();
        for key in gone {
            let _ = self.parked.remove(&key);
        }
    }

    /// The flag of a process slot, or of `PARKED_ANY_SLOT` (the kernel's global).
    fn flag(&self, slot: u32) -> u64 {
        let flag = match (&self.any, slot) {
            (Some(any), PARKED_ANY_SLOT) => any.get(&0, 0),
            _ => self.flags.get(&slot, 0),
        };
        flag.unwrap_or(0)
    }
}

impl ParkedTable for ParkedGoroutines {
    fn entries(&self) -> Vec<(ParkedKey, ParkedWrite)> {
        self.parked.iter().filter_map(Result::ok).collect()
    }

    fn forget(&mut self, key: &ParkedKey) {
        let _ = self.parked.remove(key);
    }

    fn mark_reported(&mut self, key: ParkedKey, parked: ParkedWrite) {
        let reported = ParkedWrite {
            reported: 1,
            ..parked
        };
        if let Err(err) = self.parked.insert(key, reported, 0) {
            log::debug!(
                "marking goroutine {} of pid {} reported: {err}",
                key.goid,
                key.tgid
            );
        }
    }

    /// Clears the flags of process slots with no parked goroutine at this check and the one
    /// before (a goroutine that parks between the two is seen by the second).
    fn clear_flags(&mut self, occupied: &BTreeSet<u32>) {
        let empty: BTreeSet<u32> = (0..=PARKED_ANY_SLOT)
            .filter(|slot| !occupied.contains(slot))
            .filter(|slot| self.flag(*slot) != 0)
            .collect();
        for slot in empty.intersection(&self.empty_before) {
            match (&mut self.any, *slot) {
                (Some(any), PARKED_ANY_SLOT) => {
                    let _ = any.set(0, 0, 0);
                }
                _ => {
                    let _ = self.flags.set(*slot, 0, 0);
                }
            }
        }
        self.empty_before = empty;
    }
}
