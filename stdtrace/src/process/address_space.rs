//! Address spaces rebuilt from the kernel's mapping records ([`super::perf_mmap`]), for
//! processes that exit before `/proc/PID/maps` can be read.
//!
//! A space is *complete* when every executable mapping in it was seen: the process exec'd, or
//! was forked from a complete one, after watching began. Only complete spaces are used in place
//! of procfs; others would name the wrong functions or none.

use std::collections::HashMap;

use super::{
    maps::{Backing, Mapping, ProcessMaps},
    perf_mmap::SpaceEvent,
};

/// How long the space of an exited process is kept, for its events still in the ring buffer.
const KEEP_AFTER_EXIT_NS: u64 = 10_000_000_000;

/// Bound on the mappings kept for one process (a real process has hundreds).
const MAX_MAPPINGS: usize = 65536;

const PROT_READ: u32 = 1;
const PROT_WRITE: u32 = 2;
const PROT_EXEC: u32 = 4;

/// A mapping and when it was made.
#[derive(Clone, Debug)]
struct Timed {
    mapping: Mapping,
    at: u64,
}

#[derive(Clone, Debug, Default)]
struct Space {
    mappings: Vec<Timed>,
    complete: bool,
    exited_at: Option<u64>,
    /// When the exec or fork that made this space happened (0: before watching began).
    born_ns: u64,
}

impl Space {
    /// Adds a mapping made at `at`, replacing the older ones it overlaps (as mmap with
    /// MAP_FIXED does); where a newer mapping was already applied (records out of order), the
    /// newer one keeps its range.
    fn map(&mut self, new: Mapping, at: u64) {
        let mut pieces = vec![new];
        for newer in self.mappings.iter().filter(|timed| timed.at > at) {
            pieces = pieces
                .into_iter()
                .flat_map(|piece| cut(piece, &newer.mapping))
                .collect();
        }
        let mut kept: Vec<Timed> = Vec::with_capacity(self.mappings.len() + 2);
        for old in self.mappings.drain(..) {
            if old.at > at {
                kept.push(old);
                continue;
            }
            let mut rest = vec![old.mapping];
            for piece in &pieces {
                rest = rest.into_iter().flat_map(|part| cut(part, piece)).collect();
            }
            kept.extend(rest.into_iter().map(|mapping| Timed {
                mapping,
                at: old.at,
            }));
        }
        kept.extend(pieces.into_iter().map(|mapping| Timed { mapping, at }));
        kept.sort_by_key(|timed| timed.mapping.start);
        if kept.len() > MAX_MAPPINGS {
            // Something is wrong; stop trusting this space rather than grow without bound.
            kept.clear();
            self.complete = false;
        }
        self.mappings = kept;
    }

    /// Mappings made after `t`.
    fn made_after(&self, t: u64) -> impl Iterator<Item = &Timed> {
        self.mappings.iter().filter(move |timed| timed.at > t)
    }

    /// The program: the first file mapped after the exec.
    fn executable(&self) -> Option<&std::path::Path> {
        self.mappings
            .iter()
            .filter_map(|timed| match &timed.mapping.backing {
                Backing::File(path) => Some((timed.at, path.as_path())),
                _ => None,
            })
            .min_by_key(|(at, _)| *at)
            .map(|(_, path)| path)
    }
}

/// What is left of `mapping` outside `hole`: zero, one or two pieces, with their file offsets.
fn cut(mapping: Mapping, hole: &Mapping) -> Vec<Mapping> {
    if hole.start >= hole.end || mapping.end <= hole.start || mapping.start >= hole.end {
        return vec![mapping];
    }
    let mut left = Vec::with_capacity(2);
    if mapping.start < hole.start {
        left.push(Mapping {
            end: hole.start,
            ..mapping.clone()
        });
    }
    if mapping.end > hole.end {
        let skipped = hole.end - mapping.start;
        left.push(Mapping {
            start: hole.end,
            offset: mapping.offset.wrapping_add(skipped),
            ..mapping
        });
    }
    left
}

/// Every address space the mapping records describe.
#[derive(Debug, Default)]
pub struct AddressSpaces {
    spaces: HashMap<u32, Space>,
    /// Mapping records the kernel said it dropped (`PERF_RECORD_LOST`), in all.
    lost: u64,
}

impl AddressSpaces {
    pub fn new() -> Self {
        Self::default()
    }

