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
///
/// addr2line parses every unit's header, abbreviations and line program header when its
/// context is made: for glibc's debug file that is about 20 MiB of heap on top of its 9 MiB of
/// decompressed sections, whatever address is asked. So where `.debug_aranges` says which
/// unit holds an address, a context is made over that one unit (its bytes of `.debug_info`,
/// every other section whole), and kept for the next lookups; a context over every unit is
/// made only for an address no arange covers, or when the unit refers into other units
/// (`DW_FORM_ref_addr`), or with a supplementary file.
pub(crate) struct Dwarf {
    sections: gimli::Dwarf<Reader>,
    /// Whether `set_sup` was given a supplementary file: units then are not sliced.
    has_sup: bool,
    /// `(begin, end, unit offset)`, sorted by `begin`.
    aranges: Vec<(u64, u64, usize)>,
    /// Contexts over one unit each, by unit offset, the most recently used last.
    units: Vec<(usize, UnitContext)>,
    /// The context over every unit, once needed.
    whole: Option<addr2line::Context<Reader>>,
    /// Bytes of decompressed sections held.
    section_bytes: usize,
}

/// A context over one unit, or the reason the unit needs the whole context.
enum UnitContext {
    One {
        context: addr2line::Context<Reader>,
        /// What it is counted as: the unit's bytes, a few times over for what addr2line
        /// parses of them.
        bytes: usize,
    },
    NeedsWhole,
}

/// Units kept parsed per object at most (each is one compilation unit: a source file).
const MAX_UNITS: usize = 32;

/// What a unit context is counted as, per byte of the unit's `.debug_info` (its parsed
/// abbreviations, line program and functions): an estimate, not a measurement per unit.
const UNIT_BYTES_FACTOR: usize = 4;

/// What the whole context is counted as, per byte of `.debug_info` (heaptrack on glibc's debug
/// file: about 20 MiB parsed for its 5.6 MiB of `.debug_info`).
const WHOLE_BYTES_FACTOR: usize = 4;

impl std::fmt::Debug for Dwarf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dwarf")
    }
}

/// Sections addr2line never reads (locations, macros, type units, name indexes): left out,
/// so that they are not decompressed.
fn unused_by_addr2line(id: SectionId) -> bool {
    matches!(
        id,
        SectionId::DebugLoc
            | SectionId::DebugLocLists
            | SectionId::DebugMacinfo
            | SectionId::DebugMacro
            | SectionId::DebugPubNames
            | SectionId::DebugPubTypes
            | SectionId::DebugTypes
    )
}

/// Loads the sections gimli asks for from `elf`; a missing section reads as empty. Returns
/// them with the bytes decompressed into memory for them.
fn load_sections(elf: &ElfImage) -> Result<(gimli::Dwarf<Reader>, usize), String> {
    let mut owned = 0;
    let dwarf = gimli::Dwarf::load(|id: SectionId| -> Result<Reader, String> {
        if unused_by_addr2line(id) {
            return Ok(bytes::reader(SectionBytes::empty(), RunTimeEndian::Little));
        }
        let bytes = elf
            .section(id.name())
            .map_err(|err| format!("{}: {err}", id.name()))?
            .unwrap_or_else(SectionBytes::empty);
        owned += bytes.owned_len();
        Ok(bytes::reader(bytes, RunTimeEndian::Little))
    })?;
    Ok((dwarf, owned))
}

