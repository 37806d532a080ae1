//! `--container ID|NAME`, `--pod NAMESPACE/NAME`, `--namespace NS`: which containers a run
//! (or a report, or a snapshot) is about.
//!
//! For tracing, the containers running now are found from procfs (every process's
//! `/proc/PID/cgroup`, as the capture stage reads it) and named from their runtime's state
//! (the [`super::Containers`] stage); each matching container's cgroup v2 directory is looked
//! up under the cgroup2 mount, and its inode number (the cgroup id the kernel's
//! `bpf_get_current_ancestor_cgroup_id` returns) and depth are what the kernel filter watches.

use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::Containers;
use crate::{process::cgroup, report::record::Container};

/// One `--container`, `--pod` or `--namespace` given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// A full container id, a unique prefix of one, the runtime's name for the container, or
    /// its name in its pod.
    Container(String),
    Pod {
        namespace: String,
        name: String,
    },
    Namespace(String),
}

impl Selector {
    /// `--pod NAMESPACE/NAME`.
    pub fn pod(text: &str) -> Result<Self, String> {
        match text.split_once('/') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
            {
                Ok(Selector::Pod {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(format!("`{text}` is not NAMESPACE/NAME")),
        }
    }

    /// The option as it was given, for messages.
    pub fn shown(&self) -> String {
        match self {
            Selector::Container(what) => format!("--container {what}"),
            Selector::Pod { namespace, name } => format!("--pod {namespace}/{name}"),
            Selector::Namespace(namespace) => format!("--namespace {namespace}"),
        }
    }

    /// Whether a container is selected (an id prefix counts, however short: whether it is
    /// unique among the running containers is checked by [`select`]).
    pub fn matches(&self, container: &Container) -> bool {
        match self {
            Selector::Container(what) => {
                container.id.starts_with(what.as_str())
                    || container.name.as_deref() == Some(what)
                    || container.container_name.as_deref() == Some(what)
            }
            Selector::Pod { namespace, name } => {
                container.pod.namespace.as_deref() == Some(namespace)
                    && container.pod.name.as_deref() == Some(name)
            }
            Selector::Namespace(namespace) => container.pod.namespace.as_deref() == Some(namespace),
        }
    }

    /// Whether this selector matches by an id prefix (and not by a full id or a name).
    fn by_prefix_only(&self, container: &Container) -> bool {
        match self {
            Selector::Container(what) => {
                container.id != *what
                    && container.name.as_deref() != Some(what)
                    && container.container_name.as_deref() != Some(what)
            }
            _ => false,
        }
    }
}

/// Whether any of `selectors` selects `container` (they are a union).
pub fn any_matches(selectors: &[Selector], container: &Container) -> bool {
    selectors.iter().any(|selector| selector.matches(container))
}

/// A running container: its metadata, its cgroup v2 directory, and its processes.
#[derive(Clone, Debug)]
pub struct RunningContainer {
    pub container: Arc<Container>,
    /// The cgroup v2 path of the container (`/libpod_parent/libpod-<id>`), without the
    /// sub-cgroups its processes may sit in.
    pub cgroup_path: String,
    /// The cgroup id (the directory's inode number under the cgroup2 mount); None when the
    /// directory could not be found.
    pub cgroup_id: Option<u64>,
    /// The path's depth: the root is level 0.
    pub level: u32,
    pub pids: Vec<u32>,
}

/// Why no container could be selected.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error(
        "no running container matches {selector} ({seen} running containers seen in procfs; runtime state looked at: {looked_at})"
    )]
    NoMatch {
        selector: String,
        seen: usize,
        looked_at: String,
    },
    #[error("{selector} is ambiguous: it is a prefix of {ids}; give more of the id")]
    Ambiguous { selector: String, ids: String },
    #[error(
        "container {id} ({selector}) has no cgroup v2 directory under {mount}: its processes cannot be filtered in the kernel"
    )]
    NoCgroup {
        selector: String,
        id: String,
        mount: String,
    },
    #[error(
        "no cgroup2 file system is mounted (looked in /proc/self/mountinfo): --container, --pod and --namespace filter on cgroup v2 ids"
    )]
    NoCgroup2,
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on
/// a hybrid host), from our own mountinfo.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        if after.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let fields: Vec<&str> = before.split_whitespace().collect();
        // Only a mount of the hierarchy's root maps cgroup paths one to one.
        if fields.get(3) != Some(&"/") {
            return None;
        }
        fields.get(4).map(PathBuf::from)
    })
}

