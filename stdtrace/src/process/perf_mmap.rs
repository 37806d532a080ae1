//! The kernel's own record of what processes map: `PERF_RECORD_MMAP2` (and exec, fork and
//! exit) from a system-wide dummy software perf event per CPU.
//!
//! A writer that fails and exits at once is gone before `/proc/PID/maps` can be read; these
//! records, written by the kernel when the mapping is made, let its address space be rebuilt
//! afterwards. Only executable mappings are reported (code is what stacks point into).
//!
//! The record buffers are written by the kernel and read here; every record is bounds-checked.

use std::{
    ffi::OsStr,
    io,
    os::{
        fd::{AsFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
};

use crate::sys::SharedMapping;

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_DUMMY: u64 = 9;
const PERF_SAMPLE_TID: u64 = 1 << 1;
const PERF_SAMPLE_TIME: u64 = 1 << 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

// Bits of perf_event_attr's flag word.
const ATTR_MMAP: u64 = 1 << 8;
const ATTR_COMM: u64 = 1 << 9;
const ATTR_TASK: u64 = 1 << 13;
const ATTR_SAMPLE_ID_ALL: u64 = 1 << 18;
const ATTR_MMAP2: u64 = 1 << 23;
const ATTR_COMM_EXEC: u64 = 1 << 24;
const ATTR_USE_CLOCKID: u64 = 1 << 25;

const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_COMM: u32 = 3;
const PERF_RECORD_EXIT: u32 = 4;
const PERF_RECORD_FORK: u32 = 7;
const PERF_RECORD_MMAP2: u32 = 10;
const PERF_RECORD_MISC_COMM_EXEC: u16 = 1 << 13;
const PERF_RECORD_MISC_MMAP_BUILD_ID: u16 = 1 << 14;

/// Size of the `sample_id` trailer with `PERF_SAMPLE_TID | PERF_SAMPLE_TIME`.
const SAMPLE_ID_LEN: usize = 16;

/// Data pages per CPU (a power of two).
const DATA_PAGES: usize = 64;

/// `struct perf_event_attr` as of PERF_ATTR_SIZE_VER8 (136 bytes).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved_2: u16,
    aux_sample_size: u32,
    reserved_3: u32,
    sig_data: u64,
    config3: u64,
}

const _: () = assert!(size_of::<PerfEventAttr>() == 136);

/// What the kernel said a process did to its address space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpaceEvent {
    /// An executable file mapping.
    Map {
        pid: u32,
        start: u64,
        len: u64,
        offset: u64,
        dev: (u32, u32),
        inode: u64,
        prot: u32,
        path: PathBuf,
        time_ns: u64,
    },
    /// The process called exec: its address space was replaced.
    Exec { pid: u32, time_ns: u64 },
    /// A new process (not a thread) was forked from `parent`.
    Fork { pid: u32, parent: u32, time_ns: u64 },
    /// The process's last thread ended.
    Exit { pid: u32, time_ns: u64 },
    /// The kernel had to drop records: what is known may be incomplete.
    Lost { count: u64 },
}

impl SpaceEvent {
    /// When it happened (CLOCK_MONOTONIC); 0 for lost-record notices, which sort first.
    pub fn time_ns(&self) -> u64 {
        match self {
            SpaceEvent::Map { time_ns, .. }
            | SpaceEvent::Exec { time_ns, .. }
            | SpaceEvent::Fork { time_ns, .. }
            | SpaceEvent::Exit { time_ns, .. } => *time_ns,
            SpaceEvent::Lost { .. } => 0,
        }
    }
}

/// One CPU's perf buffer.
struct CpuBuffer {
    /// Kept open for as long as the buffer is mapped: closing it ends the event.
    _fd: OwnedFd,
    mapping: SharedMapping,
    data_offset: usize,
    data_size: usize,
}

/// System-wide watch of executable mappings, execs, forks and exits.
pub struct MmapWatch {
    buffers: Vec<CpuBuffer>,
}

