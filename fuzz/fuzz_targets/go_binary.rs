//! A Go binary read from its file alone (goruntime/, through `GoBinary::from_elf`):
//! `.go.buildinfo`, `.gopclntab`, `runtime.firstmoduledata`, the runtime offsets read from
//! DWARF, the TLS slot; and the symbolizer's use of the pc-line table (symbolize/gopclntab.rs,
//! through `goruntime::find_pclntab`). Input: an 8-byte pc to look
//! up, then patches to a Go binary (see `common/patched.rs`).
#![no_main]

#[path = "common/patched.rs"]
mod patched;

use libfuzzer_sys::fuzz_target;
use stdtrace::{
    goruntime::{GoBinary, buildinfo, elf::ElfImage},
    symbolize::fuzzing,
};

fuzz_target!(|data: &[u8]| {
    let Some((pc, patches)) = data.split_first_chunk::<8>() else {
        return;
    };
    let pc = u64::from_le_bytes(*pc);
    let bases: Vec<&[u8]> = patched::bases().iter().map(Vec::as_slice).collect();
    let file = patched::apply(&bases, patches);
    let Ok(elf) = ElfImage::parse(&file) else {
        return;
    };
    let _ = buildinfo::find(&elf).map(|info| info.version());
    if let Ok(binary) = GoBinary::from_elf(&elf) {
        let table = &binary.pclntab;
        let _ = table.frames(pc);
        if let Ok(func) = table.find_func(pc) {
            let _ = table.file_line(&func, pc);
        }
    }
    let _ = fuzzing::go_frames(&file, &[pc]);
});
