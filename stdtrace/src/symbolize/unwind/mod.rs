//! Walking a user stack from a snapshot: saved registers plus a copy of the top of the stack.
//!
//! Each step applies the frame's CFI row (`.eh_frame`, see `cfi.rs`, or a row made from Go's
//! pc-line table, see `gopclntab.rs`) to recover the caller's registers; where no CFI covers
//! the code, the frame-pointer chain (`[rbp]` = the caller's rbp, `[rbp + 8]` = the return
//! address) is the fallback. Everything read comes from the
//! snapshot: a value outside the stack copy, or a register the snapshot does not have, ends the
//! walk with that reason. Nothing the stack holds is trusted: the stack pointer must grow at
//! every step and the walk stops at [`MAX_DEPTH`] frames.

use std::fmt;

use gimli::{EndianSlice, Evaluation, EvaluationResult, LittleEndian, Location, Value};

/// Deepest walk: a recursion bug or a corrupt stack ends here.
pub const MAX_DEPTH: usize = 128;

/// Most operations a CFI expression may take.
const MAX_EXPRESSION_STEPS: u32 = 1000;

/// x86_64 DWARF register numbers: the indexes of [`UserRegisters::values`].
pub mod register {
    pub const RAX: u16 = 0;
    pub const RDX: u16 = 1;
    pub const RCX: u16 = 2;
    pub const RBX: u16 = 3;
    pub const RSI: u16 = 4;
    pub const RDI: u16 = 5;
    pub const RBP: u16 = 6;
    pub const RSP: u16 = 7;
    pub const R8: u16 = 8;
    pub const R9: u16 = 9;
    pub const R10: u16 = 10;
    pub const R11: u16 = 11;
    pub const R12: u16 = 12;
    pub const R13: u16 = 13;
    pub const R14: u16 = 14;
    pub const R15: u16 = 15;
    /// The return address column, which holds rip.
    pub const RIP: u16 = 16;
}

/// Registers a call preserves: a callee that does not mention them in its CFI left them alone.
const CALLEE_SAVED: [u16; 6] = [
    register::RBX,
    register::RBP,
    register::R12,
    register::R13,
    register::R14,
    register::R15,
];

/// The registers of a thread, as far as they are known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserRegisters {
    /// Indexed by x86_64 DWARF register number: 0 rax, 1 rdx, 2 rcx, 3 rbx, 4 rsi, 5 rdi,
    /// 6 rbp, 7 rsp, 8..=15 r8..r15, 16 rip. `None`: not known.
    pub values: [Option<u64>; 17],
}

impl UserRegisters {
    /// Only the instruction and stack pointers known (what `/proc/PID/syscall` shows).
    pub fn from_ip_sp(ip: u64, sp: u64) -> Self {
        let mut registers = Self::default();
        registers.set(register::RIP, ip);
        registers.set(register::RSP, sp);
        registers
    }

    /// From the words of an x86_64 `struct pt_regs` (the same layout as `user_regs_struct`):
    /// r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx, rdx, rsi, rdi, orig_rax, rip,
    /// cs, eflags, rsp, ss. Words missing from a short copy stay unknown.
    pub fn from_pt_regs(words: &[u64]) -> Self {
        // orig_rax (word 15), cs (17), eflags (18) and ss (20) have no DWARF column here.
        const ORDER: [(usize, u16); 17] = [
            (0, register::R15),
            (1, register::R14),
            (2, register::R13),
            (3, register::R12),
            (4, register::RBP),
            (5, register::RBX),
            (6, register::R11),
            (7, register::R10),
            (8, register::R9),
            (9, register::R8),
            (10, register::RAX),
            (11, register::RCX),
            (12, register::RDX),
            (13, register::RSI),
            (14, register::RDI),
            (16, register::RIP),
            (19, register::RSP),
        ];
        let mut registers = Self::default();
        for (word, number) in ORDER {
            if let Some(value) = words.get(word) {
                registers.set(number, *value);
            }
        }
        registers
    }

    /// Register `number`, if it is known.
    pub fn get(&self, number: u16) -> Option<u64> {
        self.values.get(usize::from(number)).copied().flatten()
    }

    /// Sets register `number`; numbers without a slot are ignored.
    pub fn set(&mut self, number: u16, value: u64) {
        if let Some(slot) = self.values.get_mut(usize::from(number)) {
            *slot = Some(value);
        }
    }

    /// Forgets register `number`.
    pub fn clear(&mut self, number: u16) {
        if let Some(slot) = self.values.get_mut(usize::from(number)) {
            *slot = None;
        }
    }