/// The sections of `dwarf` again (cheap: the readers share their bytes), with `.debug_info`
/// replaced by `debug_info` and no `.debug_aranges` (whose offsets are the whole section's).
fn with_debug_info(dwarf: &gimli::Dwarf<Reader>, debug_info: Reader) -> gimli::Dwarf<Reader> {
    let empty = bytes::reader(SectionBytes::empty(), RunTimeEndian::Little);
    let loaded = gimli::Dwarf::load(
        |id: SectionId| -> Result<Reader, std::convert::Infallible> {
            use gimli::Section as _;
            Ok(match id {
                SectionId::DebugInfo => debug_info.clone(),
                SectionId::DebugAbbrev => dwarf.debug_abbrev.reader().clone(),
                SectionId::DebugAddr => dwarf.debug_addr.reader().clone(),
                SectionId::DebugLine => dwarf.debug_line.reader().clone(),
                SectionId::DebugLineStr => dwarf.debug_line_str.reader().clone(),
                SectionId::DebugStr => dwarf.debug_str.reader().clone(),
                SectionId::DebugStrOffsets => dwarf.debug_str_offsets.reader().clone(),
                SectionId::DebugRanges => dwarf.ranges.debug_ranges().reader().clone(),
                SectionId::DebugRngLists => dwarf.ranges.debug_rnglists().reader().clone(),
                _ => empty.clone(),
            })
        },
    );
    match loaded {
        Ok(dwarf) => dwarf,
        Err(never) => match never {},
    }
}

/// The aranges of `dwarf`: `(begin, end, unit offset)`, sorted; empty if unreadable.
fn read_aranges(dwarf: &gimli::Dwarf<Reader>) -> Vec<(u64, u64, usize)> {
    let mut aranges = Vec::new();
    let mut headers = dwarf.debug_aranges.headers();
    let read = (|| -> Result<(), gimli::Error> {
        while let Some(header) = headers.next()? {
            let unit = header.debug_info_offset().0;
            let mut entries = header.entries();
            while let Some(entry) = entries.next()? {
                let end = entry.address().saturating_add(entry.length());
                if end > entry.address() {
                    aranges.push((entry.address(), end, unit));
                }
            }
        }
        Ok(())
    })();
    if let Err(err) = read {
        log::debug!("unusable .debug_aranges: {err}");
        return Vec::new();
    }
    aranges.sort_unstable();
    aranges
}

/// Whether a unit refers to entries outside itself (`DW_FORM_ref_addr`, or into a
/// supplementary file): such a unit cannot be read alone.
fn refers_outside(unit: &gimli::Unit<Reader>) -> Result<bool, gimli::Error> {
    let mut entries = unit.entries_raw(None)?;
    while !entries.is_empty() {
        let Some(abbrev) = entries.read_abbreviation()? else {
            continue;
        };
        if abbrev.attributes().iter().any(|spec| {
            matches!(
                spec.form(),
                gimli::DW_FORM_ref_addr
                    | gimli::DW_FORM_GNU_ref_alt
                    | gimli::DW_FORM_ref_sup4
                    | gimli::DW_FORM_ref_sup8
            )
        }) {
            return Ok(true);
        }
        entries.skip_attributes(abbrev.attributes())?;
    }
    Ok(false)
}

impl Dwarf {
    /// Prepares lookups in the DWARF of `elf`, with `supplementary` (a dwz file that
    /// `.gnu_debugaltlink` names) when there is one.
    pub(crate) fn load(elf: &ElfImage, supplementary: Option<&ElfImage>) -> Result<Self, String> {
        let (mut sections, mut section_bytes) = load_sections(elf)?;
        let has_sup = supplementary.is_some();
        if let Some(sup) = supplementary {
            let (sup, sup_bytes) = load_sections(sup)?;
            sections.set_sup(sup);
            section_bytes += sup_bytes;
        }
        let aranges = if has_sup {
            Vec::new()
        } else {
            read_aranges(&sections)
        };
        let mut dwarf = Self {
            sections,
            has_sup,
            aranges,
            units: Vec::new(),
            whole: None,
            section_bytes,
        };
        // An object whose units are not indexed is looked up as before, and its errors are
        // found now.
        if dwarf.aranges.is_empty() {
            dwarf.whole_context()?;
        }
        Ok(dwarf)
    }

