//! `stdtrace record`: `trace`'s options, and where and how much to keep.

use std::path::PathBuf;

use super::TraceArgs;

/// `stdtrace record --output DIR [trace options] [-- CMD ARGS...]`
#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// The directory to write the recording to (created if missing): JSON Lines files, each
    /// starting with a `header` record and ending with the summary so far.
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,

    /// Start a new file once this one would grow past SIZE: `16KiB`, `100MiB`, `1GiB`.
    #[arg(long, value_name = "SIZE", default_value = "100MiB", value_parser = parse_size)]
    pub max_size: u64,

    /// Keep at most this many files, removing the oldest: disk use stays under
    /// max-size × max-files.
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_files: u32,

    #[command(flatten)]
    pub trace: TraceArgs,
}

/// Parses `16KiB`, `100MiB`, `1GiB`, `4096` (bytes); `KB`/`MB`/`GB` are powers of ten.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (value, unit) = super::number_and_unit(text)
        .ok_or_else(|| format!("`{text}` is not a size (try 16KiB, 100MiB, 1GiB)"))?;
    let scale: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use KiB, MiB or GiB)"
            ));
        }
    };
    let bytes = value * scale;
    if !bytes.is_finite() || !(1024.0..=1e15).contains(&bytes) {
        return Err(format!("`{text}` is not a size from 1KiB up"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16KiB"), Ok(16 * 1024));
        assert_eq!(parse_size("100MiB"), Ok(100 * 1024 * 1024));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "KiB", "12", "-1MiB", "1TiB", "1e999", "NaNKiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
