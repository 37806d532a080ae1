//! `stdtrace`: parse the command line, run, print any error once, exit with the right code.

use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use stdtrace::cli::{Cli, Config};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => err.exit(),
        Err(err) => {
            // One line, like every other error: clap's first line without its "error: ".
            let text = err.to_string();
            let first = text.lines().next().unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("stdtrace: {first} (see --help)");
            return ExitCode::from(2);
        }
    };
    let level = match cli.verbose {
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
    let config = Config::from_cli(cli, std::io::stdout().is_terminal(), no_color)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let code = runtime.block_on(stdtrace::session::run(config));
    // A launched command that outlives tracing (`--duration`) still has its waiter blocked in
    // waitpid: leave it, rather than wait for the command to exit.
    runtime.shutdown_background();
    code
}
