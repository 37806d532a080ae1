//! Golden tests of `stdtrace::symbolize` on fixtures built from source (`fixtures/symbolize/`).
//!
//! Each fixture fills a pipe nobody reads and then blocks inside `write()`. The test takes the
//! snapshot the kernel side would take (registers, memory map, the top of the stack) from
//! procfs, or with ptrace for the full register set, and checks the named stack: exact function
//! names in order, source files and lines from DWARF, inlined frames, demangled C++ and Rust.
//! No root needed; children are killed by pid (through their `Child`) when a test ends.

#[path = "support/can_run.rs"]
mod can_run;
#[path = "symbolize/demangle.rs"]
mod demangle;
#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "symbolize/hostile.rs"]
mod hostile;
#[path = "symbolize/snapshot.rs"]
mod snapshot;

use std::path::{Path, PathBuf};

use snapshot::{Blocked, Snapshot};
use stdtrace::symbolize::{Frame, Miss, Stack, Symbolizer, UnwindEnd, register};

/// The C fixture's call chain, innermost first.
const C_CHAIN: [&str; 5] = ["write", "emit_line", "fill_and_emit", "run_writer", "main"];

fn build_c(name: &str, flags: &[&str]) -> PathBuf {
    fixtures::build_c("symbolize/blocked_write.c", name, flags)
}

/// The 1-based line of `fixtures/symbolize/<source>` that carries `marker`.
fn marked_line(source: &str, marker: &str) -> u32 {
    let path = fixtures::workspace_root()
        .join("fixtures/symbolize")
        .join(source);
    let text = std::fs::read_to_string(&path).expect("reading the fixture source");
    let index = text
        .lines()
        .position(|line| line.contains(marker))
        .unwrap_or_else(|| panic!("no {marker} in {}", path.display()));
    u32::try_from(index + 1).expect("a short file")
}

/// The stack as text, for assertion messages.
fn dump(stack: &Stack) -> String {
    let mut text: String = stack
        .frames
        .iter()
        .map(|frame| format!("  {frame}\n"))
        .collect();
    text.push_str(&format!("  end: {}", stack.end));
    text
}

fn names(stack: &Stack) -> Vec<&str> {
    stack
        .frames
        .iter()
        .map(|frame| frame.function.as_deref().unwrap_or("??"))
        .collect()
}

fn basename(frame: &Frame) -> Option<&str> {
    Path::new(frame.file.as_deref()?).file_name()?.to_str()
}

/// Checks the frames of `stack` from `start` on against `expected` (function, inlined).
fn assert_chain(stack: &Stack, start: usize, expected: &[(&str, bool)]) {
    let actual: Vec<(&str, bool)> = stack
        .frames
        .iter()
        .skip(start)
        .take(expected.len())
        .map(|frame| (frame.function.as_deref().unwrap_or("??"), frame.inlined))
        .collect();
    assert_eq!(actual, expected, "stack:\n{}", dump(stack));
}

/// The index of the first frame named `function`.
fn position(stack: &Stack, function: &str) -> usize {
    stack
        .frames
        .iter()
        .position(|frame| frame.function.as_deref() == Some(function))
        .unwrap_or_else(|| panic!("no {function} in:\n{}", dump(stack)))
}

/// Checks the C chain with DWARF: names, inlining, files and lines, and that the fixture's
/// frames are in `program` (as the process's memory map names it).
fn assert_c_chain_with_dwarf(stack: &Stack, program: &Path, depth: usize) {
    let expected: Vec<(&str, bool)> = C_CHAIN
        .iter()
        .take(depth)
        .map(|name| (*name, *name == "fill_and_emit"))
        .collect();
    assert_chain(stack, 0, &expected);
    let markers = [
        "line:emit_line-calls-write",
        "line:fill_and_emit-calls-emit_line",
        "line:run_writer-calls-fill_and_emit",
        "line:main-calls-run_writer",
    ];
    let program = std::fs::canonicalize(program).unwrap_or_else(|_| program.to_path_buf());
    for (frame, marker) in stack.frames[1..depth].iter().zip(markers) {
        let line = marked_line("blocked_write.c", marker);
        assert_eq!(basename(frame), Some("blocked_write.c"), "{frame}");
        assert_eq!(frame.line, Some(line), "{frame} should be at {marker}");
        assert_eq!(frame.object.as_deref(), Some(program.as_path()), "{frame}");
        assert!(
            frame.object_address.is_some() && frame.miss.is_none(),
            "{frame}"
        );
    }
    // The inlined frame and the one containing it share the return address.
    if depth >= 4 {
        assert_eq!(stack.frames[2].address, stack.frames[3].address);
    }
}

