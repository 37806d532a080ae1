//! The Go pc-line table (`.gopclntab`): every Go function's entry, name, file and line
//! tables, stack-pointer deltas and inlining records.
//!
//! Formats read (by the header's magic):
//! - Go 1.16–1.17 (`0xfffffffa`): function table of `(entry pc, record offset)` pointer pairs;
//!   function data (`FUNCDATA`) are pointers.
//! - Go 1.18–1.19 (`0xfffffff0`): `(entry offset, record offset)` `u32` pairs, entries relative
//!   to the text start the header gives; function data are `u32` offsets from
//!   `moduledata.gofunc` (the `go:func.*` symbol).
//! - Go 1.20+ (`0xfffffff1`): as 1.18, plus each record's start line, and inlining records
//!   without the call site's file and line (they come from the parent pc instead). Since Go
//!   1.26 the header's text start is 0: it comes from `runtime.text` or `moduledata.text`.
//!
//! Everything read from the table is checked against its bounds: a truncated or corrupt table
//! gives a [`GoError`] when parsing and a [`Reason`] when looking up, never a panic.

mod func;
mod functab;
mod header;
mod inline;
mod locate;
mod pctab;

pub use self::{
    func::{Func, FuncFlags, FuncKind},
    header::PclntabFormat,
    inline::Frame,
};

use self::{
    functab::View,
    header::{Header, Layout, header_text_start},
    locate::locate,
};
use super::{
    GoError, Reason,
    elf::ElfImage,
    moduledata,
    table_bytes::{SharedBytes, TableBytes},
};

/// Where the table was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PclntabSource {
    /// A section named `.gopclntab` (or `.data.rel.ro.gopclntab` in older PIE builds).
    Section,
    /// Between the `runtime.pclntab` and `runtime.epclntab` symbols.
    Symbols,
    /// Found by scanning the loaded segments for a header that checks out.
    Scan,
    /// Bytes handed to [`Pclntab::parse_bytes`].
    Bytes,
}

/// Where the text start (the base of 1.18+ entry offsets) came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextStartSource {
    /// The pclntab header (Go 1.18–1.25).
    Header,
    /// The `runtime.text` symbol.
    Symbol,
    /// `runtime.firstmoduledata.text`, found by scanning the data segments.
    Moduledata,
    /// The start of the `.text` section: right for Go's internal linker only.
    TextSection,
    /// Given by the caller of [`Pclntab::parse_bytes`].
    Given,
    /// Not needed: Go 1.16–1.17 entries are absolute.
    Absolute,
}

/// Memory outside the table that function data point into (the inlining trees).
#[derive(Debug, Clone)]
struct FuncdataMemory<'data> {
    address: u64,
    bytes: TableBytes<'data>,
}

/// A parsed pc-line table, borrowing the file's bytes, owning a copy
/// ([`Pclntab::into_owned`]) or sharing the file's ([`Pclntab::into_shared`]).
#[derive(Debug, Clone)]
pub struct Pclntab<'data> {
    data: TableBytes<'data>,
    layout: Layout,
    source: PclntabSource,
    text_start_source: TextStartSource,
    /// Base of 1.18+ function data offsets (`go:func.*`), if known.
    gofunc: Option<u64>,
    funcdata: Option<FuncdataMemory<'data>>,
    /// Relocated pointer slots in the table (Go 1.16–1.17 PIE), sorted by address.
    relocations: Vec<(u64, u64)>,
}

/// What [`Pclntab::parse`] may use that is not in the table: where `runtime.firstmoduledata`
/// keeps `gofunc`, for stripped binaries (from the runtime offsets of the binary's version).
#[derive(Debug, Clone, Copy, Default)]
pub struct PclntabHints {
    pub moduledata_gofunc_offset: Option<u64>,
}

