//! Fixture programs built from source (`fixtures/` at the workspace root) the first time a test
//! asks for them, into `target/fixtures/`.

#![allow(
    dead_code,
    reason = "each test binary uses its own part of the support code"
)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("stdtrace lives in the workspace")
        .to_path_buf()
}

/// Where built fixtures go.
pub fn fixtures_out() -> PathBuf {
    let dir = workspace_root().join("target/fixtures");
    std::fs::create_dir_all(&dir).expect("creating target/fixtures");
    dir
}

/// Compiles `fixtures/<source>` with `compiler` and `flags` into `target/fixtures/<name>`,
/// unless an up-to-date build is already there. Safe to call from parallel tests: each build
/// goes to a temporary name and is renamed into place.
pub fn build_with(compiler: &str, source: &str, name: &str, flags: &[&str]) -> PathBuf {
    let src = workspace_root().join("fixtures").join(source);
    let out = fixtures_out().join(name);
    // The flags are part of the identity: a stamp next to the binary records them.
    let stamp = out.with_extension("flags");
    let wanted = format!("{compiler} {}", flags.join(" "));
    let fresh = match (std::fs::metadata(&out), std::fs::metadata(&src)) {
        (Ok(built), Ok(source)) => {
            built.modified().ok() >= source.modified().ok()
                && std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str())
        }
        _ => false,
    };
    if fresh {
        return out;
    }
    // Tests run as threads of one process: the counter keeps their temporary names apart.
    static BUILDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let build = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = out.with_extension(format!("tmp{}-{build}", std::process::id()));
    let status = Command::new(compiler)
        .args(flags)
        .arg("-o")
        .arg(&tmp)
        .arg(&src)
        .status()
        .unwrap_or_else(|err| panic!("running {compiler} for {}: {err}", src.display()));
    assert!(
        status.success(),
        "{compiler} {wanted} {} failed",
        src.display()
    );
    std::fs::rename(&tmp, &out).expect("moving the fixture into place");
    std::fs::write(&stamp, wanted).expect("writing the fixture stamp");
    out
}

/// Compiles a C fixture with gcc.
pub fn build_c(source: &str, name: &str, flags: &[&str]) -> PathBuf {
    build_with("gcc", source, name, flags)
}