    /// The instruction pointer.
    pub fn ip(&self) -> Option<u64> {
        self.get(register::RIP)
    }

    /// The stack pointer.
    pub fn sp(&self) -> Option<u64> {
        self.get(register::RSP)
    }

    /// The frame pointer.
    pub fn bp(&self) -> Option<u64> {
        self.get(register::RBP)
    }
}

/// A copy of the top of a user stack: `bytes[i]` is the memory at `base + i`.
#[derive(Clone, Copy, Debug)]
pub struct StackCopy<'a> {
    pub base: u64,
    pub bytes: &'a [u8],
}

impl StackCopy<'_> {
    /// The `size` bytes (at most 8) at `address` as a little-endian integer, if all of them are
    /// in the copy.
    pub fn read(&self, address: u64, size: u8) -> Option<u64> {
        let size = usize::from(size);
        if size > 8 {
            return None;
        }
        let start = usize::try_from(address.checked_sub(self.base)?).ok()?;
        let bytes = self.bytes.get(start..start.checked_add(size)?)?;
        let mut word = [0u8; 8];
        word[..size].copy_from_slice(bytes);
        Some(u64::from_le_bytes(word))
    }

    /// The 8 bytes at `address`.
    pub fn read_u64(&self, address: u64) -> Option<u64> {
        self.read(address, 8)
    }
}

/// Why a stack walk stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnwindEnd {
    /// The last frame is the outermost one: its CFI leaves the return address undefined (as
    /// `_start` and thread entry points do), or the return address is 0.
    Outermost,
    /// A value the walk needed lies outside the stack copy.
    StackExhausted { address: u64 },
    /// No CFI covers `address` and the frame pointer is unknown, so the frame could not be
    /// unwound.
    NoUnwindInfo { address: u64 },
    /// Unwinding the frame at `address` needs a register the snapshot does not have (most
    /// often rbp, for code that keeps a frame pointer).
    RegisterUnknown { register: u16, address: u64 },
    /// `address` is not in any mapping of the process.
    NotMapped { address: u64 },
    /// The walk reached [`MAX_DEPTH`] frames.
    DepthLimit,
    /// The frame at `address` would not move the stack pointer up: a corrupt stack or loop.
    NotProgressing { address: u64 },
    /// The CFI covering `address` could not be used.
    BadUnwindInfo { address: u64, reason: String },
    /// The registers have no instruction pointer to start from.
    NoInstructionPointer,
    /// The frame at `address`, in `function`, switched stacks: Go's runtime moves between a
    /// goroutine's stack and its thread's system stack (`runtime.asmcgocall` for a cgo call,
    /// `runtime.systemstack`, `runtime.mcall`, ...), and where the callers' frames are is in
    /// the runtime's memory, not in the stack copy.
    StackSwitch { address: u64, function: String },
}

impl UnwindEnd {
    /// Whether the walk reached the outermost frame, i.e. the stack is complete.
    pub fn is_complete(&self) -> bool {
        matches!(self, UnwindEnd::Outermost)
    }

    /// Why the stack is incomplete, or `None` when the walk reached the outermost frame.
    pub fn describe_if_early(&self) -> Option<String> {
        (!self.is_complete()).then(|| self.to_string())
    }
}

impl fmt::Display for UnwindEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnwindEnd::Outermost => write!(f, "reached the outermost frame"),
            UnwindEnd::StackExhausted { address } => {
                write!(f, "stack copy exhausted (needed {address:#x})")
            }
            UnwindEnd::NoUnwindInfo { address } => {
                write!(f, "no CFI and no frame pointer at {address:#x}")
            }
            UnwindEnd::RegisterUnknown { register, address } => {
                write!(
                    f,
                    "register {} unknown at {address:#x}",
                    register_name(*register)
                )
            }
            UnwindEnd::NotMapped { address } => write!(f, "{address:#x} is not mapped"),
            UnwindEnd::DepthLimit => write!(f, "depth limit of {MAX_DEPTH} frames reached"),
            UnwindEnd::NotProgressing { address } => {
                write!(f, "stack pointer did not grow at {address:#x}")
            }
            UnwindEnd::BadUnwindInfo { address, reason } => {
                write!(f, "unusable CFI at {address:#x}: {reason}")
            }
            UnwindEnd::NoInstructionPointer => write!(f, "no instruction pointer"),
            UnwindEnd::StackSwitch { address, function } => write!(
                f,
                "{function} at {address:#x} switched stacks: its callers are on another stack"
            ),
        }
    }
}

