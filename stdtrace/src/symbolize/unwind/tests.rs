use super::*;

const ENCODING: gimli::Encoding = gimli::Encoding {
    address_size: 8,
    format: gimli::Format::Dwarf32,
    version: 1,
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

/// CFA = rsp + `cfa_offset`, return address at CFA - 8, and the given saved registers.
fn rsp_row(cfa_offset: i64, saved: &[(u16, i64)]) -> UnwindRules {
    let mut registers = vec![(register::RIP, RegisterRule::Offset(-8))];
    registers.extend(
        saved
            .iter()
            .map(|(number, offset)| (*number, RegisterRule::Offset(*offset))),
    );
    UnwindRules::Cfi(CfiRow {
        cfa: CfaRule::RegisterOffset {
            register: register::RSP,
            offset: cfa_offset,
        },
        registers,
        signal_frame: false,
        encoding: ENCODING,
    })
}

/// CFA = rbp + 16, with rbp saved at CFA - 16: a function with a frame pointer.
fn rbp_row() -> UnwindRules {
    UnwindRules::Cfi(CfiRow {
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
    })
}

fn outermost_row() -> UnwindRules {
    UnwindRules::Cfi(CfiRow {
        cfa: CfaRule::RegisterOffset {
            register: register::RSP,
            offset: 8,
        },
        registers: vec![(register::RIP, RegisterRule::Undefined)],
        signal_frame: false,
        encoding: ENCODING,
    })
}

/// A stack of 64-bit words starting at `base`.
fn words(values: &[u64]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect()
}

fn addresses(frames: &[UnwoundFrame]) -> Vec<u64> {
    frames.iter().map(|frame| frame.address).collect()
}

const BASE: u64 = 0x7ffe_0000;

#[test]
fn cfi_walks_code_without_frame_pointers_to_the_outermost_frame() {
    // leaf (0x1000..0x1100): CFA = rsp + 8, no saves.
    // middle (0x2000..0x2100): CFA = rsp + 24, rbx saved at CFA - 16.
    // start (0x3000..0x3100): the return address is undefined.
    let stack = words(&[0x2050, 0xaa, 0xbbbb, 0x3010, 0, 0]);
    let copy = StackCopy {
        base: BASE,
        bytes: &stack,
    };
    let mut rules = FakeRules(vec![
        (0x1000..0x1100, rsp_row(8, &[])),
        (0x2000..0x2100, rsp_row(24, &[(register::RBX, -16)])),
        (0x3000..0x3100, outermost_row()),
    ]);
    let mut registers = UserRegisters::from_ip_sp(0x1010, BASE);
    registers.set(register::RBX, 0x1111);
    let (frames, end) = unwind(&registers, &copy, &mut rules);
    assert_eq!(addresses(&frames), vec![0x1010, 0x2050, 0x3010]);
    assert_eq!(end, UnwindEnd::Outermost);
    // The first frame is looked up at its pc, callers inside their call instruction.
    assert_eq!(frames[0].lookup, 0x1010);
    assert_eq!(frames[1].lookup, 0x204f);
    assert_eq!(frames[2].lookup, 0x300f);
}

#[test]
fn a_return_address_at_a_range_start_is_looked_up_in_the_calling_function() {
    // The caller's call is its last instruction: the return address is the next function's
    // first byte, and only `address - 1` finds the caller's rules.
    let stack = words(&[0x2000, 0, 0]);
    let copy = StackCopy {
        base: BASE,
        bytes: &stack,
    };
    let mut rules = FakeRules(vec![
        (0x1000..0x1100, rsp_row(8, &[])),
        (0x1f00..0x2000, outermost_row()),
        (0x2000..0x2100, rsp_row(8, &[])),
    ]);
    let (frames, end) = unwind(&UserRegisters::from_ip_sp(0x1000, BASE), &copy, &mut rules);
    assert_eq!(addresses(&frames), vec![0x1000, 0x2000]);
    assert_eq!(end, UnwindEnd::Outermost);
}

#[test]
fn frame_pointers_are_followed_where_there_is_no_cfi() {
    // Frame chain: rbp0 = BASE + 0x10 -> [saved rbp = BASE + 0x30, ra = 0x2020];
    // BASE + 0x30 -> [saved rbp = 0, ra = 0x3030].
    let stack = words(&[0, 0, BASE + 0x30, 0x2020, 0, 0, 0, 0x3030, 0, 0]);
    let copy = StackCopy {
        base: BASE,
        bytes: &stack,
    };
    let mut rules = FakeRules(vec![
        (0x1000..0x1100, UnwindRules::NoCfi),
        (0x2000..0x2100, UnwindRules::NoCfi),
        (0x3000..0x3100, UnwindRules::NoCfi),
    ]);
    let mut registers = UserRegisters::from_ip_sp(0x1010, BASE);
    registers.set(register::RBP, BASE + 0x10);
    let (frames, end) = unwind(&registers, &copy, &mut rules);
    assert_eq!(addresses(&frames), vec![0x1010, 0x2020, 0x3030]);
    // The last frame's saved rbp (0) is below its stack pointer: the chain ends there.
    assert_eq!(end, UnwindEnd::NoUnwindInfo { address: 0x3030 });
}

#[test]
fn frame_pointer_chains_must_grow() {
    // [rbp] points back at itself.
    let stack = words(&[BASE, 0x2020, 0, 0]);
    let copy = StackCopy {
        base: BASE,
        bytes: &stack,
    };
    let mut rules = FakeRules(vec![(0x1000..0x3000, UnwindRules::NoCfi)]);
    let mut registers = UserRegisters::from_ip_sp(0x1010, BASE);
    registers.set(register::RBP, BASE);
    let (frames, end) = unwind(&registers, &copy, &mut rules);
    assert_eq!(addresses(&frames), vec![0x1010, 0x2020]);
    assert_eq!(end, UnwindEnd::NoUnwindInfo { address: 0x2020 });
}

#[test]
fn code_with_a_frame_pointer_needs_rbp() {
    let stack = words(&[0x2050, 0, 0, 0]);
    let copy = StackCopy {
        base: BASE,
        bytes: &stack,
    };
    let mut rules = FakeRules(vec![
        (0x1000..0x1100, rsp_row(8, &[])),
        (0x2000..0x2100, rbp_row()),
    ]);
    // Only ip and sp known (as /proc/PID/syscall gives them): the caller's CFA is rbp-based.
    let (frames, end) = unwind(&UserRegisters::from_ip_sp(0x1010, BASE), &copy, &mut rules);
    assert_eq!(addresses(&frames), vec![0x1010, 0x2050]);
    assert_eq!(
        end,
        UnwindEnd::RegisterUnknown {
            register: register::RBP,
            address: 0x2050
        }
    );
    assert_eq!(end.to_string(), "register rbp unknown at 0x2050");

    // With rbp known the same stack unwinds through it.
    let stack = words(&[0x2050, 0xdead, BASE + 0x30, 0x3030, 0, 0]);
    let copy = StackCopy {
        base: BASE,
        bytes: &stack,
    };
    let mut rules = FakeRules(vec![
        (0x1000..0x1100, rsp_row(8, &[])),
        (0x2000..0x2100, rbp_row()),
        (0x3000..0x3100, outermost_row()),
    ]);
    let mut registers = UserRegisters::from_ip_sp(0x1010, BASE);
    registers.set(register::RBP, BASE + 0x10);
    let (frames, end) = unwind(&registers, &copy, &mut rules);
    assert_eq!(addresses(&frames), vec![0x1010, 0x2050, 0x3030]);
    assert_eq!(end, UnwindEnd::Outermost);
}

#[test]
fn reads_outside_the_copy_end_the_walk() {
    let stack = words(&[0x2050]);
    let copy = StackCopy {
        base: BASE,
        bytes: &stack,
    };
    let mut rules = FakeRules(vec![
        (0x1000..0x1100, rsp_row(8, &[])),
        (0x2000..0x2100, rsp_row(64, &[])),
    ]);
    let (frames, end) = unwind(&UserRegisters::from_ip_sp(0x1010, BASE), &copy, &mut rules);
    assert_eq!(addresses(&frames), vec![0x1010, 0x2050]);
    assert_eq!(
        end,
        UnwindEnd::StackExhausted {
            address: BASE + 8 + 56
        }
    );
}

#[test]
fn unmapped_code_and_missing_registers_end_the_walk() {
    let copy = StackCopy {
        base: BASE,
        bytes: &[],
    };
    let mut rules = FakeRules(vec![]);
    let (frames, end) = unwind(&UserRegisters::from_ip_sp(0x1010, BASE), &copy, &mut rules);
    assert_eq!(addresses(&frames), vec![0x1010]);
    assert_eq!(end, UnwindEnd::NotMapped { address: 0x1010 });

    let (frames, end) = unwind(&UserRegisters::default(), &copy, &mut rules);
    assert!(frames.is_empty());
    assert_eq!(end, UnwindEnd::NoInstructionPointer);

    let mut rules = FakeRules(vec![(0x1000..0x1100, UnwindRules::NoCfi)]);
    let (_, end) = unwind(&UserRegisters::from_ip_sp(0x1010, BASE), &copy, &mut rules);
    assert_eq!(end, UnwindEnd::NoUnwindInfo { address: 0x1010 });

    let mut rules = FakeRules(vec![(
        0x1000..0x1100,
        UnwindRules::BadCfi("bad".to_owned()),
    )]);
    let (_, end) = unwind(&UserRegisters::from_ip_sp(0x1010, BASE), &copy, &mut rules);
    assert_eq!(
        end,
        UnwindEnd::BadUnwindInfo {
            address: 0x1010,
            reason: "bad".to_owned()
        }
    );
}

#[test]
fn the_frame_a_signal_interrupted_is_looked_up_at_its_exact_pc() {
    // A signal trampoline's CFI restores the interrupted context from the signal frame: here
    // rip at CFA + 8 and rsp at CFA + 16, as __restore_rt's DW_CFA_expression rules do.
    let trampoline = UnwindRules::Cfi(CfiRow {
        cfa: CfaRule::RegisterOffset {
            register: register::RSP,
            offset: 0,
        },
        registers: vec![
            (register::RIP, RegisterRule::Offset(8)),
            (register::RSP, RegisterRule::Offset(16)),
        ],
        signal_frame: true,
        encoding: ENCODING,
    });
    // handler (0x1000): CFA = rsp + 8, returns into the trampoline (0x5000).
    let stack = words(&[0x5000, 0, 0x2000, BASE + 0x100, 0]);
    let copy = StackCopy {
        base: BASE,
        bytes: &stack,
    };
    let mut rules = FakeRules(vec![
        (0x1000..0x1100, rsp_row(8, &[])),
        (0x4ff0..0x5100, trampoline),
        // The interrupted function's first instruction: only an exact lookup finds it.
        (
            0x1ff0..0x2000,
            UnwindRules::BadCfi("looked up at pc - 1".to_owned()),
        ),
        (0x2000..0x2100, outermost_row()),
    ]);
    let (frames, end) = unwind(&UserRegisters::from_ip_sp(0x1010, BASE), &copy, &mut rules);
    assert_eq!(addresses(&frames), vec![0x1010, 0x5000, 0x2000]);
    assert_eq!(frames[1].lookup, 0x4fff);
    assert_eq!(frames[2].lookup, 0x2000);
    assert_eq!(end, UnwindEnd::Outermost);
}

#[test]
fn a_stack_pointer_that_does_not_grow_ends_the_walk() {
    // CFA = rsp + 0: the "caller" has the same stack pointer.
    let stack = words(&[0, 0x1010, 0]);
    let copy = StackCopy {
        base: BASE,
        bytes: &stack,
    };
    let rule = UnwindRules::Cfi(CfiRow {
        cfa: CfaRule::RegisterOffset {
            register: register::RSP,
            offset: 0,
        },
        registers: vec![(register::RIP, RegisterRule::Offset(8))],
        signal_frame: false,
        encoding: ENCODING,
    });
    let mut rules = FakeRules(vec![(0x1000..0x1100, rule)]);
    let (frames, end) = unwind(&UserRegisters::from_ip_sp(0x1010, BASE), &copy, &mut rules);
    assert_eq!(frames.len(), 1);
    assert_eq!(end, UnwindEnd::NotProgressing { address: 0x1010 });
}

#[test]
fn deep_stacks_stop_at_the_depth_limit() {
    // Every frame returns into the same function, one word further up.
    let stack = words(&vec![0x1020; MAX_DEPTH * 2]);
    let copy = StackCopy {
        base: BASE,
        bytes: &stack,
    };
    let mut rules = FakeRules(vec![(0x1000..0x1100, rsp_row(8, &[]))]);
    let (frames, end) = unwind(&UserRegisters::from_ip_sp(0x1010, BASE), &copy, &mut rules);
    assert_eq!(frames.len(), MAX_DEPTH);
    assert_eq!(end, UnwindEnd::DepthLimit);
}

#[test]
fn plt_style_cfa_expressions_are_evaluated() {
    // The CFA rule of a PLT entry: rsp + 8, plus 8 more when rip & 15 >= 11 (after the push).
    let plt = vec![
        gimli::constants::DW_OP_breg7.0,
        8,
        gimli::constants::DW_OP_breg16.0,
        0,
        gimli::constants::DW_OP_lit15.0,
        gimli::constants::DW_OP_and.0,
        gimli::constants::DW_OP_lit11.0,
        gimli::constants::DW_OP_ge.0,
        gimli::constants::DW_OP_lit3.0,
        gimli::constants::DW_OP_shl.0,
        gimli::constants::DW_OP_plus.0,
    ];
    let row = UnwindRules::Cfi(CfiRow {
        cfa: CfaRule::Expression(plt),
        registers: vec![(register::RIP, RegisterRule::Offset(-8))],
        signal_frame: false,
        encoding: ENCODING,
    });
    let stack = words(&[0x2050, 0x2060, 0, 0]);
    let copy = StackCopy {
        base: BASE,
        bytes: &stack,
    };
    for (pc, caller) in [(0x1004, 0x2050), (0x100b, 0x2060)] {
        let mut rules = FakeRules(vec![
            (0x1000..0x1010, row.clone()),
            (0x2000..0x2100, outermost_row()),
        ]);
        let (frames, end) = unwind(&UserRegisters::from_ip_sp(pc, BASE), &copy, &mut rules);
        assert_eq!(addresses(&frames), vec![pc, caller]);
        assert_eq!(end, UnwindEnd::Outermost);
    }
}

#[test]
fn register_rules_of_every_kind_apply() {
    let stack = words(&[0x2050, 0x77, 0x88, 0]);
    let copy = StackCopy {
        base: BASE,
        bytes: &stack,
    };
    let row = CfiRow {
        cfa: CfaRule::RegisterOffset {
            register: register::RSP,
            offset: 8,
        },
        registers: vec![
            (
                register::RIP,
                RegisterRule::Expression(vec![
                    gimli::constants::DW_OP_lit8.0,
                    gimli::constants::DW_OP_minus.0,
                ]),
            ),
            (register::RBX, RegisterRule::ValOffset(0x10)),
            (register::RBP, RegisterRule::Register(register::RDI)),
            (12, RegisterRule::Constant(42)),
            (
                13,
                RegisterRule::ValExpression(vec![
                    gimli::constants::DW_OP_lit1.0,
                    gimli::constants::DW_OP_plus.0,
                ]),
            ),
            (14, RegisterRule::Undefined),
            (register::R15, RegisterRule::Architectural),
        ],
        signal_frame: false,
        encoding: ENCODING,
    };
    let mut registers = UserRegisters::from_ip_sp(0x1010, BASE);
    registers.set(register::RDI, 0x5555);
    registers.set(14, 0x1414);
    registers.set(register::RAX, 0x1);
    let (caller, signal) = step_cfi(&registers, &copy, &row, 0x1010).unwrap();
    assert!(!signal);
    assert_eq!(caller.ip(), Some(0x2050));
    assert_eq!(caller.sp(), Some(BASE + 8));
    assert_eq!(caller.get(register::RBX), Some(BASE + 8 + 0x10));
    assert_eq!(caller.bp(), Some(0x5555));
    assert_eq!(caller.get(12), Some(42));
    assert_eq!(caller.get(13), Some(BASE + 9));
    assert_eq!(caller.get(14), None);
    assert_eq!(caller.get(register::R15), None);
    // Caller-saved registers are not known in the caller.
    assert_eq!(caller.get(register::RAX), None);
}

#[test]
fn an_unrecoverable_callee_saved_register_is_unknown_not_fatal() {
    let stack = words(&[0x2050, 0]);
    let copy = StackCopy {
        base: BASE,
        bytes: &stack,
    };
    let row = CfiRow {
        cfa: CfaRule::RegisterOffset {
            register: register::RSP,
            offset: 8,
        },
        registers: vec![
            (register::RIP, RegisterRule::Offset(-8)),
            // Saved outside the copy, and in a register nobody knows.
            (register::RBX, RegisterRule::Offset(4096)),
            (register::R12, RegisterRule::Register(register::R11)),
        ],
        signal_frame: false,
        encoding: ENCODING,
    };
    let mut registers = UserRegisters::from_ip_sp(0x1010, BASE);
    registers.set(register::RBX, 0x3333);
    let (caller, _) = step_cfi(&registers, &copy, &row, 0x1010).unwrap();
    assert_eq!(caller.ip(), Some(0x2050));
    assert_eq!(caller.get(register::RBX), None);
    assert_eq!(caller.get(register::R12), None);

    // The same failures for the return address end the walk.
    let row = CfiRow {
        registers: vec![(register::RIP, RegisterRule::Offset(4096))],
        ..row
    };
    assert_eq!(
        step_cfi(&registers, &copy, &row, 0x1010).unwrap_err(),
        UnwindEnd::StackExhausted {
            address: BASE + 8 + 4096
        }
    );
    let row = CfiRow {
        registers: vec![(register::RIP, RegisterRule::Register(register::R11))],
        ..row
    };
    assert_eq!(
        step_cfi(&registers, &copy, &row, 0x1010).unwrap_err(),
        UnwindEnd::RegisterUnknown {
            register: register::R11,
            address: 0x1010
        }
    );
}

#[test]
fn pt_regs_words_land_in_their_dwarf_columns() {
    let words: Vec<u64> = (100..121).collect();
    let registers = UserRegisters::from_pt_regs(&words);
    assert_eq!(registers.get(15), Some(100));
    assert_eq!(registers.bp(), Some(104));
    assert_eq!(registers.get(register::RBX), Some(105));
    assert_eq!(registers.get(register::RAX), Some(110));
    assert_eq!(registers.get(register::RDI), Some(114));
    assert_eq!(registers.ip(), Some(116));
    assert_eq!(registers.sp(), Some(119));
    let short = UserRegisters::from_pt_regs(&words[..10]);
    assert_eq!(short.ip(), None);
    assert_eq!(short.bp(), Some(104));
}

#[test]
fn stack_reads_are_bounded() {
    let bytes = words(&[0x1122_3344_5566_7788, 0x99]);
    let copy = StackCopy {
        base: BASE,
        bytes: &bytes,
    };
    assert_eq!(copy.read_u64(BASE), Some(0x1122_3344_5566_7788));
    assert_eq!(copy.read_u64(BASE + 8), Some(0x99));
    assert_eq!(copy.read(BASE + 1, 1), Some(0x77));
    assert_eq!(copy.read_u64(BASE + 9), None);
    assert_eq!(copy.read_u64(BASE - 8), None);
    assert_eq!(copy.read_u64(u64::MAX), None);
    assert_eq!(copy.read(BASE, 9), None);
    assert_eq!(copy.read(BASE + 16, 0), Some(0));
}

/// A small deterministic generator for the garbage tests.
pub(crate) struct XorShift(pub u64);

impl XorShift {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn garbage_stacks_and_rules_do_not_panic() {
    let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..2000 {
        let stack: Vec<u8> = (0..256).map(|_| random.next() as u8).collect();
        let base = random.next() & !0xfff;
        let copy = StackCopy {
            base,
            bytes: &stack,
        };
        let mut registers = UserRegisters::default();
        for slot in registers.values.iter_mut() {
            if !random.next().is_multiple_of(3) {
                *slot = Some(match random.next() % 3 {
                    0 => base + random.next() % 300,
                    1 => random.next() % 0x4000,
                    _ => random.next(),
                });
            }
        }
        let expression: Vec<u8> = (0..random.next() % 12)
            .map(|_| random.next() as u8)
            .collect();
        let rule = match random.next() % 5 {
            0 => UnwindRules::NoCfi,
            1 => UnwindRules::Cfi(CfiRow {
                cfa: CfaRule::Expression(expression.clone()),
                registers: vec![(register::RIP, RegisterRule::Expression(expression))],
                signal_frame: random.next().is_multiple_of(2),
                encoding: ENCODING,
            }),
            2 => rsp_row((random.next() % 64) as i64 - 32, &[(register::RBP, -16)]),
            3 => rbp_row(),
            _ => UnwindRules::Cfi(CfiRow {
                cfa: CfaRule::RegisterOffset {
                    register: (random.next() % 20) as u16,
                    offset: random.next() as i64,
                },
                registers: vec![(register::RIP, RegisterRule::Offset(random.next() as i64))],
                signal_frame: true,
                encoding: ENCODING,
            }),
        };
        let mut rules = FakeRules(vec![(0..u64::MAX, rule)]);
        let (frames, _) = unwind(&registers, &copy, &mut rules);
        assert!(frames.len() <= MAX_DEPTH);
    }
}
