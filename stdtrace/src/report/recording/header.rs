//! The `header` record that starts every recorded file: what wrote it, where, and how to
//! turn its CLOCK_MONOTONIC timestamps into wall time.

use std::ffi::CStr;

use crate::report::{
    Clock,
    record::{Header, RECORDING_SCHEMA, RecordType},
};

/// The header of a recording's files (the writer fills in `file` and `ts_ns` for each).
pub fn header(options: Vec<String>, clock: Clock) -> Header {
    let (kernel, host) = uname();
    let node = std::env::var("NODE_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| host.clone());
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_owned())
        .unwrap_or_default();
    let now = crate::events::monotonic_ns();
    Header {
        record_type: RecordType::Header,
        schema: RECORDING_SCHEMA,
        stdtrace: env!("CARGO_PKG_VERSION").to_owned(),
        recording: format!(
            "{}-{}",
            clock.wall_ns(now) / 1_000_000_000,
            std::process::id()
        ),
        file: 0,
        kernel,
        node,
        host,
        boot_id,
        options,
        wall_minus_monotonic_ns: clock.wall_minus_monotonic_ns(),
        ts_ns: now,
    }
}

/// The kernel release and the host name.
fn uname() -> (String, String) {
    // SAFETY: uname fills the zeroed struct we own.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut name) } != 0 {
        return (String::new(), String::new());
    }
    let text = |field: &[libc::c_char]| {
        // SAFETY: uname NUL-terminates each field within its array.
        unsafe { CStr::from_ptr(field.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    (text(&name.release), text(&name.nodename))
}
