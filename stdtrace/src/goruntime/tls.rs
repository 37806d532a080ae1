//! Where the current goroutine's `g` lives in thread-local storage (amd64).
//!
//! Go keeps the running `g` in a TLS slot at a fixed offset from the thread pointer (the FS
//! base). With Go's own linker and no C code the slot is the whole TLS block and sits at -8.
//! With the system linker (cgo, external linking) C's thread-locals share the block and move
//! it: the slot is the TLS symbol `runtime.tlsg`, and on x86-64 (TLS variant II) the main
//! executable's block ends at the thread pointer, so the slot is at
//! `runtime.tlsg - round_up(PT_TLS.memsz, PT_TLS.align)` (with glibc's correction for a
//! misaligned `PT_TLS` start).
//!
//! Without symbols the offset is read from the runtime's own code, which loads `g` all over:
//! `mov %fs:OFF, reg` (local-exec, Go's linker), `mov $OFF, r; mov %fs:(r), reg` (relaxed
//! initial-exec, the system linker), or `mov X(%rip), r; mov %fs:(r), reg` (initial-exec
//! through the GOT). Every such access in `runtime.*` functions votes for its offset.

use std::collections::HashMap;

use super::{Reason, elf::ElfImage, elf::TlsSegment, pclntab::Pclntab};

/// Where the g slot is, as an offset from the thread pointer (FS base).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSlot {
    /// Bytes from the thread pointer (negative: below it).
    pub offset: i64,
    pub source: TlsSource,
}

/// How the g slot was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// `runtime.tlsg` and the `PT_TLS` segment.
    TlsgSymbol,
    /// The runtime's own accesses to the slot: `agreeing` of `total` decoded accesses said so.
    Code { agreeing: usize, total: usize },
    /// Nothing else said: Go's own linker's layout, where the slot is the only thread-local
    /// (no `PT_TLS`, or one pointer-sized block).
    InternalLinkerLayout,
}

/// Accesses to the slot are below the thread pointer and pointer-aligned; further than this
/// below is no g slot.
const MAX_DISTANCE: i64 = 1 << 24;
/// The winning offset needs at least this share of the votes.
const MIN_AGREEMENT: f64 = 2.0 / 3.0;

/// The g slot's offset: from `runtime.tlsg`, else from the runtime's code (through `pclntab`,
/// or every executable segment without it), else Go's linker's layout.
pub fn g_tls_offset(elf: &ElfImage<'_>, pclntab: Option<&Pclntab<'_>>) -> Result<TlsSlot, Reason> {
    if !elf.is_x86_64() {
        return Err(Reason::UnsupportedArch);
    }
    if let Ok(slot) = g_tls_offset_from_symbols(elf) {
        return Ok(slot);
    }
    let from_code = g_tls_offset_from_code(elf, pclntab);
    if from_code.is_ok() {
        return from_code;
    }
    match elf.tls_segment() {
        Some(tls) if tls.memsz > 8 => from_code,
        _ => Ok(TlsSlot {
            offset: -8,
            source: TlsSource::InternalLinkerLayout,
        }),
    }
}

/// The offset from `runtime.tlsg` and the `PT_TLS` segment.
pub fn g_tls_offset_from_symbols(elf: &ElfImage<'_>) -> Result<TlsSlot, Reason> {
    let tlsg = elf
        .symbol("runtime.tlsg")
        .filter(|symbol| symbol.tls)
        .ok_or(Reason::NoSymbol {
            name: "runtime.tlsg",
        })?;
    let tls = elf.tls_segment().ok_or(Reason::NoTlsSegment)?;
    let block = i64::try_from(static_tls_offset(tls)).map_err(|_| Reason::NoTlsSegment)?;
    let value = i64::try_from(tlsg.address).map_err(|_| Reason::NoTlsSegment)?;
    Ok(TlsSlot {
        offset: value - block,
        source: TlsSource::TlsgSymbol,
    })
}

/// How far below the thread pointer the main executable's TLS block starts (x86-64, variant
/// II): the block's size rounded up to its alignment, as glibc computes it for the first
/// module (keeping a misaligned start's offset within the alignment).
pub fn static_tls_offset(tls: TlsSegment) -> u64 {
    let align = tls.align.max(1);
    let firstbyte = (align - (tls.vaddr % align)) % align;
    let size = tls.memsz.saturating_sub(firstbyte);
    size.div_ceil(align).saturating_mul(align) + firstbyte
}

