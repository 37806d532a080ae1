//! A snapshot's output: its `blocked_write` records through `trace`'s outputs, `goroutine`
//! records, and the summary line that ends it.

use std::io::{self, BufWriter, Write};

use crate::{
    aggregate::repeats::Seen,
    cli::Format,
    report::{
        Clock, JsonOutput, Output, TextOutput,
        record::{GoroutineRecord, SnapshotSummary, WriteReport},
        sanitize,
    },
};

pub struct SnapshotOutput {
    output: Output,
    /// JSON Lines of the goroutines and the summary, buffered (a dump has thousands), after
    /// `output` has flushed its records.
    json: Option<JsonOutput>,
    /// The same for text.
    text: BufWriter<io::Stdout>,
}

/// Stdout, where a closed pipe ends the output quietly.
fn stdout() -> Box<dyn Write + Send> {
    Box::new(io::stdout())
}

impl SnapshotOutput {
    pub fn new(format: Format, color: bool) -> Self {
        match format {
            Format::Text => Self {
                output: Output::Text(TextOutput::new(stdout(), color, false, Clock::now())),
                json: None,
                text: buffered(),
            },
            Format::Json => Self {
                output: Output::Json {
                    json: JsonOutput::new(stdout()),
                    quiet: false,
                },
                json: Some(JsonOutput::new(Box::new(buffered()))),
                text: buffered(),
            },
        }
    }

    pub fn write(&mut self, report: &WriteReport) -> io::Result<()> {
        ignore_closed(self.output.write(report, Seen::New))?;
        ignore_closed(self.output.flush())
    }

    pub fn goroutine(&mut self, record: &GoroutineRecord) -> io::Result<()> {
        match &mut self.json {
            Some(json) => ignore_closed(json.record(record)),
            None => ignore_closed(self.text.write_all(render_goroutine(record).as_bytes())),
        }
    }

    pub fn summary(&mut self, summary: &SnapshotSummary) -> io::Result<()> {
        let result = match &mut self.json {
            Some(json) => json.record(summary).and_then(|()| json.flush()),
            None => self
                .text
                .write_all(render_summary(summary).as_bytes())
                .and_then(|()| self.text.flush()),
        };
        ignore_closed(result)
    }
}

fn buffered() -> BufWriter<io::Stdout> {
    BufWriter::with_capacity(64 * 1024, io::stdout())
}

/// A reader that went away is not an error of ours.
fn ignore_closed(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// `goroutine 17 [chan receive]:` and its frames, as Go's own dumps print them.
pub fn render_goroutine(record: &GoroutineRecord) -> String {
    let reason = match (&record.wait_reason, record.status) {
        (Some(reason), "waiting") if !reason.is_empty() => sanitize(reason),
        _ => record.status.to_owned(),
    };
    let mut text = format!(
        "pid {} ({}) goroutine {} [{reason}]",
        record.pid,
        sanitize(&record.comm),
        record.goid
    );
    if let Some(tid) = record.blocked_write_tid {
        text.push_str(&format!(", blocked writing in tid {tid}"));
    }
    text.push_str(":\n");
    for (index, frame) in record.stack.iter().enumerate() {
        let name = frame.function.as_deref().map(sanitize);
        let at = match (&frame.file, frame.line) {
            (Some(file), Some(line)) => format!(" at {}:{line}", sanitize(file)),
            _ => String::new(),
        };
        text.push_str(&format!(
            "    #{index:<2} {}{at}\n",
            name.unwrap_or_else(|| frame.address.clone())
        ));
    }
    if let Some(created) = &record.created_by
        && let Some(function) = &created.function
    {
        text.push_str(&format!("  created by {}", sanitize(function)));
        if let Some(parent) = record.parent_goid {
            text.push_str(&format!(" in goroutine {parent}"));
        }
        text.push('\n');
    }
    if let Some(end) = &record.stack_end {
        text.push_str(&format!("    (stack ends: {})\n", sanitize(end)));
    }
    text.push('\n');
    text
}

/// The last line: what was found, or that nothing is blocked.
pub fn render_summary(summary: &SnapshotSummary) -> String {
    let whom = match summary.pids.as_slice() {
        [] => "any process".to_owned(),
        [pid] => format!("pid {pid}"),
        pids => format!(
            "pids {}",
            pids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut line = if summary.blocked_writes == 0 {
        format!("no thread of {whom} is blocked writing")
    } else {
        let threads = if summary.blocked_writes == 1 {
            "1 thread".to_owned()
        } else {
            format!("{} threads", summary.blocked_writes)
        };
        format!("snapshot: {threads} blocked writing")
    };
    let plural = |count: usize, one: &str, many: &str| {
        format!("{count} {}", if count == 1 { one } else { many })
    };
    line.push_str(&format!(
        " ({}, {} looked at",
        plural(summary.processes, "process", "processes"),
        plural(summary.threads, "thread", "threads")
    ));
    if summary.unreadable > 0 {
        line.push_str(&format!(
            ", {} not readable without CAP_SYS_PTRACE",
            summary.unreadable
        ));
    }
    if summary.goroutines > 0 {
        line.push_str(&format!(", {} goroutines listed", summary.goroutines));
    }
    line.push_str(&format!(", in {} ms)\n", summary.duration_ms));
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::record::RecordType;

    fn summary(pids: Vec<u32>, blocked: usize) -> SnapshotSummary {
        SnapshotSummary {
            node: crate::report::record::Node("node-1".into()),
            record_type: RecordType::SnapshotSummary,
            duration_ms: 12,
            processes: 1,
            unreadable: 0,
            threads: 3,
            blocked_writes: blocked,
            goroutines: 0,
            pids,
        }
    }

    #[test]
    fn the_summary_says_when_nothing_is_blocked() {
        assert_eq!(
            render_summary(&summary(vec![812], 0)),
            "no thread of pid 812 is blocked writing (1 process, 3 threads looked at, in 12 ms)\n"
        );
        assert!(render_summary(&summary(vec![], 2)).starts_with("snapshot: 2 threads blocked"));
        let json = serde_json::to_string(&summary(vec![1, 2], 1)).unwrap();
        assert!(
            json.starts_with(r#"{"type":"snapshot_summary","node":"node-1","duration_ms":12"#),
            "{json}"
        );
    }
}
