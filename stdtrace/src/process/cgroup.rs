//! `/proc/PID/cgroup`: which container (and Kubernetes pod) a process runs in.
//!
//! Each line is `HIERARCHY:CONTROLLERS:PATH` (cgroup(7)): `0::PATH` for the v2 hierarchy,
//! `N:memory,...:PATH` or `N:name=systemd:PATH` for v1 ones; a hybrid host has both. The
//! container is named by the innermost path component its runtime creates:
//!
//! | runtime, driver | component |
//! | --- | --- |
//! | containerd (CRI), systemd | `cri-containerd-<id>.scope` |
//! | CRI-O, systemd / cgroupfs | `crio-<id>.scope` / `crio-<id>` |
//! | podman, systemd / cgroupfs | `libpod-<id>.scope` / `libpod_parent/libpod-<id>` |
//! | docker, systemd / cgroupfs | `docker-<id>.scope` / `docker/<id>` |
//! | kubelet, cgroupfs (containerd, docker) | `kubepods/<qos>/pod<uid>/<id>` |
//! | `ctr run` | `<namespace>/<id>` (`default/<name>`) |
//!
//! The pod comes from the enclosing `kubepods-<qos>-pod<uid>.slice` (systemd, which writes the
//! uid's `-` as `_`) or `pod<uid>` (cgroupfs) component. A kind-style node nests all of this
//! inside another container's cgroup; the innermost container wins.
//!
//! The bytes are untrusted (any process can be named here, and paths are not UTF-8 by law):
//! parsing never panics, and anything not recognized is simply not a container.

use crate::report::record::Runtime;

/// `/proc/PID/cgroup` is a few hundred bytes; more is not a cgroup file.
const MAX_CGROUP_FILE: u64 = 64 * 1024;

/// The containerd namespaces `ctr` and the CRI plugin use, the only ones a bare
/// `<namespace>/<id>` path is taken to be containerd's in (any two-component path would
/// otherwise pass: `/process_api/<hex>` is not a container).
const CONTAINERD_NAMESPACES: [&str; 2] = ["default", "k8s.io"];

/// A pod's quality-of-service class, from its cgroup's parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl Qos {
    pub fn name(self) -> &'static str {
        match self {
            Qos::Guaranteed => "guaranteed",
            Qos::Burstable => "burstable",
            Qos::BestEffort => "besteffort",
        }
    }
}

/// What a process's cgroup says of its container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerCgroup {
    /// The container id: 64 hex digits, or a `ctr run` name.
    pub id: String,
    /// The runtime, when the path's naming shows it (a bare cgroupfs id does not).
    pub runtime: Option<Runtime>,
    /// For `ctr`-style `<namespace>/<id>` paths: the containerd namespace.
    pub namespace: Option<String>,
    /// The Kubernetes pod's uid, with systemd's `_` turned back into `-`.
    pub pod_uid: Option<String>,
    pub qos: Option<Qos>,
    /// The cgroup path it was found in.
    pub path: String,
}

/// One line of `/proc/PID/cgroup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupLine {
    /// 0 for the v2 hierarchy.
    pub hierarchy: u32,
    /// Empty for v2; `name=systemd` for systemd's named v1 hierarchy.
    pub controllers: String,
    pub path: String,
}

/// Every well-formed line; a malformed one is skipped.
pub fn lines(bytes: &[u8]) -> Vec<CgroupLine> {
    bytes
        .split(|byte| *byte == b'\n')
        .filter_map(|line| {
            let line = String::from_utf8_lossy(line);
            let (hierarchy, rest) = line.split_once(':')?;
            let (controllers, path) = rest.split_once(':')?;
            Some(CgroupLine {
                hierarchy: hierarchy.trim().parse().ok()?,
                controllers: controllers.to_owned(),
                path: path.to_owned(),
            })
        })
        .collect()
}

/// The container a process's `/proc/PID/cgroup` puts it in, if any.
///
/// The v2 line is asked first (on a hybrid host it is the one runtimes always set), then
/// systemd's named hierarchy, then the controllers: a v1-only host has the container in all of
/// them.
pub fn parse(bytes: &[u8]) -> Option<ContainerCgroup> {
    let mut lines = lines(bytes);
    lines.sort_by_key(|line| match (line.hierarchy, line.controllers.as_str()) {
        (0, "") => 0,
        (_, "name=systemd") => 1,
        _ => 2,
    });
    let mut found: Option<ContainerCgroup> = None;
    for line in &lines {
        let Some(container) = from_path(&line.path) else {
            continue;
        };
        match &mut found {
            None => found = Some(container),
            // Another hierarchy may say more of the same container (its pod).
            Some(first) if first.id == container.id && first.pod_uid.is_none() => {
                first.pod_uid = container.pod_uid;
                first.qos = first.qos.or(container.qos);
                first.runtime = first.runtime.or(container.runtime);
            }
            Some(_) => {}
        }
    }
    found
}

