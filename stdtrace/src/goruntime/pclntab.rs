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

use std::borrow::Cow;

use super::{
    GoError, Reason,
    elf::{ElfImage, read_uint},
    moduledata,
    pcvalue::{self, PcValueMiss},
    table_bytes::{SharedBytes, TableBytes},
};

/// `PCDATA` table numbers and `FUNCDATA` slot numbers (the same in every supported version).
const PCDATA_INL_TREE_INDEX: u32 = 2;
const FUNCDATA_INL_TREE: u32 = 3;

/// Bounds on what a sane table holds, to stop a corrupt one from making us loop or allocate.
const MAX_INLINE_DEPTH: usize = 256;
const MAX_NAME_LEN: usize = 1 << 16;
const MAX_INLINE_INDEX: i32 = 1 << 24;

/// Which pclntab layout a binary uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PclntabFormat {
    /// Go 1.16 and 1.17.
    Go116,
    /// Go 1.18 and 1.19.
    Go118,
    /// Go 1.20 and later.
    Go120,
}

impl PclntabFormat {
    /// The format a magic number stands for; magics of Go before 1.16 are an error.
    pub fn from_magic(magic: u32) -> Result<PclntabFormat, GoError> {
        match magic {
            0xffff_fffa => Ok(PclntabFormat::Go116),
            0xffff_fff0 => Ok(PclntabFormat::Go118),
            0xffff_fff1 => Ok(PclntabFormat::Go120),
            0xffff_fffb => Err(GoError::TooOld { magic }),
            _ => Err(GoError::BadPclntab(format!("unknown magic {magic:#010x}"))),
        }
    }

    /// The size of a function record's fixed part.
    fn record_header_size(self, ptr_size: usize) -> usize {
        match self {
            // entry (pointer), then 8 × u32, then funcID, flag, pad, nfuncdata.
            PclntabFormat::Go116 => ptr_size + 8 * 4 + 4,
            PclntabFormat::Go118 => 9 * 4 + 4,
            // As 1.18 plus startLine.
            PclntabFormat::Go120 => 10 * 4 + 4,
        }
    }

    /// The size of one inlining record.
    fn inlined_call_size(self) -> u64 {
        match self {
            // parent i16, funcID u8, pad, file i32, line i32, func_ i32, parentPc i32.
            PclntabFormat::Go116 | PclntabFormat::Go118 => 20,
            // funcID u8, pad [3], nameOff i32, parentPc i32, startLine i32.
            PclntabFormat::Go120 => 16,
        }
    }
}

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

/// Function flags (`funcFlag`, Go 1.17+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FuncFlags(pub u8);

impl FuncFlags {
    /// The function is at the top (outermost end) of its stack: unwinding stops here.
    pub const TOP_FRAME: u8 = 1;
    /// The function writes SP other than by constant adjustments: unwinding past it is unsafe.
    pub const SP_WRITE: u8 = 2;
    /// The function is written in assembly.
    pub const ASM: u8 = 4;

    pub fn top_frame(self) -> bool {
        self.0 & Self::TOP_FRAME != 0
    }
    pub fn sp_write(self) -> bool {
        self.0 & Self::SP_WRITE != 0
    }
    pub fn asm(self) -> bool {
        self.0 & Self::ASM != 0
    }
}

/// What a runtime function means to stack unwinding. Derived from the function's name, the
/// way the linker derives the `funcID` (whose numbering changes between Go versions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FuncKind {
    Normal,
    /// `runtime.goexit`: the outermost frame of every goroutine.
    Goexit,
    /// `runtime.mstart`: the outermost frame of a thread's g0.
    Mstart,
    /// `runtime.rt0_go`: the outermost frame of the main thread.
    Rt0Go,
    /// `runtime.main`: the main goroutine's Go entry.
    RuntimeMain,
    /// Switches to g0's stack and back (the frame below is on another stack).
    Systemstack,
    SystemstackSwitch,
    Mcall,
    Morestack,
    Asmcgocall,
    Cgocallback,
    Gogo,
    Sigpanic,
    Gopanic,
    AsyncPreempt,
}

