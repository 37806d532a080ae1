//! What many events add up to: SIGPIPE stories (one per process and fd, however many writes
//! failed), repeats (the same failure from the same place, counted instead of reported), and
//! the totals of exited processes folded per binary (with the live processes they need).

pub mod binaries;
pub mod metrics;
pub mod processes;
pub mod repeats;
pub mod sigpipe;
pub mod sigpipe_fates;
