//! The goroutine behind a write in a Go process, and the one walk that finds it: the kernel
//! program runs it at event time (reading with `bpf_probe_read_user`), userspace runs it later
//! for a thread still blocked (reading `/proc/PID/mem`), each through its own [`GoMemory`].
//!
//! The thread's current `g` sits in thread-local storage at a per-binary offset from the FS
//! base. On the system stack (g0, running C code called through cgo, or the runtime) that `g`
//! is not the goroutine: `g.m.curg` is. The `g` found is checked against the thread's stack
//! pointer: it must own the stack the thread is on, or its id would be a wrong one.

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
    /// The low bound of its stack (`g.stack.lo`), for the ownership check.
    pub stack_lo: u64,
    /// The high bound of its stack (`g.stack.hi`), exclusive.
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

/// A Go process's memory, as the goroutine walk reads it. Every read may fail (an unmapped
/// address, a process gone): the walk then stops with what it found so far.
pub trait GoMemory {
    /// The little-endian 8-byte word at `address`.
    fn word(&self, address: u64) -> Option<u64>;
    /// The little-endian 4-byte word at `address`.
    fn u32(&self, address: u64) -> Option<u32>;
}

/// The word at `base + offset`; `None` for a null `base`.
#[inline(always)]
fn word_at<M: GoMemory>(memory: &M, base: u64, offset: i64) -> Option<u64> {
    if base == 0 {
        return None;
    }
    memory.word(base.wrapping_add(offset as u64))
}

/// The 4-byte word at `base + offset`; `None` for a null `base`.
#[inline(always)]
fn u32_at<M: GoMemory>(memory: &M, base: u64, offset: i64) -> Option<u32> {
    if base == 0 {
        return None;
    }
    memory.u32(base.wrapping_add(offset as u64))
}

impl Goroutine {
    /// The goroutine a thread of a Go process runs, from its thread pointer `fsbase` and its
    /// user stack pointer `sp`: `g` from TLS, whether it owns the stack, `g.m.curg`, then the
    /// goroutine's id, status, creator pc and parent. What could not be read is left 0 and its
    /// flag unset; [`go_flags::GO_PROCESS`] is always set.
    ///
    /// Straight-line code with no loop, inlined: the verifier accepts it in the kernel programs.
    #[inline(always)]
    pub fn walk<M: GoMemory>(memory: &M, layout: &GoLayout, fsbase: u64, sp: u64) -> Self {
        let mut found = Goroutine {
            flags: go_flags::GO_PROCESS,
            fsbase,
            ..Goroutine::default()
        };
        let Some(g) = word_at(memory, fsbase, layout.tls_offset) else {
            return found;
        };
        if g == 0 {
            return found;
        }
        found.g = g;
        found.stack_lo = word_at(memory, g, layout.g_stack_lo as i64).unwrap_or(0);
        found.stack_hi = word_at(memory, g, layout.g_stack_hi as i64).unwrap_or(0);
        if found.stack_lo <= sp && sp < found.stack_hi {
            found.flags |= go_flags::STACK_OWNED;
        }
        let curg = word_at(memory, g, layout.g_m as i64)
            .and_then(|m| word_at(memory, m, layout.m_curg as i64))
            .unwrap_or(0);
        let goroutine = if curg != 0 { curg } else { g };
        if goroutine != g {
            found.flags |= go_flags::ON_SYSTEM_STACK;
        }
        found.goroutine = goroutine;
        let (Some(goid), Some(status), Some(gopc)) = (
            word_at(memory, goroutine, layout.g_goid as i64),
            u32_at(memory, goroutine, layout.g_status as i64),
            word_at(memory, goroutine, layout.g_gopc as i64),
        ) else {
            return found;
        };
        found.goid = goid;
        found.status = status;
        found.gopc = gopc;
        if layout.flags & go_flags::HAS_PARENT_GOID != 0 {
            found.parent_goid =
                word_at(memory, goroutine, layout.g_parent_goid as i64).unwrap_or(0);
        }
        found.flags |= go_flags::FOUND;
        found
    }

