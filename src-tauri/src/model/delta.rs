//! Snapshot deltas: the difference between two snapshots of one host, and how to
//! rebuild the newer one from the older one and the difference.
//!
//! Consecutive snapshots of a machine differ little: most processes and sockets are the
//! same, and of a process only a few figures move (CPU share, resident memory). A
//! [`SnapshotDelta`] carries just that, so a steady stream of snapshots costs a fraction
//! of sending each one whole. The agent uplink and the live WebSockets use it; whoever
//! applies a delta must hold its base, named by host and seq.
//!
//! Rebuilding is exact: [`SnapshotDelta::apply`] returns a snapshot equal to the one
//! [`SnapshotDelta::between`] was given, float bits and list order included, so a delta
//! can stand in for the full snapshot anywhere.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use ts_rs::TS;

use super::details::ContainerRef;
use super::{
    BatterySample, ConnectionSample, CpuSample, DiskSample, DomainError, FanSample, FilesystemSample, GpuSample,
    HostInfo, ListeningPort, MemorySample, NetworkSample, PortCount, ProcessSample, ProcessStatus, Protocol, Snapshot,
    TcpState, TemperatureSample,
};

/// The difference between a base snapshot and the next one of the same host.
///
/// # JSON format
///
/// One JSON object. `hostname`, `host_id` and `base_seq` name the base: a reader that
/// does not hold exactly that snapshot must not apply the delta (it asks for a full
/// snapshot instead). `seq`, `schema_version`, `taken_at` and `interval_ms` are the new
/// snapshot's own.
///
/// The small parts (`host`, `cpu`, `memory`, `network`, `errors`, `gpus`, and the host
/// in depth: `filesystems`, `disks`, `temperatures`, `fans`, `batteries`) are either
/// absent (unchanged from the base) or present whole; one of the host-in-depth parts
/// that became unknown is present as `null`. The lists are edited:
///
/// - `processes`: keyed by `(pid, start_time)` (a start time may be `null`, in uploads
///   that do not give one: the pid alone then, unique in a snapshot). `removed` lists the keys of base processes
///   that are gone; `changed` lists, for processes in both, their key and only the fields
///   whose value differs (a nullable field that became `null` is present as `null`);
///   `added` gives whole processes with `at`, their index in the new list.
/// - `connections`, `ports.by_local_port`, `ports.listening`: compared by value (a socket
///   whose state changed is one removed and one added). `removed` lists values to take
///   out of the base list (every copy of each), `added` values with their new index.
///
/// To rebuild a list: drop the removed entries from the base list (the others keep their
/// order), patch the changed ones, then insert each added entry at its `at`, in
/// increasing `at` order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct SnapshotDelta {
    /// The host's name in the base (and the new snapshot, unless `host` says otherwise).
    pub hostname: String,
    /// The host's id in the base.
    pub host_id: String,
    /// The seq of the base snapshot.
    #[ts(type = "number")]
    pub base_seq: u64,
    /// The new snapshot's seq.
    #[ts(type = "number")]
    pub seq: u64,
    /// The new snapshot's schema version.
    pub schema_version: u32,
    /// When the new snapshot was taken.
    #[serde(with = "super::wire::time")]
    #[ts(as = "DateTime<Utc>")]
    pub taken_at: DateTime<Utc>,
    /// The new snapshot's interval, in ms.
    #[ts(type = "number")]
    pub interval_ms: u64,
    /// The host, when it differs from the base's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub host: Option<HostInfo>,
    /// Processor use, when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub cpu: Option<CpuSample>,
    /// Memory, when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub memory: Option<MemorySample>,
    /// Edits to the process list.
    pub processes: ProcessesDelta,
    /// Edits to the socket list.
    pub connections: ListDelta<ConnectionSample>,
    /// Network counters, when they differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub network: Option<NetworkSample>,
    /// Edits to the port usage lists.
    pub ports: PortsDelta,
    /// The unmeasured parts, when they differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub errors: Option<Vec<DomainError>>,
    /// The GPUs, when they differ (an empty list: the new snapshot has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub gpus: Option<Vec<GpuSample>>,
    /// Filesystems, when they differ (`null`: no longer known).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[ts(optional)]
    pub filesystems: Option<Option<Vec<FilesystemSample>>>,
    /// Disk I/O, when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[ts(optional)]
    pub disks: Option<Option<Vec<DiskSample>>>,
    /// Temperatures, when they differ.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[ts(optional)]
    pub temperatures: Option<Option<Vec<TemperatureSample>>>,
    /// Fans, when they differ.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[ts(optional)]
    pub fans: Option<Option<Vec<FanSample>>>,
    /// Batteries, when they differ.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[ts(optional)]
    pub batteries: Option<Option<Vec<BatterySample>>>,
}

/// One message of a live stream that sends deltas (`/ws/process-snapshots/?delta=1`),
/// tagged by `"type"`. The first message for a host is `full`; after that the host's
/// snapshots come as `delta`s against the previous one sent on the same connection. A
/// client that cannot apply a delta (it does not hold its base) must reconnect, which
/// starts again with `full`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveMessage {
    /// A whole snapshot.
    Full {
        /// Stored snapshot id.
        snapshot_id: i64,
        /// The snapshot.
        snapshot: Box<Snapshot>,
    },
    /// The next snapshot, as a delta against the previous one of its host.
    Delta {
        /// Stored snapshot id of the new snapshot.
        snapshot_id: i64,
        /// The delta.
        delta: Box<SnapshotDelta>,
    },
}

/// Names one process: a pid that is reused gets a new start time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
pub struct ProcessKey {
    /// Process id.
    pub pid: u32,
    /// Start time (`null` when the snapshot does not know it).
    #[serde(with = "super::wire::option_time")]
    #[ts(as = "Option<DateTime<Utc>>")]
    pub start_time: Option<DateTime<Utc>>,
}

/// Edits to the process list.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, TS)]
pub struct ProcessesDelta {
    /// Base processes that are gone.
    pub removed: Vec<ProcessKey>,
    /// Processes in both whose fields changed.
    pub changed: Vec<ProcessChange>,
    /// New processes, by their index in the new list.
    pub added: Vec<Placed<ProcessSample>>,
}

/// One entry of a list at its index in the new list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct Placed<T> {
    /// Index in the new list.
    pub at: u32,
    /// The entry.
    pub item: T,
}

/// Edits to a list whose entries are compared by value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct ListDelta<T> {
    /// Values taken out of the base list (every copy).
    pub removed: Vec<T>,
    /// Values put in, by their index in the new list.
    pub added: Vec<Placed<T>>,
}

impl<T> Default for ListDelta<T> {
    fn default() -> Self {
        ListDelta { removed: Vec::new(), added: Vec::new() }
    }
}

/// Edits to [`super::PortUsage`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, TS)]
pub struct PortsDelta {
    /// Edits to `by_local_port`.
    pub by_local_port: ListDelta<PortCount>,
    /// Edits to `listening`.
    pub listening: ListDelta<ListeningPort>,
}

