//! The fleet's network map: which process talks to which, joined across hosts.
//!
//! Every host reports its sockets with their owning processes, so a connection from a
//! process on host A to an address and port is joined to the process on host B that
//! listens there:
//!
//! - a host's **addresses** are the non-loopback local addresses of its processes'
//!   sockets (a snapshot carries no interface addresses; a server's accepted sockets and
//!   a client's outgoing ones show them). A listener on `0.0.0.0` or `::` listens on
//!   each of them;
//! - a connection to a **non-loopback** address is joined to a listener of that
//!   address and port on any host, the connecting host's own first. When several hosts
//!   listen there (a private address reused on two sites), the one holding the other
//!   end of the connection (the same four addresses and ports, swapped) wins; otherwise
//!   the address is treated as outside the fleet;
//! - a connection to a **loopback** address joins only within its own host;
//! - the **accepted** side of a connection (a socket on a listening port) makes no
//!   edge of its own when the other end is seen on a monitored host (that end makes
//!   it); otherwise its peer is an outside address (or a host's unknown process) and the
//!   edge comes in from there;
//! - an address outside the fleet is **one node** whatever its ports and processes
//!   (no reverse DNS: the address is the name).
//!
//! Sockets without a known owner (no permission, `TIME_WAIT`) are left out: they can
//! be joined to nothing. Connections are grouped into edges per (source, target,
//! protocol, target port, state) with a count. The answer is bounded ([`Limits`]):
//! edges between hosts first, then within hosts, then to outside addresses, the
//! busiest first in each, and [`NetworkMap::omitted`] says what did not fit.
//!
//! Over a range, each host's sockets are the union of those seen in the snapshots read
//! ([`HostSockets::add`]); a connection that closed within the range is still there.
//! This module is pure: which snapshots are read (the hub's live ones, or the store's)
//! is the REST adapter's (`server::network_map`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use chrono::{DateTime, Utc};

use crate::model::details::ContainerRef;
use crate::model::netmap::{MapEdge, MapHost, MapNode, MapNodeKind, MapOmitted, NetworkMap};
use crate::model::{Protocol, Snapshot, TcpState};

/// Most distinct sockets kept per host over a range: a busy host's union stays bounded.
pub const MAX_SOCKETS_PER_HOST: usize = 100_000;

/// How large a map may get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most nodes.
    pub nodes: usize,
    /// Most edges.
    pub edges: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { nodes: 5_000, edges: 5_000 }
    }
}

/// One socket with a known owner, as the join needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Socket {
    protocol: Protocol,
    local: IpAddr,
    local_port: u16,
    remote: Option<(IpAddr, u16)>,
    state: Option<TcpState>,
    pid: u32,
}

impl Socket {
    /// A socket that accepts traffic: a TCP listener, or a UDP socket bound but not
    /// connected.
    fn listens(&self) -> bool {
        match self.protocol {
            Protocol::Tcp => self.state == Some(TcpState::Listen),
            Protocol::Udp => self.remote.is_none(),
        }
    }
}

/// What the map shows of a process.
#[derive(Clone, Debug, PartialEq)]
struct ProcessInfo {
    name: String,
    user: Option<String>,
    start_time: Option<DateTime<Utc>>,
    container: Option<ContainerRef>,
}

/// One host's sockets with known owners and the processes that own them, from one
/// snapshot or the union of several.
#[derive(Clone, Debug)]
pub struct HostSockets {
    hostname: String,
    snapshots: u32,
    taken_at: DateTime<Utc>,
    sockets: HashSet<Socket>,
    processes: HashMap<u32, ProcessInfo>,
    /// Sockets left out past [`MAX_SOCKETS_PER_HOST`].
    dropped: u64,
}

