//! What a file descriptor points at, and who holds the other end.
//!
//! The kernel program reads the fd's inode (type, number, device) at event time, so the kind of
//! target is known even when the writer has already exited. The holders of a pipe's ends are
//! found from procfs: every `/proc/PID/fd/N` whose link names the same pipe, with the access
//! mode from `/proc/PID/fdinfo/N`. Nothing here opens the pipe: holding an end open would change
//! what its real readers and writers see (EOF, EPIPE).

use crate::report::record::{FdTarget, Peer, TargetKind};
use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::MetadataExt,
};

use stdtrace_common::OpenFile;

use super::status;

const S_IFMT: u32 = 0o170000;
const S_IFIFO: u32 = 0o010000;
const S_IFCHR: u32 = 0o020000;
const S_IFDIR: u32 = 0o040000;
const S_IFBLK: u32 = 0o060000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFSOCK: u32 = 0o140000;
const O_ACCMODE: u32 = 0o3;
const O_NONBLOCK: u32 = 0o4000;

/// UNIX98 pty slaves (`/dev/pts/N`) use majors 136 to 143.
const PTY_SLAVE_MAJORS: std::ops::RangeInclusive<u32> = 136..=143;
/// `/dev/ptmx` is 5:2; 5:0 is `/dev/tty`, 5:1 `/dev/console`.
const TTYAUX_MAJOR: u32 = 5;
/// Virtual consoles and serial ports.
const TTY_MAJOR: u32 = 4;

/// A device number split the way people read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceId {
    pub major: u32,
    pub minor: u32,
}

impl DeviceId {
    /// From the kernel's internal encoding (`major << 20 | minor`), as the kernel program reads it.
    pub fn from_kernel(dev: u32) -> Self {
        Self {
            major: dev >> 20,
            minor: dev & 0xfffff,
        }
    }

    /// From a `stat` `st_dev` / `st_rdev`.
    pub fn from_stat(dev: u64) -> Self {
        Self {
            major: libc::major(dev),
            minor: libc::minor(dev),
        }
    }
}

/// The inode behind an fd, as the kernel program or `stat` saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    pub ino: u64,
    /// The device of the file system holding the inode.
    pub dev: DeviceId,
    /// For device files, which device.
    pub rdev: DeviceId,
    pub mode: u32,
    /// `f_flags` of the open file description, when known.
    pub flags: Option<u32>,
    /// For a pipe or FIFO, the open (read ends, write ends) the kernel counted at event time.
    pub pipe_ends: Option<(u32, u32)>,
}

impl FileIdentity {
    /// From what the kernel program read; `pipe_ends_valid` when it read the pipe's end counts.
    pub fn from_kernel(file: &OpenFile, pipe_ends_valid: bool) -> Self {
        Self {
            ino: file.ino,
            dev: DeviceId::from_kernel(file.dev),
            rdev: DeviceId::from_kernel(file.rdev),
            mode: file.mode,
            flags: Some(file.flags),
            pipe_ends: pipe_ends_valid.then_some((file.pipe_readers, file.pipe_writers)),
        }
    }

    pub fn from_metadata(metadata: &std::fs::Metadata) -> Self {
        Self {
            ino: metadata.ino(),
            dev: DeviceId::from_stat(metadata.dev()),
            rdev: DeviceId::from_stat(metadata.rdev()),
            mode: metadata.mode(),
            flags: None,
            pipe_ends: None,
        }
    }
}

/// Devices of the kernel's internal file systems, learnt once from a pipe and a socket of our
/// own: a FIFO inode on the pipefs device is an anonymous pipe, any other is a named FIFO.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpecialDevices {
    pub pipefs: Option<DeviceId>,
}

impl SpecialDevices {
    pub fn probe() -> Self {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Self::default();
        }
        // SAFETY: a zeroed `stat` is a valid out-parameter; the fd was just created.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        let ok = unsafe { libc::fstat(fds[0], &mut stat) } == 0;
        // SAFETY: both fds are ours and closed exactly once.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        Self {
            pipefs: ok.then(|| DeviceId::from_stat(stat.st_dev)),
        }
    }
}

