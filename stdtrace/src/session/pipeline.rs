//! The session's event path: reading the ring buffer, capturing at once what could vanish,
//! and handing batches to the reporter; each tick, the stuck writes, parked goroutines and
//! repeat counts the kernel keeps.

use std::{collections::HashMap, sync::Arc};

use aya::maps::{MapData, RingBuf};

use super::{
    folding::Folding,
    metrics::SessionMetrics,
    reporter::{Reporter, ToReporter},
};
use crate::{
    enrich,
    enrich::{
        blocked::{self, SlotTable},
        call_path::Learned,
        capture::Capture,
        go::GoTracker,
    },
    events::{self, BinaryId, Record, WriteEvent},
    kernel::{
        blocked::BlockedSlots, btf::RegsLayout, call_sites::CallPaths, loader::Tracer,
        parked::ParkedGoroutines,
    },
    process::perf_mmap::MmapWatch,
    report::record::Container,
};

/// Records read from the ring buffer per wake-up, at most.
const DRAIN_LIMIT: usize = 4096;

/// Write events captured and handed to the reporter together, at most.
const BATCH_LIMIT: usize = 32;

pub struct Session {
    pub reporter: Reporter,
    /// The kernel's fingerprints of reported call paths and its counts of their repeats.
    pub call_paths: Option<CallPaths>,
    /// Call paths the reporter met for the first time, for `call_paths`.
    pub learned: std::sync::mpsc::Receiver<Vec<(Learned, u32)>>,
    pub ticks: u64,
    pub tracer: Tracer,
    /// The kernel's slots of writes blocked right now.
    pub blocked: Option<BlockedSlots>,
    /// The kernel's records of goroutines parked after EAGAIN.
    pub parked: Option<ParkedGoroutines>,
    /// How long a write must have been blocked to be reported stuck.
    pub stuck_ns: u64,
    pub capture: Capture,
    pub go: GoTracker,
    pub mmap_watch: Option<MmapWatch>,
    pub regs_layout: RegsLayout,
    /// Live processes and their binaries; exited ones folded into their binaries' totals.
    pub folding: Folding,
    /// The container of every process seen in one, as captured at its events: for the
    /// kernel's repeat counts and the summary's totals, told after the process may be gone.
    /// Kept for live processes and those the summary still lists.
    pub containers: HashMap<u32, Arc<Container>>,
    /// `--metrics`: what feeds `/metrics`.
    pub metrics: Option<SessionMetrics>,
}

