//! BTF reading (btf.rs): the type and string sections, member offsets through nested and
//! anonymous members, tracepoint arities, and the layouts the loader reads from it. Input: a
//! raw BTF blob.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stdtrace::kernel::btf::{self, Btf, RegsLayout};

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = Btf::parse(data) else {
        return;
    };
    let _ = btf.struct_size("task_struct");
    let _ = btf.member_offset("outer", "in.deep");
    let _ = btf.member_offset("task_struct", "signal.shared_pending");
    let _ = btf.tracepoint_arity("sched_process_exit");
    let _ = btf::kernel_layout(&btf);
    let _ = RegsLayout::from_btf(&btf);
});
