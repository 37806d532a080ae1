//! `cargo xtask fuzz`: runs the libFuzzer targets of `fuzz/` (one per parser of untrusted
//! bytes) with cargo-fuzz on the nightly toolchain, over seeds gathered from the fixtures the
//! tests build, the running system's procfs and BTF, and records built here.
//!
//! Seeds go to `target/fuzz-corpus/<target>/` (libFuzzer adds what it finds there); crashes,
//! timeouts and out-of-memory inputs to `fuzz/artifacts/<target>/`.

use std::{fs, path::PathBuf, process::Command, time::Instant};

use anyhow::{Context as _, Result, bail};

use crate::util;

mod seeds;

use seeds::{
    Seeds, address_prefixed, btf_blobs, elf_section, first_inode, go_patch_seeds, perf_records,
    ring_records, unix_diag_reply, unwind_seed,
};

/// Memory one execution may use: the bar every target is held to.
const RSS_LIMIT_MB: u32 = 512;
/// Seconds one input may take before it counts as a timeout.
const TIMEOUT_SECONDS: u32 = 10;
/// Executions of each target in the smoke run of `cargo xtask test`.
pub const SMOKE_RUNS: u64 = 3000;

/// A fuzz target: its name in `fuzz/Cargo.toml`, the longest input libFuzzer makes, and the
/// seeds it starts from.
struct Target {
    name: &'static str,
    max_len: usize,
    seeds: fn(&Seeds) -> Vec<Vec<u8>>,
    /// Its inputs are patches to the Go fixtures (`fuzz/fuzz_targets/common/patched.rs`).
    patches_go: bool,
}

const TARGETS: &[Target] = &[
    Target {
        name: "recording",
        max_len: 1 << 14,
        patches_go: false,
        seeds: |_| recording_seeds(),
    },
    Target {
        name: "container_state",
        max_len: 1 << 14,
        patches_go: false,
        seeds: |s| container_seeds(s),
    },
    Target {
        name: "elf_symbols",
        max_len: 1 << 17,
        patches_go: false,
        seeds: |s| s.c_objects.iter().map(|o| address_prefixed(o)).collect(),
    },
    Target {
        name: "unwind_cfi",
        max_len: 1 << 17,
        patches_go: false,
        seeds: |s| s.c_objects.iter().map(|o| unwind_seed(o)).collect(),
    },
    Target {
        name: "dwarf_lines",
        max_len: 1 << 17,
        patches_go: false,
        seeds: |s| s.c_objects.iter().map(|o| address_prefixed(o)).collect(),
    },
    Target {
        name: "go_binary",
        max_len: 4096,
        patches_go: true,
        seeds: |s| go_patch_seeds(&s.go_binaries, true),
    },
    Target {
        name: "go_pclntab",
        max_len: 4096,
        patches_go: true,
        seeds: |s| go_patch_seeds(&s.go_binaries, false),
    },
    Target {
        name: "go_buildinfo",
        max_len: 4096,
        patches_go: false,
        seeds: |s| {
            s.go_binaries
                .iter()
                .filter_map(|(_, file)| elf_section(file, ".go.buildinfo"))
                .map(|(address, bytes)| [&address.to_le_bytes()[..], bytes].concat())
                .collect()
        },
    },
    Target {
        name: "proc_maps",
        max_len: 1 << 16,
        patches_go: false,
        seeds: |s| s.proc_files("maps"),
    },
    Target {
        name: "proc_syscall",
        max_len: 1024,
        patches_go: false,
        seeds: |s| [s.proc_files("syscall"), s.proc_files("stat")].concat(),
    },
    Target {
        name: "proc_status",
        max_len: 8192,
        patches_go: false,
        seeds: |s| [s.proc_files("status"), s.proc_files("comm")].concat(),
    },
    Target {
        name: "proc_net",
        max_len: 1 << 16,
        patches_go: false,
        seeds: |s| {
            let mut seeds: Vec<Vec<u8>> = ["tcp", "tcp6", "udp", "udp6"]
                .iter()
                .enumerate()
                .filter_map(|(index, file)| {
                    let text = fs::read(format!("/proc/self/net/{file}")).ok()?;
                    let inode = first_inode(&text).unwrap_or(0);
                    Some([&[(index as u8) << 1][..], &inode.to_le_bytes(), &text].concat())
                })
                .collect();
            seeds.push([&[1u8][..], &4242u32.to_le_bytes(), &unix_diag_reply(4242)].concat());
            seeds.extend(
                s.proc_files("net/unix")
                    .into_iter()
                    .map(|text| [&[0u8][..], &0u32.to_le_bytes(), &text].concat()),
            );
            seeds
        },
    },
    Target {
        name: "procfs_crate",
        max_len: 1 << 16,
        patches_go: false,
        seeds: |s| {
            let mut seeds = Vec::new();
            for (selector, file) in ["maps", "status", "net/tcp", "net/udp", "net/unix"]
                .iter()
                .enumerate()
            {
                for text in s.proc_files(file) {
                    seeds.push([&[selector as u8][..], &text].concat());
                }
            }
            seeds
        },
    },
    Target {
        name: "perf_mmap2",
        max_len: 8192,
        patches_go: false,
        seeds: |_| perf_records(),
    },
    Target {
        name: "ring_event",
        max_len: 1 << 16,
        patches_go: false,
        seeds: |_| ring_records(),
    },
    Target {
        name: "btf",
        max_len: 1 << 18,
        patches_go: false,
        seeds: |_| btf_blobs(),
    },
    Target {
        name: "metrics_accept",
        max_len: 1024,
        patches_go: false,
        seeds: |_| metrics_accept_seeds(),
    },
];