impl FuncKind {
    /// The kind of the function with this name.
    pub fn from_name(name: &str) -> FuncKind {
        match name {
            "runtime.goexit" => FuncKind::Goexit,
            "runtime.mstart" => FuncKind::Mstart,
            "runtime.rt0_go" => FuncKind::Rt0Go,
            "runtime.main" => FuncKind::RuntimeMain,
            "runtime.systemstack" => FuncKind::Systemstack,
            "runtime.systemstack_switch" => FuncKind::SystemstackSwitch,
            "runtime.mcall" => FuncKind::Mcall,
            "runtime.morestack" => FuncKind::Morestack,
            "runtime.asmcgocall" => FuncKind::Asmcgocall,
            "runtime.cgocallback" => FuncKind::Cgocallback,
            "runtime.gogo" => FuncKind::Gogo,
            "runtime.sigpanic" => FuncKind::Sigpanic,
            "runtime.gopanic" => FuncKind::Gopanic,
            "runtime.asyncPreempt" => FuncKind::AsyncPreempt,
            _ => FuncKind::Normal,
        }
    }
}

/// One Go function, as its record in the table describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Func {
    pub name: String,
    pub entry: u64,
    /// The next function's entry (or the end of the text).
    pub end: u64,
    /// The raw `funcID` (its meaning depends on the Go version; see [`Func::kind`]).
    pub func_id: u8,
    pub flags: FuncFlags,
    pub kind: FuncKind,
    /// The line of the `func` keyword (Go 1.20+).
    pub start_line: Option<i32>,
    record: usize,
    pcsp: u32,
    pcfile: u32,
    pcln: u32,
    npcdata: u32,
    nfuncdata: u8,
    cu_offset: u32,
}

impl Func {
    /// Whether unwinding ends at this function (a complete stack): `runtime.goexit`,
    /// `runtime.mstart`, `runtime.rt0_go` and the like.
    pub fn is_outermost(&self) -> bool {
        self.flags.top_frame()
            || matches!(
                self.kind,
                FuncKind::Goexit | FuncKind::Mstart | FuncKind::Rt0Go
            )
    }

    /// Whether unwinding cannot safely continue past this function (it sets SP itself).
    pub fn writes_sp(&self) -> bool {
        self.flags.sp_write()
    }
}

/// One frame at a pc: a real function, or a call inlined into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// This call was inlined into the frame after it.
    pub inlined: bool,
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

/// Where things are in a table: the header's facts, with the text start settled.
#[derive(Debug, Clone, Copy)]
struct Layout {
    address: u64,
    format: PclntabFormat,
    little_endian: bool,
    quantum: u8,
    ptr_size: usize,
    nfunc: usize,
    text_start: u64,
    funcname_offset: usize,
    cu_offset: usize,
    filetab_offset: usize,
    pctab_offset: usize,
    functab_offset: usize,
}

impl Layout {
    fn new(header: &Header, address: u64, text_start: u64) -> Layout {
        Layout {
            address,
            format: header.format,
            little_endian: header.little_endian,
            quantum: header.quantum,
            ptr_size: header.ptr_size,
            nfunc: header.nfunc,
            text_start,
            funcname_offset: header.funcname_offset,
            cu_offset: header.cu_offset,
            filetab_offset: header.filetab_offset,
            pctab_offset: header.pctab_offset,
            functab_offset: header.functab_offset,
        }
    }
}

/// What [`Pclntab::parse`] may use that is not in the table: where `runtime.firstmoduledata`
/// keeps `gofunc`, for stripped binaries (from the runtime offsets of the binary's version).
#[derive(Debug, Clone, Copy, Default)]
pub struct PclntabHints {
    pub moduledata_gofunc_offset: Option<u64>,
}

