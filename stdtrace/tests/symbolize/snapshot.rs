//! Running a fixture until it blocks in `write()`, and taking the snapshot the kernel side
//! would: registers, memory map and the top of the user stack.

use std::{
    fs::File,
    io::PipeReader,
    os::unix::fs::FileExt,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use stdtrace::{
    process::maps::ProcessMaps,
    symbolize::{Stack, StackCopy, Symbolizer, UserRegisters},
};

use crate::can_run::{self, Need};

/// How much of the stack above the stack pointer's page is copied, like the kernel side's
/// 4 pages.
const STACK_BYTES: u64 = 16 * 1024;

/// `write` on x86_64.
const SYS_WRITE: &str = "1";

/// A fixture blocked in `write()` on a full pipe; killed (by pid) and reaped when dropped.
pub struct Blocked {
    child: Child,
    _unread: PipeReader,
}

impl Blocked {
    /// Runs `program` with its stdout on a pipe that is never read, and waits until it blocks.
    pub fn spawn(program: &Path) -> Self {
        let (reader, writer) = std::io::pipe().expect("creating a pipe");
        let mut attempts = 0;
        let child = loop {
            let writer = writer
                .try_clone()
                .expect("duplicating the pipe's write end");
            match Command::new(program)
                .stdin(Stdio::null())
                .stdout(Stdio::from(writer))
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
        let blocked = Self {
            child,
            _unread: reader,
        };
        blocked.wait_until_blocked();
        blocked
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/proc/PID/syscall` shows the same `write` twice in a row.
    fn wait_until_blocked(&self) {
        let path = format!("/proc/{}/syscall", self.pid());
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut previous = String::new();
        loop {
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current.split_whitespace().next() == Some(SYS_WRITE) && current == previous {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never settled in write: {current:?}"
            );
            previous = current;
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the kernel side captures when a write fails.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub pid: u32,
    pub maps: ProcessMaps,
    pub registers: UserRegisters,
    pub stack_base: u64,
    pub stack: Vec<u8>,
}

fn hex(field: &str) -> u64 {
    u64::from_str_radix(field.trim_start_matches("0x"), 16).expect("a hex field")
}

impl Snapshot {
    fn new(pid: u32, registers: UserRegisters) -> Self {
        let maps = ProcessMaps::read(pid).expect("reading the fixture's maps");
        let sp = registers.sp().expect("a stack pointer");
        let stack_base = sp & !0xfff;
        let end = maps
            .find(sp)
            .map_or(stack_base + STACK_BYTES, |mapping| mapping.end)
            .min(stack_base + STACK_BYTES);
        let mut stack = vec![0; usize::try_from(end - stack_base).expect("a small stack copy")];
        File::open(format!("/proc/{pid}/mem"))
            .and_then(|mem| mem.read_exact_at(&mut stack, stack_base))
            .expect("reading the fixture's stack");
        Self {
            pid,
            maps,
            registers,
            stack_base,
            stack,
        }
    }

    /// The registers `/proc/PID/syscall` shows (sp and pc only: the others are unknown).
    pub fn from_syscall(pid: u32) -> Self {
        let text =
            std::fs::read_to_string(format!("/proc/{pid}/syscall")).expect("reading syscall");
        let fields: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(fields.first(), Some(&SYS_WRITE), "not in write: {text:?}");
        assert_eq!(fields.len(), 9, "unexpected /proc/PID/syscall: {text:?}");
        Self::new(
            pid,
            UserRegisters::from_ip_sp(hex(fields[8]), hex(fields[7])),
        )
    }

    /// All registers, from ptrace (which stops the fixture for the time of the snapshot).
    /// `None` when this environment forbids ptrace and the test is skipped (see `can_run.rs`).
    pub fn from_ptrace(pid: u32) -> Option<Self> {
        let tracee = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
        let null = std::ptr::null_mut::<libc::c_void>();
        // SAFETY: PTRACE_SEIZE takes no memory from us; the tracee is our own child.
        if unsafe { libc::ptrace(libc::PTRACE_SEIZE, tracee, null, null) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EPERM) {
                can_run::cannot_run(Need::Ptrace, format_args!("PTRACE_SEIZE: {err}"));
                return None;
            }
            panic!("PTRACE_SEIZE: {err}");
        }
        // SAFETY: as above; the tracee is seized by this thread.
        let interrupted = unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tracee, null, null) };
        assert_eq!(
            interrupted,
            0,
            "PTRACE_INTERRUPT: {}",
            std::io::Error::last_os_error()
        );
        let mut status = 0;
        // SAFETY: `status` is a valid place for waitpid to store the status.
        let waited = unsafe { libc::waitpid(tracee, &mut status, libc::__WALL) };
        assert_eq!(
            waited,
            tracee,
            "waitpid: {}",
            std::io::Error::last_os_error()
        );
        assert!(
            libc::WIFSTOPPED(status),
            "the tracee did not stop: {status:#x}"
        );
        let mut regs = std::mem::MaybeUninit::<libc::user_regs_struct>::zeroed();
        // SAFETY: PTRACE_GETREGS writes one `user_regs_struct` to the pointer, which has room
        // for it; the tracee is in a ptrace stop.
        let got = unsafe { libc::ptrace(libc::PTRACE_GETREGS, tracee, null, regs.as_mut_ptr()) };
        assert_eq!(
            got,
            0,
            "PTRACE_GETREGS: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: all-zero bytes are a valid `user_regs_struct` (plain integers), and
        // PTRACE_GETREGS succeeded in filling it.
        let regs = unsafe { regs.assume_init() };
        let words = [
            regs.r15,
            regs.r14,
            regs.r13,
            regs.r12,
            regs.rbp,
            regs.rbx,
            regs.r11,
            regs.r10,
            regs.r9,
            regs.r8,
            regs.rax,
            regs.rcx,
            regs.rdx,
            regs.rsi,
            regs.rdi,
            regs.orig_rax,
            regs.rip,
            regs.cs,
            regs.eflags,
            regs.rsp,
            regs.ss,
        ];
        let snapshot = Self::new(pid, UserRegisters::from_pt_regs(&words));
        // SAFETY: detaching takes no memory from us; the tracee resumes its write.
        let detached = unsafe { libc::ptrace(libc::PTRACE_DETACH, tracee, null, null) };
        assert_eq!(
            detached,
            0,
            "PTRACE_DETACH: {}",
            std::io::Error::last_os_error()
        );
        Some(snapshot)
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
