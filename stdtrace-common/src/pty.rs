//! ptys: where the kernel keeps a pty's buffers (offsets read from BTF by userspace and passed
//! to the inspection program in a map), and what that program read of one pty.
//!
//! A write on a pty slave goes through the slave's line discipline (output processing), then
//! `pty_write` queues it in the flip buffers of the *master's* port (`tty_port.buf`, a chain of
//! `tty_buffer`s), from which a worker moves it into the master's line discipline
//! (`n_tty_data.read_buf`, 4096 bytes), from which a `read` on the master takes it. The slave's
//! writer waits when the flip buffers' memory (`mem_used`) reaches their limit (`mem_limit`).

/// `DEVPTS_SUPER_MAGIC`: a dentry on a devpts file system (`/dev/pts/N`).
pub const DEVPTS_SUPER_MAGIC: u64 = 0x1cd1;
/// `N_TTY`: the default line discipline, whose `disc_data` is a `struct n_tty_data`.
pub const N_TTY: i32 = 0;
/// `N_TTY_BUF_SIZE`: the size of `n_tty_data.read_buf`.
pub const N_TTY_BUF_SIZE: u32 = 4096;
/// Bits of `tty_struct.flags`.
pub mod tty_flags {
    /// `TTY_IO_ERROR`: reads and writes fail with EIO.
    pub const IO_ERROR: u64 = 1 << 1;
    /// `TTY_OTHER_CLOSED`: the other side of the pty pair was closed (the slave's flag when the
    /// master's last file closed).
    pub const OTHER_CLOSED: u64 = 1 << 2;
    /// `TTY_HUPPED`: hung up.
    pub const HUPPED: u64 = 1 << 18;
}

/// Offsets of the tty structs' members, from the running kernel's BTF. Every field is a byte
/// offset into the struct its doc comment names.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TtyLayout {
    /// 1 when the offsets below were found in BTF.
    pub valid: u32,
    /// `file.f_path.dentry`.
    pub file_dentry: u32,
    /// `dentry.d_fsdata`: for a devpts dentry, the slave's `tty_struct`.
    pub dentry_fsdata: u32,
    /// `dentry.d_sb`.
    pub dentry_sb: u32,
    /// `super_block.s_magic`.
    pub super_block_magic: u32,
    /// `tty_struct.index`: the pty's number.
    pub tty_index: u32,
    /// `tty_struct.link`: the other side of the pair.
    pub tty_link: u32,
    /// `tty_struct.port`.
    pub tty_port: u32,
    /// `tty_struct.ldisc`.
    pub tty_ldisc: u32,
    /// `tty_struct.disc_data`.
    pub tty_disc_data: u32,
    /// `tty_struct.flags`.
    pub tty_flags: u32,
    /// `tty_struct.count`: open files of this side.
    pub tty_count: u32,
    /// `tty_ldisc.ops`.
    pub ldisc_ops: u32,
    /// `tty_ldisc_ops.num`.
    pub ldisc_ops_num: u32,
    /// `tty_port.buf.head`.
    pub port_buf_head: u32,
    /// `tty_port.buf.mem_used`.
    pub port_mem_used: u32,
    /// `tty_port.buf.mem_limit`.
    pub port_mem_limit: u32,
    /// `tty_buffer.next`.
    pub buffer_next: u32,
    /// `tty_buffer.commit`.
    pub buffer_commit: u32,
    /// `tty_buffer.read`.
    pub buffer_read: u32,
    /// `n_tty_data.read_head`.
    pub n_tty_read_head: u32,
    /// `n_tty_data.read_tail`.
    pub n_tty_read_tail: u32,
}

/// What the inspection program read of one pty, from its slave's `tty_struct` and the master's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PtyState {
    /// 1 when the fields below were read.
    pub valid: u32,
    /// 1 when the master's line discipline is `N_TTY` and its buffer was read.
    pub ldisc_valid: u32,
    /// Bytes in the flip buffers toward the master: `commit - read` summed over the chain.
    pub flip_queued: u64,
    /// Bytes in the master's line discipline buffer: `read_head - read_tail`.
    pub ldisc_queued: u64,
    /// `mem_used` of the master port's flip buffers: bytes of buffers allocated.
    pub mem_used: u32,
    /// `mem_limit`: the slave's writer waits when `mem_used` reaches it.
    pub mem_limit: u32,
    /// Flip buffers walked.
    pub buffers: u32,
    /// 1 when the chain was longer than the program walks: `flip_queued` is a lower bound.
    pub partial: u32,
    /// Open files of the master side (`count` of the master's `tty_struct`).
    pub master_count: u32,
    /// The pty's number.
    pub index: u32,
    /// The slave's `tty_struct.flags`.
    pub slave_flags: u64,
    /// The master's `tty_struct.flags`.
    pub master_flags: u64,
}

const _: () = {
    assert!(core::mem::size_of::<TtyLayout>() == 22 * 4);
    assert!(core::mem::size_of::<PtyState>() == 64);
};

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, made only of integers, with no implicit padding (checked by the
    // size assertions above): every bit pattern is valid.
    unsafe impl aya::Pod for super::TtyLayout {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PtyState {}
}
