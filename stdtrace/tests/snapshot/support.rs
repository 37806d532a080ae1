//! What the snapshot tests share: running the target and stdtrace as root or as the same
//! normal user, a writer stuck on a full pipe, and the watch kept on the target and on
//! stdtrace while a snapshot runs.

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

use crate::{
    can_run::{self, Need},
    fixtures,
    stdtrace::{self, Lines, field},
};

/// Who runs the target and the snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum As {
    Root,
    /// The same normal user for both (`nobody`, when the tests run as root).
    SameUser,
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether the test (named for the caller's reading; `can_run` names it itself) can run as
/// `who`; under `CI=true`, one that cannot fails.
pub fn can_run(_test: &str, who: As) -> bool {
    match who {
        As::Root => can_run::require(Need::Root),
        // Not root: the tests already run as a normal user.
        As::SameUser => true,
    }
}

/// `program args` as `who`.
pub fn command_as(who: As, program: &Path, args: &[&str]) -> Command {
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

/// A pipe: (read end, write end), close-on-exec, so that children other tests start at the
/// same time do not inherit an end (the child it is given to gets it as its stdin or stdout,
/// which `dup2` makes inheritable).
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two ints we own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Processes this test started, killed by pid when it ends.
pub struct Started(pub Vec<Child>);

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
pub fn writer_into_full_pipe(who: As, writer: &Path, args: &[&str]) -> (Started, Lines) {
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
pub fn wait_blocked_writing(pid: u32, count: usize) {
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
pub struct Watched {
    /// `/proc/PID/status` lines showing the target stopped or traced.
    pub disturbed: Vec<String>,
    /// stdtrace's fds that were BPF objects.
    pub bpf_fds: Vec<String>,
    pub samples: usize,
}

/// Runs `stdtrace snapshot ARGS` as `who` under strace (when installed), watching `target`
/// until it ends; returns its output and what was seen.
pub fn snapshot(who: As, target: u32, args: &[&str]) -> (Output, Watched) {
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

pub static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Samples the target's status and stdtrace's fds (the process and its children) until
/// `done`.
pub fn watch(target: u32, snapshot_pid: u32, done: &AtomicBool) -> Watched {
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

pub fn tasks(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|task| task.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

pub fn children(pid: u32) -> Vec<u32> {
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

pub fn blocked_writes(records: &[Value]) -> Vec<&Value> {
    records
        .iter()
        .filter(|record| record["type"] == "blocked_write")
        .collect()
}

/// A stuck record into a full pipe whose one reader is `sleep`, asleep.
pub fn check_stuck_into_full_pipe(stuck: &Value, writer_pid: u32) {
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

/// A Go fixture built with go1.25.5 in `flavour`, if `cargo xtask go-fixtures` built it.
pub fn go_fixture(flavour: &str, program: &str) -> Option<PathBuf> {
    let path = fixtures::workspace_root()
        .join("target/fixtures/go/1.25.5")
        .join(flavour)
        .join(program);
    can_run::require(Need::GoFixture(&path)).then_some(path)
}

/// The fixture's stderr, read in the background: every line so far.
pub struct Progress {
    lines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Progress {
    pub fn new(stream: impl std::io::Read + Send + 'static) -> Self {
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

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// Waits for a line starting with `prefix`.
    pub fn wait_for(&self, prefix: &str) -> String {
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
    pub fn progress(&self) -> u32 {
        self.lines()
            .iter()
            .rev()
            .find(|line| line.starts_with("progress="))
            .map(|line| field(line, "progress"))
            .unwrap_or(0)
    }
}
