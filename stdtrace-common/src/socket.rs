//! Sockets: the state of one, read on demand from the kernel's `struct sock` without opening
//! or joining it.

/// The kernel's figures for one socket, read by the inspection program from its `struct sock`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketState {
    /// 1 when the fields below were read.
    pub valid: u32,
    /// `sk_receive_queue.qlen`: buffers queued to be read (datagrams, for a datagram socket).
    pub receive_queued: u32,
    /// `sk_max_ack_backlog`: for a unix datagram socket, the receive queue's limit in datagrams
    /// (`net.unix.max_dgram_qlen` when it was created); for a listener, its backlog.
    pub max_ack_backlog: u32,
    /// `sk_rcvbuf`: the receive buffer's size in bytes.
    pub rcvbuf: u32,
    /// `sk_sndbuf`: the send buffer's size in bytes.
    pub sndbuf: u32,
    /// `sk_wmem_queued`: bytes queued to send (TCP).
    pub wmem_queued: u32,
    /// `sk_wmem_alloc`: bytes of sent buffers not yet freed (a unix socket's in-flight data).
    pub wmem_alloc: u32,
    /// `sk_rmem_alloc`: bytes of received buffers, overhead included.
    pub rmem_alloc: u32,
}

const _: () = assert!(core::mem::size_of::<SocketState>() == 32);

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, made only of integers, with no implicit padding (checked by the
    // size assertion above): every bit pattern is valid.
    unsafe impl aya::Pod for super::SocketState {}
}
