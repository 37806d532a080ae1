//! The seeds of the fuzz targets: object files built from the C fixtures, the Go fixtures,
//! this machine's procfs files and BTF, and kernel records built to match their layouts.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::util;

/// What seeds are made from: object files built from the C fixtures, the Go fixtures, and
/// procfs files of this system.
pub(super) struct Seeds {
    pub(super) c_objects: Vec<Vec<u8>>,
    pub(super) go_binaries: Vec<(PathBuf, Vec<u8>)>,
    proc_pids: Vec<u32>,
}

impl Seeds {
    pub(super) fn gather() -> Result<Self> {
        Ok(Self {
            c_objects: c_objects()?,
            go_binaries: go_binaries(),
            proc_pids: vec![1, std::process::id()],
        })
    }

    /// `/proc/PID/<file>` of a few processes (and their first thread for `syscall`).
    pub(super) fn proc_files(&self, file: &str) -> Vec<Vec<u8>> {
        let mut paths = Vec::new();
        for pid in &self.proc_pids {
            paths.push(format!("/proc/{pid}/{file}"));
            paths.push(format!("/proc/{pid}/task/{pid}/{file}"));
        }
        paths
            .iter()
            .filter_map(|path| fs::read(path).ok())
            .collect()
    }
}

/// Small objects built from the C fixtures with and without debug info, stripped, with
/// compressed debug sections, and as a shared library; plus this system's `true`.
pub(super) fn c_objects() -> Result<Vec<Vec<u8>>> {
    let root = util::workspace_root();
    let out = root.join("target/fuzz-corpus/objects");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let source = |name: &str| root.join("fixtures/symbolize").join(name);
    let builds: [(&str, &str, &[&str]); 6] = [
        ("tiny-g", "tiny.c", &["-nostdlib", "-O1", "-g"]),
        ("tiny-s", "tiny.c", &["-nostdlib", "-O2", "-s"]),
        ("tiny-gz", "tiny.c", &["-nostdlib", "-O2", "-g", "-gz"]),
        (
            "tiny-nofp",
            "tiny.c",
            &["-nostdlib", "-O2", "-g", "-fomit-frame-pointer"],
        ),
        ("write-g", "blocked_write.c", &["-O1", "-g", "-pthread"]),
        (
            "lib-g.so",
            "stripped_lib.c",
            &["-O2", "-g", "-shared", "-fPIC"],
        ),
    ];
    let mut objects = Vec::new();
    for (name, file, flags) in builds {
        let output = out.join(name);
        let built = output.exists()
            || Command::new("gcc")
                .args(flags)
                .arg(source(file))
                .arg("-o")
                .arg(&output)
                .status()
                .is_ok_and(|status| status.success());
        if built {
            objects
                .push(fs::read(&output).with_context(|| format!("reading {}", output.display()))?);
        } else {
            eprintln!("xtask: could not build the fuzz seed {name} from {file} (no gcc?)");
        }
    }
    objects.extend(fs::read("/usr/bin/true"));
    if objects.is_empty() {
        bail!("no object files to seed the ELF fuzz targets with (is gcc installed?)");
    }
    Ok(objects)
}

/// The smallest build of each Go fixture flavour of two Go versions, from target/fixtures/go
/// (built by `cargo xtask go-fixtures`); none when they are not built.
pub(super) fn go_binaries() -> Vec<(PathBuf, Vec<u8>)> {
    let dir = util::workspace_root().join("target/fixtures/go");
    let mut versions: Vec<PathBuf> = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .collect();
    versions.sort();
    let mut files = Vec::new();
    for version in versions.iter().take(1).chain(versions.iter().rev().take(1)) {
        for flavour in fs::read_dir(version).into_iter().flatten().flatten() {
            let path = flavour.path().join("piper");
            if let Ok(bytes) = fs::read(&path)
                && bytes.len() <= 4 << 20
            {
                files.push((path, bytes));
            }
        }
    }
    if files.is_empty() {
        eprintln!(
            "xtask: no Go fixtures in {}: the Go fuzz targets start from nothing (run `cargo xtask go-fixtures`)",
            dir.display()
        );
    }
    files
}

