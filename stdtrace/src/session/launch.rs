//! Launch mode: start the command held before `exec`, so that the programs are attached and its
//! pid is a target before its first instruction runs; then let it go and wait for its status.
//!
//! The child inherits stdin, stdout and stderr untouched. The two pipes used to hold it and to
//! learn whether `exec` worked are close-on-exec, so the command never sees them.

use std::{
    ffi::{CString, OsString},
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

/// Errors launching the command.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{0}: argument contains a NUL byte")]
    NulInArgument(String),
    #[error("creating a pipe to hold the command: {0}")]
    Pipe(#[source] io::Error),
    #[error("forking the command: {0}")]
    Fork(#[source] io::Error),
    #[error("releasing the command: {0}")]
    Release(#[source] io::Error),
    #[error("{program}: cannot execute: {source}")]
    Exec {
        program: String,
        #[source]
        source: io::Error,
    },
}

/// A forked child waiting, before `exec`, to be released.
pub struct HeldChild {
    pid: u32,
    program: String,
    release: Option<OwnedFd>,
    exec_error: OwnedFd,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), LaunchError> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 returns.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(LaunchError::Pipe(io::Error::last_os_error()));
    }
    // SAFETY: pipe2 succeeded, so both are fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl HeldChild {
    /// Forks a child that will run `program` with `argv` once released.
    pub fn spawn(program: &Path, argv: &[OsString]) -> Result<Self, LaunchError> {
        let display = program.display().to_string();
        let path = CString::new(program.as_os_str().as_bytes())
            .map_err(|_| LaunchError::NulInArgument(display.clone()))?;
        let args: Vec<CString> = argv
            .iter()
            .map(|arg| {
                CString::new(arg.as_bytes())
                    .map_err(|_| LaunchError::NulInArgument(arg.to_string_lossy().into_owned()))
            })
            .collect::<Result<_, _>>()?;
        let mut arg_ptrs: Vec<*const libc::c_char> = args.iter().map(|arg| arg.as_ptr()).collect();
        arg_ptrs.push(std::ptr::null());

        let (release_read, release_write) = pipe()?;
        let (error_read, error_write) = pipe()?;

        // SAFETY: after fork the child only calls async-signal-safe functions (close,
        // sigaction, sigprocmask, read, execv, write, _exit) on data prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(LaunchError::Fork(io::Error::last_os_error()));
        }
        if pid == 0 {
            // SAFETY: see above; this never returns.
            unsafe {
                held_child(
                    release_read.as_raw_fd(),
                    release_write.as_raw_fd(),
                    error_write.as_raw_fd(),
                    &path,
                    &arg_ptrs,
                )
            }
        }
        drop(release_read);
        drop(error_write);
        Ok(Self {
            pid: pid as u32,
            program: display,
            release: Some(release_write),
            exec_error: error_read,
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Lets the child `exec` the command, and waits until it has (or failed to).
    pub fn release(mut self) -> Result<u32, LaunchError> {
        let release = self.release.take();
        if let Some(release) = &release {
            let go = [1u8];
            // SAFETY: writing one byte from a live buffer to a descriptor we own.
            let written = unsafe { libc::write(release.as_raw_fd(), go.as_ptr().cast(), 1) };
            if written != 1 {
                return Err(LaunchError::Release(io::Error::last_os_error()));
            }
        }
        drop(release);
        let mut errno = [0u8; 4];
        let read = loop {
            // SAFETY: reading into a live 4-byte buffer from a descriptor we own.
            let n = unsafe {
                libc::read(
                    self.exec_error.as_raw_fd(),
                    errno.as_mut_ptr().cast(),
                    errno.len(),
                )
            };
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break n;
        };
        if read == 4 {
            // exec failed and the child is exiting: reap it so it does not linger as a zombie.
            let _ = wait_for_exit(self.pid);
            return Err(LaunchError::Exec {
                program: self.program.clone(),
                source: io::Error::from_raw_os_error(i32::from_ne_bytes(errno)),
            });
        }
        // EOF: the close-on-exec error pipe closed, so exec succeeded.
        Ok(self.pid)
    }
}

impl Drop for HeldChild {
    fn drop(&mut self) {
        if self.release.take().is_some() {
            // Never released: closing the pipe makes the child exit without running anything.
            let _ = wait_for_exit(self.pid);
        }
    }
}

/// Runs in the forked child: wait for the go-ahead, then exec.
///
/// # Safety
/// Must only be called in a freshly forked child; `path` and `argv` must be valid, with `argv`
/// NULL-terminated.
unsafe fn held_child(
    release_read: i32,
    release_write: i32,
    error_write: i32,
    path: &CString,
    argv: &[*const libc::c_char],
) -> ! {
    unsafe {
        // Without this the child would keep the write end open and never see EOF if stdtrace
        // dies before releasing it.
        libc::close(release_write);
        // Rust ignores SIGPIPE in its own process; the command gets the default back, as it
        // would from a shell. The signal mask is cleared for the same reason.
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGPIPE, &action, std::ptr::null_mut());
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());

        let mut go = [0u8; 1];
        loop {
            let n = libc::read(release_read, go.as_mut_ptr().cast(), 1);
            if n == 1 {
                break;
            }
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            // stdtrace went away or gave up: do not run the command untraced.
            libc::_exit(127);
        }
        libc::execv(path.as_ptr(), argv.as_ptr());
        let errno = (*libc::__errno_location()).to_ne_bytes();
        libc::write(error_write, errno.as_ptr().cast(), errno.len());
        libc::_exit(127)
    }
}

/// How a process ended, as a shell reports it in `$?`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl ExitStatus {
    /// The exit code a shell would show: the code, or 128 + the signal number.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(signal) => 128 + signal,
        }
    }
}

