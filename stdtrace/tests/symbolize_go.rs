//! Go stacks named and unwound by `stdtrace::symbolize`: the `blocker` fixture (`fixtures/go/
//! blocker`) built by every supported toolchain in every flavour (`cargo xtask go-fixtures`)
//! blocks a goroutine in write(2) on a full pipe; the test takes the snapshot the kernel side
//! would (pc and sp from `/proc/PID/task/TID/syscall`, the memory map, 16 KiB of stack) and
//! checks the named stack: every frame from the system call wrapper to `runtime.goexit`,
//! inlined calls, files and lines, in binaries with and without symbols, PIE and cgo. With cgo
//! the fixture also blocks in write(2) from C, whose stack crosses from C into Go on the
//! thread's system stack. Corrupt Go binaries give frames with reasons, never a panic.
//!
//! No root needed. A toolchain whose fixtures are missing is skipped, unless `CI=true`.
//! Children are killed by pid (through their `Child`) when a test ends.

#[path = "symbolize_go/blocked.rs"]
mod blocked;
#[path = "support/can_run.rs"]
mod can_run;
#[path = "symbolize_go/curg.rs"]
mod curg;
#[path = "goruntime/fixtures.rs"]
#[allow(
    dead_code,
    reason = "shared with the goruntime tests, which use all of it"
)]
mod fixtures;
#[path = "symbolize_go/hostile.rs"]
mod hostile;

use std::path::{Path, PathBuf};

use blocked::Blocked;
use can_run::Need;
use fixtures::Toolchain;
use stdtrace::{
    goruntime::version::GoVersion,
    symbolize::{Frame, Miss, Stack, Symbolizer, UnwindEnd},
};

/// The flavours whose goroutine stacks are checked.
const GO_FLAVOURS: [&str; 8] = [
    "default",
    "stripped",
    "pie",
    "cgo",
    "cgo-tls",
    "cgo-stripped",
    "cgo-tls-stripped",
    "cgo-pie",
];

/// The flavours with a C writer.
const C_FLAVOURS: [&str; 5] = [
    "cgo",
    "cgo-tls",
    "cgo-stripped",
    "cgo-tls-stripped",
    "cgo-pie",
];

/// The blocker fixture of a toolchain, in a flavour.
pub fn blocker(toolchain: &Toolchain, flavour: &str) -> PathBuf {
    toolchain.writer(flavour).with_file_name("blocker")
}

/// Every toolchain whose blocker fixtures are built (the others are skipped, or fail under
/// `CI=true`: `can_run.rs`).
pub fn toolchains() -> Vec<Toolchain> {
    fixtures::toolchains()
        .into_iter()
        .filter(|toolchain| {
            GO_FLAVOURS
                .iter()
                .all(|flavour| can_run::require(Need::GoFixture(&blocker(toolchain, flavour))))
        })
        .collect()
}

/// The 1-based line of `fixtures/go/blocker/<file>` that carries `marker`.
fn marked_line(file: &str, marker: &str) -> u32 {
    let path = fixtures::workspace_root()
        .join("fixtures/go/blocker")
        .join(file);
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

fn chain(frames: &[Frame]) -> Vec<(&str, bool)> {
    frames
        .iter()
        .map(|frame| (frame.function.as_deref().unwrap_or("??"), frame.inlined))
        .collect()
}

/// The package of the assembly function that makes system calls.
fn syscall6(version: &GoVersion) -> &'static str {
    match version.minor_release() {
        (1, minor) if minor < 23 => "runtime/internal/syscall.Syscall6",
        (1, minor) if minor < 26 => "internal/runtime/syscall.Syscall6",
        _ => "internal/runtime/syscall/linux.Syscall6",
    }
}

