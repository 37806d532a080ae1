//! The first stage: capture at once what a writer's exit would take with it (its memory map
//! and open objects, what its fd points at and who holds the other end), as each record is read.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    enrich::{
        Inspector,
        container::{Containers, role},
        go::{GoProgram, GoTracker},
    },
    errno::Errno,
    events::{WriteEvent, WriteOutcome},
    process::{
        activity,
        address_space::AddressSpaces,
        cgroup::ContainerCgroup,
        fd::{self, FileIdentity, HolderQuery, Holders, SpecialDevices},
        maps::ProcessMaps,
        perf_mmap::SpaceEvent,
    },
    report::record::{Container, FdTarget, Peer, Runtime, RuntimeRole, TargetKind},
    symbolize::OpenObjects,
};

mod chain;

/// How long who-holds-which-end answers are reused: a storm of failed writes on one pipe must
/// not rescan every process's fds for each batch.
const HOLDERS_TTL: Duration = Duration::from_secs(1);
/// How long a process's container is reused before its cgroup is read again (a pid reused
/// by a process of another container; `podman exec` joining one), and how many are kept.
const PROCESS_CONTAINER_TTL: Duration = Duration::from_secs(10);
const MAX_PROCESS_CONTAINERS: usize = 4096;

/// What is known of a process's address space.
#[derive(Clone, Debug)]
pub enum ProcessImage {
    /// Its memory map, and its objects opened while it was there.
    Known {
        maps: Arc<ProcessMaps>,
        objects: Arc<OpenObjects>,
    },
    /// It could not be read (the process exited first, or procfs refused).
    Unavailable(String),
}

/// A failed write with everything that could vanish already captured.
#[derive(Debug)]
pub struct CapturedWrite {
    pub event: WriteEvent,
    pub image: ProcessImage,
    pub target: FdTarget,
    /// The Go program the writer runs, if it is one.
    pub go: Option<Arc<GoProgram>>,
    /// The container the writer runs in, if it is in one.
    pub container: Option<Arc<Container>>,
}

/// The first stage: capture at once what could vanish.
pub struct Capture {
    images: HashMap<u32, ProcessImage>,
    /// Address spaces rebuilt from the kernel's mapping records, for writers that exit first.
    spaces: AddressSpaces,
    holders: BTreeMap<HolderQuery, (Instant, Holders)>,
    special: SpecialDevices,
    exited: Vec<u32>,
    own_pid: u32,
    /// Container metadata, by container id.
    containers: Containers,
    /// The container of each process seen, and when its cgroup was read (again after it execs
    /// or exits, or after [`PROCESS_CONTAINER_TTL`]).
    process_containers: HashMap<u32, (Instant, Option<Arc<Container>>)>,
}

impl Default for Capture {
    fn default() -> Self {
        Self::new()
    }
}

impl Capture {
    /// A capture that reads procfs and the runtimes' state under the installed host root
    /// ([`crate::process::host::host`]).
    pub fn new() -> Self {
        Self::with_host_root(crate::process::host::host().root())
    }

    /// A capture that reads the host's procfs and runtime state under `root` (where the
    /// host's filesystem is mounted, for a node agent in a container).
    pub fn with_host_root(root: impl Into<PathBuf>) -> Self {
        Self {
            images: HashMap::new(),
            spaces: AddressSpaces::new(),
            holders: BTreeMap::new(),
            special: SpecialDevices::probe(),
            exited: Vec::new(),
            own_pid: std::process::id(),
            containers: Containers::new(root),
            process_containers: HashMap::new(),
        }
    }

    /// The container stage this capture names containers with (`--container` resolves names
    /// through it too, so both share one cache).
    pub fn containers_mut(&mut self) -> &mut Containers {
        &mut self.containers
    }

    /// Reads the memory map of a process about to be traced and opens its objects, so that its
    /// stacks can be named even if it exits (or deletes its binary) right after.
    pub fn track(&mut self, pid: u32) {
        self.read_image(pid);
    }

    /// What the kernel recorded of a process's mappings, execs, forks and exits.
    pub fn space_event(&mut self, event: SpaceEvent) {
        self.spaces.apply(event);
    }

    /// Mapping records the kernel dropped before they were read, so far.
    pub fn mapping_records_lost(&self) -> u64 {
        self.spaces.lost()
    }

    /// The process called exec: its old memory map is no longer valid.
    pub fn process_replaced(&mut self, pid: u32) {
        self.images.remove(&pid);
        self.process_containers.remove(&pid);
    }

