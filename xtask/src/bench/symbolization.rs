//! 3. Symbolization: from a failed write to its fully named report, cold and warm.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{Paths, build_c, median};
use crate::{go, util};

/// Drops the page cache (cold runs).
fn drop_caches() -> Result<()> {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "3").context("dropping the page cache")
}

/// Monotonic clock, in nanoseconds: the clock of stdtrace's `ts_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Runs `stdtrace --format json -- COMMAND` and times its first `write_error` whose frames are
/// all named: (ms from the write to the report, ms from stdtrace's start to the report,
/// frames).
fn time_first_report(paths: &Paths, command: &[&str]) -> Result<(f64, f64, usize)> {
    let started = monotonic_ns();
    let mut child = Command::new(&paths.stdtrace)
        .args(["--format", "json", "--"])
        .args(command)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting stdtrace")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut found = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let arrived = monotonic_ns();
        let Ok(record) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if record["type"] != "write_error" || found.is_some() {
            continue;
        }
        let frames = record["stack"].as_array().cloned().unwrap_or_default();
        let named = !frames.is_empty() && frames.iter().all(|frame| frame["function"].is_string());
        if !named {
            bail!("the first report has unnamed frames: {line}");
        }
        let event = record["ts_ns"].as_u64().context("ts_ns")?;
        found = Some((
            arrived.saturating_sub(event) as f64 / 1e6,
            arrived.saturating_sub(started) as f64 / 1e6,
            frames.len(),
        ));
    }
    let _ = child.wait();
    found.context("stdtrace reported no failed write")
}

pub(super) fn symbolization(paths: &Paths) -> Result<Value> {
    let biggo = build_big_go(&paths.out)?;
    // A Rust binary with full DWARF: stdtrace's own debug build, made to write its version to a
    // broken pipe.
    util::run(util::cargo().args(["build", "--package", "stdtrace", "--bin", "stdtrace"]))?;
    let rust = util::workspace_root().join("target/debug/stdtrace");
    let broken = build_c(
        "fixtures/bench/broken_stdout.c",
        &paths.out.join("broken_stdout"),
    )?;
    let size_mib =
        |path: &Path| fs::metadata(path).map_or(0.0, |meta| meta.len() as f64 / 1048576.0);
    let mut results = Vec::new();
    let cases: [(&str, PathBuf, Vec<String>); 2] = [
        (
            "large stripped Go binary",
            biggo.clone(),
            vec![biggo.display().to_string()],
        ),
        (
            "Rust binary with full DWARF",
            rust.clone(),
            vec![
                broken.display().to_string(),
                rust.display().to_string(),
                "--version".to_owned(),
            ],
        ),
    ];
    for (what, binary, command) in cases {
        let command: Vec<&str> = command.iter().map(String::as_str).collect();
        drop_caches()?;
        let cold = time_first_report(paths, &command)?;
        let mut warm_after_event = Vec::new();
        let mut warm_from_start = Vec::new();
        for _ in 0..3 {
            let warm = time_first_report(paths, &command)?;
            warm_after_event.push(warm.0);
            warm_from_start.push(warm.1);
        }
        results.push(json!({
            "binary": what,
            "path": binary.display().to_string(),
            "size_mib": (size_mib(&binary) * 10.0).round() / 10.0,
            "frames": cold.2,
            "cold_after_event_ms": cold.0,
            "cold_from_start_ms": cold.1,
            "warm_after_event_ms": median(&mut warm_after_event),
            "warm_from_start_ms": median(&mut warm_from_start),
        }));
    }
    Ok(Value::Array(results))
}

/// Builds the large Go fixture (the standard library and 40000 generated functions, stripped)
/// with the newest Go toolchain, unless it is already built.
fn build_big_go(out: &Path) -> Result<PathBuf> {
    const FUNCTIONS: usize = 40_000;
    let dir = out.join("biggo");
    let binary = dir.join("biggo");
    let source = util::workspace_root().join("fixtures/bench/biggo");
    fs::create_dir_all(&dir)?;
    let main = fs::read(source.join("main.go"))?;
    let up_to_date = binary.exists()
        && fs::read(dir.join("main.go")).is_ok_and(|built| built == main)
        && fs::read_to_string(dir.join("functions")).is_ok_and(|n| n == FUNCTIONS.to_string());
    if up_to_date {
        return Ok(binary);
    }
    fs::write(dir.join("main.go"), &main)?;
    fs::copy(source.join("go.mod"), dir.join("go.mod"))?;
    let mut generated = String::from("// Generated by `cargo xtask bench`.\n\npackage main\n\n");
    for i in 0..FUNCTIONS {
        let _ = write!(
            generated,
            "//go:noinline\nfunc gen{i}(x int) int {{\n\tswitch x % 7 {{\n\tcase 0:\n\t\treturn x*{} + {i}\n\tcase 1:\n\t\treturn x ^ {}\n\tcase 2:\n\t\treturn (x << 3) - {i}\n\tcase 3:\n\t\treturn x/{} + {}\n\t}}\n\treturn x + {i}\n}}\n\n",
            i + 3,
            i * 7 + 1,
            i % 13 + 1,
            i * 5
        );
    }
    generated.push_str("var generated = []func(int) int{\n");
    for i in 0..FUNCTIONS {
        let _ = writeln!(generated, "\tgen{i},");
    }
    generated.push_str("}\n");
    fs::write(dir.join("gen.go"), generated)?;
    let toolchain = go::bench_toolchain()?;
    eprintln!("xtask: building the large Go fixture (about half a minute)");
    util::run(
        go::go_command(&toolchain.go)
            .current_dir(&dir)
            .env("CGO_ENABLED", "0")
            .args(["build", "-buildvcs=false", "-ldflags=-s -w", "-o"])
            .arg(&binary)
            .arg("."),
    )?;
    fs::write(dir.join("functions"), FUNCTIONS.to_string())?;
    Ok(binary)
}
