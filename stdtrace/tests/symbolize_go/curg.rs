//! The other half of a stack that blocked in C: the goroutine that called C. A stack copy of
//! the thread's system stack ends at `runtime.asmcgocall`; the goroutine's frames are on its
//! own stack, found the way the kernel side can find them: thread pointer → `g` (the thread's
//! g0 while C runs) → `g.m` → `m.curg` (the goroutine that called C), whose `syscallsp` and
//! `syscallpc` say where it entered the call (`runtime.cgocall` enters it as a system call).
//! A second stack copy from there unwinds to `runtime.goexit`.
//!
//! The thread pointer (FS base) is not in procfs: it is read with ptrace, which stops the
//! thread for the time of the read. Where ptrace is not permitted, the check is skipped (it
//! fails under `CI=true`: `can_run.rs`).

use std::{fs::File, os::unix::fs::FileExt};

use stdtrace::{goruntime::GoBinary, symbolize::UserRegisters};

use crate::{
    blocked::Snapshot,
    can_run::{self, Need},
};

/// The FS base of thread `tid`, from ptrace; `None` when ptrace is not permitted here and the
/// test is skipped (see `can_run.rs`).
fn fs_base(tid: u32) -> Option<u64> {
    let tracee = libc::pid_t::try_from(tid).expect("a tid fits pid_t");
    let null = std::ptr::null_mut::<libc::c_void>();
    // SAFETY: PTRACE_SEIZE takes no memory from us; the tracee is a thread of our own child.
    if unsafe { libc::ptrace(libc::PTRACE_SEIZE, tracee, null, null) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EPERM) {
            can_run::cannot_run(
                Need::Ptrace,
                format_args!("the goroutine half needs PTRACE_SEIZE: {err}"),
            );
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
    let mut regs = std::mem::MaybeUninit::<libc::user_regs_struct>::zeroed();
    // SAFETY: PTRACE_GETREGS writes one `user_regs_struct` to the pointer, which has room for
    // it; the tracee is in a ptrace stop.
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
    // SAFETY: detaching takes no memory from us; the tracee resumes its write.
    let detached = unsafe { libc::ptrace(libc::PTRACE_DETACH, tracee, null, null) };
    assert_eq!(
        detached,
        0,
        "PTRACE_DETACH: {}",
        std::io::Error::last_os_error()
    );
    Some(regs.fs_base)
}

/// The 8 bytes at `address` of process `pid`.
fn read_u64(mem: &File, address: u64) -> u64 {
    let mut word = [0u8; 8];
    mem.read_exact_at(&mut word, address)
        .unwrap_or_else(|err| panic!("reading {address:#x}: {err}"));
    u64::from_le_bytes(word)
}

/// A snapshot of the goroutine that called C on thread `tid` of `pid`, taken from where it
/// entered the call; `None` when ptrace is not permitted here and the test is skipped.
pub fn calling_goroutine(pid: u32, tid: u32, binary: &[u8]) -> Option<Snapshot> {
    let go = GoBinary::parse(binary).expect("the blocker is a Go binary");
    let tls = go.tls.expect("the g slot is found");
    let offsets = go.layout.expect("the runtime layout is known").offsets;
    let fs_base = fs_base(tid)?;
    let mem = File::open(format!("/proc/{pid}/mem")).expect("opening the fixture's memory");
    let g = read_u64(&mem, fs_base.wrapping_add_signed(tls.offset));
    let m = read_u64(&mem, g + offsets.g.m);
    let curg = read_u64(&mem, m + offsets.m.curg);
    assert_ne!(curg, 0, "the thread runs no goroutine");
    assert_ne!(curg, g, "C runs on the thread's g0, not on the goroutine");
    let sp = read_u64(&mem, curg + offsets.g.syscallsp);
    let pc = read_u64(&mem, curg + offsets.g.syscallpc);
    Some(Snapshot::at(pid, UserRegisters::from_ip_sp(pc, sp)))
}
