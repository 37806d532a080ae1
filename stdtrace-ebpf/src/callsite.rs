//! Repeated failed writes from a call path already reported are counted here, in the kernel,
//! instead of being copied out one by one: in an error storm a writer fails the same write
//! millions of times, and only the first needs its stack walked and named.
//!
//! Userspace unwinds the first occurrence with the binaries' CFI and tells the kernel where
//! that path's return addresses sit above the stack pointer, and what they are (a
//! fingerprint, keyed by the binary, the syscall's pc and the first return address, all
//! addresses normalized against the process's code bases: `stdtrace_common::image`), so that
//! another process of the same binary failing at the same path is counted, not sent again. A later failure whose
//! stack holds the same return addresses at the same places comes from the same path. The
//! check costs two map lookups and one read of the top of the user stack (a few hundred
//! bytes, into per-CPU scratch memory) instead of a 16 KiB copy and a report; the count is one
//! more lookup.

use aya_ebpf::helpers::generated::bpf_probe_read_user;
use stdtrace_common::{
    CallSiteKey, FINGERPRINT_ALTERNATIVES, FINGERPRINT_FRAMES, FINGERPRINT_SPAN, FailureKey,
    Fingerprint, FingerprintKey, ImageBases, SiteCount, SiteKey, counter,
};

use crate::{
    image,
    maps::{
        CALL_SITES, CALL_SITES_GENERATION, FINGERPRINTS, SCRATCH_STACK_BYTES, SITE_COUNTS, Scratch,
        bump, tally, track_process,
    },
};

const _: () = assert!(FINGERPRINT_SPAN as usize == SCRATCH_STACK_BYTES);

/// The word at `offset` of the stack copy; `None` past `span`.
#[inline(always)]
fn word_at(scratch: *const Scratch, offset: u32, span: u32) -> Option<u64> {
    if offset.checked_add(8)? > span {
        return None;
    }
    // The mask keeps the index inside the copy for the verifier (offset + 8 <= 4096).
    let index = (offset as usize) & (SCRATCH_STACK_BYTES - 8);
    // SAFETY: `scratch` points at this CPU's scratch value; index + 8 <= its stack's length.
    Some(unsafe { core::ptr::read_unaligned((*scratch).stack.as_ptr().add(index) as *const u64) })
}

/// If the failed write `key`, made at user pc `ip` with stack pointer `sp`, comes from a call
/// path already reported (by this process or another of its binary), counts it there and
/// returns true; false when it must be sent.
#[inline(always)]
pub fn counted_at_known_site(
    scratch: *mut Scratch,
    ip: u64,
    sp: u64,
    key: &FailureKey,
    now: u64,
) -> bool {
    if !image_of(scratch, key.tgid) {
        return false;
    }
    // SAFETY: `scratch` is this CPU's scratch value; `image_of` filled its image.
    let image = unsafe { &(*scratch).image };
    let Some((offset, span)) = first_return_of(scratch, image, ip) else {
        return false;
    };
    let span = span.min(FINGERPRINT_SPAN);
    if span < 8 {
        return false;
    }
    // SAFETY: the destination is this CPU's scratch stack, `span <= 4096` bytes long;
    // bpf_probe_read_user faults safely on a bad user address.
    let copied =
        unsafe { bpf_probe_read_user((*scratch).stack.as_mut_ptr().cast(), span, sp as *const _) };
    if copied != 0 {
        return false;
    }
    let Some(first_return) = word_at(scratch, offset, span) else {
        return false;
    };
    let fingerprint_key = FingerprintKey {
        dev: image.dev,
        _pad: 0,
        ino: image.ino,
        ip: image.normalize(ip),
        first_return: image.normalize(first_return),
    };
    let Some(known) = FINGERPRINTS.get_ptr(&fingerprint_key) else {
        return false;
    };
    for alternative in 0..FINGERPRINT_ALTERNATIVES {
        // SAFETY: `known` points at a map value, valid for this program's run; userspace
        // replaces values whole, so a racing update at worst makes this one write be sent.
        let fingerprint = unsafe { &(*known).alternatives[alternative] };
        if fingerprint.site == 0 {
            break;
        }
        if matches(scratch, image, fingerprint, span) {
            count(key, fingerprint.site, now);
            return true;
        }
    }
    false
}

