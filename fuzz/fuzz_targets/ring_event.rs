//! The ring-buffer event decoder (events.rs `decode`). Input: 17 little-endian u32 offsets of
//! the registers in `struct pt_regs` (as BTF would give them), then one record. The record is
//! decoded as it is, and zero-extended to a whole write record, so that short inputs reach
//! every field of the large one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stdtrace::{events, kernel::btf::RegsLayout};
use stdtrace_common::WriteRecord;

fuzz_target!(|data: &[u8]| {
    let Some((offsets, record)) = data.split_first_chunk::<{ 17 * 4 }>() else {
        return;
    };
    let mut layout = RegsLayout::default();
    for (slot, bytes) in layout.offsets.iter_mut().zip(offsets.chunks_exact(4)) {
        *slot = u32::from_le_bytes(bytes.try_into().unwrap_or_default());
    }
    let _ = events::decode(record, &layout);
    let mut whole = record.to_vec();
    whole.resize(whole.len().max(size_of::<WriteRecord>()), 0);
    if let Ok(events::Record::Write(event)) = events::decode(&whole, &layout) {
        let _ = (
            event.outcome.errno(),
            event.registers.map(|r| (r.ip(), r.sp())),
        );
    }
});
