//! Hostile input: garbage stacks and registers, and ELF files truncated at every length or with
//! bytes flipped. The symbolizer must answer (frames with misses, an end reason), never panic.

use std::{os::unix::fs::MetadataExt, path::Path};

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};
use stdtrace::{
    process::maps::{Backing, Mapping, ProcessMaps},
    symbolize::{MAX_DEPTH, StackCopy, Symbolizer, UserRegisters, register},
};

use crate::{fixtures, snapshot::Snapshot};

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

/// Inlined frames per address are bounded too.
const MAX_FRAMES: usize = MAX_DEPTH * 64;

/// Unwinds random stacks and registers inside a real process's memory map.
pub fn garbage_stacks(snapshot: &Snapshot) {
    let mut random = XorShift(0x2545_f491_4f6c_dd1d);
    let executable: Vec<&Mapping> = snapshot
        .maps
        .mappings
        .iter()
        .filter(|mapping| mapping.executable)
        .collect();
    let mut symbolizer = Symbolizer::new();
    for round in 0..300 {
        let mut stack = snapshot.stack.clone();
        match round % 3 {
            // Random bytes everywhere.
            0 => stack
                .iter_mut()
                .for_each(|byte| *byte = random.next() as u8),
            // Code addresses everywhere: every word looks like a return address.
            1 => {
                for word in stack.chunks_exact_mut(8) {
                    let mapping = executable[random.below(executable.len() as u64) as usize];
                    let address = mapping.start + random.below(mapping.end - mapping.start);
                    word.copy_from_slice(&address.to_le_bytes());
                }
            }
            // The real stack with a few words flipped.
            _ => {
                for _ in 0..8 {
                    let at = random.below(stack.len() as u64) as usize;
                    stack[at] ^= random.next() as u8 | 1;
                }
            }
        }
        let mut registers = snapshot.registers;
        if round % 2 == 1 {
            for number in 0..=register::RIP {
                registers.values[usize::from(number)] = match random.below(4) {
                    0 => None,
                    1 => Some(snapshot.stack_base + random.below(stack.len() as u64 + 64)),
                    2 => Some(random.next()),
                    _ => {
                        let mapping = executable[random.below(executable.len() as u64) as usize];
                        Some(mapping.start + random.below(mapping.end - mapping.start))
                    }
                };
            }
        }
        let copy = StackCopy {
            base: snapshot.stack_base,
            bytes: &stack,
        };
        let named = symbolizer.stack(snapshot.pid, &snapshot.maps, &registers, &copy);
        assert!(named.frames.len() <= MAX_FRAMES);
    }
}

/// The tiny fixture, and the addresses the hostile tests look up in it.
struct Tiny {
    bytes: Vec<u8>,
    /// Where the file is mapped: its lowest segment's address minus that segment's offset.
    base: u64,
    leaf: u64,
    outer: u64,
    start: u64,
    /// File ranges worth corrupting: headers, the section header table, CFI, DWARF, symbols.
    hot_ranges: Vec<(u64, u64)>,
}

fn tiny() -> Tiny {
    let path = fixtures::build_c(
        "symbolize/tiny.c",
        "symbolize-tiny",
        &[
            "-O1",
            "-g",
            "-nostdlib",
            "-static",
            "-fno-pie",
            "-no-pie",
            "-Wl,--build-id",
        ],
    );
    let bytes = std::fs::read(&path).expect("reading the tiny fixture");
    let elf = object::read::elf::ElfFile64::<object::Endianness>::parse(&bytes[..])
        .expect("the tiny fixture parses");
    let symbol = |name: &str| {
        elf.symbols()
            .find(|symbol| symbol.name() == Ok(name))
            .map(|symbol| symbol.address())
            .unwrap_or_else(|| panic!("no {name} in the tiny fixture"))
    };
    let base = elf
        .segments()
        .map(|segment| segment.address() - segment.file_range().0)
        .min()
        .expect("the tiny fixture has segments");
    let mut hot_ranges = vec![(0, 64)];
    let shoff = elf.elf_header().e_shoff.get(object::Endianness::Little);
    hot_ranges.push((shoff, bytes.len() as u64 - shoff));
    for section in elf.sections() {
        let name = section.name().unwrap_or_default();
        if (name.starts_with(".eh_frame")
            || name.starts_with(".debug_")
            || name == ".symtab"
            || name == ".strtab"
            || name.starts_with(".note"))
            && let Some(range) = section.file_range()
        {
            hot_ranges.push(range);
        }
    }
    Tiny {
        base,
        leaf: symbol("leaf"),
        outer: symbol("outer"),
        start: symbol("_start"),
        hot_ranges,
        bytes,
    }
}

