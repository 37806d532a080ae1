//! `stdtrace snapshot`, with real processes: a C writer and Go writers (default and stripped
//! builds) stuck on full pipes, and a Go program with 1,000 goroutines of which exactly 3 are
//! blocked writing; each as root and as a normal user of the same uid as the target (both run
//! as `nobody` through `setpriv`). While every snapshot runs, the target is watched: it is
//! never stopped (`State: T`) nor traced (`TracerPid`), and where it has a progress counter,
//! the counter moves. stdtrace is run under strace, which must see no `bpf`, `ptrace` or
//! signal-sending system call, and its fds are watched for BPF objects.

#[path = "support/can_run.rs"]
mod can_run;
#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/stdtrace.rs"]
mod stdtrace;

#[path = "snapshot/support.rs"]
mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use stdtrace::{field, function_names, json_lines};
use support::{
    As, Progress, Started, blocked_writes, can_run, check_stuck_into_full_pipe, command_as,
    go_fixture, is_root, snapshot, wait_blocked_writing, writer_into_full_pipe,
};

fn c_writer(who: As, test: &str) {
    if !can_run(test, who) {
        return;
    }
    // With frame pointers, as `trace`'s tests build it: the walk needs rbp past emit_line,
    // which a snapshot cannot know; without, CFI alone names the whole stack.
    let fp = fixtures::build_c(
        "writers/blocked_writer.c",
        "blocked_writer",
        &["-O1", "-g", "-fno-omit-frame-pointer"],
    );
    let nofp = fixtures::build_c(
        "writers/blocked_writer.c",
        "blocked_writer-nofp",
        &["-O2", "-g", "-fomit-frame-pointer"],
    );
    for (binary, full) in [(fp, false), (nofp, true)] {
        let (started, mut stderr) = writer_into_full_pipe(who, &binary, &[]);
        let pid = field(
            &stderr.wait_for("blocked_writer:", Duration::from_secs(10)),
            "pid",
        );
        assert_eq!(pid, started.0[0].id());
        wait_blocked_writing(pid, 1);
        let pid_arg = pid.to_string();
        let (output, _) = snapshot(who, pid, &["--format", "json", "--pid", &pid_arg]);
        let stderr_text = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{stderr_text}");
        let records = json_lines(&output.stdout);
        let stuck = blocked_writes(&records);
        assert_eq!(stuck.len(), 1, "{records:#?}");
        check_stuck_into_full_pipe(stuck[0], pid);
        let names = function_names(stuck[0]);
        if full {
            assert_eq!(
                names.iter().take(4).map(String::as_str).collect::<Vec<_>>(),
                ["write", "emit_line", "log_forever", "main"],
                "{}",
                stuck[0]
            );
        } else {
            assert_eq!(names[..2], ["write", "emit_line"], "{}", stuck[0]);
            let end = stuck[0]["stack_end"].as_str().expect("stack_end");
            assert!(
                end.contains("rbp unknown") && end.contains("only SP and PC"),
                "{end}"
            );
        }
        let summary = records.last().expect("a summary");
        assert_eq!(summary["type"], "snapshot_summary");
        assert_eq!(summary["blocked_writes"], 1);

        // Text: the same story, and the summary line.
        let (output, _) = snapshot(who, pid, &["--pid", &pid_arg, "--color", "never"]);
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("stuck at least"), "{text}");
        assert!(text.contains("65536/65536 bytes queued"), "{text}");
        assert!(
            text.lines()
                .last()
                .unwrap_or_default()
                .starts_with("snapshot: 1 thread blocked writing"),
            "{text}"
        );
        drop(started);
    }
}

#[test]
fn c_writer_stuck_on_a_full_pipe_as_root() {
    c_writer(As::Root, "c_writer_stuck_on_a_full_pipe_as_root");
}

#[test]
fn c_writer_stuck_on_a_full_pipe_as_the_same_user() {
    c_writer(
        As::SameUser,
        "c_writer_stuck_on_a_full_pipe_as_the_same_user",
    );
}

