//! The end of a writer's story: SIGPIPE. Who got it, at which write, who was the reader that
//! went away, and what became of the writer: killed, ignored (the write got EPIPE and it went
//! on), handled, or blocked (pending in its signal mask). One record per process and fd, with
//! a count, however many writes failed; a killed writer gets exactly one.
//!
//! The pieces arrive in order from the kernel: the SIGPIPE generated inside the write (with
//! the disposition and mask that decide its fate), the write's own EPIPE record (its stack and
//! goroutine, what its fd points at and the reader that left), the delivery (a handler about to
//! run), and the exit (its code says whether SIGPIPE killed it).
//!
//! Go's rule: a Go program's runtime catches every SIGPIPE; a write to a broken pipe on fd 1 or
//! 2 makes it raise SIGPIPE on itself and die, any other fd just gets EPIPE. So for a Go process
//! the kernel's SIGPIPE and the runtime's own re-raise are one story, told only if it dies.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::sigpipe_fates::FinishedStories;
use crate::{
    errno::Errno,
    events::{Disposition, SigpipeEvent},
    report::record::{
        BlockedState, Fate, FdTarget, LastReader, RecordType, SenderReport, SigpipeFates,
        SigpipeReport, WriteReport,
    },
};

const SIGPIPE: u32 = 13;

/// Ticks a story waits for its write's record before it goes on without it (EPIPE not watched,
/// or the record dropped or counted in the kernel). Two seconds at the session's 250 ms tick:
/// under load a write's record can come that late (a launched Go program's executable is read
/// before its first write is captured), and a story decided without it cannot join the Go
/// runtime's own re-raise of SIGPIPE (it became two stories, `handled` and `killed`).
const WRITE_WAIT_TICKS: u32 = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Awaiting {
    /// The write's own record, then the fate the disposition gives.
    Write,
    /// The exit: killed, if SIGPIPE is its cause.
    Exit,
    /// The delivery: a handler runs.
    Delivery,
    /// Nothing: told.
    Nothing,
}

#[derive(Clone, Debug)]
struct Story {
    report: SigpipeReport,
    disposition: Disposition,
    blocked: bool,
    /// The writer is a Go program.
    go: bool,
    awaiting: Awaiting,
    told: bool,
    /// Ticks spent waiting for the write's record.
    ticks: u32,
}

/// SIGPIPE stories, by process and fd.
#[derive(Default)]
pub struct SigpipeTracker {
    stories: BTreeMap<(u32, i32), Story>,
    /// The (process, fd) of the last write-raised SIGPIPE per thread, to tie the write's record
    /// to it.
    raised: HashMap<u32, (u32, i32)>,
    /// Stories of processes that exited and were folded: counted, the largest kept.
    finished: FinishedStories,
}

/// `-1` stands for "no write" in the story keys.
const NO_FD: i32 = -1;

