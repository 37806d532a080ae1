//! `/proc/PID/maps` (process/maps.rs). Input: the file's text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stdtrace::process::maps::ProcessMaps;

fuzz_target!(|data: &[u8]| {
    let maps = ProcessMaps::parse(1, data);
    for mapping in &maps.mappings {
        let _ = maps.find(mapping.start);
        let _ = maps.find(mapping.end.wrapping_sub(1));
        let _ = maps.first_mapping_of(mapping);
        let _ = mapping.file_offset(mapping.start);
        let _ = mapping.path();
    }
    let _ = maps.find(u64::MAX);
});
