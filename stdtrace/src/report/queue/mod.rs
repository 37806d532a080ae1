//! stdtrace's own output never stalls tracing: every record it writes, to stdout or to a
//! recording, goes through a bounded queue to a writer thread ([`LineQueue`]). What does not
//! fit, or what the destination refuses, is dropped and counted ([`OutputStats`]), never
//! waited for. Only the end of a run waits, and only until a deadline.

pub mod buffer;
pub mod stdout;

use std::{
    io,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// How long records may wait in memory before they are flushed when none follow them.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Records written between flushes at most, when they keep coming.
const BATCH: usize = 256;

/// How often a send waiting for room (at the end of a run only) tries again.
const RETRY: Duration = Duration::from_millis(5);

/// How long the end of a run waits for its output (the records queued, then the summary)
/// to be written: stdout nobody reads must not make stdtrace hang at exit.
pub const FINAL_WAIT: Duration = Duration::from_secs(10);

/// Counts of records stdtrace's own output could not write, shared with whoever reports
/// them (the summary, `/metrics`). Read with [`OutputStats::snapshot`].
#[derive(Debug, Default)]
pub struct OutputStats {
    /// Records for stdout (text or JSON) dropped: its queue was full (stdout not read fast
    /// enough), or writing them failed.
    pub stdout_records_dropped: AtomicU64,
    /// Records for the recording (`--output FILE`, `record --output DIR`) dropped: its queue
    /// was full, or the disk failed them.
    pub recording_records_dropped: AtomicU64,
}

impl OutputStats {
    /// Every record dropped, whatever its destination (`output_records_dropped`).
    pub fn total(&self) -> u64 {
        self.stdout_records_dropped.load(Ordering::Relaxed)
            + self.recording_records_dropped.load(Ordering::Relaxed)
    }
}

/// How much a queue holds at most; past either bound, a record is dropped.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub records: usize,
    pub bytes: usize,
}

/// What goes to the writer thread.
pub enum Message {
    /// A record's bytes (a JSON line, a block of text).
    Record(Vec<u8>),
    /// The summary so far: the last line of a recorded file if it is rotated.
    SummarySoFar(Vec<u8>),
    /// Say when everything before is written.
    Sync(SyncSender<()>),
    /// The last record (the summary): write it and close.
    Close(Option<Vec<u8>>),
}

/// Where a writer thread puts records.
pub trait Destination: Send + 'static {
    /// Writes one record (buffered); returns how many records were lost doing so (this one,
    /// or buffered ones a failed write took with it): they are counted as dropped.
    fn record(&mut self, bytes: &[u8]) -> u64;
    /// Flushes, and does what is due between batches (reopening a file on SIGHUP). Returns
    /// how many records written since the last flush were lost with it.
    fn between_batches(&mut self) -> u64;
    /// The summary so far, kept for a file to end with.
    fn summary_so_far(&mut self, _bytes: Vec<u8>) {}
    /// The last record, or the end without one (the session stopped early).
    fn close(&mut self, last: Option<&[u8]>);
}

/// The sending side of a writer thread. Cloned handles share the queue.
#[derive(Clone)]
pub struct LineQueue {
    inner: Arc<Inner>,
}

struct Inner {
    sender: Mutex<Option<SyncSender<Message>>>,
    /// Bytes queued and not yet written.
    queued: Arc<AtomicUsize>,
    bounds: Bounds,
    dropped: Arc<dyn Fn(u64) + Send + Sync>,
    /// The thread ended (closed): set by the thread.
    finished: Mutex<Option<Receiver<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Set at the end of a run: sends wait for room until then instead of dropping.
    deadline: Mutex<Option<Instant>>,
    /// The destination can take nothing more (its reader went away).
    gone: Arc<AtomicBool>,
}

