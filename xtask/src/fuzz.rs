//! `cargo xtask fuzz`: runs the libFuzzer targets of `fuzz/` (one per parser of untrusted
//! bytes) with cargo-fuzz on the nightly toolchain, over seeds gathered from the fixtures the
//! tests build, the running system's procfs and BTF, and records built here.
//!
//! Seeds go to `target/fuzz-corpus/<target>/` (libFuzzer adds what it finds there); crashes,
//! timeouts and out-of-memory inputs to `fuzz/artifacts/<target>/`.

use std::{fs, path::PathBuf, process::Command, time::Instant};

use anyhow::{Context as _, Result, bail};

use crate::util;

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

/// What seeds are made from: object files built from the C fixtures, the Go fixtures, and
/// procfs files of this system.
struct Seeds {
    c_objects: Vec<Vec<u8>>,
    go_binaries: Vec<(PathBuf, Vec<u8>)>,
    proc_pids: Vec<u32>,
}

impl Seeds {
    fn gather() -> Result<Self> {
        Ok(Self {
            c_objects: c_objects()?,
            go_binaries: go_binaries(),
            proc_pids: vec![1, std::process::id()],
        })
    }

    /// `/proc/PID/<file>` of a few processes (and their first thread for `syscall`).
    fn proc_files(&self, file: &str) -> Vec<Vec<u8>> {
        let mut paths = Vec::new();
        for pid in &self.proc_pids {
            paths.push(format!("/proc/{pid}/{file}"));
            paths.push(format!("/proc/{pid}/task/{pid}/{file}"));
        }
        paths
            .iter()
            .filter_map(|path| fs::read(path).ok())
            .collect()
    }
}

/// Small objects built from the C fixtures with and without debug info, stripped, with
/// compressed debug sections, and as a shared library; plus this system's `true`.
fn c_objects() -> Result<Vec<Vec<u8>>> {
    let root = util::workspace_root();
    let out = root.join("target/fuzz-corpus/objects");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let source = |name: &str| root.join("fixtures/symbolize").join(name);
    let builds: [(&str, &str, &[&str]); 6] = [
        ("tiny-g", "tiny.c", &["-nostdlib", "-O1", "-g"]),
        ("tiny-s", "tiny.c", &["-nostdlib", "-O2", "-s"]),
        ("tiny-gz", "tiny.c", &["-nostdlib", "-O2", "-g", "-gz"]),
        (
            "tiny-nofp",
            "tiny.c",
            &["-nostdlib", "-O2", "-g", "-fomit-frame-pointer"],
        ),
        ("write-g", "blocked_write.c", &["-O1", "-g", "-pthread"]),
        (
            "lib-g.so",
            "stripped_lib.c",
            &["-O2", "-g", "-shared", "-fPIC"],
        ),
    ];
    let mut objects = Vec::new();
    for (name, file, flags) in builds {
        let output = out.join(name);
        let built = output.exists()
            || Command::new("gcc")
                .args(flags)
                .arg(source(file))
                .arg("-o")
                .arg(&output)
                .status()
                .is_ok_and(|status| status.success());
        if built {
            objects
                .push(fs::read(&output).with_context(|| format!("reading {}", output.display()))?);
        } else {
            eprintln!("xtask: could not build the fuzz seed {name} from {file} (no gcc?)");
        }
    }
    objects.extend(fs::read("/usr/bin/true"));
    if objects.is_empty() {
        bail!("no object files to seed the ELF fuzz targets with (is gcc installed?)");
    }
    Ok(objects)
}

