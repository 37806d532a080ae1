//! Parsed objects, kept across stacks and shared between processes: looked up by file identity
//! (device, inode, size, mtime) first, then by GNU build-id, so that the libc every process
//! maps, or the same binary in two containers, is parsed once. Failures are remembered too, so
//! that a bad file is not re-read for every frame. Both are bounded, least recently used first
//! out: objects by count and by the heap bytes they hold. Over the byte budget, the least
//! recently used objects first drop what can be parsed again (their DWARF and decompressed
//! debug sections, loaded again when an address needs them), then go.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    Miss,
    object::Object,
    open::{self, FileIdentity, OpenObjects, OpenedFile},
};
use crate::process::maps::Mapping;

/// Most objects kept parsed.
const MAX_OBJECTS: usize = 256;
/// Most remembered failures.
const MAX_FAILURES: usize = 1024;
/// Most heap bytes the parsed objects hold between stacks (one stack may need more: every
/// object it goes through is loaded, and trimmed after).
pub(crate) const DEFAULT_BUDGET_BYTES: usize = 16 << 20;
/// Objects that map more than this give the pages they read back between stacks: a debug
/// build's 100 MiB of DWARF, read through its mapping, would otherwise stay resident as ours.
const RELEASE_PAGES_ABOVE: usize = 8 << 20;

/// Names a cached object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ObjectId(u64);

#[derive(Debug)]
struct Slot {
    object: Object,
    last_used: u64,
}

#[derive(Debug)]
pub(crate) struct ObjectCache {
    max_objects: usize,
    budget_bytes: usize,
    debug_dirs: Arc<[PathBuf]>,
    objects: HashMap<ObjectId, Slot>,
    by_file: HashMap<FileIdentity, ObjectId>,
    /// By the (device, inode) a process's memory map names: once an object is open it is
    /// found again this way after the process has exited or the file was deleted.
    by_mapped_inode: HashMap<((u32, u32), u64), ObjectId>,
    by_build_id: HashMap<Vec<u8>, ObjectId>,
    failures: HashMap<FileIdentity, Miss>,
    next_id: u64,
    clock: u64,
}

impl Default for ObjectCache {
    fn default() -> Self {
        Self::new(vec![PathBuf::from(open::DEFAULT_DEBUG_DIR)])
    }
}

impl ObjectCache {
    /// A cache whose objects look for separate debug files in `debug_dirs`.
    pub(crate) fn new(debug_dirs: Vec<PathBuf>) -> Self {
        Self::with_capacity(MAX_OBJECTS, debug_dirs)
    }

    fn with_capacity(max_objects: usize, debug_dirs: Vec<PathBuf>) -> Self {
        Self {
            max_objects,
            budget_bytes: DEFAULT_BUDGET_BYTES,
            debug_dirs: debug_dirs.into(),
            objects: HashMap::new(),
            by_file: HashMap::new(),
            by_mapped_inode: HashMap::new(),
            by_build_id: HashMap::new(),
            failures: HashMap::new(),
            next_id: 0,
            clock: 0,
        }
    }

    /// The object behind `mapping` of process `pid`, opening and parsing it if it is new.
    pub(crate) fn load(&mut self, pid: u32, mapping: &Mapping) -> Result<ObjectId, Miss> {
        self.load_from(pid, mapping, None)
    }

    /// Like [`load`](Self::load), taking the file from `opened` when it has it (opened while
    /// the process was still there) instead of opening it now.
    pub(crate) fn load_from(
        &mut self,
        pid: u32,
        mapping: &Mapping,
        opened: Option<&OpenObjects>,
    ) -> Result<ObjectId, Miss> {
        let mapped_inode = (mapping.inode != 0).then_some((mapping.dev, mapping.inode));
        if let Some(key) = mapped_inode
            && let Some(id) = self.by_mapped_inode.get(&key).copied()
            && let Some(slot) = self.objects.get_mut(&id)
        {
            // An open object holds its inode, so the number cannot have been reused.
            self.clock += 1;
            slot.last_used = self.clock;
            return Ok(id);
        }
        let opened = match opened.and_then(|objects| objects.reopen(mapping)) {
            Some(opened) => opened,
            None => open::open_mapped(pid, mapping)?,
        };
        let path = mapping.path().unwrap_or(Path::new(""));
        let id = self.load_opened(opened, pid, path)?;
        if let Some(key) = mapped_inode {
            self.by_mapped_inode.insert(key, id);
        }
        Ok(id)
    }

