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
        atomic::{AtomicBool, Ordering},
    },
};

use serde::Serialize;

use self::writer::Writer;
use super::{
    queue::{Bounds, LineQueue, OutputStats},
    record::{Header, Summary},
};

/// Records queued for the writer thread at most; more are counted as dropped.
pub const RECORDING_QUEUE: usize = 4096;

/// Bytes queued for the writer thread at most.
pub const RECORDING_QUEUE_BYTES: usize = 4 << 20;

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
    queue: LineQueue,
    stats: Arc<OutputStats>,
    reopen: Arc<AtomicBool>,
}

impl Recording {
    /// Opens the first file (so that a path that cannot be written is an error at once) and
    /// starts the writer thread. `header` is the template of every file's first record;
    /// records dropped are counted in `stats`.
    pub fn start(
        sink: Sink,
        header: Header,
        stats: Arc<OutputStats>,
    ) -> Result<Self, RecordingError> {
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = Writer::open(sink, header, Arc::clone(&reopen))?;
        let counted = Arc::clone(&stats);
        let queue = LineQueue::start(
            "stdtrace-record",
            writer,
            Bounds {
                records: RECORDING_QUEUE,
                bytes: RECORDING_QUEUE_BYTES,
            },
            Arc::new(move |n| {
                counted
                    .recording_records_dropped
                    .fetch_add(n, Ordering::Relaxed);
            }),
            Arc::new(AtomicBool::new(false)),
        )
        .map_err(RecordingError::Thread)?;
        Ok(Self {
            queue,
            stats,
            reopen,
        })
    }

    /// The flag that SIGHUP sets: the writer reopens its file (or starts a new one).
    pub fn reopen_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.reopen)
    }

    /// Queues a record, or counts it as dropped if the writer is that far behind.
    pub fn record<T: Serialize>(&self, record: &T) {
        match line_of(record) {
            Some(line) => self.queue.push(line),
            None => {
                self.stats
                    .recording_records_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The summary so far, which ends a file when it is rotated (not written now). If the
    /// writer is behind, the one before stays: it is replaced at the next.
    pub fn summary_so_far(&self, summary: &Summary) {
        if let Some(line) = line_of(summary) {
            self.queue.summary_so_far(line);
        }
    }

    /// Waits (until `deadline`) for every record queued to be written, puts the count of
    /// those that could not be into `summary`, writes it last and closes the file.
    pub fn finish(&mut self, summary: &mut Summary, deadline: std::time::Instant) {
        self.queue.wait_until(deadline);
        if !self.queue.sync() {
            log::error!("the recording did not write its last records in time");
        }
        summary.recording_records_dropped =
            Some(self.stats.recording_records_dropped.load(Ordering::Relaxed));
        summary.add_up_output_drops();
        if !self.queue.close(line_of(summary)) {
            log::error!("the recording's summary could not be written in time");
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        // Without a summary (the reporter stopped early): what was queued is still written,
        // for a while at most.
        self.queue
            .wait_until(std::time::Instant::now() + super::queue::FINAL_WAIT);
        self.queue.close(None);
    }
}

fn line_of<T: Serialize>(record: &T) -> Option<Vec<u8>> {
    let mut line = serde_json::to_vec(record).ok()?;
    line.push(b'\n');
    Some(line)
}

#[cfg(test)]
mod tests;
