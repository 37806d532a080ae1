//! Types shared by stdtrace's kernel programs (`stdtrace-ebpf`) and its userspace loader.
//!
//! Everything here is `#[repr(C)]`, `Copy`, made of fixed-size fields with explicit padding, so
//! that the kernel and userspace agree on every byte. Values that come from the kernel are
//! plain integers (never Rust enums or `bool`), so a corrupt or unexpected value can be rejected
//! by userspace instead of being undefined behaviour.
#![no_std]

/// Length of a task's `comm` (command name), including the trailing NUL.
pub const TASK_COMM_LEN: usize = 16;

/// Size of one page of user memory, the unit in which the user stack is copied.
pub const PAGE_SIZE: usize = 4096;

/// How many pages of the user stack an event carries, starting at the page that holds the
/// stack pointer. Userspace unwinds with `.eh_frame` CFI inside this copy, so it bounds how deep
/// a stack can be reconstructed (12 to 16 KiB above the stack pointer).
pub const STACK_PAGES: usize = 4;

/// Bytes of user stack an event can carry.
pub const STACK_COPY_BYTES: usize = STACK_PAGES * PAGE_SIZE;

/// Room for the task's saved user registers (`struct pt_regs`, 168 bytes on x86_64).
pub const REGS_COPY_WORDS: usize = 32;

/// Highest errno (exclusive) the kernel filter can watch.
pub const MAX_ERRNO: u32 = 256;

/// The write-family syscalls stdtrace traces, as carried in [`WriteRecord::syscall`].
pub mod syscall {
    /// `write(fd, buf, count)`
    pub const WRITE: u32 = 0;
    /// `writev(fd, iov, iovcnt)`
    pub const WRITEV: u32 = 1;
    /// `pwrite64(fd, buf, count, offset)`
    pub const PWRITE64: u32 = 2;
    /// `pwritev(fd, iov, iovcnt, offset_lo, offset_hi)`
    pub const PWRITEV: u32 = 3;
    /// `pwritev2(fd, iov, iovcnt, offset_lo, offset_hi, flags)`
    pub const PWRITEV2: u32 = 4;
}

/// The first field of every record in the ring buffer, telling which struct follows.
pub mod record_kind {
    /// A [`WriteRecord`](super::WriteRecord) of a write that failed with a watched errno.
    pub const FAILED_WRITE: u32 = 1;
    /// A [`ProcessExec`](super::ProcessExec).
    pub const PROCESS_EXEC: u32 = 2;
    /// A [`ProcessExit`](super::ProcessExit).
    pub const PROCESS_EXIT: u32 = 3;
    /// A [`WriteRecord`](super::WriteRecord) of a write that returned after blocking for at
    /// least the slow threshold (`blocked_ns`), or after being reported stuck.
    pub const BLOCKED_WRITE: u32 = 4;
    /// A [`SigpipeRecord`](super::SigpipeRecord) of a SIGPIPE generated.
    pub const SIGPIPE_GENERATED: u32 = 5;
    /// A [`SigpipeRecord`](super::SigpipeRecord) of a SIGPIPE delivered.
    pub const SIGPIPE_DELIVERED: u32 = 6;
}

/// Values of [`ReaderGone::how`].
pub mod reader_gone {
    /// The last reader exited.
    pub const EXITED: u32 = 1;
    /// The last reader closed its read end.
    pub const CLOSED: u32 = 2;
}

/// Values of [`WriteRecord::blocked`].
pub mod blocked_state {
    /// Not a blocked write.
    pub const NONE: u32 = 0;
    /// It blocked for at least the slow threshold, then returned.
    pub const SLOW: u32 = 1;
    /// It had been reported stuck, and has now returned.
    pub const RESUMED: u32 = 2;
    /// A goroutine parked in Go's netpoller after EAGAIN, reported parked, wrote again on
    /// that fd successfully.
    pub const RESUMED_PARKED: u32 = 3;
}

/// Slots flagging, per process (tgid modulo the size), that goroutines may be parked after
/// EAGAIN: a successful write looks further only when its process's flag is set.
pub const PARKED_PROCESS_SLOTS: u32 = 4096;

