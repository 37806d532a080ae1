//! The parts of the summary that keep it bounded through weeks of churn: totals folded per
//! binary, SIGPIPE stories counted per fate, how many processes stdtrace tracks and how full
//! the kernel's maps are. Part of [`super`], in a file of its own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Errno, Name};

/// Failed writes of one binary with one (errno, syscall), over all its processes: those that
/// exited (folded when they did) and those still running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryTotal {
    /// The executable's path as `/proc/PID/exe` named it, else the command name.
    pub binary: String,
    /// Its device (`major:minor`) and inode; absent when the kernel could not read them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    // `container` (the container's object, per the containers issue) goes here: totals folded
    // per binary and container.
    pub errno: Errno,
    pub syscall: Name,
    /// How many processes of it failed this way.
    pub processes: u64,
    /// How many writes failed this way: exact, counted in the kernel.
    pub failures: u64,
}

/// SIGPIPE stories over the whole run, however many processes told one: `sigpipes` keeps
/// those of live processes and the [`TOP_SIGPIPE_STORIES`] largest of exited ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SigpipeFates {
    /// Stories told, in all.
    pub stories: u64,
    /// Stories per fate (`killed`, `ignored`, `handled`, `blocked`).
    pub fates: BTreeMap<String, u64>,
    /// Stories of exited processes left out of `sigpipes` (only the largest are kept).
    pub left_out: u64,
}

/// Exited processes' SIGPIPE stories the summary keeps, the largest counts first.
pub const TOP_SIGPIPE_STORIES: usize = 20;

/// What stdtrace holds per process, for checking that it stays bounded by what is live.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrackedProcesses {
    /// Processes stdtrace keeps state for (their binary and name, to fold their totals).
    pub processes: u64,
    /// Processes whose exit is awaited to fold their kernel entries.
    pub exiting: u64,
    /// Processes found gone by a rescan of `/proc` because their exit record was lost.
    pub recovered_exits: u64,
}

/// Entries in each of the kernel's maps that hold per-process or per-call-path state (lower-
/// case map names: `failures`, `site_counts`, `call_sites`, `sigpipe_seen`, ...).
pub type KernelMapEntries = BTreeMap<String, u64>;