/// Seeds for the targets whose inputs patch the Go fixtures: for each, the pc to look up (its
/// entry point for a whole binary, 0 for a `.gopclntab`), the fixture's index, and patches that
/// rewrite the pc-line table's header and (in a whole binary) the build information with their
/// own bytes, for the mutations to start from.
pub(super) fn go_patch_seeds(binaries: &[(PathBuf, Vec<u8>)], whole_binary: bool) -> Vec<Vec<u8>> {
    let patch = |offset: usize, bytes: &[u8]| {
        let bytes = &bytes[..bytes.len().min(64)];
        [
            &(offset as u32).to_le_bytes()[..],
            &[bytes.len() as u8],
            bytes,
        ]
        .concat()
    };
    binaries
        .iter()
        .enumerate()
        .map(|(index, (_, file))| {
            let pc = if whole_binary { entry_point(file) } else { 0 };
            let mut seed = [&pc.to_le_bytes()[..], &[index as u8]].concat();
            for name in [".gopclntab", ".go.buildinfo"] {
                let Some((_, bytes)) = elf_section(file, name) else {
                    continue;
                };
                let offset = if whole_binary {
                    bytes.as_ptr() as usize - file.as_ptr() as usize
                } else if name == ".gopclntab" {
                    0
                } else {
                    continue;
                };
                seed.extend(patch(offset, bytes));
            }
            seed
        })
        .collect()
}

/// An ELF file's entry point.
pub(super) fn entry_point(object: &[u8]) -> u64 {
    u64_at(object, 0x18).unwrap_or(0)
}

pub(super) fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

pub(super) fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

pub(super) fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

/// The object prefixed with the address to look up: its entry point.
pub(super) fn address_prefixed(object: &[u8]) -> Vec<u8> {
    [&entry_point(object).to_le_bytes()[..], object].concat()
}

/// Registers (ip at the entry point, sp, bp), a stack of plausible return addresses and frame
/// pointers, then the object: the layout `fuzz_targets/unwind_cfi.rs` reads.
pub(super) fn unwind_seed(object: &[u8]) -> Vec<u8> {
    const SP: u64 = 0x7ffd_0000_0000;
    let entry = entry_point(object);
    let mask: u32 = (1 << 6) | (1 << 7) | (1 << 16);
    let mut registers = [0u64; 17];
    registers[6] = SP + 0x40;
    registers[7] = SP;
    registers[16] = entry;
    let mut stack = Vec::new();
    for index in 0..64u64 {
        let word = match index % 8 {
            0 => SP + (index + 8) * 8,
            1 => entry + 0x20 + index,
            _ => index,
        };
        stack.extend_from_slice(&word.to_le_bytes());
    }
    let mut seed = mask.to_le_bytes().to_vec();
    for register in registers {
        seed.extend_from_slice(&register.to_le_bytes());
    }
    seed.extend_from_slice(&(stack.len() as u16).to_le_bytes());
    seed.extend_from_slice(&stack);
    seed.extend_from_slice(object);
    seed
}