/// The smallest build of each Go fixture flavour of two Go versions, from target/fixtures/go
/// (built by `cargo xtask go-fixtures`); none when they are not built.
fn go_binaries() -> Vec<(PathBuf, Vec<u8>)> {
    let dir = util::workspace_root().join("target/fixtures/go");
    let mut versions: Vec<PathBuf> = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .collect();
    versions.sort();
    let mut files = Vec::new();
    for version in versions.iter().take(1).chain(versions.iter().rev().take(1)) {
        for flavour in fs::read_dir(version).into_iter().flatten().flatten() {
            let path = flavour.path().join("piper");
            if let Ok(bytes) = fs::read(&path)
                && bytes.len() <= 4 << 20
            {
                files.push((path, bytes));
            }
        }
    }
    if files.is_empty() {
        eprintln!(
            "xtask: no Go fixtures in {}: the Go fuzz targets start from nothing (run `cargo xtask go-fixtures`)",
            dir.display()
        );
    }
    files
}

/// Seeds for the targets whose inputs patch the Go fixtures: for each, the pc to look up (its
/// entry point for a whole binary, 0 for a `.gopclntab`), the fixture's index, and patches that
/// rewrite the pc-line table's header and (in a whole binary) the build information with their
/// own bytes, for the mutations to start from.
fn go_patch_seeds(binaries: &[(PathBuf, Vec<u8>)], whole_binary: bool) -> Vec<Vec<u8>> {
    let patch = |offset: usize, bytes: &[u8]| {
        let bytes = &bytes[..bytes.len().min(64)];
        [
            &(offset as u32).to_le_bytes()[..],
            &[bytes.len() as u8],
            bytes,
        ]
        .concat()
    };
    binaries
        .iter()
        .enumerate()
        .map(|(index, (_, file))| {
            let pc = if whole_binary { entry_point(file) } else { 0 };
            let mut seed = [&pc.to_le_bytes()[..], &[index as u8]].concat();
            for name in [".gopclntab", ".go.buildinfo"] {
                let Some((_, bytes)) = elf_section(file, name) else {
                    continue;
                };
                let offset = if whole_binary {
                    bytes.as_ptr() as usize - file.as_ptr() as usize
                } else if name == ".gopclntab" {
                    0
                } else {
                    continue;
                };
                seed.extend(patch(offset, bytes));
            }
            seed
        })
        .collect()
}

/// An ELF file's entry point.
fn entry_point(object: &[u8]) -> u64 {
    u64_at(object, 0x18).unwrap_or(0)
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

/// The object prefixed with the address to look up: its entry point.
fn address_prefixed(object: &[u8]) -> Vec<u8> {
    [&entry_point(object).to_le_bytes()[..], object].concat()
}

/// Registers (ip at the entry point, sp, bp), a stack of plausible return addresses and frame
/// pointers, then the object: the layout `fuzz_targets/unwind_cfi.rs` reads.
fn unwind_seed(object: &[u8]) -> Vec<u8> {
    const SP: u64 = 0x7ffd_0000_0000;
    let entry = entry_point(object);
    let mask: u32 = (1 << 6) | (1 << 7) | (1 << 16);
    let mut registers = [0u64; 17];
    registers[6] = SP + 0x40;
    registers[7] = SP;
    registers[16] = entry;
    let mut stack = Vec::new();
    for index in 0..64u64 {
        let word = match index % 8 {
            0 => SP + (index + 8) * 8,
            1 => entry + 0x20 + index,
            _ => index,
        };
        stack.extend_from_slice(&word.to_le_bytes());
    }
    let mut seed = mask.to_le_bytes().to_vec();
    for register in registers {
        seed.extend_from_slice(&register.to_le_bytes());
    }
    seed.extend_from_slice(&(stack.len() as u16).to_le_bytes());
    seed.extend_from_slice(&stack);
    seed.extend_from_slice(object);
    seed
}

/// The address and bytes of section `name` of a 64-bit little-endian ELF file.
fn elf_section<'a>(file: &'a [u8], name: &str) -> Option<(u64, &'a [u8])> {
    let section_headers = usize::try_from(u64_at(file, 0x28)?).ok()?;
    let entry_size = usize::from(u16_at(file, 0x3a)?);
    let count = usize::from(u16_at(file, 0x3c)?);
    let names_index = usize::from(u16_at(file, 0x3e)?);
    let header = |index: usize| section_headers.checked_add(index.checked_mul(entry_size)?);
    let names_offset = usize::try_from(u64_at(file, header(names_index)? + 0x18)?).ok()?;
    (0..count).find_map(|index| {
        let at = header(index)?;
        let name_at = names_offset.checked_add(usize::try_from(u32_at(file, at)?).ok()?)?;
        let found = file.get(name_at..)?;
        let end = found.iter().position(|byte| *byte == 0)?;
        if &found[..end] != name.as_bytes() {
            return None;
        }
        let address = u64_at(file, at + 0x10)?;
        let offset = usize::try_from(u64_at(file, at + 0x18)?).ok()?;
        let size = usize::try_from(u64_at(file, at + 0x20)?).ok()?;
        Some((address, file.get(offset..offset.checked_add(size)?)?))
    })
}

