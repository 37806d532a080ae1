//! `.gopclntab` from its bytes alone (goruntime/pclntab.rs, pcvalue.rs): the header, the
//! function table, and every lookup on its first functions. Input: an 8-byte pc to look up
//! (its low bit set: also taken as the text start), then patches to the `.gopclntab` of a Go
//! binary (see `common/patched.rs`).
#![no_main]

#[path = "common/patched.rs"]
mod patched;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stdtrace::goruntime::{elf::ElfImage, pclntab::Pclntab};

/// Functions whose tables are walked per input: enough to reach the pc-value tables, few
/// enough to keep an execution short.
const FUNCS: usize = 32;

/// The `.gopclntab` sections of the base binaries.
fn sections() -> &'static [Vec<u8>] {
    static SECTIONS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SECTIONS.get_or_init(|| {
        patched::bases()
            .iter()
            .filter_map(|file| {
                let elf = ElfImage::parse(file).ok()?;
                Some(elf.section(".gopclntab")?.1.to_vec())
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((pc, patches)) = data.split_first_chunk::<8>() else {
        return;
    };
    let pc = u64::from_le_bytes(*pc);
    let text_start = (pc & 1 != 0).then_some(pc & !1);
    let bases: Vec<&[u8]> = sections().iter().map(Vec::as_slice).collect();
    let section = patched::apply(&bases, patches);
    let Ok(table) = Pclntab::parse_bytes(&section, 0, text_start) else {
        return;
    };
    let _ = (table.text_range(), table.func_count());
    for func in table.funcs().take(FUNCS).flatten() {
        let _ = table.frames(func.entry);
        let _ = table.sp_delta_in(&func, func.entry);
        let _ = table.file_line(&func, func.entry.wrapping_add(1));
        let _ = table.inline_index(&func, func.entry);
    }
    let _ = table.frames(pc);
    let _ = table.sp_delta(pc);
    if let Ok(func) = table.find_func(pc) {
        let _ = table.file_line(&func, pc);
    }
    let _ = table.func_by_name("runtime.goexit");
});
