//! What the unwinder learns about the code at an address, and applying a CFI row to recover
//! the caller's registers.

use gimli::{EndianSlice, Evaluation, EvaluationResult, LittleEndian, Location, Value};

use super::{StackCopy, UnwindEnd, UserRegisters, register, snapshot::register_name};

/// Most operations a CFI expression may take.
const MAX_EXPRESSION_STEPS: u32 = 1000;

/// Registers a call preserves: a callee that does not mention them in its CFI left them alone.
const CALLEE_SAVED: [u16; 6] = [
    register::RBX,
    register::RBP,
    register::R12,
    register::R13,
    register::R14,
    register::R15,
];

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
    pub(super) fn rule(&self, register: u16) -> Option<&RegisterRule> {
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

/// Where a CFI row says the return address is saved: its stack address, if it is in memory.
pub(super) fn return_slot(
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
pub(super) fn step_cfi(
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
