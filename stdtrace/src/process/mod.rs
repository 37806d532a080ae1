//! What procfs says about a process: its memory map, its open fds and what they point at.

pub mod activity;
pub mod address_space;
pub mod cgroup;
pub mod fd;
pub mod host;
pub mod maps;
pub mod memory;
pub mod own_usage;
pub mod perf_mmap;

pub mod socket;
pub mod status;
pub mod syscalls;
