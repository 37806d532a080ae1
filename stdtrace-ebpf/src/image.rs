//! The current process's binary and code bases ([`ImageBases`]), read from its `mm_struct`:
//! what call sites are keyed by, so that every process of a binary shares them.

use stdtrace_common::ImageBases;

use crate::{
    config::layout_field,
    kernel::{current_task, read},
};

/// The current task's `mm`; `None` for a kernel thread.
#[inline(always)]
pub fn current_mm() -> Option<u64> {
    read::<u64>(current_task(), layout_field!(task_mm)).filter(|mm| *mm != 0)
}

/// The image of `mm`; its `ino` is 0 when the executable could not be read.
#[inline(always)]
pub fn of_mm(mm: u64) -> ImageBases {
    let inode = read::<u64>(mm, layout_field!(mm_exe_file))
        .and_then(|file| read::<u64>(file, layout_field!(file_inode)))
        .unwrap_or(0);
    let dev = read::<u64>(inode, layout_field!(inode_sb))
        .and_then(|sb| read::<u32>(sb, layout_field!(super_block_dev)))
        .unwrap_or(0);
    ImageBases {
        dev,
        _pad: 0,
        ino: read::<u64>(inode, layout_field!(inode_ino)).unwrap_or(0),
        start_code: read::<u64>(mm, layout_field!(mm_start_code)).unwrap_or(0),
        end_code: read::<u64>(mm, layout_field!(mm_end_code)).unwrap_or(0),
        mmap_base: read::<u64>(mm, layout_field!(mm_mmap_base)).unwrap_or(0),
    }
}

/// The current process's image, for a record sent in full (uncached: that path copies 16 KiB
/// anyway).
#[inline(always)]
pub fn current() -> ImageBases {
    current_mm().map(of_mm).unwrap_or_default()
}
