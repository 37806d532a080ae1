//! The last reader of a pipe, remembered when it goes away: a writer whose write then gets
//! EPIPE (or is killed by SIGPIPE) is told who held the read end, though that process is gone.
//!
//! A reader goes away by exiting (its fds close in `exit_files`, after the exit tracepoint,
//! so its fd table is still there to read) or by closing the read end. Only the last read end
//! counts (the pipe's `readers` is 1 when it goes).

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::TracePointContext,
};
use stdtrace_common::{KernelLayout, ReaderGone, reader_gone};

use crate::{
    config, kernel,
    maps::{LAST_READERS, READER_WATCH, READERS_CLOSED, is_target},
};

const S_IFMT: u16 = 0o170000;
const S_IFIFO: u16 = 0o010000;
const FMODE_READ: u32 = 1;

/// Fds looked at in an exiting process's table.
const MAX_FDS: u32 = 64;

/// Whether this process's pipe reads are remembered.
#[inline(always)]
pub fn watched(tgid: u32) -> bool {
    if tgid == config::self_tgid() {
        return false;
    }
    if !config::targets_only() {
        return true;
    }
    // SAFETY: only the presence of the key is used.
    is_target(tgid) || unsafe { READER_WATCH.get(&tgid) }.is_some()
}

/// If `file` is the last read end of a pipe, remembers that `tgid` let it go; returns the
/// pipe's inode number if so.
#[inline(always)]
fn remember(layout: &KernelLayout, file: u64, tgid: u32, how: u32, now: u64) -> Option<u64> {
    let mode = kernel::read::<u32>(file, layout.file_mode)?;
    if mode & FMODE_READ == 0 {
        return None;
    }
    let inode = kernel::read::<u64>(file, layout.file_inode)?;
    let i_mode = kernel::read::<u16>(inode, layout.inode_mode)?;
    if i_mode & S_IFMT != S_IFIFO {
        return None;
    }
    let readers = kernel::read::<u64>(inode, layout.inode_pipe)
        .and_then(|pipe| kernel::read::<u32>(pipe, layout.pipe_readers))
        .unwrap_or(0);
    if readers > 1 {
        return None;
    }
    let ino = kernel::read::<u64>(inode, layout.inode_ino)?;
    let gone = ReaderGone {
        tgid,
        how,
        ts_ns: now,
        exit_ts_ns: if how == reader_gone::EXITED { now } else { 0 },
        comm: bpf_get_current_comm().unwrap_or_default(),
    };
    let _ = LAST_READERS.insert(&ino, &gone, 0);
    Some(ino)
}

/// A process that closed the last read end of a pipe earlier is exiting now: its exit is
/// added to what is remembered of it, if it still is the pipe's last reader.
#[inline(always)]
fn closed_then_exited(tgid: u32, now: u64) {
    // SAFETY: the value is copied out at once.
    let Some(ino) = (unsafe { READERS_CLOSED.get(&tgid) }).copied() else {
        return;
    };
    let _ = READERS_CLOSED.remove(&tgid);
    if let Some(gone) = LAST_READERS.get_ptr_mut(&ino) {
        // SAFETY: a map value pointer, valid in this program; a racing update of the same
        // entry at worst loses this exit time.
        unsafe {
            if (*gone).tgid == tgid && (*gone).exit_ts_ns == 0 {
                (*gone).exit_ts_ns = now;
            }
        }
    }
}

/// The process is exiting: every pipe it is the last reader of loses it.
#[inline(always)]
pub fn on_process_exit(tgid: u32) {
    if !watched(tgid) {
        return;
    }
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    closed_then_exited(tgid, now);
    let layout = config::layout();
    let task = kernel::current_task();
    let Some(fdt) = kernel::read::<u64>(task, layout.task_files)
        .and_then(|files| kernel::read::<u64>(files, layout.files_fdt))
    else {
        return;
    };
    let (Some(max_fds), Some(fd_array)) = (
        kernel::read::<u32>(fdt, layout.fdtable_max_fds),
        kernel::read::<u64>(fdt, layout.fdtable_fd),
    ) else {
        return;
    };
    for fd in 0..MAX_FDS {
        if fd >= max_fds {
            break;
        }
        if let Some(file) = kernel::read::<u64>(fd_array, fd * 8)
            && file != 0
        {
            remember(&layout, file, tgid, reader_gone::EXITED, now);
        }
    }
}

/// `syscalls:sys_enter_close`:
///
/// ```text
///     field:int __syscall_nr;  offset:8;  size:4; signed:1;
///     field:unsigned int fd;   offset:16; size:8; signed:0;
/// ```
#[inline(always)]
pub fn on_close(ctx: &TracePointContext) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !watched(tgid) {
        return;
    }
    // SAFETY: `fd` is at offset 16 of the record (format above); direct reads of a
    // tracepoint's record are allowed.
    let fd = unsafe { *(ctx.as_ptr().add(16) as *const u64) } as u32 as i32;
    let layout = config::layout();
    if let Some((file, _)) = kernel::fd_inode(&layout, kernel::current_task(), fd) {
        // SAFETY: plain helper call.
        let now = unsafe { bpf_ktime_get_ns() };
        if let Some(ino) = remember(&layout, file, tgid, reader_gone::CLOSED, now) {
            let _ = READERS_CLOSED.insert(&tgid, &ino, 0);
        }
    }
}
