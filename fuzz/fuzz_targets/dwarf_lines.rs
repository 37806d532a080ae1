//! DWARF line and inline lookups (symbolize/dwarf.rs, through object.rs). Input: an 8-byte
//! address to look up, then the object file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stdtrace::symbolize::fuzzing;

fuzz_target!(|data: &[u8]| {
    let Some((address, object)) = data.split_first_chunk::<8>() else {
        return;
    };
    let address = u64::from_le_bytes(*address);
    let _ = fuzzing::dwarf_frames(object, &[address, address.wrapping_sub(1)]);
});
