//! Which threads are blocked in a write right now, from procfs alone: `/proc/PID/task/TID/
//! syscall` (the syscall, its arguments, SP and PC), `/proc/PID/task/TID/sched` (when the
//! thread last ran), and the top of its stack from `/proc/PID/mem`. Each becomes the same
//! [`WriteEvent`] (outcome `Stuck`) that the kernel's blocked-write slots give `trace`.
//!
//! Nothing here stops, signals or attaches to the process: these files are read the way `ps`
//! and `top` read them, and the memory is read with the access a debugger would need to
//! *attach* (CAP_SYS_PTRACE, or the same user), without attaching.

use std::io::ErrorKind;

use crate::{
    events::{ByteCount, SavedRegisters, WriteEvent, WriteOutcome, WriteSyscall, monotonic_ns},
    process::{
        activity::{SyscallState, parse_syscall},
        memory, status, syscalls,
    },
};

/// Vectored writes: iovecs summed at most (a longer vector gives a lower bound).
const MAX_IOVECS: u64 = 1024;

/// Why a process could not be looked at.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("no process with pid {0}")]
    NoSuchProcess(u32),
    #[error(
        "not allowed to read pid {pid} ({comm}): a snapshot needs the right to read its memory (run as its user, or with CAP_SYS_PTRACE)"
    )]
    NotPermitted { pid: u32, comm: String },
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// A thread found blocked in a write-family syscall.
#[derive(Clone, Debug)]
pub struct BlockedWriter {
    pub event: WriteEvent,
    /// The blocked duration is a lower bound (the thread last ran then).
    pub at_least: bool,
}

/// Every thread of `pid` blocked in a write right now, and how many threads were looked at.
pub fn blocked_writers(pid: u32) -> Result<(Vec<BlockedWriter>, usize), ScanError> {
    if !std::path::Path::new(&crate::process::host::host().pid_path(pid, "task")).exists() {
        return Err(ScanError::NoSuchProcess(pid));
    }
    // A thread id names its process.
    let pid = std::fs::read_to_string(crate::process::host::host().pid_path(pid, "status"))
        .ok()
        .and_then(|text| status::field(&text, "Tgid")?.parse().ok())
        .unwrap_or(pid);
    check_access(pid)?;
    let mut found = Vec::new();
    let threads = status::threads(pid);
    for &tid in &threads {
        let Some(SyscallState::In {
            number,
            args,
            sp,
            pc,
        }) = read_syscall(pid, tid)
        else {
            continue;
        };
        if !syscalls::is_output(number) {
            continue;
        }
        let Some(syscall) = syscalls::name(number).and_then(write_syscall) else {
            continue;
        };
        let stack = memory::read_stack(pid, sp);
        let blocked_ns = blocked_for_ns(pid, tid);
        // Still in the same call (same syscall, same stack and instruction pointers): the
        // stack copy is of the write, not of whatever the thread did after it returned.
        if read_syscall(pid, tid)
            != Some(SyscallState::In {
                number,
                args,
                sp,
                pc,
            })
        {
            log::debug!(
                "thread {tid} of pid {pid} returned from {} meanwhile",
                syscall.name()
            );
            continue;
        }
        let mut registers = SavedRegisters::default();
        registers.0[7] = Some(sp);
        registers.0[16] = Some(pc);
        found.push(BlockedWriter {
            event: WriteEvent {
                ts_ns: monotonic_ns(),
                pid,
                tid,
                comm: status::comm(tid)
                    .or_else(|| status::comm(pid))
                    .unwrap_or_else(|| "?".to_owned()),
                syscall,
                fd: args[0] as u32 as i32,
                count: byte_count(pid, syscall, &args),
                outcome: WriteOutcome::Stuck {
                    blocked_ns: blocked_ns.unwrap_or(0),
                },
                file: None,
                registers: Some(registers),
                stack,
                goroutine: None,
                running_g: None,
                // What a send asked for shows only in its result: a snapshot sees none.
                nosignal: false,
            },
            at_least: true,
        });
    }
    Ok((found, threads.len()))
}

