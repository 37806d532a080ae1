//! One process's story as a timeline (`stdtrace report --story PID`): blocked since, the
//! reader gone, killed, each with its time, in the order they happened.

use super::{
    Clock,
    record::{BlockedState, Fate, RepeatReport, SigpipeReport, WriteReport},
    sanitize,
    style::Style,
    text::describe_target,
};

/// Blocked-since times this close (a `blocked_write`'s start, in milliseconds, and a
/// SIGPIPE's exact one) are the same event.
const SAME_START_NS: i128 = 1_000_000_000;

/// One moment of the story.
#[derive(Clone, Debug)]
struct Moment {
    wall_ns: i128,
    /// The order records came in: ties keep it.
    order: usize,
    clock: Clock,
    ts_ns: u64,
    text: String,
}

/// The story of one process, built from its records.
pub struct Story {
    pid: u32,
    comm: Option<String>,
    moments: Vec<Moment>,
    /// Blocked writes started, by (tid, fd), to tell each once.
    blocked_starts: Vec<(u32, i32, i128)>,
}

impl Story {
    pub fn new(pid: u32) -> Self {
        Self {
            pid,
            comm: None,
            moments: Vec::new(),
            blocked_starts: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.moments.is_empty()
    }

    fn at(&mut self, clock: Clock, ts_ns: u64, text: String) {
        let order = self.moments.len();
        self.moments.push(Moment {
            wall_ns: clock.wall_ns(ts_ns),
            order,
            clock,
            ts_ns,
            text,
        });
    }

    /// The start of a blocked write, once however many records tell it.
    fn blocked_since(&mut self, clock: Clock, tid: u32, fd: i32, since_ns: u64, text: String) {
        let wall = clock.wall_ns(since_ns);
        let told = self
            .blocked_starts
            .iter()
            .any(|&(t, f, at)| t == tid && f == fd && (at - wall).abs() < SAME_START_NS);
        if !told {
            self.blocked_starts.push((tid, fd, wall));
            self.at(clock, since_ns, text);
        }
    }

    pub fn write(&mut self, report: &WriteReport, clock: Clock) {
        if report.pid != self.pid {
            return;
        }
        self.comm.get_or_insert_with(|| report.comm.clone());
        let thread = if report.tid != report.pid {
            format!("tid {}: ", report.tid)
        } else {
            String::new()
        };
        let call = format!("{thread}{}({})", report.syscall, report.fd);
        let target = describe_target(&report.target);
        if let Some(errno) = report.errno {
            self.at(
                clock,
                report.ts_ns,
                format!(
                    "{call} failed: {} ({}) -> {target}",
                    errno.name(),
                    errno.describe()
                ),
            );
            return;
        }
        let ms = report.duration_ms.unwrap_or(0);
        let seconds = ms as f64 / 1000.0;
        let since = report.ts_ns.saturating_sub(ms.saturating_mul(1_000_000));
        let start = match report.state {
            Some(BlockedState::Parked) => {
                format!("{call} parked by the Go runtime after EAGAIN -> {target}")
            }
            _ => format!("{call} blocked -> {target}"),
        };
        self.blocked_since(clock, report.tid, report.fd, since, start);
        let now = match report.state {
            Some(BlockedState::Stuck) => format!("{call} still blocked, for {seconds:.1}s"),
            Some(BlockedState::Parked) => format!("{call} still parked, for {seconds:.1}s"),
            Some(BlockedState::Resumed) => format!("{call} resumed after {seconds:.1}s"),
            Some(BlockedState::Slow) | None => {
                format!("{call} returned after {seconds:.1}s (slow)")
            }
        };
        self.at(clock, report.ts_ns, now);
    }

    pub fn repeats(&mut self, report: &RepeatReport, clock: Clock) {
        if report.pid != self.pid {
            return;
        }
        self.at(
            clock,
            report.last_ts_ns,
            format!(
                "{}({}) {}: {} failures from the same call path (site {}) since {}",
                report.syscall,
                report.fd,
                report.errno.name(),
                report.count,
                report.site,
                clock.format(report.first_ts_ns)
            ),
        );
    }

    pub fn sigpipe(&mut self, report: &SigpipeReport, clock: Clock) {
        if report.pid != self.pid {
            return;
        }
        self.comm.get_or_insert_with(|| report.comm.clone());
        if let (Some(since), Some(fd)) = (report.blocked_since_ns, report.fd) {
            let target = report
                .target
                .as_ref()
                .map(|target| format!(" -> {}", describe_target(target)))
                .unwrap_or_default();
            self.blocked_since(
                clock,
                report.tid,
                fd,
                since,
                format!("write({fd}) blocked{target}"),
            );
        }
        if let Some(reader) = &report.reader {
            let who = format!("reader pid {} ({})", reader.pid, sanitize(&reader.comm));
            if let Some(at) = reader.closed_ts_ns {
                self.at(
                    clock,
                    at,
                    format!("{who} closed the read end: the reader went away"),
                );
            }
            if let Some(at) = reader.exit_ts_ns {
                self.at(clock, at, format!("{who} exited"));
            }
        }
        let cause = match (&report.sent_by, report.fd) {
            (Some(sender), _) => format!(
                "SIGPIPE sent by pid {} ({})",
                sender.pid,
                sanitize(&sender.comm)
            ),
            (None, Some(fd)) => format!("SIGPIPE raised by write({fd})"),
            (None, None) => "SIGPIPE".to_owned(),
        };
        self.at(clock, report.ts_ns, cause);
        let fate = match report.fate {
            Fate::Killed => "killed by SIGPIPE",
            Fate::Ignored => "SIGPIPE ignored: the write got EPIPE and it went on",
            Fate::Handled => "SIGPIPE handled by its handler",
            Fate::Blocked => "SIGPIPE blocked, pending",
            Fate::Pending => return,
        };
        let count = if report.count > 1 {
            format!(" ({} SIGPIPEs)", report.count)
        } else {
            String::new()
        };
        self.at(
            clock,
            report.fate_ts_ns.unwrap_or(report.ts_ns),
            format!("{fate}{count}"),
        );
    }

    /// The timeline: a title line, then one line per moment, earliest first.
    pub fn render(mut self, color: bool) -> String {
        let style = Style { color };
        self.moments
            .sort_by_key(|moment| (moment.wall_ns, moment.order));
        let comm = self
            .comm
            .as_deref()
            .map(|comm| format!(" ({})", sanitize(comm)))
            .unwrap_or_default();
        let mut text = format!(
            "{}\n",
            style.bold(&format!("story of pid {}{comm}", self.pid))
        );
        for moment in &self.moments {
            text.push_str(&format!(
                "{}  {}\n",
                style.dim(&moment.clock.format(moment.ts_ns)),
                moment.text
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::record::{LastReader, RecordType, samples};

    #[test]
    fn blocked_then_the_reader_gone_then_killed() {
        let clock = Clock::from_offset(0);
        let mut blocked = samples::report();
        blocked.record_type = RecordType::BlockedWrite;
        blocked.errno = None;
        blocked.state = Some(BlockedState::Stuck);
        blocked.duration_ms = Some(2000);
        blocked.ts_ns = 3_000_000_000;
        let sigpipe = SigpipeReport {
            node: crate::report::record::Node::here(),
            record_type: RecordType::Sigpipe,
            ts_ns: 5_000_000_000,
            pid: 812,
            tid: 812,
            comm: "writer".into(),
            fd: Some(4),
            count: 1,
            fate: Fate::Killed,
            fate_ts_ns: Some(5_100_000_000),
            blocked_since_ns: Some(1_000_400_000),
            blocked_ms: Some(4000),
            reader: Some(LastReader {
                pid: 813,
                comm: "head".into(),
                exited: true,
                exit_ts_ns: Some(4_900_000_000),
                closed_ts_ns: Some(4_800_000_000),
            }),
            sent_by: None,
            target: None,
            stack: Vec::new(),
            go: None,
            container: None,
        };
        let mut story = Story::new(812);
        // The SIGPIPE first, as it may come in another file: the order is the times'.
        story.sigpipe(&sigpipe, clock);
        story.write(&blocked, clock);
        let mut other = samples::report();
        other.pid = 9;
        story.write(&other, clock);
        let text = story.render(false);
        let lines: Vec<&str> = text
            .lines()
            .skip(1)
            .map(|line| line.split_once("  ").unwrap().1)
            .collect();
        assert_eq!(
            lines,
            [
                "write(4) blocked",
                "write(4) still blocked, for 2.0s",
                "reader pid 813 (head) closed the read end: the reader went away",
                "reader pid 813 (head) exited",
                "SIGPIPE raised by write(4)",
                "killed by SIGPIPE",
            ],
            "{text}"
        );
        assert!(text.starts_with("story of pid 812 (writer)\n"), "{text}");
    }
}
