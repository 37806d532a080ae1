//! 6. Soak: stdtrace node-wide while ~1,000 short-lived processes a second each fail writes
//!    from their own new pid (EPIPE and EAGAIN; some block writing for a second; a Go one
//!    among them), for 10 minutes (`--quick`: 1). Its RSS is read at every sample (every
//!    minute; every 10 s with `--quick`), its CPU time over the churn, and at the end the
//!    summary's drops and totals against the processes' own counts.

use std::{
    fs,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    Paths, build_c,
    storm::{own_cpu_seconds, rss_kib},
    tracer::{Running, wait_for_line},
    write_path::loop_field,
};
use crate::util;

/// Processes started a second.
const RATE: u64 = 1000;
/// Writes each process fails with EPIPE, and with EAGAIN.
const EPIPE_PER_PROCESS: u64 = 20;
const EAGAIN_PER_PROCESS: u64 = 10;
/// One process in this many also blocks writing for a second.
const BLOCK_EVERY: u64 = 200;

pub(super) fn soak(paths: &Paths, secs: u64, sample_secs: u64) -> Result<Value> {
    let churn = build_c("fixtures/bench/soak_churn.c", &paths.out.join("soak_churn"))?;
    let go_writer = util::workspace_root().join("target/fixtures/go/1.25.5/default/writer");
    if !go_writer.exists() {
        bail!(
            "{} is missing (cargo xtask go-fixtures): the soak runs a Go writer",
            go_writer.display()
        );
    }
    let json_path = paths.out.join("soak.json");
    let mut tracer = Command::new(&paths.stdtrace)
        .args(["--format", "json"])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&json_path)?)
        .stderr(Stdio::piped())
        .spawn()
        .context("starting stdtrace")?;
    let pid = tracer.id();
    let stderr = tracer.stderr.take().context("stderr")?;
    let running = Running {
        child: tracer,
        name: "stdtrace",
    };
    wait_for_line(stderr, "stdtrace: tracing")?;
    let rss_start_kib = rss_kib(pid)?;
    let cpu_before = own_cpu_seconds(pid)?;
    let started = Instant::now();
    let churner = Command::new(&churn)
        .args([
            RATE.to_string(),
            secs.to_string(),
            EPIPE_PER_PROCESS.to_string(),
            EAGAIN_PER_PROCESS.to_string(),
            BLOCK_EVERY.to_string(),
        ])
        .arg(&go_writer)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the churn")?;
    let mut curve = vec![json!({"seconds": 0, "rss_mib": rss_start_kib as f64 / 1024.0})];
    let mut next = sample_secs;
    while next <= secs {
        let due = started + Duration::from_secs(next);
        thread::sleep(due.saturating_duration_since(Instant::now()));
        curve.push(json!({"seconds": next, "rss_mib": rss_kib(pid)? as f64 / 1024.0}));
        next += sample_secs;
    }
    let out = churner.wait_with_output()?;
    if !out.status.success() {
        bail!("the churn failed: {:?}", out.status);
    }
    let churn_seconds = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // What stdtrace does with the churn's last events counts too.
    thread::sleep(Duration::from_secs(3));
    let cpu_seconds = own_cpu_seconds(pid)? - cpu_before;
    let rss_end_kib = rss_kib(pid)?;
    curve.push(
        json!({"seconds": started.elapsed().as_secs(), "rss_mib": rss_end_kib as f64 / 1024.0,
                      "after_churn": true}),
    );
    running.stop()?;

    let output = fs::read_to_string(&json_path)?;
    let summary: Value = output
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|record| record["type"] == "summary")
        .context("no summary from stdtrace")?;
    let own = |key: &str| loop_field(&text, key).map(|value| value as u64);
    let (epipe, eagain) = (own("epipe")?, own("eagain")?);
    let churn_binary = fs::canonicalize(&churn)?;
    // The churn's own processes in the summary's per-process totals (bounded to live
    // processes once the per-binary totals have landed) and per-binary totals (if present).
    let by_pid = |errno: &str| -> u64 {
        summary["totals"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|total| total["comm"] == "soak_churn" && total["errno"] == errno)
            .filter_map(|total| total["failures"].as_u64())
            .sum()
    };
    let by_binary = summary.get("totals_by_binary").map(|totals| {
        let ours = |errno: &str| -> u64 {
            totals
                .as_array()
                .into_iter()
                .flatten()
                .filter(|total| {
                    total["errno"] == errno
                        && total["binary"]
                            .as_str()
                            .or_else(|| total["path"].as_str())
                            .is_some_and(|path| path == churn_binary.to_string_lossy())
                })
                .filter_map(|total| total["failures"].as_u64())
                .sum()
        };
        json!({"epipe": ours("EPIPE"), "eagain": ours("EAGAIN"), "raw": totals})
    });
    let first_minute = curve
        .iter()
        .find(|point| point["seconds"].as_u64() >= Some(60.min(secs)))
        .and_then(|point| point["rss_mib"].as_f64());
    let failed = summary["failed_writes"].as_u64().unwrap_or(0);
    let dropped = summary["dropped"].as_u64().unwrap_or(0);
    let lifecycle_dropped = summary["kernel"]["lifecycle_dropped"].as_u64().unwrap_or(0);
    let spawned = own("spawned")?;
    Ok(json!({
        "seconds": secs,
        "churn": text.trim(),
        "processes_per_second": spawned as f64 / churn_seconds,
        "own_epipe": epipe,
        "own_eagain": eagain,
        "own_ok": own("ok")?,
        "spawned": spawned,
        "go_runs": own("go_runs")?,
        "go_ok": own("go_ok")?,
        "summary_failed_writes": failed,
        "summary_pid_totals": {"epipe": by_pid("EPIPE"), "eagain": by_pid("EAGAIN")},
        "summary_binary_totals": by_binary,
        "tracked_processes": summary.get("tracked_processes"),
        "dropped": dropped,
        "dropped_share": dropped as f64 / failed.max(1) as f64,
        "lifecycle_dropped": lifecycle_dropped,
        "lifecycle_dropped_share": lifecycle_dropped as f64 / (3 * spawned).max(1) as f64,
        "tally_full": summary["kernel"]["tally_full"],
        "stdtrace_cpu_percent_of_one_core": 100.0 * cpu_seconds / churn_seconds,
        "rss_mib": curve,
        "rss_growth_after_first_minute_mib": first_minute
            .map(|first| rss_end_kib as f64 / 1024.0 - first),
    }))
}
