//! From kernel event to enriched record, in two stages.
//!
//! [`capture`] runs as each record is read: it takes what the writer's exit would take with it
//! (its memory map and open objects, what its fd points at, who holds the other end). It must
//! never wait on slow work, or a writer that fails and exits at once is gone before it looks.
//!
//! [`namer`] runs on the reporter's thread: it unwinds and names the stack and assembles the
//! report. [`container`] knows which container (and pod) a process runs in, keyed by container
//! id and cached; capture asks it for the writer and for every reader and writer, and it names
//! the runtime processes (conmon, the shims) among them.
//! [`go`] knows which processes are Go programs and how to read their goroutines;
//! [`blocked`] turns the kernel's records of blocked writes and parked goroutines into events.
//! What only the kernel can tell (a pipe's fill, a blocked thread's registers, who let go of a
//! read end) comes through the [`Inspector`] trait, which `kernel::inspect` implements.

pub mod blocked;
pub mod call_path;
pub mod capture;
pub mod container;
pub mod go;
pub mod inspector;
pub mod namer;
pub mod parked;
pub mod pty;
pub mod socket;

pub use inspector::Inspector;
