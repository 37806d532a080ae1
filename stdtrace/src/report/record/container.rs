//! The `container` object of a record, and the `role` of a process that is a container
//! runtime. Part of [`super`] (every serialized record lives under `report::record`), in a file
//! of its own so that the record module stays readable in one sitting.

use serde::{Deserialize, Serialize};

/// The container runtime that manages a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    Containerd,
    #[serde(rename = "cri-o")]
    CriO,
    Podman,
    Docker,
}

impl Runtime {
    /// The name as it appears in the `runtime` field.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
            Runtime::Docker => "docker",
        }
    }
}

/// The Kubernetes pod a container belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl Pod {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.namespace.is_none() && self.uid.is_none()
    }
}

/// `"container":{...}`: the container a process runs in. Fields that could not be found out
/// are absent, and `unknown` says why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// The runtime's container id: 64 hex digits, or the name `ctr run` was given.
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    /// The runtime's name for the container (`podman run --name`, docker's name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Pod::is_empty")]
    pub pod: Pod,
    /// The container's name in its pod (`io.kubernetes.container.name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// The container's log file, as its runtime writes it (`ctr.log`, `/var/log/pods/...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
    /// Why some fields are absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
}

/// What a container runtime process does for a container: set on a reader or writer that is
/// conmon, a containerd shim, containerd or dockerd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeRole {
    /// `container log reader` (conmon, a shim: they drain the container's stdout and
    /// stderr), `container runtime daemon` (containerd, dockerd).
    pub role: super::Name,
    /// The container whose stdio it serves, when its command line says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serves: Option<Container>,
    /// Where it sends that output: the log file it writes, or the FIFO or socket it forwards
    /// to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sends_to: Vec<OutputSink>,
}

/// A place a runtime process sends a container's output to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputSink {
    /// `file`, `fifo` or `socket`.
    pub kind: super::Name,
    pub path: String,
    /// The runtime process's fd.
    pub fd: i32,
}
