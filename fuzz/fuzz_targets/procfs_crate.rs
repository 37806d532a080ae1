//! The procfs crate's parsers of the same files as process/ (maps, status, net), fuzzed to
//! decide whether to use them instead of ours (see the `//!` docs of process/maps.rs,
//! status.rs, activity.rs and socket.rs). Its `Stat` and `MemoryMaps` are left out: each
//! panicked (process/activity.rs and process/maps.rs have the inputs as regression tests), and
//! stdtrace uses neither. Input: a selector byte, then the file's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use procfs_core::{
    ExplicitSystemInfo, FromRead, FromReadSI,
    net::{TcpNetEntries, UdpNetEntries, UnixNetEntries},
    process::Status,
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
    match selector % 4 {
        0 => drop(Status::from_read(file)),
        1 => drop(TcpNetEntries::from_read(file, &SYSTEM)),
        2 => drop(UdpNetEntries::from_read(file, &SYSTEM)),
        _ => drop(UnixNetEntries::from_read(file)),
    }
});
