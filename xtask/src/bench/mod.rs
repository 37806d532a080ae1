//! `cargo xtask bench [--quick]`: what stdtrace costs, measured against a floor and a peer.
//!
//! 1. Write path: a loop of one-byte writes pinned to one CPU, under no tracer, the floor (a
//!    program on the same hook that only checks the return value), stdtrace node-wide with its
//!    defaults, bpftrace's one-liner, and the same two on the raw `sys_exit` hook; for writes
//!    that succeed, an all-EPIPE storm, and a mix of writes and other syscalls. Interleaved
//!    (every configuration once per round, round after round) so that machine drift cancels;
//!    the figure is the median over rounds of each round's difference with no tracer.
//! 2. Storm: two processes failing writes as fast as they can under stdtrace.
//! 3. Symbolization: from a write to its fully named report, for a large stripped Go binary
//!    and a Rust binary with full DWARF, with the page cache dropped and warm.
//! 4. Start-up: from launch to attached.
//! 5. Snapshot: `stdtrace snapshot` node-wide on ~300 processes, and a 10,000-goroutine dump.
//! 6. Soak: node-wide under ~1,000 short-lived failing processes a second, 10 minutes.
//! 7. Report: `stdtrace report` of a 100 MiB recording.
//!
//! `--only write,storm,...` runs some parts (`programs`: only the write path's programs' own
//! time, which `write` measures too); `--writes N` and `--rounds N` make the write path
//! longer (a 10 ns difference needs millions of writes per run and more rounds on a busy
//! machine). The report gives the load average before and after each part.
//!
//! The report goes to stdout and to `target/bench/report.md`, the figures to
//! `target/bench/report.json`.

mod recording;
mod report;
mod snapshot;
mod soak;
mod startup;
mod storm;
mod symbolization;
mod tracer;
mod write_path;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Instant,
};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::{setup, util};

use self::{
    recording::report_of_recording,
    report::markdown,
    snapshot::snapshot,
    soak::soak,
    startup::startup,
    storm::storm,
    symbolization::symbolization,
    write_path::{program_time, write_path},
};

/// The parts, by the names `--only` takes.
pub const PARTS: [&str; 8] = [
    "write",
    "programs",
    "storm",
    "symbolization",
    "startup",
    "snapshot",
    "soak",
    "report",
];

/// What `cargo xtask bench` was asked for.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub quick: bool,
    /// Parts to run (all when empty).
    pub only: Vec<String>,
    /// Writes per run of the good-write and mixed loads, instead of the scale's.
    pub writes: Option<u64>,
    /// Rounds of the write path, instead of the scale's.
    pub rounds: Option<usize>,
    /// Skip the set-up (already done).
    pub no_setup: bool,
}

/// The CPU the loads are pinned to. bpftrace samples its tracepoint on CPU 0 (perf's default
/// for its probe), which costs it extra there: the loads run on CPU 1.
const LOAD_CPU: u32 = 1;

/// How big the benchmark is.
#[derive(Clone, Copy, Debug)]
struct Scale {
    rounds: usize,
    /// Writes per run of the good-write and mixed loads.
    writes: u64,
    /// Writes per run of the EPIPE load (each costs more).
    epipe_writes: u64,
    storm_secs: u64,
    startup_runs: usize,
    soak_secs: u64,
    /// How often the soak's RSS is read.
    soak_sample_secs: u64,
}

const FULL: Scale = Scale {
    rounds: 7,
    writes: 2_000_000,
    epipe_writes: 500_000,
    storm_secs: 10,
    startup_runs: 7,
    soak_secs: 600,
    soak_sample_secs: 60,
};

const QUICK: Scale = Scale {
    rounds: 5,
    writes: 200_000,
    epipe_writes: 50_000,
    storm_secs: 3,
    startup_runs: 5,
    soak_secs: 60,
    soak_sample_secs: 10,
};

struct Paths {
    stdtrace: PathBuf,
    floor: PathBuf,
    write_loop: PathBuf,
    out: PathBuf,
}

/// The load average (1, 5, 15 minutes) now.
fn load_average() -> Value {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let figures: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|figure| figure.parse().ok())
        .collect();
    json!(figures)
}

