//! Repeated failed writes from a call path already reported, counted in the kernel.
//!
//! The first failed write from a call path reaches userspace whole; its stack is unwound with
//! the binaries' CFI, and the places above the stack pointer where the unwinder found the
//! return addresses, with their values, become the path's fingerprint. The kernel program then
//! checks later failures against it with a few 8-byte reads and counts the matches per
//! (process, fd, errno, syscall, call site) instead of sending them. Fingerprints are keyed by
//! the binary, with addresses normalized (`stdtrace_common::image`): every process of a binary
//! shares them, so a churn of short-lived processes is counted, not sent again in full. This
//! module hands the fingerprints the namer learned (`enrich::call_path`) to the kernel, and
//! reads the counts back ([`CallPaths`]); a process's counts are folded and removed when it
//! exits.

use std::collections::{HashMap, HashSet};

use aya::maps::{Array, HashMap as BpfHashMap, MapData, MapError, PerCpuHashMap};
use stdtrace_common::{
    CallSiteKey, FINGERPRINT_ALTERNATIVES, FingerprintKey, Fingerprints, FirstReturn, SiteCount,
    SiteKey,
};

use super::process_entries::FailureCounts;
use crate::{
    enrich::call_path::Learned,
    errno::Errno,
    events::WriteSyscall,
    report::record::{RecordType, RepeatReport},
};

/// The kernel's maps of call paths and their counts.
pub struct CallPaths {
    sites: BpfHashMap<MapData, CallSiteKey, FirstReturn>,
    /// Bumped with every change of `sites`, so that the kernel's per-CPU copies are renewed.
    generation: Array<MapData, u32>,
    generation_value: u32,
    fingerprints: BpfHashMap<MapData, FingerprintKey, Fingerprints>,
    counts: PerCpuHashMap<MapData, SiteKey, SiteCount>,
    /// The counts last reported, of processes still in the kernel's map.
    reported: HashMap<SiteKey, u64>,
    /// Processes gone, whose entries go once their last counts are read.
    exited: HashSet<u32>,
    /// Call paths the kernel had no room for (its maps were full).
    full: u64,
}

/// What a read of the counts found.
#[derive(Debug, Default)]
pub struct Counted {
    /// Counts that changed, per process and site (`processes` 1).
    pub changed: Vec<RepeatReport>,
    /// The last counts of processes that exited, now removed from the kernel's map, per
    /// (pid, fd, errno, syscall): part of their totals.
    pub folded: FailureCounts,
}

impl CallPaths {
    pub fn new(
        sites: BpfHashMap<MapData, CallSiteKey, FirstReturn>,
        generation: Array<MapData, u32>,
        fingerprints: BpfHashMap<MapData, FingerprintKey, Fingerprints>,
        counts: PerCpuHashMap<MapData, SiteKey, SiteCount>,
    ) -> Self {
        Self {
            sites,
            generation,
            generation_value: 0,
            fingerprints,
            counts,
            reported: HashMap::new(),
            exited: HashSet::new(),
            full: 0,
        }
    }

    /// Hands a call path to the kernel under `site`; from now on its failures are counted
    /// there, in every process of its binary. Returns false when the kernel cannot take it (a
    /// different first offset for the same pc, every alternative of its first return address
    /// taken, or a full map).
    pub fn learn(&mut self, learned: &Learned, site: u32) -> Result<bool, MapError> {
        let taken = self.try_learn(learned, site);
        if matches!(taken, Ok(false) | Err(_)) {
            self.full += 1;
        }
        taken
    }

