use std::fs;

use super::*;
use crate::report::record::Runtime;

const PODMAN_ID: &str = "cad264df46f47106f4671aa3f6ae9e73e539a7582bac636d4a4f0a214cedd15b";
const ID: &str = "4f7e2b6c1d9a8e3f5b0c7d2a6e1f9b3c8d4a7e2f6b1c9d3a8e5f0b7c2d6a1e9f";
const UID: &str = "8d3c5f6a-1b2e-4c7d-9a0f-3e5b7c9d1a2f";

/// A fake host root in a fresh temporary directory, removed on drop.
struct HostRoot(PathBuf);

impl HostRoot {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("stdtrace-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        HostRoot(dir)
    }

    fn write(&self, path: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for HostRoot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn cgroup(line: &str) -> ContainerCgroup {
    cgroup::parse(line.as_bytes()).unwrap()
}

/// podman 4.3's own files, as it wrote them on this machine for
/// `podman run --annotation io.kubernetes.pod.name=web-0 ... --name stdtrace-probe-5246`.
fn podman_host(test: &str) -> HostRoot {
    let host = HostRoot::new(test);
    let store = "var/lib/containers/storage/overlay-containers";
    host.write(
        &format!("{store}/{PODMAN_ID}/userdata/config.json"),
        include_bytes!("testdata/podman-4.3-config.json"),
    );
    host.write(
        &format!("{store}/containers.json"),
        include_bytes!("testdata/podman-4.3-containers.json"),
    );
    host.write(&format!("{store}/{PODMAN_ID}/userdata/ctr.log"), b"");
    host
}

#[test]
fn podman_from_its_bundle_and_its_store() {
    let host = podman_host("podman");
    let mut containers = Containers::new(&host.0);
    let found = containers.resolve(&cgroup(&format!("0::/libpod_parent/libpod-{PODMAN_ID}\n")));
    assert_eq!(found.id, PODMAN_ID);
    assert_eq!(found.runtime, Some(Runtime::Podman));
    assert_eq!(found.name.as_deref(), Some("stdtrace-probe-5246"));
    assert_eq!(
        found.image.as_deref(),
        Some("localhost/stdtrace-busybox:latest")
    );
    assert_eq!(found.pod.name.as_deref(), Some("web-0"));
    assert_eq!(found.pod.namespace.as_deref(), Some("prod"));
    assert_eq!(found.container_name.as_deref(), Some("app"));
    assert_eq!(
        found.log_path,
        Some(format!(
            "/var/lib/containers/storage/overlay-containers/{PODMAN_ID}/userdata/ctr.log"
        ))
    );
    assert_eq!(found.unknown, None);
}

/// containerd's CRI plugin's annotations, as in its `pkg/cri/annotations` (containerd 1.6+).
const CONTAINERD_BUNDLE: &str = r#"{
  "ociVersion": "1.1.0",
  "process": {"user": {"uid": 0, "gid": 0}, "args": ["/bin/app"], "cwd": "/"},
  "root": {"path": "rootfs"},
  "annotations": {
    "io.kubernetes.cri.container-name": "app",
    "io.kubernetes.cri.container-type": "container",
    "io.kubernetes.cri.image-name": "registry.example/app:1.4",
    "io.kubernetes.cri.sandbox-id": "9e1a6b5c3d2f4a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b",
    "io.kubernetes.cri.sandbox-name": "web-0",
    "io.kubernetes.cri.sandbox-namespace": "prod",
    "io.kubernetes.cri.sandbox-uid": "8d3c5f6a-1b2e-4c7d-9a0f-3e5b7c9d1a2f"
  }
}"#;

#[test]
fn containerd_from_its_task_bundle() {
    let host = HostRoot::new("containerd");
    host.write(
        &format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{ID}/config.json"),
        CONTAINERD_BUNDLE.as_bytes(),
    );
    let line = format!(
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope\n",
        UID.replace('-', "_")
    );
    let found = Containers::new(&host.0).resolve(&cgroup(&line));
    assert_eq!(found.runtime, Some(Runtime::Containerd));
    assert_eq!(found.pod.name.as_deref(), Some("web-0"));
    assert_eq!(found.pod.namespace.as_deref(), Some("prod"));
    assert_eq!(found.pod.uid.as_deref(), Some(UID));
    assert_eq!(found.container_name.as_deref(), Some("app"));
    assert_eq!(found.image.as_deref(), Some("registry.example/app:1.4"));
    assert_eq!(found.unknown, None);
}

#[test]
fn ctr_containers_are_named_by_their_id() {
    let host = HostRoot::new("ctr");
    host.write(
        "run/containerd/io.containerd.runtime.v2.task/default/stdtrace-1/config.json",
        br#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.sandbox-name":"web-0"}}"#,
    );
    let found = Containers::new(&host.0).resolve(&cgroup("0::/default/stdtrace-1\n"));
    assert_eq!(found.name.as_deref(), Some("stdtrace-1"));
    assert_eq!(found.pod.name.as_deref(), Some("web-0"));
    assert_eq!(found.runtime, Some(Runtime::Containerd));
}

/// CRI-O's bundle annotations (its `pkg/annotations` and the kubelet's labels).
#[test]
fn cri_o_from_its_run_directory() {
    let host = HostRoot::new("crio");
    let bundle = format!(
        r#"{{"ociVersion":"1.0.2-dev","annotations":{{
        "io.kubernetes.container.name":"app",
        "io.kubernetes.cri-o.ContainerID":"{ID}",
        "io.kubernetes.cri-o.ImageName":"registry.example/app:1.4",
        "io.kubernetes.cri-o.LogPath":"/var/log/pods/prod_web-0_{UID}/app/0.log",
        "io.kubernetes.pod.name":"web-0",
        "io.kubernetes.pod.namespace":"prod",
        "io.kubernetes.pod.uid":"{UID}"}}}}"#
    );
    host.write(
        &format!("run/containers/storage/overlay-containers/{ID}/userdata/config.json"),
        bundle.as_bytes(),
    );
    let found = Containers::new(&host.0).resolve(&cgroup(&format!(
        "0::/kubepods/burstable/pod{UID}/crio-{ID}\n"
    )));
    assert_eq!(found.runtime, Some(Runtime::CriO));
    assert_eq!(found.pod.uid.as_deref(), Some(UID));
    assert_eq!(
        found.log_path,
        Some(format!("/var/log/pods/prod_web-0_{UID}/app/0.log"))
    );
    assert_eq!(found.image.as_deref(), Some("registry.example/app:1.4"));
}

