//! The reporter thread: it names stacks and writes reports, so that slow symbolization never
//! delays capturing what a writer's exit takes with it. It owns what is told: the namer, the
//! SIGPIPE stories, the repeats, the output; at the end it builds the summary from the
//! kernel's side ([`Ending`]) and its own ([`Told`]).

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, Receiver, Sender, SyncSender},
    },
    thread::JoinHandle,
};

use anyhow::{Context as _, Result};

use super::summary::{self, Ending, Told};
use crate::{
    aggregate::{
        repeats::{Repeats, Seen},
        sigpipe::SigpipeTracker,
    },
    enrich::{call_path::Learned, capture::CapturedWrite, namer::Namer},
    events::SigpipeEvent,
    report::{
        Output,
        record::{RecordType, RepeatReport, SigpipeReport},
    },
};

/// Batches the reporter may fall behind by before capture waits for it (and the ring buffer,
/// not memory, absorbs the excess: its drops are counted).
pub const REPORTER_BACKLOG: usize = 16;

/// What the reporter thread is asked to do.
pub enum ToReporter {
    Writes(Vec<CapturedWrite>),
    Sigpipe(SigpipeEvent),
    /// A process ended (with its wait status): how a SIGPIPE story ends.
    Exit {
        pid: u32,
        ts_ns: u64,
        exit_code: u32,
    },
    /// Periodic work (text output says how often stacks repeated).
    Tick,
    /// Counts of repeated failures that changed.
    Repeats(Vec<RepeatReport>),
    /// Print the summary and stop.
    Finish(Box<Ending>),
}

/// The reporter thread, and the way to it.
pub struct Reporter {
    sender: Option<SyncSender<ToReporter>>,
    thread: Option<JoinHandle<()>>,
    /// Set when stdout is closed (or fails): nothing more can be reported.
    closed: Arc<AtomicBool>,
}

impl Reporter {
    /// Starts the thread; call paths the namer meets for the first time go to `learned`.
    pub fn spawn(output: Output, learned: Sender<Vec<(Learned, u32)>>) -> Result<Self> {
        let (sender, receiver) = mpsc::sync_channel(REPORTER_BACKLOG);
        let closed = Arc::new(AtomicBool::new(false));
        let state = Telling::new(output, Namer::new(learned), Arc::clone(&closed));
        let thread = std::thread::Builder::new()
            .name("stdtrace-report".to_owned())
            .spawn(move || state.run(receiver))
            .context("starting the reporter thread")?;
        Ok(Self {
            sender: Some(sender),
            thread: Some(thread),
            closed,
        })
    }

    pub fn send(&self, message: ToReporter) {
        if let Some(sender) = &self.sender {
            // The thread only stops after Finish; a send error means it panicked, which the
            // join in `finish` reports.
            let _ = sender.send(message);
        }
    }

    pub fn closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Prints the summary and waits for every report before it to be written.
    pub fn finish(&mut self, ending: Ending) {
        self.send(ToReporter::Finish(Box::new(ending)));
        self.sender = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("the reporter thread failed");
        }
    }
}

/// The reporter thread's state.
pub struct Telling {
    output: Output,
    namer: Namer,
    sigpipes: SigpipeTracker,
    repeats: Repeats,
    reported: u64,
    blocked_reported: u64,
    closed: Arc<AtomicBool>,
}

impl Telling {
    pub fn new(output: Output, namer: Namer, closed: Arc<AtomicBool>) -> Self {
        Self {
            output,
            namer,
            sigpipes: SigpipeTracker::new(),
            repeats: Repeats::new(),
            reported: 0,
            blocked_reported: 0,
            closed,
        }
    }

    fn open(&self) -> bool {
        !self.closed.load(Ordering::Relaxed)
    }

    /// Notes a failed write to the output: nothing more can be reported.
    fn check(&self, result: io::Result<()>) {
        if let Err(err) = result {
            if err.kind() != io::ErrorKind::BrokenPipe {
                log::error!("writing the report: {err}");
            }
            self.closed.store(true, Ordering::Relaxed);
        }
    }

    fn tell(&mut self, told: Vec<SigpipeReport>) {
        for report in told {
            if self.open() {
                let result = self.output.sigpipe(&report);
                self.check(result);
            }
        }
    }

    /// Handles messages until `Finish` (or until the session is gone).
    pub fn run(mut self, receiver: Receiver<ToReporter>) {
        for message in receiver {
            if self.handle(message) {
                break;
            }
        }
    }

    /// Handles one message; true once the summary is written.
    pub fn handle(&mut self, message: ToReporter) -> bool {
        match message {
            ToReporter::Writes(batch) => {
                for captured in batch {
                    let report = self.namer.report(captured);
                    let seen = self.repeats.observe(&report, report.repeat);
                    if seen != Seen::SamePath {
                        if report.record_type == RecordType::WriteError {
                            self.reported += 1;
                        } else {
                            self.blocked_reported += 1;
                        }
                        if self.open() {
                            let result = self.output.write(&report, seen);
                            self.check(result);
                        }
                    }
                    let told = self.sigpipes.write(&report);
                    self.tell(told);
                }
                if self.open() {
                    let result = self.output.flush();
                    self.check(result);
                }
            }
            ToReporter::Sigpipe(event) => {
                let told = self.sigpipes.signal(&event);
                self.tell(told);
                let _ = self.output.flush();
            }
            ToReporter::Exit {
                pid,
                ts_ns,
                exit_code,
            } => {
                self.namer.process_exited(pid);
                let told = self.sigpipes.exit(pid, ts_ns, exit_code);
                self.tell(told);
                let _ = self.output.flush();
            }
            ToReporter::Repeats(counted) => {
                self.repeats.kernel(counted);
                if self.open() {
                    let result = self.output.repeats(&mut self.repeats);
                    self.check(result);
                }
            }
            ToReporter::Tick => {
                if self.open() {
                    let result = self.output.repeats(&mut self.repeats);
                    self.check(result);
                }
                let told = self.sigpipes.tick();
                self.tell(told);
                if self.open() {
                    let result = self.output.tick(&mut self.repeats);
                    self.check(result);
                }
            }
            ToReporter::Finish(ending) => {
                if self.open() {
                    let result = self.output.repeats(&mut self.repeats);
                    self.check(result);
                }
                let told = self.sigpipes.tick();
                self.tell(told);
                let summary = summary::build(
                    *ending,
                    Told {
                        reported: self.reported,
                        blocked: self.blocked_reported,
                        folded: self.repeats.folded_total(),
                        sigpipes: &self.sigpipes,
                    },
                );
                if self.open() {
                    let result = self.output.summary(&summary, &mut self.repeats);
                    self.check(result);
                }
                return true;
            }
        }
        false
    }
}
