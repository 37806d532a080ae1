//! The parts of an ELF file that the Go runtime parsers read: sections by name, loaded
//! segments by virtual address (for binaries whose section headers are gone), symbols, the TLS
//! segment, and pointers as the dynamic loader would relocate them in PIE binaries.

use std::{borrow::Cow, collections::HashMap};

use object::{
    Endianness, Object as _, ObjectSection as _, ObjectSymbol as _, RelocationFlags, SymbolKind,
    elf::{self, PT_LOAD, PT_TLS},
    read::elf::{ElfFile64, ProgramHeader as _},
};

use super::GoError;

/// A loaded (`PT_LOAD`) segment.
#[derive(Debug, Clone, Copy)]
pub struct LoadSegment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    pub executable: bool,
    pub writable: bool,
}

impl LoadSegment {
    /// Whether `vaddr` is in the part of this segment backed by file contents.
    pub fn contains_file_backed(&self, vaddr: u64) -> bool {
        vaddr >= self.vaddr && vaddr - self.vaddr < self.filesz
    }
}

/// The thread-local storage template (`PT_TLS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsSegment {
    pub vaddr: u64,
    pub memsz: u64,
    pub align: u64,
}

/// A symbol from `.symtab` or `.dynsym`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Symbol {
    pub address: u64,
    pub size: u64,
    /// An `STT_TLS` symbol: `address` is an offset in the TLS block.
    pub tls: bool,
}

/// A parsed 64-bit ELF file: what the Go parsers need, found once.
pub struct ElfImage<'data> {
    data: &'data [u8],
    file: ElfFile64<'data, Endianness>,
    loads: Vec<LoadSegment>,
    tls: Option<TlsSegment>,
    symbols: HashMap<&'data str, Symbol>,
    /// `R_X86_64_RELATIVE`-style relocations: address → value after relocation at base 0.
    relative: HashMap<u64, u64>,
    /// `R_X86_64_TPOFF64` relocations against no symbol: address → addend.
    tpoff: HashMap<u64, i64>,
}

const R_X86_64_RELATIVE: u32 = 8;
const R_X86_64_TPOFF64: u32 = 18;
const R_AARCH64_RELATIVE: u32 = 1027;

