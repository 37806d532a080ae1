//! The Go runtime parsers (`stdtrace::goruntime`) on real Go binaries: the writer fixture built
//! by every supported toolchain in every flavour (`cargo xtask go-fixtures`), checked against
//! the binaries' own symbol tables, DWARF and call frame information, and against corrupt
//! inputs. No root needed.

#[path = "support/can_run.rs"]
mod can_run;
#[path = "goruntime/dwarf.rs"]
mod dwarf;
#[path = "goruntime/fixtures.rs"]
mod fixtures;

use std::{fs, path::Path};

use stdtrace::goruntime::{
    GoBinary, GoError, Reason, buildinfo,
    elf::ElfImage,
    is_go_binary,
    offsets::{self, OffsetsSource},
    pclntab::{Frame, Pclntab, PclntabSource},
    tls::{self, TlsSource},
    version::GoVersion,
};

use fixtures::{FLAVOURS, Toolchain, has_cgo, is_stripped, line_of, toolchains, unstripped};

const MODULE: &str = "stdtrace.test/writer";

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
}

fn parse(toolchain: &Toolchain, flavour: &str) -> (Vec<u8>, GoBinary) {
    let path = toolchain.writer(flavour);
    let data = read(&path);
    let go = GoBinary::parse(&data).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    (data, go)
}

/// The fixture's write functions: name, file, and the text of the line declaring them.
fn write_functions(flavour: &str) -> Vec<(&'static str, &'static str, &'static str)> {
    let mut functions = vec![
        (
            "main.writeUntilEAGAIN",
            "main.go",
            "func writeUntilEAGAIN() result",
        ),
        (
            "main.writeViaPollerUntilEAGAIN",
            "main.go",
            "func writeViaPollerUntilEAGAIN() result",
        ),
        (
            "main.writeAfterReaderClosed",
            "main.go",
            "func writeAfterReaderClosed() result",
        ),
    ];
    if has_cgo(flavour) {
        functions.push((
            "main.writeFromCUntilEAGAIN",
            "cgo.go",
            "func writeFromCUntilEAGAIN() result",
        ));
    }
    functions
}

