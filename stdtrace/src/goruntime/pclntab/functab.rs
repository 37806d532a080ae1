//! Reading the function table, the function records and the name and file tables.

use std::borrow::Cow;

use super::{
    super::{Reason, elf::read_uint},
    func::{Func, FuncFlags, FuncKind},
    header::{Layout, PclntabFormat},
};

/// Bounds on what a sane table holds, to stop a corrupt one from making us loop or allocate.
const MAX_NAME_LEN: usize = 1 << 16;

/// Reads a table's function table and records from borrowed bytes: used on owned tables and
/// on scan candidates alike.
pub(super) struct View<'a> {
    pub(super) layout: &'a Layout,
    pub(super) data: &'a [u8],
    pub(super) relocations: &'a [(u64, u64)],
}

impl View<'_> {
    fn uint(&self, offset: usize, size: usize) -> Option<u64> {
        let bytes = self.data.get(offset..offset.checked_add(size)?)?;
        Some(read_uint(bytes, size, self.layout.little_endian))
    }

    pub(super) fn u32_at(&self, offset: usize) -> Option<u32> {
        self.uint(offset, 4).map(|value| value as u32)
    }

    /// A pointer in the table, relocated if the dynamic loader would relocate it.
    pub(super) fn pointer_at(&self, offset: usize) -> Option<u64> {
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
    pub(super) fn functab_entry(&self, i: usize) -> Option<u64> {
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

    pub(super) fn name_offset_of(&self, i: usize) -> Option<u32> {
        let field = match self.layout.format {
            PclntabFormat::Go116 => self.layout.ptr_size,
            PclntabFormat::Go118 | PclntabFormat::Go120 => 4,
        };
        self.u32_at(self.record_of(i)?.checked_add(field)?)
    }

    /// A NUL-terminated function name in the name table.
    pub(super) fn name_at(&self, offset: u32) -> Option<Cow<'_, str>> {
        let start = self
            .layout
            .funcname_offset
            .checked_add(usize::try_from(offset).ok()?)?;
        c_string(self.data, start).map(String::from_utf8_lossy)
    }

    /// The name of file `index` of the compilation unit at `cu_offset`.
    pub(super) fn file_name(&self, cu_offset: u32, index: i32) -> Result<String, Reason> {
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
    pub(super) fn func_at_index(&self, i: usize) -> Result<Func, Reason> {
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
