//! `report`'s one summary: each recording's last summary (its summaries are cumulative: the
//! last says everything), summed over recordings; for a recording that has none (its
//! recorder was killed before its first file rotated), one counted from its records.

use std::collections::{BTreeMap, HashMap};

use super::input::Item;
use crate::report::{
    record::{KernelCounters, RecordType, Summary, Total},
    recording::read::Record,
};

/// Why a summary counted from records ended.
const NO_SUMMARY: &str = "the recording ends without a summary (was the recorder killed?)";

pub fn merged_summary(items: &[Item]) -> Summary {
    // Per recording, in the order first seen: its last summary, or its records.
    let mut order: Vec<Option<&str>> = Vec::new();
    let mut last: HashMap<Option<&str>, &Summary> = HashMap::new();
    for item in items {
        let recording = item.recording.as_deref();
        if !order.contains(&recording) {
            order.push(recording);
        }
        if let Record::Summary(summary) = &item.record {
            last.insert(recording, summary);
        }
    }
    let mut summaries: Vec<Summary> = order
        .iter()
        .map(|recording| match last.get(recording) {
            Some(summary) => (*summary).clone(),
            None => counted(
                items
                    .iter()
                    .filter(|item| item.recording.as_deref() == *recording),
            ),
        })
        .collect();
    let Some(mut merged) = summaries.pop() else {
        return counted(std::iter::empty());
    };
    for other in summaries.into_iter().rev() {
        add(&mut merged, other);
    }
    merged
}

/// Adds another recording's summary.
fn add(into: &mut Summary, other: Summary) {
    into.duration_ms = into.duration_ms.max(other.duration_ms);
    if into.stopped != other.stopped {
        into.stopped = format!("{}; {}", other.stopped, into.stopped).into();
    }
    into.failed_writes += other.failed_writes;
    into.reported += other.reported;
    into.dropped += other.dropped;
    into.repeats += other.repeats;
    into.blocked_writes += other.blocked_writes;
    into.totals.extend(other.totals);
    into.totals.sort_by(|a, b| {
        (a.pid, a.fd, a.errno, &a.syscall).cmp(&(b.pid, b.fd, b.errno, &b.syscall))
    });
    into.stuck.extend(other.stuck);
    into.sigpipes.extend(other.sigpipes);
    into.command = into.command.take().or(other.command);
    let (k, o) = (&mut into.kernel, other.kernel);
    k.registers_unreadable += o.registers_unreadable;
    k.fd_unreadable += o.fd_unreadable;
    k.stack_unreadable += o.stack_unreadable;
    k.tally_full += o.tally_full;
    k.children_followed += o.children_followed;
    k.lifecycle_dropped += o.lifecycle_dropped;
    k.writes_blocked += o.writes_blocked;
    k.blocked_untracked += o.blocked_untracked;
    k.blocked_dropped += o.blocked_dropped;
    k.sites_full += o.sites_full;
    into.output_records_dropped = match (into.output_records_dropped, other.output_records_dropped)
    {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    };
}

