//! `cargo xtask demo`: stdtrace on a real writer that hits EPIPE and EAGAIN.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::{setup, util};

pub fn run(json: bool) -> Result<()> {
    setup::for_build()?;
    let stdtrace = util::build_release()?;
    let root = util::workspace_root();
    let out_dir = root.join("target/fixtures");
    std::fs::create_dir_all(&out_dir).context("creating target/fixtures")?;
    let writer = out_dir.join("demo-writer");
    util::run(
        Command::new("gcc")
            .args(["-O1", "-g", "-o"])
            .arg(&writer)
            .arg(root.join("fixtures/demo/writer.c")),
    )?;

    let mut cmd = if util::is_root() {
        Command::new(&stdtrace)
    } else {
        eprintln!("xtask: stdtrace needs root; running it with sudo");
        let mut sudo = Command::new("sudo");
        sudo.arg(&stdtrace);
        sudo
    };
    if json {
        cmd.args(["--format", "json"]);
    }
    cmd.arg("--").arg(&writer);
    eprintln!("xtask: running {cmd:?}");
    let status = cmd.status().context("starting stdtrace")?;
    if !status.success() {
        bail!("stdtrace exited with {status}");
    }
    Ok(())
}