impl Session {
    /// Reads everything in the ring buffer, captures what could vanish, and hands the events
    /// to the reporter.
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        // Keeps the mapping records' buffers from filling up while no write is captured.
        self.drain_mappings();
        self.learn();
        let mut batch: Vec<WriteEvent> = Vec::new();
        let mut read = 0;
        // Bounded, so that an error storm cannot keep the loop from its ticks; what is left
        // is read at the next wake-up or tick.
        while read < DRAIN_LIMIT
            && let Some(item) = ring.next()
        {
            read += 1;
            match events::decode(&item, &self.regs_layout) {
                Ok(Record::Write(event)) => {
                    let binary = event
                        .image
                        .and_then(|image| BinaryId::known(image.dev, image.ino));
                    self.folding.processes.seen(event.pid, &event.comm, binary);
                    batch.push(*event);
                    // Small batches: the first failure of a call path is named, and its path
                    // handed back to the kernel, while a storm's next failures are still
                    // coming; and the events in flight (16 KiB of stack each) stay few.
                    if batch.len() >= BATCH_LIMIT {
                        self.capture_and_report(std::mem::take(&mut batch));
                    }
                }
                Ok(Record::Exec {
                    pid, comm, binary, ..
                }) => {
                    self.folding.processes.exec(pid, &comm, binary);
                    // Writes before the exec belong to the old image.
                    if !batch.is_empty() {
                        self.capture_and_report(std::mem::take(&mut batch));
                    }
                    self.capture.process_replaced(pid);
                    self.go.process_replaced(pid);
                }
                Ok(Record::Exit {
                    pid,
                    ts_ns,
                    exit_code,
                    binary,
                }) => {
                    // In order with the writes before it: they are what a SIGPIPE story needs.
                    if !batch.is_empty() {
                        self.capture_and_report(std::mem::take(&mut batch));
                    }
                    self.process_exited(pid, ts_ns, exit_code, binary);
                }
                Ok(Record::Sigpipe(event)) => {
                    if !batch.is_empty() {
                        self.capture_and_report(std::mem::take(&mut batch));
                    }
                    self.reporter.send(ToReporter::Sigpipe(event));
                }
                Err(err) => log::warn!("skipping a record from the kernel: {err}"),
            }
        }
        if !batch.is_empty() {
            self.capture_and_report(batch);
        }
    }

    /// Hands call paths the reporter met for the first time to the kernel.
    fn learn(&mut self) {
        let Some(call_paths) = &mut self.call_paths else {
            return;
        };
        for (learned, site) in self.learned.try_iter().flatten() {
            match call_paths.learn(&learned, site) {
                Ok(true) => {}
                Ok(false) => log::debug!(
                    "call site {site} of binary {}:{} is not counted in the kernel (no room)",
                    learned.dev,
                    learned.ino
                ),
                Err(err) => log::debug!("learning call site {site}: {err}"),
            }
        }
    }

    /// A process exited: what is kept of it goes, its kernel entries are folded at the next
    /// fold, and its SIGPIPE stories learn their fate.
    fn process_exited(&mut self, pid: u32, ts_ns: u64, exit_code: u32, binary: Option<BinaryId>) {
        self.capture.process_exited(pid);
        self.go.process_exited(pid);
        if let Some(metrics) = &mut self.metrics {
            metrics.process_exited(pid);
        }
        self.folding.exited(pid, binary);
        self.reporter.send(ToReporter::Exit {
            pid,
            ts_ns,
            exit_code,
        });
    }

    /// Reports the counts of repeated failures that changed, and folds the processes that
    /// exited, those whose exit record the ring buffer had no room for (kept by the kernel)
    /// and those a rescan of `/proc` finds gone.
    pub fn report_repeats(&mut self) {
        self.learn();
        // SIGPIPE records the ring buffer had no room for: their stories, late (before the
        // lost exits that may end them).
        match self.tracer.take_lost_sigpipes() {
            Ok(lost) => {
                for record in lost {
                    let event = events::decode::sigpipe_event(&record);
                    self.reporter.send(ToReporter::Sigpipe(event));
                }
            }
            Err(err) => log::debug!("reading the lost SIGPIPE records: {err:#}"),
        }
        match self.tracer.take_lost_exits() {
            Ok(lost) => {
                for exit in lost {
                    self.folding.recovered_exit();
                    let binary = BinaryId::known(exit.dev, exit.ino);
                    self.process_exited(exit.tgid, exit.ts_ns, exit.exit_code, binary);
                }
            }
            Err(err) => log::debug!("reading the lost exit records: {err:#}"),
        }
        let gone = self.folding.fold(
            &mut self.tracer,
            self.call_paths.as_mut(),
            self.parked.as_mut(),
            &self.reporter,
            &self.containers,
        );
        // Only live processes' and those the summary still lists keep their container.
        self.folding.retain_listed(&mut self.containers);
        for pid in gone {
            self.capture.process_exited(pid);
            self.go.process_exited(pid);
            if let Some(metrics) = &mut self.metrics {
                metrics.process_exited(pid);
            }
        }
    }

    fn drain_mappings(&mut self) {
        if let Some(watch) = &mut self.mmap_watch {
            let capture = &mut self.capture;
            watch.drain(|event| capture.space_event(event));
        }
    }

    fn capture_and_report(&mut self, batch: Vec<WriteEvent>) {
        self.learn();
        // Mappings first, read now rather than when the drain began (the ring buffer may have
        // been read for a while since): every mapping made before these writes is in them.
        self.drain_mappings();
        let captured = self.capture.capture(batch, &mut self.go, &mut self.tracer);
        for write in &captured {
            if let Some(metrics) = &mut self.metrics {
                metrics.write_captured(write.event.pid, write.event.fd, write.target.kind);
            }
            if let Some(container) = &write.container {
                self.containers.insert(write.event.pid, container.clone());
            }
        }
        self.reporter.send(ToReporter::Writes(captured));
    }

    /// Reports goroutines parked in Go's netpoller for at least the stuck threshold.
    pub fn report_parked(&mut self) {
        let Some(parked) = &mut self.parked else {
            return;
        };
        let events = enrich::parked::newly_parked(
            parked,
            events::monotonic_ns(),
            self.stuck_ns,
            &mut self.go,
        );
        if !events.is_empty() {
            self.capture_and_report(events);
        }
    }

    /// Reports writes blocked for at least the stuck threshold that have not returned, once
    /// each, while they are still stuck.
    /// Containers that started since and match `--container`/`--pod`/`--namespace`: traced
    /// from now on, their writes already blocked adopted, their readers watched.
    pub fn watch_new_containers(&mut self, watch: &mut super::containers::ContainerWatch) {
        let added = watch.rescan(&mut self.capture, &mut self.tracer);
        let pids: Vec<u32> = added
            .iter()
            .flat_map(|found| found.pids.iter().copied())
            .collect();
        if pids.is_empty() {
            return;
        }
        self.capture.watch_readers_of(&pids, &mut self.tracer);
        for &pid in &pids {
            self.capture.track(pid);
            self.go.process(pid);
            if let Some(slots) = &mut self.blocked {
                blocked::adopt_blocked_threads(slots, pid, &mut self.tracer, &mut self.go);
            }
        }
    }

    pub fn report_stuck(&mut self) {
        let Some(slots) = &self.blocked else {
            return;
        };
        let now = events::monotonic_ns();
        let stuck =
            blocked::newly_stuck(slots, now, self.stuck_ns, &self.regs_layout, &mut self.go);
        if stuck.is_empty() {
            return;
        }
        let (reported, events): (Vec<_>, Vec<_>) = stuck.into_iter().unzip();
        for event in &events {
            self.folding.processes.seen(event.pid, &event.comm, None);
        }
        self.capture_and_report(events);
        if let Some(slots) = &mut self.blocked {
            for blocked in &reported {
                slots.mark_reported(blocked);
            }
        }
    }

    /// Writes still stuck now, for the summary.
    /// The writes still stuck, each with its container.
    pub fn still_stuck(&mut self) -> Vec<crate::report::record::StuckWrite> {
        let mut stuck = self
            .blocked
            .as_ref()
            .map(|slots| super::summary::still_stuck(slots, self.stuck_ns))
            .unwrap_or_default();
        for write in &mut stuck {
            write.container = self.capture.container_of(write.pid).as_deref().cloned();
        }
        stuck
    }
}