/// The address and bytes of section `name` of a 64-bit little-endian ELF file.
pub(super) fn elf_section<'a>(file: &'a [u8], name: &str) -> Option<(u64, &'a [u8])> {
    let section_headers = usize::try_from(u64_at(file, 0x28)?).ok()?;
    let entry_size = usize::from(u16_at(file, 0x3a)?);
    let count = usize::from(u16_at(file, 0x3c)?);
    let names_index = usize::from(u16_at(file, 0x3e)?);
    let header = |index: usize| section_headers.checked_add(index.checked_mul(entry_size)?);
    let names_offset = usize::try_from(u64_at(file, header(names_index)? + 0x18)?).ok()?;
    (0..count).find_map(|index| {
        let at = header(index)?;
        let name_at = names_offset.checked_add(usize::try_from(u32_at(file, at)?).ok()?)?;
        let found = file.get(name_at..)?;
        let end = found.iter().position(|byte| *byte == 0)?;
        if &found[..end] != name.as_bytes() {
            return None;
        }
        let address = u64_at(file, at + 0x10)?;
        let offset = usize::try_from(u64_at(file, at + 0x18)?).ok()?;
        let size = usize::try_from(u64_at(file, at + 0x20)?).ok()?;
        Some((address, file.get(offset..offset.checked_add(size)?)?))
    })
}

/// The inode of the first entry of a `/proc/net/{tcp,udp}` file.
pub(super) fn first_inode(text: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(text).ok()?;
    text.lines().nth(1)?.split_whitespace().nth(9)?.parse().ok()
}

/// A `sock_diag` reply about a connected unix stream socket with a name, a peer and queues.
pub(super) fn unix_diag_reply(inode: u32) -> Vec<u8> {
    let mut body = vec![1u8, 1, 1, 0]; // AF_UNIX, SOCK_STREAM, established, pad
    body.extend_from_slice(&inode.to_ne_bytes());
    body.extend_from_slice(&[0xff; 8]); // cookie
    let mut attribute = |kind: u16, value: &[u8]| {
        body.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        body.extend_from_slice(&kind.to_ne_bytes());
        body.extend_from_slice(value);
        body.resize(body.len().next_multiple_of(4), 0);
    };
    attribute(0, b"\0abstract-name");
    attribute(2, &4243u32.to_ne_bytes());
    attribute(4, &[0, 0, 0, 0, 0xe8, 0x03, 0, 0]);
    let mut reply = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
    reply.extend_from_slice(&20u16.to_ne_bytes()); // SOCK_DIAG_BY_FAMILY
    reply.extend_from_slice(&[0; 10]); // flags, sequence, port id
    reply.extend_from_slice(&body);
    reply
}