/// The inode of the first entry of a `/proc/net/{tcp,udp}` file.
fn first_inode(text: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(text).ok()?;
    text.lines().nth(1)?.split_whitespace().nth(9)?.parse().ok()
}

/// A `sock_diag` reply about a connected unix stream socket with a name, a peer and queues.
fn unix_diag_reply(inode: u32) -> Vec<u8> {
    let mut body = vec![1u8, 1, 1, 0]; // AF_UNIX, SOCK_STREAM, established, pad
    body.extend_from_slice(&inode.to_ne_bytes());
    body.extend_from_slice(&[0xff; 8]); // cookie
    let mut attribute = |kind: u16, value: &[u8]| {
        body.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        body.extend_from_slice(&kind.to_ne_bytes());
        body.extend_from_slice(value);
        body.resize(body.len().next_multiple_of(4), 0);
    };
    attribute(0, b"\0abstract-name");
    attribute(2, &4243u32.to_ne_bytes());
    attribute(4, &[0, 0, 0, 0, 0xe8, 0x03, 0, 0]);
    let mut reply = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
    reply.extend_from_slice(&20u16.to_ne_bytes()); // SOCK_DIAG_BY_FAMILY
    reply.extend_from_slice(&[0; 10]); // flags, sequence, port id
    reply.extend_from_slice(&body);
    reply
}

