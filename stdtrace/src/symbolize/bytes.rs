//! The bytes parsers read: a memory-mapped object file, or a section decompressed into memory,
//! shared by every reader of it, so that gimli can hold sections without copying them.

use std::{ops::Deref, sync::Arc};

use memmap2::Mmap;

/// The whole content of one object file.
#[derive(Debug)]
pub(crate) enum FileBytes {
    /// A read-only private mapping of the file.
    Mapped(Mmap),
    /// Bytes held in memory: decompressed sections, and objects built by tests.
    Owned(Vec<u8>),
}

impl FileBytes {
    /// Gives back the pages of a mapped file that were read (they are read again from the file,
    /// through the page cache, when next needed), so that they no longer count in our resident
    /// memory. Held bytes stay.
    pub(crate) fn release_pages(&self) {
        if let FileBytes::Mapped(map) = self {
            // SAFETY: a private, read-only mapping of a file: MADV_DONTNEED only drops our
            // page-table entries, and the next read faults the same bytes in from the file (the
            // caveat of mapping a file that is rewritten in place is the mapping's own, in
            // `open::map`). No reference into the mapping is invalidated: its address stays.
            if let Err(err) = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) } {
                log::debug!("releasing the pages of a mapped object: {err}");
            }
        }
    }
}

impl Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(map) => map,
            FileBytes::Owned(bytes) => bytes,
        }
    }
}

impl AsRef<[u8]> for FileBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// A range of a [`FileBytes`]: what a gimli reader reads.
#[derive(Clone, Debug)]
pub(crate) struct SectionBytes {
    file: Arc<FileBytes>,
    start: usize,
    end: usize,
}

impl SectionBytes {
    /// `size` bytes at `offset` in `file`, or `None` when the range is not inside the file.
    pub(crate) fn new(file: &Arc<FileBytes>, offset: u64, size: u64) -> Option<Self> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(size).ok()?)?;
        (end <= file.len()).then(|| Self {
            file: Arc::clone(file),
            start,
            end,
        })
    }

    /// Bytes that live only in memory (a decompressed section).
    pub(crate) fn owned(bytes: Vec<u8>) -> Self {
        let end = bytes.len();
        Self {
            file: Arc::new(FileBytes::Owned(bytes)),
            start: 0,
            end,
        }
    }

    /// Bytes held in memory for this range (a decompressed section's), 0 for a range of a
    /// mapped file.
    pub(crate) fn owned_len(&self) -> usize {
        match &*self.file {
            FileBytes::Owned(_) => self.end - self.start,
            FileBytes::Mapped(_) => 0,
        }
    }

    /// No bytes: what a missing section reads as.
    pub(crate) fn empty() -> Self {
        Self::owned(Vec::new())
    }
}

impl Deref for SectionBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // The range was checked against the file when it was made; `get` keeps this total.
        self.file.get(self.start..self.end).unwrap_or(&[])
    }
}

// SAFETY: the bytes are owned by the `Arc<FileBytes>` (an mmap or a heap allocation that is
// never resized), not by the `SectionBytes` value: moving a `SectionBytes` leaves them where
// they are, so the slice it derefs to keeps its address for as long as the value lives.
unsafe impl gimli::StableDeref for SectionBytes {}

// SAFETY: a clone shares the same `Arc<FileBytes>` and range, so it derefs to the very same
// bytes at the very same address.
unsafe impl gimli::CloneStableDeref for SectionBytes {}

/// The gimli reader used for every DWARF and CFI section.
pub(crate) type Reader = gimli::EndianReader<gimli::RunTimeEndian, SectionBytes>;

/// A reader over `bytes`.
pub(crate) fn reader(bytes: SectionBytes, endian: gimli::RunTimeEndian) -> Reader {
    gimli::EndianReader::new(bytes, endian)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_outside_the_file_are_refused() {
        let file = Arc::new(FileBytes::Owned(vec![1, 2, 3, 4]));
        assert_eq!(&*SectionBytes::new(&file, 1, 2).unwrap(), &[2, 3]);
        assert_eq!(&*SectionBytes::new(&file, 4, 0).unwrap(), &[] as &[u8]);
        assert!(SectionBytes::new(&file, 3, 2).is_none());
        assert!(SectionBytes::new(&file, u64::MAX, 2).is_none());
        assert!(SectionBytes::new(&file, 1, u64::MAX).is_none());
    }
}
