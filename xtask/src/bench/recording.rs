//! 7. Report of a recording: `stdtrace report` of a 100 MiB recording, text and JSON.
//!
//! The recording is made by `stdtrace record` of a churn of short-lived failing writers (a
//! few seconds), whose records are then repeated, between its header and its summary, until
//! the file holds 100 MiB.

use std::{
    fs,
    io::{BufWriter, Write as _},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{Paths, build_c, median};

const TARGET_BYTES: u64 = 100 << 20;
const RUNS: usize = 3;

/// Runs `command` to its end; returns its wall time in ms and its peak RSS in MiB.
fn timed(command: &mut Command) -> Result<(f64, f64)> {
    let started = Instant::now();
    let child = command.spawn().context("starting stdtrace report")?;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child by its pid, with valid pointers.
    let waited = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if waited < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("stdtrace report failed (status {status:#x})");
    }
    Ok((ms, usage.ru_maxrss as f64 / 1024.0))
}

pub(super) fn report_of_recording(paths: &Paths) -> Result<Value> {
    let churn = build_c("fixtures/bench/soak_churn.c", &paths.out.join("soak_churn"))?;
    let dir = paths.out.join("recording");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let status = Command::new(&paths.stdtrace)
        .args(["record", "-q", "--output"])
        .arg(&dir)
        .arg("--")
        .arg(&churn)
        .args(["200", "3", "3", "2", "100"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running stdtrace record")?;
    if !status.success() {
        bail!("stdtrace record failed: {status}");
    }
    let recorded = fs::read_dir(&dir)?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .context("stdtrace record wrote no file")?;
    let text = fs::read_to_string(&recorded)?;
    let lines: Vec<&str> = text.lines().collect();
    let (Some(header), Some(summary)) = (lines.first(), lines.last()) else {
        bail!("an empty recording");
    };
    let body = &lines[1..lines.len().saturating_sub(1)];
    if body.is_empty() {
        bail!("the recording holds no record");
    }
    let big = paths.out.join("recording-100MiB.jsonl");
    let mut out = BufWriter::new(fs::File::create(&big)?);
    writeln!(out, "{header}")?;
    let mut bytes = header.len() as u64 + 1;
    let mut records = 0u64;
    'fill: loop {
        for line in body {
            writeln!(out, "{line}")?;
            bytes += line.len() as u64 + 1;
            records += 1;
            if bytes >= TARGET_BYTES {
                break 'fill;
            }
        }
    }
    writeln!(out, "{summary}")?;
    out.flush()?;
    drop(out);

    let mut figures = serde_json::Map::new();
    for format in ["text", "json"] {
        let mut runs = Vec::new();
        let mut peak: f64 = 0.0;
        for _ in 0..RUNS {
            let (ms, rss) = timed(
                Command::new(&paths.stdtrace)
                    .args(["report", "--color", "never", "--format", format])
                    .arg(&big)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )?;
            runs.push(ms);
            peak = peak.max(rss);
        }
        let copy = runs.clone();
        figures.insert(
            format.to_owned(),
            json!({"median_ms": median(&mut runs), "runs_ms": copy, "peak_rss_mib": peak}),
        );
    }
    let size = fs::metadata(&big)?.len();
    fs::remove_file(&big)?;
    Ok(json!({
        "file_mib": size as f64 / (1024.0 * 1024.0),
        "records": records,
        "recorded_records": body.len(),
        "report": Value::Object(figures),
    }))
}
