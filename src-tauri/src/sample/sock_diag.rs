//! Linux: the kernel's list of TCP and UDP sockets over netlink `sock_diag`.
//!
//! netstat2 does the same through the general netlink packet crates, which open a new
//! netlink socket per family and protocol each time and decode every attribute of every
//! reply into its own allocation: at a few hundred sockets that was a third of the
//! sampler's own work per tick. Here one netlink socket is kept, the same request is
//! sent for each family and protocol, and only the fixed header of each reply
//! (`struct inet_diag_msg`: addresses, ports, state, inode) is read, in place, from one
//! reused buffer. No extensions are asked for, so the kernel sends no more than that.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};
use netstat2::{ProtocolSocketInfo, SocketInfo, TcpSocketInfo, TcpState, UdpSocketInfo};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// `SOCK_DIAG_BY_FAMILY`, the request type.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `struct nlmsghdr`.
const HEADER_LEN: usize = 16;
/// `struct inet_diag_req_v2`.
const REQUEST_LEN: usize = 56;
/// `struct inet_diag_msg`.
const MESSAGE_LEN: usize = 72;
/// Replies come in datagrams of at most a page or so each; room for several.
const BUFFER_LEN: usize = 32 * 1024;

/// What went wrong while listing sockets.
#[derive(Debug, thiserror::Error)]
pub(super) enum Error {
    #[error("netlink: {0}")]
    Io(#[from] std::io::Error),
    #[error("the kernel refused the socket list (error {0})")]
    Refused(i32),
    #[error("a malformed netlink reply")]
    Malformed,
}

/// A netlink socket for `sock_diag`, kept between ticks.
pub(super) struct SockDiag {
    socket: Socket,
    buf: Vec<u8>,
    seq: u32,
}

impl SockDiag {
    pub fn new() -> Result<SockDiag, Error> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(SockDiag { socket, buf: vec![0; BUFFER_LEN], seq: 0 })
    }

    /// Every TCP and UDP socket, IPv4 and IPv6, appended to `out`.
    pub fn read(&mut self, out: &mut Vec<SocketInfo>) -> Result<(), Error> {
        for protocol in [IPPROTO_TCP, IPPROTO_UDP] {
            for family in [AF_INET, AF_INET6] {
                self.dump(family, protocol, out)?;
            }
        }
        Ok(())
    }

    fn dump(&mut self, family: u8, protocol: u8, out: &mut Vec<SocketInfo>) -> Result<(), Error> {
        self.seq = self.seq.wrapping_add(1);
        self.socket.send(&request(family, protocol, self.seq), 0)?;
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut rest = self.buf.get(..n).ok_or(Error::Malformed)?;
            while !rest.is_empty() {
                let (kind, body, next) = split_message(rest)?;
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = body.get(..4).map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        return Err(Error::Refused(-code));
                    }
                    SOCK_DIAG_BY_FAMILY => out.push(parse_message(body, protocol).ok_or(Error::Malformed)?),
                    _ => {}
                }
                rest = next;
            }
        }
    }
}

