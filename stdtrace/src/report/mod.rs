//! Reports: every record stdtrace serializes ([`record`]), and the two ways it prints them:
//! text for people ([`TextOutput`]) and JSON Lines for machines ([`JsonOutput`]).
//!
//! Data flows one way: kernel event (`events`) -> enriched record (`enrich`) -> aggregates
//! (`aggregate`) -> output (here).

mod clock;
mod json;
pub mod metrics;
pub mod queue;
pub mod record;
pub mod recording;
pub mod story;
mod style;
mod text;

use std::io::{self, Write};

use self::recording::Recording;
pub use self::{
    clock::Clock,
    json::JsonOutput,
    text::{TextOutput, describe_target},
};
use crate::aggregate::repeats::{Repeats, Seen};
use record::{RepeatReport, SigpipeReport, Summary, WriteReport};

/// Where reports go.
pub enum Output {
    Text(TextOutput),
    /// JSON Lines; `quiet` leaves out everything but the summary.
    Json {
        json: JsonOutput,
        quiet: bool,
    },
    /// What is shown, and every record as JSON would print it kept in a recording as well.
    Recorded {
        shown: Box<Output>,
        recording: Recording,
    },
}

impl Output {
    /// A failed or blocked write, as its repeats see it: text prints only the first of each
    /// stack, JSON every one not folded into a call site's repeats.
    pub fn write(&mut self, report: &WriteReport, seen: Seen) -> io::Result<()> {
        match self {
            Output::Text(text) if seen == Seen::New => text.write(report),
            Output::Text(_) => Ok(()),
            Output::Json { quiet: true, .. } => Ok(()),
            Output::Json { .. } if seen == Seen::SamePath => Ok(()),
            Output::Json { json, .. } => json.record(report),
            Output::Recorded { shown, recording } => {
                if seen != Seen::SamePath {
                    recording.record(report);
                }
                shown.write(report, seen)
            }
        }
    }

    /// Periodic work between batches: text says how often stacks repeated.
    pub fn tick(&mut self, repeats: &mut Repeats) -> io::Result<()> {
        match self {
            Output::Text(text) => text.repeats(repeats, false),
            Output::Json { json, .. } => json.flush(),
            Output::Recorded { shown, .. } => shown.tick(repeats),
        }
    }

    /// JSON's `repeats` records whose counts changed (text says them on its ticks).
    pub fn repeats(&mut self, repeats: &mut Repeats) -> io::Result<()> {
        let changed = repeats.take_changed();
        self.changed_repeats(&changed)
    }

    fn changed_repeats(&mut self, changed: &[RepeatReport]) -> io::Result<()> {
        match self {
            Output::Text(_) | Output::Json { quiet: true, .. } => Ok(()),
            Output::Json { json, .. } => changed.iter().try_for_each(|report| json.record(report)),
            Output::Recorded { shown, recording } => {
                changed.iter().for_each(|report| recording.record(report));
                shown.changed_repeats(changed)
            }
        }
    }

    pub fn sigpipe(&mut self, report: &SigpipeReport) -> io::Result<()> {
        match self {
            Output::Text(text) => text.sigpipe(report),
            Output::Json { quiet: true, .. } => Ok(()),
            Output::Json { json, .. } => json.record(report),
            Output::Recorded { shown, recording } => {
                recording.record(report);
                shown.sigpipe(report)
            }
        }
    }

    /// The summary so far, for a recording to end a file with when it rotates.
    pub fn summary_so_far(&mut self, summary: &Summary) {
        if let Output::Recorded { recording, .. } = self {
            recording.summary_so_far(summary);
        }
    }

    /// The summary, after every repeat not said yet; a recording waits until `deadline` at
    /// most for its last records.
    pub fn summary(
        &mut self,
        summary: &Summary,
        repeats: &mut Repeats,
        deadline: std::time::Instant,
    ) -> io::Result<()> {
        match self {
            Output::Text(text) => {
                text.repeats(repeats, true)?;
                text.summary(summary)
            }
            Output::Json { json, .. } => json.record(summary),
            Output::Recorded { shown, recording } => {
                // The recording first: the summary shown says what it could not keep.
                let mut summary = summary.clone();
                recording.finish(&mut summary, deadline);
                summary.add_up_output_drops();
                shown.summary(&summary, repeats, deadline)
            }
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Text(text) => text.flush(),
            Output::Json { json, .. } => json.flush(),
            Output::Recorded { shown, .. } => shown.flush(),
        }
    }
}

/// Replaces control characters (escape sequences in a hostile comm or path) with visible
/// escapes before text goes to a terminal.
pub fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Writes and flushes, for outputs built on any writer.
pub(crate) fn write_line(out: &mut dyn Write, line: &str) -> io::Result<()> {
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")
}

/// A writer tests can read back: what an output wrote.
#[cfg(test)]
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
impl Captured {
    /// Everything written, as text.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(sanitize("ok"), "ok");
        assert_eq!(sanitize("evil\x1b[31m"), "evil\\u{1b}[31m");
        assert_eq!(sanitize("a\nb"), "a\\nb");
    }
}