/// The offset the runtime's code uses. `pclntab` narrows the search to `runtime.*`
/// functions (C code in cgo binaries has thread-locals of its own).
pub fn g_tls_offset_from_code(
    elf: &ElfImage<'_>,
    pclntab: Option<&Pclntab<'_>>,
) -> Result<TlsSlot, Reason> {
    if !elf.is_x86_64() {
        return Err(Reason::UnsupportedArch);
    }
    let mut votes: HashMap<i64, usize> = HashMap::new();
    let mut vote = |code: &[u8], address: u64| {
        for offset in decode_tls_accesses(elf, code, address) {
            *votes.entry(offset).or_default() += 1;
        }
    };
    match pclntab {
        Some(table) => {
            for func in table.funcs().flatten() {
                if !func.name.starts_with("runtime.") {
                    continue;
                }
                let Ok(len) = usize::try_from(func.end - func.entry) else {
                    continue;
                };
                if let Some(code) = elf.read(func.entry, len) {
                    vote(code, func.entry);
                }
            }
        }
        None => {
            for segment in elf.loads().iter().filter(|segment| segment.executable) {
                vote(elf.segment_data(segment), segment.vaddr);
            }
        }
    }
    let total: usize = votes.values().sum();
    let (offset, agreeing) = votes
        .into_iter()
        .max_by_key(|(offset, count)| (*count, -offset))
        .ok_or(Reason::NoTlsAccess)?;
    if (agreeing as f64) < MIN_AGREEMENT * total as f64 {
        return Err(Reason::AmbiguousTlsAccess { agreeing, total });
    }
    Ok(TlsSlot {
        offset,
        source: TlsSource::Code { agreeing, total },
    })
}

/// The thread-pointer offsets of 64-bit FS-relative loads and stores in `code` (at
/// `address`).
pub fn decode_tls_accesses(elf: &ElfImage<'_>, code: &[u8], address: u64) -> Vec<i64> {
    let mut found = Vec::new();
    for at in 0..code.len() {
        if code[at] != 0x64 {
            continue;
        }
        let Some(access) = decode_fs_mov(&code[at..]) else {
            continue;
        };
        let offset = match access {
            FsOperand::Absolute(offset) => Some(offset),
            FsOperand::Register { base, disp } => {
                let before = &code[..at];
                let instruction_address = address.wrapping_add(at as u64);
                register_value_before(elf, before, instruction_address, base)
                    .map(|value| value.wrapping_add(disp))
            }
        };
        if let Some(offset) = offset.filter(|o| (-MAX_DISTANCE..0).contains(o) && o % 8 == 0) {
            found.push(offset);
        }
    }
    found
}

/// The memory operand of `mov %fs:..., r64` or `mov r64, %fs:...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FsOperand {
    /// `%fs:disp32`.
    Absolute(i64),
    /// `%fs:disp(base)`.
    Register { base: u8, disp: i64 },
}

/// Decodes `64 REX.W 8B/89 modrm [sib] [disp]` at the start of `code`.
fn decode_fs_mov(code: &[u8]) -> Option<FsOperand> {
    let (&prefix, rest) = code.split_first()?;
    if prefix != 0x64 {
        return None;
    }
    let (&rex, rest) = rest.split_first()?;
    if rex & 0xf8 != 0x48 {
        return None;
    }
    let (&opcode, rest) = rest.split_first()?;
    if opcode != 0x8b && opcode != 0x89 {
        return None;
    }
    let (&modrm, rest) = rest.split_first()?;
    let mode = modrm >> 6;
    let rm = modrm & 7;
    let rex_b = (rex & 1) << 3;
    let rex_x = (rex & 2) << 2;
    let disp8 = |bytes: &[u8]| bytes.first().map(|b| i64::from(*b as i8));
    let disp32 = |bytes: &[u8]| {
        let bytes: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
        Some(i64::from(i32::from_le_bytes(bytes)))
    };
    match (mode, rm) {
        (0, 4) | (1, 4) => {
            let (&sib, rest) = rest.split_first()?;
            let index = ((sib >> 3) & 7) | rex_x;
            let base = sib & 7;
            if index != 4 || sib >> 6 != 0 {
                return None;
            }
            match (mode, base) {
                // No base, no index: an absolute displacement.
                (0, 5) => Some(FsOperand::Absolute(disp32(rest)?)),
                (0, _) => Some(FsOperand::Register {
                    base: base | rex_b,
                    disp: 0,
                }),
                _ => Some(FsOperand::Register {
                    base: base | rex_b,
                    disp: disp8(rest)?,
                }),
            }
        }
        // RIP-relative: not a TLS access pattern.
        (0, 5) => None,
        (0, _) => Some(FsOperand::Register {
            base: rm | rex_b,
            disp: 0,
        }),
        (1, _) => Some(FsOperand::Register {
            base: rm | rex_b,
            disp: disp8(rest)?,
        }),
        _ => None,
    }
}

