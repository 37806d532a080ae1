//! `--container`, `--pod`, `--namespace`: filtered in the kernel on the container's cgroup v2
//! id, with real podman containers (unique names and namespaces: other tests run containers
//! at the same time, and must not show up here).

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use super::{StuckContainer, can_run_podman, records_of, stdtrace};

/// Records about a process (every type but the summary and the header).
fn process_records(records: &[Value]) -> Vec<&Value> {
    records
        .iter()
        .filter(|record| record.get("pid").is_some())
        .collect()
}

fn namespace() -> String {
    format!("stdtrace-filters-{}", std::process::id())
}

#[test]
fn podman_filters_report_the_stuck_writer_and_catch_exec() {
    if !can_run_podman(&[]) {
        return;
    }
    let namespace = namespace();
    let stuck = StuckContainer::start("filters", &namespace, "web-0");
    let pod = format!("{namespace}/web-0");
    let name = stuck.name().to_owned();
    let prefix = &stuck.id[..12];
    let selections: [[&str; 2]; 5] = [
        ["--pod", &pod],
        ["--container", &name],
        ["--container", &stuck.id],
        ["--container", prefix],
        ["--namespace", &namespace],
    ];
    for selection in selections {
        let mut args = vec!["--format", "json", "--stuck", "1s", "--duration", "3s"];
        args.extend(selection);
        let output = stdtrace::run(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{selection:?}: {stderr}");
        let announced = stdtrace::announcement(&output, "stdtrace: tracing container");
        assert!(
            announced.contains(&format!("tracing container {name} (pod {pod})")),
            "{selection:?}: {announced}"
        );
        let records = stdtrace::json_lines(&output.stdout);
        let stuck_writes: Vec<&Value> = records_of(&records, "blocked_write", "stuck")
            .into_iter()
            .filter(|record| record["pid"] == stuck.writer)
            .collect();
        assert_eq!(
            stuck_writes.len(),
            1,
            "{selection:?}: one stuck write of pid {}: {records:?}\n{stderr}",
            stuck.writer
        );
        let record = stuck_writes[0];
        let container = &record["container"];
        assert_eq!(
            container["id"],
            stuck.id.as_str(),
            "{selection:?}: {record}"
        );
        assert_eq!(container["runtime"], "podman", "{record}");
        assert_eq!(container["name"], name.as_str(), "{record}");
        assert_eq!(container["pod"]["name"], "web-0", "{record}");
        assert_eq!(
            container["pod"]["namespace"],
            namespace.as_str(),
            "{record}"
        );
        assert_eq!(container["container_name"], "app", "{record}");
        let reader = record["target"]["readers"]
            .as_array()
            .and_then(|readers| readers.iter().find(|reader| reader["pid"] == stuck.conmon))
            .unwrap_or_else(|| panic!("conmon {} is not a reader: {record}", stuck.conmon));
        assert_eq!(reader["role"], "container log reader", "{reader}");
        assert_eq!(reader["state"], "stopped", "{reader}");
        assert_eq!(reader["serves"]["id"], stuck.id.as_str(), "{reader}");
        assert!(
            reader["sends_to"].as_array().is_some_and(|sinks| sinks
                .iter()
                .any(|sink| sink["path"] == stuck.log_path.as_str())),
            "conmon writes {}: {reader}",
            stuck.log_path
        );
        // Nothing from outside the container, whatever else runs on the host meanwhile.
        for other in process_records(&records) {
            assert_eq!(
                other["container"]["id"],
                stuck.id.as_str(),
                "{selection:?}: a record from outside the container: {other}"
            );
        }
    }

    // A process that enters the container later (a child of conmon and runc, not of the
    // container's processes) is traced from its first write; the same failing writes outside
    // the container are not. Each fails 3 writes with EPIPE (SIGPIPE ignored), then lives on
    // for the capture to read its cgroup.
    let script = r#"trap "" PIPE; { sleep 1; for i in 1 2 3; do echo x$i; done; sleep 3; } | true"#;
    let tracer = stdtrace::command(&[
        "--format",
        "json",
        "--errno",
        "EPIPE",
        "--duration",
        "8s",
        "--container",
        &name,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("starting stdtrace");
    let mut tracer = tracer;
    let mut stderr = stdtrace::Lines::new(tracer.stderr.take().expect("stderr"));
    stderr.wait_for("stdtrace: tracing container", Duration::from_secs(30));
    let exec = Command::new("podman")
        .args(["exec", &name, "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("podman exec");
    let outside = Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the same writes outside");
    for mut child in [exec, outside] {
        let status = child.wait().expect("waiting");
        assert!(status.success(), "{status}");
    }
    let output = stdtrace::wait_with_timeout(tracer, Duration::from_secs(60));
    let stderr = stderr.rest(Duration::from_secs(1)).join("\n");
    assert!(output.status.success(), "{stderr}");
    let records = stdtrace::json_lines(&output.stdout);
    let errors: Vec<&Value> = records
        .iter()
        .filter(|record| record["type"] == "write_error" && record["errno"] == "EPIPE")
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "one reported failed write (the exec'd writer's first; the other two are repeats): {records:?}\n{stderr}"
    );
    let exec_writer = errors[0]["pid"].as_u64().expect("pid");
    assert_ne!(exec_writer, stuck.writer);
    assert_eq!(
        errors[0]["container"]["id"],
        stuck.id.as_str(),
        "{}",
        errors[0]
    );
    assert_eq!(
        errors[0]["container"]["pod"]["name"], "web-0",
        "{}",
        errors[0]
    );
    for other in process_records(&records) {
        assert_eq!(
            other["container"]["id"],
            stuck.id.as_str(),
            "a record from outside the container: {other}"
        );
    }
    let summary = stdtrace::summary(&records);
    let totals = summary["totals"].as_array().expect("totals");
    assert_eq!(totals.len(), 1, "only the exec'd writer failed: {summary}");
    assert_eq!(totals[0]["pid"], exec_writer, "{summary}");
    assert_eq!(totals[0]["failures"], 3, "from its first write: {summary}");
    assert_eq!(totals[0]["container"]["id"], stuck.id.as_str(), "{summary}");
    // `repeats` counts so far: the last one says all of them.
    let repeats = records
        .iter()
        .filter(|record| record["type"] == "repeats" && record["pid"] == exec_writer)
        .map(|record| {
            assert_eq!(record["container"]["id"], stuck.id.as_str(), "{record}");
            assert_eq!(record["container"]["pod"]["namespace"], namespace.as_str());
            record["count"].as_u64().unwrap_or(0)
        })
        .max();
    assert_eq!(repeats, Some(2), "{records:?}");
}

#[test]
fn unknown_containers_and_pods_are_one_line_errors() {
    if !can_run_podman(&[]) {
        return;
    }
    let missing = format!("stdtrace-no-such-{}", std::process::id());
    let pod = format!("{missing}/web-0");
    for (option, value) in [
        ("--container", missing.as_str()),
        ("--pod", pod.as_str()),
        ("--namespace", missing.as_str()),
    ] {
        let output = stdtrace::run(&[option, value, "--duration", "1s"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{option} {value}: {stderr}");
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(
            lines[0].starts_with(&format!(
                "stdtrace: no running container matches {option} {value} ("
            )),
            "{stderr}"
        );
        for looked_at in [
            "containerd /run/containerd/io.containerd.runtime.v2.task",
            "podman and CRI-O /var/lib/containers/storage, /run/containers/storage",
            "docker /var/lib/docker/containers",
        ] {
            assert!(lines[0].contains(looked_at), "{looked_at}: {stderr}");
        }
        assert!(output.stdout.is_empty());
    }
    let output = stdtrace::run(&["--pod", "no-slash", "--duration", "1s"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("`no-slash` is not NAMESPACE/NAME"),
        "{stderr}"
    );
}

/// A socket's receiver that runs in a container carries its `container`, as a pipe's reader
/// does: a host writer blocked on a unix stream socket whose other end a container's `sleep`
/// holds (passed in with `--preserve-fds`) and never reads.
#[test]
fn socket_receivers_in_containers_name_them() {
    use std::os::unix::process::CommandExt;

    if !can_run_podman(&[]) {
        return;
    }
    super::ensure_image();
    let mut ends = [0; 2];
    // SAFETY: socketpair writes two fds into the array we own.
    let made = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, ends.as_mut_ptr()) };
    assert_eq!(made, 0, "socketpair: {}", std::io::Error::last_os_error());
    let [writer_end, container_end] = ends;
    let container = super::TestContainer {
        name: format!("stdtrace-socket-{}", std::process::id()),
        stopped_conmon: None,
    };
    let mut run = Command::new("podman");
    run.args(super::RUN_DETACHED)
        .args([
            "--preserve-fds",
            "1",
            "--name",
            &container.name,
            super::IMAGE,
            "sleep",
            "1000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: dup2 is async-signal-safe; the child gets the container's end as fd 3.
    unsafe {
        run.pre_exec(move || {
            if libc::dup2(container_end, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = run.output().expect("podman run");
    assert!(
        output.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    // SAFETY: closing our copy of the end the container holds now.
    unsafe { libc::close(container_end) };

    let mut write = Command::new("sh");
    write
        .args([
            "-c",
            "while :; do echo xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; done >&4",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: as above; the writer gets its end as fd 4.
    unsafe {
        write.pre_exec(move || {
            if libc::dup2(writer_end, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut writer = write.spawn().expect("the writer");
    // SAFETY: closing our copy of the writer's end.
    unsafe { libc::close(writer_end) };
    std::thread::sleep(Duration::from_millis(1500));
    let pid = writer.id().to_string();
    let output = stdtrace::run(&[
        "--pid",
        &pid,
        "--format",
        "json",
        "--stuck",
        "1s",
        "--duration",
        "3s",
    ]);
    let _ = writer.kill();
    let _ = writer.wait();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let records = stdtrace::json_lines(&output.stdout);
    let stuck = records_of(&records, "blocked_write", "stuck");
    assert_eq!(stuck.len(), 1, "{records:?}\n{stderr}");
    let target = &stuck[0]["target"];
    assert_eq!(target["kind"], "socket", "{target}");
    let receiver = target["readers"]
        .as_array()
        .and_then(|readers| readers.iter().find(|reader| reader["comm"] == "sleep"))
        .unwrap_or_else(|| panic!("the container's sleep is a receiver: {target}"));
    assert_eq!(receiver["container"]["id"], id.as_str(), "{receiver}");
    assert_eq!(
        receiver["container"]["name"],
        container.name.as_str(),
        "{receiver}"
    );
    assert_eq!(receiver["container"]["runtime"], "podman", "{receiver}");
    assert!(
        stuck[0].get("container").is_none(),
        "the writer runs outside: {}",
        stuck[0]
    );
}

/// The records of `blocked_write`, `write_error`, `repeats` and `sigpipe` type.
fn event_records(records: &[Value]) -> Vec<&Value> {
    records
        .iter()
        .filter(|record| {
            ["blocked_write", "write_error", "repeats", "sigpipe"]
                .iter()
                .any(|kind| record["type"] == *kind)
        })
        .collect()
}

/// `report --container/--pod/--namespace` keep the recorded records of those containers;
/// `snapshot --container/--pod/--namespace` look at those containers' processes only.
#[test]
fn report_and_snapshot_filter_by_container() {
    if !can_run_podman(&[]) {
        return;
    }
    let first_namespace = format!("{}-a", namespace());
    let second_namespace = format!("{}-b", namespace());
    let first = StuckContainer::start("report-a", &first_namespace, "web-0");
    let second = StuckContainer::start("report-b", &second_namespace, "web-0");
    let dir = std::env::temp_dir().join(format!("stdtrace-filters-record-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let output = stdtrace::run(&[
        "record",
        "--output",
        dir.to_str().unwrap(),
        "--stuck",
        "1s",
        "--duration",
        "3s",
        "--quiet",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let first_pod = format!("{first_namespace}/web-0");
    let second_pod = format!("{second_namespace}/web-0");
    let report = |selection: &[&str]| {
        let mut args = vec!["report", dir.to_str().unwrap(), "--format", "json"];
        args.extend(selection);
        let output = stdtrace::run(&args);
        assert!(
            output.status.success(),
            "{selection:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdtrace::json_lines(&output.stdout)
    };
    for (selection, wanted) in [
        (["--container", first.name()], &first),
        (["--container", &first.id[..16]], &first),
        (["--pod", &second_pod], &second),
        (["--namespace", &first_namespace], &first),
        (["--pod", &first_pod], &first),
    ] {
        let records = report(&selection);
        let kept = event_records(&records);
        assert!(
            kept.iter()
                .any(|record| record["type"] == "blocked_write" && record["pid"] == wanted.writer),
            "{selection:?}: the stuck writer {} is kept: {records:?}",
            wanted.writer
        );
        for record in kept {
            assert_eq!(
                record["container"]["id"],
                wanted.id.as_str(),
                "{selection:?}: {record}"
            );
        }
    }
    let none = report(&["--container", "stdtrace-no-such-container"]);
    assert!(event_records(&none).is_empty(), "{none:?}");
    let _ = std::fs::remove_dir_all(&dir);

    for (selection, wanted) in [
        (["--container", first.name()], &first),
        (["--pod", &second_pod], &second),
        (["--namespace", &second_namespace], &second),
    ] {
        let mut args = vec!["snapshot", "--format", "json"];
        args.extend(selection);
        let output = stdtrace::run(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{selection:?}: {stderr}");
        let records = stdtrace::json_lines(&output.stdout);
        let blocked: Vec<&Value> = records
            .iter()
            .filter(|record| record["type"] == "blocked_write")
            .collect();
        assert_eq!(blocked.len(), 1, "{selection:?}: {records:?}");
        assert_eq!(blocked[0]["pid"], wanted.writer, "{}", blocked[0]);
        assert_eq!(
            blocked[0]["container"]["id"],
            wanted.id.as_str(),
            "{}",
            blocked[0]
        );
    }
    let output = stdtrace::run(&["snapshot", "--container", "stdtrace-no-such-container"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(
            "stdtrace: no running container matches --container stdtrace-no-such-container ("
        ),
        "{stderr}"
    );
}

/// A container that starts after stdtrace and matches `--namespace` (a pod's new container) is
/// traced too: found by the next rescan of procfs.
#[test]
fn containers_started_later_that_match_are_traced() {
    if !can_run_podman(&[]) {
        return;
    }
    let namespace = format!("{}-later", namespace());
    let first = StuckContainer::start("later-a", &namespace, "web-0");
    let mut tracer = stdtrace::command(&[
        "--format",
        "json",
        "--stuck",
        "1s",
        "--duration",
        "9s",
        "--namespace",
        &namespace,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("starting stdtrace");
    let mut stderr = stdtrace::Lines::new(tracer.stderr.take().expect("stderr"));
    stderr.wait_for("stdtrace: tracing container", Duration::from_secs(30));
    let later = StuckContainer::start("later-b", &namespace, "web-1");
    let output = stdtrace::wait_with_timeout(tracer, Duration::from_secs(60));
    let stderr = stderr.rest(Duration::from_secs(1)).join("\n");
    assert!(output.status.success(), "{stderr}");
    let records = stdtrace::json_lines(&output.stdout);
    for (container, pod) in [(&first, "web-0"), (&later, "web-1")] {
        let stuck: Vec<&Value> = records_of(&records, "blocked_write", "stuck")
            .into_iter()
            .filter(|record| record["pid"] == container.writer)
            .collect();
        assert_eq!(
            stuck.len(),
            1,
            "the stuck writer of {}: {records:?}\n{stderr}",
            container.name()
        );
        assert_eq!(stuck[0]["container"]["id"], container.id.as_str());
        assert_eq!(stuck[0]["container"]["pod"]["name"], pod);
    }
    for other in process_records(&records) {
        assert_eq!(
            other["container"]["pod"]["namespace"],
            namespace.as_str(),
            "{other}"
        );
    }
}