#[test]
fn c_without_frame_pointers_unwinds_to_start_from_ip_and_sp_alone() {
    let program = build_c("symbolize-c-nofp", &["-O1", "-g", "-fomit-frame-pointer"]);
    let blocked = Blocked::spawn(&program);
    let snapshot = Snapshot::from_syscall(blocked.pid());
    let stack = snapshot.symbolize(&mut Symbolizer::new());
    assert_c_chain_with_dwarf(&stack, &program, 5);
    // main's caller is in libc; the walk goes on to _start, whose CFI ends the stack.
    assert_eq!(stack.end, UnwindEnd::Outermost, "stack:\n{}", dump(&stack));
    assert_eq!(
        names(&stack).last(),
        Some(&"_start"),
        "stack:\n{}",
        dump(&stack)
    );
    let write = &stack.frames[0];
    assert!(
        write
            .object
            .as_ref()
            .is_some_and(|path| path.to_string_lossy().contains("libc"))
    );
    assert_eq!(write.address, snapshot.registers.ip().unwrap_or_default());
}

#[test]
fn c_with_frame_pointers_from_ip_and_sp_names_the_caller_of_write() {
    let program = build_c("symbolize-c-fp", &["-O1", "-g", "-fno-omit-frame-pointer"]);
    let blocked = Blocked::spawn(&program);
    let stack = Snapshot::from_syscall(blocked.pid()).symbolize(&mut Symbolizer::new());
    // emit_line's CFA is rbp-based after its prologue, and /proc/PID/syscall has no rbp.
    assert_c_chain_with_dwarf(&stack, &program, 2);
    assert_eq!(stack.frames.len(), 2, "stack:\n{}", dump(&stack));
    assert!(
        matches!(
            stack.end,
            UnwindEnd::RegisterUnknown {
                register: register::RBP,
                ..
            }
        ),
        "stack:\n{}",
        dump(&stack)
    );
    assert!(stack.end.describe_if_early().is_some());
}

#[test]
fn c_with_frame_pointers_and_all_registers_unwinds_to_start() {
    let program = build_c("symbolize-c-fp", &["-O1", "-g", "-fno-omit-frame-pointer"]);
    let blocked = Blocked::spawn(&program);
    let Some(snapshot) = Snapshot::from_ptrace(blocked.pid()) else {
        return;
    };
    assert!(snapshot.registers.bp().is_some());
    let stack = snapshot.symbolize(&mut Symbolizer::new());
    assert_c_chain_with_dwarf(&stack, &program, 5);
    assert_eq!(stack.end, UnwindEnd::Outermost, "stack:\n{}", dump(&stack));
    assert_eq!(stack.end.describe_if_early(), None);
    assert_eq!(names(&stack).last(), Some(&"_start"));
}

#[test]
fn c_without_debug_info_is_named_from_the_symbol_table() {
    let program = build_c("symbolize-c-nodebug", &["-O1", "-fomit-frame-pointer"]);
    let blocked = Blocked::spawn(&program);
    let stack = Snapshot::from_syscall(blocked.pid()).symbolize(&mut Symbolizer::new());
    // Without DWARF the inlined call is invisible.
    let expected = [
        ("write", false),
        ("emit_line", false),
        ("run_writer", false),
        ("main", false),
    ];
    assert_chain(&stack, 0, &expected);
    assert!(
        stack.frames[1..4]
            .iter()
            .all(|frame| frame.file.is_none() && frame.line.is_none())
    );
    assert_eq!(stack.end, UnwindEnd::Outermost, "stack:\n{}", dump(&stack));
}

#[test]
fn stripped_c_frames_are_misses_with_their_offsets() {
    let program = build_c(
        "symbolize-c-stripped",
        &["-O1", "-s", "-fomit-frame-pointer"],
    );
    let blocked = Blocked::spawn(&program);
    let stack = Snapshot::from_syscall(blocked.pid()).symbolize(&mut Symbolizer::new());
    assert_eq!(
        stack.frames[0].function.as_deref(),
        Some("write"),
        "stack:\n{}",
        dump(&stack)
    );
    let program = std::fs::canonicalize(&program).expect("canonical fixture path");
    let ours: Vec<&Frame> = stack
        .frames
        .iter()
        .filter(|frame| frame.object.as_deref() == Some(program.as_path()))
        .collect();
    // emit_line, run_writer, main and _start: none named, none attributed to a neighbour.
    assert_eq!(ours.len(), 4, "stack:\n{}", dump(&stack));
    for frame in ours {
        assert_eq!(frame.function, None, "{frame}");
        let object_address = frame.object_address.expect("an object address");
        assert_eq!(
            frame.miss,
            Some(Miss::NoSymbol { object_address }),
            "{frame}"
        );
    }
    // Stripping keeps .eh_frame: the walk still reaches _start.
    assert_eq!(stack.end, UnwindEnd::Outermost, "stack:\n{}", dump(&stack));
}

