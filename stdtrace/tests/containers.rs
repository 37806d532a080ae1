//! Containers, as root, with real runtimes: podman (Debian's 4.3, with runc: this host's
//! hybrid cgroups are refused by crun) and containerd 1.6 (`ctr run`, started by the test) run
//! a busybox container that writes to stdout while the runtime process reading it (conmon, the
//! shim) is stopped. Node-wide stdtrace must name the stuck writer's container and pod, and its
//! reader as that container's runtime process, with where it writes the container's log.
//!
//! Needs podman, conmon, runc, containerd and busybox-static (`cargo xtask setup` installs
//! them). Without them, or without root, the test is skipped, except under `CI=true`, where it
//! fails.

#[path = "containers/containerd.rs"]
mod containerd;
#[path = "containers/filters.rs"]
mod filters;
#[path = "containers/in_container.rs"]
mod in_container;
#[path = "containers/pty.rs"]
mod pty;

#[path = "support/can_run.rs"]
mod can_run;
#[path = "support/stdtrace.rs"]
mod stdtrace;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use can_run::Need;
use serde_json::Value;
use stdtrace::json_lines;

const IMAGE: &str = "localhost/stdtrace-busybox";
const RUNC: &str = "/usr/sbin/runc";
/// `podman` options for a detached container on this machine: runc (crun refuses the hybrid
/// cgroups), rlimits no higher than the current ones (setrlimit above them is refused), and no
/// network (the writers need none, and a machine set up without recommends may have no network
/// stack for podman).
const RUN_DETACHED: [&str; 10] = [
    "--runtime",
    RUNC,
    "run",
    "-d",
    "--network",
    "none",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// Starts the busybox container `name` detached, with `options`, running `command`; returns
/// its id.
fn run_detached(name: &str, options: &[&str], command: &[&str]) -> String {
    let mut args = RUN_DETACHED.to_vec();
    args.extend_from_slice(options);
    args.extend_from_slice(&["--name", name, IMAGE]);
    args.extend_from_slice(command);
    let id = podman(&args);
    assert_eq!(id.len(), 64, "container id: {id}");
    id
}

/// Whether the tracer can run, and podman and what the test's image is built from (and
/// `extra`) are here.
fn can_run_podman(extra: &[&'static str]) -> bool {
    can_run::require(Need::Root)
        && ["/usr/bin/podman", "/usr/bin/conmon", RUNC, "/bin/busybox"]
            .iter()
            .chain(extra)
            .all(|program| can_run::require(Need::Program(Path::new(program))))
}

pub fn podman(args: &[&str]) -> String {
    let output = Command::new("podman")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running podman");
    assert!(
        output.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The busybox image, imported from a rootfs made of Debian's busybox-static (no image can be
/// pulled here).
pub fn ensure_image() {
    // The tests of this binary run in parallel: one imports, the others wait for it.
    static IMPORTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _importing = IMPORTING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let exists = Command::new("podman")
        .args(["image", "exists", IMAGE])
        .status()
        .is_ok_and(|status| status.success());
    if exists {
        return;
    }
    let rootfs = std::env::temp_dir().join(format!("stdtrace-busybox-{}", std::process::id()));
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    let installed = Command::new(bin.join("busybox"))
        .args(["--install", bin.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(installed.success(), "busybox --install");
    let script = format!(
        "tar -C '{}' -c . | podman import - {IMAGE}",
        rootfs.display()
    );
    let imported = Command::new("sh").args(["-c", &script]).status().unwrap();
    let _ = std::fs::remove_dir_all(&rootfs);
    assert!(imported.success(), "podman import");
}

/// The container this test started, and its conmon once stopped: resumed and removed on drop,
/// by the pid and name the test made.
struct TestContainer {
    name: String,
    stopped_conmon: Option<i32>,
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        if let Some(conmon) = self.stopped_conmon {
            // SAFETY: resuming the conmon this test stopped.
            unsafe { libc::kill(conmon, libc::SIGCONT) };
        }
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub fn records_of<'a>(records: &'a [Value], kind: &str, state: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|record| record["type"] == kind && record["state"] == state)
        .collect()
}

/// A container started with the three `io.kubernetes.*` annotations, writing to stdout in a
/// loop, with its conmon stopped (so that the writer is stuck on a full pipe): everything the
/// tests assert on.
pub struct StuckContainer {
    container: TestContainer,
    pub id: String,
    pub writer: u64,
    pub conmon: i32,
    pub log_path: String,
}

impl StuckContainer {
    pub fn name(&self) -> &str {
        &self.container.name
    }

    /// Starts it under a name unique to this test process and `tag`, in pod `namespace/pod`
    /// (container `app`), and waits until its writer is stuck.
    pub fn start(tag: &str, namespace: &str, pod: &str) -> Self {
        ensure_image();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos())
            .unwrap_or_default();
        let mut container = TestContainer {
            name: format!("stdtrace-{tag}-{}-{nanos:x}", std::process::id()),
            stopped_conmon: None,
        };
        let line = "a".repeat(100);
        let script = format!("while :; do echo {line}; done");
        let pod_name = format!("io.kubernetes.pod.name={pod}");
        let pod_namespace = format!("io.kubernetes.pod.namespace={namespace}");
        let id = run_detached(
            &container.name,
            &[
                "--annotation",
                &pod_name,
                "--annotation",
                &pod_namespace,
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
        let writer: u64 = fields
            .next()
            .and_then(|pid| pid.parse().ok())
            .expect("writer pid");
        let conmon: i32 = fields
            .next()
            .and_then(|pid| pid.parse().ok())
            .expect("conmon pid");
        let log_path = fields.next().expect("log path").to_owned();
        // Stop the runtime's log reader (not the traced writer): the writer's pipe fills.
        // SAFETY: signalling the conmon of the container this test started.
        assert_eq!(unsafe { libc::kill(conmon, libc::SIGSTOP) }, 0);
        container.stopped_conmon = Some(conmon);
        std::thread::sleep(Duration::from_millis(1500));
        Self {
            container,
            id,
            writer,
            conmon,
            log_path,
        }
    }
}

#[test]
fn podman_writer_stuck_on_its_stopped_conmon() {
    if !can_run_podman(&[]) {
        return;
    }
    let stuck_container = StuckContainer::start("test", "prod", "web-0");
    let StuckContainer {
        id,
        writer,
        conmon,
        log_path,
        ..
    } = &stuck_container;
    let (id, writer, conmon, log_path) = (id.clone(), *writer, *conmon, log_path.clone());
    let container_name = stuck_container.name().to_owned();

    let output = stdtrace::run(&["--format", "json", "--stuck", "1s", "--duration", "5s"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stdtrace failed: {stderr}");
    let records = json_lines(&output.stdout);
    let stuck: Vec<&Value> = records_of(&records, "blocked_write", "stuck")
        .into_iter()
        .filter(|record| record["pid"] == writer)
        .collect();
    assert!(
        !stuck.is_empty(),
        "no stuck write of pid {writer}: {records:?}\n{stderr}"
    );
    let stuck = stuck[0];
    let found = &stuck["container"];
    assert_eq!(found["id"], id, "{stuck}");
    assert_eq!(found["runtime"], "podman", "{stuck}");
    assert_eq!(found["name"], container_name.as_str(), "{stuck}");
    assert_eq!(found["image"], format!("{IMAGE}:latest"), "{stuck}");
    assert_eq!(found["pod"]["name"], "web-0", "{stuck}");
    assert_eq!(found["pod"]["namespace"], "prod", "{stuck}");
    assert_eq!(found["container_name"], "app", "{stuck}");
    assert_eq!(found["log_path"], log_path.as_str(), "{stuck}");
    assert_eq!(stuck["target"]["kind"], "pipe", "{stuck}");

    // The summary's stuck list names the container too.
    let summary = records
        .iter()
        .find(|record| record["type"] == "summary")
        .expect("a summary");
    let listed = summary["stuck"]
        .as_array()
        .and_then(|stuck| stuck.iter().find(|write| write["pid"] == writer))
        .unwrap_or_else(|| panic!("pid {writer} not in the summary's stuck list: {summary}"));
    assert_eq!(listed["container"]["id"], id, "{listed}");
    assert_eq!(listed["container"]["pod"]["name"], "web-0", "{listed}");

    let readers = stuck["target"]["readers"].as_array().expect("readers");
    let reader = readers
        .iter()
        .find(|reader| reader["pid"] == conmon)
        .unwrap_or_else(|| panic!("conmon {conmon} is not a reader: {stuck}"));
    assert_eq!(reader["comm"], "conmon", "{reader}");
    assert_eq!(reader["role"], "container log reader", "{reader}");
    assert_eq!(reader["state"], "stopped", "{reader}");
    assert_eq!(reader["reading"], false, "{reader}");
    assert_eq!(reader["serves"]["id"], id, "{reader}");
    assert_eq!(reader["serves"]["pod"]["name"], "web-0", "{reader}");
    assert!(
        reader.get("container").is_none(),
        "conmon runs outside: {reader}"
    );
    let sinks = reader["sends_to"].as_array().expect("sends_to");
    assert!(
        sinks
            .iter()
            .any(|sink| sink["kind"] == "file" && sink["path"] == log_path.as_str()),
        "conmon writes {log_path}: {reader}"
    );
}
