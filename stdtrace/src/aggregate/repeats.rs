//! Repeats: the same failure (or slow write) from the same place, counted instead of reported
//! again. One state feeds both outputs: JSON's `repeats` records and text's "... N more from
//! the same stack" lines.
//!
//! Two things make a report a repeat:
//! - its call path is known already (`site`, given by the namer; the kernel counts later
//!   failures at that site itself, and a failure that reached userspace before the kernel was
//!   told the path is folded here): nobody prints it;
//! - without a site (a slow write, or a stack that could not be fingerprinted), the same
//!   process, fd, errno or state and stack addresses as a report before: JSON prints it in
//!   full as ever, text counts it.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use crate::report::record::{BlockedState, Errno, Name, RecordType, RepeatReport, WriteReport};

/// How often text says again how often something repeated.
pub const REPEAT_INTERVAL: Duration = Duration::from_secs(1);

/// What repeats: a failure's errno, or a slow write (stuck and resumed are told once each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Repeated {
    Failure(Errno),
    Slow,
}

/// Where it repeats from: a call path the kernel knows, or a stack by its addresses.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Place {
    Site(u32),
    Stack(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    pid: u32,
    fd: i32,
    what: Repeated,
    place: Place,
}

/// A report, as its repeats see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The first of its kind: every output prints it.
    New,
    /// The same stack as one printed before, without a call path: JSON prints it, text
    /// counts it.
    SameStack,
    /// From a call path already reported: folded into that site's repeats, printed by nobody.
    SamePath,
}

/// Occurrences: how many, the first and the last.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    count: u64,
    first_ns: u64,
    last_ns: u64,
}

impl Tally {
    fn add(&mut self, ts_ns: u64) {
        self.count += 1;
        self.first_ns = if self.first_ns == 0 {
            ts_ns
        } else {
            self.first_ns.min(ts_ns)
        };
        self.last_ns = self.last_ns.max(ts_ns);
    }
}

#[derive(Debug)]
struct Entry {
    pid: u32,
    comm: String,
    syscall: Name,
    fd: i32,
    what: Repeated,
    /// For repeats counted before any report of their own: the fd of the report their call
    /// site was first told with.
    origin_fd: Option<i32>,
    /// A report of its own was printed (not so for repeats on another fd of a call path first
    /// reported on one fd).
    shown: bool,
    /// Occurrences after the first that reached userspace.
    folded: Tally,
    /// Occurrences counted in the kernel at the call site.
    kernel: Tally,
    /// Of all occurrences, how many text has said.
    printed: u64,
    last_print: Instant,
}

impl Entry {
    fn told(&self) -> u64 {
        self.folded.count + self.kernel.count
    }
}

/// A line's worth of repeats for text: `fresh` more since last said, `total` in all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepeatLine {
    pub pid: u32,
    pub comm: String,
    pub syscall: Name,
    pub fd: i32,
    pub what: Repeated,
    /// For repeats counted before any report of their own: the fd of the report their call
    /// site was first told with (text names that report's stack).
    pub origin_fd: Option<i32>,
    /// A report of its own was printed: these are more of it.
    pub shown: bool,
    pub fresh: u64,
    pub total: u64,
}

/// Every repeat seen, per (process, fd, errno or state, call path or stack).
#[derive(Default)]
pub struct Repeats {
    entries: HashMap<Key, Entry>,
    /// The fd each call site was first reported with, by (pid, site). Site ids are never
    /// reused within a run, so a reused pid cannot mix them up.
    sites: HashMap<(u32, u32), i32>,
    /// Keys whose JSON record is due.
    changed: HashSet<Key>,
    folded_total: u64,
}