    /// Mapping records the kernel dropped, so far.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Applies one record.
    pub fn apply(&mut self, event: SpaceEvent) {
        match event {
            SpaceEvent::Map {
                pid,
                start,
                len,
                offset,
                dev,
                inode,
                prot,
                path,
                time_ns,
            } => {
                let Some(end) = start.checked_add(len).filter(|end| *end > start) else {
                    return;
                };
                let backing = if inode == 0 && path.as_os_str().as_encoded_bytes().starts_with(b"[")
                {
                    Backing::Special(path.to_string_lossy().into_owned())
                } else if path.as_os_str().is_empty() {
                    Backing::Anonymous
                } else {
                    Backing::File(path)
                };
                let space = self.spaces.entry(pid).or_default();
                if time_ns < space.born_ns {
                    // Made by the image a later exec (applied already) replaced.
                    return;
                }
                space.map(
                    Mapping {
                        start,
                        end,
                        offset,
                        readable: prot & PROT_READ != 0,
                        writable: prot & PROT_WRITE != 0,
                        executable: prot & PROT_EXEC != 0,
                        dev,
                        inode,
                        backing,
                    },
                    time_ns,
                );
            }
            // Records come from one buffer per CPU and may be applied out of order across
            // them (a fork read on one CPU after the child's exec on another): each space
            // remembers when it was born, and mappings when they were made, so that an older
            // record never undoes a newer one.
            SpaceEvent::Exec { pid, time_ns } => {
                let old = self.spaces.remove(&pid).unwrap_or_default();
                if old.born_ns > time_ns {
                    self.spaces.insert(pid, old);
                    return;
                }
                let mappings = old.made_after(time_ns).cloned().collect();
                self.spaces.insert(
                    pid,
                    Space {
                        mappings,
                        complete: true,
                        exited_at: old.exited_at,
                        born_ns: time_ns,
                    },
                );
            }
            SpaceEvent::Fork {
                pid,
                parent,
                time_ns,
            } => {
                let own = self.spaces.remove(&pid).unwrap_or_default();
                if own.born_ns > time_ns {
                    // Its exec was applied first.
                    self.spaces.insert(pid, own);
                    return;
                }
                let Some(parent) = self.spaces.get(&parent) else {
                    self.spaces.insert(
                        pid,
                        Space {
                            born_ns: time_ns,
                            ..own
                        },
                    );
                    return;
                };
                let mut space = Space {
                    mappings: parent
                        .mappings
                        .iter()
                        .filter(|timed| timed.at <= time_ns)
                        .cloned()
                        .collect(),
                    complete: parent.complete,
                    exited_at: own.exited_at,
                    born_ns: time_ns,
                };
                for timed in own.made_after(time_ns) {
                    space.map(timed.mapping.clone(), timed.at);
                }
                self.spaces.insert(pid, space);
            }
            SpaceEvent::Exit { pid, time_ns } => {
                if let Some(space) = self.spaces.get_mut(&pid) {
                    space.exited_at = Some(time_ns);
                }
                // Spaces of processes long gone are no longer needed.
                self.spaces.retain(|_, space| {
                    space
                        .exited_at
                        .is_none_or(|at| time_ns.saturating_sub(at) < KEEP_AFTER_EXIT_NS)
                });
            }
            SpaceEvent::Lost { count } => {
                self.lost = self.lost.saturating_add(count);
                log::warn!(
                    "the kernel dropped {count} mapping records; stacks of processes that exit quickly may go unnamed"
                );
                for space in self.spaces.values_mut() {
                    space.complete = false;
                }
            }
        }
    }

    /// The program `pid` runs, as the kernel recorded its exec (for a process gone since).
    pub fn executable(&self, pid: u32) -> Option<&std::path::Path> {
        self.spaces
            .get(&pid)
            .filter(|space| space.complete)?
            .executable()
    }

