//! placeholder
pub fn run(_args: crate::cli::ReportArgs, _terminal: bool, _no_color: bool) -> anyhow::Result<i32> {
    Ok(0)
}
