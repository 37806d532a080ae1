//! Recordings: every record a run reports, kept in JSON Lines files (`record --output DIR`,
//! `--output FILE`) for `stdtrace report` to read back ([`read`]).
//!
//! Recording never blocks tracing: records go through a bounded queue to a writer thread
//! ([`writer`]), and what does not fit, or what the disk refuses, is counted
//! (`output_records_dropped` in the summary), never waited for.

pub mod header;
pub mod read;
mod writer;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{self, SyncSender, TrySendError},
    },
    thread::JoinHandle,
};

use serde::Serialize;

use self::writer::{Message, Writer};
use super::record::{Header, Summary};

/// Records queued for the writer thread at most; more are counted as dropped.
pub const RECORDING_QUEUE: usize = 4096;

/// Where a recording goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sink {
    /// One file, appended to; reopened on SIGHUP (after logrotate moved it).
    File(PathBuf),
    /// Files in a directory, a new one when the current one would pass `max_size` bytes,
    /// the oldest removed beyond `max_files`.
    Directory {
        dir: PathBuf,
        max_size: u64,
        max_files: u32,
    },
}

/// Errors starting a recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("creating the recording directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening {path} for the recording")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the recording thread")]
    Thread(#[source] std::io::Error),
}

/// The way to the writer thread.
pub struct Recording {
    queue: Option<SyncSender<Message>>,
    thread: Option<JoinHandle<()>>,
    /// Records not kept: the queue was full, or writing them failed.
    dropped: Arc<AtomicU64>,
    reopen: Arc<AtomicBool>,
}

impl Recording {
    /// Opens the first file (so that a path that cannot be written is an error at once) and
    /// starts the writer thread. `header` is the template of every file's first record.
    pub fn start(sink: Sink, header: Header) -> Result<Self, RecordingError> {
        let dropped = Arc::new(AtomicU64::new(0));
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = Writer::open(sink, header, Arc::clone(&dropped), Arc::clone(&reopen))?;
        let (queue, receiver) = mpsc::sync_channel(RECORDING_QUEUE);
        let thread = std::thread::Builder::new()
            .name("stdtrace-record".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(RecordingError::Thread)?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
            dropped,
            reopen,
        })
    }

    /// The flag that SIGHUP sets: the writer reopens its file (or starts a new one).
    pub fn reopen_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.reopen)
    }

    /// Its count of records not kept, as it goes (for `/metrics`).
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.dropped)
    }

    /// Queues a record, or counts it as dropped if the writer is that far behind.
    pub fn record<T: Serialize>(&self, record: &T) {
        let Some(line) = line_of(record) else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let sent = self
            .queue
            .as_ref()
            .map(|queue| queue.try_send(Message::Record(line)));
        match sent {
            Some(Ok(())) => {}
            Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) | None => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The summary so far, which ends a file when it is rotated (not written now). If the
    /// writer is behind, the one before stays: it is replaced at the next.
    pub fn summary_so_far(&self, summary: &Summary) {
        if let (Some(line), Some(queue)) = (line_of(summary), &self.queue) {
            let _ = queue.try_send(Message::SummarySoFar(line));
        }
    }

    /// Waits for every record queued to be written, puts the count of those that could not
    /// be into `summary`, writes it last and closes the file.
    pub fn finish(&mut self, summary: &mut Summary) {
        let Some(queue) = self.queue.take() else {
            return;
        };
        let (done, written) = mpsc::sync_channel(1);
        // Blocking sends: the run is over, and the summary must not be dropped.
        if queue.send(Message::Sync(done)).is_ok() {
            let _ = written.recv();
        }
        summary.output_records_dropped = Some(self.dropped.load(Ordering::Relaxed));
        if let Some(line) = line_of(summary) {
            let _ = queue.send(Message::Close(line));
        }
        drop(queue);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("the recording thread failed");
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        // Without a summary (the reporter stopped early): what was queued is still written.
        self.queue = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn line_of<T: Serialize>(record: &T) -> Option<Vec<u8>> {
    let mut line = serde_json::to_vec(record).ok()?;
    line.push(b'\n');
    Some(line)
}

#[cfg(test)]
mod tests;
