//! The container stage: which container (and pod) a process runs in, keyed by container id.
//!
//! The capture stage reads `/proc/PID/cgroup` at event time (a few hundred bytes: cheap) and
//! asks here for the container it names. Its metadata is resolved once per container from the
//! runtime's own state on disk ([`state`]: no API call, nothing on the kernel path) and cached:
//! the first event of a container pays for reading a few small, size-bounded files, every
//! later one for a hash lookup.
//! A container that was seen and has since gone keeps its metadata in a bounded cache of
//! recently deleted containers, so that a late event of a process that outlived it (or a
//! record told after it was removed) still names it, as Inspektor Gadget and Tetragon do.
//!
//! [`role`] names the runtime processes (conmon, the containerd shims, containerd, dockerd)
//! that hold the other end of a container's stdio.

pub mod role;
pub mod state;

use std::{
    collections::{HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    process::{
        cgroup::{self, ContainerCgroup},
        host::HostRoot,
    },
    report::record::Container,
};

/// How many containers are cached with their metadata; past that the least recently seen
/// move to the deleted cache.
const MAX_LIVE: usize = 4096;
/// How many recently deleted containers keep their metadata.
const MAX_DELETED: usize = 256;
/// A container whose state could not be read is asked again after this long (it may have been
/// starting: its bundle not written yet).
const RETRY_UNRESOLVED: Duration = Duration::from_secs(5);
/// How often the cache checks which containers are gone.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// How far up from a container's process a containerd shim is looked for.
const MAX_ANCESTORS: usize = 8;

struct Entry {
    container: Arc<Container>,
    resolved: Instant,
    seen: Instant,
    /// The state file its metadata came from: when it is gone, so is the container.
    state: Option<PathBuf>,
}

/// Containers by id, with their metadata.
pub struct Containers {
    /// The host's root: `/`, or where the host's filesystem is mounted (`--host-root`).
    root: HostRoot,
    live: HashMap<String, Entry>,
    deleted: VecDeque<Arc<Container>>,
    swept: Instant,
    /// containerd task directories learned from running shims (see [`Self::learn_from_shim`]).
    containerd_tasks: Vec<PathBuf>,
}

impl Containers {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: HostRoot::new(root),
            live: HashMap::new(),
            deleted: VecDeque::new(),
            swept: Instant::now(),
            containerd_tasks: Vec::new(),
        }
    }

    pub fn root(&self) -> &HostRoot {
        &self.root
    }

    /// The container process `pid` runs in, if it is in one (None also when it is gone).
    pub fn of_process(&mut self, pid: u32) -> Option<Arc<Container>> {
        match cgroup::read(&self.root, pid) {
            Ok(Some(found)) => {
                if self.cached(&found.id).is_none() {
                    self.learn_from_shim(pid);
                }
                Some(self.resolve(&found))
            }
            Ok(None) => None,
            Err(err) => {
                log::debug!("reading the cgroup of pid {pid}: {err}");
                None
            }
        }
    }

    /// The container a cgroup names, resolved once and cached.
    pub fn resolve(&mut self, found: &ContainerCgroup) -> Arc<Container> {
        let now = Instant::now();
        self.sweep(now);
        if let Some(entry) = self.live.get_mut(&found.id) {
            entry.seen = now;
            let unresolved = entry.state.is_none();
            if !unresolved || now.duration_since(entry.resolved) < RETRY_UNRESOLVED {
                return entry.container.clone();
            }
        } else if let Some(gone) = self.deleted.iter().find(|gone| gone.id == found.id) {
            return gone.clone();
        }
        let started = Instant::now();
        let dirs = state::StateDirs {
            root: self.root.root(),
            containerd_tasks: &self.containerd_tasks,
        };
        let (container, state) = state::resolve(&dirs, found);
        log::debug!(
            "container {}: {container:?} (from {state:?}, in {:?})",
            found.id,
            started.elapsed()
        );
        let container = Arc::new(container);
        if self.live.len() >= MAX_LIVE && !self.live.contains_key(&found.id) {
            self.evict_oldest();
        }
        self.live.insert(
            found.id.clone(),
            Entry {
                container: container.clone(),
                resolved: now,
                seen: now,
                state,
            },
        );
        container
    }

    /// A containerd shim runs in its task's bundle directory, `<state>/io.containerd.runtime.
    /// v2.task/<ns>/<id>`: the container's init is its child, so an ancestor of a container's
    /// process that is a shim says where a containerd started with `--state DIR` (or k3s's)
    /// keeps its bundles. Asked only for a container not cached yet.
    fn learn_from_shim(&mut self, pid: u32) {
        let mut current = pid;
        for _ in 0..MAX_ANCESTORS {
            let Some(parent) = parent_of(&self.root, current) else {
                return;
            };
            if parent <= 1 {
                return;
            }
            let proc = self.root.pid(parent);
            let comm = std::fs::read(proc.join("comm")).unwrap_or_default();
            if comm.starts_with(b"containerd-shim") {
                let Ok(cwd) = std::fs::read_link(proc.join("cwd")) else {
                    return;
                };
                let tasks = cwd.parent().and_then(Path::parent);
                if let Some(tasks) = tasks.filter(|tasks| tasks.ends_with(state::TASK_DIR_NAME)) {
                    let tasks = self.root.path(tasks);
                    if !self.containerd_tasks.contains(&tasks) {
                        log::debug!("containerd keeps its tasks in {}", tasks.display());
                        self.containerd_tasks.push(tasks);
                    }
                }
                return;
            }
            current = parent;
        }
    }

    /// A container by id, as far as the cache knows it (live or recently deleted).
    pub fn cached(&self, id: &str) -> Option<Arc<Container>> {
        self.live
            .get(id)
            .map(|entry| entry.container.clone())
            .or_else(|| self.deleted.iter().find(|gone| gone.id == id).cloned())
    }

    /// Moves containers whose state is gone to the deleted cache, every [`SWEEP_EVERY`].
    fn sweep(&mut self, now: Instant) {
        if now.duration_since(self.swept) < SWEEP_EVERY {
            return;
        }
        self.swept = now;
        let gone: Vec<String> = self
            .live
            .iter()
            .filter(|(_, entry)| entry.state.as_ref().is_some_and(|state| !state.exists()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(entry) = self.live.remove(&id) {
                self.remember_deleted(entry.container);
            }
        }
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .live
            .iter()
            .min_by_key(|(_, entry)| entry.seen)
            .map(|(id, _)| id.clone());
        if let Some(entry) = oldest.and_then(|id| self.live.remove(&id)) {
            self.remember_deleted(entry.container);
        }
    }

    fn remember_deleted(&mut self, container: Arc<Container>) {
        if self.deleted.len() >= MAX_DELETED {
            self.deleted.pop_front();
        }
        self.deleted.push_back(container);
    }

    /// Forgets a container's state file, as if it had been removed (tests).
    #[cfg(test)]
    fn force_sweep(&mut self) {
        self.swept = Instant::now() - SWEEP_EVERY;
        self.sweep(Instant::now());
    }
}

/// The parent pid in `/proc/PID/stat` (the field after the state, after the `(comm)` that may
/// hold spaces and parentheses).
fn parent_of(root: &HostRoot, pid: u32) -> Option<u32> {
    let stat = std::fs::read(root.pid_path(pid, "stat")).ok()?;
    let after = stat.iter().rposition(|byte| *byte == b')')?;
    let rest = String::from_utf8_lossy(stat.get(after + 1..)?).into_owned();
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
#[path = "container/tests.rs"]
mod tests;
