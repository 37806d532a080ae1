//! stdtrace as a node agent: its image (built from scratch by the same code as `cargo xtask
//! image`) runs under podman with exactly the privileges, mounts, environment and arguments of
//! `deploy/kubernetes/stdtrace.yaml` (read from that file: the test proves the manifest, not a
//! copy of it), and gives the same report of a stuck container as stdtrace on the host; so does
//! `stdtrace snapshot` (no BPF) in that container.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;

use super::{
    RUNC, TestContainer, can_run_podman, ensure_image, podman, records_of, run_detached, stdtrace,
};

#[path = "../../../xtask/src/image/oci.rs"]
mod oci;

const MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/kubernetes/stdtrace.yaml"
);
const AGENT_IMAGE: &str = "localhost/stdtrace:test";

/// A busybox container with the three `io.kubernetes.*` annotations writing to stdout while
/// its conmon is stopped (SIGSTOP): the writer stuck on a full pipe.
pub(super) struct StuckContainer {
    pub(super) container: TestContainer,
    pub(super) id: String,
    pub(super) writer: u64,
    pub(super) conmon: i32,
    pub(super) log_path: String,
}

impl StuckContainer {
    pub(super) fn start() -> Self {
        ensure_image();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos())
            .unwrap_or_default();
        let mut container = TestContainer {
            name: format!("stdtrace-agent-test-{}-{nanos:x}", std::process::id()),
            stopped_conmon: None,
        };
        let script = format!("while :; do echo {}; done", "a".repeat(100));
        let id = run_detached(
            &container.name,
            &[
                "--annotation",
                "io.kubernetes.pod.name=web-0",
                "--annotation",
                "io.kubernetes.pod.namespace=prod",
                "--annotation",
                "io.kubernetes.container.name=app",
            ],
            &["sh", "-c", &script],
        );
        let pids = podman(&[
            "inspect",
            "--format",
            "{{.State.Pid}} {{.State.ConmonPid}} {{.HostConfig.LogConfig.Path}}",
            &container.name,
        ]);
        let mut fields = pids.split_whitespace();
        let writer = fields.next().and_then(|pid| pid.parse().ok());
        let conmon = fields.next().and_then(|pid| pid.parse().ok());
        let (Some(writer), Some(conmon), Some(log_path)) = (writer, conmon, fields.next()) else {
            panic!("podman inspect: {pids}");
        };
        // Stop the runtime's log reader (not the traced writer): the writer's pipe fills.
        // SAFETY: signalling the conmon of the container this test started.
        assert_eq!(unsafe { libc::kill(conmon, libc::SIGSTOP) }, 0);
        container.stopped_conmon = Some(conmon);
        std::thread::sleep(Duration::from_millis(1500));
        StuckContainer {
            container,
            id,
            writer,
            conmon,
            log_path: log_path.to_owned(),
        }
    }
}

/// `podman run` as the kubelet would run the DaemonSet's one container: its flags and its
/// arguments (after the image).
#[derive(Debug, Default)]
struct PodmanRun {
    flags: Vec<String>,
    args: Vec<String>,
    /// The capabilities added, in the manifest's order.
    capabilities: Vec<String>,
}

fn field<'a>(value: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(value, |value, key| &value[key])
}