impl SigpipeTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// A SIGPIPE generated or delivered. Returns the stories to tell now.
    pub fn signal(&mut self, event: &SigpipeEvent) -> Vec<SigpipeReport> {
        if event.delivered {
            return self.delivered(event);
        }
        if event.from_write {
            let fd = event.fd.unwrap_or(NO_FD);
            self.raised.insert(event.tid, (event.pid, fd));
            let story = self
                .stories
                .entry((event.pid, fd))
                .or_insert_with(|| Story::new(event, Some(fd), None));
            // The writer raised it: its name, should the write's own record not come (its
            // call path known, it was counted in the kernel).
            if story.report.comm.is_empty() {
                story.report.comm = event.sender_comm.clone();
            }
            story.report.count += 1;
            return Vec::new();
        }
        // Not raised by a write: sent by a process. A process raising it on itself while a
        // write-raised story of its own awaits its exit (Go's runtime, dying of it) is that
        // same story.
        if event.sender_pid == event.pid
            && self
                .stories
                .range((event.pid, i32::MIN)..=(event.pid, i32::MAX))
                .any(|(_, story)| story.awaiting == Awaiting::Exit)
        {
            return Vec::new();
        }
        let story = self.stories.entry((event.pid, NO_FD)).or_insert_with(|| {
            let sender = SenderReport {
                pid: event.sender_pid,
                comm: event.sender_comm.clone(),
            };
            Story::new(event, None, Some(sender))
        });
        story.report.count += 1;
        story.disposition = event.disposition;
        story.blocked = event.blocked;
        // No write record will come: the fate is decided now.
        decide(story, false, event.ts_ns).into_iter().collect()
    }

    /// A write's record. An EPIPE write that raised a SIGPIPE completes its story.
    pub fn write(&mut self, report: &WriteReport) -> Vec<SigpipeReport> {
        if report.record_type == RecordType::BlockedWrite
            && report.state == Some(BlockedState::Resumed)
        {
            // The write that raised the SIGPIPE had blocked first: its resumed record comes
            // before its EPIPE record.
            if let Some(&(pid, fd)) = self.raised.get(&report.tid)
                && report.pid == pid
                && report.fd == fd
                && let Some(story) = self.stories.get_mut(&(pid, fd))
                && let Some(ms) = report.duration_ms
            {
                story.report.blocked_ms = Some(ms);
                story.report.blocked_since_ns = Some(report.ts_ns.saturating_sub(ms * 1_000_000));
            }
            return Vec::new();
        }
        // A send with MSG_NOSIGNAL raised no SIGPIPE: no story is waiting for it, and it must
        // not be tied to one raised by an earlier write of its thread.
        if report.errno != Some(Errno::EPIPE) || report.nosignal {
            return Vec::new();
        }
        let Some((_, fd)) = self.raised.remove(&report.tid) else {
            return Vec::new();
        };
        let Some(story) = self.stories.get_mut(&(report.pid, fd)) else {
            return Vec::new();
        };
        if story.report.stack.is_empty() {
            story.report.stack = report.stack.clone();
            story.report.go = report.go.clone();
            story.report.comm = report.comm.clone();
            story.report.container = report.container.clone();
            story.report.reader = reader_of(&report.target);
            story.report.target = Some(report.target.clone());
        }
        if story.awaiting != Awaiting::Write {
            return Vec::new();
        }
        let is_go = report.go.is_some();
        story.go = is_go;
        if is_go && !matches!(fd, 1 | 2) && !story.blocked {
            // Go's rule: EPIPE on any other fd is returned to the program, which goes on; the
            // runtime's handler swallows the kernel's SIGPIPE. The EPIPE write tells it all.
            story.awaiting = Awaiting::Nothing;
            return Vec::new();
        }
        decide(story, is_go, report.ts_ns).into_iter().collect()
    }

    fn delivered(&mut self, event: &SigpipeEvent) -> Vec<SigpipeReport> {
        let Disposition::Handler(_) = event.disposition else {
            return Vec::new();
        };
        let mut told = Vec::new();
        for ((pid, _), story) in self
            .stories
            .range_mut((event.pid, i32::MIN)..=(event.pid, i32::MAX))
        {
            debug_assert_eq!(*pid, event.pid);
            if story.awaiting == Awaiting::Delivery {
                story.awaiting = Awaiting::Nothing;
                story.report.fate = Fate::Handled;
                story.report.fate_ts_ns = Some(event.ts_ns);
                if !story.told {
                    story.told = true;
                    told.push(story.report.clone());
                }
            }
        }
        told
    }

    /// A process exited with `exit_code` (its wait status): killed by SIGPIPE, if the signal
    /// number is 13.
    pub fn exit(&mut self, pid: u32, ts_ns: u64, exit_code: u32) -> Vec<SigpipeReport> {
        let killed = exit_code & 0x7f == SIGPIPE;
        let mut told = Vec::new();
        let mut killed_told = false;
        for (_, story) in self.stories.range_mut((pid, i32::MIN)..=(pid, i32::MAX)) {
            let fate = match story.awaiting {
                // Killed once: one record, whatever other fds it had stories on.
                Awaiting::Exit | Awaiting::Write if killed && !killed_told => Fate::Killed,
                // A Go program that lived on after EPIPE on stdout or stderr caught SIGPIPE
                // with signal.Notify.
                Awaiting::Exit if story.go && !killed => Fate::Handled,
                _ => continue,
            };
            killed_told |= fate == Fate::Killed;
            story.report.fate = fate;
            story.report.fate_ts_ns = Some(ts_ns);
            story.awaiting = Awaiting::Nothing;
            if !story.told {
                story.told = true;
                told.push(story.report.clone());
            }
        }
        self.raised.retain(|_, (raised_in, _)| *raised_in != pid);
        told
    }

    /// Stories whose write record has not come within [`WRITE_WAIT_TICKS`] (EPIPE is not among
    /// the watched errnos, or the event was dropped) go on without it; returns those now told.
    pub fn tick(&mut self) -> Vec<SigpipeReport> {
        let mut told = Vec::new();
        for story in self.stories.values_mut() {
            if story.awaiting != Awaiting::Write {
                continue;
            }
            story.ticks += 1;
            if story.ticks > WRITE_WAIT_TICKS {
                let ts_ns = story.report.ts_ns;
                told.extend(decide(story, false, ts_ns));
            }
        }
        told
    }

    /// The stories of live processes told, with their final count: the kernel's exact count
    /// of SIGPIPEs raised by writes on that fd (`counts`, by process and fd) for writers that
    /// went on (ignored, handled, blocked); a killed writer was killed by the first. Then the
    /// largest stories of exited processes, and the counts per fate of them all.
    pub fn summary(&self, counts: &HashMap<(u32, i32), u64>) -> (Vec<SigpipeReport>, SigpipeFates) {
        let live: Vec<SigpipeReport> = self
            .stories
            .values()
            .filter(|story| story.told)
            .map(|story| final_report(story, counts))
            .collect();
        let fates = self.finished.fates(&live);
        let mut all = live;
        all.extend(self.finished.top().iter().cloned());
        (all, fates)
    }

    /// The processes exited and their kernel entries were folded (`counts`: their SIGPIPE
    /// counts): their stories are finished, counted per fate and kept only if among the
    /// largest. A story still waiting for its write's record (counted in the kernel, from a
    /// call path already reported) goes on without it: returns those told now.
    pub fn retire(
        &mut self,
        pids: &HashSet<u32>,
        counts: &HashMap<(u32, i32), u64>,
    ) -> Vec<SigpipeReport> {
        let keys: Vec<(u32, i32)> = self
            .stories
            .keys()
            .filter(|(pid, _)| pids.contains(pid))
            .copied()
            .collect();
        let mut told = Vec::new();
        for key in keys {
            let Some(mut story) = self.stories.remove(&key) else {
                continue;
            };
            if story.awaiting == Awaiting::Write {
                let (ts_ns, go) = (story.report.ts_ns, story.go);
                told.extend(decide(&mut story, go, ts_ns));
            }
            if story.told {
                self.finished.finish(final_report(&story, counts));
            }
        }
        self.raised.retain(|_, (pid, _)| !pids.contains(pid));
        told
    }
}

