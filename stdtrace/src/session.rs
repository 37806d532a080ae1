//! One tracing run: check privileges, read BTF, load and attach the programs, launch or attach
//! to the targets, report events as they come, and end with a summary.

use std::{
    collections::HashMap,
    io::{self, Write},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::maps::{MapData, RingBuf};
use stdtrace_common::{FailureKey, TracerConfig, counter};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::{
    blocked::BlockedSlots,
    btf::{self, Btf, RegsLayout},
    callpaths::{CallPaths, Learned, RepeatReport, Repeats},
    cli::{Config, Format, Mode},
    enrich::{Capture, CapturedWrite, Namer},
    errno,
    events::{self, Record, SigpipeEvent, WriteEvent},
    gotrack::{self, GoTracker},
    launch::{self, ExitStatus, HeldChild},
    loader::{DEFAULT_RING_BYTES, Tracer},
    parked::ParkedGoroutines,
    privileges,
    process::{perf_mmap::MmapWatch, status},
    report::{
        Clock, CommandOutcome, JsonOutput, KernelCounters, Output, StuckWrite, Summary, TextOutput,
        Total, WriteReport,
    },
    sigpipe::{SigpipeReport, SigpipeTracker},
    tracefs,
};

/// How often text output reports repeats and the event loop checks its deadlines.
const TICK: Duration = Duration::from_millis(250);

/// Records read from the ring buffer per wake-up, at most.
const DRAIN_LIMIT: usize = 4096;

/// Write events captured and handed to the reporter together, at most.
const BATCH_LIMIT: usize = 32;

/// Counts of repeated failures are read from the kernel every this many ticks (once a second).
const REPEATS_EVERY_TICKS: u64 = 4;

/// How long to wait for a launched command to finish after Ctrl-C (it got the signal too).
const INTERRUPT_GRACE: Duration = Duration::from_millis(500);

/// Why tracing stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    CommandExited,
    TargetsExited,
    Duration,
    Interrupted,
    Terminated,
    OutputClosed,
}

impl Stop {
    fn describe(self) -> &'static str {
        match self {
            Stop::CommandExited => "the command exited",
            Stop::TargetsExited => "every target exited",
            Stop::Duration => "the duration ran out",
            Stop::Interrupted => "interrupted",
            Stop::Terminated => "terminated",
            Stop::OutputClosed => "the output was closed",
        }
    }
}

