//! `stdtrace report FILE...`: recorded records read back ([`input`]), filtered, and shown by
//! the same text renderer as the live run (in wall time, from each file's header), ending
//! with one summary merged from the recordings' ([`merge`]); or passed through as JSON; or
//! one process's story as a timeline.

mod filter;
mod input;
mod merge;

use std::io::{self, Write};

use anyhow::{Context as _, Result};

use self::{filter::Filter, input::Item};
use crate::{
    aggregate::repeats::{Repeats, Seen},
    cli::{ColorChoice, Format, ReportArgs},
    report::{Clock, TextOutput, recording::read::Record, story::Story},
};

/// Runs `report`; the exit code is 0, or 1 when `--story` found nothing of the process.
pub fn run(args: ReportArgs, terminal: bool, no_color: bool) -> Result<i32> {
    let read = input::read_all(&args.files)?;
    if read.unknown_types > 0 {
        eprintln!(
            "stdtrace: skipped {} records of types this stdtrace does not know (from a newer stdtrace)",
            read.unknown_types
        );
    }
    let filter = Filter::new(&args, &read.items)?;
    let summary = merge::merged_summary(&read.items);
    let kept: Vec<&Item> = read
        .items
        .iter()
        .filter(|item| filter.keeps(item))
        .collect();
    let color = match args.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => terminal && !no_color,
    } && args.format == Format::Text;
    let mut stdout = io::BufWriter::new(io::stdout());
    let result = match (args.story, args.format) {
        (Some(pid), Format::Text) => {
            let mut story = Story::new(pid);
            for item in &kept {
                match &item.record {
                    Record::Write(report) => story.write(report, item.clock),
                    Record::Repeats(report) => story.repeats(report, item.clock),
                    Record::Sigpipe(report) => story.sigpipe(report, item.clock),
                    Record::Header(_) | Record::Summary(_) => {}
                }
            }
            if story.is_empty() {
                eprintln!("stdtrace: no records of pid {pid} in the recording");
                return Ok(1);
            }
            stdout
                .write_all(story.render(color).as_bytes())
                .and_then(|()| stdout.flush())
        }
        (_, Format::Json) => pass_through(&mut stdout, &kept, &summary, args.quiet),
        (None, Format::Text) => {
            let clock = kept.first().map_or_else(Clock::now, |item| item.clock);
            let mut text = TextOutput::new(Box::new(stdout), color, args.quiet, clock);
            render(&mut text, &kept, &summary)
        }
    };
    match result {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(0),
        other => other.context("writing the report").map(|()| 0),
    }
}

/// The live run's text, from its records: each first of a kind as a block, repeats counted
/// and said as they were recorded, SIGPIPE stories, then the summary.
fn render(
    text: &mut TextOutput,
    kept: &[&Item],
    summary: &crate::report::record::Summary,
) -> io::Result<()> {
    let mut repeats = Repeats::new();
    for item in kept {
        text.set_clock(item.clock);
        match &item.record {
            Record::Write(report) => {
                if repeats.observe(report, false) == Seen::New {
                    text.write(report)?;
                }
            }
            Record::Repeats(report) => {
                repeats.kernel(vec![report.clone()]);
                text.repeats(&mut repeats, true)?;
            }
            Record::Sigpipe(report) => text.sigpipe(report)?,
            Record::Header(_) | Record::Summary(_) => {}
        }
    }
    text.repeats(&mut repeats, true)?;
    text.summary(summary)
}

/// `--format json`: the records kept, as recorded, then the merged summary.
fn pass_through(
    out: &mut impl Write,
    kept: &[&Item],
    summary: &crate::report::record::Summary,
    quiet: bool,
) -> io::Result<()> {
    if !quiet {
        for item in kept {
            if !matches!(item.record, Record::Header(_) | Record::Summary(_)) {
                out.write_all(item.text.as_bytes())?;
                out.write_all(b"\n")?;
            }
        }
    }
    let mut line = serde_json::to_vec(summary).map_err(io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}