/// A story as the summary keeps it: its final count, without the stack told already.
fn final_report(story: &Story, counts: &HashMap<(u32, i32), u64>) -> SigpipeReport {
    let mut report = story.report.clone();
    if report.fate != Fate::Killed
        && let Some(fd) = report.fd
        && let Some(&count) = counts.get(&(report.pid, fd))
    {
        report.count = report.count.max(count);
    }
    report.stack = Vec::new();
    report.target = None;
    report
}

impl Story {
    /// The story a SIGPIPE starts: raised by a write on `fd`, or sent by `sent_by`.
    fn new(event: &SigpipeEvent, fd: Option<i32>, sent_by: Option<SenderReport>) -> Self {
        Story {
            report: SigpipeReport {
                node: crate::report::record::Node::here(),
                record_type: RecordType::Sigpipe,
                ts_ns: event.ts_ns,
                pid: event.pid,
                tid: event.tid,
                comm: String::new(),
                container: None,
                fd,
                count: 0,
                fate: Fate::Pending,
                fate_ts_ns: None,
                blocked_since_ns: None,
                blocked_ms: None,
                reader: None,
                sent_by,
                target: None,
                stack: Vec::new(),
                go: None,
            },
            disposition: event.disposition,
            blocked: event.blocked,
            go: false,
            awaiting: Awaiting::Write,
            told: false,
            ticks: 0,
        }
    }
}

