//! What the table says about one function.

/// Function flags (`funcFlag`, Go 1.17+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FuncFlags(pub u8);

impl FuncFlags {
    /// The function is at the top (outermost end) of its stack: unwinding stops here.
    pub const TOP_FRAME: u8 = 1;
    /// The function writes SP other than by constant adjustments: unwinding past it is unsafe.
    pub const SP_WRITE: u8 = 2;
    /// The function is written in assembly.
    pub const ASM: u8 = 4;

    pub fn top_frame(self) -> bool {
        self.0 & Self::TOP_FRAME != 0
    }
    pub fn sp_write(self) -> bool {
        self.0 & Self::SP_WRITE != 0
    }
    pub fn asm(self) -> bool {
        self.0 & Self::ASM != 0
    }
}

/// What a runtime function means to stack unwinding. Derived from the function's name, the
/// way the linker derives the `funcID` (whose numbering changes between Go versions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FuncKind {
    Normal,
    /// `runtime.goexit`: the outermost frame of every goroutine.
    Goexit,
    /// `runtime.mstart`: the outermost frame of a thread's g0.
    Mstart,
    /// `runtime.rt0_go`: the outermost frame of the main thread.
    Rt0Go,
    /// `runtime.main`: the main goroutine's Go entry.
    RuntimeMain,
    /// Switches to g0's stack and back (the frame below is on another stack).
    Systemstack,
    SystemstackSwitch,
    Mcall,
    Morestack,
    Asmcgocall,
    Cgocallback,
    Gogo,
    Sigpanic,
    Gopanic,
    AsyncPreempt,
}

impl FuncKind {
    /// The kind of the function with this name.
    pub fn from_name(name: &str) -> FuncKind {
        match name {
            "runtime.goexit" => FuncKind::Goexit,
            "runtime.mstart" => FuncKind::Mstart,
            "runtime.rt0_go" => FuncKind::Rt0Go,
            "runtime.main" => FuncKind::RuntimeMain,
            "runtime.systemstack" => FuncKind::Systemstack,
            "runtime.systemstack_switch" => FuncKind::SystemstackSwitch,
            "runtime.mcall" => FuncKind::Mcall,
            "runtime.morestack" => FuncKind::Morestack,
            "runtime.asmcgocall" => FuncKind::Asmcgocall,
            "runtime.cgocallback" => FuncKind::Cgocallback,
            "runtime.gogo" => FuncKind::Gogo,
            "runtime.sigpanic" => FuncKind::Sigpanic,
            "runtime.gopanic" => FuncKind::Gopanic,
            "runtime.asyncPreempt" => FuncKind::AsyncPreempt,
            _ => FuncKind::Normal,
        }
    }
}

/// One Go function, as its record in the table describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Func {
    pub name: String,
    pub entry: u64,
    /// The next function's entry (or the end of the text).
    pub end: u64,
    /// The raw `funcID` (its meaning depends on the Go version; see [`Func::kind`]).
    pub func_id: u8,
    pub flags: FuncFlags,
    pub kind: FuncKind,
    /// The line of the `func` keyword (Go 1.20+).
    pub start_line: Option<i32>,
    pub(super) record: usize,
    pub(super) pcsp: u32,
    pub(super) pcfile: u32,
    pub(super) pcln: u32,
    pub(super) npcdata: u32,
    pub(super) nfuncdata: u8,
    pub(super) cu_offset: u32,
}

impl Func {
    /// Whether unwinding ends at this function (a complete stack): `runtime.goexit`,
    /// `runtime.mstart`, `runtime.rt0_go` and the like.
    pub fn is_outermost(&self) -> bool {
        self.flags.top_frame()
            || matches!(
                self.kind,
                FuncKind::Goexit | FuncKind::Mstart | FuncKind::Rt0Go
            )
    }

    /// Whether unwinding cannot safely continue past this function (it sets SP itself).
    pub fn writes_sp(&self) -> bool {
        self.flags.sp_write()
    }
}
