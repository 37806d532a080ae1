//! Builds the kernel programs (`stdtrace-ebpf`) for the BPF target and leaves the object in
//! `OUT_DIR/stdtrace`, where `src/loader.rs` embeds it.
//!
//! Building them needs the nightly toolchain with `rust-src` and `bpf-linker` on PATH, which
//! `cargo xtask setup` installs. Without them the build still succeeds (so that plain
//! `cargo build` / `cargo test` work on any machine) but embeds an empty object, and stdtrace
//! says at run time that it has no kernel programs and how to fix that.

use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

fn main() -> Result<()> {
    println!("cargo:rerun-if-env-changed=STDTRACE_REQUIRE_EBPF");
    println!("cargo:rerun-if-env-changed=PATH");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?);
    let ebpf_dir = manifest_dir
        .parent()
        .context("stdtrace has no parent directory")?
        .join("stdtrace-ebpf");
    println!("cargo:rerun-if-changed={}", ebpf_dir.display());
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("../stdtrace-common").display()
    );

    // cargo-fuzz builds with `--cfg fuzzing` in RUSTFLAGS, which the nested BPF build would
    // inherit; the fuzz targets (fuzz/) only need the parsers.
    let fuzzing = env::var_os("CARGO_CFG_FUZZING").is_some();
    if let Some(missing) = fuzzing
        .then(|| "building for the fuzz targets".to_owned())
        .or_else(missing_prerequisite)
    {
        if env::var_os("STDTRACE_REQUIRE_EBPF").is_some() && !fuzzing {
            bail!("cannot build the kernel programs: {missing}; run `cargo xtask setup`");
        }
        if !fuzzing {
            println!(
                "cargo:warning=building stdtrace without its kernel programs: {missing}; run `cargo xtask setup`"
            );
        }
        fs::write(out_dir.join("stdtrace"), []).context("writing the empty eBPF object")?;
        println!("cargo:rustc-cfg=stdtrace_no_ebpf");
        println!("cargo::rustc-check-cfg=cfg(stdtrace_no_ebpf)");
        return Ok(());
    }
    println!("cargo::rustc-check-cfg=cfg(stdtrace_no_ebpf)");

    let ebpf_dir = ebpf_dir
        .to_str()
        .context("the stdtrace-ebpf path is not UTF-8")?
        .to_owned();
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "stdtrace-ebpf",
            root_dir: &ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .context("building the kernel programs (stdtrace-ebpf)")
}

/// What is missing to build the kernel programs, if anything.
fn missing_prerequisite() -> Option<String> {
    let linker_found = env::var_os("PATH")
        .map(|path| env::split_paths(&path).any(|dir| dir.join("bpf-linker").is_file()))
        .unwrap_or(false);
    if !linker_found {
        return Some("bpf-linker is not on PATH".to_owned());
    }
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output();
    match sysroot {
        Ok(output) if output.status.success() => {
            let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            let core_src = PathBuf::from(sysroot).join("lib/rustlib/src/rust/library/core");
            if !core_src.is_dir() {
                return Some("the nightly toolchain has no rust-src component".to_owned());
            }
            None
        }
        _ => Some("no nightly toolchain (rustup run nightly rustc failed)".to_owned()),
    }
}