/// Reads `/proc/PID/cgroup` under `root` (the host's root: `/`, or where it is mounted).
pub fn read(root: &super::host::HostRoot, pid: u32) -> std::io::Result<Option<ContainerCgroup>> {
    use std::io::Read;
    let file = std::fs::File::open(root.pid_path(pid, "cgroup"))?;
    let mut bytes = Vec::new();
    file.take(MAX_CGROUP_FILE).read_to_end(&mut bytes)?;
    Ok(parse(&bytes))
}

/// The container named by one cgroup path.
pub fn from_path(path: &str) -> Option<ContainerCgroup> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    // The innermost container component: nested runtimes (a kind node in docker) put the
    // inner pod's containers below the outer container's cgroup.
    let (index, id, runtime) = components
        .iter()
        .enumerate()
        .rev()
        .find_map(|(index, component)| {
            let (id, runtime) = container_component(component, index, &components)?;
            Some((index, id, runtime))
        })
        .or_else(|| ctr_path(&components))?;
    let mut container = ContainerCgroup {
        id,
        runtime,
        namespace: None,
        pod_uid: None,
        qos: None,
        path: path.to_owned(),
    };
    if runtime == Some(Runtime::Containerd) && index == 1 && components.len() == 2 {
        container.namespace = Some(components[0].to_owned());
    }
    // The pod is an ancestor of the container, and its QoS class the pod's parent.
    for (position, component) in components[..index].iter().enumerate().rev() {
        if let Some(uid) = pod_uid(component) {
            container.pod_uid = Some(uid);
            container.qos = Some(qos(
                component,
                position.checked_sub(1).map(|p| components[p]),
            ));
            break;
        }
    }
    Some(container)
}

/// Whether a component names a container, and which runtime's naming it follows.
fn container_component(
    component: &str,
    index: usize,
    components: &[&str],
) -> Option<(String, Option<Runtime>)> {
    let unit = component.strip_suffix(".scope").unwrap_or(component);
    const PREFIXES: [(&str, Runtime); 4] = [
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("libpod-", Runtime::Podman),
        ("docker-", Runtime::Docker),
    ];
    for (prefix, runtime) in PREFIXES {
        // `crio-conmon-<id>.scope` and `libpod-conmon-<id>.scope` hold the runtime's monitor,
        // not the container: their rest is not an id, so they do not match.
        if let Some(id) = unit.strip_prefix(prefix)
            && is_hex_id(id)
        {
            return Some((id.to_owned(), Some(runtime)));
        }
    }
    if !is_hex_id(component) {
        return None;
    }
    // A bare id: cgroupfs naming (kubelet's `pod<uid>/<id>`, `--cgroup-parent`). Only
    // docker's own parent says whose it is.
    let parent = index.checked_sub(1).map(|p| components[p]);
    let runtime = (parent == Some("docker")).then_some(Runtime::Docker);
    Some((component.to_owned(), runtime))
}

/// `ctr run`'s `<namespace>/<id>`: the whole path, in a namespace containerd's tools use.
fn ctr_path(components: &[&str]) -> Option<(usize, String, Option<Runtime>)> {
    let [namespace, id] = components else {
        return None;
    };
    let valid_id = !id.is_empty()
        && id.len() <= 76
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    (CONTAINERD_NAMESPACES.contains(namespace) && valid_id)
        .then(|| (1, (*id).to_owned(), Some(Runtime::Containerd)))
}

/// The pod uid in `kubepods-burstable-pod<uid>.slice` (systemd) or `pod<uid>` (cgroupfs).
fn pod_uid(component: &str) -> Option<String> {
    let raw = match component.strip_suffix(".slice") {
        Some(unit) => unit.rsplit_once("-pod")?.1,
        None => component.strip_prefix("pod")?,
    };
    // systemd escapes `-` (its hierarchy separator) in the uid as `_`.
    let uid = raw.replace('_', "-");
    let groups: Vec<&str> = uid.split('-').collect();
    let shape = [8, 4, 4, 4, 12];
    (groups.len() == 5
        && groups
            .iter()
            .zip(shape)
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit())))
    .then_some(uid)
}

/// The QoS class: named in the pod's own systemd slice, or by its cgroupfs parent directory;
/// a pod directly under `kubepods` is guaranteed.
fn qos(pod: &str, parent: Option<&str>) -> Qos {
    let named = |text: &str| {
        if text.contains("besteffort") {
            Some(Qos::BestEffort)
        } else if text.contains("burstable") {
            Some(Qos::Burstable)
        } else {
            None
        }
    };
    named(pod)
        .or_else(|| parent.and_then(named))
        .unwrap_or(Qos::Guaranteed)
}

fn is_hex_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
#[path = "cgroup/tests.rs"]
mod tests;