/// The fixed header fields, before the text start is settled.
struct Header {
    format: PclntabFormat,
    little_endian: bool,
    quantum: u8,
    ptr_size: usize,
    nfunc: usize,
    header_text_start: Option<u64>,
    funcname_offset: usize,
    cu_offset: usize,
    filetab_offset: usize,
    pctab_offset: usize,
    functab_offset: usize,
}

impl Header {
    fn parse(data: &[u8]) -> Result<Header, GoError> {
        let truncated = || GoError::BadPclntab("truncated header".to_owned());
        let magic_bytes = data.get(..4).ok_or_else(truncated)?;
        let le = read_uint(magic_bytes, 4, true) as u32;
        let be = read_uint(magic_bytes, 4, false) as u32;
        let (format, little_endian) = match PclntabFormat::from_magic(le) {
            Ok(format) => (format, true),
            Err(le_err) => match PclntabFormat::from_magic(be) {
                Ok(format) => (format, false),
                Err(err @ GoError::TooOld { .. }) => return Err(err),
                Err(_) => return Err(le_err),
            },
        };
        let fixed = data.get(..8).ok_or_else(truncated)?;
        if fixed[4] != 0 || fixed[5] != 0 {
            return Err(GoError::BadPclntab("header padding is not zero".to_owned()));
        }
        let quantum = fixed[6];
        if !matches!(quantum, 1 | 2 | 4) {
            return Err(GoError::BadPclntab(format!(
                "instruction size quantum {quantum}"
            )));
        }
        let ptr_size = usize::from(fixed[7]);
        if ptr_size != 4 && ptr_size != 8 {
            return Err(GoError::BadPclntab(format!("pointer size {ptr_size}")));
        }
        let words = match format {
            PclntabFormat::Go116 => 7,
            PclntabFormat::Go118 | PclntabFormat::Go120 => 8,
        };
        let header_len = 8 + words * ptr_size;
        let header = data.get(..header_len).ok_or_else(truncated)?;
        let word = |i: usize| read_uint(&header[8 + i * ptr_size..], ptr_size, little_endian);
        let offset = |i: usize| -> Result<usize, GoError> {
            let value = word(i);
            usize::try_from(value)
                .ok()
                .filter(|offset| *offset >= header_len && *offset <= data.len())
                .ok_or_else(|| {
                    GoError::BadPclntab(format!("table offset {value:#x} outside the table"))
                })
        };
        let nfunc = usize::try_from(word(0))
            .map_err(|_| GoError::BadPclntab("function count does not fit".to_owned()))?;
        let (header_text_start, first_offset) = match format {
            PclntabFormat::Go116 => (None, 2),
            PclntabFormat::Go118 | PclntabFormat::Go120 => (Some(word(2)).filter(|t| *t != 0), 3),
        };
        let header = Header {
            format,
            little_endian,
            quantum,
            ptr_size,
            nfunc,
            header_text_start,
            funcname_offset: offset(first_offset)?,
            cu_offset: offset(first_offset + 1)?,
            filetab_offset: offset(first_offset + 2)?,
            pctab_offset: offset(first_offset + 3)?,
            functab_offset: offset(first_offset + 4)?,
        };
        let entry_size = header.functab_entry_size();
        let functab_len = nfunc
            .checked_add(1)
            .and_then(|entries| entries.checked_mul(entry_size))
            .ok_or_else(|| GoError::BadPclntab("function count overflows".to_owned()))?;
        if header.functab_offset.saturating_add(functab_len) > data.len() {
            return Err(GoError::BadPclntab(format!(
                "function table of {nfunc} entries does not fit in {} bytes",
                data.len()
            )));
        }
        if nfunc == 0 {
            return Err(GoError::BadPclntab("no functions".to_owned()));
        }
        Ok(header)
    }

