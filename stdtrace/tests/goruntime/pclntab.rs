//! The pc-line table: functions, files and lines, inlined calls and SP deltas, checked against
//! the symbol table, DWARF and call frame information; stripped builds against unstripped ones.

use stdtrace::goruntime::pclntab::Frame;

use crate::{
    dwarf,
    fixtures::{FLAVOURS, has_cgo, is_stripped, line_of, toolchains, unstripped},
    parse,
};

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
