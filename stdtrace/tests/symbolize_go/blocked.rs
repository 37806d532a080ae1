//! Running the Go `blocker` fixture until one of its threads blocks inside write(2) on a full
//! pipe, and taking the snapshot the kernel side would take of that thread: the instruction
//! and stack pointers `/proc/PID/task/TID/syscall` shows, the memory map, and a copy of the
//! stack from the page holding sp.

use std::{
    fs::{self, File},
    io::{BufRead, BufReader, PipeReader},
    os::unix::fs::FileExt,
    path::Path,
    process::{Child, ChildStderr, Command, Stdio},
    time::{Duration, Instant},
};

use stdtrace::{
    process::maps::ProcessMaps,
    symbolize::{Stack, StackCopy, Symbolizer, UserRegisters},
};

/// How much of the stack is copied from the page holding sp, like the kernel side's 4 pages.
const STACK_BYTES: u64 = 16 * 1024;

/// A blocker process with a thread blocked writing to fd 1; killed (by pid, through its
/// `Child`) and reaped when dropped.
pub struct Blocked {
    child: Child,
    _unread: PipeReader,
    _stderr: BufReader<ChildStderr>,
    /// The goroutine the fixture says is writing.
    pub goroutine: u64,
    /// The pc of the go statement that started it (Go writer only; 0 for the C writer).
    pub gopc: u64,
    /// The thread blocked in write(2) to fd 1.
    pub tid: u32,
}

impl Blocked {
    /// Runs `program mode` with its stdout on a pipe that is never read, and waits until a
    /// thread of it blocks writing there.
    pub fn spawn(program: &Path, mode: &str) -> Self {
        let (reader, writer) = std::io::pipe().expect("creating a pipe");
        let mut attempts = 0;
        let mut child = loop {
            let writer = writer
                .try_clone()
                .expect("duplicating the pipe's write end");
            match Command::new(program)
                .arg(mode)
                .stdin(Stdio::null())
                .stdout(Stdio::from(writer))
                .stderr(Stdio::piped())
                .spawn()
            {
                Ok(child) => break child,
                // A file just written can be briefly held open by a child another test thread
                // forks meanwhile.
                Err(err) if err.raw_os_error() == Some(libc::ETXTBSY) && attempts < 50 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(err) => panic!("running {}: {err}", program.display()),
            }
        };
        drop(writer);
        let Some(stderr) = child.stderr.take() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no stderr pipe");
        };
        let mut stderr = BufReader::new(stderr);
        let mut field = |name: &str, radix: u32| {
            let mut line = String::new();
            let read = stderr.read_line(&mut line);
            let value = line
                .trim()
                .strip_prefix(name)
                .and_then(|value| u64::from_str_radix(value.trim_start_matches("0x"), radix).ok());
            value.ok_or_else(|| format!("printed {line:?} ({read:?}) instead of {name}"))
        };
        let fields = field("goroutine=", 10).and_then(|goroutine| {
            let gopc = if mode == "go" { field("gopc=", 16)? } else { 0 };
            Ok((goroutine, gopc))
        });
        let (goroutine, gopc) = match fields {
            Ok(fields) => fields,
            Err(problem) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} {mode} {problem}", program.display());
            }
        };
        let mut blocked = Self {
            child,
            _unread: reader,
            _stderr: stderr,
            goroutine,
            gopc,
            tid: 0,
        };
        blocked.tid = blocked.wait_for_blocked_thread();
        blocked
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The thread whose `/proc/PID/task/TID/syscall` shows the same write(2) to fd 1 twice in
    /// a row.
    fn wait_for_blocked_thread(&self) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut previous: Vec<(u32, String)> = Vec::new();
        loop {
            let current = writes_to_stdout(self.pid());
            if let Some((tid, _)) = current.iter().find(|entry| previous.contains(entry)) {
                return *tid;
            }
            assert!(
                Instant::now() < deadline,
                "no thread of {} settled in write(1, ...): {current:?}",
                self.pid()
            );
            previous = current;
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The snapshot of the blocked thread.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::from_syscall(self.pid(), self.tid)
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The threads of `pid` in write(2) to fd 1, with their syscall lines.
fn writes_to_stdout(pid: u32) -> Vec<(u32, String)> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut found: Vec<(u32, String)> = tasks
        .filter_map(|task| {
            let tid: u32 = task.ok()?.file_name().to_str()?.parse().ok()?;
            let line = fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
            let mut fields = line.split_whitespace();
            (fields.next() == Some("1") && fields.next() == Some("0x1")).then_some((tid, line))
        })
        .collect();
    found.sort();
    found
}

fn hex(field: &str) -> u64 {
    u64::from_str_radix(field.trim_start_matches("0x"), 16).expect("a hex field")
}

/// What the kernel side captures of a blocked write.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub pid: u32,
    pub maps: ProcessMaps,
    pub registers: UserRegisters,
    pub stack_base: u64,
    pub stack: Vec<u8>,
}

impl Snapshot {
    /// The registers `/proc/PID/task/TID/syscall` shows (sp and pc only), the memory map, and
    /// the stack from the page holding sp: [`STACK_BYTES`], or less at the end of the mapping.
    pub fn from_syscall(pid: u32, tid: u32) -> Self {
        let text = fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall"))
            .expect("reading the thread's syscall");
        let fields: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(fields.first(), Some(&"1"), "not in write: {text:?}");
        assert_eq!(fields.len(), 9, "unexpected syscall line: {text:?}");
        Self::at(
            pid,
            UserRegisters::from_ip_sp(hex(fields[8]), hex(fields[7])),
        )
    }

    /// The memory map, and the stack from the page holding the stack pointer of `registers`.
    pub fn at(pid: u32, registers: UserRegisters) -> Self {
        let maps = ProcessMaps::read(pid).expect("reading the fixture's maps");
        let sp = registers.sp().expect("a stack pointer");
        let stack_base = sp & !0xfff;
        let end = maps
            .find(sp)
            .map_or(stack_base + STACK_BYTES, |mapping| mapping.end)
            .min(stack_base + STACK_BYTES);
        let mut stack = vec![0; usize::try_from(end - stack_base).expect("a small stack copy")];
        let mem = File::open(format!("/proc/{pid}/mem")).expect("opening the fixture's memory");
        let mut copied = 0;
        while copied < stack.len() {
            match mem.read_at(&mut stack[copied..], stack_base + copied as u64) {
                Ok(0) | Err(_) => break,
                Ok(read) => copied += read,
            }
        }
        assert!(copied > 0, "nothing of the stack at {sp:#x} could be read");
        stack.truncate(copied);
        Self {
            pid,
            maps,
            registers,
            stack_base,
            stack,
        }
    }

    pub fn stack_copy(&self) -> StackCopy<'_> {
        StackCopy {
            base: self.stack_base,
            bytes: &self.stack,
        }
    }

    pub fn symbolize(&self, symbolizer: &mut Symbolizer) -> Stack {
        symbolizer.stack(self.pid, &self.maps, &self.registers, &self.stack_copy())
    }
}