    /// Bytes this DWARF is counted as in the object cache's budget: its decompressed
    /// sections and what is parsed of them (an estimate per unit).
    pub(crate) fn heap_bytes(&self) -> usize {
        let units: usize = self
            .units
            .iter()
            .map(|(_, unit)| match unit {
                UnitContext::One { bytes, .. } => *bytes,
                UnitContext::NeedsWhole => 0,
            })
            .sum();
        let whole = if self.whole.is_some() {
            use gimli::Section as _;
            self.sections.debug_info.reader().len() * WHOLE_BYTES_FACTOR
        } else {
            0
        };
        self.section_bytes + units + whole
    }

    fn whole_context(&mut self) -> Result<&addr2line::Context<Reader>, String> {
        if self.whole.is_none() {
            let context = addr2line::Context::from_dwarf(with_all(&self.sections))
                .map_err(|err| err.to_string())?;
            self.whole = Some(context);
        }
        self.whole
            .as_ref()
            .ok_or_else(|| "no DWARF context".to_owned())
    }

    /// The unit whose ranges `.debug_aranges` says hold `address`.
    fn unit_of(&self, address: u64) -> Option<usize> {
        let index = self
            .aranges
            .partition_point(|(begin, _, _)| *begin <= address);
        let (begin, end, unit) = *self.aranges.get(index.checked_sub(1)?)?;
        (begin <= address && address < end).then_some(unit)
    }

    /// The context over the unit at `offset` in `.debug_info`, made the first time.
    fn unit_context(&mut self, offset: usize) -> &UnitContext {
        if let Some(position) = self.units.iter().position(|(at, _)| *at == offset) {
            let entry = self.units.remove(position);
            self.units.push(entry);
        } else {
            let unit = self.make_unit_context(offset).unwrap_or_else(|err| {
                log::debug!("DWARF unit at {offset:#x} read alone: {err}");
                UnitContext::NeedsWhole
            });
            if self.units.len() >= MAX_UNITS {
                self.units.remove(0);
            }
            self.units.push((offset, unit));
        }
        // Just pushed or moved last.
        &self.units[self.units.len() - 1].1
    }

    fn make_unit_context(&self, offset: usize) -> Result<UnitContext, gimli::Error> {
        use gimli::{Reader as _, Section as _};
        if self.has_sup {
            return Ok(UnitContext::NeedsWhole);
        }
        let debug_info = self.sections.debug_info.reader();
        let header = self
            .sections
            .debug_info
            .header_from_offset(gimli::DebugInfoOffset(offset))?;
        let end = offset
            .checked_add(header.length_including_self())
            .filter(|end| *end <= debug_info.len())
            .ok_or(gimli::Error::UnexpectedEof(debug_info.offset_id()))?;
        let one = with_debug_info(&self.sections, debug_info.range(offset..end));
        let mut units = one.units();
        let Some(header) = units.next()? else {
            return Ok(UnitContext::NeedsWhole);
        };
        if refers_outside(&one.unit(header)?)? {
            return Ok(UnitContext::NeedsWhole);
        }
        let context = addr2line::Context::from_dwarf(one)?;
        Ok(UnitContext::One {
            context,
            bytes: (end - offset) * UNIT_BYTES_FACTOR,
        })
    }

    /// The functions at `address` (an ELF virtual address), innermost inlined call first and
    /// the function that contains them all last; empty when no unit covers it.
    pub(crate) fn frames(&mut self, address: u64) -> Result<Vec<SourceFrame>, gimli::Error> {
        // addr2line looks an address up as the range [address, address + 1), which overflows
        // (a panic with overflow checks) at the top of the address space, where no unit can be.
        if address == u64::MAX {
            return Ok(Vec::new());
        }
        if let Some(offset) = self.unit_of(address)
            && let UnitContext::One { context, .. } = self.unit_context(offset)
        {
            let frames = frames_in(context, address)?;
            if !frames.is_empty() {
                return Ok(frames);
            }
        }
        match self.whole_context() {
            Ok(context) => frames_in(context, address),
            Err(err) => {
                log::debug!("no DWARF context: {err}");
                Ok(Vec::new())
            }
        }
    }
}

