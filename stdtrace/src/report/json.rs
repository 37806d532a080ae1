//! JSON Lines: one object per line, the schema documented in the README.

use std::io::{self, Write};

use serde::Serialize;

/// Writes each record as one line of JSON.
pub struct JsonOutput {
    out: Box<dyn Write + Send>,
}

impl JsonOutput {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self { out }
    }

    pub fn record<T: Serialize>(&mut self, record: &T) -> io::Result<()> {
        // Serialized first, so that an I/O error on stdout keeps its kind (BrokenPipe).
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        self.out.write_all(&line)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
