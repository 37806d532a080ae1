//! Hostile input for Go stacks: a stripped Go binary (whose pc-line table is all that names
//! and unwinds its code) with that table truncated, its header fields wrong or its bytes
//! flipped, and garbage goroutine stacks. The symbolizer must answer with frames that carry a
//! name or a reason and a walk that ends with one, never panic.

use std::{os::unix::fs::MetadataExt, path::Path};

use object::{Object, ObjectSection, ObjectSegment};
use stdtrace::{
    goruntime::GoBinary,
    process::maps::{Backing, Mapping, ProcessMaps},
    symbolize::{MAX_DEPTH, Miss, Stack, StackCopy, Symbolizer, UnwindEnd, register},
};

use crate::{
    blocked::{Blocked, Snapshot},
    blocker, dump,
    fixtures::Toolchain,
};

/// Inlined frames per address are bounded too.
const MAX_FRAMES: usize = MAX_DEPTH * 64;

/// A small deterministic generator.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

/// Every frame says what it is or why it is not.
fn assert_frames_are_named_or_explained(stack: &Stack) {
    assert!(stack.frames.len() <= MAX_FRAMES);
    for frame in &stack.frames {
        assert!(
            frame.function.is_some() || frame.miss.is_some(),
            "{frame}\n{}",
            dump(stack)
        );
    }
}

fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "stdtrace-symbolize-go-{name}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("creating a scratch directory");
    dir
}

/// A real snapshot of the stripped blocker, replayed against altered copies of its binary.
struct Replay {
    program: std::path::PathBuf,
    bytes: Vec<u8>,
    snapshot: Snapshot,
    /// The file range of `.gopclntab`, and where its section header's `sh_size` is.
    pclntab: (u64, u64),
    sh_size_at: usize,
    /// The file offset of the function data (`go:func.*`: the inlining trees).
    gofunc: u64,
}

impl Replay {
    fn new(toolchain: &Toolchain) -> Self {
        let program = blocker(toolchain, "stripped");
        let snapshot = Blocked::spawn(&program, "go").snapshot();
        let bytes = std::fs::read(&program).expect("reading the blocker");
        let elf = object::read::elf::ElfFile64::<object::Endianness>::parse(&bytes[..])
            .expect("the blocker parses");
        let section = elf
            .section_by_name(".gopclntab")
            .expect("the stripped blocker keeps .gopclntab");
        let pclntab = section.file_range().expect("the table is in the file");
        let shoff = elf.elf_header().e_shoff.get(object::Endianness::Little);
        let sh_size_at =
            usize::try_from(shoff).expect("a small file") + section.index().0 * 64 + 32;
        let gofunc = GoBinary::parse(&bytes)
            .expect("the blocker is a Go binary")
            .pclntab
            .gofunc()
            .expect("the blocker's function data are found");
        let gofunc = elf
            .segments()
            .find_map(|segment| {
                let into = gofunc.checked_sub(segment.address())?;
                let (offset, size) = segment.file_range();
                (into < size).then_some(offset + into)
            })
            .expect("the function data are in the file");
        Self {
            program: std::fs::canonicalize(&program).expect("the blocker's path"),
            bytes,
            snapshot,
            pclntab,
            sh_size_at,
            gofunc,
        }
    }

    /// Writes `bytes` to `path`, points the snapshot's mappings of the blocker at it, and
    /// unwinds and names the snapshot's stack with a fresh symbolizer (a cached parse of an
    /// earlier variant must not hide this one).
    fn exercise(&self, path: &Path, bytes: &[u8]) -> Stack {
        std::fs::write(path, bytes).expect("writing a hostile Go binary");
        let inode = std::fs::metadata(path).expect("the hostile binary").ino();
        let mappings = self
            .snapshot
            .maps
            .mappings
            .iter()
            .map(|mapping| match mapping.path() {
                Some(mapped) if mapped == self.program => Mapping {
                    inode,
                    backing: Backing::File(path.to_path_buf()),
                    ..mapping.clone()
                },
                _ => mapping.clone(),
            })
            .collect();
        // The process has exited: objects are found by path.
        let maps = ProcessMaps {
            pid: self.snapshot.pid,
            mappings,
        };
        let mut symbolizer = Symbolizer::new();
        let copy = self.snapshot.stack_copy();
        let stack = symbolizer.stack(maps.pid, &maps, &self.snapshot.registers, &copy);
        assert_frames_are_named_or_explained(&stack);
        for frame in &stack.frames {
            let named = symbolizer.symbolize(maps.pid, &maps, frame.address, true);
            assert!(!named.is_empty());
        }
        stack
    }

    /// The bytes with `.gopclntab`'s section header saying it is `size` bytes long.
    fn with_pclntab_size(&self, size: u64) -> Vec<u8> {
        let mut bytes = self.bytes.clone();
        bytes[self.sh_size_at..self.sh_size_at + 8].copy_from_slice(&size.to_le_bytes());
        bytes
    }
}

