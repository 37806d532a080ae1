//! 1. Write path: what each tracer adds to a write, interleaved round after round.

use std::{
    fs,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    LOAD_CPU, Paths, Scale, median,
    tracer::{Tracer, start},
};

/// A load of the write-path benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Load {
    /// Writes that succeed, to /dev/null.
    Good,
    /// Writes that all fail with EPIPE.
    Epipe,
    /// One write to /dev/null in ten syscalls.
    Mixed,
    /// One-byte sends on a unix socketpair that succeed (each read back by the same thread).
    SendGood,
    /// Sends that all fail with EPIPE.
    SendEpipe,
}

impl Load {
    pub(super) const ALL: [Load; 5] = [
        Load::Good,
        Load::Epipe,
        Load::Mixed,
        Load::SendGood,
        Load::SendEpipe,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Load::Good => "writes that succeed (ns per write)",
            Load::Epipe => "all-EPIPE storm (ns per write)",
            Load::Mixed => "1 write in 10 syscalls (ns per syscall)",
            Load::SendGood => "sends that succeed (ns per send, recv included)",
            Load::SendEpipe => "all-EPIPE send storm (ns per send)",
        }
    }

    pub(super) fn key(self) -> &'static str {
        match self {
            Load::Good => "good",
            Load::Epipe => "epipe",
            Load::Mixed => "mixed",
            Load::SendGood => "send_good",
            Load::SendEpipe => "send_epipe",
        }
    }
}

/// One run of the write loop: ns per op and ops that failed.
fn run_loop(paths: &Paths, cpu: i64, mode: &str, count: u64) -> Result<(f64, u64, u64)> {
    let out = Command::new(&paths.write_loop)
        .args([cpu.to_string(), mode.to_owned(), count.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .context("running the write loop")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("write_loop {mode} {count}: {} {text}", out.status);
    }
    Ok((
        loop_field(&text, "ns_per_op")?,
        loop_field(&text, "ops")? as u64,
        loop_field(&text, "failed")? as u64,
    ))
}

/// A figure of the write loop's line (`ns_per_op=143.21 ops=2000000 failed=0`).
pub(super) fn loop_field(text: &str, key: &str) -> Result<f64> {
    text.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        .and_then(|value| value.parse::<f64>().ok())
        .with_context(|| format!("no {key}= in {text:?}"))
}

/// The first and third quartiles of `values`.
fn quartiles(values: &[f64]) -> (f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if sorted.is_empty() {
            return f64::NAN;
        }
        let position = q * (sorted.len() - 1) as f64;
        let (below, above) = (position.floor() as usize, position.ceil() as usize);
        sorted[below] + (sorted[above] - sorted[below]) * (position - below as f64)
    };
    (at(0.25), at(0.75))
}

/// The programs' own time per run on the good-write and good-send loads, for the floor and
/// stdtrace: `kernel.bpf_stats_enabled` for the length of one loop (the stats add their own
/// cost, the same to both, to every run: only the difference is the programs'). Unlike the
/// loop's wall time it does not move with the machine's load.
pub(super) fn program_time(paths: &Paths, scale: Scale) -> Result<Value> {
    let mut figures = serde_json::Map::new();
    // (tracer, (loop mode, load key, program) for each load)
    let cases = [
        (
            Tracer::Floor,
            [
                ("devnull", Load::Good, "floor_exit_write"),
                ("sendgood", Load::SendGood, "floor_exit_write"),
            ],
        ),
        (
            Tracer::Stdtrace,
            [
                ("devnull", Load::Good, "sys_exit_write"),
                ("sendgood", Load::SendGood, "sys_exit_sendto"),
            ],
        ),
    ];
    for (tracer, loads) in cases {
        let before = bpf_programs()?;
        let running = start(paths, tracer)?;
        let new: Vec<(u64, String)> = bpf_programs()?
            .into_iter()
            .filter(|(id, _)| !before.iter().any(|(old, _)| old == id))
            .collect();
        let mut by_load = serde_json::Map::new();
        for (mode, load, program) in loads {
            // The kernel keeps 15 characters of a program's name.
            let ids: Vec<u64> = new
                .iter()
                .filter(|(_, name)| program.starts_with(name.as_str()))
                .map(|(id, _)| *id)
                .collect();
            let mut rounds = Vec::new();
            for _ in 0..scale.rounds {
                fs::write("/proc/sys/kernel/bpf_stats_enabled", "1")?;
                let first = program_stats(&ids);
                let run = run_loop(paths, i64::from(LOAD_CPU), mode, scale.writes);
                let last = program_stats(&ids);
                fs::write("/proc/sys/kernel/bpf_stats_enabled", "0")?;
                run?;
                let (first, last) = (first?, last?);
                let runs = last.1.saturating_sub(first.1).max(1);
                rounds.push(last.0.saturating_sub(first.0) as f64 / runs as f64);
            }
            let copy = rounds.clone();
            by_load.insert(
                load.key().to_owned(),
                json!({"program": program, "ns_per_run": median(&mut rounds), "rounds": copy}),
            );
        }
        if let Some(running) = running {
            running.stop()?;
        }
        figures.insert(tracer.name().to_owned(), Value::Object(by_load));
    }
    Ok(Value::Object(figures))
}