    fn functab_entry_size(&self) -> usize {
        match self.format {
            PclntabFormat::Go116 => 2 * self.ptr_size,
            PclntabFormat::Go118 | PclntabFormat::Go120 => 8,
        }
    }
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

    /// The value at `pc` of the pc-value table at `table` (an offset into the pc tables).
    fn pcvalue(&self, func: &Func, table: u32, pc: u64, what: &'static str) -> Result<i32, Reason> {
        if table == 0 {
            return Err(Reason::NoTable { what });
        }
        let bytes = self
            .layout
            .pctab_offset
            .checked_add(table as usize)
            .and_then(|start| self.data.get(start..))
            .ok_or(Reason::Corrupt { what })?;
        pcvalue::value_at(bytes, func.entry, pc, self.layout.quantum).map_err(|miss| match miss {
            PcValueMiss::NotCovered => Reason::NotCovered { what, pc },
            PcValueMiss::Corrupt => Reason::Corrupt { what },
        })
    }

    /// The offset of `PCDATA` table `index` of a function, 0 if it has none.
    fn pcdata_table(&self, func: &Func, index: u32) -> Result<u32, Reason> {
        if index >= func.npcdata {
            return Ok(0);
        }
        let header_size = self.layout.format.record_header_size(self.layout.ptr_size);
        let at = func.record + header_size + index as usize * 4;
        self.view()
            .u32_at(at)
            .ok_or(Reason::Corrupt { what: "pcdata" })
    }

    /// The address of `FUNCDATA` slot `index` of a function, `None` if it has none.
    fn funcdata_address(&self, func: &Func, index: u32) -> Result<Option<u64>, Reason> {
        if index >= u32::from(func.nfuncdata) {
            return Ok(None);
        }
        let corrupt = Reason::Corrupt { what: "funcdata" };
        let view = self.view();
        let layout = &self.layout;
        let after_pcdata = func
            .record
            .checked_add(layout.format.record_header_size(layout.ptr_size))
            .and_then(|at| at.checked_add(func.npcdata as usize * 4))
            .ok_or(corrupt.clone())?;
        match layout.format {
            PclntabFormat::Go116 => {
                // Pointers, aligned to the pointer size in memory.
                let mut at = after_pcdata;
                if layout.ptr_size == 8 && !layout.address.wrapping_add(at as u64).is_multiple_of(8)
                {
                    at += 4;
                }
                let slot = at + index as usize * layout.ptr_size;
                let pointer = view.pointer_at(slot).ok_or(corrupt)?;
                Ok((pointer != 0).then_some(pointer))
            }
            PclntabFormat::Go118 | PclntabFormat::Go120 => {
                let offset = view
                    .u32_at(after_pcdata + index as usize * 4)
                    .ok_or(corrupt)?;
                if offset == u32::MAX {
                    return Ok(None);
                }
                let gofunc = self.gofunc.ok_or(Reason::NoGofunc)?;
                Ok(Some(gofunc.wrapping_add(u64::from(offset))))
            }
        }
    }

    /// Bytes at an address in the table or in the kept function data.
    fn read_memory(&self, address: u64, len: usize) -> Option<&[u8]> {
        if let Some(offset) = address.checked_sub(self.layout.address) {
            let offset = usize::try_from(offset).ok()?;
            if let Some(bytes) = self.data.get(offset..offset.checked_add(len)?) {
                return Some(bytes);
            }
        }
        let memory = self.funcdata.as_ref()?;
        let offset = usize::try_from(address.checked_sub(memory.address)?).ok()?;
        memory.bytes.get(offset..offset.checked_add(len)?)
    }

    /// The source file and line at `pc` in `func` (the innermost position when code was
    /// inlined there).
    pub fn file_line(&self, func: &Func, pc: u64) -> Result<(String, u32), Reason> {
        let file_index = self.pcvalue(func, func.pcfile, pc, "pcfile")?;
        let line = self.pcvalue(func, func.pcln, pc, "pcln")?;
        let file = self.view().file_name(func.cu_offset, file_index)?;
        let line = u32::try_from(line).map_err(|_| Reason::Corrupt { what: "pcln" })?;
        Ok((file, line))
    }

