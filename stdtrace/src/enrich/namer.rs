//! The second stage, on the reporter's thread: unwind and name the stack (cold debug info can
//! take a while to parse), give a failed write's call path its site, read its goroutine, and
//! assemble the report.

use stdtrace_common::go_flags;

use crate::{
    enrich::{
        call_path::{Learned, SiteIds},
        capture::{CapturedWrite, ProcessImage},
        go::{GoProgram, status_name},
    },
    events::{ByteCount, WriteEvent, WriteOutcome},
    report::record::{CreatedBy, FrameReport, GoReport, RecordType, WriteReport},
    symbolize::{Frame, StackCopy, Symbolizer, UserRegisters},
};

/// The second stage: unwind and name the stack, and assemble the report.
pub struct Namer {
    symbolizer: Symbolizer,
    sites: SiteIds,
    /// Where call paths met for the first time go, for the kernel to count from then on.
    learned: std::sync::mpsc::Sender<Vec<(Learned, u32)>>,
}

impl Namer {
    /// A namer that sends each new call path to `learned` as soon as its stack is unwound,
    /// before its frames are named: the kernel counts its repeats from then on.
    pub fn new(learned: std::sync::mpsc::Sender<Vec<(Learned, u32)>>) -> Self {
        Self {
            symbolizer: Symbolizer::default(),
            sites: SiteIds::default(),
            learned,
        }
    }

    /// Forgets a process's call paths (its pid may be reused).
    pub fn process_exited(&mut self, pid: u32) {
        self.sites.process_exited(pid);
    }

    pub fn report(&mut self, captured: CapturedWrite) -> WriteReport {
        // A failed write's call path gets a site id; the kernel counts its repeats there.
        let failed = matches!(captured.event.outcome, WriteOutcome::Failed { .. });
        let (stack, stack_end, site) = self.stack(&captured.event, &captured.image, failed);
        let repeat = site.is_some_and(|(_, new)| !new);
        let site = site.map(|(site, _)| site);
        let go = captured
            .go
            .as_deref()
            .map(|program| self.goroutine(&captured.event, &captured.image, program));
        let event = captured.event;
        let (count, count_partial) = match event.count {
            ByteCount::Exact(count) => (Some(count), false),
            ByteCount::AtLeast(count) => (Some(count), true),
            ByteCount::Unknown => (None, false),
        };
        WriteReport {
            node: crate::report::record::Node::here(),
            record_type: if event.outcome.errno().is_some() {
                RecordType::WriteError
            } else {
                RecordType::BlockedWrite
            },
            ts_ns: event.ts_ns,
            pid: event.pid,
            tid: event.tid,
            comm: event.comm,
            container: captured.container.as_deref().cloned(),
            syscall: event.syscall.name().into(),
            fd: event.fd,
            errno: event.outcome.errno().map(crate::errno::Errno),
            state: event.outcome.blocked_state(),
            duration_ms: event.outcome.blocked_ns().map(|ns| ns / 1_000_000),
            duration_at_least: false,
            count,
            count_partial,
            nosignal: event.nosignal,
            target: captured.target,
            stack,
            stack_end,
            go,
            site,
            repeat,
        }
    }

