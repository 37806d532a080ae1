//! Goroutines parked in Go's netpoller: a Go write on a non-blocking fd that gets EAGAIN does
//! not return the error; the runtime parks the goroutine until the fd is writable, and no
//! system call is in progress meanwhile. The EAGAIN is where it starts; the goroutine's next
//! successful write on that fd is where it ends.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use stdtrace_common::{Goroutine, PARKED_PROCESS_SLOTS, ParkedKey, ParkedWrite, counter};

use crate::maps::{PARKED, PARKED_PROCESSES, bump};

/// Whether any goroutine of any process may be parked: set here when one parks, cleared by
/// userspace (through the `.bss` map) when none is left. A global, not a map entry: a
/// successful write reads it with one load, where an array entry costs an inlined lookup.
#[unsafe(no_mangle)]
static mut PARKED_ANY: u64 = 0;

/// A Go write got EAGAIN: the goroutine is about to park.
#[inline(always)]
pub fn record(tgid: u32, tid: u32, fd: i32, syscall: u32, goroutine: &Goroutine) {
    let Some(goid) = goroutine.certain_goid() else {
        return;
    };
    let key = ParkedKey { tgid, fd, goid };
    let parked = ParkedWrite {
        // SAFETY: plain helper call.
        since_ns: unsafe { bpf_ktime_get_ns() },
        g: goroutine.goroutine,
        tid,
        syscall,
        reported: 0,
        _pad: 0,
    };
    const BPF_NOEXIST: u64 = 1;
    const EEXIST: i64 = 17;
    match PARKED.insert(&key, &parked, BPF_NOEXIST) {
        Ok(()) => {}
        // Again EAGAIN on the same fd: still the same wait, which started at the first.
        Err(err) if i64::from(err) == -EEXIST => return,
        // No room (E2BIG) or no memory (ENOMEM): this wait is lost, and counted.
        Err(_) => {
            bump(counter::PARKED_FULL);
            return;
        }
    }
    if let Some(flag) = PARKED_PROCESSES.get_ptr_mut(tgid & (PARKED_PROCESS_SLOTS - 1)) {
        // SAFETY: a pointer into the array's value memory. A plain store: every CPU stores
        // the same value; userspace clears slots whose goroutines are all gone.
        unsafe { *flag = 1 };
        // SAFETY: a plain store to a global every CPU stores the same value to.
        unsafe { core::ptr::write_volatile(&raw mut PARKED_ANY, 1) };
    }
}

/// Whether any goroutine of any process may be parked: one load.
#[inline(always)]
pub fn any() -> bool {
    // SAFETY: a plain, always-initialised global; the volatile read stops the compiler from
    // assuming its initial value.
    unsafe { core::ptr::read_volatile(&raw const PARKED_ANY) != 0 }
}

/// Whether a goroutine of this process (or of one sharing its slot) may be parked: an inlined
/// array lookup, so that successful writes elsewhere pay next to nothing. Set here when one
/// parks; cleared by userspace when none is left.
#[inline(always)]
pub fn any_in(tgid: u32) -> bool {
    PARKED_PROCESSES
        .get(tgid & (PARKED_PROCESS_SLOTS - 1))
        .is_some_and(|count| *count != 0)
}

/// The goroutine wrote successfully on `fd`: if it was parked there, it is not any more.
/// Returns the wait, if there was one.
#[inline(always)]
pub fn take(tgid: u32, fd: i32, goid: u64) -> Option<ParkedWrite> {
    let key = ParkedKey { tgid, fd, goid };
    // SAFETY: the value is copied out at once.
    let parked = unsafe { PARKED.get(&key) }.copied()?;
    let _ = PARKED.remove(&key);
    Some(parked)
}
