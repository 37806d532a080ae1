//! x86_64 system call names by number, as `asm/unistd_64.h` defines them.
//!
//! From the `syscalls` crate's table, which is generated from the kernel's headers: a table of
//! our own (kept until this was measured) lacked the eleven system calls from 451 on
//! (`cachestat` to `lsm_list_modules`) and differed from it nowhere else. The procfs crate has no
//! system call names, and no parser of `/proc/PID/syscall` (see `activity.rs`).

use syscalls::Sysno;

/// The name of system call `number` (`"write"` for 1), if there is one.
pub fn name(number: i64) -> Option<&'static str> {
    let number = usize::try_from(number).ok()?;
    Sysno::new(number).map(|sysno| sysno.name())
}

/// Whether the system call is an output syscall stdtrace traces: it writes to an fd (the write
/// family) or sends on a socket (the send family).
pub fn is_output(number: i64) -> bool {
    matches!(
        name(number),
        Some(
            "write"
                | "writev"
                | "pwrite64"
                | "pwritev"
                | "pwritev2"
                | "sendto"
                | "sendmsg"
                | "sendmmsg"
        )
    )
}

/// Whether the system call reads from an fd, or waits to.
pub fn is_read(number: i64) -> bool {
    matches!(
        name(number),
        Some(
            "read" | "readv" | "pread64" | "preadv" | "preadv2" | "splice" | "recvfrom" | "recvmsg"
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name(0), Some("read"));
        assert_eq!(name(1), Some("write"));
        assert_eq!(name(230), Some("clock_nanosleep"));
        assert_eq!(name(-1), None);
        assert_eq!(name(100_000), None);
        // A number in the gap between the old and the new numbering.
        assert_eq!(name(400), None);
        assert_eq!(name(451), Some("cachestat"));
        assert!(is_output(20) && is_output(328) && !is_output(0));
        assert!(is_output(44) && is_output(46) && is_output(307));
        assert!(is_read(0) && !is_read(1));
    }
}
