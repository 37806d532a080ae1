//! The tracer end to end, as root: the real kernel programs, real fixture programs, exact
//! counts, fds, targets, peers and function names, in launch, `--pid` and node-wide mode.

#[path = "support/can_run.rs"]
mod can_run;
#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "tracer/launch.rs"]
mod launch;
#[path = "tracer/output.rs"]
mod output;
#[path = "support/stdtrace.rs"]
mod stdtrace;
#[path = "tracer/targets.rs"]
mod targets;

use std::path::PathBuf;

use serde_json::Value;
use stdtrace::{assert_calls, field, write_errors};

const EPIPES: usize = 5;
const EAGAINS: usize = 3;

/// The C writer, with frame pointers or without.
fn c_writer(frame_pointers: bool) -> PathBuf {
    if frame_pointers {
        fixtures::build_c(
            "writers/failing_writes.c",
            "failing_writes-fp",
            &["-O1", "-g", "-fno-omit-frame-pointer"],
        )
    } else {
        fixtures::build_c(
            "writers/failing_writes.c",
            "failing_writes-nofp",
            &["-O1", "-g", "-fomit-frame-pointer"],
        )
    }
}

/// What the fixture said about itself on stderr.
struct Announced {
    pid: u32,
    epipe_fd: u32,
    eagain_fd: u32,
}

fn announced(stderr: &str, prefix: &str) -> Announced {
    let line = stderr
        .lines()
        .find(|line| line.starts_with(prefix) && line.contains("pid="))
        .unwrap_or_else(|| panic!("the fixture did not announce itself: {stderr}"));
    Announced {
        pid: field(line, "pid"),
        epipe_fd: field(line, "epipe_fd"),
        eagain_fd: field(line, "eagain_fd"),
    }
}

/// Whether the fixture was still running when stdtrace looked for who holds its pipes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Peers {
    /// Kept alive until stdtrace had reported: the holders are named.
    Alive,
    /// Exited at once: only the kernel's counts of open ends are certain.
    Gone,
}

/// Whether the run can be expected to drop nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Drops {
    /// Only the fixture is traced: nothing may be dropped.
    None,
    /// Node-wide: other processes' failures on a busy machine may overflow the ring buffer.
    /// The fixture's totals are counted in the kernel and stay exact regardless.
    Elsewhere,
}