    fn load_opened(&mut self, opened: OpenedFile, pid: u32, path: &Path) -> Result<ObjectId, Miss> {
        self.clock += 1;
        if let Some(id) = self.by_file.get(&opened.identity).copied()
            && let Some(slot) = self.objects.get_mut(&id)
        {
            slot.last_used = self.clock;
            return Ok(id);
        }
        if let Some(miss) = self.failures.get(&opened.identity) {
            return Err(miss.clone());
        }
        let parsed = open::map(&opened.file)
            .map_err(|err| Miss::ObjectUnreadable {
                path: path.to_path_buf(),
                error: err.to_string(),
            })
            .and_then(|bytes| {
                super::elf::ElfImage::parse(bytes).map_err(|error| Miss::BadObject {
                    path: path.to_path_buf(),
                    error,
                })
            });
        let elf = match parsed {
            Ok(elf) => elf,
            Err(miss) => {
                self.failures.insert(opened.identity, miss.clone());
                return Err(miss);
            }
        };
        // The same build under another identity (a copy, another container's layer).
        if let Some(id) = elf
            .build_id()
            .and_then(|build_id| self.by_build_id.get(build_id))
        {
            let id = *id;
            if let Some(slot) = self.objects.get_mut(&id) {
                slot.last_used = self.clock;
                self.by_file.insert(opened.identity, id);
                return Ok(id);
            }
        }
        let id = ObjectId(self.next_id);
        self.next_id += 1;
        let object = Object::new(elf, pid, path, Arc::clone(&self.debug_dirs));
        if let Some(build_id) = object.build_id() {
            self.by_build_id.insert(build_id.to_vec(), id);
        }
        self.by_file.insert(opened.identity, id);
        self.objects.insert(
            id,
            Slot {
                object,
                last_used: self.clock,
            },
        );
        Ok(id)
    }

    pub(crate) fn get_mut(&mut self, id: ObjectId) -> Option<&mut Object> {
        self.objects.get_mut(&id).map(|slot| &mut slot.object)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.objects.len()
    }