/// The slot of `PARKED_PROCESSES` (after the per-process ones) set while any goroutine of any
/// process may be parked: successful writes check it before anything else.
pub const PARKED_ANY_SLOT: u32 = PARKED_PROCESS_SLOTS;

/// Key of a goroutine parked in Go's netpoller after its write got EAGAIN.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ParkedKey {
    /// Process id.
    pub tgid: u32,
    /// The fd it wrote to.
    pub fd: i32,
    /// The goroutine.
    pub goid: u64,
}

/// A goroutine whose write got EAGAIN, and which the Go runtime then parks until the fd is
/// writable.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParkedWrite {
    /// When its write got EAGAIN (`bpf_ktime_get_ns()`).
    pub since_ns: u64,
    /// Its `g`, to check it is still parked.
    pub g: u64,
    /// The thread that wrote.
    pub tid: u32,
    /// Which syscall, one of [`syscall`].
    pub syscall: u32,
    /// Set by userspace once it has reported the goroutine parked: its next successful write
    /// on the fd is then reported as resumed.
    pub reported: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// Bits of [`WriteRecord::flags`].
pub mod write_flags {
    /// `regs` holds the task's saved user registers.
    pub const REGS_VALID: u32 = 1 << 0;
    /// `file` describes what the fd pointed at when the write failed.
    pub const FILE_VALID: u32 = 1 << 1;
    /// A vectored write had more iovecs than the kernel program sums; `count` is a lower bound.
    pub const COUNT_PARTIAL: u32 = 1 << 2;
    /// The iovec array could not be read; `count` is 0.
    pub const COUNT_UNKNOWN: u32 = 1 << 3;
    /// `file.pipe_readers` and `file.pipe_writers` were read from the pipe.
    pub const PIPE_ENDS_VALID: u32 = 1 << 4;
    /// `g_snapshot` holds the first [`G_SNAPSHOT_BYTES`](super::G_SNAPSHOT_BYTES) bytes of the
    /// `g` in register r14, which owns the thread's stack: a write by Go code in a process
    /// the kernel program was not yet told is Go (`go.g` is that `g`).
    pub const G_SNAPSHOT: u32 = 1 << 5;
}

/// Bytes of a `runtime.g` copied for a write in a process not yet known to be Go: enough for
/// `goid`, `atomicstatus`, `gopc` and `parentGoid` in every Go release so far (all below 320).
pub const G_SNAPSHOT_BYTES: usize = 512;

/// Indexes into the per-CPU `COUNTERS` array. Every event the kernel programs match, and every
/// way they can fail to deliver one, is counted, so the summary stays exact when events are lost.
pub mod counter {
    /// Writes that failed with a watched errno in a traced process.
    pub const MATCHED: u32 = 0;
    /// Matched writes whose event could not be sent because the ring buffer was full.
    pub const RINGBUF_FULL: u32 = 1;
    /// Matched writes whose saved user registers could not be read (no fd, no stack).
    pub const REGS_UNREADABLE: u32 = 2;
    /// Matched writes whose fd could not be followed to its file.
    pub const FILE_UNREADABLE: u32 = 3;
    /// Matched writes whose user stack could not be copied at all.
    pub const STACK_UNREADABLE: u32 = 4;
    /// Matched writes that could not be tallied per (pid, fd, errno) because the tally map was full.
    pub const TALLY_FULL: u32 = 5;
    /// Processes added to the target set because a target forked them.
    pub const CHILDREN_FOLLOWED: u32 = 6;
    /// Process exec/exit records that could not be sent because the ring buffer was full.
    pub const LIFECYCLE_DROPPED: u32 = 7;
    /// Writes that blocked (the writer slept in them) in a traced process.
    pub const BLOCKED: u32 = 8;
    /// Blocked writes not tracked because another blocked thread had their slot.
    pub const BLOCKED_UNTRACKED: u32 = 9;
    /// Blocked-write records (slow, resumed) the ring buffer had no room for.
    pub const BLOCKED_DROPPED: u32 = 10;
    /// Matched writes from a call site already reported: counted there, in the kernel, and
    /// not sent.
    pub const REPEATS: u32 = 11;
    /// Matched writes from a known call site that could not be counted there because the map
    /// of call-site counts was full (still in the per-(pid, fd, errno) totals).
    pub const SITES_FULL: u32 = 12;
    /// Goroutines parked after EAGAIN that could not be recorded because the map of parked
    /// goroutines had no room: they are never reported parked, nor resumed.
    pub const PARKED_FULL: u32 = 13;
    /// Number of counters.
    pub const COUNT: u32 = 14;
}

