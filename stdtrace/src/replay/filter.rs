//! `report`'s filters: `--pid`, `--comm`, `--container`, `--pod`, `--namespace`, `--type`,
//! `--since`, `--until` (`--story` keeps one pid). Different filters intersect; repeats of one
//! (and the container filters among themselves) are a union.

use anyhow::{Result, bail};

use super::input::Item;
use crate::{
    cli::{ReportArgs, TimeBound},
    enrich::container::select::{self, Selector},
    report::recording::read::Record,
};

/// The record types a filter can name.
const TYPES: [&str; 4] = ["write_error", "blocked_write", "repeats", "sigpipe"];

pub struct Filter {
    pids: Vec<u32>,
    comms: Vec<String>,
    types: Vec<String>,
    /// `--container`, `--pod`, `--namespace`: matched against the records' `container`.
    containers: Vec<Selector>,
    /// Wall-clock nanoseconds since the epoch.
    since: Option<i128>,
    until: Option<i128>,
}

impl Filter {
    pub fn new(args: &ReportArgs, items: &[Item]) -> Result<Self> {
        for name in &args.types {
            if !TYPES.contains(&name.as_str()) {
                bail!("unknown record type `{name}` (one of {})", TYPES.join(", "));
            }
        }
        let end = items.iter().filter_map(wall_ns).max().unwrap_or(0);
        let mut pids = args.pids.clone();
        pids.extend(args.story);
        Ok(Self {
            pids,
            comms: args.comms.clone(),
            types: args.types.clone(),
            containers: crate::cli::selectors(
                args.containers.clone(),
                args.pods.clone(),
                args.namespaces.clone(),
            ),
            since: args.since.as_ref().map(|bound| resolve(bound, end)),
            until: args.until.as_ref().map(|bound| resolve(bound, end)),
        })
    }

    /// Whether a record is shown (headers and summaries are kept for what they tell).
    pub fn keeps(&self, item: &Item) -> bool {
        let (record_type, pid, comm, container) = match &item.record {
            Record::Header(_) | Record::Summary(_) => return true,
            Record::Write(report) => (
                report.record_type.name(),
                report.pid,
                &report.comm,
                report.container.as_ref(),
            ),
            Record::Repeats(report) => (
                "repeats",
                report.pid,
                &report.comm,
                report.container.as_ref(),
            ),
            Record::Sigpipe(report) => (
                "sigpipe",
                report.pid,
                &report.comm,
                report.container.as_ref(),
            ),
        };
        let in_container = self.containers.is_empty()
            || container.is_some_and(|container| select::any_matches(&self.containers, container));
        let wall = wall_ns(item).unwrap_or(0);
        (self.pids.is_empty() || self.pids.contains(&pid))
            && (self.comms.is_empty() || self.comms.contains(comm))
            && (self.types.is_empty() || self.types.iter().any(|t| t == record_type))
            && in_container
            && self.since.is_none_or(|since| wall >= since)
            && self.until.is_none_or(|until| wall <= until)
    }
}

/// When a record happened, in wall-clock nanoseconds: a repeat by its latest.
fn wall_ns(item: &Item) -> Option<i128> {
    let ts = match &item.record {
        Record::Header(_) | Record::Summary(_) => return None,
        Record::Write(report) => report.ts_ns,
        Record::Repeats(report) => report.last_ts_ns,
        Record::Sigpipe(report) => report.ts_ns,
    };
    Some(item.clock.wall_ns(ts))
}

/// A bound as wall-clock nanoseconds, given the recording's end.
fn resolve(bound: &TimeBound, end: i128) -> i128 {
    match bound {
        TimeBound::Instant(at) => *at,
        TimeBound::BeforeEnd(before) => end - before.as_nanos() as i128,
        TimeBound::TimeOfDay { seconds, nanos } => {
            local_midnight(end) + i128::from(*seconds) * 1_000_000_000 + i128::from(*nanos)
        }
    }
}

