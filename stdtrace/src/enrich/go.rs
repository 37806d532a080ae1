//! Which traced processes are Go programs, and telling the kernel program where their
//! goroutines are.
//!
//! A process is looked at when it execs, when it is a target from the start, or when it is
//! first seen failing a write; its executable is read once per file (by device, inode, size
//! and modification time) and, if it is a Go binary, the `g` slot and `runtime.g`/`runtime.m`
//! offsets go into the kernel's `GO_PROCESSES` map under the process id.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::Path,
    sync::{
        Arc,
        mpsc::{self, Receiver, Sender},
    },
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
    /// Node-wide: the thread that reads executables, so that the event loop never does.
    reader: Option<Background>,
    own_pid: u32,
}

/// The thread that reads executables (node-wide mode), and what it found not applied yet.
struct Background {
    requests: Sender<(FileKey, std::fs::File, String)>,
    found: Receiver<Found>,
    /// Processes waiting for their executable to be read.
    pending: HashMap<FileKey, Vec<u32>>,
}

/// What the background thread found.
enum Found {
    /// A process that existed at start, its executable and what it is.
    Swept(u32, FileKey, Option<Arc<GoProgram>>),
    /// An executable asked for (by this name).
    Read(FileKey, String, Option<Arc<GoProgram>>),
}

