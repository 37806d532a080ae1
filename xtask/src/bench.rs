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
//!
//! The report goes to stdout and to `target/bench/report.md`, the figures to
//! `target/bench/report.json`.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{go, setup, util};

/// The CPU the loads are pinned to. bpftrace samples its tracepoint on CPU 0 (perf's default
/// for its probe), which costs it extra there: the loads run on CPU 1.
const LOAD_CPU: u32 = 1;

/// bpftrace's one-liner: failed writes by pid and user stack.
const BPFTRACE_PROGRAM: &str = "tracepoint:syscalls:sys_exit_write /args->ret == -11 || args->ret == -32/ { @[pid, ustack] = count(); }";

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
}

const FULL: Scale = Scale {
    rounds: 7,
    writes: 2_000_000,
    epipe_writes: 500_000,
    storm_secs: 10,
    startup_runs: 7,
};

const QUICK: Scale = Scale {
    rounds: 5,
    writes: 200_000,
    epipe_writes: 50_000,
    storm_secs: 3,
    startup_runs: 5,
};

/// A tracer configuration of the write-path benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tracer {
    None,
    Floor,
    Stdtrace,
    Bpftrace,
    FloorRaw,
    StdtraceRaw,
}

impl Tracer {
    const ALL: [Tracer; 6] = [
        Tracer::None,
        Tracer::Floor,
        Tracer::Stdtrace,
        Tracer::Bpftrace,
        Tracer::FloorRaw,
        Tracer::StdtraceRaw,
    ];

    fn name(self) -> &'static str {
        match self {
            Tracer::None => "none",
            Tracer::Floor => "floor",
            Tracer::Stdtrace => "stdtrace",
            Tracer::Bpftrace => "bpftrace",
            Tracer::FloorRaw => "floor (raw)",
            Tracer::StdtraceRaw => "stdtrace --hook raw",
        }
    }
}

/// A load of the write-path benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Load {
    /// Writes that succeed, to /dev/null.
    Good,
    /// Writes that all fail with EPIPE.
    Epipe,
    /// One write to /dev/null in ten syscalls.
    Mixed,
}

impl Load {
    const ALL: [Load; 3] = [Load::Good, Load::Epipe, Load::Mixed];

    fn name(self) -> &'static str {
        match self {
            Load::Good => "writes that succeed (ns per write)",
            Load::Epipe => "all-EPIPE storm (ns per write)",
            Load::Mixed => "1 write in 10 syscalls (ns per syscall)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Load::Good => "good",
            Load::Epipe => "epipe",
            Load::Mixed => "mixed",
        }
    }
}

struct Paths {
    stdtrace: PathBuf,
    floor: PathBuf,
    write_loop: PathBuf,
    out: PathBuf,
}

pub fn run(quick: bool) -> Result<()> {
    if !util::is_root() {
        bail!("the benchmark loads kernel programs: run it as root (sudo -E cargo xtask bench)");
    }
    setup::for_tests()?;
    let scale = if quick { QUICK } else { FULL };
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
    eprintln!("xtask: bench 1/4: write path ({} rounds)", scale.rounds);
    let write_path = write_path(&paths, scale)?;
    eprintln!("xtask: bench 2/4: storm ({} s)", scale.storm_secs);
    let storm = storm(&paths, scale)?;
    eprintln!("xtask: bench 3/4: symbolization");
    let symbolization = symbolization(&paths)?;
    eprintln!("xtask: bench 4/4: start-up");
    let startup = startup(&paths, scale)?;

    let report = json!({
        "machine": machine,
        "quick": quick,
        "scale": {"rounds": scale.rounds, "writes": scale.writes,
                  "epipe_writes": scale.epipe_writes, "storm_secs": scale.storm_secs},
        "load_cpu": LOAD_CPU,
        "write_path": write_path,
        "storm": storm,
        "symbolization": symbolization,
        "startup": startup,
        "bench_seconds": started.elapsed().as_secs_f64(),
    });
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

/// A process stopped (by its pid) when dropped.
struct Running {
    child: Child,
    name: &'static str,
}

impl Running {
    /// Asks it to finish (SIGINT, as Ctrl-C), and waits.
    fn stop(mut self) -> Result<()> {
        // SAFETY: signalling a child this benchmark started, by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(20));
        }
        bail!("{} (pid {}) did not stop", self.name, self.child.id())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until a line of `stream` contains `needle`, then keeps draining it in the background.
fn wait_for_line(stream: impl std::io::Read + Send + 'static, needle: &str) -> Result<()> {
    let (found, seen) = mpsc::channel();
    let needle = needle.to_owned();
    thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if !sent && line.contains(&needle) {
                let _ = found.send(());
                sent = true;
            }
        }
    });
    seen.recv_timeout(Duration::from_secs(60))
        .context("the tracer did not say it was ready")
}

