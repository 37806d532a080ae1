//! What many events add up to: SIGPIPE stories (one per process and fd, however many writes
//! failed) and repeats (the same failure from the same place, counted instead of reported).

pub mod metrics;
pub mod repeats;
pub mod sigpipe;
