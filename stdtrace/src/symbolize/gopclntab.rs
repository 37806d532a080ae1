//! Go code named and unwound from the binary's own pc-line table (`.gopclntab`, parsed by
//! [`crate::goruntime::pclntab`]): Go functions have no `.eh_frame` and stripped Go binaries
//! no symbols or DWARF, but every Go binary keeps this table, and the runtime's own tracebacks
//! use nothing else. It is authoritative for the Go text: the C part of a cgo binary lies
//! outside it and is named and unwound as any other code.
//!
//! A Go frame on amd64 is fixed by one number per pc, the SP delta (how far SP is below its
//! value at entry): the return address is at `rsp + delta`, the caller's SP just above it.
//! Go keeps rbp as a frame pointer too, saved just below the return address once the
//! prologue has run; it is recovered for the C frames a walk may reach, never followed.

use super::{
    Miss,
    dwarf::SourceFrame,
    elf::ElfImage,
    unwind::{CfaRule, CfiRow, RegisterRule, UnwindRules, register},
};
use crate::goruntime::{
    self, GoError, Reason, SharedBytes,
    pclntab::{Func, FuncKind, Pclntab},
};

/// Sections only Go binaries have: a file with none of them is not parsed as one (scanning
/// every library for a table would cost more than naming it).
const GO_SECTIONS: [&str; 4] = [
    ".gopclntab",
    ".data.rel.ro.gopclntab",
    ".go.buildinfo",
    ".note.go.buildid",
];

/// Registers Go code does not preserve across calls (Go has no callee-saved registers but
/// rsp and rbp): in a Go frame's caller they are unknown, not the same value.
const CLOBBERED: [u16; 5] = [
    register::RBX,
    register::R12,
    register::R13,
    register::R14,
    register::R15,
];

/// What CFI expressions in Go rows would be evaluated with (Go rows have none).
const ENCODING: gimli::Encoding = gimli::Encoding {
    address_size: 8,
    format: gimli::Format::Dwarf32,
    version: 4,
};

/// The pc-line table of one Go binary, sharing the object's bytes.
#[derive(Debug)]
pub(crate) struct GoTable {
    table: Pclntab<'static>,
}

/// What the table says about the code at an address.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum GoNames {
    /// The address is outside the Go text: other sources name it.
    Outside,
    /// The frames at the address, innermost inlined call first.
    Frames(Vec<SourceFrame>),
    /// The address is in the Go text but the table cannot say which function holds it.
    Miss(Reason),
}

impl GoTable {
    /// The table of `elf`: `Ok(None)` when the file is not a Go binary, an error when it is
    /// one whose table cannot be used.
    pub(crate) fn load(elf: &ElfImage) -> Result<Option<Self>, GoError> {
        if !GO_SECTIONS
            .iter()
            .any(|name| elf.section_address(name).is_some())
        {
            return Ok(None);
        }
        let file: SharedBytes = elf.file().clone();
        let image = goruntime::elf::ElfImage::parse(elf.bytes())?;
        let table = goruntime::find_pclntab(&image)?.into_shared(&file);
        Ok(Some(Self { table }))
    }

    /// The functions at `vaddr` (a pc, or a return address minus one), innermost first.
    pub(crate) fn names(&self, vaddr: u64) -> GoNames {
        let reason = match self.table.frames(vaddr) {
            Ok(frames) => {
                return GoNames::Frames(
                    frames
                        .into_iter()
                        .map(|frame| SourceFrame {
                            function: Some(frame.function),
                            file: frame.file,
                            line: frame.line,
                            miss: None,
                        })
                        .collect(),
                );
            }
            Err(Reason::PcOutsideText { .. }) => return GoNames::Outside,
            Err(reason) => reason,
        };
        match self.table.find_func(vaddr) {
            // The inlining tree is unusable: the function that holds the address is still
            // known, but not what was inlined into it there, nor the line (which would be the
            // inlined code's).
            Ok(func) => GoNames::Frames(vec![SourceFrame {
                function: Some(func.name),
                file: None,
                line: None,
                miss: Some(Miss::GoLookup(reason)),
            }]),
            Err(reason) => GoNames::Miss(reason),
        }
    }

