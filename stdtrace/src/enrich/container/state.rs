//! A container's metadata from its runtime's own state on disk, under the host root:
//!
//! - containerd: the OCI bundle `run/containerd/io.containerd.runtime.v2.task/<ns>/<id>/
//!   config.json`, whose CRI annotations (`io.kubernetes.cri.sandbox-name`, ...) name the pod;
//! - CRI-O and podman (containers/storage): `{var/lib,run}/containers/storage/<driver>-
//!   containers/<id>/userdata/config.json` (`io.kubernetes.pod.name`, ...), and the store's
//!   `containers.json` for podman's name and image;
//! - docker: `var/lib/docker/containers/<id>/config.v2.json`;
//! - else the kubelet's logs: `var/log/containers/<pod>_<ns>_<container>-<id>.log` and
//!   `var/log/pods/<ns>_<pod>_<uid>/`, found from the id or the cgroup's pod uid.
//!
//! The bundle is parsed with a minimal serde struct, not the `oci-spec` crate: `oci-spec`
//! 0.10 builds with rustc 1.95, but it deserializes the whole runtime spec strictly, so one
//! field of an unexpected type anywhere (a `process.user.uid` written as a string) loses the
//! annotations, the only part read here; and it brings some 45 crates for that. Every file is
//! read within a size bound and parsed without panicking: these files are the runtime's, but
//! anyone who can write them can also write garbage.

use std::{
    collections::BTreeMap,
    io::Read,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::{
    process::cgroup::ContainerCgroup,
    report::record::{Container, Runtime},
};

/// A runtime spec is a few KiB; a bigger one is refused rather than read.
pub const MAX_CONFIG: u64 = 4 * 1024 * 1024;
/// containers/storage's `containers.json` lists every container of the store.
const MAX_STORE_INDEX: u64 = 32 * 1024 * 1024;

const CONTAINERD_TASKS: &str = "run/containerd/io.containerd.runtime.v2.task";
/// The name of a containerd task directory, under whatever `--state` it was given.
pub const TASK_DIR_NAME: &str = "io.containerd.runtime.v2.task";
const STORAGE_ROOTS: [&str; 2] = ["var/lib/containers/storage", "run/containers/storage"];
const DOCKER_CONTAINERS: &str = "var/lib/docker/containers";

/// Why a state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is {size} bytes, more than the {limit}-byte bound: not read")]
    TooBig { path: String, size: u64, limit: u64 },
    #[error("{path} is malformed: {source}")]
    Malformed {
        path: String,
        source: serde_json::Error,
    },
}

/// The part of an OCI runtime spec read here.
#[derive(Debug, Default, Deserialize)]
pub struct Bundle {
    /// Values that are not strings (against the spec) are kept out rather than failing it all.
    #[serde(default)]
    pub annotations: BTreeMap<String, serde_json::Value>,
}

impl Bundle {
    pub fn annotation(&self, key: &str) -> Option<String> {
        match self.annotations.get(key)? {
            serde_json::Value::String(value) if !value.is_empty() => Some(value.clone()),
            _ => None,
        }
    }
}

/// Reads a JSON file within `limit` bytes and parses it.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path, limit: u64) -> Result<T, StateError> {
    let shown = || path.display().to_string();
    let read_error = |source| StateError::Read {
        path: shown(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let size = file.metadata().map_err(read_error)?.len();
    if size > limit {
        return Err(StateError::TooBig {
            path: shown(),
            size,
            limit,
        });
    }
    let mut bytes = Vec::new();
    // A file growing under us is still cut at the bound.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > limit {
        return Err(StateError::TooBig {
            path: shown(),
            size: bytes.len() as u64,
            limit,
        });
    }
    parse_json(&bytes).map_err(|source| StateError::Malformed {
        path: shown(),
        source,
    })
}

/// Parses bytes as JSON (`serde_json` bounds its recursion: deep nesting is an error).
pub fn parse_json<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// Where the runtimes' state is looked for.
pub struct StateDirs<'a> {
    /// The host's root.
    pub root: &'a Path,
    /// containerd task directories besides the default one (`--state DIR`, k3s's), as found
    /// from running shims' working directories (already under the root).
    pub containerd_tasks: &'a [PathBuf],
}

