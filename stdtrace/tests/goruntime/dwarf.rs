//! The reference answers the tests compare stdtrace's Go parsers with: the fixture's own
//! symbol table, DWARF line and inline information (through addr2line), and DWARF call frame
//! information (through gimli).

use std::{borrow::Cow, collections::HashMap};

use addr2line::fallible_iterator::FallibleIterator;
use gimli::{EndianSlice, LittleEndian, UnwindSection as _};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SymbolKind};

type Slice<'a> = EndianSlice<'a, LittleEndian>;

/// Decompressed DWARF sections of one file.
pub struct Sections<'data> {
    sections: HashMap<&'static str, Cow<'data, [u8]>>,
}

impl<'data> Sections<'data> {
    pub fn load(file: &object::File<'data>) -> Sections<'data> {
        let mut sections = HashMap::new();
        for id in [
            gimli::SectionId::DebugAbbrev,
            gimli::SectionId::DebugAddr,
            gimli::SectionId::DebugAranges,
            gimli::SectionId::DebugInfo,
            gimli::SectionId::DebugLine,
            gimli::SectionId::DebugLineStr,
            gimli::SectionId::DebugRanges,
            gimli::SectionId::DebugRngLists,
            gimli::SectionId::DebugStr,
            gimli::SectionId::DebugStrOffsets,
            gimli::SectionId::DebugLoc,
            gimli::SectionId::DebugLocLists,
            gimli::SectionId::DebugFrame,
        ] {
            if let Some(section) = file.section_by_name(id.name()) {
                let data = section
                    .uncompressed_data()
                    .unwrap_or_else(|err| panic!("decompressing {}: {err}", id.name()));
                sections.insert(id.name(), data);
            }
        }
        Sections { sections }
    }

    fn get(&self, name: &str) -> Slice<'_> {
        let data = self.sections.get(name).map(|data| &**data).unwrap_or(&[]);
        EndianSlice::new(data, LittleEndian)
    }

    pub fn dwarf(&self) -> gimli::Dwarf<Slice<'_>> {
        gimli::Dwarf::load(|id| Ok::<_, gimli::Error>(self.get(id.name()))).unwrap()
    }

    pub fn addr2line(&self) -> addr2line::Context<Slice<'_>> {
        addr2line::Context::from_dwarf(self.dwarf()).unwrap()
    }

    /// `(start, end, CFA offset from RSP)` for each row of the call frame information of the
    /// function starting at `entry`, where the CFA is defined as RSP plus an offset.
    pub fn cfa_rows(&self, entry: u64) -> Vec<(u64, u64, i64)> {
        let mut frame = gimli::DebugFrame::from(self.get(".debug_frame"));
        frame.set_address_size(8);
        let bases = gimli::BaseAddresses::default();
        let Ok(fde) = frame.fde_for_address(&bases, entry, gimli::DebugFrame::cie_from_offset)
        else {
            return Vec::new();
        };
        let mut context = gimli::UnwindContext::new();
        let mut rows = fde.rows(&frame, &bases, &mut context).unwrap();
        let mut out = Vec::new();
        while let Some(row) = rows.next_row().unwrap() {
            if let gimli::CfaRule::RegisterAndOffset { register, offset } = row.cfa()
                && *register == gimli::X86_64::RSP
            {
                out.push((row.start_address(), row.end_address(), *offset));
            }
        }
        out
    }
}

/// One frame as addr2line reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefFrame {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// The frames at `pc` from DWARF, innermost first.
pub fn frames(context: &addr2line::Context<Slice<'_>>, pc: u64) -> Vec<RefFrame> {
    let mut iter = context.find_frames(pc).skip_all_loads().unwrap();
    let mut out = Vec::new();
    while let Some(frame) = FallibleIterator::next(&mut iter).unwrap() {
        out.push(RefFrame {
            function: frame
                .function
                .as_ref()
                .map(|name| name.raw_name().unwrap().into_owned())
                .unwrap_or_default(),
            file: frame
                .location
                .as_ref()
                .and_then(|location| location.file.map(str::to_owned)),
            line: frame.location.as_ref().and_then(|location| location.line),
        });
    }
    out
}

/// The start addresses of the DWARF line table rows in `[start, end)`.
pub fn line_row_addresses(
    context: &addr2line::Context<Slice<'_>>,
    start: u64,
    end: u64,
) -> Vec<u64> {
    let mut rows = context.find_location_range(start, end).unwrap();
    let mut out = Vec::new();
    while let Some((address, _, _)) = Iterator::next(&mut rows) {
        out.push(address);
    }
    out
}

/// Function symbols by name: `(address, size)`.
pub fn function_symbols(file: &object::File<'_>) -> HashMap<String, (u64, u64)> {
    file.symbols()
        .filter(|symbol| symbol.kind() == SymbolKind::Text && symbol.size() > 0)
        .filter_map(|symbol| {
            Some((
                symbol.name().ok()?.to_owned(),
                (symbol.address(), symbol.size()),
            ))
        })
        .collect()
}
