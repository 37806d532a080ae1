//! Chains of stuck writers and ptys, as root, with real programs: `script -qfc yes /dev/null |
//! sleep` (yes → pty → script → pipe → sleep: yes's write is stuck on the pty because script,
//! the master's holder, is itself stuck writing into the pipe that sleep never reads), and a
//! pty whose master no process holds (it is in flight in a unix socket, then closed: EIO).
//!
//! The test attaches to `yes` only: script and sleep are not traced, their part of the story is
//! read from procfs and the kernel's buffers.

#[path = "support/can_run.rs"]
mod can_run;
#[path = "support/stdtrace.rs"]
mod stdtrace;

use std::{
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use can_run::Need;
use serde_json::Value;
use stdtrace::json_lines;

/// Processes the test started, killed and waited for on drop, and those they started, killed
/// by pid.
#[derive(Default)]
struct Started {
    children: Vec<Child>,
    grandchildren: Vec<u32>,
}

impl Started {
    fn add(&mut self, child: Child) -> u32 {
        let pid = child.id();
        self.children.push(child);
        pid
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        for &pid in &self.grandchildren {
            // SAFETY: signalling a process this test's child started, by its pid.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two ints we own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// The syscall line of thread `pid` (`1 0x1 ...` for a write on fd 1).
fn syscall(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default()
}

/// Whether `pid` sleeps in write(2) on fd 1.
fn blocked_writing_stdout(pid: u32) -> bool {
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = state
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned));
    syscall(pid).starts_with("1 0x1 ") && state.as_deref() == Some("S")
}

/// Waits until `done`, or panics saying `what` after 15 s.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The descendant of `pid` whose comm is `comm`.
fn descendant(pid: u32, comm: &str) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|child| child.parse::<u32>().ok())
        .find_map(|child| {
            let name = std::fs::read_to_string(format!("/proc/{child}/comm")).ok()?;
            if name.trim() == comm {
                Some(child)
            } else {
                descendant(child, comm)
            }
        })
}

fn inode_of_fd(pid: u32, fd: i32) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/fd/{fd}"))
        .unwrap()
        .ino()
}

fn stuck_of(records: &[Value], pid: u32) -> Vec<&Value> {
    records
        .iter()
        .filter(|record| {
            record["type"] == "blocked_write" && record["state"] == "stuck" && record["pid"] == pid
        })
        .collect()
}

/// The pipeline `script -qfc yes /dev/null | sleep 60`, started by the test, once yes and
/// script are both stuck: (script, yes, sleep, the pipe's inode, yes's pts number).
fn script_pipeline(started: &mut Started) -> (u32, u32, u32, u64, u32) {
    let (read, write) = pipe();
    // script's own stdin: a pipe the test holds and never writes (EOF would end script).
    let (stdin_read, stdin_write) = pipe();
    let sleep = started.add(
        Command::new("sleep")
            .arg("60")
            .stdin(Stdio::from(read))
            .spawn()
            .expect("starting sleep"),
    );
    let script = started.add(
        Command::new("script")
            .args(["-qfc", "yes", "/dev/null"])
            .stdin(Stdio::from(stdin_read))
            .stdout(Stdio::from(write))
            .stderr(Stdio::null())
            .spawn()
            .expect("starting script"),
    );
    // Held until the pipeline is killed: leaked on purpose, closed when the test exits.
    std::mem::forget(stdin_write);
    let mut yes = None;
    wait_until("script to start yes", || {
        yes = descendant(script, "yes");
        yes.is_some()
    });
    let yes = yes.unwrap_or_default();
    started.grandchildren.push(yes);
    wait_until("script and yes to block writing", || {
        blocked_writing_stdout(script) && blocked_writing_stdout(yes)
    });
    let pts: u32 = std::fs::read_link(format!("/proc/{yes}/fd/1"))
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("/dev/pts/")
        .parse()
        .expect("yes writes to /dev/pts/N");
    (script, yes, sleep, inode_of_fd(script, 1), pts)
}