    /// How to unwind the Go frame whose code is at `vaddr`; `None` when it is outside the Go
    /// text. `elf` is read for the instruction at `vaddr`.
    pub(crate) fn unwind_rules(&self, elf: &ElfImage, vaddr: u64) -> Option<UnwindRules> {
        let func = match self.table.find_func(vaddr) {
            Ok(func) => func,
            Err(Reason::PcOutsideText { .. }) => return None,
            Err(reason) => return Some(UnwindRules::BadCfi(format!("Go pc-line table: {reason}"))),
        };
        Some(match frame_kind(&func) {
            GoFrameKind::Outermost => UnwindRules::Outermost,
            GoFrameKind::SwitchesStack => UnwindRules::SwitchesStack {
                function: func.name,
            },
            kind => match self.table.sp_delta_in(&func, vaddr) {
                Ok(sp_delta) => {
                    let code = elf.code_at(vaddr, RBP_STORE_LEN).unwrap_or_default();
                    UnwindRules::Cfi(go_row(
                        sp_delta,
                        rbp_saved(sp_delta, code),
                        kind == GoFrameKind::Injected,
                    ))
                }
                Err(reason) => UnwindRules::BadCfi(format!("Go pc-line table: {reason}")),
            },
        })
    }
}

/// What a Go function means to a stack walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GoFrameKind {
    /// An ordinary frame, called by the frame above it.
    Called,
    /// A frame the runtime pushed on behalf of a signal (`runtime.sigpanic`,
    /// `runtime.asyncPreempt`): its "return address" is the interrupted pc itself.
    Injected,
    /// The bottom of a goroutine's or thread's stack.
    Outermost,
    /// Sets SP itself, to move to another stack: its caller is not found from its frame.
    SwitchesStack,
}

fn frame_kind(func: &Func) -> GoFrameKind {
    if func.is_outermost() {
        return GoFrameKind::Outermost;
    }
    match func.kind {
        FuncKind::Sigpanic | FuncKind::AsyncPreempt => GoFrameKind::Injected,
        // Go before 1.17 does not flag the functions that write SP: these are the ones whose
        // callers are on another stack.
        FuncKind::Systemstack
        | FuncKind::SystemstackSwitch
        | FuncKind::Mcall
        | FuncKind::Morestack
        | FuncKind::Asmcgocall
        | FuncKind::Cgocallback
        | FuncKind::Gogo => GoFrameKind::SwitchesStack,
        _ if func.writes_sp() => GoFrameKind::SwitchesStack,
        _ => GoFrameKind::Called,
    }
}

/// How many bytes of code [`rbp_saved`] looks at: `MOVQ BP, disp32(SP)`.
const RBP_STORE_LEN: usize = 8;

/// Whether the caller's rbp is saved at CFA - 16 at a pc where SP is `sp_delta` below its
/// entry value, `code` being the bytes there. Go's amd64 prologue saves it as soon as the
/// frame exists: `PUSHQ BP` (Go 1.21+) makes the delta 8 with it saved; the older
/// `SUBQ $n, SP; MOVQ BP, n-8(SP)` has one instruction, the store itself, where the frame
/// exists and the slot does not hold it yet. Epilogues restore rbp no earlier than they
/// release the frame, and a frameless function (delta 0) leaves rbp alone. (Assembly
/// functions declared NOFRAME break this rule; their callers' rbp comes out wrong, which only
/// matters to C frames relying on it beyond them.)
fn rbp_saved(sp_delta: u32, code: &[u8]) -> bool {
    if sp_delta < 8 {
        return false;
    }
    // The store into the slot just below the return address: MOVQ BP, disp8(SP) or
    // MOVQ BP, disp32(SP), with disp = delta - 8.
    let displacement = match code {
        [0x48, 0x89, 0x6c, 0x24, disp, ..] => Some(u32::from(*disp)),
        [0x48, 0x89, 0xac, 0x24, a, b, c, d, ..] => Some(u32::from_le_bytes([*a, *b, *c, *d])),
        _ => None,
    };
    displacement != Some(sp_delta - 8)
}

/// The row for a Go frame: CFA = rsp + delta + 8 (the caller's SP), the return address just
/// below it and, once saved, the caller's rbp below that. `injected`: the caller's pc is exact
/// (the frame was pushed by a signal), not a return address.
fn go_row(sp_delta: u32, rbp_saved: bool, injected: bool) -> CfiRow {
    let mut registers = vec![
        (register::RIP, RegisterRule::Offset(-8)),
        (
            register::RBP,
            if rbp_saved {
                RegisterRule::Offset(-16)
            } else {
                RegisterRule::SameValue
            },
        ),
    ];
    registers.extend(
        CLOBBERED
            .iter()
            .map(|number| (*number, RegisterRule::Undefined)),
    );
    CfiRow {
        cfa: CfaRule::RegisterOffset {
            register: register::RSP,
            offset: i64::from(sp_delta) + 8,
        },
        registers,
        signal_frame: injected,
        encoding: ENCODING,
    }
}

#[cfg(test)]
mod tests;