/// Runs the fuzz targets (`only`, or all of them, one at a time), each until it has made
/// `runs` executions or run for `seconds`; fails on the first that finds anything.
pub fn run(seconds: u64, runs: Option<u64>, only: Option<&str>) -> Result<()> {
    ensure_cargo_fuzz()?;
    let targets = select(only)?;
    let seeds = Seeds::gather()?;
    let mut table = Vec::new();
    for target in targets {
        let result = fuzz_one(target, &seeds, Some(seconds), runs)?;
        table.push(result);
    }
    eprintln!("\n| target | executions | seconds | findings |\n| --- | ---: | ---: | --- |");
    for (name, runs, seconds) in &table {
        eprintln!("| `{name}` | {runs} | {seconds} | none |");
    }
    Ok(())
}

/// The smoke run of `cargo xtask test`: every target for [`SMOKE_RUNS`] executions, so that a
/// target that no longer builds, or a parser that now panics on its seeds, fails the tests.
/// Never skipped: without cargo-fuzz or the nightly toolchain it fails.
pub fn smoke() -> Result<()> {
    ensure_cargo_fuzz()?;
    let seeds = Seeds::gather()?;
    for target in TARGETS {
        fuzz_one(target, &seeds, None, Some(SMOKE_RUNS))?;
    }
    Ok(())
}

/// Installs cargo-fuzz unless `cargo fuzz` already runs (idempotent).
pub fn ensure_cargo_fuzz() -> Result<()> {
    let installed = Command::new(cargo())
        .args(["fuzz", "--version"])
        .env("PATH", util::path_with_cargo_bin())
        .output()
        .is_ok_and(|out| out.status.success());
    if installed {
        return Ok(());
    }
    util::run(
        Command::new(cargo())
            .args(["install", "cargo-fuzz", "--locked"])
            .env("PATH", util::path_with_cargo_bin()),
    )
    .context("installing cargo-fuzz")
}

fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn select(only: Option<&str>) -> Result<Vec<&'static Target>> {
    match only {
        None => Ok(TARGETS.iter().collect()),
        Some(name) => match TARGETS.iter().find(|target| target.name == name) {
            Some(target) => Ok(vec![target]),
            None => {
                let names: Vec<&str> = TARGETS.iter().map(|target| target.name).collect();
                bail!(
                    "no fuzz target {name}; the targets are {}",
                    names.join(", ")
                )
            }
        },
    }
}

fn corpus_dir(name: &str) -> PathBuf {
    util::workspace_root().join("target/fuzz-corpus").join(name)
}

/// Writes the target's seeds and runs it; returns its name, executions and seconds.
fn fuzz_one(
    target: &Target,
    seeds: &Seeds,
    seconds: Option<u64>,
    runs: Option<u64>,
) -> Result<(&'static str, u64, u64)> {
    let corpus = corpus_dir(target.name);
    fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    for (index, seed) in (target.seeds)(seeds).iter().enumerate() {
        let seed = &seed[..seed.len().min(target.max_len)];
        let path = corpus.join(format!("seed-{index}"));
        fs::write(&path, seed).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut cmd = Command::new("rustup");
    cmd.current_dir(util::workspace_root().join("fuzz"))
        .env("PATH", util::path_with_cargo_bin())
        // The fuzz build embeds no kernel programs (see stdtrace/build.rs).
        .env_remove("STDTRACE_REQUIRE_EBPF")
        // A smaller quarantine than ASan's 256 MiB, so that the memory limit measures the
        // parsers rather than the sanitizer.
        .env("ASAN_OPTIONS", "quarantine_size_mb=32")
        // Overflow checks on (`-a`): an overflow is a panic in the debug builds the tests run.
        .args(["run", "nightly", "cargo", "fuzz", "run", "--release", "-a"])
        .arg(target.name)
        .arg(&corpus)
        .arg("--")
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-timeout={TIMEOUT_SECONDS}"))
        .arg(format!("-max_len={}", target.max_len))
        .arg("-print_final_stats=1");
    if target.patches_go {
        let paths: Vec<String> = seeds
            .go_binaries
            .iter()
            .map(|(path, _)| path.display().to_string())
            .collect();
        cmd.env("STDTRACE_FUZZ_GO_BINARIES", paths.join(":"));
    }
    if let Some(seconds) = seconds {
        cmd.arg(format!("-max_total_time={seconds}"));
    }
    if let Some(runs) = runs {
        cmd.arg(format!("-runs={runs}"));
    }
    eprintln!("xtask: running {cmd:?}");
    let started = Instant::now();
    let out = cmd
        .stderr(std::process::Stdio::piped())
        .output()
        .context("starting cargo fuzz")?;
    let elapsed = started.elapsed().as_secs();
    let log = String::from_utf8_lossy(&out.stderr);
    let log_path = corpus.with_extension("log");
    fs::write(&log_path, log.as_bytes())
        .with_context(|| format!("writing {}", log_path.display()))?;
    let executions = final_stat(&log, "stat::number_of_executed_units").unwrap_or(0);
    // libFuzzer's own figure, without the build.
    let elapsed = fuzzing_seconds(&log).unwrap_or(elapsed);
    if !out.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        for line in tail.iter().rev() {
            eprintln!("{line}");
        }
        bail!(
            "fuzz target {} failed ({}) after {executions} executions; log in {}",
            target.name,
            out.status,
            log_path.display()
        );
    }
    eprintln!(
        "xtask: fuzz target {}: {executions} executions in {elapsed} s, no findings",
        target.name
    );
    Ok((target.name, executions, elapsed))
}

