//! A Go process's goroutines, read from its memory without stopping it: the runtime's list of
//! every goroutine (`runtime.allgs`, a `[]*g`), each `g` read with the binary's offsets
//! (its DWARF, or the table for its Go version).
//!
//! Without BPF there is no thread pointer (FS base) to find a thread's `g` from, so a blocked
//! thread's goroutine is the one in a system call (`_Gsyscall`) whose stack holds the thread's
//! stack pointer, with `g.syscallsp` at or above it. On a stripped binary, `runtime.allgs` is
//! found from the code of `runtime.forEachG`, which pclntab names: after taking `allglock` it
//! loads the slice's pointer and length, two RIP-relative loads of adjacent words.

use std::{os::unix::fs::MetadataExt, path::Path};

use crate::{
    goruntime::{GoBinary, elf::ElfImage, offsets::GOffsets, pclntab::Pclntab},
    process::{maps::ProcessMaps, memory::ProcessMemory},
};

/// More goroutines than this in `allgs` is taken for a corrupt read.
const MAX_GOROUTINES: u64 = 10_000_000;

/// `_Gsyscall`, `_Gdead`, and the `_Gscan` bit (`runtime/runtime2.go`).
pub const G_SYSCALL: u32 = 3;
pub const G_DEAD: u32 = 6;
const G_SCAN: u32 = 0x1000;

/// What a snapshot needs of one Go program.
#[derive(Clone, Debug)]
pub struct GoRuntime {
    offsets: GOffsets,
    /// `m.g0`: the thread's system goroutine, whose stack cgo calls run on.
    m_g0: Option<u64>,
    /// The run-time address of `runtime.allgs`.
    allgs: u64,
    /// `runtime.waitReasonStrings`, when the binary has the symbol.
    wait_reasons: Vec<String>,
}

/// One goroutine, as its `g` says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoroutineState {
    pub g: u64,
    pub goid: u64,
    /// `atomicstatus`, with the `_Gscan` bit.
    pub status: u32,
    pub stack_lo: u64,
    pub stack_hi: u64,
    pub syscallsp: u64,
    pub syscallpc: u64,
    pub sched_sp: u64,
    pub sched_pc: u64,
    pub sched_bp: u64,
    pub waitreason: u8,
    pub gopc: u64,
    pub parent_goid: u64,
    /// For a goroutine in a system call: the stack of its thread's `g0` (`m.g0.stack`),
    /// where a cgo call or the runtime runs on its behalf.
    pub system_stack: Option<(u64, u64)>,
}

impl GoroutineState {
    /// The status without the `_Gscan` bit.
    pub fn plain_status(&self) -> u32 {
        self.status & !G_SCAN
    }
}

