//! Where the fields of the Go runtime's `g` (a goroutine) and `m` (a thread) are, so that
//! kernel code can follow `thread pointer → g → goid` and `g → m → curg`.
//!
//! From the binary's own DWARF when it has some (`.debug_info`, compressed or not); otherwise
//! from a table generated from real toolchains' DWARF (`offsets_table.rs`, keyed by Go minor
//! version). A version newer (or older) than any in the table gets the nearest row, flagged
//! as a guess.

use std::{borrow::Cow, collections::HashMap};

use gimli::{AttributeValue, EndianSlice, LittleEndian, UnitOffset};

use super::{Reason, elf::ElfImage, offsets_table::TABLE, version::GoVersion};

/// Offsets in `runtime.g`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GOffsets {
    /// `goid` (8 bytes: int64 before Go 1.20, uint64 after).
    pub goid: u64,
    /// `m`: the thread running this goroutine (a pointer; nil when not running).
    pub m: u64,
    /// `sched.sp`, `sched.pc`, `sched.bp`: where a descheduled goroutine stopped.
    pub sched_sp: u64,
    pub sched_pc: u64,
    pub sched_bp: u64,
    /// `stack.lo`, `stack.hi`: the goroutine's stack bounds.
    pub stack_lo: u64,
    pub stack_hi: u64,
    /// `atomicstatus` (4 bytes): `_Grunning`, `_Gsyscall`, ...
    pub atomicstatus: u64,
    /// `gopc`: the pc of the `go` statement that created the goroutine.
    pub gopc: u64,
    /// `startpc`: the goroutine's function.
    pub startpc: u64,
    /// `parentGoid` (8 bytes, Go 1.21+).
    pub parent_goid: Option<u64>,
    /// `waitsince` (8 bytes): when the goroutine blocked (nanotime).
    pub waitsince: u64,
    /// `waitreason` (1 byte).
    pub waitreason: u64,
    /// `syscallsp`, `syscallpc`: where a goroutine in a system call entered it.
    pub syscallsp: u64,
    pub syscallpc: u64,
    /// `labels`: profiler labels (a pointer).
    pub labels: Option<u64>,
}

/// Offsets in `runtime.m`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MOffsets {
    /// `g0`: the thread's scheduling goroutine.
    pub g0: u64,
    /// `curg`: the user goroutine the thread runs (also while it is in C or a system call).
    pub curg: u64,
    /// `procid`: the thread id.
    pub procid: u64,
    /// `gsignal`: the signal-handling goroutine.
    pub gsignal: u64,
    /// `tls`: the thread-local slots (the g slot for static binaries is `tls[0]`).
    pub tls: Option<u64>,
    /// `id`: the runtime's number for the thread.
    pub id: u64,
    /// `alllink`: the next m in the `runtime.allm` list.
    pub alllink: u64,
}

/// Offsets in `runtime.moduledata`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuledataOffsets {
    /// `text`: where the Go text starts.
    pub text: u64,
    /// `gofunc` (Go 1.18+): the base of function data offsets.
    pub gofunc: Option<u64>,
}

/// The offsets of one runtime version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeOffsets {
    pub g: GOffsets,
    pub m: MOffsets,
    pub moduledata: ModuledataOffsets,
}

/// A row of the generated table.
#[derive(Debug, Clone, Copy)]
pub struct TableRow {
    /// `(major, minor)`.
    pub minor: (u32, u32),
    /// The exact toolchain version whose DWARF the row was read from.
    pub go_version: &'static str,
    pub offsets: RuntimeOffsets,
}

/// Where offsets came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsSource {
    /// The binary's own DWARF.
    Dwarf,
    /// The table row for the binary's Go minor version (read from `version`'s DWARF).
    Table { version: &'static str },
    /// No row for the binary's version: the nearest row's, which may be wrong.
    Guess { nearest: &'static str },
}

/// The runtime layout of one binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeLayout {
    pub offsets: RuntimeOffsets,
    pub source: OffsetsSource,
    /// The address of `runtime.allm` (the head of the list of every m), if it can be found.
    pub allm: Result<u64, Reason>,
}

/// The layout of a binary: its DWARF, else the table for `version`.
pub fn runtime_layout(
    elf: &ElfImage<'_>,
    version: Option<&GoVersion>,
) -> Result<RuntimeLayout, Reason> {
    let allm = find_allm(elf);
    match from_dwarf(elf) {
        Ok(offsets) => Ok(RuntimeLayout {
            offsets,
            source: OffsetsSource::Dwarf,
            allm,
        }),
        Err(dwarf_miss) => {
            let version = version.ok_or(dwarf_miss)?;
            let (offsets, source) = from_table(version).ok_or(Reason::NoOffsets)?;
            Ok(RuntimeLayout {
                offsets,
                source,
                allm,
            })
        }
    }
}

/// Every row of the generated table.
pub fn table() -> &'static [TableRow] {
    TABLE
}