/// Offsets of the kernel struct members the programs read, in bytes, taken from the running
/// kernel's BTF by userspace. Nothing about kernel struct layout is compiled into the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLayout {
    /// `sizeof(struct pt_regs)`.
    pub pt_regs_size: u32,
    /// `pt_regs.di`: a syscall's first argument (the fd).
    pub pt_regs_di: u32,
    /// `pt_regs.si`: a syscall's second argument (buffer or iovec array).
    pub pt_regs_si: u32,
    /// `pt_regs.dx`: a syscall's third argument (byte count or iovec count).
    pub pt_regs_dx: u32,
    /// `pt_regs.sp`: the user stack pointer.
    pub pt_regs_sp: u32,
    /// `task_struct.tgid`.
    pub task_tgid: u32,
    /// `task_struct.files`.
    pub task_files: u32,
    /// `files_struct.fdt`.
    pub files_fdt: u32,
    /// `fdtable.max_fds`.
    pub fdtable_max_fds: u32,
    /// `fdtable.fd`.
    pub fdtable_fd: u32,
    /// `file.f_inode`.
    pub file_inode: u32,
    /// `file.f_flags`.
    pub file_flags: u32,
    /// `inode.i_mode`.
    pub inode_mode: u32,
    /// `inode.i_ino`.
    pub inode_ino: u32,
    /// `inode.i_rdev`.
    pub inode_rdev: u32,
    /// `inode.i_sb`.
    pub inode_sb: u32,
    /// `super_block.s_dev`.
    pub super_block_dev: u32,
    /// `inode.i_pipe`: the pipe of a FIFO inode.
    pub inode_pipe: u32,
    /// `pipe_inode_info.readers`: open read ends.
    pub pipe_readers: u32,
    /// `pipe_inode_info.writers`: open write ends.
    pub pipe_writers: u32,
    /// 1 when the `sched_process_exit` raw tracepoint passes `group_dead` as its second argument.
    pub exit_has_group_dead: u32,
    /// `task_struct.thread.fsbase`: the thread pointer (TLS base) of a user thread on x86_64.
    pub task_fsbase: u32,
    /// `pt_regs.orig_ax`: the number of the syscall a task is in.
    pub pt_regs_orig_ax: u32,
    /// 1 when the `sched_switch` raw tracepoint passes `prev_state` as its fourth argument.
    pub switch_has_prev_state: u32,
    /// `pipe_inode_info.head`: the ring slot the next write fills.
    pub pipe_head: u32,
    /// `pipe_inode_info.tail`: the ring slot the next read drains.
    pub pipe_tail: u32,
    /// `pipe_inode_info.max_usage`: slots a writer may fill (the capacity, in pages).
    pub pipe_max_usage: u32,
    /// `pipe_inode_info.ring_size`: slots in the ring (a power of two).
    pub pipe_ring_size: u32,
    /// `pipe_inode_info.bufs`: the ring of `struct pipe_buffer`.
    pub pipe_bufs: u32,
    /// `sizeof(struct pipe_buffer)`.
    pub pipe_buffer_size: u32,
    /// `pipe_buffer.len`: bytes waiting in a slot.
    pub pipe_buffer_len: u32,
    /// `file.private_data`: a pidfd's `struct pid`.
    pub file_private_data: u32,
    /// `pid.tasks`: the tasks using a pid, by type (`[PIDTYPE_PID]` first).
    pub pid_tasks: u32,
    /// `task_struct.pid_links`: the task's node in its pid's list (`[PIDTYPE_PID]` first).
    pub task_pid_links: u32,
    /// `task_struct.stack`: the task's kernel stack, whose top holds its saved user registers.
    pub task_stack: u32,
    /// `task_struct.__state`: running, sleeping, ...
    pub task_state: u32,
    /// `task_struct.sched_info.last_arrival`: when the task last got a CPU (sched clock).
    pub task_last_arrival: u32,
    /// `inode.i_private`: a pidfs inode's `struct pid` (Linux 6.9+).
    pub inode_private: u32,
    /// `file.f_mode`: `FMODE_READ`, `FMODE_WRITE`.
    pub file_mode: u32,
    /// `task_struct.sighand`.
    pub task_sighand: u32,
    /// Offset of SIGPIPE's `sa_handler` in `sighand_struct`: `action[12].sa.sa_handler`.
    pub sighand_sigpipe_handler: u32,
    /// `task_struct.blocked`: the thread's signal mask.
    pub task_blocked: u32,
    /// `task_struct.exit_code`.
    pub task_exit_code: u32,
    /// `kernel_siginfo.si_code`.
    pub siginfo_code: u32,
    /// `task_struct.pid`: the thread id.
    pub task_pid: u32,
    /// `pt_regs.r14`: where Go code (register ABI, Go 1.17+) keeps the running `g`.
    pub pt_regs_r14: u32,
    /// `pt_regs.ip`: the user instruction pointer (after the `syscall` instruction).
    pub pt_regs_ip: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// Configuration written into the programs' read-only data before they are loaded.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracerConfig {
    /// stdtrace's own process id: it never reports on itself.
    pub self_tgid: u32,
    /// 1: only processes in the `TARGETS` map are traced; 0: every process on the host.
    pub targets_only: u32,
    /// Bit `n` set: a write failing with errno `n` is reported. Errnos from 0 to [`MAX_ERRNO`].
    pub errno_mask: [u64; 4],
    /// A write that was blocked for at least this long is reported when it returns.
    pub slow_ns: u64,
    /// Where the kernel structs the programs read keep their members.
    pub kernel: KernelLayout,
}

