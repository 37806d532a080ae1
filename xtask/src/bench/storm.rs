//! 2. Storm: what stdtrace itself spends while writers fail as fast as they can.

use std::{
    fs,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    Paths, Scale,
    tracer::{Running, wait_for_line},
    write_path::loop_field,
};

/// A process's own CPU time so far (all its threads, not its children), in seconds.
pub(super) fn own_cpu_seconds(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which is in parentheses and may hold anything.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("/proc/PID/stat")?
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    let ticks: u64 = fields
        .get(11..13)
        .context("/proc/PID/stat")?
        .iter()
        .map(|field| field.parse::<u64>().unwrap_or(0))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / hz)
}

/// A `/proc/PID/status` figure in KiB (`VmHWM`, `VmRSS`).
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{field} in /proc/PID/status"))
}

/// A process's peak resident set so far, in KiB.
fn peak_rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmHWM")
}

/// A process's resident set now, in KiB.
pub(super) fn rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmRSS")
}

/// A `/proc/PID/smaps_rollup` figure in KiB (`Rss`, `Anonymous`).
fn rollup_kib(rollup: &str, field: &str) -> u64 {
    rollup
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Where a process's memory was at its largest resident set seen: sampled every 20 ms, and at
/// each new largest, its mappings' resident sizes by what they map.
#[derive(Default)]
struct PeakWatch {
    rss_kib: u64,
    anonymous_kib: u64,
    /// The largest resident mappings then, by name (`[heap]`, a file, `anon_inode:bpf-map`).
    largest: Vec<(String, u64)>,
}

fn watch_peak(pid: u32, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> PeakWatch {
    let mut peak = PeakWatch::default();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Ok(rollup) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            break;
        };
        let rss = rollup_kib(&rollup, "Rss");
        if rss > peak.rss_kib {
            peak.rss_kib = rss;
            peak.anonymous_kib = rollup_kib(&rollup, "Anonymous");
            if let Ok(smaps) = fs::read_to_string(format!("/proc/{pid}/smaps")) {
                peak.largest = by_mapping(&smaps);
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    peak
}

/// Resident KiB by what is mapped, largest first (the five largest).
fn by_mapping(smaps: &str) -> Vec<(String, u64)> {
    let mut sizes: std::collections::BTreeMap<String, u64> = Default::default();
    let mut name = String::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            name = words.nth(4).unwrap_or("[anonymous]").to_owned();
        } else if first == "Rss:" {
            *sizes.entry(name.clone()).or_default() +=
                words.next().and_then(|kib| kib.parse().ok()).unwrap_or(0);
        }
    }
    let mut sizes: Vec<(String, u64)> = sizes.into_iter().collect();
    sizes.sort_by_key(|(_, kib)| std::cmp::Reverse(*kib));
    sizes.truncate(5);
    sizes
}

/// Two writers failing as fast as they can, under stdtrace node-wide (as it runs in
/// production, and so that its CPU time is its own, not its children's).
pub(super) fn storm(paths: &Paths, scale: Scale) -> Result<Value> {
    let secs = scale.storm_secs;
    let json_path = paths.out.join("storm.json");
    let mut tracer = Command::new(&paths.stdtrace)
        .args(["--format", "json"])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&json_path)?)
        .stderr(Stdio::piped())
        .spawn()
        .context("starting stdtrace")?;
    let tracer_pid = tracer.id();
    let stderr = tracer.stderr.take().context("stderr")?;
    let running = Running {
        child: tracer,
        name: "stdtrace",
    };
    wait_for_line(stderr, "stdtrace: tracing")?;
    let rss_attached_kib = rss_kib(tracer_pid)?;
    let stop_watch = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = std::sync::Arc::clone(&stop_watch);
        thread::spawn(move || watch_peak(tracer_pid, stop))
    };
    let cpu_before = own_cpu_seconds(tracer_pid)?;
    let started = Instant::now();
    // One writer on each CPU: the storm takes the whole machine, stdtrace included.
    let writers: Vec<Child> = (0..2)
        .map(|cpu| {
            Command::new(&paths.write_loop)
                .args([cpu.to_string(), "storm".to_owned(), secs.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .context("starting a storm writer")
        })
        .collect::<Result<_>>()?;
    let mut writers_failed = 0;
    let mut writer_pids = Vec::new();
    for writer in writers {
        writer_pids.push(u64::from(writer.id()));
        let out = writer.wait_with_output()?;
        if !out.status.success() {
            bail!("a storm writer failed: {:?}", out.status);
        }
        writers_failed += loop_field(&String::from_utf8_lossy(&out.stdout), "failed")? as u64;
    }
    let storm_seconds = started.elapsed().as_secs_f64();
    // What stdtrace still does with the storm's events after the writers stop counts too: it
    // is asked to stop only once it has been idle a moment.
    thread::sleep(Duration::from_millis(1500));
    let cpu_seconds = own_cpu_seconds(tracer_pid)? - cpu_before;
    let peak_kib = peak_rss_kib(tracer_pid)?;
    stop_watch.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = watcher.join().unwrap_or_default();
    running.stop()?;
    let output = fs::read_to_string(&json_path)?;
    let summary: Value = output
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|record| record["type"] == "summary")
        .context("no summary from stdtrace")?;
    let records = output.lines().count().saturating_sub(1);
    let counted: u64 = summary["totals"]
        .as_array()
        .map(|totals| {
            totals
                .iter()
                .filter(|total| {
                    total["errno"] == "EPIPE"
                        && total["pid"]
                            .as_u64()
                            .is_some_and(|pid| writer_pids.contains(&pid))
                })
                .filter_map(|total| total["failures"].as_u64())
                .sum()
        })
        .unwrap_or(0);
    Ok(json!({
        "seconds": secs,
        "writers_failed": writers_failed,
        "summary_failed": counted,
        "exact": writers_failed == counted && counted > 0,
        "matched_per_second": counted as f64 / storm_seconds,
        "dropped": summary["dropped"],
        "reported": summary["reported"],
        "repeats": summary["repeats"],
        "records": records,
        "stdtrace_cpu_seconds": cpu_seconds,
        "stdtrace_cpu_percent_of_one_core": 100.0 * cpu_seconds / storm_seconds,
        "stdtrace_peak_rss_mib": peak_kib as f64 / 1024.0,
        "stdtrace_rss_attached_mib": rss_attached_kib as f64 / 1024.0,
        "sampled_peak": {
            "rss_mib": peak.rss_kib as f64 / 1024.0,
            "anonymous_mib": peak.anonymous_kib as f64 / 1024.0,
            "largest_mib": peak.largest.iter()
                .map(|(name, kib)| json!([name, *kib as f64 / 1024.0]))
                .collect::<Vec<_>>(),
        },
    }))
}
