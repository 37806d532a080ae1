//! Which traced processes are Go programs, and telling the kernel program where their
//! goroutines are.
//!
//! A process is looked at when it execs, when it is a target from the start, or when it is
//! first seen failing a write; its executable is read once per file (by device, inode, size
//! and modification time) and, if it is a Go binary, the `g` slot and `runtime.g`/`runtime.m`
//! offsets go into the kernel's `GO_PROCESSES` map under the process id.

use std::{
    collections::{HashMap, VecDeque},
    os::unix::fs::MetadataExt,
    path::Path,
    sync::Arc,
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use stdtrace_common::{GoLayout, GoMemory, Goroutine, go_flags};

use crate::{
    goruntime::{
        GoBinary, buildinfo,
        elf::ElfImage,
        find_pclntab,
        offsets::{GOffsets, OffsetsSource},
    },
    process::memory,
};

/// What stdtrace knows of a Go executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoProgram {
    /// The toolchain version, e.g. `go1.25.5`.
    pub version: String,
    /// Where the kernel program finds the goroutine, or why it cannot.
    pub kernel: Result<GoLayout, String>,
    /// A caveat to report with every goroutine id (e.g. offsets guessed for an unknown future
    /// Go version).
    pub caveat: Option<String>,
    /// The `runtime.g` offsets, for reading parked goroutines from memory.
    pub g: Option<GOffsets>,
}

/// How many `/proc` entries the node-wide start-up sweep looks at per tick.
const SWEEP_PER_TICK: usize = 64;

/// The executable's identity, to read each file once.
type FileKey = (u64, u64, u64, i64);

/// What is known of one process.
#[derive(Clone, Debug)]
struct Tracked {
    /// The executable it was looked at through.
    file: Option<FileKey>,
    program: Option<Arc<GoProgram>>,
}

/// The identity of the file at `path`.
fn identify(path: &Path) -> Option<FileKey> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((
        metadata.dev(),
        metadata.ino(),
        metadata.size(),
        metadata.mtime(),
    ))
}

/// The Go programs among traced processes.
pub struct GoTracker {
    map: Option<BpfHashMap<MapData, u32, GoLayout>>,
    by_file: HashMap<FileKey, Option<Arc<GoProgram>>>,
    by_pid: HashMap<u32, Tracked>,
    /// Processes that existed at start, still to be looked at (node-wide mode).
    sweep: VecDeque<u32>,
    own_pid: u32,
}

impl GoTracker {
    /// `map` is the kernel's `GO_PROCESSES` map; without it, Go processes are still recognized
    /// (version, symbols) but their goroutines are not read.
    pub fn new(map: Option<BpfHashMap<MapData, u32, GoLayout>>) -> Self {
        Self {
            map,
            by_file: HashMap::new(),
            by_pid: HashMap::new(),
            sweep: VecDeque::new(),
            own_pid: std::process::id(),
        }
    }

    /// Looks at `pid` now, unless it was already.
    pub fn process(&mut self, pid: u32) -> Option<Arc<GoProgram>> {
        self.process_or(pid, None)
    }

    /// Looks at `pid` now, unless it was already; if it is gone, at `executable` (the file it
    /// mapped, as the kernel recorded it).
    pub fn process_or(&mut self, pid: u32, executable: Option<&Path>) -> Option<Arc<GoProgram>> {
        if let Some(known) = self.by_pid.get(&pid) {
            return known.program.clone();
        }
        let exe = crate::process::host::host().pid_path(pid, "exe");
        let path = match (identify(Path::new(&exe)), executable) {
            (Some(_), _) | (None, None) => Path::new(&exe),
            (None, Some(executable)) => executable,
        };
        self.track(pid, path).program
    }

    /// Registers `pid` as running `executable` (launch mode: the child is held before exec, so
    /// its `/proc/PID/exe` is still stdtrace).
    pub fn process_will_run(&mut self, pid: u32, executable: &Path) -> Option<Arc<GoProgram>> {
        self.track(pid, executable).program
    }

