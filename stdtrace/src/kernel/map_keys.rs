//! Counting the keys of a map whose key type this code does not name: `BPF_MAP_GET_NEXT_KEY`
//! with a buffer of the map's key size (aya's key iterators need the type).

use std::os::fd::{AsRawFd, BorrowedFd};

/// `BPF_MAP_GET_NEXT_KEY`.
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

/// The part of `union bpf_attr` that `BPF_MAP_GET_NEXT_KEY` reads.
#[repr(C)]
struct NextKeyAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    next_key: u64,
}

/// Most keys counted: a bound on the work, far above any map's size.
const MAX_KEYS: u64 = 1 << 20;

/// How many keys the map at `fd` holds (walked once; a map changing meanwhile may be
/// miscounted by the keys that came or went).
pub fn count(fd: BorrowedFd<'_>, key_size: usize) -> u64 {
    if key_size == 0 {
        return 0;
    }
    let mut key = vec![0u8; key_size];
    let mut next = vec![0u8; key_size];
    let mut count = 0;
    let mut first = true;
    while count < MAX_KEYS {
        let attr = NextKeyAttr {
            map_fd: fd.as_raw_fd() as u32,
            _pad: 0,
            key: if first { 0 } else { key.as_ptr() as u64 },
            next_key: next.as_mut_ptr() as u64,
        };
        // SAFETY: `attr` is a valid `bpf_attr` prefix for this command; `key` and `next` are
        // `key_size` bytes, the map's key size, and outlive the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_GET_NEXT_KEY,
                &attr as *const NextKeyAttr,
                std::mem::size_of::<NextKeyAttr>() as libc::c_uint,
            )
        };
        if ret != 0 {
            break;
        }
        first = false;
        count += 1;
        std::mem::swap(&mut key, &mut next);
    }
    count
}
