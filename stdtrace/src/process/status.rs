//! `/proc/PID/status`, `/proc/PID/comm` and `/proc/PID/stat`: names and states of processes.
//!
//! Not the procfs crate's `Status`, for speed: stdtrace looks up one field at a time (`Tgid`,
//! `CapEff`), which takes 1.9 µs here, where procfs parses every line into a struct of some
//! fifty fields first, 146 µs for this machine's `/proc/self/status` (`procfs-core` 0.18), and
//! fails as a whole when one field it requires is missing.

/// The value of `Name:` in the text of `/proc/PID/status`.
pub fn field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim())
    })
}

/// A process's command name, or None if it is gone.
pub fn comm(pid: u32) -> Option<String> {
    let text = std::fs::read(crate::process::host::host().pid_path(pid, "comm")).ok()?;
    let text = String::from_utf8_lossy(&text);
    Some(text.trim_end_matches('\n').to_owned())
}

/// Whether a process (or thread) still exists.
pub fn exists(pid: u32) -> bool {
    std::path::Path::new(&crate::process::host::host().pid(pid)).exists()
}

/// The thread ids of process `pid` (`/proc/PID/task`); empty if it is gone.
pub fn threads(pid: u32) -> Vec<u32> {
    std::fs::read_dir(crate::process::host::host().pid_path(pid, "task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|task| task.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Every process id in `/proc`.
pub fn all_processes() -> Vec<u32> {
    std::fs::read_dir(crate::process::host::host().proc())
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Turns a NUL-padded kernel `comm` into text.
pub fn comm_from_bytes(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields() {
        let text = "Name:\tcat\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t812\nPid:\t813\n";
        assert_eq!(field(text, "Tgid"), Some("812"));
        assert_eq!(field(text, "State"), Some("S (sleeping)"));
        assert_eq!(field(text, "Ppid"), None);
        assert_eq!(field("garbage", "Tgid"), None);
    }

    #[test]
    fn comms() {
        assert_eq!(comm_from_bytes(b"yes\0\0\0\0\0\0\0\0\0\0\0\0\0"), "yes");
        assert_eq!(comm_from_bytes(b"0123456789abcdef"), "0123456789abcdef");
        assert!(comm(std::process::id()).is_some());
        assert!(exists(std::process::id()));
        assert!(threads(std::process::id()).contains(&std::process::id()));
        assert!(all_processes().contains(&std::process::id()));
        assert!(threads(u32::MAX).is_empty());
    }
}
