//! Which binary a process runs, and the bases its code addresses are taken relative to, so
//! that the same call path in two processes of one binary has the same addresses.
//!
//! Under ASLR every process of a binary has its executable and its libraries at other places.
//! The executable's code is at a fixed distance from `mm->start_code`; shared libraries are
//! mapped top-down from `mm->mmap_base` in the order the dynamic loader asks for them, which
//! for one binary and its libraries is the same every time. An address is therefore
//! normalized to its offset from one of the two. A process whose libraries landed elsewhere
//! (another `LD_LIBRARY_PATH`, a `dlopen` in another order) just does not match: its first
//! failure is sent in full, as for a new binary.

/// Marks an offset from `start_code` (the executable's code).
pub const EXE_TAG: u64 = 1 << 62;

/// Marks an offset below `mmap_base` (shared libraries, the loader, the vDSO).
pub const MMAP_TAG: u64 = 1 << 61;

/// A process's binary (the device and inode of `mm->exe_file`) and its code's bases.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ImageBases {
    /// `super_block.s_dev` of the executable's inode (the kernel's `dev_t`).
    pub dev: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// The executable's inode number; 0 when unknown (a kernel thread, an unreadable mm).
    pub ino: u64,
    /// `mm->start_code`: the start of the executable's code.
    pub start_code: u64,
    /// `mm->end_code`: its end.
    pub end_code: u64,
    /// `mm->mmap_base`: where top-down mappings start.
    pub mmap_base: u64,
}

impl ImageBases {
    /// `address` as the same number in every process of this binary.
    #[inline(always)]
    pub fn normalize(&self, address: u64) -> u64 {
        if self.start_code <= address && address < self.end_code {
            (address - self.start_code) | EXE_TAG
        } else {
            self.mmap_base.wrapping_sub(address) ^ MMAP_TAG
        }
    }
}

/// A binary: the device and inode of an executable (the value of the kernel's map of
/// processes with entries, so that a process's exit names its binary on every kernel).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExecutableId {
    /// `super_block.s_dev` of the executable's inode.
    pub dev: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// The executable's inode number; 0 when unknown.
    pub ino: u64,
}

const _: () = {
    assert!(core::mem::size_of::<ImageBases>() == 40);
    assert!(core::mem::size_of::<ExecutableId>() == 16);
};

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, made only of integers, with no implicit padding (checked by the
    // size assertion above): every bit pattern is valid.
    unsafe impl aya::Pod for super::ImageBases {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExecutableId {}
}
