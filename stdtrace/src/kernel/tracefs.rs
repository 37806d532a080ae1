//! The syscall tracepoints live in tracefs. A fresh machine may not have it mounted: stdtrace
//! mounts it at `/sys/kernel/tracing`, or says why it cannot and how to fix that.

use std::{ffi::CString, io, path::Path};

/// Where tracefs belongs.
pub const TRACEFS: &str = "/sys/kernel/tracing";
/// Where older systems mount it (under debugfs).
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// Why tracefs is not reachable.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted at {TRACEFS} and stdtrace could not mount it: {reason}; mount it with `mount -t tracefs nodev {TRACEFS}`"
    )]
    CannotMount { reason: String },
}

/// Whether a tracefs with syscall events is reachable at `dir`.
fn has_syscall_events(dir: &str) -> bool {
    Path::new(dir).join("events/syscalls").is_dir()
}

/// Makes sure the syscall tracepoints can be found, mounting tracefs if needed. Returns true if
/// this call mounted it.
pub fn ensure_mounted() -> Result<bool, TracefsError> {
    if has_syscall_events(TRACEFS) || has_syscall_events(DEBUGFS_TRACING) {
        return Ok(false);
    }
    let source = CString::new("nodev").unwrap_or_default();
    let target = CString::new(TRACEFS).unwrap_or_default();
    let fstype = CString::new("tracefs").unwrap_or_default();
    // SAFETY: all three are valid NUL-terminated strings; no mount data is passed.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        let reason = match err.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => {
                "permission denied (mounting needs CAP_SYS_ADMIN in the initial mount namespace)"
                    .to_owned()
            }
            Some(libc::ENODEV) => "this kernel has no tracefs (CONFIG_TRACING is off)".to_owned(),
            Some(libc::ENOENT) => format!("{TRACEFS} does not exist (is sysfs mounted?)"),
            _ => err.to_string(),
        };
        return Err(TracefsError::CannotMount { reason });
    }
    if !has_syscall_events(TRACEFS) {
        return Err(TracefsError::CannotMount {
            reason: "it mounted, but has no syscall events (CONFIG_FTRACE_SYSCALLS is off)".into(),
        });
    }
    log::info!("mounted tracefs at {TRACEFS}");
    Ok(true)
}