/// Reading a thread's syscall and memory takes the right to attach (`PTRACE_MODE_ATTACH`):
/// find out once, up front, with the clear error.
fn check_access(pid: u32) -> Result<(), ScanError> {
    let path = crate::process::host::host().pid_path(pid, "syscall");
    match std::fs::read_to_string(&path) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == ErrorKind::NotFound => Err(ScanError::NoSuchProcess(pid)),
        Err(err) if err.kind() == ErrorKind::PermissionDenied => Err(ScanError::NotPermitted {
            pid,
            comm: status::comm(pid).unwrap_or_else(|| "?".to_owned()),
        }),
        // A kernel thread has no user context to report on.
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        Err(source) => Err(ScanError::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

fn read_syscall(pid: u32, tid: u32) -> Option<SyscallState> {
    let text = std::fs::read_to_string(
        crate::process::host::host().pid_path(pid, format!("task/{tid}/syscall")),
    )
    .ok()?;
    parse_syscall(&text)
}

/// The write-family syscall by its name.
fn write_syscall(name: &str) -> Option<WriteSyscall> {
    Some(match name {
        "write" => WriteSyscall::Write,
        "writev" => WriteSyscall::Writev,
        "pwrite64" => WriteSyscall::Pwrite64,
        "pwritev" => WriteSyscall::Pwritev,
        "pwritev2" => WriteSyscall::Pwritev2,
        "sendto" => WriteSyscall::Sendto,
        "sendmsg" => WriteSyscall::Sendmsg,
        "sendmmsg" => WriteSyscall::Sendmmsg,
        _ => return None,
    })
}

/// The bytes asked for: the count argument, or the iovecs summed.
fn byte_count(pid: u32, syscall: WriteSyscall, args: &[u64; 6]) -> ByteCount {
    match syscall {
        WriteSyscall::Write | WriteSyscall::Pwrite64 | WriteSyscall::Sendto => {
            ByteCount::Exact(args[2])
        }
        // The iovecs sit behind a msghdr (or several): not read here.
        WriteSyscall::Sendmsg | WriteSyscall::Sendmmsg => ByteCount::Unknown,
        WriteSyscall::Writev | WriteSyscall::Pwritev | WriteSyscall::Pwritev2 => {
            let count = args[2];
            let read = count.min(MAX_IOVECS);
            let Some(bytes) = usize::try_from(read * 16)
                .ok()
                .and_then(|len| memory::read(pid, args[1], len))
            else {
                return ByteCount::Unknown;
            };
            let total = sum_iovecs(&bytes);
            if read < count {
                ByteCount::AtLeast(total)
            } else {
                ByteCount::Exact(total)
            }
        }
    }
}

/// The sum of the `iov_len`s of an array of `struct iovec` (hostile bytes: saturating).
fn sum_iovecs(bytes: &[u8]) -> u64 {
    bytes
        .chunks_exact(16)
        .filter_map(|iovec| iovec.get(8..16)?.try_into().ok())
        .map(u64::from_le_bytes)
        .fold(0u64, u64::saturating_add)
}

/// How long thread `tid` has been off the CPU, at least: `se.exec_start` (its CPU's task
/// clock when it last ran) against our own, read on that same CPU. Each CPU's task clock
/// leaves out the time spent in interrupts and stolen by the hypervisor, so two CPUs' clocks
/// drift apart: only one CPU's clock compared with itself gives a lower bound. Our thread is
/// moved there for the reading (never the target), and its clock can lag now by up to a tick,
/// which only makes the bound lower.
fn blocked_for_ns(pid: u32, tid: u32) -> Option<u64> {
    let theirs = std::fs::read_to_string(
        crate::process::host::host().pid_path(pid, format!("task/{tid}/sched")),
    )
    .ok()?;
    let theirs = exec_start_ns(&theirs)?;
    let cpu = std::fs::read_to_string(
        crate::process::host::host().pid_path(pid, format!("task/{tid}/stat")),
    )
    .ok()
    .and_then(|stat| last_cpu(&stat));
    let ours = on_cpu(cpu, || {
        exec_start_ns(&std::fs::read_to_string("/proc/thread-self/sched").ok()?)
    })?;
    Some(ours.saturating_sub(theirs))
}

/// The CPU a thread last ran on: field 39 of `/proc/PID/task/TID/stat`.
pub fn last_cpu(stat: &str) -> Option<usize> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // Fields from the state (field 3) on: the CPU is the 37th of them.
    after_comm.split_whitespace().nth(36)?.parse().ok()
}

/// Runs `read` with our own thread pinned to `cpu`, then restores its affinity. If it cannot
/// be moved there (a cpuset, an offline CPU), it runs where it is.
fn on_cpu<T>(cpu: Option<usize>, read: impl FnOnce() -> Option<T>) -> Option<T> {
    let Some(cpu) = cpu.filter(|cpu| *cpu < libc::CPU_SETSIZE as usize) else {
        return read();
    };
    // SAFETY: cpu_set_t is plain bits; zeroed is the empty set.
    let mut before: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: sched_getaffinity fills the set we own, for our own thread (0).
    if unsafe { libc::sched_getaffinity(0, size, &mut before) } != 0 {
        return read();
    }
    // SAFETY: as above.
    let mut only: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut only) };
    // SAFETY: moves our own thread only; the kernel migrates it before returning.
    let moved = unsafe { libc::sched_setaffinity(0, size, &only) } == 0;
    if !moved {
        log::debug!("cannot run on CPU {cpu}: the blocked time compares two CPUs' clocks");
    }
    let value = read();
    if moved {
        // SAFETY: restores the set read above, on our own thread.
        unsafe { libc::sched_setaffinity(0, size, &before) };
    }
    value
}