/// Runs stdtrace and returns the exit code for the process.
pub async fn run(config: Config) -> Result<i32> {
    let capabilities = privileges::effective_capabilities().unwrap_or(0);
    privileges::check(capabilities)?;

    let btf = Btf::from_path(&config.btf)?;
    let layout = btf::kernel_layout(&btf).context("reading kernel struct offsets from BTF")?;
    let regs_layout = RegsLayout::from_btf(&btf).context("reading struct pt_regs from BTF")?;
    drop(btf);
    tracefs::ensure_mounted()?;

    let mut tracer_config = TracerConfig::INERT;
    tracer_config.self_tgid = std::process::id();
    tracer_config.targets_only = u32::from(config.mode != Mode::NodeWide);
    tracer_config.kernel = layout;
    for &number in &config.errnos {
        tracer_config.watch_errno(number);
    }
    tracer_config.slow_ns = u64::try_from(config.slow.as_nanos()).unwrap_or(u64::MAX);
    let mut tracer = Tracer::load(&tracer_config, DEFAULT_RING_BYTES, config.hook)?;

    // Targets go in before anything is attached; a launched command is held until then.
    let mut go = GoTracker::new(match tracer.take_go_processes() {
        Ok(map) => Some(map),
        Err(err) => {
            log::warn!("goroutines will not be read: {err:#}");
            None
        }
    });
    let mut held = None;
    let mut exits = None;
    match &config.mode {
        Mode::Launch { program, argv } => {
            let child = HeldChild::spawn(program, argv)?;
            tracer.add_target(child.pid())?;
            go.process_will_run(child.pid(), program);
            held = Some(child);
        }
        Mode::Attach { pids } => {
            let (sender, receiver) = mpsc::unbounded_channel();
            for &pid in pids {
                tracer.add_target(pid)?;
                watch_exit(pid, sender.clone())?;
            }
            exits = Some((receiver, pids.len()));
        }
        Mode::NodeWide => {}
    }
    // Watching mappings before anything runs lets stacks of writers that exit at once be named.
    let mmap_watch = match MmapWatch::open() {
        Ok(watch) => Some(watch),
        Err(err) => {
            log::warn!(
                "not watching mappings ({err}); stacks of writers that exit at once may go unnamed"
            );
            None
        }
    };
    let mut blocked = match tracer.take_blocked_slots() {
        Ok(slots) => Some(slots),
        Err(err) => {
            log::warn!("stuck writes will only be reported when they return: {err:#}");
            None
        }
    };
    let parked = match tracer.take_parked() {
        Ok(parked) => Some(parked),
        Err(err) => {
            log::warn!("goroutines parked after EAGAIN will not be reported: {err:#}");
            None
        }
    };
    tracer.attach()?;
    let events = tracer.take_events()?;
    let mut capture = Capture::new();
    // Who reads what the targets write: its exit (or close) is remembered for the EPIPE story.
    match &config.mode {
        // The command inherits stdtrace's own fds.
        Mode::Launch { .. } => capture.watch_readers_of(&[std::process::id()], &mut tracer),
        Mode::Attach { pids } => capture.watch_readers_of(pids, &mut tracer),
        Mode::NodeWide => {}
    }
    match &config.mode {
        Mode::Attach { pids } => {
            for &pid in pids {
                capture.track(pid);
                go.process(pid);
            }
        }
        // Go processes that already run are found over the first ticks.
        Mode::NodeWide => go.sweep_existing(),
        Mode::Launch { .. } => {}
    }
    // Writers already blocked when tracing starts: the scheduler program never saw them go to
    // sleep, so they are looked for now.
    if let Some(slots) = &mut blocked {
        let existing: Vec<u32> = match &config.mode {
            Mode::Attach { pids } => pids.clone(),
            Mode::NodeWide => all_processes(),
            Mode::Launch { .. } => Vec::new(),
        };
        let own = std::process::id();
        let found: usize = existing
            .into_iter()
            .filter(|pid| *pid != own)
            .map(|pid| slots.adopt_blocked_threads(pid, &mut tracer, &mut go))
            .sum();
        if found > 0 {
            log::info!("{found} writes were already blocked when tracing started");
        }
    }
    let started = Instant::now();
    announce(&config, held.as_ref().map(HeldChild::pid));

    let mut command_exit = None;
    let mut launched_pid = None;
    if let Some(child) = held.take() {
        let pid = child.release()?;
        launched_pid = Some(pid);
        command_exit = Some(tokio::task::spawn_blocking(move || {
            launch::wait_for_exit(pid)
        }));
    }

    let call_paths = match tracer.take_call_paths() {
        Ok(call_paths) => Some(call_paths),
        Err(err) => {
            log::warn!("repeated failures will not be counted in the kernel: {err:#}");
            None
        }
    };
    let (learned_sender, learned) = std::sync::mpsc::channel();
    let mut session = Session {
        reporter: Reporter::spawn(make_output(&config), learned_sender)?,
        call_paths,
        learned,
        ticks: 0,
        tracer,
        blocked,
        parked,
        stuck_ns: u64::try_from(config.stuck.as_nanos()).unwrap_or(u64::MAX),
        capture,
        go,
        mmap_watch,
        regs_layout,
        comms: HashMap::new(),
    };
    // SAFETY: the ring buffer owns its map descriptor, which stays open and unchanged for as
    // long as the AsyncFd owns the ring buffer.
    let mut ring = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
        .map_err(io::Error::from)
        .context("watching the ring buffer")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let deadline = config
        .duration
        .map(|duration| tokio::time::Instant::now() + duration);
    let mut ticker = tokio::time::interval(TICK);
    let mut command_status: Option<ExitStatus> = None;

    let stop = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting for the ring buffer")?;
                // Cleared before draining: a record committed after the drain's last read
                // wakes the next wait instead of being lost with the cleared readiness.
                guard.clear_ready();
                session.drain(guard.get_inner_mut());
                if session.reporter.closed() {
                    break Stop::OutputClosed;
                }
            }
            status = optional(command_exit.as_mut()) => {
                command_status = Some(
                    status
                        .context("waiting for the command")?
                        .context("waiting for the command")?,
                );
                break Stop::CommandExited;
            }
            _ = optional(exits.as_mut().map(|(receiver, _)| receiver.recv())) => {
                if let Some((_, remaining)) = exits.as_mut() {
                    *remaining -= 1;
                    if *remaining == 0 {
                        break Stop::TargetsExited;
                    }
                }
            }
            _ = interrupt.recv() => break Stop::Interrupted,
            _ = terminate.recv() => break Stop::Terminated,
            _ = optional(deadline.map(tokio::time::sleep_until)) => break Stop::Duration,
            _ = ticker.tick() => {
                session.drain(ring.get_mut());
                session.ticks += 1;
                if session.ticks.is_multiple_of(REPEATS_EVERY_TICKS) {
                    session.report_repeats();
                }
                session.report_stuck();
                session.report_parked();
                session.go.tick();
                session.reporter.send(ToReporter::Tick);
                if session.reporter.closed() {
                    break Stop::OutputClosed;
                }
            }
        }
    };

    if stop == Stop::Interrupted
        && let Some(waiter) = command_exit.as_mut()
        && let Ok(Ok(Ok(status))) = tokio::time::timeout(INTERRUPT_GRACE, waiter).await
    {
        command_status = Some(status);
    }
    // Everything the targets did before they exited is already in the ring buffer.
    session.drain(ring.get_mut());
    let elapsed = started.elapsed();

    session.report_repeats();
    let summary = session.summary(stop, elapsed, launched_pid.zip(command_status))?;
    let mut sigpipe_counts = session.tracer.sigpipe_counts().unwrap_or_else(|err| {
        log::warn!("reading the SIGPIPE counts: {err}");
        HashMap::new()
    });
    // With EPIPE watched, the kernel counts SIGPIPEs raised by writes as the failed writes'
    // EPIPE tallies (each such write raises one).
    for total in summary.totals.iter().filter(|total| total.errno == "EPIPE") {
        let count = sigpipe_counts.entry((total.pid, total.fd)).or_insert(0);
        *count = (*count).max(total.failures);
    }
    session.reporter.finish(summary, sigpipe_counts);

    Ok(match (launched_pid, command_status, stop) {
        (Some(_), Some(status), _) => status.shell_code(),
        (_, _, Stop::Interrupted) => 130,
        (_, _, Stop::Terminated) => 143,
        _ => 0,
    })
}