impl TracerConfig {
    /// A configuration that matches nothing; the loader always overrides it.
    pub const INERT: Self = Self {
        self_tgid: 0,
        targets_only: 1,
        errno_mask: [0; 4],
        slow_ns: u64::MAX,
        kernel: KernelLayout {
            pt_regs_size: 0,
            pt_regs_di: 0,
            pt_regs_si: 0,
            pt_regs_dx: 0,
            pt_regs_sp: 0,
            task_tgid: 0,
            task_files: 0,
            files_fdt: 0,
            fdtable_max_fds: 0,
            fdtable_fd: 0,
            file_inode: 0,
            file_flags: 0,
            inode_mode: 0,
            inode_ino: 0,
            inode_rdev: 0,
            inode_sb: 0,
            super_block_dev: 0,
            inode_pipe: 0,
            pipe_readers: 0,
            pipe_writers: 0,
            exit_has_group_dead: 0,
            task_fsbase: 0,
            pt_regs_orig_ax: 0,
            switch_has_prev_state: 0,
            pipe_head: 0,
            pipe_tail: 0,
            pipe_max_usage: 0,
            pipe_ring_size: 0,
            pipe_bufs: 0,
            pipe_buffer_size: 0,
            pipe_buffer_len: 0,
            file_private_data: 0,
            pid_tasks: 0,
            task_pid_links: 0,
            task_stack: 0,
            task_state: 0,
            task_last_arrival: 0,
            inode_private: 0,
            file_mode: 0,
            task_sighand: 0,
            sighand_sigpipe_handler: 0,
            task_blocked: 0,
            task_exit_code: 0,
            siginfo_code: 0,
            task_pid: 0,
            pt_regs_r14: 0,
            pt_regs_ip: 0,
            _pad: 0,
        },
    };

    /// Watches writes failing with `errno`; returns false (and changes nothing) when `errno` is
    /// not below [`MAX_ERRNO`].
    pub fn watch_errno(&mut self, errno: u32) -> bool {
        if errno >= MAX_ERRNO {
            return false;
        }
        self.errno_mask[(errno / 64) as usize] |= 1u64 << (errno % 64);
        true
    }
}

