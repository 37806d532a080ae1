//! Reading another process's memory through `/proc/PID/mem`: for a thread blocked in a system
//! call, its user stack is frozen, and reading it neither stops nor signals the process.

use std::{fs::File, os::unix::fs::FileExt};

use stdtrace_common::{PAGE_SIZE, STACK_PAGES};

use crate::events::StackSnapshot;

/// The top of a thread's user stack, as the kernel program copies it: from the page holding
/// `sp`, as many pages as can be read (up to the same bound).
pub fn read_stack(pid: u32, sp: u64) -> StackSnapshot {
    let base = sp & !(PAGE_SIZE as u64 - 1);
    let mut bytes = Vec::with_capacity(STACK_PAGES * PAGE_SIZE);
    if let Ok(mem) = File::open(crate::process::host::host().pid_path(pid, "mem")) {
        let mut page = vec![0u8; PAGE_SIZE];
        for index in 0..STACK_PAGES as u64 {
            match mem.read_exact_at(&mut page, base + index * PAGE_SIZE as u64) {
                Ok(()) => bytes.extend_from_slice(&page),
                // The first page that cannot be read ends the copy (the end of the mapping).
                Err(_) => break,
            }
        }
    }
    StackSnapshot { base, bytes }
}

/// Reads `len` bytes at `address` of process `pid`.
pub fn read(pid: u32, address: u64, len: usize) -> Option<Vec<u8>> {
    let mem = File::open(crate::process::host::host().pid_path(pid, "mem")).ok()?;
    let mut bytes = vec![0u8; len];
    mem.read_exact_at(&mut bytes, address).ok()?;
    Some(bytes)
}

/// A process's memory, opened once for many reads (a goroutine dump reads thousands of `g`s
/// and stacks: opening `/proc/PID/mem` for each would cost more than the reads).
pub struct ProcessMemory {
    mem: File,
}

impl ProcessMemory {
    pub fn open(pid: u32) -> std::io::Result<Self> {
        Ok(Self {
            mem: File::open(crate::process::host::host().pid_path(pid, "mem"))?,
        })
    }

    /// Reads `len` bytes at `address`.
    pub fn read(&self, address: u64, len: usize) -> Option<Vec<u8>> {
        let mut bytes = vec![0u8; len];
        self.mem.read_exact_at(&mut bytes, address).ok()?;
        Some(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_stack() {
        let marker = [0x5au8; 64];
        let sp = marker.as_ptr() as u64;
        let stack = read_stack(std::process::id(), sp);
        assert!(stack.bytes.len() >= PAGE_SIZE);
        let offset = (sp - stack.base) as usize;
        assert_eq!(&stack.bytes[offset..offset + 64], &marker[..]);
        assert_eq!(read(std::process::id(), sp, 4), Some(vec![0x5a; 4]));
        assert_eq!(read(std::process::id(), 8, 4), None);
        let memory = ProcessMemory::open(std::process::id()).unwrap();
        assert_eq!(memory.read(sp, 4), Some(vec![0x5a; 4]));
        assert_eq!(memory.read(8, 4), None);
    }
}