/// Translates the manifest's DaemonSet into podman's terms. Every securityContext key is
/// translated or refused: a privilege the test does not know how to grant fails it.
fn from_manifest(manifest: &str, node_name: &str) -> PodmanRun {
    let documents: Vec<Value> = serde_yaml_ng::Deserializer::from_str(manifest)
        .map(|document| serde::Deserialize::deserialize(document).expect("the manifest is YAML"))
        .collect();
    let kinds: Vec<&str> = documents
        .iter()
        .filter_map(|document| document["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["Namespace", "ServiceAccount", "DaemonSet"]);
    let daemonset = &documents[2];
    let pod = field(daemonset, "spec.template.spec");
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    let container = &containers[0];
    let mut run = PodmanRun::default();
    let mut flag = |text: String| run.flags.push(text);

    assert_eq!(pod["hostPID"], true, "the host's pid namespace");
    flag("--pid=host".into());
    for key in ["hostNetwork", "hostIPC"] {
        assert!(pod[key].is_null() || pod[key] == false, "{key}");
    }

    let security = &container["securityContext"];
    for (key, value) in security.as_object().expect("a securityContext") {
        match key.as_str() {
            "privileged" => assert_eq!(value, false, "never privileged"),
            "allowPrivilegeEscalation" => {
                assert_eq!(value, false);
                flag("--security-opt=no-new-privileges".into());
            }
            "readOnlyRootFilesystem" => {
                if value == true {
                    flag("--read-only".into());
                }
            }
            "runAsUser" => flag(format!("--user={}", value.as_u64().expect("a uid"))),
            "seccompProfile" => match value["type"].as_str() {
                Some("Unconfined") => flag("--security-opt=seccomp=unconfined".into()),
                Some("RuntimeDefault") => {}
                other => panic!("seccompProfile {other:?}"),
            },
            "capabilities" => {
                let drop: Vec<&str> = value["drop"]
                    .as_array()
                    .expect("capabilities.drop")
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                assert_eq!(drop, ["ALL"], "every capability dropped first");
                flag("--cap-drop=ALL".into());
                for added in value["add"].as_array().expect("capabilities.add") {
                    let added = added.as_str().expect("a capability name");
                    assert_ne!(added, "SYS_ADMIN", "SYS_ADMIN is not needed");
                    run.capabilities.push(added.to_owned());
                }
            }
            other => panic!("securityContext.{other} is not translated to podman"),
        }
    }
    if !run.capabilities.is_empty() {
        run.flags
            .push(format!("--cap-add={}", run.capabilities.join(",")));
    }

    // Volumes: hostPath only, each mounted where the container asks, read-only as asked.
    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|volume| (volume["name"].as_str().expect("a volume name"), volume))
        .collect();
    for mount in container["volumeMounts"].as_array().expect("volumeMounts") {
        let name = mount["name"].as_str().expect("a mount's volume");
        let host = &volumes[name]["hostPath"];
        let path = host["path"].as_str().expect("a hostPath");
        match host["type"].as_str() {
            Some("Directory") => assert!(Path::new(path).is_dir(), "{path} is not a directory"),
            // What the kubelet does for DirectoryOrCreate.
            Some("DirectoryOrCreate") => std::fs::create_dir_all(path).expect("creating it"),
            other => panic!("hostPath type {other:?} of {name}"),
        }
        assert_eq!(mount["readOnly"], true, "{name} is mounted read-only");
        let at = mount["mountPath"].as_str().expect("a mountPath");
        run.flags.push(format!("--volume={path}:{at}:ro"));
    }

    for variable in container["env"].as_array().expect("env") {
        let name = variable["name"].as_str().expect("an env name");
        let value = match (
            variable["value"].as_str(),
            variable["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        ) {
            (Some(value), None) => value.to_owned(),
            (None, Some("spec.nodeName")) => node_name.to_owned(),
            other => panic!("env {name}: {other:?}"),
        };
        run.flags.push(format!("--env={name}={value}"));
    }

    let limits = &container["resources"]["limits"];
    let memory = limits["memory"].as_str().expect("a memory limit");
    let mebibytes = memory.strip_suffix("Mi").expect("a memory limit in Mi");
    run.flags.push(format!("--memory={mebibytes}m"));
    let cpu = limits["cpu"].as_str().expect("a CPU limit");
    let millis: f64 = cpu
        .strip_suffix('m')
        .and_then(|millis| millis.parse().ok())
        .expect("a CPU limit in m");
    run.flags.push(format!("--cpus={}", millis / 1000.0));

    let command: Vec<&str> = container["command"]
        .as_array()
        .expect("command")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(command, [oci::BINARY_IN_IMAGE]);
    run.flags.push(format!("--entrypoint={}", command[0]));
    run.args = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    run
}

fn host_name() -> String {
    let text = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("the host name");
    text.trim().to_owned()
}

/// The stdtrace image of the binary under test, built by `cargo xtask image`'s code.
fn build_agent_image() {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_stdtrace"));
    let archive =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/image/test/stdtrace-oci.tar");
    oci::build(&binary, AGENT_IMAGE, &archive).unwrap_or_else(|err| panic!("{err:#}"));
    assert!(archive.is_file(), "{} written", archive.display());
}

/// Whether the binary has an option (the manifest may name one a later merge brings).
fn knows_option(option: &str) -> bool {
    let help = Command::new(env!("CARGO_BIN_EXE_stdtrace"))
        .arg("--help")
        .output()
        .expect("stdtrace --help");
    String::from_utf8_lossy(&help.stdout).contains(option)
}

fn stuck_write_of<'a>(records: &'a [Value], writer: u64, output: &Output) -> &'a Value {
    records_of(records, "blocked_write", "stuck")
        .into_iter()
        .find(|record| record["pid"] == writer)
        .unwrap_or_else(|| {
            panic!(
                "no stuck write of pid {writer}: {records:?}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

fn reader(stuck: &Value, conmon: i32) -> &Value {
    stuck["target"]["readers"]
        .as_array()
        .and_then(|readers| readers.iter().find(|reader| reader["pid"] == conmon))
        .unwrap_or_else(|| panic!("conmon {conmon} is not a reader: {stuck}"))
}

#[test]
fn the_daemonset_reports_a_stuck_container_as_the_host_does() {
    if !can_run_podman(&[]) {
        return;
    }
    let node = host_name();
    let manifest = std::fs::read_to_string(MANIFEST).expect("reading the manifest");
    let mut run = from_manifest(&manifest, &node);
    assert_eq!(
        run.capabilities,
        [
            "BPF",
            "PERFMON",
            "SYS_PTRACE",
            "DAC_READ_SEARCH",
            "SYS_RESOURCE"
        ]
    );
    assert_eq!(
        &run.args[..2],
        ["--host-root", "/host"],
        "the host's filesystem at /host"
    );
    // `--metrics` comes with the metrics work; a binary without it runs the rest.
    if !knows_option("--metrics")
        && let Some(at) = run.args.iter().position(|arg| arg == "--metrics")
    {
        run.args.drain(at..at + 2);
    }
    build_agent_image();
    let stuck = StuckContainer::start();

    let agent_name = format!("stdtrace-agent-{}", std::process::id());
    let mut agent = Command::new("podman");
    agent
        .args(["--runtime", RUNC, "run", "--rm", "--name", &agent_name])
        .args(["--network", "none"])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .args(&run.flags)
        .arg(AGENT_IMAGE)
        .args(&run.args)
        .args(["--stuck", "1s", "--duration", "6s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("{agent:?}");
    let agent = agent.spawn().expect("podman run");
    let on_host = stdtrace::run(&["--format", "json", "--stuck", "1s", "--duration", "6s"]);
    let in_container = agent.wait_with_output().expect("the agent's output");
    assert!(
        in_container.status.success(),
        "stdtrace in its container failed: {}",
        String::from_utf8_lossy(&in_container.stderr)
    );
    assert!(
        on_host.status.success(),
        "stdtrace on the host failed: {}",
        String::from_utf8_lossy(&on_host.stderr)
    );

    let host_records = stdtrace::json_lines(&on_host.stdout);
    let agent_records = stdtrace::json_lines(&in_container.stdout);
    let from_host = stuck_write_of(&host_records, stuck.writer, &on_host);
    let from_agent = stuck_write_of(&agent_records, stuck.writer, &in_container);

    // What the host sees, as the container test asserts it.
    let container = &from_host["container"];
    assert_eq!(container["id"], stuck.id.as_str(), "{from_host}");
    assert_eq!(container["runtime"], "podman", "{from_host}");
    assert_eq!(
        container["name"],
        stuck.container.name.as_str(),
        "{from_host}"
    );
    assert_eq!(container["pod"]["name"], "web-0", "{from_host}");
    assert_eq!(container["pod"]["namespace"], "prod", "{from_host}");
    assert_eq!(container["container_name"], "app", "{from_host}");
    assert_eq!(
        container["log_path"],
        stuck.log_path.as_str(),
        "{from_host}"
    );
    // The agent sees the same: the whole container object, and the same writer and target.
    assert_eq!(from_agent["container"], *container, "{from_agent}");
    for key in ["pid", "tid", "comm", "syscall", "fd", "count"] {
        assert_eq!(from_agent[key], from_host[key], "{key}: {from_agent}");
    }
    for key in ["kind", "inode", "path"] {
        assert_eq!(
            from_agent["target"][key], from_host["target"][key],
            "target.{key}: {from_agent}"
        );
    }
    // Its node is the one the downward API names (the host's name here), on every record.
    assert_eq!(from_host["node"], node.as_str());
    assert!(
        agent_records
            .iter()
            .all(|record| record["node"] == node.as_str()),
        "every record's node is {node}: {agent_records:?}"
    );

    let host_reader = reader(from_host, stuck.conmon);
    let agent_reader = reader(from_agent, stuck.conmon);
    assert_eq!(host_reader["comm"], "conmon", "{host_reader}");
    assert_eq!(host_reader["role"], "container log reader", "{host_reader}");
    assert_eq!(host_reader["state"], "stopped", "{host_reader}");
    assert_eq!(
        host_reader["serves"]["id"],
        stuck.id.as_str(),
        "{host_reader}"
    );
    for key in [
        "comm", "role", "state", "reading", "serves", "sends_to", "fds",
    ] {
        assert_eq!(agent_reader[key], host_reader[key], "{key}: {agent_reader}");
    }

    // `snapshot` (no BPF) in the same container, with the same privileges, under the host root.
    let writer = stuck.writer.to_string();
    let snapshot = Command::new("podman")
        .args(["--runtime", RUNC, "run", "--rm", "--network", "none"])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .args(&run.flags)
        .arg(AGENT_IMAGE)
        .args([
            "snapshot",
            "--host-root",
            "/host",
            "--format",
            "json",
            "--pid",
            &writer,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("podman run snapshot");
    let snapshot_records = stdtrace::json_lines(&snapshot.stdout);
    let from_snapshot = stuck_write_of(&snapshot_records, stuck.writer, &snapshot);
    assert_eq!(from_snapshot["container"], *container, "{from_snapshot}");
    assert_eq!(from_snapshot["node"], node.as_str(), "{from_snapshot}");
    let snapshot_reader = reader(from_snapshot, stuck.conmon);
    for key in ["comm", "role", "state", "serves", "sends_to"] {
        assert_eq!(
            snapshot_reader[key], host_reader[key],
            "{key}: {snapshot_reader}"
        );
    }

    let sinks = agent_reader["sends_to"].as_array().expect("sends_to");
    assert!(
        sinks
            .iter()
            .any(|sink| sink["kind"] == "file" && sink["path"] == stuck.log_path.as_str()),
        "conmon writes {}: {agent_reader}",
        stuck.log_path
    );
}
