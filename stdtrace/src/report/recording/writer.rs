//! The recording's destination for its writer thread ([`crate::report::queue`]): records to
//! files, written in batches, rotated by size and count; each file starts with a header and
//! ends with the summary so far.

use std::{
    collections::VecDeque,
    fs::OpenOptions,
    io,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use super::{RecordingError, Sink};
use crate::report::{
    queue::{Destination, buffer::RecordFile},
    record::Header,
};

pub struct Writer {
    sink: Sink,
    header: Header,
    file: Option<RecordFile>,
    /// Bytes in the current file.
    size: u64,
    /// Records in the current file after its header.
    records: u64,
    /// The files of this recording, oldest first (directory sink).
    files: VecDeque<PathBuf>,
    summary_so_far: Option<Vec<u8>>,
    reopen: Arc<AtomicBool>,
    /// A write failed: said once.
    failing: bool,
    /// Records lost with a failed write, not counted yet.
    lost: u64,
}

impl Writer {
    pub fn open(
        sink: Sink,
        header: Header,
        reopen: Arc<AtomicBool>,
    ) -> Result<Self, RecordingError> {
        if let Sink::Directory { dir, .. } = &sink {
            std::fs::create_dir_all(dir).map_err(|source| RecordingError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        }
        let mut writer = Self {
            sink,
            header,
            file: None,
            size: 0,
            records: 0,
            files: VecDeque::new(),
            summary_so_far: None,
            reopen,
            failing: false,
            lost: 0,
        };
        let path = writer.next_path();
        writer
            .start_file(path.clone())
            .map_err(|source| RecordingError::Open { path, source })?;
        Ok(writer)
    }

    /// Whether `len` more bytes (and the summary that ends the file) would take the file
    /// past its size. A file always takes one record, however large.
    fn rotation_due(&self, len: u64) -> bool {
        let Sink::Directory { max_size, .. } = &self.sink else {
            return false;
        };
        let reserve = self.summary_so_far.as_ref().map_or(0, |s| s.len() as u64);
        self.records > 0 && self.size + len + reserve > *max_size
    }

    /// Ends this file with the summary so far and starts the next (for a file sink, the same
    /// path again: logrotate moved the old one away).
    fn rotate(&mut self) {
        if let Some(summary) = self.summary_so_far.clone() {
            self.write_line(&summary, false);
        }
        self.flush();
        self.file = None;
        self.header.file += 1;
        let path = self.next_path();
        if let Err(err) = self.start_file(path.clone()) {
            log::error!("opening {} for the recording: {err}", path.display());
            self.failing = true;
        }
    }

    fn next_path(&self) -> PathBuf {
        match &self.sink {
            Sink::File(path) => path.clone(),
            Sink::Directory { dir, .. } => dir.join(format!(
                "stdtrace-{}-{:05}.jsonl",
                self.header.recording, self.header.file
            )),
        }
    }

    fn start_file(&mut self, path: PathBuf) -> io::Result<()> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        self.file = Some(RecordFile::new(file));
        self.size = 0;
        self.records = 0;
        self.header.ts_ns = crate::events::monotonic_ns();
        let mut line = serde_json::to_vec(&self.header).map_err(io::Error::other)?;
        line.push(b'\n');
        self.write_line(&line, false);
        if let Sink::Directory { max_files, .. } = &self.sink {
            self.files.push_back(path);
            while self.files.len() > *max_files as usize {
                if let Some(oldest) = self.files.pop_front()
                    && let Err(err) = std::fs::remove_file(&oldest)
                {
                    log::warn!("removing {}: {err}", oldest.display());
                }
            }
        }
        Ok(())
    }

    /// Buffers one line (a record, or a header or summary when not `record`), written with
    /// the batch.
    fn write_line(&mut self, line: &[u8], record: bool) -> bool {
        let Some(file) = &mut self.file else {
            return false;
        };
        self.size += line.len() as u64;
        if file.push_line(line, record) {
            self.flush();
        }
        true
    }

    /// Writes what is buffered; records lost are counted in `lost`.
    fn flush(&mut self) {
        let Some(file) = &mut self.file else {
            return;
        };
        let (lost, result) = file.write_out();
        self.lost += lost;
        match result {
            Err(err) => {
                if !self.failing {
                    log::error!(
                        "writing the recording: {err}; its records are dropped and counted"
                    );
                    self.failing = true;
                }
            }
            Ok(()) => {
                if self.failing && lost == 0 {
                    log::warn!("writing the recording works again");
                    self.failing = false;
                }
            }
        }
    }
}

impl Destination for Writer {
    fn record(&mut self, line: &[u8]) -> u64 {
        if self.rotation_due(line.len() as u64) {
            self.rotate();
        }
        let lost = u64::from(!self.write_line(line, true));
        self.records += 1;
        lost + std::mem::take(&mut self.lost)
    }

    fn between_batches(&mut self) -> u64 {
        self.flush();
        if self.reopen.swap(false, Ordering::Relaxed) {
            log::info!("SIGHUP: reopening the recording");
            self.rotate();
        }
        std::mem::take(&mut self.lost)
    }

    fn summary_so_far(&mut self, line: Vec<u8>) {
        self.summary_so_far = Some(line);
    }

    fn close(&mut self, last: Option<&[u8]>) {
        // Without a last summary (the session stopped early): end with the one so far.
        let last = last
            .map(<[u8]>::to_vec)
            .or_else(|| self.summary_so_far.take());
        if let Some(last) = last {
            self.write_line(&last, false);
        }
        self.flush();
        self.file = None;
    }
}
