//! Inputs that are a few patches to a large base file instead of the file itself: libFuzzer keeps
//! its whole corpus in memory, and a corpus of 2 MiB Go binaries outgrows the 512 MiB limit in
//! minutes. The base files are named by `STDTRACE_FUZZ_GO_BINARIES` (paths separated by `:`,
//! set by `cargo xtask fuzz`); without it, the input is the file itself.
//!
//! Input: a byte choosing the base file, then patches, each a little-endian u32 offset (taken
//! modulo the file's length), a length byte, and that many bytes written there.

use std::{borrow::Cow, sync::OnceLock};

/// The base files, read once.
pub fn bases() -> &'static [Vec<u8>] {
    static BASES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    BASES.get_or_init(|| {
        std::env::var("STDTRACE_FUZZ_GO_BINARIES")
            .unwrap_or_default()
            .split(':')
            .filter(|path| !path.is_empty())
            .filter_map(|path| std::fs::read(path).ok())
            .collect()
    })
}

/// The file an input stands for: `base` (one of `bases`, or one derived from it) with the
/// input's patches applied; the input itself when there are no bases.
pub fn apply<'a>(bases: &[&[u8]], input: &'a [u8]) -> Cow<'a, [u8]> {
    let Some((&choice, mut patches)) = input.split_first() else {
        return Cow::Borrowed(input);
    };
    if bases.is_empty() {
        return Cow::Borrowed(input);
    }
    let mut file = bases[usize::from(choice) % bases.len()].to_vec();
    if file.is_empty() {
        return Cow::Owned(file);
    }
    while let Some((offset, rest)) = patches.split_first_chunk::<4>() {
        let Some((&len, rest)) = rest.split_first() else {
            break;
        };
        let len = usize::from(len).min(rest.len());
        let (bytes, rest) = rest.split_at(len);
        let offset = u32::from_le_bytes(*offset) as usize % file.len();
        let end = (offset + bytes.len()).min(file.len());
        file[offset..end].copy_from_slice(&bytes[..end - offset]);
        patches = rest;
    }
    Cow::Owned(file)
}