/// The goroutine's frames, innermost first, with whether each is inlined.
fn go_chain(version: &GoVersion) -> Vec<(&'static str, bool)> {
    vec![
        (syscall6(version), false),
        ("syscall.RawSyscall6", false),
        ("syscall.Syscall", false),
        ("syscall.write", false),
        ("syscall.Write", true),
        ("internal/poll.ignoringEINTRIO", true),
        ("internal/poll.(*FD).Write", false),
        ("os.(*File).write", true),
        ("os.(*File).Write", false),
        ("main.emit", false),
        ("main.blockedWriter", false),
        ("runtime.goexit", false),
    ]
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn is_blocker_main(frame: &Frame) -> bool {
    frame
        .file
        .as_deref()
        .is_some_and(|file| file.ends_with("fixtures/go/blocker/main.go"))
}

/// Checks the stack of the goroutine blocked in `main.emit`, and names the go statement that
/// started it.
fn check_goroutine(toolchain: &Toolchain, flavour: &str, symbolizer: &mut Symbolizer) {
    let program = blocker(toolchain, flavour);
    let version = GoVersion::parse(&toolchain.go_version).expect("a go1.N version");
    let blocked = Blocked::spawn(&program, "go");
    // Goroutine 1 runs main.main; the writer is another.
    assert!(blocked.goroutine > 1, "goroutine={}", blocked.goroutine);
    let snapshot = blocked.snapshot();
    let stack = snapshot.symbolize(symbolizer);
    let context = format!("Go {} {flavour}:\n{}", toolchain.label, dump(&stack));

    assert_eq!(chain(&stack.frames), go_chain(&version), "{context}");
    assert_eq!(stack.end, UnwindEnd::Outermost, "{context}");
    let program = canonical(&program);
    for frame in &stack.frames {
        assert_eq!(frame.miss, None, "{frame}\n{context}");
        assert!(frame.file.is_some() && frame.line.is_some(), "{frame}");
        assert_eq!(frame.object.as_deref(), Some(program.as_path()), "{frame}");
        assert!(frame.object_address.is_some(), "{frame}");
    }
    // An inlined call shares its address with the frame it was inlined into.
    for pair in stack.frames.windows(2) {
        if pair[0].inlined {
            assert_eq!(pair[0].address, pair[1].address, "{context}");
        }
    }
    let emit = &stack.frames[9];
    let writer = &stack.frames[10];
    assert!(
        is_blocker_main(emit) && is_blocker_main(writer),
        "{context}"
    );
    assert_eq!(
        emit.line,
        Some(marked_line("main.go", "MARK:emit-calls-Write"))
    );
    assert_eq!(
        writer.line,
        Some(marked_line("main.go", "MARK:blockedWriter-calls-emit"))
    );
    // A return address names the call, as the stack does.
    assert_eq!(
        symbolizer.symbolize(snapshot.pid, &snapshot.maps, emit.address, true),
        vec![emit.clone()],
        "{context}"
    );

    // What a report's "created by" line needs: the go statement, from g.gopc.
    let created_by = symbolizer.symbolize(snapshot.pid, &snapshot.maps, blocked.gopc, true);
    assert_eq!(chain(&created_by), vec![("main.main", false)], "{context}");
    assert!(is_blocker_main(&created_by[0]), "{:?}", created_by[0]);
    assert_eq!(
        created_by[0].line,
        Some(marked_line("main.go", "MARK:go-blockedWriter")),
        "{}",
        created_by[0]
    );
}

#[test]
fn goroutines_blocked_in_write_unwind_to_goexit_with_every_frame_named() {
    for toolchain in toolchains() {
        // One symbolizer for all flavours: objects are cached by identity, not by path.
        let mut symbolizer = Symbolizer::new();
        for flavour in GO_FLAVOURS {
            check_goroutine(&toolchain, flavour, &mut symbolizer);
        }
    }
}

/// Checks the stack of the thread blocked in write(2) from C: libc, the fixture's C function
/// and cgo's wrapper, then `runtime.asmcgocall`, where the walk must stop: the goroutine that
/// called C is on another stack.
fn check_c_writer(toolchain: &Toolchain, flavour: &str) {
    let program = blocker(toolchain, flavour);
    let blocked = Blocked::spawn(&program, "c");
    let snapshot = blocked.snapshot();
    let stack = snapshot.symbolize(&mut Symbolizer::new());
    let context = format!(
        "Go {} {flavour} (C writer):\n{}",
        toolchain.label,
        dump(&stack)
    );

    // libc's write, with whatever it inlines when libc has debug info.
    let write = stack
        .frames
        .iter()
        .position(|frame| frame.function.as_deref() == Some("write") && !frame.inlined)
        .unwrap_or_else(|| panic!("no write in {context}"));
    let program = canonical(&program);
    let ours = &stack.frames[write + 1..];
    assert_eq!(ours.len(), 3, "{context}");
    assert!(
        ours.iter()
            .all(|frame| frame.object.as_deref() == Some(program.as_path())),
        "{context}"
    );
    let is_wrapper = |frame: &Frame| {
        frame.function.as_deref().is_some_and(|name| {
            name.starts_with("_cgo_") && name.ends_with("_Cfunc_stdtrace_c_emit")
        })
    };
    if flavour.ends_with("stripped") {
        // The C part keeps no symbols but what the dynamic symbol table exports (cgo's
        // wrapper, with some toolchains); Go's table still names the Go side.
        assert!(
            matches!(ours[0].miss, Some(Miss::NoSymbol { .. })),
            "{context}"
        );
        assert!(
            is_wrapper(&ours[1]) || matches!(ours[1].miss, Some(Miss::NoSymbol { .. })),
            "{context}"
        );
    } else {
        assert_eq!(
            ours[0].function.as_deref(),
            Some("stdtrace_c_emit"),
            "{context}"
        );
        assert_eq!(
            ours[0].line,
            Some(marked_line("cgo.go", "MARK:c_emit-calls-write")),
            "{context}"
        );
        assert!(is_wrapper(&ours[1]), "{context}");
    }
    let asmcgocall = &ours[2];
    assert_eq!(
        asmcgocall.function.as_deref(),
        Some("runtime.asmcgocall"),
        "{context}"
    );
    assert_eq!(asmcgocall.miss, None, "{context}");
    assert_eq!(
        stack.end,
        UnwindEnd::StackSwitch {
            address: asmcgocall.address,
            function: "runtime.asmcgocall".to_owned(),
        },
        "{context}"
    );

    // The goroutine's half, from a second snapshot where it entered the call.
    let binary = std::fs::read(&program).expect("reading the blocker");
    let Some(goroutine) = curg::calling_goroutine(blocked.pid(), blocked.tid, &binary) else {
        return;
    };
    let stack = goroutine.symbolize(&mut Symbolizer::new());
    let context = format!(
        "Go {} {flavour} (C writer's goroutine):\n{}",
        toolchain.label,
        dump(&stack)
    );
    assert_eq!(
        chain(&stack.frames),
        vec![
            ("runtime.cgocall", false),
            ("main._Cfunc_stdtrace_c_emit", false),
            ("main.blockedCWriter", false),
            ("runtime.goexit", false),
        ],
        "{context}"
    );
    assert_eq!(stack.end, UnwindEnd::Outermost, "{context}");
    assert_eq!(
        stack.frames[2].line,
        Some(marked_line("cgo.go", "MARK:blockedCWriter-calls-C")),
        "{context}"
    );
}

#[test]
fn writes_from_c_unwind_into_go_up_to_the_stack_switch() {
    for toolchain in toolchains() {
        for flavour in C_FLAVOURS {
            check_c_writer(&toolchain, flavour);
        }
    }
}

#[test]
fn corrupt_pclntabs_give_frames_with_reasons() {
    let Some(toolchain) = toolchains().into_iter().last() else {
        return;
    };
    hostile::corrupt_pclntabs(&toolchain);
}

#[test]
fn garbage_goroutine_stacks_do_not_panic() {
    let Some(toolchain) = toolchains().into_iter().next() else {
        return;
    };
    hostile::garbage_stacks(&toolchain);
}