    /// The goroutine's id when it is certain: the goroutine was found, and the `g` in the
    /// thread's TLS slot owns the stack the thread is on (else the id could be another
    /// goroutine's).
    #[inline(always)]
    pub fn certain_goid(&self) -> Option<u64> {
        let certain = go_flags::FOUND | go_flags::STACK_OWNED;
        (self.flags & certain == certain).then_some(self.goid)
    }
}

const _: () = {
    assert!(core::mem::size_of::<GoLayout>() == 48);
    assert!(core::mem::size_of::<Goroutine>() == 72);
};

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, made only of integers and arrays of integers, with no implicit
    // padding (checked by the size assertions above): every bit pattern is valid.
    unsafe impl aya::Pod for super::GoLayout {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory holding only the words listed.
    struct Words<'a>(&'a [(u64, u64)]);

    impl GoMemory for Words<'_> {
        fn word(&self, address: u64) -> Option<u64> {
            self.0
                .iter()
                .find(|(at, _)| *at == address)
                .map(|(_, value)| *value)
        }
        fn u32(&self, address: u64) -> Option<u32> {
            self.word(address).map(|value| value as u32)
        }
    }

    const LAYOUT: GoLayout = GoLayout {
        tls_offset: -8,
        g_goid: 152,
        g_m: 48,
        g_stack_lo: 0,
        g_stack_hi: 8,
        g_status: 144,
        g_gopc: 280,
        g_parent_goid: 296,
        m_curg: 192,
        flags: go_flags::HAS_PARENT_GOID,
        _pad: 0,
    };
    const FSBASE: u64 = 0x1000;
    const G: u64 = 0x2000;
    const M: u64 = 0x5000;
    const CURG: u64 = 0x6000;

    /// A thread whose TLS slot holds goroutine 17 (stack 0x3000..0x4000), whose `m.curg` is
    /// `curg`; goroutine 23 at `CURG`.
    fn thread(curg: u64) -> [(u64, u64); 12] {
        [
            (FSBASE - 8, G),
            (G, 0x3000),
            (G + 8, 0x4000),
            (G + 48, M),
            (M + 192, curg),
            (G + 152, 17),
            (G + 144, 3),
            (G + 280, 0x40_1000),
            (G + 296, 1),
            (CURG + 152, 23),
            (CURG + 144, 4),
            (CURG + 280, 0x40_2000),
        ]
    }

    #[test]
    fn a_goroutine_on_its_own_stack_is_certain() {
        let words = thread(G);
        let found = Goroutine::walk(&Words(&words), &LAYOUT, FSBASE, 0x3800);
        assert_eq!(found.certain_goid(), Some(17));
        assert_eq!(
            (found.g, found.goroutine, found.status, found.gopc),
            (G, G, 3, 0x40_1000)
        );
        assert_eq!(found.parent_goid, 1);
        assert_eq!(found.flags & go_flags::ON_SYSTEM_STACK, 0);
    }

    #[test]
    fn on_the_system_stack_the_goroutine_is_curg() {
        let words = thread(CURG);
        let found = Goroutine::walk(&Words(&words), &LAYOUT, FSBASE, 0x3800);
        assert_eq!(found.certain_goid(), Some(23));
        assert_eq!((found.goroutine, found.status), (CURG, 4));
        assert_ne!(found.flags & go_flags::ON_SYSTEM_STACK, 0);
        // Its parent could not be read.
        assert_eq!(found.parent_goid, 0);
    }

    #[test]
    fn a_g_that_does_not_own_the_stack_gives_no_certain_id() {
        let words = thread(0);
        let found = Goroutine::walk(&Words(&words), &LAYOUT, FSBASE, 0x9000);
        assert_ne!(found.flags & go_flags::FOUND, 0);
        assert_eq!(found.goid, 17);
        assert_eq!(found.certain_goid(), None);
    }

    #[test]
    fn unreadable_memory_finds_nothing() {
        let found = Goroutine::walk(&Words(&[]), &LAYOUT, FSBASE, 0x3800);
        assert_eq!(found.flags, go_flags::GO_PROCESS);
        assert_eq!(found.fsbase, FSBASE);
        assert_eq!(found.certain_goid(), None);
        let found = Goroutine::walk(&Words(&[]), &LAYOUT, 0, 0x3800);
        assert_eq!(found.flags, go_flags::GO_PROCESS);
    }
}
