//! From a snapshot of a thread's user registers and the top of its stack to named frames:
//! unwinding with `.eh_frame` CFI, or Go's pc-line table in Go code (frame pointers where
//! there is neither), then naming each frame from Go's pc-line table in Go code, else from
//! DWARF (with inlined calls expanded) or the ELF symbol tables.
//!
//! A frame that cannot be named is still reported, with its address, object and offset, and
//! the reason as a [`Miss`]; a walk that stops early says why in [`UnwindEnd`]. Every file read
//! and every stack word is treated as hostile: nothing here panics on a corrupt ELF, bogus CFI,
//! a garbage stack or a process that has gone.
//!
//! One module per source of information: `elf` (segments, sections, build-id, debug links),
//! `symbols` (symbol tables), `dwarf` (addr2line), `cfi` (`.eh_frame`), `unwind` (the walk),
//! `demangle`, `open` (procfs and debug file lookup), `object` and `cache` (what is parsed,
//! and for how long), and `gopclntab` (Go code: names, inlined calls and frame sizes from the
//! binary's own pc-line table, which stripped Go binaries keep).

mod bytes;
mod cache;
mod cfi;
mod demangle;
mod dwarf;
mod elf;
pub mod fuzzing;
mod gopclntab;
mod object;
mod open;
mod symbols;
mod unwind;

use std::{collections::HashMap, fmt, path::PathBuf};

pub use elf::ElfError;
pub use open::OpenObjects;
pub use unwind::{MAX_DEPTH, StackCopy, UnwindEnd, UserRegisters, register};

use crate::{
    goruntime::{GoError, Reason},
    process::maps::{Backing, Mapping, ProcessMaps},
};
use cache::{ObjectCache, ObjectId};
use unwind::{RuleSource, UnwindRules, UnwoundFrame};

/// Why a frame could not be named (or not fully).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Miss {
    /// The process exited before its objects could be opened.
    #[error("the process has exited")]
    ProcessGone,
    /// The address is in no mapping of the process.
    #[error("address not in any mapping")]
    NotMapped,
    /// Anonymous memory: JIT-compiled or otherwise generated code.
    #[error("anonymous memory (JIT or generated code)")]
    Anonymous,
    /// The kernel's virtual shared object.
    #[error("[vdso]")]
    Vdso,
    /// Another kernel-provided mapping (`[vsyscall]`, `[stack]`, ...).
    #[error("kernel-provided mapping {0}")]
    Special(String),
    /// The mapped file could not be opened or read.
    #[error("cannot read {}: {error}", path.display())]
    ObjectUnreadable { path: PathBuf, error: String },
    /// The file now at the mapped path is not the one mapped (an upgraded package, say) and
    /// the mapped one could not be reached through `/proc/PID/map_files`.
    #[error("{} was replaced since it was mapped", path.display())]
    ObjectReplaced { path: PathBuf },
    /// The mapped file is not an ELF object this symbolizer reads.
    #[error("{}: {error}", path.display())]
    BadObject { path: PathBuf, error: ElfError },
    /// The address's file offset is in no loadable segment of the object.
    #[error("file offset {file_offset:#x} is in no loadable segment")]
    OutsideSegments { file_offset: u64 },
    /// Neither DWARF nor a symbol covers the address: a stripped object, or a static function
    /// of a library that exports only its public ones.
    #[error("no symbol covers {object_address:#x} (stripped)")]
    NoSymbol { object_address: u64 },
    /// The object is a Go binary whose pc-line table cannot be used, and nothing else names
    /// the address.
    #[error("unusable Go pc-line table: {0}")]
    BadGoTable(GoError),
    /// Go's pc-line table covers the address but cannot (fully) describe it: the function, or
    /// what was inlined into it and the line.
    #[error("Go pc-line table: {0}")]
    GoLookup(Reason),
}

/// One frame of a stack; inlined calls at an address are frames of their own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Runtime address: the pc for the first frame, the return address for callers (whose code
    /// was looked up at `address - 1`, inside the call).
    pub address: u64,
    /// Demangled function name.
    pub function: Option<String>,
    /// Source file, as DWARF (or Go's pc-line table) names it (usually a full path).
    pub file: Option<String>,
    pub line: Option<u32>,
    /// The mapped file's path as the process sees it.
    pub object: Option<PathBuf>,
    /// `address` as an ELF virtual address inside `object` (what `addr2line -e object` takes).
    pub object_address: Option<u64>,
    /// Expanded from DWARF's or Go's inline info: all frames of an address but its outermost.
    pub inlined: bool,
    /// Why the frame is not (fully) named; `None` when it is.
    pub miss: Option<Miss>,
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x} ", self.address)?;
        match &self.function {
            Some(function) => write!(f, "{function}")?,
            None => write!(f, "??")?,
        }
        if self.inlined {
            write!(f, " (inlined)")?;
        }
        if let Some(file) = &self.file {
            write!(f, " at {file}")?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
        }
        if let Some(object) = &self.object {
            write!(f, " in {}", object.display())?;
            if let Some(offset) = self.object_address {
                write!(f, "+{offset:#x}")?;
            }
        }
        if let Some(miss) = &self.miss {
            write!(f, " [{miss}]")?;
        }
        Ok(())
    }
}

