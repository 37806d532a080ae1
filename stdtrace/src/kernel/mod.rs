//! Everything that touches the kernel programs: BTF and tracefs, privileges, loading and
//! attaching ([`loader`]), the maps userspace reads and writes (blocked-write slots, parked
//! goroutines, call sites), and the on-demand inspection programs behind
//! [`crate::enrich::Inspector`]. No other module uses aya.

pub mod blocked;
pub mod btf;
pub mod call_sites;
pub mod inspect;
pub mod loader;
pub mod map_keys;
pub mod parked;
pub mod privileges;
pub mod process_entries;
pub mod tracefs;