/// One perf record of each kind stdtrace reads (`PERF_RECORD_MMAP2`, `COMM` on exec, `FORK`,
/// `EXIT`, `LOST`), each with its `sample_id` trailer (pid, tid, time).
pub(super) fn perf_records() -> Vec<Vec<u8>> {
    let record = |kind: u32, misc: u16, body: &[u8]| {
        let mut out = kind.to_ne_bytes().to_vec();
        out.extend_from_slice(&misc.to_ne_bytes());
        out.extend_from_slice(&((8 + body.len() + 16) as u16).to_ne_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(&[42, 0, 0, 0, 43, 0, 0, 0]);
        out.extend_from_slice(&999u64.to_ne_bytes());
        out
    };
    let words =
        |values: &[u64]| -> Vec<u8> { values.iter().flat_map(|v| v.to_ne_bytes()).collect() };
    let mut mmap2 = [42u32.to_ne_bytes(), 43u32.to_ne_bytes()].concat();
    mmap2.extend(words(&[0x7f00_0000_1000, 0x2000, 0x1000]));
    mmap2.extend([254u32.to_ne_bytes(), 1u32.to_ne_bytes()].concat());
    mmap2.extend(words(&[77, 0]));
    mmap2.extend([5u32.to_ne_bytes(), 2u32.to_ne_bytes()].concat());
    mmap2.extend_from_slice(b"/usr/lib/libc.so.6\0\0\0\0\0\0");
    let pids = |a: u32, b: u32, c: u32, d: u32| {
        let mut body: Vec<u8> = [a, b, c, d].iter().flat_map(|v| v.to_ne_bytes()).collect();
        body.extend_from_slice(&7u64.to_ne_bytes());
        body
    };
    vec![
        record(10, 0, &mmap2),
        record(10, 0x4000, &mmap2),
        record(3, 0x2000, b"*\0\0\0*\0\0\0cat\0\0\0\0\0"),
        record(7, 0, &pids(50, 42, 50, 42)),
        record(4, 0, &pids(50, 42, 50, 42)),
        record(2, 0, &words(&[1, 12])),
    ]
}

/// x86_64 `struct pt_regs` offsets in the order `RegsLayout` keeps them, then a record of each
/// kind the kernel programs send (its kind word, then a pattern for the fields).
pub(super) fn ring_records() -> Vec<Vec<u8>> {
    const PT_REGS: [u32; 17] = [
        80, 96, 88, 40, 104, 112, 32, 152, 72, 64, 56, 48, 24, 16, 8, 0, 128,
    ];
    let layout: Vec<u8> = PT_REGS.iter().flat_map(|v| v.to_le_bytes()).collect();
    (1u32..=6)
        .map(|kind| {
            let mut seed = layout.clone();
            seed.extend_from_slice(&kind.to_le_bytes());
            seed.extend((0..252u32).map(|index| (index % 7) as u8));
            seed
        })
        .collect()
}

/// The running kernel's BTF cut down to its first 64 KiB of types and of strings (with the
/// header's lengths to match), and the smallest module BTF files.
pub(super) fn btf_blobs() -> Vec<Vec<u8>> {
    let mut blobs = Vec::new();
    if let Ok(vmlinux) = fs::read("/sys/kernel/btf/vmlinux")
        && let Some(cut) = cut_btf(&vmlinux, 64 << 10)
    {
        blobs.push(cut);
    }
    let mut modules: Vec<(u64, PathBuf)> = fs::read_dir("/sys/kernel/btf")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name() != "vmlinux")
        .filter_map(|entry| Some((entry.metadata().ok()?.len(), entry.path())))
        .collect();
    modules.sort();
    blobs.extend(
        modules
            .iter()
            .take(3)
            .filter_map(|(_, path)| fs::read(path).ok()),
    );
    blobs
}

pub(super) fn cut_btf(btf: &[u8], keep: u32) -> Option<Vec<u8>> {
    let header_len = u32_at(btf, 4)?;
    let (type_off, type_len) = (u32_at(btf, 8)?, u32_at(btf, 12)?);
    let (str_off, str_len) = (u32_at(btf, 16)?, u32_at(btf, 20)?);
    let section = |offset: u32, len: u32| {
        let start = usize::try_from(header_len.checked_add(offset)?).ok()?;
        btf.get(start..start + usize::try_from(len.min(keep)).ok()?)
    };
    let types = section(type_off, type_len)?;
    let strings = section(str_off, str_len)?;
    // Whole type records only would need parsing them; a cut record is one more hostile case.
    let mut out = btf.get(..usize::try_from(header_len).ok()?)?.to_vec();
    out[8..12].copy_from_slice(&0u32.to_le_bytes());
    out[12..16].copy_from_slice(&(types.len() as u32).to_le_bytes());
    out[16..20].copy_from_slice(&(types.len() as u32).to_le_bytes());
    out[20..24].copy_from_slice(&(strings.len() as u32).to_le_bytes());
    out.extend_from_slice(types);
    out.extend_from_slice(strings);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_btf_keeps_its_header_consistent() {
        let mut btf = vec![0x9f, 0xeb, 1, 0];
        btf.extend_from_slice(&24u32.to_le_bytes());
        for word in [0u32, 8, 8, 4] {
            btf.extend_from_slice(&word.to_le_bytes());
        }
        btf.extend_from_slice(&[1; 8]);
        btf.extend_from_slice(b"\0ab\0");
        let cut = cut_btf(&btf, 4).unwrap();
        assert_eq!(cut.len(), 24 + 4 + 4);
        assert_eq!(u32_at(&cut, 12), Some(4));
        assert_eq!(u32_at(&cut, 16), Some(4));
        assert_eq!(&cut[28..], b"\0ab\0");
    }
}