/// A named stack, innermost frame first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stack {
    pub frames: Vec<Frame>,
    /// Why the walk stopped.
    pub end: UnwindEnd,
}

/// Unwinds and names user stacks, keeping what it parsed of each object for the next stacks.
#[derive(Debug, Default)]
pub struct Symbolizer {
    objects: ObjectCache,
    context: Box<cfi::Context>,
}

impl Symbolizer {
    /// A symbolizer that looks for separate debug files under `/usr/lib/debug`.
    pub fn new() -> Self {
        Self::default()
    }

    /// A symbolizer that looks for separate debug files (by build-id, and by
    /// `.gnu_debuglink` path) under each of `debug_dirs` instead; none disables the search
    /// except next to the object itself.
    pub fn with_debug_dirs(debug_dirs: Vec<PathBuf>) -> Self {
        Self {
            objects: ObjectCache::new(debug_dirs),
            context: Box::default(),
        }
    }

    /// Unwinds from `regs` inside `stack`, then names every frame (inlined frames expanded).
    /// `maps` is process `pid`'s memory map, read as close to the snapshot as possible.
    pub fn stack(
        &mut self,
        pid: u32,
        maps: &ProcessMaps,
        regs: &UserRegisters,
        stack: &StackCopy<'_>,
    ) -> Stack {
        self.stack_with(pid, maps, regs, stack, |_| {})
    }

    /// [`Self::stack`], calling `unwound` as soon as the stack is unwound, before any frame is
    /// named (naming may have debug info to load first), with the callers' return addresses
    /// and the stack addresses they were read from (`(stack address, return address)`),
    /// innermost first, up to the first one not read from the stack: what identifies this call
    /// path.
    pub fn stack_with(
        &mut self,
        pid: u32,
        maps: &ProcessMaps,
        regs: &UserRegisters,
        stack: &StackCopy<'_>,
        unwound: impl FnOnce(&[(u64, u64)]),
    ) -> Stack {
        self.objects.trim();
        let mut walk = Walk::new(self, pid, maps);
        let (frames_unwound, end) = unwind::unwind(regs, stack, &mut walk);
        let return_slots: Vec<(u64, u64)> = frames_unwound
            .iter()
            .skip(1)
            .map_while(|frame| Some((frame.slot?, frame.address)))
            .collect();
        unwound(&return_slots);
        let frames = frames_unwound
            .iter()
            .flat_map(|frame| walk.name(frame))
            .collect();
        Stack { frames, end }
    }

    /// Takes in the files `pid` maps, opened earlier ([`OpenObjects::open`]) while the process
    /// was still there: its stacks can then be named after it has exited, even if a file was
    /// deleted. Each object is parsed once, when first adopted or named.
    pub fn adopt(&mut self, pid: u32, maps: &ProcessMaps, objects: &OpenObjects) {
        self.objects.trim();
        for mapping in &maps.mappings {
            if mapping.executable && mapping.path().is_some() {
                // A miss here is reported, with its reason, when a frame falls in the mapping.
                let _ = self.objects.load_from(pid, mapping, Some(objects));
            }
        }
    }

    /// Names the code at `address` of process `pid` without unwinding: `return_address` says
    /// whether it is a return address (then looked up at `address - 1`) or an exact pc.
    pub fn symbolize(
        &mut self,
        pid: u32,
        maps: &ProcessMaps,
        address: u64,
        return_address: bool,
    ) -> Vec<Frame> {
        self.objects.trim();
        let lookup = if return_address {
            address.wrapping_sub(1)
        } else {
            address
        };
        Walk::new(self, pid, maps).name(&UnwoundFrame {
            address,
            lookup,
            slot: None,
        })
    }
}

/// One stack's worth of lookups, remembering which object each mapping resolved to.
struct Walk<'a> {
    objects: &'a mut ObjectCache,
    context: &'a mut cfi::Context,
    pid: u32,
    maps: &'a ProcessMaps,
    resolved: HashMap<(u64, u64), Result<ObjectId, Miss>>,
}

impl<'a> Walk<'a> {
    fn new(symbolizer: &'a mut Symbolizer, pid: u32, maps: &'a ProcessMaps) -> Self {
        Self {
            objects: &mut symbolizer.objects,
            context: &mut symbolizer.context,
            pid,
            maps,
            resolved: HashMap::new(),
        }
    }

    fn object(&mut self, mapping: &Mapping) -> Result<ObjectId, Miss> {
        let (objects, pid) = (&mut *self.objects, self.pid);
        self.resolved
            .entry((mapping.start, mapping.end))
            .or_insert_with(|| objects.load(pid, mapping))
            .clone()
    }