pub fn corrupt_pclntabs(toolchain: &Toolchain) {
    let replay = Replay::new(toolchain);
    let dir = scratch_dir("pclntab");
    let path = dir.join("blocker");
    let in_binary = |stack: &Stack| -> usize {
        stack
            .frames
            .iter()
            .filter(|frame| frame.object.as_deref() == Some(path.as_path()))
            .count()
    };

    // The intact copy gives the whole stack: the variants below do exercise the table.
    let intact = replay.exercise(&path, &replay.bytes);
    assert_eq!(intact.end, UnwindEnd::Outermost, "{}", dump(&intact));
    assert_eq!(
        intact
            .frames
            .last()
            .and_then(|frame| frame.function.as_deref()),
        Some("runtime.goexit")
    );

    // No table at all: nothing names the code, and the reason says why.
    let (start, size) = replay.pclntab;
    let mut no_magic = replay.bytes.clone();
    no_magic[start as usize..start as usize + 4].fill(0);
    let stack = replay.exercise(&path, &no_magic);
    assert!(
        !stack.frames.is_empty() && !stack.end.is_complete(),
        "{}",
        dump(&stack)
    );
    assert!(in_binary(&stack) > 0, "{}", dump(&stack));
    for frame in stack
        .frames
        .iter()
        .filter(|frame| frame.object.as_deref() == Some(path.as_path()))
    {
        assert!(
            matches!(frame.miss, Some(Miss::BadGoTable(_))),
            "{frame}\n{}",
            dump(&stack)
        );
    }

    // Truncated tables, through the section header's size.
    for cut in 0..64 {
        replay.exercise(&path, &replay.with_pclntab_size(size * cut / 64));
    }

    // Each header word (count, text start, table offsets) set to values that do not fit.
    for word in 0..8u64 {
        for value in [0, 1, u64::from(u32::MAX), u64::MAX, size, size + 1] {
            let mut bytes = replay.bytes.clone();
            let at = (start + 8 + word * 8) as usize;
            bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
            replay.exercise(&path, &bytes);
        }
    }

    // Flipped bytes: in the header and function table, anywhere in the table, and in the
    // function data (the inlining trees).
    let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..400 {
        let mut bytes = replay.bytes.clone();
        for _ in 0..1 + random.below(8) {
            let at = match round % 3 {
                0 => start + random.below(4096.min(size)),
                1 => start + random.below(size),
                _ => replay.gofunc + random.below(start.saturating_sub(replay.gofunc)),
            };
            if let Some(byte) = bytes.get_mut(at as usize) {
                *byte ^= match random.below(3) {
                    0 => 0xff,
                    1 => 1 << random.below(8),
                    _ => random.next() as u8,
                };
            }
        }
        replay.exercise(&path, &bytes);
    }
    std::fs::remove_dir_all(&dir).expect("removing the scratch directory");
}

/// Unwinds random goroutine stacks and registers in a running Go process's memory map: every
/// word a return address into the Go text, random bytes, and the real stack with words
/// flipped.
pub fn garbage_stacks(toolchain: &Toolchain) {
    let blocked = Blocked::spawn(&blocker(toolchain, "default"), "go");
    let snapshot = blocked.snapshot();
    let executable: Vec<&Mapping> = snapshot
        .maps
        .mappings
        .iter()
        .filter(|mapping| mapping.executable)
        .collect();
    let mut random = XorShift(0x2545_f491_4f6c_dd1d);
    let mut symbolizer = Symbolizer::new();
    for round in 0..300 {
        let mut stack = snapshot.stack.clone();
        match round % 3 {
            0 => stack
                .iter_mut()
                .for_each(|byte| *byte = random.next() as u8),
            1 => {
                for word in stack.chunks_exact_mut(8) {
                    let mapping = executable[random.below(executable.len() as u64) as usize];
                    let address = mapping.start + random.below(mapping.end - mapping.start);
                    word.copy_from_slice(&address.to_le_bytes());
                }
            }
            _ => {
                for _ in 0..8 {
                    let at = random.below(stack.len() as u64) as usize;
                    stack[at] ^= random.next() as u8 | 1;
                }
            }
        }
        let mut registers = snapshot.registers;
        if round % 2 == 1 {
            let mapping = executable[random.below(executable.len() as u64) as usize];
            registers.set(
                register::RIP,
                mapping.start + random.below(mapping.end - mapping.start),
            );
            if random.below(2) == 0 {
                registers.set(register::RBP, snapshot.stack_base + random.below(1 << 14));
            }
        }
        let copy = StackCopy {
            base: snapshot.stack_base,
            bytes: &stack,
        };
        let named = symbolizer.stack(snapshot.pid, &snapshot.maps, &registers, &copy);
        assert_frames_are_named_or_explained(&named);
    }
}
