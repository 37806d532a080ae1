use std::sync::Arc;

use super::*;
use crate::symbolize::{
    bytes::FileBytes,
    unwind::{RuleSource, StackCopy, UnwindEnd, UnwoundFrame, UserRegisters, unwind},
};

/// Rules per code address range, as a test writes them.
struct FakeRules(Vec<(std::ops::Range<u64>, UnwindRules)>);

impl RuleSource for FakeRules {
    fn rules_for(&mut self, lookup: u64) -> UnwindRules {
        self.0
            .iter()
            .find(|(range, _)| range.contains(&lookup))
            .map_or(UnwindRules::NotMapped, |(_, rules)| rules.clone())
    }
}

fn go(sp_delta: u32, rbp_saved: bool) -> UnwindRules {
    UnwindRules::Cfi(go_row(sp_delta, rbp_saved, false))
}

/// A stack of 64-bit words starting at `BASE`.
fn words(values: &[u64]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect()
}

fn addresses(frames: &[UnwoundFrame]) -> Vec<u64> {
    frames.iter().map(|frame| frame.address).collect()
}

const BASE: u64 = 0xc000_0a0000;

/// `SUBQ $0x40, SP` then `MOVQ BP, 0x38(SP)`: Go 1.20 and earlier.
const MOVQ_BP_DISP8: [u8; 5] = [0x48, 0x89, 0x6c, 0x24, 0x38];
/// The same store into a frame larger than 127 bytes.
const MOVQ_BP_DISP32: [u8; 8] = [0x48, 0x89, 0xac, 0x24, 0x88, 0x01, 0x00, 0x00];
/// `MOVQ SP, BP` after `PUSHQ BP`: Go 1.21 and later.
const MOVQ_SP_BP: [u8; 3] = [0x48, 0x89, 0xe5];

#[test]
fn rbp_is_saved_once_the_frame_exists_and_the_store_has_run() {
    // At the entry, and in frameless functions, rbp is still the caller's.
    assert!(!rbp_saved(0, &[0x55]));
    assert!(!rbp_saved(0, &[]));
    // PUSHQ BP made the delta 8 with rbp saved.
    assert!(rbp_saved(8, &MOVQ_SP_BP));
    // SUBQ made the frame, the store is the next instruction.
    assert!(!rbp_saved(0x40, &MOVQ_BP_DISP8));
    assert!(!rbp_saved(0x190, &MOVQ_BP_DISP32));
    // Past it, and when the code cannot be read, the slot holds it.
    assert!(rbp_saved(0x40, &[0x48, 0x8d, 0x6c, 0x24, 0x38]));
    assert!(rbp_saved(0x40, &[]));
    // A store elsewhere in the frame is not the prologue's.
    assert!(rbp_saved(0x50, &MOVQ_BP_DISP8));
    assert!(rbp_saved(0x190, &MOVQ_BP_DISP32[..5]));
}

#[test]
fn a_go_row_finds_the_caller_from_the_sp_delta() {
    let row = go_row(0x28, true, false);
    assert_eq!(
        row.cfa,
        CfaRule::RegisterOffset {
            register: register::RSP,
            offset: 0x30,
        }
    );
    assert!(!row.signal_frame);
    let rule = |number: u16| {
        row.registers
            .iter()
            .find(|(register, _)| *register == number)
            .map(|(_, rule)| rule.clone())
    };
    assert_eq!(rule(register::RIP), Some(RegisterRule::Offset(-8)));
    assert_eq!(rule(register::RBP), Some(RegisterRule::Offset(-16)));
    for number in CLOBBERED {
        assert_eq!(rule(number), Some(RegisterRule::Undefined));
    }
    let entry = go_row(0, false, true);
    assert_eq!(
        entry.cfa,
        CfaRule::RegisterOffset {
            register: register::RSP,
            offset: 8,
        }
    );
    assert!(
        entry
            .registers
            .contains(&(register::RBP, RegisterRule::SameValue))
    );
    assert!(entry.signal_frame);
}

#[test]
fn go_frames_unwind_from_sp_deltas_alone_to_goexit() {
    // Syscall6 (0x1000..0x1100) at its entry: delta 0, the return address at sp.
    // emit (0x2000..0x2100): delta 0x18, rbp saved at CFA - 16.
    // goexit (0x3000..0x3100): outermost.
    let stack = words(&[
        0x2050, // BASE: Syscall6's return address into emit
        0xdead, // emit's locals
        0xdead,
        BASE + 0x60, // emit's saved rbp (the caller's frame pointer)
        0x3001,      // emit's return address: goexit + 1, as newproc sets it up
        0,
    ]);
    let copy = StackCopy {
        base: BASE,
        bytes: &stack,
    };
    let mut rules = FakeRules(vec![
        (0x1000..0x1100, go(0, false)),
        (0x2000..0x2100, go(0x18, true)),
        (0x3000..0x3100, UnwindRules::Outermost),
    ]);
    let (frames, end) = unwind(&UserRegisters::from_ip_sp(0x1000, BASE), &copy, &mut rules);
    assert_eq!(addresses(&frames), vec![0x1000, 0x2050, 0x3001]);
    // goexit is looked up inside it, at its entry.
    assert_eq!(frames[2].lookup, 0x3000);
    assert_eq!(end, UnwindEnd::Outermost);
}

