//! `/proc/PID/syscall` and `/proc/PID/stat` (process/activity.rs, syscalls.rs). Input: the
//! file's text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stdtrace::process::{activity, syscalls};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(activity::SyscallState::In { number, .. }) = activity::parse_syscall(&text) {
        let _ = (syscalls::name(number), syscalls::is_output(number));
    }
    if let Some(letter) = activity::parse_stat_state(&text) {
        let _ = activity::state_name(letter);
    }
});
