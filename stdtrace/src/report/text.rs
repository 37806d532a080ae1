//! Text for people: one block per failed write, readable at a glance (who, what fd, what it
//! points at, who is on the other end, where in the code), and a summary at the end. The same
//! (pid, fd, errno, stack) seen again is counted, not printed again.

use std::io::{self, Write};

use super::{
    Clock,
    record::{
        BlockedState, Fate, FdTarget, FrameReport, GoReport, MasterSide, Peer, SigpipeReport,
        Summary, TargetKind, WriteReport,
    },
    sanitize,
    style::Style,
    write_line,
};
use crate::aggregate::repeats::{RepeatLine, Repeated, Repeats};

mod socket;

/// The text report.
pub struct TextOutput {
    out: Box<dyn Write + Send>,
    style: Style,
    clock: Clock,
    quiet: bool,
}

impl TextOutput {
    pub fn new(out: Box<dyn Write + Send>, color: bool, quiet: bool, clock: Clock) -> Self {
        Self {
            out,
            style: Style { color },
            clock,
            quiet,
        }
    }

    /// Times from now on are shown with `clock` (`report`: each recorded file's own).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// Reports a failed or blocked write as a block (repeats of it are counted in
    /// `aggregate::repeats` and said by [`TextOutput::repeats`]).
    pub fn write(&mut self, report: &WriteReport) -> io::Result<()> {
        if self.quiet {
            return Ok(());
        }
        let block = self.render(report);
        self.out.write_all(block.as_bytes())
    }

    fn render(&self, report: &WriteReport) -> String {
        let style = self.style;
        let mut block = String::new();
        let mut thread = if report.tid != report.pid {
            format!(" tid {}", report.tid)
        } else {
            String::new()
        };
        if let Some(go) = &report.go {
            match go.goid {
                Some(goid) => thread.push_str(&format!(" goroutine {goid}")),
                None => thread.push_str(" goroutine ?"),
            }
        }
        let count = match (report.count, report.count_partial) {
            (Some(1), false) => ", 1 byte".to_owned(),
            (Some(n), false) => format!(", {n} bytes"),
            (Some(n), true) => format!(", at least {n} bytes"),
            (None, _) => String::new(),
        };
        let who = format!(
            "{} pid {} ({}){}{}: {}({}{})",
            style.dim(&self.clock.format(report.ts_ns)),
            report.pid,
            style.bold(&sanitize(&report.comm)),
            container::label(report.container.as_ref()),
            thread,
            report.syscall,
            report.fd,
            count,
        );
        match (report.errno, report.state) {
            (Some(errno), _) => {
                block.push_str(&format!(
                    "{who} failed: {} ({})\n",
                    style.red(&errno.name()),
                    errno.describe(),
                ));
                block.push_str(&format!(
                    "  fd {} -> {}\n",
                    report.fd,
                    describe_target(&report.target)
                ));
                push_chain(&mut block, &report.target, 2);
            }
            (None, state) => {
                let seconds = report.duration_ms.unwrap_or(0) as f64 / 1000.0;
                let how = match state {
                    Some(BlockedState::Stuck) if report.duration_at_least => {
                        format!("stuck at least {seconds:.1}s")
                    }
                    Some(BlockedState::Stuck) => format!("stuck {seconds:.1}s"),
                    Some(BlockedState::Resumed) => format!("resumed after {seconds:.1}s"),
                    Some(BlockedState::Parked) => format!("parked {seconds:.1}s"),
                    Some(BlockedState::Slow) | None => format!("slow: blocked {seconds:.1}s"),
                };
                // The story in one line: who, how long, into what, how full, the other end.
                block.push_str(&format!(
                    "{who} {} -> {}\n",
                    style.red(&how),
                    describe_target(&report.target)
                ));
                push_chain(&mut block, &report.target, 2);
            }
        }
        if let Some(go) = &report.go {
            block.push_str(&format!("  {}\n", describe_goroutine(go)));
        }
        for (index, frame) in report.stack.iter().enumerate() {
            block.push_str(&format!("    #{index:<2} {}\n", render_frame(style, frame)));
        }
        if report.stack.is_empty() {
            block.push_str("    (no stack)\n");
        }
        if let Some(end) = &report.stack_end {
            block.push_str(&format!(
                "    {}\n",
                style.dim(&format!("(stack ends: {})", sanitize(end)))
            ));
        }
        block.push('\n');
        block
    }

