//! The tracers compared: starting one until it is attached, and stopping it.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::Paths;

/// bpftrace's one-liner: failed writes and sends by pid and user stack.
const BPFTRACE_PROGRAM: &str = "tracepoint:syscalls:sys_exit_write,tracepoint:syscalls:sys_exit_sendto /args->ret == -11 || args->ret == -32/ { @[pid, ustack] = count(); }";

/// A tracer configuration of the write-path benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tracer {
    None,
    Floor,
    Stdtrace,
    Bpftrace,
    FloorRaw,
    StdtraceRaw,
}

impl Tracer {
    pub(super) const ALL: [Tracer; 6] = [
        Tracer::None,
        Tracer::Floor,
        Tracer::Stdtrace,
        Tracer::Bpftrace,
        Tracer::FloorRaw,
        Tracer::StdtraceRaw,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Tracer::None => "none",
            Tracer::Floor => "floor",
            Tracer::Stdtrace => "stdtrace",
            Tracer::Bpftrace => "bpftrace",
            Tracer::FloorRaw => "floor (raw)",
            Tracer::StdtraceRaw => "stdtrace --hook raw",
        }
    }
}

/// A process stopped (by its pid) when dropped.
pub(super) struct Running {
    pub(super) child: Child,
    pub(super) name: &'static str,
}

impl Running {
    /// Asks it to finish (SIGINT, as Ctrl-C), and waits.
    pub(super) fn stop(mut self) -> Result<()> {
        // SAFETY: signalling a child this benchmark started, by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(20));
        }
        bail!("{} (pid {}) did not stop", self.name, self.child.id())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until a line of `stream` contains `needle`, then keeps draining it in the background.
pub(super) fn wait_for_line(
    stream: impl std::io::Read + Send + 'static,
    needle: &str,
) -> Result<()> {
    let (found, seen) = mpsc::channel();
    let needle = needle.to_owned();
    thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if !sent && line.contains(&needle) {
                let _ = found.send(());
                sent = true;
            }
        }
    });
    seen.recv_timeout(Duration::from_secs(60))
        .context("the tracer did not say it was ready")
}

/// Starts a tracer and waits until it is attached.
pub(super) fn start(paths: &Paths, tracer: Tracer) -> Result<Option<Running>> {
    let (mut cmd, ready_on_stdout, needle, name) = match tracer {
        Tracer::None => return Ok(None),
        Tracer::Floor | Tracer::FloorRaw => {
            let mut cmd = Command::new(&paths.floor);
            cmd.arg(if tracer == Tracer::Floor {
                "tracepoint"
            } else {
                "raw"
            });
            (cmd, false, "attached", "stdtrace-floor")
        }
        Tracer::Stdtrace | Tracer::StdtraceRaw => {
            let mut cmd = Command::new(&paths.stdtrace);
            if tracer == Tracer::StdtraceRaw {
                cmd.args(["--hook", "raw"]);
            }
            (cmd, false, "stdtrace: tracing", "stdtrace")
        }
        Tracer::Bpftrace => {
            let mut cmd = Command::new("bpftrace");
            cmd.args(["-e", BPFTRACE_PROGRAM]);
            (cmd, true, "Attaching", "bpftrace")
        }
    };
    // The report itself is not what is measured; its cost is (stdout to /dev/null).
    cmd.stdin(Stdio::piped());
    if ready_on_stdout {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    } else {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    }
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    let stream: Box<dyn std::io::Read + Send> = if ready_on_stdout {
        Box::new(child.stdout.take().context("stdout")?)
    } else {
        Box::new(child.stderr.take().context("stderr")?)
    };
    let running = Running { child, name };
    wait_for_line(stream, needle)?;
    if tracer == Tracer::Bpftrace {
        // bpftrace says "Attaching" before it attaches.
        thread::sleep(Duration::from_millis(1500));
    }
    Ok(Some(running))
}