    /// The process replaced its image. Exec records are read in batches, so the process may
    /// be gone by now, and the exec may be the one already accounted for (launch mode looks
    /// at the command before it execs): only a readable, different executable replaces what
    /// is known.
    pub fn process_replaced(&mut self, pid: u32) {
        let exe = crate::process::host::host().pid_path(pid, "exe");
        let Some(file) = identify(Path::new(&exe)) else {
            // Gone already: what was known of it (its image before the exec) is stale; the
            // kernel's record of the exec names the program when it is needed.
            self.forget(pid);
            return;
        };
        if self.by_pid.get(&pid).and_then(|known| known.file) == Some(file) {
            return;
        }
        self.forget(pid);
        self.track(pid, Path::new(&exe));
    }

    /// The process ended.
    pub fn process_exited(&mut self, pid: u32) {
        self.forget(pid);
    }

    fn forget(&mut self, pid: u32) {
        if self
            .by_pid
            .remove(&pid)
            .is_some_and(|known| known.program.is_some())
            && let Some(map) = &mut self.map
        {
            let _ = map.remove(&pid);
        }
    }

    /// Looks at `executable` as what `pid` runs, and remembers it.
    fn track(&mut self, pid: u32, executable: &Path) -> Tracked {
        let tracked = Tracked {
            file: identify(executable),
            program: self.look_at(pid, executable),
        };
        self.by_pid.insert(pid, tracked.clone());
        tracked
    }

    /// Queues every process that exists now to be looked at over the next ticks.
    pub fn sweep_existing(&mut self) {
        let Ok(entries) = std::fs::read_dir(crate::process::host::host().proc()) else {
            return;
        };
        self.sweep.extend(
            entries
                .flatten()
                .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok()),
        );
    }

    /// Looks at some of the processes queued by [`sweep_existing`](Self::sweep_existing).
    pub fn tick(&mut self) {
        for _ in 0..SWEEP_PER_TICK {
            let Some(pid) = self.sweep.pop_front() else {
                break;
            };
            if pid != self.own_pid {
                self.process(pid);
            }
        }
    }

    fn look_at(&mut self, pid: u32, executable: &Path) -> Option<Arc<GoProgram>> {
        let key = identify(executable)?;
        let program = match self.by_file.get(&key) {
            Some(known) => known.clone(),
            None => {
                let read = read_program(executable);
                if let Some(program) = &read {
                    log::info!(
                        "{} is a {} program{}",
                        executable.display(),
                        program.version,
                        match &program.kernel {
                            Ok(layout) => format!(" (g at FS{:+})", layout.tls_offset),
                            Err(why) => format!(" (goroutines unknown: {why})"),
                        }
                    );
                }
                let read = read.map(Arc::new);
                self.by_file.insert(key, read.clone());
                read
            }
        }?;
        if let (Ok(layout), Some(map)) = (&program.kernel, &mut self.map)
            && let Err(err) = map.insert(pid, *layout, 0)
        {
            log::warn!("cannot tell the kernel about Go process {pid}: {err}");
        }
        Some(program)
    }
}

/// Reads an executable; `None` if it is not a Go program.
fn read_program(path: &Path) -> Option<GoProgram> {
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: a private read-only mapping, parsed as untrusted input (see symbolize::open).
    let bytes = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    if !looks_like_go(&bytes) {
        return None;
    }
    match GoBinary::parse(&bytes) {
        Ok(binary) => Some(program_of(&binary)),
        Err(err) => {
            log::info!("{}: not a usable Go binary: {err}", path.display());
            // Go, but not all of it usable (corrupted or truncated build information or
            // pc-line table, a Go older than 1.16): every event says why its goroutine is
            // unknown, rather than guess one. Build information alone does not make a Go
            // program (any file can contain the bytes): it takes a Go pc-line table, or at
            // least the section or runtime symbols a Go linker leaves.
            let elf = ElfImage::parse(&bytes).ok()?;
            let go_table = find_pclntab(&elf)
                .is_ok_and(|table| table.func_by_name("runtime.goexit").is_some());
            let go_linked = go_table
                || elf.section(".gopclntab").is_some()
                || elf.symbol("runtime.main").is_some();
            if !go_linked {
                return None;
            }
            let (version, why) = match buildinfo::find(&elf) {
                Ok(info) => (
                    info.go_version,
                    format!("the Go binary cannot be read: {err}"),
                ),
                Err(_) => (
                    "unknown".to_owned(),
                    format!(
                        "no usable Go build information ({err}): the runtime layout is unknown"
                    ),
                ),
            };
            Some(GoProgram {
                version,
                kernel: Err(why),
                caveat: None,
                g: None,
            })
        }
    }
}

