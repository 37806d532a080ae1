//! Ring-buffer bytes to owned events.
//!
//! The bytes come from our own programs, but they are still checked: a short or unknown record
//! is a [`DecodeError`], not undefined behaviour.

use stdtrace_common::{
    ProcessExec, ProcessExit, REGS_COPY_WORDS, SigpipeRecord, WriteRecord, blocked_state, go_flags,
    record_kind, write_flags,
};

use super::*;
use crate::{kernel::btf::RegsLayout, process::status::comm_from_bytes};

/// A record that could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is too short")]
    Short(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("unknown syscall {0}")]
    UnknownSyscall(u32),
}

/// Reads a `T` from the start of `bytes`, if there are enough.
fn read_record<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: the length was checked; `T` is one of the `#[repr(C)]` plain-integer record
    // types of stdtrace-common, valid for any bit pattern; read_unaligned makes no alignment
    // assumption.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8], regs_layout: &RegsLayout) -> Result<Record, DecodeError> {
    let kind: u32 = read_record(bytes)?;
    match kind {
        record_kind::FAILED_WRITE | record_kind::BLOCKED_WRITE => {
            let raw: Box<WriteRecord> = Box::new(read_record(bytes)?);
            decode_write(&raw, regs_layout).map(|event| Record::Write(Box::new(event)))
        }
        record_kind::PROCESS_EXEC => {
            let raw: ProcessExec = read_record(bytes)?;
            Ok(Record::Exec {
                pid: raw.tgid,
                ts_ns: raw.ts_ns,
                comm: comm_from_bytes(&raw.comm),
                binary: BinaryId::known(raw.dev, raw.ino),
            })
        }
        record_kind::PROCESS_EXIT => {
            let raw: ProcessExit = read_record(bytes)?;
            Ok(Record::Exit {
                pid: raw.tgid,
                ts_ns: raw.ts_ns,
                exit_code: raw.exit_code,
                binary: BinaryId::known(raw.dev, raw.ino),
            })
        }
        record_kind::SIGPIPE_GENERATED | record_kind::SIGPIPE_DELIVERED => {
            let raw: SigpipeRecord = read_record(bytes)?;
            Ok(Record::Sigpipe(sigpipe_event(&raw)))
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// A SIGPIPE record, owned (from the ring buffer, or kept by the kernel when the ring buffer
/// had no room for it).
pub fn sigpipe_event(raw: &SigpipeRecord) -> SigpipeEvent {
    SigpipeEvent {
        delivered: raw.kind == record_kind::SIGPIPE_DELIVERED,
        pid: raw.tgid,
        tid: raw.tid,
        sender_pid: raw.sender_tgid,
        sender_tid: raw.sender_tid,
        sender_comm: comm_from_bytes(&raw.sender_comm),
        code: raw.code,
        result: raw.result,
        blocked: raw.blocked != 0,
        from_write: raw.from_write != 0,
        fd: (raw.from_write != 0).then_some(raw.fd),
        disposition: Disposition::from_handler(raw.handler),
        ts_ns: raw.ts_ns,
    }
}

fn decode_write(raw: &WriteRecord, regs_layout: &RegsLayout) -> Result<WriteEvent, DecodeError> {
    let syscall =
        WriteSyscall::from_raw(raw.syscall).ok_or(DecodeError::UnknownSyscall(raw.syscall))?;
    let count = if raw.flags & write_flags::COUNT_UNKNOWN != 0
        || raw.flags & write_flags::REGS_VALID == 0
    {
        ByteCount::Unknown
    } else if raw.flags & write_flags::COUNT_PARTIAL != 0 {
        ByteCount::AtLeast(raw.count)
    } else {
        ByteCount::Exact(raw.count)
    };
    let registers = (raw.flags & write_flags::REGS_VALID != 0)
        .then(|| saved_registers(&raw.regs, raw.regs_len, regs_layout));
    let file = (raw.flags & write_flags::FILE_VALID != 0).then(|| {
        FileIdentity::from_kernel(&raw.file, raw.flags & write_flags::PIPE_ENDS_VALID != 0)
    });
    let stack_len = (raw.stack_len as usize).min(raw.stack.len());
    let outcome = if raw.kind == record_kind::BLOCKED_WRITE {
        WriteOutcome::Blocked {
            blocked_ns: raw.blocked_ns,
            resumed: matches!(
                raw.blocked,
                blocked_state::RESUMED | blocked_state::RESUMED_PARKED
            ),
        }
    } else {
        WriteOutcome::Failed {
            errno: raw.ret.unsigned_abs().min(u32::MAX as u64) as u32,
        }
    };
    Ok(WriteEvent {
        ts_ns: raw.ts_ns,
        pid: raw.tgid,
        tid: raw.tid,
        comm: comm_from_bytes(&raw.comm),
        syscall,
        fd: raw.fd as i32,
        count,
        outcome,
        file,
        registers,
        stack: StackSnapshot {
            base: raw.stack_base,
            bytes: raw.stack[..stack_len].to_vec(),
        },
        goroutine: (raw.go.flags & go_flags::GO_PROCESS != 0).then_some(raw.go),
        running_g: (raw.flags & write_flags::G_SNAPSHOT != 0).then(|| RunningG {
            address: raw.go.g,
            stack_lo: raw.go.stack_lo,
            stack_hi: raw.go.stack_hi,
            bytes: raw.g_snapshot.to_vec(),
        }),
        nosignal: raw.flags & write_flags::NOSIGNAL != 0,
        image: (raw.image.ino != 0).then_some(raw.image),
    })
}

/// Picks the registers out of the raw `struct pt_regs` copy.
pub fn saved_registers(
    words: &[u64; REGS_COPY_WORDS],
    len: u32,
    layout: &RegsLayout,
) -> SavedRegisters {
    let mut registers = SavedRegisters::default();
    for (slot, offset) in registers.0.iter_mut().zip(layout.offsets) {
        let index = offset as usize / 8;
        // The layout comes from BTF, which may be a file of the user's: an offset at the top
        // of the range is out of the copy, not an overflow (as fuzzing found).
        if offset % 8 == 0
            && offset.checked_add(8).is_some_and(|end| end <= len)
            && index < words.len()
        {
            *slot = Some(words[index]);
        }
    }
    registers
}

/// An all-zero failed-write record, for tests.
#[cfg(test)]
pub(crate) fn raw_failed_write() -> Box<WriteRecord> {
    // SAFETY: WriteRecord is plain integers; all-zero is a valid value.
    let mut raw: Box<WriteRecord> = Box::new(unsafe { std::mem::zeroed() });
    raw.kind = record_kind::FAILED_WRITE;
    raw.file = stdtrace_common::OpenFile::default();
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `ring_event` fuzz target: a register layout with an offset near
    /// `u32::MAX`.
    #[test]
    fn register_offsets_past_the_copy_are_unknown_registers() {
        let layout = RegsLayout {
            offsets: [u32::MAX - 7; 17],
        };
        let registers = saved_registers(&[1; REGS_COPY_WORDS], u32::MAX, &layout);
        assert_eq!(registers, SavedRegisters::default());
    }

    fn bytes_of<T>(value: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain `#[repr(C)]` value with no padding.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    fn layout() -> RegsLayout {
        // struct pt_regs on x86_64: r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di orig_ax ip cs flags sp ss
        let at = |name: &str| {
            let order = [
                "r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx", "dx",
                "si", "di", "orig_ax", "ip", "cs", "flags", "sp", "ss",
            ];
            order.iter().position(|n| *n == name).unwrap() as u32 * 8
        };
        let names = [
            "ax", "dx", "cx", "bx", "si", "di", "bp", "sp", "r8", "r9", "r10", "r11", "r12", "r13",
            "r14", "r15", "ip",
        ];
        let mut offsets = [0; 17];
        for (slot, name) in offsets.iter_mut().zip(names) {
            *slot = at(name);
        }
        RegsLayout { offsets }
    }

    #[test]
    fn decodes_a_failed_write() {
        let mut raw = raw_failed_write();
        raw.syscall = syscall::WRITEV;
        raw.ts_ns = 42;
        raw.tgid = 100;
        raw.tid = 101;
        raw.comm[..6].copy_from_slice(b"writer");
        raw.fd = 4;
        raw.count = 10;
        raw.ret = -32;
        raw.flags = write_flags::REGS_VALID | write_flags::FILE_VALID | write_flags::COUNT_PARTIAL;
        raw.regs_len = 168;
        raw.regs[16] = 0x401000; // ip
        raw.regs[19] = 0x7ffd0010; // sp
        raw.file.mode = 0o010600;
        raw.file.ino = 555;
        raw.stack_base = 0x7ffd0000;
        raw.stack_len = 4096;
        raw.stack[16] = 0xaa;
        let record = decode(&bytes_of(&*raw), &layout()).unwrap();
        let Record::Write(event) = record else {
            panic!("{record:?}")
        };
        assert_eq!(event.pid, 100);
        assert_eq!(event.tid, 101);
        assert_eq!(event.comm, "writer");
        assert_eq!(event.syscall, WriteSyscall::Writev);
        assert_eq!(event.outcome, WriteOutcome::Failed { errno: 32 });
        assert_eq!(event.count, ByteCount::AtLeast(10));
        let registers = event.registers.unwrap();
        assert_eq!(registers.ip(), Some(0x401000));
        assert_eq!(registers.sp(), Some(0x7ffd0010));
        assert_eq!(event.file.unwrap().ino, 555);
        assert_eq!(event.stack.base, 0x7ffd0000);
        assert_eq!(event.stack.bytes.len(), 4096);
        assert_eq!(event.stack.bytes[16], 0xaa);
    }

    #[test]
    fn decodes_a_send_made_with_msg_nosignal() {
        let mut raw = raw_failed_write();
        raw.syscall = syscall::SENDMMSG;
        raw.ret = -32;
        raw.count = 65;
        raw.flags = write_flags::REGS_VALID | write_flags::NOSIGNAL;
        let Ok(Record::Write(event)) = decode(&bytes_of(&*raw), &layout()) else {
            panic!()
        };
        assert_eq!(event.syscall, WriteSyscall::Sendmmsg);
        assert_eq!(event.syscall.name(), "sendmmsg");
        assert_eq!(event.count, ByteCount::Exact(65));
        assert!(event.nosignal);
        raw.flags = write_flags::REGS_VALID;
        let Ok(Record::Write(event)) = decode(&bytes_of(&*raw), &layout()) else {
            panic!()
        };
        assert!(!event.nosignal);
    }

    #[test]
    fn bad_records_are_errors() {
        assert_eq!(decode(&[1, 0], &layout()), Err(DecodeError::Short(2)));
        assert_eq!(
            decode(&[9, 0, 0, 0, 0, 0, 0, 0], &layout()),
            Err(DecodeError::UnknownKind(9))
        );
        let mut raw = raw_failed_write();
        raw.syscall = 77;
        assert_eq!(
            decode(&bytes_of(&*raw), &layout()),
            Err(DecodeError::UnknownSyscall(77))
        );
        let bytes = bytes_of(&*raw_failed_write());
        assert!(matches!(
            decode(&bytes[..100], &layout()),
            Err(DecodeError::Short(100))
        ));
        // A claimed stack length beyond the copy is clamped.
        let mut raw = raw_failed_write();
        raw.stack_len = u32::MAX;
        let Ok(Record::Write(event)) = decode(&bytes_of(&*raw), &layout()) else {
            panic!()
        };
        assert_eq!(event.stack.bytes.len(), stdtrace_common::STACK_COPY_BYTES);
        assert_eq!(event.registers, None);
        assert_eq!(event.count, ByteCount::Unknown);
    }
}
