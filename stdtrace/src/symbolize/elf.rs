//! One ELF object file, as far as symbolization needs it: where its segments load (to turn
//! file offsets into ELF virtual addresses), its build-id and debug links (to find separate
//! debug info), its sections (for CFI and DWARF, decompressed when needed) and its symbols.
//!
//! The file can be anything a process mapped, or a file replaced since: every header, offset
//! and size is checked before use, and a bad one is an error, never a panic.

use std::sync::Arc;

use object::{
    Object, ObjectSection, ObjectSymbol,
    elf::{PF_X, PT_LOAD, SHF_EXECINSTR, STB_LOCAL, STT_FUNC, STT_GNU_IFUNC, STT_NOTYPE},
    read::{
        CompressionFormat,
        elf::{ElfFile64, ProgramHeader, SectionHeader},
    },
};

use super::{
    bytes::{FileBytes, SectionBytes},
    symbols::{SymbolCandidate, SymbolKind},
};

/// The most a compressed section may inflate to: a bound on what a hostile header can make us
/// allocate.
const MAX_DECOMPRESSED: u64 = 1 << 30;

/// The most a compressed section may inflate to for each of its bytes: deflate's own limit
/// (1032:1). The size a section's header claims is allocated before inflating, so without this
/// bound a 15 KB file could make us allocate the whole `MAX_DECOMPRESSED` (as fuzzing found).
const MAX_INFLATION: u64 = 1032;

/// What is wrong with a file that was expected to be an ELF object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    /// The file does not start with the ELF magic.
    #[error("not an ELF file")]
    NotElf,
    /// A valid ELF of a kind this symbolizer does not read (32-bit, big-endian...).
    #[error("unsupported ELF: {0}")]
    Unsupported(&'static str),
    /// Headers, offsets or sizes that do not hold together.
    #[error("malformed ELF: {0}")]
    Malformed(String),
}

fn malformed(err: object::read::Error) -> ElfError {
    ElfError::Malformed(err.to_string())
}

/// A `PT_LOAD` program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LoadSegment {
    file_offset: u64,
    file_size: u64,
    vaddr: u64,
    executable: bool,
}

/// `.gnu_debuglink`: the file name of the separate debug file and the CRC-32 of its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DebugLink {
    pub file_name: Vec<u8>,
    pub crc: u32,
}

/// `.gnu_debugaltlink`: the supplementary (dwz) debug file shared by several debug files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AltLink {
    pub path: Vec<u8>,
    pub build_id: Vec<u8>,
}

/// A parsed ELF object, holding its bytes.
#[derive(Debug)]
pub(crate) struct ElfImage {
    bytes: Arc<FileBytes>,
    segments: Vec<LoadSegment>,
    build_id: Option<Vec<u8>>,
    debug_link: Option<DebugLink>,
    alt_link: Option<AltLink>,
    has_debug_info: bool,
    has_symtab: bool,
}

impl ElfImage {
    /// Checks that `bytes` are a 64-bit little-endian ELF and reads what every lookup needs.
    pub(crate) fn parse(bytes: Arc<FileBytes>) -> Result<Self, ElfError> {
        let file = parse_file(&bytes)?;
        let endian = file.endian();
        let segments = file
            .elf_program_headers()
            .iter()
            .filter(|header| header.p_type(endian) == PT_LOAD)
            .map(|header| LoadSegment {
                file_offset: header.p_offset(endian),
                file_size: header.p_filesz(endian),
                vaddr: header.p_vaddr(endian),
                executable: header.p_flags(endian) & PF_X != 0,
            })
            .collect();
        // A bad note or link section loses that information, not the object.
        let build_id = file.build_id().ok().flatten().map(<[u8]>::to_vec);
        let debug_link = file
            .gnu_debuglink()
            .ok()
            .flatten()
            .map(|(name, crc)| DebugLink {
                file_name: name.to_vec(),
                crc,
            });
        let alt_link = file
            .gnu_debugaltlink()
            .ok()
            .flatten()
            .map(|(path, build_id)| AltLink {
                path: path.to_vec(),
                build_id: build_id.to_vec(),
            });
        let has_debug_info = file
            .section_by_name(".debug_info")
            .and_then(|section| section.file_range())
            .is_some_and(|(_, size)| size > 0);
        let has_symtab = file.symbol_table().is_some();
        Ok(Self {
            segments,
            build_id,
            debug_link,
            alt_link,
            has_debug_info,
            has_symtab,
            bytes,
        })
    }

