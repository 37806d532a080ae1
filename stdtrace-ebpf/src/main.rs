//! stdtrace's kernel programs.
//!
//! The output syscalls' exit tracepoints (write and send families) filter in the kernel (return value, errno, target set)
//! before anything is reserved in the ring buffer; the scheduler's fork/exec/exit raw
//! tracepoints keep the target set in step with the processes a traced command forks.
#![no_std]
#![no_main]

mod blocked;
mod callsite;
mod config;
mod inspect;
mod kernel;
mod lifecycle;
mod maps;
mod parked;
mod readers;
mod sigpipe;
mod write_exit;

use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use stdtrace_common::syscall;

#[tracepoint]
pub fn sys_exit_write(ctx: TracePointContext) -> u32 {
    write_exit::on_write_exit(&ctx, syscall::WRITE);
    0
}

#[tracepoint]
pub fn sys_exit_writev(ctx: TracePointContext) -> u32 {
    write_exit::on_write_exit(&ctx, syscall::WRITEV);
    0
}

#[tracepoint]
pub fn sys_exit_pwrite64(ctx: TracePointContext) -> u32 {
    write_exit::on_write_exit(&ctx, syscall::PWRITE64);
    0
}

#[tracepoint]
pub fn sys_exit_pwritev(ctx: TracePointContext) -> u32 {
    write_exit::on_write_exit(&ctx, syscall::PWRITEV);
    0
}

#[tracepoint]
pub fn sys_exit_pwritev2(ctx: TracePointContext) -> u32 {
    write_exit::on_write_exit(&ctx, syscall::PWRITEV2);
    0
}

#[tracepoint]
pub fn sys_exit_sendto(ctx: TracePointContext) -> u32 {
    write_exit::on_write_exit(&ctx, syscall::SENDTO);
    0
}

#[tracepoint]
pub fn sys_exit_sendmsg(ctx: TracePointContext) -> u32 {
    write_exit::on_write_exit(&ctx, syscall::SENDMSG);
    0
}

#[tracepoint]
pub fn sys_exit_sendmmsg(ctx: TracePointContext) -> u32 {
    write_exit::on_write_exit(&ctx, syscall::SENDMMSG);
    0
}

/// The write and send families on one hook for every syscall (`--hook raw`): cheaper per write than the
/// per-syscall tracepoints, dearer on every other syscall.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn raw_sys_exit(ctx: RawTracePointContext) -> i32 {
    write_exit::on_raw_sys_exit(&ctx);
    0
}

/// Never attached by stdtrace: the benchmark's floor, a program on `sys_exit_write` (and
/// `sys_exit_sendto`) that only checks the return value.
#[tracepoint]
pub fn floor_exit_write(ctx: TracePointContext) -> u32 {
    let ret = write_exit::ret_of(&ctx);
    u32::from(ret == -11 || ret == -32)
}

/// Never attached by stdtrace: the floor on the raw `sys_exit` hook, which checks the syscall
/// number and the return value.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn floor_raw_sys_exit(ctx: RawTracePointContext) -> i32 {
    let regs: u64 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    let nr = kernel::read::<u64>(regs, config::layout().pt_regs_orig_ax).unwrap_or(0);
    i32::from((nr == 1 || nr == 44) && (ret == -11 || ret == -32))
}

#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    readers::on_close(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "signal_generate")]
pub fn signal_generate(ctx: RawTracePointContext) -> i32 {
    sigpipe::on_generate(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "signal_deliver")]
pub fn signal_deliver(ctx: RawTracePointContext) -> i32 {
    sigpipe::on_deliver(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    lifecycle::on_fork(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(ctx: RawTracePointContext) -> i32 {
    lifecycle::on_exec(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_switch(ctx: RawTracePointContext) -> i32 {
    blocked::on_switch(&ctx);
    0
}

/// Never attached: run by userspace (`BPF_PROG_TEST_RUN`) to read a pipe's state.
#[raw_tracepoint(tracepoint = "stdtrace_inspect_pipe")]
pub fn inspect_pipe(ctx: RawTracePointContext) -> i32 {
    inspect::inspect_pipe(&ctx);
    0
}

/// Never attached: run by userspace (`BPF_PROG_TEST_RUN`) to read a socket's queues.
#[raw_tracepoint(tracepoint = "stdtrace_inspect_socket")]
pub fn inspect_socket(ctx: RawTracePointContext) -> i32 {
    inspect::inspect_socket(&ctx);
    0
}

/// Never attached: run by userspace (`BPF_PROG_TEST_RUN`) to read a pty's buffers.
#[raw_tracepoint(tracepoint = "stdtrace_inspect_pty")]
pub fn inspect_pty(ctx: RawTracePointContext) -> i32 {
    inspect::inspect_pty(&ctx);
    0
}

/// Never attached: run by userspace (`BPF_PROG_TEST_RUN`) to read a blocked thread's state.
#[raw_tracepoint(tracepoint = "stdtrace_inspect_thread")]
pub fn inspect_thread(ctx: RawTracePointContext) -> i32 {
    inspect::inspect_thread(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(ctx: RawTracePointContext) -> i32 {
    lifecycle::on_exit(&ctx);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: BPF programs cannot panic; the verifier rejects any path that would reach here.
    unsafe { core::hint::unreachable_unchecked() }
}