/// Every process id in `/proc`.
fn all_processes() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Awaits `future` if there is one; otherwise never completes (a disabled `select!` branch).
async fn optional<F: std::future::Future>(future: Option<F>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// Tells the user, on stderr, what is being traced (tests wait for this line too).
fn announce(config: &Config, launched: Option<u32>) {
    let what = match (&config.mode, launched) {
        (Mode::Launch { argv, .. }, Some(pid)) => format!(
            "tracing pid {pid} ({}) and its children",
            argv.first()
                .map(|arg| arg.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
        (Mode::Attach { pids }, _) => format!(
            "tracing pid {}",
            pids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => "tracing every process on this host".to_owned(),
    };
    let errnos: Vec<String> = config.errnos.iter().map(|&n| errno::name(n)).collect();
    eprintln!(
        "stdtrace: {what}: writes failing with {}",
        errnos.join(", ")
    );
}

fn make_output(config: &Config) -> Output {
    let stdout: Box<dyn Write + Send> = Box::new(io::BufWriter::new(io::stdout()));
    match config.format {
        Format::Text => Output::Text(TextOutput::new(
            stdout,
            config.color,
            config.quiet,
            Clock::now(),
        )),
        Format::Json => Output::Json {
            json: JsonOutput::new(stdout),
            quiet: config.quiet,
        },
    }
}

/// What the reporter thread is asked to do.
enum ToReporter {
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
    /// Print the summary (its `reported` count filled in) and stop; with it, the kernel's
    /// exact count of SIGPIPEs per (process, fd).
    Finish(Box<Summary>, HashMap<(u32, i32), u64>),
}

/// The thread that names stacks and writes reports, so that slow symbolization never delays
/// capturing what a writer's exit takes with it.
struct Reporter {
    sender: Option<std::sync::mpsc::SyncSender<ToReporter>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Set when stdout is closed (or fails): nothing more can be reported.
    closed: Arc<AtomicBool>,
}

/// Batches the reporter may fall behind by before capture waits for it (and the ring buffer,
/// not memory, absorbs the excess: its drops are counted).
const REPORTER_BACKLOG: usize = 16;

impl Reporter {
    fn spawn(
        mut output: Output,
        learned: std::sync::mpsc::Sender<Vec<(Learned, u32)>>,
    ) -> Result<Self> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(REPORTER_BACKLOG);
        let closed = Arc::new(AtomicBool::new(false));
        let closed_flag = Arc::clone(&closed);
        let thread = std::thread::Builder::new()
            .name("stdtrace-report".to_owned())
            .spawn(move || {
                let mut namer = Namer::new(learned);
                let mut reported = 0u64;
                let mut blocked_reported = 0u64;
                let failed = |err: io::Error| {
                    if err.kind() != io::ErrorKind::BrokenPipe {
                        log::error!("writing the report: {err}");
                    }
                    closed_flag.store(true, Ordering::Relaxed);
                };
                let mut sigpipes = SigpipeTracker::new();
                let mut repeats = Repeats::new();
                let tell = |output: &mut Output, told: Vec<SigpipeReport>| {
                    for report in told {
                        if !closed_flag.load(Ordering::Relaxed)
                            && let Err(err) = output.sigpipe(&report)
                        {
                            failed(err);
                        }
                    }
                };
                for message in receiver {
                    let open = !closed_flag.load(Ordering::Relaxed);
                    match message {
                        ToReporter::Writes(batch) => {
                            for captured in batch {
                                let report = namer.report(captured);
                                if report.repeat {
                                    // Sent before the kernel knew its call path.
                                    repeats.fold(&report);
                                } else {
                                    if report.record_type == WriteReport::WRITE_ERROR {
                                        reported += 1;
                                    } else {
                                        blocked_reported += 1;
                                    }
                                    if open && let Err(err) = output.write_error(&report) {
                                        failed(err);
                                    }
                                }
                                tell(&mut output, sigpipes.write(&report));
                            }
                            if !closed_flag.load(Ordering::Relaxed)
                                && let Err(err) = output.flush()
                            {
                                failed(err);
                            }
                        }
                        ToReporter::Sigpipe(event) => {
                            tell(&mut output, sigpipes.signal(&event));
                            let _ = output.flush();
                        }
                        ToReporter::Exit {
                            pid,
                            ts_ns,
                            exit_code,
                        } => {
                            namer.process_exited(pid);
                            tell(&mut output, sigpipes.exit(pid, ts_ns, exit_code));
                            let _ = output.flush();
                        }
                        ToReporter::Repeats(counted) => {
                            repeats.kernel(counted);
                            if open && let Err(err) = output.repeats(&repeats.take_changed()) {
                                failed(err);
                            }
                        }
                        ToReporter::Tick => {
                            if open && let Err(err) = output.repeats(&repeats.take_changed()) {
                                failed(err);
                            }
                            tell(&mut output, sigpipes.tick());
                            if open && let Err(err) = output.tick() {
                                failed(err);
                            }
                        }
                        ToReporter::Finish(mut summary, sigpipe_counts) => {
                            if open && let Err(err) = output.repeats(&repeats.take_changed()) {
                                failed(err);
                            }
                            tell(&mut output, sigpipes.tick());
                            summary.reported = reported;
                            summary.repeats += repeats.folded_total();
                            summary.blocked_writes = blocked_reported;
                            summary.sigpipes = sigpipes.summary(&sigpipe_counts);
                            if open && let Err(err) = output.summary(&summary) {
                                failed(err);
                            }
                            break;
                        }
                    }
                }
            })
            .context("starting the reporter thread")?;
        Ok(Self {
            sender: Some(sender),
            thread: Some(thread),
            closed,
        })
    }

    fn send(&self, message: ToReporter) {
        if let Some(sender) = &self.sender {
            // The thread only stops after Finish; a send error means it panicked, which the
            // join in `finish` reports.
            let _ = sender.send(message);
        }
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Prints the summary and waits for every report before it to be written.
    fn finish(&mut self, summary: Summary, sigpipe_counts: HashMap<(u32, i32), u64>) {
        self.send(ToReporter::Finish(Box::new(summary), sigpipe_counts));
        self.sender = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("the reporter thread failed");
        }
    }
}

/// Watches a process we did not start for its exit, with a pidfd: no signal, no ptrace.
fn watch_exit(pid: u32, exited: mpsc::UnboundedSender<u32>) -> Result<()> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0 as libc::c_uint) };
    if fd < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            bail!("no process with pid {pid} (it exited)");
        }
        return Err(err).with_context(|| format!("watching pid {pid} for its exit"));
    }
    // SAFETY: pidfd_open returned a fresh descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the AsyncFd owns the pidfd, which stays open until the AsyncFd is dropped.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
        .map_err(io::Error::from)
        .with_context(|| format!("watching pid {pid}"))?;
    tokio::spawn(async move {
        // A pidfd becomes readable when the process exits.
        let _ = pidfd.readable().await;
        log::info!("pid {pid} exited (pidfd {})", pidfd.as_raw_fd());
        let _ = exited.send(pid);
    });
    Ok(())
}