    /// The frames at one unwound address: one per inlined call, or one with a miss.
    fn name(&mut self, frame: &UnwoundFrame) -> Vec<Frame> {
        let mut named = Frame {
            address: frame.address,
            function: None,
            file: None,
            line: None,
            object: None,
            object_address: None,
            inlined: false,
            miss: None,
        };
        let Some(mapping) = self.maps.find(frame.lookup) else {
            named.miss = Some(Miss::NotMapped);
            return vec![named];
        };
        named.object = mapping.path().map(PathBuf::from);
        let miss = match &mapping.backing {
            Backing::Anonymous => Some(Miss::Anonymous),
            Backing::Special(name) if name == "[vdso]" => Some(Miss::Vdso),
            Backing::Special(name) => Some(Miss::Special(name.clone())),
            Backing::File(_) | Backing::Deleted(_) => None,
        };
        if let Some(miss) = miss {
            named.miss = Some(miss);
            return vec![named];
        }
        let object = match self.object(mapping) {
            Ok(id) => self.objects.get_mut(id),
            Err(miss) => {
                named.miss = Some(miss);
                return vec![named];
            }
        };
        let Some(object) = object else {
            // Objects are only evicted between stacks; this is for completeness.
            named.miss = Some(Miss::ObjectUnreadable {
                path: named.object.clone().unwrap_or_default(),
                error: "dropped from the cache".to_owned(),
            });
            return vec![named];
        };
        let file_offset = mapping.file_offset(frame.lookup);
        let Some(vaddr) = object.vaddr(file_offset, mapping.executable) else {
            named.miss = Some(Miss::OutsideSegments { file_offset });
            return vec![named];
        };
        named.object_address = Some(vaddr.wrapping_add(frame.address.wrapping_sub(frame.lookup)));
        let sources = match object.name(vaddr) {
            Ok(sources) => sources,
            // Reported at the frame's own object address, not the one looked up inside the call.
            Err(Miss::NoSymbol { .. }) => {
                named.miss = named
                    .object_address
                    .map(|object_address| Miss::NoSymbol { object_address });
                return vec![named];
            }
            Err(miss) => {
                named.miss = Some(miss);
                return vec![named];
            }
        };
        let count = sources.len();
        sources
            .into_iter()
            .enumerate()
            .map(|(index, source)| Frame {
                miss: source.miss.or_else(|| {
                    source.function.is_none().then_some(Miss::NoSymbol {
                        object_address: named.object_address.unwrap_or(vaddr),
                    })
                }),
                function: source.function,
                file: source.file,
                line: source.line,
                inlined: index + 1 < count,
                ..named.clone()
            })
            .collect()
    }
}

impl RuleSource for Walk<'_> {
    fn rules_for(&mut self, lookup: u64) -> UnwindRules {
        let Some(mapping) = self.maps.find(lookup) else {
            return UnwindRules::NotMapped;
        };
        if mapping.path().is_none() {
            return UnwindRules::NoCfi;
        }
        let Ok(id) = self.object(mapping) else {
            return UnwindRules::NoCfi;
        };
        let file_offset = mapping.file_offset(lookup);
        let executable = mapping.executable;
        let Some(object) = self.objects.get_mut(id) else {
            return UnwindRules::NoCfi;
        };
        match object.vaddr(file_offset, executable) {
            Some(vaddr) => object.unwind_rules(self.context, vaddr),
            None => UnwindRules::NoCfi,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_symbolizer_can_move_between_threads() {
        fn is_send<T: Send>() {}
        is_send::<Symbolizer>();
    }

    #[test]
    fn frames_display_what_is_known() {
        let frame = Frame {
            address: 0x7f00_0000_1234,
            function: Some("emit_line".to_owned()),
            file: Some("/src/blocked_write.c".to_owned()),
            line: Some(17),
            object: Some(PathBuf::from("/usr/bin/app")),
            object_address: Some(0x1234),
            inlined: true,
            miss: None,
        };
        assert_eq!(
            frame.to_string(),
            "0x00007f0000001234 emit_line (inlined) at /src/blocked_write.c:17 in /usr/bin/app+0x1234"
        );
        let unknown = Frame {
            function: None,
            file: None,
            line: None,
            inlined: false,
            miss: Some(Miss::NoSymbol {
                object_address: 0x1234,
            }),
            ..frame
        };
        assert_eq!(
            unknown.to_string(),
            "0x00007f0000001234 ?? in /usr/bin/app+0x1234 [no symbol covers 0x1234 (stripped)]"
        );
    }

    #[test]
    fn a_stack_without_registers_or_mappings_ends_cleanly() {
        let mut symbolizer = Symbolizer::new();
        let maps = ProcessMaps::default();
        let stack = StackCopy {
            base: 0x1000,
            bytes: &[0; 64],
        };
        let empty = symbolizer.stack(1, &maps, &UserRegisters::default(), &stack);
        assert_eq!(empty.frames, vec![]);
        assert_eq!(empty.end, UnwindEnd::NoInstructionPointer);
        let unmapped =
            symbolizer.stack(1, &maps, &UserRegisters::from_ip_sp(0x4000, 0x1000), &stack);
        assert_eq!(unmapped.end, UnwindEnd::NotMapped { address: 0x4000 });
        assert_eq!(unmapped.frames.len(), 1);
        assert_eq!(unmapped.frames[0].miss, Some(Miss::NotMapped));
    }
}