/// An IPv4 address written as IPv6 (`::ffff:10.0.0.1`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl HostSockets {
    /// The sockets of one snapshot.
    pub fn from_snapshot(snapshot: &Snapshot) -> HostSockets {
        let mut host = HostSockets {
            hostname: snapshot.host.hostname.clone(),
            snapshots: 0,
            taken_at: snapshot.taken_at,
            sockets: HashSet::new(),
            processes: HashMap::new(),
            dropped: 0,
        };
        host.add(snapshot);
        host
    }

    /// Adds the sockets of another snapshot of the same host (a range's union). A pid
    /// seen with several processes keeps the newest snapshot's.
    pub fn add(&mut self, snapshot: &Snapshot) {
        self.snapshots += 1;
        let newer = snapshot.taken_at >= self.taken_at;
        self.taken_at = self.taken_at.max(snapshot.taken_at);
        let mut owners = HashSet::new();
        for c in &snapshot.connections {
            let Some(pid) = c.pid else { continue };
            let socket = Socket {
                protocol: c.protocol,
                local: canonical(c.local_address),
                local_port: c.local_port,
                remote: match (c.remote_address, c.remote_port) {
                    (Some(ip), Some(port)) if !ip.is_unspecified() => Some((canonical(ip), port)),
                    _ => None,
                },
                state: c.state,
                pid,
            };
            if self.sockets.len() >= MAX_SOCKETS_PER_HOST && !self.sockets.contains(&socket) {
                self.dropped += 1;
                continue;
            }
            self.sockets.insert(socket);
            owners.insert(pid);
        }
        for p in &snapshot.processes {
            if owners.contains(&p.pid) && (newer || !self.processes.contains_key(&p.pid)) {
                let info = ProcessInfo {
                    name: p.name.clone(),
                    user: p.user.clone(),
                    start_time: p.start_time,
                    container: p.container.clone(),
                };
                self.processes.insert(p.pid, info);
            }
        }
    }

    /// Adds what `other` (the same host's sockets from other snapshots) holds.
    pub fn merge(&mut self, other: HostSockets) {
        let newer = other.taken_at >= self.taken_at;
        self.snapshots += other.snapshots;
        self.taken_at = self.taken_at.max(other.taken_at);
        self.dropped += other.dropped;
        for socket in other.sockets {
            if self.sockets.len() >= MAX_SOCKETS_PER_HOST && !self.sockets.contains(&socket) {
                self.dropped += 1;
            } else {
                self.sockets.insert(socket);
            }
        }
        for (pid, info) in other.processes {
            if newer || !self.processes.contains_key(&pid) {
                self.processes.insert(pid, info);
            }
        }
    }

    /// The host's name.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }
}

/// Where a listener is: a host and the owning pid.
type Owner = (usize, u32);

/// What the join knows about every host at once.
struct Index {
    /// Each host's own non-loopback addresses.
    addresses: Vec<BTreeSet<IpAddr>>,
    /// Each host's listeners by (protocol, address, port); wildcard ones under the
    /// unspecified address of their family.
    listeners: Vec<HashMap<(Protocol, IpAddr, u16), u32>>,
    /// Non-loopback listeners of the whole fleet, wildcards spread over their host's
    /// addresses.
    fleet: HashMap<(Protocol, IpAddr, u16), Vec<Owner>>,
    /// Which hosts have an address.
    address_hosts: HashMap<IpAddr, Vec<usize>>,
    /// Every connected socket by its four addresses and ports: finds the other end.
    ends: HashMap<(Protocol, IpAddr, u16, IpAddr, u16), usize>,
}

impl Index {
    fn new(hosts: &[HostSockets]) -> Index {
        let mut addresses = Vec::with_capacity(hosts.len());
        let mut listeners = Vec::with_capacity(hosts.len());
        let mut ends = HashMap::new();
        for (h, host) in hosts.iter().enumerate() {
            let mut own = BTreeSet::new();
            let mut listening = HashMap::new();
            for s in &host.sockets {
                if !s.local.is_loopback() && !s.local.is_unspecified() {
                    own.insert(s.local);
                }
                if s.listens() {
                    // Two processes on one port (SO_REUSEPORT): the lowest pid stands for it.
                    let pid = listening.entry((s.protocol, s.local, s.local_port)).or_insert(s.pid);
                    *pid = (*pid).min(s.pid);
                } else if let Some((ip, port)) = s.remote {
                    ends.insert((s.protocol, s.local, s.local_port, ip, port), h);
                }
            }
            addresses.push(own);
            listeners.push(listening);
        }
        let mut fleet: HashMap<_, Vec<Owner>> = HashMap::new();
        let mut address_hosts: HashMap<IpAddr, Vec<usize>> = HashMap::new();
        for (h, own) in addresses.iter().enumerate() {
            for ip in own {
                address_hosts.entry(*ip).or_default().push(h);
            }
            for (&(protocol, ip, port), &pid) in &listeners[h] {
                if ip.is_loopback() {
                    continue;
                }
                if ip.is_unspecified() {
                    for &own_ip in own.iter().filter(|own_ip| wildcard_covers(ip, **own_ip)) {
                        fleet.entry((protocol, own_ip, port)).or_default().push((h, pid));
                    }
                } else {
                    fleet.entry((protocol, ip, port)).or_default().push((h, pid));
                }
            }
        }
        for owners in fleet.values_mut() {
            owners.sort_unstable();
            owners.dedup_by_key(|o| o.0);
        }
        Index { addresses, listeners, fleet, address_hosts, ends }
    }

