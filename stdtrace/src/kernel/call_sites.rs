//! Repeated failed writes from a call path already reported, counted in the kernel.
//!
//! The first failed write from a call path reaches userspace whole; its stack is unwound with
//! the binaries' CFI, and the places above the stack pointer where the unwinder found the
//! return addresses, with their values, become the path's fingerprint. The kernel program then
//! checks later failures against it with a few 8-byte reads and counts the matches per
//! (process, fd, errno, syscall, call site) instead of sending them. This module hands the
//! fingerprints the namer learned (`enrich::call_path`) to the kernel, and reads the counts
//! back ([`CallPaths`]).

use std::collections::{HashMap, HashSet};

use aya::maps::{Array, HashMap as BpfHashMap, MapData, MapError, PerCpuHashMap};
use stdtrace_common::{
    CallSiteKey, FINGERPRINT_ALTERNATIVES, FingerprintKey, Fingerprints, FirstReturn, SiteCount,
    SiteKey,
};

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
    /// What was put in the maps, per process, to take it out when it exits.
    learned: HashMap<u32, (HashSet<CallSiteKey>, HashSet<FingerprintKey>)>,
    /// The counts last reported.
    reported: HashMap<SiteKey, u64>,
    /// Processes gone, whose entries go once their last counts are read.
    exited: HashSet<u32>,
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
            learned: HashMap::new(),
            reported: HashMap::new(),
            exited: HashSet::new(),
        }
    }

    /// Hands a call path to the kernel under `site`; from now on its failures are counted
    /// there. Returns false when the kernel cannot take it (a different first offset for the
    /// same pc, or every alternative of its first return address taken).
    pub fn learn(&mut self, learned: &Learned, site: u32) -> Result<bool, MapError> {
        let site_key = CallSiteKey {
            tgid: learned.pid,
            _pad: 0,
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
            tgid: learned.pid,
            _pad: 0,
            ip: learned.ip,
            first_return: learned.first_return,
        };
        let mut known = match self.fingerprints.get(&key, 0) {
            Ok(known) => known,
            Err(MapError::KeyNotFound) => Fingerprints::default(),
            Err(err) => return Err(err),
        };
        let fingerprint = learned.fingerprint(site);
        let Some(free) = known
            .alternatives
            .iter()
            .position(|alternative| alternative.site == 0)
        else {
            return Ok(false);
        };
        if known.alternatives[..free]
            .iter()
            .any(|alternative| alternative.site == site)
        {
            return Ok(true);
        }
        debug_assert!(free < FINGERPRINT_ALTERNATIVES);
        known.alternatives[free] = fingerprint;
        self.fingerprints.insert(key, known, 0)?;
        let entry = self.learned.entry(learned.pid).or_default();
        entry.0.insert(site_key);
        entry.1.insert(key);
        Ok(true)
    }

    fn bump_generation(&mut self) {
        self.generation_value = self.generation_value.wrapping_add(1);
        if let Err(err) = self.generation.set(0, self.generation_value, 0) {
            log::debug!("bumping the call sites' generation: {err}");
        }
    }

    /// The process exited: its entries go after the next read of the counts.
    pub fn process_exited(&mut self, pid: u32) {
        if self.learned.contains_key(&pid) {
            self.exited.insert(pid);
        }
    }

    /// Every failure counted at a call site, per (pid, fd, errno, syscall), as last read: part
    /// of the totals (the kernel does not also tally them).
    pub fn totals(&self) -> HashMap<(u32, i32, u32, u32), u64> {
        let mut totals = HashMap::new();
        for (key, count) in &self.reported {
            *totals
                .entry((key.tgid, key.fd, key.errno, key.syscall))
                .or_insert(0) += count;
        }
        totals
    }

    /// Counts that changed since the last call, summed over CPUs; `comm` names processes.
    pub fn changed(&mut self, comm: impl Fn(u32) -> String) -> Vec<RepeatReport> {
        let mut changed = Vec::new();
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
                gone.push(key);
            }
            if self.reported.get(&key) == Some(&count) {
                continue;
            }
            self.reported.insert(key, count);
            changed.push(RepeatReport {
                node: crate::report::record::Node::here(),
                record_type: RecordType::Repeats,
                pid: key.tgid,
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
            });
        }
        // The kernel's entries of exited processes go; their counts stay in `reported`, for
        // the totals.
        for key in gone {
            let _ = self.counts.remove(&key);
        }
        for pid in std::mem::take(&mut self.exited) {
            if let Some((sites, fingerprints)) = self.learned.remove(&pid) {
                for key in sites {
                    let _ = self.sites.remove(&key);
                }
                self.bump_generation();
                for key in fingerprints {
                    let _ = self.fingerprints.remove(&key);
                }
            }
        }
        changed.sort_by_key(|report| (report.pid, report.fd, report.site));
        changed
    }
}
