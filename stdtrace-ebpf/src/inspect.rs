//! On-demand inspection, run by userspace with `BPF_PROG_TEST_RUN` (never attached): reads a
//! pipe's state from the kernel's `pipe_inode_info`, a socket's from its `struct sock`, a
//! blocked thread's registers.
//!
//! Userspace opens `/proc/PID/fd/N` with `O_PATH`, which reaches the pipe's inode without
//! opening either end (so EOF and EPIPE stay as they are for the real readers and writers), and
//! passes its own fd as the first argument. The program runs in stdtrace's context, follows
//! that fd to the inode and its pipe, and leaves what it read in `INSPECTED`.

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::RawTracePointContext};
use stdtrace_common::{
    PipeState, PtyState, SocketState, ThreadState, TtyLayout,
    pty::{DEVPTS_SUPER_MAGIC, N_TTY},
};

use crate::{
    config, kernel,
    maps::{INSPECTED, INSPECTED_PTY, INSPECTED_SOCKET, INSPECTED_THREAD, TTY_LAYOUT},
};

/// Ring slots summed at most (a 1 MiB pipe has 256).
const MAX_SLOTS: u32 = 256;

#[inline(always)]
pub fn inspect_pipe(ctx: &RawTracePointContext) {
    let fd: u64 = ctx.arg(0);
    let Some(out) = INSPECTED.get_ptr_mut(0) else {
        return;
    };
    let state = read_pipe(fd as i32).unwrap_or_default();
    // SAFETY: the single slot of an array map, written only by this program, run only by
    // userspace one run at a time.
    unsafe { *out = state };
}

#[inline(always)]
fn read_pipe(fd: i32) -> Option<PipeState> {
    let layout = config::layout();
    let (_, inode) = kernel::fd_inode(&layout, kernel::current_task(), fd)?;
    let pipe: u64 = kernel::read(inode, layout.inode_pipe)?;
    let head: u32 = kernel::read(pipe, layout.pipe_head)?;
    let tail: u32 = kernel::read(pipe, layout.pipe_tail)?;
    let max_usage: u32 = kernel::read(pipe, layout.pipe_max_usage)?;
    let ring_size: u32 = kernel::read(pipe, layout.pipe_ring_size)?;
    let bufs: u64 = kernel::read(pipe, layout.pipe_bufs)?;
    let used = head.wrapping_sub(tail);
    let mut queued = 0u64;
    let mask = ring_size.wrapping_sub(1);
    for i in 0..MAX_SLOTS {
        if i >= used {
            break;
        }
        let slot = tail.wrapping_add(i) & mask;
        let at = bufs + slot as u64 * layout.pipe_buffer_size as u64;
        queued += kernel::read::<u32>(at, layout.pipe_buffer_len).unwrap_or(0) as u64;
    }
    Some(PipeState {
        valid: 1,
        partial: u32::from(used > MAX_SLOTS),
        max_usage,
        used,
        queued,
        readers: kernel::read(pipe, layout.pipe_readers)?,
        writers: kernel::read(pipe, layout.pipe_writers)?,
    })
}

/// Reads a socket's queues and buffers from its `struct sock`: the first argument is an
/// `O_PATH` handle on the socket's inode (one of stdtrace's own descriptors), which neither
/// opens nor joins the socket. The inode sits in a `struct socket_alloc` after its socket.
#[inline(always)]
pub fn inspect_socket(ctx: &RawTracePointContext) {
    let fd: u64 = ctx.arg(0);
    let Some(out) = INSPECTED_SOCKET.get_ptr_mut(0) else {
        return;
    };
    let state = read_socket(fd as i32).unwrap_or_default();
    // SAFETY: the single slot of an array map, written only by this program, run only by
    // userspace one run at a time.
    unsafe { *out = state };
}

#[inline(always)]
fn read_socket(fd: i32) -> Option<SocketState> {
    let layout = config::layout();
    let (_, inode) = kernel::fd_inode(&layout, kernel::current_task(), fd)?;
    let socket = inode.checked_sub(layout.socket_alloc_inode as u64)?;
    let sock: u64 = kernel::read(socket, layout.socket_sk)?;
    Some(SocketState {
        valid: 1,
        receive_queued: kernel::read(sock, layout.sock_receive_qlen)?,
        max_ack_backlog: kernel::read(sock, layout.sock_max_ack_backlog)?,
        rcvbuf: kernel::read(sock, layout.sock_rcvbuf)?,
        sndbuf: kernel::read(sock, layout.sock_sndbuf)?,
        wmem_queued: kernel::read(sock, layout.sock_wmem_queued)?,
        wmem_alloc: kernel::read(sock, layout.sock_wmem_alloc)?,
        rmem_alloc: kernel::read(sock, layout.sock_rmem_alloc)?,
    })
}

/// Flip buffers walked at most (a pty's 8 KiB limit takes a few dozen at 256 bytes each).
const MAX_FLIP_BUFFERS: u32 = 128;

/// Reads a pty's buffers: the first argument is an `O_PATH` handle on a pty slave
/// (`/dev/pts/N`, one of stdtrace's own descriptors), which opens no tty. Its dentry's
/// `d_fsdata` is the slave's `tty_struct`; the slave's writes queue in the flip buffers of the
/// master's port and then in the master's line discipline.
#[inline(always)]
pub fn inspect_pty(ctx: &RawTracePointContext) {
    let fd: u64 = ctx.arg(0);
    let Some(out) = INSPECTED_PTY.get_ptr_mut(0) else {
        return;
    };
    let state = read_pty(fd as i32).unwrap_or_default();
    // SAFETY: the single slot of an array map, written only by this program, run only by
    // userspace one run at a time.
    unsafe { *out = state };
}