impl GoTracker {
    /// `map` is the kernel's `GO_PROCESSES` map; without it, Go processes are still recognized
    /// (version, symbols) but their goroutines are not read.
    pub fn new(map: Option<BpfHashMap<MapData, u32, GoLayout>>) -> Self {
        Self {
            map,
            by_file: HashMap::new(),
            by_pid: HashMap::new(),
            reader: None,
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
        let key = identify(Path::new(&exe));
        if let Some(key) = key
            && !self.by_file.contains_key(&key)
            && self.read_later(pid, Path::new(&exe), key)
        {
            return None;
        }
        let path = match (key, executable) {
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
        if !self.by_file.contains_key(&file) && self.read_later(pid, Path::new(&exe), file) {
            return;
        }
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

    /// Node-wide: from now on executables are read in a thread of its own, starting with
    /// those of every process that exists now. Reading every executable on a node takes
    /// seconds (a test binary with debug info can take one on its own), which the event loop
    /// must not wait for: a process whose executable is not read yet is not known as Go
    /// until a tick applies what was found ([`tick`](Self::tick)).
    pub fn sweep_existing(&mut self) {
        let (requests, asked) = mpsc::channel();
        let (sender, found) = mpsc::channel();
        let own_pid = self.own_pid;
        let started = std::thread::Builder::new()
            .name("stdtrace-go-read".to_owned())
            .spawn(move || read_in_background(own_pid, &asked, &sender));
        match started {
            Ok(_) => {
                self.reader = Some(Background {
                    requests,
                    found,
                    pending: HashMap::new(),
                });
            }
            Err(err) => log::warn!("Go processes that already run will not be found: {err}"),
        }
    }

    /// Applies what the background thread found so far.
    pub fn tick(&mut self) {
        let Some(reader) = &mut self.reader else {
            return;
        };
        let found: Vec<Found> = reader.found.try_iter().collect();
        for found in found {
            match found {
                Found::Swept(pid, key, program) => {
                    self.by_file.entry(key).or_insert_with(|| program.clone());
                    // Not if seen since (an exec or a failed write looks at it at once), nor
                    // if it runs another image now.
                    if !self.by_pid.contains_key(&pid)
                        && identify(&crate::process::host::host().pid_path(pid, "exe")) == Some(key)
                    {
                        self.remember(pid, key, program);
                    }
                }
                Found::Read(key, name, program) => {
                    if let Some(program) = &program {
                        log::info!(
                            "{name} is a {} program (read in the background)",
                            program.version
                        );
                    }
                    self.by_file.insert(key, program.clone());
                    let waiting = self
                        .reader
                        .as_mut()
                        .and_then(|reader| reader.pending.remove(&key))
                        .unwrap_or_default();
                    for pid in waiting {
                        // Still waiting for this image (not gone, not replaced since).
                        if self
                            .by_pid
                            .get(&pid)
                            .is_some_and(|known| known.file == Some(key) && known.program.is_none())
                        {
                            self.remember(pid, key, program.clone());
                        }
                    }
                }
            }
        }
    }

    /// Records what `pid` runs, and tells the kernel if it is a Go program it can follow.
    fn remember(&mut self, pid: u32, key: FileKey, program: Option<Arc<GoProgram>>) {
        if let (Some(program), Some(map)) = (&program, &mut self.map)
            && let Ok(layout) = &program.kernel
            && let Err(err) = map.insert(pid, *layout, 0)
        {
            log::warn!("cannot tell the kernel about Go process {pid}: {err}");
        }
        self.by_pid.insert(
            pid,
            Tracked {
                file: Some(key),
                program,
            },
        );
    }

    /// Node-wide: `pid` runs `exe` (`/proc/PID/exe`), an executable not read yet: asks the
    /// background thread to read it; false if there is no such thread.
    fn read_later(&mut self, pid: u32, exe: &Path, key: FileKey) -> bool {
        let Some(reader) = &mut self.reader else {
            return false;
        };
        let waiting = reader.pending.entry(key).or_default();
        if waiting.is_empty() {
            // Opened now: the file stays readable after the process exits.
            let Ok(file) = std::fs::File::open(exe) else {
                return false;
            };
            if reader
                .requests
                .send((key, file, exe.display().to_string()))
                .is_err()
            {
                return false;
            }
        }
        waiting.push(pid);
        self.by_pid.insert(
            pid,
            Tracked {
                file: Some(key),
                program: None,
            },
        );
        true
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

/// The background thread: executables asked for first, and between
/// them every process in `/proc` at start, each executable read once.
fn read_in_background(
    own_pid: u32,
    asked: &Receiver<(FileKey, std::fs::File, String)>,
    found: &Sender<Found>,
) {
    let read = |(key, file, name): (FileKey, std::fs::File, String)| {
        let program = read_program_from(&file, Path::new(&name)).map(Arc::new);
        found.send(Found::Read(key, name, program)).is_ok()
    };
    let started = std::time::Instant::now();
    let mut by_file: HashMap<FileKey, Option<Arc<GoProgram>>> = HashMap::new();
    let pids: Vec<u32> = std::fs::read_dir(crate::process::host::host().proc())
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
                .filter(|&pid| pid != own_pid)
                .collect()
        })
        .unwrap_or_default();
    for &pid in &pids {
        if !asked.try_iter().all(read) {
            return;
        }
        let exe = crate::process::host::host().pid_path(pid, "exe");
        let Some(key) = identify(Path::new(&exe)) else {
            continue;
        };
        let program = by_file
            .entry(key)
            .or_insert_with(|| read_program(Path::new(&exe)).map(Arc::new))
            .clone();
        if found.send(Found::Swept(pid, key, program)).is_err() {
            return;
        }
    }
    log::debug!(
        "looked at {} running processes ({} executables) for Go in {:?}",
        pids.len(),
        by_file.len(),
        started.elapsed()
    );
    for request in asked {
        if !read(request) {
            return;
        }
    }
}

/// Reads an executable; `None` if it is not a Go program.
fn read_program(path: &Path) -> Option<GoProgram> {
    read_program_from(&std::fs::File::open(path).ok()?, path)
}

/// Reads an executable already open (`path` names it in logs).
fn read_program_from(file: &std::fs::File, path: &Path) -> Option<GoProgram> {
    // SAFETY: a private read-only mapping, parsed as untrusted input (see symbolize::open).
    let bytes = unsafe { memmap2::Mmap::map(file) }.ok()?;
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