#[test]
fn a_static_function_of_a_stripped_library_is_not_named_after_its_neighbour() {
    let library = fixtures::build_c(
        "symbolize/stripped_lib.c",
        "symbolize-stripped-lib",
        &["-O1", "-shared", "-fPIC", "-s", "-fno-toplevel-reorder"],
    );
    let library_arg = library.to_str().expect("a UTF-8 fixture path");
    let program = fixtures::build_c(
        "symbolize/stripped_lib_main.c",
        "symbolize-stripped-lib-main",
        &["-O1", "-Wl,--no-as-needed", library_arg],
    );
    let blocked = Blocked::spawn(&program);
    let stack = Snapshot::from_syscall(blocked.pid()).symbolize(&mut Symbolizer::new());
    let library = std::fs::canonicalize(&library).expect("canonical library path");
    // write <- static_helper (static, stripped: no name) <- exported_api <- main.
    assert_eq!(
        names(&stack)[..4],
        ["write", "??", "exported_api", "main"],
        "stack:\n{}",
        dump(&stack)
    );
    let helper = &stack.frames[1];
    assert_eq!(helper.object.as_deref(), Some(library.as_path()));
    let object_address = helper.object_address.expect("an object address");
    assert_eq!(helper.miss, Some(Miss::NoSymbol { object_address }));
    // exported_api's call to the helper is its last instruction: the return address is the
    // helper's first byte, and only the lookup at `address - 1` finds exported_api.
    assert_eq!(stack.frames[2].object.as_deref(), Some(library.as_path()));
    assert_eq!(stack.end, UnwindEnd::Outermost, "stack:\n{}", dump(&stack));
}

#[test]
fn code_without_cfi_is_unwound_through_its_frame_pointers() {
    // -g alone would still describe the frames in .debug_frame, which the unwinder does not
    // read; .eh_frame has nothing for the fixture's own functions.
    let program = build_c(
        "symbolize-c-fp-nocfi",
        &[
            "-O1",
            "-g",
            "-fno-omit-frame-pointer",
            "-fno-asynchronous-unwind-tables",
            "-fno-unwind-tables",
        ],
    );
    let blocked = Blocked::spawn(&program);
    let Some(snapshot) = Snapshot::from_ptrace(blocked.pid()) else {
        return;
    };
    let stack = snapshot.symbolize(&mut Symbolizer::new());
    assert_c_chain_with_dwarf(&stack, &program, 5);
    // From main's frame, libc's CFI takes over again, up to _start.
    assert_eq!(stack.end, UnwindEnd::Outermost, "stack:\n{}", dump(&stack));
    assert_eq!(names(&stack).last(), Some(&"_start"));

    // Without rbp there is nothing to go on.
    let stack = Snapshot::from_syscall(blocked.pid()).symbolize(&mut Symbolizer::new());
    assert_eq!(
        names(&stack),
        ["write", "emit_line"],
        "stack:\n{}",
        dump(&stack)
    );
    assert!(
        matches!(stack.end, UnwindEnd::NoUnwindInfo { .. }),
        "stack:\n{}",
        dump(&stack)
    );
}

#[test]
fn without_debug_files_libc_is_named_from_its_dynamic_symbols() {
    let program = build_c("symbolize-c-nofp", &["-O1", "-g", "-fomit-frame-pointer"]);
    let blocked = Blocked::spawn(&program);
    let snapshot = Snapshot::from_syscall(blocked.pid());
    let stack = snapshot.symbolize(&mut Symbolizer::with_debug_dirs(Vec::new()));
    assert_c_chain_with_dwarf(&stack, &program, 5);
    assert_eq!(stack.end, UnwindEnd::Outermost, "stack:\n{}", dump(&stack));
    assert_eq!(stack.frames[0].file, None, "stack:\n{}", dump(&stack));
    // What lies between main and _start in libc is either exported (and named) or reported.
    for frame in &stack.frames[5..stack.frames.len() - 1] {
        match &frame.function {
            Some(name) => assert!(name.starts_with("__libc_start"), "{frame}"),
            None => assert!(matches!(frame.miss, Some(Miss::NoSymbol { .. })), "{frame}"),
        }
    }
}

