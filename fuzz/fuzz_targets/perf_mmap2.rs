//! `PERF_RECORD_MMAP2` (and the fork, exec, exit and lost records beside it) from the perf
//! ring buffer (process/perf_mmap.rs). Input: one record, header included.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stdtrace::process::perf_mmap;

fuzz_target!(|data: &[u8]| {
    if let Some(event) = perf_mmap::parse_record(data) {
        let _ = event.time_ns();
    }
});
