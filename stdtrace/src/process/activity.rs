//! What a process or thread is doing right now, from procfs: its scheduler state
//! (`/proc/PID/stat`), where it sleeps in the kernel (`wchan`) and which system call it is in
//! (`/proc/PID/syscall`, with the syscall's arguments and the user stack and instruction
//! pointers). Reading these does not stop or signal the process.
//!
//! Not the procfs crate: it has no parser of `/proc/PID/syscall`, and its `Stat` (procfs-core
//! 0.18) parses all fifty-two fields of `/proc/PID/stat` (9 µs here) where only the state letter
//! is wanted, and panics on some lines: fuzzing it (`fuzz/`, target `procfs_crate`) found, in
//! 3,000 executions, a line with a byte that is not UTF-8 before the comm, which it slices
//! inside a character. The kernel writes no such line, but a parser here must not panic on any.

use crate::report::record::Activity;

use super::syscalls;

/// A thread's current system call, from `/proc/PID/task/TID/syscall`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallState {
    /// Running in user space.
    Running,
    /// Blocked, but not in a system call (a page fault, say).
    NotInSyscall { sp: u64, pc: u64 },
    /// In system call `number` with these arguments.
    In {
        number: i64,
        args: [u64; 6],
        sp: u64,
        pc: u64,
    },
}

/// Parses the text of `/proc/PID/syscall`: `running`, `-1 SP PC`, or `NR A1..A6 SP PC`.
pub fn parse_syscall(text: &str) -> Option<SyscallState> {
    let text = text.trim();
    if text == "running" {
        return Some(SyscallState::Running);
    }
    let fields: Vec<&str> = text.split_whitespace().collect();
    let hex = |field: &str| u64::from_str_radix(field.trim_start_matches("0x"), 16).ok();
    let number: i64 = fields.first()?.parse().ok()?;
    match (number, fields.len()) {
        (-1, 3) => Some(SyscallState::NotInSyscall {
            sp: hex(fields[1])?,
            pc: hex(fields[2])?,
        }),
        (number, 9) if number >= 0 => {
            let mut args = [0u64; 6];
            for (arg, field) in args.iter_mut().zip(&fields[1..7]) {
                *arg = hex(field)?;
            }
            Some(SyscallState::In {
                number,
                args,
                sp: hex(fields[7])?,
                pc: hex(fields[8])?,
            })
        }
        _ => None,
    }
}

/// A thread's system call, or None if it is gone or not readable.
pub fn syscall_of(pid: u32, tid: u32) -> Option<SyscallState> {
    let text = std::fs::read_to_string(
        crate::process::host::host().pid_path(pid, format!("task/{tid}/syscall")),
    )
    .ok()?;
    parse_syscall(&text)
}

/// The scheduler state letter of `/proc/PID/stat` (the field after the parenthesized comm,
/// which may itself contain spaces and parentheses).
pub fn parse_stat_state(stat: &str) -> Option<char> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().next()?.chars().next()
}

/// The state in words.
pub fn state_name(letter: char) -> &'static str {
    match letter {
        'R' => "running",
        'S' => "sleeping",
        'D' => "disk-sleep",
        'T' => "stopped",
        't' => "tracing-stop",
        'Z' => "zombie",
        'X' | 'x' => "dead",
        'I' => "idle",
        'P' => "parked",
        'W' => "waking",
        _ => "unknown",
    }
}

/// What process `pid` is doing, looking at every thread: a thread reading one of `fds` (or
/// blocked writing) says more than the main thread sleeping elsewhere.
pub fn of_process(pid: u32, fds: &[i32]) -> Option<Activity> {
    let mut main = None;
    for tid in super::status::threads(pid) {
        let Some(activity) = of_thread(pid, tid, fds) else {
            continue;
        };
        if activity.reading || activity.blocked {
            return Some(activity);
        }
        if tid == pid || main.is_none() {
            main = Some(activity);
        }
    }
    main
}

