//! One tracing run: check privileges, read BTF, load and attach the programs, launch or attach
//! to the targets, report events as they come, and end with a summary.

mod containers;
mod exits;
mod folding;
pub mod launch;
mod metrics;
mod pipeline;
pub mod reporter;
pub mod summary;

use std::{
    collections::HashMap,
    io::{self, Write},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use stdtrace_common::TracerConfig;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use self::{
    containers::{ContainerWatch, RESCAN_EVERY},
    exits::watch_exit,
    launch::{ExitStatus, HeldChild},
    metrics::SessionMetrics,
    pipeline::Session,
    reporter::{OutputEnd, Reporter, ToReporter},
    summary::{Ending, Stop},
};
use crate::{
    cli::{Config, Format, Mode},
    enrich::{blocked, capture::Capture, go::GoTracker},
    errno,
    kernel::{
        btf::{self, Btf, RegsLayout},
        loader::Tracer,
        privileges, tracefs,
    },
    process::{perf_mmap::MmapWatch, status},
    report::{
        Clock, JsonOutput, Output, TextOutput,
        queue::{OutputStats, stdout::QueuedStdout},
        recording::{Recording, header},
    },
};

/// How often text output reports repeats and the event loop checks its deadlines.
const TICK: Duration = Duration::from_millis(250);

/// Counts of repeated failures are read from the kernel every this many ticks (once a second).
const REPEATS_EVERY_TICKS: u64 = 4;

/// How long to wait for a launched command to finish after Ctrl-C (it got the signal too).
const INTERRUPT_GRACE: Duration = Duration::from_millis(500);

/// Runs stdtrace and returns the exit code for the process.
pub async fn run(config: Config) -> Result<i32> {
    let capabilities = privileges::effective_capabilities().unwrap_or(0);
    privileges::check(capabilities)?;
    // Listening first: an address in use is an error at once, and /healthz answers (503)
    // while the programs load.
    let mut metrics = match &config.metrics {
        Some(asked) => Some(SessionMetrics::start(asked)?),
        None => None,
    };

    let btf = Btf::from_path(&config.btf)?;
    let layout = btf::kernel_layout(&btf).context("reading kernel struct offsets from BTF")?;
    let regs_layout = RegsLayout::from_btf(&btf).context("reading struct pt_regs from BTF")?;
    let tty_layout = btf::tty_layout(&btf);
    drop(btf);
    tracefs::ensure_mounted()?;

    let mut tracer_config = TracerConfig::INERT;
    tracer_config.self_tgid = std::process::id();
    // --container/--pod/--namespace add to what --pid or a launched command traces (a
    // union); alone, they narrow a node-wide run to those containers.
    tracer_config.targets_only =
        u32::from(config.mode != Mode::NodeWide || !config.containers.is_empty());
    let mut capture = Capture::new();
    let mut container_watch = None;
    let mut watched_containers = Vec::new();
    if !config.containers.is_empty() {
        let (watch, chosen) = ContainerWatch::find(
            &config.containers,
            capture.containers_mut(),
            &mut tracer_config,
        )?;
        container_watch = Some(watch);
        watched_containers = chosen;
    }
    tracer_config.kernel = layout;
    for &number in &config.errnos {
        tracer_config.watch_errno(number);
    }
    tracer_config.slow_ns = u64::try_from(config.slow.as_nanos()).unwrap_or(u64::MAX);
    let mut tracer = Tracer::load(&tracer_config, config.ring_bytes, config.hook)?;
    match tty_layout {
        Ok(layout) => tracer.set_tty_layout(&layout)?,
        Err(err) => {
            log::warn!("ptys' fill will not be known: reading the tty structs from BTF: {err}")
        }
    }
    ContainerWatch::watch(&mut tracer, &watched_containers)?;
    let container_pids: Vec<u32> = watched_containers
        .iter()
        .flat_map(|found| found.pids.iter().copied())
        .collect();

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
    if let Some(metrics) = &metrics {
        metrics.attached();
    }
    let events = tracer.take_events()?;
    // Who reads what the targets write: its exit (or close) is remembered for the EPIPE story.
    match &config.mode {
        // The command inherits stdtrace's own fds.
        Mode::Launch { .. } => capture.watch_readers_of(&[std::process::id()], &mut tracer),
        Mode::Attach { pids } => capture.watch_readers_of(pids, &mut tracer),
        Mode::NodeWide => {}
    }
    if !container_pids.is_empty() {
        capture.watch_readers_of(&container_pids, &mut tracer);
    }
    match &config.mode {
        Mode::Attach { pids } => {
            for &pid in pids {
                capture.track(pid);
                go.process(pid);
            }
        }
        // Go processes that already run are found over the first ticks.
        Mode::NodeWide if config.containers.is_empty() => go.sweep_existing(),
        Mode::NodeWide | Mode::Launch { .. } => {}
    }
    for &pid in &container_pids {
        capture.track(pid);
        go.process(pid);
    }
    // Writers already blocked when tracing starts: the scheduler program never saw them go to
    // sleep, so they are looked for now.
    if let Some(slots) = &mut blocked {
        let mut existing: Vec<u32> = match &config.mode {
            Mode::Attach { pids } => pids.clone(),
            Mode::NodeWide if config.containers.is_empty() => status::all_processes(),
            Mode::NodeWide | Mode::Launch { .. } => Vec::new(),
        };
        existing.extend(container_pids.iter().copied());
        let own = std::process::id();
        let found: usize = existing
            .into_iter()
            .filter(|pid| *pid != own)
            .map(|pid| blocked::adopt_blocked_threads(slots, pid, &mut tracer, &mut go))
            .sum();
        if found > 0 {
            log::info!("{found} writes were already blocked when tracing started");
        }
    }
    // Opened before the command runs: a recording that cannot be written is an error at once.
    // What stdtrace's own outputs drop, for the summary (and `/metrics`).
    let output_stats = Arc::new(OutputStats::default());
    let (output, reopen, output_end) = make_output(&config, &output_stats)?;
    if let Some(metrics) = &mut metrics {
        metrics.count_output_drops(Arc::clone(&output_stats));
    }
    let started = Instant::now();
    announce(
        &config,
        held.as_ref().map(HeldChild::pid),
        &watched_containers,
    );

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
    let reporter_metrics = metrics.as_ref().map(|metrics| metrics.instruments.clone());
    let mut session = Session {
        reporter: Reporter::spawn(output, output_end, learned_sender, reporter_metrics)?,
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
        folding: folding::Folding::new(),
        containers: HashMap::new(),
        metrics,
    };
    if session.metrics.is_some() {
        session.folding.keep_final_counts();
    }
    if reopen.is_some() {
        // A file that rotates before the first second is over ends with this one.
        summary_so_far(&mut session, started);
    }
    // SAFETY: the ring buffer owns its map descriptor, which stays open and unchanged for as
    // long as the AsyncFd owns the ring buffer.
    let mut ring = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
        .map_err(io::Error::from)
        .context("watching the ring buffer")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    // SIGHUP reopens the recording (logrotate); without one it keeps its default action.
    let mut hangup = match &reopen {
        Some(_) => Some(signal(SignalKind::hangup()).context("handling SIGHUP")?),
        None => None,
    };
    let deadline = config
        .duration
        .map(|duration| tokio::time::Instant::now() + duration);
    let mut ticker = tokio::time::interval(TICK);
    // Loading (BTF read twice, by us and by aya, the programs verified) leaves most of its
    // heap free but held: given back before tracing, so that it is not counted as ours.
    // SAFETY: malloc_trim has no preconditions; it only returns free heap memory.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
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
            _ = optional(hangup.as_mut().map(|hangup| hangup.recv())) => {
                if let Some(reopen) = &reopen {
                    reopen.store(true, Ordering::Relaxed);
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
                    session.update_metrics(false);
                    if reopen.is_some() {
                        summary_so_far(&mut session, started);
                    }
                }
                if let Some(watch) = container_watch.as_mut()
                    && session
                        .ticks
                        .is_multiple_of(RESCAN_EVERY.as_millis() as u64 / TICK.as_millis() as u64)
                {
                    session.watch_new_containers(watch);
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
    session.update_metrics(true);
    let still_stuck = session.still_stuck();
    let mut ending = Ending::read(
        &session.tracer,
        session.call_paths.as_ref(),
        still_stuck,
        &session.folding,
        (stop, elapsed, launched_pid.zip(command_status)),
    )?;
    ending.containers = std::mem::take(&mut session.containers);
    session.reporter.finish(ending);

    Ok(match (launched_pid, command_status, stop) {
        (Some(_), Some(status), _) => status.shell_code(),
        (_, _, Stop::Interrupted) => 130,
        (_, _, Stop::Terminated) => 143,
        _ => 0,
    })
}

/// Sends the reporter the summary so far, for a recorded file to end with when it rotates.
fn summary_so_far(session: &mut Session, started: Instant) {
    let still_stuck = session.still_stuck();
    let so_far = Ending::read(
        &session.tracer,
        session.call_paths.as_ref(),
        still_stuck,
        &session.folding,
        (Stop::StillTracing, started.elapsed(), None),
    );
    match so_far {
        Ok(mut ending) => {
            ending.containers = session.containers.clone();
            session
                .reporter
                .send(ToReporter::Progress(Box::new(ending)));
        }
        Err(err) => log::debug!("reading the summary so far: {err}"),
    }
}

/// Awaits `future` if there is one; otherwise never completes (a disabled `select!` branch).
async fn optional<F: std::future::Future>(future: Option<F>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// Tells the user, on stderr, what is being traced (tests wait for this line too).
fn announce(
    config: &Config,
    launched: Option<u32>,
    containers: &[crate::enrich::container::select::RunningContainer],
) {
    let mut what = match (&config.mode, launched) {
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
        _ if !config.containers.is_empty() => String::new(),
        _ => "tracing every process on this host".to_owned(),
    };
    if !config.containers.is_empty() {
        let named: Vec<String> = containers
            .iter()
            .map(|found| {
                let container = &found.container;
                let mut shown = container
                    .name
                    .clone()
                    .unwrap_or_else(|| container.id.chars().take(12).collect());
                if let (Some(namespace), Some(pod)) =
                    (&container.pod.namespace, &container.pod.name)
                {
                    shown.push_str(&format!(" (pod {namespace}/{pod})"));
                }
                shown
            })
            .collect();
        let containers = format!("tracing container {}", named.join(", "));
        what = if what.is_empty() {
            containers
        } else {
            format!("{what}, and {containers}")
        };
    }
    let errnos: Vec<String> = config.errnos.iter().map(|&n| errno::name(n)).collect();
    eprintln!(
        "stdtrace: {what}: writes failing with {}",
        errnos.join(", ")
    );
}

/// The output on stdout, and the recording (with its SIGHUP flag) if one was asked for; what
/// they drop is counted in `stats`.
fn make_output(
    config: &Config,
    stats: &Arc<OutputStats>,
) -> Result<(Output, Option<Arc<AtomicBool>>, OutputEnd)> {
    let queued = QueuedStdout::start(stats).context("starting the stdout thread")?;
    let end = OutputEnd {
        stdout: queued.queue().clone(),
        stats: Arc::clone(stats),
    };
    let stdout: Box<dyn Write + Send> = Box::new(queued);
    let clock = Clock::now();
    let shown = match config.format {
        Format::Text => Output::Text(TextOutput::new(stdout, config.color, config.quiet, clock)),
        Format::Json => Output::Json {
            json: JsonOutput::new(stdout),
            quiet: config.quiet,
        },
    };
    let Some(asked) = &config.recording else {
        return Ok((shown, None, end));
    };
    let recording = Recording::start(
        asked.sink.clone(),
        header::header(asked.options.clone(), clock),
        Arc::clone(stats),
    )?;
    let reopen = recording.reopen_flag();
    Ok((
        Output::Recorded {
            shown: Box::new(shown),
            recording,
        },
        Some(reopen),
        end,
    ))
}