#[test]
fn yes_into_script_into_sleep_is_one_chain() {
    if !can_run::require(Need::Root)
        || !can_run::require(Need::Program(Path::new("/usr/bin/script")))
    {
        return;
    }
    let mut started = Started::default();
    let (script, yes, sleep, pipe_inode, pts) = script_pipeline(&mut started);
    let yes_arg = yes.to_string();
    let output = stdtrace::run(&[
        "--format",
        "json",
        "--stuck",
        "500ms",
        "--duration",
        "2s",
        "--pid",
        &yes_arg,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stdtrace failed: {stderr}");
    let records = json_lines(&output.stdout);
    let stuck = stuck_of(&records, yes);
    assert_eq!(stuck.len(), 1, "{records:#?}\n{stderr}");
    let record = stuck[0];
    assert_eq!(record["comm"], "yes", "{record}");
    assert_eq!(record["fd"], 1, "{record}");

    // yes → pty, with its fill against its capacity.
    let target = &record["target"];
    assert_eq!(target["kind"], "pty", "{record}");
    assert_eq!(target["pts"], pts, "{record}");
    let pty = &target["pty"];
    let flip_limit = pty["flip_limit"].as_u64().expect("flip_limit");
    assert!(flip_limit > 0, "{record}");
    assert_eq!(pty["ldisc_size"], 4096, "{record}");
    assert_eq!(target["capacity"], 2 * flip_limit + 4096, "{record}");
    let queued = target["queued"].as_u64().expect("queued");
    assert!(queued > 0 && queued <= 2 * flip_limit + 4096, "{record}");
    assert_eq!(
        queued,
        pty["flip_queued"].as_u64().unwrap() + pty["ldisc_queued"].as_u64().unwrap(),
        "{record}"
    );
    assert!(pty["flip_queued"].as_u64().unwrap() > 0, "{record}");
    assert_eq!(pty["master_open"], 1, "{record}");

    // → script, the master's holder, itself blocked writing.
    assert_eq!(target["master"]["pid"], script, "{record}");
    assert_eq!(target["master"]["comm"], "script", "{record}");
    assert_eq!(target["master"]["blocked"], true, "{record}");
    let readers = target["readers"].as_array().expect("readers");
    assert_eq!(readers.len(), 1, "only script holds the master: {record}");
    let holder = &readers[0];
    assert_eq!(holder["pid"], script, "{record}");
    assert_eq!(holder["reading"], false, "{record}");
    let chained = &holder["blocked_write"];
    assert_eq!(chained["tid"], script, "{record}");
    assert_eq!(chained["syscall"], "write", "{record}");
    assert_eq!(chained["fd"], 1, "{record}");
    assert!(chained.get("cut").is_none(), "{record}");

    // → the pipe, full, → sleep, its reader, not reading.
    let pipe = &chained["target"];
    assert_eq!(pipe["kind"], "pipe", "{record}");
    assert_eq!(pipe["inode"], pipe_inode, "{record}");
    assert_eq!(pipe["capacity"], 65536, "{record}");
    assert!(pipe["queued"].as_u64().unwrap() > 0, "{record}");
    let pipe_readers = pipe["readers"].as_array().expect("the pipe's readers");
    assert_eq!(pipe_readers.len(), 1, "{record}");
    assert_eq!(pipe_readers[0]["pid"], sleep, "{record}");
    assert_eq!(pipe_readers[0]["comm"], "sleep", "{record}");
    assert_eq!(pipe_readers[0]["reading"], false, "{record}");
    assert_eq!(pipe_readers[0]["blocked"], false, "{record}");
    assert!(
        pipe_readers[0].get("blocked_write").is_none(),
        "sleep writes nothing: {record}"
    );
    assert_eq!(pipe["writers"][0]["pid"], script, "{record}");

    // The text tells it as one story, in that order.
    let output = stdtrace::run(&["--stuck", "500ms", "--duration", "2s", "--pid", &yes_arg]);
    let text = String::from_utf8_lossy(&output.stdout);
    let story: Vec<&str> = text
        .lines()
        .skip_while(|line| !line.contains(&format!("pid {yes} (yes)")))
        .take(2)
        .collect();
    assert_eq!(story.len(), 2, "{text}");
    let story = story.join("\n");
    let at = |needle: &str| {
        story
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in: {story}"))
    };
    let order = [
        at(&format!("pid {yes} (yes)")),
        at(&format!("pty /dev/pts/{pts}")),
        at(&format!("\n  -> pid {script} (script) blocked")),
        at(&format!("pipe:[{pipe_inode}]")),
        at(&format!("reader pid {sleep} (sleep)")),
    ];
    assert!(order.is_sorted(), "{order:?} in: {story}");
}

/// Sends `fd` over `socket` (SCM_RIGHTS): in flight until received, which it never is.
fn send_fd(socket: &OwnedFd, fd: &OwnedFd) {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: CMSG_SPACE of a constant size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: zeroed msghdr, then filled with pointers to the buffers above, which outlive it.
    unsafe {
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = space;
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(header).cast::<i32>(), fd.as_raw_fd());
        assert_eq!(libc::sendmsg(socket.as_raw_fd(), &message, 0), 1);
    }
}

/// A pty whose master no process holds: the test sends it over a unix socket nobody receives
/// from and closes its own, so the master is open (the slave is not hung up) and nobody drains
/// it: `yes` gets stuck, and the report says `"master": null` with the master open once. Then
/// the socket goes, the master's last file closes, the kernel hangs the slave up, and yes's
/// write fails with EIO: `"master": null` again (a master nobody holds and a hung-up slave are
/// the same moment, save for one in flight).
#[test]
fn a_pty_master_no_process_holds() {
    if !can_run::require(Need::Root) {
        return;
    }
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills the two ints; the names and settings may be null.
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0);
    // openpty does not set FD_CLOEXEC: without it, yes would inherit the master and hold it.
    for fd in [master, slave] {
        // SAFETY: setting a descriptor flag on a descriptor we own.
        assert_eq!(
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) },
            0
        );
    }
    // SAFETY: fresh descriptors owned by nobody else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut sockets = [0; 2];
    // SAFETY: socketpair fills the two ints we own.
    assert_eq!(
        unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                sockets.as_mut_ptr(),
            )
        },
        0
    );
    // SAFETY: fresh descriptors owned by nobody else.
    let (sender, receiver) = unsafe {
        (
            OwnedFd::from_raw_fd(sockets[0]),
            OwnedFd::from_raw_fd(sockets[1]),
        )
    };
    let mut started = Started::default();
    let pid = started.add(
        Command::new("yes")
            .stdout(Stdio::from(slave))
            .stderr(Stdio::null())
            .spawn()
            .expect("starting yes"),
    );
    send_fd(&sender, &master);
    drop(master);
    wait_until("yes to block writing", || blocked_writing_stdout(pid));

    let pid_arg = pid.to_string();
    let tracer = stdtrace::command(&[
        "--format",
        "json",
        "--stuck",
        "500ms",
        "--errno",
        "EIO",
        "--duration",
        "4s",
        "--pid",
        &pid_arg,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("starting stdtrace");
    std::thread::sleep(Duration::from_millis(2500));
    // The in-flight master goes with the socket: the slave is hung up.
    drop(sender);
    drop(receiver);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = started.children[0].try_wait().expect("waiting for yes") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "yes did not end once the master closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "yes ends on EIO");
    let output = stdtrace::wait_with_timeout(tracer, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let records = json_lines(&output.stdout);

    let stuck = stuck_of(&records, pid);
    assert_eq!(stuck.len(), 1, "{records:#?}\n{stderr}");
    let target = &stuck[0]["target"];
    assert_eq!(target["kind"], "pty", "{target}");
    assert!(
        target.get("master").is_some_and(Value::is_null),
        "no process holds the master: {target}"
    );
    assert_eq!(target["readers"], serde_json::json!([]), "{target}");
    assert_eq!(target["pty"]["master_open"], 1, "in flight: {target}");
    assert!(target["pty"].get("master_closed").is_none(), "{target}");
    assert!(target["queued"].as_u64().unwrap() > 0, "{target}");

    let failed: Vec<&Value> = records
        .iter()
        .filter(|record| record["type"] == "write_error" && record["pid"] == pid)
        .collect();
    assert!(!failed.is_empty(), "{records:#?}\n{stderr}");
    assert_eq!(failed[0]["errno"], "EIO", "{}", failed[0]);
    let target = &failed[0]["target"];
    assert_eq!(target["kind"], "pty", "{target}");
    assert!(
        target.get("master").is_some_and(Value::is_null),
        "no process holds the master: {target}"
    );
}

/// Starts `yes` writing into `stdout`, holding (and never reading) `stdin`.
fn yes_between(stdin: OwnedFd, stdout: OwnedFd, started: &mut Started) -> u32 {
    started.add(
        Command::new("yes")
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::null())
            .spawn()
            .expect("starting yes"),
    )
}

/// The chain from `record`'s target through each reader's `blocked_write`: (reader pid, cut).
fn chain_of(record: &Value) -> Vec<(u64, Option<String>)> {
    let mut links = Vec::new();
    let mut target = &record["target"];
    while let Some(reader) = target["readers"].as_array().and_then(|readers| {
        readers
            .iter()
            .find(|reader| reader.get("blocked_write").is_some())
    }) {
        let write = &reader["blocked_write"];
        links.push((
            reader["pid"].as_u64().unwrap_or_default(),
            write["cut"].as_str().map(str::to_owned),
        ));
        target = &write["target"];
    }
    links
}

/// Two processes each writing into a pipe the other holds and never reads: the chain from one
/// reaches the other, whose readers lead back to the first, and is cut there.
#[test]
fn a_cycle_of_stuck_writers_is_cut() {
    if !can_run::require(Need::Root) {
        return;
    }
    let mut started = Started::default();
    let (first_read, first_write) = pipe();
    let (second_read, second_write) = pipe();
    let a = yes_between(second_read, first_write, &mut started);
    let b = yes_between(first_read, second_write, &mut started);
    wait_until("both to block writing", || {
        blocked_writing_stdout(a) && blocked_writing_stdout(b)
    });
    let a_arg = a.to_string();
    let output = stdtrace::run(&[
        "--format",
        "json",
        "--stuck",
        "500ms",
        "--duration",
        "2s",
        "--pid",
        &a_arg,
    ]);
    let records = json_lines(&output.stdout);
    let stuck = stuck_of(&records, a);
    assert_eq!(stuck.len(), 1, "{records:#?}");
    // a → b (blocked writing into the pipe a holds) → a again: cut.
    assert_eq!(
        chain_of(stuck[0]),
        vec![
            (u64::from(b), None),
            (u64::from(a), Some("cycle".to_owned()))
        ],
        "{}",
        stuck[0]
    );
}

/// Six stuck writers in a row: the chain is followed four deep, and says it was cut there.
#[test]
fn a_long_chain_is_followed_four_deep() {
    if !can_run::require(Need::Root) {
        return;
    }
    let mut started = Started::default();
    let (mut upstream, first_write) = pipe();
    let (stdin_read, stdin_write) = pipe();
    let first = yes_between(stdin_read, first_write, &mut started);
    drop(stdin_write);
    let mut writers = vec![first];
    for _ in 0..5 {
        let (read, write) = pipe();
        writers.push(yes_between(upstream, write, &mut started));
        upstream = read;
    }
    started.add(
        Command::new("sleep")
            .arg("60")
            .stdin(Stdio::from(upstream))
            .spawn()
            .expect("starting sleep"),
    );
    wait_until("every writer to block", || {
        writers.iter().all(|&pid| blocked_writing_stdout(pid))
    });
    let first_arg = first.to_string();
    let output = stdtrace::run(&[
        "--format",
        "json",
        "--stuck",
        "500ms",
        "--duration",
        "2s",
        "--pid",
        &first_arg,
    ]);
    let records = json_lines(&output.stdout);
    let stuck = stuck_of(&records, first);
    assert_eq!(stuck.len(), 1, "{records:#?}");
    let expected: Vec<(u64, Option<String>)> = writers[1..5]
        .iter()
        .enumerate()
        .map(|(depth, &pid)| (u64::from(pid), (depth == 3).then(|| "depth".to_owned())))
        .collect();
    assert_eq!(chain_of(stuck[0]), expected, "{}", stuck[0]);
}