    /// The process ended; what is known of it is kept until the current batch is captured.
    pub fn process_exited(&mut self, pid: u32) {
        self.exited.push(pid);
    }

    /// Captures a batch of events, read from the ring buffer just now (or, for stuck writes,
    /// from the blocked-write slots and procfs).
    pub fn capture(
        &mut self,
        events: Vec<WriteEvent>,
        go: &mut GoTracker,
        pipes: &mut dyn Inspector,
    ) -> Vec<CapturedWrite> {
        let mut targets = Vec::with_capacity(events.len());
        let mut identities = Vec::with_capacity(events.len());
        for event in &events {
            self.refresh_image(event);
            self.container_of(event.pid);
            targets.push(fd::describe(
                event.pid,
                event.fd,
                event.file.as_ref(),
                &self.special,
            ));
            // A stuck write's event has no kernel view of its file: a FIFO's or a pty's other
            // end is found by the file system it is on, from procfs then.
            identities.push(event.file.or_else(|| fd::identity_of(event.pid, event.fd)));
        }
        self.refresh_holders(&targets, &identities, pipes);
        let mut captured = Vec::with_capacity(events.len());
        for ((event, mut target), identity) in events.into_iter().zip(targets).zip(identities) {
            // For a write that waits (blocked, or EAGAIN: it would block), what the other end
            // is doing is the story.
            let waiting = !matches!(
                event.outcome,
                WriteOutcome::Failed { errno } if Errno(errno) != Errno::EAGAIN
            );
            self.complete_target(
                event.pid,
                event.fd,
                identity.as_ref(),
                &mut target,
                waiting,
                pipes,
            );
            if waiting {
                let mut visited =
                    chain::Visited::new(event.pid, event.tid, &target, identity.as_ref());
                self.follow_chain(&mut target, 1, &mut visited, pipes);
            }
            super::pty::name_master(&mut target);
            let container = self
                .process_containers
                .get(&event.pid)
                .and_then(|(_, container)| container.clone());
            // A runtime process reading this pipe serves this writer's container (a
            // containerd shim's own `-id` is its pod sandbox's).
            if let (Some(container), Some(readers)) = (&container, &mut target.readers) {
                for role in readers
                    .iter_mut()
                    .filter_map(|reader| reader.runtime.as_mut())
                {
                    role.serves = Some(Container::clone(container));
                    // A pod's shim holds every container's FIFOs: this one's are told.
                    if role
                        .sends_to
                        .iter()
                        .any(|sink| sink.path.contains(&container.id))
                    {
                        role.sends_to
                            .retain(|sink| sink.path.contains(&container.id));
                    }
                }
            }
            let image = self.images.get(&event.pid).cloned().unwrap_or_else(|| {
                ProcessImage::Unavailable("its memory map was not read".to_owned())
            });
            captured.push(CapturedWrite {
                go: go.process_or(event.pid, self.spaces.executable(event.pid)),
                event,
                image,
                target,
                container,
            });
        }
        for pid in self.exited.drain(..) {
            self.images.remove(&pid);
            self.process_containers.remove(&pid);
        }
        captured
    }

    /// Completes what `fd` of `pid` points at: who holds the other end (and, for a write that
    /// waits, or a pty, what they are doing), how full a pipe or pty is, a socket's queues, and
    /// a broken pipe's last reader. The same for a traced writer and for a reader found
    /// blocked writing in a chain.
    fn complete_target(
        &mut self,
        pid: u32,
        fd: i32,
        file: Option<&FileIdentity>,
        target: &mut FdTarget,
        waiting: bool,
        pipes: &mut dyn Inspector,
    ) {
        if let Some(query) = HolderQuery::for_target(target, file)
            && let Some(holders) = self.holders_of(&query, pipes)
        {
            target.readers = Some(holders.readers);
            if !matches!(
                query,
                HolderQuery::PtyMaster { .. } | HolderQuery::Socket(_)
            ) {
                target.writers = Some(holders.writers);
            }
        }
        if matches!(target.kind, TargetKind::Pipe | TargetKind::Fifo)
            && let Some(state) = pipes.pipe_state(pid, fd)
        {
            target.capacity = Some(state.capacity);
            target.queued = Some(state.queued);
        }
        super::pty::fill(target, pid, fd, pipes);
        if let FdTarget {
            socket: Some(socket),
            readers,
            ..
        } = target
        {
            let receivers = readers.as_deref().unwrap_or_default();
            super::socket::fill(socket, pid, fd, receivers, pipes);
        }
        // Nobody reads any more: who did, last.
        if matches!(target.kind, TargetKind::Pipe | TargetKind::Fifo)
            && target.read_ends == Some(0)
            && let Some(inode) = target.inode
        {
            target.last_reader = pipes.last_reader(inode);
        }
        // The master side's holder is told whatever the write did (a pty's EIO too).
        if (waiting || target.kind == TargetKind::Pty)
            && let Some(readers) = &mut target.readers
        {
            for reader in readers.iter_mut() {
                reader.activity = activity::of_process(reader.pid, &reader.fds);
            }
        }
    }