/// What the disposition makes of the SIGPIPE; the story to tell now, if its fate is sealed.
fn decide(story: &mut Story, is_go: bool, ts_ns: u64) -> Option<SigpipeReport> {
    let (fate, awaiting) = if story.blocked {
        (Fate::Blocked, Awaiting::Nothing)
    } else {
        match story.disposition {
            Disposition::Ignore => (Fate::Ignored, Awaiting::Nothing),
            Disposition::Default => (Fate::Pending, Awaiting::Exit),
            // Go's runtime handles every SIGPIPE: the story is told if it dies of it.
            Disposition::Handler(_) if is_go => (Fate::Pending, Awaiting::Exit),
            Disposition::Handler(_) => (Fate::Pending, Awaiting::Delivery),
        }
    };
    story.awaiting = awaiting;
    if awaiting != Awaiting::Nothing {
        return None;
    }
    story.report.fate = fate;
    story.report.fate_ts_ns = Some(ts_ns);
    if story.told {
        return None;
    }
    story.told = true;
    Some(story.report.clone())
}

/// The reader that went away, from what the capture found on the write's target.
fn reader_of(target: &FdTarget) -> Option<LastReader> {
    target.last_reader.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::record::{GoReport, samples::report};

    const PID: u32 = 812;

    fn generated(fd: Option<i32>, disposition: Disposition, sender_pid: u32) -> SigpipeEvent {
        SigpipeEvent {
            delivered: false,
            pid: PID,
            tid: PID,
            sender_pid,
            sender_tid: sender_pid,
            sender_comm: if sender_pid == PID { "writer" } else { "kill" }.to_owned(),
            code: 0,
            result: 0,
            blocked: false,
            from_write: fd.is_some(),
            fd,
            disposition,
            ts_ns: 10,
        }
    }

    fn delivered(disposition: Disposition) -> SigpipeEvent {
        SigpipeEvent {
            delivered: true,
            from_write: false,
            fd: None,
            ts_ns: 20,
            ..generated(None, disposition, 0)
        }
    }

    /// The EPIPE write on fd 4, from a Go program when `go` is set.
    fn epipe(fd: i32, go: bool) -> WriteReport {
        let mut write = report();
        write.fd = fd;
        write.go = go.then(|| GoReport {
            goid: Some(7),
            version: "go1.25.5".to_owned(),
            status: Some("syscall".into()),
            parent_goid: Some(1),
            created_by: None,
            system_stack: false,
            unknown: None,
            caveat: None,
        });
        write
    }

    const KILLED_BY_SIGPIPE: u32 = 13;

    #[test]
    fn default_disposition_is_told_once_at_the_exit() {
        let mut tracker = SigpipeTracker::new();
        assert!(
            tracker
                .signal(&generated(Some(4), Disposition::Default, PID))
                .is_empty()
        );
        assert!(
            tracker.write(&epipe(4, false)).is_empty(),
            "its fate is not known yet"
        );
        let told = tracker.exit(PID, 30, KILLED_BY_SIGPIPE);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].fate, Fate::Killed);
        assert_eq!(told[0].fd, Some(4));
        assert_eq!(told[0].fate_ts_ns, Some(30));
        assert_eq!(told[0].stack, epipe(4, false).stack);
        assert!(tracker.exit(PID, 31, KILLED_BY_SIGPIPE).is_empty());
        assert_eq!(tracker.summary(&HashMap::new()).0.len(), 1);
    }

    #[test]
    fn a_send_with_msg_nosignal_tells_no_story_and_takes_none() {
        let mut tracker = SigpipeTracker::new();
        let mut send = epipe(4, false);
        send.syscall = "sendto".into();
        send.nosignal = true;
        assert!(tracker.write(&send).is_empty());
        // A SIGPIPE raised by an earlier write of the thread is not this send's.
        tracker.signal(&generated(Some(4), Disposition::Ignore, PID));
        assert!(tracker.write(&send).is_empty());
        assert_eq!(tracker.write(&epipe(4, false))[0].fate, Fate::Ignored);
        assert!(tracker.exit(PID, 30, 0).is_empty());
    }

    #[test]
    fn ignored_is_told_at_the_write_and_counted_in_the_summary() {
        let mut tracker = SigpipeTracker::new();
        tracker.signal(&generated(Some(4), Disposition::Ignore, PID));
        let told = tracker.write(&epipe(4, false));
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].fate, Fate::Ignored);
        assert_eq!(told[0].count, 1);
        // Later EPIPE writes on the fd (their SIGPIPEs counted in the kernel) tell nothing.
        assert!(tracker.write(&epipe(4, false)).is_empty());
        let counts = HashMap::from([((PID, 4), 1_000_000)]);
        let (summary, _) = tracker.summary(&counts);
        assert_eq!(summary.len(), 1);
        assert_eq!(summary[0].count, 1_000_000);
        assert!(summary[0].stack.is_empty());
    }

    #[test]
    fn the_story_names_the_writers_container() {
        let mut tracker = SigpipeTracker::new();
        tracker.signal(&generated(Some(4), Disposition::Ignore, PID));
        let mut write = epipe(4, false);
        write.container = Some(crate::report::record::Container {
            id: "c".repeat(64),
            ..Default::default()
        });
        let told = tracker.write(&write);
        assert_eq!(told[0].container, write.container);
    }

    #[test]
    fn a_handler_is_told_when_it_runs() {
        let mut tracker = SigpipeTracker::new();
        let handler = Disposition::Handler(0x401000);
        tracker.signal(&generated(Some(4), handler, PID));
        assert!(tracker.write(&epipe(4, false)).is_empty());
        let told = tracker.signal(&delivered(handler));
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].fate, Fate::Handled);
        assert_eq!(told[0].fate_ts_ns, Some(20));
    }

    #[test]
    fn blocked_is_told_at_the_write() {
        let mut tracker = SigpipeTracker::new();
        tracker.signal(&SigpipeEvent {
            blocked: true,
            ..generated(Some(4), Disposition::Default, PID)
        });
        let told = tracker.write(&epipe(4, false));
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].fate, Fate::Blocked);
        assert!(tracker.exit(PID, 30, 0).is_empty());
    }

    /// Go on stdout: the kernel's SIGPIPE (caught by the runtime) and the runtime's re-raise
    /// on itself are one story, told when it dies of it.
    #[test]
    fn go_dying_on_stdout_is_one_story() {
        let mut tracker = SigpipeTracker::new();
        let runtime = Disposition::Handler(0x46a000);
        tracker.signal(&generated(Some(1), runtime, PID));
        assert!(tracker.write(&epipe(1, true)).is_empty());
        assert!(tracker.signal(&delivered(runtime)).is_empty());
        // The runtime resets SIGPIPE and raises it on itself.
        assert!(
            tracker
                .signal(&generated(None, Disposition::Default, PID))
                .is_empty()
        );
        let told = tracker.exit(PID, 30, KILLED_BY_SIGPIPE);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].fate, Fate::Killed);
        assert_eq!(told[0].go.as_ref().and_then(|go| go.goid), Some(7));
        assert_eq!(told[0].sent_by, None);
        assert_eq!(tracker.summary(&HashMap::new()).0.len(), 1);
    }

    /// Go on another fd: EPIPE only; a Go program that lives on after EPIPE on stdout caught
    /// SIGPIPE with signal.Notify.
    #[test]
    fn go_on_another_fd_is_no_story_and_notify_is_handled() {
        let mut tracker = SigpipeTracker::new();
        let runtime = Disposition::Handler(0x46a000);
        tracker.signal(&generated(Some(5), runtime, PID));
        assert!(tracker.write(&epipe(5, true)).is_empty());
        tracker.signal(&generated(Some(1), runtime, PID));
        assert!(tracker.write(&epipe(1, true)).is_empty());
        let told = tracker.exit(PID, 30, 0);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].fd, Some(1));
        assert_eq!(told[0].fate, Fate::Handled);
        assert_eq!(tracker.summary(&HashMap::new()).0.len(), 1);
    }

    #[test]
    fn sent_by_another_process_names_the_sender() {
        let mut tracker = SigpipeTracker::new();
        assert!(
            tracker
                .signal(&generated(None, Disposition::Default, 99))
                .is_empty()
        );
        let told = tracker.exit(PID, 30, KILLED_BY_SIGPIPE);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].fd, None);
        assert_eq!(
            told[0].sent_by,
            Some(SenderReport {
                pid: 99,
                comm: "kill".to_owned()
            })
        );
    }

    /// A write record that never comes (EPIPE not watched, or dropped): the story goes on
    /// without it after `WRITE_WAIT_TICKS`.
    #[test]
    fn a_missing_write_record_does_not_hold_the_story() {
        let mut tracker = SigpipeTracker::new();
        tracker.signal(&generated(Some(4), Disposition::Ignore, PID));
        for _ in 0..WRITE_WAIT_TICKS {
            assert!(tracker.tick().is_empty());
        }
        let told = tracker.tick();
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].fate, Fate::Ignored);
        assert!(told[0].stack.is_empty());
    }
}
