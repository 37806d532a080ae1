//! Finding the files to read: the object a process mapped (through procfs, so that deleted
//! binaries and files inside containers are the ones the process runs), and the separate debug
//! files that belong to it.

use std::{
    collections::HashMap,
    ffi::OsString,
    fs::File,
    io,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
    sync::Arc,
};

use memmap2::Mmap;

use super::{Miss, bytes::FileBytes, elf::ElfImage};
use crate::process::maps::{Mapping, ProcessMaps};

/// What tells two files apart without reading them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FileIdentity {
    pub dev: u64,
    pub inode: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
}

/// An open object file.
#[derive(Debug)]
pub(crate) struct OpenedFile {
    pub file: File,
    pub identity: FileIdentity,
}

impl OpenedFile {
    fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            file: self.file.try_clone()?,
            identity: self.identity,
        })
    }
}

/// The files a process maps executable, opened while the process is there to open them
/// through (`/proc/PID/map_files` reaches deleted files and containers' files only while it
/// runs). Opening is cheap; parsing waits until a frame needs the object.
#[derive(Debug, Default)]
pub struct OpenObjects {
    /// By the (device, inode) the memory map names.
    files: HashMap<((u32, u32), u64), OpenedFile>,
}

impl OpenObjects {
    /// Opens every file-backed executable mapping of `pid`; those that cannot be opened are
    /// left out (their frames say why when they are named).
    pub fn open(pid: u32, maps: &ProcessMaps) -> Self {
        let mut files = HashMap::new();
        for mapping in &maps.mappings {
            if !mapping.executable || mapping.inode == 0 || mapping.path().is_none() {
                continue;
            }
            let key = (mapping.dev, mapping.inode);
            if files.contains_key(&key) {
                continue;
            }
            if let Ok(opened) = open_mapped(pid, mapping) {
                files.insert(key, opened);
            }
        }
        Self { files }
    }

    /// How many files are open.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// A new handle on the file mapped as `mapping`, if it was opened.
    pub(crate) fn reopen(&self, mapping: &Mapping) -> Option<OpenedFile> {
        self.files
            .get(&(mapping.dev, mapping.inode))
            .and_then(|opened| opened.try_clone().ok())
    }
}

fn open_identified(path: &Path) -> io::Result<OpenedFile> {
    let file = File::open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let identity = FileIdentity {
        dev: metadata.dev(),
        inode: metadata.ino(),
        size: metadata.size(),
        mtime: metadata.mtime(),
        mtime_nsec: metadata.mtime_nsec(),
    };
    Ok(OpenedFile { file, identity })
}

/// `path` as process `pid` sees it, through `/proc/PID/root` (its root may be a container's).
pub(crate) fn in_process_root(pid: u32, path: &Path) -> Option<PathBuf> {
    if !path.is_absolute() {
        return None;
    }
    let mut rooted = OsString::from(crate::process::host::host().pid_path(pid, "root"));
    rooted.push(path.as_os_str());
    Some(PathBuf::from(rooted))
}

/// Opens the file behind `mapping` of process `pid`: `/proc/PID/map_files/START-END` (the
/// very file mapped, even deleted; needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE), else the
/// mapped path under `/proc/PID/root`, else the path itself. A file found by path must have the
/// mapped inode: a different one is a newer file (an upgraded package), whose addresses would
/// name the wrong functions.
pub(crate) fn open_mapped(pid: u32, mapping: &Mapping) -> Result<OpenedFile, Miss> {
    let Some(path) = mapping.path() else {
        return Err(Miss::Anonymous);
    };
    let map_files = crate::process::host::host().pid_path(
        pid,
        format!("map_files/{:x}-{:x}", mapping.start, mapping.end),
    );
    let mut errors = Vec::new();
    match open_identified(&map_files) {
        Ok(opened) => return Ok(opened),
        Err(err) => errors.push(format!("{}: {err}", map_files.display())),
    }
    let mut replaced = false;
    for candidate in in_process_root(pid, path)
        .into_iter()
        .chain(path.is_absolute().then(|| path.to_path_buf()))
    {
        match open_identified(&candidate) {
            Ok(opened) if mapping.inode == 0 || opened.identity.inode == mapping.inode => {
                return Ok(opened);
            }
            Ok(_) => replaced = true,
            Err(err) => errors.push(format!("{}: {err}", candidate.display())),
        }
    }
    if replaced {
        Err(Miss::ObjectReplaced {
            path: path.to_path_buf(),
        })
    } else if !Path::new(&crate::process::host::host().pid(pid)).exists() {
        Err(Miss::ProcessGone)
    } else {
        Err(Miss::ObjectUnreadable {
            path: path.to_path_buf(),
            error: errors.join("; "),
        })
    }
}

