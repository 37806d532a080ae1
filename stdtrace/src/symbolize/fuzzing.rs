//! Bytes-in entry points into the symbolizer's private parsers, for the fuzz targets in
//! `fuzz/`: each takes the whole content of an object file, as hostile as it comes, and does
//! what the symbolizer does with a mapped one. None of them may panic.

use std::{path::Path, sync::Arc};

use super::{
    bytes::FileBytes,
    cfi,
    dwarf::Dwarf,
    elf::{ElfError, ElfImage},
    gopclntab::{GoNames, GoTable},
    object::Object,
    symbols::SymbolTable,
    unwind::{self, RuleSource, StackCopy, UnwindEnd, UnwindRules, UserRegisters},
};

fn parse(bytes: &[u8]) -> Result<ElfImage, ElfError> {
    ElfImage::parse(Arc::new(FileBytes::Owned(bytes.to_vec())))
}

/// An object found through no process: its debug files are looked for nowhere a fuzzed name
/// can reach (a pid that does not exist, no debug directories).
fn detached_object(elf: ElfImage) -> Object {
    Object::new(
        elf,
        u32::MAX,
        Path::new("/nonexistent/object"),
        Arc::from([]),
    )
}

/// Parses `bytes` as an ELF object and names `addresses` (ELF virtual addresses) from its
/// symbol tables, as `ObjectCache` and `SymbolTable` do; also reads the build-id, the debug
/// links and the segments. Returns the names found.
pub fn elf_symbols(bytes: &[u8], addresses: &[u64]) -> Result<Vec<Option<String>>, ElfError> {
    let elf = parse(bytes)?;
    let _ = (elf.build_id(), elf.debug_link(), elf.alt_link());
    let table = SymbolTable::new(elf.symbols()?);
    let object = detached_object(elf);
    Ok(addresses
        .iter()
        .map(|address| {
            let _ = object.vaddr(*address, true);
            table.find(*address).map(str::to_owned)
        })
        .collect())
}

/// Parses `bytes` as an ELF object and names `addresses` from its DWARF (addr2line, inlined
/// calls expanded), then as the symbolizer does (Go's table, DWARF, symbols). Returns how many
/// frames were named.
pub fn dwarf_frames(bytes: &[u8], addresses: &[u64]) -> Result<usize, ElfError> {
    let elf = parse(bytes)?;
    let mut named = 0;
    if let Ok(mut dwarf) = Dwarf::load(&elf, None) {
        for address in addresses {
            named += dwarf.frames(*address).map_or(0, |frames| frames.len());
        }
    }
    let mut object = detached_object(elf);
    for address in addresses {
        named += object.name(*address).map_or(0, |frames| frames.len());
    }
    Ok(named)
}

/// Parses `bytes` as a Go binary's ELF file and names `addresses` from its pc-line table, and
/// asks the table how to unwind each. Returns how many frames were named.
pub fn go_frames(bytes: &[u8], addresses: &[u64]) -> Result<usize, ElfError> {
    let elf = parse(bytes)?;
    let Ok(Some(table)) = GoTable::load(&elf) else {
        return Ok(0);
    };
    let mut named = 0;
    for address in addresses {
        if let GoNames::Frames(frames) = table.names(*address) {
            named += frames.len();
        }
        let _ = table.unwind_rules(&elf, *address);
    }
    Ok(named)
}

/// Every lookup answered by the one object, at its own ELF virtual addresses.
struct OneObject {
    object: Object,
    context: Box<cfi::Context>,
}

impl RuleSource for OneObject {
    fn rules_for(&mut self, lookup: u64) -> UnwindRules {
        self.object.unwind_rules(&mut self.context, lookup)
    }
}

/// Walks `stack` from `registers` with the unwind rules of the ELF object `bytes` (its
/// `.eh_frame`, or Go's table in a Go binary, else frame pointers), as if it were mapped at its
/// own virtual addresses. Returns the frames' addresses and why the walk stopped.
pub fn unwind(
    bytes: &[u8],
    registers: &UserRegisters,
    stack: &StackCopy<'_>,
) -> Result<(Vec<u64>, UnwindEnd), ElfError> {
    let mut source = OneObject {
        object: detached_object(parse(bytes)?),
        context: Box::new(cfi::Context::new()),
    };
    let (frames, end) = unwind::unwind(registers, stack, &mut source);
    Ok((frames.iter().map(|frame| frame.address).collect(), end))
}