impl GoRuntime {
    /// Reads the runtime layout of the program `pid` runs.
    pub fn of_process(pid: u32) -> Result<GoRuntime, String> {
        let exe = crate::process::host::host().pid_path(pid, "exe");
        let file =
            std::fs::File::open(&exe).map_err(|err| format!("opening {}: {err}", exe.display()))?;
        // SAFETY: a private read-only mapping, parsed as untrusted input.
        let bytes = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|err| format!("mapping {}: {err}", exe.display()))?;
        let elf = ElfImage::parse(&bytes).map_err(|err| err.to_string())?;
        let binary = GoBinary::from_elf(&elf).map_err(|err| err.to_string())?;
        let (offsets, m_g0) = match &binary.layout {
            Ok(layout) => (layout.offsets.g, Some(layout.offsets.m.g0)),
            Err(why) => return Err(format!("runtime offsets unknown: {why}")),
        };
        let linked = find_allgs(&elf, &binary.pclntab)?;
        let wait_reasons = wait_reasons(&elf, &binary.pclntab);
        let maps = ProcessMaps::read(pid).map_err(|err| format!("reading its maps: {err}"))?;
        let bias = load_bias(&elf, &maps, Path::new(&exe))
            .ok_or("its executable's mapping was not found")?;
        Ok(GoRuntime {
            offsets,
            m_g0,
            allgs: linked.wrapping_add(bias),
            wait_reasons,
        })
    }

    /// Every goroutine of `pid` that is not dead, in `allgs` order.
    pub fn goroutines(&self, pid: u32) -> Result<Vec<GoroutineState>, String> {
        let memory =
            ProcessMemory::open(pid).map_err(|err| format!("opening its memory: {err}"))?;
        let header = memory
            .read(self.allgs, 16)
            .ok_or("runtime.allgs is unreadable")?;
        let word = |bytes: &[u8], at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        };
        let (Some(pointer), Some(len)) = (word(&header, 0), word(&header, 8)) else {
            return Err("runtime.allgs is unreadable".to_owned());
        };
        if len > MAX_GOROUTINES {
            return Err(format!("runtime.allgs has an implausible length {len}"));
        }
        let Some(list) = usize::try_from(len * 8)
            .ok()
            .and_then(|bytes| memory.read(pointer, bytes))
        else {
            return Err(format!("the list of {len} goroutines is unreadable"));
        };
        let span = self.g_span();
        let mut goroutines = Vec::new();
        for index in 0..len as usize {
            let Some(g) = word(&list, index * 8).filter(|g| *g != 0) else {
                continue;
            };
            // A goroutine that is freed meanwhile can be gone: skipped, not an error.
            let Some(bytes) = memory.read(g, span) else {
                continue;
            };
            if let Some(mut state) = self.parse_g(g, &bytes)
                && state.plain_status() != G_DEAD
            {
                if state.plain_status() == G_SYSCALL {
                    state.system_stack = self.system_stack(&memory, &bytes);
                }
                goroutines.push(state);
            }
        }
        Ok(goroutines)
    }

    /// The stack of the `g0` of the thread running the goroutine whose `g` is `bytes`.
    fn system_stack(&self, memory: &ProcessMemory, bytes: &[u8]) -> Option<(u64, u64)> {
        let word = |bytes: &[u8], offset: u64| -> Option<u64> {
            let at = usize::try_from(offset).ok()?;
            Some(u64::from_le_bytes(
                bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
            ))
        };
        let m = word(bytes, self.offsets.m).filter(|m| *m != 0)?;
        let g0_slot = m.checked_add(self.m_g0?)?;
        let g0 = word(&memory.read(g0_slot, 8)?, 0).filter(|g0| *g0 != 0)?;
        let bounds = memory.read(g0.checked_add(self.offsets.stack_lo)?, 16)?;
        let (lo, hi) = (word(&bounds, 0)?, word(&bounds, 8)?);
        (lo < hi).then_some((lo, hi))
    }

    /// How many bytes of a `g` hold every field read.
    fn g_span(&self) -> usize {
        let o = &self.offsets;
        let last = [
            o.goid,
            o.atomicstatus,
            o.stack_lo,
            o.stack_hi,
            o.syscallsp,
            o.syscallpc,
            o.sched_sp,
            o.sched_pc,
            o.sched_bp,
            o.waitreason,
            o.gopc,
            o.parent_goid.unwrap_or(0),
            o.m,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        usize::try_from(last).unwrap_or(0).saturating_add(8)
    }

    /// A `g` from its bytes (hostile: any field out of the bytes gives `None`).
    fn parse_g(&self, g: u64, bytes: &[u8]) -> Option<GoroutineState> {
        let o = &self.offsets;
        let word = |offset: u64| -> Option<u64> {
            let at = usize::try_from(offset).ok()?;
            Some(u64::from_le_bytes(
                bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
            ))
        };
        let at = usize::try_from(o.atomicstatus).ok()?;
        let status = u32::from_le_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?);
        Some(GoroutineState {
            g,
            goid: word(o.goid)?,
            status,
            stack_lo: word(o.stack_lo)?,
            stack_hi: word(o.stack_hi)?,
            syscallsp: word(o.syscallsp)?,
            syscallpc: word(o.syscallpc)?,
            sched_sp: word(o.sched_sp)?,
            sched_pc: word(o.sched_pc)?,
            sched_bp: word(o.sched_bp)?,
            waitreason: *bytes.get(usize::try_from(o.waitreason).ok()?)?,
            gopc: word(o.gopc)?,
            parent_goid: match o.parent_goid {
                Some(offset) => word(offset)?,
                None => 0,
            },
            system_stack: None,
        })
    }

    /// The wait reason's words, e.g. `chan receive`.
    pub fn wait_reason(&self, reason: u8) -> Option<&str> {
        self.wait_reasons.get(reason as usize).map(String::as_str)
    }
}