    /// The pid listening on host `h` at `ip`:`port`, on that address or a wildcard.
    fn listener(&self, h: usize, protocol: Protocol, ip: IpAddr, port: u16) -> Option<u32> {
        let listening = &self.listeners[h];
        listening.get(&(protocol, ip, port)).copied().or_else(|| {
            let v4 = IpAddr::from([0, 0, 0, 0]);
            let v6 = IpAddr::from([0u16; 8]);
            // `::` also takes IPv4 (dual stack, Linux's default).
            let wildcards: &[IpAddr] = if ip.is_ipv4() { &[v4, v6] } else { &[v6] };
            wildcards.iter().find_map(|w| listening.get(&(protocol, *w, port)).copied())
        })
    }

    /// The host that holds the other end of `s`, if a monitored one does.
    fn other_end(&self, s: &Socket) -> Option<usize> {
        let (ip, port) = s.remote?;
        self.ends.get(&(s.protocol, ip, port, s.local, s.local_port)).copied()
    }

    /// The one host with this address, if exactly one has it.
    fn host_with(&self, ip: IpAddr) -> Option<usize> {
        match self.address_hosts.get(&ip).map(Vec::as_slice) {
            Some([h]) => Some(*h),
            _ => None,
        }
    }
}

/// Whether a listener on the unspecified address `wildcard` takes traffic for `ip`.
fn wildcard_covers(wildcard: IpAddr, ip: IpAddr) -> bool {
    wildcard.is_ipv6() || ip.is_ipv4()
}

/// A node's key before it gets its id: sorts hosts' nodes by name and pid, outside
/// addresses last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum NodeKey {
    Process(usize, u32),
    Host(usize),
    External(IpAddr),
}

impl NodeKey {
    fn host(self) -> Option<usize> {
        match self {
            NodeKey::Process(h, _) | NodeKey::Host(h) => Some(h),
            NodeKey::External(_) => None,
        }
    }
}

/// An edge's key: connections between the same two nodes to the same port in the same
/// state are one edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct EdgeKey {
    source: NodeKey,
    target: NodeKey,
    protocol: Protocol,
    port: u16,
    state: Option<TcpState>,
}

/// Connections of one edge so far.
#[derive(Clone, Copy, Debug)]
struct EdgeTally {
    count: u32,
    /// The one source port seen, `None` once two differ.
    local_port: Option<u16>,
}