/// A name with what is in square brackets shortened to `...`, as some toolchains' pc-line
/// tables spell generic instantiations (Go 1.19 array types too).
fn shortened(symbol: &str) -> String {
    let mut name = String::new();
    let mut depth = 0;
    for c in symbol.chars() {
        match c {
            '[' => {
                if depth == 0 {
                    name.push_str("[...]");
                }
                depth += 1;
            }
            ']' if depth > 0 => depth -= 1,
            _ if depth == 0 => name.push(c),
            _ => {}
        }
    }
    name
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A copy of an ELF file without section headers, as `sstrip` leaves one.
fn without_section_headers(data: &[u8]) -> Vec<u8> {
    let mut copy = data.to_vec();
    copy[0x28..0x30].fill(0); // e_shoff
    copy[0x3c..0x40].fill(0); // e_shnum, e_shstrndx
    copy
}

#[test]
fn buildinfo_names_the_exact_toolchain_and_module() {
    for toolchain in toolchains() {
        for flavour in FLAVOURS {
            let (data, go) = parse(&toolchain, flavour);
            let what = format!("Go {} {flavour}", toolchain.label);
            assert_eq!(go.build_info.go_version, toolchain.go_version, "{what}");
            assert_eq!(go.build_info.main_path.as_deref(), Some(MODULE), "{what}");
            assert_eq!(go.build_info.main_module.as_deref(), Some(MODULE), "{what}");
            assert_eq!(go.build_info.ptr_size, 8, "{what}");
            let version = go.version.as_ref().expect("a parsed version");
            assert_eq!(version.raw, toolchain.go_version, "{what}");
            assert!(is_go_binary(&data), "{what}");
        }
    }
}

#[test]
fn without_section_headers_everything_is_found_by_scanning() {
    for toolchain in toolchains() {
        for flavour in FLAVOURS {
            let (data, go) = parse(&toolchain, flavour);
            let what = format!("Go {} {flavour}", toolchain.label);
            let bare = without_section_headers(&data);
            let elf = ElfImage::parse(&bare).unwrap();
            assert!(elf.section(".gopclntab").is_none(), "{what}");
            let info = buildinfo::find(&elf).unwrap_or_else(|err| panic!("{what}: {err}"));
            assert_eq!(info.go_version, toolchain.go_version, "{what}");
            assert_eq!(info.address, go.build_info.address, "{what}");

            let scanned = GoBinary::from_elf(&elf).unwrap_or_else(|err| panic!("{what}: {err}"));
            assert_eq!(scanned.pclntab.source(), PclntabSource::Scan, "{what}");
            assert_eq!(scanned.pclntab.address(), go.pclntab.address(), "{what}");
            assert_eq!(
                scanned.pclntab.text_start(),
                go.pclntab.text_start(),
                "{what}"
            );
            assert_eq!(scanned.pclntab.gofunc(), go.pclntab.gofunc(), "{what}");
            assert_eq!(
                scanned.tls.as_ref().map(|slot| slot.offset),
                go.tls.as_ref().map(|slot| slot.offset),
                "{what}"
            );
            let layout = scanned.layout.as_ref().unwrap();
            assert_eq!(
                layout.offsets,
                go.layout.as_ref().unwrap().offsets,
                "{what}"
            );
            let func = scanned
                .pclntab
                .func_by_name("main.writeUntilEAGAIN")
                .unwrap();
            for pc in func.entry..func.end {
                assert_eq!(
                    scanned.pclntab.frames(pc),
                    go.pclntab.frames(pc),
                    "{what} {pc:#x}"
                );
            }
            assert!(is_go_binary(&bare), "{what}");
        }
    }
}

#[test]
fn table_offsets_equal_dwarf_offsets() {
    let toolchains = toolchains();
    for toolchain in &toolchains {
        let data = read(&toolchain.writer("default"));
        let elf = ElfImage::parse(&data).unwrap();
        let from_dwarf =
            offsets::from_dwarf(&elf).unwrap_or_else(|err| panic!("Go {}: {err}", toolchain.label));
        let version = GoVersion::parse(&toolchain.go_version).unwrap();
        let (from_table, source) = offsets::from_table(&version).unwrap();
        assert_eq!(
            source,
            OffsetsSource::Table {
                version: leak(&toolchain.go_version)
            },
            "Go {}: the table has no row for this toolchain; run `cargo xtask go-offsets`",
            toolchain.label
        );
        assert_eq!(from_table, from_dwarf, "Go {}", toolchain.label);

        for flavour in FLAVOURS {
            let (_, go) = parse(toolchain, flavour);
            let layout = go.layout.as_ref().unwrap();
            assert_eq!(
                layout.offsets, from_dwarf,
                "Go {} {flavour}",
                toolchain.label
            );
            let expected_source = if is_stripped(flavour) {
                source.clone()
            } else {
                OffsetsSource::Dwarf
            };
            assert_eq!(
                layout.source, expected_source,
                "Go {} {flavour}",
                toolchain.label
            );
            // runtime.allm: the symbol where there is one; DWARF agrees.
            if !is_stripped(flavour) {
                let allm = *layout.allm.as_ref().unwrap();
                let elf_data = read(&toolchain.writer(flavour));
                let elf = ElfImage::parse(&elf_data).unwrap();
                assert_eq!(Some(allm), elf.symbol("runtime.allm").map(|s| s.address));
            } else {
                assert!(layout.allm.is_err(), "Go {} {flavour}", toolchain.label);
            }
        }
    }
    // Every row of the table comes from a toolchain the tests have (unless skipped).
    if toolchains.len() == 8 {
        for row in offsets::table() {
            assert!(
                toolchains.iter().any(|t| t.go_version == row.go_version),
                "table row {} is for no tested toolchain",
                row.go_version
            );
        }
    }
}

fn leak(text: &str) -> &'static str {
    Box::leak(text.to_owned().into_boxed_str())
}

#[test]
fn versions_without_a_row_get_the_nearest_as_a_guess() {
    let newest = offsets::table().last().unwrap();
    let (_, source) = offsets::from_table(&GoVersion::parse("go1.99.1").unwrap()).unwrap();
    assert_eq!(
        source,
        OffsetsSource::Guess {
            nearest: newest.go_version
        }
    );
    let oldest = offsets::table().first().unwrap();
    let (offsets, source) = offsets::from_table(&GoVersion::parse("go1.16.15").unwrap()).unwrap();
    assert_eq!(
        source,
        OffsetsSource::Guess {
            nearest: oldest.go_version
        }
    );
    assert_eq!(offsets, oldest.offsets);
    // Patch releases share their minor version's row.
    let (_, source) = offsets::from_table(&GoVersion::parse("go1.21.0").unwrap()).unwrap();
    assert!(matches!(source, OffsetsSource::Table { version } if version.starts_with("go1.21.")));
}

