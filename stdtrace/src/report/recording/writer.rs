//! The writer thread: records from the queue to files, flushed in batches, rotated by size
//! and count; each file starts with a header and ends with the summary so far.

use std::{
    collections::VecDeque,
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender},
    },
    time::Duration,
};

use super::{RecordingError, Sink};
use crate::report::record::Header;

/// How long records may wait in memory before they are flushed when none follow them.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Records written between flushes at most, when they keep coming.
const BATCH: usize = 256;

pub enum Message {
    /// A record's line.
    Record(Vec<u8>),
    /// The summary so far: the last line of this file if it is rotated.
    SummarySoFar(Vec<u8>),
    /// Say when everything before is written.
    Sync(SyncSender<()>),
    /// The final summary: write it and close.
    Close(Vec<u8>),
}

pub struct Writer {
    sink: Sink,
    header: Header,
    file: Option<BufWriter<File>>,
    /// Bytes in the current file.
    size: u64,
    /// Records in the current file after its header.
    records: u64,
    /// The files of this recording, oldest first (directory sink).
    files: VecDeque<PathBuf>,
    summary_so_far: Option<Vec<u8>>,
    dropped: Arc<AtomicU64>,
    reopen: Arc<AtomicBool>,
    /// A write failed: said once.
    failing: bool,
}

impl Writer {
    pub fn open(
        sink: Sink,
        header: Header,
        dropped: Arc<AtomicU64>,
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
            dropped,
            reopen,
            failing: false,
        };
        let path = writer.next_path();
        writer
            .start_file(path.clone())
            .map_err(|source| RecordingError::Open { path, source })?;
        Ok(writer)
    }

    pub fn run(mut self, receiver: Receiver<Message>) {
        loop {
            let message = match receiver.recv_timeout(FLUSH_EVERY) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => {
                    self.between_batches();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if self.handle(message) {
                return;
            }
            // A batch: whatever else is queued, then one flush.
            for _ in 0..BATCH {
                match receiver.try_recv() {
                    Ok(message) => {
                        if self.handle(message) {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            self.between_batches();
        }
        // The session went away without a final summary: end with the one so far.
        if let Some(summary) = self.summary_so_far.take() {
            self.write(&summary);
        }
        self.flush();
    }

    /// Handles one message; true once closed.
    fn handle(&mut self, message: Message) -> bool {
        match message {
            Message::Record(line) => {
                if self.rotation_due(line.len() as u64) {
                    self.rotate();
                }
                if !self.write(&line) {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                self.records += 1;
            }
            Message::SummarySoFar(line) => self.summary_so_far = Some(line),
            Message::Sync(done) => {
                self.flush();
                let _ = done.send(());
            }
            Message::Close(line) => {
                self.write(&line);
                self.flush();
                self.file = None;
                return true;
            }
        }
        false
    }

    fn between_batches(&mut self) {
        self.flush();
        if self.reopen.swap(false, Ordering::Relaxed) {
            log::info!("SIGHUP: reopening the recording");
            self.rotate();
        }
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
            self.write(&summary);
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
        self.file = Some(BufWriter::with_capacity(64 * 1024, file));
        self.size = 0;
        self.records = 0;
        self.header.ts_ns = crate::events::monotonic_ns();
        let mut line = serde_json::to_vec(&self.header).map_err(io::Error::other)?;
        line.push(b'\n');
        self.write(&line);
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

    /// Writes one line; false if it could not be.
    fn write(&mut self, line: &[u8]) -> bool {
        let Some(file) = &mut self.file else {
            return false;
        };
        match file.write_all(line) {
            Ok(()) => {
                self.size += line.len() as u64;
                true
            }
            Err(err) => {
                self.fail(&err);
                false
            }
        }
    }

    fn flush(&mut self) {
        if let Some(file) = &mut self.file
            && let Err(err) = file.flush()
        {
            self.fail(&err);
        }
    }

    fn fail(&mut self, err: &io::Error) {
        if !self.failing {
            log::error!("writing the recording: {err}");
            self.failing = true;
        }
    }
}