/// How a blocked thread's goroutine was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The thread is on the goroutine's own stack.
    OwnStack,
    /// On its thread's system stack (`g0`): a cgo call, or the runtime, for the goroutine.
    SystemStack,
}

/// The goroutine whose system call thread stack pointer `sp` is blocked in.
pub fn owner_of(
    goroutines: &[GoroutineState],
    sp: u64,
) -> Result<(&GoroutineState, Owner), String> {
    let mut owners = goroutines
        .iter()
        .filter(|g| g.stack_lo <= sp && sp < g.stack_hi);
    let Some(owner) = owners.next() else {
        // In C through cgo: the goroutine in a system call whose thread's g0 has this stack.
        let mut calling = goroutines.iter().filter(|g| {
            g.plain_status() == G_SYSCALL
                && g.system_stack.is_some_and(|(lo, hi)| lo <= sp && sp < hi)
        });
        if let (Some(caller), None) = (calling.next(), calling.next()) {
            return Ok((caller, Owner::SystemStack));
        }
        return Err(format!(
            "no goroutine's stack holds the thread's stack pointer {sp:#x} (a thread on its system stack: cgo or runtime code)"
        ));
    };
    if owners.next().is_some() {
        return Err(format!(
            "more than one goroutine's stack holds {sp:#x}: the list changed while it was read"
        ));
    }
    if owner.plain_status() != G_SYSCALL
        || owner.syscallsp < sp
        || owner.syscallsp >= owner.stack_hi
    {
        return Err(format!(
            "goroutine {} owns the stack but is not in a system call from it (status {})",
            owner.goid,
            crate::enrich::go::status_name(owner.status)
        ));
    }
    Ok((owner, Owner::OwnStack))
}

/// The link-time address of `runtime.allgs`: its symbol, else from `runtime.forEachG`'s code.
fn find_allgs(elf: &ElfImage<'_>, pclntab: &Pclntab<'_>) -> Result<u64, String> {
    if let Some(symbol) = elf.symbol("runtime.allgs") {
        return Ok(symbol.address);
    }
    if !elf.is_x86_64() {
        return Err("runtime.allgs: no symbol, and its code is read only on x86_64".to_owned());
    }
    let func = pclntab
        .func_by_name("runtime.forEachG")
        .ok_or("runtime.allgs: no symbol, and pclntab names no runtime.forEachG")?;
    let len = usize::try_from(func.end.saturating_sub(func.entry))
        .unwrap_or(0)
        .min(256);
    let code = elf
        .read(func.entry, len)
        .ok_or("runtime.forEachG's code is not in the file")?;
    allgs_from_code(code, func.entry, |address| in_data(elf, address))
        .ok_or_else(|| "runtime.allgs: runtime.forEachG loads no slice header".to_owned())
}

/// The first address `A` that `code` loads 64 bits from, RIP-relative, together with `A + 8`
/// (a slice's pointer and length), where `in_data` holds.
pub fn allgs_from_code(code: &[u8], address: u64, in_data: impl Fn(u64) -> bool) -> Option<u64> {
    let loads = rip_relative_loads(code, address);
    loads
        .iter()
        .copied()
        .find(|&target| loads.contains(&target.wrapping_add(8)) && in_data(target))
}

/// Targets of `mov r64, [rip + disp32]` (REX.W 8B /r, mod 00, r/m 101) in `code` at `address`.
pub fn rip_relative_loads(code: &[u8], address: u64) -> Vec<u64> {
    rip_relative(code, address, 0x8b)
}

/// Targets of `lea r64, [rip + disp32]` (REX.W 8D /r, mod 00, r/m 101).
pub fn rip_relative_leas(code: &[u8], address: u64) -> Vec<u64> {
    rip_relative(code, address, 0x8d)
}

