//! A pipe's state (capacity, bytes queued, open ends), read from the kernel without opening
//! either end: `/proc/PID/fd/N` opened with `O_PATH` reaches the pipe's inode, and the kernel
//! inspection program follows that descriptor to the `pipe_inode_info`. Holding a real read or
//! write end, even briefly, would change what the pipe's own readers and writers see (EOF,
//! EPIPE).

use std::{
    ffi::CString,
    os::fd::{FromRawFd, OwnedFd},
};

use stdtrace_common::{PAGE_SIZE, PipeState};

use super::fd::LastReader;
use crate::loader::Tracer;

/// What a pipe holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PipeFill {
    /// Bytes it holds when full.
    pub capacity: u64,
    /// Bytes written and not read yet (a lower bound if `partial`).
    pub queued: u64,
    pub partial: bool,
    pub readers: u32,
    pub writers: u32,
}

impl PipeFill {
    pub fn from_kernel(state: &PipeState) -> Option<Self> {
        (state.valid != 0).then(|| Self {
            capacity: state.max_usage as u64 * PAGE_SIZE as u64,
            queued: state.queued,
            partial: state.partial != 0,
            readers: state.readers,
            writers: state.writers,
        })
    }
}

/// Something that can read a pipe's state, and what the kernel remembers of its readers.
pub trait PipeInspector {
    /// The state of the pipe behind fd `fd` of process `pid`.
    fn pipe_state(&mut self, pid: u32, fd: i32) -> Option<PipeFill>;

    /// Who held the read end of pipe `inode` last, and let it go.
    fn last_reader(&mut self, inode: u64) -> Option<LastReader>;

    /// Asks the kernel to remember when these processes let go of the pipes they read.
    fn watch_readers(&mut self, pids: &[u32]);
}

/// Opens `/proc/PID/fd/N` with `O_PATH`: a handle on the inode, not an open end.
fn open_path(pid: u32, fd: i32) -> Option<OwnedFd> {
    let path = CString::new(format!("/proc/{pid}/fd/{fd}")).ok()?;
    // SAFETY: a valid NUL-terminated path; O_PATH opens no file for reading or writing.
    let raw = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    // SAFETY: a fresh descriptor owned by nobody else.
    (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) })
}

impl PipeInspector for Tracer {
    fn pipe_state(&mut self, pid: u32, fd: i32) -> Option<PipeFill> {
        let handle = open_path(pid, fd)?;
        match self.inspect_pipe(&handle) {
            Ok(state) => PipeFill::from_kernel(&state),
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
            comm: super::status::comm_from_bytes(&gone.comm),
            exited: gone.exit_ts_ns != 0,
            exit_ts_ns: (gone.exit_ts_ns != 0).then_some(gone.exit_ts_ns),
            closed_ts_ns: (gone.how == stdtrace_common::reader_gone::CLOSED).then_some(gone.ts_ns),
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
}

/// No inspection (the tracer is not loaded): pipes' fill stays unknown.
pub struct NoInspection;

impl PipeInspector for NoInspection {
    fn pipe_state(&mut self, _pid: u32, _fd: i32) -> Option<PipeFill> {
        None
    }

    fn last_reader(&mut self, _inode: u64) -> Option<LastReader> {
        None
    }

    fn watch_readers(&mut self, _pids: &[u32]) {}
}
