//! Chains of stuck writers: a reader (or holder of the other end) that is itself blocked
//! writing gets that write described as the first writer's is (its target, how full, who
//! reads it), recursively, [`MAX_CHAIN_DEPTH`] deep, cycles cut.
//!
//! The reader need not be traced: that it is blocked writing, and in which fd, is read from
//! `/proc/PID/task/TID/syscall` by the same code `stdtrace snapshot` uses
//! ([`threads::blocked_writers`]). `yes` → pty → `script` → pipe → `sleep` is one story.

use std::collections::HashSet;

use super::Capture;
use crate::{
    enrich::Inspector,
    events::ByteCount,
    process::fd::{self, FileIdentity, HolderQuery},
    report::record::{ChainedWrite, FdTarget, MAX_CHAIN_DEPTH},
    snapshot::threads,
};

/// What a chain has met: threads blocked writing, and the targets they write to.
pub struct Visited {
    threads: HashSet<(u32, u32)>,
    targets: HashSet<HolderQuery>,
}

impl Visited {
    /// A chain that starts at thread `tid` of `pid`, writing to `target`.
    pub fn new(pid: u32, tid: u32, target: &FdTarget, file: Option<&FileIdentity>) -> Self {
        Self {
            threads: HashSet::from([(pid, tid)]),
            targets: HashSet::from_iter(HolderQuery::for_target(target, file)),
        }
    }
}

impl Capture {
    /// Describes the blocked write of every reader of `target` that is itself blocked writing;
    /// `depth` is that write's depth in the chain (1 for a traced writer's readers).
    pub(super) fn follow_chain(
        &mut self,
        target: &mut FdTarget,
        depth: usize,
        visited: &mut Visited,
        pipes: &mut dyn Inspector,
    ) {
        let Some(mut readers) = target.readers.take() else {
            return;
        };
        for reader in &mut readers {
            if reader.activity.as_ref().is_some_and(|doing| doing.blocked) {
                reader.blocked_write = self
                    .chained_write(reader.pid, depth, visited, pipes)
                    .map(Box::new);
            }
        }
        target.readers = Some(readers);
    }

    /// The blocked write of process `pid` (a reader met in a chain), described.
    fn chained_write(
        &mut self,
        pid: u32,
        depth: usize,
        visited: &mut Visited,
        pipes: &mut dyn Inspector,
    ) -> Option<ChainedWrite> {
        let writers = match threads::blocked_writers(pid) {
            Ok((writers, _)) => writers,
            Err(err) => {
                log::debug!("following the chain into pid {pid}: {err}");
                return None;
            }
        };
        // A thread not met yet, if there is one: a process may block writing in several.
        let writer = writers
            .iter()
            .find(|writer| !visited.threads.contains(&(pid, writer.event.tid)))
            .or(writers.first())?;
        let event = &writer.event;
        let identity = fd::identity_of(pid, event.fd);
        let mut target = fd::describe(pid, event.fd, identity.as_ref(), &self.special);
        let query = HolderQuery::for_target(&target, identity.as_ref());
        let new_thread = visited.threads.insert((pid, event.tid));
        let new_target = query
            .as_ref()
            .is_none_or(|query| visited.targets.insert(query.clone()));
        let cut = if !(new_thread && new_target) {
            Some("cycle")
        } else {
            self.complete_target(pid, event.fd, identity.as_ref(), &mut target, true, pipes);
            super::super::pty::name_master(&mut target);
            let blocked_reader = target
                .readers
                .iter()
                .flatten()
                .any(|reader| reader.activity.as_ref().is_some_and(|doing| doing.blocked));
            if depth < MAX_CHAIN_DEPTH {
                self.follow_chain(&mut target, depth + 1, visited, pipes);
                None
            } else {
                blocked_reader.then_some("depth")
            }
        };
        let blocked_ns = match event.outcome {
            crate::events::WriteOutcome::Stuck { blocked_ns } => blocked_ns,
            _ => 0,
        };
        Some(ChainedWrite {
            tid: event.tid,
            syscall: event.syscall.name().into(),
            fd: event.fd,
            count: match event.count {
                ByteCount::Exact(count) | ByteCount::AtLeast(count) => Some(count),
                ByteCount::Unknown => None,
            },
            duration_ms: (blocked_ns > 0).then_some(blocked_ns / 1_000_000),
            target,
            cut: cut.map(Into::into),
        })
    }
}