fn rip_relative(code: &[u8], address: u64, opcode: u8) -> Vec<u64> {
    let mut targets = Vec::new();
    for at in 0..code.len() {
        let Some(instruction) = code.get(at..at + 7) else {
            break;
        };
        if instruction[0] & 0xf8 == 0x48
            && instruction[1] == opcode
            && instruction[2] & 0xc7 == 0x05
        {
            let Ok(disp) = <[u8; 4]>::try_from(&instruction[3..7]) else {
                continue;
            };
            let next = address.wrapping_add(at as u64 + 7);
            targets.push(next.wrapping_add(i32::from_le_bytes(disp) as i64 as u64));
        }
    }
    targets
}

/// Where the executable is loaded, minus where it was linked (0 unless PIE).
fn load_bias(elf: &ElfImage<'_>, maps: &ProcessMaps, exe: &Path) -> Option<u64> {
    let inode = std::fs::metadata(exe).ok()?.ino();
    let first = maps
        .mappings
        .iter()
        .find(|mapping| mapping.inode == inode && mapping.offset == 0)?;
    let lowest = elf.loads().iter().map(|segment| segment.vaddr).min()? & !0xfff;
    Some(first.start.wrapping_sub(lowest))
}

/// Where `runtime.waitReasonStrings` (a `[N]string`) is, and N: its symbol, else the code of
/// `runtime.waitReason.String`, which starts `cmp al, N` and indexes the array it loads with
/// a RIP-relative `lea` (the other `lea` is of the "unknown wait reason" text, not in data).
fn wait_reason_array(elf: &ElfImage<'_>, pclntab: &Pclntab<'_>) -> Option<(u64, u64)> {
    if let Some(symbol) = elf.symbol("runtime.waitReasonStrings") {
        return Some((symbol.address, symbol.size / 16));
    }
    let func = pclntab.func_by_name("runtime.waitReason.String")?;
    let len = usize::try_from(func.end.saturating_sub(func.entry))
        .ok()?
        .min(64);
    let code = elf.read(func.entry, len)?;
    wait_reasons_from_code(code, func.entry, |address| in_data(elf, address))
}

/// `(array, count)` from the code of `runtime.waitReason.String`.
pub fn wait_reasons_from_code(
    code: &[u8],
    address: u64,
    in_data: impl Fn(u64) -> bool,
) -> Option<(u64, u64)> {
    let count = match code {
        [0x3c, count, ..] => u64::from(*count),
        _ => return None,
    };
    let array = rip_relative_leas(code, address)
        .into_iter()
        .find(|&target| in_data(target))?;
    Some((array, count))
}

fn in_data(elf: &ElfImage<'_>, address: u64) -> bool {
    elf.loads().iter().any(|segment| {
        segment.writable
            && !segment.executable
            && address >= segment.vaddr
            && address - segment.vaddr < segment.memsz
    })
}

