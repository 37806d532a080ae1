//! Indexes into the per-CPU `COUNTERS` array. Every event the kernel programs match, and every
//! way they can fail to deliver one, is counted, so the summary stays exact when events are lost.

/// Writes that failed with a watched errno in a traced process.
pub const MATCHED: u32 = 0;
/// Matched writes whose event could not be sent because the ring buffer was full.
pub const RINGBUF_FULL: u32 = 1;
/// Matched writes whose saved user registers could not be read (no fd, no stack).
pub const REGS_UNREADABLE: u32 = 2;
/// Matched writes whose fd could not be followed to its file.
pub const FILE_UNREADABLE: u32 = 3;
/// Matched writes whose user stack could not be copied at all.
pub const STACK_UNREADABLE: u32 = 4;
/// Matched writes that could not be tallied per (pid, fd, errno) because the tally map was full.
pub const TALLY_FULL: u32 = 5;
/// Processes added to the target set because a target forked them.
pub const CHILDREN_FOLLOWED: u32 = 6;
/// Process exec/exit records that could not be sent because the ring buffer was full.
pub const LIFECYCLE_DROPPED: u32 = 7;
/// Writes that blocked (the writer slept in them) in a traced process.
pub const BLOCKED: u32 = 8;
/// Blocked writes not tracked because another blocked thread had their slot.
pub const BLOCKED_UNTRACKED: u32 = 9;
/// Blocked-write records (slow, resumed) the ring buffer had no room for.
pub const BLOCKED_DROPPED: u32 = 10;
/// Matched writes from a call site already reported: counted there, in the kernel, and
/// not sent.
pub const REPEATS: u32 = 11;
/// Matched writes from a known call site that could not be counted there because the map
/// of call-site counts was full (still in the per-(pid, fd, errno) totals).
pub const SITES_FULL: u32 = 12;
/// Goroutines parked after EAGAIN that could not be recorded because the map of parked
/// goroutines had no room: they are never reported parked, nor resumed.
pub const PARKED_FULL: u32 = 13;
/// Processes with kernel entries (failures, sites, SIGPIPEs) that could not be recorded in
/// the map of such processes because it was full, or whose lost exit record could not be kept
/// in `EXITS_LOST`: userspace finds their exit by rescanning `/proc`.
pub const PROCESSES_FULL: u32 = 14;
/// SIGPIPE state (first SIGPIPE seen per fd, pending fates, counts) that could not be recorded
/// because its map was full.
pub const SIGPIPE_FULL: u32 = 15;
/// Children of targets that could not be added to the target set because it was full: they
/// are not traced.
pub const TARGETS_FULL: u32 = 16;
/// Number of counters.
pub const COUNT: u32 = 17;
