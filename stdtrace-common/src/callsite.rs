//! Call sites of failed writes already reported: the fingerprints the kernel recognizes them
//! by, and the counts it keeps of their repeats.

/// Return addresses a call-site fingerprint checks, at most.
pub const FINGERPRINT_FRAMES: usize = 12;

/// Fingerprints kept per (binary, syscall pc, first return address).
pub const FINGERPRINT_ALTERNATIVES: usize = 4;

/// A binary's syscall instruction: the key of [`FirstReturn`]. Keyed by the binary, not the
/// process, so that every process of a binary shares what one of them taught.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CallSiteKey {
    /// The binary's device ([`ImageBases::dev`](crate::ImageBases)).
    pub dev: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// The binary's inode ([`ImageBases::ino`](crate::ImageBases)).
    pub ino: u64,
    /// The user pc after the syscall instruction (`pt_regs.ip`), normalized
    /// ([`ImageBases::normalize`](crate::ImageBases::normalize)).
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

/// A binary's syscall instruction and the first return address above it: the key of
/// [`Fingerprints`]. Addresses are normalized
/// ([`ImageBases::normalize`](crate::ImageBases::normalize)).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FingerprintKey {
    /// The binary's device.
    pub dev: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// The binary's inode.
    pub ino: u64,
    /// The user pc after the syscall instruction (`pt_regs.ip`).
    pub ip: u64,
    /// The return address found at [`FirstReturn::offset`] above the stack pointer.
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
    /// Where each return address is: bytes above the stack pointer.
    pub offsets: [u32; FINGERPRINT_FRAMES],
    /// The return address expected at each offset, normalized.
    pub values: [u64; FINGERPRINT_FRAMES],
}

/// The call paths known through one first return address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fingerprints {
    /// The call paths, in the order userspace learnt them; the first with `site` 0 ends the
    /// list.
    pub alternatives: [Fingerprint; FINGERPRINT_ALTERNATIVES],
}

/// Failed writes counted at their call site: per process, fd, errno, syscall and site.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SiteKey {
    /// Process id.
    pub tgid: u32,
    /// The fd written to.
    pub fd: i32,
    /// The errno the write failed with.
    pub errno: u32,
    /// Which syscall, one of [`syscall`](crate::syscall).
    pub syscall: u32,
    /// The call site's id ([`Fingerprint::site`]).
    pub site: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// How many failed writes a call site had since its first report, and when (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteCount {
    /// Failed writes counted.
    pub count: u64,
    /// `bpf_ktime_get_ns()` of the first.
    pub first_ns: u64,
    /// `bpf_ktime_get_ns()` of the last.
    pub last_ns: u64,
}

const _: () = {
    assert!(core::mem::size_of::<CallSiteKey>() == 24);
    assert!(core::mem::size_of::<FirstReturn>() == 8);
    assert!(core::mem::size_of::<FingerprintKey>() == 32);
    assert!(core::mem::size_of::<Fingerprint>() == 8 + FINGERPRINT_FRAMES * 12);
    assert!(
        core::mem::size_of::<Fingerprints>()
            == FINGERPRINT_ALTERNATIVES * core::mem::size_of::<Fingerprint>()
    );
    assert!(core::mem::size_of::<SiteKey>() == 24);
    assert!(core::mem::size_of::<SiteCount>() == 24);
};

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, made only of integers and arrays of integers, with no implicit
    // padding (checked by the size assertions above): every bit pattern is valid.
    unsafe impl aya::Pod for super::CallSiteKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FirstReturn {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FingerprintKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Fingerprints {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SiteKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SiteCount {}
}