/// The value register `reg` was given by the instruction that ends right before an access:
/// `mov $imm32, reg` (sign-extended) or `mov disp32(%rip), reg` (a GOT slot holding the
/// offset, or a `TPOFF64` relocation against the executable's own block).
fn register_value_before(
    elf: &ElfImage<'_>,
    before: &[u8],
    access_address: u64,
    reg: u8,
) -> Option<i64> {
    let previous = before.get(before.len().checked_sub(7)?..)?;
    let rex = previous[0];
    if rex & 0xf0 != 0x40 || rex & 0x08 == 0 {
        return None;
    }
    let modrm = previous[2];
    let immediate = i64::from(i32::from_le_bytes([
        previous[3],
        previous[4],
        previous[5],
        previous[6],
    ]));
    match previous[1] {
        // mov $imm32, r64: C7 /0 with a register operand.
        0xc7 if modrm & 0xf8 == 0xc0 => {
            let target = (modrm & 7) | ((rex & 1) << 3);
            (target == reg).then_some(immediate)
        }
        // mov disp32(%rip), r64.
        0x8b if modrm & 0xc7 == 0x05 => {
            let target = ((modrm >> 3) & 7) | ((rex & 4) << 1);
            if target != reg {
                return None;
            }
            let slot = access_address.wrapping_add_signed(immediate);
            if let Some(addend) = elf.tpoff_relocation(slot) {
                let tls = elf.tls_segment()?;
                let block = i64::try_from(static_tls_offset(tls)).ok()?;
                return Some(addend - block);
            }
            elf.read_uint(slot, 8).map(|value| value as i64)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_fs_operands() {
        // mov %fs:0xfffffffffffffff8,%r14
        assert_eq!(
            decode_fs_mov(&[0x64, 0x4c, 0x8b, 0x34, 0x25, 0xf8, 0xff, 0xff, 0xff]),
            Some(FsOperand::Absolute(-8))
        );
        // mov %rdx,%fs:0xfffffffffffffec0
        assert_eq!(
            decode_fs_mov(&[0x64, 0x48, 0x89, 0x14, 0x25, 0xc0, 0xfe, 0xff, 0xff]),
            Some(FsOperand::Absolute(-0x140))
        );
        // mov %fs:(%r14),%r14
        assert_eq!(
            decode_fs_mov(&[0x64, 0x4d, 0x8b, 0x36]),
            Some(FsOperand::Register { base: 14, disp: 0 })
        );
        // mov %fs:(%rcx),%rax
        assert_eq!(
            decode_fs_mov(&[0x64, 0x48, 0x8b, 0x01]),
            Some(FsOperand::Register { base: 1, disp: 0 })
        );
        // mov %fs:(%r12),%r14 needs a SIB byte; mov %fs:0x0(%r13),%r14 a displacement.
        assert_eq!(
            decode_fs_mov(&[0x64, 0x4d, 0x8b, 0x34, 0x24]),
            Some(FsOperand::Register { base: 12, disp: 0 })
        );
        assert_eq!(
            decode_fs_mov(&[0x64, 0x4d, 0x8b, 0x75, 0x00]),
            Some(FsOperand::Register { base: 13, disp: 0 })
        );
        // 32-bit moves, other opcodes and truncated instructions are not g accesses.
        assert_eq!(decode_fs_mov(&[0x64, 0x8b, 0x04, 0x25, 0, 0, 0, 0]), None);
        assert_eq!(decode_fs_mov(&[0x64, 0x48, 0x03, 0x01]), None);
        assert_eq!(decode_fs_mov(&[0x64, 0x48, 0x8b, 0x04, 0x25, 0xf8]), None);
        assert_eq!(decode_fs_mov(&[0x64]), None);
    }

    #[test]
    fn tls_block_offset_rounds_to_alignment() {
        let tls = |vaddr, memsz, align| TlsSegment {
            vaddr,
            memsz,
            align,
        };
        assert_eq!(static_tls_offset(tls(0x523df0, 8, 8)), 8);
        assert_eq!(static_tls_offset(tls(0x523d80, 0x148, 0x40)), 0x180);
        assert_eq!(static_tls_offset(tls(0x1000, 0x10, 0)), 0x10);
        // A start 8 bytes past a 64-byte boundary keeps that phase: the block starts 0x38
        // below an aligned boundary.
        assert_eq!(static_tls_offset(tls(0x1008, 0x10, 0x40)), 0x38);
        assert_eq!(static_tls_offset(tls(0x1008, 0x50, 0x40)), 0x40 + 0x38);
    }
}
