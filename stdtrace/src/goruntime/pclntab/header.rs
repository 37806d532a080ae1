//! The table's header: which format it is in, and where its parts are.

use super::super::{
    GoError,
    elf::{ElfImage, read_uint},
};

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
    pub(super) fn record_header_size(self, ptr_size: usize) -> usize {
        match self {
            // entry (pointer), then 8 × u32, then funcID, flag, pad, nfuncdata.
            PclntabFormat::Go116 => ptr_size + 8 * 4 + 4,
            PclntabFormat::Go118 => 9 * 4 + 4,
            // As 1.18 plus startLine.
            PclntabFormat::Go120 => 10 * 4 + 4,
        }
    }

    /// The size of one inlining record.
    pub(super) fn inlined_call_size(self) -> u64 {
        match self {
            // parent i16, funcID u8, pad, file i32, line i32, func_ i32, parentPc i32.
            PclntabFormat::Go116 | PclntabFormat::Go118 => 20,
            // funcID u8, pad [3], nameOff i32, parentPc i32, startLine i32.
            PclntabFormat::Go120 => 16,
        }
    }
}

/// Where things are in a table: the header's facts, with the text start settled.
#[derive(Debug, Clone, Copy)]
pub(super) struct Layout {
    pub(super) address: u64,
    pub(super) format: PclntabFormat,
    pub(super) little_endian: bool,
    pub(super) quantum: u8,
    pub(super) ptr_size: usize,
    pub(super) nfunc: usize,
    pub(super) text_start: u64,
    pub(super) funcname_offset: usize,
    pub(super) cu_offset: usize,
    pub(super) filetab_offset: usize,
    pub(super) pctab_offset: usize,
    pub(super) functab_offset: usize,
}

impl Layout {
    pub(super) fn new(header: &Header, address: u64, text_start: u64) -> Layout {
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

/// The fixed header fields, before the text start is settled.
pub(super) struct Header {
    pub(super) format: PclntabFormat,
    pub(super) little_endian: bool,
    pub(super) quantum: u8,
    pub(super) ptr_size: usize,
    pub(super) nfunc: usize,
    pub(super) header_text_start: Option<u64>,
    pub(super) funcname_offset: usize,
    pub(super) cu_offset: usize,
    pub(super) filetab_offset: usize,
    pub(super) pctab_offset: usize,
    pub(super) functab_offset: usize,
}

impl Header {
    pub(super) fn parse(data: &[u8]) -> Result<Header, GoError> {
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

/// The header's text start, as the loader would relocate it (zero in Go 1.26+).
pub(super) fn header_text_start(elf: &ElfImage<'_>, address: u64, header: &Header) -> Option<u64> {
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
