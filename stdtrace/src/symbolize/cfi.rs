//! Call frame information from `.eh_frame`: finding the FDE that covers an address (with
//! `.eh_frame_hdr`'s sorted table when it has the usual layout, else with an index built once
//! by walking `.eh_frame`) and turning its row for the address into an owned [`CfiRow`].

use gimli::{
    BaseAddresses, EhFrame, EhFrameOffset, FrameDescriptionEntry, Reader as _, RunTimeEndian,
    UnwindContext, UnwindSection, UnwindTableRow,
};

use super::{
    bytes::{self, Reader, SectionBytes},
    elf::ElfImage,
    unwind::{CfaRule, CfiRow, RegisterRule},
};

/// `DW_EH_PE_pcrel | DW_EH_PE_sdata4`: how `.eh_frame_hdr` points at `.eh_frame`.
const PCREL_SDATA4: u8 = 0x1b;
/// `DW_EH_PE_udata4`: how it stores the FDE count.
const UDATA4: u8 = 0x03;
/// `DW_EH_PE_datarel | DW_EH_PE_sdata4`: how its table entries are stored.
const DATAREL_SDATA4: u8 = 0x3b;

/// Scratch space gimli evaluates CFI programs in; one is reused for every lookup.
pub(crate) type Context = UnwindContext<usize>;

/// `.eh_frame_hdr`'s binary search table, in the layout every toolchain emits: pairs of
/// 32-bit offsets from the header's start (function start, FDE address), sorted by function.
#[derive(Debug)]
struct HeaderTable {
    bytes: SectionBytes,
    address: u64,
    count: usize,
}

impl HeaderTable {
    const TABLE_START: usize = 12;

    /// Reads the header; `None` if it is not in the usual layout (then an index is built).
    fn parse(bytes: SectionBytes, address: u64) -> Option<Self> {
        let header = bytes.get(..Self::TABLE_START)?;
        if header[..4] != [1, PCREL_SDATA4, UDATA4, DATAREL_SDATA4] {
            return None;
        }
        let count = usize::try_from(u32::from_le_bytes(header[8..12].try_into().ok()?)).ok()?;
        let room = (bytes.len() - Self::TABLE_START) / 8;
        (count <= room).then_some(Self {
            bytes,
            address,
            count,
        })
    }

    fn entry(&self, index: usize) -> Option<(u64, u64)> {
        let at = Self::TABLE_START.checked_add(index.checked_mul(8)?)?;
        let pair = self.bytes.get(at..at.checked_add(8)?)?;
        let start = i32::from_le_bytes(pair[..4].try_into().ok()?);
        let fde = i32::from_le_bytes(pair[4..].try_into().ok()?);
        Some((
            self.address.wrapping_add_signed(start.into()),
            self.address.wrapping_add_signed(fde.into()),
        ))
    }