/// Checks the failed writes of one fixture run: exact counts per errno, the fds, the target,
/// the peers, and who called `write`.
fn check_failed_writes(
    records: &[Value],
    fixture: &Announced,
    epipe_callers: [&str; 2],
    eagain_callers: [&str; 2],
    peers: Peers,
    drops: Drops,
) {
    let errors = write_errors(records, fixture.pid);
    let epipe: Vec<&Value> = errors
        .iter()
        .copied()
        .filter(|r| r["errno"] == "EPIPE")
        .collect();
    let eagain: Vec<&Value> = errors
        .iter()
        .copied()
        .filter(|r| r["errno"] == "EAGAIN")
        .collect();
    // Each phase fails at one call path: its first failure is reported in full, the rest are
    // counted as repeats of its site.
    assert_eq!(epipe.len(), 1, "EPIPE events: {errors:#?}");
    assert_eq!(eagain.len(), 1, "EAGAIN events: {errors:#?}");
    assert_eq!(errors.len(), 2);
    assert_repeats(records, epipe[0], EPIPES as u64 - 1);
    assert_repeats(records, eagain[0], EAGAINS as u64 - 1);
    for record in &epipe {
        assert_eq!(record["fd"], fixture.epipe_fd, "{record}");
        assert_eq!(record["syscall"], "write");
        assert_eq!(record["count"], 1);
        assert_eq!(record["tid"], fixture.pid);
        assert_eq!(record["target"]["kind"], "pipe", "{record}");
        assert_eq!(record["target"]["nonblocking"], false, "{record}");
        // The read end was closed: nobody can read, which is why the write failed.
        assert_eq!(record["target"]["read_ends"], 0, "{record}");
        assert_eq!(record["target"]["write_ends"], 1, "{record}");
        assert_eq!(
            record["target"]["readers"],
            serde_json::json!([]),
            "{record}"
        );
        if peers == Peers::Alive {
            let writers = record["target"]["writers"].as_array().expect("writers");
            assert_eq!(writers.len(), 1, "{record}");
            assert_eq!(writers[0]["pid"], fixture.pid, "{record}");
            assert_eq!(
                writers[0]["fds"],
                serde_json::json!([fixture.epipe_fd]),
                "{record}"
            );
        }
        assert_calls(record, "write", epipe_callers[0]);
        assert_calls(record, epipe_callers[0], epipe_callers[1]);
    }
    for record in &eagain {
        assert_eq!(record["fd"], fixture.eagain_fd, "{record}");
        assert_eq!(record["count"], 1);
        assert_eq!(record["target"]["kind"], "pipe", "{record}");
        assert_eq!(record["target"]["nonblocking"], true, "{record}");
        // The fixture holds the read end of its full pipe itself and never reads it.
        assert_eq!(record["target"]["read_ends"], 1, "{record}");
        assert_eq!(record["target"]["write_ends"], 1, "{record}");
        if peers == Peers::Alive {
            let readers = record["target"]["readers"].as_array().expect("readers");
            assert_eq!(readers.len(), 1, "{record}");
            assert_eq!(readers[0]["pid"], fixture.pid, "{record}");
            assert_eq!(readers[0]["comm"], record["comm"], "{record}");
        }
        assert_calls(record, "write", eagain_callers[0]);
        assert_calls(record, eagain_callers[0], eagain_callers[1]);
    }
    let summary = records.last().expect("some output");
    assert_eq!(summary["type"], "summary", "the last line is the summary");
    let totals: Vec<&Value> = summary["totals"]
        .as_array()
        .expect("totals")
        .iter()
        .filter(|total| total["pid"] == fixture.pid)
        .collect();
    assert_eq!(totals.len(), 2, "{totals:#?}");
    let total = |errno: &str, fd: u32| {
        totals
            .iter()
            .find(|total| total["errno"] == errno && total["fd"] == fd)
            .map(|total| total["failures"].as_u64().unwrap_or(0))
            .unwrap_or(0)
    };
    assert_eq!(total("EPIPE", fixture.epipe_fd), EPIPES as u64);
    assert_eq!(total("EAGAIN", fixture.eagain_fd), EAGAINS as u64);
    if drops == Drops::None {
        assert_eq!(summary["dropped"], 0, "{summary}");
        assert_eq!(summary["kernel"]["parked_full"], 0, "{summary}");
    }
}

/// The failures repeated at `first`'s call site (its pid, fd, errno and site), as the last
/// `repeats` record for it says, are `expected`.
fn assert_repeats(records: &[Value], first: &Value, expected: u64) {
    let site = first["site"].as_u64().expect("a write_error has a site");
    let repeats: Vec<&Value> = records
        .iter()
        .filter(|record| {
            record["type"] == "repeats"
                && record["pid"] == first["pid"]
                && record["fd"] == first["fd"]
                && record["errno"] == first["errno"]
                && record["site"] == site
        })
        .collect();
    let counted = repeats
        .last()
        .map_or(0, |record| record["count"].as_u64().unwrap());
    assert_eq!(counted, expected, "repeats of {first}: {repeats:#?}");
    if let Some(last) = repeats.last() {
        let first_ts = last["first_ts_ns"].as_u64().unwrap();
        let last_ts = last["last_ts_ns"].as_u64().unwrap();
        let reported_ts = first["ts_ns"].as_u64().unwrap();
        assert!(
            reported_ts <= first_ts && first_ts <= last_ts,
            "repeat times {first_ts}..{last_ts} after the first at {reported_ts}"
        );
    }
}

const C_CALLERS: ([&str; 2], [&str; 2]) = (
    ["emit_epipe", "run_epipe_phase"],
    ["emit_eagain", "run_eagain_phase"],
);
