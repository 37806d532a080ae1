//! Churn: 2,000 short-lived processes of one binary, each failing a known number of writes.
//! Their call paths are one binary's: learnt from the first process, counted in the kernel
//! for all the others; their kernel entries are folded per binary and removed as they exit,
//! so that the totals stay exact and the maps and tables come back to where they started.

use std::{path::Path, process::Stdio, time::Duration};

use serde_json::Value;

use crate::{
    c_writer,
    can_run::{self, Need},
    stdtrace::{self, of_type, summary},
};

/// Processes in the churn.
const PROCESSES: u64 = 2000;
/// Failed writes of each: EPIPE, then EAGAIN.
const EPIPES: u64 = 3;
const EAGAINS: u64 = 2;

/// Kernel maps that hold one entry per live process (or per pending story of one).
const PER_PROCESS_MAPS: [&str; 11] = [
    "targets",
    "go_processes",
    "parked",
    "readers_closed",
    "reader_watch",
    "site_counts",
    "sigpipe_pending",
    "sigpipe_counts",
    "sigpipe_seen",
    "sigpipe_delivery_wanted",
    "processes_with_entries",
];

/// Runs `script` under stdtrace (launch mode: it and every process it forks) and returns
/// the JSON records.
fn traced(script: &str, limit: Duration) -> Vec<Value> {
    let tracer = stdtrace::command(&["--format", "json", "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting stdtrace");
    let output = stdtrace::wait_with_timeout(tracer, limit);
    assert!(
        output.status.success(),
        "stdtrace: {:?}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdtrace::json_lines(&output.stdout)
}

fn entries(summary: &Value, map: &str) -> u64 {
    summary["kernel_map_entries"][map]
        .as_u64()
        .unwrap_or_else(|| panic!("no entry count for map {map}: {summary}"))
}

#[test]
fn a_churn_of_one_binary_is_counted_exactly_and_leaves_nothing_behind() {
    if !can_run::require(Need::Root) {
        return;
    }
    let writer = c_writer(false);
    let writer = writer.to_str().unwrap();
    // What the maps and tables hold when nothing has failed: a command that writes nothing.
    let idle = traced("true", Duration::from_secs(60));
    let baseline = summary(&idle).clone();

    let script = format!(
        "i=0; while [ $i -lt {PROCESSES} ]; do {writer} {EPIPES} {EAGAINS} 2>/dev/null || exit 1; \
         i=$((i+1)); done"
    );
    let records = traced(&script, Duration::from_secs(300));
    let summary = summary(&records);
    let per_process = EPIPES + EAGAINS;

    // Exact totals: every failure of every process, none lost to the churn.
    assert_eq!(summary["failed_writes"], PROCESSES * per_process, "{summary}");
    for counter in ["tally_full", "sites_full", "processes_full", "sigpipe_full"] {
        assert_eq!(summary["kernel"][counter], 0, "{counter}: {summary}");
    }
    let by_binary: Vec<&Value> = summary["totals_by_binary"]
        .as_array()
        .expect("totals_by_binary")
        .iter()
        .filter(|total| Path::new(total["binary"].as_str().unwrap_or("")) == Path::new(writer))
        .collect();
    let binary_total = |errno: &str| {
        by_binary
            .iter()
            .find(|total| total["errno"] == errno)
            .unwrap_or_else(|| panic!("no {errno} total for {writer}: {summary}"))
    };
    for (errno, count) in [("EPIPE", EPIPES), ("EAGAIN", EAGAINS)] {
        let total = binary_total(errno);
        assert_eq!(total["processes"], PROCESSES, "{total}");
        assert_eq!(total["failures"], PROCESSES * count, "{total}");
    }
    assert_eq!(by_binary.len(), 2, "{by_binary:#?}");

    // One call path per errno, learnt once for the binary: the other processes' failures are
    // counted in the kernel, not sent in full.
    let sent = summary["reported"].as_u64().unwrap() + summary["dropped"].as_u64().unwrap();
    assert_eq!(
        sent + summary["repeats"].as_u64().unwrap(),
        PROCESSES * per_process,
        "{summary}"
    );
    assert!(
        sent < 100,
        "{sent} failures of {PROCESSES} processes sent in full: their call paths were not shared"
    );
    let errors = of_type(&records, "write_error");
    for errno in ["EPIPE", "EAGAIN"] {
        let first = errors
            .iter()
            .find(|record| record["errno"] == errno)
            .unwrap_or_else(|| panic!("no {errno} write_error"));
        let site = &first["site"];
        let reported_at_site = errors
            .iter()
            .filter(|record| record["site"] == *site)
            .count() as u64;
        let repeats = of_type(&records, "repeats");
        let last = repeats
            .iter()
            .rev()
            .find(|record| record["site"] == *site)
            .unwrap_or_else(|| panic!("no repeats of site {site}"));
        assert_eq!(last["processes"], PROCESSES, "{last}");
        let count = if errno == "EPIPE" { EPIPES } else { EAGAINS };
        assert_eq!(
            last["count"].as_u64().unwrap() + reported_at_site,
            PROCESSES * count,
            "{last}"
        );
    }

    // Nothing left behind: the tables and the kernel's per-process maps are back where an idle
    // run has them; per-binary maps hold this binary's two call paths at most.
    assert_eq!(
        summary["tracked_processes"]["processes"], baseline["tracked_processes"]["processes"],
        "{summary}"
    );
    assert_eq!(summary["tracked_processes"]["exiting"], 0, "{summary}");
    for map in PER_PROCESS_MAPS {
        assert_eq!(
            entries(summary, map),
            entries(&baseline, map),
            "map {map}: {}",
            summary["kernel_map_entries"]
        );
    }
    for map in ["call_sites", "fingerprints"] {
        assert!(
            entries(summary, map) <= entries(&baseline, map) + 2,
            "map {map}: {}",
            summary["kernel_map_entries"]
        );
    }
    // The summary stays bounded: live processes' totals plus the last exited ones, and the
    // largest SIGPIPE stories with a count per fate of all.
    assert!(summary["totals"].as_array().unwrap().len() <= 2 * 256);
    let fates = &summary["sigpipe_fates"];
    assert_eq!(fates["fates"]["ignored"], PROCESSES, "{fates}");
    assert!(summary["sigpipes"].as_array().unwrap().len() <= 20);
}

#[test]
fn text_says_how_many_processes_failed_at_the_same_call_path() {
    if !can_run::require(Need::Root) {
        return;
    }
    let writer = c_writer(false);
    let script = format!(
        "i=0; while [ $i -lt 50 ]; do {} 4 0 2>/dev/null || exit 1; i=$((i+1)); done",
        writer.to_str().unwrap()
    );
    let tracer = stdtrace::command(&["--color", "never", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting stdtrace");
    let output = stdtrace::wait_with_timeout(tracer, Duration::from_secs(120));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("50 processes of failing_writes- failed at the same call path: write("),
        "{text}"
    );
    assert_eq!(
        text.matches("failed writing").count().max(text.matches("EPIPE").count().min(1)),
        1,
        "one block for the call path, not one per process: {text}"
    );
}