    /// Who holds the ends `query` looks for: the batch's answer, or (for a target found while
    /// following a chain) a walk over procfs for it alone.
    fn holders_of(&mut self, query: &HolderQuery, pipes: &mut dyn Inspector) -> Option<Holders> {
        if !self.holders.contains_key(query) {
            self.find_and_describe(vec![query.clone()], pipes);
        }
        self.holders.get(query).map(|(_, holders)| holders.clone())
    }

    /// Reads the map again if the event's pc is not in the one known (a library loaded since).
    fn refresh_image(&mut self, event: &WriteEvent) {
        let ip = event.registers.and_then(|registers| registers.ip());
        let stale = match (self.images.get(&event.pid), ip) {
            (Some(ProcessImage::Known { maps, .. }), Some(ip)) => maps.find(ip).is_none(),
            (Some(ProcessImage::Known { .. }), None) => false,
            (Some(ProcessImage::Unavailable(_)), _) | (None, _) => true,
        };
        if stale {
            self.read_image(event.pid);
        }
    }

    /// Reads `pid`'s memory map from procfs and opens its objects; if it is gone, rebuilds the
    /// map from the kernel's mapping records.
    fn read_image(&mut self, pid: u32) {
        let image = match ProcessMaps::read(pid) {
            Ok(maps) if !maps.mappings.is_empty() => {
                let started = Instant::now();
                let objects = OpenObjects::open(pid, &maps);
                log::debug!(
                    "opened {} objects of pid {pid} in {:?}",
                    objects.len(),
                    started.elapsed()
                );
                ProcessImage::Known {
                    maps: Arc::new(maps),
                    objects: Arc::new(objects),
                }
            }
            // Gone (or a zombie, whose map is empty): the kernel's mapping records tell.
            read => match (self.spaces.maps(pid), self.images.get(&pid)) {
                (Some(rebuilt), _) => ProcessImage::Known {
                    maps: Arc::new(rebuilt),
                    objects: Arc::default(),
                },
                // Keep an older map rather than nothing.
                (None, Some(known @ ProcessImage::Known { .. })) => known.clone(),
                (None, _) => ProcessImage::Unavailable(match read {
                    Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                        format!("its memory map could not be read: {err}")
                    }
                    _ => "the process exited before its memory map could be read".to_owned(),
                }),
            },
        };
        log::debug!(
            "memory map of pid {pid}: {}",
            match &image {
                ProcessImage::Known { maps, .. } => format!("{} mappings", maps.mappings.len()),
                ProcessImage::Unavailable(why) => why.clone(),
            }
        );
        self.images.insert(pid, image);
    }

    /// Answers, in one walk over procfs, who holds the other end of every target in the batch
    /// that has no fresh answer yet.
    fn refresh_holders(
        &mut self,
        targets: &[FdTarget],
        identities: &[Option<FileIdentity>],
        pipes: &mut dyn Inspector,
    ) {
        let now = Instant::now();
        self.holders
            .retain(|_, (when, _)| now.duration_since(*when) < HOLDERS_TTL);
        let mut wanted: Vec<HolderQuery> = targets
            .iter()
            .zip(identities)
            .filter_map(|(target, identity)| HolderQuery::for_target(target, identity.as_ref()))
            .filter(|query| !self.holders.contains_key(query))
            .collect();
        wanted.sort();
        wanted.dedup();
        if wanted.is_empty() {
            return;
        }
        self.find_and_describe(wanted, pipes);
    }

    /// Finds the holders `wanted` asks for in one walk over procfs, describes them, and keeps
    /// the answers for [`HOLDERS_TTL`].
    fn find_and_describe(&mut self, wanted: Vec<HolderQuery>, pipes: &mut dyn Inspector) {
        let now = Instant::now();
        let started = Instant::now();
        let found = fd::find_holders(&wanted, self.own_pid);
        log::debug!(
            "found the holders of {} pipes in {:?}",
            wanted.len(),
            started.elapsed()
        );
        // The kernel remembers when these readers let go, should a writer get EPIPE later.
        let readers: Vec<u32> = found
            .values()
            .flat_map(|holders| holders.readers.iter().map(|reader| reader.pid))
            .collect();
        pipes.watch_readers(&readers);
        for (query, mut holders) in found {
            for peer in holders.readers.iter_mut().chain(holders.writers.iter_mut()) {
                self.describe_peer(peer);
            }
            self.holders.insert(query, (now, holders));
        }
    }

    /// The container a process runs in: its cgroup read once (cheap), its metadata from the
    /// container stage's cache.
    pub fn container_of(&mut self, pid: u32) -> Option<Arc<Container>> {
        let now = Instant::now();
        if let Some((read, known)) = self.process_containers.get(&pid)
            && now.duration_since(*read) < PROCESS_CONTAINER_TTL
        {
            return known.clone();
        }
        if self.process_containers.len() >= MAX_PROCESS_CONTAINERS {
            self.process_containers
                .retain(|_, (read, _)| now.duration_since(*read) < PROCESS_CONTAINER_TTL);
            if self.process_containers.len() >= MAX_PROCESS_CONTAINERS {
                self.process_containers.clear();
            }
        }
        let container = self.containers.of_process(pid);
        self.process_containers
            .insert(pid, (now, container.clone()));
        container
    }

    /// A holder's container, and what it does if it is a container runtime process.
    fn describe_peer(&mut self, peer: &mut Peer) {
        peer.container = self.container_of(peer.pid).as_deref().cloned();
        let root = self.containers.root().to_owned();
        let Some(runtime) = role::of_process(&root, peer.pid) else {
            return;
        };
        let serves = runtime.container_id.as_ref().map(|id| {
            self.containers.cached(id).unwrap_or_else(|| {
                self.containers.resolve(&ContainerCgroup {
                    id: id.clone(),
                    runtime: runtime.runtime,
                    namespace: None,
                    pod_uid: None,
                    qos: None,
                    path: String::new(),
                })
            })
        });
        // conmon serves the one container its command line names; a containerd shim may serve
        // a whole pod under its sandbox's id, so all its sinks are kept until the event says
        // whose pipe it reads.
        let only = runtime
            .container_id
            .as_deref()
            .filter(|_| runtime.runtime != Some(Runtime::Containerd));
        let sends_to = role::sinks(&root, peer.pid, only);
        peer.runtime = Some(RuntimeRole {
            role: runtime.role.into(),
            serves: serves.as_deref().cloned(),
            sends_to,
        });
    }

    /// Finds who reads the pipes `pids` write to (through any of their fds), and asks the
    /// kernel to remember when those readers let go: a writer's later EPIPE is then told who
    /// went away, even when the reader is not traced itself.
    pub fn watch_readers_of(&mut self, pids: &[u32], pipes: &mut dyn Inspector) {
        let mut queries = Vec::new();
        for &pid in pids {
            let Ok(fds) = std::fs::read_dir(crate::process::host::host().pid_path(pid, "fd"))
            else {
                continue;
            };
            for entry in fds.flatten() {
                let Ok(link) = std::fs::read_link(entry.path()) else {
                    continue;
                };
                let link = link.to_string_lossy();
                if let Some(inode) = link
                    .strip_prefix("pipe:[")
                    .and_then(|rest| rest.strip_suffix(']'))
                    .and_then(|inode| inode.parse().ok())
                {
                    queries.push(HolderQuery::Pipe(inode));
                }
            }
        }
        queries.sort();
        queries.dedup();
        if queries.is_empty() {
            return;
        }
        let readers: Vec<u32> = fd::find_holders(&queries, self.own_pid)
            .into_values()
            .flat_map(|holders| holders.readers.into_iter().map(|reader| reader.pid))
            .filter(|reader| !pids.contains(reader))
            .collect();
        log::debug!("watching the readers {readers:?} of the pipes of {pids:?}");
        pipes.watch_readers(&readers);
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use super::*;
    use crate::{
        enrich::inspector::{PipeFill, fake::FakeInspector},
        events::samples::failed_write,
        process::fd::FileIdentity,
        report::record::LastReader,
    };

    /// A pipe of this process: (read end, write end).
    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two ints we own.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh descriptors owned by nobody else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    #[test]
    fn a_broken_pipe_gets_its_fill_and_its_last_reader_from_the_inspector() {
        let (read, write) = pipe();
        drop(read);
        let fd = write.as_raw_fd();
        let metadata = std::fs::metadata(format!("/proc/self/fd/{fd}")).unwrap();
        let mut file = FileIdentity::from_metadata(&metadata);
        // As the kernel program counts them at the failed write: nobody reads.
        file.pipe_ends = Some((0, 1));
        let mut event = failed_write(fd, 32);
        event.file = Some(file);
        let mut inspector = FakeInspector {
            fill: Some(PipeFill {
                capacity: 65536,
                queued: 4096,
                partial: false,
                readers: 0,
                writers: 1,
            }),
            last_reader: Some(LastReader {
                pid: 4242,
                comm: "head".into(),
                exited: true,
                exit_ts_ns: Some(900),
                closed_ts_ns: None,
            }),
            ..FakeInspector::default()
        };
        let mut capture = Capture::new();
        let mut go = GoTracker::new(None);
        let captured = capture.capture(vec![event], &mut go, &mut inspector);
        assert_eq!(captured.len(), 1);
        let target = &captured[0].target;
        assert_eq!(target.kind, TargetKind::Pipe);
        assert_eq!(target.inode, Some(metadata_ino(&metadata)));
        assert_eq!((target.capacity, target.queued), (Some(65536), Some(4096)));
        assert_eq!(
            target.last_reader.as_ref().map(|reader| reader.pid),
            Some(4242)
        );
        assert_eq!(inspector.asked_fill, vec![(std::process::id(), fd)]);
        assert_eq!(inspector.asked_reader, vec![metadata_ino(&metadata)]);
        // Nobody else holds the pipe (stdtrace's own fds are never listed).
        assert_eq!(target.readers.as_deref(), Some(&[][..]));
        assert!(inspector.watched.is_empty(), "no reader to watch");
        assert!(captured[0].go.is_none(), "the test binary is not Go");
    }

    #[test]
    fn a_file_target_asks_the_inspector_nothing() {
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let mut inspector = FakeInspector::default();
        let mut capture = Capture::new();
        let mut go = GoTracker::new(None);
        let captured = capture.capture(
            vec![failed_write(file.as_raw_fd(), 11)],
            &mut go,
            &mut inspector,
        );
        assert_eq!(captured[0].target.kind, TargetKind::File);
        assert_eq!(
            captured[0].target.path.as_deref(),
            Some(format!("/proc/{}/status", std::process::id()).as_str())
        );
        assert!(inspector.asked_fill.is_empty() && inspector.asked_reader.is_empty());
        assert!(captured[0].target.capacity.is_none());
    }

    #[test]
    fn a_writer_in_a_container_carries_it() {
        // A host root where this very process is in a podman container with pod annotations.
        let root = std::env::temp_dir().join(format!("stdtrace-capture-{}", std::process::id()));
        let id = "cad264df46f47106f4671aa3f6ae9e73e539a7582bac636d4a4f0a214cedd15b";
        let pid = std::process::id();
        let userdata = root.join(format!(
            "var/lib/containers/storage/overlay-containers/{id}/userdata"
        ));
        std::fs::create_dir_all(&userdata).unwrap();
        std::fs::create_dir_all(root.join(format!("proc/{pid}"))).unwrap();
        std::fs::write(
            root.join(format!("proc/{pid}/cgroup")),
            format!("0::/libpod_parent/libpod-{id}\n"),
        )
        .unwrap();
        std::fs::write(
            userdata.join("config.json"),
            r#"{"annotations":{"io.container.manager":"libpod","io.kubernetes.pod.name":"web-0"}}"#,
        )
        .unwrap();
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let mut capture = Capture::with_host_root(&root);
        let captured = capture.capture(
            vec![failed_write(file.as_raw_fd(), 11)],
            &mut GoTracker::new(None),
            &mut FakeInspector::default(),
        );
        let _ = std::fs::remove_dir_all(&root);
        let container = captured[0].container.as_deref().expect("a container");
        assert_eq!(container.id, id);
        assert_eq!(container.pod.name.as_deref(), Some("web-0"));
        assert_eq!(container.runtime, Some(Runtime::Podman));
    }

    fn metadata_ino(metadata: &std::fs::Metadata) -> u64 {
        use std::os::unix::fs::MetadataExt;
        metadata.ino()
    }
}