pub fn run(options: Options) -> Result<()> {
    if !util::is_root() {
        bail!("the benchmark loads kernel programs: run it as root (sudo -E cargo xtask bench)");
    }
    for part in &options.only {
        if !PARTS.contains(&part.as_str()) {
            bail!("no bench part {part:?}; the parts are {}", PARTS.join(", "));
        }
    }
    let wants = |part: &str| options.only.is_empty() || options.only.iter().any(|p| p == part);
    if !options.no_setup {
        setup::for_tests()?;
    }
    let quick = options.quick;
    let mut scale = if quick { QUICK } else { FULL };
    if let Some(writes) = options.writes {
        scale.writes = writes;
    }
    if let Some(rounds) = options.rounds {
        scale.rounds = rounds;
    }
    let stdtrace = util::build_release()?;
    let out = util::workspace_root().join("target/bench");
    fs::create_dir_all(&out)?;
    let paths = Paths {
        floor: stdtrace.with_file_name("stdtrace-floor"),
        stdtrace,
        write_loop: build_c("fixtures/bench/write_loop.c", &out.join("write_loop"))?,
        out,
    };
    let started = Instant::now();

    let machine = machine();
    let mut report = json!({
        "machine": machine,
        "quick": quick,
        "scale": {"rounds": scale.rounds, "writes": scale.writes,
                  "epipe_writes": scale.epipe_writes, "storm_secs": scale.storm_secs,
                  "soak_secs": scale.soak_secs},
        "load_cpu": LOAD_CPU,
        "ring_buffer": "4MiB (default)",
    });
    let mut loads = serde_json::Map::new();
    let mut part = |name: &str, what: &str, run: &mut dyn FnMut() -> Result<Value>| -> Result<()> {
        if !wants(name) {
            return Ok(());
        }
        eprintln!("xtask: bench {name}: {what}");
        let before = load_average();
        let figures = run()?;
        loads.insert(
            name.to_owned(),
            json!({"before": before, "after": load_average()}),
        );
        report[name] = figures;
        Ok(())
    };
    part(
        "write",
        &format!("write path ({} rounds)", scale.rounds),
        &mut || {
            let mut figures = write_path(&paths, scale)?;
            figures["program_time"] = program_time(&paths, scale)?;
            Ok(figures)
        },
    )?;
    if !wants("write") {
        part(
            "programs",
            "the programs' own time per write and send",
            &mut || program_time(&paths, scale),
        )?;
    }
    part(
        "storm",
        &format!("storm ({} s)", scale.storm_secs),
        &mut || storm(&paths, scale),
    )?;
    part("symbolization", "symbolization", &mut || {
        symbolization(&paths)
    })?;
    part("startup", "start-up", &mut || startup(&paths, scale))?;
    part("snapshot", "snapshot", &mut || snapshot(&paths))?;
    part(
        "soak",
        &format!("soak ({} s)", scale.soak_secs),
        &mut || soak(&paths, scale.soak_secs, scale.soak_sample_secs),
    )?;
    part("report", "report of a 100 MiB recording", &mut || {
        report_of_recording(&paths)
    })?;
    report["load_average"] = Value::Object(loads);
    report["bench_seconds"] = json!(started.elapsed().as_secs_f64());
    let markdown = markdown(&report);
    fs::write(paths.out.join("report.md"), &markdown)?;
    fs::write(
        paths.out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    println!("{markdown}");
    eprintln!(
        "xtask: bench done in {:.0} s; report in {}",
        started.elapsed().as_secs_f64(),
        paths.out.join("report.md").display()
    );
    Ok(())
}

fn build_c(source: &str, out: &Path) -> Result<PathBuf> {
    util::run(
        Command::new("gcc")
            .args(["-O2", "-g", "-o"])
            .arg(out)
            .arg(util::workspace_root().join(source)),
    )?;
    Ok(out.to_path_buf())
}

/// What the figures were measured on.
fn machine() -> Value {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|name| name.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|release| release.trim().to_owned())
        .unwrap_or_default();
    let memory_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("MemTotal:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / (1024.0 * 1024.0));
    let bpftrace = util::output(Command::new("bpftrace").arg("--version"))
        .map(|version| version.trim().to_owned())
        .unwrap_or_default();
    json!({"cpu": cpu, "cpus": cpus, "kernel": kernel, "memory_gib": memory_gib.round(),
           "bpftrace": bpftrace})
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}