/// The seconds of libFuzzer's last `Done N runs in S second(s)` line.
fn fuzzing_seconds(log: &str) -> Option<u64> {
    let line = log.lines().rev().find(|line| line.starts_with("Done "))?;
    line.split(" in ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A value of libFuzzer's `-print_final_stats` report.
fn final_stat(log: &str, name: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find_map(|line| line.strip_prefix(name)?.trim().strip_prefix(':'))
        .and_then(|value| value.trim().parse().ok())
}

/// `Accept` headers as Prometheus, curl and browsers send them, and `--metrics-labels` lists.
fn metrics_accept_seeds() -> Vec<Vec<u8>> {
    [
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        "text/plain;version=0.0.4;q=1,*/*;q=0.1",
        "*/*",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        "application/openmetrics-text; q=0",
        "fd_kind,comm,k8s_namespace,k8s_pod,k8s_container",
    ]
    .iter()
    .map(|seed| seed.as_bytes().to_vec())
    .collect()
}

/// Recordings as `stdtrace record` writes them: a header, records, a summary, and a cut one.
fn recording_seeds() -> Vec<Vec<u8>> {
    let whole = concat!(
        r#"{"type":"header","schema":1,"stdtrace":"0.1.0","recording":"1-2","file":0,"kernel":"6.18.0","node":"n","host":"h","boot_id":"b","options":["record"],"wall_minus_monotonic_ns":1,"ts_ns":5}"#,
        "\n",
        r#"{"type":"write_error","ts_ns":6,"pid":812,"tid":812,"comm":"writer","syscall":"write","fd":4,"errno":"EPIPE","count":1,"target":{"kind":"pipe","inode":1,"readers":[],"writers":[]},"stack":[]}"#,
        "\n",
        r#"{"type":"summary","duration_ms":1,"stopped":"interrupted","failed_writes":1,"reported":1,"dropped":0,"repeats":0,"totals":[],"blocked_writes":0,"stuck":[],"sigpipes":[],"kernel":{}}"#,
        "\n",
    );
    vec![
        whole.as_bytes().to_vec(),
        whole.as_bytes()[..whole.len() / 2].to_vec(),
    ]
}

/// This machine's cgroup lines, and bundles shaped as podman, containerd and docker write them.
fn container_seeds(seeds: &Seeds) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = seeds
        .proc_files("cgroup")
        .into_iter()
        .map(|file| [&[0u8][..], &file].concat())
        .collect();
    out.push(b"\x000::/libpod_parent/libpod-cad264df46f47106f4671aa3f6ae9e73e539a7582bac636d4a4f0a214cedd15b\n".to_vec());
    out.push(
        [
            &[1u8][..],
            br#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.pod.name":"web-0","io.kubernetes.pod.namespace":"prod","io.kubernetes.container.name":"app","io.kubernetes.cri.sandbox-name":"web-0"}}"#,
        ]
        .concat(),
    );
    out.push(
        [
            &[2u8][..],
            br#"{"ID":"abc","Name":"/web","Config":{"Image":"busybox","Labels":{"io.kubernetes.pod.name":"web-0"}}}"#,
        ]
        .concat(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_stats_are_read() {
        let log = "#2048\tDONE\nstat::number_of_executed_units: 2048\nstat::peak_rss_mb: 40\n";
        assert_eq!(
            final_stat(log, "stat::number_of_executed_units"),
            Some(2048)
        );
        assert_eq!(final_stat(log, "stat::missing"), None);
        assert_eq!(
            fuzzing_seconds("INFO: x\nDone 2048 runs in 61 second(s)\n"),
            Some(61)
        );
        assert_eq!(fuzzing_seconds("nothing"), None);
    }
}