fn online_cpus() -> Vec<i32> {
    // "0-3,5,7-8"
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|part| !part.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(first), Ok(last)) = (first.parse::<i32>(), last.parse::<i32>()) {
            cpus.extend(first..=last.min(first + 4096));
        }
    }
    if cpus.is_empty() {
        cpus.push(0);
    }
    cpus
}

impl MmapWatch {
    /// Opens one buffer per online CPU.
    pub fn open() -> io::Result<Self> {
        let page = page_size();
        let mut buffers = Vec::new();
        for cpu in online_cpus() {
            let attr = PerfEventAttr {
                kind: PERF_TYPE_SOFTWARE,
                size: size_of::<PerfEventAttr>() as u32,
                config: PERF_COUNT_SW_DUMMY,
                sample_type: PERF_SAMPLE_TID | PERF_SAMPLE_TIME,
                // `mmap` as well as `mmap2`: the kernel only generates mapping records at all
                // while some event asks for `mmap` (or `mmap_data`); `mmap2` picks the format.
                flags: ATTR_MMAP
                    | ATTR_MMAP2
                    | ATTR_COMM
                    | ATTR_COMM_EXEC
                    | ATTR_TASK
                    | ATTR_SAMPLE_ID_ALL
                    | ATTR_USE_CLOCKID,
                clockid: libc::CLOCK_MONOTONIC,
                ..Default::default()
            };
            // SAFETY: perf_event_open reads the attr we own; pid -1 with a cpu is system-wide.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_perf_event_open,
                    &attr as *const PerfEventAttr,
                    -1 as libc::pid_t,
                    cpu,
                    -1 as libc::c_int,
                    PERF_FLAG_FD_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a fresh descriptor owned by nobody else.
            let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            let len = page * (1 + DATA_PAGES);
            // Read-write, so that we can tell the kernel how far we have read.
            let mapping = SharedMapping::new(fd.as_fd(), len)?;
            let mut buffer = CpuBuffer {
                _fd: fd,
                mapping,
                data_offset: page,
                data_size: page * DATA_PAGES,
            };
            // Kernels that fill data_offset/data_size say where the data area is.
            let (offset, size) = (
                buffer.header_u64(1040) as usize,
                buffer.header_u64(1048) as usize,
            );
            if offset != 0 && size != 0 && offset.checked_add(size).is_some_and(|end| end <= len) {
                buffer.data_offset = offset;
                buffer.data_size = size;
            }
            buffers.push(buffer);
        }
        Ok(Self { buffers })
    }

    /// Hands every record written so far to `sink`, in time order across CPUs (a process that
    /// exec'd on one CPU may map its libraries on another).
    pub fn drain(&mut self, mut sink: impl FnMut(SpaceEvent)) {
        let mut events = Vec::new();
        for buffer in &mut self.buffers {
            buffer.drain(&mut |event| events.push(event));
        }
        events.sort_by_key(SpaceEvent::time_ns);
        events.into_iter().for_each(&mut sink);
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096).max(4096)
}