impl<'data> ElfImage<'data> {
    /// Parses the headers, segments, symbols and dynamic relocations. Only 64-bit ELF files
    /// are supported.
    pub fn parse(data: &'data [u8]) -> Result<ElfImage<'data>, GoError> {
        let file = ElfFile64::<Endianness>::parse(data).map_err(|err| {
            GoError::Elf(format!("not a 64-bit ELF file this parser can read: {err}"))
        })?;
        let endian = file.endian();
        let mut loads = Vec::new();
        let mut tls = None;
        for header in file.elf_program_headers() {
            match header.p_type(endian) {
                PT_LOAD => {
                    let flags = header.p_flags(endian);
                    let offset = header.p_offset(endian);
                    // A segment claiming bytes past the end of the file keeps only what exists.
                    let available = (data.len() as u64).saturating_sub(offset);
                    loads.push(LoadSegment {
                        vaddr: header.p_vaddr(endian),
                        memsz: header.p_memsz(endian),
                        offset,
                        filesz: header.p_filesz(endian).min(available),
                        executable: flags & elf::PF_X != 0,
                        writable: flags & elf::PF_W != 0,
                    });
                }
                PT_TLS => {
                    tls = Some(TlsSegment {
                        vaddr: header.p_vaddr(endian),
                        memsz: header.p_memsz(endian),
                        align: header.p_align(endian),
                    });
                }
                _ => {}
            }
        }

        let mut symbols = HashMap::new();
        // .symtab first: it has the local symbols (runtime.tlsg is local).
        for symbol in file.symbols().chain(file.dynamic_symbols()) {
            let Ok(name) = symbol.name() else { continue };
            if name.is_empty() {
                continue;
            }
            symbols.entry(name).or_insert(Symbol {
                address: symbol.address(),
                size: symbol.size(),
                tls: symbol.kind() == SymbolKind::Tls,
            });
        }

        let mut relative = HashMap::new();
        let mut tpoff = HashMap::new();
        if let Some(relocations) = file.dynamic_relocations() {
            for (address, relocation) in relocations {
                let RelocationFlags::Elf { r_type } = relocation.flags() else {
                    continue;
                };
                let no_symbol = matches!(relocation.target(), object::RelocationTarget::Absolute);
                match r_type {
                    R_X86_64_RELATIVE | R_AARCH64_RELATIVE => {
                        relative.insert(address, relocation.addend() as u64);
                    }
                    R_X86_64_TPOFF64 if no_symbol => {
                        tpoff.insert(address, relocation.addend());
                    }
                    _ => {}
                }
            }
        }

        let mut image = ElfImage {
            data,
            file,
            loads,
            tls,
            symbols,
            relative,
            tpoff,
        };
        if image.relative.is_empty() && image.tpoff.is_empty() {
            // Without section headers, `object` finds no relocations: read them the way the
            // dynamic loader does, through PT_DYNAMIC.
            image.read_dynamic_relocations();
        }
        Ok(image)
    }

    /// Reads `DT_RELA` relocations through the dynamic segment.
    fn read_dynamic_relocations(&mut self) {
        const DT_NULL: u64 = 0;
        const DT_RELA: u64 = 7;
        const DT_RELASZ: u64 = 8;
        const DT_RELAENT: u64 = 9;
        const MAX_DYNAMIC_ENTRIES: usize = 4096;
        let endian = self.file.endian();
        let Some(dynamic) = self
            .file
            .elf_program_headers()
            .iter()
            .find(|header| header.p_type(endian) == elf::PT_DYNAMIC)
        else {
            return;
        };
        let little_endian = self.is_little_endian();
        let Some(table) = self
            .data
            .get(usize::try_from(dynamic.p_offset(endian)).unwrap_or(usize::MAX)..)
        else {
            return;
        };
        let (mut rela, mut relasz, mut relaent) = (None, None, 24);
        for entry in table.chunks_exact(16).take(MAX_DYNAMIC_ENTRIES) {
            let tag = read_uint(entry, 8, little_endian);
            let value = read_uint(&entry[8..], 8, little_endian);
            match tag {
                DT_NULL => break,
                DT_RELA => rela = Some(value),
                DT_RELASZ => relasz = Some(value),
                DT_RELAENT => relaent = value,
                _ => {}
            }
        }
        let (Some(rela), Some(relasz)) = (rela, relasz) else {
            return;
        };
        if relaent != 24 {
            return;
        }
        let Some(entries) = usize::try_from(relasz)
            .ok()
            .and_then(|len| self.read(rela, len))
        else {
            return;
        };
        for entry in entries.chunks_exact(24) {
            let offset = read_uint(entry, 8, little_endian);
            let info = read_uint(&entry[8..], 8, little_endian);
            let addend = read_uint(&entry[16..], 8, little_endian);
            let (r_type, symbol) = ((info & 0xffff_ffff) as u32, info >> 32);
            match r_type {
                R_X86_64_RELATIVE | R_AARCH64_RELATIVE => {
                    self.relative.insert(offset, addend);
                }
                R_X86_64_TPOFF64 if symbol == 0 => {
                    self.tpoff.insert(offset, addend as i64);
                }
                _ => {}
            }
        }
    }

    /// The whole file.
    pub fn data(&self) -> &'data [u8] {
        self.data
    }