/// What thread `tid` of `pid` is doing.
pub fn of_thread(pid: u32, tid: u32, fds: &[i32]) -> Option<Activity> {
    let stat = std::fs::read_to_string(
        crate::process::host::host().pid_path(pid, format!("task/{tid}/stat")),
    )
    .ok()?;
    let state = parse_stat_state(&stat)?;
    let wchan = std::fs::read_to_string(
        crate::process::host::host().pid_path(pid, format!("task/{tid}/wchan")),
    )
    .ok()
    .map(|text| text.trim().to_owned())
    .filter(|text| !text.is_empty() && text != "0");
    let (syscall, reading, blocked) = match syscall_of(pid, tid) {
        Some(SyscallState::In { number, args, .. }) => {
            let name = syscalls::name(number)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("syscall {number}"));
            let fd = args[0] as i32;
            let sleeping = matches!(state, 'S' | 'D');
            // A stopped thread (SIGSTOP, a debugger) still shows the read it stopped in or
            // right after, but it drains nothing until it is resumed.
            let stopped = matches!(state, 'T' | 't');
            (
                Some(name),
                !stopped && syscalls::is_read(number) && fds.contains(&fd),
                sleeping && syscalls::is_output(number),
            )
        }
        _ => (None, false, false),
    };
    Some(Activity {
        state: state_name(state).into(),
        wchan,
        syscall,
        reading,
        blocked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line the procfs crate's `Stat` panicked on (see the module doc): here a state.
    #[test]
    fn a_stat_line_that_panicked_procfs() {
        let line = b"1\xc7(process_api) S 0 0 0 0 -1 4194560 30092 71055167 0 8697 219 1019 246855 36886 10 -10 14 0 25 49004544 3737 18446744073709551615 1 \x00\x00\x00\x00\x00\x001 0 0 0 0 0 4096 1256 0 0 0 17 0 0 0 0 0 000 0 0 0 0 0 0 0\n";
        let text = String::from_utf8_lossy(line);
        assert_eq!(parse_stat_state(&text), Some('S'));
        assert_eq!(parse_stat_state("1 (x)"), None);
        assert_eq!(parse_stat_state(")"), None);
    }

    #[test]
    fn parses_syscall_lines() {
        assert_eq!(parse_syscall("running\n"), Some(SyscallState::Running));
        assert_eq!(
            parse_syscall("-1 0x7ffd1000 0x401000"),
            Some(SyscallState::NotInSyscall {
                sp: 0x7ffd1000,
                pc: 0x401000
            })
        );
        assert_eq!(
            parse_syscall("1 0x1 0x55f0 0x1000 0x0 0x0 0x0 0x7ffc1d0 0x7f31b2\n"),
            Some(SyscallState::In {
                number: 1,
                args: [1, 0x55f0, 0x1000, 0, 0, 0],
                sp: 0x7ffc1d0,
                pc: 0x7f31b2
            })
        );
        for bad in ["", "x", "1 2 3", "1 zz 0 0 0 0 0 0 0", "-5 0x1 0x2"] {
            assert_eq!(parse_syscall(bad), None, "{bad}");
        }
    }

    #[test]
    fn states() {
        assert_eq!(parse_stat_state("812 (my (odd) app) S 1 812"), Some('S'));
        assert_eq!(parse_stat_state("garbage"), None);
        assert_eq!(state_name('D'), "disk-sleep");
        assert_eq!(state_name('Z'), "zombie");
    }

    #[test]
    fn a_sleeping_child_is_sleeping_in_a_syscall() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut activity = None;
        for _ in 0..100 {
            activity = of_process(pid, &[]);
            if activity.as_ref().is_some_and(|a| a.state == "sleeping") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let activity = activity.unwrap();
        assert_eq!(activity.state, "sleeping");
        assert_eq!(activity.syscall.as_deref(), Some("clock_nanosleep"));
        assert!(!activity.reading && !activity.blocked);
    }
}