    /// How far SP is below the function's entry SP at `pc`: the frame size there. On amd64
    /// the frame's return address is at `sp + delta`, the caller's SP just above it.
    pub fn sp_delta(&self, pc: u64) -> Result<u32, Reason> {
        let func = self.find_func(pc)?;
        self.sp_delta_in(&func, pc)
    }

    /// [`Pclntab::sp_delta`] for a function already found.
    pub fn sp_delta_in(&self, func: &Func, pc: u64) -> Result<u32, Reason> {
        let delta = self.pcvalue(func, func.pcsp, pc, "pcsp")?;
        u32::try_from(delta).map_err(|_| Reason::Corrupt { what: "pcsp" })
    }

    /// The inlining tree index at `pc` (-1: not in inlined code).
    pub fn inline_index(&self, func: &Func, pc: u64) -> Result<i32, Reason> {
        let table = self.pcdata_table(func, PCDATA_INL_TREE_INDEX)?;
        if table == 0 {
            return Ok(-1);
        }
        self.pcvalue(func, table, pc, "inlining index")
    }

    /// The frames at `pc`, innermost first: each inlined call, then the real function last.
    /// For a return address, pass the address minus one (a pc inside the call).
    pub fn frames(&self, pc: u64) -> Result<Vec<Frame>, Reason> {
        let func = self.find_func(pc)?;
        let tree = self.funcdata_address(&func, FUNCDATA_INL_TREE)?;
        let mut frames = Vec::new();
        let mut at = pc;
        for _ in 0..MAX_INLINE_DEPTH {
            let (file, line) = match self.file_line(&func, at) {
                Ok((file, line)) => (Some(file), Some(line)),
                Err(_) => (None, None),
            };
            let index = match tree {
                Some(_) => self.inline_index(&func, at)?,
                None => -1,
            };
            let Some(tree) = tree.filter(|_| index >= 0) else {
                frames.push(Frame {
                    function: func.name.clone(),
                    file,
                    line,
                    inlined: false,
                });
                return Ok(frames);
            };
            let call = self.inlined_call(tree, index)?;
            let function = self
                .view()
                .name_at(call.name_offset)
                .ok_or(Reason::Corrupt {
                    what: "inlined function name",
                })?
                .into_owned();
            frames.push(Frame {
                function,
                file,
                line,
                inlined: true,
            });
            // Continue at an instruction whose position is the call site, in the caller.
            at = u64::try_from(call.parent_pc)
                .ok()
                .and_then(|offset| func.entry.checked_add(offset))
                .filter(|parent| *parent < func.end)
                .ok_or(Reason::Corrupt {
                    what: "inlining tree parent pc",
                })?;
        }
        Err(Reason::Corrupt {
            what: "inlining tree depth",
        })
    }

    fn inlined_call(&self, tree: u64, index: i32) -> Result<InlinedCall, Reason> {
        let corrupt = Reason::Corrupt {
            what: "inlining tree",
        };
        if !(0..MAX_INLINE_INDEX).contains(&index) {
            return Err(corrupt);
        }
        let size = self.layout.format.inlined_call_size();
        let address = tree
            .checked_add(index as u64 * size)
            .ok_or(corrupt.clone())?;
        let bytes = self
            .read_memory(address, size as usize)
            .ok_or(Reason::NoInlineTree)?;
        let u32_at = |at: usize| read_uint(&bytes[at..], 4, self.layout.little_endian) as u32;
        Ok(match self.layout.format {
            PclntabFormat::Go116 | PclntabFormat::Go118 => InlinedCall {
                name_offset: u32_at(12),
                parent_pc: u32_at(16) as i32,
            },
            PclntabFormat::Go120 => InlinedCall {
                name_offset: u32_at(4),
                parent_pc: u32_at(8) as i32,
            },
        })
    }
}