    /// The `object` view of the file, for what this type does not cover.
    pub fn object(&self) -> &ElfFile64<'data, Endianness> {
        &self.file
    }

    /// Whether the file is for x86-64.
    pub fn is_x86_64(&self) -> bool {
        self.file.elf_header().e_machine.get(self.file.endian()) == elf::EM_X86_64
    }

    /// Whether the file is little-endian.
    pub fn is_little_endian(&self) -> bool {
        self.file.endian() == Endianness::Little
    }

    /// The `PT_LOAD` segments.
    pub fn loads(&self) -> &[LoadSegment] {
        &self.loads
    }

    /// The `PT_TLS` segment, if any.
    pub fn tls_segment(&self) -> Option<TlsSegment> {
        self.tls
    }

    /// A symbol by exact name, from `.symtab` or else `.dynsym`.
    pub fn symbol(&self, name: &str) -> Option<Symbol> {
        self.symbols.get(name).copied()
    }

    /// Whether the file has a symbol table with anything in it.
    pub fn has_symbols(&self) -> bool {
        !self.symbols.is_empty()
    }

    /// A section's address and contents by name (`None` if absent or without file contents).
    pub fn section(&self, name: &str) -> Option<(u64, &'data [u8])> {
        let section = self.file.section_by_name(name)?;
        let data = section.data().ok()?;
        if data.is_empty() {
            return None;
        }
        Some((section.address(), data))
    }

    /// A section's contents by name, decompressed (`SHF_COMPRESSED` or `.zdebug_*`).
    pub fn section_uncompressed(&self, name: &str) -> Option<Cow<'data, [u8]>> {
        let section = self.file.section_by_name(name)?;
        section.uncompressed_data().ok()
    }

    /// The segment whose file contents include `vaddr`.
    pub fn load_containing(&self, vaddr: u64) -> Option<&LoadSegment> {
        self.loads
            .iter()
            .find(|segment| segment.contains_file_backed(vaddr))
    }

    /// The file contents of a segment.
    pub fn segment_data(&self, segment: &LoadSegment) -> &'data [u8] {
        let start = usize::try_from(segment.offset).unwrap_or(usize::MAX);
        let len = usize::try_from(segment.filesz).unwrap_or(usize::MAX);
        self.data
            .get(start..)
            .map(|rest| &rest[..len.min(rest.len())])
            .unwrap_or(&[])
    }

    /// The file contents from `vaddr` to the end of its segment's file-backed part.
    pub fn bytes_from(&self, vaddr: u64) -> Option<&'data [u8]> {
        let segment = self.load_containing(vaddr)?;
        let data = self.segment_data(segment);
        let start = usize::try_from(vaddr - segment.vaddr).ok()?;
        data.get(start..)
    }

    /// `len` bytes of file contents at `vaddr`.
    pub fn read(&self, vaddr: u64, len: usize) -> Option<&'data [u8]> {
        self.bytes_from(vaddr)?.get(..len)
    }

    /// A little- or big-endian unsigned integer of `size` bytes (1, 2, 4 or 8), in the file's
    /// byte order, at `vaddr`.
    pub fn read_uint(&self, vaddr: u64, size: usize) -> Option<u64> {
        let bytes = self.read(vaddr, size)?;
        Some(read_uint(bytes, size, self.is_little_endian()))
    }

    /// A pointer at `vaddr` as the program sees it when loaded at its link-time address: from
    /// a dynamic relocation if one applies (PIE files often hold 0 in the file), else the file.
    pub fn read_pointer(&self, vaddr: u64) -> Option<u64> {
        if let Some(value) = self.relative.get(&vaddr) {
            return Some(*value);
        }
        self.read_uint(vaddr, 8)
    }

    /// The addresses of pointer-sized slots that a relative relocation sets to `value`.
    pub fn relocated_slots_holding(&self, value: u64) -> impl Iterator<Item = u64> + '_ {
        self.relative
            .iter()
            .filter(move |(_, target)| **target == value)
            .map(|(address, _)| *address)
    }

    /// The addend of a `TPOFF64` relocation (against no symbol) at `vaddr`.
    pub fn tpoff_relocation(&self, vaddr: u64) -> Option<i64> {
        self.tpoff.get(&vaddr).copied()
    }

    /// The dynamic relative relocations that fall in `[start, end)`, sorted by address.
    pub fn relative_relocations_in(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut found: Vec<(u64, u64)> = self
            .relative
            .iter()
            .filter(|(address, _)| (start..end).contains(*address))
            .map(|(address, value)| (*address, *value))
            .collect();
        found.sort_unstable();
        found
    }
}

/// Reads an unsigned integer of `size` bytes (at most 8) from the start of `bytes`, which must
/// hold at least that many.
pub(crate) fn read_uint(bytes: &[u8], size: usize, little_endian: bool) -> u64 {
    let mut value = 0u64;
    let bytes = &bytes[..size.min(bytes.len()).min(8)];
    if little_endian {
        for byte in bytes.iter().rev() {
            value = (value << 8) | u64::from(*byte);
        }
    } else {
        for byte in bytes {
            value = (value << 8) | u64::from(*byte);
        }
    }
    value
}