/// Makes this CPU's scratch hold the current process's image; false when it has none (a
/// kernel thread, an unreadable executable). Read once per process per CPU in a storm.
#[inline(always)]
fn image_of(scratch: *mut Scratch, tgid: u32) -> bool {
    let Some(mm) = image::current_mm() else {
        return false;
    };
    // SAFETY: `scratch` is this CPU's scratch value, used by one program at a time.
    unsafe {
        if (*scratch).image_tgid == tgid && (*scratch).image_mm == mm {
            return (*scratch).image.ino != 0;
        }
        (*scratch).image = image::of_mm(mm);
        (*scratch).image_tgid = tgid;
        (*scratch).image_mm = mm;
        (*scratch).site_ip = 0;
        (*scratch).image.ino != 0
    }
}

/// Where the first return address above `ip`'s syscall is, and how much stack to read: from
/// this CPU's copy of the last lookup when it is still current, else from `CALL_SITES`.
#[inline(always)]
fn first_return_of(scratch: *mut Scratch, image: &ImageBases, ip: u64) -> Option<(u32, u32)> {
    let generation = CALL_SITES_GENERATION.get(0).copied().unwrap_or(0);
    // SAFETY: `scratch` is this CPU's scratch value, used by one program at a time.
    unsafe {
        if (*scratch).site_ip == ip && (*scratch).site_generation == generation {
            return Some(((*scratch).site_offset, (*scratch).site_span));
        }
    }
    let site_key = CallSiteKey {
        dev: image.dev,
        _pad: 0,
        ino: image.ino,
        ip: image.normalize(ip),
    };
    // SAFETY: the value is copied out at once.
    let (offset, span) =
        (unsafe { CALL_SITES.get(&site_key) }).map(|first| (first.offset, first.span))?;
    // SAFETY: as above.
    unsafe {
        (*scratch).site_ip = ip;
        (*scratch).site_generation = generation;
        (*scratch).site_offset = offset;
        (*scratch).site_span = span;
    }
    Some((offset, span))
}

/// Whether the stack copy holds the fingerprint's return addresses at its offsets.
#[inline(always)]
fn matches(
    scratch: *const Scratch,
    image: &ImageBases,
    fingerprint: &Fingerprint,
    span: u32,
) -> bool {
    for frame in 0..FINGERPRINT_FRAMES {
        if frame as u32 >= fingerprint.frames {
            return true;
        }
        let found = word_at(scratch, fingerprint.offsets[frame], span);
        if found.map(|word| image.normalize(word)) != Some(fingerprint.values[frame]) {
            return false;
        }
    }
    true
}

/// Counts a repeat at its site. Sites' counts are part of the totals: userspace adds them to
/// the per-(pid, fd, errno) tallies, so a repeat is not tallied twice; one that cannot be
/// counted at its site is tallied instead.
#[inline(always)]
fn count(key: &FailureKey, site: u32, now: u64) {
    bump(counter::REPEATS);
    let site_key = SiteKey {
        tgid: key.tgid,
        fd: key.fd,
        errno: key.errno,
        syscall: key.syscall,
        site,
        _pad: 0,
    };
    if let Some(counted) = SITE_COUNTS.get_ptr_mut(&site_key) {
        // SAFETY: this CPU's value of an existing entry, written only from this CPU.
        unsafe {
            (*counted).count += 1;
            (*counted).last_ns = now;
        }
        return;
    }
    let first = SiteCount {
        count: 1,
        first_ns: now,
        last_ns: now,
    };
    if SITE_COUNTS.insert(&site_key, &first, 0).is_err() {
        bump(counter::SITES_FULL);
        tally(key);
        return;
    }
    track_process(key.tgid);
}
