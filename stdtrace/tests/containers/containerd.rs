//! containerd 1.6, started by the test with its own root, state and socket (no systemd here),
//! runs `ctr run` containers with the CRI plugin's annotations and a kubepods-style cgroup.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{IMAGE, RUNC, can_run_podman, ensure_image, podman, records_of, stdtrace};

const POD_UID: &str = "8d3c5f6a-1b2e-4c7d-9a0f-3e5b7c9d1a2f";

/// A containerd this test started, and what it ran: the task and container removed, the daemon
/// stopped (by its pid) and its directories removed on drop.
struct Containerd {
    dir: PathBuf,
    daemon: Child,
    container: Option<String>,
    stopped_shim: Option<i32>,
}

impl Containerd {
    fn start(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let daemon = Command::new("containerd")
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state")
            .arg(dir.join("state"))
            .arg("--address")
            .arg(dir.join("sock"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        let containerd = Containerd {
            dir,
            daemon,
            container: None,
            stopped_shim: None,
        };
        let started = Instant::now();
        while containerd.ctr_status(&["version"]).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "containerd did not start: {}",
                std::fs::read_to_string(containerd.dir.join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        containerd
    }

    fn ctr_status(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new("ctr")
            .arg("--address")
            .arg(self.dir.join("sock"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|err| err.to_string())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    fn ctr(&self, args: &[&str]) -> String {
        self.ctr_status(args)
            .unwrap_or_else(|err| panic!("ctr {args:?}: {err}"))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(shim) = self.stopped_shim {
            // SAFETY: resuming the shim this test stopped.
            unsafe { libc::kill(shim, libc::SIGCONT) };
        }
        if let Some(id) = self.container.take() {
            let _ = self.ctr_status(&["task", "kill", "-s", "SIGKILL", &id]);
            let started = Instant::now();
            while self.ctr_status(&["task", "rm", &id]).is_err()
                && started.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = self.ctr_status(&["container", "rm", &id]);
        }
        // SAFETY: stopping the containerd this test started, by its pid.
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        let _ = self.daemon.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh 64-hex container id, as the CRI plugin's are.
fn container_id() -> String {
    let mut bytes = [0u8; 32];
    // SAFETY: getrandom fills the buffer it is given.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    assert_eq!(filled, 32);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn parent_of(pid: u32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rfind(')').unwrap();
    stat[after + 1..]
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn containerd_writer_stuck_on_its_stopped_shim() {
    if !can_run_podman(&["/usr/bin/containerd", "/usr/bin/ctr"]) {
        return;
    }
    ensure_image();
    let dir = std::env::temp_dir().join(format!("stdtrace-containerd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut containerd = Containerd::start(dir.clone());
    let archive = dir.join("image.tar");
    podman(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        archive.to_str().unwrap(),
        IMAGE,
    ]);
    containerd.ctr(&["images", "import", archive.to_str().unwrap()]);

    let id = container_id();
    let log = dir.join(format!("{id}.log"));
    let log_uri = format!("file://{}", log.display());
    let cgroup = format!("/kubepods/besteffort/pod{POD_UID}/{id}");
    let uid = format!("io.kubernetes.cri.sandbox-uid={POD_UID}");
    let script = format!("while :; do echo {}; done", "a".repeat(100));
    let image = format!("{IMAGE}:latest");
    containerd.ctr(&[
        "run",
        "-d",
        "--runc-binary",
        RUNC,
        "--log-uri",
        &log_uri,
        "--annotation",
        "io.kubernetes.cri.sandbox-name=web-0",
        "--annotation",
        "io.kubernetes.cri.sandbox-namespace=prod",
        "--annotation",
        &uid,
        "--annotation",
        "io.kubernetes.cri.container-name=app",
        "--cgroup",
        &cgroup,
        &image,
        &id,
        "sh",
        "-c",
        &script,
    ]);
    containerd.container = Some(id.clone());
    let tasks = containerd.ctr(&["task", "ls"]);
    let writer: u32 = tasks
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(id.as_str())).then(|| fields.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no task {id}: {tasks}"));
    // The container's init is the shim's child; stop the shim (not the traced writer).
    let shim = parent_of(writer);
    assert!(
        std::fs::read_to_string(format!("/proc/{shim}/comm"))
            .unwrap()
            .starts_with("containerd-shim")
    );
    // SAFETY: signalling the shim of the container this test started.
    assert_eq!(unsafe { libc::kill(shim, libc::SIGSTOP) }, 0);
    containerd.stopped_shim = Some(shim);
    std::thread::sleep(Duration::from_millis(1500));

    let output = stdtrace::run(&["--format", "json", "--stuck", "1s", "--duration", "5s"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stdtrace failed: {stderr}");
    let records = stdtrace::json_lines(&output.stdout);
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
    assert_eq!(found["id"], id.as_str(), "{stuck}");
    assert_eq!(found["runtime"], "containerd", "{stuck}");
    assert_eq!(found["pod"]["name"], "web-0", "{stuck}");
    assert_eq!(found["pod"]["namespace"], "prod", "{stuck}");
    assert_eq!(found["pod"]["uid"], POD_UID, "{stuck}");
    assert_eq!(found["container_name"], "app", "{stuck}");

    let readers = stuck["target"]["readers"].as_array().expect("readers");
    let reader = readers
        .iter()
        .find(|reader| reader["pid"] == shim)
        .unwrap_or_else(|| panic!("the shim {shim} is not a reader: {stuck}"));
    assert_eq!(reader["role"], "container stdio relay", "{reader}");
    assert_eq!(reader["state"], "stopped", "{reader}");
    assert_eq!(reader["serves"]["id"], id.as_str(), "{reader}");
    let log = log.display().to_string();
    let sinks = reader["sends_to"].as_array().expect("sends_to");
    assert!(
        sinks
            .iter()
            .any(|sink| sink["kind"] == "file" && sink["path"] == log.as_str()),
        "the shim writes {log}: {reader}"
    );
    assert!(Path::new(&log).exists());

    // Filtered in the kernel by its cgroup (`/kubepods/besteffort/pod<uid>/<id>`, named from
    // the task bundle of this test's own containerd): the same writer, and nothing else.
    let output = stdtrace::run(&[
        "--format",
        "json",
        "--stuck",
        "1s",
        "--duration",
        "3s",
        "--container",
        &id,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdtrace --container failed: {stderr}"
    );
    let records = stdtrace::json_lines(&output.stdout);
    let stuck = records_of(&records, "blocked_write", "stuck");
    assert!(
        stuck.iter().any(|record| record["pid"] == writer),
        "--container {id}: no stuck write of pid {writer}: {records:?}\n{stderr}"
    );
    for record in records.iter().filter(|record| record.get("pid").is_some()) {
        assert_eq!(record["container"]["id"], id.as_str(), "{record}");
        assert_eq!(record["container"]["pod"]["uid"], POD_UID, "{record}");
    }
}