    fn try_learn(&mut self, learned: &Learned, site: u32) -> Result<bool, MapError> {
        let site_key = CallSiteKey {
            dev: learned.dev,
            _pad: 0,
            ino: learned.ino,
            ip: learned.ip,
        };
        let span = learned.span();
        match self.sites.get(&site_key, 0) {
            Ok(first) if first.offset != learned.first_offset => return Ok(false),
            Ok(first) if first.span >= span => {}
            Ok(_) | Err(MapError::KeyNotFound) => {
                // The stack read for this pc must cover this path's return addresses too.
                let first = FirstReturn {
                    offset: learned.first_offset,
                    span: span.max(self.sites.get(&site_key, 0).map_or(0, |first| first.span)),
                };
                self.sites.insert(site_key, first, 0)?;
                self.bump_generation();
            }
            Err(err) => return Err(err),
        }
        let key = FingerprintKey {
            dev: learned.dev,
            _pad: 0,
            ino: learned.ino,
            ip: learned.ip,
            first_return: learned.first_return,
        };
        let mut known = match self.fingerprints.get(&key, 0) {
            Ok(known) => known,
            Err(MapError::KeyNotFound) => Fingerprints::default(),
            Err(err) => return Err(err),
        };
        let fingerprint = learned.fingerprint(site);
        if known
            .alternatives
            .iter()
            .any(|alternative| alternative.site == site)
        {
            return Ok(true);
        }
        let Some(free) = known
            .alternatives
            .iter()
            .position(|alternative| alternative.site == 0)
        else {
            return Ok(false);
        };
        debug_assert!(free < FINGERPRINT_ALTERNATIVES);
        known.alternatives[free] = fingerprint;
        self.fingerprints.insert(key, known, 0)?;
        Ok(true)
    }

    fn bump_generation(&mut self) {
        self.generation_value = self.generation_value.wrapping_add(1);
        if let Err(err) = self.generation.set(0, self.generation_value, 0) {
            log::debug!("bumping the call sites' generation: {err}");
        }
    }

    /// Call paths the kernel could not take.
    pub fn full(&self) -> u64 {
        self.full
    }

    /// The processes exited: their counts go after the next read.
    pub fn processes_exited(&mut self, pids: &HashSet<u32>) {
        self.exited.extend(pids);
    }

    /// The processes with counts in the kernel's map, as last read.
    pub fn pids(&self) -> HashSet<u32> {
        self.reported.keys().map(|key| key.tgid).collect()
    }

    /// Every failure counted at a call site by a live process, per (pid, fd, errno, syscall),
    /// as last read: part of the totals (the kernel does not also tally them).
    pub fn totals(&self) -> FailureCounts {
        let mut totals = HashMap::new();
        for (key, count) in &self.reported {
            *totals
                .entry((key.tgid, key.fd, key.errno, key.syscall))
                .or_insert(0) += count;
        }
        totals
    }

    /// Reads the counts: those that changed since the last read, summed over CPUs (`comm`
    /// names processes), and the last ones of exited processes, which leave the kernel's map.
    pub fn read(&mut self, comm: impl Fn(u32) -> String) -> Counted {
        let mut counted = Counted::default();
        let mut gone = Vec::new();
        for entry in self.counts.iter() {
            let Ok((key, per_cpu)) = entry else {
                continue;
            };
            let count: u64 = per_cpu.iter().map(|value| value.count).sum();
            let first = per_cpu
                .iter()
                .map(|value| value.first_ns)
                .filter(|first| *first != 0)
                .min()
                .unwrap_or(0);
            let last = per_cpu.iter().map(|value| value.last_ns).max().unwrap_or(0);
            if self.exited.contains(&key.tgid) {
                gone.push((key, count));
            }
            if self.reported.get(&key) == Some(&count) {
                continue;
            }
            self.reported.insert(key, count);
            counted.changed.push(RepeatReport {
                node: crate::report::record::Node::here(),
                record_type: RecordType::Repeats,
                pid: key.tgid,
                processes: 1,
                comm: comm(key.tgid),
                syscall: WriteSyscall::from_raw(key.syscall)
                    .map_or("write", WriteSyscall::name)
                    .into(),
                fd: key.fd,
                errno: Errno(key.errno),
                site: key.site,
                count,
                first_ts_ns: first,
                last_ts_ns: last,
                container: None,
            });
        }
        // The kernel's entries of exited processes go; their counts are folded into totals.
        for (key, count) in gone {
            let _ = self.counts.remove(&key);
            self.reported.remove(&key);
            *counted
                .folded
                .entry((key.tgid, key.fd, key.errno, key.syscall))
                .or_insert(0) += count;
        }
        // Entries read before are gone too if the kernel no longer has them.
        let exited = std::mem::take(&mut self.exited);
        self.reported.retain(|key, _| !exited.contains(&key.tgid));
        counted
            .changed
            .sort_by_key(|report| (report.site, report.fd, report.pid));
        counted
    }
}
