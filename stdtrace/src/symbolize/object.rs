//! A mapped object and what has been parsed of it so far. Only what a lookup needs is parsed,
//! the first time it is needed: Go's pc-line table when an address of a Go binary is named or
//! unwound, the CFI index when an address of the object is unwound, the symbol table when one
//! is named without DWARF, the DWARF when the object (or its debug file) has some and is hit;
//! separate debug files are looked for only then.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    Miss,
    cfi::{self, Cfi},
    demangle::demangle,
    dwarf::{Dwarf, SourceFrame},
    elf::ElfImage,
    gopclntab::{GoNames, GoTable},
    open,
    symbols::SymbolTable,
    unwind::UnwindRules,
};

/// Separate debug info found for an object.
#[derive(Debug)]
struct DebugFiles {
    debug: ElfImage,
}

/// One object file (executable or shared library), shared by every process that maps it.
#[derive(Debug)]
pub(crate) struct Object {
    elf: ElfImage,
    /// The first process and path it was found through: where its debug files are looked for.
    pid: u32,
    path: PathBuf,
    /// Where separate debug files are looked for.
    debug_dirs: Arc<[PathBuf]>,
    // `None`: not parsed yet.
    debug: Option<Option<DebugFiles>>,
    cfi: Option<Result<Option<Cfi>, String>>,
    symbols: Option<SymbolTable>,
    dwarf: Option<Option<Dwarf>>,
    /// `Ok(None)`: not a Go binary; `Err`: a Go binary whose table is unusable.
    go: Option<Result<Option<GoTable>, Miss>>,
}

impl Object {
    pub(crate) fn new(elf: ElfImage, pid: u32, path: &Path, debug_dirs: Arc<[PathBuf]>) -> Self {
        Self {
            elf,
            pid,
            path: path.to_path_buf(),
            debug_dirs,
            debug: None,
            cfi: None,
            symbols: None,
            dwarf: None,
            go: None,
        }
    }

    pub(crate) fn build_id(&self) -> Option<&[u8]> {
        self.elf.build_id()
    }

    /// The ELF virtual address of file offset `offset` (see [`ElfImage::vaddr_of_file_offset`]).
    pub(crate) fn vaddr(&self, offset: u64, executable: bool) -> Option<u64> {
        self.elf.vaddr_of_file_offset(offset, executable)
    }

    /// Heap bytes this object is counted as in the cache's budget: its DWARF (decompressed
    /// sections and parsed units) and its symbol table. (The file itself is mapped: the kernel
    /// can drop its pages whenever it needs to.)
    pub(crate) fn heap_bytes(&self) -> usize {
        let dwarf = match &self.dwarf {
            Some(Some(dwarf)) => dwarf.heap_bytes(),
            _ => 0,
        };
        let symbols = self.symbols.as_ref().map_or(0, SymbolTable::heap_bytes);
        dwarf + symbols
    }

    /// Whether its DWARF is loaded now.
    #[cfg(test)]
    pub(crate) fn has_dwarf_loaded(&self) -> bool {
        matches!(self.dwarf, Some(Some(_)))
    }

    /// Drops what can be parsed again (its DWARF, with the decompressed sections, and its
    /// separate debug file's mapping): it is loaded again when an address needs it. Returns
    /// the bytes it was counted as.
    pub(crate) fn drop_reloadable(&mut self) -> usize {
        let dwarf = match &self.dwarf {
            Some(Some(dwarf)) => dwarf.heap_bytes(),
            _ => 0,
        };
        if dwarf > 0 {
            self.dwarf = None;
            self.debug = None;
        }
        dwarf
    }

    /// Bytes of the files it maps (the object and its debug file).
    pub(crate) fn mapped_bytes(&self) -> usize {
        let debug = match &self.debug {
            Some(Some(files)) => files.debug.bytes().len(),
            _ => 0,
        };
        self.elf.bytes().len() + debug
    }

    /// Gives back the pages read of the files it maps (see [`super::bytes::FileBytes`]).
    pub(crate) fn release_pages(&self) {
        self.elf.release_pages();
        if let Some(Some(files)) = &self.debug {
            files.debug.release_pages();
        }
    }

    /// Go's pc-line table, parsed the first time it is asked for.
    fn go(&mut self) -> &Result<Option<GoTable>, Miss> {
        let (elf, path) = (&self.elf, &self.path);
        self.go.get_or_insert_with(|| {
            GoTable::load(elf).map_err(|error| {
                log::debug!("unusable Go pc-line table in {}: {error}", path.display());
                Miss::BadGoTable(error)
            })
        })
    }