fn register_name(number: u16) -> String {
    const NAMES: [&str; 17] = [
        "rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15", "rip",
    ];
    NAMES
        .get(usize::from(number))
        .map_or_else(|| format!("#{number}"), |name| (*name).to_owned())
}

/// How to find the canonical frame address (the caller's stack pointer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CfaRule {
    RegisterOffset {
        register: u16,
        offset: i64,
    },
    /// A DWARF expression (PLT entries use one).
    Expression(Vec<u8>),
}

/// How to recover one register of the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RegisterRule {
    Undefined,
    SameValue,
    /// Saved at CFA + offset.
    Offset(i64),
    /// Is CFA + offset.
    ValOffset(i64),
    /// Is in another register.
    Register(u16),
    /// Saved at the address the expression computes (with the CFA pushed first).
    Expression(Vec<u8>),
    /// Is the value the expression computes.
    ValExpression(Vec<u8>),
    Constant(u64),
    /// Defined by the ABI in a way this unwinder does not know.
    Architectural,
}

/// The CFI row for one address, owned so that it outlives the section it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CfiRow {
    pub cfa: CfaRule,
    /// Rules for the registers the row mentions (DWARF numbers 0..=16).
    pub registers: Vec<(u16, RegisterRule)>,
    /// The frame is a signal trampoline: its caller's pc is exact, not a return address.
    pub signal_frame: bool,
    /// The encoding expressions are evaluated with.
    pub encoding: gimli::Encoding,
}

impl CfiRow {
    fn rule(&self, register: u16) -> Option<&RegisterRule> {
        self.registers
            .iter()
            .find(|(number, _)| *number == register)
            .map(|(_, rule)| rule)
    }
}

/// What the unwinder learns about the code at an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum UnwindRules {
    Cfi(CfiRow),
    /// No CFI covers it (or its object could not be read): frame pointers are the fallback.
    NoCfi,
    /// CFI covers it but is broken; frame pointers are tried, this is the reason if they fail.
    BadCfi(String),
    /// The address is in no mapping.
    NotMapped,
    /// The code is the outermost frame of its stack (Go's `runtime.goexit`, `runtime.mstart`):
    /// the walk is complete.
    Outermost,
    /// The code, in `function`, runs on another stack than its caller (it writes the stack
    /// pointer itself): the walk cannot go on.
    SwitchesStack {
        function: String,
    },
}

/// Where the unwinder gets unwind rules: the symbolizer looks them up in the objects mapped
/// at each address; tests make them up.
pub(crate) trait RuleSource {
    /// The rules for the code at `lookup` (the pc, or the return address minus one).
    fn rules_for(&mut self, lookup: u64) -> UnwindRules;
}

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

/// Where a CFI row says the return address is saved: its stack address, if it is in memory.
fn return_slot(
    registers: &UserRegisters,
    stack: &StackCopy<'_>,
    row: &CfiRow,
    pc: u64,
) -> Option<u64> {
    let cfa = match &row.cfa {
        CfaRule::RegisterOffset { register, offset } => {
            registers.get(*register)?.wrapping_add_signed(*offset)
        }
        CfaRule::Expression(bytes) => {
            evaluate(bytes, row.encoding, registers, stack, None, pc).ok()?
        }
    };
    match row.rule(register::RIP)? {
        RegisterRule::Offset(offset) => Some(cfa.wrapping_add_signed(*offset)),
        RegisterRule::Expression(bytes) => {
            evaluate(bytes, row.encoding, registers, stack, Some(cfa), pc).ok()
        }
        _ => None,
    }
}

/// Applies a CFI row: the caller's registers, and whether this frame was a signal trampoline.
fn step_cfi(
    registers: &UserRegisters,
    stack: &StackCopy<'_>,
    row: &CfiRow,
    pc: u64,
) -> Result<(UserRegisters, bool), UnwindEnd> {
    let cfa = match &row.cfa {
        CfaRule::RegisterOffset { register, offset } => {
            let base = registers.get(*register).ok_or(UnwindEnd::RegisterUnknown {
                register: *register,
                address: pc,
            })?;
            base.wrapping_add_signed(*offset)
        }
        CfaRule::Expression(bytes) => evaluate(bytes, row.encoding, registers, stack, None, pc)?,
    };
    let mut caller = UserRegisters::default();
    caller.set(register::RSP, cfa);
    for number in 0..=register::RIP {
        let rule = match row.rule(number) {
            Some(rule) => rule,
            None if CALLEE_SAVED.contains(&number) => &RegisterRule::SameValue,
            // The caller's stack pointer is the CFA, set above.
            None if number == register::RSP => continue,
            None => &RegisterRule::Undefined,
        };
        match recover(number, rule, cfa, registers, stack, row, pc) {
            Ok(Some(value)) => caller.set(number, value),
            Ok(None) => caller.clear(number),
            // Without the return address or the stack pointer the walk cannot go on; any other
            // register that cannot be recovered is merely unknown in the caller.
            Err(end) if number == register::RIP || number == register::RSP => return Err(end),
            Err(_) => caller.clear(number),
        }
    }
    Ok((caller, row.signal_frame))
}

