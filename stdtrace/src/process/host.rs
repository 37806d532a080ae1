//! Where the host's files are: `/`, or where the host's filesystem is mounted for a node agent
//! in a container (`--host-root DIR`, or `STDTRACE_HOST_ROOT`). The one place that decides the
//! paths of procfs (`/proc/PID/...`), the runtimes' state directories, `/var/log/pods` and
//! cgroup files.
//!
//! With `hostPID: true` (`podman run --pid=host`) the container shares the host's pid
//! namespace, so the pids in BPF's events are the pids under `DIR/proc`. Paths that procfs
//! links show (`/proc/PID/fd/N`, `cwd`, `exe`) are the host's already: the kernel prints them
//! from the host's mounts, which this process's root does not reach, so they are joined to the
//! root again (with [`HostRoot::path`]) before they are read, and shown as they are.
//!
//! Not here: the kernel's own interfaces (`/sys/kernel/btf/vmlinux`, tracefs at
//! `/sys/kernel/tracing`), which are the same kernel's wherever they are mounted and are
//! mounted at their usual places in the container (`deploy/kubernetes/stdtrace.yaml`); and
//! `/proc/self`, which is this process.
//!
//! The procfs readers in `process/`, `snapshot/`, `symbolize/` and `kernel/inspect.rs` are
//! free functions of a pid, called from every stage; they ask [`host`] for the root that
//! `main` installed once at start-up (before any thread starts), instead of each taking it as
//! an argument. The container stage, which joins state paths itself, is given its
//! [`HostRoot`] ([`crate::enrich::capture::Capture::with_host_root`]).

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    sync::OnceLock,
};

/// The host's root, and its procfs under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRoot {
    root: PathBuf,
    proc: PathBuf,
}

/// Why a host root cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HostRootError {
    #[error(
        "--host-root {0}: {1} is not the host's procfs (mount the host's /proc there, read-only)"
    )]
    NoProcfs(String, String),
    #[error("--host-root is given twice")]
    AlreadySet,
}

impl Default for HostRoot {
    fn default() -> Self {
        Self::new("/")
    }
}

impl HostRoot {
    /// The host's filesystem at `root` (`/` on the host itself).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let proc = root.join("proc");
        Self { root, proc }
    }

    /// A host root that is checked: `DIR/proc` must be a procfs showing process 1 (the host's
    /// init, under `hostPID`).
    pub fn checked(root: impl Into<PathBuf>) -> Result<Self, HostRootError> {
        let host = Self::new(root);
        let init = host.pid_path(1, "stat");
        if !init.exists() {
            return Err(HostRootError::NoProcfs(
                host.root.display().to_string(),
                host.proc.display().to_string(),
            ));
        }
        Ok(host)
    }

    /// The root itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether this is the root of the filesystem stdtrace runs in (not a node agent's mount).
    pub fn is_own(&self) -> bool {
        self.root == Path::new("/")
    }

    /// The host's procfs: `ROOT/proc`.
    pub fn proc(&self) -> &Path {
        &self.proc
    }

    /// `ROOT/proc/PID`.
    pub fn pid(&self, pid: u32) -> PathBuf {
        self.proc.join(pid.to_string())
    }

    /// `ROOT/proc/PID/REST`, e.g. `pid_path(pid, "fd")`, `pid_path(pid, format!("task/{tid}/stat"))`.
    pub fn pid_path(&self, pid: u32, rest: impl AsRef<Path>) -> PathBuf {
        let mut path = self.pid(pid);
        path.push(rest);
        path
    }

    /// A path as the host names it (`/var/lib/containers/...`), under the root.
    pub fn path(&self, host_path: impl AsRef<Path>) -> PathBuf {
        let host_path = host_path.as_ref();
        self.root
            .join(host_path.strip_prefix("/").unwrap_or(host_path))
    }

    /// A path read under the root, as the host names it (the root taken off again).
    pub fn shown(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.root) {
            Ok(rest) if !self.is_own() => {
                let mut shown = OsString::from("/");
                shown.push(rest.as_os_str());
                PathBuf::from(shown)
            }
            _ => path.to_owned(),
        }
    }
}

static HOST: OnceLock<HostRoot> = OnceLock::new();

/// Installs the host root for the whole process, once, before any procfs read (`main`).
pub fn install(host: HostRoot) -> Result<(), HostRootError> {
    HOST.set(host).map_err(|_| HostRootError::AlreadySet)
}

/// The host root every procfs reader uses: the installed one, else `/`.
pub fn host() -> &'static HostRoot {
    HOST.get_or_init(HostRoot::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_the_root() {
        let host = HostRoot::new("/host");
        assert_eq!(host.proc(), Path::new("/host/proc"));
        assert_eq!(host.pid(42), Path::new("/host/proc/42"));
        assert_eq!(host.pid_path(42, "fd/3"), Path::new("/host/proc/42/fd/3"));
        assert_eq!(
            host.path("/var/log/pods/a_b_c"),
            Path::new("/host/var/log/pods/a_b_c")
        );
        assert_eq!(
            host.shown(Path::new("/host/var/log/pods/a_b_c")),
            Path::new("/var/log/pods/a_b_c")
        );
        assert!(!host.is_own());
    }

    #[test]
    fn own_root_is_the_plain_paths() {
        let host = HostRoot::default();
        assert_eq!(host.pid_path(7, "cgroup"), Path::new("/proc/7/cgroup"));
        assert_eq!(host.path("/run/containerd"), Path::new("/run/containerd"));
        assert_eq!(host.shown(Path::new("/run/x")), Path::new("/run/x"));
        assert!(host.is_own());
    }

    #[test]
    fn a_root_without_procfs_is_refused() {
        let err = HostRoot::checked("/nonexistent-host-root").unwrap_err();
        assert_eq!(
            err.to_string(),
            "--host-root /nonexistent-host-root: /nonexistent-host-root/proc is not the host's \
             procfs (mount the host's /proc there, read-only)"
        );
        assert!(HostRoot::checked("/").is_ok());
    }
}