/// One record of an inlining tree: the inlined function and where it was called.
struct InlinedCall {
    name_offset: u32,
    parent_pc: i32,
}

/// Reads a table's function table and records from borrowed bytes: used on owned tables and
/// on scan candidates alike.
struct View<'a> {
    layout: &'a Layout,
    data: &'a [u8],
    relocations: &'a [(u64, u64)],
}

impl View<'_> {
    fn uint(&self, offset: usize, size: usize) -> Option<u64> {
        let bytes = self.data.get(offset..offset.checked_add(size)?)?;
        Some(read_uint(bytes, size, self.layout.little_endian))
    }

    fn u32_at(&self, offset: usize) -> Option<u32> {
        self.uint(offset, 4).map(|value| value as u32)
    }

    /// A pointer in the table, relocated if the dynamic loader would relocate it.
    fn pointer_at(&self, offset: usize) -> Option<u64> {
        let address = self.layout.address.checked_add(offset as u64)?;
        if let Ok(i) = self
            .relocations
            .binary_search_by_key(&address, |(at, _)| *at)
        {
            return Some(self.relocations[i].1);
        }
        self.uint(offset, self.layout.ptr_size)
    }

    fn functab_slot(&self, i: usize) -> Option<usize> {
        let size = match self.layout.format {
            PclntabFormat::Go116 => 2 * self.layout.ptr_size,
            PclntabFormat::Go118 | PclntabFormat::Go120 => 8,
        };
        self.layout.functab_offset.checked_add(i.checked_mul(size)?)
    }

    /// The entry pc of function table slot `i` (`i == nfunc` is the end of the text).
    fn functab_entry(&self, i: usize) -> Option<u64> {
        let slot = self.functab_slot(i)?;
        match self.layout.format {
            PclntabFormat::Go116 => self.pointer_at(slot),
            PclntabFormat::Go118 | PclntabFormat::Go120 => {
                let offset = self.u32_at(slot)?;
                self.layout.text_start.checked_add(u64::from(offset))
            }
        }
    }

    /// The record offset (from the function table's start) of function table slot `i`.
    fn functab_record(&self, i: usize) -> Option<usize> {
        let slot = self.functab_slot(i)?;
        let value = match self.layout.format {
            PclntabFormat::Go116 => {
                let ptr_size = self.layout.ptr_size;
                self.uint(slot + ptr_size, ptr_size)?
            }
            PclntabFormat::Go118 | PclntabFormat::Go120 => u64::from(self.u32_at(slot + 4)?),
        };
        usize::try_from(value).ok()
    }

    fn record_of(&self, i: usize) -> Option<usize> {
        self.layout
            .functab_offset
            .checked_add(self.functab_record(i)?)
    }

    fn name_offset_of(&self, i: usize) -> Option<u32> {
        let field = match self.layout.format {
            PclntabFormat::Go116 => self.layout.ptr_size,
            PclntabFormat::Go118 | PclntabFormat::Go120 => 4,
        };
        self.u32_at(self.record_of(i)?.checked_add(field)?)
    }

    /// A NUL-terminated function name in the name table.
    fn name_at(&self, offset: u32) -> Option<Cow<'_, str>> {
        let start = self
            .layout
            .funcname_offset
            .checked_add(usize::try_from(offset).ok()?)?;
        c_string(self.data, start).map(String::from_utf8_lossy)
    }

    /// The name of file `index` of the compilation unit at `cu_offset`.
    fn file_name(&self, cu_offset: u32, index: i32) -> Result<String, Reason> {
        let corrupt = Reason::Corrupt { what: "file table" };
        let index = u32::try_from(index).map_err(|_| corrupt.clone())?;
        let at = usize::try_from(u64::from(cu_offset) + u64::from(index))
            .ok()
            .and_then(|slot| slot.checked_mul(4))
            .and_then(|slot| slot.checked_add(self.layout.cu_offset))
            .ok_or(corrupt.clone())?;
        let file_offset = self.u32_at(at).ok_or(corrupt.clone())?;
        if file_offset == u32::MAX {
            return Err(Reason::NoTable { what: "file" });
        }
        let start = self
            .layout
            .filetab_offset
            .checked_add(file_offset as usize)
            .ok_or(corrupt.clone())?;
        let name = c_string(self.data, start).ok_or(corrupt)?;
        Ok(String::from_utf8_lossy(name).into_owned())
    }

    /// The `i`th function in the function table.
    fn func_at_index(&self, i: usize) -> Result<Func, Reason> {
        let corrupt = |what| Reason::Corrupt { what };
        let layout = self.layout;
        if i >= layout.nfunc {
            return Err(corrupt("function index"));
        }
        let entry = self.functab_entry(i).ok_or(corrupt("function table"))?;
        let end = self.functab_entry(i + 1).ok_or(corrupt("function table"))?;
        if end < entry {
            return Err(corrupt("function table order"));
        }
        let record = self.record_of(i).ok_or(corrupt("function table"))?;
        let header_size = layout.format.record_header_size(layout.ptr_size);
        let fixed = self
            .data
            .get(record..record.saturating_add(header_size))
            .ok_or(corrupt("function record"))?;
        let u32_field = |at: usize| read_uint(&fixed[at..], 4, layout.little_endian) as u32;

        let (fields_at, record_entry) = match layout.format {
            PclntabFormat::Go116 => (
                layout.ptr_size,
                self.pointer_at(record).ok_or(corrupt("function record"))?,
            ),
            PclntabFormat::Go118 | PclntabFormat::Go120 => (
                4,
                layout
                    .text_start
                    .checked_add(u64::from(u32_field(0)))
                    .ok_or(corrupt("function record"))?,
            ),
        };
        if record_entry != entry {
            return Err(corrupt("function record entry"));
        }
        // Fields after the entry: nameoff, args, deferreturn, pcsp, pcfile, pcln, npcdata,
        // cuOffset, [startLine,] funcID, flag, pad, nfuncdata.
        let name_offset = u32_field(fields_at);
        let pcsp = u32_field(fields_at + 12);
        let pcfile = u32_field(fields_at + 16);
        let pcln = u32_field(fields_at + 20);
        let npcdata = u32_field(fields_at + 24);
        let cu_offset = u32_field(fields_at + 28);
        let (start_line, tail) = match layout.format {
            PclntabFormat::Go120 => (Some(u32_field(fields_at + 32) as i32), fields_at + 36),
            PclntabFormat::Go116 | PclntabFormat::Go118 => (None, fields_at + 32),
        };
        let func_id = fixed[tail];
        let flags = FuncFlags(fixed[tail + 1]);
        let nfuncdata = fixed[tail + 3];
        // The pcdata and funcdata arrays must fit too.
        let funcdata_size = match layout.format {
            PclntabFormat::Go116 => layout.ptr_size,
            PclntabFormat::Go118 | PclntabFormat::Go120 => 4,
        };
        let arrays = (npcdata as usize)
            .checked_mul(4)
            .and_then(|pcdata| pcdata.checked_add(usize::from(nfuncdata) * funcdata_size));
        if arrays
            .and_then(|len| record.checked_add(header_size)?.checked_add(len))
            .is_none_or(|end| end > self.data.len())
        {
            return Err(corrupt("function record"));
        }
        let name = self
            .name_at(name_offset)
            .ok_or(corrupt("function name"))?
            .into_owned();
        let kind = FuncKind::from_name(&name);
        Ok(Func {
            name,
            entry,
            end,
            func_id,
            flags,
            kind,
            start_line,
            record,
            pcsp,
            pcfile,
            pcln,
            npcdata,
            nfuncdata,
            cu_offset,
        })
    }
}