/// What a file descriptor pointed at, read from the kernel's `file` and `inode` at event time,
/// so that it is known even if the process has exited before userspace looks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenFile {
    /// `inode.i_ino`: the pipe or socket inode number, or the file's inode.
    pub ino: u64,
    /// `super_block.s_dev` in the kernel's encoding (`major << 20 | minor`).
    pub dev: u32,
    /// `inode.i_rdev` in the kernel's encoding: which device a character device is.
    pub rdev: u32,
    /// `inode.i_mode`: file type and permissions.
    pub mode: u32,
    /// `file.f_flags`: access mode and `O_NONBLOCK`, `O_APPEND`, ...
    pub flags: u32,
    /// For a pipe or FIFO: how many read ends were open (`pipe_inode_info.readers`).
    pub pipe_readers: u32,
    /// For a pipe or FIFO: how many write ends were open (`pipe_inode_info.writers`).
    pub pipe_writers: u32,
}

/// Key of the per-CPU tally of failed writes: exact totals per process, fd, errno and syscall,
/// kept in the kernel so that they are right even when events are dropped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FailureKey {
    /// Process id.
    pub tgid: u32,
    /// The fd written to.
    pub fd: i32,
    /// The errno the write failed with.
    pub errno: u32,
    /// Which syscall, one of [`syscall`].
    pub syscall: u32,
}

/// Return addresses a call-site fingerprint checks, at most.
pub const FINGERPRINT_FRAMES: usize = 12;

/// Fingerprints kept per (process, syscall pc, first return address).
pub const FINGERPRINT_ALTERNATIVES: usize = 4;

/// A process's syscall instruction: the key of [`FirstReturn`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CallSiteKey {
    pub tgid: u32,
    pub _pad: u32,
    /// The user pc after the syscall instruction (`pt_regs.ip`).
    pub ip: u64,
}

/// Where, from the stack pointer at a syscall instruction, the return address of the function
/// holding it is saved: found by userspace unwinding the first write from there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FirstReturn {
    /// Bytes above the stack pointer.
    pub offset: u32,
    /// Bytes of stack above the stack pointer that hold every return address of every
    /// fingerprint under this pc (read in one go), at most [`FINGERPRINT_SPAN`].
    pub span: u32,
}

/// The most stack a fingerprint spans, from the stack pointer.
pub const FINGERPRINT_SPAN: u32 = 4096;

/// A process's syscall instruction and the first return address above it: the key of
/// [`Fingerprints`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FingerprintKey {
    pub tgid: u32,
    pub _pad: u32,
    pub ip: u64,
    pub first_return: u64,
}

/// A call path, as the return addresses found on the stack at known offsets from the stack
/// pointer (from userspace's unwinding of its first occurrence). A later failed write whose
/// stack holds the same values at the same offsets comes from the same call path: the kernel
/// counts it under `site` instead of sending it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint {
    /// The call site's id, given by userspace; 0 for an unused entry.
    pub site: u32,
    /// Entries of `offsets` and `values` in use.
    pub frames: u32,
    /// Bytes above the stack pointer.
    pub offsets: [u32; FINGERPRINT_FRAMES],
    pub values: [u64; FINGERPRINT_FRAMES],
}

/// The call paths known through one first return address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fingerprints {
    pub alternatives: [Fingerprint; FINGERPRINT_ALTERNATIVES],
}

/// Failed writes counted at their call site: per process, fd, errno, syscall and site.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SiteKey {
    pub tgid: u32,
    pub fd: i32,
    pub errno: u32,
    pub syscall: u32,
    pub site: u32,
    pub _pad: u32,
}

/// How many failed writes a call site had since its first report, and when (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteCount {
    pub count: u64,
    /// `bpf_ktime_get_ns()` of the first and the last.
    pub first_ns: u64,
    pub last_ns: u64,
}

/// Where a Go process keeps its current goroutine: found by userspace in the binary (its
/// DWARF, or a table keyed by its Go version) and handed to the kernel program per process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoLayout {
    /// Offset of the current `g` pointer from the thread pointer (FS base): -8 for most
    /// binaries, elsewhere when C code linked in has thread-locals of its own.
    pub tls_offset: i64,
    /// `runtime.g.goid`.
    pub g_goid: u32,
    /// `runtime.g.m`.
    pub g_m: u32,
    /// `runtime.g.stack.lo`.
    pub g_stack_lo: u32,
    /// `runtime.g.stack.hi`.
    pub g_stack_hi: u32,
    /// `runtime.g.atomicstatus`.
    pub g_status: u32,
    /// `runtime.g.gopc`: the pc of the `go` statement that created the goroutine.
    pub g_gopc: u32,
    /// `runtime.g.parentGoid`, when [`go_flags::HAS_PARENT_GOID`] is set (Go 1.21+).
    pub g_parent_goid: u32,
    /// `runtime.m.curg`: the goroutine an OS thread runs (also while on its system stack).
    pub m_curg: u32,
    /// Bits from [`go_flags`].
    pub flags: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// Bits of [`GoLayout::flags`] and [`Goroutine::flags`].