    /// How to unwind the frame whose code is at `vaddr`: Go's rules in the Go text, CFI
    /// elsewhere.
    pub(crate) fn unwind_rules(&mut self, context: &mut cfi::Context, vaddr: u64) -> UnwindRules {
        // Parsed first, then borrowed alongside the ELF image it reads code from.
        self.go();
        if let Some(Ok(Some(go))) = &self.go
            && let Some(rules) = go.unwind_rules(&self.elf, vaddr)
        {
            return rules;
        }
        let elf = &self.elf;
        let cfi = self.cfi.get_or_insert_with(|| {
            Cfi::load(elf).inspect_err(|err| log::debug!("no usable .eh_frame: {err}"))
        });
        match cfi {
            Ok(Some(cfi)) => match cfi.row(context, vaddr) {
                Ok(Some(row)) => UnwindRules::Cfi(row),
                Ok(None) => UnwindRules::NoCfi,
                Err(err) => UnwindRules::BadCfi(err.to_string()),
            },
            Ok(None) => UnwindRules::NoCfi,
            Err(err) => UnwindRules::BadCfi(err.clone()),
        }
    }

    fn debug_files(&mut self) -> Option<&DebugFiles> {
        let (pid, path, elf, dirs) = (self.pid, &self.path, &self.elf, &self.debug_dirs);
        self.debug
            .get_or_insert_with(|| {
                open::find_debug_file(pid, path, elf, dirs).map(|debug| DebugFiles { debug })
            })
            .as_ref()
    }

    fn dwarf(&mut self) -> Option<&mut Dwarf> {
        if self.dwarf.is_none() {
            let loaded = if self.elf.has_debug_info() {
                let sup = open::find_supplementary(self.pid, &self.elf, &self.debug_dirs);
                Some(Dwarf::load(&self.elf, sup.as_ref()))
            } else {
                let (pid, dirs) = (self.pid, Arc::clone(&self.debug_dirs));
                self.debug_files()
                    .filter(|files| files.debug.has_debug_info())
                    .map(|files| {
                        let sup = open::find_supplementary(pid, &files.debug, &dirs);
                        Dwarf::load(&files.debug, sup.as_ref())
                    })
            };
            let dwarf = match loaded {
                Some(Ok(dwarf)) => Some(dwarf),
                Some(Err(err)) => {
                    log::debug!("unusable DWARF in {}: {err}", self.path.display());
                    None
                }
                None => None,
            };
            self.dwarf = Some(dwarf);
        }
        self.dwarf.as_mut().and_then(Option::as_mut)
    }

    fn symbols(&mut self) -> &SymbolTable {
        if self.symbols.is_none() {
            let mut candidates = self.elf.symbols().unwrap_or_default();
            if !self.elf.has_symtab()
                && let Some(files) = self.debug_files()
            {
                candidates.extend(files.debug.symbols().unwrap_or_default());
            }
            self.symbols = Some(SymbolTable::new(candidates));
        }
        self.symbols.get_or_insert_with(SymbolTable::default)
    }

    /// The functions at `vaddr`, innermost inlined call first: from Go's pc-line table in the
    /// Go text of a Go binary, else from DWARF when there is some for it, else from the symbol
    /// tables.
    pub(crate) fn name(&mut self, vaddr: u64) -> Result<Vec<SourceFrame>, Miss> {
        // Why Go's table did not name the address, if it should have: the reason given when
        // nothing else does.
        let go_miss = match self.go() {
            Ok(Some(go)) => match go.names(vaddr) {
                GoNames::Frames(frames) => return Ok(frames),
                GoNames::Outside => None,
                GoNames::Miss(reason) => Some(Miss::GoLookup(reason)),
            },
            Ok(None) => None,
            Err(miss) => Some(miss.clone()),
        };
        let mut frames = match self.dwarf().map(|dwarf| dwarf.frames(vaddr)) {
            Some(Ok(frames)) => frames,
            Some(Err(err)) => {
                log::debug!(
                    "DWARF lookup of {vaddr:#x} in {}: {err}",
                    self.path.display()
                );
                Vec::new()
            }
            None => Vec::new(),
        };
        let symbol = |object: &mut Self| {
            object
                .symbols()
                .find(vaddr)
                .map(|name| demangle(name, None))
        };
        match frames.last_mut() {
            Some(outermost) if outermost.function.is_none() => outermost.function = symbol(self),
            // DWARF names a function by its internal name (glibc's `__GI___libc_write`); when
            // the symbol table has a public alias for it (`write`), that is the name callers
            // know.
            Some(outermost)
                if outermost
                    .function
                    .as_ref()
                    .is_some_and(|name| name.starts_with('_')) =>
            {
                if let Some(public) = symbol(self).filter(|name| !name.starts_with('_')) {
                    outermost.function = Some(public);
                }
            }
            Some(_) => {}
            None => {
                let function = symbol(self).ok_or(go_miss.unwrap_or(Miss::NoSymbol {
                    object_address: vaddr,
                }))?;
                frames.push(SourceFrame {
                    function: Some(function),
                    file: None,
                    line: None,
                    miss: None,
                });
            }
        }
        Ok(frames)
    }
}