/// Classifies an inode, with the fd's link text (`readlink /proc/PID/fd/N`) when it is known.
pub fn classify(
    identity: &FileIdentity,
    link: Option<&str>,
    special: &SpecialDevices,
) -> TargetKind {
    match identity.mode & S_IFMT {
        S_IFIFO => {
            let anonymous = link.map(|link| link.starts_with("pipe:"));
            match (anonymous, special.pipefs) {
                (Some(true), _) => TargetKind::Pipe,
                (Some(false), _) => TargetKind::Fifo,
                (None, Some(pipefs)) if pipefs == identity.dev => TargetKind::Pipe,
                (None, Some(_)) => TargetKind::Fifo,
                (None, None) => TargetKind::Pipe,
            }
        }
        S_IFSOCK => TargetKind::Socket,
        S_IFCHR => {
            let DeviceId { major, minor } = identity.rdev;
            if PTY_SLAVE_MAJORS.contains(&major) || (major == TTYAUX_MAJOR && minor == 2) {
                TargetKind::Pty
            } else if major == TTY_MAJOR || (major == TTYAUX_MAJOR && minor <= 1) {
                TargetKind::Tty
            } else {
                TargetKind::Char
            }
        }
        S_IFREG | S_IFDIR | S_IFLNK | S_IFBLK => TargetKind::File,
        _ => TargetKind::Other,
    }
}

/// The pts number of a pty slave device.
pub fn pts_number(rdev: DeviceId) -> Option<u32> {
    PTY_SLAVE_MAJORS
        .contains(&rdev.major)
        .then(|| (rdev.major - PTY_SLAVE_MAJORS.start()) * 256 + rdev.minor)
}

/// The inode behind `pid`'s fd `fd`, from procfs (`stat` follows the fd's link).
pub fn identity_of(pid: u32, fd: i32) -> Option<FileIdentity> {
    std::fs::metadata(crate::process::host::host().pid_path(pid, format!("fd/{fd}")))
        .ok()
        .map(|metadata| FileIdentity::from_metadata(&metadata))
}

/// Describes the target of `pid`'s fd `fd`: from what the kernel saw when there is that, with
/// the link from procfs when the process is still there.
pub fn describe(
    pid: u32,
    fd: i32,
    kernel_view: Option<&FileIdentity>,
    special: &SpecialDevices,
) -> FdTarget {
    let link = std::fs::read_link(crate::process::host::host().pid_path(pid, format!("fd/{fd}")))
        .ok()
        .map(|path| path.to_string_lossy().into_owned());
    let identity = match kernel_view {
        Some(identity) => Some(*identity),
        None => identity_of(pid, fd),
    };
    let Some(identity) = identity else {
        return FdTarget {
            kind: TargetKind::Other,
            inode: None,
            path: link,
            pts: None,
            nonblocking: None,
            readers: None,
            writers: None,
            read_ends: None,
            write_ends: None,
            capacity: None,
            queued: None,
            socket: None,
            last_reader: None,
            pty: None,
            master: None,
            unknown: Some(format!("fd {fd} of pid {pid} could not be looked at")),
        };
    };
    let kind = classify(&identity, link.as_deref(), special);
    let path = match kind {
        TargetKind::Pipe => Some(format!("pipe:[{}]", identity.ino)),
        TargetKind::Socket => Some(format!("socket:[{}]", identity.ino)),
        _ => link,
    };
    FdTarget {
        kind,
        inode: Some(identity.ino),
        path,
        pts: pts_number(identity.rdev),
        nonblocking: identity.flags.map(|flags| flags & O_NONBLOCK != 0),
        readers: None,
        writers: None,
        read_ends: identity.pipe_ends.map(|(readers, _)| readers),
        write_ends: identity.pipe_ends.map(|(_, writers)| writers),
        capacity: None,
        queued: None,
        socket: (kind == TargetKind::Socket)
            .then(|| super::socket::describe(pid, identity.ino))
            .flatten(),
        last_reader: None,
        pty: None,
        master: None,
        unknown: None,
    }
}