/// The kernel's programs now: (id, name as the kernel keeps it, 15 characters at most).
fn bpf_programs() -> Result<Vec<(u64, String)>> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .context("running bpftool")?;
    let programs: Value = serde_json::from_slice(&out.stdout).context("bpftool's JSON")?;
    Ok(programs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|program| {
            Some((
                program["id"].as_u64()?,
                program["name"].as_str()?.to_owned(),
            ))
        })
        .collect())
}

/// Total run time (ns) and run count of the programs `ids`.
fn program_stats(ids: &[u64]) -> Result<(u64, u64)> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .context("running bpftool")?;
    let programs: Value = serde_json::from_slice(&out.stdout).context("bpftool's JSON")?;
    Ok(programs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|program| program["id"].as_u64().is_some_and(|id| ids.contains(&id)))
        .fold((0, 0), |(time, count), program| {
            (
                time + program["run_time_ns"].as_u64().unwrap_or(0),
                count + program["run_cnt"].as_u64().unwrap_or(0),
            )
        }))
}

pub(super) fn write_path(paths: &Paths, scale: Scale) -> Result<Value> {
    // times[tracer][load][round]
    let mut times = vec![vec![Vec::new(); Load::ALL.len()]; Tracer::ALL.len()];
    for round in 0..scale.rounds {
        eprintln!("xtask: round {}/{}", round + 1, scale.rounds);
        for (t, tracer) in Tracer::ALL.into_iter().enumerate() {
            let running = start(paths, tracer)?;
            for (l, load) in Load::ALL.into_iter().enumerate() {
                let (mode, count) = match load {
                    Load::Good => ("devnull", scale.writes),
                    Load::Epipe => ("epipe", scale.epipe_writes),
                    Load::Mixed => ("mixed", scale.writes / 10),
                    Load::SendGood => ("sendgood", scale.writes),
                    Load::SendEpipe => ("sendepipe", scale.epipe_writes),
                };
                let (ns, _, _) = run_loop(paths, i64::from(LOAD_CPU), mode, count)?;
                times[t][l].push(ns);
            }
            if let Some(running) = running {
                running.stop()?;
            }
        }
    }
    let mut loads = serde_json::Map::new();
    for (l, load) in Load::ALL.into_iter().enumerate() {
        let mut figures = serde_json::Map::new();
        for (t, tracer) in Tracer::ALL.into_iter().enumerate() {
            // Each round's difference with the untraced run of the same round.
            let mut added: Vec<f64> = (0..scale.rounds)
                .map(|round| times[t][l][round] - times[0][l][round])
                .collect();
            let mut raw = times[t][l].clone();
            let (low, high) = quartiles(&added);
            // Each round's ratio to the floor's added cost in the same round.
            let floor = Tracer::ALL
                .iter()
                .position(|other| *other == Tracer::Floor)
                .unwrap_or(1);
            let mut ratios: Vec<f64> = (0..scale.rounds)
                .map(|round| {
                    (times[t][l][round] - times[0][l][round])
                        / (times[floor][l][round] - times[0][l][round])
                })
                .collect();
            figures.insert(
                tracer.name().to_owned(),
                json!({"ns_per_op": median(&mut raw), "added_ns": median(&mut added),
                       "added_p25_ns": low, "added_p75_ns": high,
                       "ratio_to_floor_median": median(&mut ratios),
                       "rounds": times[t][l]}),
            );
        }
        loads.insert(load.key().to_owned(), Value::Object(figures));
    }
    Ok(Value::Object(loads))
}
