//! The queue without root: a pipe nobody reads, a disk that is full (`/dev/full`).

use std::{
    io::{Read, Write},
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use super::{stdout::QueuedStdout, *};

fn pipe() -> (std::fs::File, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into the array we own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just created and are owned by nobody else.
    unsafe {
        use std::os::fd::FromRawFd;
        (
            std::fs::File::from_raw_fd(fds[0]),
            OwnedFd::from_raw_fd(fds[1]),
        )
    }
}

fn record(i: usize) -> Vec<u8> {
    format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(1000)).into_bytes()
}

#[test]
fn a_stalled_reader_drops_and_counts_and_never_blocks_the_writer() {
    let (mut read_end, write_end) = pipe();
    let stats = Arc::new(OutputStats::default());
    let mut out = QueuedStdout::start_on(write_end, &stats).unwrap();
    let sent = 5000;
    let started = Instant::now();
    for i in 0..sent {
        out.write_all(&record(i)).unwrap();
    }
    // 5 MB into a 64 KiB pipe nobody reads, and a 256 KiB queue: no waiting.
    assert!(started.elapsed() < Duration::from_secs(5));
    let dropped = stats.stdout_records_dropped.load(Ordering::Relaxed);
    assert!(dropped > 4000, "{dropped}");
    let queue = out.queue().clone();
    queue.wait_until(Instant::now() + Duration::from_secs(20));
    out.write_all(b"{\"type\":\"summary\"}\n").unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        read_end.read_to_string(&mut text).unwrap();
        text
    });
    drop(out);
    assert!(queue.close(None));
    let text = reader.join().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"{\"type\":\"summary\"}"));
    // Every record is either written whole or counted.
    assert_eq!(lines.len() as u64 - 1 + dropped, sent as u64);
    assert_eq!(
        stats.stdout_records_dropped.load(Ordering::Relaxed),
        dropped
    );
}

#[test]
fn a_full_disk_drops_every_record_and_counts_each() {
    let full: OwnedFd = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap()
        .into();
    let stats = Arc::new(OutputStats::default());
    let mut out = QueuedStdout::start_on(full, &stats).unwrap();
    for i in 0..300 {
        out.write_all(&record(i)).unwrap();
    }
    let queue = out.queue().clone();
    queue.wait_until(Instant::now() + Duration::from_secs(20));
    assert!(queue.sync());
    assert_eq!(stats.stdout_records_dropped.load(Ordering::Relaxed), 300);
    assert!(!queue.gone(), "a full disk is not a reader gone");
    assert!(queue.close(None));
}

#[test]
fn a_reader_gone_is_broken_pipe() {
    let (read_end, write_end) = pipe();
    drop(read_end);
    let stats = Arc::new(OutputStats::default());
    let mut out = QueuedStdout::start_on(write_end, &stats).unwrap();
    out.write_all(&record(0)).unwrap();
    let queue = out.queue().clone();
    queue.wait_until(Instant::now() + Duration::from_secs(20));
    assert!(queue.sync());
    assert_eq!(
        out.write_all(&record(1)).unwrap_err().kind(),
        std::io::ErrorKind::BrokenPipe
    );
}