/// What to look for among every process's fds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HolderQuery {
    /// An anonymous pipe, by inode.
    Pipe(u64),
    /// A named FIFO, by its file system's device and inode.
    Fifo { dev: (u32, u32), ino: u64 },
    /// The master side of pty `index` of the devpts instance `devpts` (each container has its
    /// own, numbered from 0 again); any instance when that is not known.
    PtyMaster {
        index: u32,
        devpts: Option<(u32, u32)>,
    },
    /// A socket, by inode: the other end of a unix socket or of a loopback connection.
    Socket(u64),
}

impl HolderQuery {
    /// The query that finds the other end of a target, if it has one procfs can show.
    pub fn for_target(target: &FdTarget, identity: Option<&FileIdentity>) -> Option<Self> {
        match target.kind {
            TargetKind::Pipe => target.inode.map(HolderQuery::Pipe),
            TargetKind::Fifo => identity.map(|identity| HolderQuery::Fifo {
                dev: (identity.dev.major, identity.dev.minor),
                ino: identity.ino,
            }),
            TargetKind::Pty => target.pts.map(|index| HolderQuery::PtyMaster {
                index,
                devpts: identity.map(|identity| (identity.dev.major, identity.dev.minor)),
            }),
            TargetKind::Socket => target
                .socket
                .as_ref()
                .and_then(|socket| socket.peer_inode)
                .map(HolderQuery::Socket),
            _ => None,
        }
    }
}

/// Who holds each end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holders {
    pub readers: Vec<Peer>,
    pub writers: Vec<Peer>,
}

/// Walks every process's fds once and answers all `queries`. `exclude` (stdtrace itself) is
/// skipped. Processes that vanish or cannot be read during the walk are skipped.
pub fn find_holders(queries: &[HolderQuery], exclude: u32) -> BTreeMap<HolderQuery, Holders> {
    let mut answers: BTreeMap<HolderQuery, Holders> = queries
        .iter()
        .map(|query| (query.clone(), Holders::default()))
        .collect();
    if queries.is_empty() {
        return answers;
    }
    let links: HashMap<String, HolderQuery> = queries
        .iter()
        .filter_map(|query| match query {
            HolderQuery::Pipe(ino) => Some((format!("pipe:[{ino}]"), query.clone())),
            HolderQuery::Socket(ino) => Some((format!("socket:[{ino}]"), query.clone())),
            _ => None,
        })
        .collect();
    let wants_fifos = queries
        .iter()
        .any(|query| matches!(query, HolderQuery::Fifo { .. }));
    let wants_ptys = queries
        .iter()
        .any(|query| matches!(query, HolderQuery::PtyMaster { .. }));

    let Ok(proc_dir) = std::fs::read_dir(crate::process::host::host().proc()) else {
        return answers;
    };
    for entry in proc_dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == exclude {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(crate::process::host::host().pid_path(pid, "fd")) else {
            continue;
        };
        let mut comm = None;
        for fd_entry in fds.flatten() {
            let Some(fd) = fd_entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(link) = std::fs::read_link(fd_entry.path()) else {
                continue;
            };
            let link = link.to_string_lossy();
            let query = if let Some(query) = links.get(link.as_ref()) {
                Some(query.clone())
            } else if wants_ptys && (link == "/dev/ptmx" || link == "/dev/pts/ptmx") {
                tty_index(pid, fd).and_then(|index| {
                    let devpts = master_devpts(pid, &fd_entry.path(), &link);
                    [devpts, None]
                        .into_iter()
                        .map(|devpts| HolderQuery::PtyMaster { index, devpts })
                        .find(|query| answers.contains_key(query))
                })
            } else if wants_fifos && link.starts_with('/') {
                std::fs::metadata(fd_entry.path())
                    .ok()
                    .filter(|metadata| metadata.mode() & S_IFMT == S_IFIFO)
                    .map(|metadata| {
                        let dev = DeviceId::from_stat(metadata.dev());
                        HolderQuery::Fifo {
                            dev: (dev.major, dev.minor),
                            ino: metadata.ino(),
                        }
                    })
            } else {
                None
            };
            let Some(query) = query else { continue };
            let Some(holders) = answers.get_mut(&query) else {
                continue;
            };
            let access = match query {
                // Reading the master side is what drains a pty; reading the other end of a
                // socket is what drains it.
                HolderQuery::PtyMaster { .. } | HolderQuery::Socket(_) => Some(Access::Read),
                _ => access_mode(pid, fd),
            };
            let comm = comm
                .get_or_insert_with(|| status::comm(pid).unwrap_or_else(|| "?".to_owned()))
                .clone();
            let (read, write) = match access {
                Some(Access::Read) => (true, false),
                Some(Access::Write) => (false, true),
                Some(Access::ReadWrite) => (true, true),
                None => continue,
            };
            if read {
                add_peer(&mut holders.readers, pid, &comm, fd);
            }
            if write {
                add_peer(&mut holders.writers, pid, &comm, fd);
            }
        }
    }
    answers
}

