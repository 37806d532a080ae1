//! `.gopclntab` from its bytes alone (goruntime/pclntab.rs, pcvalue.rs): the header, the
//! function table, and every lookup on its first functions. Input: an 8-byte pc to look up
//! (its low bit set: also taken as the text start), then the section's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stdtrace::goruntime::pclntab::Pclntab;

/// Functions whose tables are walked per input: enough to reach the pc-value tables, few
/// enough to keep an execution short.
const FUNCS: usize = 32;

fuzz_target!(|data: &[u8]| {
    let Some((pc, section)) = data.split_first_chunk::<8>() else {
        return;
    };
    let pc = u64::from_le_bytes(*pc);
    let text_start = (pc & 1 != 0).then_some(pc & !1);
    let Ok(table) = Pclntab::parse_bytes(section, 0, text_start) else {
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
