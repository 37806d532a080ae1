//! 5. Snapshot: `stdtrace snapshot` node-wide on a host with about 300 processes (one of
//!    them a writer stuck on a full pipe), and `--goroutines` of a Go program with 10,000
//!    goroutines.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{Paths, build_c, median};
use crate::util;

/// Processes on the host during the node-wide snapshot, at least.
const HOST_PROCESSES: usize = 300;
/// Goroutines of the dump.
const GOROUTINES: &str = "10000";
const RUNS: usize = 5;

/// Children killed by pid when the benchmark is done with them.
struct Started(Vec<Child>);

impl Drop for Started {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn processes_now() -> usize {
    std::fs::read_dir("/proc").map_or(0, |entries| {
        entries
            .flatten()
            .filter(|entry| {
                entry
                    .file_name()
                    .to_str()
                    .is_some_and(|name| name.parse::<u32>().is_ok())
            })
            .count()
    })
}

/// Times `stdtrace snapshot ARGS` (JSON to a pipe), `RUNS` times; returns the runs in ms and
/// the last run's summary.
fn time_snapshot(paths: &Paths, args: &[&str]) -> Result<(Vec<f64>, Value)> {
    let mut runs = Vec::new();
    let mut summary = Value::Null;
    for _ in 0..RUNS {
        let started = Instant::now();
        let output = Command::new(&paths.stdtrace)
            .arg("snapshot")
            .args(["--format", "json"])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .context("running stdtrace snapshot")?;
        runs.push(started.elapsed().as_secs_f64() * 1000.0);
        if output.status.code() == Some(2) {
            bail!("stdtrace snapshot failed");
        }
        let text = String::from_utf8_lossy(&output.stdout);
        summary = text
            .lines()
            .last()
            .and_then(|line| serde_json::from_str(line).ok())
            .unwrap_or(Value::Null);
    }
    Ok((runs, summary))
}

pub(super) fn snapshot(paths: &Paths) -> Result<Value> {
    let mut started = Started(Vec::new());
    // One writer stuck on a full pipe, so that the snapshot has something to name.
    let writer = build_c(
        "fixtures/writers/blocked_writer.c",
        &paths.out.join("blocked_writer"),
    )?;
    let mut reader = Command::new("sleep")
        .arg("600")
        .stdin(Stdio::piped())
        .spawn()?;
    let pipe = reader.stdin.take().context("the reader's stdin")?;
    started.0.push(reader);
    started.0.push(
        Command::new(&writer)
            .stdout(Stdio::from(pipe))
            .stderr(Stdio::null())
            .spawn()?,
    );
    while processes_now() < HOST_PROCESSES {
        started.0.push(
            Command::new("sleep")
                .arg("600")
                .stdout(Stdio::null())
                .spawn()?,
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let processes = processes_now();
    let (mut node_runs, node_summary) = time_snapshot(paths, &[])?;
    let node_runs_copy = node_runs.clone();
    drop(started);

    let manyblocked = util::workspace_root().join("target/fixtures/go/1.25.5/default/manyblocked");
    let dump = if manyblocked.exists() {
        let mut child = Command::new(&manyblocked)
            .arg(GOROUTINES)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().context("manyblocked's stderr")?;
        let pid = child.id().to_string();
        let _held = Started(vec![child]);
        // Until every goroutine exists; then the rest of stderr is drained in the background
        // (its progress counter must not block on a full pipe).
        let mut lines = BufReader::new(stderr).lines();
        for line in lines.by_ref() {
            if line?.starts_with("ready goroutines=") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        std::thread::sleep(Duration::from_millis(300));
        let (mut runs, summary) = time_snapshot(paths, &["--pid", &pid, "--goroutines"])?;
        let copy = runs.clone();
        json!({"goroutines": summary["goroutines"], "median_ms": median(&mut runs),
               "runs_ms": copy})
    } else {
        eprintln!(
            "xtask: {} is missing (cargo xtask go-fixtures): no goroutine dump",
            manyblocked.display()
        );
        Value::Null
    };
    Ok(json!({
        "node_wide": {"processes": processes, "looked_at": node_summary["processes"],
                      "blocked_writes": node_summary["blocked_writes"],
                      "median_ms": median(&mut node_runs), "runs_ms": node_runs_copy},
        "goroutine_dump": dump,
    }))
}