/// The wait reasons' words, from the file.
fn wait_reasons(elf: &ElfImage<'_>, pclntab: &Pclntab<'_>) -> Vec<String> {
    let Some((array, count)) = wait_reason_array(elf, pclntab) else {
        return Vec::new();
    };
    (0..count.min(256))
        .map(|index| {
            let at = array + index * 16;
            let text = (|| {
                let pointer = elf.read_pointer(at)?;
                let len = usize::try_from(elf.read_uint(at + 8, 8)?).ok()?.min(256);
                elf.read(pointer, len)
            })();
            text.map(|bytes| String::from_utf8_lossy(bytes).into_owned())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_slice_header_loads_of_for_each_g() {
        // From go1.25.5's runtime.forEachG: lea rax,[rip+..]; call lock2;
        // mov rcx,[rip+0x138254]; ...; mov rdx,[rip+0x138250].
        let mut code = vec![0x48, 0x8d, 0x05, 0xb4, 0x83, 0x15, 0x00];
        code.extend_from_slice(&[0x90; 4]);
        code.extend_from_slice(&[0xe8, 0x1b, 0x40, 0xfd, 0xff]);
        code.extend_from_slice(&[0x48, 0x8b, 0x0d, 0x54, 0x82, 0x13, 0x00]);
        code.extend_from_slice(&[0x90; 5]);
        code.extend_from_slice(&[0x48, 0x8b, 0x15, 0x50, 0x82, 0x13, 0x00]);
        let start = 0x4406f5;
        assert_eq!(rip_relative_loads(&code, start), vec![0x578960, 0x578968]);
        assert_eq!(allgs_from_code(&code, start, |_| true), Some(0x578960));
        assert_eq!(allgs_from_code(&code, start, |_| false), None);
        assert_eq!(allgs_from_code(&code[..20], start, |_| true), None);
        assert_eq!(allgs_from_code(&[], start, |_| true), None);
        assert!(rip_relative_loads(&[0x48, 0x8b, 0x05, 0xff], 0).is_empty());
    }

    #[test]
    fn finds_the_wait_reasons_from_the_code_of_wait_reason_string() {
        // go1.25.5: cmp al,0x2f; jb; lea rax,[rip+..] (text); mov ebx,0x13; ret;
        // movzx ecx,al; shl rcx,4; lea rdx,[rip+0x1238a1] (the array).
        let code = [
            0x3c, 0x2f, 0x72, 0x0d, 0x48, 0x8d, 0x05, 0x35, 0x29, 0x07, 0x00, 0xbb, 0x13, 0x00,
            0x00, 0x00, 0xc3, 0x0f, 0xb6, 0xc8, 0x48, 0xc1, 0xe1, 0x04, 0x48, 0x8d, 0x15, 0xa1,
            0x38, 0x12, 0x00,
        ];
        let start = 0x4515a0;
        assert_eq!(rip_relative_leas(&code, start), vec![0x4c3ee0, 0x574e60]);
        let data = |address| address == 0x574e60;
        assert_eq!(
            wait_reasons_from_code(&code, start, data),
            Some((0x574e60, 0x2f))
        );
        assert_eq!(wait_reasons_from_code(&code[2..], start, data), None);
        assert_eq!(wait_reasons_from_code(&code[..20], start, data), None);
        assert_eq!(wait_reasons_from_code(&[], start, data), None);
    }

    #[test]
    fn a_hostile_g_is_refused_not_read_out_of_bounds() {
        let runtime = GoRuntime {
            offsets: crate::goruntime::offsets::table()[0].offsets.g,
            m_g0: None,
            allgs: 0,
            wait_reasons: Vec::new(),
        };
        let span = runtime.g_span();
        assert!(runtime.parse_g(1, &vec![0xff; span]).is_some());
        for len in [0, 1, 8, span - 1] {
            assert_eq!(runtime.parse_g(1, &vec![0xff; len]), None, "{len}");
        }
        assert_eq!(runtime.wait_reason(200), None);
        // A process that does not exist has no goroutines to read.
        assert!(runtime.goroutines(u32::MAX - 3).is_err());
    }

    #[test]
    fn a_blocked_thread_belongs_to_the_goroutine_in_a_syscall_on_its_stack() {
        let syscall = GoroutineState {
            goid: 7,
            status: G_SYSCALL,
            stack_lo: 0x1000,
            stack_hi: 0x3000,
            syscallsp: 0x2f00,
            ..GoroutineState::default()
        };
        let waiting = GoroutineState {
            goid: 8,
            status: 4,
            stack_lo: 0x3000,
            stack_hi: 0x5000,
            ..GoroutineState::default()
        };
        let all = [syscall, waiting];
        assert_eq!(
            owner_of(&all, 0x2e00).map(|(g, how)| (g.goid, how)),
            Ok((7, Owner::OwnStack))
        );
        assert!(owner_of(&all, 0x2f80).is_err(), "above syscallsp");
        assert!(owner_of(&all, 0x4000).is_err(), "not in a syscall");
        assert!(owner_of(&all, 0x9000).unwrap_err().contains("system stack"));
        assert!(owner_of(&[syscall, syscall], 0x2e00).is_err());
        // In C, on its thread's g0 stack.
        let in_c = GoroutineState {
            system_stack: Some((0x7000, 0x9000)),
            ..syscall
        };
        assert_eq!(
            owner_of(&[in_c, waiting], 0x8000).map(|(g, how)| (g.goid, how)),
            Ok((7, Owner::SystemStack))
        );
        assert!(
            owner_of(&[in_c, in_c], 0x8000).is_err(),
            "two callers: unknown"
        );
    }
}