    /// Heap bytes the parsed objects hold.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.objects
            .values()
            .map(|slot| slot.object.heap_bytes())
            .sum()
    }

    /// Drops the least recently used objects and failures beyond the bounds. Called between
    /// stacks, never during one, so that the ids a walk holds stay valid.
    pub(crate) fn trim(&mut self) {
        if self.failures.len() > MAX_FAILURES {
            self.failures.clear();
        }
        for slot in self.objects.values() {
            if slot.object.mapped_bytes() > RELEASE_PAGES_ABOVE {
                slot.object.release_pages();
            }
        }
        let mut held = self.heap_bytes();
        if self.objects.len() <= self.max_objects && held <= self.budget_bytes {
            return;
        }
        let mut ages: Vec<(u64, ObjectId)> = self
            .objects
            .iter()
            .map(|(id, slot)| (slot.last_used, *id))
            .collect();
        ages.sort_unstable_by_key(|(last_used, _)| *last_used);
        let excess = self.objects.len().saturating_sub(self.max_objects);
        for (_, id) in ages.drain(..excess) {
            if let Some(slot) = self.objects.remove(&id) {
                held = held.saturating_sub(slot.object.heap_bytes());
            }
        }
        // Over the budget: the least recently used drop what can be loaded again...
        for (_, id) in &ages {
            if held <= self.budget_bytes {
                break;
            }
            if let Some(slot) = self.objects.get_mut(id) {
                let dropped = slot.object.drop_reloadable();
                if dropped > 0 {
                    log::debug!("dropped {dropped} bytes of debug info (object cache budget)");
                }
                held = held.saturating_sub(dropped);
            }
        }
        // ...then go, but for the most recently used one.
        let newest = ages.last().map(|(_, id)| *id);
        for (_, id) in &ages {
            if held <= self.budget_bytes || Some(*id) == newest {
                break;
            }
            if let Some(slot) = self.objects.remove(id) {
                held = held.saturating_sub(slot.object.heap_bytes());
            }
        }
        let objects = &self.objects;
        self.by_file.retain(|_, id| objects.contains_key(id));
        self.by_mapped_inode
            .retain(|_, id| objects.contains_key(id));
        self.by_build_id.retain(|_, id| objects.contains_key(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::maps::Backing;
    use std::os::unix::fs::MetadataExt;

    fn mapping_of(path: &Path) -> Mapping {
        Mapping {
            start: 0x1000,
            end: 0x2000,
            offset: 0,
            readable: true,
            writable: false,
            executable: true,
            dev: (0, 0),
            inode: std::fs::metadata(path).unwrap().ino(),
            backing: Backing::File(path.to_path_buf()),
        }
    }

    #[test]
    fn one_file_is_parsed_once_and_copies_share_it_by_build_id() {
        let exe = std::fs::canonicalize("/proc/self/exe").unwrap();
        let me = std::process::id();
        let mut cache = ObjectCache::default();
        let first = cache.load(me, &mapping_of(&exe)).unwrap();
        assert_eq!(cache.load(me, &mapping_of(&exe)).unwrap(), first);

        let dir = std::env::temp_dir().join(format!("stdtrace-cache-test-{me}"));
        std::fs::create_dir_all(&dir).unwrap();
        let copy = dir.join("copy");
        std::fs::copy(&exe, &copy).unwrap();
        let has_build_id = cache.get_mut(first).unwrap().build_id().is_some();
        let second = cache.load(me, &mapping_of(&copy)).unwrap();
        assert_eq!(second == first, has_build_id);
        assert_eq!(cache.len(), if has_build_id { 1 } else { 2 });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failures_are_remembered_and_everything_is_bounded() {
        let me = std::process::id();
        let dir = std::env::temp_dir().join(format!("stdtrace-cache-bounds-{me}"));
        std::fs::create_dir_all(&dir).unwrap();
        let not_elf = dir.join("not-elf");
        std::fs::write(&not_elf, b"#!/bin/sh\n").unwrap();
        let mut cache = ObjectCache::default();
        let miss = cache.load(me, &mapping_of(&not_elf)).unwrap_err();
        assert!(matches!(miss, Miss::BadObject { .. }), "{miss}");
        assert_eq!(cache.failures.len(), 1);
        assert_eq!(cache.load(me, &mapping_of(&not_elf)).unwrap_err(), miss);

        let exe = std::fs::canonicalize("/proc/self/exe").unwrap();
        let id = cache.load(me, &mapping_of(&exe)).unwrap();
        for _ in 0..MAX_FAILURES + 1 {
            cache.failures.insert(
                FileIdentity {
                    dev: 0,
                    inode: cache.clock,
                    size: 0,
                    mtime: 0,
                    mtime_nsec: 0,
                },
                Miss::ProcessGone,
            );
            cache.clock += 1;
        }
        cache.trim();
        assert!(cache.failures.is_empty());
        assert!(cache.get_mut(id).is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_least_recently_used_object_goes_first() {
        let me = std::process::id();
        let exe = std::fs::canonicalize("/proc/self/exe").unwrap();
        let shell = std::fs::canonicalize("/bin/sh").unwrap();
        let mut cache = ObjectCache::with_capacity(1, Vec::new());
        let old = cache.load(me, &mapping_of(&shell)).unwrap();
        let new = cache.load(me, &mapping_of(&exe)).unwrap();
        cache.trim();
        assert!(cache.get_mut(old).is_none());
        assert!(cache.get_mut(new).is_some());
        assert_eq!(cache.by_file.len(), 1);
        assert_ne!(cache.load(me, &mapping_of(&shell)).unwrap(), old);
    }

    /// A fixture built from source (`cargo xtask fixtures`), with full DWARF.
    fn fixture(name: &str) -> PathBuf {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/fixtures")
            .join(name);
        assert!(
            path.exists(),
            "{} is missing: cargo xtask fixtures",
            path.display()
        );
        std::fs::canonicalize(path).unwrap()
    }

    /// Up to `most` function addresses of the object at `path`, from its symbol table.
    fn function_addresses(path: &Path, most: usize) -> Vec<u64> {
        let file = std::fs::File::open(path).unwrap();
        let elf = crate::symbolize::elf::ElfImage::parse(open::map(&file).unwrap()).unwrap();
        let mut addresses: Vec<u64> = elf
            .symbols()
            .unwrap()
            .into_iter()
            .filter(|symbol| symbol.size > 0 && symbol.address != 0)
            .map(|symbol| symbol.address + symbol.size / 2)
            .collect();
        addresses.sort_unstable();
        addresses.dedup();
        addresses.truncate(most);
        addresses
    }

    fn names(cache: &mut ObjectCache, id: ObjectId, addresses: &[u64]) -> Vec<String> {
        let object = cache.get_mut(id).unwrap();
        addresses
            .iter()
            .map(|address| format!("{:?}", object.name(*address)))
            .collect()
    }

    /// A copy of `path` with its debug sections compressed (`objcopy`, as distributions ship
    /// them), in `dir`.
    fn compressed_copy(path: &Path, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let copy = dir.join(path.file_name().unwrap());
        let status = std::process::Command::new("objcopy")
            .arg("--compress-debug-sections=zlib")
            .arg(path)
            .arg(&copy)
            .status()
            .expect("running objcopy (binutils)");
        assert!(status.success());
        copy
    }

    #[test]
    fn over_the_byte_budget_the_least_recently_used_drop_their_debug_info_first() {
        let me = std::process::id();
        let c = fixture("symbolize-c-nofp");
        let rust = fixture("symbolize-rust");
        let mut cache = ObjectCache::with_capacity(8, Vec::new());
        let c_id = cache.load(me, &mapping_of(&c)).unwrap();
        let rust_id = cache.load(me, &mapping_of(&rust)).unwrap();
        names(&mut cache, c_id, &function_addresses(&c, 20));
        names(&mut cache, rust_id, &function_addresses(&rust, 20));
        let c_bytes = cache.get_mut(c_id).unwrap().heap_bytes();
        let rust_bytes = cache.get_mut(rust_id).unwrap().heap_bytes();
        assert!(cache.get_mut(c_id).unwrap().has_dwarf_loaded());
        assert!(cache.get_mut(rust_id).unwrap().has_dwarf_loaded());
        assert_eq!(cache.heap_bytes(), c_bytes + rust_bytes);

        // Under budget: nothing is dropped.
        cache.budget_bytes = c_bytes + rust_bytes;
        cache.trim();
        assert!(cache.get_mut(c_id).unwrap().has_dwarf_loaded());
        assert!(cache.get_mut(rust_id).unwrap().has_dwarf_loaded());

        // The C object was used last: the Rust one drops its DWARF, and stays.
        cache.load(me, &mapping_of(&c)).unwrap();
        cache.budget_bytes = c_bytes + rust_bytes - 1;
        cache.trim();
        assert!(cache.get_mut(c_id).unwrap().has_dwarf_loaded());
        assert!(!cache.get_mut(rust_id).unwrap().has_dwarf_loaded());
        assert!(cache.heap_bytes() < c_bytes + rust_bytes);
        assert_eq!(cache.len(), 2);

        // Now the Rust one is used last: the C one drops its DWARF.
        names(&mut cache, rust_id, &function_addresses(&rust, 20));
        cache.load(me, &mapping_of(&rust)).unwrap();
        cache.trim();
        assert!(!cache.get_mut(c_id).unwrap().has_dwarf_loaded());
        assert!(cache.get_mut(rust_id).unwrap().has_dwarf_loaded());

        // A budget nothing fits in: every object but the last used drops its DWARF, then goes.
        cache.budget_bytes = 0;
        cache.trim();
        assert!(cache.get_mut(c_id).is_none());
        assert!(cache.get_mut(rust_id).is_some());
        assert!(!cache.get_mut(rust_id).unwrap().has_dwarf_loaded());
    }

    #[test]
    fn debug_info_dropped_and_loaded_again_names_every_address_the_same() {
        let me = std::process::id();
        let dir = std::env::temp_dir().join(format!("stdtrace-cache-reload-{me}"));
        for path in [
            fixture("symbolize-rust"),
            compressed_copy(&fixture("symbolize-rust"), &dir),
        ] {
            let addresses = function_addresses(&path, 400);
            assert!(addresses.len() >= 100, "{}", path.display());
            let mut cache = ObjectCache::with_capacity(8, Vec::new());
            let id = cache.load(me, &mapping_of(&path)).unwrap();
            let before = names(&mut cache, id, &addresses);
            // Named from DWARF: file and line, not only the symbol.
            let with_lines = before.iter().filter(|name| name.contains(".rs")).count();
            assert!(
                with_lines * 2 > addresses.len(),
                "{with_lines} of {}",
                addresses.len()
            );
            let held = cache.heap_bytes();
            assert!(held > 0);
            cache.budget_bytes = 0;
            cache.trim();
            assert!(!cache.get_mut(id).unwrap().has_dwarf_loaded());
            assert!(cache.heap_bytes() < held);
            let after = names(&mut cache, id, &addresses);
            assert_eq!(before, after, "{}", path.display());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn compressed_debug_sections_are_counted_in_the_budget() {
        let me = std::process::id();
        let dir = std::env::temp_dir().join(format!("stdtrace-cache-compressed-{me}"));
        let plain = fixture("symbolize-rust");
        let compressed = compressed_copy(&plain, &dir);
        let addresses = function_addresses(&plain, 50);
        let mut held = Vec::new();
        for path in [&plain, &compressed] {
            let mut cache = ObjectCache::with_capacity(8, Vec::new());
            let id = cache.load(me, &mapping_of(path)).unwrap();
            names(&mut cache, id, &addresses);
            held.push(cache.heap_bytes());
        }
        // The decompressed sections live on the heap: at least the size of .debug_info more.
        let file = std::fs::File::open(&plain).unwrap();
        let elf = crate::symbolize::elf::ElfImage::parse(open::map(&file).unwrap()).unwrap();
        let debug_info = elf.section(".debug_info").unwrap().unwrap().len();
        assert!(
            held[1] >= held[0] + debug_info,
            "{held:?}, .debug_info {debug_info}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
