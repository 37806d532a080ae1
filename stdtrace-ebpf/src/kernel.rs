//! Reads of kernel structs at the offsets userspace found in the running kernel's BTF.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_user};
use stdtrace_common::{KernelLayout, OpenFile};

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read<T>(base: u64, offset: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copies without faulting; a bad address is an error.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }.ok()
}

/// Reads a `T` at `base + offset` (a signed offset) in the current task's user memory.
#[inline(always)]
pub fn read_user<T>(base: u64, offset: i64) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_user copies without faulting; a bad address is an error.
    unsafe { bpf_probe_read_user(base.wrapping_add(offset as u64) as *const T) }.ok()
}

/// The current task, as an address for [`read`].
#[inline(always)]
pub fn current_task() -> u64 {
    // SAFETY: a plain helper call with no arguments.
    unsafe { bpf_get_current_task() }
}

/// Follows `task->files->fdt->fd[fd]->f_inode`; returns the file and the inode.
#[inline(always)]
pub fn fd_inode(layout: &KernelLayout, task: u64, fd: i32) -> Option<(u64, u64)> {
    if fd < 0 {
        return None;
    }
    let files: u64 = read(task, layout.task_files)?;
    let fdt: u64 = read(files, layout.files_fdt)?;
    let max_fds: u32 = read(fdt, layout.fdtable_max_fds)?;
    if fd as u32 >= max_fds {
        return None;
    }
    let fd_array: u64 = read(fdt, layout.fdtable_fd)?;
    let file: u64 = read(fd_array, fd as u32 * 8)?;
    let inode: u64 = read(file, layout.file_inode)?;
    Some((file, inode))
}

/// Describes the inode behind `fd`; the flag says whether the pipe end counts were read (a
/// pipe or FIFO).
#[inline(always)]
pub fn open_file(layout: &KernelLayout, task: u64, fd: i32) -> Option<(OpenFile, bool)> {
    let (file, inode) = fd_inode(layout, task, fd)?;
    let flags: u32 = read(file, layout.file_flags)?;
    let mode: u16 = read(inode, layout.inode_mode)?;
    let ino: u64 = read(inode, layout.inode_ino)?;
    let rdev: u32 = read(inode, layout.inode_rdev)?;
    let sb: u64 = read(inode, layout.inode_sb)?;
    let dev: u32 = read(sb, layout.super_block_dev)?;
    let mut file = OpenFile {
        ino,
        dev,
        rdev,
        mode: mode as u32,
        flags,
        pipe_readers: 0,
        pipe_writers: 0,
    };
    if mode as u32 & S_IFMT == S_IFIFO
        && let Some(pipe) = read::<u64>(inode, layout.inode_pipe)
        && let (Some(readers), Some(writers)) = (
            read::<u32>(pipe, layout.pipe_readers),
            read::<u32>(pipe, layout.pipe_writers),
        )
    {
        file.pipe_readers = readers;
        file.pipe_writers = writers;
        return Some((file, true));
    }
    Some((file, false))
}

const S_IFMT: u32 = 0o170000;
const S_IFIFO: u32 = 0o010000;