/// A summary counted from the records themselves: what they tell, not what the kernel
/// counted (nothing of the events dropped, nor of the kernel's counters).
fn counted<'a>(items: impl Iterator<Item = &'a Item>) -> Summary {
    let mut summary = Summary {
        // Not this node: the recording's records say where they were made.
        node: crate::report::record::Node::default(),
        record_type: RecordType::Summary,
        duration_ms: 0,
        stopped: NO_SUMMARY.into(),
        failed_writes: 0,
        reported: 0,
        dropped: 0,
        repeats: 0,
        totals: Vec::new(),
        blocked_writes: 0,
        stuck: Vec::new(),
        sigpipes: Vec::new(),
        command: None,
        kernel: KernelCounters::default(),
        output_records_dropped: None,
    };
    type Key = (u32, i32, crate::report::record::Errno, String);
    let mut totals: BTreeMap<Key, (String, u64)> = BTreeMap::new();
    // A site's repeats records are cumulative: its last says all.
    let mut repeats: HashMap<(u32, i32, u32), (Key, String, u64)> = HashMap::new();
    let mut sigpipes = BTreeMap::new();
    let (mut first, mut last) = (u64::MAX, 0);
    for item in items {
        match &item.record {
            Record::Write(report) => {
                first = first.min(report.ts_ns);
                last = last.max(report.ts_ns);
                match report.errno {
                    Some(errno) => {
                        summary.reported += 1;
                        let key = (report.pid, report.fd, errno, report.syscall.to_string());
                        totals
                            .entry(key)
                            .or_insert_with(|| (report.comm.clone(), 0))
                            .1 += 1;
                    }
                    None => summary.blocked_writes += 1,
                }
            }
            Record::Repeats(report) => {
                last = last.max(report.last_ts_ns);
                let key = (
                    report.pid,
                    report.fd,
                    report.errno,
                    report.syscall.to_string(),
                );
                repeats.insert(
                    (report.pid, report.fd, report.site),
                    (key, report.comm.clone(), report.count),
                );
            }
            Record::Sigpipe(report) => {
                sigpipes.insert((report.pid, report.fd), (**report).clone());
            }
            Record::Header(_) | Record::Summary(_) => {}
        }
    }
    for (key, comm, count) in repeats.into_values() {
        summary.repeats += count;
        totals.entry(key).or_insert_with(|| (comm, 0)).1 += count;
    }
    summary.failed_writes = summary.reported + summary.repeats;
    summary.totals = totals
        .into_iter()
        .map(|((pid, fd, errno, syscall), (comm, failures))| Total {
            pid,
            comm,
            fd,
            errno,
            syscall: syscall.into(),
            failures,
        })
        .collect();
    summary.sigpipes = sigpipes
        .into_values()
        .map(|mut story| {
            story.stack = Vec::new();
            story
        })
        .collect();
    if last >= first {
        summary.duration_ms = (last - first) / 1_000_000;
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{
        Clock,
        record::{Errno, RepeatReport, samples},
    };

    fn item(record: Record, recording: Option<&str>) -> Item {
        Item {
            record,
            text: String::new(),
            clock: Clock::from_offset(0),
            recording: recording.map(str::to_owned),
        }
    }

    fn summary(failed: u64, stopped: &str) -> Summary {
        let mut summary = counted(std::iter::empty());
        summary.failed_writes = failed;
        summary.reported = failed;
        summary.stopped = stopped.to_owned().into();
        summary.kernel.writes_blocked = 1;
        summary
    }

    #[test]
    fn the_last_summary_of_each_recording_summed() {
        let items = vec![
            item(
                Record::Summary(Box::new(summary(1, "still tracing"))),
                Some("a"),
            ),
            item(
                Record::Summary(Box::new(summary(5, "the command exited"))),
                Some("a"),
            ),
            item(
                Record::Summary(Box::new(summary(2, "interrupted"))),
                Some("b"),
            ),
        ];
        let merged = merged_summary(&items);
        assert_eq!((merged.failed_writes, merged.reported), (7, 7));
        assert_eq!(merged.kernel.writes_blocked, 2);
        assert_eq!(merged.stopped, "the command exited; interrupted");
    }

    #[test]
    fn without_a_summary_one_is_counted_from_the_records() {
        let first = samples::report();
        let repeats = RepeatReport {
            node: crate::report::record::Node::here(),
            record_type: RecordType::Repeats,
            pid: first.pid,
            comm: first.comm.clone(),
            syscall: "write".into(),
            fd: first.fd,
            errno: Errno::EPIPE,
            site: 1,
            count: 10,
            first_ts_ns: 2,
            last_ts_ns: 1_000_000_001,
        };
        let mut later = repeats.clone();
        later.count = 40;
        let items = vec![
            item(Record::Write(Box::new(first.clone())), Some("a")),
            item(Record::Repeats(repeats), Some("a")),
            item(Record::Repeats(later), Some("a")),
        ];
        let merged = merged_summary(&items);
        assert_eq!(merged.stopped, NO_SUMMARY);
        assert_eq!(
            (merged.failed_writes, merged.reported, merged.repeats),
            (41, 1, 40),
            "a site's repeats are cumulative"
        );
        assert_eq!(merged.totals.len(), 1);
        assert_eq!(
            (merged.totals[0].pid, merged.totals[0].failures),
            (first.pid, 41)
        );
        assert_eq!(merged.duration_ms, 1000);
    }
}