#[test]
fn pclntab_agrees_with_the_symbol_table() {
    for toolchain in toolchains() {
        for flavour in FLAVOURS.into_iter().filter(|f| !is_stripped(f)) {
            let (data, go) = parse(&toolchain, flavour);
            let what = format!("Go {} {flavour}", toolchain.label);
            let file = object::File::parse(&*data).unwrap();
            let symbols = dwarf::function_symbols(&file);
            let (start, end) = go.pclntab.text_range().unwrap();
            let mut checked = 0;
            for (name, (address, _)) in &symbols {
                if *address < start || *address >= end {
                    continue;
                }
                let func = go
                    .pclntab
                    .find_func(*address)
                    .unwrap_or_else(|err| panic!("{what}: {name}: {err}"));
                assert_eq!(func.entry, *address, "{what}: {name}");
                // Symbols carry assembly functions' ABI, and write some middle dots as dots.
                let bare = name.strip_suffix(".abi0").unwrap_or(name);
                let ours = func.name.replace('·', ".");
                assert!(
                    ours == bare || ours == shortened(bare),
                    "{what}: {address:#x}: {} is not {name}",
                    func.name
                );
                checked += 1;
            }
            assert!(checked > 1000, "{what}: only {checked} functions checked");
            for (name, _, _) in write_functions(flavour) {
                let (address, size) = symbols[name];
                let func = go.pclntab.func_by_name(name).unwrap();
                assert_eq!(func.entry, address, "{what}: {name}");
                // The table's extent runs to the next function: the symbol's size plus the
                // padding that aligns the next entry.
                let padding = (func.end - func.entry).checked_sub(size);
                assert!(
                    padding.is_some_and(|p| p < 64),
                    "{what}: {name}: {padding:?}"
                );
            }
        }
    }
}

#[test]
fn write_functions_have_their_file_and_declaration_line() {
    for toolchain in toolchains() {
        for flavour in FLAVOURS {
            let (_, go) = parse(&toolchain, flavour);
            let what = format!("Go {} {flavour}", toolchain.label);
            for (name, file, declaration) in write_functions(flavour) {
                let line = line_of(file, declaration);
                let func = go
                    .pclntab
                    .func_by_name(name)
                    .unwrap_or_else(|| panic!("{what}: no {name}"));
                let found = go.pclntab.find_func(func.entry).unwrap();
                assert_eq!(found.name, name, "{what}");
                let (path, entry_line) = go.pclntab.file_line(&func, func.entry).unwrap();
                assert_eq!(basename(&path), file, "{what}: {name}");
                assert!(
                    path.ends_with(&format!("fixtures/go/writer/{file}")),
                    "{what}: {path}"
                );
                assert_eq!(entry_line, line, "{what}: {name}");
                if go.version.as_ref().unwrap().at_least(1, 20) {
                    assert_eq!(func.start_line, Some(line as i32), "{what}: {name}");
                }
                let frames = go.pclntab.frames(func.entry).unwrap();
                assert_eq!(
                    frames,
                    vec![Frame {
                        function: name.to_owned(),
                        file: Some(path),
                        line: Some(line),
                        inlined: false,
                    }],
                    "{what}"
                );
            }
        }
    }
}