pub mod go_flags {
    /// The layout has `parentGoid`.
    pub const HAS_PARENT_GOID: u32 = 1 << 0;
    /// The goroutine was found: `goid`, `status`, `gopc` are valid.
    pub const FOUND: u32 = 1 << 1;
    /// The thread's stack pointer lies inside the stack of the `g` found in TLS: that `g` is
    /// the one running (the cross-check of the TLS slot).
    pub const STACK_OWNED: u32 = 1 << 2;
    /// The thread was on its system stack (`g0`, running C or the runtime); the goroutine is
    /// `m.curg`.
    pub const ON_SYSTEM_STACK: u32 = 1 << 3;
    /// The process is a Go process the kernel program was told about.
    pub const GO_PROCESS: u32 = 1 << 4;
}

/// The goroutine behind a failed write, read in the kernel at event time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Goroutine {
    /// Bits from [`go_flags`].
    pub flags: u32,
    /// `g.atomicstatus` (2 running, 3 syscall, 4 waiting, ...).
    pub status: u32,
    /// The thread pointer (FS base).
    pub fsbase: u64,
    /// The `g` in the thread's TLS slot.
    pub g: u64,
    /// Its stack bounds, for the ownership check.
    pub stack_lo: u64,
    pub stack_hi: u64,
    /// The goroutine: `m.curg`, or `g` itself.
    pub goroutine: u64,
    /// Its id.
    pub goid: u64,
    /// Its parent's id (0 when unknown).
    pub parent_goid: u64,
    /// The pc of the `go` statement that created it.
    pub gopc: u64,
}

/// One write-family syscall that failed with a watched errno, or returned after blocking, with
/// everything userspace needs to name its fd, its peers and its call stack.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WriteRecord {
    /// [`record_kind::FAILED_WRITE`] or [`record_kind::BLOCKED_WRITE`].
    pub kind: u32,
    /// Which syscall, one of [`syscall`].
    pub syscall: u32,
    /// `bpf_ktime_get_ns()` at syscall exit (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Process id.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// The thread's command name, NUL-padded.
    pub comm: [u8; TASK_COMM_LEN],
    /// The fd argument.
    pub fd: i64,
    /// Bytes the caller asked to write (summed over the iovecs for vectored writes).
    pub count: u64,
    /// The syscall's return value: a negative errno, or the bytes written.
    pub ret: i64,
    /// Bits from [`write_flags`].
    pub flags: u32,
    /// Bytes of `stack` that hold user memory.
    pub stack_len: u32,
    /// What the fd pointed at, when `flags` has [`write_flags::FILE_VALID`].
    pub file: OpenFile,
    /// Bytes of `regs` that hold the task's `struct pt_regs`.
    pub regs_len: u32,
    /// For a [`record_kind::BLOCKED_WRITE`]: one of [`blocked_state`].
    pub blocked: u32,
    /// For a [`record_kind::BLOCKED_WRITE`]: from the first time it blocked to its return.
    pub blocked_ns: u64,
    /// Raw copy of the task's saved user registers (`struct pt_regs`); userspace reads it with
    /// the same BTF offsets the kernel program was given.
    pub regs: [u64; REGS_COPY_WORDS],
    /// The goroutine, for a Go process.
    pub go: Goroutine,
    /// With [`write_flags::G_SNAPSHOT`]: the start of the running `g`, copied at event time.
    pub g_snapshot: [u8; G_SNAPSHOT_BYTES],
    /// User address of `stack[0]`: the start of the page holding the stack pointer.
    pub stack_base: u64,
    /// Copy of the user stack from `stack_base` upwards.
    pub stack: [u8; STACK_COPY_BYTES],
}

/// Number of slots for writes blocked right now; a power of two (slot = tid % BLOCKED_SLOTS).
pub const BLOCKED_SLOTS: u32 = 8192;

