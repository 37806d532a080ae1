//! A podman `-t` container: its process writes into a pty whose master conmon holds. With
//! conmon stopped, the writer is stuck on the pty, and the report gives the pty's fill (the
//! kernel's flip buffers and line discipline, read through BTF offsets) and names conmon as the
//! master's holder, stopped.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::{
    TestContainer, can_run_podman, ensure_image, podman, records_of, run_detached, stdtrace,
};

#[test]
fn podman_tty_writer_stuck_on_its_stopped_conmon() {
    if !can_run_podman(&[]) {
        return;
    }
    ensure_image();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or_default();
    let mut container = TestContainer {
        name: format!("stdtrace-tty-{}-{nanos:x}", std::process::id()),
        stopped_conmon: None,
    };
    let line = "t".repeat(100);
    let script = format!("while :; do echo {line}; done");
    let id = run_detached(&container.name, &["-t"], &["sh", "-c", &script]);
    let pids = podman(&[
        "inspect",
        "--format",
        "{{.State.Pid}} {{.State.ConmonPid}}",
        &container.name,
    ]);
    let mut fields = pids.split_whitespace();
    let writer: u32 = fields
        .next()
        .and_then(|pid| pid.parse().ok())
        .expect("writer pid");
    let conmon: i32 = fields
        .next()
        .and_then(|pid| pid.parse().ok())
        .expect("conmon pid");
    let pts = std::fs::read_link(format!("/proc/{writer}/fd/1"))
        .expect("the writer's stdout")
        .to_string_lossy()
        .into_owned();
    assert!(
        pts.starts_with("/dev/pts/"),
        "a -t container writes to a pty: {pts}"
    );
    // Stop the master's holder (not the traced writer): the pty fills.
    // SAFETY: signalling the conmon of the container this test started.
    assert_eq!(unsafe { libc::kill(conmon, libc::SIGSTOP) }, 0);
    container.stopped_conmon = Some(conmon);
    std::thread::sleep(Duration::from_millis(1500));

    let writer_arg = writer.to_string();
    let output = stdtrace::run(&[
        "--format",
        "json",
        "--stuck",
        "500ms",
        "--duration",
        "2s",
        "--pid",
        &writer_arg,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stdtrace failed: {stderr}");
    let records = stdtrace::json_lines(&output.stdout);
    let stuck: Vec<&Value> = records_of(&records, "blocked_write", "stuck")
        .into_iter()
        .filter(|record| record["pid"] == writer)
        .collect();
    assert_eq!(stuck.len(), 1, "{records:#?}\n{stderr}");
    let stuck = stuck[0];
    assert_eq!(stuck["container"]["id"], id, "{stuck}");
    let target = &stuck["target"];
    assert_eq!(target["kind"], "pty", "{stuck}");
    assert_eq!(target["path"], pts.as_str(), "{stuck}");
    let pty = &target["pty"];
    let flip_limit = pty["flip_limit"].as_u64().expect("flip_limit");
    let capacity = 2 * flip_limit + 4096;
    assert_eq!(target["capacity"], capacity, "{stuck}");
    let queued = target["queued"].as_u64().expect("queued");
    assert!(queued > 0 && queued <= capacity, "{stuck}");
    assert_eq!(pty["master_open"], 1, "{stuck}");

    // conmon holds the master, stopped; no other process holding a pts with the same number
    // in another devpts instance (the host's, another container's) is taken for it.
    let master = &target["master"];
    assert_eq!(master["pid"], conmon, "{stuck}");
    assert_eq!(master["comm"], "conmon", "{stuck}");
    assert_eq!(master["state"], "stopped", "{stuck}");
    assert_eq!(master["reading"], false, "{stuck}");
    assert_eq!(master["role"], "container log reader", "{stuck}");
    assert_eq!(master["serves"]["id"], id, "{stuck}");
    let readers = target["readers"].as_array().expect("readers");
    assert_eq!(readers.len(), 1, "{stuck}");
    assert_eq!(readers[0]["pid"], conmon, "{stuck}");
}
