//! The kernel's reads of a task: kernel structs at the offsets userspace found in the running
//! kernel's BTF, the task's saved user registers (`struct pt_regs`), what its fds point at, and
//! its user memory (for the goroutine walk). Every program reads registers and fds through here.

use aya_ebpf::helpers::{
    bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_user,
    generated::{self, bpf_get_current_task_btf, bpf_task_pt_regs},
};
use stdtrace_common::{GoLayout, GoMemory, Goroutine, KernelLayout, OpenFile, REGS_COPY_WORDS};

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

/// The address of the current task's saved user registers.
#[inline(always)]
pub fn user_registers() -> u64 {
    // SAFETY: plain helper calls; bpf_task_pt_regs takes the trusted task pointer the other
    // helper returns and gives the address of its saved user registers.
    unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) as u64 }
}

/// The saved user register at `offset` (a `struct pt_regs` member's offset, from BTF) of
/// `regs`, the non-null address [`user_registers`] gave, loaded directly.
#[inline(always)]
pub fn user_register(regs: u64, offset: u32) -> u64 {
    // SAFETY: `regs` is the task's `struct pt_regs` (a BTF pointer the verifier checks the load
    // against); `offset` is a member's offset from BTF, a constant to it.
    unsafe { *((regs as *const u8).add(offset as usize) as *const u64) }
}

/// The syscall's fd argument, from the saved registers at `regs`.
#[inline(always)]
pub fn read_fd(layout: &KernelLayout, regs: u64) -> i32 {
    match read::<u64>(regs, layout.pt_regs_di) {
        // The kernel declares the fd `unsigned int`; the register holds it zero-extended.
        Some(di) => di as u32 as i32,
        None => -1,
    }
}

/// Copies the `struct pt_regs` at `regs` (kernel memory) into `out`; returns the bytes copied,
/// 0 when they could not be read.
///
/// # Safety
/// `out` must point at a writable array.
#[inline(always)]
pub unsafe fn copy_registers(
    layout: &KernelLayout,
    regs: u64,
    out: *mut [u64; REGS_COPY_WORDS],
) -> u32 {
    let size = layout.pt_regs_size as usize;
    let size = if size > REGS_COPY_WORDS * 8 {
        REGS_COPY_WORDS * 8
    } else {
        size
    };
    // SAFETY: the destination is `out`, at least `size` bytes long (caller's contract);
    // bpf_probe_read_kernel faults safely on a bad address.
    let copied = size > 0
        && unsafe { generated::bpf_probe_read_kernel(out.cast(), size as u32, regs as *const _) }
            == 0;
    if copied { size as u32 } else { 0 }
}

/// The current task's user memory, read with `bpf_probe_read_user`: what the goroutine walk
/// reads in the kernel.
pub struct CurrentUserMemory;

impl GoMemory for CurrentUserMemory {
    #[inline(always)]
    fn word(&self, address: u64) -> Option<u64> {
        // SAFETY: bpf_probe_read_user copies without faulting; a bad address is an error.
        unsafe { bpf_probe_read_user(address as *const u64) }.ok()
    }

    #[inline(always)]
    fn u32(&self, address: u64) -> Option<u32> {
        // SAFETY: as above.
        unsafe { bpf_probe_read_user(address as *const u32) }.ok()
    }
}

/// The goroutine the current thread runs, in a Go process laid out as `go_layout`; `sp` is
/// its user stack pointer.
#[inline(always)]
pub fn current_goroutine(layout: &KernelLayout, go_layout: &GoLayout, sp: u64) -> Goroutine {
    let fsbase = read::<u64>(current_task(), layout.task_fsbase).unwrap_or(0);
    Goroutine::walk(&CurrentUserMemory, go_layout, fsbase, sp)
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