/// `se.exec_start` of the text of a `sched` file (milliseconds, with six decimals), in ns.
pub fn exec_start_ns(sched: &str) -> Option<u64> {
    let value = sched.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "se.exec_start").then(|| value.trim())
    })?;
    let (ms, fraction) = value.split_once('.').unwrap_or((value, ""));
    let ms: u64 = ms.parse().ok()?;
    let digits: String = fraction.chars().take(6).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let ns_part: u64 = format!("{digits:0<6}").parse().ok()?;
    ms.checked_mul(1_000_000)?.checked_add(ns_part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_start_parses_and_refuses_garbage() {
        let text = "cat (812, #threads: 1)\n-------\nse.exec_start                                :      12345678.901234\nse.vruntime : 1.0\n";
        assert_eq!(exec_start_ns(text), Some(12_345_678_901_234));
        assert_eq!(exec_start_ns("se.exec_start : 5.5"), Some(5_500_000));
        assert_eq!(exec_start_ns("se.exec_start : 7"), Some(7_000_000));
        for bad in [
            "",
            "se.exec_start : x.1",
            "se.exec_start : 1.x",
            "se.exec_start : 99999999999999999999.0",
            "se.vruntime : 1.0",
        ] {
            assert_eq!(exec_start_ns(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_last_cpu_is_field_39() {
        let stat = "812 (my (odd) app) S 1 812 812 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    4242 1000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0";
        assert_eq!(last_cpu(stat), Some(3));
        assert_eq!(last_cpu("812 (x) S 1"), None);
        assert_eq!(last_cpu("garbage"), None);
        let own = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        assert!(last_cpu(&own).is_some());
        // Pinned there and back: our own affinity is what it was.
        assert!(on_cpu(last_cpu(&own), || Some(1)).is_some());
    }

    #[test]
    fn iovecs_sum_saturating_and_ignore_a_partial_tail() {
        let mut bytes = Vec::new();
        for len in [10u64, 20, u64::MAX] {
            bytes.extend_from_slice(&0x1000u64.to_le_bytes());
            bytes.extend_from_slice(&len.to_le_bytes());
        }
        assert_eq!(sum_iovecs(&bytes[..32]), 30);
        assert_eq!(sum_iovecs(&bytes), u64::MAX);
        assert_eq!(sum_iovecs(&bytes[..40]), 30);
        assert_eq!(sum_iovecs(&[]), 0);
    }

    #[test]
    fn a_thread_id_names_its_process() {
        let (tid_sender, tid) = std::sync::mpsc::channel();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tid_sender.send(unsafe { libc::gettid() } as u32).unwrap();
            let _ = wait.recv();
        });
        let tid = tid.recv().unwrap();
        let (found, threads) = blocked_writers(tid).unwrap();
        assert!(threads >= 2);
        // Other tests of this process may have a writer blocked: it is this process's.
        assert!(
            found
                .iter()
                .all(|writer| writer.event.pid == std::process::id())
        );
        done.send(()).unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn a_missing_pid_is_an_error() {
        assert!(matches!(
            blocked_writers(u32::MAX - 7),
            Err(ScanError::NoSuchProcess(_))
        ));
    }
}
