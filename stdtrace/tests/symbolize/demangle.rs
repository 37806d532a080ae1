//! C++ and Rust: names demangled (Rust's without hashes, legacy and v0), inlined methods
//! expanded, with debug info and from the symbol table alone.

use stdtrace::symbolize::{Stack, Symbolizer, UnwindEnd};

use crate::{
    assert_chain, basename, dump, fixtures, marked_line,
    snapshot::{Blocked, Snapshot},
};

#[test]
fn cpp_names_are_demangled_and_inlined_methods_expanded() {
    let program = fixtures::build_with(
        "g++",
        "symbolize/blocked_write.cpp",
        "symbolize-cpp",
        &["-O1", "-g"],
    );
    let blocked = Blocked::spawn(&program);
    let stack = Snapshot::from_syscall(blocked.pid()).symbolize(&mut Symbolizer::new());
    let expected = [
        ("write", false),
        ("ns::Writer::emit_line(int)", false),
        ("ns::Writer::fill(char)", true),
        ("int ns::run<ns::Writer>(ns::Writer&)", false),
        ("main", false),
    ];
    assert_chain(&stack, 0, &expected);
    let markers = [
        "line:emit_line-calls-write",
        "line:fill-calls-emit_line",
        "line:run-calls-fill",
        "line:main-calls-run",
    ];
    for (frame, marker) in stack.frames[1..5].iter().zip(markers) {
        assert_eq!(basename(frame), Some("blocked_write.cpp"), "{frame}");
        assert_eq!(
            frame.line,
            Some(marked_line("blocked_write.cpp", marker)),
            "{frame}"
        );
    }
    assert_eq!(stack.end, UnwindEnd::Outermost, "stack:\n{}", dump(&stack));

    let program = fixtures::build_with(
        "g++",
        "symbolize/blocked_write.cpp",
        "symbolize-cpp-nodebug",
        &["-O1"],
    );
    let blocked = Blocked::spawn(&program);
    let stack = Snapshot::from_syscall(blocked.pid()).symbolize(&mut Symbolizer::new());
    let expected = [
        ("write", false),
        ("ns::Writer::emit_line(int)", false),
        ("int ns::run<ns::Writer>(ns::Writer&)", false),
        ("main", false),
    ];
    assert_chain(&stack, 0, &expected);
}

/// Checks that the Rust fixture's frames appear in order (std's frames in between are not
/// asserted), and returns their indexes.
fn assert_rust_chain(stack: &Stack, expected: &[(&str, bool)]) -> Vec<usize> {
    assert_eq!(
        stack.frames[0].function.as_deref(),
        Some("write"),
        "stack:\n{}",
        dump(stack)
    );
    let mut from = 0;
    let mut found = Vec::new();
    for (name, inlined) in expected {
        let index = stack.frames[from..]
            .iter()
            .position(|frame| frame.function.as_deref() == Some(name))
            .map(|offset| from + offset)
            .unwrap_or_else(|| panic!("no {name} after frame {from} in:\n{}", dump(stack)));
        assert_eq!(
            stack.frames[index].inlined, *inlined,
            "{}",
            stack.frames[index]
        );
        found.push(index);
        from = index + 1;
    }
    // The fixture's own frames follow each other, except for std's between write and them.
    assert!(
        found.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "stack:\n{}",
        dump(stack)
    );
    found
}

#[test]
fn rust_names_are_demangled_without_hashes() {
    let program = fixtures::build_with(
        "rustc",
        "symbolize/blocked_write.rs",
        "symbolize-rust",
        &["-C", "opt-level=1", "-C", "debuginfo=2"],
    );
    let blocked = Blocked::spawn(&program);
    // Rust's std keeps frame pointers: unwinding through it needs rbp, which only the full
    // register set has.
    let Some(snapshot) = Snapshot::from_ptrace(blocked.pid()) else {
        return;
    };
    let stack = snapshot.symbolize(&mut Symbolizer::new());
    let found = assert_rust_chain(
        &stack,
        &[
            ("blocked_write::output::emit_line", false),
            ("blocked_write::output::fill_and_emit", true),
            ("blocked_write::run_writer", false),
            ("blocked_write::main", false),
        ],
    );
    let markers = [
        "line:emit_line-calls-write",
        "line:fill_and_emit-calls-emit_line",
        "line:run_writer-calls-fill_and_emit",
        "line:main-calls-run_writer",
    ];
    for (index, marker) in found.iter().zip(markers) {
        let frame = &stack.frames[*index];
        assert_eq!(basename(frame), Some("blocked_write.rs"), "{frame}");
        assert_eq!(
            frame.line,
            Some(marked_line("blocked_write.rs", marker)),
            "{frame}"
        );
    }
    // std's frames between write and emit_line are named too (std ships line tables).
    assert!(
        stack.frames[1..found[0]]
            .iter()
            .all(|frame| frame.function.is_some())
    );
    assert_eq!(stack.end, UnwindEnd::Outermost, "stack:\n{}", dump(&stack));
}

#[test]
fn rust_without_debug_info_is_named_from_legacy_and_v0_symbols() {
    for (name, flags) in [
        (
            "symbolize-rust-nodebug",
            &["-C", "opt-level=1", "-C", "debuginfo=0"][..],
        ),
        (
            "symbolize-rust-v0",
            &["-C", "opt-level=1", "-C", "symbol-mangling-version=v0"][..],
        ),
    ] {
        let program = fixtures::build_with("rustc", "symbolize/blocked_write.rs", name, flags);
        let blocked = Blocked::spawn(&program);
        let Some(snapshot) = Snapshot::from_ptrace(blocked.pid()) else {
            return;
        };
        let stack = snapshot.symbolize(&mut Symbolizer::new());
        assert_rust_chain(
            &stack,
            &[
                ("blocked_write::output::emit_line", false),
                ("blocked_write::run_writer", false),
                ("blocked_write::main", false),
            ],
        );
        assert_eq!(stack.end, UnwindEnd::Outermost, "{name}:\n{}", dump(&stack));
    }
}
