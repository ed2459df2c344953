//! Linux: the kernel's list of TCP and UDP sockets over netlink `sock_diag`.
//!
//! netstat2 does the same through the general netlink packet crates, which open a new
//! netlink socket per family and protocol each time and decode every attribute of every
//! reply into its own allocation: at a few hundred sockets that was a third of the
//! sampler's own work per tick. Here one netlink socket is kept, the same request is
//! sent for each family and protocol, and only the fixed header of each reply
//! (`struct inet_diag_msg`: addresses, ports, state, inode) is read, in place, from one
//! reused buffer. No extensions are asked for, so the kernel sends no more than that.
//!
//! What a dump costs is mostly the kernel walking its socket hash tables, and for TCP
//! that is the whole established table (262,144 buckets on a machine with 24 GiB, most
//! of them empty) whatever the family asked for: two TCP dumps, IPv4 then IPv6, walk it
//! twice. The older request (`TCPDIAG_GETSOCK` with `struct inet_diag_req`) is answered
//! for both families in one walk (the kernel takes it as `AF_UNSPEC`), so TCP is asked
//! that way, and per family only if a kernel refuses it. UDP has no such request; its
//! table is far smaller (16,384 buckets on the same machine), and is walked per family.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};
use netstat2::{ProtocolSocketInfo, SocketInfo, TcpSocketInfo, TcpState, UdpSocketInfo};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// `SOCK_DIAG_BY_FAMILY`, the request type.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `TCPDIAG_GETSOCK`: the older request, for TCP only, every family in one dump; its
/// replies carry the same type.
const TCPDIAG_GETSOCK: u16 = 18;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `struct nlmsghdr`.
const HEADER_LEN: usize = 16;
/// `struct inet_diag_req_v2`.
const REQUEST_LEN: usize = 56;
/// `struct inet_diag_req` (the older request): family, lengths, extensions, the 48-byte
/// socket id, states, tables.
const COMPAT_REQUEST_LEN: usize = 60;
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
    /// TCP of both families in one dump ([`TCPDIAG_GETSOCK`]); false once the kernel
    /// refused that, and TCP is dumped per family.
    combined_tcp: bool,
}

impl SockDiag {
    pub fn new() -> Result<SockDiag, Error> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(SockDiag { socket, buf: vec![0; BUFFER_LEN], seq: 0, combined_tcp: true })
    }

    /// Every TCP and UDP socket, IPv4 and IPv6, appended to `out`.
    pub fn read(&mut self, out: &mut Vec<SocketInfo>) -> Result<(), Error> {
        if self.combined_tcp {
            self.seq = self.seq.wrapping_add(1);
            match self.dump(&compat_request(self.seq), TCPDIAG_GETSOCK, IPPROTO_TCP, out) {
                Ok(()) => {}
                // A kernel without the older request refuses it before sending any
                // socket: ask per family from now on.
                Err(Error::Refused(code)) => {
                    tracing::debug!(code, "the kernel refused TCPDIAG_GETSOCK; listing TCP per family");
                    self.combined_tcp = false;
                }
                Err(e) => return Err(e),
            }
        }
        let protocols: &[u8] = if self.combined_tcp { &[IPPROTO_UDP] } else { &[IPPROTO_TCP, IPPROTO_UDP] };
        for &protocol in protocols {
            for family in [AF_INET, AF_INET6] {
                self.seq = self.seq.wrapping_add(1);
                self.dump(&request(family, protocol, self.seq), SOCK_DIAG_BY_FAMILY, protocol, out)?;
            }
        }
        Ok(())
    }

    /// Sends `request` and appends every socket of the dump (replies of type `kind`).
    fn dump(&mut self, request: &[u8], kind: u16, protocol: u8, out: &mut Vec<SocketInfo>) -> Result<(), Error> {
        self.socket.send(request, 0)?;
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            if read_datagram(self.buf.get(..n).ok_or(Error::Malformed)?, kind, protocol, out)? {
                return Ok(());
            }
        }
    }
}

/// Appends the sockets of one reply datagram (messages of type `kind`) to `out`.
/// Whether the dump ended in it (`NLMSG_DONE`); the kernel's refusal as
/// [`Error::Refused`].
fn read_datagram(data: &[u8], kind: u16, protocol: u8, out: &mut Vec<SocketInfo>) -> Result<bool, Error> {
    let mut rest = data;
    while !rest.is_empty() {
        let (got, body, next) = split_message(rest)?;
        match got {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = body.get(..4).map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                return Err(Error::Refused(code.wrapping_neg()));
            }
            _ if got == kind => out.push(parse_message(body, protocol).ok_or(Error::Malformed)?),
            _ => {}
        }
        rest = next;
    }
    Ok(false)
}

