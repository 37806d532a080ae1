//! How much of a task an event copies: its command name, its saved user registers, the top
//! of its user stack.

/// Length of a task's `comm` (command name), including the trailing NUL.
pub const TASK_COMM_LEN: usize = 16;

/// Size of one page of user memory, the unit in which the user stack is copied.
pub const PAGE_SIZE: usize = 4096;

/// How many pages of the user stack an event carries, starting at the page that holds the
/// stack pointer. Userspace unwinds with `.eh_frame` CFI inside this copy, so it bounds how deep
/// a stack can be reconstructed (12 to 16 KiB above the stack pointer).
pub const STACK_PAGES: usize = 4;

/// Bytes of user stack an event can carry.
pub const STACK_COPY_BYTES: usize = STACK_PAGES * PAGE_SIZE;

/// Room for the task's saved user registers (`struct pt_regs`, 168 bytes on x86_64).
pub const REGS_COPY_WORDS: usize = 32;
