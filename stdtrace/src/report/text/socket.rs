//! A socket target in one line: where it goes, who receives there and what that process is
//! doing, and how full the queues are, e.g. `unix dgram /dev/log, receiver pid 7 (rsyslogd)
//! stopped, queue 11/10 datagrams`.

use super::{reader_activity, sanitize};

use crate::report::record::{FdTarget, SocketInfo};

/// `(unix stream, established, peer socket:[40214], 212992 bytes unsent)`: a socket without
/// a known other end.
pub(super) fn describe_socket(socket: &SocketInfo) -> String {
    let mut parts = vec![socket.family.to_string()];
    parts.extend(socket.socket_type.as_deref().map(str::to_owned));
    parts.extend(socket.state.as_deref().map(str::to_owned));
    if let (Some(local), Some(remote)) = (&socket.local, &socket.remote) {
        parts.push(format!("{} -> {}", sanitize(local), sanitize(remote)));
    } else if let Some(local) = &socket.local {
        parts.push(sanitize(local));
    }
    if let Some(peer) = socket.peer_inode {
        parts.push(format!("peer socket:[{peer}]"));
    }
    if let Some(queued) = socket.send_queue {
        parts.push(format!("{queued} bytes unsent"));
    }
    format!("({})", parts.join(", "))
}

/// The socket and its other end: `unix dgram /dev/log, receiver pid 7 (rsyslogd) stopped,
/// queue 11/10 datagrams`, or `tcp 127.0.0.1:5000 -> 127.0.0.1:8080, receiver pid 9 (server)
/// sleeping in epoll_wait, not reading, 131072 bytes queued there, 2621440 bytes unsent`.
pub(super) fn describe_socket_target(target: &FdTarget, socket: &SocketInfo) -> String {
    let mut text = socket.family.to_string();
    if let Some(socket_type) = &socket.socket_type {
        text.push_str(&format!(" {socket_type}"));
    }
    match (&socket.local, &socket.remote) {
        (Some(local), Some(remote)) if socket.family != "unix" => {
            text.push_str(&format!(" {} -> {}", sanitize(local), sanitize(remote)));
        }
        (_, Some(remote)) => text.push_str(&format!(" {}", sanitize(remote))),
        (Some(local), None) => text.push_str(&format!(" {}", sanitize(local))),
        (None, None) => {}
    }
    if let Some(state) = socket.state.as_deref()
        && !matches!(state, "established" | "unconnected")
    {
        text.push_str(&format!(", {state}"));
    }
    if target.nonblocking == Some(true) {
        text.push_str(", non-blocking");
    }
    match target.readers.as_deref() {
        Some([]) => text.push_str(", receiver: nobody holds the other end"),
        Some(receivers) => {
            for receiver in receivers {
                let told = match &receiver.activity {
                    // A stopped receiver is the whole story: where it stopped does not matter.
                    Some(activity) if activity.state == "stopped" => format!(
                        "receiver pid {} ({}) stopped",
                        receiver.pid,
                        sanitize(&receiver.comm)
                    ),
                    _ => reader_activity(receiver).replacen("reader", "receiver", 1),
                };
                text.push_str(&format!(", {told}"));
            }
        }
        None => {}
    }
    if let Some(peer) = &socket.peer {
        match (
            peer.receive_datagrams,
            peer.max_datagrams,
            peer.receive_queue,
        ) {
            (Some(queued), Some(limit), _) => {
                text.push_str(&format!(", queue {queued}/{limit} datagrams"));
            }
            (Some(queued), None, _) => text.push_str(&format!(", queue {queued} datagrams")),
            (None, _, Some(bytes)) => text.push_str(&format!(", {bytes} bytes queued there")),
            (None, _, None) => {}
        }
    }
    // A unix datagram socket's send queue is datagrams already in the receiver's queue
    // (charged to the sender): the queue above says it.
    if let Some(unsent) = socket
        .send_queue
        .filter(|bytes| *bytes > 0 && socket.socket_type.as_deref() != Some("dgram"))
    {
        text.push_str(&format!(", {unsent} bytes unsent"));
        if let Some(buffer) = socket.send_buffer {
            text.push_str(&format!(" (send buffer {buffer})"));
        }
    }
    if let Some(retransmits) = socket.retransmits.filter(|count| *count > 0) {
        text.push_str(&format!(", {retransmits} retransmits"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::record::{Activity, Peer, SocketPeer, TargetKind};

    #[test]
    fn the_syslog_story_in_one_line() {
        let target = FdTarget {
            kind: TargetKind::Socket,
            inode: Some(1),
            path: None,
            readers: Some(vec![Peer {
                pid: 7,
                comm: "rsyslogd".into(),
                fds: vec![3],
                activity: Some(Activity {
                    state: "stopped".into(),
                    wchan: Some("do_signal_stop".into()),
                    syscall: Some("recvmsg".into()),
                    reading: true,
                    blocked: false,
                }),
                container: None,
                runtime: None,
                blocked_write: None,
            }]),
            pts: None,
            nonblocking: Some(false),
            writers: None,
            read_ends: None,
            write_ends: None,
            capacity: None,
            queued: None,
            socket: None,
            last_reader: None,
            pty: None,
            master: None,
            unknown: None,
        };
        let socket = SocketInfo {
            family: "unix".into(),
            socket_type: Some("dgram".into()),
            state: Some("established".into()),
            remote: Some("/dev/log".into()),
            peer_inode: Some(2),
            send_queue: Some(768),
            send_buffer: Some(212_992),
            peer: Some(SocketPeer {
                inode: 2,
                receive_datagrams: Some(10),
                max_datagrams: Some(10),
                ..SocketPeer::default()
            }),
            ..SocketInfo::default()
        };
        assert_eq!(
            describe_socket_target(&target, &socket),
            "unix dgram /dev/log, receiver pid 7 (rsyslogd) stopped, queue 10/10 datagrams"
        );
    }
}