#[test]
fn docker_from_its_config_v2() {
    let host = HostRoot::new("docker");
    host.write(
        &format!("var/lib/docker/containers/{ID}/config.v2.json"),
        format!(
            r#"{{"ID":"{ID}","Name":"/k8s_app_web-0_prod_{UID}_0","LogPath":"/var/lib/docker/containers/{ID}/{ID}-json.log",
            "Config":{{"Image":"registry.example/app:1.4","Labels":{{"io.kubernetes.pod.name":"web-0",
            "io.kubernetes.pod.namespace":"prod","io.kubernetes.container.name":"app"}}}}}}"#
        )
        .as_bytes(),
    );
    let found =
        Containers::new(&host.0).resolve(&cgroup(&format!("0::/system.slice/docker-{ID}.scope\n")));
    assert_eq!(found.runtime, Some(Runtime::Docker));
    assert_eq!(found.name, Some(format!("k8s_app_web-0_prod_{UID}_0")));
    assert_eq!(found.pod.name.as_deref(), Some("web-0"));
    assert_eq!(found.container_name.as_deref(), Some("app"));
}

#[test]
fn without_state_the_kubelet_logs_name_the_pod() {
    let host = HostRoot::new("fallback");
    host.write(&format!("var/log/pods/prod_web-0_{UID}/app/0.log"), b"");
    let found = Containers::new(&host.0)
        .resolve(&cgroup(&format!("0::/kubepods/besteffort/pod{UID}/{ID}\n")));
    assert_eq!(found.pod.name.as_deref(), Some("web-0"));
    assert_eq!(found.pod.namespace.as_deref(), Some("prod"));
    assert_eq!(found.pod.uid.as_deref(), Some(UID));
    assert_eq!(found.container_name.as_deref(), Some("app"));
    let unknown = found.unknown.as_deref().unwrap();
    assert!(
        unknown.starts_with("runtime, image: no runtime state"),
        "{unknown}"
    );
}