/// The table's offsets for `version`: its minor version's row, else the nearest row (a
/// guess). `None` only if the table is empty.
pub fn from_table(version: &GoVersion) -> Option<(RuntimeOffsets, OffsetsSource)> {
    let wanted = version.minor_release();
    if let Some(row) = TABLE.iter().find(|row| row.minor == wanted) {
        return Some((
            row.offsets,
            OffsetsSource::Table {
                version: row.go_version,
            },
        ));
    }
    let distance = |row: &TableRow| {
        let (major, minor) = row.minor;
        (i64::from(major) - i64::from(wanted.0)).abs() * 1000
            + (i64::from(minor) - i64::from(wanted.1)).abs()
    };
    // On a tie, the newer row: runtimes rarely move fields back.
    let row = TABLE
        .iter()
        .min_by_key(|row| (distance(row), std::cmp::Reverse(row.minor)))?;
    Some((
        row.offsets,
        OffsetsSource::Guess {
            nearest: row.go_version,
        },
    ))
}

/// The address of `runtime.allm`: from the symbol table, else from DWARF.
pub fn find_allm(elf: &ElfImage<'_>) -> Result<u64, Reason> {
    if let Some(symbol) = elf.symbol("runtime.allm") {
        return Ok(symbol.address);
    }
    // Stripped of both: say what is missing that would have answered.
    let sections = DwarfSections::load(elf).map_err(|_| Reason::NoSymbol {
        name: "runtime.allm",
    })?;
    let dwarf = sections.dwarf();
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        let Ok(unit) = dwarf.unit(header) else {
            continue;
        };
        let mut entries = unit.entries();
        while let Ok(Some(entry)) = entries.next_dfs() {
            if entry.tag() != gimli::DW_TAG_variable {
                continue;
            }
            if die_name(&dwarf, &unit, entry).as_deref() != Some("runtime.allm") {
                continue;
            }
            let Some(AttributeValue::Exprloc(expression)) = entry.attr_value(gimli::DW_AT_location)
            else {
                continue;
            };
            let mut ops = expression.operations(unit.encoding());
            if let Ok(Some(gimli::Operation::Address { address })) = ops.next() {
                return Ok(address);
            }
        }
    }
    Err(Reason::NotInDwarf {
        what: "runtime.allm",
    })
}

type Slice<'a> = EndianSlice<'a, LittleEndian>;

/// The DWARF sections of the file, decompressed.
struct DwarfSections<'data> {
    sections: HashMap<&'static str, Cow<'data, [u8]>>,
}

impl DwarfSections<'_> {
    fn load<'data>(elf: &ElfImage<'data>) -> Result<DwarfSections<'data>, Reason> {
        if !elf.is_little_endian() {
            return Err(Reason::NoDwarf);
        }
        let mut sections = HashMap::new();
        for id in [
            gimli::SectionId::DebugAbbrev,
            gimli::SectionId::DebugInfo,
            gimli::SectionId::DebugStr,
            gimli::SectionId::DebugStrOffsets,
            gimli::SectionId::DebugLineStr,
            gimli::SectionId::DebugAddr,
            // Units parse their line program header and range bases when created.
            gimli::SectionId::DebugLine,
            gimli::SectionId::DebugRanges,
            gimli::SectionId::DebugRngLists,
        ] {
            if let Some(data) = elf.section_uncompressed(id.name()) {
                sections.insert(id.name(), data);
            }
        }
        if !sections.contains_key(gimli::SectionId::DebugInfo.name()) {
            return Err(Reason::NoDwarf);
        }
        Ok(DwarfSections { sections })
    }

    fn dwarf(&self) -> gimli::Dwarf<Slice<'_>> {
        gimli::Dwarf::load(|id| -> Result<Slice<'_>, gimli::Error> {
            let data = self
                .sections
                .get(id.name())
                .map(|data| &**data)
                .unwrap_or(&[]);
            Ok(EndianSlice::new(data, LittleEndian))
        })
        .unwrap_or_default()
    }
}

/// A struct type's members: name → (offset, type reference as a `.debug_info` offset).
type Members = HashMap<String, (u64, Option<u64>)>;

