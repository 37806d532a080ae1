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
            "type": "write_error", "ts_ns": 5, "pid": 812, "tid": 813, "comm": "writer",
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
    send.syscall = "sendto";
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
        record_type: RecordType::Summary,
        duration_ms: 1203,
        stopped: "the command exited",
        failed_writes: 11,
        reported: 8,
        dropped: 0,
        repeats: 3,
        totals: vec![Total {
            pid: 812,
            comm: "writer".into(),
            fd: 4,
            errno: Errno::EPIPE,
            syscall: "write",
            failures: 5,
        }],
        blocked_writes: 1,
        stuck: vec![StuckWrite {
            pid: 9,
            tid: 10,
            comm: "app".into(),
            syscall: "write",
            fd: 1,
            duration_ms: 42000,
            goid: Some(17),
        }],
        sigpipes: Vec::new(),
        command: Some(CommandOutcome {
            pid: 812,
            exit_code: 141,
            signal: Some(13),
        }),
        kernel: KernelCounters::default(),
    };
    assert_eq!(
        serde_json::to_value(summary).unwrap(),
        json!({
            "type": "summary", "duration_ms": 1203, "stopped": "the command exited",
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