#[test]
fn huge_and_malformed_bundles_are_refused_with_a_reason() {
    let host = HostRoot::new("hostile");
    let dir = format!("run/containers/storage/overlay-containers/{ID}/userdata");
    let huge = vec![b' '; (state::MAX_CONFIG + 1) as usize];
    host.write(&format!("{dir}/config.json"), &huge);
    let line = format!("0::/libpod_parent/libpod-{ID}\n");
    let found = Containers::new(&host.0).resolve(&cgroup(&line));
    let unknown = found.unknown.as_deref().unwrap();
    assert!(
        unknown.contains("more than the 4194304-byte bound"),
        "{unknown}"
    );
    assert_eq!(
        found.runtime,
        Some(Runtime::Podman),
        "the cgroup still says"
    );

    for garbage in [
        &b"{\"annotations\": [1, 2"[..],
        b"\xff\xfe\x00",
        b"{\"annotations\": {\"io.kubernetes.pod.name\": 7}}",
        &"[".repeat(100_000).into_bytes(),
    ] {
        host.write(&format!("{dir}/config.json"), garbage);
        let found = Containers::new(&host.0).resolve(&cgroup(&line));
        assert_eq!(found.pod.name, None);
        assert!(found.unknown.is_some());
    }
}

#[test]
fn an_unreadable_state_leaves_the_id_and_says_why() {
    let host = HostRoot::new("unreadable");
    // A directory where the bundle should be: reading it fails (as a permission error would).
    fs::create_dir_all(host.0.join(format!(
        "var/lib/containers/storage/overlay-containers/{ID}/userdata/config.json"
    )))
    .unwrap();
    let found =
        Containers::new(&host.0).resolve(&cgroup(&format!("0::/libpod_parent/libpod-{ID}\n")));
    assert_eq!(found.id, ID);
    let unknown = found.unknown.as_deref().unwrap();
    assert!(unknown.contains("config.json"), "{unknown}");
}

#[test]
fn metadata_is_resolved_once_and_outlives_the_container() {
    let host = podman_host("cache");
    let mut containers = Containers::new(&host.0);
    let line = cgroup(&format!("0::/libpod_parent/libpod-{PODMAN_ID}\n"));
    let first = containers.resolve(&line);
    assert!(Arc::ptr_eq(&first, &containers.resolve(&line)), "cached");
    // The container is removed: its state goes, its metadata stays in the deleted cache.
    fs::remove_dir_all(host.0.join("var/lib/containers/storage/overlay-containers")).unwrap();
    containers.force_sweep();
    assert!(containers.live.is_empty());
    let later = containers.resolve(&line);
    assert_eq!(later.pod.name.as_deref(), Some("web-0"));
    assert!(Arc::ptr_eq(&first, &later));
    assert!(containers.cached(PODMAN_ID).is_some());
}

#[test]
fn the_deleted_cache_is_bounded() {
    let host = HostRoot::new("bounded");
    let mut containers = Containers::new(&host.0);
    for n in 0..(MAX_DELETED + 10) {
        containers.remember_deleted(Arc::new(Container {
            id: format!("{n:064x}"),
            ..Container::default()
        }));
    }
    assert_eq!(containers.deleted.len(), MAX_DELETED);
    assert!(
        containers.cached(&format!("{:064x}", 0)).is_none(),
        "the oldest went first"
    );
}

