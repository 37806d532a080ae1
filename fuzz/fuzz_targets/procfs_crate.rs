//! The procfs crate's parsers of the same files as process/ (maps, status, net), fuzzed to
//! decide whether to use them instead of ours (see the `//!` docs of process/maps.rs,
//! status.rs, activity.rs and socket.rs). Its `Stat` is left out: it panicked within 3,000
//! executions (process/activity.rs says how), and stdtrace does not use it. Input: a selector
//! byte, then the file's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use procfs_core::{
    ExplicitSystemInfo, FromRead, FromReadSI,
    net::{TcpNetEntries, UdpNetEntries, UnixNetEntries},
    process::{MemoryMaps, Status},
};

const SYSTEM: ExplicitSystemInfo = ExplicitSystemInfo {
    boot_time_secs: 0,
    ticks_per_second: 100,
    page_size: 4096,
    is_little_endian: true,
};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, file)) = data.split_first() else {
        return;
    };
    match selector % 5 {
        0 => drop(MemoryMaps::from_read(file)),
        1 => drop(Status::from_read(file)),
        2 => drop(TcpNetEntries::from_read(file, &SYSTEM)),
        3 => drop(UdpNetEntries::from_read(file, &SYSTEM)),
        _ => drop(UnixNetEntries::from_read(file)),
    }
});
