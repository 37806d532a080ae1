//! `stdtrace-floor [tracepoint|raw]`: the benchmark's floor. Attaches one kernel program on the
//! hook stdtrace's write programs use, which only checks the return value, prints
//! `stdtrace-floor: attached` on stderr, and keeps it attached until SIGINT, SIGTERM or the end
//! of its standard input. `cargo xtask bench` compares stdtrace's cost with this one's.

use std::{io::Read, process::ExitCode};

use stdtrace::kernel::{
    btf::{self, Btf},
    loader::{Floor, Hook},
    tracefs,
};
use stdtrace_common::TracerConfig;

fn main() -> ExitCode {
    let hook = match std::env::args().nth(1).as_deref() {
        None | Some("tracepoint") => Hook::Tracepoint,
        Some("raw") => Hook::Raw,
        Some(other) => {
            eprintln!("stdtrace-floor: unknown hook {other:?} (tracepoint or raw)");
            return ExitCode::from(2);
        }
    };
    match run(hook) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("stdtrace-floor: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(hook: Hook) -> anyhow::Result<()> {
    let btf = Btf::from_path(btf::VMLINUX_BTF.as_ref())?;
    let mut config = TracerConfig::INERT;
    config.kernel = btf::kernel_layout(&btf)?;
    tracefs::ensure_mounted()?;
    let _floor = Floor::attach(&config, hook)?;
    eprintln!("stdtrace-floor: attached");
    // Until stdin ends; SIGINT and SIGTERM end the process, which detaches the program.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    Ok(())
}