impl Tiny {
    /// Writes `bytes` to `path`, maps it at the tiny fixture's base in a made-up memory map of
    /// this process, and unwinds and names a made-up stack in it.
    fn exercise(&self, path: &Path, bytes: &[u8]) -> Option<String> {
        std::fs::write(path, bytes).expect("writing a hostile ELF");
        let inode = std::fs::metadata(path)
            .expect("metadata of the hostile ELF")
            .ino();
        let maps = ProcessMaps {
            pid: std::process::id(),
            mappings: vec![Mapping {
                start: self.base,
                end: self.base + (self.bytes.len() as u64).next_multiple_of(4096),
                offset: 0,
                readable: true,
                writable: false,
                executable: true,
                dev: (0, 0),
                inode,
                backing: Backing::File(path.to_path_buf()),
            }],
        };
        let stack: Vec<u8> = [self.outer + 8, self.start + 8, 0, 0, 0, 0]
            .iter()
            .flat_map(|word| word.to_le_bytes())
            .collect();
        let copy = StackCopy {
            base: 0x7ffd_0000_0000,
            bytes: &stack,
        };
        let registers = UserRegisters::from_ip_sp(self.leaf + 2, copy.base);
        // A fresh symbolizer each time: a cached parse of an earlier variant must not hide this
        // one (the variants can share a size, a build-id, even an mtime).
        let mut symbolizer = Symbolizer::new();
        let stack = symbolizer.stack(maps.pid, &maps, &registers, &copy);
        assert!(stack.frames.len() <= MAX_FRAMES);
        let frames = symbolizer.symbolize(maps.pid, &maps, self.outer + 3, false);
        assert!(!frames.is_empty());
        frames[0].function.clone()
    }
}

fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("stdtrace-symbolize-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a scratch directory");
    dir
}

pub fn truncated_elf_files() {
    let tiny = tiny();
    let dir = scratch_dir("truncated");
    let path = dir.join("tiny");
    // The whole file works: the loop below really exercises the parsers.
    assert_eq!(tiny.exercise(&path, &tiny.bytes).as_deref(), Some("outer"));
    for length in 0..tiny.bytes.len() {
        tiny.exercise(&path, &tiny.bytes[..length]);
    }
    std::fs::remove_dir_all(&dir).expect("removing the scratch directory");
}

pub fn corrupted_elf_files() {
    let tiny = tiny();
    let dir = scratch_dir("corrupted");
    let path = dir.join("tiny");
    // The intact file is symbolized: the corruptions below really reach the parsers.
    assert_eq!(tiny.exercise(&path, &tiny.bytes).as_deref(), Some("outer"));
    let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..3000 {
        let mut bytes = tiny.bytes.clone();
        for _ in 0..1 + random.below(4) {
            let at = if round % 2 == 0 {
                random.below(bytes.len() as u64)
            } else {
                let (start, size) =
                    tiny.hot_ranges[random.below(tiny.hot_ranges.len() as u64) as usize];
                start + random.below(size)
            };
            if let Some(byte) = bytes.get_mut(at as usize) {
                *byte ^= match random.below(3) {
                    0 => 0xff,
                    1 => 1 << random.below(8),
                    _ => random.next() as u8,
                };
            }
        }
        tiny.exercise(&path, &bytes);
    }
    std::fs::remove_dir_all(&dir).expect("removing the scratch directory");
}