    pub(crate) fn build_id(&self) -> Option<&[u8]> {
        self.build_id.as_deref()
    }

    pub(crate) fn debug_link(&self) -> Option<&DebugLink> {
        self.debug_link.as_ref()
    }

    pub(crate) fn alt_link(&self) -> Option<&AltLink> {
        self.alt_link.as_ref()
    }

    /// Whether the file holds DWARF (rather than pointing at a separate debug file).
    pub(crate) fn has_debug_info(&self) -> bool {
        self.has_debug_info
    }

    pub(crate) fn has_symtab(&self) -> bool {
        self.has_symtab
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// See [`FileBytes::release_pages`].
    pub(crate) fn release_pages(&self) {
        self.bytes.release_pages();
    }

    /// The file's bytes, to share with parsers that keep parts of them.
    pub(crate) fn file(&self) -> &Arc<FileBytes> {
        &self.bytes
    }

    /// Up to `len` bytes of the code loaded at ELF virtual address `vaddr` (fewer at the end
    /// of its segment); `None` when no executable segment loads it from the file.
    pub(crate) fn code_at(&self, vaddr: u64, len: usize) -> Option<&[u8]> {
        let segment = self.segments.iter().find(|segment| {
            segment.executable
                && vaddr >= segment.vaddr
                && vaddr - segment.vaddr < segment.file_size
        })?;
        let into = vaddr - segment.vaddr;
        let start = usize::try_from(segment.file_offset.checked_add(into)?).ok()?;
        let available = usize::try_from(segment.file_size - into).unwrap_or(usize::MAX);
        let end = start.checked_add(len.min(available))?;
        self.bytes.get(start..end)
    }

    /// The ELF virtual address that file offset `offset` loads at: the `PT_LOAD` segment whose
    /// file range holds it decides. Segments can share a page, so when several hold the offset
    /// the one whose executability matches the mapping's is preferred.
    pub(crate) fn vaddr_of_file_offset(&self, offset: u64, executable: bool) -> Option<u64> {
        let holds = |segment: &&LoadSegment| {
            offset >= segment.file_offset && offset - segment.file_offset < segment.file_size
        };
        let segment = self
            .segments
            .iter()
            .filter(holds)
            .find(|segment| segment.executable == executable)
            .or_else(|| self.segments.iter().find(holds))?;
        (offset - segment.file_offset).checked_add(segment.vaddr)
    }

    /// The bytes of section `name`, decompressed if it is compressed (`SHF_COMPRESSED` or a
    /// `.zdebug_` section); `None` when there is no such section.
    pub(crate) fn section(&self, name: &str) -> Result<Option<SectionBytes>, ElfError> {
        let file = parse_file(&self.bytes)?;
        let Some(section) = file.section_by_name(name) else {
            return Ok(None);
        };
        let range = section.compressed_file_range().map_err(malformed)?;
        if range.format == CompressionFormat::None {
            return SectionBytes::new(&self.bytes, range.offset, range.uncompressed_size)
                .map(Some)
                .ok_or_else(|| ElfError::Malformed(format!("{name} lies outside the file")));
        }
        if range.uncompressed_size > MAX_DECOMPRESSED
            || range.uncompressed_size > range.compressed_size.saturating_mul(MAX_INFLATION)
        {
            return Err(ElfError::Malformed(format!(
                "{name} claims to inflate to {} bytes",
                range.uncompressed_size
            )));
        }
        let data = range.data(&self.bytes[..]).map_err(malformed)?;
        let inflated = data.decompress().map_err(malformed)?;
        Ok(Some(SectionBytes::owned(inflated.into_owned())))
    }

    /// The virtual address of section `name`, if the file has one.
    pub(crate) fn section_address(&self, name: &str) -> Option<u64> {
        let file = parse_file(&self.bytes).ok()?;
        file.section_by_name(name).map(|section| section.address())
    }

    /// The function symbols of `.symtab` and `.dynsym`, unsorted.
    pub(crate) fn symbols(&self) -> Result<Vec<SymbolCandidate>, ElfError> {
        let file = parse_file(&self.bytes)?;
        let endian = file.endian();
        let sections = file.elf_section_table();
        let mut candidates = Vec::new();
        for symbol in file.symbols().chain(file.dynamic_symbols()) {
            let raw = symbol.elf_symbol();
            let Some(index) = symbol.section_index() else {
                continue; // undefined, absolute or common
            };
            let Ok(section) = sections.section(index) else {
                continue;
            };
            let executable = section.sh_flags(endian) & u64::from(SHF_EXECINSTR) != 0;
            let kind = match raw.st_type() {
                STT_FUNC => SymbolKind::Function,
                STT_GNU_IFUNC => SymbolKind::IndirectFunction,
                STT_NOTYPE if executable => SymbolKind::Label,
                _ => continue,
            };
            let Ok(name) = symbol.name_bytes() else {
                continue;
            };
            let section_start = section.sh_addr(endian);
            candidates.push(SymbolCandidate {
                name: String::from_utf8_lossy(name).into_owned(),
                address: symbol.address(),
                size: symbol.size(),
                kind,
                global: raw.st_bind() != STB_LOCAL,
                section_end: section_start.saturating_add(section.sh_size(endian)),
            });
        }
        Ok(candidates)
    }
}

/// Parses the ELF headers of `bytes`. Cheap (headers and the section table only), so it is
/// redone for each use instead of keeping a borrow of the bytes alive.
fn parse_file(bytes: &[u8]) -> Result<ElfFile64<'_>, ElfError> {
    if bytes.get(..4) != Some(&b"\x7fELF"[..]) {
        return Err(ElfError::NotElf);
    }
    match bytes.get(4..6) {
        Some([2, 1]) => {}
        Some([1, _]) => return Err(ElfError::Unsupported("32-bit ELF")),
        Some([2, 2]) => return Err(ElfError::Unsupported("big-endian ELF")),
        _ => {
            return Err(ElfError::Malformed(
                "bad ELF class or data encoding".to_owned(),
            ));
        }
    }
    ElfFile64::parse(bytes).map_err(malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(bytes: Vec<u8>) -> Result<ElfImage, ElfError> {
        ElfImage::parse(Arc::new(FileBytes::Owned(bytes)))
    }

    #[test]
    fn non_elf_input_is_refused() {
        assert_eq!(image(Vec::new()).unwrap_err(), ElfError::NotElf);
        assert_eq!(
            image(b"#!/bin/sh\n".to_vec()).unwrap_err(),
            ElfError::NotElf
        );
        assert_eq!(
            image(b"\x7fELF\x01\x01\x01\0".to_vec()).unwrap_err(),
            ElfError::Unsupported("32-bit ELF")
        );
        assert!(matches!(
            image(b"\x7fELF\x02\x01".to_vec()),
            Err(ElfError::Malformed(_))
        ));
    }

    /// Found by the `dwarf_lines` fuzz target: a 15 KB object one of whose compressed debug
    /// sections claims to inflate to 721 MB.
    #[test]
    fn a_compressed_section_cannot_claim_more_than_deflate_can_give() {
        let input = include_bytes!("../../../fixtures/fuzz/dwarf_lines-inflate-oom");
        let object = &input[8..];
        let elf = image(object.to_vec()).unwrap();
        let mut refused = 0;
        for name in [
            ".debug_abbrev",
            ".debug_addr",
            ".debug_aranges",
            ".debug_info",
            ".debug_line",
            ".debug_line_str",
            ".debug_loc",
            ".debug_loclists",
            ".debug_ranges",
            ".debug_rnglists",
            ".debug_str",
            ".debug_str_offsets",
            ".debug_types",
        ] {
            match elf.section(name) {
                Ok(Some(bytes)) => assert!(bytes.len() as u64 <= 1032 * object.len() as u64),
                Ok(None) => {}
                Err(ElfError::Malformed(why)) => {
                    assert!(why.contains("claims to inflate"), "{why}");
                    refused += 1;
                }
                Err(other) => panic!("{name}: {other}"),
            }
        }
        assert!(refused >= 1);
    }

    #[test]
    fn reads_the_running_test_binary() {
        let bytes = std::fs::read("/proc/self/exe").unwrap();
        let elf = image(bytes).unwrap();
        assert!(!elf.segments.is_empty());
        assert!(
            elf.section(".eh_frame")
                .unwrap()
                .is_some_and(|s| !s.is_empty())
        );
        assert!(elf.section(".no_such_section").unwrap().is_none());
        assert!(!elf.symbols().unwrap().is_empty());
    }

    #[test]
    fn file_offsets_map_through_the_segment_that_holds_them() {
        let segments = vec![
            LoadSegment {
                file_offset: 0,
                file_size: 0x1000,
                vaddr: 0,
                executable: false,
            },
            LoadSegment {
                file_offset: 0x1000,
                file_size: 0x2345,
                vaddr: 0x401000,
                executable: true,
            },
            LoadSegment {
                file_offset: 0x3345,
                file_size: 0x100,
                vaddr: 0x604345,
                executable: false,
            },
        ];
        let elf = ElfImage {
            bytes: Arc::new(FileBytes::Owned(Vec::new())),
            segments,
            build_id: None,
            debug_link: None,
            alt_link: None,
            has_debug_info: false,
            has_symtab: false,
        };
        assert_eq!(elf.vaddr_of_file_offset(0x1234, true), Some(0x401234));
        assert_eq!(elf.vaddr_of_file_offset(0x3345, false), Some(0x604345));
        assert_eq!(elf.vaddr_of_file_offset(0x10, true), Some(0x10));
        assert_eq!(elf.vaddr_of_file_offset(0x3445, true), None);
        assert_eq!(elf.vaddr_of_file_offset(u64::MAX, true), None);
    }

    #[test]
    fn code_is_read_from_executable_segments_only() {
        let elf = ElfImage {
            bytes: Arc::new(FileBytes::Owned((0..=255).collect())),
            segments: vec![
                LoadSegment {
                    file_offset: 0,
                    file_size: 0x10,
                    vaddr: 0x1000,
                    executable: false,
                },
                LoadSegment {
                    file_offset: 0x10,
                    file_size: 0x20,
                    vaddr: 0x2000,
                    executable: true,
                },
                // Claims more than the file holds.
                LoadSegment {
                    file_offset: 0xf0,
                    file_size: 0x100,
                    vaddr: 0x3000,
                    executable: true,
                },
            ],
            build_id: None,
            debug_link: None,
            alt_link: None,
            has_debug_info: false,
            has_symtab: false,
        };
        assert_eq!(elf.code_at(0x2001, 2), Some(&[0x11, 0x12][..]));
        assert_eq!(elf.code_at(0x201e, 8), Some(&[0x2e, 0x2f][..]));
        assert_eq!(elf.code_at(0x1000, 2), None);
        assert_eq!(elf.code_at(0x2020, 1), None);
        assert_eq!(elf.code_at(0x3000, 2), Some(&[0xf0, 0xf1][..]));
        assert_eq!(elf.code_at(0x3020, 4), None);
        assert_eq!(elf.code_at(u64::MAX, 4), None);
    }
}
