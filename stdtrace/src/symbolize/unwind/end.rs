//! Why a walk stopped: a complete stack, or the reason it is incomplete.

use std::fmt;

use super::{MAX_DEPTH, snapshot::register_name};

/// Why a stack walk stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnwindEnd {
    /// The last frame is the outermost one: its CFI leaves the return address undefined (as
    /// `_start` and thread entry points do), or the return address is 0.
    Outermost,
    /// A value the walk needed lies outside the stack copy.
    StackExhausted { address: u64 },
    /// No CFI covers `address` and the frame pointer is unknown, so the frame could not be
    /// unwound.
    NoUnwindInfo { address: u64 },
    /// Unwinding the frame at `address` needs a register the snapshot does not have (most
    /// often rbp, for code that keeps a frame pointer).
    RegisterUnknown { register: u16, address: u64 },
    /// `address` is not in any mapping of the process.
    NotMapped { address: u64 },
    /// The walk reached [`MAX_DEPTH`] frames.
    DepthLimit,
    /// The frame at `address` would not move the stack pointer up: a corrupt stack or loop.
    NotProgressing { address: u64 },
    /// The CFI covering `address` could not be used.
    BadUnwindInfo { address: u64, reason: String },
    /// The registers have no instruction pointer to start from.
    NoInstructionPointer,
    /// The frame at `address`, in `function`, switched stacks: Go's runtime moves between a
    /// goroutine's stack and its thread's system stack (`runtime.asmcgocall` for a cgo call,
    /// `runtime.systemstack`, `runtime.mcall`, ...), and where the callers' frames are is in
    /// the runtime's memory, not in the stack copy.
    StackSwitch { address: u64, function: String },
}

impl UnwindEnd {
    /// Whether the walk reached the outermost frame, i.e. the stack is complete.
    pub fn is_complete(&self) -> bool {
        matches!(self, UnwindEnd::Outermost)
    }

    /// Why the stack is incomplete, or `None` when the walk reached the outermost frame.
    pub fn describe_if_early(&self) -> Option<String> {
        (!self.is_complete()).then(|| self.to_string())
    }
}

impl fmt::Display for UnwindEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnwindEnd::Outermost => write!(f, "reached the outermost frame"),
            UnwindEnd::StackExhausted { address } => {
                write!(f, "stack copy exhausted (needed {address:#x})")
            }
            UnwindEnd::NoUnwindInfo { address } => {
                write!(f, "no CFI and no frame pointer at {address:#x}")
            }
            UnwindEnd::RegisterUnknown { register, address } => {
                write!(
                    f,
                    "register {} unknown at {address:#x}",
                    register_name(*register)
                )
            }
            UnwindEnd::NotMapped { address } => write!(f, "{address:#x} is not mapped"),
            UnwindEnd::DepthLimit => write!(f, "depth limit of {MAX_DEPTH} frames reached"),
            UnwindEnd::NotProgressing { address } => {
                write!(f, "stack pointer did not grow at {address:#x}")
            }
            UnwindEnd::BadUnwindInfo { address, reason } => {
                write!(f, "unusable CFI at {address:#x}: {reason}")
            }
            UnwindEnd::NoInstructionPointer => write!(f, "no instruction pointer"),
            UnwindEnd::StackSwitch { address, function } => write!(
                f,
                "{function} at {address:#x} switched stacks: its callers are on another stack"
            ),
        }
    }
}