#[test]
fn pclntab_matches_dwarf_lines_and_inlined_calls() {
    for toolchain in toolchains() {
        for flavour in FLAVOURS.into_iter().filter(|f| !is_stripped(f)) {
            let (data, go) = parse(&toolchain, flavour);
            let what = format!("Go {} {flavour}", toolchain.label);
            let file = object::File::parse(&*data).unwrap();
            let sections = dwarf::Sections::load(&file);
            let context = sections.addr2line();
            let mut compared = 0;
            let mut inlined = 0;
            for func in go.pclntab.funcs().map(Result::unwrap) {
                if !func.name.starts_with("main.") {
                    continue;
                }
                for pc in dwarf::line_row_addresses(&context, func.entry, func.end) {
                    let mut reference = dwarf::frames(&context, pc);
                    // cgo's generated files are "./_cgo_gotypes.go" in DWARF only.
                    for frame in &mut reference {
                        if let Some(file) = frame.file.take() {
                            frame.file = Some(file.strip_prefix("./").unwrap_or(&file).to_owned());
                        }
                    }
                    let ours = go
                        .pclntab
                        .frames(pc)
                        .unwrap_or_else(|err| panic!("{what}: {pc:#x}: {err}"));
                    let ours: Vec<dwarf::RefFrame> = ours
                        .iter()
                        .map(|frame| dwarf::RefFrame {
                            function: frame.function.clone(),
                            file: frame.file.clone(),
                            line: frame.line,
                        })
                        .collect();
                    assert_eq!(ours, reference, "{what}: {} at {pc:#x}", func.name);
                    compared += 1;
                    inlined += usize::from(ours.len() > 1);
                }
            }
            assert!(compared > 100, "{what}: only {compared} pcs compared");
            assert!(inlined > 10, "{what}: only {inlined} pcs in inlined code");
        }
    }
}

#[test]
fn the_inlined_write_is_reported_as_inlined() {
    for toolchain in toolchains() {
        for flavour in FLAVOURS {
            let (_, go) = parse(&toolchain, flavour);
            let what = format!("Go {} {flavour}", toolchain.label);
            let write_line = line_of("main.go", "MARK:syscall-write");
            for (caller, mark) in [
                ("main.writeUntilEAGAIN", "MARK:eagain-rawWrite"),
                ("main.writeAfterReaderClosed", "MARK:epipe-rawWrite"),
            ] {
                let call_line = line_of("main.go", mark);
                let func = go.pclntab.func_by_name(caller).unwrap();
                let found = (func.entry..func.end).find_map(|pc| {
                    let frames = go.pclntab.frames(pc).ok()?;
                    let at = frames.iter().position(|f| f.function == "main.rawWrite")?;
                    Some((pc, frames, at))
                });
                let (pc, frames, at) =
                    found.unwrap_or_else(|| panic!("{what}: rawWrite is not inlined in {caller}"));
                let outer = frames.last().unwrap();
                assert_eq!(at, frames.len() - 2, "{what}: {pc:#x}: {frames:?}");
                assert!(
                    frames[..frames.len() - 1].iter().all(|f| f.inlined),
                    "{what}: {frames:?}"
                );
                assert!(!outer.inlined, "{what}");
                assert_eq!(outer.function, caller, "{what}");
                assert_eq!(outer.line, Some(call_line), "{what}: {pc:#x}: {frames:?}");
                let raw_write = &frames[at];
                assert_eq!(raw_write.line, Some(write_line), "{what}: {frames:?}");
                assert_eq!(raw_write.file.as_deref().map(basename), Some("main.go"));
            }
        }
    }
}

#[test]
fn sp_deltas_match_dwarf_call_frame_information() {
    for toolchain in toolchains() {
        for flavour in FLAVOURS.into_iter().filter(|f| !is_stripped(f)) {
            let (data, go) = parse(&toolchain, flavour);
            let what = format!("Go {} {flavour}", toolchain.label);
            let file = object::File::parse(&*data).unwrap();
            let sections = dwarf::Sections::load(&file);
            let mut compared = 0;
            for func in go.pclntab.funcs().map(Result::unwrap) {
                if !func.name.starts_with("main.") {
                    continue;
                }
                assert_eq!(
                    go.pclntab.sp_delta(func.entry),
                    Ok(0),
                    "{what}: {}",
                    func.name
                );
                for (start, end, cfa) in sections.cfa_rows(func.entry) {
                    // The CFA is the caller's SP: just above the return address.
                    let expected = u32::try_from(cfa - 8).unwrap();
                    for pc in start..end.min(func.end) {
                        assert_eq!(
                            go.pclntab.sp_delta_in(&func, pc),
                            Ok(expected),
                            "{what}: {} at {pc:#x}",
                            func.name
                        );
                        compared += 1;
                    }
                }
            }
            assert!(compared > 1000, "{what}: only {compared} pcs compared");
        }
    }
}