/// Maps `file` into memory.
pub(crate) fn map(file: &File) -> io::Result<Arc<FileBytes>> {
    if file.metadata()?.len() == 0 {
        return Ok(Arc::new(FileBytes::Owned(Vec::new())));
    }
    // SAFETY: the mapping is private and read-only, and everything read from it is parsed as
    // untrusted input: if the file is rewritten in place meanwhile, the parsers see garbage
    // and reject it, which is all the aliasing of a shared file can do to us. What remains is
    // truncation while mapped, which raises SIGBUS on access: binaries and debug files are
    // replaced by renaming (package managers, linkers), not truncated, and the risk is the
    // one every mmap-based symbolizer (perf, blazesym) takes to avoid copying large files.
    let map = unsafe { Mmap::map(file) }?;
    Ok(Arc::new(FileBytes::Mapped(map)))
}

/// Opens, maps and parses the ELF file at `path`.
fn load_image(path: &Path) -> Option<ElfImage> {
    let opened = open_identified(path).ok()?;
    let bytes = map(&opened.file).ok()?;
    match ElfImage::parse(bytes) {
        Ok(image) => Some(image),
        Err(err) => {
            log::debug!("ignoring {}: {err}", path.display());
            None
        }
    }
}

/// `path` as process `pid` sees it, then as we do.
fn both_roots(pid: u32, path: PathBuf) -> impl Iterator<Item = PathBuf> {
    in_process_root(pid, &path).into_iter().chain([path])
}

/// Where debug files are installed, unless configured otherwise.
pub(crate) const DEFAULT_DEBUG_DIR: &str = "/usr/lib/debug";

/// `<debug_dir>/.build-id/ab/cdef….debug` for build-id `abcdef…`.
fn build_id_path(debug_dir: &Path, build_id: &[u8]) -> Option<PathBuf> {
    let (first, rest) = build_id.split_first()?;
    if rest.is_empty() {
        return None;
    }
    let rest: String = rest.iter().map(|byte| format!("{byte:02x}")).collect();
    Some(debug_dir.join(format!(".build-id/{first:02x}/{rest}.debug")))
}

/// The build-id paths of `build_id` in every debug directory, as `pid` sees them and as we do.
fn build_id_candidates(pid: u32, debug_dirs: &[PathBuf], build_id: &[u8]) -> Vec<PathBuf> {
    debug_dirs
        .iter()
        .filter_map(|dir| build_id_path(dir, build_id))
        .flat_map(|path| both_roots(pid, path))
        .collect()
}

/// The separate debug file of `object` (mapped by `pid` from `object_path`): by build-id in
/// `debug_dirs`, then by `.gnu_debuglink` next to the object, in its `.debug` directory and
/// under each of `debug_dirs`. A candidate must prove it belongs: the same build-id, or (when
/// the object has none) the CRC the link records.
pub(crate) fn find_debug_file(
    pid: u32,
    object_path: &Path,
    object: &ElfImage,
    debug_dirs: &[PathBuf],
) -> Option<ElfImage> {
    if let Some(build_id) = object.build_id() {
        for candidate in build_id_candidates(pid, debug_dirs, build_id) {
            if let Some(image) = load_image(&candidate)
                && image.build_id() == Some(build_id)
            {
                log::debug!(
                    "debug file for {}: {}",
                    object_path.display(),
                    candidate.display()
                );
                return Some(image);
            }
        }
    }
    let link = object.debug_link()?;
    let name = Path::new(std::ffi::OsStr::from_bytes(&link.file_name));
    // A link is a bare file name; anything else would let the object point anywhere.
    if name.components().count() != 1 || name.file_name() != Some(name.as_os_str()) {
        return None;
    }
    let dir = object_path.parent()?;
    let relative_dir = dir.strip_prefix("/").ok()?;
    let mut candidates = vec![dir.join(name), dir.join(".debug").join(name)];
    candidates.extend(
        debug_dirs
            .iter()
            .map(|debug_dir| debug_dir.join(relative_dir).join(name)),
    );
    for candidate in candidates
        .into_iter()
        .flat_map(|path| both_roots(pid, path))
    {
        let Some(image) = load_image(&candidate) else {
            continue;
        };
        let belongs = match (object.build_id(), image.build_id()) {
            (Some(expected), Some(found)) => expected == found,
            _ => crc32(image.bytes()) == link.crc,
        };
        if belongs && (image.has_debug_info() || image.has_symtab()) {
            log::debug!(
                "debug file for {}: {}",
                object_path.display(),
                candidate.display()
            );
            return Some(image);
        }
    }
    None
}