/// The bytes from `start` up to the next NUL (which must come within a sane length).
fn c_string(data: &[u8], start: usize) -> Option<&[u8]> {
    let rest = data.get(start..)?;
    let len = rest.iter().take(MAX_NAME_LEN).position(|byte| *byte == 0)?;
    Some(&rest[..len])
}

/// The header's text start, as the loader would relocate it (zero in Go 1.26+).
fn header_text_start(elf: &ElfImage<'_>, address: u64, header: &Header) -> Option<u64> {
    if header.format == PclntabFormat::Go116 {
        return None;
    }
    // The word after nfunc and nfiles.
    let slot = address + 8 + 2 * header.ptr_size as u64;
    let relocated = if header.ptr_size == 8 {
        elf.read_pointer(slot)
    } else {
        None
    };
    relocated
        .filter(|start| *start != 0)
        .or(header.header_text_start)
}

/// The section names the table has had.
const SECTION_NAMES: [&str; 2] = [".gopclntab", ".data.rel.ro.gopclntab"];

/// Finds the table's bytes: `(address, bytes from the header on, how it was found)`.
fn locate<'data>(elf: &ElfImage<'data>) -> Result<(u64, &'data [u8], PclntabSource), GoError> {
    for name in SECTION_NAMES {
        if let Some((address, data)) = elf.section(name) {
            return Ok((address, data, PclntabSource::Section));
        }
    }
    if let (Some(start), Some(end)) = (
        elf.symbol("runtime.pclntab"),
        elf.symbol("runtime.epclntab"),
    ) {
        let len = end
            .address
            .checked_sub(start.address)
            .and_then(|len| usize::try_from(len).ok());
        if let Some(data) = len.and_then(|len| elf.read(start.address, len)) {
            return Ok((start.address, data, PclntabSource::Symbols));
        }
    }
    scan(elf)
}