/// The request: `nlmsghdr` then `inet_diag_req_v2` for every state, no extensions.
fn request(family: u8, protocol: u8, seq: u32) -> [u8; HEADER_LEN + REQUEST_LEN] {
    let mut r = [0u8; HEADER_LEN + REQUEST_LEN];
    header(&mut r, SOCK_DIAG_BY_FAMILY, seq);
    r[16] = family;
    r[17] = protocol;
    // r[18]: no extensions; r[19]: padding.
    r[20..24].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
    r
}

/// The older TCP request: `nlmsghdr` then `struct inet_diag_req` for every state, no
/// extensions. The kernel dumps it as `AF_UNSPEC`, whatever the family field says.
fn compat_request(seq: u32) -> [u8; HEADER_LEN + COMPAT_REQUEST_LEN] {
    let mut r = [0u8; HEADER_LEN + COMPAT_REQUEST_LEN];
    header(&mut r, TCPDIAG_GETSOCK, seq);
    // r[16..20]: family (unused), source and destination lengths, no extensions;
    // r[20..68]: the socket id, all zero (any socket).
    r[68..72].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
    // r[72..76]: tables (unused).
    r
}

/// Fills in a dump request's `nlmsghdr`: its length, `kind`, and `seq`. Port id 0: the
/// kernel fills it in.
fn header(r: &mut [u8], kind: u16, seq: u32) {
    let len = r.len() as u32;
    r[0..4].copy_from_slice(&len.to_ne_bytes());
    r[4..6].copy_from_slice(&kind.to_ne_bytes());
    r[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    r[8..12].copy_from_slice(&seq.to_ne_bytes());
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

    /// The TCP sockets of one dump, as (IPv4, local port, remote port, state).
    fn tcp_of(out: &[SocketInfo]) -> std::collections::BTreeSet<(bool, u16, u16, String)> {
        out.iter()
            .filter_map(|s| match &s.protocol_socket_info {
                ProtocolSocketInfo::Tcp(t) => {
                    Some((t.local_addr.is_ipv4(), t.local_port, t.remote_port, format!("{:?}", t.state)))
                }
                ProtocolSocketInfo::Udp(_) => None,
            })
            .collect()
    }

    #[test]
    fn one_tcp_dump_lists_both_families_as_the_per_family_dumps_do() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let v6 = std::net::TcpListener::bind("[::1]:0");
        let mut combined = SockDiag::new().unwrap();
        let mut per_family = SockDiag::new().unwrap();
        per_family.combined_tcp = false;
        // Sockets come and go on a busy machine between two dumps: try a few times for
        // two readings that agree, then compare.
        let mut last = None;
        for _ in 0..5 {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            combined.read(&mut a).unwrap();
            per_family.read(&mut b).unwrap();
            assert!(combined.combined_tcp, "this kernel answers the older TCP request");
            let ours = |out: &[SocketInfo]| {
                let tcp = tcp_of(out);
                let port4 = v4.local_addr().unwrap().port();
                assert!(tcp.contains(&(true, port4, 0, "Listen".into())), "IPv4 listener in {tcp:?}");
                if let Ok(v6) = &v6 {
                    let port6 = v6.local_addr().unwrap().port();
                    assert!(tcp.contains(&(false, port6, 0, "Listen".into())), "IPv6 listener in {tcp:?}");
                }
                tcp
            };
            let (a, b) = (ours(&a), ours(&b));
            if a == b {
                return;
            }
            last = Some((a, b));
        }
        let (a, b) = last.unwrap();
        panic!(
            "the combined dump and the per-family dumps differ in {:?}",
            a.symmetric_difference(&b).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_older_request_is_laid_out_as_the_kernel_reads_it() {
        let r = compat_request(7);
        assert_eq!(r.len(), HEADER_LEN + COMPAT_REQUEST_LEN);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()) as usize, r.len());
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), TCPDIAG_GETSOCK);
        assert_eq!(u32::from_ne_bytes(r[8..12].try_into().unwrap()), 7);
        assert_eq!(u32::from_ne_bytes(r[68..72].try_into().unwrap()), u32::MAX, "every state");
        assert!(r[16..68].iter().all(|b| *b == 0) && r[72..].iter().all(|b| *b == 0));
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