/// A write that blocked and has not returned yet: written by the scheduler program when the
/// writing thread first sleeps in it, cleared when the syscall returns. Userspace reads these
/// slots (the map is memory-mapped) to report writes stuck for longer than the slow threshold,
/// while they are still stuck.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BlockedWrite {
    /// The blocked thread; 0 for a free slot. Written last when the slot is filled.
    pub tid: u32,
    /// Its process.
    pub tgid: u32,
    /// Increases with every write recorded in the slot, so that userspace's mark below is
    /// never mistaken for one on a later write.
    pub seq: u32,
    /// Set by userspace to `seq` once it has reported this write stuck: its return is then
    /// reported as resumed.
    pub reported_seq: u32,
    /// When the write first blocked (`bpf_ktime_get_ns()`).
    pub since_ns: u64,
    /// Which syscall, one of [`syscall`].
    pub syscall: u32,
    /// The fd argument.
    pub fd: i32,
    /// Bytes asked for (the count argument; iovec count for vectored writes).
    pub count: u64,
    /// The thread's command name, NUL-padded.
    pub comm: [u8; TASK_COMM_LEN],
    /// Bytes of `regs` that hold the task's `struct pt_regs`.
    pub regs_len: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// The user registers at the syscall (the stack itself is read from `/proc/PID/mem` while
    /// the thread is still blocked: nothing changes it).
    pub regs: [u64; REGS_COPY_WORDS],
    /// The goroutine, for a Go process.
    pub go: Goroutine,
}

/// The state of a pipe, read by the inspection program from the kernel's `pipe_inode_info`
/// without opening either end of the pipe.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipeState {
    /// 1 when the fields below were read.
    pub valid: u32,
    /// 1 when more slots were in use than the program sums: `queued` is a lower bound.
    pub partial: u32,
    /// Slots a writer may fill (`max_usage`); times the page size is the capacity in bytes.
    pub max_usage: u32,
    /// Slots in use (`head - tail`).
    pub used: u32,
    /// Bytes written and not yet read.
    pub queued: u64,
    /// Open read ends.
    pub readers: u32,
    /// Open write ends.
    pub writers: u32,
}

/// A thread's state, read by the inspection program through a pidfd of the thread: for a
/// writer that was already blocked when stdtrace started.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ThreadState {
    /// 1 when the fields below were read.
    pub valid: u32,
    /// `task_struct.__state`.
    pub state: u32,
    /// Bytes of `regs` that hold the thread's `struct pt_regs`.
    pub regs_len: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// When the thread last got a CPU (sched clock): about when it went to sleep.
    pub last_arrival: u64,
    /// When stdtrace itself last got a CPU (sched clock): about now, on that clock.
    pub own_arrival: u64,
    /// `bpf_ktime_get_ns()` now.
    pub now_ns: u64,
    /// The thread pointer (FS base).
    pub fsbase: u64,
    /// The thread's saved user registers.
    pub regs: [u64; REGS_COPY_WORDS],
}

/// A traced process called `execve`: userspace drops what it knew of its old address space.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessExec {
    /// Always [`record_kind::PROCESS_EXEC`].
    pub kind: u32,
    /// Process id.
    pub tgid: u32,
    /// `bpf_ktime_get_ns()` at the exec.
    pub ts_ns: u64,
    /// The new command name, NUL-padded.
    pub comm: [u8; TASK_COMM_LEN],
}

/// A traced process ended (its last thread exited).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessExit {
    /// Always [`record_kind::PROCESS_EXIT`].
    pub kind: u32,
    /// Process id.
    pub tgid: u32,
    /// `bpf_ktime_get_ns()` at the exit.
    pub ts_ns: u64,
    /// `task_struct.exit_code`: the wait status (`code << 8`, or the killing signal number).
    pub exit_code: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// A SIGPIPE for a traced process: generated (by a write to a pipe with no reader, or sent by
