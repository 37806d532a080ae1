//! stdtrace's own output never stalls tracing, as root with the real tracer: stdout into a
//! pipe nobody reads, a recording on a full filesystem, and SIGTERM as a clean stop.

#[path = "support/can_run.rs"]
mod can_run;
#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/prometheus.rs"]
mod prometheus;
#[path = "support/stdtrace.rs"]
mod stdtrace;

use std::{
    io::Write,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use can_run::Need;
use serde_json::Value;
use stdtrace::{Lines, StderrLines, field, parse_json_lines, summary};

/// The C writer: `failing_writes 1 0 --sigpipe` fails exactly one write with EPIPE, which
/// kills it (a SIGPIPE story each).
fn c_writer() -> PathBuf {
    fixtures::build_c(
        "writers/failing_writes.c",
        "failing_writes-fp",
        &["-O1", "-g", "-fno-omit-frame-pointer"],
    )
}

/// A shell the test owns that, once released by a line on its stdin, runs `count` writers
/// one after the other, says `done` on stderr, and waits for a second line before it exits.
/// Its stdout is /dev/null: it holds no end of stdtrace's pipes.
///
/// The writers run from `COPIES` copies of the fixture, in turn: each copy is a binary of its
/// own (its own inode), so its first failure is reported in full. Copies of one binary would
/// share their call path and be counted, not sent: too few records to fill stdout.
struct Loop {
    shell: Child,
    stdin: ChildStdin,
    stderr: StderrLines,
    copies: PathBuf,
}

/// Binaries of their own the writers run from (each reported in full once).
const COPIES: usize = 200;

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.copies);
    }
}