/// Builds the map of `hosts` (each at most once), keeping within `limits`.
pub fn build(hosts: &[HostSockets], limits: Limits) -> NetworkMap {
    let index = Index::new(hosts);
    let mut edges: HashMap<EdgeKey, EdgeTally> = HashMap::new();
    let mut add = |source: NodeKey, target: NodeKey, protocol, local_port: u16, port, state| {
        let key = EdgeKey { source, target, protocol, port, state };
        let tally = edges.entry(key).or_insert(EdgeTally { count: 0, local_port: Some(local_port) });
        tally.count = tally.count.saturating_add(1);
        if tally.local_port != Some(local_port) {
            tally.local_port = None;
        }
    };

    for (a, host) in hosts.iter().enumerate() {
        for s in &host.sockets {
            let Some((remote, remote_port)) = s.remote else { continue };
            if s.listens() {
                continue;
            }
            let me = NodeKey::Process(a, s.pid);
            let accepted = index.listener(a, s.protocol, s.local, s.local_port).is_some();
            if accepted {
                // The server's end: the client's end makes the edge when it is seen (on
                // this host, for loopback: another host's loopback is another machine).
                match index.other_end(s) {
                    Some(h) if h == a || !remote.is_loopback() => continue,
                    _ => {}
                }
                let peer = if remote.is_loopback() {
                    NodeKey::Host(a)
                } else {
                    index.host_with(remote).map_or(NodeKey::External(remote), NodeKey::Host)
                };
                add(peer, me, s.protocol, remote_port, s.local_port, s.state);
                continue;
            }
            let target = if remote.is_loopback() {
                // Loopback joins only within the host.
                index
                    .listener(a, s.protocol, remote, remote_port)
                    .map_or(NodeKey::Host(a), |pid| NodeKey::Process(a, pid))
            } else {
                match index.fleet.get(&(s.protocol, remote, remote_port)).map(Vec::as_slice) {
                    Some(owners) => {
                        let pick = owners
                            .iter()
                            .find(|o| o.0 == a)
                            .or_else(|| if owners.len() == 1 { owners.first() } else { None })
                            .or_else(|| index.other_end(s).and_then(|h| owners.iter().find(|o| o.0 == h)));
                        match pick {
                            Some(&(b, pid)) => NodeKey::Process(b, pid),
                            None => NodeKey::External(remote),
                        }
                    }
                    None => index.host_with(remote).map_or(NodeKey::External(remote), NodeKey::Host),
                }
            };
            add(me, target, s.protocol, s.local_port, remote_port, s.state);
        }
    }

    let mut omitted = MapOmitted::default();
    let mut notes = Vec::new();
    let dropped: u64 = hosts.iter().map(|h| h.dropped).sum();
    if dropped > 0 {
        omitted.sockets = dropped;
        notes.push(format!(
            "{dropped} sockets were left out: a host had more than {MAX_SOCKETS_PER_HOST} distinct ones."
        ));
    }

    // Between hosts first, then within one, then outside; the busiest first in each.
    let rank = |k: &EdgeKey| match (k.source.host(), k.target.host()) {
        (Some(x), Some(y)) if x != y => 0,
        (Some(_), Some(_)) => 1,
        _ => 2,
    };
    let mut ordered: Vec<(EdgeKey, EdgeTally)> = edges.into_iter().collect();
    ordered.sort_by(|(ka, ta), (kb, tb)| rank(ka).cmp(&rank(kb)).then(tb.count.cmp(&ta.count)).then(ka.cmp(kb)));
    let all_nodes: HashSet<NodeKey> = ordered.iter().flat_map(|(k, _)| [k.source, k.target]).collect();

    let mut kept_nodes: BTreeSet<NodeKey> = BTreeSet::new();
    let mut kept_edges = Vec::new();
    for (key, tally) in ordered {
        let new_nodes = [key.source, key.target].iter().filter(|n| !kept_nodes.contains(n)).count()
            - usize::from(key.source == key.target && !kept_nodes.contains(&key.source));
        if kept_edges.len() >= limits.edges || kept_nodes.len() + new_nodes > limits.nodes {
            omitted.edges += 1;
            omitted.connections += u64::from(tally.count);
            continue;
        }
        kept_nodes.insert(key.source);
        kept_nodes.insert(key.target);
        kept_edges.push((key, tally));
    }
    omitted.nodes = u32::try_from(all_nodes.len() - kept_nodes.len()).unwrap_or(u32::MAX);
    if omitted.edges > 0 {
        notes.push(format!(
            "{} edges ({} connections) and {} nodes were left out to keep within {} edges and {} nodes; \
             narrow the hosts to see them.",
            omitted.edges, omitted.connections, omitted.nodes, limits.edges, limits.nodes
        ));
    }

    let listening: Vec<BTreeMap<u32, BTreeSet<u16>>> = hosts
        .iter()
        .map(|h| {
            let mut by_pid: BTreeMap<u32, BTreeSet<u16>> = BTreeMap::new();
            for s in h.sockets.iter().filter(|s| s.listens()) {
                by_pid.entry(s.pid).or_default().insert(s.local_port);
            }
            by_pid
        })
        .collect();
    let id = |n: NodeKey| match n {
        NodeKey::Process(h, pid) => format!("process:{}:{pid}", hosts[h].hostname),
        NodeKey::Host(h) => format!("host:{}", hosts[h].hostname),
        NodeKey::External(ip) => format!("external:{ip}"),
    };
    let mut nodes: Vec<MapNode> = kept_nodes
        .iter()
        .map(|&n| {
            let blank = MapNode {
                id: id(n),
                kind: MapNodeKind::External,
                hostname: n.host().map(|h| hosts[h].hostname.clone()),
                pid: None,
                name: String::new(),
                user: None,
                start_time: None,
                address: None,
                listening_ports: Vec::new(),
                container: None,
            };
            match n {
                NodeKey::Process(h, pid) => {
                    let info = hosts[h].processes.get(&pid);
                    MapNode {
                        kind: MapNodeKind::Process,
                        pid: Some(pid),
                        name: info.map_or_else(|| format!("pid {pid}"), |i| i.name.clone()),
                        user: info.and_then(|i| i.user.clone()),
                        start_time: info.and_then(|i| i.start_time),
                        container: info.and_then(|i| i.container.clone()),
                        listening_ports: listening[h]
                            .get(&pid)
                            .map(|p| p.iter().copied().collect())
                            .unwrap_or_default(),
                        ..blank
                    }
                }
                NodeKey::Host(h) => MapNode { kind: MapNodeKind::Host, name: hosts[h].hostname.clone(), ..blank },
                NodeKey::External(ip) => MapNode { name: ip.to_string(), address: Some(ip.to_string()), ..blank },
            }
        })
        .collect();
    // By host name, then pid; the host's own node first; outside addresses last.
    nodes.sort_by(|x, y| {
        (x.hostname.is_none(), &x.hostname, x.kind != MapNodeKind::Host, x.pid, &x.name).cmp(&(
            y.hostname.is_none(),
            &y.hostname,
            y.kind != MapNodeKind::Host,
            y.pid,
            &y.name,
        ))
    });
    let edges = kept_edges
        .into_iter()
        .map(|(k, t)| MapEdge {
            source: id(k.source),
            target: id(k.target),
            protocol: k.protocol,
            local_port: t.local_port,
            remote_port: k.port,
            state: k.state,
            count: t.count,
            cross_host: matches!((k.source.host(), k.target.host()), (Some(x), Some(y)) if x != y),
        })
        .collect();
    let mut map_hosts: Vec<MapHost> = hosts
        .iter()
        .enumerate()
        .map(|(h, host)| MapHost {
            hostname: host.hostname.clone(),
            snapshots: host.snapshots,
            taken_at: host.taken_at,
            addresses: index.addresses[h].iter().map(IpAddr::to_string).collect(),
        })
        .collect();
    map_hosts.sort_by(|x, y| x.hostname.cmp(&y.hostname));
    let truncated = omitted != MapOmitted::default();
    NetworkMap { live: false, from: None, to: None, hosts: map_hosts, nodes, edges, truncated, omitted, notes }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::{ConnectionSample, ProcessSample};

    /// A snapshot of `hostname` with made-up processes and sockets in place of its own.
    fn host(hostname: &str, processes: &[(u32, &str)], sockets: &[(&str, &str, Option<TcpState>, u32)]) -> Snapshot {
        let mut s = crate::sample::Sampler::new(Default::default()).sample();
        s.host.hostname = hostname.into();
        let template = s.processes.first().cloned().unwrap();
        s.processes =
            processes.iter().map(|&(pid, name)| ProcessSample { pid, name: name.into(), ..template.clone() }).collect();
        let addr = |a: &str| -> (IpAddr, u16) {
            let sa: std::net::SocketAddr = a.parse().unwrap();
            (sa.ip(), sa.port())
        };
        s.connections = sockets
            .iter()
            .map(|&(local, remote, state, pid)| {
                let (la, lp) = addr(local);
                let remote = (!remote.is_empty()).then(|| addr(remote));
                ConnectionSample {
                    protocol: Protocol::Tcp,
                    local_address: la,
                    local_port: lp,
                    remote_address: remote.map(|r| r.0),
                    remote_port: remote.map(|r| r.1),
                    state,
                    pid: Some(pid),
                }
            })
            .collect();
        s
    }

    const L: Option<TcpState> = Some(TcpState::Listen);
    const E: Option<TcpState> = Some(TcpState::Established);

    fn map(snapshots: &[Snapshot]) -> NetworkMap {
        let hosts: Vec<HostSockets> = snapshots.iter().map(HostSockets::from_snapshot).collect();
        build(&hosts, Limits::default())
    }

    fn pairs(m: &NetworkMap) -> Vec<(String, String, u16, u32)> {
        m.edges.iter().map(|e| (e.source.clone(), e.target.clone(), e.remote_port, e.count)).collect()
    }

    #[test]
    fn a_connection_between_hosts_is_one_edge_between_their_processes() {
        let a = host("a", &[(10, "psql")], &[("10.0.0.1:40000", "10.0.0.2:5432", E, 10)]);
        let b =
            host("b", &[(20, "postgres")], &[("0.0.0.0:5432", "", L, 20), ("10.0.0.2:5432", "10.0.0.1:40000", E, 20)]);
        let m = map(&[a, b]);
        assert_eq!(pairs(&m), [("process:a:10".into(), "process:b:20".into(), 5432, 1)]);
        assert!(m.edges[0].cross_host && m.edges[0].local_port == Some(40000));
        assert_eq!(m.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["psql", "postgres"]);
        assert_eq!(m.nodes[1].listening_ports, [5432]);
        assert_eq!(m.hosts[1].addresses, ["10.0.0.2"]);
        assert!(!m.truncated);
    }

    #[test]
    fn process_nodes_carry_their_container() {
        let mut b =
            host("b", &[(20, "postgres")], &[("0.0.0.0:5432", "", L, 20), ("10.0.0.2:5432", "10.0.0.1:40000", E, 20)]);
        let db = ContainerRef {
            runtime: crate::model::details::ContainerRuntime::Docker,
            id: "3f4e8a1c9b2d".repeat(4),
            pod: None,
            name: Some("db".into()),
        };
        b.processes[0].container = Some(db.clone());
        let a = host("a", &[(10, "psql")], &[("10.0.0.1:40000", "10.0.0.2:5432", E, 10)]);
        let m = map(&[a, b]);
        assert_eq!(m.nodes.iter().map(|n| n.container.clone()).collect::<Vec<_>>(), [None, Some(db)]);
        let json = serde_json::to_value(&m.nodes[0]).unwrap();
        assert!(json.get("container").is_none(), "absent, not null, outside containers");
    }

    #[test]
    fn loopback_joins_only_within_a_host() {
        // Both hosts have a server on 127.0.0.1:6379; each client reaches its own.
        let a = host(
            "a",
            &[(1, "app"), (2, "redis")],
            &[
                ("127.0.0.1:6379", "", L, 2),
                ("127.0.0.1:50000", "127.0.0.1:6379", E, 1),
                ("127.0.0.1:6379", "127.0.0.1:50000", E, 2),
            ],
        );
        let b = host("b", &[(3, "redis")], &[("127.0.0.1:6379", "", L, 3)]);
        let c = host("c", &[(4, "app")], &[("127.0.0.1:50001", "127.0.0.1:6379", E, 4)]);
        let m = map(&[a, b, c]);
        assert_eq!(
            pairs(&m),
            [
                ("process:a:1".into(), "process:a:2".into(), 6379, 1),
                // c has no listener there: its unknown process, never b's.
                ("process:c:4".into(), "host:c".into(), 6379, 1),
            ]
        );
        assert!(m.edges.iter().all(|e| !e.cross_host));
    }

    #[test]
    fn outside_addresses_are_one_node_each_and_inbound_clients_come_in() {
        let a = host(
            "a",
            &[(1, "nginx"), (2, "curl")],
            &[
                ("0.0.0.0:443", "", L, 1),
                ("10.0.0.1:443", "203.0.113.5:1000", E, 1),
                ("10.0.0.1:443", "203.0.113.5:1001", E, 1),
                ("10.0.0.1:443", "203.0.113.6:1000", E, 1),
                ("10.0.0.1:41000", "198.51.100.1:443", E, 2),
                ("10.0.0.1:41001", "198.51.100.1:80", E, 2),
            ],
        );
        let m = map(&[a]);
        let mut got = pairs(&m);
        got.sort();
        assert_eq!(
            got,
            [
                ("external:203.0.113.5".into(), "process:a:1".into(), 443, 2),
                ("external:203.0.113.6".into(), "process:a:1".into(), 443, 1),
                ("process:a:2".into(), "external:198.51.100.1".into(), 80, 1),
                ("process:a:2".into(), "external:198.51.100.1".into(), 443, 1),
            ]
        );
        let outside: Vec<_> = m.nodes.iter().filter(|n| n.kind == MapNodeKind::External).collect();
        assert_eq!(outside.len(), 3);
        assert!(outside.iter().all(|n| n.hostname.is_none() && n.address.as_deref() == Some(n.name.as_str())));
        // The edge of two connections from two ports has no one local port.
        let two = m.edges.iter().find(|e| e.count == 2).unwrap();
        assert_eq!(two.local_port, None);
    }

    #[test]
    fn a_reused_private_address_is_told_apart_by_the_other_end() {
        // Two hosts listen on 172.17.0.1:8080; the client's peer socket is on b.
        let a = host("a", &[(1, "api")], &[("172.17.0.1:8080", "", L, 1), ("172.17.0.1:9", "172.17.0.9:9", E, 1)]);
        let b =
            host("b", &[(2, "api")], &[("172.17.0.1:8080", "", L, 2), ("172.17.0.1:8080", "172.17.0.5:33000", E, 2)]);
        let c = host("c", &[(3, "client")], &[("172.17.0.5:33000", "172.17.0.1:8080", E, 3)]);
        let m = map(&[a, b, c]);
        let e = m.edges.iter().find(|e| e.source == "process:c:3").unwrap();
        assert_eq!(e.target, "process:b:2");
    }

    #[test]
    fn a_range_is_the_union_of_its_snapshots() {
        let before = host(
            "a",
            &[(1, "app"), (2, "db")],
            &[("127.0.0.1:5432", "", L, 2), ("127.0.0.1:50000", "127.0.0.1:5432", E, 1)],
        );
        let after = host("a", &[(2, "db")], &[("127.0.0.1:5432", "", L, 2)]);
        let mut union = HostSockets::from_snapshot(&before);
        union.add(&after);
        let m = build(&[union], Limits::default());
        assert_eq!(pairs(&m), [("process:a:1".into(), "process:a:2".into(), 5432, 1)]);
        assert_eq!(m.hosts[0].snapshots, 2);
        assert!(map(&[after]).edges.is_empty());
    }

    #[test]
    fn the_map_stays_within_its_limits_and_says_what_it_left_out() {
        let sockets: Vec<(String, String)> =
            (0..50u16).map(|i| (format!("10.0.0.1:{}", 40000 + i), format!("198.51.100.{i}:443"))).collect();
        let sockets: Vec<(&str, &str, Option<TcpState>, u32)> =
            sockets.iter().map(|(l, r)| (l.as_str(), r.as_str(), E, 1)).collect();
        let a = host("a", &[(1, "crawler")], &sockets);
        let m = build(&[HostSockets::from_snapshot(&a)], Limits { nodes: 11, edges: 100 });
        assert_eq!(m.nodes.len(), 11);
        assert_eq!(m.edges.len(), 10);
        assert!(m.truncated);
        assert_eq!((m.omitted.edges, m.omitted.nodes, m.omitted.connections), (40, 40, 40));
        assert!(m.notes[0].contains("40 edges"), "{:?}", m.notes);
        let m = build(&[HostSockets::from_snapshot(&a)], Limits { nodes: 1000, edges: 5 });
        assert_eq!((m.edges.len(), m.omitted.edges), (5, 45));
    }

    #[test]
    fn hostile_names_are_data() {
        let a = host(
            "<img src=x onerror=alert(1)>",
            &[(1, "\"; DROP TABLE x; --")],
            &[("10.0.0.1:1", "198.51.100.1:2", E, 1)],
        );
        let m = map(&[a]);
        assert_eq!(m.nodes[0].name, "\"; DROP TABLE x; --");
        assert_eq!(m.nodes[0].id, "process:<img src=x onerror=alert(1)>:1");
    }
}
