//! The inputs of `report`: files, directories of a recording's files, stdin; each file's
//! records with the clock of its header.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use crate::report::{
    Clock,
    recording::read::{Record, parse_records},
};

/// A record read, with what it needs to be shown.
pub struct Item {
    pub record: Record,
    /// Its line as recorded.
    pub text: String,
    /// Monotonic to wall time, from its file's header.
    pub clock: Clock,
    /// The recording it belongs to (its header's id); `None` without a header.
    pub recording: Option<String>,
}

/// Everything read.
pub struct Recorded {
    pub items: Vec<Item>,
    pub unknown_types: u64,
}

/// Reads every input in order (a directory's `*.jsonl` files by name: a recording's files
/// sort in the order they were written).
pub fn read_all(inputs: &[PathBuf]) -> Result<Recorded> {
    let mut read = Recorded {
        items: Vec::new(),
        unknown_types: 0,
    };
    for input in inputs {
        if input.as_os_str() == "-" {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("reading stdin")?;
            read_one(&mut read, "stdin", &bytes)?;
        } else if input.is_dir() {
            let files = recorded_files(input)?;
            if files.is_empty() {
                bail!("{}: no recorded files (*.jsonl) in it", input.display());
            }
            for file in files {
                read_file(&mut read, &file)?;
            }
        } else {
            read_file(&mut read, input)?;
        }
    }
    Ok(read)
}

fn recorded_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the directory {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl") && path.is_file())
        .collect();
    files.sort();
    Ok(files)
}

fn read_file(read: &mut Recorded, path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    read_one(read, &path.display().to_string(), &bytes)
}

fn read_one(read: &mut Recorded, name: &str, bytes: &[u8]) -> Result<()> {
    let parsed = parse_records(bytes).map_err(|err| anyhow::anyhow!("{name}: {err}"))?;
    if let Some(cut) = parsed.truncated {
        eprintln!(
            "stdtrace: {name}: the last line is cut short ({cut} bytes; was the recorder killed?): skipped"
        );
    }
    read.unknown_types += parsed.unknown_types;
    // Records before any header (`--format json` output saved) were taken on this boot, we
    // hope: shown with the clock of now.
    let mut clock = Clock::now();
    let mut recording = None;
    if !matches!(
        parsed.lines.first().map(|line| &line.record),
        Some(Record::Header(_))
    ) {
        log::warn!("{name}: no header: times are shown as if recorded on this boot");
    }
    for line in parsed.lines {
        if let Record::Header(header) = &line.record {
            clock = Clock::from_offset(header.wall_minus_monotonic_ns);
            recording = Some(header.recording.clone());
        }
        read.items.push(Item {
            record: line.record,
            text: line.text,
            clock,
            recording: recording.clone(),
        });
    }
    Ok(())
}
