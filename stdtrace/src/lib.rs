//! stdtrace: why is this process stuck (or dying) while writing its output?
//!
//! Data flows one way: kernel record ([`events`]) -> enriched report ([`enrich`], using
//! [`process`] and [`symbolize`]) -> output ([`report`]). [`session`] runs it all.

pub mod blocked;
pub mod btf;
pub mod callpaths;
pub mod cli;
pub mod enrich;
pub mod errno;
pub mod events;
pub mod goruntime;
pub mod gotrack;
pub mod launch;
pub mod loader;
pub mod parked;
pub mod privileges;
pub mod process;
pub mod report;
pub mod session;
pub mod sigpipe;
pub mod symbolize;
pub mod tracefs;
