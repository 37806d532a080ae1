//! The configuration userspace writes into the programs' read-only data before loading them.

use stdtrace_common::{KernelLayout, TracerConfig};

/// Overridden by the loader (`EbpfLoader::override_global("CONFIG", ..)`). The verifier sees
/// the frozen value, so checks on it cost nothing at run time.
#[unsafe(no_mangle)]
pub(crate) static CONFIG: TracerConfig = TracerConfig::INERT;

/// Reads one field of [`CONFIG`] without letting the compiler fold it to its build-time value.
macro_rules! read_config {
    ($($place:tt)+) => {
        // SAFETY: CONFIG is a plain, always-initialised static; the volatile read only stops
        // the compiler from assuming the value it was built with.
        unsafe { core::ptr::read_volatile(&raw const CONFIG.$($place)+) }
    };
}

#[inline(always)]
pub fn self_tgid() -> u32 {
    read_config!(self_tgid)
}

#[inline(always)]
pub fn targets_only() -> bool {
    read_config!(targets_only) != 0
}

/// Bit `n`: cgroups at level `n` are watched (see `filter`).
#[inline(always)]
pub fn cgroup_levels() -> u32 {
    read_config!(cgroup_levels)
}

#[inline(always)]
pub fn watches_errno(errno: u64) -> bool {
    if errno >= stdtrace_common::MAX_ERRNO as u64 {
        return false;
    }
    let word = match errno / 64 {
        0 => read_config!(errno_mask[0]),
        1 => read_config!(errno_mask[1]),
        2 => read_config!(errno_mask[2]),
        _ => read_config!(errno_mask[3]),
    };
    word & (1u64 << (errno % 64)) != 0
}

#[inline(always)]
pub fn has_prev_state() -> bool {
    read_config!(kernel.switch_has_prev_state) != 0
}

#[inline(always)]
pub fn slow_ns() -> u64 {
    read_config!(slow_ns)
}

#[inline(always)]
pub fn layout() -> KernelLayout {
    read_config!(kernel)
}

/// One field of the kernel layout, without copying the whole layout.
macro_rules! layout_field {
    ($field:ident) => {
        // SAFETY: as in `read_config`.
        unsafe { core::ptr::read_volatile(&raw const $crate::config::CONFIG.kernel.$field) }
    };
}
pub(crate) use layout_field;