/// One perf record of each kind stdtrace reads (`PERF_RECORD_MMAP2`, `COMM` on exec, `FORK`,
/// `EXIT`, `LOST`), each with its `sample_id` trailer (pid, tid, time).
fn perf_records() -> Vec<Vec<u8>> {
    let record = |kind: u32, misc: u16, body: &[u8]| {
        let mut out = kind.to_ne_bytes().to_vec();
        out.extend_from_slice(&misc.to_ne_bytes());
        out.extend_from_slice(&((8 + body.len() + 16) as u16).to_ne_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(&[42, 0, 0, 0, 43, 0, 0, 0]);
        out.extend_from_slice(&999u64.to_ne_bytes());
        out
    };
    let words =
        |values: &[u64]| -> Vec<u8> { values.iter().flat_map(|v| v.to_ne_bytes()).collect() };
    let mut mmap2 = [42u32.to_ne_bytes(), 43u32.to_ne_bytes()].concat();
    mmap2.extend(words(&[0x7f00_0000_1000, 0x2000, 0x1000]));
    mmap2.extend([254u32.to_ne_bytes(), 1u32.to_ne_bytes()].concat());
    mmap2.extend(words(&[77, 0]));
    mmap2.extend([5u32.to_ne_bytes(), 2u32.to_ne_bytes()].concat());
    mmap2.extend_from_slice(b"/usr/lib/libc.so.6\0\0\0\0\0\0");
    let pids = |a: u32, b: u32, c: u32, d: u32| {
        let mut body: Vec<u8> = [a, b, c, d].iter().flat_map(|v| v.to_ne_bytes()).collect();
        body.extend_from_slice(&7u64.to_ne_bytes());
        body
    };
    vec![
        record(10, 0, &mmap2),
        record(10, 0x4000, &mmap2),
        record(3, 0x2000, b"*\0\0\0*\0\0\0cat\0\0\0\0\0"),
        record(7, 0, &pids(50, 42, 50, 42)),
        record(4, 0, &pids(50, 42, 50, 42)),
        record(2, 0, &words(&[1, 12])),
    ]
}

/// x86_64 `struct pt_regs` offsets in the order `RegsLayout` keeps them, then a record of each
/// kind the kernel programs send (its kind word, then a pattern for the fields).
fn ring_records() -> Vec<Vec<u8>> {
    const PT_REGS: [u32; 17] = [
        80, 96, 88, 40, 104, 112, 32, 152, 72, 64, 56, 48, 24, 16, 8, 0, 128,
    ];
    let layout: Vec<u8> = PT_REGS.iter().flat_map(|v| v.to_le_bytes()).collect();
    (1u32..=6)
        .map(|kind| {
            let mut seed = layout.clone();
            seed.extend_from_slice(&kind.to_le_bytes());
            seed.extend((0..252u32).map(|index| (index % 7) as u8));
            seed
        })
        .collect()
}

/// The running kernel's BTF cut down to its first 64 KiB of types and of strings (with the
/// header's lengths to match), and the smallest module BTF files.
fn btf_blobs() -> Vec<Vec<u8>> {
    let mut blobs = Vec::new();
    if let Ok(vmlinux) = fs::read("/sys/kernel/btf/vmlinux")
        && let Some(cut) = cut_btf(&vmlinux, 64 << 10)
    {
        blobs.push(cut);
    }
    let mut modules: Vec<(u64, PathBuf)> = fs::read_dir("/sys/kernel/btf")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name() != "vmlinux")
        .filter_map(|entry| Some((entry.metadata().ok()?.len(), entry.path())))
        .collect();
    modules.sort();
    blobs.extend(
        modules
            .iter()
            .take(3)
            .filter_map(|(_, path)| fs::read(path).ok()),
    );
    blobs
}

fn cut_btf(btf: &[u8], keep: u32) -> Option<Vec<u8>> {
    let header_len = u32_at(btf, 4)?;
    let (type_off, type_len) = (u32_at(btf, 8)?, u32_at(btf, 12)?);
    let (str_off, str_len) = (u32_at(btf, 16)?, u32_at(btf, 20)?);
    let section = |offset: u32, len: u32| {
        let start = usize::try_from(header_len.checked_add(offset)?).ok()?;
        btf.get(start..start + usize::try_from(len.min(keep)).ok()?)
    };
    let types = section(type_off, type_len)?;
    let strings = section(str_off, str_len)?;
    // Whole type records only would need parsing them; a cut record is one more hostile case.
    let mut out = btf.get(..usize::try_from(header_len).ok()?)?.to_vec();
    out[8..12].copy_from_slice(&0u32.to_le_bytes());
    out[12..16].copy_from_slice(&(types.len() as u32).to_le_bytes());
    out[16..20].copy_from_slice(&(types.len() as u32).to_le_bytes());
    out[20..24].copy_from_slice(&(strings.len() as u32).to_le_bytes());
    out.extend_from_slice(types);
    out.extend_from_slice(strings);
    Some(out)
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

    #[test]
    fn a_cut_btf_keeps_its_header_consistent() {
        let mut btf = vec![0x9f, 0xeb, 1, 0];
        btf.extend_from_slice(&24u32.to_le_bytes());
        for word in [0u32, 8, 8, 4] {
            btf.extend_from_slice(&word.to_le_bytes());
        }
        btf.extend_from_slice(&[1; 8]);
        btf.extend_from_slice(b"\0ab\0");
        let cut = cut_btf(&btf, 4).unwrap();
        assert_eq!(cut.len(), 24 + 4 + 4);
        assert_eq!(u32_at(&cut, 12), Some(4));
        assert_eq!(u32_at(&cut, 16), Some(4));
        assert_eq!(&cut[28..], b"\0ab\0");
    }
}
