//! Finding the table in an ELF file.

use super::{
    super::{GoError, elf::ElfImage},
    PclntabSource,
    functab::View,
    header::{Header, Layout, header_text_start},
};

/// The section names the table has had.
const SECTION_NAMES: [&str; 2] = [".gopclntab", ".data.rel.ro.gopclntab"];

/// Finds the table's bytes: `(address, bytes from the header on, how it was found)`.
pub(super) fn locate<'data>(
    elf: &ElfImage<'data>,
) -> Result<(u64, &'data [u8], PclntabSource), GoError> {
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
