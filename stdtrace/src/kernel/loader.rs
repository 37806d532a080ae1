//! Loads stdtrace's kernel programs, configures them, attaches them, and gives access to their
//! maps.

use std::os::fd::AsRawFd;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{ProgramError, RawTracePoint, RawTracePointRunOptions, TestRun, TracePoint},
};
use stdtrace_common::{
    FailureKey, GoLayout, PipeState, PtyState, ReaderGone, SocketState, ThreadState, TracerConfig,
    TtyLayout, counter,
};

use super::{
    blocked::{BlockedError, BlockedSlots},
    call_sites::CallPaths,
    parked::ParkedGoroutines,
};

/// The kernel programs, built by `build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/stdtrace"));

/// The write-family exit tracepoints, as (program name, tracepoint name).
pub const WRITE_TRACEPOINTS: [(&str, &str); 8] = [
    ("sys_exit_write", "sys_exit_write"),
    ("sys_exit_writev", "sys_exit_writev"),
    ("sys_exit_pwrite64", "sys_exit_pwrite64"),
    ("sys_exit_pwritev", "sys_exit_pwritev"),
    ("sys_exit_pwritev2", "sys_exit_pwritev2"),
    ("sys_exit_sendto", "sys_exit_sendto"),
    ("sys_exit_sendmsg", "sys_exit_sendmsg"),
    ("sys_exit_sendmmsg", "sys_exit_sendmmsg"),
];

/// The scheduler raw tracepoints that follow forks, execs and exits, and see writes block.
pub const LIFECYCLE_TRACEPOINTS: [&str; 6] = [
    "sched_process_fork",
    "sched_process_exec",
    "sched_process_exit",
    "sched_switch",
    "signal_generate",
    "signal_deliver",
];

/// The raw tracepoint program on every syscall's exit (`--hook raw`).
const RAW_SYS_EXIT: &str = "raw_sys_exit";

/// Where the write-family exits are seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Hook {
    /// `syscalls:sys_exit_write` and its siblings: only the write family pays for the program
    /// (every other syscall pays the syscall-tracepoint slow path).
    #[default]
    Tracepoint,
    /// `raw_syscalls:sys_exit`: cheaper per write, dearer on every other syscall; it wins only
    /// where writes are a large share of all syscalls.
    Raw,
}

/// The syscall tracepoint that sees a pipe's last reader close it.
const CLOSE_TRACEPOINT: &str = "sys_enter_close";

/// The inspection programs, run on demand and never attached.
const INSPECT_PIPE: &str = "inspect_pipe";
const INSPECT_SOCKET: &str = "inspect_socket";
const INSPECT_PTY: &str = "inspect_pty";
const INSPECT_THREAD: &str = "inspect_thread";

/// Default size of the ring buffer, in bytes (a power of two, a multiple of the page size).
/// (What the benchmark's floor is loaded with; `--ring-buffer` sets the tracer's.)
pub const DEFAULT_RING_BYTES: u32 = 4 << 20;