/// Starts a tracer and waits until it is attached.
fn start(paths: &Paths, tracer: Tracer) -> Result<Option<Running>> {
    let (mut cmd, ready_on_stdout, needle, name) = match tracer {
        Tracer::None => return Ok(None),
        Tracer::Floor | Tracer::FloorRaw => {
            let mut cmd = Command::new(&paths.floor);
            cmd.arg(if tracer == Tracer::Floor {
                "tracepoint"
            } else {
                "raw"
            });
            (cmd, false, "attached", "stdtrace-floor")
        }
        Tracer::Stdtrace | Tracer::StdtraceRaw => {
            let mut cmd = Command::new(&paths.stdtrace);
            if tracer == Tracer::StdtraceRaw {
                cmd.args(["--hook", "raw"]);
            }
            (cmd, false, "stdtrace: tracing", "stdtrace")
        }
        Tracer::Bpftrace => {
            let mut cmd = Command::new("bpftrace");
            cmd.args(["-e", BPFTRACE_PROGRAM]);
            (cmd, true, "Attaching", "bpftrace")
        }
    };
    // The report itself is not what is measured; its cost is (stdout to /dev/null).
    cmd.stdin(Stdio::piped());
    if ready_on_stdout {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    } else {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    }
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    let stream: Box<dyn std::io::Read + Send> = if ready_on_stdout {
        Box::new(child.stdout.take().context("stdout")?)
    } else {
        Box::new(child.stderr.take().context("stderr")?)
    };
    let running = Running { child, name };
    wait_for_line(stream, needle)?;
    if tracer == Tracer::Bpftrace {
        // bpftrace says "Attaching" before it attaches.
        thread::sleep(Duration::from_millis(1500));
    }
    Ok(Some(running))
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
fn loop_field(text: &str, key: &str) -> Result<f64> {
    text.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        .and_then(|value| value.parse::<f64>().ok())
        .with_context(|| format!("no {key}= in {text:?}"))
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

fn write_path(paths: &Paths, scale: Scale) -> Result<Value> {
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
            figures.insert(
                tracer.name().to_owned(),
                json!({"ns_per_op": median(&mut raw), "added_ns": median(&mut added),
                       "rounds": times[t][l]}),
            );
        }
        loads.insert(load.key().to_owned(), Value::Object(figures));
    }
    Ok(Value::Object(loads))
}

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
fn storm(paths: &Paths, scale: Scale) -> Result<Value> {
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

fn symbolization(paths: &Paths) -> Result<Value> {
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

fn startup(paths: &Paths, scale: Scale) -> Result<Value> {
    let mut node_wide = Vec::new();
    for _ in 0..scale.startup_runs {
        let started = Instant::now();
        let running = start(paths, Tracer::Stdtrace)?;
        node_wide.push(started.elapsed().as_secs_f64() * 1000.0);
        if let Some(running) = running {
            running.stop()?;
        }
    }
    let runs = node_wide.clone();
    Ok(json!({"to_attached_ms": median(&mut node_wide), "runs_ms": runs}))
}

fn number(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

/// The report, in Markdown.
fn markdown(report: &Value) -> String {
    let mut md = String::new();
    let machine = &report["machine"];
    let _ = writeln!(
        md,
        "### stdtrace benchmark{}\n",
        if report["quick"] == true {
            " (quick)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "Machine: {} ({} CPUs, {} GiB), Linux {}; {}. Loads pinned to CPU {}; median of {} interleaved rounds.\n",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cpus"],
        machine["memory_gib"],
        machine["kernel"].as_str().unwrap_or("?"),
        machine["bpftrace"].as_str().unwrap_or("bpftrace ?"),
        report["load_cpu"],
        report["scale"]["rounds"],
    );
    let _ = writeln!(
        md,
        "**1. Write path**: ns added per operation (median of each round's difference with no tracer).\n"
    );
    let _ = writeln!(
        md,
        "| load | no tracer (ns/op) | floor | stdtrace | bpftrace | stdtrace ÷ floor | stdtrace ÷ bpftrace | floor (raw hook) | stdtrace --hook raw |"
    );
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for load in Load::ALL {
        let figures = &report["write_path"][load.key()];
        let added = |tracer: Tracer| number(&figures[tracer.name()]["added_ns"]);
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} |",
            load.name(),
            number(&figures["none"]["ns_per_op"]),
            added(Tracer::Floor),
            added(Tracer::Stdtrace),
            added(Tracer::Bpftrace),
            added(Tracer::Stdtrace) / added(Tracer::Floor),
            added(Tracer::Stdtrace) / added(Tracer::Bpftrace),
            added(Tracer::FloorRaw),
            added(Tracer::StdtraceRaw),
        );
    }
    let storm = &report["storm"];
    let _ = writeln!(
        md,
        "\n**2. Storm**: two processes (one per CPU) failing writes as fast as they can for {} s under `stdtrace --format json`, node-wide. stdtrace's CPU time is its own (all threads), from the writers' start to 1.5 s after they stop, as a share of one core over the storm; peak RSS is its high-water mark, start-up included.\n",
        storm["seconds"]
    );
    let _ = writeln!(
        md,
        "| matched per second | writers' own count | summary's count | exact | records written | dropped | stdtrace CPU (% of one core) | stdtrace peak RSS |"
    );
    let _ = writeln!(
        md,
        "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"
    );
    let _ = writeln!(
        md,
        "| {:.0} | {} | {} | {} | {} | {} | {:.1} % | {:.1} MiB |",
        number(&storm["matched_per_second"]),
        storm["writers_failed"],
        storm["summary_failed"],
        if storm["exact"] == true {
            "yes"
        } else {
            "**no**"
        },
        storm["records"],
        storm["dropped"],
        number(&storm["stdtrace_cpu_percent_of_one_core"]),
        number(&storm["stdtrace_peak_rss_mib"]),
    );
    let _ = writeln!(
        md,
        "\n**3. Symbolization**: from the failed write to its report with every frame named (cold: page cache dropped first; warm: median of 3).\n"
    );
    let _ = writeln!(
        md,
        "| binary | size | frames | cold: after the event | cold: from start | warm: after the event | warm: from start |"
    );
    let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for case in report["symbolization"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {:.1} MiB | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
            case["binary"].as_str().unwrap_or("?"),
            number(&case["size_mib"]),
            case["frames"],
            number(&case["cold_after_event_ms"]),
            number(&case["cold_from_start_ms"]),
            number(&case["warm_after_event_ms"]),
            number(&case["warm_from_start_ms"]),
        );
    }
    let _ = writeln!(
        md,
        "\n**4. Start-up**: from launch to attached (BTF read, programs loaded and attached), node-wide: {:.0} ms (median).",
        number(&report["startup"]["to_attached_ms"])
    );
    md
}
