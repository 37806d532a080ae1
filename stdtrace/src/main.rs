//! `stdtrace`: parse the command line, run, print any error once, exit with the right code.

use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use stdtrace::{
    cli::{Cli, Config, Recording, Subcommand, TraceArgs},
    process::host::{self, HostRoot},
    report::recording::Sink,
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => err.exit(),
        Err(err) => {
            // One line, like every other error: clap's first line without its "error: ",
            // with its suggestions ("a similar argument exists: '--pid'").
            let text = err.to_string();
            let first = text.lines().next().unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            // "the following required arguments were not provided:" lists them below.
            let listed: Vec<&str> = text
                .lines()
                .skip(1)
                .take_while(|line| line.starts_with("  ") && !line.trim().is_empty())
                .map(str::trim)
                .collect();
            let first = if first.ends_with(':') && !listed.is_empty() {
                format!("{first} {}", listed.join(", "))
            } else {
                first.to_owned()
            };
            let tips: Vec<&str> = text
                .lines()
                .filter_map(|line| line.trim().strip_prefix("tip: "))
                .collect();
            let tips = if tips.is_empty() {
                String::new()
            } else {
                format!("; {}", tips.join("; "))
            };
            eprintln!("stdtrace: {first}{tips} (see --help)");
            return ExitCode::from(2);
        }
    };
    init_logging(cli.verbose);
    if let Some(dir) = &cli.host_root {
        let installed = HostRoot::checked(dir).and_then(host::install);
        if let Err(err) = installed {
            eprintln!("stdtrace: {err}");
            return ExitCode::from(2);
        }
    }
    match run(cli) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(err) => {
            eprintln!("stdtrace: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    let terminal = std::io::stdout().is_terminal();
    let (args, recording) = match cli.subcommand {
        None => (cli.trace.args, cli.trace.output.map(Sink::File)),
        Some(Subcommand::Trace(trace)) => (trace.args, trace.output.map(Sink::File)),
        Some(Subcommand::Record(record)) => (
            record.trace,
            Some(Sink::Directory {
                dir: record.output,
                max_size: record.max_size,
                max_files: record.max_files,
            }),
        ),
        Some(Subcommand::Report(report)) => {
            return stdtrace::replay::run(report, terminal, no_color);
        }
        Some(Subcommand::Snapshot(args)) => {
            // Its own exit codes: 0 found, 1 nothing, 2 error.
            return Ok(stdtrace::snapshot::run(args).unwrap_or_else(|err| {
                eprintln!("stdtrace: {err:#}");
                2
            }));
        }
    };
    trace(
        args,
        recording.map(Recording::new),
        cli.verbose,
        terminal,
        no_color,
    )
}

/// `trace` and `record`: one tracing session.
fn trace(
    args: TraceArgs,
    recording: Option<Recording>,
    verbose: u8,
    terminal: bool,
    no_color: bool,
) -> anyhow::Result<i32> {
    let mut config = Config::from_trace(args, recording, terminal, no_color)?;
    config.verbose = verbose;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let code = runtime.block_on(stdtrace::session::run(config));
    // A launched command that outlives tracing (`--duration`) still has its waiter blocked in
    // waitpid: leave it, rather than wait for the command to exit.
    runtime.shutdown_background();
    code
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        2 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .parse_env("STDTRACE_LOG")
        .format_timestamp_millis()
        .init();
}