/// Looks for a header that checks out at pointer-aligned addresses of every loaded segment.
/// A header from before Go 1.16 is reported as such rather than as "not found".
fn scan<'data>(elf: &ElfImage<'data>) -> Result<(u64, &'data [u8], PclntabSource), GoError> {
    let mut too_old = None;
    for segment in elf.loads() {
        if segment.executable {
            continue;
        }
        let data = elf.segment_data(segment);
        let mut offset = ((8 - segment.vaddr % 8) % 8) as usize;
        while offset + 8 <= data.len() {
            let candidate = &data[offset..];
            let magic_like = candidate[..3] == [0xff; 3] || candidate[1..4] == [0xff; 3];
            if magic_like && candidate[4] == 0 && candidate[5] == 0 {
                let address = segment.vaddr.wrapping_add(offset as u64);
                match Header::parse(candidate) {
                    Ok(header) if plausible(elf, address, candidate, &header) => {
                        return Ok((address, candidate, PclntabSource::Scan));
                    }
                    Err(err @ GoError::TooOld { .. }) => too_old = Some(err),
                    _ => {}
                }
            }
            offset += 8;
        }
    }
    Err(too_old.unwrap_or(GoError::NoPclntab))
}

/// Whether a header found by scanning describes a real table: its first and last functions'
/// records agree with the function table and their names read.
fn plausible(elf: &ElfImage<'_>, address: u64, data: &[u8], header: &Header) -> bool {
    // Entries are only compared with each other here: any text start will do.
    let text_start = header_text_start(elf, address, header).unwrap_or(0);
    let layout = Layout::new(header, address, text_start);
    let view = View {
        layout: &layout,
        data,
        relocations: &[],
    };
    view.func_at_index(0).is_ok() && view.func_at_index(header.nfunc - 1).is_ok()
}

#[cfg(test)]
mod tests;