impl LineQueue {
    /// Starts a writer thread named `name` for `destination`. `dropped` is called with every
    /// count of records dropped; `gone` is set by the destination when it can take nothing
    /// more.
    pub fn start<D: Destination>(
        name: &str,
        destination: D,
        bounds: Bounds,
        dropped: Arc<dyn Fn(u64) + Send + Sync>,
        gone: Arc<AtomicBool>,
    ) -> io::Result<Self> {
        let (sender, receiver) = mpsc::sync_channel(bounds.records);
        let queued = Arc::new(AtomicUsize::new(0));
        let (done, finished) = mpsc::sync_channel(1);
        let thread = WriterThread {
            destination,
            queued: Arc::clone(&queued),
            dropped: Arc::clone(&dropped),
        };
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                thread.run(&receiver);
                let _ = done.send(());
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                sender: Mutex::new(Some(sender)),
                queued,
                bounds,
                dropped,
                finished: Mutex::new(Some(finished)),
                thread: Mutex::new(Some(thread)),
                deadline: Mutex::new(None),
                gone,
            }),
        })
    }

    /// Whether the destination can take nothing more (stdout's reader went away).
    pub fn gone(&self) -> bool {
        self.inner.gone.load(Ordering::Relaxed)
    }

    /// Queues a record, or counts it as dropped if the writer is that far behind (at the end
    /// of a run, after waiting for room until the deadline).
    pub fn push(&self, bytes: Vec<u8>) {
        let len = bytes.len();
        let queued = self.inner.queued.load(Ordering::Relaxed);
        if queued > 0 && queued + len > self.inner.bounds.bytes && self.deadline().is_none() {
            (self.inner.dropped)(1);
            return;
        }
        self.inner.queued.fetch_add(len, Ordering::Relaxed);
        if !self.send(Message::Record(bytes)) {
            self.inner.queued.fetch_sub(len, Ordering::Relaxed);
            (self.inner.dropped)(1);
        }
    }

    /// The summary so far; if the writer is behind, the one before stays.
    pub fn summary_so_far(&self, bytes: Vec<u8>) {
        let sender = self.sender();
        if let Some(sender) = sender {
            let _ = sender.try_send(Message::SummarySoFar(bytes));
        }
    }

    /// From now on, sends wait for room until `deadline` rather than drop.
    pub fn wait_until(&self, deadline: Instant) {
        *self
            .inner
            .deadline
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(deadline);
    }

    /// Waits (until the deadline set by [`wait_until`](Self::wait_until), or at once without
    /// one) for everything queued to be written; false if it was not by then.
    pub fn sync(&self) -> bool {
        let (done, written) = mpsc::sync_channel(1);
        if !self.send(Message::Sync(done)) {
            return false;
        }
        written.recv_timeout(self.time_left()).is_ok()
    }

    /// Writes `last` after everything queued and ends the thread, waiting until the deadline
    /// at most; false if it was not written by then (the thread is left to the process's
    /// exit).
    pub fn close(&self, last: Option<Vec<u8>>) -> bool {
        let sent = self.send(Message::Close(last));
        self.inner
            .sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let finished = self
            .inner
            .finished
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let ended =
            finished.is_some_and(|finished| finished.recv_timeout(self.time_left()).is_ok());
        if ended
            && let Some(thread) = self
                .inner
                .thread
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            && thread.join().is_err()
        {
            log::error!("an output thread failed");
        }
        sent && ended
    }

    fn sender(&self) -> Option<SyncSender<Message>> {
        self.inner
            .sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn deadline(&self) -> Option<Instant> {
        *self
            .inner
            .deadline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn time_left(&self) -> Duration {
        self.deadline().map_or(Duration::ZERO, |deadline| {
            deadline.saturating_duration_since(Instant::now())
        })
    }

    /// Sends without waiting, or (at the end of a run) waiting for room until the deadline.
    fn send(&self, message: Message) -> bool {
        let Some(sender) = self.sender() else {
            return false;
        };
        let mut message = message;
        loop {
            match sender.try_send(message) {
                Ok(()) => return true,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    if self.time_left().is_zero() {
                        return false;
                    }
                    message = back;
                    std::thread::sleep(RETRY);
                }
            }
        }
    }
}

/// The writer thread's side.
struct WriterThread<D> {
    destination: D,
    queued: Arc<AtomicUsize>,
    dropped: Arc<dyn Fn(u64) + Send + Sync>,
}

impl<D: Destination> WriterThread<D> {
    fn run(mut self, receiver: &Receiver<Message>) {
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
        // The session went away without a last record.
        self.destination.close(None);
    }

    fn between_batches(&mut self) {
        let lost = self.destination.between_batches();
        if lost > 0 {
            (self.dropped)(lost);
        }
    }

    /// Handles one message; true once closed.
    fn handle(&mut self, message: Message) -> bool {
        match message {
            Message::Record(bytes) => {
                let lost = self.destination.record(&bytes);
                self.queued.fetch_sub(bytes.len(), Ordering::Relaxed);
                if lost > 0 {
                    (self.dropped)(lost);
                }
            }
            Message::SummarySoFar(bytes) => self.destination.summary_so_far(bytes),
            Message::Sync(done) => {
                self.between_batches();
                let _ = done.send(());
            }
            Message::Close(last) => {
                self.destination.close(last.as_deref());
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests;