impl Repeats {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a report in: is it new, or a repeat of which kind.
    pub fn observe(&mut self, report: &WriteReport, repeat_of_site: bool) -> Seen {
        let what = match (report.errno, report.state) {
            (Some(errno), _) => Repeated::Failure(errno),
            (None, Some(BlockedState::Slow)) => Repeated::Slow,
            _ => return Seen::New,
        };
        let place = match report.site {
            Some(site) => Place::Site(site),
            None => Place::Stack(
                report
                    .stack
                    .iter()
                    .map(|frame| frame.address.clone())
                    .collect(),
            ),
        };
        let key = Key {
            pid: report.pid,
            fd: report.fd,
            what,
            place,
        };
        if let Some(site) = report.site
            && !repeat_of_site
        {
            self.sites.entry((report.pid, site)).or_insert(report.fd);
        }
        let origin_fd = report
            .site
            .and_then(|site| self.sites.get(&(report.pid, site)))
            .copied();
        let seen = match self.entries.get_mut(&key) {
            Some(entry) if repeat_of_site || entry.shown => {
                entry.folded.add(report.ts_ns);
                if repeat_of_site {
                    Seen::SamePath
                } else {
                    Seen::SameStack
                }
            }
            Some(entry) => {
                // Counted before it was printed (from another fd's path): now its own report.
                entry.shown = true;
                Seen::New
            }
            None if repeat_of_site => {
                let mut entry =
                    new_entry(report, what, origin_fd, Instant::now() - REPEAT_INTERVAL);
                entry.folded.add(report.ts_ns);
                self.entries.insert(key.clone(), entry);
                Seen::SamePath
            }
            None => {
                self.entries
                    .insert(key.clone(), new_entry(report, what, None, Instant::now()));
                Seen::New
            }
        };
        if seen == Seen::SamePath {
            self.folded_total += 1;
            self.changed.insert(key);
        }
        seen
    }

    /// The kernel's counts at call sites, that changed.
    pub fn kernel(&mut self, reports: Vec<RepeatReport>) {
        for report in reports {
            let Some(&first_fd) = self.sites.get(&(report.pid, report.site)) else {
                // A site this run never reported (its process's ids were reused): nothing to
                // tie the count to.
                continue;
            };
            let key = Key {
                pid: report.pid,
                fd: report.fd,
                what: Repeated::Failure(report.errno),
                place: Place::Site(report.site),
            };
            let entry = self.entries.entry(key.clone()).or_insert_with(|| Entry {
                pid: report.pid,
                comm: report.comm.clone(),
                syscall: report.syscall.clone(),
                fd: report.fd,
                what: Repeated::Failure(report.errno),
                origin_fd: Some(first_fd),
                shown: first_fd == report.fd,
                folded: Tally::default(),
                kernel: Tally::default(),
                printed: 0,
                last_print: Instant::now() - REPEAT_INTERVAL,
            });
            entry.kernel = Tally {
                count: report.count,
                first_ns: report.first_ts_ns,
                last_ns: report.last_ts_ns,
            };
            self.changed.insert(key);
        }
    }

    /// How many failures were folded here (reached userspace, not counted by the kernel).
    pub fn folded_total(&self) -> u64 {
        self.folded_total
    }

    /// JSON's view: the `repeats` records whose counts changed since the last call, each with
    /// the kernel's count plus the folded ones, over the earliest and latest of both.
    pub fn take_changed(&mut self) -> Vec<RepeatReport> {
        let mut changed: Vec<RepeatReport> = std::mem::take(&mut self.changed)
            .into_iter()
            .filter_map(|key| {
                let (Place::Site(site), Repeated::Failure(errno)) = (&key.place, key.what) else {
                    return None;
                };
                let entry = self.entries.get(&key)?;
                let first_ts_ns = match (entry.kernel.first_ns, entry.folded.first_ns) {
                    (0, folded) => folded,
                    (kernel, 0) => kernel,
                    (kernel, folded) => kernel.min(folded),
                };
                Some(RepeatReport {
                    node: crate::report::record::Node::here(),
                    record_type: RecordType::Repeats,
                    pid: entry.pid,
                    comm: entry.comm.clone(),
                    syscall: entry.syscall.clone(),
                    fd: entry.fd,
                    errno,
                    site: *site,
                    count: entry.told(),
                    first_ts_ns,
                    last_ts_ns: entry.kernel.last_ns.max(entry.folded.last_ns),
                })
            })
            .collect();
        changed.sort_by_key(|report| (report.pid, report.fd, report.site));
        changed
    }

