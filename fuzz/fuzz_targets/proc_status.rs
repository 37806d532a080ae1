//! `/proc/PID/status` and a kernel `comm` (process/status.rs). Input: the file's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stdtrace::process::status;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for name in ["Name", "State", "Tgid", "PPid", "CapEff", ""] {
        let _ = status::field(&text, name);
    }
    let _ = status::comm_from_bytes(data);
});