/// Blocks until the child `pid` exits and reaps it.
pub fn wait_for_exit(pid: u32) -> io::Result<ExitStatus> {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child with a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid as i32, &mut status, 0) };
        if rc == pid as i32 {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    if libc::WIFSIGNALED(status) {
        Ok(ExitStatus::Signaled(libc::WTERMSIG(status)))
    } else {
        Ok(ExitStatus::Exited(libc::WEXITSTATUS(status)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_only_when_released_and_reports_the_status() {
        let argv: Vec<OsString> = ["sh", "-c", "exit 3"].iter().map(Into::into).collect();
        let child = HeldChild::spawn(Path::new("/bin/sh"), &argv).unwrap();
        let pid = child.pid();
        // Held: still stdtrace's image (not yet sh).
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(exe, std::fs::read_link("/proc/self/exe").unwrap());
        assert_eq!(child.release().unwrap(), pid);
        assert_eq!(wait_for_exit(pid).unwrap(), ExitStatus::Exited(3));
    }

    #[test]
    fn a_killed_command_reports_128_plus_the_signal() {
        let argv: Vec<OsString> = ["sh", "-c", "kill -PIPE $$"]
            .iter()
            .map(Into::into)
            .collect();
        let child = HeldChild::spawn(Path::new("/bin/sh"), &argv).unwrap();
        let pid = child.release().unwrap();
        let status = wait_for_exit(pid).unwrap();
        assert_eq!(status, ExitStatus::Signaled(libc::SIGPIPE));
        assert_eq!(status.shell_code(), 141);
    }

    #[test]
    fn an_unreleased_child_never_runs_the_command() {
        let marker = std::env::temp_dir().join(format!("stdtrace-held-{}", std::process::id()));
        let script = format!("touch {}", marker.display());
        let argv: Vec<OsString> = vec!["sh".into(), "-c".into(), script.into()];
        let child = HeldChild::spawn(Path::new("/bin/sh"), &argv).unwrap();
        drop(child);
        assert!(!marker.exists());
    }

    #[test]
    fn exec_failure_is_an_error() {
        let not_elf = std::env::temp_dir().join(format!("stdtrace-notelf-{}", std::process::id()));
        std::fs::write(&not_elf, b"\x7fELF garbage").unwrap();
        std::fs::set_permissions(
            &not_elf,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let child = HeldChild::spawn(&not_elf, &[not_elf.clone().into_os_string()]).unwrap();
        let err = child.release().unwrap_err();
        assert!(err.to_string().contains("cannot execute"), "{err}");
        std::fs::remove_file(&not_elf).unwrap();
    }
}
