//! `stdtrace snapshot`, with real processes: a C writer and Go writers (default and stripped
//! builds) stuck on full pipes, and a Go program with 1,000 goroutines of which exactly 3 are
//! blocked writing; each as root and as a normal user of the same uid as the target (both run
//! as `nobody` through `setpriv`). While every snapshot runs, the target is watched: it is
//! never stopped (`State: T`) nor traced (`TracerPid`), and where it has a progress counter,
//! the counter moves. stdtrace is run under strace, which must see no `bpf`, `ptrace` or
//! signal-sending system call, and its fds are watched for BPF objects.

#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/stdtrace.rs"]
mod stdtrace;

use std::{
    os::fd::{FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use stdtrace::{Lines, field, function_names, json_lines};

/// Who runs the target and the snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum As {
    Root,
    /// The same normal user for both (`nobody`, when the tests run as root).
    SameUser,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether the test can run as `who`; under `CI=true`, one that cannot fails.
fn can_run(test: &str, who: As) -> bool {
    match who {
        As::Root => stdtrace::can_trace(test),
        // Not root: the tests already run as a normal user.
        As::SameUser => true,
    }
}

/// `program args` as `who`.
fn command_as(who: As, program: &Path, args: &[&str]) -> Command {
    if who == As::SameUser && is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(program)
            .args(args);
        cmd
    } else {
        let mut cmd = Command::new(program);
        cmd.args(args);
        cmd
    }
}

/// A pipe: (read end, write end), inheritable.
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe fills the two ints we own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fresh descriptors owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Processes this test started, killed by pid when it ends.
struct Started(Vec<Child>);

impl Drop for Started {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `writer` with its stdout on a pipe whose only reader is `sleep 600`, which never reads.
/// Returns the processes (writer first) and the writer's stderr.
fn writer_into_full_pipe(who: As, writer: &Path, args: &[&str]) -> (Started, Lines) {
    let (read, write) = pipe();
    let reader = command_as(who, Path::new("sleep"), &["600"])
        .stdin(Stdio::from(read))
        .stdout(Stdio::null())
        .spawn()
        .expect("starting the reader");
    let mut writer = command_as(who, writer, args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the writer");
    let stderr = Lines::new(writer.stderr.take().expect("stderr"));
    (Started(vec![writer, reader]), stderr)
}

/// Waits until a thread of `pid` sleeps in a write-family syscall (`/proc/PID/task/*/syscall`
/// starting with 1, 20, 18, 296 or 328), `count` of them.
fn wait_blocked_writing(pid: u32, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let blocked = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|tasks| {
                tasks
                    .flatten()
                    .filter(|task| {
                        std::fs::read_to_string(task.path().join("syscall"))
                            .ok()
                            .and_then(|text| text.split_whitespace().next().map(str::to_owned))
                            .is_some_and(|nr| ["1", "18", "20", "296", "328"].contains(&&*nr))
                    })
                    .count()
            })
            .unwrap_or(0);
        if blocked >= count {
            // A write that has just blocked: let the scheduler's clock move past it.
            std::thread::sleep(Duration::from_millis(300));
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid} never had {count} threads blocked writing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What was seen of the target and of stdtrace while a snapshot ran.
#[derive(Debug, Default)]
struct Watched {
    /// `/proc/PID/status` lines showing the target stopped or traced.
    disturbed: Vec<String>,
    /// stdtrace's fds that were BPF objects.
    bpf_fds: Vec<String>,
    samples: usize,
}

/// Runs `stdtrace snapshot ARGS` as `who` under strace (when installed), watching `target`
/// until it ends; returns its output and what was seen.
fn snapshot(who: As, target: u32, args: &[&str]) -> (Output, Watched) {
    let strace_out = std::env::temp_dir().join(format!(
        "stdtrace-snapshot-strace-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&strace_out);
    let strace = Path::new("/usr/bin/strace").exists();
    let mut all = vec!["snapshot"];
    all.extend_from_slice(args);
    let mut cmd = if strace {
        let out = strace_out.to_string_lossy().into_owned();
        let mut strace_args = vec![
            "-f",
            "-qq",
            "-e",
            "trace=bpf,ptrace,kill,tkill,tgkill,pidfd_send_signal,rt_sigqueueinfo,rt_tgsigqueueinfo",
            "-o",
            &out,
            stdtrace::binary(),
        ];
        strace_args.extend_from_slice(&all);
        let strace_args: Vec<String> = strace_args.iter().map(|arg| arg.to_string()).collect();
        let strace_args: Vec<&str> = strace_args.iter().map(String::as_str).collect();
        command_as(who, Path::new("/usr/bin/strace"), &strace_args)
    } else {
        let message = "strace is not installed: the system calls of stdtrace are not checked";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("{message}");
        command_as(who, Path::new(stdtrace::binary()), &all)
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let done = Arc::new(AtomicBool::new(false));
    let child = cmd.spawn().expect("starting stdtrace snapshot");
    let snapshot_pid = child.id();
    let watcher = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || watch(target, snapshot_pid, &done))
    };
    let output = stdtrace::wait_with_timeout(child, Duration::from_secs(60));
    done.store(true, Ordering::Relaxed);
    let watched = watcher.join().expect("watcher");
    if strace {
        let calls = std::fs::read_to_string(&strace_out).unwrap_or_default();
        let _ = std::fs::remove_file(&strace_out);
        let calls: Vec<&str> = calls
            .lines()
            .filter(|line| !line.trim().is_empty())
            .collect();
        assert!(
            calls.is_empty(),
            "stdtrace snapshot made forbidden system calls: {calls:#?}"
        );
    }
    assert!(watched.disturbed.is_empty(), "{watched:?}");
    assert!(watched.bpf_fds.is_empty(), "{watched:?}");
    (output, watched)
}

static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Samples the target's status and stdtrace's fds (the process and its children) until
/// `done`.
fn watch(target: u32, snapshot_pid: u32, done: &AtomicBool) -> Watched {
    let mut watched = Watched::default();
    while !done.load(Ordering::Relaxed) {
        watched.samples += 1;
        for task in tasks(target) {
            let Ok(status) = std::fs::read_to_string(format!("/proc/{target}/task/{task}/status"))
            else {
                continue;
            };
            for line in status.lines() {
                let stopped = line.starts_with("State:")
                    && (line.contains("T (stopped)") || line.contains("t (tracing stop)"));
                let traced =
                    line.starts_with("TracerPid:") && line.split_whitespace().nth(1) != Some("0");
                if stopped || traced {
                    watched.disturbed.push(format!("tid {task}: {line}"));
                }
            }
        }
        // stdtrace itself (a child of strace when run under it).
        for pid in [snapshot_pid].into_iter().chain(children(snapshot_pid)) {
            if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
                for fd in fds.flatten() {
                    if let Ok(link) = std::fs::read_link(fd.path())
                        && link.to_string_lossy().contains("bpf")
                    {
                        watched
                            .bpf_fds
                            .push(format!("pid {pid}: {}", link.display()));
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    watched
}

fn tasks(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|task| task.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn children(pid: u32) -> Vec<u32> {
    tasks(pid)
        .into_iter()
        .filter_map(|tid| std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn blocked_writes(records: &[Value]) -> Vec<&Value> {
    records
        .iter()
        .filter(|record| record["type"] == "blocked_write")
        .collect()
}

/// A stuck record into a full pipe whose one reader is `sleep`, asleep.
fn check_stuck_into_full_pipe(stuck: &Value, writer_pid: u32) {
    assert_eq!(stuck["pid"], writer_pid, "{stuck}");
    assert_eq!(stuck["state"], "stuck", "{stuck}");
    assert_eq!(stuck["duration_at_least"], true, "{stuck}");
    assert!(stuck["duration_ms"].as_u64().is_some(), "{stuck}");
    assert_eq!(stuck["syscall"], "write", "{stuck}");
    assert_eq!(stuck["fd"], 1, "{stuck}");
    let target = &stuck["target"];
    assert_eq!(target["kind"], "pipe", "{stuck}");
    assert_eq!(target["capacity"], 65536, "{stuck}");
    assert!(target["queued"].as_u64().unwrap() >= 61440, "{stuck}");
    let readers = target["readers"].as_array().expect("readers");
    assert_eq!(readers.len(), 1, "{stuck}");
    assert_eq!(readers[0]["comm"], "sleep", "{stuck}");
    assert_eq!(readers[0]["state"], "sleeping", "{stuck}");
    assert_eq!(readers[0]["reading"], false, "{stuck}");
}

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

/// A Go fixture built with go1.25.5 in `flavour`, if `cargo xtask go-fixtures` built it.
fn go_fixture(flavour: &str, program: &str) -> Option<PathBuf> {
    let path = fixtures::workspace_root()
        .join("target/fixtures/go/1.25.5")
        .join(flavour)
        .join(program);
    if path.exists() {
        return Some(path);
    }
    let message = format!(
        "{} is missing (run `cargo xtask go-fixtures`)",
        path.display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{message}");
    }
    eprintln!("{message}: skipped");
    None
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

/// The fixture's stderr, read in the background: every line so far.
struct Progress {
    lines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Progress {
    fn new(stream: impl std::io::Read + Send + 'static) -> Self {
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("lines").push(line);
            }
        });
        Self { lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// Waits for a line starting with `prefix`.
    fn wait_for(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) = self
                .lines()
                .into_iter()
                .find(|line| line.starts_with(prefix))
            {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no {prefix:?} in {:#?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The last `progress=N` seen.
    fn progress(&self) -> u32 {
        self.lines()
            .iter()
            .rev()
            .find(|line| line.starts_with("progress="))
            .map(|line| field(line, "progress"))
            .unwrap_or(0)
    }
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
        let message = format!(
            "no Go fixtures in {} (cargo xtask go-fixtures)",
            root.display()
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("{message}: skipped");
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