/// Fuzz targets for the netlink reply parser: any datagram, and real-shaped ones with
/// bytes changed, read to sockets or refused as malformed, never a panic, and always to
/// an end (each message consumes at least its header). See `crate::fuzzing`.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzzing::{config, mutated_bytes};
    use proptest::prelude::*;

    /// A datagram as the kernel sends it: two socket messages (IPv4, IPv6), then
    /// `NLMSG_DONE`.
    fn real_datagram() -> Vec<u8> {
        let mut data = Vec::new();
        let mut push = |kind: u16, body: &[u8]| {
            data.extend_from_slice(&((HEADER_LEN + body.len()) as u32).to_ne_bytes());
            data.extend_from_slice(&kind.to_ne_bytes());
            data.extend_from_slice(&[0; 10]);
            data.extend_from_slice(body);
            data.resize(data.len().next_multiple_of(4), 0);
        };
        for family in [AF_INET, AF_INET6] {
            let mut m = vec![0u8; MESSAGE_LEN + 8];
            m[0] = family;
            m[1] = 1;
            m[4..6].copy_from_slice(&8080u16.to_be_bytes());
            m[8] = 127;
            m[11] = 1;
            m[64..68].copy_from_slice(&1000u32.to_ne_bytes());
            push(SOCK_DIAG_BY_FAMILY, &m);
        }
        push(NLMSG_DONE, &[0; 4]);
        data
    }

    fn check(data: &[u8], kind: u16, protocol: u8) {
        let mut out = Vec::new();
        let result = read_datagram(data, kind, protocol, &mut out);
        // No more sockets than messages could hold.
        assert!(out.len() <= data.len() / (HEADER_LEN + MESSAGE_LEN), "{result:?}");
        for message in [data, &data[data.len().min(HEADER_LEN)..]] {
            let _ = parse_message(message, protocol);
        }
    }

    fn protocol() -> impl Strategy<Value = u8> {
        prop_oneof![Just(IPPROTO_TCP), Just(IPPROTO_UDP), any::<u8>()]
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_datagram(data in prop::collection::vec(any::<u8>(), 0..400), protocol in protocol()) {
            check(&data, SOCK_DIAG_BY_FAMILY, protocol);
        }

        #[test]
        fn real_datagrams_with_bytes_changed(
            data in mutated_bytes(real_datagram()),
            kind in prop_oneof![Just(SOCK_DIAG_BY_FAMILY), Just(TCPDIAG_GETSOCK)],
            protocol in protocol(),
        ) {
            check(&data, kind, protocol);
        }

        /// A refusal with any error code (the kernel's are negative errnos).
        #[test]
        fn any_error_message(code in prop_oneof![Just(i32::MIN), Just(i32::MAX), Just(0), any::<i32>()]) {
            let mut data = Vec::new();
            data.extend_from_slice(&((HEADER_LEN + 4) as u32).to_ne_bytes());
            data.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            data.extend_from_slice(&[0; 10]);
            data.extend_from_slice(&code.to_ne_bytes());
            let refused = matches!(read_datagram(&data, SOCK_DIAG_BY_FAMILY, IPPROTO_TCP, &mut Vec::new()), Err(Error::Refused(_)));
            prop_assert!(refused);
        }
    }

    #[test]
    fn the_real_datagram_reads_two_sockets() {
        let mut out = Vec::new();
        assert!(read_datagram(&real_datagram(), SOCK_DIAG_BY_FAMILY, IPPROTO_TCP, &mut out).unwrap());
        assert_eq!(out.len(), 2);
    }

    /// Found by `any_error_message`: negating the lowest code overflowed (a panic in
    /// debug builds).
    #[test]
    fn the_lowest_error_code_is_a_refusal() {
        let mut data = Vec::new();
        data.extend_from_slice(&((HEADER_LEN + 4) as u32).to_ne_bytes());
        data.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        data.extend_from_slice(&[0; 10]);
        data.extend_from_slice(&i32::MIN.to_ne_bytes());
        let result = read_datagram(&data, SOCK_DIAG_BY_FAMILY, IPPROTO_TCP, &mut Vec::new());
        assert!(matches!(result, Err(Error::Refused(i32::MIN))), "{result:?}");
    }
}