fn add_peer(peers: &mut Vec<Peer>, pid: u32, comm: &str, fd: i32) {
    match peers.iter_mut().find(|peer| peer.pid == pid) {
        Some(peer) => peer.fds.push(fd),
        None => peers.push(Peer {
            pid,
            comm: comm.to_owned(),
            fds: vec![fd],
            activity: None,
            container: None,
            runtime: None,
            blocked_write: None,
        }),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    ReadWrite,
}

/// The `flags:` line of `/proc/PID/fdinfo/N`, in octal.
fn fdinfo_flags(text: &str) -> Option<u32> {
    let value = status::field(text, "flags")?;
    u32::from_str_radix(value, 8).ok()
}

fn access_mode(pid: u32, fd: i32) -> Option<Access> {
    let text =
        std::fs::read_to_string(crate::process::host::host().pid_path(pid, format!("fdinfo/{fd}")))
            .ok()?;
    match fdinfo_flags(&text)? & O_ACCMODE {
        0 => Some(Access::Read),
        1 => Some(Access::Write),
        2 => Some(Access::ReadWrite),
        _ => None,
    }
}

/// The devpts instance a master fd belongs to: its own file system when it was opened as
/// `/dev/pts/ptmx` (a container's runtime does so), else the `/dev/pts` its holder sees (a
/// `/dev/ptmx` device node opens the instance mounted there).
fn master_devpts(pid: u32, fd_path: &std::path::Path, link: &str) -> Option<(u32, u32)> {
    let metadata = if link == "/dev/pts/ptmx" {
        std::fs::metadata(fd_path)
    } else {
        std::fs::metadata(crate::process::host::host().pid_path(pid, "root/dev/pts/ptmx"))
    };
    let dev = DeviceId::from_stat(metadata.ok()?.dev());
    Some((dev.major, dev.minor))
}

/// The `tty-index:` line the kernel adds to the fdinfo of a `/dev/ptmx` fd.
fn tty_index(pid: u32, fd: i32) -> Option<u32> {
    let text =
        std::fs::read_to_string(crate::process::host::host().pid_path(pid, format!("fdinfo/{fd}")))
            .ok()?;
    status::field(&text, "tty-index")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    fn identity(mode: u32, rdev: (u32, u32), dev: (u32, u32)) -> FileIdentity {
        FileIdentity {
            ino: 7,
            dev: DeviceId {
                major: dev.0,
                minor: dev.1,
            },
            rdev: DeviceId {
                major: rdev.0,
                minor: rdev.1,
            },
            mode,
            flags: None,
            pipe_ends: None,
        }
    }

    #[test]
    fn classifies_kernel_views() {
        let special = SpecialDevices {
            pipefs: Some(DeviceId {
                major: 0,
                minor: 14,
            }),
        };
        let pipe = identity(S_IFIFO | 0o600, (0, 0), (0, 14));
        assert_eq!(classify(&pipe, None, &special), TargetKind::Pipe);
        assert_eq!(
            classify(&pipe, Some("pipe:[7]"), &special),
            TargetKind::Pipe
        );
        let fifo = identity(S_IFIFO | 0o644, (0, 0), (254, 1));
        assert_eq!(classify(&fifo, None, &special), TargetKind::Fifo);
        assert_eq!(classify(&fifo, Some("/tmp/f"), &special), TargetKind::Fifo);
        let pts = identity(S_IFCHR | 0o620, (136, 3), (0, 24));
        assert_eq!(classify(&pts, None, &special), TargetKind::Pty);
        assert_eq!(pts_number(pts.rdev), Some(3));
        assert_eq!(
            pts_number(DeviceId {
                major: 137,
                minor: 1
            }),
            Some(257)
        );
        let ptmx = identity(S_IFCHR | 0o666, (5, 2), (0, 6));
        assert_eq!(classify(&ptmx, None, &special), TargetKind::Pty);
        let console = identity(S_IFCHR | 0o600, (5, 1), (0, 6));
        assert_eq!(classify(&console, None, &special), TargetKind::Tty);
        let vt = identity(S_IFCHR | 0o600, (4, 1), (0, 6));
        assert_eq!(classify(&vt, None, &special), TargetKind::Tty);
        let null = identity(S_IFCHR | 0o666, (1, 3), (0, 6));
        assert_eq!(classify(&null, None, &special), TargetKind::Char);
        let socket = identity(S_IFSOCK | 0o777, (0, 0), (0, 8));
        assert_eq!(classify(&socket, None, &special), TargetKind::Socket);
        let file = identity(S_IFREG | 0o644, (0, 0), (254, 1));
        assert_eq!(classify(&file, None, &special), TargetKind::File);
        let anon = identity(0o600, (0, 0), (0, 15));
        assert_eq!(
            classify(&anon, Some("anon_inode:[eventfd]"), &special),
            TargetKind::Other
        );
    }

    #[test]
    fn fdinfo_access_modes() {
        assert_eq!(
            fdinfo_flags("pos:\t0\nflags:\t0100001\nmnt_id:\t15\n"),
            Some(0o100001)
        );
        assert_eq!(fdinfo_flags("pos:\t0\n"), None);
        assert_eq!(fdinfo_flags("flags:\tzzz\n"), None);
    }

    #[test]
    fn finds_both_ends_of_a_pipe_of_our_own() {
        let special = SpecialDevices::probe();
        assert!(special.pipefs.is_some());
        let (reader, writer) = std::io::pipe().unwrap();
        let pid = std::process::id();
        let target = describe(pid, writer.as_raw_fd(), None, &special);
        assert_eq!(target.kind, TargetKind::Pipe);
        let query = HolderQuery::for_target(&target, None).unwrap();
        // Our own pid is not excluded here, so we find ourselves at both ends.
        let answers = find_holders(std::slice::from_ref(&query), 0);
        let holders = &answers[&query];
        assert_eq!(holders.readers.len(), 1);
        assert_eq!(holders.readers[0].pid, pid);
        assert_eq!(holders.readers[0].fds, vec![reader.as_raw_fd()]);
        assert_eq!(holders.writers[0].fds, vec![writer.as_raw_fd()]);
        // Excluding ourselves, nobody holds it.
        let answers = find_holders(std::slice::from_ref(&query), pid);
        assert_eq!(answers[&query], Holders::default());
    }
}