/// Reads the offsets from the binary's DWARF.
pub fn from_dwarf(elf: &ElfImage<'_>) -> Result<RuntimeOffsets, Reason> {
    let sections = DwarfSections::load(elf)?;
    let dwarf = sections.dwarf();
    let wanted = [
        "runtime.g",
        "runtime.m",
        "runtime.gobuf",
        "runtime.stack",
        "runtime.moduledata",
    ];
    // Struct name → members, and the .debug_info offset of each struct found.
    let mut structs: HashMap<&str, Members> = HashMap::new();
    let mut struct_at: HashMap<u64, &str> = HashMap::new();
    let mut units = dwarf.units();
    'units: while let Ok(Some(header)) = units.next() {
        let Ok(unit) = dwarf.unit(header) else {
            continue;
        };
        let unit_start = header
            .offset()
            .to_debug_info_offset(&header)
            .map(|offset| offset.0 as u64);
        let mut entries = unit.entries();
        while let Ok(Some(entry)) = entries.next_dfs() {
            if entry.tag() != gimli::DW_TAG_structure_type {
                continue;
            }
            let Some(name) = die_name(&dwarf, &unit, entry) else {
                continue;
            };
            let Some(wanted_name) = wanted.iter().find(|w| **w == name) else {
                continue;
            };
            if structs.contains_key(wanted_name) {
                continue;
            }
            let offset = entry.offset();
            let members = read_members(&dwarf, &unit, offset, unit_start);
            if let Some(start) = unit_start {
                struct_at.insert(start + offset.0 as u64, wanted_name);
            }
            structs.insert(wanted_name, members);
            if structs.len() == wanted.len() {
                break 'units;
            }
        }
    }

    let field = |strct: &'static str, name: &'static str| -> Result<u64, Reason> {
        structs
            .get(strct)
            .and_then(|members| members.get(name))
            .map(|(offset, _)| *offset)
            .ok_or(Reason::NotInDwarf { what: strct })
    };
    let optional = |strct: &'static str, name: &'static str| field(strct, name).ok();
    // A member of a nested struct, checking the member's type is that struct.
    let nested = |strct: &'static str,
                  member: &'static str,
                  inner: &'static str,
                  name: &'static str|
     -> Result<u64, Reason> {
        let (outer, type_ref) = structs
            .get(strct)
            .and_then(|members| members.get(member))
            .copied()
            .ok_or(Reason::NotInDwarf { what: strct })?;
        if let Some(type_ref) = type_ref
            && struct_at
                .get(&type_ref)
                .is_some_and(|found| *found != inner)
        {
            return Err(Reason::NotInDwarf { what: inner });
        }
        Ok(outer + field(inner, name)?)
    };

    Ok(RuntimeOffsets {
        g: GOffsets {
            goid: field("runtime.g", "goid")?,
            m: field("runtime.g", "m")?,
            sched_sp: nested("runtime.g", "sched", "runtime.gobuf", "sp")?,
            sched_pc: nested("runtime.g", "sched", "runtime.gobuf", "pc")?,
            sched_bp: nested("runtime.g", "sched", "runtime.gobuf", "bp")?,
            stack_lo: nested("runtime.g", "stack", "runtime.stack", "lo")?,
            stack_hi: nested("runtime.g", "stack", "runtime.stack", "hi")?,
            atomicstatus: field("runtime.g", "atomicstatus")?,
            gopc: field("runtime.g", "gopc")?,
            startpc: field("runtime.g", "startpc")?,
            parent_goid: optional("runtime.g", "parentGoid"),
            waitsince: field("runtime.g", "waitsince")?,
            waitreason: field("runtime.g", "waitreason")?,
            syscallsp: field("runtime.g", "syscallsp")?,
            syscallpc: field("runtime.g", "syscallpc")?,
            labels: optional("runtime.g", "labels"),
        },
        m: MOffsets {
            g0: field("runtime.m", "g0")?,
            curg: field("runtime.m", "curg")?,
            procid: field("runtime.m", "procid")?,
            gsignal: field("runtime.m", "gsignal")?,
            tls: optional("runtime.m", "tls"),
            id: field("runtime.m", "id")?,
            alllink: field("runtime.m", "alllink")?,
        },
        moduledata: ModuledataOffsets {
            text: field("runtime.moduledata", "text")?,
            gofunc: optional("runtime.moduledata", "gofunc"),
        },
    })
}

/// The name attribute of an entry.
fn die_name(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &gimli::Unit<Slice<'_>>,
    entry: &gimli::DebuggingInformationEntry<Slice<'_>>,
) -> Option<String> {
    let value = entry.attr_value(gimli::DW_AT_name)?;
    let name = dwarf.attr_string(unit, value).ok()?;
    Some(String::from_utf8_lossy(name.slice()).into_owned())
}

/// The members of the struct at `offset`: name → (byte offset, type as a `.debug_info`
/// offset).
fn read_members(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &gimli::Unit<Slice<'_>>,
    offset: UnitOffset,
    unit_start: Option<u64>,
) -> Members {
    let mut members = Members::new();
    let Ok(mut tree) = unit.entries_tree(Some(offset)) else {
        return members;
    };
    let Ok(root) = tree.root() else {
        return members;
    };
    let mut children = root.children();
    while let Ok(Some(child)) = children.next() {
        let entry = child.entry();
        if entry.tag() != gimli::DW_TAG_member {
            continue;
        }
        let Some(name) = die_name(dwarf, unit, entry) else {
            continue;
        };
        let location = match entry.attr_value(gimli::DW_AT_data_member_location) {
            Some(value) => value.udata_value(),
            // The first member may omit its location.
            None => Some(0),
        };
        let Some(location) = location else { continue };
        let type_ref = match entry.attr_value(gimli::DW_AT_type) {
            Some(AttributeValue::UnitRef(reference)) => {
                unit_start.map(|start| start + reference.0 as u64)
            }
            Some(AttributeValue::DebugInfoRef(reference)) => Some(reference.0 as u64),
            _ => None,
        };
        members.insert(name, (location, type_ref));
    }
    members
}