struct Session {
    reporter: Reporter,
    /// The kernel's fingerprints of reported call paths and its counts of their repeats.
    call_paths: Option<CallPaths>,
    /// Call paths the reporter met for the first time, for `call_paths`.
    learned: std::sync::mpsc::Receiver<Vec<(Learned, u32)>>,
    ticks: u64,
    tracer: Tracer,
    /// The kernel's slots of writes blocked right now.
    blocked: Option<BlockedSlots>,
    /// The kernel's records of goroutines parked after EAGAIN.
    parked: Option<ParkedGoroutines>,
    /// How long a write must have been blocked to be reported stuck.
    stuck_ns: u64,
    capture: Capture,
    go: GoTracker,
    mmap_watch: Option<MmapWatch>,
    regs_layout: RegsLayout,
    /// Last known command name of every process seen, for the summary.
    comms: HashMap<u32, String>,
}

impl Session {
    /// Reads everything in the ring buffer, captures what could vanish, and hands the events
    /// to the reporter.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        // Keeps the mapping records' buffers from filling up while no write is captured.
        self.drain_mappings();
        self.learn();
        let mut batch: Vec<WriteEvent> = Vec::new();
        let mut read = 0;
        // Bounded, so that an error storm cannot keep the loop from its ticks; what is left
        // is read at the next wake-up or tick.
        while read < DRAIN_LIMIT
            && let Some(item) = ring.next()
        {
            read += 1;
            match events::decode(&item, &self.regs_layout) {
                Ok(Record::Write(event)) => {
                    self.comms.insert(event.pid, event.comm.clone());
                    batch.push(*event);
                    // Small batches: the first failure of a call path is named, and its path
                    // handed back to the kernel, while a storm's next failures are still
                    // coming; and the events in flight (16 KiB of stack each) stay few.
                    if batch.len() >= BATCH_LIMIT {
                        self.capture_and_report(std::mem::take(&mut batch));
                    }
                }
                Ok(Record::Exec { pid, comm, .. }) => {
                    self.comms.insert(pid, comm);
                    // Writes before the exec belong to the old image.
                    if !batch.is_empty() {
                        self.capture_and_report(std::mem::take(&mut batch));
                    }
                    self.capture.process_replaced(pid);
                    self.go.process_replaced(pid);
                }
                Ok(Record::Exit {
                    pid,
                    ts_ns,
                    exit_code,
                }) => {
                    self.capture.process_exited(pid);
                    self.go.process_exited(pid);
                    if let Some(call_paths) = &mut self.call_paths {
                        call_paths.process_exited(pid);
                    }
                    // In order with the writes before it: they are what a SIGPIPE story needs.
                    if !batch.is_empty() {
                        self.capture_and_report(std::mem::take(&mut batch));
                    }
                    self.reporter.send(ToReporter::Exit {
                        pid,
                        ts_ns,
                        exit_code,
                    });
                }
                Ok(Record::Sigpipe(event)) => {
                    if !batch.is_empty() {
                        self.capture_and_report(std::mem::take(&mut batch));
                    }
                    self.reporter.send(ToReporter::Sigpipe(event));
                }
                Err(err) => log::warn!("skipping a record from the kernel: {err}"),
            }
        }
        if !batch.is_empty() {
            self.capture_and_report(batch);
        }
    }

    /// Hands call paths the reporter met for the first time to the kernel.
    fn learn(&mut self) {
        let Some(call_paths) = &mut self.call_paths else {
            return;
        };
        for (learned, site) in self.learned.try_iter().flatten() {
            match call_paths.learn(&learned, site) {
                Ok(true) => {}
                Ok(false) => log::debug!(
                    "call site {site} of pid {} is not counted in the kernel (no room)",
                    learned.pid
                ),
                Err(err) => log::debug!("learning call site {site}: {err}"),
            }
        }
    }

    /// Reports the counts of repeated failures that changed.
    fn report_repeats(&mut self) {
        let Some(call_paths) = &mut self.call_paths else {
            return;
        };
        let comms = &self.comms;
        let changed = call_paths.changed(|pid| {
            comms
                .get(&pid)
                .cloned()
                .or_else(|| status::comm(pid))
                .unwrap_or_else(|| "?".to_owned())
        });
        if !changed.is_empty() {
            self.reporter.send(ToReporter::Repeats(changed));
        }
    }

    fn drain_mappings(&mut self) {
        if let Some(watch) = &mut self.mmap_watch {
            let capture = &mut self.capture;
            watch.drain(|event| capture.space_event(event));
        }
    }

    fn capture_and_report(&mut self, batch: Vec<WriteEvent>) {
        self.learn();
        // Mappings first, read now rather than when the drain began (the ring buffer may have
        // been read for a while since): every mapping made before these writes is in them.
        self.drain_mappings();
        let captured = self.capture.capture(batch, &mut self.go, &mut self.tracer);
        self.reporter.send(ToReporter::Writes(captured));
    }

    /// Reports goroutines parked in Go's netpoller for at least the stuck threshold.
    fn report_parked(&mut self) {
        let Some(parked) = &mut self.parked else {
            return;
        };
        let events = parked.check(events::monotonic_ns(), self.stuck_ns, &mut self.go);
        if !events.is_empty() {
            self.capture_and_report(events);
        }
    }

    /// Reports writes blocked for at least the slow threshold that have not returned, once
    /// each, while they are still stuck.
    fn report_stuck(&mut self) {
        let Some(slots) = &self.blocked else {
            return;
        };
        let now = events::monotonic_ns();
        let mut stuck = Vec::new();
        let mut reported = Vec::new();
        let all = slots.blocked();
        log::trace!("{} writes blocked right now", all.len());
        for blocked in all {
            if blocked.reported() || blocked.blocked_ns(now) < self.stuck_ns {
                continue;
            }
            if let Some(mut event) = blocked.stuck_event(now, &self.regs_layout) {
                // The kernel did not know it was Go when it blocked; it is still blocked, so
                // its goroutine can be read from memory now.
                if event.goroutine.is_none()
                    && let Some(program) = self.go.process(event.pid)
                    && let Ok(layout) = &program.kernel
                    && let Some(sp) = event.registers.and_then(|registers| registers.sp())
                {
                    event.goroutine = Some(gotrack::read_goroutine(
                        event.pid,
                        layout,
                        blocked.write.go.fsbase,
                        sp,
                    ));
                }
                self.comms.insert(event.pid, event.comm.clone());
                stuck.push(event);
                reported.push(blocked);
            }
        }
        if stuck.is_empty() {
            return;
        }
        self.capture_and_report(stuck);
        if let Some(slots) = &mut self.blocked {
            for blocked in &reported {
                slots.mark_reported(blocked);
            }
        }
    }

    /// Writes blocked for at least the slow threshold right now, with how long they have been.
    fn still_stuck(&self) -> Vec<StuckWrite> {
        let Some(slots) = &self.blocked else {
            return Vec::new();
        };
        let now = events::monotonic_ns();
        let mut stuck: Vec<StuckWrite> = slots
            .blocked()
            .into_iter()
            .filter(|blocked| blocked.blocked_ns(now) >= self.stuck_ns)
            .map(|blocked| {
                let write = &blocked.write;
                StuckWrite {
                    pid: write.tgid,
                    tid: write.tid,
                    comm: status::comm_from_bytes(&write.comm),
                    syscall: events::WriteSyscall::from_raw(write.syscall)
                        .map(events::WriteSyscall::name)
                        .unwrap_or("write"),
                    fd: write.fd,
                    duration_ms: blocked.blocked_ns(now) / 1_000_000,
                    goid: write.go.certain_goid(),
                }
            })
            .collect();
        stuck.sort_by_key(|write| (write.pid, write.tid));
        stuck
    }

    fn summary(
        &mut self,
        stop: Stop,
        elapsed: Duration,
        command: Option<(u32, ExitStatus)>,
    ) -> Result<Summary> {
        let counters = self.tracer.counters()?;
        // Repeats counted at their call site are not tallied again: they are added here.
        let mut failures: HashMap<(u32, i32, u32, u32), u64> = self
            .call_paths
            .as_ref()
            .map(CallPaths::totals)
            .unwrap_or_default();
        for (key, count) in self.tracer.failures()? {
            *failures
                .entry((key.tgid, key.fd, key.errno, key.syscall))
                .or_insert(0) += count;
        }
        let mut totals: Vec<Total> = failures
            .into_iter()
            .map(|((tgid, fd, errno, syscall), failures)| {
                (
                    FailureKey {
                        tgid,
                        fd,
                        errno,
                        syscall,
                    },
                    failures,
                )
            })
            .filter_map(|(key, failures)| {
                let syscall = events::WriteSyscall::from_raw(key.syscall)?;
                let comm = self
                    .comms
                    .get(&key.tgid)
                    .cloned()
                    .or_else(|| status::comm(key.tgid))
                    .unwrap_or_else(|| "?".to_owned());
                Some(Total {
                    pid: key.tgid,
                    comm,
                    fd: key.fd,
                    errno: errno::name(key.errno),
                    syscall: syscall.name(),
                    failures,
                })
            })
            .collect();
        totals.sort_by(|a, b| {
            (a.pid, a.fd, &a.errno, a.syscall).cmp(&(b.pid, b.fd, &b.errno, b.syscall))
        });
        Ok(Summary {
            record_type: Summary::TYPE,
            duration_ms: elapsed.as_millis() as u64,
            stopped: stop.describe(),
            failed_writes: counters[counter::MATCHED as usize],
            // Filled in by the reporter, which knows.
            reported: 0,
            blocked_writes: 0,
            sigpipes: Vec::new(),
            stuck: self.still_stuck(),
            dropped: counters[counter::RINGBUF_FULL as usize],
            repeats: counters[counter::REPEATS as usize],
            totals,
            command: command.map(|(pid, status)| CommandOutcome {
                pid,
                exit_code: status.shell_code(),
                signal: match status {
                    ExitStatus::Signaled(signal) => Some(signal),
                    ExitStatus::Exited(_) => None,
                },
            }),
            kernel: KernelCounters {
                registers_unreadable: counters[counter::REGS_UNREADABLE as usize],
                fd_unreadable: counters[counter::FILE_UNREADABLE as usize],
                stack_unreadable: counters[counter::STACK_UNREADABLE as usize],
                tally_full: counters[counter::TALLY_FULL as usize],
                children_followed: counters[counter::CHILDREN_FOLLOWED as usize],
                lifecycle_dropped: counters[counter::LIFECYCLE_DROPPED as usize],
                writes_blocked: counters[counter::BLOCKED as usize],
                blocked_untracked: counters[counter::BLOCKED_UNTRACKED as usize],
                blocked_dropped: counters[counter::BLOCKED_DROPPED as usize],
                sites_full: counters[counter::SITES_FULL as usize],
                parked_full: counters[counter::PARKED_FULL as usize],
            },
        })
    }
}