#[inline(always)]
fn read_pty(fd: i32) -> Option<PtyState> {
    let layout = config::layout();
    let tty: TtyLayout = *TTY_LAYOUT.get(0)?;
    if tty.valid == 0 {
        return None;
    }
    let (file, _) = kernel::fd_inode(&layout, kernel::current_task(), fd)?;
    let dentry: u64 = kernel::read(file, tty.file_dentry)?;
    let sb: u64 = kernel::read(dentry, tty.dentry_sb)?;
    let magic: u64 = kernel::read(sb, tty.super_block_magic)?;
    if magic != DEVPTS_SUPER_MAGIC {
        return None;
    }
    let slave: u64 = kernel::read(dentry, tty.dentry_fsdata)?;
    let master: u64 = kernel::read(slave, tty.tty_link)?;
    let port: u64 = kernel::read(master, tty.tty_port)?;
    let mut state = PtyState {
        valid: 1,
        index: kernel::read::<i32>(slave, tty.tty_index)? as u32,
        slave_flags: kernel::read(slave, tty.tty_flags)?,
        master_flags: kernel::read(master, tty.tty_flags)?,
        master_count: kernel::read::<i32>(master, tty.tty_count)? as u32,
        mem_used: kernel::read::<i32>(port, tty.port_mem_used)? as u32,
        mem_limit: kernel::read::<i32>(port, tty.port_mem_limit)? as u32,
        ..PtyState::default()
    };
    let mut buffer: u64 = kernel::read(port, tty.port_buf_head)?;
    for _ in 0..MAX_FLIP_BUFFERS {
        if buffer == 0 {
            break;
        }
        let commit: u32 = kernel::read(buffer, tty.buffer_commit).unwrap_or(0);
        let read: u32 = kernel::read(buffer, tty.buffer_read).unwrap_or(0);
        state.flip_queued += commit.saturating_sub(read) as u64;
        state.buffers += 1;
        buffer = kernel::read(buffer, tty.buffer_next).unwrap_or(0);
    }
    state.partial = u32::from(buffer != 0);
    // The master's line discipline: n_tty's read buffer, if it is n_tty.
    let ldisc: u64 = kernel::read(master, tty.tty_ldisc).unwrap_or(0);
    let ops: u64 = kernel::read(ldisc, tty.ldisc_ops).unwrap_or(0);
    let data: u64 = kernel::read(master, tty.tty_disc_data).unwrap_or(0);
    if kernel::read::<i32>(ops, tty.ldisc_ops_num) == Some(N_TTY)
        && let (Some(head), Some(tail)) = (
            kernel::read::<u64>(data, tty.n_tty_read_head),
            kernel::read::<u64>(data, tty.n_tty_read_tail),
        )
    {
        state.ldisc_valid = 1;
        state.ldisc_queued = head.wrapping_sub(tail);
    }
    Some(state)
}

/// Reads the state and saved user registers of the thread behind a pidfd (the first argument,
/// one of stdtrace's own descriptors): `file->private_data` is the thread's `struct pid`, whose
/// task is found through its `pid_links`. The thread's user registers sit at the same offset
/// from the top of its kernel stack as stdtrace's own do from the top of stdtrace's.
#[inline(always)]
pub fn inspect_thread(ctx: &RawTracePointContext) {
    let fd: u64 = ctx.arg(0);
    let Some(out) = INSPECTED_THREAD.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the single slot of an array map, written only by this program, run only by
    // userspace one run at a time.
    unsafe {
        (*out).valid = 0;
        if read_thread(fd as i32, out).is_some() {
            (*out).valid = 1;
        }
    }
}

/// # Safety
/// `out` must point at a writable `ThreadState`.
#[inline(always)]
unsafe fn read_thread(fd: i32, out: *mut ThreadState) -> Option<()> {
    let layout = config::layout();
    let own = kernel::current_task();
    let (file, inode) = kernel::fd_inode(&layout, own, fd)?;
    // pidfs (Linux 6.9+) keeps the pid in the inode; older pidfds in the file.
    let pid = match kernel::read::<u64>(inode, layout.inode_private) {
        Some(pid) if pid != 0 => pid,
        _ => kernel::read(file, layout.file_private_data)?,
    };
    // pid->tasks[PIDTYPE_PID].first: the node in the task's pid_links[PIDTYPE_PID].
    let node: u64 = kernel::read(pid, layout.pid_tasks)?;
    if node == 0 {
        return None;
    }
    let task = node - layout.task_pid_links as u64;
    // SAFETY: `out` is the caller's. The pointer goes through the output map and back: the
    // verifier forbids arithmetic with it, and what comes back is a plain number.
    let own_regs = unsafe {
        core::ptr::write_volatile(&raw mut (*out).last_arrival, kernel::user_registers());
        core::ptr::read_volatile(&raw const (*out).last_arrival)
    };
    let own_stack: u64 = kernel::read(own, layout.task_stack)?;
    let stack: u64 = kernel::read(task, layout.task_stack)?;
    let regs = stack + own_regs.wrapping_sub(own_stack);
    // SAFETY: `out` is the caller's; the copy stays inside its `regs` array.
    unsafe {
        let size = kernel::copy_registers(&layout, regs, &raw mut (*out).regs);
        if size == 0 {
            return None;
        }
        (*out).regs_len = size;
        (*out).state = kernel::read(task, layout.task_state)?;
        (*out).last_arrival = kernel::read(task, layout.task_last_arrival).unwrap_or(0);
        (*out).own_arrival = kernel::read(own, layout.task_last_arrival).unwrap_or(0);
        (*out).fsbase = kernel::read(task, layout.task_fsbase).unwrap_or(0);
        (*out).now_ns = bpf_ktime_get_ns();
    }
    Some(())
}
