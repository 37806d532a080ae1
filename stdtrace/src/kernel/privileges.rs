//! Checks that stdtrace may load and attach its programs before trying, so that a missing
//! privilege is named instead of surfacing as a bare EPERM from the kernel.

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Privileges stdtrace lacks.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "stdtrace needs root, or the capabilities CAP_BPF and CAP_PERFMON; this process lacks {missing} (run it with sudo)"
    )]
    Missing { missing: String },
}

/// The effective capability set, from the `CapEff:` line of `/proc/self/status`.
pub fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let value = crate::process::status::field(&status, "CapEff")?;
    u64::from_str_radix(value, 16).ok()
}

/// Checks for CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN implies both).
pub fn check(capabilities: u64) -> Result<(), PrivilegeError> {
    let has = |cap: u32| capabilities & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(cap, _)| !has(*cap))
        .map(|(_, name)| name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PrivilegeError::Missing {
            missing: missing.join(" and "),
        })
    }
}

/// Whether the process may mount file systems (tracefs).
pub fn can_mount(capabilities: u64) -> bool {
    capabilities & (1u64 << CAP_SYS_ADMIN) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_is_missing() {
        assert!(check(1 << CAP_SYS_ADMIN).is_ok());
        assert!(check((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_ok());
        let err = check(0).unwrap_err().to_string();
        assert!(err.contains("lacks CAP_BPF and CAP_PERFMON"), "{err}");
        let err = check(1 << CAP_BPF).unwrap_err().to_string();
        assert!(err.contains("lacks CAP_PERFMON (run"), "{err}");
        assert!(effective_capabilities().is_some());
    }
}
