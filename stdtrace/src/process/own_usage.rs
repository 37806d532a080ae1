//! stdtrace's own CPU time and resident memory, for `/metrics` (prometheus-client has no
//! process collector, unlike the Go and Java clients).

use std::time::Duration;

/// CPU time this process has used, user and system, all threads.
pub fn cpu_time() -> Option<Duration> {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let of = |time: libc::timeval| {
        Duration::from_secs(u64::try_from(time.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(time.tv_usec).unwrap_or(0))
    };
    Some(of(usage.ru_utime) + of(usage.ru_stime))
}

/// Resident memory now, in bytes (`/proc/self/statm`'s second field, in pages).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    resident_pages(&statm).map(|pages| pages.saturating_mul(page_size()))
}

fn resident_pages(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096).max(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_usage() {
        assert_eq!(resident_pages("1000 250 30 4 0 80 0\n"), Some(250));
        assert_eq!(resident_pages("1000"), None);
        let resident = resident_bytes().unwrap();
        assert!(resident > 1 << 20, "{resident}");
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(20) {}
        assert!(cpu_time().unwrap() >= Duration::from_millis(10));
    }
}
