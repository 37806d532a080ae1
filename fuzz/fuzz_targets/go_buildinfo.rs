//! `.go.buildinfo` (goruntime/buildinfo.rs, version.rs). Input: the 8-byte address of the
//! block, then its bytes. Pointers of the old format point into this fuzzer's own executable,
//! the ELF file it is read against.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stdtrace::goruntime::{buildinfo, elf::ElfImage};

fn own_executable() -> Option<&'static ElfImage<'static>> {
    static IMAGE: OnceLock<Option<ElfImage<'static>>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let bytes: &'static [u8] = std::fs::read("/proc/self/exe").ok()?.leak();
            ElfImage::parse(bytes).ok()
        })
        .as_ref()
}

fuzz_target!(|data: &[u8]| {
    let Some((address, block)) = data.split_first_chunk::<8>() else {
        return;
    };
    let Some(elf) = own_executable() else {
        return;
    };
    if let Ok(info) = buildinfo::parse_at(elf, u64::from_le_bytes(*address), block) {
        let _ = info.version();
    }
});
