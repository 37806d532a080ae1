//! `cargo xtask test`: set up, build with the kernel programs, run every test.

use std::process::Command;

use anyhow::{Result, bail};

use crate::{setup, util};

pub fn run(extra: &[String]) -> Result<()> {
    setup::for_tests()?;
    if !util::is_root() {
        let message = "the tests that load the kernel programs need root";
        if std::env::var("CI").as_deref() == Ok("true") {
            bail!("{message}; with CI=true they must run: run `sudo -E cargo xtask test`");
        }
        eprintln!("xtask: {message}; they will be skipped (run as root to include them)");
    }
    // The default members: the kernel crate is built (for the BPF target) by stdtrace's
    // build.rs, and cannot be built for the host.
    util::run(util::cargo().args(["build", "--all-targets"]))?;
    // The library's own unit tests of the symbol caches read fixtures (symbolize-c-nofp,
    // -cpp, -rust) that the symbolize tests build from source, and cargo runs the library's
    // tests first: build them first on a clean checkout.
    util::run(util::cargo().args(["test", "-p", "stdtrace", "--test", "symbolize"]))?;
    let mut cmd = util::cargo();
    cmd.args(["test", "--no-fail-fast"]);
    if !extra.is_empty() {
        cmd.args(extra);
    }
    util::run(&mut cmd)?;
    crate::fuzz::smoke()?;
    util::run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(util::workspace_root())
            .args(["fmt", "--all", "--", "--check"]),
    )
}
