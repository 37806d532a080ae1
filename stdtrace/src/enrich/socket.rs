//! A socket's other end, and how full it is: the receiving process was found with the holders
//! of the peer socket; its queue and limits come from the kernel's `struct sock` (through the
//! [`Inspector`]) and the socket diagnostics, never from opening or joining the socket.

use crate::{
    enrich::Inspector,
    process::socket,
    report::record::{Peer, SocketInfo, SocketPeer},
};

/// Adds the writer's send buffer and its peer's receive queue to `info`, the socket behind fd
/// `fd` of `pid`; `receivers` hold the peer socket.
pub fn fill(
    info: &mut SocketInfo,
    pid: u32,
    fd: i32,
    receivers: &[Peer],
    inspector: &mut dyn Inspector,
) {
    if let Some(own) = inspector.socket_state(pid, fd) {
        info.send_buffer = Some(u64::from(own.sndbuf));
    }
    let Some(inode) = info.peer_inode else {
        return;
    };
    let datagrams = info.socket_type.as_deref() == Some("dgram") || info.family.starts_with("udp");
    let mut peer = SocketPeer {
        inode,
        ..SocketPeer::default()
    };
    if let Some(receiver) = receivers.first()
        && let Some(&peer_fd) = receiver.fds.first()
    {
        if let Some(state) = inspector.socket_state(receiver.pid, peer_fd) {
            peer.receive_memory = Some(u64::from(state.rmem_alloc));
            peer.receive_buffer = Some(u64::from(state.rcvbuf));
            if datagrams {
                peer.receive_datagrams = Some(u64::from(state.receive_queued));
                if info.family == "unix" {
                    peer.max_datagrams = Some(u64::from(state.max_ack_backlog));
                }
            }
        }
        let other = socket::describe(receiver.pid, inode);
        // A unix socket's other end is where it sends: its name (`/dev/log`).
        if info.family == "unix" && info.remote.is_none() {
            info.remote = other.as_ref().and_then(|other| other.local.clone());
        }
        // A datagram socket's diagnostics give the first datagram's length only.
        if !datagrams {
            peer.receive_queue = other.and_then(|other| other.receive_queue);
        }
    }
    info.peer = Some(peer);
}

#[cfg(test)]
mod tests {
    use stdtrace_common::SocketState;

    use super::*;
    use crate::enrich::inspector::fake::FakeInspector;

    #[test]
    fn a_full_datagram_queue_against_its_limit() {
        let mut info = SocketInfo {
            family: "unix".into(),
            socket_type: Some("dgram".into()),
            peer_inode: Some(77),
            ..SocketInfo::default()
        };
        let mut inspector = FakeInspector {
            socket: Some(SocketState {
                valid: 1,
                receive_queued: 11,
                max_ack_backlog: 10,
                rcvbuf: 212_992,
                sndbuf: 212_992,
                rmem_alloc: 11 * 768,
                ..SocketState::default()
            }),
            ..FakeInspector::default()
        };
        let receiver = Peer {
            pid: 9,
            comm: "rsyslogd".into(),
            fds: vec![3],
            activity: None,
            container: None,
            runtime: None,
            blocked_write: None,
        };
        fill(&mut info, 8, 4, &[receiver], &mut inspector);
        assert_eq!(inspector.asked_socket, vec![(8, 4), (9, 3)]);
        assert_eq!(info.send_buffer, Some(212_992));
        let peer = info.peer.unwrap();
        assert_eq!(peer.inode, 77);
        assert_eq!(
            (peer.receive_datagrams, peer.max_datagrams),
            (Some(11), Some(10))
        );
        assert_eq!(peer.receive_queue, None);
    }
}
