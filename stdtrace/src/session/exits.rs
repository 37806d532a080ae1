//! Watching processes stdtrace did not start (`--pid`) for their exit, with pidfds: no signal,
//! no ptrace.

use std::{io, os::fd::AsRawFd};

use anyhow::{Context as _, Result, bail};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::mpsc,
};

use crate::sys;

/// Sends `pid` on `exited` when the process exits.
pub fn watch_exit(pid: u32, exited: mpsc::UnboundedSender<u32>) -> Result<()> {
    let pidfd = match sys::pidfd_open(pid) {
        Ok(pidfd) => pidfd,
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => {
            bail!("no process with pid {pid} (it exited)")
        }
        Err(err) => return Err(err).with_context(|| format!("watching pid {pid} for its exit")),
    };
    // SAFETY: the AsyncFd owns the pidfd, which stays open until the AsyncFd is dropped.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
        .map_err(io::Error::from)
        .with_context(|| format!("watching pid {pid}"))?;
    tokio::spawn(async move {
        // A pidfd becomes readable when the process exits.
        let _ = pidfd.readable().await;
        log::info!("pid {pid} exited (pidfd {})", pidfd.as_raw_fd());
        let _ = exited.send(pid);
    });
    Ok(())
}