#[test]
fn rbp_saved_by_go_code_lets_a_c_caller_with_a_frame_pointer_unwind() {
    // go (0x1000..0x1100): delta 0x10, rbp saved.
    // C (0x2000..0x2100): CFA = rbp + 16, rbp saved at CFA - 16, then the outermost frame.
    let c_frame = BASE + 0x20;
    let stack = words(&[
        0x1111,  // BASE: Go locals
        c_frame, // BASE + 0x08: Go's saved rbp: the C frame's frame pointer
        0x2050,  // BASE + 0x10: return address into C
        0xbeef,  // BASE + 0x18: C locals
        0,       // BASE + 0x20: C's saved rbp
        0x4010,  // BASE + 0x28: return address into the outermost frame
        0,
    ]);
    let copy = StackCopy {
        base: BASE,
        bytes: &stack,
    };
    let c_row = UnwindRules::Cfi(CfiRow {
        cfa: CfaRule::RegisterOffset {
            register: register::RBP,
            offset: 16,
        },
        registers: vec![
            (register::RIP, RegisterRule::Offset(-8)),
            (register::RBP, RegisterRule::Offset(-16)),
        ],
        signal_frame: false,
        encoding: ENCODING,
    });
    let mut rules = FakeRules(vec![
        (0x1000..0x1100, go(0x10, true)),
        (0x2000..0x2100, c_row.clone()),
        (0x4000..0x4100, UnwindRules::Outermost),
    ]);
    let registers = UserRegisters::from_ip_sp(0x1040, BASE);
    let (frames, end) = unwind(&registers, &copy, &mut rules);
    assert_eq!(addresses(&frames), vec![0x1040, 0x2050, 0x4010]);
    assert_eq!(end, UnwindEnd::Outermost);

    // Before Go saved it (at the store), rbp is still the C frame's, and must be known.
    let mut rules = FakeRules(vec![
        (0x1000..0x1100, go(0x10, false)),
        (0x2000..0x2100, c_row),
    ]);
    let (_, end) = unwind(&registers, &copy, &mut rules);
    assert_eq!(
        end,
        UnwindEnd::RegisterUnknown {
            register: register::RBP,
            address: 0x2050,
        }
    );
    let mut with_rbp = registers;
    with_rbp.set(register::RBP, c_frame);
    let (frames, end) = unwind(&with_rbp, &copy, &mut rules);
    assert_eq!(addresses(&frames), vec![0x1040, 0x2050, 0x4010]);
    assert_eq!(end, UnwindEnd::NotMapped { address: 0x4010 });
}

#[test]
fn a_go_frame_mid_prologue_is_unwound_from_its_exact_pc() {
    // The first frame stopped right after `SUBQ $0x40, SP`: the frame exists, rbp is not
    // saved yet. The caller's return address is at sp + 0x40 regardless.
    let mut stack = vec![0u8; 0x50];
    stack[0x40..0x48].copy_from_slice(&0x2010u64.to_le_bytes());
    let copy = StackCopy {
        base: BASE,
        bytes: &stack,
    };
    let mut rules = FakeRules(vec![
        (
            0x1000..0x1100,
            UnwindRules::Cfi(go_row(0x40, rbp_saved(0x40, &MOVQ_BP_DISP8), false)),
        ),
        (0x2000..0x2100, UnwindRules::Outermost),
    ]);
    let mut registers = UserRegisters::from_ip_sp(0x100a, BASE);
    registers.set(register::RBP, 0x7777);
    let (frames, end) = unwind(&registers, &copy, &mut rules);
    assert_eq!(addresses(&frames), vec![0x100a, 0x2010]);
    assert_eq!(end, UnwindEnd::Outermost);
}

#[test]
fn a_stack_switch_ends_the_walk_with_its_function() {
    let stack = words(&[0x2050, 0]);
    let copy = StackCopy {
        base: BASE,
        bytes: &stack,
    };
    let mut rules = FakeRules(vec![
        (0x1000..0x1100, go(0, false)),
        (
            0x2000..0x2100,
            UnwindRules::SwitchesStack {
                function: "runtime.asmcgocall".to_owned(),
            },
        ),
    ]);
    let (frames, end) = unwind(&UserRegisters::from_ip_sp(0x1000, BASE), &copy, &mut rules);
    assert_eq!(addresses(&frames), vec![0x1000, 0x2050]);
    assert_eq!(
        end,
        UnwindEnd::StackSwitch {
            address: 0x2050,
            function: "runtime.asmcgocall".to_owned(),
        }
    );
    assert_eq!(
        end.to_string(),
        "runtime.asmcgocall at 0x2050 switched stacks: its callers are on another stack"
    );
    assert!(!end.is_complete());
}

#[test]
fn the_frame_under_sigpanic_is_looked_up_at_its_exact_pc() {
    // sigpanic (0x1000..0x1100) was pushed by the signal handler: its "return address" is the
    // faulting instruction, the first byte of the function at 0x2000.
    let stack = words(&[0x2000, 0x3010, 0]);
    let copy = StackCopy {
        base: BASE,
        bytes: &stack,
    };
    let mut rules = FakeRules(vec![
        (0x1000..0x1100, UnwindRules::Cfi(go_row(0, false, true))),
        (0x1f00..0x2000, UnwindRules::NotMapped),
        (0x2000..0x2100, go(0, false)),
        (0x3000..0x3100, UnwindRules::Outermost),
    ]);
    let (frames, end) = unwind(&UserRegisters::from_ip_sp(0x1000, BASE), &copy, &mut rules);
    assert_eq!(addresses(&frames), vec![0x1000, 0x2000, 0x3010]);
    assert_eq!(frames[1].lookup, 0x2000);
    assert_eq!(end, UnwindEnd::Outermost);
}

#[test]
fn objects_without_go_sections_are_not_go_binaries() {
    let bytes = std::fs::read("/proc/self/exe").expect("reading the test binary");
    let elf = ElfImage::parse(Arc::new(FileBytes::Owned(bytes))).expect("the test binary parses");
    assert!(matches!(GoTable::load(&elf), Ok(None)));
}
