//! Records buffered for a file and written together, so that what a failed write loses is
//! known record by record (a `BufWriter` would keep or lose bytes, not records).

use std::{
    fs::File,
    io::{self, Write},
};

/// Bytes buffered before they are written, when records keep coming.
pub const WRITE_AT: usize = 64 * 1024;

/// A file and the records not written to it yet.
pub struct RecordFile {
    out: File,
    buffer: Vec<u8>,
    /// Where each buffered line ends, and whether it is a record (counted when lost) rather
    /// than a header or a summary so far.
    ends: Vec<(usize, bool)>,
    /// A record was cut short by a failed write: the next starts on a new line.
    broken_line: bool,
}

impl RecordFile {
    pub fn new(out: File) -> Self {
        Self {
            out,
            buffer: Vec::with_capacity(WRITE_AT),
            ends: Vec::new(),
            broken_line: false,
        }
    }

    /// Buffers one record; true when enough are buffered to write them.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        self.push_line(bytes, true)
    }

    /// Buffers one line; only records are counted when lost.
    pub fn push_line(&mut self, bytes: &[u8], record: bool) -> bool {
        if self.broken_line {
            self.buffer.push(b'\n');
            self.broken_line = false;
        }
        self.buffer.extend_from_slice(bytes);
        self.ends.push((self.buffer.len(), record));
        self.buffer.len() >= WRITE_AT
    }

    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// Writes what is buffered: how many records were lost, and why.
    pub fn write_out(&mut self) -> (u64, io::Result<()>) {
        let mut written = 0;
        let mut result = Ok(());
        while written < self.buffer.len() {
            match self.out.write(&self.buffer[written..]) {
                Ok(0) => {
                    result = Err(io::ErrorKind::WriteZero.into());
                    break;
                }
                Ok(n) => written += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    result = Err(err);
                    break;
                }
            }
        }
        let lost = self
            .ends
            .iter()
            .filter(|&&(end, record)| record && end > written)
            .count() as u64;
        if result.is_err() {
            // Cut inside a line: what follows starts a line of its own.
            self.broken_line = written > 0 && !self.ends.iter().any(|&(end, _)| end == written);
        }
        self.buffer.clear();
        self.ends.clear();
        (lost, result)
    }
}
