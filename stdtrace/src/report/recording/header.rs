//! The `header` record that starts every recorded file: what wrote it, where, and how to
//! turn its CLOCK_MONOTONIC timestamps into wall time.

use crate::report::{
    Clock,
    record::{Header, RECORDING_SCHEMA, RecordType, node},
};

/// The header of a recording's files (the writer fills in `file` and `ts_ns` for each).
pub fn header(options: Vec<String>, clock: Clock) -> Header {
    let kernel = node::kernel_release();
    let host = node::host_name();
    let node = node::node_name().to_owned();
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
