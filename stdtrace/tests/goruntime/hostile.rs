//! Hostile input: corrupt tables and binaries give errors, not panics; non-Go files and tables
//! from before Go 1.16 are refused.

use stdtrace::goruntime::{
    GoBinary, GoError, buildinfo, elf::ElfImage, is_go_binary, pclntab::Pclntab,
};

use crate::{fixtures::toolchains, read, without_section_headers};

/// Lookups that must not panic, whatever they return.
fn exercise(table: &Pclntab<'_>, pcs: &[u64]) {
    for pc in pcs {
        let _ = table.frames(*pc);
        let _ = table.sp_delta(*pc);
        if let Ok(func) = table.find_func(*pc) {
            let _ = table.file_line(&func, *pc);
            let _ = table.inline_index(&func, *pc);
        }
    }
}

/// A deterministic pseudo-random sequence (xorshift), so that failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn corrupt_pclntabs_give_errors_not_panics() {
    let toolchains = toolchains();
    // One table of each format: Go 1.19 (1.18 layout) and the newest (1.20 layout).
    let picked = [toolchains.first(), toolchains.last()];
    for toolchain in picked.into_iter().flatten() {
        let data = read(&toolchain.writer("default"));
        let elf = ElfImage::parse(&data).unwrap();
        let (address, table) = elf.section(".gopclntab").unwrap();
        let go = GoBinary::parse(&data).unwrap();
        let text_start = go.pclntab.text_start();
        let whole = Pclntab::parse_bytes(table, address, Some(text_start)).unwrap();
        let writer = whole.func_by_name("main.writeUntilEAGAIN").unwrap();
        let (first, end) = whole.text_range().unwrap();
        let pcs = [
            first,
            writer.entry,
            writer.entry + 40,
            writer.end - 1,
            end - 1,
        ];

        // Every truncation parses or fails cleanly; lookups on those that parse, at every
        // truncation near the start and a sample of the rest, fail cleanly too.
        for len in 0..table.len() {
            let Ok(truncated) = Pclntab::parse_bytes(&table[..len], address, Some(text_start))
            else {
                continue;
            };
            if len < 4096 || len % 97 == 0 || len > table.len() - 4096 {
                exercise(&truncated, &pcs);
            }
        }

        // Random byte flips.
        let mut rng = Rng(0x5eed_0000_0000_0001 ^ table.len() as u64);
        let mut copy = table.to_vec();
        for round in 0..400 {
            copy.copy_from_slice(table);
            for _ in 0..1 + rng.below(8) {
                // Half the flips land in the header and function table, where they matter most.
                let at = if round % 2 == 0 {
                    rng.below(4096.min(copy.len()))
                } else {
                    rng.below(copy.len())
                };
                copy[at] ^= 1 << rng.below(8);
            }
            if let Ok(flipped) = Pclntab::parse_bytes(&copy, address, Some(text_start)) {
                let mut pcs = pcs.to_vec();
                pcs.extend((0..32).map(|_| first + rng.next() % (end - first)));
                exercise(&flipped, &pcs);
                for func in flipped.funcs().take(64) {
                    let _ = func;
                }
            }
        }
    }
}

#[test]
fn corrupt_binaries_give_errors_not_panics() {
    let toolchains = toolchains();
    let Some(toolchain) = toolchains.last() else {
        return;
    };
    for flavour in ["default", "cgo-stripped"] {
        let data = read(&toolchain.writer(flavour));
        // Truncations: every 64 KiB, and every byte around the build information.
        let go = GoBinary::parse(&data).unwrap();
        let elf = ElfImage::parse(&data).unwrap();
        let buildinfo_offset = elf
            .loads()
            .iter()
            .find(|s| s.contains_file_backed(go.build_info.address))
            .map(|s| (go.build_info.address - s.vaddr + s.offset) as usize)
            .unwrap();
        let lengths = (0..data.len())
            .step_by(65536)
            .chain(buildinfo_offset.saturating_sub(64)..buildinfo_offset + 256);
        for len in lengths {
            let _ = GoBinary::parse(&data[..len]);
            let _ = is_go_binary(&data[..len]);
        }
        // Flips in the build information, the ELF and program headers.
        let mut rng = Rng(0xb1d_1f0 ^ data.len() as u64);
        let mut copy = data.clone();
        for _ in 0..60 {
            copy.copy_from_slice(&data);
            for _ in 0..1 + rng.below(4) {
                let at = if rng.below(2) == 0 {
                    buildinfo_offset + rng.below(64)
                } else {
                    rng.below(0x400)
                };
                copy[at] ^= 1 << rng.below(8);
            }
            if let Ok(go) = GoBinary::parse(&copy) {
                exercise(&go.pclntab, &[go.pclntab.text_start()]);
            }
        }
    }
}

#[test]
fn a_non_go_elf_with_the_buildinfo_magic_is_not_go() {
    // A real ELF file that is not Go: the test binary itself.
    let exe = std::env::current_exe().unwrap();
    let mut data = read(&exe);
    assert!(!is_go_binary(&data));
    // Plant a well-formed build information block at a 16-byte-aligned address in a loaded
    // segment.
    let segment = *ElfImage::parse(&data)
        .unwrap()
        .loads()
        .iter()
        .find(|s| !s.executable && s.filesz > 4096)
        .unwrap();
    let mut block = Vec::new();
    block.extend_from_slice(buildinfo::BUILDINFO_MAGIC);
    block.extend_from_slice(&[8, 2]);
    block.resize(32, 0);
    block.push(9);
    block.extend_from_slice(b"go1.22.10");
    block.push(0);
    let vaddr = (segment.vaddr + 1024) & !15;
    let offset = (vaddr - segment.vaddr + segment.offset) as usize;
    data[offset..offset + block.len()].copy_from_slice(&block);

    let elf = ElfImage::parse(&data).unwrap();
    let info = buildinfo::find(&elf).expect("the planted block parses");
    assert_eq!(info.go_version, "go1.22.10");
    assert!(!is_go_binary(&data));
    let err = GoBinary::parse(&data).unwrap_err();
    assert!(matches!(err, GoError::NoPclntab), "{err}");
}

#[test]
fn tables_from_before_go_1_16_are_refused_by_name() {
    // A synthetic Go 1.2–1.15 header: magic, padding, quantum, pointer size, function count.
    let mut header = vec![0xfb, 0xff, 0xff, 0xff, 0, 0, 1, 8];
    header.extend_from_slice(&[0; 64]);
    let err = Pclntab::parse_bytes(&header, 0x1000, None).unwrap_err();
    assert!(
        matches!(err, GoError::TooOld { magic: 0xffff_fffb }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("Go version older than 1.16 not supported"),
        "{err}"
    );

    // A real binary with its table's magic rewritten the same way.
    for toolchain in toolchains().into_iter().take(1) {
        let mut data = read(&toolchain.writer("stripped"));
        let elf = ElfImage::parse(&data).unwrap();
        let section = object::File::parse(&*data)
            .ok()
            .and_then(|file| {
                use object::{Object as _, ObjectSection as _};
                file.section_by_name(".gopclntab")?.file_range()
            })
            .unwrap();
        drop(elf);
        let at = section.0 as usize;
        data[at..at + 4].copy_from_slice(&[0xfb, 0xff, 0xff, 0xff]);
        let err = GoBinary::parse(&data).unwrap_err();
        assert!(err.to_string().contains("older than 1.16"), "{err}");
        // Without the section headers it is found by scanning, and refused the same way.
        let err = GoBinary::parse(&without_section_headers(&data)).unwrap_err();
        assert!(err.to_string().contains("older than 1.16"), "{err}");
    }
}
