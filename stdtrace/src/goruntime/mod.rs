//! What a Go binary says about its runtime, read from the file alone: which Go built it
//! ([`buildinfo`]), its functions, lines, inlined calls and frame sizes ([`pclntab`]), where
//! the runtime keeps goroutine and thread fields ([`offsets`]), and where the running
//! goroutine's `g` is in thread-local storage ([`tls`]). Together they let the kernel side
//! say which goroutine made a write, and the symbolizer name Go frames in stripped binaries.
//!
//! For the kernel side, the goroutine that made a system call is found on amd64 as
//! `g = *(fs_base + tls.offset)`, `m = *(g + g.m)`, `curg = *(m + m.curg)`: `curg` is `g` itself
//! when Go code made the call, and the goroutine that called C when C code did (C runs on the
//! thread's `g0`). Its id is the 8 bytes at `curg + g.goid`. Every offset comes from
//! [`GoBinary`].
//!
//! Every parser treats the file as hostile: a truncated or corrupt input gives a [`GoError`]
//! (the binary cannot be used) or a [`Reason`] (one answer is unknown), never a panic.

pub mod buildinfo;
pub mod elf;
pub mod moduledata;
pub mod offsets;
mod offsets_table;
pub mod pclntab;
pub mod pcvalue;
mod table_bytes;
pub mod tls;
pub mod version;

pub use self::table_bytes::SharedBytes;

use self::{
    buildinfo::BuildInfo,
    elf::ElfImage,
    offsets::RuntimeLayout,
    pclntab::{Pclntab, PclntabHints},
    tls::TlsSlot,
    version::GoVersion,
};

/// Why a file cannot be used as a Go binary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoError {
    #[error("reading the ELF file: {0}")]
    Elf(String),
    #[error("not a Go binary: no Go build information")]
    NoBuildInfo,
    #[error("corrupt Go build information {0}")]
    BadBuildInfo(String),
    #[error("no Go pc-line table (.gopclntab) found")]
    NoPclntab,
    #[error("Go version older than 1.16 not supported (pclntab magic {magic:#010x})")]
    TooOld { magic: u32 },
    #[error("Go version older than 1.16 not supported ({version})")]
    TooOldVersion { version: String },
    #[error("corrupt Go pc-line table: {0}")]
    BadPclntab(String),
    #[error(
        "cannot tell where the Go text starts (no text start in the pc-line table, no runtime.text symbol, no runtime.firstmoduledata)"
    )]
    UnknownTextStart,
    #[error("not a Go binary: {0}")]
    NotGo(&'static str),
}