/// Errors loading and attaching the kernel programs.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "this stdtrace was built without its kernel programs (bpf-linker or the nightly rust-src \
         was missing at build time); run `cargo xtask setup` and rebuild"
    )]
    NotBuilt,
    #[error("loading the kernel programs")]
    Load(#[source] aya::EbpfError),
    #[error("the kernel object has no program {0}")]
    MissingProgram(&'static str),
    #[error("the kernel object has no map {0}")]
    MissingMap(&'static str),
    #[error("loading program {program} (the verifier's log follows)")]
    Verify {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("attaching {what}")]
    Attach {
        what: String,
        #[source]
        source: ProgramError,
    },
    #[error("mapping the blocked-write slots")]
    Blocked(#[source] BlockedError),
    #[error("running the inspection program")]
    Inspect(#[source] ProgramError),
    #[error("using map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// Loads the kernel object with `config` in its read-only data; no program is loaded yet.
fn load_object(config: &TracerConfig, ring_bytes: u32) -> Result<Ebpf, LoadError> {
    if EBPF_OBJECT.is_empty() {
        return Err(LoadError::NotBuilt);
    }
    EbpfLoader::new()
        .override_global("CONFIG", config, true)
        .map_max_entries("EVENTS", ring_bytes)
        .load(EBPF_OBJECT)
        .map_err(LoadError::Load)
}

/// The benchmark's floor: one program on the same hooks as stdtrace's `write` and `sendto`
/// programs that only checks the return value (and, on the raw hook, the syscall number). Detached when dropped.
pub struct Floor {
    _ebpf: Ebpf,
}

impl Floor {
    pub fn attach(config: &TracerConfig, hook: Hook) -> Result<Self, LoadError> {
        let mut ebpf = load_object(config, DEFAULT_RING_BYTES)?;
        match hook {
            Hook::Tracepoint => {
                let program: &mut TracePoint = ebpf
                    .program_mut("floor_exit_write")
                    .and_then(|program| program.try_into().ok())
                    .ok_or(LoadError::MissingProgram("floor_exit_write"))?;
                program.load().map_err(|source| LoadError::Verify {
                    program: "floor_exit_write",
                    source,
                })?;
                // The same program on a send's exit: the floor of the send loads.
                for tracepoint in ["sys_exit_write", "sys_exit_sendto"] {
                    program
                        .attach("syscalls", tracepoint)
                        .map_err(|source| LoadError::Attach {
                            what: format!("tracepoint syscalls/{tracepoint}"),
                            source,
                        })?;
                }
            }
            Hook::Raw => {
                let program: &mut RawTracePoint = ebpf
                    .program_mut("floor_raw_sys_exit")
                    .and_then(|program| program.try_into().ok())
                    .ok_or(LoadError::MissingProgram("floor_raw_sys_exit"))?;
                program.load().map_err(|source| LoadError::Verify {
                    program: "floor_raw_sys_exit",
                    source,
                })?;
                program
                    .attach("sys_exit")
                    .map_err(|source| LoadError::Attach {
                        what: "raw tracepoint sys_exit".to_owned(),
                        source,
                    })?;
            }
        }
        Ok(Self { _ebpf: ebpf })
    }
}

/// The loaded kernel programs and their maps.
pub struct Tracer {
    pub(super) ebpf: Ebpf,
    hook: Hook,
    /// Whether `sys_enter_close` is attached: only once a reader is watched, because any
    /// `sys_enter_*` tracepoint puts every syscall of every task through the tracepoint path.
    close_attached: bool,
    /// The kernel's ids of the maps whose entries are counted (`process_entries`), taken
    /// before other parts of stdtrace take the maps themselves.
    pub(super) map_ids: Vec<(&'static str, u32)>,
}

impl Tracer {
    /// Loads the programs with `config` written into their read-only data. Nothing is attached
    /// yet.
    pub fn load(config: &TracerConfig, ring_bytes: u32, hook: Hook) -> Result<Self, LoadError> {
        let ebpf = load_object(config, ring_bytes)?;
        let map_ids = super::process_entries::COUNTED_MAPS
            .iter()
            .filter_map(|&name| {
                let data = match ebpf.map(name)? {
                    aya::maps::Map::HashMap(data)
                    | aya::maps::Map::PerCpuHashMap(data)
                    | aya::maps::Map::LruHashMap(data)
                    | aya::maps::Map::PerCpuLruHashMap(data) => data,
                    _ => return None,
                };
                Some((name, data.info().ok()?.id()))
            })
            .collect();
        let mut tracer = Tracer {
            ebpf,
            hook,
            close_attached: false,
            map_ids,
        };
        let write_programs = match hook {
            Hook::Tracepoint => WRITE_TRACEPOINTS.map(|(program, _)| program).to_vec(),
            Hook::Raw => Vec::new(),
        };
        for program in write_programs.into_iter().chain([CLOSE_TRACEPOINT]) {
            tracer
                .tracepoint(program)?
                .load()
                .map_err(|source| LoadError::Verify { program, source })?;
        }
        let raw_write = (hook == Hook::Raw).then_some(RAW_SYS_EXIT);
        for program in LIFECYCLE_TRACEPOINTS
            .into_iter()
            .chain([INSPECT_PIPE, INSPECT_SOCKET, INSPECT_PTY, INSPECT_THREAD])
            .chain(raw_write)
        {
            tracer
                .raw_tracepoint(program)?
                .load()
                .map_err(|source| LoadError::Verify { program, source })?;
        }
        Ok(tracer)
    }

    fn tracepoint(&mut self, name: &'static str) -> Result<&mut TracePoint, LoadError> {
        self.ebpf
            .program_mut(name)
            .and_then(|program| program.try_into().ok())
            .ok_or(LoadError::MissingProgram(name))
    }

    fn raw_tracepoint(&mut self, name: &'static str) -> Result<&mut RawTracePoint, LoadError> {
        self.ebpf
            .program_mut(name)
            .and_then(|program| program.try_into().ok())
            .ok_or(LoadError::MissingProgram(name))
    }

    /// Attaches every program. The lifecycle tracepoints go first, so that a target's children
    /// are followed from the moment its writes are watched.
    pub fn attach(&mut self) -> Result<(), LoadError> {
        for name in LIFECYCLE_TRACEPOINTS {
            self.raw_tracepoint(name)?
                .attach(name)
                .map_err(|source| LoadError::Attach {
                    what: format!("raw tracepoint {name}"),
                    source,
                })?;
        }
        if self.hook == Hook::Raw {
            self.raw_tracepoint(RAW_SYS_EXIT)?
                .attach("sys_exit")
                .map_err(|source| LoadError::Attach {
                    what: "raw tracepoint sys_exit".to_owned(),
                    source,
                })?;
        }
        let write_tracepoints = match self.hook {
            Hook::Tracepoint => WRITE_TRACEPOINTS.to_vec(),
            Hook::Raw => Vec::new(),
        };
        for (program, tracepoint) in write_tracepoints {
            self.attach_syscall_tracepoint(program, tracepoint)?;
        }
        Ok(())
    }

    /// Attaches `program` to the tracepoint `syscalls:<tracepoint>`.
    fn attach_syscall_tracepoint(
        &mut self,
        program: &'static str,
        tracepoint: &str,
    ) -> Result<(), LoadError> {
        self.tracepoint(program)?
            .attach("syscalls", tracepoint)
            .map_err(|source| LoadError::Attach {
                what: format!("tracepoint syscalls/{tracepoint}"),
                source,
            })?;
        Ok(())
    }

    /// Attaches the program that sees watched readers close their pipes, the first time one is
    /// watched.
    pub fn attach_close(&mut self) -> Result<(), LoadError> {
        if self.close_attached {
            return Ok(());
        }
        self.attach_syscall_tracepoint(CLOSE_TRACEPOINT, CLOSE_TRACEPOINT)?;
        self.close_attached = true;
        Ok(())
    }

    /// Adds a process to the target set.
    pub fn add_target(&mut self, tgid: u32) -> Result<(), LoadError> {
        let map_error = |source| LoadError::Map {
            map: "TARGETS",
            source,
        };
        let map = self
            .ebpf
            .map_mut("TARGETS")
            .ok_or(LoadError::MissingMap("TARGETS"))?;
        let mut targets: HashMap<_, u32, u32> = HashMap::try_from(map).map_err(map_error)?;
        targets.insert(tgid, 1, 0).map_err(map_error)
    }

    /// Traces every process in the cgroup v2 with this id (a directory's inode number under
    /// the cgroup2 mount) or below it; its level must be one the configuration watches.
    pub fn watch_cgroup(&mut self, id: u64) -> Result<(), LoadError> {
        let map_error = |source| LoadError::Map {
            map: "CGROUPS",
            source,
        };
        let map = self
            .ebpf
            .map_mut("CGROUPS")
            .ok_or(LoadError::MissingMap("CGROUPS"))?;
        let mut cgroups: HashMap<_, u64, u32> = HashMap::try_from(map).map_err(map_error)?;
        cgroups.insert(id, 1, 0).map_err(map_error)
    }

    /// Takes the ring buffer the programs send records through.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, LoadError> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or(LoadError::MissingMap("EVENTS"))?;
        RingBuf::try_from(map).map_err(|source| LoadError::Map {
            map: "EVENTS",
            source,
        })
    }

    /// Takes the map of Go processes (tgid -> where their goroutines are).
    pub fn take_go_processes(&mut self) -> Result<HashMap<MapData, u32, GoLayout>, LoadError> {
        let map = self
            .ebpf
            .take_map("GO_PROCESSES")
            .ok_or(LoadError::MissingMap("GO_PROCESSES"))?;
        HashMap::try_from(map).map_err(|source| LoadError::Map {
            map: "GO_PROCESSES",
            source,
        })
    }

    /// Takes the records of goroutines parked after EAGAIN.
    pub fn take_parked(&mut self) -> Result<ParkedGoroutines, LoadError> {
        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(LoadError::MissingMap(name))
        };
        let parked = HashMap::try_from(take(&mut self.ebpf, "PARKED")?).map_err(|source| {
            LoadError::Map {
                map: "PARKED",
                source,
            }
        })?;
        let flags =
            Array::try_from(take(&mut self.ebpf, "PARKED_PROCESSES")?).map_err(|source| {
                LoadError::Map {
                    map: "PARKED_PROCESSES",
                    source,
                }
            })?;
        // The kernel's `PARKED_ANY` global is its `.bss`, one u64.
        let any = match self.ebpf.take_map(".bss").map(Array::try_from) {
            Some(Ok(any)) => Some(any),
            Some(Err(source)) => {
                return Err(LoadError::Map {
                    map: ".bss",
                    source,
                });
            }
            None => return Err(LoadError::MissingMap(".bss")),
        };
        Ok(ParkedGoroutines::new(parked, flags, any))
    }

    /// Takes the maps of known call paths and their counts.
    pub fn take_call_paths(&mut self) -> Result<CallPaths, LoadError> {
        fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
            ebpf: &mut Ebpf,
            name: &'static str,
        ) -> Result<T, LoadError> {
            let map = ebpf.take_map(name).ok_or(LoadError::MissingMap(name))?;
            T::try_from(map).map_err(|source| LoadError::Map { map: name, source })
        }
        Ok(CallPaths::new(
            take(&mut self.ebpf, "CALL_SITES")?,
            take(&mut self.ebpf, "CALL_SITES_GENERATION")?,
            take(&mut self.ebpf, "FINGERPRINTS")?,
            take(&mut self.ebpf, "SITE_COUNTS")?,
        ))
    }

    /// Takes the slots of writes blocked right now, mapped into this process.
    pub fn take_blocked_slots(&mut self) -> Result<BlockedSlots, LoadError> {
        let map = self
            .ebpf
            .take_map("BLOCKED")
            .ok_or(LoadError::MissingMap("BLOCKED"))?;
        BlockedSlots::map(map).map_err(LoadError::Blocked)
    }

    /// Reads the state of the pipe behind `fd`, one of this process's own descriptors (an
    /// `O_PATH` one reaches the pipe without opening it).
    pub fn inspect_pipe(&mut self, fd: &impl AsRawFd) -> Result<PipeState, LoadError> {
        let mut options = RawTracePointRunOptions::new();
        options.args[0] = fd.as_raw_fd() as u64;
        self.raw_tracepoint(INSPECT_PIPE)?
            .test_run(options)
            .map_err(LoadError::Inspect)?;
        let map = self
            .ebpf
            .map("INSPECTED")
            .ok_or(LoadError::MissingMap("INSPECTED"))?;
        let map_error = |source| LoadError::Map {
            map: "INSPECTED",
            source,
        };
        let inspected: Array<&MapData, PipeState> = Array::try_from(map).map_err(map_error)?;
        inspected.get(&0, 0).map_err(map_error)
    }

    /// Reads the queues and buffers of the socket behind `fd`, one of this process's own
    /// descriptors (an `O_PATH` one reaches the socket's inode without opening it).
    pub fn inspect_socket(&mut self, fd: &impl AsRawFd) -> Result<SocketState, LoadError> {
        let mut options = RawTracePointRunOptions::new();
        options.args[0] = fd.as_raw_fd() as u64;
        self.raw_tracepoint(INSPECT_SOCKET)?
            .test_run(options)
            .map_err(LoadError::Inspect)?;
        let map = self
            .ebpf
            .map("INSPECTED_SOCKET")
            .ok_or(LoadError::MissingMap("INSPECTED_SOCKET"))?;
        let map_error = |source| LoadError::Map {
            map: "INSPECTED_SOCKET",
            source,
        };
        let inspected: Array<&MapData, SocketState> = Array::try_from(map).map_err(map_error)?;
        inspected.get(&0, 0).map_err(map_error)
    }

    /// Tells the pty inspection program where the tty structs keep their members.
    pub fn set_tty_layout(&mut self, layout: &TtyLayout) -> Result<(), LoadError> {
        let map_error = |source| LoadError::Map {
            map: "TTY_LAYOUT",
            source,
        };
        let map = self
            .ebpf
            .map_mut("TTY_LAYOUT")
            .ok_or(LoadError::MissingMap("TTY_LAYOUT"))?;
        let mut array: Array<_, TtyLayout> = Array::try_from(map).map_err(map_error)?;
        array.set(0, layout, 0).map_err(map_error)
    }

    /// Reads the buffers of the pty whose slave is behind `fd`, one of this process's own
    /// descriptors (an `O_PATH` one reaches the slave's dentry without opening the tty).
    pub fn inspect_pty(&mut self, fd: &impl AsRawFd) -> Result<PtyState, LoadError> {
        let mut options = RawTracePointRunOptions::new();
        options.args[0] = fd.as_raw_fd() as u64;
        self.raw_tracepoint(INSPECT_PTY)?
            .test_run(options)
            .map_err(LoadError::Inspect)?;
        let map = self
            .ebpf
            .map("INSPECTED_PTY")
            .ok_or(LoadError::MissingMap("INSPECTED_PTY"))?;
        let map_error = |source| LoadError::Map {
            map: "INSPECTED_PTY",
            source,
        };
        let inspected: Array<&MapData, PtyState> = Array::try_from(map).map_err(map_error)?;
        inspected.get(&0, 0).map_err(map_error)
    }

    /// Reads the state and saved user registers of the thread behind `pidfd` (one of this
    /// process's descriptors, from `pidfd_open`).
    pub fn inspect_thread(&mut self, pidfd: &impl AsRawFd) -> Result<ThreadState, LoadError> {
        let mut options = RawTracePointRunOptions::new();
        options.args[0] = pidfd.as_raw_fd() as u64;
        self.raw_tracepoint(INSPECT_THREAD)?
            .test_run(options)
            .map_err(LoadError::Inspect)?;
        let map = self
            .ebpf
            .map("INSPECTED_THREAD")
            .ok_or(LoadError::MissingMap("INSPECTED_THREAD"))?;
        let map_error = |source| LoadError::Map {
            map: "INSPECTED_THREAD",
            source,
        };
        let inspected: Array<&MapData, ThreadState> = Array::try_from(map).map_err(map_error)?;
        inspected.get(&0, 0).map_err(map_error)
    }

    /// What the kernel remembers of the last reader of pipe `inode`.
    pub fn last_reader_of(&self, inode: u64) -> Result<Option<ReaderGone>, LoadError> {
        let map_error = |source| LoadError::Map {
            map: "LAST_READERS",
            source,
        };
        let map = self
            .ebpf
            .map("LAST_READERS")
            .ok_or(LoadError::MissingMap("LAST_READERS"))?;
        let readers: HashMap<&MapData, u64, ReaderGone> =
            HashMap::try_from(map).map_err(map_error)?;
        match readers.get(&inode, 0) {
            Ok(gone) => Ok(Some(gone)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(err) => Err(map_error(err)),
        }
    }

    /// Asks the kernel to remember when process `pid` lets go of a pipe it reads.
    pub fn watch_reader(&mut self, pid: u32) -> Result<(), LoadError> {
        let map_error = |source| LoadError::Map {
            map: "READER_WATCH",
            source,
        };
        let map = self
            .ebpf
            .map_mut("READER_WATCH")
            .ok_or(LoadError::MissingMap("READER_WATCH"))?;
        let mut watch: HashMap<_, u32, u32> = HashMap::try_from(map).map_err(map_error)?;
        watch.insert(pid, 1, 0).map_err(map_error)
    }

    /// The counters, summed over CPUs, indexed by [`stdtrace_common::counter`].
    pub fn counters(&self) -> Result<[u64; counter::COUNT as usize], LoadError> {
        let map_error = |source| LoadError::Map {
            map: "COUNTERS",
            source,
        };
        let map = self
            .ebpf
            .map("COUNTERS")
            .ok_or(LoadError::MissingMap("COUNTERS"))?;
        let counters: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map).map_err(map_error)?;
        let mut sums = [0u64; counter::COUNT as usize];
        for (index, sum) in sums.iter_mut().enumerate() {
            let per_cpu = counters.get(&(index as u32), 0).map_err(map_error)?;
            *sum = per_cpu.iter().sum();
        }
        Ok(sums)
    }

    /// The exact number of SIGPIPEs raised by writes, per (process, fd), summed over CPUs.
    pub fn sigpipe_counts(&self) -> Result<std::collections::HashMap<(u32, i32), u64>, LoadError> {
        let map_error = |source| LoadError::Map {
            map: "SIGPIPE_COUNTS",
            source,
        };
        let map = self
            .ebpf
            .map("SIGPIPE_COUNTS")
            .ok_or(LoadError::MissingMap("SIGPIPE_COUNTS"))?;
        let counts: PerCpuHashMap<&MapData, u64, u64> =
            PerCpuHashMap::try_from(map).map_err(map_error)?;
        let mut by_fd = std::collections::HashMap::new();
        for entry in counts.iter() {
            let (key, per_cpu) = entry.map_err(map_error)?;
            let process_fd = ((key >> 32) as u32, key as u32 as i32);
            by_fd.insert(process_fd, per_cpu.iter().sum());
        }
        Ok(by_fd)
    }

    /// The exact number of failed writes per (process, fd, errno, syscall), summed over CPUs.
    pub fn failures(&self) -> Result<Vec<(FailureKey, u64)>, LoadError> {
        let map_error = |source| LoadError::Map {
            map: "FAILURES",
            source,
        };
        let map = self
            .ebpf
            .map("FAILURES")
            .ok_or(LoadError::MissingMap("FAILURES"))?;
        let failures: PerCpuHashMap<&MapData, FailureKey, u64> =
            PerCpuHashMap::try_from(map).map_err(map_error)?;
        let mut totals = Vec::new();
        for entry in failures.iter() {
            let (key, per_cpu) = entry.map_err(map_error)?;
            totals.push((key, per_cpu.iter().sum()));
        }
        Ok(totals)
    }
}
