//! Which processes are traced: the target set (`--pid`, a launched command and its children)
//! and, with `--container`/`--pod`/`--namespace`, every process whose cgroup v2 is a watched
//! container's cgroup or below it.
//!
//! The cgroup is the current task's, so a process that enters a container later (`podman
//! exec`, `kubectl exec`: children of the runtime, not of the container's processes) is traced
//! from its first write. The check is a helper call and a hash lookup per watched level (one,
//! in practice), done only where the target set is asked and only when it said no; a run
//! without a cgroup filter has `cgroup_levels == 0` frozen in its read-only data, and the
//! verifier drops the check.

use aya_ebpf::{
    helpers::generated::bpf_get_current_ancestor_cgroup_id, macros::map, maps::HashMap,
};
use stdtrace_common::MAX_CGROUP_LEVEL;

use crate::{config, maps::is_target};

/// Watched containers' cgroup v2 ids (the cgroup directory's inode number) -> 1. Userspace
/// fills it, and adds containers that start later and match.
#[map]
pub static CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(4096, 0);

/// Whether the current task, whose process is `tgid`, is traced.
#[inline(always)]
pub fn traced_current(tgid: u32) -> bool {
    !config::targets_only() || is_target(tgid) || in_watched_cgroup()
}

/// Whether the current task runs in a watched cgroup or below one.
#[inline(always)]
pub fn in_watched_cgroup() -> bool {
    let levels = config::cgroup_levels();
    if levels == 0 {
        return false;
    }
    let mut level = 1;
    while level <= MAX_CGROUP_LEVEL {
        if levels & (1 << level) != 0 {
            // SAFETY: a plain helper call; 0 when the task's cgroup is above `level`.
            let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
            // SAFETY: only the presence of the key is used.
            if id != 0 && unsafe { CGROUPS.get(&id) }.is_some() {
                return true;
            }
        }
        level += 1;
    }
    false
}
