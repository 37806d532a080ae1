use super::*;

const ID: &str = "4f7e2b6c1d9a8e3f5b0c7d2a6e1f9b3c8d4a7e2f6b1c9d3a8e5f0b7c2d6a1e9f";
const UID: &str = "8d3c5f6a-1b2e-4c7d-9a0f-3e5b7c9d1a2f";
const UID_SYSTEMD: &str = "8d3c5f6a_1b2e_4c7d_9a0f_3e5b7c9d1a2f";

struct Case {
    what: &'static str,
    file: String,
    runtime: Option<Runtime>,
    pod_uid: Option<&'static str>,
    qos: Option<Qos>,
}

fn case(what: &'static str, file: String, runtime: Option<Runtime>) -> Case {
    Case {
        what,
        file,
        runtime,
        pod_uid: None,
        qos: None,
    }
}

fn pod(mut case: Case, qos: Qos) -> Case {
    case.pod_uid = Some(UID);
    case.qos = Some(qos);
    case
}

/// Lines as each runtime and driver writes them (cgroup(7); the kubelet's cgroup naming for
/// the systemd and cgroupfs drivers; containerd's, CRI-O's, podman's and docker's scope
/// names), with the rest of a real file around them.
fn table() -> Vec<Case> {
    vec![
        // containerd's CRI plugin, systemd driver, cgroup v2 (kubeadm's default today).
        pod(
            case(
                "containerd, systemd, v2, burstable",
                format!(
                    "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope\n"
                ),
                Some(Runtime::Containerd),
            ),
            Qos::Burstable,
        ),
        // Guaranteed pods sit directly under kubepods.slice.
        pod(
            case(
                "containerd, systemd, v2, guaranteed",
                format!(
                    "0::/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope\n"
                ),
                Some(Runtime::Containerd),
            ),
            Qos::Guaranteed,
        ),
        // CRI-O, systemd driver, cgroup v1: every controller line says it.
        pod(
            case(
                "cri-o, systemd, v1, besteffort",
                format!(
                    "12:pids:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-{ID}.scope\n\
                     11:memory:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-{ID}.scope\n\
                     1:name=systemd:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-{ID}.scope\n\
                     0::/\n"
                ),
                Some(Runtime::CriO),
            ),
            Qos::BestEffort,
        ),
        // CRI-O, cgroupfs driver.
        pod(
            case(
                "cri-o, cgroupfs, v2",
                format!("0::/kubepods/burstable/pod{UID}/crio-{ID}\n"),
                Some(Runtime::CriO),
            ),
            Qos::Burstable,
        ),
        // The kubelet's cgroupfs driver with containerd or docker: a bare id under the pod.
        pod(
            case(
                "kubelet cgroupfs, v1, besteffort",
                format!(
                    "11:memory:/kubepods/besteffort/pod{UID}/{ID}\n\
                     4:cpu,cpuacct:/kubepods/besteffort/pod{UID}/{ID}\n\
                     1:name=systemd:/kubepods/besteffort/pod{UID}/{ID}\n"
                ),
                None,
            ),
            Qos::BestEffort,
        ),
        pod(
            case(
                "kubelet cgroupfs, v1, guaranteed",
                format!("9:memory:/kubepods/pod{UID}/{ID}\n"),
                None,
            ),
            Qos::Guaranteed,
        ),
        // podman on this machine: cgroupfs manager, hybrid (v1 controllers + v2 unified).
        case(
            "podman, cgroupfs, hybrid",
            format!(
                "9:name=systemd:/libpod_parent/libpod-{ID}\n\
                 8:pids:/libpod_parent/libpod-{ID}\n\
                 4:memory:/libpod_parent/libpod-{ID}\n\
                 1:cpu:/libpod_parent/libpod-{ID}\n\
                 0::/libpod_parent/libpod-{ID}\n"
            ),
            Some(Runtime::Podman),
        ),
        // podman with systemd: machine.slice, and its `container` sub-cgroup (podman 4's
        // split of conmon and the payload).
        case(
            "podman, systemd, v2",
            format!("0::/machine.slice/libpod-{ID}.scope/container\n"),
            Some(Runtime::Podman),
        ),
        // docker, systemd driver and cgroupfs driver.
        case(
            "docker, systemd, v2",
            format!("0::/system.slice/docker-{ID}.scope\n"),
            Some(Runtime::Docker),
        ),
        case(
            "docker, cgroupfs, v1",
            format!("12:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n"),
            Some(Runtime::Docker),
        ),
        // kind: the node is a docker container; its kubelet (cgroup root /kubelet) nests the
        // pods inside it. The pod's container wins.
        pod(
            case(
                "kind, nested in docker",
                format!(
                    "0::/system.slice/docker-{}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope\n",
                    "a".repeat(64)
                ),
                Some(Runtime::Containerd),
            ),
            Qos::Burstable,
        ),
        // The same seen from inside the node, with a cgroup namespace.
        pod(
            case(
                "kind, from inside the node",
                format!(
                    "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope\n"
                ),
                Some(Runtime::Containerd),
            ),
            Qos::BestEffort,
        ),
    ]
}