/// A cheap first test, so that not every executable on a node is parsed: Go binaries carry the
/// build information magic.
fn looks_like_go(bytes: &[u8]) -> bool {
    memchr::memmem::find(bytes, crate::goruntime::buildinfo::BUILDINFO_MAGIC).is_some()
}

/// What the kernel program needs from a parsed Go binary.
pub fn program_of(binary: &GoBinary) -> GoProgram {
    let version = binary.build_info.go_version.clone();
    let (kernel, caveat) = match (&binary.layout, &binary.tls) {
        (Ok(layout), Ok(tls)) => {
            let g = &layout.offsets.g;
            let m = &layout.offsets.m;
            let fields = [
                g.goid,
                g.m,
                g.stack_lo,
                g.stack_hi,
                g.atomicstatus,
                g.gopc,
                g.parent_goid.unwrap_or(0),
                m.curg,
            ];
            let fits = |value: u64| u32::try_from(value).ok();
            match fields.map(fits) {
                [
                    Some(goid),
                    Some(g_m),
                    Some(lo),
                    Some(hi),
                    Some(status),
                    Some(gopc),
                    Some(parent),
                    Some(curg),
                ] => {
                    let caveat = match &layout.source {
                        OffsetsSource::Guess { nearest } => Some(format!(
                            "{version} is newer than the Go versions stdtrace knows; runtime offsets guessed from {nearest}"
                        )),
                        OffsetsSource::Dwarf | OffsetsSource::Table { .. } => None,
                    };
                    (
                        Ok(GoLayout {
                            tls_offset: tls.offset,
                            g_goid: goid,
                            g_m,
                            g_stack_lo: lo,
                            g_stack_hi: hi,
                            g_status: status,
                            g_gopc: gopc,
                            g_parent_goid: parent,
                            m_curg: curg,
                            flags: if g.parent_goid.is_some() {
                                go_flags::HAS_PARENT_GOID
                            } else {
                                0
                            },
                            _pad: 0,
                        }),
                        caveat,
                    )
                }
                _ => (Err("runtime offsets out of range".to_owned()), None),
            }
        }
        (Err(why), _) => (Err(format!("runtime offsets unknown: {why}")), None),
        (_, Err(why)) => (
            Err(format!(
                "the g slot in thread-local storage is unknown: {why}"
            )),
            None,
        ),
    };
    GoProgram {
        version,
        kernel,
        caveat,
        g: binary.layout.as_ref().ok().map(|layout| layout.offsets.g),
    }
}

/// Reads the goroutine of a thread from the process's memory, as the kernel program does at
/// event time (the same walk): for a thread blocked in a system call, which is not running Go
/// code, so its `g` (and `m.curg`) stay as they are while it is blocked.
pub fn read_goroutine(pid: u32, layout: &GoLayout, fsbase: u64, sp: u64) -> Goroutine {
    Goroutine::walk(&ProcessMemory(pid), layout, fsbase, sp)
}

/// A process's memory, read through `/proc/PID/mem`.
struct ProcessMemory(u32);

impl GoMemory for ProcessMemory {
    fn word(&self, address: u64) -> Option<u64> {
        let bytes = memory::read(self.0, address, 8)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }

    fn u32(&self, address: u64) -> Option<u32> {
        let bytes = memory::read(self.0, address, 4)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?))
    }
}

/// `g.atomicstatus` in words (the `_Gscan` bit, set while the garbage collector scans the
/// stack, is dropped).
pub fn status_name(status: u32) -> &'static str {
    match status & !0x1000 {
        0 => "idle",
        1 => "runnable",
        2 => "running",
        3 => "syscall",
        4 => "waiting",
        5 => "moribund",
        6 => "dead",
        7 => "enqueue",
        8 => "copystack",
        9 => "preempted",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names() {
        assert_eq!(status_name(3), "syscall");
        assert_eq!(status_name(0x1000 | 4), "waiting");
        assert_eq!(status_name(2), "running");
        assert_eq!(status_name(77), "unknown");
    }

    #[test]
    fn non_go_executables_are_not_go_programs() {
        let mut tracker = GoTracker::new(None);
        assert_eq!(tracker.process(std::process::id()), None);
        assert_eq!(tracker.process_will_run(1, Path::new("/bin/sh")), None);
        assert_eq!(tracker.process(u32::MAX - 1), None);
    }
}
