//! stdout through the queue: the reporter writes records to [`QueuedStdout`] (an
//! `io::Write` whose every `write` is one record), and a writer thread writes them to fd 1
//! ([`StdoutSink`]), so that a pipe nobody reads stalls only that thread.

use std::{
    fs::File,
    io::{self, Write},
    os::fd::{AsFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use super::{Bounds, Destination, LineQueue, OutputStats, buffer::RecordFile};

/// stdout's queue holds this many records at most...
pub const STDOUT_QUEUE_RECORDS: usize = 4096;

/// ... and this many bytes (a write's record with its stack is about 2 KiB, so a hundred or
/// more records): its memory is bounded whatever the records' sizes. It absorbs a reader's
/// pauses; a reader that does not keep up loses records, counted, rather than stall tracing.
pub const STDOUT_QUEUE_BYTES: usize = 256 * 1024;

/// The reporter's side: every `write` call is one record, queued or dropped (and counted),
/// never waited for. It fails (`BrokenPipe`) only once stdout's reader went away.
#[derive(Clone)]
pub struct QueuedStdout {
    queue: LineQueue,
}

impl QueuedStdout {
    /// Starts the writer thread on a duplicate of fd 1; drops are counted in `stats`.
    pub fn start(stats: &Arc<OutputStats>) -> io::Result<Self> {
        Self::start_on(io::stdout().as_fd().try_clone_to_owned()?, stats)
    }

    /// The same on any file descriptor (tests).
    pub fn start_on(fd: OwnedFd, stats: &Arc<OutputStats>) -> io::Result<Self> {
        let gone = Arc::new(AtomicBool::new(false));
        let counted = Arc::clone(stats);
        let queue = LineQueue::start(
            "stdtrace-stdout",
            StdoutSink {
                out: RecordFile::new(File::from(fd)),
                failing: false,
                gone: Arc::clone(&gone),
            },
            Bounds {
                records: STDOUT_QUEUE_RECORDS,
                bytes: STDOUT_QUEUE_BYTES,
            },
            Arc::new(move |n| {
                counted
                    .stdout_records_dropped
                    .fetch_add(n, Ordering::Relaxed);
            }),
            gone,
        )?;
        Ok(Self { queue })
    }

    /// The queue, for the end of the run.
    pub fn queue(&self) -> &LineQueue {
        &self.queue
    }
}

impl Write for QueuedStdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.queue.gone() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.queue.push(buf.to_vec());
        Ok(buf.len())
    }

    /// The writer thread flushes each batch.
    fn flush(&mut self) -> io::Result<()> {
        if self.queue.gone() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        Ok(())
    }
}

/// The writer thread's side: records buffered, written in batches, and what a failed write
/// lost counted record by record.
struct StdoutSink {
    out: RecordFile,
    /// A write failed: said once.
    failing: bool,
    gone: Arc<AtomicBool>,
}

impl StdoutSink {
    /// Writes the buffer; returns how many of its records were lost.
    fn write_out(&mut self) -> u64 {
        let (lost, result) = self.out.write_out();
        match result {
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {
                self.gone.store(true, Ordering::Relaxed);
            }
            Err(err) => {
                if !self.failing {
                    log::error!("writing to stdout: {err}; its records are dropped and counted");
                    self.failing = true;
                }
            }
            Ok(()) => {
                if self.failing {
                    log::warn!("writing to stdout works again");
                    self.failing = false;
                }
            }
        }
        lost
    }
}

impl Destination for StdoutSink {
    fn record(&mut self, bytes: &[u8]) -> u64 {
        if self.gone.load(Ordering::Relaxed) {
            return 1;
        }
        if self.out.push(bytes) {
            return self.write_out();
        }
        0
    }

    fn between_batches(&mut self) -> u64 {
        if self.out.is_empty() {
            return 0;
        }
        self.write_out()
    }

    fn close(&mut self, last: Option<&[u8]>) {
        if let Some(last) = last {
            self.out.push(last);
        }
        if !self.out.is_empty() && self.write_out() > 0 && last.is_some() {
            log::error!("the summary could not be written to stdout");
        }
    }
}
