//! The kernel's `BLOCKED` slots: writes blocked right now.
//!
//! The map is an array created memory-mappable: it is mapped here once, and each tick reads
//! it without a system call. The kernel fills a slot when a traced thread first sleeps in a
//! write and frees it when the write returns; userspace only marks a slot it has reported
//! stuck (`reported_seq = seq`), so that the kernel reports the write's return as resumed, and
//! fills free slots with writes that were blocked before stdtrace started
//! (`enrich::blocked` decides what goes in them).

use std::{
    os::fd::AsFd,
    sync::atomic::{Ordering, fence},
};

use aya::maps::{Map, MapData};
use stdtrace_common::{BLOCKED_SLOTS, BlockedWrite};

use crate::{
    enrich::blocked::{Blocked, SlotTable},
    sys::SharedMapping,
};

/// Errors mapping the slots.
#[derive(Debug, thiserror::Error)]
pub enum BlockedError {
    #[error("the BLOCKED map is not an array")]
    NotAnArray,
    #[error("mapping the BLOCKED map: {0}")]
    Mmap(#[source] std::io::Error),
}

/// The kernel's slots of blocked writes, mapped into this process.
pub struct BlockedSlots {
    /// Keeps the map (and so the mapping's backing) alive.
    _map: MapData,
    mapping: SharedMapping,
}

impl BlockedSlots {
    /// Maps the `BLOCKED` array.
    pub fn map(map: Map) -> Result<Self, BlockedError> {
        let Map::Array(data) = map else {
            return Err(BlockedError::NotAnArray);
        };
        // As many bytes as its values take (the kernel rounds the mapping up to pages).
        let len = BLOCKED_SLOTS as usize * size_of::<BlockedWrite>();
        let mapping = SharedMapping::new(data.fd().as_fd(), len).map_err(BlockedError::Mmap)?;
        Ok(Self {
            _map: data,
            mapping,
        })
    }

    fn slot(&self, slot: usize) -> *mut BlockedWrite {
        debug_assert!(slot < BLOCKED_SLOTS as usize);
        // SAFETY: every caller passes a slot below BLOCKED_SLOTS, within the mapping.
        unsafe { self.mapping.as_ptr().cast::<BlockedWrite>().add(slot) }
    }
}

/// The slot of thread `tid`, as the kernel program picks it.
fn slot_of(tid: u32) -> usize {
    (tid & (BLOCKED_SLOTS - 1)) as usize
}

impl SlotTable for BlockedSlots {
    fn blocked(&self) -> Vec<Blocked> {
        let mut found = Vec::new();
        for slot in 0..BLOCKED_SLOTS as usize {
            let pointer = self.slot(slot);
            // SAFETY: `pointer` is within the mapping; the kernel may change the slot
            // meanwhile, so the copy is checked: the owner read before and after the copy must
            // agree.
            let (before, write) = unsafe {
                let before = std::ptr::read_volatile(&raw const (*pointer).tid);
                fence(Ordering::Acquire);
                (before, std::ptr::read_volatile(pointer))
            };
            fence(Ordering::Acquire);
            // SAFETY: as above.
            let after = unsafe { std::ptr::read_volatile(&raw const (*pointer).tid) };
            if before != 0 && before == after && write.tid == before {
                found.push(Blocked { slot, write });
            }
        }
        found
    }

    fn mark_reported(&mut self, blocked: &Blocked) {
        if blocked.slot >= BLOCKED_SLOTS as usize {
            return;
        }
        let pointer = self.slot(blocked.slot);
        // SAFETY: the slot is within the mapping; writing one u32 the kernel only reads.
        unsafe { std::ptr::write_volatile(&raw mut (*pointer).reported_seq, blocked.write.seq) };
    }

    fn adopt(&mut self, write: BlockedWrite) -> bool {
        let pointer = self.slot(slot_of(write.tid));
        // SAFETY: the slot is within the mapping. The kernel only fills a free slot from the
        // thread that owns it, and this thread is asleep in its write: nobody else writes it.
        unsafe {
            if std::ptr::read_volatile(&raw const (*pointer).tid) != 0 {
                return false;
            }
            let seq = std::ptr::read_volatile(&raw const (*pointer).seq).wrapping_add(1);
            std::ptr::write_volatile(
                pointer,
                BlockedWrite {
                    tid: 0,
                    seq,
                    reported_seq: seq.wrapping_sub(1),
                    ..write
                },
            );
            fence(Ordering::Release);
            std::ptr::write_volatile(&raw mut (*pointer).tid, write.tid);
        }
        true
    }

    fn release(&mut self, tid: u32) {
        let pointer = self.slot(slot_of(tid));
        // SAFETY: as in `adopt`.
        unsafe {
            if std::ptr::read_volatile(&raw const (*pointer).tid) == tid {
                std::ptr::write_volatile(&raw mut (*pointer).tid, 0);
            }
        }
    }
}
