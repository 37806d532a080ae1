//! Building stdtrace's OCI image from scratch with podman: the binary and exactly the shared
//! libraries `ldd` lists for it. Used by `cargo xtask image` and by stdtrace's in-container
//! test (through `#[path]`), so it needs nothing but std and anyhow.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// Where the binary sits in the image (the DaemonSet's `command`).
pub const BINARY_IN_IMAGE: &str = "/usr/bin/stdtrace";

/// The version labelled on the image.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Builds the image of `binary`, saves it to `archive` and loads it back as `tag`.
pub fn build(binary: &Path, tag: &str, archive: &Path) -> Result<()> {
    let dir = archive
        .parent()
        .context("the archive has no directory")?
        .join(format!(
            "context-{}",
            tag.rsplit([':', '/']).next().unwrap_or("image")
        ));
    let rootfs = dir.join("rootfs");
    if rootfs.exists() {
        fs::remove_dir_all(&rootfs).with_context(|| format!("removing {}", rootfs.display()))?;
    }
    copy_into(binary, &rootfs, Path::new(BINARY_IN_IMAGE))?;
    for library in shared_libraries(binary)? {
        copy_into(&library, &rootfs, &library)?;
    }
    // stdtrace mounts nothing and writes nothing but stdout; /tmp for a recording's
    // `--output`, should one be asked for, and the host root's mount point.
    for empty in ["tmp", "host"] {
        fs::create_dir_all(rootfs.join(empty))?;
    }
    let containerfile = dir.join("Containerfile");
    fs::write(
        &containerfile,
        format!(
            "FROM scratch\n\
             COPY rootfs/ /\n\
             LABEL org.opencontainers.image.title=stdtrace \\\n      \
             org.opencontainers.image.version={VERSION} \\\n      \
             org.opencontainers.image.description=\"Why is this process stuck (or dying) while writing its output?\"\n\
             ENTRYPOINT [\"{BINARY_IN_IMAGE}\"]\n\
             CMD [\"--host-root\", \"/host\", \"--format\", \"json\"]\n"
        ),
    )
    .with_context(|| format!("writing {}", containerfile.display()))?;
    run(podman()
        .args(["build", "--quiet", "--tag", tag, "--file"])
        .arg(&containerfile)
        .arg(&dir))?;
    if archive.exists() {
        fs::remove_file(archive).with_context(|| format!("removing {}", archive.display()))?;
    }
    run(podman()
        .args(["save", "--quiet", "--format", "oci-archive", "--output"])
        .arg(archive)
        .arg(tag))?;
    run(podman().args(["load", "--quiet", "--input"]).arg(archive))?;
    // An oci-archive keeps the name it was saved with as its ref: loaded, it is `tag` again.
    let loaded = output(podman().args(["image", "inspect", "--format", "{{.Id}}", tag]));
    if loaded.is_none() {
        bail!("{} loaded, but {tag} is not there", archive.display());
    }
    Ok(())
}

fn podman() -> Command {
    let mut podman = Command::new("podman");
    // crun refuses this host's hybrid cgroups (nothing runs during a scratch build, but the
    // runtime is checked).
    podman.args(["--runtime", "/usr/sbin/runc"]);
    podman
}

/// The shared libraries `ldd` lists for `binary`, the loader included (absolute paths).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let listed = output(Command::new("ldd").arg(binary))
        .with_context(|| format!("ldd {}", binary.display()))?;
    let mut libraries = Vec::new();
    for line in listed.lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`, `/lib64/ld-linux-x86-64.so.2
        // (0x...)`; the vDSO has no file.
        let path = match line.split_once("=>") {
            Some((_, after)) => after.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|path| path.starts_with('/')) else {
            if line.contains("not found") {
                bail!("ldd {}: {line}", binary.display());
            }
            continue;
        };
        libraries.push(PathBuf::from(path));
    }
    if libraries.is_empty() {
        bail!(
            "ldd lists no libraries for {}: not a dynamic binary?",
            binary.display()
        );
    }
    Ok(libraries)
}

/// Copies `file` (following symlinks) to `at` under `rootfs`.
fn copy_into(file: &Path, rootfs: &Path, at: &Path) -> Result<()> {
    let target = rootfs.join(at.strip_prefix("/").unwrap_or(at));
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::copy(file, &target)
        .with_context(|| format!("copying {} to {}", file.display(), target.display()))?;
    Ok(())
}

/// Runs a command to completion, failing unless it exits 0 (its stderr in the error).
fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A command's stdout, or None if it could not run or failed.
fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
