//! The Go build information block (`.go.buildinfo`): which Go built the binary, and its main
//! module.
//!
//! The block starts with a 32-byte header: the magic `\xff Go buildinf:` (14 bytes), the
//! pointer size, and a flags byte (bit 0: big-endian; bit 1: the strings follow inline). Since
//! Go 1.18 the version and the module information follow the header as two varint-length-
//! prefixed strings. Before that, the header holds two pointers to Go string headers
//! (pointer, length) elsewhere in the file. The module information is framed by 16-byte
//! sentinels.
//!
//! The block is found by its section name, or, when the section headers are gone, by scanning
//! the loaded segments for the magic at 16-byte-aligned addresses (the linker aligns it so).

use super::{GoError, elf::ElfImage, version::GoVersion};

/// The first 14 bytes of the build information header.
pub const BUILDINFO_MAGIC: &[u8; 14] = b"\xff Go buildinf:";

const HEADER_SIZE: usize = 32;
const ALIGN: u64 = 16;
const FLAG_BIG_ENDIAN: u8 = 1;
const FLAG_INLINE_STRINGS: u8 = 2;
/// A version string is short; module information can be long but not unboundedly so.
const MAX_VERSION_LEN: u64 = 1024;
const MAX_MODINFO_LEN: u64 = 16 << 20;

/// What the build information block says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// The toolchain's version string, e.g. `go1.25.5`.
    pub go_version: String,
    /// The main package's import path (`path` line), e.g. `stdtrace.test/writer`.
    pub main_path: Option<String>,
    /// The main module's path (`mod` line), e.g. `stdtrace.test/writer`.
    pub main_module: Option<String>,
    /// The main module's version (`(devel)` for a local build).
    pub main_module_version: Option<String>,
    /// Where the header is.
    pub address: u64,
    /// The pointer size the header states.
    pub ptr_size: u8,
}

impl BuildInfo {
    /// The version, parsed; `None` for a string that names no `go1.N` release.
    pub fn version(&self) -> Option<GoVersion> {
        GoVersion::parse(&self.go_version)
    }
}

/// Finds and parses the build information block.
pub fn find(elf: &ElfImage<'_>) -> Result<BuildInfo, GoError> {
    if let Some((address, data)) = elf.section(".go.buildinfo") {
        return parse_at(elf, address, data);
    }
    let mut last_error = None;
    for segment in elf.loads() {
        // The block is data the program writes to (in old formats, relocated pointers).
        let data = elf.segment_data(segment);
        let mut from = 0;
        while let Some(position) = find_magic(&data[from..]) {
            let offset = from + position;
            from = offset + 1;
            let address = segment.vaddr.wrapping_add(offset as u64);
            if address % ALIGN != 0 {
                continue;
            }
            match parse_at(elf, address, &data[offset..]) {
                Ok(info) => return Ok(info),
                Err(err) => last_error = Some(err),
            }
        }
    }
    Err(last_error.unwrap_or(GoError::NoBuildInfo))
}

fn find_magic(haystack: &[u8]) -> Option<usize> {
    haystack
        .windows(BUILDINFO_MAGIC.len())
        .position(|window| window == BUILDINFO_MAGIC)
}

/// Parses a block whose header is at `address`, with `data` its bytes to the end of the
/// section or segment.
pub fn parse_at(elf: &ElfImage<'_>, address: u64, data: &[u8]) -> Result<BuildInfo, GoError> {
    let bad = |why: &str| GoError::BadBuildInfo(format!("at {address:#x}: {why}"));
    let header = data
        .get(..HEADER_SIZE)
        .ok_or_else(|| bad("truncated header"))?;
    if &header[..BUILDINFO_MAGIC.len()] != BUILDINFO_MAGIC {
        return Err(bad("no magic"));
    }
    let ptr_size = header[14];
    let flags = header[15];
    let (version, modinfo) = if flags & FLAG_INLINE_STRINGS != 0 {
        let mut rest = &data[HEADER_SIZE..];
        let version = take_varint_string(&mut rest, MAX_VERSION_LEN)
            .ok_or_else(|| bad("truncated version string"))?;
        let modinfo = take_varint_string(&mut rest, MAX_MODINFO_LEN)
            .ok_or_else(|| bad("truncated module information"))?;
        (version.to_vec(), modinfo.to_vec())
    } else {
        if ptr_size != 4 && ptr_size != 8 {
            return Err(bad("pointer size is neither 4 nor 8"));
        }
        let big_endian = flags & FLAG_BIG_ENDIAN != 0;
        if big_endian == elf.is_little_endian() {
            return Err(bad("byte order differs from the ELF file's"));
        }
        // The two string headers follow the 16-byte header; a block at the very top of the
        // address space has none (a panic with overflow checks, as fuzzing found).
        let version_at = address
            .checked_add(16)
            .ok_or_else(|| bad("the block ends past the address space"))?;
        let version = read_go_string(elf, version_at, ptr_size, MAX_VERSION_LEN)
            .ok_or_else(|| bad("unreadable version string"))?;
        let modinfo = version_at
            .checked_add(u64::from(ptr_size))
            .and_then(|modinfo_at| read_go_string(elf, modinfo_at, ptr_size, MAX_MODINFO_LEN))
            .unwrap_or_default();
        (version, modinfo)
    };

    let go_version = String::from_utf8(version).map_err(|_| bad("version is not UTF-8"))?;
    if !plausible_version(&go_version) {
        return Err(bad("no Go version string"));
    }
    let modinfo = String::from_utf8_lossy(strip_sentinels(&modinfo)).into_owned();
    let mut info = BuildInfo {
        go_version,
        main_path: None,
        main_module: None,
        main_module_version: None,
        address,
        ptr_size,
    };
    for line in modinfo.lines() {
        let mut fields = line.split('\t');
        match fields.next() {
            Some("path") => info.main_path = fields.next().map(str::to_owned),
            Some("mod") => {
                info.main_module = fields.next().map(str::to_owned);
                info.main_module_version = fields.next().map(str::to_owned);
            }
            _ => {}
        }
    }
    Ok(info)
}