/// The caller's value of register `number` under `rule`: `None` when it is not known.
fn recover(
    number: u16,
    rule: &RegisterRule,
    cfa: u64,
    registers: &UserRegisters,
    stack: &StackCopy<'_>,
    row: &CfiRow,
    pc: u64,
) -> Result<Option<u64>, UnwindEnd> {
    let read = |address: u64| {
        stack
            .read_u64(address)
            .map(Some)
            .ok_or(UnwindEnd::StackExhausted { address })
    };
    match rule {
        // An undefined return address is how CFI marks the outermost frame.
        RegisterRule::Undefined if number == register::RIP => Err(UnwindEnd::Outermost),
        RegisterRule::Undefined => Ok(None),
        RegisterRule::SameValue => Ok(registers.get(number)),
        RegisterRule::Offset(offset) => read(cfa.wrapping_add_signed(*offset)),
        RegisterRule::ValOffset(offset) => Ok(Some(cfa.wrapping_add_signed(*offset))),
        RegisterRule::Register(other) => {
            registers
                .get(*other)
                .map(Some)
                .ok_or(UnwindEnd::RegisterUnknown {
                    register: *other,
                    address: pc,
                })
        }
        RegisterRule::Expression(bytes) => read(evaluate(
            bytes,
            row.encoding,
            registers,
            stack,
            Some(cfa),
            pc,
        )?),
        RegisterRule::ValExpression(bytes) => {
            evaluate(bytes, row.encoding, registers, stack, Some(cfa), pc).map(Some)
        }
        RegisterRule::Constant(value) => Ok(Some(*value)),
        RegisterRule::Architectural => Err(UnwindEnd::BadUnwindInfo {
            address: pc,
            reason: format!("architectural rule for {}", register_name(number)),
        }),
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

/// Evaluates a CFI expression, with registers and memory from the snapshot; `initial` is
/// pushed first (the CFA, for register rules).
fn evaluate(
    bytecode: &[u8],
    encoding: gimli::Encoding,
    registers: &UserRegisters,
    stack: &StackCopy<'_>,
    initial: Option<u64>,
    pc: u64,
) -> Result<u64, UnwindEnd> {
    let bad = |reason: String| UnwindEnd::BadUnwindInfo {
        address: pc,
        reason,
    };
    let mut evaluation = Evaluation::new(EndianSlice::new(bytecode, LittleEndian), encoding);
    evaluation.set_max_iterations(MAX_EXPRESSION_STEPS);
    if let Some(value) = initial {
        evaluation.set_initial_value(value);
    }
    let mut state = evaluation.evaluate();
    loop {
        state = match state.map_err(|err| bad(format!("expression: {err}")))? {
            EvaluationResult::Complete => break,
            EvaluationResult::RequiresMemory { address, size, .. } => {
                let value = stack
                    .read(address, size)
                    .ok_or(UnwindEnd::StackExhausted { address })?;
                evaluation.resume_with_memory(Value::Generic(value))
            }
            EvaluationResult::RequiresRegister { register, .. } => {
                let value = registers
                    .get(register.0)
                    .ok_or(UnwindEnd::RegisterUnknown {
                        register: register.0,
                        address: pc,
                    })?;
                evaluation.resume_with_register(Value::Generic(value))
            }
            other => return Err(bad(format!("expression needs {other:?}"))),
        };
    }
    match evaluation.as_result() {
        [piece] => match piece.location {
            Location::Address { address } => Ok(address),
            Location::Value { value } => {
                Ok(value.to_u64(u64::MAX).map_err(|err| bad(err.to_string()))?)
            }
            _ => Err(bad(
                "expression yields neither an address nor a value".to_owned()
            )),
        },
        _ => Err(bad("expression yields several pieces".to_owned())),
    }
}

#[cfg(test)]
mod tests;
