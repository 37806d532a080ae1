//! Repeated failed writes from a call path already reported, counted in the kernel.
//!
//! The first failed write from a call path reaches userspace whole; its stack is unwound with
//! the binaries' CFI, and the places above the stack pointer where the unwinder found the
//! return addresses, with their values, become the path's fingerprint. The kernel program then
//! checks later failures against it with a few 8-byte reads and counts the matches per
//! (process, fd, errno, syscall, call site) instead of sending them. This module turns a
//! reported stack into a fingerprint ([`Learned`]), hands fingerprints to the kernel, and reads
//! the counts back ([`CallPaths`]).

use std::collections::{HashMap, HashSet};

use aya::maps::{Array, HashMap as BpfHashMap, MapData, MapError, PerCpuHashMap};
use serde::Serialize;
use stdtrace_common::{
    CallSiteKey, FINGERPRINT_ALTERNATIVES, FINGERPRINT_FRAMES, FINGERPRINT_SPAN, Fingerprint,
    FingerprintKey, Fingerprints, FirstReturn, SiteCount, SiteKey,
};

use crate::{errno, events::WriteSyscall, report::WriteReport};

/// Return addresses are used up to this far above the stack pointer: the kernel reads that
/// much of the stack in one go to check them.
const MAX_OFFSET: u64 = FINGERPRINT_SPAN as u64 - 8;

/// A call path learned from a reported write, to be handed to the kernel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Learned {
    pub pid: u32,
    /// The pc after the syscall instruction.
    pub ip: u64,
    /// Where the first return address is, above the stack pointer, and its value.
    pub first_offset: u32,
    pub first_return: u64,
    /// The next return addresses: (offset above the stack pointer, value), innermost first.
    pub frames: Vec<(u32, u64)>,
}

impl Learned {
    /// The call path of a write made with stack pointer `sp` at pc `ip`, from the return
    /// addresses the unwinder found and where (`(stack address, value)`, innermost first);
    /// `None` when no return address was found on the stack.
    pub fn from_stack(pid: u32, ip: u64, sp: u64, return_slots: &[(u64, u64)]) -> Option<Self> {
        let offsets: Vec<(u32, u64)> = return_slots
            .iter()
            .map_while(|&(slot, value)| {
                let offset = slot
                    .checked_sub(sp)
                    .filter(|offset| *offset <= MAX_OFFSET)?;
                Some((offset as u32, value))
            })
            .take(FINGERPRINT_FRAMES + 1)
            .collect();
        let (&(first_offset, first_return), rest) = offsets.split_first()?;
        Some(Self {
            pid,
            ip,
            first_offset,
            first_return,
            frames: rest.to_vec(),
        })
    }

    /// Bytes of stack above the stack pointer that hold all its return addresses.
    fn span(&self) -> u32 {
        self.frames
            .iter()
            .map(|&(offset, _)| offset)
            .chain([self.first_offset])
            .max()
            .unwrap_or(0)
            + 8
    }

    fn fingerprint(&self, site: u32) -> Fingerprint {
        let mut fingerprint = Fingerprint {
            site,
            frames: self.frames.len() as u32,
            ..Fingerprint::default()
        };
        for (index, &(offset, value)) in self.frames.iter().enumerate() {
            fingerprint.offsets[index] = offset;
            fingerprint.values[index] = value;
        }
        fingerprint
    }
}

/// Call-site ids, given by userspace: one per distinct call path of a process.
#[derive(Debug, Default)]
pub struct SiteIds {
    ids: HashMap<Learned, u32>,
    last: u32,
}

impl SiteIds {
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of `learned`'s call path, and whether it is new.
    pub fn id(&mut self, learned: &Learned) -> (u32, bool) {
        if let Some(&id) = self.ids.get(learned) {
            return (id, false);
        }
        // 0 marks an unused fingerprint in the kernel.
        self.last = self.last.wrapping_add(1).max(1);
        let id = self.last;
        self.ids.insert(learned.clone(), id);
        (id, true)
    }