/// The changed fields of one process; an absent field kept its value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, TS)]
pub struct ProcessChange {
    /// Process id (with `start_time`, the key).
    pub pid: u32,
    /// Start time (with `pid`, the key).
    #[serde(with = "super::wire::option_time")]
    #[ts(as = "Option<DateTime<Utc>>")]
    pub start_time: Option<DateTime<Utc>>,
    /// New parent pid.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[ts(optional)]
    pub ppid: Option<Option<u32>>,
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub name: Option<String>,
    /// New command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub cmd: Option<String>,
    /// New owner.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[ts(optional)]
    pub user: Option<Option<String>>,
    /// New state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub status: Option<ProcessStatus>,
    /// New CPU share.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[ts(optional)]
    pub cpu_percent: Option<Option<f32>>,
    /// New memory share.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[ts(optional)]
    pub memory_percent: Option<Option<f32>>,
    /// New resident set size.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[ts(optional, type = "number | null")]
    pub rss_bytes: Option<Option<u64>>,
    /// New virtual size.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[ts(optional, type = "number | null")]
    pub virtual_bytes: Option<Option<u64>>,
    /// New thread count.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[ts(optional)]
    pub threads: Option<Option<u32>>,
    /// New bytes read.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[ts(optional, type = "number | null")]
    pub disk_read_bytes: Option<Option<u64>>,
    /// New bytes written.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[ts(optional, type = "number | null")]
    pub disk_write_bytes: Option<Option<u64>>,
    /// New read rate.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[ts(optional)]
    pub disk_read_bytes_per_sec: Option<Option<f64>>,
    /// New write rate.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[ts(optional)]
    pub disk_write_bytes_per_sec: Option<Option<f64>>,
    /// New kernel-thread flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub kernel_thread: Option<bool>,
    /// New container (`null`: it is in none now). A process keeps its container for
    /// life, but its name may come later, when the runtime's socket has answered.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[ts(optional)]
    pub container: Option<Option<ContainerRef>>,
    /// New GPU share.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[ts(optional)]
    pub gpu_percent: Option<Option<f32>>,
    /// New GPU memory.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[ts(optional, type = "number | null")]
    pub gpu_memory_bytes: Option<Option<u64>>,
}

/// A field that is present is `Some`, even when its value is `null` (serde alone reads
/// `null` as absent).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Why a delta cannot be applied to a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// The delta was made against another snapshot.
    #[error("the delta is against {want_host} seq {want_seq}, not {have_host} seq {have_seq}")]
    BaseMismatch {
        /// Host the delta expects.
        want_host: String,
        /// Seq the delta expects.
        want_seq: u64,
        /// Host of the snapshot at hand.
        have_host: String,
        /// Seq of the snapshot at hand.
        have_seq: u64,
    },
    /// The edits do not fit the base (an entry to remove or change is not there, an
    /// index is out of range): the delta is damaged or forged.
    #[error("the delta does not fit its base: {0}")]
    Inconsistent(String),
}

impl SnapshotDelta {
    /// The difference that turns `base` into `next`.
    pub fn between(base: &Snapshot, next: &Snapshot) -> SnapshotDelta {
        SnapshotDelta {
            hostname: base.host.hostname.clone(),
            host_id: base.host.id.clone(),
            base_seq: base.seq,
            seq: next.seq,
            schema_version: next.schema_version,
            taken_at: next.taken_at,
            interval_ms: next.interval_ms,
            host: if_changed(&base.host, &next.host),
            cpu: if_changed(&base.cpu, &next.cpu),
            memory: if_changed(&base.memory, &next.memory),
            processes: processes_between(&base.processes, &next.processes),
            connections: list_between(&base.connections, &next.connections, connection_key),
            network: if_changed(&base.network, &next.network),
            ports: PortsDelta {
                by_local_port: list_between(&base.ports.by_local_port, &next.ports.by_local_port, |p| {
                    (p.protocol, p.port, p.connections)
                }),
                listening: list_between(&base.ports.listening, &next.ports.listening, listening_key),
            },
            errors: if_changed(&base.errors, &next.errors),
            gpus: if_changed(&base.gpus, &next.gpus),
            filesystems: if_changed(&base.filesystems, &next.filesystems),
            disks: if_changed(&base.disks, &next.disks),
            temperatures: if_changed(&base.temperatures, &next.temperatures),
            fans: if_changed(&base.fans, &next.fans),
            batteries: if_changed(&base.batteries, &next.batteries),
        }
    }

    /// Whether this delta was made against `snapshot`.
    pub fn fits(&self, snapshot: &Snapshot) -> bool {
        snapshot.seq == self.base_seq && snapshot.host.hostname == self.hostname && snapshot.host.id == self.host_id
    }

    /// Rebuilds the new snapshot from its base. Refuses a base other than the one the
    /// delta names, and edits that do not fit it.
    pub fn apply(&self, base: &Snapshot) -> Result<Snapshot, DeltaError> {
        if !self.fits(base) {
            return Err(DeltaError::BaseMismatch {
                want_host: self.hostname.clone(),
                want_seq: self.base_seq,
                have_host: base.host.hostname.clone(),
                have_seq: base.seq,
            });
        }
        let ports = super::PortUsage {
            by_local_port: list_apply(&base.ports.by_local_port, &self.ports.by_local_port, |p| {
                (p.protocol, p.port, p.connections)
            })?,
            listening: list_apply(&base.ports.listening, &self.ports.listening, listening_key)?,
        };
        Ok(Snapshot {
            schema_version: self.schema_version,
            host: self.host.clone().unwrap_or_else(|| base.host.clone()),
            taken_at: self.taken_at,
            seq: self.seq,
            interval_ms: self.interval_ms,
            cpu: self.cpu.clone().unwrap_or_else(|| base.cpu.clone()),
            memory: self.memory.clone().unwrap_or_else(|| base.memory.clone()),
            processes: processes_apply(&base.processes, &self.processes)?,
            connections: list_apply(&base.connections, &self.connections, connection_key)?,
            network: self.network.clone().unwrap_or_else(|| base.network.clone()),
            ports,
            errors: self.errors.clone().unwrap_or_else(|| base.errors.clone()),
            gpus: self.gpus.clone().unwrap_or_else(|| base.gpus.clone()),
            filesystems: self.filesystems.clone().unwrap_or_else(|| base.filesystems.clone()),
            disks: self.disks.clone().unwrap_or_else(|| base.disks.clone()),
            temperatures: self.temperatures.clone().unwrap_or_else(|| base.temperatures.clone()),
            fans: self.fans.clone().unwrap_or_else(|| base.fans.clone()),
            batteries: self.batteries.clone().unwrap_or_else(|| base.batteries.clone()),
        })
    }
}

/// `next` if it differs from `base` in any bit. `PartialEq` alone would take `-0.0` for
/// `0.0`; the JSON comparison (only when `==` says equal, which is cheap for the small
/// parts this is used on) tells them apart.
fn if_changed<T: PartialEq + Clone + Serialize>(base: &T, next: &T) -> Option<T> {
    let same = base == next && serde_json::to_string(base).ok() == serde_json::to_string(next).ok();
    (!same).then(|| next.clone())
}

type ConnectionKey = (Protocol, IpAddr, u16, Option<IpAddr>, Option<u16>, Option<TcpState>, Option<u32>);

fn connection_key(c: &ConnectionSample) -> ConnectionKey {
    (c.protocol, c.local_address, c.local_port, c.remote_address, c.remote_port, c.state, c.pid)
}

/// Borrows the name: a key is made several times per entry and per tick.
fn listening_key(l: &ListeningPort) -> (Protocol, IpAddr, u16, Option<u32>, Option<&str>) {
    (l.protocol, l.address, l.port, l.pid, l.process_name.as_deref())
}

