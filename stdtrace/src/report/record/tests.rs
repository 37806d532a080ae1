use serde_json::{Value, json};

use super::*;

fn write_error() -> WriteReport {
    WriteReport {
        ts_ns: 5,
        tid: 813,
        stack: vec![FrameReport {
            address: "0x401000".into(),
            function: Some("emit_epipe".into()),
            file: Some("/src/writer.c".into()),
            line: Some(42),
            object: Some("/opt/writer".into()),
            object_address: Some("0x1000".into()),
            inlined: false,
            unknown: None,
        }],
        stack_end: None,
        ..samples::report()
    }
}

/// The JSON Lines schema is a contract (documented in the README): these are its exact
/// field names and shapes.
#[test]
fn write_error_schema() {
    let value = serde_json::to_value(write_error()).unwrap();
    assert_eq!(
        value,
        json!({
            "type": "write_error", "node": "node-1", "ts_ns": 5, "pid": 812, "tid": 813, "comm": "writer",
            "syscall": "write", "fd": 4, "errno": "EPIPE", "count": 1,
            "target": {
                "kind": "pipe", "inode": 40213, "path": "pipe:[40213]", "nonblocking": false,
                "readers": [], "writers": [{"pid": 812, "comm": "writer", "fds": [4]}],
                "read_ends": 0, "write_ends": 1
            },
            "stack": [{
                "address": "0x401000", "function": "emit_epipe", "file": "/src/writer.c",
                "line": 42, "object": "/opt/writer", "object_address": "0x1000",
                "inlined": false
            }]
        })
    );
    let mut send = write_error();
    send.syscall = "sendto".into();
    send.nosignal = true;
    let value = serde_json::to_value(send).unwrap();
    assert_eq!(
        (&value["syscall"], &value["nosignal"]),
        (&json!("sendto"), &json!(true))
    );
    let mut partial = write_error();
    partial.count_partial = true;
    partial.stack_end = Some("stack copy exhausted".into());
    partial.stack[0].function = None;
    partial.stack[0].unknown = Some("no symbol covers 0x1000 (stripped)".into());
    let value = serde_json::to_value(partial).unwrap();
    assert_eq!(value["count_partial"], true);
    assert_eq!(value["stack_end"], "stack copy exhausted");
    assert_eq!(value["stack"][0]["function"], Value::Null);
    assert_eq!(
        value["stack"][0]["unknown"],
        "no symbol covers 0x1000 (stripped)"
    );
}

#[test]
fn summary_schema() {
    let summary = Summary {
        node: Node("node-1".into()),
        record_type: RecordType::Summary,
        duration_ms: 1203,
        stopped: "the command exited".into(),
        failed_writes: 11,
        reported: 8,
        dropped: 0,
        repeats: 3,
        totals: vec![Total {
            pid: 812,
            comm: "writer".into(),
            fd: 4,
            errno: Errno::EPIPE,
            syscall: "write".into(),
            failures: 5,
        }],
        blocked_writes: 1,
        stuck: vec![StuckWrite {
            pid: 9,
            tid: 10,
            comm: "app".into(),
            syscall: "write".into(),
            fd: 1,
            duration_ms: 42000,
            goid: Some(17),
            container: None,
        }],
        sigpipes: Vec::new(),
        command: Some(CommandOutcome {
            pid: 812,
            exit_code: 141,
            signal: Some(13),
        }),
        kernel: KernelCounters::default(),
        output_records_dropped: None,
    };
    let read_back: Summary =
        serde_json::from_value(serde_json::to_value(&summary).unwrap()).unwrap();
    assert_eq!(read_back, summary, "read back as written");
    let recorded = Summary {
        output_records_dropped: Some(3),
        ..summary.clone()
    };
    assert_eq!(
        serde_json::to_value(&recorded).unwrap()["output_records_dropped"],
        3,
        "a new field, when recording"
    );
    assert_eq!(
        serde_json::to_value(summary).unwrap(),
        json!({
            "type": "summary", "node": "node-1", "duration_ms": 1203, "stopped": "the command exited",
            "failed_writes": 11, "reported": 8, "dropped": 0, "repeats": 3,
            "totals": [{"pid": 812, "comm": "writer", "fd": 4, "errno": "EPIPE",
                        "syscall": "write", "failures": 5}],
            "blocked_writes": 1,
            "stuck": [{"pid": 9, "tid": 10, "comm": "app", "syscall": "write", "fd": 1,
                       "duration_ms": 42000, "goid": 17}],
            "sigpipes": [],
            "command": {"pid": 812, "exit_code": 141, "signal": 13},
            "kernel": {"registers_unreadable": 0, "fd_unreadable": 0, "stack_unreadable": 0,
                       "tally_full": 0, "children_followed": 0, "lifecycle_dropped": 0,
                       "writes_blocked": 0, "blocked_untracked": 0, "blocked_dropped": 0,
                       "sites_full": 0, "parked_full": 0}
        })
    );
}