/// Why one answer about a Go binary is unknown (a miss, not a failure of the whole binary).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("pc {pc:#x} is outside the Go text")]
    PcOutsideText { pc: u64 },
    #[error("corrupt {what}")]
    Corrupt { what: &'static str },
    #[error("no {what} table")]
    NoTable { what: &'static str },
    #[error("the {what} table does not cover pc {pc:#x}")]
    NotCovered { what: &'static str, pc: u64 },
    #[error("the base of function data (go:func.*) is unknown")]
    NoGofunc,
    #[error("the inlining tree is outside the data kept")]
    NoInlineTree,
    #[error("runtime.firstmoduledata not found")]
    NoModuledata,
    #[error("no DWARF")]
    NoDwarf,
    #[error("{what} not found in DWARF")]
    NotInDwarf { what: &'static str },
    #[error("no runtime offsets for this Go version")]
    NoOffsets,
    #[error("no {name} symbol")]
    NoSymbol { name: &'static str },
    #[error("no usable PT_TLS segment")]
    NoTlsSegment,
    #[error("no access to the g slot found in the runtime's code")]
    NoTlsAccess,
    #[error("the runtime's accesses to thread-local storage disagree ({agreeing} of {total})")]
    AmbiguousTlsAccess { agreeing: usize, total: usize },
    #[error("only x86-64 is supported")]
    UnsupportedArch,
}

/// Everything read from one Go binary.
#[derive(Debug, Clone)]
pub struct GoBinary {
    pub build_info: BuildInfo,
    /// The toolchain version, parsed (`None` for an unusual version string).
    pub version: Option<GoVersion>,
    pub pclntab: Pclntab<'static>,
    /// `g`/`m` field offsets and `runtime.allm`.
    pub layout: Result<RuntimeLayout, Reason>,
    /// Where the running `g` is in thread-local storage.
    pub tls: Result<TlsSlot, Reason>,
}

impl GoBinary {
    /// Reads a Go binary from the bytes of its file.
    pub fn parse(data: &[u8]) -> Result<GoBinary, GoError> {
        GoBinary::from_elf(&ElfImage::parse(data)?)
    }

    /// Reads a Go binary from a parsed ELF file.
    pub fn from_elf(elf: &ElfImage<'_>) -> Result<GoBinary, GoError> {
        let build_info = buildinfo::find(elf)?;
        let version = build_info.version();
        if let Some(version) = &version
            && !version.at_least(1, 16)
        {
            return Err(GoError::TooOldVersion {
                version: version.raw.clone(),
            });
        }
        let layout = offsets::runtime_layout(elf, version.as_ref());
        let gofunc_offset = match &layout {
            Ok(layout) => layout.offsets.moduledata.gofunc,
            Err(_) => version
                .as_ref()
                .and_then(offsets::from_table)
                .and_then(|(offsets, _)| offsets.moduledata.gofunc),
        };
        let pclntab = Pclntab::parse(
            elf,
            PclntabHints {
                moduledata_gofunc_offset: gofunc_offset,
            },
        )?
        .into_owned();
        if pclntab.func_by_name("runtime.goexit").is_none() {
            return Err(GoError::NotGo("the pc-line table has no runtime.goexit"));
        }
        let tls = tls::g_tls_offset(elf, Some(&pclntab));
        Ok(GoBinary {
            build_info,
            version,
            pclntab,
            layout,
            tls,
        })
    }
}

/// The pc-line table of a Go binary, for naming and unwinding its frames: what
/// [`GoBinary::from_elf`] finds, without reading the runtime layout or the TLS slot. The base
/// of function data (for inlined calls) of a stripped binary comes from the `moduledata`
/// offsets of its Go version. Like [`is_go_binary`], a table without the runtime's functions
/// is refused.
pub fn find_pclntab<'data>(elf: &ElfImage<'data>) -> Result<Pclntab<'data>, GoError> {
    let version = buildinfo::find(elf).ok().and_then(|info| info.version());
    if let Some(version) = &version
        && !version.at_least(1, 16)
    {
        return Err(GoError::TooOldVersion {
            version: version.raw.clone(),
        });
    }
    let has_gofunc_symbol = elf.symbol("go:func.*").is_some() || elf.symbol("go.func.*").is_some();
    let hints = PclntabHints {
        moduledata_gofunc_offset: if has_gofunc_symbol {
            None
        } else {
            version
                .as_ref()
                .and_then(offsets::from_table)
                .and_then(|(offsets, _)| offsets.moduledata.gofunc)
        },
    };
    let pclntab = Pclntab::parse(elf, hints)?;
    if pclntab.func_by_name("runtime.goexit").is_none() {
        return Err(GoError::NotGo("the pc-line table has no runtime.goexit"));
    }
    Ok(pclntab)
}

/// Whether `data` is a Go binary: it has Go build information *and* a pc-line table that
/// parses and has the runtime's functions. The build information magic alone is not enough.
pub fn is_go_binary(data: &[u8]) -> bool {
    let Ok(elf) = ElfImage::parse(data) else {
        return false;
    };
    if buildinfo::find(&elf).is_err() {
        return false;
    }
    Pclntab::parse(&elf, PclntabHints::default())
        .is_ok_and(|table| table.func_by_name("runtime.goexit").is_some())
}