fn process_key(p: &ProcessSample) -> (u32, Option<DateTime<Utc>>) {
    (p.pid, p.start_time)
}

/// The hasher of [`plan`]'s tables. Their keys are a connection's or a listening port's
/// fields, and hashing them with the standard library's SipHash was most of the cost of
/// a delta (a third of the agent's own instructions per tick at 400 sockets). foldhash
/// is several times faster on such small keys, and seeded at random per table, as
/// SipHash is here: the collector makes deltas of what agents send too.
type Seeded = foldhash::quality::RandomState;

/// How a new list is made from a base list: which base entries survive (in base order),
/// and which new entries are added.
struct Plan {
    /// `(base index, new index)` of the entries in both, in increasing order of both.
    kept: Vec<(usize, usize)>,
    /// Base indices not kept.
    dropped: Vec<usize>,
    /// New indices not kept.
    added: Vec<usize>,
}

/// Matches entries by key. An entry is kept when its key occurs once in each list and
/// keeping it preserves the order of those kept before it; everything else is dropped
/// and added again. Sorted lists (the sampler's) keep every common entry; a reordered or
/// duplicated entry costs its size, never correctness.
fn plan<'a, T, K: Hash + Eq>(base: &'a [T], next: &'a [T], key: impl Fn(&'a T) -> K) -> Plan {
    // Key -> index of its only occurrence, or None once it has a second one.
    let mut in_base: HashMap<K, Option<usize>, Seeded> =
        HashMap::with_capacity_and_hasher(base.len(), Seeded::default());
    for (i, item) in base.iter().enumerate() {
        in_base.entry(key(item)).and_modify(|slot| *slot = None).or_insert(Some(i));
    }
    let mut next_count: HashMap<K, u32, Seeded> = HashMap::with_capacity_and_hasher(next.len(), Seeded::default());
    for item in next {
        *next_count.entry(key(item)).or_insert(0) += 1;
    }
    let mut kept = Vec::with_capacity(next.len());
    let mut added = Vec::new();
    let mut kept_base = vec![false; base.len()];
    let mut last: Option<usize> = None;
    for (j, item) in next.iter().enumerate() {
        let k = key(item);
        let unique_here = next_count.get(&k) == Some(&1);
        match in_base.get(&k) {
            Some(Some(i)) if unique_here && last.is_none_or(|l| *i > l) => {
                kept.push((*i, j));
                kept_base[*i] = true;
                last = Some(*i);
            }
            _ => added.push(j),
        }
    }
    let dropped = (0..base.len()).filter(|i| !kept_base[*i]).collect();
    Plan { kept, dropped, added }
}

/// Keys of the dropped entries, each once.
fn dropped_keys<'a, T, K: Hash + Eq>(base: &'a [T], dropped: &[usize], key: impl Fn(&'a T) -> K) -> Vec<usize> {
    let mut seen = HashSet::with_capacity_and_hasher(dropped.len(), Seeded::default());
    dropped.iter().copied().filter(|i| seen.insert(key(&base[*i]))).collect()
}

fn list_between<'a, T: Clone, K: Hash + Eq>(base: &'a [T], next: &'a [T], key: impl Fn(&'a T) -> K) -> ListDelta<T> {
    let plan = plan(base, next, &key);
    ListDelta {
        removed: dropped_keys(base, &plan.dropped, &key).into_iter().map(|i| base[i].clone()).collect(),
        added: plan.added.into_iter().map(|j| Placed { at: j as u32, item: next[j].clone() }).collect(),
    }
}

/// [`plan`] for two lists whose keys strictly increase (the sampler's process lists, in
/// pid order): a merge, without hashing. It keeps exactly what [`plan`] keeps (every
/// common key, each unique), at a fraction of the cost. `None` when a list is not so.
fn plan_sorted<T, K: Ord>(base: &[T], next: &[T], key: impl Fn(&T) -> K) -> Option<Plan> {
    let increasing = |list: &[T]| list.windows(2).all(|w| key(&w[0]) < key(&w[1]));
    if !increasing(base) || !increasing(next) {
        return None;
    }
    let mut plan = Plan { kept: Vec::with_capacity(next.len()), dropped: Vec::new(), added: Vec::new() };
    let (mut i, mut j) = (0, 0);
    while i < base.len() && j < next.len() {
        match key(&base[i]).cmp(&key(&next[j])) {
            std::cmp::Ordering::Equal => {
                plan.kept.push((i, j));
                i += 1;
                j += 1;
            }
            std::cmp::Ordering::Less => {
                plan.dropped.push(i);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                plan.added.push(j);
                j += 1;
            }
        }
    }
    plan.dropped.extend(i..base.len());
    plan.added.extend(j..next.len());
    Some(plan)
}

fn processes_between(base: &[ProcessSample], next: &[ProcessSample]) -> ProcessesDelta {
    let plan = plan_sorted(base, next, process_key).unwrap_or_else(|| plan(base, next, process_key));
    ProcessesDelta {
        removed: dropped_keys(base, &plan.dropped, process_key)
            .into_iter()
            .map(|i| ProcessKey { pid: base[i].pid, start_time: base[i].start_time })
            .collect(),
        changed: plan.kept.iter().filter_map(|&(i, j)| process_change(&base[i], &next[j])).collect(),
        added: plan.added.into_iter().map(|j| Placed { at: j as u32, item: next[j].clone() }).collect(),
    }
}

/// `Some(new)` when `old != new`.
fn differs<T: PartialEq + Clone>(old: &T, new: &T) -> Option<T> {
    (old != new).then(|| new.clone())
}

/// Floats by their bits, so that `-0.0` and `0.0` (and NaNs) count as different.
fn differs_f32(old: Option<f32>, new: Option<f32>) -> Option<Option<f32>> {
    (old.map(f32::to_bits) != new.map(f32::to_bits)).then_some(new)
}

fn differs_f64(old: Option<f64>, new: Option<f64>) -> Option<Option<f64>> {
    (old.map(f64::to_bits) != new.map(f64::to_bits)).then_some(new)
}

fn process_change(old: &ProcessSample, new: &ProcessSample) -> Option<ProcessChange> {
    let change = ProcessChange {
        pid: new.pid,
        start_time: new.start_time,
        ppid: differs(&old.ppid, &new.ppid),
        name: differs(&old.name, &new.name),
        cmd: differs(&old.cmd, &new.cmd),
        user: differs(&old.user, &new.user),
        status: differs(&old.status, &new.status),
        cpu_percent: differs_f32(old.cpu_percent, new.cpu_percent),
        memory_percent: differs_f32(old.memory_percent, new.memory_percent),
        rss_bytes: differs(&old.rss_bytes, &new.rss_bytes),
        virtual_bytes: differs(&old.virtual_bytes, &new.virtual_bytes),
        threads: differs(&old.threads, &new.threads),
        disk_read_bytes: differs(&old.disk_read_bytes, &new.disk_read_bytes),
        disk_write_bytes: differs(&old.disk_write_bytes, &new.disk_write_bytes),
        disk_read_bytes_per_sec: differs_f64(old.disk_read_bytes_per_sec, new.disk_read_bytes_per_sec),
        disk_write_bytes_per_sec: differs_f64(old.disk_write_bytes_per_sec, new.disk_write_bytes_per_sec),
        kernel_thread: differs(&old.kernel_thread, &new.kernel_thread),
        container: differs(&old.container, &new.container),
        gpu_percent: differs_f32(old.gpu_percent, new.gpu_percent),
        gpu_memory_bytes: differs(&old.gpu_memory_bytes, &new.gpu_memory_bytes),
    };
    let unchanged = ProcessChange { pid: new.pid, start_time: new.start_time, ..ProcessChange::default() };
    (change != unchanged).then_some(change)
}