    /// The address of the FDE of the last function starting at or before `address`.
    fn lookup(&self, address: u64) -> Option<u64> {
        let (mut low, mut high) = (0, self.count);
        while low < high {
            let middle = low + (high - low) / 2;
            if self.entry(middle)?.0 <= address {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        Some(self.entry(low.checked_sub(1)?)?.1)
    }
}

/// An FDE's range and where it is in `.eh_frame`.
#[derive(Clone, Copy, Debug)]
struct IndexEntry {
    start: u64,
    end: u64,
    offset: usize,
}

#[derive(Debug)]
enum FdeIndex {
    Header(HeaderTable),
    Sorted(Vec<IndexEntry>),
}

/// The unwind tables of one object.
#[derive(Debug)]
pub(crate) struct Cfi {
    eh_frame: EhFrame<Reader>,
    eh_frame_address: u64,
    bases: BaseAddresses,
    index: FdeIndex,
}

impl Cfi {
    /// Loads `.eh_frame` (and `.eh_frame_hdr`) of `elf`; `None` when it has none.
    pub(crate) fn load(elf: &ElfImage) -> Result<Option<Self>, String> {
        let Some(section) = elf.section(".eh_frame").map_err(|err| err.to_string())? else {
            return Ok(None);
        };
        if section.is_empty() {
            return Ok(None);
        }
        let eh_frame_address = elf.section_address(".eh_frame").unwrap_or(0);
        let header_address = elf.section_address(".eh_frame_hdr");
        let mut bases = BaseAddresses::default().set_eh_frame(eh_frame_address);
        if let Some(address) = header_address {
            bases = bases.set_eh_frame_hdr(address);
        }
        if let Some(address) = elf.section_address(".text") {
            bases = bases.set_text(address);
        }
        if let Some(address) = elf.section_address(".got") {
            bases = bases.set_got(address);
        }
        let mut eh_frame = EhFrame::from(bytes::reader(section, RunTimeEndian::Little));
        eh_frame.set_address_size(8);

        let header = match (header_address, elf.section(".eh_frame_hdr")) {
            (Some(address), Ok(Some(bytes))) => HeaderTable::parse(bytes, address),
            _ => None,
        };
        let index = match header {
            Some(table) => FdeIndex::Header(table),
            None => FdeIndex::Sorted(build_index(&eh_frame, &bases)),
        };
        Ok(Some(Self {
            eh_frame,
            eh_frame_address,
            bases,
            index,
        }))
    }

    /// The row for `address` (an ELF virtual address); `None` when no FDE covers it.
    pub(crate) fn row(
        &self,
        context: &mut Context,
        address: u64,
    ) -> Result<Option<CfiRow>, gimli::Error> {
        let Some(fde) = self.fde_for(address)? else {
            return Ok(None);
        };
        let row = match fde.unwind_info_for_address(&self.eh_frame, &self.bases, context, address) {
            Ok(row) => row,
            Err(gimli::Error::NoUnwindInfoForAddress) => return Ok(None),
            Err(err) => return Err(err),
        };
        self.convert(row, &fde).map(Some)
    }

    fn fde_for(&self, address: u64) -> Result<Option<FrameDescriptionEntry<Reader>>, gimli::Error> {
        let offset = match &self.index {
            FdeIndex::Header(table) => {
                let Some(fde_address) = table.lookup(address) else {
                    return Ok(None);
                };
                let Some(offset) = fde_address.checked_sub(self.eh_frame_address) else {
                    return Ok(None);
                };
                usize::try_from(offset).map_err(|_| gimli::Error::UnsupportedOffset)?
            }
            FdeIndex::Sorted(entries) => {
                let after = entries.partition_point(|entry| entry.start <= address);
                match after.checked_sub(1).and_then(|i| entries.get(i)) {
                    Some(entry) if address < entry.end => entry.offset,
                    _ => return Ok(None),
                }
            }
        };
        let fde = self.eh_frame.fde_from_offset(
            &self.bases,
            EhFrameOffset(offset),
            EhFrame::cie_from_offset,
        )?;
        Ok(fde.contains(address).then_some(fde))
    }

    fn convert(
        &self,
        row: &UnwindTableRow<usize>,
        fde: &FrameDescriptionEntry<Reader>,
    ) -> Result<CfiRow, gimli::Error> {
        let expression =
            |expression: &gimli::UnwindExpression<usize>| -> Result<Vec<u8>, gimli::Error> {
                Ok(expression.get(&self.eh_frame)?.0.to_slice()?.into_owned())
            };
        let cfa = match row.cfa() {
            gimli::CfaRule::RegisterAndOffset { register, offset } => CfaRule::RegisterOffset {
                register: register.0,
                offset: *offset,
            },
            gimli::CfaRule::Expression(bytes) => CfaRule::Expression(expression(bytes)?),
        };
        let mut registers = Vec::new();
        for (register, rule) in row.registers() {
            if register.0 > super::unwind::register::RIP {
                continue;
            }
            let rule = match rule {
                gimli::RegisterRule::Undefined => RegisterRule::Undefined,
                gimli::RegisterRule::SameValue => RegisterRule::SameValue,
                gimli::RegisterRule::Offset(offset) => RegisterRule::Offset(*offset),
                gimli::RegisterRule::ValOffset(offset) => RegisterRule::ValOffset(*offset),
                gimli::RegisterRule::Register(other) => RegisterRule::Register(other.0),
                gimli::RegisterRule::Expression(bytes) => {
                    RegisterRule::Expression(expression(bytes)?)
                }
                gimli::RegisterRule::ValExpression(bytes) => {
                    RegisterRule::ValExpression(expression(bytes)?)
                }
                gimli::RegisterRule::Constant(value) => RegisterRule::Constant(*value),
                _ => RegisterRule::Architectural,
            };
            registers.push((register.0, rule));
        }
        Ok(CfiRow {
            cfa,
            registers,
            signal_frame: fde.is_signal_trampoline(),
            encoding: fde.cie().encoding(),
        })
    }
}

/// Walks every FDE of `.eh_frame` once. A malformed entry ends the walk: what was read before
/// it is kept.
fn build_index(eh_frame: &EhFrame<Reader>, bases: &BaseAddresses) -> Vec<IndexEntry> {
    let mut index = Vec::new();
    let mut entries = eh_frame.entries(bases);
    loop {
        match entries.next() {
            Ok(Some(gimli::CieOrFde::Fde(partial))) => {
                match partial.parse(EhFrame::cie_from_offset) {
                    Ok(fde) => index.push(IndexEntry {
                        start: fde.initial_address(),
                        end: fde.end_address(),
                        offset: fde.offset(),
                    }),
                    Err(err) => log::debug!("skipping an FDE: {err}"),
                }
            }
            Ok(Some(gimli::CieOrFde::Cie(_))) => {}
            Ok(None) => break,
            Err(err) => {
                log::debug!("stopping at a malformed .eh_frame entry: {err}");
                break;
            }
        }
    }
    index.sort_by_key(|entry| entry.start);
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(count: u32, pairs: &[(i32, i32)]) -> SectionBytes {
        let mut bytes = vec![1, PCREL_SDATA4, UDATA4, DATAREL_SDATA4];
        bytes.extend_from_slice(&0i32.to_le_bytes());
        bytes.extend_from_slice(&count.to_le_bytes());
        for (start, fde) in pairs {
            bytes.extend_from_slice(&start.to_le_bytes());
            bytes.extend_from_slice(&fde.to_le_bytes());
        }
        SectionBytes::owned(bytes)
    }

    #[test]
    fn header_table_finds_the_last_function_at_or_before() {
        let table =
            HeaderTable::parse(header(3, &[(-0x100, 10), (0x10, 20), (0x40, 30)]), 0x1000).unwrap();
        assert_eq!(table.lookup(0x0f00), Some(0x100a));
        assert_eq!(table.lookup(0x1010), Some(0x1014));
        assert_eq!(table.lookup(0x103f), Some(0x1014));
        assert_eq!(table.lookup(0x5000), Some(0x101e));
        assert_eq!(table.lookup(0x0eff), None);
    }

    #[test]
    fn header_counts_beyond_the_section_are_refused() {
        assert!(HeaderTable::parse(header(2, &[(0, 0)]), 0).is_none());
        assert!(HeaderTable::parse(header(u32::MAX, &[]), 0).is_none());
        assert!(HeaderTable::parse(SectionBytes::owned(vec![1, PCREL_SDATA4]), 0).is_none());
        let mut other_layout = header(0, &[]).to_vec();
        other_layout[3] = 0x1b;
        assert!(HeaderTable::parse(SectionBytes::owned(other_layout), 0).is_none());
        let empty = HeaderTable::parse(header(0, &[]), 0).unwrap();
        assert_eq!(empty.lookup(0x1234), None);
    }

    #[test]
    fn reads_rows_of_the_running_test_binary() {
        let bytes = std::fs::read("/proc/self/exe").unwrap();
        let elf = ElfImage::parse(std::sync::Arc::new(super::super::bytes::FileBytes::Owned(
            bytes,
        )))
        .unwrap();
        let cfi = Cfi::load(&elf).unwrap().unwrap();
        let symbols = elf.symbols().unwrap();
        let function = symbols
            .iter()
            .find(|symbol| {
                symbol
                    .name
                    .contains("reads_rows_of_the_running_test_binary")
            })
            .unwrap();
        let mut context = Context::new();
        let entry = cfi.row(&mut context, function.address).unwrap().unwrap();
        // At a function's first instruction the CFA is rsp + 8 and the return address is at
        // CFA - 8.
        assert_eq!(
            entry.cfa,
            CfaRule::RegisterOffset {
                register: 7,
                offset: 8
            }
        );
        assert!(entry.registers.contains(&(16, RegisterRule::Offset(-8))));
        assert_eq!(cfi.row(&mut context, 0).unwrap(), None);
    }

    #[test]
    fn the_header_table_and_the_built_index_agree() {
        let bytes = std::fs::read("/proc/self/exe").unwrap();
        let elf = ElfImage::parse(std::sync::Arc::new(super::super::bytes::FileBytes::Owned(
            bytes,
        )))
        .unwrap();
        let from_header = Cfi::load(&elf).unwrap().unwrap();
        assert!(matches!(from_header.index, FdeIndex::Header(_)));
        let entries = build_index(&from_header.eh_frame, &from_header.bases);
        assert!(entries.len() > 100);
        let from_index = Cfi {
            eh_frame: from_header.eh_frame.clone(),
            eh_frame_address: from_header.eh_frame_address,
            bases: from_header.bases.clone(),
            index: FdeIndex::Sorted(entries.clone()),
        };
        let mut context = Context::new();
        for entry in entries.iter().step_by(7) {
            for address in [
                entry.start.wrapping_sub(1),
                entry.start,
                entry.start + 1,
                entry.end - 1,
                entry.end,
            ] {
                assert_eq!(
                    from_header.row(&mut context, address).unwrap(),
                    from_index.row(&mut context, address).unwrap(),
                    "at {address:#x}"
                );
            }
        }
    }
}
