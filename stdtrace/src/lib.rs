//! stdtrace: why is this process stuck (or dying) while writing its output?
//!
//! The tree reads like the data flow, one stage per folder; a lower stage never imports a
//! higher one:
//! - [`kernel`]: loading and talking to the kernel programs (the only code that uses aya);
//! - [`events`]: what the kernel recorded, as owned values;
//! - [`enrich`]: capture at event time, naming, Go, blocked writers, containers;
//! - [`aggregate`]: SIGPIPE stories and repeats;
//! - [`report`]: every serialized record ([`report::record`], which any stage may build), and
//!   the text and JSON outputs;
//! - [`session`]: the run loop that drives them, the reporter thread, and the summary;
//! - [`snapshot`]: `stdtrace snapshot`, the same records from procfs, without BPF.
//!
//! [`process`], [`symbolize`] and [`goruntime`] are the readers of procfs, of binaries and of
//! the Go runtime's tables that the stages use.

pub mod aggregate;
pub mod cli;
pub mod enrich;
pub mod errno;
pub mod events;
pub mod goruntime;
pub mod kernel;
pub mod process;
pub mod replay;
pub mod report;
pub mod session;
pub mod snapshot;
pub mod symbolize;
pub mod sys;
