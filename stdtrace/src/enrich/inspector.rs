//! What only the kernel can tell userspace, behind one trait: a pipe's fill, a blocked
//! thread's saved registers, and who let go of a pipe's read end. `kernel::inspect` implements
//! it with the on-demand programs and the tracer's maps; [`NoInspection`] when the programs are
//! not loaded; tests use a fake.

use stdtrace_common::{PtyState, SocketState};

use crate::report::record::LastReader;

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

/// A thread blocked in a syscall, as the kernel sees it: read without stopping it.
#[derive(Clone, Copy, Debug)]
pub struct BlockedThread {
    /// Its saved user registers (`pt_regs`, as many words as `regs_len`).
    pub regs: [u64; stdtrace_common::REGS_COPY_WORDS],
    pub regs_len: u32,
    /// Its FS base (TLS), for a Go program's goroutine.
    pub fsbase: u64,
    /// When it last started running, and when the inspecting thread did (scheduler clock),
    /// and the monotonic time of the inspection.
    pub last_arrival: u64,
    pub own_arrival: u64,
    pub now_ns: u64,
}

impl BlockedThread {
    /// About when it went to sleep (CLOCK_MONOTONIC): when it last got a CPU, translated from
    /// the scheduler's clock to the monotonic one by the inspector's own last arrival, which is
    /// about now.
    pub fn asleep_since_ns(&self) -> u64 {
        match self.own_arrival.checked_sub(self.last_arrival) {
            Some(asleep) if self.last_arrival != 0 => self.now_ns.saturating_sub(asleep),
            _ => self.now_ns,
        }
    }
}

/// Something that can read what only the kernel knows.
pub trait Inspector {
    /// The state of the pipe behind fd `fd` of process `pid`.
    fn pipe_state(&mut self, pid: u32, fd: i32) -> Option<PipeFill>;

    /// Who held the read end of pipe `inode` last, and let it go.
    fn last_reader(&mut self, inode: u64) -> Option<LastReader>;

    /// Asks the kernel to remember when these processes let go of the pipes they read.
    fn watch_readers(&mut self, pids: &[u32]);

    /// Thread `tid` of process `pid`, blocked in a syscall: its registers and since when.
    fn blocked_thread(&mut self, pid: u32, tid: u32) -> Option<BlockedThread>;

    /// The queues and buffers of the socket behind fd `fd` of process `pid`.
    fn socket_state(&mut self, _pid: u32, _fd: i32) -> Option<SocketState> {
        None
    }

    /// The buffers of the pty whose slave is behind fd `fd` of process `pid`.
    fn pty_state(&mut self, _pid: u32, _fd: i32) -> Option<PtyState> {
        None
    }
}

/// No inspection (the tracer is not loaded): pipes' fill stays unknown.
pub struct NoInspection;

impl Inspector for NoInspection {
    fn pipe_state(&mut self, _pid: u32, _fd: i32) -> Option<PipeFill> {
        None
    }

    fn last_reader(&mut self, _inode: u64) -> Option<LastReader> {
        None
    }

    fn watch_readers(&mut self, _pids: &[u32]) {}

    fn blocked_thread(&mut self, _pid: u32, _tid: u32) -> Option<BlockedThread> {
        None
    }
}

/// A fake of the kernel's side, for tests that run without root: it answers what it is told
/// to, and remembers what it was asked.
#[cfg(test)]
pub mod fake {
    use super::*;

    #[derive(Default)]
    pub struct FakeInspector {
        pub fill: Option<PipeFill>,
        pub last_reader: Option<LastReader>,
        pub thread: Option<BlockedThread>,
        pub socket: Option<SocketState>,
        pub pty: Option<PtyState>,
        /// (pid, fd) of every pty asked about.
        pub asked_pty: Vec<(u32, i32)>,
        /// (pid, fd) of every socket asked about.
        pub asked_socket: Vec<(u32, i32)>,
        /// (pid, fd) of every pipe asked about.
        pub asked_fill: Vec<(u32, i32)>,
        /// Inodes asked about.
        pub asked_reader: Vec<u64>,
        pub watched: Vec<u32>,
        /// (pid, tid) of every thread asked about.
        pub asked_thread: Vec<(u32, u32)>,
    }

    impl Inspector for FakeInspector {
        fn pipe_state(&mut self, pid: u32, fd: i32) -> Option<PipeFill> {
            self.asked_fill.push((pid, fd));
            self.fill
        }

        fn last_reader(&mut self, inode: u64) -> Option<LastReader> {
            self.asked_reader.push(inode);
            self.last_reader.clone()
        }

        fn watch_readers(&mut self, pids: &[u32]) {
            self.watched.extend_from_slice(pids);
        }

        fn blocked_thread(&mut self, pid: u32, tid: u32) -> Option<BlockedThread> {
            self.asked_thread.push((pid, tid));
            self.thread
        }

        fn socket_state(&mut self, pid: u32, fd: i32) -> Option<SocketState> {
            self.asked_socket.push((pid, fd));
            self.socket
        }

        fn pty_state(&mut self, pid: u32, fd: i32) -> Option<PtyState> {
            self.asked_pty.push((pid, fd));
            self.pty
        }
    }
}
