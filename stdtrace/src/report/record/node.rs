//! The node a record comes from: `NODE_NAME` (a DaemonSet sets it from the downward API's
//! `spec.nodeName`), else the host name. Every record carries it, so that records gathered
//! from many nodes (`kubectl logs`, a log pipeline) still say where they were made.

use std::{ffi::CStr, sync::OnceLock};

use serde::{Deserialize, Serialize};

/// The node a record was made on. Empty (and left out of JSON) only in a record read back
/// from a recording that predates the field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Node(pub String);

impl Node {
    /// This node.
    pub fn here() -> Self {
        Node(node_name().to_owned())
    }

    pub fn is_unknown(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `NODE_NAME` if set and not empty, else the host name; read once.
pub fn node_name() -> &'static str {
    static NODE: OnceLock<String> = OnceLock::new();
    NODE.get_or_init(|| {
        std::env::var("NODE_NAME")
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| uname().1)
    })
}

/// The host name (`uname -n`).
pub fn host_name() -> String {
    uname().1
}

/// The kernel release (`uname -r`).
pub fn kernel_release() -> String {
    uname().0
}

/// The kernel release and the host name.
fn uname() -> (String, String) {
    // SAFETY: uname fills the zeroed struct we own.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is a valid, writable utsname.
    if unsafe { libc::uname(&mut name) } != 0 {
        return (String::new(), String::new());
    }
    let text = |field: &[libc::c_char]| {
        // SAFETY: uname NUL-terminates each field within its array.
        unsafe { CStr::from_ptr(field.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    (text(&name.release), text(&name.nodename))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_node_has_a_name() {
        // NODE_NAME is not set for unit tests: the host name, as uname gives it.
        if std::env::var_os("NODE_NAME").is_none() {
            assert_eq!(node_name(), host_name());
        }
        assert!(!Node::here().is_unknown());
        assert_eq!(serde_json::to_string(&Node("n1".into())).unwrap(), "\"n1\"");
    }
}
