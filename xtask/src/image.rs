//! `cargo xtask image`: an OCI image of stdtrace, built from scratch (no base image can be
//! pulled here): the release binary and exactly the shared libraries `ldd` lists for it
//! (glibc's loader, libc, libgcc_s), at the paths the binary's interpreter and the loader look
//! for them, and nothing else. `podman build` with a `FROM scratch` Containerfile makes it;
//! `podman save --format oci-archive` writes `target/image/stdtrace-oci.tar`, and `podman load`
//! loads that archive as `localhost/stdtrace:<version>`.
//!
//! Dynamic rather than static: a static glibc build would need `-C target-feature=+crt-static`
//! for every dependency (and glibc warns that NSS then needs the same glibc at run time), the
//! musl target is not installed here, and the three libraries are 2.6 MiB
//! (`podman image ls` measures the image). Idempotent: the same binary gives the same layers
//! (podman's build cache), and the archive and the tag are replaced.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{self, workspace_root};

/// The workspace version: the image's tag.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the binary sits in the image (the DaemonSet's `command`).
const BINARY_IN_IMAGE: &str = "/usr/bin/stdtrace";

/// `cargo xtask image [--binary PATH] [--tag TAG] [--archive PATH]`.
pub fn run(binary: Option<PathBuf>, tag: Option<String>, archive: Option<PathBuf>) -> Result<()> {
    let binary = match binary {
        Some(binary) => binary,
        None => {
            crate::setup::for_build()?;
            util::build_release()?
        }
    };
    let tag = tag.unwrap_or_else(|| format!("localhost/stdtrace:{VERSION}"));
    let archive = archive.unwrap_or_else(|| workspace_root().join("target/image/stdtrace-oci.tar"));
    build(&binary, &tag, &archive)?;
    eprintln!("xtask: {tag} loaded, archive {}", archive.display());
    Ok(())
}

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
    util::run(
        podman()
            .args(["build", "--quiet", "--tag", tag, "--file"])
            .arg(&containerfile)
            .arg(&dir),
    )?;
    if archive.exists() {
        fs::remove_file(archive).with_context(|| format!("removing {}", archive.display()))?;
    }
    util::run(
        podman()
            .args(["save", "--quiet", "--format", "oci-archive", "--output"])
            .arg(archive)
            .arg(tag),
    )?;
    util::run(podman().args(["load", "--quiet", "--input"]).arg(archive))?;
    // An oci-archive keeps the name it was saved with as its ref: loaded, it is `tag` again.
    let loaded = util::output(podman().args(["image", "inspect", "--format", "{{.Id}}", tag]));
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
    let listed = util::output(Command::new("ldd").arg(binary))
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
