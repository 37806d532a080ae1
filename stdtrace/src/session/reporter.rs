//! The reporter thread: it names stacks and writes reports, so that slow symbolization never
//! delays capturing what a writer's exit takes with it. It owns what is told: the namer, the
//! SIGPIPE stories, the repeats, the output; at the end it builds the summary from the
//! kernel's side ([`Ending`]) and its own ([`Told`]).

use std::{
    collections::{HashMap, HashSet},
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
        metrics::Instruments,
        repeats::{Repeats, Seen},
        sigpipe::SigpipeTracker,
    },
    enrich::{call_path::Learned, capture::CapturedWrite, namer::Namer},
    events::SigpipeEvent,
    report::{
        Output,
        queue::{FINAL_WAIT, LineQueue, OutputStats},
        record::{BlockedState, RecordType, RepeatReport, SigpipeReport},
    },
};

/// stdout's queue and the counts of what its outputs dropped, for the end of the run.
pub struct OutputEnd {
    pub stdout: LineQueue,
    pub stats: Arc<OutputStats>,
}

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
    /// Processes that exited were folded (after their last counts were sent): their stories
    /// and repeats forget them; `sigpipes` are their kernel SIGPIPE counts per (pid, fd).
    Folded {
        pids: HashSet<u32>,
        sigpipes: HashMap<(u32, i32), u64>,
    },
    /// The kernel's side of the summary so far, for a recording's files to end with.
    Progress(Box<Ending>),
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
    /// With `metrics`, SIGPIPE fates and blocked writes' durations are counted there too.
    pub fn spawn(
        output: Output,
        end: OutputEnd,
        learned: Sender<Vec<(Learned, u32)>>,
        metrics: Option<Instruments>,
    ) -> Result<Self> {
        let (sender, receiver) = mpsc::sync_channel(REPORTER_BACKLOG);
        let closed = Arc::new(AtomicBool::new(false));
        let mut state = Telling::new(output, Namer::new(learned), Arc::clone(&closed));
        state.end = Some(end);
        state.metrics = metrics;
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

impl Telling {
    /// Writes the summary after everything queued before it, waiting a bounded time: stdout
    /// that nobody reads must not keep stdtrace from exiting.
    fn finish(&mut self, summary: &mut crate::report::record::Summary) {
        let deadline = std::time::Instant::now() + FINAL_WAIT;
        if let Some(end) = &self.end {
            end.stdout.wait_until(deadline);
            // The count is exact once what was queued before is written (or failed).
            let synced = end.stdout.sync();
            summary.stdout_records_dropped =
                Some(end.stats.stdout_records_dropped.load(Ordering::Relaxed));
            if !synced {
                log::warn!(
                    "stdout took no records for {}s; the summary is queued after them",
                    FINAL_WAIT.as_secs()
                );
            }
            summary.add_up_output_drops();
        }
        if self.open() {
            let result = self.output.summary(summary, &mut self.repeats, deadline);
            self.check(result);
        }
        if let Some(end) = &self.end
            && !end.stdout.close(None)
        {
            log::error!(
                "the summary could not be written to stdout within {}s (nobody reads it); {} records were dropped",
                FINAL_WAIT.as_secs(),
                end.stats.total()
            );
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
    /// stdout's queue, waited for (a bounded time) at the end.
    end: Option<OutputEnd>,
    /// `--metrics`: SIGPIPE fates and blocked writes' durations.
    metrics: Option<Instruments>,
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
            end: None,
            metrics: None,
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
            if let Some(metrics) = &self.metrics {
                metrics.sigpipe_told(report.fate);
            }
            if self.open() {
                let result = self.output.sigpipe(&report);
                self.check(result);
            }
        }
    }

    /// What was told so far, for the summary.
    fn told(&self) -> Told<'_> {
        Told {
            reported: self.reported,
            blocked: self.blocked_reported,
            folded: self.repeats.folded_total(),
            sigpipes: &self.sigpipes,
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
                    if let (Some(metrics), Some(BlockedState::Slow | BlockedState::Resumed)) =
                        (&self.metrics, report.state)
                        && let Some(ms) = report.duration_ms
                    {
                        metrics.blocked_write_ended(std::time::Duration::from_millis(ms));
                    }
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
                let told = self.sigpipes.exit(pid, ts_ns, exit_code);
                self.tell(told);
                let _ = self.output.flush();
            }
            ToReporter::Folded { pids, sigpipes } => {
                let told = self.sigpipes.retire(&pids, &sigpipes);
                self.tell(told);
                self.repeats.processes_gone(&pids);
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
            ToReporter::Progress(ending) => {
                let summary = summary::build(*ending, self.told());
                self.output.summary_so_far(&summary);
            }
            ToReporter::Finish(ending) => {
                if self.open() {
                    let result = self.output.repeats(&mut self.repeats);
                    self.check(result);
                }
                let told = self.sigpipes.tick();
                self.tell(told);
                let mut summary = summary::build(*ending, self.told());
                self.finish(&mut summary);
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, io::Write, time::Duration};

    use serde_json::Value;
    use stdtrace_common::{counter, syscall};

    use super::*;
    use crate::{
        enrich::{capture::ProcessImage, inspector::fake::FakeInspector},
        events::samples::failed_write,
        report::{Captured, Clock, JsonOutput, TextOutput, record::TargetKind},
        session::summary::Stop,
    };

    /// Two failed writes from the same place (no stack: the kernel could not read the
    /// registers), captured through the fake inspector.
    fn two_failures() -> Vec<CapturedWrite> {
        let mut capture = crate::enrich::capture::Capture::new();
        let mut go = crate::enrich::go::GoTracker::new(None);
        let mut inspector = FakeInspector::default();
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        let events = vec![failed_write(fd, 32), failed_write(fd, 32)];
        let mut captured = capture.capture(events, &mut go, &mut inspector);
        for write in &mut captured {
            write.image = ProcessImage::Unavailable("gone".into());
            // The file was closed since: keep what the capture saw.
            assert_eq!(write.target.kind, TargetKind::File);
        }
        captured
    }

    fn ending(pid: u32, fd: i32) -> Ending {
        let mut counters = [0; counter::COUNT as usize];
        counters[counter::MATCHED as usize] = 5;
        counters[counter::REPEATS as usize] = 3;
        Ending {
            stop: Stop::Interrupted,
            elapsed: Duration::from_millis(1500),
            command: None,
            counters,
            failures: HashMap::from([((pid, fd, 32, syscall::WRITE), 5)]),
            sigpipe_counts: HashMap::new(),
            stuck: Vec::new(),
            comms: HashMap::from([(pid, "writer".to_owned())]),
            by_binary: Vec::new(),
            tracked: Default::default(),
            map_entries: Default::default(),
            call_sites_full: 0,
            containers: HashMap::new(),
        }
    }

    fn telling(output: Output) -> Telling {
        let (learned, _) = mpsc::channel();
        Telling::new(output, Namer::new(learned), Arc::default())
    }

    #[test]
    fn json_prints_every_failure_and_a_summary_that_adds_up() {
        let out = Captured::default();
        let mut telling = telling(Output::Json {
            json: JsonOutput::new(Box::new(out.clone())),
            quiet: false,
        });
        let captured = two_failures();
        let (pid, fd) = (captured[0].event.pid, captured[0].event.fd);
        assert!(!telling.handle(ToReporter::Writes(captured)));
        assert!(!telling.handle(ToReporter::Tick));
        assert!(telling.handle(ToReporter::Finish(Box::new(ending(pid, fd)))));
        let records: Vec<Value> = out
            .text()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let types: Vec<&str> = records
            .iter()
            .map(|r| r["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["write_error", "write_error", "summary"]);
        assert_eq!(records[0]["errno"], "EPIPE");
        assert_eq!(
            records[0]["stack_end"],
            "the kernel could not read the thread's registers"
        );
        let summary = &records[2];
        assert_eq!(summary["stopped"], "interrupted");
        assert_eq!(
            (
                summary["failed_writes"].as_u64(),
                summary["reported"].as_u64()
            ),
            (Some(5), Some(2))
        );
        assert_eq!(
            (summary["repeats"].as_u64(), summary["dropped"].as_u64()),
            (Some(3), Some(0))
        );
        assert_eq!(summary["totals"][0]["failures"], 5);
        assert_eq!(summary["totals"][0]["comm"], "writer");
        assert_eq!(summary["duration_ms"], 1500);
    }

    #[test]
    fn text_prints_one_block_and_counts_the_same_stack() {
        let out = Captured::default();
        let mut telling = telling(Output::Text(TextOutput::new(
            Box::new(out.clone()),
            false,
            false,
            Clock::now(),
        )));
        let captured = two_failures();
        let (pid, fd) = (captured[0].event.pid, captured[0].event.fd);
        telling.handle(ToReporter::Writes(captured));
        telling.handle(ToReporter::Finish(Box::new(ending(pid, fd))));
        let text = out.text();
        assert_eq!(
            text.matches("failed: EPIPE (Broken pipe)").count(),
            1,
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "  ... pid {pid} (writer) write({fd}) EPIPE: 1 more from the same stack (2 in all)"
            )),
            "{text}"
        );
        assert!(
            text.contains("failed writes: 5 (2 reported, 3 repeats of them counted, 0 dropped)"),
            "{text}"
        );
    }

    #[test]
    fn a_closed_output_stops_telling_but_the_summary_is_still_built() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let closed = Arc::new(AtomicBool::new(false));
        let (learned, _) = mpsc::channel();
        let mut telling = Telling::new(
            Output::Json {
                json: JsonOutput::new(Box::new(Closed)),
                quiet: false,
            },
            Namer::new(learned),
            Arc::clone(&closed),
        );
        let captured = two_failures();
        let (pid, fd) = (captured[0].event.pid, captured[0].event.fd);
        telling.handle(ToReporter::Writes(captured));
        assert!(closed.load(Ordering::Relaxed));
        assert!(telling.handle(ToReporter::Finish(Box::new(ending(pid, fd)))));
        assert_eq!(telling.reported, 2, "counted even though not written");
    }
}
