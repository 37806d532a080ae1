//! Test daemons and the processes tests start: a real rsyslogd listening on a unix datagram
//! socket in a temporary directory, stopped so that its queue fills; signalling, finding and
//! watching the test's own processes, by pid.

#![allow(dead_code, reason = "each test file uses a part of the support")]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Signals a process this test started, by pid.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill has no memory preconditions; the pid is one of this test's processes.
    unsafe { libc::kill(pid as i32, signal) };
}

/// The children of `parent` whose command name is `comm`.
pub fn children_named(parent: u32, comm: &str) -> Vec<u32> {
    let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
        .unwrap_or_default();
    children
        .split_whitespace()
        .filter_map(|pid| pid.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|name| name.trim() == comm)
        })
        .collect()
}

/// Whether `pid`'s main thread is in a send-family syscall right now.
pub fn in_send(pid: u32) -> bool {
    let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
    matches!(syscall.split_whitespace().next(), Some("44" | "46" | "307"))
}

/// A real rsyslogd listening on a unix datagram socket in a temporary directory, stopped
/// (SIGSTOP) once it listens: its receive queue fills and stays full. Continued and killed, by
/// pid, when dropped.
pub struct StoppedRsyslogd {
    daemon: Child,
    dir: PathBuf,
    pub socket: PathBuf,
}

impl StoppedRsyslogd {
    pub fn start(name: &str) -> Option<Self> {
        let rsyslogd = Path::new("/usr/sbin/rsyslogd");
        if !super::can_run::require(super::can_run::Need::Program(rsyslogd)) {
            return None;
        }
        let dir = std::env::temp_dir().join(format!("stdtrace-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("log.sock");
        let config = dir.join("rsyslog.conf");
        std::fs::write(
            &config,
            format!(
                "global(workDirectory=\"{dir}\")\n\
                 module(load=\"imuxsock\" SysSock.Use=\"off\")\n\
                 input(type=\"imuxsock\" Socket=\"{socket}\")\n\
                 *.* {dir}/messages\n",
                dir = dir.display(),
                socket = socket.display()
            ),
        )
        .unwrap();
        let daemon = Command::new(rsyslogd)
            .arg("-n")
            .arg("-f")
            .arg(&config)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting rsyslogd");
        let started = Self {
            daemon,
            dir,
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(started.socket.exists() && started.dir.join("rsyslogd.pid").exists()) {
            assert!(Instant::now() < deadline, "rsyslogd never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Let it reach its input loop before it stops.
        std::thread::sleep(Duration::from_millis(300));
        signal(started.pid(), libc::SIGSTOP);
        Some(started)
    }

    pub fn pid(&self) -> u32 {
        self.daemon.id()
    }

    /// A shell loop of `logger` calls into the socket (its output not on the test's pipes: the
    /// loop outlives stdtrace, blocked).
    pub fn logger_loop(&self) -> String {
        format!(
            "exec >/dev/null 2>&1; for i in $(seq 1 200); do logger --socket-errors=on -u {} \"message $i\"; done",
            self.socket.display()
        )
    }
}

impl Drop for StoppedRsyslogd {
    fn drop(&mut self) {
        signal(self.pid(), libc::SIGCONT);
        signal(self.pid(), libc::SIGKILL);
        let _ = self.daemon.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
