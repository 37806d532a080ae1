//! Recorded JSON Lines files read back by `stdtrace report` (report/recording/read.rs): a file
//! from anywhere (another host, a newer stdtrace, a recorder killed mid-line). Input: the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stdtrace::report::recording::read;

fuzz_target!(|data: &[u8]| {
    let _ = read::parse_records(data);
});
