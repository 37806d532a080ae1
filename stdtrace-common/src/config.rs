//! What userspace writes into the programs' read-only data before loading them: what to
//! trace, and where the kernel structs the programs read keep their members.

/// Highest errno (exclusive) the kernel filter can watch.
pub const MAX_ERRNO: u32 = 256;

/// Deepest cgroup v2 level (the root is level 0) a watched container's cgroup may sit at.
pub const MAX_CGROUP_LEVEL: u32 = 12;

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
    /// `pt_regs.r10`: a syscall's fourth argument (the flags of `sendto` and `sendmmsg`).
    pub pt_regs_r10: u32,
    /// `socket_alloc.vfs_inode`: where a socket's inode sits after its `struct socket`.
    pub socket_alloc_inode: u32,
    /// `socket.sk`.
    pub socket_sk: u32,
    /// `sock.sk_receive_queue.qlen`.
    pub sock_receive_qlen: u32,
    /// `sock.sk_max_ack_backlog`.
    pub sock_max_ack_backlog: u32,
    /// `sock.sk_rcvbuf`.
    pub sock_rcvbuf: u32,
    /// `sock.sk_sndbuf`.
    pub sock_sndbuf: u32,
    /// `sock.sk_wmem_queued`.
    pub sock_wmem_queued: u32,
    /// `sock.sk_wmem_alloc`.
    pub sock_wmem_alloc: u32,
    /// `sock.sk_backlog.rmem_alloc` (`sk_rmem_alloc`).
    pub sock_rmem_alloc: u32,
    /// `task_struct.mm`.
    pub task_mm: u32,
    /// `mm_struct.exe_file`.
    pub mm_exe_file: u32,
    /// `mm_struct.start_code`.
    pub mm_start_code: u32,
    /// `mm_struct.end_code`.
    pub mm_end_code: u32,
    /// `mm_struct.mmap_base`.
    pub mm_mmap_base: u32,
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
    /// Bit `n` set: processes whose cgroup v2 ancestor at level `n` is in the `CGROUPS` map
    /// are traced too (`--container`, `--pod`, `--namespace`). 0: no cgroup is watched.
    pub cgroup_levels: u32,
    /// Explicit padding.
    pub _pad: u32,
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
            pt_regs_r10: 0,
            socket_alloc_inode: 0,
            socket_sk: 0,
            sock_receive_qlen: 0,
            sock_max_ack_backlog: 0,
            sock_rcvbuf: 0,
            sock_sndbuf: 0,
            sock_wmem_queued: 0,
            sock_wmem_alloc: 0,
            sock_rmem_alloc: 0,
            task_mm: 0,
            mm_exe_file: 0,
            mm_start_code: 0,
            mm_end_code: 0,
            mm_mmap_base: 0,
        },
        cgroup_levels: 0,
        _pad: 0,
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

    /// Watches the cgroups at `level` (1 to [`MAX_CGROUP_LEVEL`]); false (and nothing changed)
    /// for a level outside that range.
    pub fn watch_cgroup_level(&mut self, level: u32) -> bool {
        if level == 0 || level > MAX_CGROUP_LEVEL {
            return false;
        }
        self.cgroup_levels |= 1 << level;
        true
    }
}

const _: () = {
    assert!(core::mem::size_of::<KernelLayout>() == 62 * 4);
    assert!(core::mem::size_of::<TracerConfig>() == 8 + 32 + 8 + 62 * 4 + 8);
};

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, made only of integers and arrays of integers, with no implicit
    // padding (checked by the size assertions above): every bit pattern is valid.
    unsafe impl aya::Pod for super::TracerConfig {}
}