/// The local midnight that starts the day of `wall_ns`.
fn local_midnight(wall_ns: i128) -> i128 {
    let seconds = (wall_ns / 1_000_000_000) as libc::time_t;
    // SAFETY: localtime_r and mktime work on the `tm` we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&seconds, &mut tm) }.is_null() {
        return wall_ns - wall_ns.rem_euclid(86_400 * 1_000_000_000);
    }
    tm.tm_hour = 0;
    tm.tm_min = 0;
    tm.tm_sec = 0;
    tm.tm_isdst = -1;
    let midnight = unsafe { libc::mktime(&mut tm) };
    i128::from(midnight) * 1_000_000_000
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::report::{Clock, record::samples};

    fn write_at(pid: u32, ts_ns: u64) -> Item {
        let mut report = samples::report();
        report.pid = pid;
        report.ts_ns = ts_ns;
        Item {
            record: Record::Write(Box::new(report)),
            text: String::new(),
            clock: Clock::from_offset(1_000),
            recording: None,
        }
    }

    #[test]
    fn containers_and_pods_match_the_recorded_container() {
        let mut inside = write_at(1, 1_000_000_000);
        if let Record::Write(report) = &mut inside.record {
            report.container = Some(crate::report::record::Container {
                id: "3f2a".repeat(16),
                name: Some("web-1".into()),
                pod: crate::report::record::Pod {
                    name: Some("web-0".into()),
                    namespace: Some("prod".into()),
                    uid: None,
                },
                ..Default::default()
            });
        }
        let items = vec![inside, write_at(2, 2_000_000_000)];
        let keeps = |args: &[&str]| {
            let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(
                ["stdtrace", "report", "x"].iter().chain(args),
            )
            .unwrap();
            let Some(crate::cli::Subcommand::Report(report)) = cli.subcommand else {
                panic!("report");
            };
            let filter = Filter::new(&report, &items).unwrap();
            items
                .iter()
                .map(|item| filter.keeps(item))
                .collect::<Vec<_>>()
        };
        assert_eq!(keeps(&["--container", "web-1"]), [true, false]);
        assert_eq!(keeps(&["--container", "3f2a3f"]), [true, false]);
        assert_eq!(keeps(&["--pod", "prod/web-0"]), [true, false]);
        assert_eq!(keeps(&["--pod", "prod/web-1"]), [false, false]);
        assert_eq!(keeps(&["--namespace", "prod"]), [true, false]);
        // A union among themselves, an intersection with --pid.
        assert_eq!(
            keeps(&["--pod", "prod/web-1", "--container", "web-1"]),
            [true, false]
        );
        assert_eq!(
            keeps(&["--container", "web-1", "--pid", "2"]),
            [false, false]
        );
    }

    #[test]
    fn pid_type_and_time_bounds() {
        let items = vec![write_at(1, 1_000_000_000), write_at(2, 9_000_000_000)];
        let filter = |args: &[&str]| {
            let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(
                ["stdtrace", "report", "x"].iter().chain(args),
            )
            .unwrap();
            let Some(crate::cli::Subcommand::Report(report)) = cli.subcommand else {
                panic!("report");
            };
            let filter = Filter::new(&report, &items).unwrap();
            items
                .iter()
                .map(|item| filter.keeps(item))
                .collect::<Vec<_>>()
        };
        assert_eq!(filter(&[]), [true, true]);
        assert_eq!(filter(&["--pid", "2"]), [false, true]);
        assert_eq!(filter(&["--comm", "writer"]), [true, true]);
        assert_eq!(filter(&["--comm", "other"]), [false, false]);
        assert_eq!(filter(&["--type", "sigpipe"]), [false, false]);
        assert_eq!(filter(&["--type", "write_error,repeats"]), [true, true]);
        // 5 s before the end (9 s): only the second.
        assert_eq!(filter(&["--since", "5s"]), [false, true]);
        assert_eq!(filter(&["--until", "5s"]), [true, false]);
        assert_eq!(filter(&["--since", "1970-01-01T00:00:02Z"]), [false, true]);
        // Neither sample runs in a container.
        assert_eq!(filter(&["--container", "web-1"]), [false, false]);
        assert_eq!(
            resolve(&TimeBound::BeforeEnd(Duration::from_secs(1)), 5_000_000_000),
            4_000_000_000
        );
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from([
            "stdtrace",
            "report",
            "x",
            "--type",
            "write_errors",
        ])
        .unwrap();
        let Some(crate::cli::Subcommand::Report(report)) = cli.subcommand else {
            panic!("report");
        };
        let err = Filter::new(&report, &items).err().unwrap();
        assert_eq!(
            err.to_string(),
            "unknown record type `write_errors` (one of write_error, blocked_write, repeats, sigpipe)"
        );
    }
}
