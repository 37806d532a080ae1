//! What a socket is and where its other end is: the family, the addresses or the unix peer,
//! and the bytes queued, from the kernel's socket diagnostics (netlink `sock_diag` for unix
//! sockets) and `/proc/PID/net/{tcp,tcp6,udp,udp6,unix}` (as the writer's network namespace
//! sees them). Nothing here touches the socket itself.
//!
//! `/proc/net/{tcp,udp}[6]` are parsed here rather than with the procfs crate (`procfs-core`),
//! though it parsed this machine's `/proc/self/net/tcp` faster (0.9 µs against 8.6 µs): its
//! entries leave out the retransmit count (`retrnsmt`), which the socket target reports, and it
//! refuses a whole file for one line it cannot parse, where this parser skips the line. Both are
//! fuzzed (`fuzz/`, targets `proc_net` and `procfs_crate`). Unix sockets are not read from
//! `/proc/net/unix` at all: that file has neither the peer's inode nor the queued bytes, which
//! `sock_diag` gives.

use crate::report::record::SocketInfo;
use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// Describes socket `inode`, held by process `pid`.
pub fn describe(pid: u32, inode: u64) -> Option<SocketInfo> {
    if let Ok(Some(info)) = unix_diag(inode) {
        return Some(info);
    }
    for (file, family) in [
        ("tcp", "tcp"),
        ("tcp6", "tcp6"),
        ("udp", "udp"),
        ("udp6", "udp6"),
    ] {
        let Ok(text) = std::fs::read_to_string(
            crate::process::host::host().pid_path(pid, format!("net/{file}")),
        ) else {
            continue;
        };
        if let Some(info) = find_inet(&text, family, inode) {
            return Some(info);
        }
    }
    Some(SocketInfo {
        family: "other".into(),
        ..SocketInfo::default()
    })
}

/// Socket `inode` in the text of one of `/proc/net/{tcp,tcp6,udp,udp6}` (`family` names
/// which); `None` when it is not listed there. Lines that do not parse are skipped.
pub fn find_inet(text: &str, family: &'static str, inode: u64) -> Option<SocketInfo> {
    let entries = parse_inet(text, family);
    let found = entries.iter().find(|entry| entry.inode == inode)?;
    // The other end of a connection within this host: the entry with the addresses swapped.
    let peer_inode = entries
        .iter()
        .find(|entry| entry.local == found.remote && entry.remote == found.local)
        .map(|entry| entry.inode)
        .filter(|inode| *inode != 0);
    Some(SocketInfo {
        family: family.into(),
        socket_type: None,
        state: Some(tcp_state(found.state).into()).filter(|_| family.starts_with("tcp")),
        local: Some(found.local.clone()),
        remote: Some(found.remote.clone()),
        peer_inode,
        send_queue: Some(found.tx_queue),
        receive_queue: Some(found.rx_queue),
        retransmits: Some(found.retransmits).filter(|_| family.starts_with("tcp")),
        ..SocketInfo::default()
    })
}

/// One line of `/proc/net/{tcp,udp}[6]`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct InetEntry {
    local: String,
    remote: String,
    state: u8,
    tx_queue: u64,
    rx_queue: u64,
    retransmits: u64,
    inode: u64,
}

