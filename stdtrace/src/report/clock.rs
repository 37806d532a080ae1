//! Kernel timestamps (CLOCK_MONOTONIC) as the wall-clock time people read.

/// Turns CLOCK_MONOTONIC nanoseconds (kernel timestamps) into local wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall-clock nanoseconds since the epoch minus monotonic nanoseconds, taken at start.
    wall_minus_monotonic: i128,
}

impl Clock {
    pub fn now() -> Self {
        let monotonic = crate::events::monotonic_ns() as i128;
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_nanos() as i128)
            .unwrap_or(0);
        Self {
            wall_minus_monotonic: wall - monotonic,
        }
    }

    /// The clock a recording's header gives: wall-clock minus monotonic nanoseconds.
    pub fn from_offset(wall_minus_monotonic_ns: i64) -> Self {
        Self {
            wall_minus_monotonic: i128::from(wall_minus_monotonic_ns),
        }
    }

    /// Wall-clock minus monotonic nanoseconds, as a header records it.
    pub fn wall_minus_monotonic_ns(&self) -> i64 {
        i64::try_from(self.wall_minus_monotonic).unwrap_or(0)
    }

    /// Wall-clock nanoseconds since the epoch of a CLOCK_MONOTONIC timestamp.
    pub fn wall_ns(&self, monotonic_ns: u64) -> i128 {
        monotonic_ns as i128 + self.wall_minus_monotonic
    }

    /// `HH:MM:SS.mmm` in local time.
    pub fn format(&self, monotonic_ns: u64) -> String {
        let wall_ns = monotonic_ns as i128 + self.wall_minus_monotonic;
        let seconds = (wall_ns / 1_000_000_000) as libc::time_t;
        let millis = (wall_ns % 1_000_000_000) / 1_000_000;
        // SAFETY: localtime_r fills the zeroed `tm` we own; it reads only `seconds`.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        let ok = !unsafe { libc::localtime_r(&seconds, &mut tm) }.is_null();
        if !ok {
            return format!("{monotonic_ns}ns");
        }
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            tm.tm_hour, tm.tm_min, tm.tm_sec, millis
        )
    }
}
