//! Lookups in a function's pc-value tables (file, line, frame size) and function data.

use super::{
    super::{
        Reason,
        pcvalue::{self, PcValueMiss},
    },
    Func, Pclntab,
    header::PclntabFormat,
};

impl Pclntab<'_> {
    /// The value at `pc` of the pc-value table at `table` (an offset into the pc tables).
    pub(super) fn pcvalue(
        &self,
        func: &Func,
        table: u32,
        pc: u64,
        what: &'static str,
    ) -> Result<i32, Reason> {
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
    pub(super) fn pcdata_table(&self, func: &Func, index: u32) -> Result<u32, Reason> {
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
    pub(super) fn funcdata_address(&self, func: &Func, index: u32) -> Result<Option<u64>, Reason> {
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
    pub(super) fn read_memory(&self, address: u64, len: usize) -> Option<&[u8]> {
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
}