/// a process), or delivered (about to run a handler, or the default action).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SigpipeRecord {
    /// [`record_kind::SIGPIPE_GENERATED`] or [`record_kind::SIGPIPE_DELIVERED`].
    pub kind: u32,
    /// The process the signal is for.
    pub tgid: u32,
    /// Its thread.
    pub tid: u32,
    /// Who generated it (for a broken pipe: the writer itself).
    pub sender_tgid: u32,
    pub sender_tid: u32,
    /// `si_code` as the kernel's tracepoint reports it (`SI_USER` 0, `SI_KERNEL` 0x80,
    /// `SI_TKILL` -6, ...).
    pub code: i32,
    /// For a generated signal, the kernel's result (0 delivered, 1 ignored, 2 already pending).
    pub result: i32,
    /// 1 when SIGPIPE is blocked in the thread's signal mask.
    pub blocked: u32,
    /// 1 when the sender was in a write-family syscall: the signal comes from a broken pipe.
    pub from_write: u32,
    /// For a broken pipe: the fd of the write.
    pub fd: i32,
    /// The disposition: 0 default (terminate), 1 ignore, else the handler's address.
    pub handler: u64,
    /// `bpf_ktime_get_ns()`.
    pub ts_ns: u64,
    /// The sender's command name.
    pub sender_comm: [u8; TASK_COMM_LEN],
}

/// The last reader of a pipe, gone: it exited, or closed its read end.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderGone {
    /// Its process.
    pub tgid: u32,
    /// 1: it exited; 2: it closed the read end.
    pub how: u32,
    /// When (`bpf_ktime_get_ns()`).
    pub ts_ns: u64,
    /// When it exited, if it has (after closing the read end, or by exiting); 0 if not.
    pub exit_ts_ns: u64,
    /// Its command name.
    pub comm: [u8; TASK_COMM_LEN],
}

const _: () = {
    assert!(core::mem::size_of::<KernelLayout>() == 48 * 4);
    assert!(core::mem::size_of::<TracerConfig>() == 8 + 32 + 8 + 48 * 4);
    assert!(core::mem::size_of::<OpenFile>() == 32);
    assert!(core::mem::size_of::<FailureKey>() == 16);
    assert!(
        core::mem::size_of::<WriteRecord>()
            == 8 + 8
                + 8
                + 16
                + 8
                + 8
                + 8
                + 8
                + 32
                + 16
                + REGS_COPY_WORDS * 8
                + 72
                + G_SNAPSHOT_BYTES
                + 8
                + STACK_COPY_BYTES
    );
    assert!(core::mem::size_of::<ProcessExec>() == 32);
    assert!(core::mem::size_of::<ProcessExit>() == 24);
    assert!(core::mem::size_of::<SigpipeRecord>() == 72);
    assert!(core::mem::size_of::<ReaderGone>() == 40);
    assert!(core::mem::size_of::<GoLayout>() == 48);
    assert!(core::mem::size_of::<BlockedWrite>() == 64 + REGS_COPY_WORDS * 8 + 72);
    assert!(core::mem::size_of::<Goroutine>() == 72);
    assert!(core::mem::size_of::<PipeState>() == 32);
    assert!(core::mem::size_of::<ThreadState>() == 48 + REGS_COPY_WORDS * 8);
    assert!(core::mem::size_of::<ParkedKey>() == 16);
    assert!(core::mem::size_of::<CallSiteKey>() == 16);
    assert!(core::mem::size_of::<FirstReturn>() == 8);
    assert!(core::mem::size_of::<FingerprintKey>() == 24);
    assert!(core::mem::size_of::<Fingerprint>() == 8 + FINGERPRINT_FRAMES * 12);
    assert!(core::mem::size_of::<SiteKey>() == 24);
    assert!(core::mem::size_of::<SiteCount>() == 24);
    assert!(core::mem::size_of::<ParkedWrite>() == 32);
};

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: all of these are `#[repr(C)]`, made only of integers and arrays of integers, with
    // no implicit padding (checked by the size assertions above): every bit pattern is valid.
    unsafe impl aya::Pod for TracerConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FailureKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for GoLayout {}
    // SAFETY: as above.
    unsafe impl aya::Pod for BlockedWrite {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PipeState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ThreadState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ParkedKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ReaderGone {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ParkedWrite {}
    // SAFETY: as above.
    unsafe impl aya::Pod for CallSiteKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FirstReturn {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FingerprintKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Fingerprints {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SiteKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SiteCount {}
}