#[test]
fn every_real_format() {
    for case in table() {
        let found =
            parse(case.file.as_bytes()).unwrap_or_else(|| panic!("{}: no container", case.what));
        assert_eq!(found.id, ID, "{}", case.what);
        assert_eq!(found.runtime, case.runtime, "{}", case.what);
        assert_eq!(found.pod_uid.as_deref(), case.pod_uid, "{}", case.what);
        assert_eq!(found.qos, case.qos, "{}", case.what);
    }
}

#[test]
fn ctr_names_its_cgroup_namespace_slash_name() {
    let found = parse(b"0::/default/stdtrace-test-1\n").unwrap();
    assert_eq!(found.id, "stdtrace-test-1");
    assert_eq!(found.runtime, Some(Runtime::Containerd));
    assert_eq!(found.namespace.as_deref(), Some("default"));
    // Any other two components are not containerd's.
    assert_eq!(
        parse(b"4:memory:/process_api/148685515d97f2dfcbdfcb7475c3e397\n0::/\n"),
        None
    );
    assert_eq!(parse(b"0::/system.slice/cron.service\n"), None);
}

#[test]
fn runtime_monitors_are_not_containers() {
    // conmon's own scopes: CRI-O's and podman's (systemd), and podman's cgroupfs one.
    for file in [
        format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/crio-conmon-{ID}.scope\n"
        ),
        format!("0::/machine.slice/libpod-conmon-{ID}.scope\n"),
        "0::/libpod_parent/conmon\n".to_owned(),
        "0::/system.slice/containerd.service\n".to_owned(),
    ] {
        assert_eq!(parse(file.as_bytes()), None, "{file}");
    }
}

#[test]
fn hosts_and_sessions_are_not_containers() {
    for file in [
        "0::/\n",
        "0::/init.scope\n",
        "0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-firefox-2211.scope\n",
        "9:name=systemd:/\n8:pids:/\n4:memory:/\n0::/\n",
        "",
    ] {
        assert_eq!(parse(file.as_bytes()), None, "{file:?}");
    }
}

#[test]
fn a_pod_uid_from_another_hierarchy_completes_the_first() {
    // The v2 line names the container, the v1 line its pod (a hybrid host mid-migration).
    let file = format!(
        "0::/libpod_parent/libpod-{ID}\n3:memory:/kubepods/burstable/pod{UID}/libpod-{ID}\n"
    );
    let found = parse(file.as_bytes()).unwrap();
    assert_eq!(found.pod_uid.as_deref(), Some(UID));
    assert_eq!(found.qos, Some(Qos::Burstable));
}

#[test]
fn malformed_bytes_never_panic() {
    let long = "/a".repeat(10_000);
    let inputs: Vec<Vec<u8>> = vec![
        b"\xff\xfe:\x00:/\xc3\n".to_vec(),
        b":::::\n::\n:\n".to_vec(),
        b"99999999999999999999::/docker/x\n".to_vec(),
        format!("0::{long}\n").into_bytes(),
        format!("0::/kubepods/pod{}/{ID}", "_".repeat(36)).into_bytes(),
        format!("0::/kubepods-pod.slice/crio-{}.scope", &ID[..63]).into_bytes(),
        format!("0::/libpod-{ID}é.scope").into_bytes(),
    ];
    for input in inputs {
        let _ = parse(&input);
    }
    // A non-hex 64-character name is not an id.
    assert_eq!(
        parse(format!("0::/docker/{}", "g".repeat(64)).as_bytes()),
        None
    );
}

#[test]
fn the_lines_keep_their_hierarchies() {
    let parsed = lines(b"9:name=systemd:/a\n4:memory,hugetlb:/b\n0::/c\nbroken\n");
    assert_eq!(parsed.len(), 3);
    assert_eq!(parsed[1].controllers, "memory,hugetlb");
    assert_eq!((parsed[2].hierarchy, parsed[2].path.as_str()), (0, "/c"));
}

#[test]
fn reads_this_process() {
    // Whatever this machine is, reading our own file works and does not panic.
    assert!(
        read(
            &crate::process::host::HostRoot::default(),
            std::process::id()
        )
        .is_ok()
    );
}

/// Deterministic mutations of real lines (bytes flipped, cut, repeated): never a panic, and
/// an id found is always one of the path's components.
#[test]
fn mutated_lines_never_panic() {
    let seeds: Vec<Vec<u8>> = table()
        .into_iter()
        .map(|case| case.file.into_bytes())
        .collect();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..5000 {
        let mut bytes = seeds[round % seeds.len()].clone();
        for _ in 0..(next() % 8) {
            let at = (next() as usize) % bytes.len().max(1);
            match next() % 4 {
                0 if !bytes.is_empty() => bytes[at] = next() as u8,
                1 => bytes.truncate(at),
                2 => bytes.insert(at.min(bytes.len()), [b'/', b':', b'\n', b'-'][at % 4]),
                _ => bytes.extend_from_within(..at.min(bytes.len())),
            }
        }
        if let Some(found) = parse(&bytes) {
            assert!(found.path.contains(&found.id), "{found:?}");
        }
    }
}
