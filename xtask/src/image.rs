//! `cargo xtask image`: an OCI image of stdtrace, built from scratch (no base image can be
//! pulled here): the release binary and exactly the shared libraries `ldd` lists for it
//! (glibc's loader, libc, libgcc_s), at the paths the binary's interpreter and the loader look
//! for them, and nothing else. `podman build` with a `FROM scratch` Containerfile makes it;
//! `podman save --format oci-archive` writes `target/image/stdtrace-oci.tar`, and `podman load`
//! loads that archive as `localhost/stdtrace:<version>`.
//!
//! Dynamic rather than static: a static glibc build would need `-C target-feature=+crt-static`
//! for every dependency (and glibc warns that NSS then needs the same glibc at run time), the
//! musl target is not installed here, and the three libraries are 2.2 MiB (measured: the image
//! of the release build is 13.3 MB, its archive 4.5 MiB). Idempotent: the same binary gives the
//! same layers (podman's build cache; a second run takes 3 s), and the archive and the tag are
//! replaced.

use std::path::PathBuf;

use anyhow::Result;

use crate::util::{self, workspace_root};

// Shared with stdtrace's in-container test, which builds its image with it (std and anyhow
// only, for that reason).
#[path = "image/oci.rs"]
mod oci;

/// The workspace version: the image's tag.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

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
    oci::build(&binary, &tag, &archive)?;
    eprintln!("xtask: {tag} loaded, archive {}", archive.display());
    Ok(())
}