impl Loop {
    fn start(count: usize) -> Self {
        // One directory per loop: the tests of this binary run at once.
        static LOOPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let copies = std::env::temp_dir().join(format!(
            "stdtrace-copies-{}-{}",
            std::process::id(),
            LOOPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&copies).unwrap();
        for copy in 0..COPIES {
            std::fs::copy(c_writer(), copies.join(format!("w{copy}"))).unwrap();
        }
        let script = format!(
            "read go; i=0; while [ $i -lt {count} ]; do {}/w$((i % {COPIES})) 1 0 --sigpipe; \
             i=$((i+1)); done; echo done >&2; read end",
            copies.display()
        );
        let mut shell = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the shell");
        let stdin = shell.stdin.take().unwrap();
        let stderr = StderrLines::new(shell.stderr.take().unwrap());
        Self {
            shell,
            stdin,
            stderr,
            copies,
        }
    }

    /// Runs the writers; returns their pids once all have exited.
    fn run(&mut self, count: usize) -> Vec<u32> {
        self.stdin.write_all(b"go\n").unwrap();
        let done = self.stderr.wait_for("done", Duration::from_secs(180));
        assert_eq!(done, "done");
        let pids: Vec<u32> = self
            .stderr
            .rest(Duration::ZERO)
            .iter()
            .filter(|line| line.starts_with("failing_writes:"))
            .map(|line| field(line, "pid"))
            .collect();
        assert_eq!(pids.len(), count, "every writer announced itself");
        pids
    }

    fn end(mut self) {
        self.stdin.write_all(b"end\n").unwrap();
        assert!(self.shell.wait().unwrap().success());
    }
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: signalling stdtrace, our own child, by its pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

/// Asserts the summary counts exactly one EPIPE failure for each writer, and nothing more of
/// the targets: exactly in `failed_writes` and in the writers' binaries' folded totals (one per
/// copy), and per process for those the bounded `totals` still lists (the last 256 exited).
fn assert_exact_totals(summary: &Value, pids: &[u32]) {
    assert_eq!(summary["failed_writes"], pids.len(), "{summary}");
    let binaries = summary["totals_by_binary"].as_array().unwrap();
    // One per copy; a process whose exit record was lost and recovered from a rescan of /proc
    // may have no binary known (`?`), never more of them than exits recovered.
    let named = binaries.iter().filter(|b| b["binary"] != "?").count();
    assert!(named <= COPIES.min(pids.len()), "{summary}");
    let unknown: u64 = binaries
        .iter()
        .filter(|b| b["binary"] == "?")
        .map(|b| b["processes"].as_u64().unwrap())
        .sum();
    let recovered = summary["tracked_processes"]["recovered_exits"]
        .as_u64()
        .unwrap();
    assert!(unknown <= recovered, "{summary}");
    let sum = |field: &str| -> u64 { binaries.iter().map(|b| b[field].as_u64().unwrap()).sum() };
    assert!(binaries.iter().all(|b| b["errno"] == "EPIPE"), "{summary}");
    assert_eq!(sum("processes"), pids.len() as u64, "{summary}");
    assert_eq!(sum("failures"), pids.len() as u64, "{summary}");
    let totals = summary["totals"].as_array().unwrap();
    assert_eq!(totals.len(), pids.len().min(256), "{summary}");
    for total in totals {
        let pid = u32::try_from(total["pid"].as_u64().unwrap()).unwrap();
        assert!(pids.contains(&pid), "a total of no writer: {total}");
        assert_eq!(
            (&total["failures"], &total["errno"]),
            (&Value::from(1), &Value::from("EPIPE"))
        );
    }
}

/// The sum of the samples of the Prometheus text whose line starts with `prefix` and whose
/// labels contain `label`.
fn sample_sum(text: &str, prefix: &str, label: &str) -> u64 {
    text.lines()
        .filter(|line| line.starts_with(prefix) && line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Starts stdtrace on the shell by `--pid` (its children followed), with stdout a pipe the
/// test holds, and waits until it traces.
fn trace_loop(shell: u32, extra: &[&str]) -> (Child, StderrLines) {
    let pid = shell.to_string();
    let mut args = vec!["--format", "json", "--pid", &pid];
    args.extend_from_slice(extra);
    let mut tracer = stdtrace::command(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting stdtrace");
    let mut stderr = StderrLines::new(tracer.stderr.take().unwrap());
    stderr.wait_for("stdtrace: tracing pid", Duration::from_secs(30));
    (tracer, stderr)
}

/// Writers in a loop while stdtrace's stdout is a pipe nobody reads (well over its 4 KiB
/// and the 256 KiB queue: about 2 KiB of records each): they all run, stdtrace goes on counting,
/// and after SIGTERM, once the test reads, the summary arrives with exact totals and says
/// how many records stdout dropped.
#[test]
fn a_stdout_nobody_reads_drops_records_but_not_the_count() {
    if !can_run::require(Need::Root) {
        return;
    }
    const WRITERS: usize = 1000;
    let mut writers = Loop::start(WRITERS);
    let port = prometheus::free_port();
    let metrics = format!("127.0.0.1:{port}");
    let (mut tracer, mut stderr) = trace_loop(writers.shell.id(), &["--metrics", &metrics]);
    let stdout = tracer.stdout.take().unwrap();
    // The smallest pipe: what stdout holds is mostly stdtrace's own queue.
    // SAFETY: F_SETPIPE_SZ on the pipe's read end, which the test owns.
    let size = unsafe { libc::fcntl(stdout.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    assert!(size >= 4096, "{}", std::io::Error::last_os_error());

    let pids = writers.run(WRITERS);
    // stdout has not been read at all, and tracing still goes on.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        tracer.try_wait().unwrap().is_none(),
        "stdtrace is still tracing"
    );
    // While stdout is still stalled, /metrics has every failure, counted in the kernel, and the
    // records stdout dropped.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (epipes, dropped) = loop {
        let text = prometheus::wait_for_ok(port, "/metrics", Duration::from_secs(10));
        let epipes = sample_sum(&text, "stdtrace_write_errors_total{", "errno=\"EPIPE\"");
        let dropped = sample_sum(&text, "stdtrace_output_records_dropped_total", "");
        if epipes == pids.len() as u64 && dropped > 0 || Instant::now() > deadline {
            break (epipes, dropped);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(epipes, pids.len() as u64, "EPIPE failures on /metrics");
    assert!(dropped > 0, "stdout's dropped records on /metrics");

    signal(&tracer, libc::SIGTERM);
    let stopped = Instant::now();
    let mut stdout = Lines::new(stdout);
    let output = stdtrace::wait_with_timeout(tracer, Duration::from_secs(60));
    let exited = stopped.elapsed();
    let lines = stdout.all(Duration::from_secs(5));
    let stderr = stderr.rest(Duration::from_millis(100));
    assert_eq!(output.status.code(), Some(143), "{stderr:#?}");
    assert!(exited < Duration::from_secs(30), "{exited:?}");
    let records = parse_json_lines(lines.iter().map(String::as_str));
    let summary = summary(&records);
    assert_eq!(summary["stopped"], "terminated");
    assert_exact_totals(summary, &pids);
    let dropped = summary["stdout_records_dropped"].as_u64().unwrap();
    assert!(dropped > 0, "{summary}");
    assert_eq!(summary["output_records_dropped"], dropped);
    assert_eq!(summary.get("recording_records_dropped"), None);
    // What was not dropped arrived whole, in order: every line parsed above.
    writers.end();
}

/// The same stalled stdout, never read at all: stdtrace still exits after SIGTERM, within its
/// bounded wait, says on stderr that the summary could not be written, and exits 143.
#[test]
fn a_stdout_never_read_does_not_keep_stdtrace_from_exiting() {
    if !can_run::require(Need::Root) {
        return;
    }
    const WRITERS: usize = 300;
    let mut writers = Loop::start(WRITERS);
    let (mut tracer, mut stderr) = trace_loop(writers.shell.id(), &[]);
    let stdout = tracer.stdout.take().unwrap();
    writers.run(WRITERS);
    signal(&tracer, libc::SIGTERM);
    let stopped = Instant::now();
    let code = wait_code(&mut tracer, Duration::from_secs(60));
    let exited = stopped.elapsed();
    drop(stdout);
    assert_eq!(code, Some(143));
    // The wait is 10 s: more is a hang, less is a summary given up too soon.
    assert!(
        exited >= Duration::from_secs(9) && exited < Duration::from_secs(30),
        "{exited:?}"
    );
    let stderr = stderr.rest(Duration::from_millis(500));
    assert!(
        stderr
            .iter()
            .any(|line| line.contains("the summary could not be written to stdout")),
        "{stderr:#?}"
    );
    writers.end();
}

fn wait_code(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            signal(child, libc::SIGKILL);
            panic!("stdtrace did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tmpfs of `size` the test mounts, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("stdtrace-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting a tmpfs on {}", dir.display());
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// `--output FILE` on a filesystem that fills up: tracing goes on, stdout (read) shows every
/// record and the exact totals, and every record is either in the file or counted as dropped
/// by the recording.
#[test]
fn a_recording_on_a_full_filesystem_drops_and_counts_and_tracing_goes_on() {
    if !can_run::require(Need::Root) {
        return;
    }
    const WRITERS: usize = 200;
    let tmpfs = Tmpfs::mount("64k");
    let file = tmpfs.path().join("stdtrace.jsonl");
    let mut writers = Loop::start(WRITERS);
    let (mut tracer, mut stderr) =
        trace_loop(writers.shell.id(), &["--output", file.to_str().unwrap()]);
    let mut stdout = Lines::new(tracer.stdout.take().unwrap());
    let pids = writers.run(WRITERS);
    writers.end();
    // The shell exited: stdtrace ends by itself.
    let output = stdtrace::wait_with_timeout(tracer, Duration::from_secs(60));
    let stderr = stderr.rest(Duration::from_millis(100));
    assert_eq!(output.status.code(), Some(0), "{stderr:#?}");
    assert!(
        stderr
            .iter()
            .any(|line| line.contains("writing the recording: No space left on device")),
        "{stderr:#?}"
    );
    let lines = stdout.all(Duration::from_secs(5));
    let shown = parse_json_lines(lines.iter().map(String::as_str));
    let summary = summary(&shown);
    assert_eq!(summary["stopped"], "every target exited");
    assert_exact_totals(summary, &pids);
    assert_eq!(summary["stdout_records_dropped"], 0);
    let dropped = summary["recording_records_dropped"].as_u64().unwrap();
    assert!(dropped > 0, "{summary}");
    assert_eq!(summary["output_records_dropped"], dropped);

    // The file keeps whole lines (one cut short by the full disk aside) and those of its
    // records, with the recording's drops, are every record shown.
    let bytes = std::fs::read(&file).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    // Whole lines only: what follows the last newline is the record the disk cut short.
    let whole = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    let kept: Vec<Value> = whole
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .collect();
    assert_eq!(kept[0]["type"], "header", "{:?}", kept.first());
    let is_record = |r: &&Value| r["type"] != "header" && r["type"] != "summary";
    let kept_records = kept.iter().filter(is_record).count() as u64;
    let shown_records = shown.iter().filter(is_record).count() as u64;
    assert!(kept_records > 0);
    assert_eq!(kept_records + dropped, shown_records);
}

/// SIGTERM in launch mode: the summary, exit status 143 (128 + SIGTERM), and the command
/// stdtrace launched is not signalled: it goes on, untraced.
#[test]
fn sigterm_stops_cleanly_with_the_summary_and_leaves_the_command_running() {
    if !can_run::require(Need::Root) {
        return;
    }
    let writer = c_writer();
    let mut tracer = stdtrace::command(&[
        "--format",
        "json",
        "--",
        writer.to_str().unwrap(),
        "3",
        "2",
        "--hold",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("starting stdtrace");
    let mut stdin = tracer.stdin.take().unwrap();
    let mut stderr = StderrLines::new(tracer.stderr.take().unwrap());
    let mut stdout = Lines::new(tracer.stdout.take().unwrap());
    let announced = stderr.wait_for("failing_writes: pid=", Duration::from_secs(30));
    let pid = field(&announced, "pid");
    stdin.write_all(b"go\n").unwrap();
    stdout.wait_for_count(2, Duration::from_secs(30), |line| {
        stdtrace::is_write_error_of(line, pid)
    });
    // Repeats are counted in the kernel: the summary has them all.
    signal(&tracer, libc::SIGTERM);
    let output = stdtrace::wait_with_timeout(tracer, Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(143));
    let lines = stdout.all(Duration::from_secs(5));
    let records = parse_json_lines(lines.iter().map(String::as_str));
    let summary = summary(&records);
    assert_eq!(summary["stopped"], "terminated");
    assert_eq!(summary["failed_writes"], 5);
    assert_eq!(summary["stdout_records_dropped"], 0);
    assert_eq!(summary.get("command"), None, "the command has not exited");
    // The command was not signalled: it is still waiting for its second line.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the command runs");
    let state = state.rsplit(") ").next().unwrap().chars().next().unwrap();
    assert!(matches!(state, 'S' | 'R'), "state {state}");
    stdin.write_all(b"exit\n").unwrap();
    drop(stdin);
}