impl ProcessChange {
    fn patch(&self, p: &mut ProcessSample) {
        fn set<T: Clone>(field: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *field = v.clone();
            }
        }
        set(&mut p.ppid, &self.ppid);
        set(&mut p.name, &self.name);
        set(&mut p.cmd, &self.cmd);
        set(&mut p.user, &self.user);
        set(&mut p.status, &self.status);
        set(&mut p.cpu_percent, &self.cpu_percent);
        set(&mut p.memory_percent, &self.memory_percent);
        set(&mut p.rss_bytes, &self.rss_bytes);
        set(&mut p.virtual_bytes, &self.virtual_bytes);
        set(&mut p.threads, &self.threads);
        set(&mut p.disk_read_bytes, &self.disk_read_bytes);
        set(&mut p.disk_write_bytes, &self.disk_write_bytes);
        set(&mut p.disk_read_bytes_per_sec, &self.disk_read_bytes_per_sec);
        set(&mut p.disk_write_bytes_per_sec, &self.disk_write_bytes_per_sec);
        set(&mut p.kernel_thread, &self.kernel_thread);
        set(&mut p.container, &self.container);
        set(&mut p.gpu_percent, &self.gpu_percent);
        set(&mut p.gpu_memory_bytes, &self.gpu_memory_bytes);
    }
}

/// Drops the entries whose key is in `removed` (each such key must occur in `base`),
/// then inserts `added` at their indices.
fn rebuild<'a, T: Clone, K: Hash + Eq>(
    base: &'a [T],
    removed: HashSet<K>,
    added: &[Placed<T>],
    key: impl Fn(&'a T) -> K,
) -> Result<Vec<T>, DeltaError> {
    let mut found = HashSet::with_capacity(removed.len());
    let mut kept = Vec::with_capacity(base.len());
    for item in base {
        let k = key(item);
        if removed.contains(&k) {
            found.insert(k);
        } else {
            kept.push(item);
        }
    }
    if found.len() != removed.len() {
        return Err(DeltaError::Inconsistent("it removes an entry the base does not have".into()));
    }
    let total = kept.len() + added.len();
    let mut out = Vec::with_capacity(total);
    let mut kept = kept.into_iter();
    for placed in added {
        let at = placed.at as usize;
        if at < out.len() || at >= total {
            return Err(DeltaError::Inconsistent(format!("an entry is placed at {at}, out of order or range")));
        }
        while out.len() < at {
            // `at < total` and `at` increasing: enough kept entries remain.
            let Some(item) = kept.next() else {
                return Err(DeltaError::Inconsistent("added entries leave a gap".into()));
            };
            out.push(item.clone());
        }
        out.push(placed.item.clone());
    }
    out.extend(kept.cloned());
    Ok(out)
}

fn list_apply<'a, T: Clone, K: Hash + Eq>(
    base: &'a [T],
    delta: &'a ListDelta<T>,
    key: impl Fn(&'a T) -> K,
) -> Result<Vec<T>, DeltaError> {
    let removed: HashSet<K> = delta.removed.iter().map(&key).collect();
    if removed.len() != delta.removed.len() {
        return Err(DeltaError::Inconsistent("it removes an entry twice".into()));
    }
    rebuild(base, removed, &delta.added, key)
}