/// The sections of `dwarf` again, sharing their bytes.
fn with_all(dwarf: &gimli::Dwarf<Reader>) -> gimli::Dwarf<Reader> {
    use gimli::Section as _;
    let mut copy = with_debug_info(dwarf, dwarf.debug_info.reader().clone());
    copy.debug_aranges = dwarf.debug_aranges.clone();
    copy.sup.clone_from(&dwarf.sup);
    copy
}

/// The functions at `address` in `context`, innermost first.
fn frames_in(
    context: &addr2line::Context<Reader>,
    address: u64,
) -> Result<Vec<SourceFrame>, gimli::Error> {
    {
        let mut iter = context.find_frames(address).skip_all_loads()?;
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
    use std::{path::Path, sync::Arc};

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
        let mut dwarf = Dwarf::load(&elf, None).unwrap();
        assert_eq!(dwarf.frames(u64::MAX), Ok(Vec::new()));
        assert!(dwarf.frames(0).is_ok());
    }

    /// Up to `most` addresses inside the functions of `elf`'s symbol table.
    fn addresses_in(elf: &ElfImage, most: usize) -> Vec<u64> {
        let mut addresses: Vec<u64> = elf
            .symbols()
            .unwrap()
            .into_iter()
            .filter(|symbol| symbol.size > 0 && symbol.address != 0)
            .flat_map(|symbol| [symbol.address, symbol.address + symbol.size / 2])
            .collect();
        addresses.sort_unstable();
        addresses.dedup();
        addresses.truncate(most);
        addresses
    }

    /// Units read alone name every address as the context over every unit does, on fixtures
    /// built from source (C, C++ and Rust with full DWARF) and on this test binary.
    #[test]
    fn one_unit_at_a_time_names_as_every_unit_at_once() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures");
        let paths = [
            fixtures.join("symbolize-c-nofp"),
            fixtures.join("symbolize-cpp"),
            fixtures.join("symbolize-rust"),
            std::fs::canonicalize("/proc/self/exe").unwrap(),
        ];
        for path in paths {
            let file = std::fs::File::open(&path)
                .unwrap_or_else(|err| panic!("{}: {err} (cargo xtask fixtures)", path.display()));
            let elf = ElfImage::parse(crate::symbolize::open::map(&file).unwrap()).unwrap();
            let mut by_unit = Dwarf::load(&elf, None).unwrap();
            assert!(!by_unit.aranges.is_empty(), "{}", path.display());
            let mut whole = Dwarf::load(&elf, None).unwrap();
            whole.aranges.clear();
            // Those the aranges cover first: they never need the whole context.
            let (mut addresses, outside): (Vec<u64>, Vec<u64>) = addresses_in(&elf, 3000)
                .into_iter()
                .partition(|address| by_unit.unit_of(*address).is_some());
            let mut named = 0;
            for address in &addresses {
                let one = by_unit.frames(*address).unwrap();
                assert_eq!(
                    one,
                    whole.frames(*address).unwrap(),
                    "{address:#x} in {}",
                    path.display()
                );
                named += usize::from(one.iter().any(|frame| frame.line.is_some()));
            }
            assert!(
                named * 2 > addresses.len(),
                "{named} of {} in {}",
                addresses.len(),
                path.display()
            );
            // Only the units hit were parsed, and the whole context was never needed.
            assert!(by_unit.whole.is_none(), "{}", path.display());
            assert!(!by_unit.units.is_empty());
            for address in &outside {
                assert_eq!(
                    by_unit.frames(*address).unwrap(),
                    whole.frames(*address).unwrap()
                );
            }
            addresses.extend(outside);
        }
    }
}