#[test]
fn position_dependent_executables_have_object_addresses_equal_to_runtime_ones() {
    let program = build_c(
        "symbolize-c-nopie",
        &["-O1", "-g", "-fno-pie", "-no-pie", "-fomit-frame-pointer"],
    );
    let blocked = Blocked::spawn(&program);
    let stack = Snapshot::from_syscall(blocked.pid()).symbolize(&mut Symbolizer::new());
    assert_c_chain_with_dwarf(&stack, &program, 5);
    for frame in &stack.frames[1..5] {
        assert_eq!(frame.object_address, Some(frame.address), "{frame}");
    }
    // In a PIE the same code is relocated: object addresses are small file-relative ones.
    let pie = build_c("symbolize-c-nofp", &["-O1", "-g", "-fomit-frame-pointer"]);
    let blocked = Blocked::spawn(&pie);
    let stack = Snapshot::from_syscall(blocked.pid()).symbolize(&mut Symbolizer::new());
    let emit_line = &stack.frames[position(&stack, "emit_line")];
    assert_ne!(emit_line.object_address, Some(emit_line.address));
    assert!(
        emit_line
            .object_address
            .is_some_and(|address| address < 0x10_0000)
    );
}

#[test]
fn one_symbolizer_serves_several_processes_and_stacks() {
    let program = build_c("symbolize-c-nofp", &["-O1", "-g", "-fomit-frame-pointer"]);
    let mut symbolizer = Symbolizer::new();
    let first = Blocked::spawn(&program);
    let second = Blocked::spawn(&program);
    let one = Snapshot::from_syscall(first.pid()).symbolize(&mut symbolizer);
    let two = Snapshot::from_syscall(second.pid()).symbolize(&mut symbolizer);
    let again = Snapshot::from_syscall(first.pid()).symbolize(&mut symbolizer);
    assert_eq!(names(&one), names(&two));
    assert_eq!(one, again);
    assert_c_chain_with_dwarf(&two, &program, 5);
}

#[test]
fn a_deleted_binary_is_named_through_map_files_or_reported() {
    let original = build_c("symbolize-c-nofp", &["-O1", "-g", "-fomit-frame-pointer"]);
    let dir =
        std::env::temp_dir().join(format!("stdtrace-symbolize-deleted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a temporary directory");
    let dir = std::fs::canonicalize(&dir).expect("canonical temporary directory");
    // A space in the name, as paths in /proc/PID/maps may have.
    let copy = dir.join("deleted writer");
    std::fs::copy(&original, &copy).expect("copying the fixture");
    let blocked = Blocked::spawn(&copy);
    let snapshot = Snapshot::from_syscall(blocked.pid());
    std::fs::remove_dir_all(&dir).expect("deleting the copy");

    let stack = snapshot.symbolize(&mut Symbolizer::new());
    let executable = snapshot
        .maps
        .mappings
        .iter()
        .find(|mapping| mapping.path() == Some(copy.as_path()) && mapping.executable)
        .expect("the copy is mapped");
    let map_files = format!(
        "/proc/{}/map_files/{:x}-{:x}",
        blocked.pid(),
        executable.start,
        executable.end
    );
    if std::fs::File::open(&map_files).is_ok() {
        assert_c_chain_with_dwarf(&stack, &copy, 5);
        assert_eq!(stack.end, UnwindEnd::Outermost, "stack:\n{}", dump(&stack));
    } else {
        // Without CAP_SYS_ADMIN the deleted file is out of reach: a miss, not a panic.
        assert_eq!(stack.frames[0].function.as_deref(), Some("write"));
        let emit_line = &stack.frames[1];
        assert_eq!(emit_line.object.as_deref(), Some(copy.as_path()));
        assert!(
            matches!(emit_line.miss, Some(Miss::ObjectUnreadable { .. })),
            "stack:\n{}",
            dump(&stack)
        );
    }

    // Once the process is gone, nothing reaches the deleted file any more.
    drop(blocked);
    let stack = snapshot.symbolize(&mut Symbolizer::new());
    assert_eq!(
        stack.frames[0].function.as_deref(),
        Some("write"),
        "stack:\n{}",
        dump(&stack)
    );
    assert_eq!(
        stack.frames[1].miss,
        Some(Miss::ProcessGone),
        "stack:\n{}",
        dump(&stack)
    );
}

#[test]
fn garbage_stacks_and_missing_processes_do_not_panic() {
    let program = build_c("symbolize-c-nofp", &["-O1", "-g", "-fomit-frame-pointer"]);
    let blocked = Blocked::spawn(&program);
    let snapshot = Snapshot::from_syscall(blocked.pid());
    hostile::garbage_stacks(&snapshot);
    // A pid that does not exist, with its map: files are found by path or reported.
    let mut gone = snapshot.clone();
    gone.pid = u32::MAX - 7;
    let stack = gone.symbolize(&mut Symbolizer::new());
    assert!(!stack.frames.is_empty());
}

#[test]
fn truncated_elf_files_do_not_panic() {
    hostile::truncated_elf_files();
}

#[test]
fn corrupted_elf_files_do_not_panic() {
    hostile::corrupted_elf_files();
}
