//! The bytes a parsed table reads: borrowed from the file's bytes while it is parsed, then
//! either copied ([`TableBytes::into_owned`]) or shared with whoever owns the whole file
//! ([`TableBytes::into_shared`]), so that a long-lived table of a memory-mapped binary costs
//! no copy of its (often many megabytes of) pc-line table.

use std::{fmt, ops::Deref, sync::Arc};

/// The whole content of a file, owned elsewhere (a memory map, say) and shared.
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A range of bytes a table reads.
#[derive(Clone)]
pub(crate) enum TableBytes<'data> {
    Borrowed(&'data [u8]),
    Owned(Vec<u8>),
    /// `start..end` of `file`.
    Shared {
        file: SharedBytes,
        start: usize,
        end: usize,
    },
}

impl TableBytes<'_> {
    /// A copy that owns its bytes (or still shares them).
    pub(crate) fn into_owned(self) -> TableBytes<'static> {
        match self {
            TableBytes::Borrowed(bytes) => TableBytes::Owned(bytes.to_vec()),
            TableBytes::Owned(bytes) => TableBytes::Owned(bytes),
            TableBytes::Shared { file, start, end } => TableBytes::Shared { file, start, end },
        }
    }

    /// Bytes that no longer borrow: a range of `file` when the borrowed bytes lie inside it,
    /// else a copy.
    pub(crate) fn into_shared(self, file: &SharedBytes) -> TableBytes<'static> {
        let TableBytes::Borrowed(bytes) = self else {
            return self.into_owned();
        };
        let whole: &[u8] = (**file).as_ref();
        // Addresses are only compared, never dereferenced: the range found is read through
        // `file` itself, and checked against its length when it is.
        let base = whole.as_ptr() as usize;
        let at = bytes.as_ptr() as usize;
        let inside = at
            .checked_sub(base)
            .and_then(|start| Some((start, start.checked_add(bytes.len())?)))
            .filter(|(_, end)| *end <= whole.len());
        match inside {
            Some((start, end)) => TableBytes::Shared {
                file: Arc::clone(file),
                start,
                end,
            },
            None => TableBytes::Owned(bytes.to_vec()),
        }
    }
}

impl Deref for TableBytes<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            TableBytes::Borrowed(bytes) => bytes,
            TableBytes::Owned(bytes) => bytes,
            // The range was checked against the file when it was made; `get` keeps this total.
            TableBytes::Shared { file, start, end } => {
                (**file).as_ref().get(*start..*end).unwrap_or(&[])
            }
        }
    }
}

impl fmt::Debug for TableBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            TableBytes::Borrowed(_) => "borrowed",
            TableBytes::Owned(_) => "owned",
            TableBytes::Shared { .. } => "shared",
        };
        write!(f, "{} {kind} bytes", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_bytes_inside_the_file_are_shared_and_others_copied() {
        let file: SharedBytes = Arc::new(vec![1u8, 2, 3, 4, 5]);
        let whole: &[u8] = (*file).as_ref();
        let shared = TableBytes::Borrowed(&whole[1..4]).into_shared(&file);
        assert!(matches!(
            shared,
            TableBytes::Shared {
                start: 1,
                end: 4,
                ..
            }
        ));
        assert_eq!(&*shared, &[2, 3, 4]);

        let elsewhere = [2u8, 3, 4];
        let copied = TableBytes::Borrowed(&elsewhere[..]).into_shared(&file);
        assert!(matches!(copied, TableBytes::Owned(_)));
        assert_eq!(&*copied, &[2, 3, 4]);
        assert_eq!(format!("{copied:?}"), "3 owned bytes");
    }
}