    /// Says how often each stack repeated since it was last said: at most once a second
    /// each, or all of it when `all` (at the end).
    pub fn repeats(&mut self, repeats: &mut Repeats, all: bool) -> io::Result<()> {
        if self.quiet {
            return Ok(());
        }
        let mut lines: Vec<String> = repeats.due_lines(all).iter().map(repeat_line).collect();
        lines.sort();
        for line in lines {
            write_line(&mut self.out, &self.style.dim(&line))?;
        }
        self.out.flush()
    }

    /// A SIGPIPE story: who, at which write, the reader that went away, and the fate, with
    /// times.
    pub fn sigpipe(&mut self, report: &SigpipeReport) -> io::Result<()> {
        if self.quiet {
            return Ok(());
        }
        let style = self.style;
        let mut block = String::new();
        let goroutine = report
            .go
            .as_ref()
            .and_then(|go| go.goid)
            .map(|goid| format!(" goroutine {goid}"))
            .unwrap_or_default();
        if let (Some(since), Some(ms), Some(fd)) =
            (report.blocked_since_ns, report.blocked_ms, report.fd)
        {
            block.push_str(&format!(
                "{} pid {} ({}){goroutine}: write({fd}) blocked, for {:.1}s\n",
                style.dim(&self.clock.format(since)),
                report.pid,
                sanitize(&report.comm),
                ms as f64 / 1000.0
            ));
        }
        if let Some(reader) = &report.reader {
            let mut events = Vec::new();
            if let Some(at) = reader.closed_ts_ns {
                events.push((at, "closed the read end"));
            }
            if let Some(at) = reader.exit_ts_ns {
                events.push((at, "exited"));
            }
            for (when, how) in events {
                block.push_str(&format!(
                    "{} reader pid {} ({}) {how}\n",
                    style.dim(&self.clock.format(when)),
                    reader.pid,
                    sanitize(&reader.comm)
                ));
            }
        }
        let fate = match report.fate {
            Fate::Killed => "killed by SIGPIPE",
            Fate::Ignored => "got EPIPE (SIGPIPE ignored) and went on",
            Fate::Handled => "SIGPIPE handled by its handler",
            Fate::Blocked => "SIGPIPE blocked, pending",
            Fate::Pending => "SIGPIPE, pending",
        };
        let cause = match (&report.sent_by, report.fd) {
            (Some(sender), _) => format!(
                " (sent by pid {} ({}), not by a write)",
                sender.pid,
                sanitize(&sender.comm)
            ),
            (None, Some(fd)) => {
                let target = report
                    .target
                    .as_ref()
                    .map(|target| format!(" -> {}", describe_target(target)))
                    .unwrap_or_default();
                format!(" at write({fd}){target}")
            }
            (None, None) => String::new(),
        };
        let count = if report.count > 1 {
            format!(" ({} times)", report.count)
        } else {
            String::new()
        };
        block.push_str(&format!(
            "{} pid {} ({}){}{goroutine}: {}{cause}{count}\n",
            style.dim(&self.clock.format(report.fate_ts_ns.unwrap_or(report.ts_ns))),
            report.pid,
            style.bold(&sanitize(&report.comm)),
            container::label(report.container.as_ref()),
            style.red(fate),
        ));
        for (index, frame) in report.stack.iter().enumerate() {
            block.push_str(&format!("    #{index:<2} {}\n", render_frame(style, frame)));
        }
        block.push('\n');
        self.out.write_all(block.as_bytes())
    }