/// The supplementary (dwz) file that `.gnu_debugaltlink` of `debug` names: at the absolute
/// path it records, else by its build-id (a relative path is found through the build-id link
/// that dwz installs next to it).
pub(crate) fn find_supplementary(
    pid: u32,
    debug: &ElfImage,
    debug_dirs: &[PathBuf],
) -> Option<ElfImage> {
    let link = debug.alt_link()?;
    let named = PathBuf::from(std::ffi::OsStr::from_bytes(&link.path));
    let mut candidates: Vec<PathBuf> = Vec::new();
    if named.is_absolute() {
        candidates.extend(both_roots(pid, named));
    }
    candidates.extend(build_id_candidates(pid, debug_dirs, &link.build_id));
    candidates
        .into_iter()
        .filter_map(|path| load_image(&path))
        .find(|image| image.build_id() == Some(&link.build_id[..]))
}

/// CRC-32 (IEEE 802.3, as zlib computes it), which `.gnu_debuglink` records.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 != 0 {
                    0xedb8_8320 ^ (crc >> 1)
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |crc, byte| {
        TABLE[usize::from((crc as u8) ^ byte)] ^ (crc >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::maps::Backing;

    #[test]
    fn crc32_matches_zlib() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414f_a339
        );
    }

    #[test]
    fn build_id_paths_split_the_first_byte() {
        let dir = Path::new(DEFAULT_DEBUG_DIR);
        assert_eq!(
            build_id_path(dir, &[0xab, 0xcd, 0x01]).unwrap(),
            Path::new("/usr/lib/debug/.build-id/ab/cd01.debug")
        );
        assert_eq!(build_id_path(dir, &[0xab]), None);
        assert_eq!(build_id_path(dir, &[]), None);
    }

    #[test]
    fn process_root_paths_stay_under_the_root() {
        assert_eq!(
            in_process_root(42, Path::new("/usr/lib/libc.so.6")).unwrap(),
            Path::new("/proc/42/root/usr/lib/libc.so.6")
        );
        assert_eq!(in_process_root(42, Path::new("relative")), None);
    }

    fn mapping_of(path: &Path, inode: u64) -> Mapping {
        Mapping {
            start: 0x1000,
            end: 0x2000,
            offset: 0,
            readable: true,
            writable: false,
            executable: true,
            dev: (0, 0),
            inode,
            backing: Backing::File(path.to_path_buf()),
        }
    }

    #[test]
    fn a_file_with_another_inode_is_not_the_mapped_one() {
        let exe = std::fs::canonicalize("/proc/self/exe").unwrap();
        let inode = std::fs::metadata(&exe).unwrap().ino();
        // Our own pid: map_files has no such range, the path itself is found.
        let me = std::process::id();
        assert!(open_mapped(me, &mapping_of(&exe, inode)).is_ok());
        assert_eq!(
            open_mapped(me, &mapping_of(&exe, inode + 1)).unwrap_err(),
            Miss::ObjectReplaced { path: exe.clone() }
        );
        let missing = Path::new("/nonexistent/stdtrace-test");
        assert!(matches!(
            open_mapped(me, &mapping_of(missing, 1)).unwrap_err(),
            Miss::ObjectUnreadable { .. }
        ));
        assert_eq!(
            open_mapped(u32::MAX, &mapping_of(missing, 1)).unwrap_err(),
            Miss::ProcessGone
        );
        let mut anonymous = mapping_of(missing, 0);
        anonymous.backing = Backing::Anonymous;
        assert_eq!(open_mapped(me, &anonymous).unwrap_err(), Miss::Anonymous);
    }
}