/// The cgroup v2 path of the process's container directory and its depth, from the `0::`
/// line: the path up to the component that names the container.
fn container_dir(v2_path: &str, id: &str) -> Option<(String, u32)> {
    let components: Vec<&str> = v2_path.split('/').filter(|c| !c.is_empty()).collect();
    let index = components.iter().rposition(|c| c.contains(id))?;
    let dir = format!("/{}", components[..=index].join("/"));
    Some((dir, u32::try_from(index + 1).ok()?))
}

/// The container a `/proc/PID/cgroup` file puts its process in on the v2 hierarchy (the one
/// the kernel filter sees: its `0::` line), with the container's cgroup directory and depth.
pub fn v2_container(bytes: &[u8]) -> Option<(cgroup::ContainerCgroup, String, u32)> {
    let v2 = cgroup::lines(bytes)
        .into_iter()
        .find(|line| line.hierarchy == 0 && line.controllers.is_empty())?;
    let found = cgroup::from_path(&v2.path)?;
    let (dir, level) = container_dir(&v2.path, &found.id)?;
    Some((found, dir, level))
}

/// Every container with a process running now, found from procfs.
pub fn running(containers: &mut Containers, mount: Option<&Path>) -> Vec<RunningContainer> {
    let host = containers.root().clone();
    let mut by_id: BTreeMap<String, (String, u32, Vec<u32>)> = BTreeMap::new();
    let own = std::process::id();
    for pid in crate::process::status::all_processes() {
        if pid == own {
            continue;
        }
        let Ok(bytes) = std::fs::read(host.pid_path(pid, "cgroup")) else {
            continue;
        };
        let Some((found, dir, level)) = v2_container(&bytes) else {
            continue;
        };
        by_id
            .entry(found.id)
            .or_insert_with(|| (dir, level, Vec::new()))
            .2
            .push(pid);
    }
    let mut running = Vec::new();
    for (id, (cgroup_path, level, pids)) in by_id {
        let container = pids
            .iter()
            .find_map(|&pid| containers.of_process(pid))
            .filter(|container| container.id == id);
        let Some(container) = container else {
            continue;
        };
        let cgroup_id = mount.and_then(|mount| {
            std::fs::metadata(mount.join(cgroup_path.trim_start_matches('/')))
                .ok()
                .map(|metadata| metadata.ino())
        });
        running.push(RunningContainer {
            container,
            cgroup_path,
            cgroup_id,
            level,
            pids,
        });
    }
    running
}