    /// Text's view: the repeats not yet said, at most once per [`REPEAT_INTERVAL`] each, or
    /// all of them when `all` (at the end).
    pub fn due_lines(&mut self, all: bool) -> Vec<RepeatLine> {
        let now = Instant::now();
        let mut lines = Vec::new();
        for entry in self.entries.values_mut() {
            let told = entry.told();
            let fresh = told.saturating_sub(entry.printed);
            if fresh == 0 || (!all && now.duration_since(entry.last_print) < REPEAT_INTERVAL) {
                continue;
            }
            entry.printed = told;
            entry.last_print = now;
            lines.push(RepeatLine {
                pid: entry.pid,
                comm: entry.comm.clone(),
                syscall: entry.syscall.clone(),
                fd: entry.fd,
                what: entry.what,
                origin_fd: entry.origin_fd,
                shown: entry.shown,
                fresh,
                total: told + u64::from(entry.shown),
            });
        }
        lines
    }
}

/// An entry for `report`: its own (printed) when `origin_fd` is `None`, else counted from the
/// start as a repeat of the report its site was first told with, on `origin_fd`.
fn new_entry(
    report: &WriteReport,
    what: Repeated,
    origin_fd: Option<i32>,
    last_print: Instant,
) -> Entry {
    Entry {
        pid: report.pid,
        comm: report.comm.clone(),
        syscall: report.syscall.clone(),
        fd: report.fd,
        what,
        origin_fd,
        shown: origin_fd.is_none_or(|fd| fd == report.fd),
        folded: Tally::default(),
        kernel: Tally::default(),
        printed: 0,
        last_print,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::record::samples;

    #[test]
    fn folded_failures_add_to_the_kernel_counts_of_their_site() {
        let mut repeats = Repeats::new();
        let mut first = samples::report();
        first.errno = Some(Errno::EPIPE);
        first.site = Some(3);
        first.ts_ns = 100;
        assert_eq!(repeats.observe(&first, false), Seen::New);
        assert!(repeats.take_changed().is_empty(), "nothing repeated yet");
        // Two failures sent in full before the kernel knew the path, one kernel count later.
        let mut late = first.clone();
        late.ts_ns = 150;
        assert_eq!(repeats.observe(&late, true), Seen::SamePath);
        late.ts_ns = 160;
        assert_eq!(repeats.observe(&late, true), Seen::SamePath);
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
        assert_eq!(repeats.observe(&other_fd, true), Seen::SamePath);
        let changed = repeats.take_changed();
        assert_eq!((changed.len(), changed[0].fd, changed[0].count), (1, 9, 1));
        // Text says both: the fd 4 ones as more of the report it printed, the fd 9 one as a
        // repeat of the stack reported on fd 4.
        let mut lines = repeats.due_lines(true);
        lines.sort_by_key(|line| line.fd);
        assert_eq!(
            lines
                .iter()
                .map(|line| (line.fd, line.origin_fd, line.shown, line.fresh, line.total))
                .collect::<Vec<_>>(),
            vec![(4, None, true, 7, 8), (9, Some(4), false, 1, 1)]
        );
        assert!(repeats.due_lines(true).is_empty(), "said once");
    }

    #[test]
    fn without_a_site_the_same_stack_is_counted_for_text_and_printed_for_json() {
        let mut repeats = Repeats::new();
        let report = samples::report();
        assert_eq!(repeats.observe(&report, false), Seen::New);
        assert_eq!(repeats.observe(&report, false), Seen::SameStack);
        assert_eq!(repeats.observe(&report, false), Seen::SameStack);
        let mut other_stack = report.clone();
        other_stack.stack.pop();
        assert_eq!(repeats.observe(&other_stack, false), Seen::New);
        let mut stuck = report.clone();
        stuck.errno = None;
        stuck.state = Some(BlockedState::Stuck);
        assert_eq!(repeats.observe(&stuck, false), Seen::New);
        assert_eq!(
            repeats.observe(&stuck, false),
            Seen::New,
            "stuck is told each time"
        );
        assert!(
            repeats.take_changed().is_empty(),
            "no site: no repeats record"
        );
        assert_eq!(repeats.folded_total(), 0);
        let lines = repeats.due_lines(true);
        assert_eq!(lines.len(), 1);
        assert_eq!((lines[0].fresh, lines[0].total), (2, 3));
    }
}
