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
fn own_cpu_seconds(pid: u32) -> Result<f64> {
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

/// A process's peak resident set so far, in KiB.
fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM in /proc/PID/status")
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
    let rss_kib = peak_rss_kib(tracer_pid)?;
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
        "stdtrace_peak_rss_mib": rss_kib as f64 / 1024.0,
    }))
}