/// The running containers the selectors pick; every selector must pick at least one, and an
/// id prefix only one. With the cgroup2 `mount` (for the kernel filter), each must have its
/// cgroup directory there.
pub fn select(
    selectors: &[Selector],
    running: &[RunningContainer],
    containers: &Containers,
    mount: Option<&Path>,
) -> Result<Vec<RunningContainer>, SelectError> {
    let mut chosen: Vec<RunningContainer> = Vec::new();
    for selector in selectors {
        let picked: Vec<&RunningContainer> = running
            .iter()
            .filter(|candidate| selector.matches(&candidate.container))
            .collect();
        if picked.is_empty() {
            return Err(SelectError::NoMatch {
                selector: selector.shown(),
                seen: running.len(),
                looked_at: containers.state_looked_at(),
            });
        }
        if picked.len() > 1
            && picked
                .iter()
                .all(|candidate| selector.by_prefix_only(&candidate.container))
        {
            return Err(SelectError::Ambiguous {
                selector: selector.shown(),
                ids: picked
                    .iter()
                    .map(|candidate| candidate.container.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        for candidate in picked {
            if let Some(mount) = mount
                && candidate.cgroup_id.is_none()
            {
                return Err(SelectError::NoCgroup {
                    selector: selector.shown(),
                    id: candidate.container.id.clone(),
                    mount: mount.display().to_string(),
                });
            }
            if !chosen
                .iter()
                .any(|known| known.container.id == candidate.container.id)
            {
                chosen.push(candidate.clone());
            }
        }
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, name: &str, pod: Option<(&str, &str)>) -> Container {
        Container {
            id: id.to_owned(),
            name: Some(name.to_owned()),
            pod: crate::report::record::Pod {
                namespace: pod.map(|(namespace, _)| namespace.to_owned()),
                name: pod.map(|(_, name)| name.to_owned()),
                uid: None,
            },
            container_name: Some("app".to_owned()),
            ..Container::default()
        }
    }

    #[test]
    fn selectors_match_ids_prefixes_names_pods_and_namespaces() {
        let web = container("abc123", "web-1", Some(("prod", "web-0")));
        assert!(Selector::Container("abc123".into()).matches(&web));
        assert!(Selector::Container("abc".into()).matches(&web));
        assert!(Selector::Container("web-1".into()).matches(&web));
        assert!(Selector::Container("app".into()).matches(&web));
        assert!(!Selector::Container("bc".into()).matches(&web));
        assert!(Selector::pod("prod/web-0").unwrap().matches(&web));
        assert!(!Selector::pod("prod/web-1").unwrap().matches(&web));
        assert!(!Selector::pod("dev/web-0").unwrap().matches(&web));
        assert!(Selector::Namespace("prod".into()).matches(&web));
        assert!(!Selector::Namespace("dev".into()).matches(&web));
        let plain = container("def456", "db", None);
        assert!(!Selector::Namespace("prod".into()).matches(&plain));
    }

    #[test]
    fn pods_are_namespace_slash_name() {
        for bad in ["web-0", "/web-0", "prod/", "a/b/c", ""] {
            assert!(Selector::pod(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Selector::pod("prod/web-0").unwrap().shown(),
            "--pod prod/web-0"
        );
    }

    #[test]
    fn the_v2_line_names_the_container_and_its_directory() {
        let id = "b".repeat(64);
        let file = format!(
            "9:name=systemd:/libpod_parent/libpod-{id}\n1:cpu:/libpod_parent/libpod-{id}\n0::/libpod_parent/libpod-{id}\n"
        );
        let (found, dir, level) = v2_container(file.as_bytes()).unwrap();
        assert_eq!(found.id, id);
        assert_eq!(
            (dir.as_str(), level),
            (format!("/libpod_parent/libpod-{id}").as_str(), 2)
        );
        // Only in v1 hierarchies: the kernel filter cannot see it.
        let v1_only = format!("4:memory:/docker/{id}\n0::/\n");
        assert_eq!(v2_container(v1_only.as_bytes()), None);
    }

    #[test]
    fn container_dirs_stop_at_the_container() {
        let id = "a".repeat(64);
        assert_eq!(
            container_dir(&format!("/libpod_parent/libpod-{id}"), &id),
            Some((format!("/libpod_parent/libpod-{id}"), 2))
        );
        assert_eq!(
            container_dir(&format!("/machine.slice/libpod-{id}.scope/container"), &id),
            Some((format!("/machine.slice/libpod-{id}.scope"), 2))
        );
        assert_eq!(
            container_dir("/default/web", "web"),
            Some(("/default/web".to_owned(), 2))
        );
    }

    #[test]
    fn an_ambiguous_prefix_and_no_match_are_errors() {
        let running = |id: &str, name: &str| RunningContainer {
            container: Arc::new(container(id, name, None)),
            cgroup_path: format!("/libpod_parent/libpod-{id}"),
            cgroup_id: Some(7),
            level: 2,
            pids: vec![1],
        };
        let all = [running("abc1", "one"), running("abc2", "two")];
        let containers = Containers::new("/nonexistent");
        let mount = Some(Path::new("/sys/fs/cgroup"));
        let err = select(
            &[Selector::Container("abc".into())],
            &all,
            &containers,
            mount,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("ambiguous") && err.contains("abc1, abc2"),
            "{err}"
        );
        let err = select(
            &[Selector::Container("zzz".into())],
            &all,
            &containers,
            mount,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("no running container matches --container zzz (2 running"),
            "{err}"
        );
        let picked = select(
            &[
                Selector::Container("abc1".into()),
                Selector::Container("one".into()),
                Selector::Container("two".into()),
            ],
            &all,
            &containers,
            mount,
        )
        .unwrap();
        assert_eq!(picked.len(), 2);
    }
}
