//! What a walk starts from: a thread's registers and a copy of the top of its stack.

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

pub(super) fn register_name(number: u16) -> String {
    const NAMES: [&str; 17] = [
        "rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15", "rip",
    ];
    NAMES
        .get(usize::from(number))
        .map_or_else(|| format!("#{number}"), |name| (*name).to_owned())
}