/// Which runtimes' state directories [`resolve`] reads, for messages.
pub fn looked_at(dirs: &StateDirs<'_>) -> String {
    let under = |path: &str| dirs.root.join(path).display().to_string();
    let mut containerd = vec![under(CONTAINERD_TASKS)];
    containerd.extend(
        dirs.containerd_tasks
            .iter()
            .map(|dir| dir.display().to_string()),
    );
    format!(
        "containerd {}; podman and CRI-O {}; docker {}",
        containerd.join(", "),
        STORAGE_ROOTS.map(under).join(", "),
        under(DOCKER_CONTAINERS)
    )
}

/// The container a cgroup names, with what its runtime's state says; and the state file it
/// came from (None when none was found).
pub fn resolve(dirs: &StateDirs<'_>, found: &ContainerCgroup) -> (Container, Option<PathBuf>) {
    let root = dirs.root;
    let mut container = Container {
        id: found.id.clone(),
        runtime: found.runtime,
        ..Container::default()
    };
    let mut why = Vec::new();
    let sources: [fn(&StateDirs<'_>, &ContainerCgroup, &mut Container) -> Lookup; 3] =
        [containerd, containers_storage, docker];
    let mut state = None;
    for source in sources {
        match source(dirs, found, &mut container) {
            Lookup::Found(path) => {
                state = Some(path);
                break;
            }
            Lookup::Failed(reason) => why.push(reason),
            Lookup::Absent => {}
        }
    }
    if state.is_none() {
        kubelet_logs(root, found, &mut container);
        if why.is_empty() {
            why.push(format!(
                "no runtime state for container {} under {}",
                found.id,
                root.display()
            ));
        }
    }
    if container.pod.uid.is_none() {
        container.pod.uid = found.pod_uid.clone();
    }
    let missing = missing_fields(&container);
    if !missing.is_empty() {
        let reason = if why.is_empty() {
            "its runtime's state does not say".to_owned()
        } else {
            why.join("; ")
        };
        container.unknown = Some(format!("{}: {reason}", missing.join(", ")));
    }
    (container, state)
}

enum Lookup {
    /// Read from this file.
    Found(PathBuf),
    /// This runtime's state for it exists, but could not be used.
    Failed(String),
    /// Not this runtime's.
    Absent,
}

/// Reads a bundle if its file exists; Absent if it does not.
fn bundle_at(path: &Path) -> Result<Option<Bundle>, String> {
    match read_json::<Bundle>(path, MAX_CONFIG) {
        Ok(bundle) => Ok(Some(bundle)),
        Err(StateError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(err) => Err(err.to_string()),
    }
}

fn containerd(dirs: &StateDirs<'_>, found: &ContainerCgroup, container: &mut Container) -> Lookup {
    if !matches!(found.runtime, None | Some(Runtime::Containerd)) {
        return Lookup::Absent;
    }
    let default = dirs.root.join(CONTAINERD_TASKS);
    for tasks in std::iter::once(&default).chain(dirs.containerd_tasks) {
        match containerd_in(tasks, found, container) {
            Lookup::Absent => {}
            lookup => return lookup,
        }
    }
    Lookup::Absent
}

fn containerd_in(tasks: &Path, found: &ContainerCgroup, container: &mut Container) -> Lookup {
    let namespaces: Vec<String> = match &found.namespace {
        Some(namespace) => vec![namespace.clone()],
        None => list_dir(tasks),
    };
    for namespace in namespaces {
        let path = tasks.join(&namespace).join(&found.id).join("config.json");
        match bundle_at(&path) {
            Ok(Some(bundle)) => {
                container.runtime = Some(Runtime::Containerd);
                apply_cri_annotations(&bundle, container);
                if container.name.is_none() && namespace != "k8s.io" {
                    // `ctr run`'s container id is its name.
                    container.name = Some(found.id.clone());
                }
                return Lookup::Found(path);
            }
            Ok(None) => {}
            Err(reason) => return Lookup::Failed(reason),
        }
    }
    Lookup::Absent
}

/// containerd's CRI plugin's annotations on a container's bundle.
pub fn apply_cri_annotations(bundle: &Bundle, container: &mut Container) {
    let pod = &mut container.pod;
    pod.name = pod
        .name
        .take()
        .or_else(|| bundle.annotation("io.kubernetes.cri.sandbox-name"));
    pod.namespace = pod
        .namespace
        .take()
        .or_else(|| bundle.annotation("io.kubernetes.cri.sandbox-namespace"));
    pod.uid = pod
        .uid
        .take()
        .or_else(|| bundle.annotation("io.kubernetes.cri.sandbox-uid"));
    container.container_name = container
        .container_name
        .take()
        .or_else(|| bundle.annotation("io.kubernetes.cri.container-name"));
    container.image = container
        .image
        .take()
        .or_else(|| bundle.annotation("io.kubernetes.cri.image-name"));
}

/// The `io.kubernetes.*` annotations CRI-O writes, and podman copies from `--annotation`.
pub fn apply_kubernetes_annotations(bundle: &Bundle, container: &mut Container) {
    let pod = &mut container.pod;
    pod.name = bundle.annotation("io.kubernetes.pod.name");
    pod.namespace = bundle.annotation("io.kubernetes.pod.namespace");
    pod.uid = bundle.annotation("io.kubernetes.pod.uid");
    container.container_name = bundle.annotation("io.kubernetes.container.name");
    container.image = bundle.annotation("io.kubernetes.cri-o.ImageName");
    container.log_path = bundle.annotation("io.kubernetes.cri-o.LogPath");
    container.runtime = if bundle.annotation("io.container.manager").as_deref() == Some("libpod") {
        Some(Runtime::Podman)
    } else if bundle
        .annotations
        .keys()
        .any(|key| key.starts_with("io.kubernetes.cri-o."))
    {
        Some(Runtime::CriO)
    } else {
        container.runtime
    };
}

fn containers_storage(
    dirs: &StateDirs<'_>,
    found: &ContainerCgroup,
    container: &mut Container,
) -> Lookup {
    let root = dirs.root;
    if !matches!(found.runtime, None | Some(Runtime::CriO | Runtime::Podman)) {
        return Lookup::Absent;
    }
    for storage in STORAGE_ROOTS {
        let storage = root.join(storage);
        // `overlay-containers`, `vfs-containers`, ...: one per storage driver.
        for store in list_dir(&storage)
            .into_iter()
            .filter(|dir| dir.ends_with("-containers"))
        {
            let store = storage.join(store);
            let userdata = store.join(&found.id).join("userdata");
            let path = userdata.join("config.json");
            match bundle_at(&path) {
                Ok(Some(bundle)) => {
                    apply_kubernetes_annotations(&bundle, container);
                    storage_index(&store, &found.id, container);
                    let log = userdata.join("ctr.log");
                    if container.log_path.is_none() && log.exists() {
                        container.log_path = Some(shown_under(root, &log));
                    }
                    return Lookup::Found(path);
                }
                Ok(None) => {}
                Err(reason) => return Lookup::Failed(reason),
            }
        }
    }
    Lookup::Absent
}

/// An entry of containers/storage's `containers.json`.
#[derive(Debug, Deserialize)]
pub struct StoredContainer {
    pub id: String,
    #[serde(default)]
    pub names: Vec<String>,
    /// podman's JSON (as a string): `{"image-name": ..., "name": ...}`.
    #[serde(default)]
    pub metadata: String,
}

#[derive(Debug, Deserialize)]
struct StoredMetadata {
    #[serde(rename = "image-name")]
    image_name: Option<String>,
}

/// The container's name and image from its store's index.
fn storage_index(store: &Path, id: &str, container: &mut Container) {
    let path = store.join("containers.json");
    let stored = match read_json::<Vec<StoredContainer>>(&path, MAX_STORE_INDEX) {
        Ok(stored) => stored,
        Err(err) => {
            log::debug!("container {id}: {err}");
            return;
        }
    };
    let Some(entry) = stored.into_iter().find(|entry| entry.id == id) else {
        return;
    };
    container.name = container
        .name
        .take()
        .or_else(|| entry.names.into_iter().next());
    if container.image.is_none() {
        container.image = parse_json::<StoredMetadata>(entry.metadata.as_bytes())
            .ok()
            .and_then(|metadata| metadata.image_name);
    }
}

/// docker's `config.v2.json`, the part read here.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerConfig {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub log_path: String,
    #[serde(default)]
    pub config: DockerContainerConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerContainerConfig {
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, serde_json::Value>>,
}

fn docker(dirs: &StateDirs<'_>, found: &ContainerCgroup, container: &mut Container) -> Lookup {
    if !matches!(found.runtime, None | Some(Runtime::Docker)) {
        return Lookup::Absent;
    }
    let path = dirs
        .root
        .join(DOCKER_CONTAINERS)
        .join(&found.id)
        .join("config.v2.json");
    match read_json::<DockerConfig>(&path, MAX_CONFIG) {
        Ok(config) => {
            apply_docker(config, container);
            Lookup::Found(path)
        }
        Err(StateError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Lookup::Absent
        }
        Err(err) => Lookup::Failed(err.to_string()),
    }
}

pub fn apply_docker(config: DockerConfig, container: &mut Container) {
    container.runtime = Some(Runtime::Docker);
    let nonempty = |text: String| (!text.is_empty()).then_some(text);
    container.name = nonempty(config.name.trim_start_matches('/').to_owned());
    container.image = nonempty(config.config.image);
    container.log_path = nonempty(config.log_path);
    // Labels as the kubelet's dockershim (cri-dockerd today) sets them.
    let labels = Bundle {
        annotations: config.config.labels.unwrap_or_default(),
    };
    container.pod.name = labels.annotation("io.kubernetes.pod.name");
    container.pod.namespace = labels.annotation("io.kubernetes.pod.namespace");
    container.pod.uid = labels.annotation("io.kubernetes.pod.uid");
    container.container_name = labels.annotation("io.kubernetes.container.name");
}

/// The kubelet's own record of the container: `var/log/containers/<pod>_<ns>_<container>-
/// <id>.log`, else the pod's directory `var/log/pods/<ns>_<pod>_<uid>/` from the cgroup's uid.
fn kubelet_logs(root: &Path, found: &ContainerCgroup, container: &mut Container) {
    let suffix = format!("-{}.log", found.id);
    if let Some(name) = list_dir(&root.join("var/log/containers"))
        .into_iter()
        .find(|name| name.ends_with(&suffix))
    {
        let stem = &name[..name.len() - suffix.len()];
        let mut parts = stem.splitn(3, '_');
        if let (Some(pod), Some(namespace), Some(name)) = (parts.next(), parts.next(), parts.next())
        {
            container.pod.name.get_or_insert_with(|| pod.to_owned());
            container
                .pod
                .namespace
                .get_or_insert_with(|| namespace.to_owned());
            container
                .container_name
                .get_or_insert_with(|| name.to_owned());
        }
    }
    let Some(uid) = &found.pod_uid else { return };
    let pods = root.join("var/log/pods");
    let Some(dir) = list_dir(&pods)
        .into_iter()
        .find(|dir| dir.ends_with(&format!("_{uid}")))
    else {
        return;
    };
    let mut parts = dir.splitn(3, '_');
    if let (Some(namespace), Some(pod)) = (parts.next(), parts.next()) {
        container
            .pod
            .namespace
            .get_or_insert_with(|| namespace.to_owned());
        container.pod.name.get_or_insert_with(|| pod.to_owned());
    }
    // One container directory: it is ours. More: the cgroup does not say which.
    let containers = list_dir(&pods.join(&dir));
    if let [only] = containers.as_slice() {
        container.container_name.get_or_insert_with(|| only.clone());
    }
}

/// What could not be found out, by field name.
fn missing_fields(container: &Container) -> Vec<&'static str> {
    let mut missing = Vec::new();
    if container.runtime.is_none() {
        missing.push("runtime");
    }
    if container.name.is_none() && container.pod.name.is_none() {
        missing.push("name");
    }
    if container.image.is_none() {
        missing.push("image");
    }
    missing
}

fn list_dir(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// A path as the host sees it (without the host root it was read under).
fn shown_under(root: &Path, path: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(rest) => Path::new("/").join(rest).display().to_string(),
        Err(_) => path.display().to_string(),
    }
}
