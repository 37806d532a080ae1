//! Whether a test can run here: the one place that decides, for every test that needs root, the
//! Go fixtures or ptrace.
//!
//! The rule: a test that cannot run here fails under `CI=true` (a green run that tested nothing
//! is a defect), and is otherwise skipped with a line on stderr saying why and how to fix it.

#![allow(
    dead_code,
    reason = "each test binary uses its own part of the support code"
)]

use std::{fmt::Display, path::Path};

/// Something a test needs that a machine may not give it.
#[derive(Debug, Clone, Copy)]
pub enum Need<'a> {
    /// Root, to load the kernel programs.
    Root,
    /// A file `cargo xtask go-fixtures` makes: a Go toolchain's `go`, a fixture, its manifest.
    GoFixture(&'a Path),
    /// Go toolchains or fixtures, found missing by the caller's own checks.
    GoFixtures,
    /// ptrace of the test's own children, found not permitted by the caller's own attempt.
    Ptrace,
    /// A program `cargo xtask setup` installs from Debian's packages (podman, containerd,
    /// rsyslogd, ...).
    Program(&'a Path),
}

impl Need<'_> {
    /// What would make the need met.
    fn remedy(self) -> &'static str {
        match self {
            Need::Root => "run the tests as root",
            Need::GoFixture(_) | Need::GoFixtures => "run `cargo xtask go-fixtures`",
            Need::Program(_) => "run `cargo xtask setup` as root",
            Need::Ptrace => {
                "allow ptrace of the tests' own children: no seccomp rule against it, Yama scope 0 or 1"
            }
        }
    }
}

/// Whether `need` is met here. When it is not, applies the rule ([`cannot_run`]) and returns
/// false: the test then returns. [`Need::GoFixtures`] and [`Need::Ptrace`] are found unmet by
/// the caller's own checks, who then calls [`cannot_run`] itself.
pub fn require(need: Need<'_>) -> bool {
    let unmet = match need {
        // SAFETY: geteuid has no preconditions.
        Need::Root => (unsafe { libc::geteuid() } != 0)
            .then(|| "needs root to load the kernel programs".to_owned()),
        Need::GoFixture(path) => (!path.exists()).then(|| format!("{} is missing", path.display())),
        Need::Program(path) => {
            (!path.exists()).then(|| format!("{} is not installed", path.display()))
        }
        Need::GoFixtures | Need::Ptrace => {
            panic!("require cannot check {need:?}: check it, then call cannot_run when unmet")
        }
    };
    match unmet {
        Some(why) => {
            cannot_run(need, why);
            false
        }
        None => true,
    }
}

/// The rule, for a need found unmet (`why` says how): panics under `CI=true`, else prints that
/// the running test is skipped, and returns.
pub fn cannot_run(need: Need<'_>, why: impl Display) {
    // The test harness names each test's thread after the test.
    let current = std::thread::current();
    let test = current.name().unwrap_or("a test");
    let remedy = need.remedy();
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: cannot run here: {why} ({remedy}); CI=true forbids skipping");
    }
    eprintln!("skipping {test}: {why} ({remedy})");
}