    pub fn summary(&mut self, summary: &Summary) -> io::Result<()> {
        let style = self.style;
        let mut text = String::new();
        text.push_str(&format!(
            "{} traced for {:.2}s ({})\n",
            style.bold("stdtrace:"),
            summary.duration_ms as f64 / 1000.0,
            summary.stopped
        ));
        text.push_str(&format!(
            "  failed writes: {} ({} reported, {} repeats of them counted, {} dropped)\n",
            summary.failed_writes, summary.reported, summary.repeats, summary.dropped
        ));
        for total in &summary.totals {
            text.push_str(&format!(
                "  {:>8}  pid {} ({})  fd {}  {}  {}\n",
                total.failures,
                total.pid,
                sanitize(&total.comm),
                total.fd,
                style.red(&total.errno.name()),
                total.syscall
            ));
        }
        if summary.blocked_writes > 0 {
            text.push_str(&format!(
                "  blocked writes reported: {}\n",
                summary.blocked_writes
            ));
        }
        for stuck in &summary.stuck {
            let goroutine = stuck
                .goid
                .map(|goid| format!(" goroutine {goid}"))
                .unwrap_or_default();
            text.push_str(&format!(
                "  still stuck: pid {} ({}){} tid {}{goroutine} {}({}) for {:.1}s\n",
                stuck.pid,
                sanitize(&stuck.comm),
                container::label(stuck.container.as_ref()),
                stuck.tid,
                stuck.syscall,
                stuck.fd,
                stuck.duration_ms as f64 / 1000.0
            ));
        }
        for story in &summary.sigpipes {
            let reader = story
                .reader
                .as_ref()
                .map(|reader| {
                    let how = match (reader.closed_ts_ns.is_some(), reader.exited) {
                        (true, true) => "closed it and exited",
                        (true, false) => "closed it",
                        _ => "exited",
                    };
                    format!(
                        ", reader pid {} ({}) {how}",
                        reader.pid,
                        sanitize(&reader.comm)
                    )
                })
                .unwrap_or_default();
            let fd = story.fd.map(|fd| format!(" fd {fd}")).unwrap_or_default();
            let blocked = story
                .blocked_ms
                .map(|ms| format!(", blocked {:.1}s first", ms as f64 / 1000.0))
                .unwrap_or_default();
            text.push_str(&format!(
                "  SIGPIPE: pid {} ({}){fd} {} ({} times){blocked}{reader}\n",
                story.pid,
                sanitize(&story.comm),
                fate_name(story.fate),
                story.count
            ));
        }
        if let Some(command) = &summary.command {
            let how = match command.signal {
                Some(signal) => format!("was killed by signal {signal} ({})", signal_name(signal)),
                None => format!("exited with status {}", command.exit_code),
            };
            text.push_str(&format!("  command: pid {} {how}\n", command.pid));
        }
        if let Some(dropped) = summary.output_records_dropped.filter(|&n| n > 0) {
            text.push_str(&format!(
                "  recording: {dropped} records could not be kept (the disk was too slow, or failed)\n"
            ));
        }
        self.out.write_all(text.as_bytes())?;
        self.out.flush()
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn render_frame(style: Style, frame: &FrameReport) -> String {
    let object = frame
        .object
        .as_deref()
        .map(|object| sanitize(object.rsplit('/').next().unwrap_or(object)))
        .unwrap_or_default();
    match &frame.function {
        Some(function) => {
            let location = match (&frame.file, frame.line) {
                (Some(file), Some(line)) => {
                    format!(
                        " at {}:{line}",
                        sanitize(file.rsplit('/').next().unwrap_or(file))
                    )
                }
                (Some(file), None) => format!(" at {}", sanitize(file)),
                _ => String::new(),
            };
            let inlined = if frame.inlined { " (inlined)" } else { "" };
            format!(
                "{}{inlined}{location}  {}",
                style.function(&sanitize(function)),
                style.dim(&format!("in {object}"))
            )
        }
        None => {
            let within = match (&frame.object, &frame.object_address) {
                (Some(_), Some(offset)) => format!(" in {object}+{offset}"),
                (Some(_), None) => format!(" in {object}"),
                _ => String::new(),
            };
            let why = frame
                .unknown
                .as_deref()
                .map(|why| format!(" ({})", sanitize(why)))
                .unwrap_or_default();
            format!("{}{within}{}", frame.address, style.dim(&why))
        }
    }
}

/// `reader pid 813 (log-shipper) sleeping in clock_nanosleep, not reading`
pub(super) fn reader_activity(reader: &Peer) -> String {
    let who = format!(
        "reader pid {} ({}){}",
        reader.pid,
        sanitize(&reader.comm),
        container::label(reader.container.as_ref())
    );
    let role = container::role(reader);
    let Some(activity) = &reader.activity else {
        return format!("{who}{role}");
    };
    let doing = if activity.reading {
        "reading".to_owned()
    } else if activity.blocked {
        format!(
            "{} in {}, itself blocked writing",
            activity.state,
            activity.syscall.as_deref().unwrap_or("write")
        )
    } else {
        let place = activity.syscall.as_deref().or(activity.wchan.as_deref());
        match place {
            Some(place) => format!("{} in {}, not reading", activity.state, sanitize(place)),
            None => format!("{}, not reading", activity.state),
        }
    };
    format!("{who} {doing}{role}")
}

/// The readers of `target` that are themselves blocked writing, one line each, indented one
/// step deeper per link: `-> pid 567 (script) blocked 0.4s in write(1) -> pipe:[...] ...`.
fn push_chain(block: &mut String, target: &FdTarget, indent: usize) {
    for reader in target.readers.iter().flatten() {
        let Some(write) = &reader.blocked_write else {
            continue;
        };
        let blocked = write
            .duration_ms
            .map(|ms| format!(" {:.1}s", ms as f64 / 1000.0))
            .unwrap_or_default();
        block.push_str(&format!(
            "{:indent$}-> pid {} ({}) blocked{blocked} in {}({}) -> {}",
            "",
            reader.pid,
            sanitize(&reader.comm),
            write.syscall,
            write.fd,
            describe_target(&write.target),
        ));
        if let Some(cut) = &write.cut {
            block.push_str(&format!(" [chain cut: {cut}]"));
        }
        block.push('\n');
        push_chain(block, &write.target, indent + 2);
    }
}

fn peers(list: &[Peer]) -> String {
    list.iter()
        .map(|peer| format!("pid {} ({})", peer.pid, sanitize(&peer.comm)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `pipe:[40213] (non-blocking); readers: none, nobody holds the read end; writers: pid 812 (w)`
pub fn describe_target(target: &FdTarget) -> String {
    if target.kind == TargetKind::Socket
        && let Some(socket) = &target.socket
        && socket.family != "other"
    {
        let mut text = socket::describe_socket_target(target, socket);
        if let Some(unknown) = &target.unknown {
            text.push_str(&format!(" ({})", sanitize(unknown)));
        }
        return text;
    }
    let name = match (&target.path, target.kind) {
        (Some(path), _) => sanitize(path),
        (None, kind) => format!("{kind:?}").to_lowercase(),
    };
    let mut text = match target.kind {
        TargetKind::Fifo => format!("fifo {name}"),
        TargetKind::Pty => format!("pty {name}"),
        TargetKind::Tty => format!("tty {name}"),
        TargetKind::File => format!("file {name}"),
        TargetKind::Char => format!("device {name}"),
        TargetKind::Pipe | TargetKind::Socket | TargetKind::Other => name,
    };
    if target.nonblocking == Some(true) {
        text.push_str(" (non-blocking)");
    }
    if let (Some(queued), Some(capacity)) = (target.queued, target.capacity) {
        text.push_str(&format!(" {queued}/{capacity} bytes queued"));
    }
    if let Some(socket) = &target.socket {
        text.push_str(&format!(" {}", socket::describe_socket(socket)));
    }
    if let Some(pty) = &target.pty {
        let ldisc = pty
            .ldisc_queued
            .map(|queued| format!(", {queued} in the line discipline"))
            .unwrap_or_default();
        text.push_str(&format!(" ({} in flip buffers{ldisc})", pty.flip_queued));
    }
    if let Some(MasterSide(None)) = &target.master {
        text.push_str("; master: no process holds it");
        match &target.pty {
            Some(pty) if pty.master_closed => text.push_str(" (closed: writes fail with EIO)"),
            Some(pty) if pty.master_open > 0 => text.push_str(&format!(
                " ({} open file(s) in no process: in flight in a unix socket)",
                pty.master_open
            )),
            _ => {}
        }
    }
    if let Some(readers) = &target.readers
        && readers.iter().any(|reader| reader.activity.is_some())
    {
        // What each reader is doing: the other half of a blocked write's story.
        let told: Vec<String> = readers.iter().map(reader_activity).collect();
        text.push_str(&format!("; {}", told.join("; ")));
    } else if let Some(readers) = &target.readers {
        let end = if target.kind == TargetKind::Pty {
            "the master side"
        } else {
            "the read end"
        };
        let open_ends = target.read_ends.unwrap_or(0);
        if readers.is_empty() && open_ends > 0 {
            text.push_str(&format!(
                "; readers: {open_ends} read end(s) open, held by processes that have since exited"
            ));
        } else if readers.is_empty() {
            text.push_str(&format!("; readers: none, nobody holds {end}"));
            if let Some(last) = &target.last_reader {
                let how = if last.closed_ts_ns.is_some() {
                    "closed it"
                } else {
                    "exited"
                };
                text.push_str(&format!(
                    " (last: pid {} ({}) {how})",
                    last.pid,
                    sanitize(&last.comm)
                ));
            }
        } else {
            text.push_str(&format!("; readers: {}", peers(readers)));
        }
    }
    if let Some(writers) = &target.writers
        && !writers.is_empty()
    {
        text.push_str(&format!("; writers: {}", peers(writers)));
    }
    if let Some(unknown) = &target.unknown {
        text.push_str(&format!(" ({})", sanitize(unknown)));
    }
    text
}

/// `go1.25.5, goroutine 17 (syscall), created by main.main at main.go:52 in goroutine 1`
fn describe_goroutine(go: &GoReport) -> String {
    let mut text = sanitize(&go.version);
    match go.goid {
        Some(goid) => text.push_str(&format!(", goroutine {goid}")),
        None => text.push_str(", goroutine unknown"),
    }
    if let Some(status) = &go.status {
        text.push_str(&format!(" ({status}"));
        if go.system_stack {
            text.push_str(", on the system stack");
        }
        text.push(')');
    }
    if let Some(created) = &go.created_by
        && let Some(function) = &created.function
    {
        text.push_str(&format!(", created by {}", sanitize(function)));
        if let (Some(file), Some(line)) = (&created.file, created.line) {
            text.push_str(&format!(
                " at {}:{line}",
                sanitize(file.rsplit('/').next().unwrap_or(file))
            ));
        }
        if let Some(parent) = go.parent_goid {
            text.push_str(&format!(" in goroutine {parent}"));
        }
    }
    if let Some(unknown) = &go.unknown {
        text.push_str(&format!(" ({})", sanitize(unknown)));
    }
    if let Some(caveat) = &go.caveat {
        text.push_str(&format!(" [{}]", sanitize(caveat)));
    }
    text
}

/// The C library's description of an errno given by name.
/// One line of repeats: `... pid 812 (writer) write(4) EPIPE: 2 more from the same stack (3 in
/// all)`.
fn repeat_line(line: &RepeatLine) -> String {
    let what = match line.what {
        Repeated::Failure(errno) => errno.name(),
        Repeated::Slow => "slow".to_owned(),
    };
    let mut headline = format!(
        "pid {} ({}) {}({}) {what}",
        line.pid,
        sanitize(&line.comm),
        line.syscall,
        line.fd,
    );
    if let Some(origin) = line.origin_fd {
        headline.push_str(&format!(
            " (the stack of its {}({origin}) report)",
            line.syscall
        ));
    }
    let more = if line.shown { " more" } else { "" };
    format!(
        "  ... {headline}: {}{more} from the same stack ({} in all)",
        line.fresh, line.total
    )
}

/// `killed`, as the JSON says it.
fn fate_name(fate: Fate) -> &'static str {
    match fate {
        Fate::Killed => "killed",
        Fate::Ignored => "ignored",
        Fate::Handled => "handled",
        Fate::Blocked => "blocked",
        Fate::Pending => "pending",
    }
}

/// `SIGPIPE` for 13.
pub fn signal_name(signal: i32) -> String {
    const NAMES: [&str; 32] = [
        "",
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    usize::try_from(signal)
        .ok()
        .and_then(|index| NAMES.get(index))
        .filter(|name| !name.is_empty())
        .map(|name| (*name).to_owned())
        .unwrap_or_else(|| format!("signal {signal}"))
}

#[path = "text/container.rs"]
mod container;

#[cfg(test)]
mod tests;
