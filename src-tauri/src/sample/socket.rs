//! Sockets: every TCP and UDP socket, IPv4 and IPv6, and how local ports are used.
//!
//! The kernel's socket list comes from netlink `sock_diag` on Linux (`sock_diag.rs`) and
//! from netstat2 (the system's tables) elsewhere, both as netstat2's [`SocketInfo`];
//! which process owns a socket comes from the per-OS module.
//! This file turns those into [`ConnectionSample`]s and [`PortUsage`].

use std::collections::HashMap;

#[cfg(any(not(target_os = "linux"), test))]
use netstat2::{AddressFamilyFlags, ProtocolFlags};
use netstat2::{ProtocolSocketInfo, SocketInfo};

use crate::model::{ConnectionSample, ListeningPort, PortCount, PortUsage, Protocol, TcpState};

/// Address families listed (by netstat2).
#[cfg(any(not(target_os = "linux"), test))]
pub(super) const FAMILIES: AddressFamilyFlags = AddressFamilyFlags::IPV4.union(AddressFamilyFlags::IPV6);
/// Protocols listed (by netstat2).
#[cfg(any(not(target_os = "linux"), test))]
pub(super) const PROTOCOLS: ProtocolFlags = ProtocolFlags::TCP.union(ProtocolFlags::UDP);

/// Most ports listed in [`PortUsage::by_local_port`]; the busiest are kept.
pub const MAX_PORT_COUNTS: usize = 100;

fn tcp_state(s: netstat2::TcpState) -> TcpState {
    use netstat2::TcpState as N;
    match s {
        N::Closed => TcpState::Close,
        N::Listen => TcpState::Listen,
        N::SynSent => TcpState::SynSent,
        N::SynReceived => TcpState::SynRecv,
        N::Established => TcpState::Established,
        N::FinWait1 => TcpState::FinWait1,
        N::FinWait2 => TcpState::FinWait2,
        N::CloseWait => TcpState::CloseWait,
        N::Closing => TcpState::Closing,
        N::LastAck => TcpState::LastAck,
        N::TimeWait => TcpState::TimeWait,
        N::DeleteTcb => TcpState::DeleteTcb,
        N::Unknown => TcpState::Unknown,
    }
}

/// Converts netstat2's socket to ours.
pub(super) fn connection(info: &SocketInfo, pid: Option<u32>) -> ConnectionSample {
    match &info.protocol_socket_info {
        ProtocolSocketInfo::Tcp(t) => ConnectionSample {
            protocol: Protocol::Tcp,
            local_address: t.local_addr,
            local_port: t.local_port,
            // A listening socket's remote side is all zeros: not a peer.
            remote_address: (t.remote_port != 0).then_some(t.remote_addr),
            remote_port: (t.remote_port != 0).then_some(t.remote_port),
            state: Some(tcp_state(t.state)),
            pid,
        },
        ProtocolSocketInfo::Udp(u) => ConnectionSample {
            protocol: Protocol::Udp,
            local_address: u.local_addr,
            local_port: u.local_port,
            remote_address: None,
            remote_port: None,
            state: None,
            pid,
        },
    }
}

/// Sockets per local port, and the ports that accept traffic: listening TCP sockets and
/// UDP sockets without a peer. `names` gives a process's name by pid.
pub(super) fn port_usage(connections: &[ConnectionSample], name_of: impl Fn(u32) -> Option<String>) -> PortUsage {
    // foldhash rather than SipHash: one lookup per socket per tick, on our own data.
    let mut counts: HashMap<(Protocol, u16), u32, foldhash::fast::RandomState> = HashMap::default();
    let mut listening: Vec<ListeningPort> = Vec::new();
    for c in connections {
        *counts.entry((c.protocol, c.local_port)).or_default() += 1;
        let accepts = match c.protocol {
            Protocol::Tcp => c.state == Some(TcpState::Listen),
            Protocol::Udp => c.remote_address.is_none(),
        };
        if accepts {
            listening.push(ListeningPort {
                protocol: c.protocol,
                address: c.local_address,
                port: c.local_port,
                pid: c.pid,
                process_name: c.pid.and_then(&name_of),
            });
        }
    }
    let mut by_local_port: Vec<PortCount> =
        counts.into_iter().map(|((protocol, port), connections)| PortCount { protocol, port, connections }).collect();
    by_local_port.sort_unstable_by(|a, b| {
        b.connections.cmp(&a.connections).then(a.port.cmp(&b.port)).then(a.protocol.cmp(&b.protocol))
    });
    by_local_port.truncate(MAX_PORT_COUNTS);
    listening.sort_unstable_by_key(|l| (l.port, l.protocol, l.address));
    listening.dedup_by(|a, b| (a.port, a.protocol, a.address, a.pid) == (b.port, b.protocol, b.address, b.pid));
    PortUsage { by_local_port, listening }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn tcp(port: u16, state: TcpState, pid: Option<u32>) -> ConnectionSample {
        ConnectionSample {
            protocol: Protocol::Tcp,
            local_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            local_port: port,
            remote_address: (state != TcpState::Listen).then_some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
            remote_port: (state != TcpState::Listen).then_some(40000),
            state: Some(state),
            pid,
        }
    }

    #[test]
    fn counts_ports_busiest_first_and_lists_listeners_with_names() {
        let conns = vec![
            tcp(22, TcpState::Listen, Some(10)),
            tcp(22, TcpState::Established, Some(11)),
            tcp(22, TcpState::Established, Some(12)),
            tcp(80, TcpState::Listen, None),
            tcp(5000, TcpState::TimeWait, None),
        ];
        let usage = port_usage(&conns, |pid| (pid == 10).then(|| "sshd".to_owned()));
        assert_eq!(usage.by_local_port[0], PortCount { protocol: Protocol::Tcp, port: 22, connections: 3 });
        assert_eq!(usage.by_local_port.len(), 3);
        assert_eq!(usage.listening.len(), 2);
        assert_eq!(usage.listening[0].port, 22);
        assert_eq!(usage.listening[0].process_name.as_deref(), Some("sshd"));
        assert_eq!(usage.listening[1].port, 80);
        assert_eq!(usage.listening[1].pid, None);
    }

    #[test]
    fn keeps_only_the_busiest_ports() {
        let conns: Vec<_> = (1..=(MAX_PORT_COUNTS as u16 + 20)).map(|p| tcp(p, TcpState::Established, None)).collect();
        assert_eq!(port_usage(&conns, |_| None).by_local_port.len(), MAX_PORT_COUNTS);
    }
}