fn go_writer(who: As, test: &str) {
    if !can_run(test, who) {
        return;
    }
    for flavour in ["default", "stripped"] {
        let Some(blocker) = go_fixture(flavour, "blocker") else {
            return;
        };
        let (started, mut stderr) = writer_into_full_pipe(who, &blocker, &[]);
        let pid = started.0[0].id();
        let goid = field(
            &stderr.wait_for("goroutine=", Duration::from_secs(10)),
            "goroutine",
        );
        wait_blocked_writing(pid, 1);
        let pid_arg = pid.to_string();
        let (output, _) = snapshot(who, pid, &["--format", "json", "--pid", &pid_arg]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let records = json_lines(&output.stdout);
        let stuck = blocked_writes(&records);
        assert_eq!(stuck.len(), 1, "{flavour}: {records:#?}");
        check_stuck_into_full_pipe(stuck[0], pid);
        let go = &stuck[0]["go"];
        assert_eq!(go["goid"], goid, "{flavour}: {}", stuck[0]);
        assert_eq!(go["status"], "syscall", "{flavour}: {}", stuck[0]);
        assert_eq!(go["version"], "go1.25.5");
        stdtrace::assert_calls(stuck[0], "main.emit", "main.blockedWriter");
        drop(started);
    }
}

#[test]
fn go_writer_stuck_default_and_stripped_as_root() {
    go_writer(As::Root, "go_writer_stuck_default_and_stripped_as_root");
}

#[test]
fn go_writer_stuck_default_and_stripped_as_the_same_user() {
    go_writer(
        As::SameUser,
        "go_writer_stuck_default_and_stripped_as_the_same_user",
    );
}

/// Every Go toolchain the fixtures were built with (1.19 to 1.27), default and stripped: the
/// goroutine id from `runtime.allgs`, with the `g` offsets from DWARF or the version table and
/// `allgs` from `runtime.forEachG`'s code when stripped.
#[test]
fn go_writer_stuck_with_every_toolchain() {
    let who = As::SameUser;
    let root = fixtures::workspace_root().join("target/fixtures/go");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(&root)
        .map(|dirs| dirs.flatten().map(|dir| dir.path()).collect())
        .unwrap_or_default();
    versions.retain(|dir| dir.join("default/blocker").exists());
    versions.sort();
    if versions.is_empty() {
        can_run::cannot_run(
            can_run::Need::GoFixtures,
            format!("no Go fixtures in {}", root.display()),
        );
        return;
    }
    for version in &versions {
        for flavour in ["default", "stripped"] {
            let blocker = version.join(flavour).join("blocker");
            if !blocker.exists() {
                continue;
            }
            let (started, mut stderr) = writer_into_full_pipe(who, &blocker, &[]);
            let pid = started.0[0].id();
            let goid = field(
                &stderr.wait_for("goroutine=", Duration::from_secs(10)),
                "goroutine",
            );
            wait_blocked_writing(pid, 1);
            let pid_arg = pid.to_string();
            let (output, _) = snapshot(who, pid, &["--format", "json", "--pid", &pid_arg]);
            let records = json_lines(&output.stdout);
            let stuck = blocked_writes(&records);
            assert_eq!(stuck.len(), 1, "{}: {records:#?}", blocker.display());
            assert_eq!(
                stuck[0]["go"]["goid"],
                goid,
                "{}: {}",
                blocker.display(),
                stuck[0]
            );
            drop(started);
        }
    }
}

/// A goroutine writing from C through cgo: the thread is on its system stack (g0); the
/// goroutine is the one in a system call whose thread's g0 has that stack.
#[test]
fn go_writer_in_c_through_cgo() {
    let who = As::SameUser;
    let Some(blocker) = go_fixture("cgo", "blocker") else {
        return;
    };
    let (started, mut stderr) = writer_into_full_pipe(who, &blocker, &["c"]);
    let pid = started.0[0].id();
    let goid = field(
        &stderr.wait_for("goroutine=", Duration::from_secs(10)),
        "goroutine",
    );
    wait_blocked_writing(pid, 1);
    let pid_arg = pid.to_string();
    let (output, _) = snapshot(who, pid, &["--format", "json", "--pid", &pid_arg]);
    let records = json_lines(&output.stdout);
    let stuck = blocked_writes(&records);
    assert_eq!(stuck.len(), 1, "{records:#?}");
    check_stuck_into_full_pipe(stuck[0], pid);
    assert_eq!(stuck[0]["go"]["goid"], goid, "{}", stuck[0]);
    assert_eq!(stuck[0]["go"]["system_stack"], true, "{}", stuck[0]);
    let names = function_names(stuck[0]);
    assert!(
        names.iter().any(|name| name == "stdtrace_c_emit"),
        "{names:?}"
    );
    drop(started);
}

fn thousand_goroutines(who: As, test: &str) {
    if !can_run(test, who) {
        return;
    }
    for flavour in ["default", "stripped"] {
        let Some(program) = go_fixture(flavour, "manyblocked") else {
            return;
        };
        let mut fixture = command_as(who, &program, &[])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting manyblocked");
        let pid = fixture.id();
        let stderr = Progress::new(fixture.stderr.take().expect("stderr"));
        let started = Started(vec![fixture]);
        stderr.wait_for("ready goroutines=1000");
        let mut blocked: Vec<u64> = stderr
            .lines()
            .iter()
            .filter(|line| line.starts_with("blocked="))
            .map(|line| u64::from(field(line, "blocked")))
            .collect();
        blocked.sort_unstable();
        assert_eq!(blocked.len(), 3, "{flavour}");
        wait_blocked_writing(pid, 3);
        stderr.wait_for("progress=");
        let pid_arg = pid.to_string();
        for goroutines in [false, true] {
            let before = stderr.progress();
            let mut args = vec!["--format", "json", "--pid", &pid_arg];
            if goroutines {
                args.push("--goroutines");
            }
            let (output, watched) = snapshot(who, pid, &args);
            // The counter prints every 20 ms: give it one more turn to say so.
            std::thread::sleep(Duration::from_millis(50));
            let after = stderr.progress();
            assert!(
                after > before,
                "{flavour}: the progress counter stood still ({before} -> {after}) over {} samples",
                watched.samples
            );
            assert_eq!(
                output.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let records = json_lines(&output.stdout);
            let stuck = blocked_writes(&records);
            let mut goids: Vec<u64> = stuck
                .iter()
                .map(|record| record["go"]["goid"].as_u64().expect("goid"))
                .collect();
            goids.sort_unstable();
            assert_eq!(goids, blocked, "{flavour}: {stuck:#?}");
            if goroutines {
                let dump: Vec<&Value> = records
                    .iter()
                    .filter(|r| r["type"] == "goroutine")
                    .collect();
                // 1,000 of the program's and the runtime's own (GC, finalizers, ...).
                assert!(dump.len() >= 1000, "{flavour}: {} goroutines", dump.len());
                let mut writing: Vec<u64> = dump
                    .iter()
                    .filter(|g| g["blocked_write_tid"].is_u64())
                    .map(|g| g["goid"].as_u64().expect("goid"))
                    .collect();
                writing.sort_unstable();
                assert_eq!(writing, blocked, "{flavour}");
                let receiving = dump
                    .iter()
                    .filter(|g| g["status"] == "waiting")
                    .filter(|g| {
                        function_names(g)
                            .iter()
                            .any(|name| name == "runtime.gopark")
                    })
                    .count();
                assert!(
                    receiving >= 990,
                    "{flavour}: {receiving} parked with stacks"
                );
                // Stripped too: the wait reasons' table is found from the runtime's code.
                let chan = dump
                    .iter()
                    .filter(|g| g["wait_reason"] == "chan receive")
                    .count();
                assert!(chan >= 249, "{flavour}: {chan} in chan receive");
            }
        }
        drop(started);
    }
}

#[test]
fn thousand_goroutines_exactly_three_blocked_as_root() {
    thousand_goroutines(
        As::Root,
        "thousand_goroutines_exactly_three_blocked_as_root",
    );
}

#[test]
fn thousand_goroutines_exactly_three_blocked_as_the_same_user() {
    thousand_goroutines(
        As::SameUser,
        "thousand_goroutines_exactly_three_blocked_as_the_same_user",
    );
}

#[test]
fn nothing_blocked_says_so_and_exits_1() {
    let mut sleeper = Command::new("sleep").arg("600").spawn().expect("sleep");
    let pid = sleeper.id().to_string();
    let output = stdtrace::run(&["snapshot", "--pid", &pid]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.starts_with(&format!("no thread of pid {pid} is blocked writing")),
        "{text}"
    );
}

#[test]
fn a_pid_that_does_not_exist_is_an_error() {
    let output = stdtrace::run(&["snapshot", "--pid", "999999999"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim(), "stdtrace: no process with pid 999999999");
    assert!(output.stdout.is_empty());
}

#[test]
fn a_pid_the_caller_may_not_read_names_cap_sys_ptrace() {
    // As root: a root process read by nobody; as a normal user: init.
    let mut sleeper = Command::new("sleep").arg("600").spawn().expect("sleep");
    let target = if is_root() { sleeper.id() } else { 1 };
    let pid = target.to_string();
    let output = stdtrace::run_command(command_as(
        As::SameUser,
        Path::new(stdtrace::binary()),
        &["snapshot", "--pid", &pid],
    ));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("not allowed to read pid {pid}")),
        "{stderr}"
    );
    assert!(stderr.contains("CAP_SYS_PTRACE"), "{stderr}");
}

#[test]
fn bad_options_are_one_line_errors() {
    let output = stdtrace::run(&["snapshot", "--pdi", "5"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--pdi"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
