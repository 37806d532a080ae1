//! Reading recorded JSON Lines back: [`parse_records`] takes any bytes (a file, stdin,
//! hostile input) and gives the records it knows, what it skipped, or one clear error.

use serde::Deserialize;

use crate::report::record::{
    Header, RECORDING_SCHEMA, RepeatReport, SigpipeReport, Summary, WriteReport,
};

/// One record read back.
#[derive(Clone, Debug)]
pub enum Record {
    Header(Header),
    /// `write_error` or `blocked_write`.
    Write(Box<WriteReport>),
    Repeats(RepeatReport),
    Sigpipe(Box<SigpipeReport>),
    Summary(Box<Summary>),
}

/// A record and its line as recorded (`report --format json` passes it through unchanged,
/// fields this stdtrace does not know included).
#[derive(Clone, Debug)]
pub struct Line {
    pub record: Record,
    pub text: String,
}

/// What one input held.
#[derive(Debug, Default)]
pub struct Parsed {
    pub lines: Vec<Line>,
    /// Records of types this stdtrace does not know (from a newer one), skipped.
    pub unknown_types: u64,
    /// The last line was cut short (a recorder killed while writing): its bytes, skipped.
    pub truncated: Option<usize>,
}

/// Why an input cannot be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("empty: no records")]
    Empty,
    #[error("line {line}: not JSON ({reason}); not a stdtrace recording")]
    NotJson { line: usize, reason: String },
    #[error("line {line}: not a record (no `type`)")]
    NotRecord { line: usize },
    #[error("line {line}: a `{record_type}` record this stdtrace cannot read: {reason}")]
    BadRecord {
        line: usize,
        record_type: String,
        reason: String,
    },
    #[error(
        "recorded by stdtrace {version} in format {schema}; this stdtrace reads format {RECORDING_SCHEMA}: use a newer stdtrace"
    )]
    FutureSchema { version: String, schema: u32 },
}

/// The `type` of a line, read first to choose the record.
#[derive(Deserialize)]
struct Typed<'a> {
    #[serde(rename = "type", borrow)]
    record_type: std::borrow::Cow<'a, str>,
}

/// Parses JSON Lines of records. A last line cut short is skipped (and said in
/// [`Parsed::truncated`]); so are records of unknown types (counted); anything else that is
/// not a record is an error naming its line.
pub fn parse_records(bytes: &[u8]) -> Result<Parsed, ReadError> {
    let mut parsed = Parsed::default();
    let complete = bytes.ends_with(b"\n");
    let mut pieces: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if complete {
        pieces.pop();
    }
    let count = pieces.len();
    for (index, piece) in pieces.into_iter().enumerate() {
        let number = index + 1;
        let last_unterminated = !complete && number == count;
        let text = String::from_utf8_lossy(piece);
        let text = text.trim_end_matches('\r');
        if text.trim().is_empty() {
            continue;
        }
        match parse_line(text, number) {
            Ok(Some(record)) => {
                if let Record::Header(header) = &record
                    && header.schema > RECORDING_SCHEMA
                {
                    return Err(ReadError::FutureSchema {
                        version: header.stdtrace.clone(),
                        schema: header.schema,
                    });
                }
                parsed.lines.push(Line {
                    record,
                    text: text.to_owned(),
                });
            }
            Ok(None) => parsed.unknown_types += 1,
            Err(_) if last_unterminated && parsed_anything(&parsed) => {
                parsed.truncated = Some(piece.len());
            }
            Err(err) => return Err(err),
        }
    }
    if parsed.lines.is_empty() && parsed.unknown_types == 0 {
        return Err(ReadError::Empty);
    }
    Ok(parsed)
}

fn parsed_anything(parsed: &Parsed) -> bool {
    !parsed.lines.is_empty() || parsed.unknown_types > 0
}

/// One line: a record, `None` for a type this stdtrace does not know.
fn parse_line(text: &str, line: usize) -> Result<Option<Record>, ReadError> {
    let typed: Typed<'_> = serde_json::from_str(text).map_err(|err| {
        if err.is_data() {
            ReadError::NotRecord { line }
        } else {
            ReadError::NotJson {
                line,
                reason: err.to_string(),
            }
        }
    })?;
    let bad = |err: serde_json::Error| ReadError::BadRecord {
        line,
        record_type: typed.record_type.to_string(),
        reason: err.to_string(),
    };
    let record = match typed.record_type.as_ref() {
        "header" => Record::Header(serde_json::from_str(text).map_err(bad)?),
        "write_error" | "blocked_write" => {
            Record::Write(Box::new(serde_json::from_str(text).map_err(bad)?))
        }
        "repeats" => Record::Repeats(serde_json::from_str(text).map_err(bad)?),
        "sigpipe" => Record::Sigpipe(Box::new(serde_json::from_str(text).map_err(bad)?)),
        "summary" => Record::Summary(Box::new(serde_json::from_str(text).map_err(bad)?)),
        _ => return Ok(None),
    };
    Ok(Some(record))
}

#[cfg(test)]
mod tests;
