//! A pipe's fill without BPF: the blocked writer's own *write* end, taken with `pidfd_getfd`
//! for one `FIONREAD` and one `F_GETPIPE_SZ`, and closed at once. A read end is never taken:
//! holding one, even for a moment, would change what the writer sees (it could not get EPIPE
//! while we held it). Where that is not possible, the reason is kept for the record.

use std::{
    collections::HashMap,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use crate::{
    enrich::{
        Inspector,
        inspector::{BlockedThread, PipeFill},
    },
    report::record::LastReader,
};

/// Why a pipe's fill is unknown.
#[derive(Debug, thiserror::Error)]
pub enum FillError {
    #[error("fd {fd} is open for reading too (flags {flags:#o}): stdtrace never takes a read end")]
    NotWriteOnly { fd: i32, flags: u32 },
    #[error("its open flags could not be read: {0}")]
    Flags(std::io::Error),
    #[error("pidfd_open: {0}")]
    PidfdOpen(std::io::Error),
    #[error("pidfd_getfd (needs CAP_SYS_PTRACE, or the same user): {0}")]
    GetFd(std::io::Error),
    #[error("the fd changed while it was looked at")]
    Changed,
    #[error("FIONREAD: {0}")]
    Fionread(std::io::Error),
    #[error("F_GETPIPE_SZ: {0}")]
    PipeSize(std::io::Error),
}

/// The [`Inspector`] of a snapshot: pipe fills through the writer's own write end; nothing
/// else only the kernel programs could tell.
#[derive(Default)]
pub struct WriteEndInspector {
    /// Why the fill of (pid, fd) is unknown.
    pub unknown: HashMap<(u32, i32), String>,
}

impl Inspector for WriteEndInspector {
    fn pipe_state(&mut self, pid: u32, fd: i32) -> Option<PipeFill> {
        match fill_through_write_end(pid, fd) {
            Ok(fill) => Some(fill),
            Err(err) => {
                log::debug!("fill of fd {fd} of pid {pid}: {err}");
                self.unknown.insert((pid, fd), err.to_string());
                None
            }
        }
    }

    fn last_reader(&mut self, _inode: u64) -> Option<LastReader> {
        None
    }

    fn watch_readers(&mut self, _pids: &[u32]) {}

    fn blocked_thread(&mut self, _pid: u32, _tid: u32) -> Option<BlockedThread> {
        None
    }
}

/// The open flags of `pid`'s fd `fd`, from `/proc/PID/fdinfo/FD` (octal).
fn fd_flags(pid: u32, fd: i32) -> Result<u32, FillError> {
    let text =
        std::fs::read_to_string(crate::process::host::host().pid_path(pid, format!("fdinfo/{fd}")))
            .map_err(FillError::Flags)?;
    parse_fdinfo_flags(&text).ok_or_else(|| {
        FillError::Flags(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no flags line",
        ))
    })
}

/// The `flags:` field of an fdinfo text.
pub fn parse_fdinfo_flags(text: &str) -> Option<u32> {
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix("flags:"))?
        .trim();
    u32::from_str_radix(value, 8).ok()
}

fn last_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// One look at the pipe through the writer's write end.
pub fn fill_through_write_end(pid: u32, fd: i32) -> Result<PipeFill, FillError> {
    let flags = fd_flags(pid, fd)?;
    if flags & libc::O_ACCMODE as u32 != libc::O_WRONLY as u32 {
        return Err(FillError::NotWriteOnly { fd, flags });
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if pidfd < 0 {
        return Err(FillError::PidfdOpen(last_error()));
    }
    // SAFETY: a fresh fd we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: pidfd_getfd takes a pidfd, a target fd and flags; returns a new fd (close-on-exec)
    // or -1.
    let taken = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if taken < 0 {
        return Err(FillError::GetFd(last_error()));
    }
    // SAFETY: a fresh fd we own; dropping it closes our copy, never the writer's.
    let taken = unsafe { OwnedFd::from_raw_fd(taken as i32) };
    // The fd may have been closed and reused between the check and the take.
    // SAFETY: fcntl on an fd we own.
    let taken_flags = unsafe { libc::fcntl(taken.as_raw_fd(), libc::F_GETFL) };
    if taken_flags < 0 || taken_flags & libc::O_ACCMODE != libc::O_WRONLY {
        return Err(FillError::Changed);
    }
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into `queued`.
    if unsafe { libc::ioctl(taken.as_raw_fd(), libc::FIONREAD, &mut queued) } < 0 {
        return Err(FillError::Fionread(last_error()));
    }
    // SAFETY: F_GETPIPE_SZ takes no argument.
    let capacity = unsafe { libc::fcntl(taken.as_raw_fd(), libc::F_GETPIPE_SZ) };
    if capacity < 0 {
        return Err(FillError::PipeSize(last_error()));
    }
    drop(taken);
    Ok(PipeFill {
        capacity: capacity as u64,
        queued: queued.max(0) as u64,
        partial: false,
        readers: 0,
        writers: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two ints we own.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh descriptors owned by nobody else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    #[test]
    fn fdinfo_flags() {
        assert_eq!(
            parse_fdinfo_flags("pos:\t0\nflags:\t01\nmnt_id:\t15\n"),
            Some(1)
        );
        assert_eq!(parse_fdinfo_flags("flags:\t02004002\n"), Some(0o2004002));
        assert_eq!(parse_fdinfo_flags("flags:\tzz\n"), None);
        assert_eq!(parse_fdinfo_flags(""), None);
    }

    #[test]
    fn the_write_end_gives_the_fill_and_the_read_end_is_refused() {
        let (read, write) = pipe();
        // SAFETY: writing 100 bytes from our buffer to our pipe.
        let wrote = unsafe { libc::write(write.as_raw_fd(), [7u8; 100].as_ptr().cast(), 100) };
        assert_eq!(wrote, 100);
        let pid = std::process::id();
        let fill = fill_through_write_end(pid, write.as_raw_fd()).unwrap();
        assert_eq!((fill.queued, fill.capacity), (100, 65536));
        assert!(matches!(
            fill_through_write_end(pid, read.as_raw_fd()),
            Err(FillError::NotWriteOnly { .. })
        ));
        let mut inspector = WriteEndInspector::default();
        assert!(inspector.pipe_state(pid, read.as_raw_fd()).is_none());
        assert!(inspector.unknown[&(pid, read.as_raw_fd())].contains("never takes a read end"));
    }
}