impl CpuBuffer {
    fn header(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: offsets 1024..1056 lie in the first (metadata) page of the mapping, 8-byte
        // aligned; the kernel and we access these words atomically.
        unsafe { &*self.mapping.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    fn header_u64(&self, offset: usize) -> u64 {
        self.header(offset).load(Ordering::Acquire)
    }

    /// Copies `out.len()` bytes starting at ring position `position`, wrapping around.
    fn copy_out(&self, position: u64, out: &mut [u8]) {
        let size = self.data_size;
        let start = (position % size as u64) as usize;
        let first = out.len().min(size - start);
        // SAFETY: both ranges lie inside the data area of the mapping (start < size, and the
        // second part starts at its beginning); the kernel does not write between tail and head.
        unsafe {
            let data = self.mapping.as_ptr().add(self.data_offset);
            std::ptr::copy_nonoverlapping(data.add(start), out.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(data, out.as_mut_ptr().add(first), out.len() - first);
        }
    }

    fn drain(&mut self, sink: &mut impl FnMut(SpaceEvent)) {
        const DATA_HEAD: usize = 1024;
        const DATA_TAIL: usize = 1032;
        let head = self.header_u64(DATA_HEAD);
        let mut tail = self.header(DATA_TAIL).load(Ordering::Relaxed);
        let mut record = Vec::new();
        while tail < head {
            let mut header = [0u8; 8];
            self.copy_out(tail, &mut header);
            let size = u16::from_ne_bytes([header[6], header[7]]) as usize;
            if size < 8 || size as u64 > head - tail || size > self.data_size {
                // A record that does not fit: skip everything unread rather than misparse.
                sink(SpaceEvent::Lost { count: 1 });
                tail = head;
                break;
            }
            record.resize(size, 0);
            self.copy_out(tail, &mut record);
            if let Some(event) = parse_record(&record) {
                sink(event);
            }
            tail += size as u64;
        }
        self.header(DATA_TAIL).store(tail, Ordering::Release);
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// The `time` of a record's `sample_id` trailer.
fn trailer_time(record: &[u8]) -> Option<u64> {
    u64_at(record, record.len().checked_sub(8)?)
}

/// Parses one record (header included); None for kinds that do not matter here.
pub fn parse_record(record: &[u8]) -> Option<SpaceEvent> {
    let kind = u32_at(record, 0)?;
    let misc = u16::from_ne_bytes(record.get(4..6)?.try_into().ok()?);
    let body = 8;
    match kind {
        PERF_RECORD_MMAP2 => {
            let pid = u32_at(record, body)?;
            let start = u64_at(record, body + 8)?;
            let len = u64_at(record, body + 16)?;
            let offset = u64_at(record, body + 24)?;
            let (dev, inode) = if misc & PERF_RECORD_MISC_MMAP_BUILD_ID != 0 {
                ((0, 0), 0)
            } else {
                (
                    (u32_at(record, body + 32)?, u32_at(record, body + 36)?),
                    u64_at(record, body + 40)?,
                )
            };
            let prot = u32_at(record, body + 56)?;
            let name_start = body + 64;
            let name_end = record.len().checked_sub(SAMPLE_ID_LEN)?;
            let name = record.get(name_start..name_end)?;
            let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
            Some(SpaceEvent::Map {
                pid,
                start,
                len,
                offset,
                dev,
                inode,
                prot,
                path: PathBuf::from(OsStr::from_bytes(name)),
                time_ns: trailer_time(record)?,
            })
        }
        PERF_RECORD_COMM if misc & PERF_RECORD_MISC_COMM_EXEC != 0 => Some(SpaceEvent::Exec {
            pid: u32_at(record, body)?,
            time_ns: trailer_time(record)?,
        }),
        PERF_RECORD_FORK => {
            let (pid, parent, tid) = (
                u32_at(record, body)?,
                u32_at(record, body + 4)?,
                u32_at(record, body + 8)?,
            );
            // A new thread is a fork record too, with the parent's pid.
            (pid != parent && pid == tid).then(|| SpaceEvent::Fork {
                pid,
                parent,
                time_ns: u64_at(record, body + 16).unwrap_or(0),
            })
        }
        PERF_RECORD_EXIT => {
            let (pid, tid) = (u32_at(record, body)?, u32_at(record, body + 8)?);
            (pid == tid).then(|| SpaceEvent::Exit {
                pid,
                time_ns: u64_at(record, body + 16).unwrap_or(0),
            })
        }
        PERF_RECORD_LOST => Some(SpaceEvent::Lost {
            count: u64_at(record, body + 8)?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u32, misc: u16, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&misc.to_ne_bytes());
        out.extend_from_slice(&((8 + body.len()) as u16).to_ne_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn parses_mmap2_exec_fork_exit() {
        let mut body = Vec::new();
        for w in [42u32, 43] {
            body.extend_from_slice(&w.to_ne_bytes());
        }
        for w in [0x7f00_0000_1000u64, 0x2000, 0x1000] {
            body.extend_from_slice(&w.to_ne_bytes());
        }
        for w in [254u32, 1] {
            body.extend_from_slice(&w.to_ne_bytes());
        }
        body.extend_from_slice(&77u64.to_ne_bytes()); // ino
        body.extend_from_slice(&0u64.to_ne_bytes()); // ino generation
        body.extend_from_slice(&5u32.to_ne_bytes()); // prot
        body.extend_from_slice(&2u32.to_ne_bytes()); // flags
        body.extend_from_slice(b"/usr/lib/libc.so.6\0\0\0\0\0\0");
        body.extend_from_slice(&[42, 0, 0, 0, 43, 0, 0, 0]); // sample_id pid, tid
        body.extend_from_slice(&999u64.to_ne_bytes()); // time
        let parsed = parse_record(&record(PERF_RECORD_MMAP2, 0, &body)).unwrap();
        assert_eq!(
            parsed,
            SpaceEvent::Map {
                pid: 42,
                start: 0x7f00_0000_1000,
                len: 0x2000,
                offset: 0x1000,
                dev: (254, 1),
                inode: 77,
                prot: 5,
                path: "/usr/lib/libc.so.6".into(),
                time_ns: 999,
            }
        );
        // Every truncation is rejected, never a panic.
        let full = record(PERF_RECORD_MMAP2, 0, &body);
        for len in 0..full.len() {
            let _ = parse_record(&full[..len]);
        }

        let mut comm = Vec::new();
        comm.extend_from_slice(&[7, 0, 0, 0, 7, 0, 0, 0]);
        comm.extend_from_slice(b"sh\0\0\0\0\0\0");
        comm.extend_from_slice(&[7, 0, 0, 0, 7, 0, 0, 0]);
        comm.extend_from_slice(&5u64.to_ne_bytes());
        assert_eq!(
            parse_record(&record(PERF_RECORD_COMM, PERF_RECORD_MISC_COMM_EXEC, &comm)),
            Some(SpaceEvent::Exec { pid: 7, time_ns: 5 })
        );
        assert_eq!(parse_record(&record(PERF_RECORD_COMM, 0, &comm)), None);

        let task = |pid: u32, ppid: u32, tid: u32| {
            let mut body = Vec::new();
            for w in [pid, ppid, tid, ppid] {
                body.extend_from_slice(&w.to_ne_bytes());
            }
            body.extend_from_slice(&11u64.to_ne_bytes());
            body
        };
        assert_eq!(
            parse_record(&record(PERF_RECORD_FORK, 0, &task(9, 8, 9))),
            Some(SpaceEvent::Fork {
                pid: 9,
                parent: 8,
                time_ns: 11
            })
        );
        assert_eq!(
            parse_record(&record(PERF_RECORD_FORK, 0, &task(8, 8, 10))),
            None,
            "a thread"
        );
        assert_eq!(
            parse_record(&record(PERF_RECORD_EXIT, 0, &task(9, 8, 9))),
            Some(SpaceEvent::Exit {
                pid: 9,
                time_ns: 11
            })
        );
    }

    #[test]
    fn sees_a_child_map_its_libraries() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let mut watch = MmapWatch::open().unwrap();
        let child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = child.id();
        let _ = child.wait_with_output();
        let mut seen = Vec::new();
        watch.drain(|event| seen.push(event));
        assert!(
            seen.iter()
                .any(|e| matches!(e, SpaceEvent::Exec { pid: p, .. } if *p == pid)),
            "{seen:#?}"
        );
        assert!(
            seen.iter().any(|e| matches!(e, SpaceEvent::Map { pid: p, path, .. } if *p == pid && path.ends_with("true"))),
            "{seen:#?}"
        );
        assert!(
            seen.iter()
                .any(|e| matches!(e, SpaceEvent::Exit { pid: p, .. } if *p == pid))
        );
    }
}
