//! Maps shared with userspace.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use stdtrace_common::{
    BLOCKED_SLOTS, BlockedWrite, CallSiteKey, FailureKey, FingerprintKey, Fingerprints,
    FirstReturn, GoLayout, PARKED_PROCESS_SLOTS, ParkedKey, ParkedWrite, PipeState, PtyState,
    ReaderGone, SiteCount, SiteKey, SocketState, ThreadState, TtyLayout, counter,
};

/// `BPF_F_MMAPABLE`: userspace maps the array into its memory and reads it without syscalls.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Records for userspace: failed writes and the exec/exit of traced processes. Its size is set
/// by the loader.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Processes being traced (tgid -> 1) when the configuration says `targets_only`. Userspace
/// seeds it; the fork tracepoint adds the children of targets and the exit tracepoint removes
/// processes that ended.
#[map]
pub static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(65536, 0);

/// Go processes (tgid -> where their goroutines are), registered by userspace once it has
/// read the binary.
#[map]
pub static GO_PROCESSES: HashMap<u32, GoLayout> = HashMap::with_max_entries(16384, 0);

/// Writes blocked right now, one slot per thread (by tid modulo the size).
#[map]
pub static BLOCKED: Array<BlockedWrite> = Array::with_max_entries(BLOCKED_SLOTS, BPF_F_MMAPABLE);

/// Goroutines parked in Go's netpoller after EAGAIN, until they write again successfully.
/// Not an LRU map: evicting a parked goroutine to make room would lose it without a trace;
/// a full map refuses the new one instead, which is counted (`PARKED_FULL`). Userspace
/// removes the goroutines that went on.
#[map]
pub static PARKED: HashMap<ParkedKey, ParkedWrite> = HashMap::with_max_entries(16384, 0);

/// Parked goroutines per process slot (tgid modulo the size).
#[map]
pub static PARKED_PROCESSES: Array<u64> = Array::with_max_entries(PARKED_PROCESS_SLOTS + 1, 0);

/// The last reader of each pipe that lost it (pipe inode -> who, how, when).
#[map]
pub static LAST_READERS: LruHashMap<u64, ReaderGone> = LruHashMap::with_max_entries(16384, 0);

/// Processes that closed the last read end of a pipe (tgid -> pipe inode), so that their
/// exit is added to what [`LAST_READERS`] remembers of them.
#[map]
pub static READERS_CLOSED: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16384, 0);

/// Processes that are not targets but read pipes targets write to (tgid -> 1): their exits
/// and closes are remembered too. Userspace fills it.
#[map]
pub static READER_WATCH: HashMap<u32, u32> = HashMap::with_max_entries(16384, 0);

/// Where the first return address is above a process's syscall instruction (userspace fills
/// it from its unwinding of the first failed write there).
#[map]
pub static CALL_SITES: HashMap<CallSiteKey, FirstReturn> = HashMap::with_max_entries(16384, 0);

/// The call paths already reported, by process, syscall instruction and first return address
/// (userspace fills it).
#[map]
pub static FINGERPRINTS: HashMap<FingerprintKey, Fingerprints> =
    HashMap::with_max_entries(16384, 0);

/// Failed writes counted at their call site instead of sent, per CPU.
#[map]
pub static SITE_COUNTS: PerCpuHashMap<SiteKey, SiteCount> =
    PerCpuHashMap::with_max_entries(65536, 0);

/// The thread whose failing write just raised its process's first SIGPIPE on that fd, per
/// CPU (the signal is raised inside the write, on its CPU): that write is sent in full, for
/// the SIGPIPE story, even from a known call site.
#[map]
pub static SIGPIPE_WRITER: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Bytes of the user stack a call-site check reads at most.
pub const SCRATCH_STACK_BYTES: usize = 4096;

/// Per-CPU room for the top of the user stack, read in one go (bigger than a program's stack;
/// one read of a few hundred bytes costs less than a few 8-byte reads), and what the last event on this CPU looked up, which the next one, in an
/// error storm, is most likely to look up again.
#[repr(C)]
pub struct Scratch {
    pub stack: [u8; SCRATCH_STACK_BYTES],
    /// The last (process, pc) found in `CALL_SITES`, under `CALL_SITES_GENERATION`
    /// `site_generation`, and its entry.
    pub site_tgid: u32,
    pub site_generation: u32,
    pub site_ip: u64,
    pub site_offset: u32,
    pub site_span: u32,
    /// The last (process, fd) found in `SIGPIPE_SEEN` (`tgid << 32 | fd`; 0 for none).
    pub seen_sigpipe: u64,
}

