//! A Go binary read from its file alone (goruntime/): `.go.buildinfo`, `.gopclntab`,
//! `runtime.firstmoduledata`, the runtime offsets read from DWARF, the TLS slot; and the
//! symbolizer's use of the pc-line table (symbolize/gopclntab.rs). Input: an 8-byte pc to look
//! up, then the ELF file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stdtrace::{
    goruntime::{self, GoBinary, buildinfo, elf::ElfImage, offsets},
    symbolize::fuzzing,
};

fuzz_target!(|data: &[u8]| {
    let Some((pc, file)) = data.split_first_chunk::<8>() else {
        return;
    };
    let pc = u64::from_le_bytes(*pc);
    let Ok(elf) = ElfImage::parse(file) else {
        return;
    };
    let _ = buildinfo::find(&elf).map(|info| info.version());
    let _ = offsets::from_dwarf(&elf);
    if let Ok(binary) = GoBinary::from_elf(&elf) {
        let table = &binary.pclntab;
        let _ = table.frames(pc);
        if let Ok(func) = table.find_func(pc) {
            let _ = table.file_line(&func, pc);
        }
    }
    if let Ok(table) = goruntime::find_pclntab(&elf) {
        let _ = table.frames(pc);
    }
    let _ = fuzzing::go_frames(file, &[pc]);
});
