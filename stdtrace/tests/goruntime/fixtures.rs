//! The Go fixtures `cargo xtask go-fixtures` builds: `target/fixtures/go/<version>/<flavour>/
//! writer`, one directory per toolchain, with a `toolchain` file naming the Go that built it.
//!
//! A toolchain that is not installed (or whose fixtures are not built) is skipped with a
//! message, unless `CI=true`: then it is a failure (`can_run.rs` decides).

use std::{
    env, fs,
    path::{Path, PathBuf},
};

use crate::can_run::{self, Need};

/// The toolchains `cargo xtask go-fixtures` installs, by fixture directory name, with where
/// each one's `go` is.
const TOOLCHAINS: [&str; 8] = [
    "1.19", "1.21.13", "1.22.10", "1.23.9", "1.24.11", "1.25.5", "1.26.6", "1.27.3",
];

/// Every flavour each fixture is built in (see `xtask/src/go.rs`).
pub const FLAVOURS: [&str; 8] = [
    "default",
    "stripped",
    "pie",
    "cgo",
    "cgo-tls",
    "cgo-stripped",
    "cgo-tls-stripped",
    "cgo-pie",
];

/// One toolchain's fixtures.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// The directory name: `1.19`, `1.25.5`.
    pub label: &'static str,
    /// What the toolchain says it is: `go1.19.8`.
    pub go_version: String,
    dir: PathBuf,
}

impl Toolchain {
    /// The writer fixture in a flavour.
    pub fn writer(&self, flavour: &str) -> PathBuf {
        self.dir.join(flavour).join("writer")
    }
}

/// Whether a flavour has no symbol table (and no DWARF).
pub fn is_stripped(flavour: &str) -> bool {
    flavour.ends_with("stripped")
}

/// Whether a flavour has C code.
pub fn has_cgo(flavour: &str) -> bool {
    flavour.starts_with("cgo")
}

/// The flavour built the same way but with symbols and DWARF.
pub fn unstripped(flavour: &str) -> &str {
    match flavour {
        "stripped" => "default",
        "cgo-stripped" => "cgo",
        "cgo-tls-stripped" => "cgo-tls",
        other => other,
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The Go fixture sources.
pub fn sources() -> PathBuf {
    workspace_root().join("fixtures/go/writer")
}

fn installed(label: &str) -> bool {
    if label == "1.19" {
        return Path::new("/usr/lib/go-1.19/bin/go").is_file();
    }
    env::var_os("HOME")
        .map(|home| {
            PathBuf::from(home)
                .join(".local/share/stdtrace/go")
                .join(label)
                .join("go/bin/go")
                .is_file()
        })
        .unwrap_or(false)
}

/// The toolchains whose fixtures are there to test.
pub fn toolchains() -> Vec<Toolchain> {
    let mut found = Vec::new();
    for label in TOOLCHAINS {
        let dir = workspace_root().join("target/fixtures/go").join(label);
        let problem = if !installed(label) {
            Some(format!("Go {label} is not installed"))
        } else {
            match fs::read_to_string(dir.join("toolchain")) {
                Ok(manifest) => {
                    let go_version = manifest
                        .lines()
                        .find_map(|line| line.strip_prefix("go_version="))
                        .map(str::to_owned);
                    let missing = FLAVOURS
                        .iter()
                        .find(|flavour| !dir.join(flavour).join("writer").is_file());
                    match (go_version, missing) {
                        (Some(go_version), None) => {
                            found.push(Toolchain {
                                label,
                                go_version,
                                dir,
                            });
                            None
                        }
                        (None, _) => Some(format!("{} has no go_version", dir.display())),
                        (_, Some(flavour)) => {
                            Some(format!("the {flavour} fixture of Go {label} is not built"))
                        }
                    }
                }
                Err(_) => Some(format!("the fixtures of Go {label} are not built")),
            }
        };
        if let Some(problem) = problem {
            can_run::cannot_run(
                Need::GoFixtures,
                format_args!("its Go {label} part: {problem}"),
            );
        }
    }
    found
}

/// The line number of the first line of `file` (in the fixture sources) that contains
/// `needle`.
pub fn line_of(file: &str, needle: &str) -> u32 {
    let path = sources().join(file);
    let text =
        fs::read_to_string(&path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
    let index = text
        .lines()
        .position(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} is not in {}", path.display()));
    index as u32 + 1
}