#[test]
fn stripped_builds_agree_with_unstripped_ones() {
    for toolchain in toolchains() {
        for flavour in FLAVOURS.into_iter().filter(|f| is_stripped(f)) {
            let (_, stripped) = parse(&toolchain, flavour);
            let (_, full) = parse(&toolchain, unstripped(flavour));
            let what = format!("Go {} {flavour}", toolchain.label);
            assert_eq!(
                stripped.pclntab.func_count(),
                full.pclntab.func_count(),
                "{what}"
            );
            for (a, b) in stripped.pclntab.funcs().zip(full.pclntab.funcs()) {
                let (a, b) = (a.unwrap(), b.unwrap());
                assert_eq!(
                    (&a.name, a.end - a.entry, a.start_line, a.flags, a.func_id),
                    (&b.name, b.end - b.entry, b.start_line, b.flags, b.func_id),
                    "{what}"
                );
                if !a.name.starts_with("main.") {
                    continue;
                }
                for offset in 0..a.end - a.entry {
                    let (pa, pb) = (a.entry + offset, b.entry + offset);
                    assert_eq!(
                        stripped.pclntab.frames(pa),
                        full.pclntab.frames(pb),
                        "{what}"
                    );
                    assert_eq!(
                        stripped.pclntab.sp_delta(pa),
                        full.pclntab.sp_delta(pb),
                        "{what}"
                    );
                }
            }
        }
    }
}

#[test]
fn stacks_end_at_goexit_and_mstart() {
    for toolchain in toolchains() {
        for flavour in FLAVOURS {
            let (_, go) = parse(&toolchain, flavour);
            let what = format!("Go {} {flavour}", toolchain.label);
            for name in ["runtime.goexit", "runtime.mstart", "runtime.rt0_go"] {
                let func = go.pclntab.func_by_name(name).unwrap();
                assert!(func.is_outermost(), "{what}: {name}");
                assert!(
                    func.flags.top_frame(),
                    "{what}: {name} has no TOPFRAME flag"
                );
            }
            for name in ["main.main", "runtime.main", "main.writeUntilEAGAIN"] {
                let func = go.pclntab.func_by_name(name).unwrap();
                assert!(!func.is_outermost(), "{what}: {name}");
            }
            let systemstack = go.pclntab.func_by_name("runtime.systemstack").unwrap();
            assert!(systemstack.flags.asm(), "{what}");
        }
    }
}

#[test]
fn the_g_slot_from_code_equals_the_one_from_runtime_tlsg() {
    for toolchain in toolchains() {
        for flavour in FLAVOURS {
            let (data, go) = parse(&toolchain, flavour);
            let what = format!("Go {} {flavour}", toolchain.label);
            let elf = ElfImage::parse(&data).unwrap();
            let from_code = tls::g_tls_offset_from_code(&elf, Some(&go.pclntab))
                .unwrap_or_else(|err| panic!("{what}: {err}"));
            assert!(
                matches!(from_code.source, TlsSource::Code { agreeing, total } if agreeing == total && total > 100),
                "{what}: {from_code:?}"
            );

            let reference_data = read(&toolchain.writer(unstripped(flavour)));
            let reference_elf = ElfImage::parse(&reference_data).unwrap();
            let expected = match tls::g_tls_offset_from_symbols(&reference_elf) {
                Ok(slot) => slot.offset,
                Err(Reason::NoSymbol { .. }) => {
                    // Go's own linker: runtime.tlsg is not in the symbol table, and the slot
                    // is the whole TLS block (if there is one): -8.
                    assert!(!has_cgo(flavour), "{what}: no runtime.tlsg");
                    assert!(
                        reference_elf.tls_segment().is_none_or(|tls| tls.memsz == 8),
                        "{what}"
                    );
                    -8
                }
                Err(err) => panic!("{what}: {err}"),
            };
            assert_eq!(from_code.offset, expected, "{what}");
            // Without the function table every executable byte votes, C code included.
            let unguided = tls::g_tls_offset_from_code(&elf, None)
                .unwrap_or_else(|err| panic!("{what}: {err}"));
            assert_eq!(unguided.offset, expected, "{what}: {unguided:?}");
            assert_eq!(go.tls.as_ref().unwrap().offset, expected, "{what}");
            if !is_stripped(flavour) && has_cgo(flavour) {
                assert_eq!(
                    go.tls.as_ref().unwrap().source,
                    TlsSource::TlsgSymbol,
                    "{what}"
                );
            }
            // The fixture's C thread-locals do move the slot.
            assert_eq!(
                flavour.starts_with("cgo-tls"),
                expected != -8,
                "{what}: {expected}"
            );
        }
    }
}

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