    /// The goroutine behind the event, when the kernel could read it with certainty.
    fn goroutine(
        &mut self,
        event: &WriteEvent,
        image: &ProcessImage,
        program: &GoProgram,
    ) -> GoReport {
        let mut report = GoReport {
            goid: None,
            version: program.version.clone(),
            status: None,
            parent_goid: None,
            created_by: None,
            system_stack: false,
            unknown: None,
            caveat: program.caveat.clone(),
        };
        if let Err(why) = &program.kernel {
            report.unknown = Some(why.clone());
            return report;
        }
        // A write before the kernel program was told about the process: the `g` it copied.
        let early = || {
            let offsets = program.g.as_ref()?;
            event.running_g.as_ref()?.goroutine(offsets)
        };
        let Some(goroutine) = event.goroutine.or_else(early) else {
            report.unknown =
                Some("stdtrace learnt this was a Go process only after this write".to_owned());
            return report;
        };
        if goroutine.flags & go_flags::FOUND == 0 {
            report.unknown = Some(if goroutine.g == 0 {
                "no goroutine in the thread's TLS slot (a thread the Go runtime does not run)"
                    .to_owned()
            } else {
                "the goroutine could not be read".to_owned()
            });
            return report;
        }
        if goroutine.flags & go_flags::STACK_OWNED == 0 {
            // A g that does not own the stack the thread is on is not the running one: saying
            // its id would be saying a wrong one.
            report.unknown = Some(format!(
                "the g in the thread's TLS slot ({:#x}) does not own its stack pointer",
                goroutine.g
            ));
            return report;
        }
        report.goid = Some(goroutine.goid);
        report.status = Some(status_name(goroutine.status).into());
        report.system_stack = goroutine.flags & go_flags::ON_SYSTEM_STACK != 0;
        report.parent_goid = (goroutine.parent_goid != 0).then_some(goroutine.parent_goid);
        if goroutine.gopc != 0
            && let ProcessImage::Known { maps, .. } = image
        {
            let frames = self
                .symbolizer
                .symbolize(event.pid, maps, goroutine.gopc, true);
            // As Go's own tracebacks say it: the function the code belongs to (the outermost
            // frame of the pc), at the position of the `go` statement (the innermost).
            if let (Some(outer), Some(inner)) = (frames.last(), frames.first())
                && outer.function.is_some()
            {
                report.created_by = Some(CreatedBy {
                    function: outer.function.clone(),
                    file: inner.file.clone(),
                    line: inner.line,
                });
            }
        }
        report
    }

    /// The named stack, why it ends early, and for a failed write its call path's site id
    /// (and whether the path is new).
    fn stack(
        &mut self,
        event: &WriteEvent,
        image: &ProcessImage,
        failed: bool,
    ) -> (Vec<FrameReport>, Option<String>, Option<(u32, bool)>) {
        let Some(saved) = event.registers else {
            return (
                Vec::new(),
                Some("the kernel could not read the thread's registers".into()),
                None,
            );
        };
        let (maps, objects) = match image {
            ProcessImage::Known { maps, objects } => (maps, objects),
            ProcessImage::Unavailable(why) => {
                let frames = saved
                    .ip()
                    .map(|ip| unnamed_frame(ip, why))
                    .into_iter()
                    .collect();
                return (frames, Some(why.clone()), None);
            }
        };
        let Self {
            symbolizer,
            sites,
            learned,
        } = self;
        if !objects.is_empty() {
            symbolizer.adopt(event.pid, maps, objects);
        }
        let registers = UserRegisters { values: saved.0 };
        let copy = StackCopy {
            base: event.stack.base,
            bytes: &event.stack.bytes,
        };
        let ip_sp = saved.ip().zip(saved.sp()).filter(|_| failed);
        let mut site = None;
        let stack = symbolizer.stack_with(event.pid, maps, &registers, &copy, |slots| {
            let Some(path) =
                ip_sp.and_then(|(ip, sp)| Learned::from_stack(event.pid, ip, sp, slots))
            else {
                return;
            };
            let (id, new) = sites.id(&path);
            if new {
                // The session may be gone at the end: nothing is left to count then.
                let _ = learned.send(vec![(path, id)]);
            }
            site = Some((id, new));
        });
        let frames = stack.frames.iter().map(frame_report).collect();
        (frames, stack.end.describe_if_early(), site)
    }
}

fn hex(value: u64) -> String {
    format!("{value:#x}")
}

/// A frame as reported.
pub fn frame_report(frame: &Frame) -> FrameReport {
    FrameReport {
        address: hex(frame.address),
        function: frame.function.clone(),
        file: frame.file.clone(),
        line: frame.line,
        object: frame
            .object
            .as_ref()
            .map(|path| path.to_string_lossy().into_owned()),
        object_address: frame.object_address.map(hex),
        inlined: frame.inlined,
        unknown: frame.miss.as_ref().map(ToString::to_string),
    }
}

fn unnamed_frame(address: u64, why: &str) -> FrameReport {
    FrameReport {
        address: hex(address),
        function: None,
        file: None,
        line: None,
        object: None,
        object_address: None,
        inlined: false,
        unknown: Some(why.to_owned()),
    }
}