    /// Forgets the paths of a process that exited (its pid may be reused).
    pub fn process_exited(&mut self, pid: u32) {
        self.ids.retain(|learned, _| learned.pid != pid);
    }
}

/// `{"type":"repeats",...}`: failed writes counted in the kernel at a call site already
/// reported, since its first report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RepeatReport {
    #[serde(rename = "type")]
    pub record_type: &'static str,
    pub pid: u32,
    pub comm: String,
    pub syscall: &'static str,
    pub fd: i32,
    pub errno: String,
    /// The call site: the `site` of the `write_error` whose stack these repeat.
    pub site: u32,
    /// How many so far (after the reported ones), exact.
    pub count: u64,
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
}

impl RepeatReport {
    pub const TYPE: &'static str = "repeats";
}

/// Which repeats a `repeats` record counts: (pid, fd, errno, syscall, site).
type RepeatKey = (u32, i32, String, &'static str, u32);

/// The repeats of each call site as reported: the kernel's counts, plus the failures that
/// reached userspace in full from a path already reported (sent before the kernel was told
/// the path), so that each call path is reported once whatever the timing.
#[derive(Default)]
pub struct Repeats {
    kernel: HashMap<RepeatKey, RepeatReport>,
    /// Failures folded here: (count, first, last).
    folded: HashMap<RepeatKey, (u64, u64, u64)>,
    folded_total: u64,
    changed: HashSet<RepeatKey>,
}

impl Repeats {
    pub fn new() -> Self {
        Self::default()
    }

    /// A failed write from a call path already reported.
    pub fn fold(&mut self, report: &WriteReport) {
        let (Some(errno), Some(site)) = (&report.errno, report.site) else {
            return;
        };
        let key = (report.pid, report.fd, errno.clone(), report.syscall, site);
        let folded = self.folded.entry(key.clone()).or_insert((0, u64::MAX, 0));
        folded.0 += 1;
        folded.1 = folded.1.min(report.ts_ns);
        folded.2 = folded.2.max(report.ts_ns);
        self.folded_total += 1;
        self.kernel
            .entry(key.clone())
            .or_insert_with(|| RepeatReport {
                record_type: RepeatReport::TYPE,
                pid: report.pid,
                comm: report.comm.clone(),
                syscall: report.syscall,
                fd: report.fd,
                errno: errno.clone(),
                site,
                count: 0,
                first_ts_ns: 0,
                last_ts_ns: 0,
            });
        self.changed.insert(key);
    }

    /// The kernel's counts that changed.
    pub fn kernel(&mut self, reports: Vec<RepeatReport>) {
        for report in reports {
            let key = (
                report.pid,
                report.fd,
                report.errno.clone(),
                report.syscall,
                report.site,
            );
            self.changed.insert(key.clone());
            self.kernel.insert(key, report);
        }
    }

    /// How many failures were folded here (not counted by the kernel).
    pub fn folded_total(&self) -> u64 {
        self.folded_total
    }

    /// The records whose counts changed since the last call: the kernel's count plus the
    /// folded ones, over the earliest and latest of both.
    pub fn take_changed(&mut self) -> Vec<RepeatReport> {
        let mut changed: Vec<RepeatReport> = std::mem::take(&mut self.changed)
            .into_iter()
            .filter_map(|key| {
                let mut report = self.kernel.get(&key)?.clone();
                if let Some(&(count, first, last)) = self.folded.get(&key) {
                    report.first_ts_ns = match report.first_ts_ns {
                        0 => first,
                        kernel => kernel.min(first),
                    };
                    report.last_ts_ns = report.last_ts_ns.max(last);
                    report.count += count;
                }
                Some(report)
            })
            .collect();
        changed.sort_by_key(|report| (report.pid, report.fd, report.site));
        changed
    }
}

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
                record_type: RepeatReport::TYPE,
                pid: key.tgid,
                comm: comm(key.tgid),
                syscall: WriteSyscall::from_raw(key.syscall).map_or("write", WriteSyscall::name),
                fd: key.fd,
                errno: errno::name(key.errno),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_is_the_return_addresses_above_the_stack_pointer() {
        let sp = 0x7ffd_0000_1000;
        let slots = [
            (sp, 0x40_1234),
            (sp + 0x28, 0x40_2000),
            (sp + 0x48, 0x40_3000),
        ];
        let learned = Learned::from_stack(7, 0x7f00_0000_0010, sp, &slots).unwrap();
        assert_eq!(learned.first_offset, 0);
        assert_eq!(learned.first_return, 0x40_1234);
        assert_eq!(learned.frames, vec![(0x28, 0x40_2000), (0x48, 0x40_3000)]);
        let fingerprint = learned.fingerprint(3);
        assert_eq!(fingerprint.site, 3);
        assert_eq!(fingerprint.frames, 2);
        assert_eq!(fingerprint.offsets[..2], [0x28, 0x48]);
        assert_eq!(fingerprint.values[..2], [0x40_2000, 0x40_3000]);
    }

    #[test]
    fn at_most_the_frames_a_fingerprint_holds_and_none_below_the_stack_pointer() {
        let sp = 0x1000;
        let slots: Vec<(u64, u64)> = (0..40).map(|i| (sp + 16 * i, 0x40_0000 + i)).collect();
        let learned = Learned::from_stack(1, 0x10, sp, &slots).unwrap();
        assert_eq!(learned.frames.len(), FINGERPRINT_FRAMES);
        assert!(Learned::from_stack(1, 0x10, sp, &[(sp - 8, 1)]).is_none());
        assert!(Learned::from_stack(1, 0x10, sp, &[]).is_none());
        // A slot below the stack pointer ends the path there.
        let cut = Learned::from_stack(1, 0x10, sp, &[(sp, 1), (sp - 8, 2), (sp + 8, 3)]).unwrap();
        assert!(cut.frames.is_empty());
    }

    #[test]
    fn folded_failures_add_to_the_kernel_counts_of_their_site() {
        let mut repeats = Repeats::new();
        let mut first = crate::report::samples::report();
        first.errno = Some("EPIPE".into());
        first.site = Some(3);
        first.ts_ns = 100;
        // Two failures sent in full before the kernel knew the path, one kernel count later.
        let mut late = first.clone();
        late.ts_ns = 150;
        repeats.fold(&late);
        late.ts_ns = 160;
        repeats.fold(&late);
        let changed = repeats.take_changed();
        assert_eq!(changed.len(), 1);
        assert_eq!(
            (
                changed[0].count,
                changed[0].first_ts_ns,
                changed[0].last_ts_ns
            ),
            (2, 150, 160)
        );
        assert!(repeats.take_changed().is_empty(), "told once");
        let kernel = RepeatReport {
            count: 5,
            first_ts_ns: 170,
            last_ts_ns: 300,
            ..changed[0].clone()
        };
        repeats.kernel(vec![kernel]);
        let changed = repeats.take_changed();
        assert_eq!(
            (
                changed[0].count,
                changed[0].first_ts_ns,
                changed[0].last_ts_ns
            ),
            (7, 150, 300)
        );
        assert_eq!(repeats.folded_total(), 2);
        // Another fd's repeats of the same path are their own record.
        let mut other_fd = first.clone();
        other_fd.fd = 9;
        repeats.fold(&other_fd);
        let changed = repeats.take_changed();
        assert_eq!((changed.len(), changed[0].fd, changed[0].count), (1, 9, 1));
    }

    #[test]
    fn site_ids_are_stable_per_path_and_never_zero() {
        let mut ids = SiteIds::new();
        let a = Learned::from_stack(1, 0x10, 0x1000, &[(0x1000, 5)]).unwrap();
        let b = Learned::from_stack(1, 0x10, 0x1000, &[(0x1000, 6)]).unwrap();
        assert_eq!(ids.id(&a), (1, true));
        assert_eq!(ids.id(&b), (2, true));
        assert_eq!(ids.id(&a), (1, false));
        ids.process_exited(1);
        assert_eq!(ids.id(&a), (3, true), "a reused pid's paths are new");
    }
}