/// What the schema serializes reads back as the same records: `report` reads recordings.
#[test]
fn records_read_back_as_written() {
    let report = write_error();
    let text = serde_json::to_string(&report).unwrap();
    let read_back: WriteReport = serde_json::from_str(&text).unwrap();
    assert_eq!(read_back, report);
    assert_eq!(serde_json::to_string(&read_back).unwrap(), text);
    let sample = samples::report();
    let read_back: WriteReport =
        serde_json::from_str(&serde_json::to_string(&sample).unwrap()).unwrap();
    assert_eq!(read_back, sample);
}

#[test]
fn header_schema() {
    let header = Header {
        record_type: RecordType::Header,
        schema: RECORDING_SCHEMA,
        stdtrace: "0.1.0".into(),
        recording: "1764600000-4242".into(),
        file: 2,
        kernel: "6.18.0".into(),
        node: "node-1".into(),
        host: "vm".into(),
        boot_id: "0b9e".into(),
        options: vec!["record".into(), "--output".into(), "/var/log/st".into()],
        wall_minus_monotonic_ns: 1_764_000_000_000_000_000,
        ts_ns: 5,
    };
    let value = serde_json::to_value(&header).unwrap();
    assert_eq!(
        value,
        json!({
            "type": "header", "schema": 1, "stdtrace": "0.1.0", "recording": "1764600000-4242",
            "file": 2, "kernel": "6.18.0", "node": "node-1", "host": "vm", "boot_id": "0b9e",
            "options": ["record", "--output", "/var/log/st"],
            "wall_minus_monotonic_ns": 1_764_000_000_000_000_000_i64, "ts_ns": 5
        })
    );
    assert_eq!(serde_json::from_value::<Header>(value).unwrap(), header);
}

/// A writer in a container, read by its conmon: the `container` object and the runtime
/// role's fields, with every unknown field absent.
#[test]
fn container_and_role_schema() {
    let app = Container {
        id: "cad264df46f47106f4671aa3f6ae9e73e539a7582bac636d4a4f0a214cedd15b".into(),
        runtime: Some(Runtime::Podman),
        name: Some("stdtrace-test-1".into()),
        image: None,
        pod: Pod {
            name: Some("web-0".into()),
            namespace: Some("prod".into()),
            uid: None,
        },
        container_name: Some("app".into()),
        log_path: Some("/ctr.log".into()),
        unknown: Some("image: its runtime's state does not say".into()),
    };
    let mut report = write_error();
    report.container = Some(app.clone());
    report.target.readers = Some(vec![Peer {
        pid: 11598,
        comm: "conmon".into(),
        fds: vec![8],
        activity: None,
        container: None,
        runtime: Some(RuntimeRole {
            role: "container log reader".into(),
            serves: Some(Container {
                id: app.id.clone(),
                ..Container::default()
            }),
            sends_to: vec![OutputSink {
                kind: "file".into(),
                path: "/ctr.log".into(),
                fd: 6,
            }],
        }),
        blocked_write: None,
    }]);
    let value = serde_json::to_value(report).unwrap();
    assert_eq!(
        value["container"],
        json!({
            "id": app.id, "runtime": "podman", "name": "stdtrace-test-1",
            "pod": {"name": "web-0", "namespace": "prod"}, "container_name": "app",
            "log_path": "/ctr.log", "unknown": "image: its runtime's state does not say"
        })
    );
    assert_eq!(
        value["target"]["readers"][0],
        json!({
            "pid": 11598, "comm": "conmon", "fds": [8], "role": "container log reader",
            "serves": {"id": app.id},
            "sends_to": [{"kind": "file", "path": "/ctr.log", "fd": 6}]
        })
    );
    for runtime in [
        Runtime::Containerd,
        Runtime::CriO,
        Runtime::Podman,
        Runtime::Docker,
    ] {
        assert_eq!(serde_json::to_value(runtime).unwrap(), runtime.name());
    }
}
