//! Inlined calls: the frames at a pc, innermost first.

use super::{
    super::{Reason, elf::read_uint},
    Func, Pclntab,
    header::PclntabFormat,
};

/// `PCDATA` table numbers and `FUNCDATA` slot numbers (the same in every supported version).
const PCDATA_INL_TREE_INDEX: u32 = 2;
const FUNCDATA_INL_TREE: u32 = 3;

/// Bounds on what a sane table holds, to stop a corrupt one from making us loop or allocate.
const MAX_INLINE_DEPTH: usize = 256;
const MAX_INLINE_INDEX: i32 = 1 << 24;

/// One frame at a pc: a real function, or a call inlined into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// This call was inlined into the frame after it.
    pub inlined: bool,
}

impl Pclntab<'_> {
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
