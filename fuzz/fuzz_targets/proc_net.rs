//! `/proc/PID/net/{tcp,tcp6,udp,udp6}` and the netlink `sock_diag` reply that describes a unix
//! socket (process/socket.rs). Input: a selector byte (even: a `/proc/net` file, odd: a
//! `sock_diag` reply), a 4-byte inode, then the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stdtrace::process::socket;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some((inode, bytes)) = rest.split_first_chunk::<4>() else {
        return;
    };
    let inode = u32::from_le_bytes(*inode);
    if selector & 1 == 0 {
        let text = String::from_utf8_lossy(bytes);
        let family = ["tcp", "tcp6", "udp", "udp6"][usize::from(selector >> 1) % 4];
        let _ = socket::find_inet(&text, family, u64::from(inode));
    } else {
        let _ = socket::parse_unix_diag(bytes, inode);
    }
});