/// `go1.N...` or `devel ...`, printable, as the toolchain writes it.
fn plausible_version(version: &str) -> bool {
    (version.starts_with("go") || version.starts_with("devel"))
        && version.len() >= 3
        && version.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

/// The module information without its 16-byte framing sentinels (empty if not framed).
fn strip_sentinels(modinfo: &[u8]) -> &[u8] {
    if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        &modinfo[16..modinfo.len() - 16]
    } else {
        &[]
    }
}

/// A uvarint-length-prefixed byte string from the start of `rest`, advancing it.
fn take_varint_string<'a>(rest: &mut &'a [u8], max_len: u64) -> Option<&'a [u8]> {
    let (len, used) = read_uvarint(rest)?;
    if len > max_len {
        return None;
    }
    let len = usize::try_from(len).ok()?;
    let body = rest.get(used..used.checked_add(len)?)?;
    *rest = &rest[used + len..];
    Some(body)
}

/// An unsigned LEB128 varint (at most 10 bytes); returns the value and the bytes used.
pub(crate) fn read_uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in data.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        if i == 9 && *byte > 1 {
            return None;
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The contents of the Go string header (pointer, length) at `address`.
fn read_go_string(elf: &ElfImage<'_>, address: u64, ptr_size: u8, max_len: u64) -> Option<Vec<u8>> {
    let header = if ptr_size == 8 {
        elf.read_pointer(address)
    } else {
        elf.read_uint(address, 4)
    }?;
    let len = elf.read_uint(address + u64::from(ptr_size), usize::from(ptr_size))?;
    if len > max_len {
        return None;
    }
    elf.read(header, usize::try_from(len).ok()?)
        .map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `go_buildinfo` fuzz target: an old-format block (pointers, not inline
    /// strings) at the last addresses of the address space.
    #[test]
    fn a_block_at_the_top_of_the_address_space_is_an_error() {
        let input = b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff Go buildinf:\x04 \xf2r\x00\x82=\x10Aildinf:\x08\x08\x00\x00\n:";
        let (address, block) = input.split_at(8);
        let bytes = std::fs::read("/proc/self/exe").unwrap();
        let elf = ElfImage::parse(&bytes).unwrap();
        let address = u64::from_le_bytes(address.try_into().unwrap());
        assert!(matches!(
            parse_at(&elf, address, block),
            Err(GoError::BadBuildInfo(_))
        ));
    }

    #[test]
    fn varints() {
        assert_eq!(read_uvarint(&[0x05]), Some((5, 1)));
        assert_eq!(read_uvarint(&[0x80, 0x01]), Some((128, 2)));
        assert_eq!(read_uvarint(&[0x80]), None);
        assert_eq!(read_uvarint(&[0xff; 11]), None);
        assert_eq!(read_uvarint(&[]), None);
    }

    #[test]
    fn sentinels_frame_module_information() {
        let mut framed = vec![0xaa; 16];
        framed.extend_from_slice(b"path\tx\n");
        framed.extend_from_slice(&[0xbb; 16]);
        assert_eq!(strip_sentinels(&framed), b"path\tx\n");
        assert_eq!(strip_sentinels(b"short"), b"");
    }

    #[test]
    fn truncated_inline_strings_are_errors() {
        let mut rest: &[u8] = &[0x08, b'g', b'o'];
        assert_eq!(take_varint_string(&mut rest, 100), None);
        let mut rest: &[u8] = &[0x02, b'g', b'o', 0x00];
        assert_eq!(take_varint_string(&mut rest, 100), Some(&b"go"[..]));
        assert_eq!(rest, &[0x00]);
    }
}