fn processes_apply(base: &[ProcessSample], delta: &ProcessesDelta) -> Result<Vec<ProcessSample>, DeltaError> {
    let removed: HashSet<(u32, Option<DateTime<Utc>>)> = delta.removed.iter().map(|k| (k.pid, k.start_time)).collect();
    if removed.len() != delta.removed.len() {
        return Err(DeltaError::Inconsistent("it removes a process twice".into()));
    }
    let mut out = rebuild(base, removed, &delta.added, process_key)?;
    if delta.changed.is_empty() {
        return Ok(out);
    }
    // Changes apply to kept processes only, never to added ones.
    let added: HashSet<usize> = delta.added.iter().map(|p| p.at as usize).collect();
    let mut index: HashMap<(u32, Option<DateTime<Utc>>), Option<usize>> = HashMap::with_capacity(out.len());
    for (i, p) in out.iter().enumerate().filter(|(i, _)| !added.contains(i)) {
        index.entry(process_key(p)).and_modify(|slot| *slot = None).or_insert(Some(i));
    }
    let mut patched = HashSet::with_capacity(delta.changed.len());
    for change in &delta.changed {
        let k = (change.pid, change.start_time);
        let Some(Some(i)) = index.get(&k) else {
            return Err(DeltaError::Inconsistent(format!("it changes process {}, which it cannot name", change.pid)));
        };
        if !patched.insert(*i) {
            return Err(DeltaError::Inconsistent(format!("it changes process {} twice", change.pid)));
        }
        change.patch(&mut out[*i]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::details::ContainerRuntime;
    use crate::model::{InterfaceCounters, InterfaceSample, LoadAverage, PortUsage};
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    /// Equal as values and as JSON text (which tells `-0.0` from `0.0`).
    fn assert_exact(rebuilt: &Snapshot, next: &Snapshot) {
        assert_eq!(rebuilt, next);
        assert_eq!(serde_json::to_string(rebuilt).unwrap(), serde_json::to_string(next).unwrap());
    }

    fn round_trip(base: &Snapshot, next: &Snapshot) -> SnapshotDelta {
        let delta = SnapshotDelta::between(base, next);
        // Through JSON, as it travels.
        let json = serde_json::to_string(&delta).unwrap();
        let delta: SnapshotDelta = serde_json::from_str(&json).unwrap();
        assert_exact(&delta.apply(base).unwrap(), next);
        // And through MessagePack, as protocol 3 carries it: the same delta, to the bit.
        let packed = rmp_serde::to_vec_named(&delta).unwrap();
        let unpacked: SnapshotDelta = rmp_serde::from_slice(&packed).unwrap();
        assert_eq!(serde_json::to_string(&unpacked).unwrap(), json);
        assert_eq!(rmp_serde::to_vec_named(&unpacked).unwrap(), packed);
        assert_exact(&unpacked.apply(base).unwrap(), next);
        delta
    }

    fn small_f32() -> impl Strategy<Value = f32> {
        prop_oneof![Just(0.0f32), Just(-0.0f32), 0.0f32..400.0, Just(f32::MIN_POSITIVE)]
    }

    fn small_f64() -> impl Strategy<Value = f64> {
        prop_oneof![Just(0.0f64), Just(-0.0f64), 0.0f64..1e12]
    }

    fn time() -> impl Strategy<Value = Option<DateTime<Utc>>> {
        // Few distinct start times, so that pids collide with different ones; sometimes
        // none, as a short upload has.
        proptest::option::of(
            (0i64..4, 0u32..3).prop_map(|(s, n)| DateTime::from_timestamp(1_700_000_000 + s, n * 1_000_000).unwrap()),
        )
    }

    fn process() -> impl Strategy<Value = ProcessSample> {
        (
            (0u32..12, proptest::option::of(0u32..4), "[a-c]{0,2}", "[a-c ]{0,3}", proptest::option::of("[xy]")),
            (
                proptest::option::of(small_f32()),
                proptest::option::of(small_f32()),
                proptest::option::of(0u64..4),
                proptest::option::of(0u64..3),
                proptest::option::of(0u32..3),
                time(),
            ),
            (
                proptest::option::of(0u64..3),
                proptest::option::of(0u64..3),
                proptest::option::of(small_f64()),
                proptest::option::of(small_f64()),
                any::<bool>(),
                prop_oneof![Just(ProcessStatus::Running), Just(ProcessStatus::Sleeping), Just(ProcessStatus::Zombie)],
            ),
            container(),
            (proptest::option::of(small_f32()), proptest::option::of(0u64..3)),
        )
            .prop_map(
                |((pid, ppid, name, cmd, user), (cpu, mem, rss, virt, threads, start), d, container, gpu)| {
                    ProcessSample {
                        pid,
                        ppid,
                        name,
                        cmd,
                        user,
                        status: d.5,
                        cpu_percent: cpu,
                        memory_percent: mem,
                        rss_bytes: rss,
                        virtual_bytes: virt,
                        threads,
                        start_time: start,
                        disk_read_bytes: d.0,
                        disk_write_bytes: d.1,
                        disk_read_bytes_per_sec: d.2,
                        disk_write_bytes_per_sec: d.3,
                        kernel_thread: d.4,
                        container,
                        gpu_percent: gpu.0,
                        gpu_memory_bytes: gpu.1,
                    }
                },
            )
    }

    /// None, or one of a few containers, named or not: a process's container changes
    /// from none to one, from one to another, or gains its name.
    fn container() -> impl Strategy<Value = Option<ContainerRef>> {
        proptest::option::of(
            (
                prop_oneof![
                    Just(ContainerRuntime::Docker),
                    Just(ContainerRuntime::Podman),
                    Just(ContainerRuntime::Lxc)
                ],
                "[0a]{12}",
                proptest::option::of("[pq]"),
                proptest::option::of("[mn]"),
            )
                .prop_map(|(runtime, id, pod, name)| ContainerRef { runtime, id, pod, name }),
        )
    }

    fn connection() -> impl Strategy<Value = ConnectionSample> {
        (any::<bool>(), 0u8..3, 0u16..4, proptest::option::of((0u8..2, 0u16..3)), proptest::option::of(0u32..3))
            .prop_map(|(tcp, a, port, remote, pid)| ConnectionSample {
                protocol: if tcp { Protocol::Tcp } else { Protocol::Udp },
                local_address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, a)),
                local_port: port,
                remote_address: remote.map(|(r, _)| IpAddr::V4(Ipv4Addr::new(10, 0, 1, r))),
                remote_port: remote.map(|(_, p)| p),
                state: tcp.then_some(if port % 2 == 0 { TcpState::Established } else { TcpState::Listen }),
                pid,
            })
    }

    fn gpu() -> impl Strategy<Value = GpuSample> {
        (
            "[gh]",
            proptest::option::of(small_f32()),
            proptest::option::of(0u64..3),
            proptest::option::of(0u64..3),
            proptest::option::of(small_f32()),
            proptest::option::of("[ij]"),
        )
            .prop_map(|(id, util, used, total, temp, driver)| GpuSample {
                name: format!("GPU {id}"),
                id,
                driver,
                utilization_percent: util,
                memory_used_bytes: used,
                memory_total_bytes: total,
                temperature_celsius: temp,
            })
    }

    /// The host in depth: each part absent, empty or a few entries, with the figures
    /// that are hard to carry exactly (negative zero, `null`s).
    type Hardware = (
        Option<Vec<FilesystemSample>>,
        Option<Vec<DiskSample>>,
        Option<Vec<TemperatureSample>>,
        Option<Vec<FanSample>>,
        Option<Vec<BatterySample>>,
    );

    fn hardware() -> impl Strategy<Value = Hardware> {
        let filesystem =
            ("/[ab]{0,2}", 0u64..3, proptest::option::of(0u64..3)).prop_map(|(at, used, inodes)| FilesystemSample {
                mount_point: at,
                fs_type: "ext4".into(),
                device: "/dev/vda".into(),
                total_bytes: 4,
                used_bytes: used,
                free_bytes: 4 - used,
                inodes_total: inodes.map(|i| i + 10),
                inodes_free: inodes,
            });
        let disk =
            ("(sd[ab]|dm-0)", small_f64(), small_f64(), 0.0f64..101.0).prop_map(|(name, r, w, busy)| DiskSample {
                name,
                read_bytes_per_sec: r,
                write_bytes_per_sec: w,
                reads_per_sec: r / 4096.0,
                writes_per_sec: -0.0,
                busy_percent: busy,
            });
        let temperature = ("[xy]", -20.0f64..120.0, proptest::option::of(small_f64())).prop_map(|(name, c, high)| {
            TemperatureSample { name, celsius: c, high_celsius: high, critical_celsius: None }
        });
        let fan = ("[xy]", small_f64()).prop_map(|(name, rpm)| FanSample { name, rpm });
        let battery = (proptest::option::of(0.0f64..100.0), proptest::option::of(small_f64())).prop_map(
            |(percent, power_watts)| BatterySample {
                name: "BAT0".into(),
                percent,
                status: "discharging".into(),
                power_watts,
            },
        );
        (
            proptest::option::of(proptest::collection::vec(filesystem, 0..3)),
            proptest::option::of(proptest::collection::vec(disk, 0..3)),
            proptest::option::of(proptest::collection::vec(temperature, 0..3)),
            proptest::option::of(proptest::collection::vec(fan, 0..2)),
            proptest::option::of(proptest::collection::vec(battery, 0..2)),
        )
    }

    fn set_hardware(s: &mut Snapshot, h: Hardware) {
        (s.filesystems, s.disks, s.temperatures, s.fans, s.batteries) = h;
    }

    fn snapshot() -> impl Strategy<Value = Snapshot> {
        (
            0u64..3,
            "[ab]",
            proptest::collection::vec(process(), 0..14),
            proptest::collection::vec(connection(), 0..10),
            (small_f32(), proptest::collection::vec(small_f32(), 0..3), proptest::option::of(small_f64())),
            (
                0u64..3,
                proptest::collection::vec((0u16..4, 0u32..3), 0..5),
                proptest::collection::vec((0u16..3, proptest::option::of(0u32..2)), 0..3),
            ),
            (proptest::collection::vec(("[ef]", small_f64()), 0..3), proptest::option::of("[mn]"), 0u32..2),
            proptest::collection::vec(gpu(), 0..3),
            hardware(),
        )
            .prop_map(|(seq, kernel, processes, connections, cpu, mem, net, gpus, hardware)| {
                let mut s = Snapshot {
                    schema_version: 1 + net.2,
                    host: HostInfo {
                        id: "id".into(),
                        hostname: "h".into(),
                        os: "os".into(),
                        kernel: Some(kernel),
                        arch: "x86_64".into(),
                        cpu_model: None,
                        logical_cores: Some(2),
                        memory_total_bytes: Some(8),
                        boot_time: DateTime::from_timestamp(1_600_000_000, 0),
                        agent_version: "0".into(),
                    },
                    taken_at: DateTime::from_timestamp(1_700_000_100 + seq as i64, 0).unwrap(),
                    seq,
                    interval_ms: 1000 + seq,
                    cpu: CpuSample {
                        total_percent: cpu.0,
                        per_core_percent: cpu.1,
                        load_average: cpu.2.map(|one| LoadAverage { one, five: 0.5, fifteen: -0.0 }),
                    },
                    memory: MemorySample {
                        total_bytes: Some(8),
                        used_bytes: mem.0,
                        available_bytes: (mem.0 % 2 == 0).then_some(1),
                        swap_total_bytes: Some(0),
                        swap_used_bytes: None,
                    },
                    processes,
                    connections,
                    network: crate::model::NetworkSample {
                        total: net
                            .0
                            .first()
                            .map(|i| InterfaceCounters { sent_bytes_per_sec: i.1, ..Default::default() }),
                        interfaces: net
                            .0
                            .into_iter()
                            .map(|(name, rate)| InterfaceSample {
                                name,
                                counters: InterfaceCounters { received_bytes_per_sec: rate, ..Default::default() },
                            })
                            .collect(),
                    },
                    ports: PortUsage {
                        by_local_port: mem
                            .1
                            .into_iter()
                            .map(|(port, connections)| PortCount { protocol: Protocol::Tcp, port, connections })
                            .collect(),
                        listening: mem
                            .2
                            .into_iter()
                            .map(|(port, pid)| ListeningPort {
                                protocol: Protocol::Udp,
                                address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                                port,
                                pid,
                                process_name: pid.map(|p| format!("p{p}")),
                            })
                            .collect(),
                    },
                    errors: net
                        .1
                        .into_iter()
                        .map(|message| DomainError { domain: crate::model::Domain::Connections, message })
                        .collect(),
                    gpus,
                    filesystems: None,
                    disks: None,
                    temperatures: None,
                    fans: None,
                    batteries: None,
                };
                set_hardware(&mut s, hardware);
                s.host.hostname = "h".into();
                s
            })
    }

    /// A plausible next snapshot: most of `base` with a few edits.
    fn evolve(base: Snapshot) -> impl Strategy<Value = Snapshot> {
        let n = base.processes.len().max(1);
        let c = base.connections.len().max(1);
        (
            proptest::collection::vec(
                (
                    0..n,
                    proptest::option::of(small_f32()),
                    proptest::option::of(0u64..5),
                    proptest::option::of(small_f32()),
                ),
                0..4,
            ),
            proptest::collection::vec(0..n, 0..2),
            proptest::collection::vec(process(), 0..2),
            proptest::collection::vec(0..c, 0..2),
            proptest::collection::vec(connection(), 0..2),
            small_f32(),
            proptest::option::of(small_f32()),
            proptest::option::of(hardware()),
        )
            .prop_map(move |(edits, gone, born, closed, opened, total, gpu_busy, hardware)| {
                let mut next = base.clone();
                next.seq += 1;
                next.cpu.total_percent = total;
                if let Some(g) = next.gpus.first_mut() {
                    g.utilization_percent = gpu_busy;
                }
                // Most ticks change the disk rates only; now and then everything (a
                // slow reading came due).
                match hardware {
                    Some(h) => set_hardware(&mut next, h),
                    None => {
                        if let Some(d) = next.disks.as_mut().and_then(|d| d.first_mut()) {
                            d.busy_percent += 1.0;
                        }
                    }
                }
                for (i, cpu, rss, gpu) in edits {
                    if let Some(p) = next.processes.get_mut(i) {
                        p.cpu_percent = cpu;
                        p.rss_bytes = rss;
                        p.gpu_percent = gpu;
                        p.gpu_memory_bytes = rss;
                        p.disk_read_bytes_per_sec = None;
                    }
                }
                for i in gone.into_iter().rev() {
                    if i < next.processes.len() {
                        next.processes.remove(i);
                    }
                }
                next.processes.extend(born);
                next.processes.sort_by_key(process_key);
                for i in closed.into_iter().rev() {
                    if i < next.connections.len() {
                        next.connections.remove(i);
                    }
                }
                next.connections.extend(opened);
                next
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn the_merge_of_sorted_lists_keeps_what_the_general_plan_keeps(
            base in proptest::collection::btree_set(0u32..40, 0..20),
            next in proptest::collection::btree_set(0u32..40, 0..20),
        ) {
            let (base, next): (Vec<u32>, Vec<u32>) = (base.into_iter().collect(), next.into_iter().collect());
            let merged = plan_sorted(&base, &next, |k| *k).unwrap();
            let general = plan(&base, &next, |k| *k);
            prop_assert_eq!((merged.kept, merged.dropped, merged.added), (general.kept, general.dropped, general.added));
        }

        #[test]
        fn any_two_snapshots_round_trip_exactly(base in snapshot(), next in snapshot()) {
            round_trip(&base, &next);
        }

        #[test]
        fn any_snapshot_round_trips_through_messagepack_exactly(s in snapshot()) {
            let packed = rmp_serde::to_vec_named(&s).unwrap();
            let unpacked: Snapshot = rmp_serde::from_slice(&packed).unwrap();
            assert_exact(&unpacked, &s);
            prop_assert_eq!(rmp_serde::to_vec_named(&unpacked).unwrap(), packed);
        }

        #[test]
        fn realistic_sequences_round_trip_exactly(
            chain in snapshot().prop_flat_map(evolve).prop_flat_map(|s| (Just(s.clone()), evolve(s)))
        ) {
            let (a, b) = chain;
            round_trip(&a, &b);
            round_trip(&b, &a);
        }

        #[test]
        fn a_delta_only_applies_to_its_base(base in snapshot(), next in snapshot(), other_seq in 3u64..9) {
            let delta = SnapshotDelta::between(&base, &next);
            let mut other = base.clone();
            other.seq = other_seq;
            let is_mismatch = matches!(delta.apply(&other), Err(DeltaError::BaseMismatch { .. }));
            prop_assert!(is_mismatch);
        }
    }

    #[test]
    fn sampler_snapshots_round_trip_and_shrink() {
        let mut sampler = crate::sample::Sampler::new(Default::default());
        let mut base = sampler.sample();
        base.seq = 1;
        for seq in 2..5 {
            std::thread::sleep(std::time::Duration::from_millis(150));
            let mut next = sampler.sample();
            next.seq = seq;
            let delta = round_trip(&base, &next);
            // A steady machine: most processes are kept, not resent.
            assert!(
                delta.processes.added.len() * 2 <= next.processes.len().max(2),
                "{} added",
                delta.processes.added.len()
            );
            assert!(serde_json::to_vec(&delta).unwrap().len() < serde_json::to_vec(&next).unwrap().len());
            base = next;
        }
    }

    #[test]
    fn unchanged_parts_are_left_out() {
        let mut sampler = crate::sample::Sampler::new(Default::default());
        let base = sampler.sample();
        let mut next = base.clone();
        next.seq += 1;
        let delta = round_trip(&base, &next);
        assert!(delta.processes.changed.is_empty() && delta.processes.added.is_empty());
        assert!(delta.processes.removed.is_empty() && delta.connections.added.is_empty());
        let json = serde_json::to_string(&delta).unwrap();
        assert!(!json.contains("\"cpu\"") && !json.contains("\"host\""), "{json}");
        // A zero turning into a negative zero is a change.
        if let Some(p) = next.processes.first_mut() {
            p.cpu_percent = Some(-0.0);
            let delta = round_trip(&base, &next);
            assert_eq!(
                delta.processes.changed.len(),
                usize::from(base.processes[0].cpu_percent.map(f32::to_bits) != Some((-0.0f32).to_bits()))
            );
        }
    }

    #[test]
    fn the_host_in_depth_travels_part_by_part() {
        let mut sampler = crate::sample::Sampler::new(Default::default());
        let base = sampler.sample();
        assert!(base.filesystems.as_ref().is_some_and(|f| !f.is_empty()), "this machine has filesystems");
        let mut next = base.clone();
        next.seq += 1;
        next.disks = Some(vec![DiskSample {
            name: "vda".into(),
            read_bytes_per_sec: 1.5,
            write_bytes_per_sec: 0.0,
            reads_per_sec: 1.0,
            writes_per_sec: 0.0,
            busy_percent: 3.0,
        }]);
        let delta = round_trip(&base, &next);
        let json = serde_json::to_string(&delta).unwrap();
        assert!(json.contains("\"disks\"") && !json.contains("\"filesystems\""), "{json}");
        // A part that became unknown is sent as null, and rebuilt as unknown.
        next.filesystems = None;
        let delta = round_trip(&base, &next);
        assert!(serde_json::to_string(&delta).unwrap().contains("\"filesystems\":null"));
    }

    #[test]
    fn a_nullable_field_that_becomes_null_is_sent_as_null() {
        let change = ProcessChange { threads: Some(None), rss_bytes: Some(None), ..ProcessChange::default() };
        let json = serde_json::to_string(&change).unwrap();
        assert!(json.contains("\"threads\":null") && json.contains("\"rss_bytes\":null"), "{json}");
        assert!(!json.contains("ppid") && !json.contains("cpu_percent"), "{json}");
        assert_eq!(serde_json::from_str::<ProcessChange>(&json).unwrap(), change);
    }

    #[test]
    fn processes_without_start_times_are_named_by_pid() {
        // A short upload's processes: no start time, some figures unknown.
        let mut sampler = crate::sample::Sampler::new(Default::default());
        let mut base = sampler.sample();
        for p in &mut base.processes {
            p.start_time = None;
            p.cpu_percent = None;
        }
        let mut next = base.clone();
        next.seq += 1;
        next.processes.remove(0);
        next.processes[0].cpu_percent = Some(1.5);
        next.processes[1].rss_bytes = None;
        let delta = round_trip(&base, &next);
        assert_eq!(delta.processes.removed, [ProcessKey { pid: base.processes[0].pid, start_time: None }]);
        assert_eq!(delta.processes.changed.len(), 2);
    }

    #[test]
    fn forged_edits_are_refused() {
        let mut sampler = crate::sample::Sampler::new(Default::default());
        let base = sampler.sample();
        let mut next = base.clone();
        next.seq += 1;
        let good = SnapshotDelta::between(&base, &next);
        let mut bad = good.clone();
        bad.processes.removed.push(ProcessKey { pid: u32::MAX, start_time: Some(base.taken_at) });
        assert!(matches!(bad.apply(&base), Err(DeltaError::Inconsistent(_))));
        let mut bad = good.clone();
        bad.processes.changed.push(ProcessChange { pid: u32::MAX, ..ProcessChange::default() });
        assert!(matches!(bad.apply(&base), Err(DeltaError::Inconsistent(_))));
        let mut bad = good.clone();
        let p = base.processes[0].clone();
        bad.processes.added.push(Placed { at: u32::MAX, item: p.clone() });
        assert!(matches!(bad.apply(&base), Err(DeltaError::Inconsistent(_))));
        let mut bad = good;
        bad.processes.added = vec![Placed { at: 1, item: p.clone() }, Placed { at: 0, item: p }];
        assert!(matches!(bad.apply(&base), Err(DeltaError::Inconsistent(_))));
    }
}

/// Fuzz targets for delta apply: any delta against a real snapshot rebuilds one or is
/// refused with [`DeltaError`], never a panic; valid ones round-trip exactly (the
/// `tests` module's properties). See `crate::fuzzing`.
#[cfg(test)]
pub(crate) mod fuzz {
    use super::*;
    use crate::fuzzing::{config, mutated_bytes, mutated_json};
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// Two real snapshots of this machine a moment apart, made once (a dozen processes
    /// and sockets each keep cases fast and still reach every kind of edit).
    pub(crate) fn real() -> &'static (Snapshot, Snapshot) {
        static REAL: OnceLock<(Snapshot, Snapshot)> = OnceLock::new();
        REAL.get_or_init(|| {
            let mut sampler = crate::sample::Sampler::new(Default::default());
            let trim = |mut s: Snapshot| {
                s.processes.truncate(12);
                s.connections.truncate(12);
                s.ports.by_local_port.truncate(6);
                s.ports.listening.truncate(6);
                s
            };
            let a = trim(sampler.sample());
            let mut b = trim(sampler.sample());
            b.seq = a.seq + 1;
            // Something to change, remove and add for sure, whatever the machine runs.
            b.processes.retain(|p| p.pid % 3 != 0);
            if let Some(p) = b.processes.first_mut() {
                p.cpu_percent = Some(12.5);
            }
            (a, b)
        })
    }

    fn real_delta() -> SnapshotDelta {
        SnapshotDelta::between(&real().0, &real().1)
    }

    fn f32_edge() -> impl Strategy<Value = Option<Option<f32>>> {
        prop::option::of(prop::option::of(prop_oneof![
            Just(f32::NAN),
            Just(f32::INFINITY),
            Just(-1.0f32),
            Just(-0.0f32),
            Just(1e9f32),
            0.0f32..150.0,
        ]))
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![".{0,12}", Just("a\u{7}b".to_string()), "y{300,400}"]
    }

    /// A pid and start time: one of the base's processes (as it is, or with another
    /// start time) or any.
    fn key(base: &'static [ProcessSample]) -> impl Strategy<Value = (u32, Option<DateTime<Utc>>)> {
        let n = base.len().max(1);
        prop_oneof![
            3 => (0..n).prop_map(move |i| base.get(i).map_or((1, None), process_key)),
            1 => (0..n, any::<i64>()).prop_map(move |(i, t)| {
                (base.get(i).map_or(1, |p| p.pid), DateTime::from_timestamp(t % 10_000_000_000, 0))
            }),
            1 => (any::<u32>(), Just(None)),
        ]
    }

    fn change(base: &'static [ProcessSample]) -> impl Strategy<Value = ProcessChange> {
        (key(base), prop::option::of(text()), prop::option::of(text()), f32_edge(), f32_edge(), any::<Option<u64>>())
            .prop_map(|((pid, start_time), name, cmd, cpu, mem, rss)| ProcessChange {
                pid,
                start_time,
                name,
                cmd,
                cpu_percent: cpu,
                memory_percent: mem,
                rss_bytes: rss.map(Some),
                ..ProcessChange::default()
            })
    }

    /// An index near the list's end (where inserts are valid), or any.
    fn at(len: usize) -> impl Strategy<Value = u32> {
        prop_oneof![4 => 0..(len as u32 + 4), 1 => any::<u32>()]
    }

    fn placed<T: Clone + std::fmt::Debug + 'static>(
        items: &'static [T],
        len: usize,
        tweak: impl Fn(&mut T, u32) + Clone + 'static,
    ) -> impl Strategy<Value = Vec<Placed<T>>> {
        let n = items.len().max(1);
        prop::collection::vec((at(len), 0..n, any::<u32>()), 0..4).prop_map(move |v| {
            v.into_iter()
                .filter_map(|(at, i, salt)| {
                    let mut item = items.get(i)?.clone();
                    tweak(&mut item, salt);
                    Some(Placed { at, item })
                })
                .collect()
        })
    }

    fn picked<T: Clone + std::fmt::Debug + 'static>(items: &'static [T]) -> impl Strategy<Value = Vec<T>> {
        let n = items.len().max(1);
        prop::collection::vec(0..n, 0..4)
            .prop_map(move |v| v.into_iter().filter_map(|i| items.get(i).cloned()).collect())
    }

    /// Any delta for the real base: edits that may or may not fit it.
    fn any_delta() -> impl Strategy<Value = SnapshotDelta> {
        let base = &real().0;
        let procs = &base.processes[..];
        (
            (
                prop::collection::vec(key(procs), 0..4),
                prop::collection::vec(change(procs), 0..4),
                placed(procs, procs.len(), |p: &mut ProcessSample, salt| {
                    if salt % 2 == 0 {
                        p.pid = salt;
                    }
                }),
            ),
            (
                picked(&base.connections[..]),
                placed(&base.connections[..], base.connections.len(), |c: &mut ConnectionSample, salt| {
                    c.local_port = salt as u16
                }),
            ),
            (
                picked(&base.ports.listening[..]),
                placed(&base.ports.listening[..], base.ports.listening.len(), |l: &mut ListeningPort, salt| {
                    l.port = salt as u16
                }),
                picked(&base.ports.by_local_port[..]),
                placed(&base.ports.by_local_port[..], base.ports.by_local_port.len(), |p: &mut PortCount, salt| {
                    p.port = salt as u16
                }),
            ),
        )
            .prop_map(
                |((removed, changed, added), (c_removed, c_added), (l_removed, l_added, b_removed, b_added))| {
                    let mut d = SnapshotDelta::between(&real().0, &real().0);
                    d.seq += 1;
                    d.processes = ProcessesDelta {
                        removed: removed.into_iter().map(|(pid, start_time)| ProcessKey { pid, start_time }).collect(),
                        changed,
                        added,
                    };
                    d.connections = ListDelta { removed: c_removed, added: c_added };
                    d.ports.listening = ListDelta { removed: l_removed, added: l_added };
                    d.ports.by_local_port = ListDelta { removed: b_removed, added: b_added };
                    d
                },
            )
    }

    /// Puts `added` at distinct increasing places within a list of `kept` entries plus
    /// them, as a delta that fits places them (dropping what no place is left for).
    fn place<T>(added: &mut Vec<Placed<T>>, kept: usize) {
        let total = kept + added.len();
        let mut places: Vec<u32> = added.iter().map(|p| p.at % total.max(1) as u32).collect();
        places.sort_unstable();
        places.dedup();
        added.truncate(places.len());
        for (p, at) in added.iter_mut().zip(places) {
            p.at = at;
        }
    }

    /// Keeps, of a list's edits, those that fit `base`: removals of entries it has, once
    /// each, and additions at places that exist.
    fn fit_list<T, K: Hash + Eq>(base: &[T], delta: &mut ListDelta<T>, key: impl Fn(&T) -> K) {
        let present: HashSet<K> = base.iter().map(&key).collect();
        let mut seen = HashSet::new();
        delta.removed.retain(|item| present.contains(&key(item)) && seen.insert(key(item)));
        let kept = base.iter().filter(|item| !seen.contains(&key(item))).count();
        place(&mut delta.added, kept);
    }

    /// [`any_delta`], with its edits trimmed to those that fit the base: so that most
    /// deltas apply, and reach the checks behind `apply`.
    pub(crate) fn fitting_delta() -> impl Strategy<Value = SnapshotDelta> {
        any_delta().prop_map(|mut d| {
            let base = &real().0;
            let present: HashSet<_> = base.processes.iter().map(process_key).collect();
            let mut removed = HashSet::new();
            d.processes
                .removed
                .retain(|k| present.contains(&(k.pid, k.start_time)) && removed.insert((k.pid, k.start_time)));
            let mut changed = HashSet::new();
            d.processes.changed.retain(|c| {
                let k = (c.pid, c.start_time);
                present.contains(&k) && !removed.contains(&k) && changed.insert(k)
            });
            let kept = base.processes.iter().filter(|p| !removed.contains(&process_key(p))).count();
            place(&mut d.processes.added, kept);
            fit_list(&base.connections, &mut d.connections, connection_key);
            fit_list(&base.ports.listening, &mut d.ports.listening, |l| {
                (l.protocol, l.address, l.port, l.pid, l.process_name.clone())
            });
            fit_list(&base.ports.by_local_port, &mut d.ports.by_local_port, |p| (p.protocol, p.port, p.connections));
            d
        })
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_delta_applies_or_is_refused(delta in prop_oneof![1 => any_delta(), 3 => fitting_delta()]) {
            let base = &real().0;
            match delta.apply(base) {
                Ok(rebuilt) => {
                    prop_assert_eq!(rebuilt.seq, delta.seq);
                    // What a delta adds or changes is checked where the collector checks
                    // it: the pids it names. A rebuilt snapshot that passes that check
                    // must pass the whole one; otherwise a forged delta could store what
                    // an upload could not.
                    #[cfg(feature = "server")]
                    {
                        use crate::server::upload;
                        if upload::validate(base).is_ok() {
                            let to_check = upload::pids_to_check(&delta);
                            let partial = upload::validate_where(&rebuilt, |p| to_check.contains(&p.pid));
                            if partial.is_ok() {
                                let whole = upload::validate(&rebuilt);
                                prop_assert!(whole.is_ok(), "passes as a delta, refused whole: {:?}", whole.err());
                            }
                        }
                    }
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }

        #[test]
        fn the_real_delta_with_fields_changed(v in mutated_json(serde_json::to_value(real_delta()).unwrap())) {
            if let Ok(delta) = serde_json::from_value::<SnapshotDelta>(v) {
                let _ = delta.apply(&real().0);
            }
        }

        /// What the dashboards' live channel carries (`procyon watch` and the desktop
        /// app read it from a collector), with fields changed, applied when it decodes.
        #[test]
        fn live_messages_with_fields_changed(v in mutated_json(serde_json::to_value(LiveMessage::Delta {
            snapshot_id: 1,
            delta: Box::new(real_delta()),
        }).unwrap())) {
            if let Ok(LiveMessage::Delta { delta, .. }) = serde_json::from_value::<LiveMessage>(v) {
                let _ = delta.apply(&real().0);
            }
        }

        #[test]
        fn the_real_delta_with_messagepack_bytes_changed(
            packed in mutated_bytes(rmp_serde::to_vec_named(&real_delta()).unwrap()),
        ) {
            if let Ok(delta) = rmp_serde::from_slice::<SnapshotDelta>(&packed) {
                let _ = delta.apply(&real().0);
            }
        }
    }

    #[test]
    fn the_real_delta_round_trips() {
        let (a, b) = real();
        assert_eq!(&real_delta().apply(a).unwrap(), b);
        // The base passes the upload checks, so `any_delta_applies_or_is_refused` holds
        // what it rebuilds to them.
        #[cfg(feature = "server")]
        assert!(crate::server::upload::validate(a).is_ok());
    }
}