/// `0100007F:1F90` (IPv4, little-endian words) or 32 hex digits for IPv6, then the port.
fn parse_address(text: &str) -> Option<String> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    match address.len() {
        8 => {
            let word = u32::from_str_radix(address, 16).ok()?;
            Some(format!("{}:{port}", Ipv4Addr::from(word.to_le_bytes())))
        }
        32 => {
            let mut bytes = [0u8; 16];
            for (index, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(address.get(index * 8..index * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.to_le_bytes());
            }
            Some(format!("[{}]:{port}", Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

fn parse_inet(text: &str, _family: &str) -> Vec<InetEntry> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (tx, rx) = fields.get(4)?.split_once(':')?;
            Some(InetEntry {
                local: parse_address(fields.get(1)?)?,
                remote: parse_address(fields.get(2)?)?,
                state: u8::from_str_radix(fields.get(3)?, 16).ok()?,
                tx_queue: u64::from_str_radix(tx, 16).ok()?,
                rx_queue: u64::from_str_radix(rx, 16).ok()?,
                retransmits: u64::from_str_radix(fields.get(6)?, 16).ok()?,
                inode: fields.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

fn tcp_state(state: u8) -> &'static str {
    match state {
        1 => "established",
        2 => "syn-sent",
        3 => "syn-recv",
        4 => "fin-wait1",
        5 => "fin-wait2",
        6 => "time-wait",
        7 => "close",
        8 => "close-wait",
        9 => "last-ack",
        10 => "listen",
        11 => "closing",
        _ => "unknown",
    }
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const UDIAG_SHOW_NAME: u32 = 0x1;
const UDIAG_SHOW_PEER: u32 = 0x4;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_RQLEN: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;

/// Asks the kernel's unix socket diagnostics about one socket: `None` if it is not a unix
/// socket (or not in this network namespace).
fn unix_diag(inode: u64) -> io::Result<Option<SocketInfo>> {
    let Ok(inode) = u32::try_from(inode) else {
        return Ok(None);
    };
    // SAFETY: socket() returns a new descriptor or -1.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };

    // struct nlmsghdr + struct unix_diag_req
    let mut request = Vec::with_capacity(NLMSG_HDRLEN + 24);
    request.extend_from_slice(&((NLMSG_HDRLEN + 24) as u32).to_ne_bytes());
    request.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    request.extend_from_slice(&0u32.to_ne_bytes()); // port id
    request.push(libc::AF_UNIX as u8);
    request.push(0); // protocol
    request.extend_from_slice(&0u16.to_ne_bytes()); // pad
    request.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    request.extend_from_slice(&inode.to_ne_bytes());
    request
        .extend_from_slice(&(UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN).to_ne_bytes());
    request.extend_from_slice(&u32::MAX.to_ne_bytes()); // no cookie
    request.extend_from_slice(&u32::MAX.to_ne_bytes());
    // SAFETY: sending a buffer we own to our own socket (the kernel is the default peer).
    let sent = unsafe {
        libc::send(
            socket.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut reply = vec![0u8; 8192];
    // SAFETY: receiving into a buffer we own.
    let received = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            reply.as_mut_ptr().cast(),
            reply.len(),
            0,
        )
    };
    if received < 0 {
        return Err(io::Error::last_os_error());
    }
    reply.truncate(received as usize);
    Ok(parse_unix_diag(&reply, inode))
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Parses a `sock_diag` reply about unix socket `inode`.
/// The `sock_diag` reply for unix socket `inode`, described; `None` if it is not that socket
/// or does not parse.
pub fn parse_unix_diag(reply: &[u8], inode: u32) -> Option<SocketInfo> {
    let length = u32_at(reply, 0)? as usize;
    let message_type = u16_at(reply, 4)?;
    if message_type == NLMSG_ERROR || length < NLMSG_HDRLEN + 16 || length > reply.len() {
        return None;
    }
    let body = &reply[NLMSG_HDRLEN..length];
    // struct unix_diag_msg: family, type, state, pad, ino, cookie[2]
    if u32_at(body, 4)? != inode {
        return None;
    }
    let mut info = SocketInfo {
        family: "unix".into(),
        socket_type: Some(
            match body[1] as i32 {
                libc::SOCK_STREAM => "stream",
                libc::SOCK_DGRAM => "dgram",
                libc::SOCK_SEQPACKET => "seqpacket",
                _ => "other",
            }
            .into(),
        ),
        state: Some(
            match body[2] {
                1 => "established",
                7 => "unconnected",
                10 => "listen",
                _ => "unknown",
            }
            .into(),
        ),
        ..SocketInfo::default()
    };
    // Attributes (struct rtattr: len, type, then the value, 4-byte aligned).
    let mut at = 16;
    while at + 4 <= body.len() {
        let attr_len = u16_at(body, at)? as usize;
        let attr_type = u16_at(body, at + 2)?;
        if attr_len < 4 || at + attr_len > body.len() {
            break;
        }
        let value = &body[at + 4..at + attr_len];
        match attr_type {
            UNIX_DIAG_PEER => info.peer_inode = u32_at(value, 0).map(u64::from).filter(|i| *i != 0),
            UNIX_DIAG_RQLEN => {
                info.receive_queue = u32_at(value, 0).map(u64::from);
                info.send_queue = u32_at(value, 4).map(u64::from);
            }
            UNIX_DIAG_NAME => {
                let name = String::from_utf8_lossy(value)
                    .trim_end_matches('\0')
                    .to_owned();
                // An abstract name starts with a NUL; shown with '@' as ss does.
                info.local = Some(match name.strip_prefix('\0') {
                    Some(abstract_name) => format!("@{abstract_name}"),
                    None => name,
                })
                .filter(|name| !name.is_empty());
            }
            _ => {}
        }
        at += attr_len.next_multiple_of(4);
    }
    Some(info)
}

#[cfg(test)]
mod tests {
    use std::os::{fd::AsRawFd, unix::fs::MetadataExt, unix::net::UnixStream};

    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("0100007F:1F90").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(
            parse_address("00000000000000000000000001000000:0016").as_deref(),
            Some("[::1]:22")
        );
        assert_eq!(parse_address("zz:1"), None);
        assert_eq!(parse_address("0100007F"), None);
    }

    #[test]
    fn proc_net_lines() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 0100007F:D431 01 00010000:00000020 00:00000000 00000000     0        0 4242 1 0 20 4 30 10 -1\n  garbage\n";
        let entries = parse_inet(text, "tcp");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].local, "127.0.0.1:8080");
        assert_eq!(entries[0].tx_queue, 0x10000);
        assert_eq!(entries[0].rx_queue, 0x20);
        assert_eq!(entries[0].inode, 4242);
        assert_eq!(entries[0].retransmits, 0);
        assert_eq!(tcp_state(entries[0].state), "established");
    }

    #[test]
    fn a_unix_socket_pair_and_its_queue() {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        use std::io::Write;
        ours.write_all(&[1u8; 1000]).unwrap();
        let inode = |stream: &UnixStream| {
            std::fs::metadata(format!("/proc/self/fd/{}", stream.as_raw_fd()))
                .unwrap()
                .ino()
        };
        let info = describe(std::process::id(), inode(&ours)).unwrap();
        assert_eq!(info.family, "unix");
        assert_eq!(info.socket_type.as_deref(), Some("stream"));
        assert_eq!(info.state.as_deref(), Some("established"));
        assert_eq!(info.peer_inode, Some(inode(&theirs)));
        assert!(info.send_queue.unwrap() >= 1000, "{info:?}");
        let theirs_info = describe(std::process::id(), inode(&theirs)).unwrap();
        assert_eq!(theirs_info.receive_queue, Some(1000));
        // Truncated or foreign replies are nothing, not a panic.
        assert_eq!(parse_unix_diag(&[0; 8], 1), None);
    }

    #[test]
    fn a_loopback_tcp_connection_and_its_other_end() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let inode = |fd: i32| {
            std::fs::metadata(format!("/proc/self/fd/{fd}"))
                .unwrap()
                .ino()
        };
        let info = describe(std::process::id(), inode(client.as_raw_fd())).unwrap();
        assert_eq!(info.family, "tcp");
        assert_eq!(info.state.as_deref(), Some("established"));
        assert_eq!(
            info.remote.as_deref(),
            Some(listener.local_addr().unwrap().to_string().as_str())
        );
        assert_eq!(info.peer_inode, Some(inode(server.as_raw_fd())));
    }
}
