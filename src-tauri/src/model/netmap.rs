//! The network map's answer (`GET /api/network-map`): which process talks to which,
//! across the fleet. [`crate::netmap`] builds it from snapshots; these are its types.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ts_rs::TS;
use utoipa::ToSchema;

use super::details::ContainerRef;
use super::{Protocol, TcpState};

/// The map: processes and outside addresses as nodes, connections as edges.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct NetworkMap {
    /// Live (each host's newest snapshot held in memory), or as of the stored history
    /// of `from`..`to`.
    pub live: bool,
    /// Start of the range read (`null` when live).
    pub from: Option<DateTime<Utc>>,
    /// End of the range read, or the moment (`null` when live).
    pub to: Option<DateTime<Utc>>,
    /// The hosts read, by name.
    pub hosts: Vec<MapHost>,
    /// Nodes with at least one edge, by host name then pid; outside addresses last.
    pub nodes: Vec<MapNode>,
    /// Edges, busiest first within cross-host, same-host and outside edges.
    pub edges: Vec<MapEdge>,
    /// Something was left out to keep the answer bounded (see `omitted` and `notes`).
    pub truncated: bool,
    /// What was left out.
    pub omitted: MapOmitted,
    /// What was left out or guessed, in words.
    pub notes: Vec<String>,
}

/// A host whose snapshots went into a map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct MapHost {
    /// Host name.
    pub hostname: String,
    /// Snapshots of it read (1 when live or at a moment; more over a range).
    pub snapshots: u32,
    /// When the newest snapshot read was taken.
    pub taken_at: DateTime<Utc>,
    /// Its own non-loopback addresses, as seen on its processes' sockets (what remote
    /// connections are matched on).
    pub addresses: Vec<String>,
}

/// What a node stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, TS, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MapNodeKind {
    /// A process of a monitored host.
    Process,
    /// A monitored host whose process behind a socket is not known (no listener with a
    /// known owner on the address and port connected to).
    Host,
    /// An address outside the fleet (every port and process behind it as one node).
    External,
}

/// One node of the map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct MapNode {
    /// Unique in the answer: `process:HOST:PID`, `host:HOST` or `external:ADDRESS`.
    pub id: String,
    /// What it stands for.
    pub kind: MapNodeKind,
    /// The monitored host (`null` for outside addresses).
    pub hostname: Option<String>,
    /// The process id (processes only).
    pub pid: Option<u32>,
    /// Process name, host name, or the address.
    pub name: String,
    /// The process's owner, when known.
    pub user: Option<String>,
    /// The process's start time, when known (names it with the pid).
    pub start_time: Option<DateTime<Utc>>,
    /// The outside address (outside nodes only).
    pub address: Option<String>,
    /// Ports this process listens on (TCP) or is bound to (UDP), as seen.
    pub listening_ports: Vec<u16>,
    /// The container the process runs in, when it is in one: the dashboard can draw
    /// one node per container. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub container: Option<ContainerRef>,
}

/// Connections between two nodes to one port in one state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct MapEdge {
    /// The connecting side's node id (the client).
    pub source: String,
    /// The listening side's node id (the server).
    pub target: String,
    /// Transport protocol.
    pub protocol: Protocol,
    /// The source's port, when every connection of the edge used the same one (`null`
    /// when it stands for several).
    pub local_port: Option<u16>,
    /// The port the target listens on.
    pub remote_port: u16,
    /// TCP state (`null` for UDP).
    pub state: Option<TcpState>,
    /// Connections (sockets) it stands for; over a range, the distinct ones seen.
    pub count: u32,
    /// Source and target are on two monitored hosts.
    pub cross_host: bool,
}

/// What a map left out to stay bounded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct MapOmitted {
    /// Nodes not returned.
    pub nodes: u32,
    /// Edges not returned.
    pub edges: u32,
    /// Connections of the edges not returned.
    #[ts(type = "number")]
    pub connections: u64,
    /// Hosts not read (past the limit of hosts).
    pub hosts: u32,
    /// Snapshots of the range not read (a long range is read at evenly spaced
    /// snapshots).
    #[ts(type = "number")]
    pub snapshots: u64,
    /// Sockets not joined: their host had more than a map keeps per host.
    #[ts(type = "number")]
    pub sockets: u64,
}