impl<'data> Pclntab<'data> {
    /// Finds the table in an ELF file (section, symbols, or a scan of the loaded segments)
    /// and settles its text start and function data base.
    pub fn parse(elf: &ElfImage<'data>, hints: PclntabHints) -> Result<Pclntab<'data>, GoError> {
        let (address, data, source) = locate(elf)?;
        let header = Header::parse(data)?;
        let md = moduledata::find(
            elf,
            address,
            address + header.funcname_offset as u64,
            address + header.functab_offset as u64,
        );

        let (text_start, text_start_source) = if header.format == PclntabFormat::Go116 {
            (0, TextStartSource::Absolute)
        } else if let Some(start) = header_text_start(elf, address, &header) {
            (start, TextStartSource::Header)
        } else if let Some(symbol) = elf.symbol("runtime.text") {
            (symbol.address, TextStartSource::Symbol)
        } else if let Ok(md) = &md {
            (md.text, TextStartSource::Moduledata)
        } else if let Some((start, _)) = elf.section(".text") {
            (start, TextStartSource::TextSection)
        } else {
            return Err(GoError::UnknownTextStart);
        };

        let gofunc = match header.format {
            PclntabFormat::Go116 => None,
            PclntabFormat::Go118 | PclntabFormat::Go120 => elf
                .symbol("go:func.*")
                .or_else(|| elf.symbol("go.func.*"))
                .map(|symbol| symbol.address)
                .or_else(|| {
                    let md = md.as_ref().ok()?;
                    moduledata::gofunc(elf, md, hints.moduledata_gofunc_offset?)
                }),
        };
        // The inlining trees sit in read-only data before the table: keep that part of the
        // segment, up to the table (which is kept anyway).
        let funcdata_start = match header.format {
            PclntabFormat::Go116 => elf.load_containing(address).map(|segment| segment.vaddr),
            PclntabFormat::Go118 | PclntabFormat::Go120 => gofunc,
        };
        let funcdata = funcdata_start.and_then(|start| {
            let bytes = elf.bytes_from(start)?;
            let len = match address.checked_sub(start) {
                Some(before_table) if before_table > 0 => {
                    bytes.len().min(usize::try_from(before_table).ok()?)
                }
                _ => bytes.len(),
            };
            Some(FuncdataMemory {
                address: start,
                bytes: TableBytes::Borrowed(&bytes[..len]),
            })
        });
        let relocations = if header.format == PclntabFormat::Go116 {
            elf.relative_relocations_in(address, address.saturating_add(data.len() as u64))
        } else {
            Vec::new()
        };

        let table = Pclntab {
            data: TableBytes::Borrowed(data),
            layout: Layout::new(&header, address, text_start),
            source,
            text_start_source,
            gofunc,
            funcdata,
            relocations,
        };
        table.check_first_function()?;
        Ok(table)
    }

    /// Parses a table from its bytes alone (`data` starts at the header, at `address`).
    /// `text_start` overrides the header's (needed for Go 1.26+ tables). Inlined calls are not
    /// resolved: the inlining trees are outside the table.
    pub fn parse_bytes(
        data: &'data [u8],
        address: u64,
        text_start: Option<u64>,
    ) -> Result<Pclntab<'data>, GoError> {
        let header = Header::parse(data)?;
        let (text_start, text_start_source) =
            match (header.format, text_start, header.header_text_start) {
                (PclntabFormat::Go116, _, _) => (0, TextStartSource::Absolute),
                (_, Some(start), _) => (start, TextStartSource::Given),
                (_, None, Some(start)) => (start, TextStartSource::Header),
                (_, None, None) => return Err(GoError::UnknownTextStart),
            };
        let table = Pclntab {
            data: TableBytes::Borrowed(data),
            layout: Layout::new(&header, address, text_start),
            source: PclntabSource::Bytes,
            text_start_source,
            gofunc: None,
            funcdata: None,
            relocations: Vec::new(),
        };
        table.check_first_function()?;
        Ok(table)
    }

