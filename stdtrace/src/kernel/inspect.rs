//! [`Inspector`] on the loaded tracer: the on-demand programs read a pipe's `pipe_inode_info`,
//! a socket's `struct sock`, a pty's tty buffers and a blocked thread's saved registers
//! (`BPF_PROG_TEST_RUN`), and the tracer's maps say who let go of a read end.
//!
//! A pipe is reached without opening either end: `/proc/PID/fd/N` opened with `O_PATH` is a
//! handle on the inode, which the program follows to the pipe. Holding a real read or write
//! end, even briefly, would change what the pipe's own readers and writers see (EOF, EPIPE).
//! A thread is reached through a pidfd: nothing stops, signals or ptraces it.

use std::{
    ffi::CString,
    os::fd::{FromRawFd, OwnedFd},
};

use stdtrace_common::{PAGE_SIZE, PipeState, PtyState, SocketState, reader_gone};

use super::loader::Tracer;
use crate::{
    enrich::{
        Inspector,
        inspector::{BlockedThread, PipeFill},
    },
    process::status,
    report::record::LastReader,
    sys,
};

/// The fill the kernel program read, if it could.
fn pipe_fill(state: &PipeState) -> Option<PipeFill> {
    (state.valid != 0).then(|| PipeFill {
        capacity: state.max_usage as u64 * PAGE_SIZE as u64,
        queued: state.queued,
        partial: state.partial != 0,
        readers: state.readers,
        writers: state.writers,
    })
}

/// Opens `/proc/PID/fd/N` with `O_PATH`: a handle on the inode, not an open end.
fn open_path(pid: u32, fd: i32) -> Option<OwnedFd> {
    let path = crate::process::host::host().pid_path(pid, format!("fd/{fd}"));
    let path = CString::new(std::os::unix::ffi::OsStringExt::into_vec(
        path.into_os_string(),
    ))
    .ok()?;
    // SAFETY: a valid NUL-terminated path; O_PATH opens no file for reading or writing.
    let raw = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    // SAFETY: a fresh descriptor owned by nobody else.
    (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) })
}

impl Inspector for Tracer {
    fn pipe_state(&mut self, pid: u32, fd: i32) -> Option<PipeFill> {
        let handle = open_path(pid, fd)?;
        match self.inspect_pipe(&handle) {
            Ok(state) => pipe_fill(&state),
            Err(err) => {
                log::debug!("reading the pipe of fd {fd} of pid {pid}: {err:#}");
                None
            }
        }
    }

    fn last_reader(&mut self, inode: u64) -> Option<LastReader> {
        let gone = self.last_reader_of(inode).ok()??;
        Some(LastReader {
            pid: gone.tgid,
            comm: status::comm_from_bytes(&gone.comm),
            exited: gone.exit_ts_ns != 0,
            exit_ts_ns: (gone.exit_ts_ns != 0).then_some(gone.exit_ts_ns),
            closed_ts_ns: (gone.how == reader_gone::CLOSED).then_some(gone.ts_ns),
        })
    }

    fn watch_readers(&mut self, pids: &[u32]) {
        if pids.is_empty() {
            return;
        }
        if let Err(err) = self.attach_close() {
            log::warn!("readers' closes will not be seen: {err}");
        }
        for &pid in pids {
            if let Err(err) = self.watch_reader(pid) {
                log::debug!("watching reader {pid}: {err:#}");
            }
        }
    }

    fn socket_state(&mut self, pid: u32, fd: i32) -> Option<SocketState> {
        let handle = open_path(pid, fd)?;
        match self.inspect_socket(&handle) {
            Ok(state) if state.valid != 0 => Some(state),
            Ok(_) => None,
            Err(err) => {
                log::debug!("reading the socket of fd {fd} of pid {pid}: {err:#}");
                None
            }
        }
    }

    fn pty_state(&mut self, pid: u32, fd: i32) -> Option<PtyState> {
        let handle = open_path(pid, fd)?;
        match self.inspect_pty(&handle) {
            Ok(state) if state.valid != 0 => {
                log::debug!("pty of fd {fd} of pid {pid}: {state:?}");
                Some(state)
            }
            Ok(_) => None,
            Err(err) => {
                log::debug!("reading the pty of fd {fd} of pid {pid}: {err:#}");
                None
            }
        }
    }

    fn blocked_thread(&mut self, pid: u32, tid: u32) -> Option<BlockedThread> {
        let Some(pidfd) = sys::pidfd_of_thread(pid, tid) else {
            log::debug!(
                "no pidfd for thread {tid} of pid {pid}: {}",
                std::io::Error::last_os_error()
            );
            return None;
        };
        match self.inspect_thread(&pidfd) {
            Ok(state) if state.valid != 0 => Some(BlockedThread {
                regs: state.regs,
                regs_len: state.regs_len,
                fsbase: state.fsbase,
                last_arrival: state.last_arrival,
                own_arrival: state.own_arrival,
                now_ns: state.now_ns,
            }),
            Ok(_) => {
                log::debug!("thread {tid} of pid {pid} could not be inspected");
                None
            }
            Err(err) => {
                log::debug!("inspecting thread {tid} of pid {pid}: {err:#}");
                None
            }
        }
    }
}
