//! `runtime.firstmoduledata`: the runtime's own record of the binary's layout. Stripped
//! binaries still have it, so it answers what the symbol table would: where the Go text starts
//! (`text`), and the base of function data offsets (`gofunc`).
//!
//! It is found as the only pointer-aligned place in the data segments that points at the
//! pclntab header and, one word later, at the function name table (the `funcnametab` slice),
//! and thirteen words in at the function table (`pclntable`). Its first 24 words have kept the
//! same layout since Go 1.16; later fields move between versions, so `gofunc`'s offset comes
//! from the runtime offsets of the binary's version.

use super::{Reason, elf::ElfImage};

/// Word indexes of the fields read, the same in every version since Go 1.16.
const WORD_PCHEADER: u64 = 0;
const WORD_FUNCNAMETAB: u64 = 1;
const WORD_PCLNTABLE: u64 = 13;
const WORD_MINPC: u64 = 20;
const WORD_TEXT: u64 = 22;
const WORD_ETEXT: u64 = 23;
const PTR_SIZE: u64 = 8;

/// What was read from `runtime.firstmoduledata`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moduledata {
    /// Where it is.
    pub address: u64,
    /// The start of the Go text (the base of 1.18+ pclntab entry offsets).
    pub text: u64,
    /// The end of the Go text.
    pub etext: u64,
    /// The first function's entry.
    pub minpc: u64,
}

/// Finds `runtime.firstmoduledata` for the pclntab at `pclntab` whose name table is at
/// `funcnametab` and function table at `functab`.
pub fn find(
    elf: &ElfImage<'_>,
    pclntab: u64,
    funcnametab: u64,
    functab: u64,
) -> Result<Moduledata, Reason> {
    let matches = |address: u64| -> Option<Moduledata> {
        let word = |index: u64| elf.read_pointer(address.checked_add(index * PTR_SIZE)?);
        if word(WORD_PCHEADER)? != pclntab
            || word(WORD_FUNCNAMETAB)? != funcnametab
            || word(WORD_PCLNTABLE)? != functab
        {
            return None;
        }
        let text = word(WORD_TEXT)?;
        let etext = word(WORD_ETEXT)?;
        let minpc = word(WORD_MINPC)?;
        let in_code = |pc: u64| {
            elf.loads()
                .iter()
                .any(|segment| segment.executable && segment.contains_file_backed(pc))
        };
        (text <= minpc && text < etext && in_code(text)).then_some(Moduledata {
            address,
            text,
            etext,
            minpc,
        })
    };

    if let Some(symbol) = elf.symbol("runtime.firstmoduledata")
        && let Some(found) = matches(symbol.address)
    {
        return Ok(found);
    }
    // PIE binaries may hold the pointer only in a relocation.
    let mut relocated: Vec<u64> = elf.relocated_slots_holding(pclntab).collect();
    relocated.sort_unstable();
    if let Some(found) = relocated.into_iter().find_map(matches) {
        return Ok(found);
    }
    let needle = pclntab.to_le_bytes();
    for segment in elf.loads().iter().filter(|segment| segment.writable) {
        let data = elf.segment_data(segment);
        let mut offset = ((PTR_SIZE - segment.vaddr % PTR_SIZE) % PTR_SIZE) as usize;
        while offset + needle.len() <= data.len() {
            if data[offset..offset + needle.len()] == needle
                && let Some(found) = matches(segment.vaddr + offset as u64)
            {
                return Ok(found);
            }
            offset += PTR_SIZE as usize;
        }
    }
    Err(Reason::NoModuledata)
}

/// `moduledata.gofunc`, at `field_offset` bytes into the structure.
pub fn gofunc(elf: &ElfImage<'_>, moduledata: &Moduledata, field_offset: u64) -> Option<u64> {
    let value = elf.read_pointer(moduledata.address.checked_add(field_offset)?)?;
    // It points into read-only data, never into the text.
    let segment = elf.load_containing(value)?;
    (!segment.executable && value != 0).then_some(value)
}