/// [`SCRATCH`] slots: one per program that uses it, so that they never share one.
pub const SCRATCH_WRITE_EXIT: u32 = 0;
pub const SCRATCH_SIGNAL: u32 = 1;

#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(2, 0);

/// Bumped by userspace whenever it changes `CALL_SITES`: per-CPU copies of its entries older
/// than this are looked up again.
#[map]
pub static CALL_SITES_GENERATION: Array<u32> = Array::with_max_entries(1, 0);

/// Processes a SIGPIPE was generated for (tgid -> 1): their exit is reported, to tell their
/// fate, even when they are not targets.
#[map]
pub static SIGPIPE_PENDING: LruHashMap<u32, u32> = LruHashMap::with_max_entries(16384, 0);

/// SIGPIPEs raised by writes, per (process, fd) (`tgid << 32 | fd`), counted per CPU: only the
/// first of each is sent to userspace; a writer that ignores SIGPIPE and fails a million writes
/// sends one record, and its count is read from here.
#[map]
pub static SIGPIPE_COUNTS: LruPerCpuHashMap<u64, u64> =
    LruPerCpuHashMap::with_max_entries(16384, 0);

/// (process, fd) pairs whose first SIGPIPE was sent (`tgid << 32 | fd` -> 1).
#[map]
pub static SIGPIPE_SEEN: LruHashMap<u64, u32> = LruHashMap::with_max_entries(16384, 0);

/// Processes whose next SIGPIPE delivery is wanted (tgid -> 1): set when a SIGPIPE record is
/// sent, so that a handler run is told once per story, not once per failed write.
#[map]
pub static SIGPIPE_DELIVERY_WANTED: LruHashMap<u32, u32> = LruHashMap::with_max_entries(16384, 0);

/// What the inspection program read, for userspace that ran it.
#[map]
pub static INSPECTED: Array<PipeState> = Array::with_max_entries(1, 0);

/// What the socket inspection program read, for userspace that ran it.
#[map]
pub static INSPECTED_SOCKET: Array<SocketState> = Array::with_max_entries(1, 0);

/// What the pty inspection program read, for userspace that ran it.
#[map]
pub static INSPECTED_PTY: Array<PtyState> = Array::with_max_entries(1, 0);

/// Where the tty structs keep their members (from BTF), written by userspace once after
/// loading: only the on-demand pty program reads it.
#[map]
pub static TTY_LAYOUT: Array<TtyLayout> = Array::with_max_entries(1, 0);

/// What the thread inspection program read, for userspace that ran it.
#[map]
pub static INSPECTED_THREAD: Array<ThreadState> = Array::with_max_entries(1, 0);

/// Event and failure counters, indexed by `stdtrace_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Exact number of failed writes per (process, fd, errno, syscall), kept even for events the
/// ring buffer had no room for.
#[map]
pub static FAILURES: PerCpuHashMap<FailureKey, u64> = PerCpuHashMap::with_max_entries(16384, 0);

/// Adds one to a per-CPU counter.
#[inline(always)]
pub fn bump(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: the pointer is this CPU's slot of a per-CPU array; nothing else writes it
        // while this program runs on this CPU.
        unsafe { *slot += 1 };
    }
}

/// Adds one failed write to its tally.
#[inline(always)]
pub fn tally(key: &FailureKey) {
    if let Some(count) = FAILURES.get_ptr_mut(key) {
        // SAFETY: per-CPU value of an existing entry, written only from this CPU.
        unsafe { *count += 1 };
        return;
    }
    const BPF_NOEXIST: u64 = 1;
    if FAILURES.insert(key, &1, BPF_NOEXIST).is_ok() {
        return;
    }
    // Another CPU created the entry between the lookup and the insert.
    match FAILURES.get_ptr_mut(key) {
        // SAFETY: as above.
        Some(count) => unsafe { *count += 1 },
        None => bump(counter::TALLY_FULL),
    }
}

/// Whether a process is traced.
#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    // SAFETY: only the presence of the key is used, not a reference into the map.
    unsafe { TARGETS.get(&tgid) }.is_some()
}