#[test]
fn a_process_outside_containers_has_none() {
    let host = HostRoot::new("host-process");
    host.write(
        "proc/77/cgroup",
        b"9:name=systemd:/\n0::/user.slice/session-1.scope\n",
    );
    host.write(
        "proc/78/cgroup",
        format!("0::/libpod_parent/libpod-{ID}\n").as_bytes(),
    );
    let mut containers = Containers::new(&host.0);
    assert_eq!(containers.of_process(77), None);
    assert_eq!(containers.of_process(79), None, "gone");
    assert_eq!(
        containers.of_process(78).map(|found| found.id.clone()),
        Some(ID.to_owned())
    );
}

#[test]
fn a_shims_working_directory_says_where_containerd_keeps_its_tasks() {
    // containerd started with `--state /state`; ctr run with a kubepods-style `--cgroup`.
    let host = HostRoot::new("shim-state");
    host.write(
        &format!("state/io.containerd.runtime.v2.task/default/{ID}/config.json"),
        CONTAINERD_BUNDLE.as_bytes(),
    );
    host.write(
        "proc/90/cgroup",
        format!(
            "4:memory:/kubepods/besteffort/pod{UID}/{ID}\n0::/kubepods/besteffort/pod{UID}/{ID}\n"
        )
        .as_bytes(),
    );
    host.write("proc/90/stat", b"90 (sh) S 80 90 90 0 -1 4194560 97 0 0 0");
    host.write(
        "proc/80/stat",
        b"80 (containerd-shim) S 1 80 1 0 -1 0 0 0 0 0",
    );
    host.write("proc/80/comm", b"containerd-shim\n");
    std::os::unix::fs::symlink(
        format!("/state/io.containerd.runtime.v2.task/default/{ID}"),
        host.0.join("proc/80/cwd"),
    )
    .unwrap();
    let mut containers = Containers::new(&host.0);
    let found = containers.of_process(90).unwrap();
    assert_eq!(found.runtime, Some(Runtime::Containerd));
    assert_eq!(found.pod.name.as_deref(), Some("web-0"));
    assert_eq!(found.pod.uid.as_deref(), Some(UID));
    assert_eq!(found.container_name.as_deref(), Some("app"));
    assert_eq!(found.unknown, None);
}

#[test]
fn parent_pids_survive_hostile_comms() {
    let host = HostRoot::new("stat");
    host.write("proc/5/stat", b"5 (a) b) S 3 5 5");
    host.write("proc/6/stat", b"6 (\xff");
    assert_eq!(
        parent_of(&crate::process::host::HostRoot::new(&host.0), 5),
        Some(3)
    );
    assert_eq!(
        parent_of(&crate::process::host::HostRoot::new(&host.0), 6),
        None
    );
    assert_eq!(
        parent_of(&crate::process::host::HostRoot::new(&host.0), 7),
        None
    );
}

/// Deterministic mutations of podman's real config.json: parsed or refused, never a panic.
#[test]
fn mutated_bundles_never_panic() {
    let seed = include_bytes!("testdata/podman-4.3-config.json");
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..2000 {
        let mut bytes = seed.to_vec();
        for _ in 0..(1 + next() % 6) {
            let at = (next() as usize) % bytes.len().max(1);
            match next() % 3 {
                0 if !bytes.is_empty() => bytes[at] = next() as u8,
                1 => bytes.truncate(at),
                _ => bytes.insert(at.min(bytes.len()), [b'{', b'[', b'"', b'\\'][at % 4]),
            }
        }
        if let Ok(bundle) = state::parse_json::<state::Bundle>(&bytes) {
            let _ = bundle.annotation("io.kubernetes.pod.name");
        }
    }
}
