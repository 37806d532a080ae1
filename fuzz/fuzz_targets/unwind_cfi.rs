//! `.eh_frame` CFI and the unwinder (symbolize/cfi.rs, unwind.rs), driven by fuzzed registers
//! and stack bytes. Input: a 4-byte mask of the registers known (bit N: DWARF register N, 16
//! the instruction pointer), 17 little-endian u64 register values, a 2-byte stack length, the
//! stack bytes (based at the stack pointer), then the object file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stdtrace::symbolize::{StackCopy, UserRegisters, fuzzing};

const REGISTERS: usize = 17;

fuzz_target!(|data: &[u8]| {
    let Some((mask, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let mask = u32::from_le_bytes(*mask);
    let Some((values, rest)) = rest.split_first_chunk::<{ REGISTERS * 8 }>() else {
        return;
    };
    let Some((stack_len, rest)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let stack_len = usize::from(u16::from_le_bytes(*stack_len)).min(rest.len());
    let (stack, object) = rest.split_at(stack_len);
    let mut registers = UserRegisters::default();
    for (number, value) in values.chunks_exact(8).enumerate() {
        if mask & (1 << number) != 0 {
            let value = u64::from_le_bytes(value.try_into().unwrap_or_default());
            registers.set(number as u16, value);
        }
    }
    let stack = StackCopy {
        base: registers.sp().unwrap_or(0),
        bytes: stack,
    };
    let _ = fuzzing::unwind(object, &registers, &stack);
});