    /// The rebuilt map of `pid`, if it is complete.
    pub fn maps(&self, pid: u32) -> Option<ProcessMaps> {
        let space = self.spaces.get(&pid).filter(|space| space.complete)?;
        Some(ProcessMaps {
            pid,
            mappings: space
                .mappings
                .iter()
                .map(|timed| timed.mapping.clone())
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn map(pid: u32, start: u64, len: u64, offset: u64, path: &str) -> SpaceEvent {
        map_at(pid, start, len, offset, path, 0)
    }

    fn map_at(pid: u32, start: u64, len: u64, offset: u64, path: &str, at: u64) -> SpaceEvent {
        SpaceEvent::Map {
            pid,
            start,
            len,
            offset,
            dev: (8, 1),
            inode: 10,
            prot: PROT_READ | PROT_EXEC,
            path: PathBuf::from(path),
            time_ns: at,
        }
    }

    #[test]
    fn rebuilds_exec_fork_and_overlapping_maps() {
        let mut spaces = AddressSpaces::new();
        spaces.apply(map(5, 0x1000, 0x1000, 0, "/old"));
        assert!(
            spaces.maps(5).is_none(),
            "incomplete: it existed before watching began"
        );
        spaces.apply(SpaceEvent::Exec { pid: 5, time_ns: 1 });
        spaces.apply(map_at(5, 0x10000, 0x4000, 0x1000, "/bin/app", 1));
        spaces.apply(map_at(5, 0x12000, 0x1000, 0x9000, "/lib/libx.so", 1));
        let maps = spaces.maps(5).unwrap();
        let ranges: Vec<(u64, u64, u64)> = maps
            .mappings
            .iter()
            .map(|m| (m.start, m.end, m.offset))
            .collect();
        assert_eq!(
            ranges,
            vec![
                (0x10000, 0x12000, 0x1000),
                (0x12000, 0x13000, 0x9000),
                (0x13000, 0x14000, 0x4000)
            ]
        );
        assert_eq!(
            maps.find(0x12800).unwrap().path().unwrap().to_str(),
            Some("/lib/libx.so")
        );

        spaces.apply(SpaceEvent::Fork {
            pid: 6,
            parent: 5,
            time_ns: 2,
        });
        assert_eq!(spaces.maps(6).unwrap().mappings.len(), 3);
        spaces.apply(SpaceEvent::Fork {
            pid: 7,
            parent: 99,
            time_ns: 2,
        });
        assert!(spaces.maps(7).is_none(), "the parent's space was unknown");

        spaces.apply(SpaceEvent::Exit { pid: 5, time_ns: 3 });
        assert!(spaces.maps(5).is_some(), "kept for events still queued");
        spaces.apply(SpaceEvent::Exit {
            pid: 6,
            time_ns: 3 + KEEP_AFTER_EXIT_NS,
        });
        assert!(spaces.maps(5).is_none(), "dropped long after its exit");

        spaces.apply(SpaceEvent::Lost { count: 1 });
        assert!(spaces.maps(6).is_none());
    }

    fn ranges(spaces: &AddressSpaces, pid: u32) -> Vec<(u64, u64, String)> {
        spaces
            .maps(pid)
            .map(|maps| {
                maps.mappings
                    .iter()
                    .map(|m| {
                        let path = m
                            .path()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default();
                        (m.start, m.end, path)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A shell forks a child that execs a program; the child's records are read from another
    /// CPU's buffer before the fork's: the late fork must not bring the shell's map back.
    #[test]
    fn a_fork_applied_after_the_childs_exec_does_not_undo_it() {
        let mut spaces = AddressSpaces::new();
        spaces.apply(SpaceEvent::Exec {
            pid: 1,
            time_ns: 10,
        });
        spaces.apply(map_at(1, 0x1000, 0x1000, 0, "/bin/sh", 11));
        // The child's exec and its program's mapping, then (late) its fork.
        spaces.apply(SpaceEvent::Exec {
            pid: 2,
            time_ns: 30,
        });
        spaces.apply(map_at(2, 0x40_0000, 0x1000, 0, "/bin/piper", 31));
        spaces.apply(SpaceEvent::Fork {
            pid: 2,
            parent: 1,
            time_ns: 20,
        });
        assert_eq!(
            ranges(&spaces, 2),
            vec![(0x40_0000, 0x40_1000, "/bin/piper".to_owned())]
        );
        assert_eq!(
            spaces.executable(2).and_then(|p| p.to_str()),
            Some("/bin/piper")
        );
    }

    /// A mapping read before the exec that came first (another CPU) survives the exec; a
    /// mapping of the old image read after the exec is dropped.
    #[test]
    fn mappings_and_execs_out_of_order() {
        let mut spaces = AddressSpaces::new();
        spaces.apply(SpaceEvent::Exec { pid: 3, time_ns: 5 });
        spaces.apply(map_at(3, 0x5000, 0x1000, 0, "/bin/old", 6));
        spaces.apply(map_at(3, 0x9000, 0x1000, 0, "/bin/new", 21));
        spaces.apply(SpaceEvent::Exec {
            pid: 3,
            time_ns: 20,
        });
        spaces.apply(map_at(3, 0x7000, 0x1000, 0, "/lib/old.so", 7));
        assert_eq!(
            ranges(&spaces, 3),
            vec![(0x9000, 0xa000, "/bin/new".to_owned())]
        );
        // A newer mapping applied first keeps its range against an older one over it.
        spaces.apply(map_at(3, 0x10000, 0x1000, 0x2000, "/lib/b.so", 40));
        spaces.apply(map_at(3, 0xf000, 0x3000, 0, "/lib/a.so", 30));
        assert_eq!(
            ranges(&spaces, 3),
            vec![
                (0x9000, 0xa000, "/bin/new".to_owned()),
                (0xf000, 0x10000, "/lib/a.so".to_owned()),
                (0x10000, 0x11000, "/lib/b.so".to_owned()),
                (0x11000, 0x12000, "/lib/a.so".to_owned()),
            ]
        );
        let maps = spaces.maps(3).unwrap();
        assert_eq!(maps.find(0x11800).unwrap().offset, 0x2000);
    }
}