    /// A copy that owns its bytes, independent of the file's.
    pub fn into_owned(self) -> Pclntab<'static> {
        self.detach(TableBytes::into_owned)
    }

    /// A table independent of the borrowed bytes that shares `file` (the whole file it was
    /// parsed from, owned by the caller: a memory map, say) instead of copying the parts of it
    /// the table reads. Bytes that are not inside `file` are copied.
    pub fn into_shared(self, file: &SharedBytes) -> Pclntab<'static> {
        self.detach(|bytes| bytes.into_shared(file))
    }

    fn detach(self, detach: impl Fn(TableBytes<'data>) -> TableBytes<'static>) -> Pclntab<'static> {
        Pclntab {
            data: detach(self.data),
            layout: self.layout,
            source: self.source,
            text_start_source: self.text_start_source,
            gofunc: self.gofunc,
            funcdata: self.funcdata.map(|memory| FuncdataMemory {
                address: memory.address,
                bytes: detach(memory.bytes),
            }),
            relocations: self.relocations,
        }
    }

    fn view(&self) -> View<'_> {
        View {
            layout: &self.layout,
            data: &self.data,
            relocations: &self.relocations,
        }
    }

    /// The first function's record must agree with the function table.
    fn check_first_function(&self) -> Result<(), GoError> {
        self.func_at_index(0)
            .map(|_| ())
            .map_err(|reason| GoError::BadPclntab(format!("first function: {reason}")))
    }

    pub fn format(&self) -> PclntabFormat {
        self.layout.format
    }
    pub fn source(&self) -> PclntabSource {
        self.source
    }
    /// The address of the header.
    pub fn address(&self) -> u64 {
        self.layout.address
    }
    /// The size of the copy of the table kept.
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// The base of 1.18+ entry offsets (0 for Go 1.16–1.17, whose entries are absolute).
    pub fn text_start(&self) -> u64 {
        self.layout.text_start
    }
    pub fn text_start_source(&self) -> TextStartSource {
        self.text_start_source
    }
    /// The base of 1.18+ function data offsets (`go:func.*`), if found.
    pub fn gofunc(&self) -> Option<u64> {
        self.gofunc
    }
    pub fn func_count(&self) -> usize {
        self.layout.nfunc
    }
    /// The pointer size the table states.
    pub fn ptr_size(&self) -> usize {
        self.layout.ptr_size
    }

    /// The range of pcs the table covers.
    pub fn text_range(&self) -> Option<(u64, u64)> {
        let view = self.view();
        Some((
            view.functab_entry(0)?,
            view.functab_entry(self.layout.nfunc)?,
        ))
    }

    /// The `i`th function in the function table.
    pub fn func_at_index(&self, i: usize) -> Result<Func, Reason> {
        self.view().func_at_index(i)
    }

    /// Every function, in pc order.
    pub fn funcs(&self) -> impl Iterator<Item = Result<Func, Reason>> + '_ {
        (0..self.layout.nfunc).map(|i| self.func_at_index(i))
    }

    /// The first function with this exact name (a linear search).
    pub fn func_by_name(&self, name: &str) -> Option<Func> {
        let view = self.view();
        (0..self.layout.nfunc).find_map(|i| {
            let name_offset = view.name_offset_of(i)?;
            if view.name_at(name_offset)? == name {
                view.func_at_index(i).ok()
            } else {
                None
            }
        })
    }

    /// The function containing `pc`.
    pub fn find_func(&self, pc: u64) -> Result<Func, Reason> {
        let view = self.view();
        let corrupt = Reason::Corrupt {
            what: "function table",
        };
        let start = view.functab_entry(0).ok_or(corrupt.clone())?;
        let end = view
            .functab_entry(self.layout.nfunc)
            .ok_or(corrupt.clone())?;
        if pc < start || pc >= end {
            return Err(Reason::PcOutsideText { pc });
        }
        // The last slot whose entry is <= pc.
        let (mut low, mut high) = (0usize, self.layout.nfunc);
        while high - low > 1 {
            let mid = low + (high - low) / 2;
            let entry = view.functab_entry(mid).ok_or(corrupt.clone())?;
            if entry <= pc {
                low = mid;
            } else {
                high = mid;
            }
        }
        let func = view.func_at_index(low)?;
        if pc < func.entry || pc >= func.end {
            return Err(Reason::Corrupt {
                what: "function table order",
            });
        }
        Ok(func)
    }
}

#[cfg(test)]
mod tests;