/// The request: `nlmsghdr` then `inet_diag_req_v2` for every state, no extensions.
fn request(family: u8, protocol: u8, seq: u32) -> [u8; HEADER_LEN + REQUEST_LEN] {
    let mut r = [0u8; HEADER_LEN + REQUEST_LEN];
    r[0..4].copy_from_slice(&((HEADER_LEN + REQUEST_LEN) as u32).to_ne_bytes());
    r[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    r[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    r[8..12].copy_from_slice(&seq.to_ne_bytes());
    // Port id 0: the kernel fills it in.
    r[16] = family;
    r[17] = protocol;
    // r[18]: no extensions; r[19]: padding.
    r[20..24].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
    r
}

/// One netlink message at the start of `data`: its type, its body, and what follows it.
fn split_message(data: &[u8]) -> Result<(u16, &[u8], &[u8]), Error> {
    let header = data.get(..HEADER_LEN).ok_or(Error::Malformed)?;
    let len = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let kind = u16::from_ne_bytes([header[4], header[5]]);
    let body = data.get(HEADER_LEN..len).ok_or(Error::Malformed)?;
    // Messages are aligned to 4 bytes; the last one may end the datagram unaligned.
    let next = data.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    Ok((kind, body, next))
}

/// Reads `struct inet_diag_msg`: family, state, then the socket id (ports in network
/// order, addresses as 16 bytes each), then expiry, queues, uid and inode.
fn parse_message(m: &[u8], protocol: u8) -> Option<SocketInfo> {
    let m = m.get(..MESSAGE_LEN)?;
    let family = m[0];
    let state = m[1];
    let local_port = u16::from_be_bytes([m[4], m[5]]);
    let remote_port = u16::from_be_bytes([m[6], m[7]]);
    let address = |at: usize| -> Option<IpAddr> {
        match family {
            AF_INET => Some(IpAddr::V4(Ipv4Addr::new(m[at], m[at + 1], m[at + 2], m[at + 3]))),
            AF_INET6 => {
                let bytes: [u8; 16] = m.get(at..at + 16)?.try_into().ok()?;
                Some(IpAddr::V6(Ipv6Addr::from(bytes)))
            }
            _ => None,
        }
    };
    let local_addr = address(8)?;
    let remote_addr = address(24)?;
    let word = |at: usize| u32::from_ne_bytes([m[at], m[at + 1], m[at + 2], m[at + 3]]);
    let uid = word(64);
    let inode = word(68);
    let protocol_socket_info = match protocol {
        IPPROTO_TCP => ProtocolSocketInfo::Tcp(TcpSocketInfo {
            local_addr,
            local_port,
            remote_addr,
            remote_port,
            // netstat2 maps the kernel's state numbers.
            state: TcpState::from(state),
        }),
        _ => ProtocolSocketInfo::Udp(UdpSocketInfo { local_addr, local_port }),
    };
    Some(SocketInfo { protocol_socket_info, associated_pids: Vec::new(), inode, uid })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply message body as the kernel lays it out.
    fn message(family: u8, state: u8, local: &[u8], local_port: u16, remote: &[u8], remote_port: u16) -> Vec<u8> {
        let mut m = vec![0u8; MESSAGE_LEN + 8]; // and an attribute the parser must skip
        m[0] = family;
        m[1] = state;
        m[4..6].copy_from_slice(&local_port.to_be_bytes());
        m[6..8].copy_from_slice(&remote_port.to_be_bytes());
        m[8..8 + local.len()].copy_from_slice(local);
        m[24..24 + remote.len()].copy_from_slice(remote);
        m[64..68].copy_from_slice(&1000u32.to_ne_bytes());
        m[68..72].copy_from_slice(&424242u32.to_ne_bytes());
        m
    }

    #[test]
    fn reads_an_ipv4_tcp_reply() {
        let m = message(AF_INET, 1, &[127, 0, 0, 1], 8080, &[10, 1, 2, 3], 40000);
        let s = parse_message(&m, IPPROTO_TCP).unwrap();
        assert_eq!((s.inode, s.uid), (424242, 1000));
        let ProtocolSocketInfo::Tcp(t) = s.protocol_socket_info else { panic!("tcp") };
        assert_eq!(t.local_addr, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!((t.local_port, t.remote_port), (8080, 40000));
        assert_eq!(t.remote_addr, IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(t.state, TcpState::Established);
    }

    #[test]
    fn reads_an_ipv6_udp_reply_and_rejects_short_or_unknown_ones() {
        let local = Ipv6Addr::LOCALHOST.octets();
        let m = message(AF_INET6, 7, &local, 53, &[0; 16], 0);
        let s = parse_message(&m, IPPROTO_UDP).unwrap();
        let ProtocolSocketInfo::Udp(u) = s.protocol_socket_info else { panic!("udp") };
        assert_eq!((u.local_addr, u.local_port), (IpAddr::V6(Ipv6Addr::LOCALHOST), 53));
        assert!(parse_message(&m[..MESSAGE_LEN - 1], IPPROTO_UDP).is_none());
        assert!(parse_message(&message(99, 1, &[], 1, &[], 1), IPPROTO_TCP).is_none());
    }

    #[test]
    fn splits_aligned_messages_and_rejects_a_bad_length() {
        let mut data = Vec::new();
        for (kind, body_len) in [(SOCK_DIAG_BY_FAMILY, 5usize), (NLMSG_DONE, 4)] {
            let len = (HEADER_LEN + body_len) as u32;
            data.extend_from_slice(&len.to_ne_bytes());
            data.extend_from_slice(&kind.to_ne_bytes());
            data.extend_from_slice(&[0; 10]);
            data.extend(std::iter::repeat_n(7u8, body_len));
            data.resize(data.len().next_multiple_of(4), 0);
        }
        let (kind, body, rest) = split_message(&data).unwrap();
        assert_eq!((kind, body.len()), (SOCK_DIAG_BY_FAMILY, 5));
        let (kind, body, rest) = split_message(rest).unwrap();
        assert_eq!((kind, body.len(), rest.len()), (NLMSG_DONE, 4, 0));
        let mut bad = data.clone();
        bad[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(split_message(&bad).is_err());
        assert!(split_message(&data[..10]).is_err());
    }

    #[test]
    fn lists_a_socket_of_our_own() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut diag = SockDiag::new().unwrap();
        for _ in 0..2 {
            // Twice: the kept netlink socket serves every tick.
            let mut out = Vec::new();
            diag.read(&mut out).unwrap();
            assert!(out.iter().any(|s| matches!(&s.protocol_socket_info,
                ProtocolSocketInfo::Tcp(t) if t.local_port == port && t.state == TcpState::Listen)));
        }
    }
}
