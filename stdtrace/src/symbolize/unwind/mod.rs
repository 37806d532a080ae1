//! Walking a user stack from a snapshot: saved registers plus a copy of the top of the stack.
//!
//! Each step applies the frame's CFI row (`.eh_frame`, see `cfi.rs`, or a row made from Go's
//! pc-line table, see `gopclntab.rs`) to recover the caller's registers; where no CFI covers
//! the code, the frame-pointer chain (`[rbp]` = the caller's rbp, `[rbp + 8]` = the return
//! address) is the fallback. Everything read comes from the
//! snapshot: a value outside the stack copy, or a register the snapshot does not have, ends the
//! walk with that reason. Nothing the stack holds is trusted: the stack pointer must grow at
//! every step and the walk stops at [`MAX_DEPTH`] frames.

mod end;
mod rules;
mod snapshot;

pub(crate) use self::rules::{CfaRule, CfiRow, RegisterRule, RuleSource, UnwindRules};
pub use self::{
    end::UnwindEnd,
    snapshot::{StackCopy, UserRegisters, register},
};

use self::rules::{return_slot, step_cfi};

/// Deepest walk: a recursion bug or a corrupt stack ends here.
pub const MAX_DEPTH: usize = 128;

/// One frame found by the walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UnwoundFrame {
    /// The pc of the first frame, the return address of the others.
    pub address: u64,
    /// The address to look the frame's code up with: inside the call instruction for callers
    /// (a return address can be the first byte of the next function), `address` itself for the
    /// first frame and for frames interrupted by a signal.
    pub lookup: u64,
    /// For callers: the stack address `address` was read from (the return address's slot).
    pub slot: Option<u64>,
}

/// Walks the stack from `registers`.
pub(crate) fn unwind(
    registers: &UserRegisters,
    stack: &StackCopy<'_>,
    source: &mut impl RuleSource,
) -> (Vec<UnwoundFrame>, UnwindEnd) {
    let mut frames = Vec::new();
    let Some(mut pc) = registers.ip() else {
        return (frames, UnwindEnd::NoInstructionPointer);
    };
    let mut registers = *registers;
    let mut exact = true;
    let mut slot = None;
    loop {
        let lookup = if exact { pc } else { pc.wrapping_sub(1) };
        frames.push(UnwoundFrame {
            address: pc,
            lookup,
            slot,
        });
        if frames.len() >= MAX_DEPTH {
            return (frames, UnwindEnd::DepthLimit);
        }
        let rules = source.rules_for(lookup);
        slot = match &rules {
            UnwindRules::Cfi(row) => return_slot(&registers, stack, row, pc),
            UnwindRules::NoCfi | UnwindRules::BadCfi(_) => {
                registers.bp().and_then(|bp| bp.checked_add(8))
            }
            _ => None,
        };
        let step = match rules {
            UnwindRules::NotMapped => Err(UnwindEnd::NotMapped { address: pc }),
            UnwindRules::Outermost => Err(UnwindEnd::Outermost),
            UnwindRules::SwitchesStack { function } => Err(UnwindEnd::StackSwitch {
                address: pc,
                function,
            }),
            UnwindRules::Cfi(row) => step_cfi(&registers, stack, &row, pc),
            UnwindRules::NoCfi => {
                step_frame_pointer(&registers, stack, pc).map_err(|end| match end {
                    UnwindEnd::RegisterUnknown { .. } => UnwindEnd::NoUnwindInfo { address: pc },
                    other => other,
                })
            }
            UnwindRules::BadCfi(reason) => {
                step_frame_pointer(&registers, stack, pc).map_err(|_| UnwindEnd::BadUnwindInfo {
                    address: pc,
                    reason,
                })
            }
        };
        let (caller, signal_frame) = match step {
            Ok(step) => step,
            Err(end) => return (frames, end),
        };
        let Some(return_address) = caller.ip() else {
            let end = UnwindEnd::BadUnwindInfo {
                address: pc,
                reason: "the return address is not recoverable".to_owned(),
            };
            return (frames, end);
        };
        if return_address == 0 {
            return (frames, UnwindEnd::Outermost);
        }
        // A signal frame may switch to another stack; any other frame must move up.
        let progressed = match (registers.sp(), caller.sp()) {
            (Some(old), Some(new)) => {
                new > old || (signal_frame && (new, return_address) != (old, pc))
            }
            (_, None) => false,
            (None, Some(_)) => true,
        };
        if !progressed {
            return (frames, UnwindEnd::NotProgressing { address: pc });
        }
        registers = caller;
        pc = return_address;
        exact = signal_frame;
    }
}

/// Follows the frame-pointer chain one step.
fn step_frame_pointer(
    registers: &UserRegisters,
    stack: &StackCopy<'_>,
    pc: u64,
) -> Result<(UserRegisters, bool), UnwindEnd> {
    let rbp = registers.bp().ok_or(UnwindEnd::RegisterUnknown {
        register: register::RBP,
        address: pc,
    })?;
    if registers.sp().is_some_and(|sp| rbp < sp) || !rbp.is_multiple_of(8) {
        return Err(UnwindEnd::NoUnwindInfo { address: pc });
    }
    let saved_rbp = stack
        .read_u64(rbp)
        .ok_or(UnwindEnd::StackExhausted { address: rbp })?;
    let slot = rbp
        .checked_add(8)
        .ok_or(UnwindEnd::NotProgressing { address: pc })?;
    let return_address = stack
        .read_u64(slot)
        .ok_or(UnwindEnd::StackExhausted { address: slot })?;
    let caller_sp = slot
        .checked_add(8)
        .ok_or(UnwindEnd::NotProgressing { address: pc })?;
    // Without CFI nothing says which other registers the callee kept: they become unknown.
    let mut caller = UserRegisters::default();
    caller.set(register::RBP, saved_rbp);
    caller.set(register::RSP, caller_sp);
    caller.set(register::RIP, return_address);
    Ok((caller, false))
}

#[cfg(test)]
mod tests;
