//! Naming an address from DWARF, through addr2line: function, file and line, with the inlined
//! calls at the address expanded. addr2line parses lazily (only the units an address falls
//! into), so an object with large debug info costs little until it is hit.

use gimli::{RunTimeEndian, SectionId};

use super::{
    bytes::{self, Reader, SectionBytes},
    demangle::demangle,
    elf::ElfImage,
};

/// Most inlined frames reported for one address: DWARF can describe any nesting.
const MAX_INLINE_DEPTH: usize = 64;

/// One function at an address, as DWARF (or Go's pc-line table) describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SourceFrame {
    /// Demangled name, when the DWARF has one.
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Why the source could not fully describe the frame, when it knows.
    pub miss: Option<super::Miss>,
}

/// The DWARF of one object (its own, or that of its separate debug file).
pub(crate) struct Dwarf {
    context: addr2line::Context<Reader>,
}

impl std::fmt::Debug for Dwarf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dwarf")
    }
}

/// Loads the sections gimli asks for from `elf`; a missing section reads as empty.
fn load_sections(elf: &ElfImage) -> Result<gimli::Dwarf<Reader>, String> {
    gimli::Dwarf::load(|id: SectionId| -> Result<Reader, String> {
        let bytes = elf
            .section(id.name())
            .map_err(|err| format!("{}: {err}", id.name()))?
            .unwrap_or_else(SectionBytes::empty);
        Ok(bytes::reader(bytes, RunTimeEndian::Little))
    })
}

impl Dwarf {
    /// Prepares lookups in the DWARF of `elf`, with `supplementary` (a dwz file that
    /// `.gnu_debugaltlink` names) when there is one.
    pub(crate) fn load(elf: &ElfImage, supplementary: Option<&ElfImage>) -> Result<Self, String> {
        let mut dwarf = load_sections(elf)?;
        if let Some(sup) = supplementary {
            dwarf.set_sup(load_sections(sup)?);
        }
        let context = addr2line::Context::from_dwarf(dwarf).map_err(|err| err.to_string())?;
        Ok(Self { context })
    }

    /// The functions at `address` (an ELF virtual address), innermost inlined call first and
    /// the function that contains them all last; empty when no unit covers it.
    pub(crate) fn frames(&self, address: u64) -> Result<Vec<SourceFrame>, gimli::Error> {
        // addr2line looks an address up as the range [address, address + 1), which overflows
        // (a panic with overflow checks) at the top of the address space, where no unit can be.
        if address == u64::MAX {
            return Ok(Vec::new());
        }
        let mut iter = self.context.find_frames(address).skip_all_loads()?;
        let mut frames = Vec::new();
        while let Some(frame) = iter.next()? {
            let function = match &frame.function {
                Some(name) => Some(demangle(&name.raw_name()?, name.language)),
                None => None,
            };
            let (file, line) = match &frame.location {
                Some(location) => (location.file.map(str::to_owned), location.line),
                None => (None, None),
            };
            frames.push(SourceFrame {
                function,
                file,
                line,
                miss: None,
            });
            if frames.len() >= MAX_INLINE_DEPTH {
                break;
            }
        }
        Ok(frames)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::symbolize::bytes::FileBytes;

    /// Found by the `dwarf_lines` fuzz target: a shared library built with `-g` (entry point
    /// 0), whose callers' lookups at `entry - 1` wrapped to the top of the address space.
    #[test]
    fn the_last_address_is_a_miss_not_an_overflow() {
        let input = include_bytes!("../../../fixtures/fuzz/dwarf_lines-address-max");
        let (address, object) = input.split_at(8);
        assert_eq!(address, [0; 8]);
        let elf = ElfImage::parse(Arc::new(FileBytes::Owned(object.to_vec()))).unwrap();
        let dwarf = Dwarf::load(&elf, None).unwrap();
        assert_eq!(dwarf.frames(u64::MAX), Ok(Vec::new()));
        assert!(dwarf.frames(0).is_ok());
    }
}
