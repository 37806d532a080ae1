//! `stdtrace report`: which recorded files to read, what to keep of them, how to show it.

use std::{path::PathBuf, time::Duration};

use super::{ColorChoice, Format, parse_duration};
use crate::enrich::container::select::Selector;

/// `stdtrace report FILE...`
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Recorded files, directories of them (`record --output DIR`), or `-` for stdin.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,

    /// Only records of this process; repeat for more.
    #[arg(short, long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Only records of processes with this command name; repeat for more.
    #[arg(long = "comm", value_name = "COMM")]
    pub comms: Vec<String>,

    /// Only records of processes in this container (by its recorded `container`: a full id,
    /// an id prefix, the runtime's name, or its name in its pod); repeat for more.
    #[arg(long = "container", value_name = "ID|NAME", value_parser = super::non_empty)]
    pub containers: Vec<String>,

    /// Only records of processes in this Kubernetes pod's containers; repeat for more.
    #[arg(long = "pod", value_name = "NAMESPACE/NAME", value_parser = Selector::pod)]
    pub pods: Vec<Selector>,

    /// Only records of processes in pods of this Kubernetes namespace; repeat for more.
    #[arg(long = "namespace", value_name = "NS", value_parser = super::non_empty)]
    pub namespaces: Vec<String>,

    /// Only records of these types: `write_error`, `blocked_write`, `repeats`, `sigpipe`
    /// (comma-separated, or repeated).
    #[arg(long = "type", value_name = "TYPE", value_delimiter = ',')]
    pub types: Vec<String>,

    /// Only records from this time on: wall time (`14:26:18`, `2026-12-01T14:26:18Z`) or a
    /// duration before the end of the recording (`5m`).
    #[arg(long, value_name = "TIME", value_parser = parse_time_bound)]
    pub since: Option<TimeBound>,

    /// Only records up to this time (as for --since).
    #[arg(long, value_name = "TIME", value_parser = parse_time_bound)]
    pub until: Option<TimeBound>,

    /// Tell one process's story as a timeline: blocked since, its reader gone, killed.
    #[arg(long, value_name = "PID")]
    pub story: Option<u32>,

    /// `text` as the live run prints it, or `json`: the records kept, as recorded.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// When to colour text output: `auto` (only on a terminal, and not if NO_COLOR is set),
    /// `always`, `never`.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,

    /// Only the summary.
    #[arg(short, long)]
    pub quiet: bool,
}

/// A bound of `--since` / `--until`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimeBound {
    /// `HH:MM:SS[.fff]` local time, on the day the recording ends.
    TimeOfDay { seconds: u32, nanos: u32 },
    /// An instant: nanoseconds since the epoch (RFC 3339 given).
    Instant(i128),
    /// This long before the end of the recording.
    BeforeEnd(Duration),
}

/// Parses `14:26:18`, `14:26:18.5`, `2026-12-01T14:26:18Z`, `2026-12-01T14:26:18+01:00`,
/// or a duration (`5m`, `30s`).
pub fn parse_time_bound(text: &str) -> Result<TimeBound, String> {
    let text = text.trim();
    if let Some(instant) = parse_rfc3339(text) {
        return Ok(TimeBound::Instant(instant));
    }
    if text.contains(':') {
        let (seconds, nanos) = parse_clock(text).ok_or_else(|| {
            format!("`{text}` is not a time (try 14:26:18, 2026-12-01T14:26:18Z or 5m)")
        })?;
        return Ok(TimeBound::TimeOfDay { seconds, nanos });
    }
    parse_duration(text).map(TimeBound::BeforeEnd)
}

/// `HH:MM:SS[.fff]` as seconds into the day and nanoseconds.
fn parse_clock(text: &str) -> Option<(u32, u32)> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let parts: Vec<u32> = whole
        .split(':')
        .map(|part| {
            (part.len() == 2 && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse().ok())
                .flatten()
        })
        .collect::<Option<_>>()?;
    let (hours, minutes, seconds) = match parts[..] {
        [h, m] => (h, m, 0),
        [h, m, s] => (h, m, s),
        _ => return None,
    };
    if hours > 23 || minutes > 59 || seconds > 60 {
        return None;
    }
    let nanos = match fraction {
        None => 0,
        Some(digits)
            if !digits.is_empty()
                && digits.len() <= 9
                && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            format!("{digits:0<9}").parse().ok()?
        }
        Some(_) => return None,
    };
    Some((hours * 3600 + minutes * 60 + seconds, nanos))
}

/// `2026-12-01T14:26:18[.fff](Z|±HH:MM)` as nanoseconds since the epoch.
fn parse_rfc3339(text: &str) -> Option<i128> {
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let date: Vec<i64> = date
        .split('-')
        .map(|part| part.parse().ok())
        .collect::<Option<_>>()?;
    let [year, month, day] = date[..] else {
        return None;
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (clock, offset_s) = if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        (clock, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (clock, zone) = time.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (h, m) = zone[1..].split_once(':')?;
        let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
        (clock, sign * (h * 3600 + m * 60))
    };
    let (seconds, nanos) = parse_clock(clock)?;
    let days = days_from_civil(year, month, day);
    let epoch_s = days * 86_400 + i64::from(seconds) - offset_s;
    Some(i128::from(epoch_s) * 1_000_000_000 + i128::from(nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bounds() {
        assert_eq!(
            parse_time_bound("14:26:18"),
            Ok(TimeBound::TimeOfDay {
                seconds: 14 * 3600 + 26 * 60 + 18,
                nanos: 0
            })
        );
        assert_eq!(
            parse_time_bound("00:00:01.25"),
            Ok(TimeBound::TimeOfDay {
                seconds: 1,
                nanos: 250_000_000
            })
        );
        assert_eq!(
            parse_time_bound("1970-01-02T00:00:00Z"),
            Ok(TimeBound::Instant(86_400 * 1_000_000_000))
        );
        assert_eq!(
            parse_time_bound("2026-12-01T14:26:18+01:00"),
            parse_time_bound("2026-12-01T13:26:18Z")
        );
        assert_eq!(
            parse_time_bound("5m"),
            Ok(TimeBound::BeforeEnd(Duration::from_secs(300)))
        );
        for bad in [
            "25:00:00",
            "1:2:3",
            "12:00:00.",
            "2026-13-01T00:00:00Z",
            "soon",
            "",
        ] {
            assert!(parse_time_bound(bad).is_err(), "{bad}");
        }
    }
}
