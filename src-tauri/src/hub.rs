//! The hub: live fan-out of the newest snapshot of every host.
//!
//! Whatever produces snapshots (the local sampler, agents, uploads, and on PostgreSQL the
//! other collectors of the database, through `server::fleet`) publishes here once;
//! every live reader (WebSocket clients, the desktop window) subscribes here. Readers
//! never wait on each other and never slow a producer: a per-host reader holds only
//! the newest snapshot (`watch`), and the all-hosts stream is a bounded queue whose
//! lagging readers skip ahead to the newest instead of blocking it.
//!
//! Each publication also carries the host's figures for the fleet overview
//! ([`HostFigures`]): made once as the snapshot is published, with the host's recent CPU
//! trend carried over from its previous publication, so that listing a thousand hosts
//! reads a thousand small summaries, never a thousand snapshots.
//!
//! The hub also counts the memory its snapshots hold ([`Hub::held_bytes`]): one per
//! live host, so a flood of made-up hosts with large snapshots would otherwise grow the
//! collector without bound. The collector refuses new hosts past its budget.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, watch};

use crate::model::Snapshot;
use crate::model::api::{BusiestProcess, CPU_TREND_POINTS, HostFigures};

/// How many snapshots the all-hosts stream holds for a slow reader before it skips.
const ALL_HOSTS_BACKLOG: usize = 256;

/// A snapshot as published: with the collector's ids for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    /// Stored snapshot id (`snapshot_id` in the API); 0 when not stored.
    pub snapshot_id: i64,
    /// Stored host id; 0 when not stored.
    pub host_id: i64,
    /// When it reached the hub.
    pub received_at: DateTime<Utc>,
    /// The snapshot.
    pub snapshot: Arc<Snapshot>,
    /// What live streams send for it, encoded once and shared by every client: a
    /// hundred dashboards on one host cost one encoding, not a hundred. Filled by the
    /// first stream that needs it.
    pub encoded: Encoded,
    /// About how much memory the snapshot holds ([`approximate_bytes`]).
    pub bytes: usize,
    /// Stored by another collector on the same database and read back from it (see
    /// `server::fleet`): shown live here, but evaluated by the collector that stored it.
    pub remote: bool,
    /// The host's figures for the fleet overview; the CPU trend is filled in by
    /// [`Hub::publish`] from the host's previous publication.
    pub figures: HostFigures,
}

/// The fleet overview's figures of `snapshot` ([`HostFigures`]), its trend holding only
/// its own CPU figure.
pub fn figures(snapshot: &Snapshot) -> HostFigures {
    let busiest = snapshot
        .processes
        .iter()
        .filter_map(|p| p.cpu_percent.map(|cpu| (p, cpu)))
        .filter(|(_, cpu)| cpu.is_finite())
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(p, cpu)| BusiestProcess { pid: p.pid, name: p.name.clone(), cpu_percent: cpu });
    let total = snapshot.network.total.as_ref();
    HostFigures {
        taken_at: snapshot.taken_at,
        cpu_percent: snapshot.cpu.total_percent,
        cpu_trend: vec![snapshot.cpu.total_percent],
        memory_used_bytes: snapshot.memory.used_bytes,
        memory_total_bytes: snapshot.memory.total_bytes,
        swap_used_bytes: snapshot.memory.swap_used_bytes,
        swap_total_bytes: snapshot.memory.swap_total_bytes,
        load_one: snapshot.cpu.load_average.map(|l| l.one),
        received_bytes_per_sec: total.map(|t| t.received_bytes_per_sec),
        sent_bytes_per_sec: total.map(|t| t.sent_bytes_per_sec),
        process_count: u32::try_from(snapshot.processes.len()).unwrap_or(u32::MAX),
        busiest,
        gpus: snapshot.gpus.clone(),
    }
}

/// About how much memory a decoded snapshot holds: its structs and the text they own.
/// An estimate (allocators round up, encodings come on top), made from what varies
/// with the machine: processes, connections, interfaces and ports.
pub fn approximate_bytes(snapshot: &Snapshot) -> usize {
    use std::mem::size_of;
    let processes: usize = snapshot
        .processes
        .iter()
        .map(|p| {
            size_of::<crate::model::ProcessSample>()
                + p.name.len()
                + p.cmd.len()
                + p.user.as_ref().map_or(0, String::len)
        })
        .sum();
    let connections = snapshot.connections.len() * size_of::<crate::model::ConnectionSample>();
    let interfaces: usize = snapshot.network.interfaces.iter().map(|i| 256 + i.name.len()).sum();
    let ports = (snapshot.ports.listening.len()) * 64;
    size_of::<Snapshot>() + processes + connections + interfaces + ports + snapshot.cpu.per_core_percent.len() * 4
}

/// The encodings of one published snapshot that live streams share.
#[derive(Clone, Debug, Default)]
pub struct Encoded {
    /// The whole snapshot as a live stream's JSON text.
    pub full: OnceLock<Arc<str>>,
    /// A delta's JSON text and the snapshot id it is against: clients that hold that
    /// base (most do: the previous snapshot of the host) reuse it.
    pub delta: OnceLock<(i64, Arc<str>)>,
}

/// Encodings are caches of the snapshot: they never make two publications differ.
impl PartialEq for Encoded {
    fn eq(&self, _: &Encoded) -> bool {
        true
    }
}

impl Published {
    /// A snapshot to publish, with nothing encoded yet.
    pub fn new(snapshot_id: i64, host_id: i64, received_at: DateTime<Utc>, snapshot: Arc<Snapshot>) -> Published {
        let bytes = approximate_bytes(&snapshot);
        let figures = figures(&snapshot);
        Published {
            snapshot_id,
            host_id,
            received_at,
            snapshot,
            encoded: Encoded::default(),
            bytes,
            remote: false,
            figures,
        }
    }
}

/// One host's newest snapshot, shared with its readers.
type HostChannel = watch::Sender<Option<Arc<Published>>>;

/// The live fan-out. Cheap to clone; all clones share the same channels.
#[derive(Clone)]
pub struct Hub {
    hosts: Arc<Mutex<HashMap<String, HostChannel>>>,
    all: broadcast::Sender<Arc<Published>>,
    /// [`Published::bytes`] of every host's newest snapshot, changed under the lock of
    /// `hosts` (read without it).
    held: Arc<AtomicUsize>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub { hosts: Arc::default(), all: broadcast::channel(ALL_HOSTS_BACKLOG).0, held: Arc::default() }
    }
}

/// What a host's channel holds, in bytes.
fn held_by(tx: &HostChannel) -> usize {
    tx.borrow().as_ref().map_or(0, |p| p.bytes)
}

impl Hub {
    /// A hub with no hosts.
    pub fn new() -> Hub {
        Hub::default()
    }

    fn hosts(&self) -> MutexGuard<'_, HashMap<String, HostChannel>> {
        // A panic while holding this lock cannot leave the map half-changed (every
        // change is one insert), so a poisoned lock is still safe to use.
        self.hosts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes `published` the newest snapshot of its host and tells every reader.
    pub fn publish(&self, mut published: Published) {
        let hostname = published.snapshot.host.hostname.clone();
        let published = {
            let mut hosts = self.hosts();
            self.held.fetch_add(published.bytes, Ordering::Relaxed);
            // The trend continues the previous publication's (a few dozen floats).
            if let Some(previous) = hosts.get(&hostname).and_then(|tx| tx.borrow().clone()) {
                let trend = &previous.figures.cpu_trend;
                let keep = trend.len().min(CPU_TREND_POINTS - 1);
                let mut next = Vec::with_capacity(keep + 1);
                next.extend_from_slice(&trend[trend.len() - keep..]);
                next.push(published.figures.cpu_percent);
                published.figures.cpu_trend = next;
            }
            let published = Arc::new(published);
            match hosts.get(&hostname) {
                Some(tx) => {
                    let old = tx.send_replace(Some(published.clone()));
                    self.held.fetch_sub(old.map_or(0, |p| p.bytes), Ordering::Relaxed);
                }
                None => {
                    hosts.insert(hostname, watch::channel(Some(published.clone())).0);
                }
            }
            published
        };
        // No reader is not an error: there is simply nobody to tell.
        let _ = self.all.send(published);
    }

    /// The newest snapshot of `hostname`, if one was published.
    pub fn latest(&self, hostname: &str) -> Option<Arc<Published>> {
        self.hosts().get(hostname).and_then(|tx| tx.borrow().clone())
    }

    /// Whether the hub holds a snapshot of `hostname` now.
    pub fn holds(&self, hostname: &str) -> bool {
        self.hosts().get(hostname).is_some_and(|tx| tx.borrow().is_some())
    }

    /// About how much memory the hosts' newest snapshots hold ([`approximate_bytes`]).
    pub fn held_bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// When `hostname`'s newest snapshot reached the hub, if it ever published.
    pub fn seen_at(&self, hostname: &str) -> Option<DateTime<Utc>> {
        self.hosts().get(hostname).and_then(|tx| tx.borrow().as_ref().map(|p| p.received_at))
    }

    /// Follows one host: the receiver always holds its newest snapshot (or `None` until
    /// the first one arrives).
    pub fn subscribe(&self, hostname: &str) -> watch::Receiver<Option<Arc<Published>>> {
        self.hosts().entry(hostname.to_owned()).or_insert_with(|| watch::channel(None).0).subscribe()
    }

    /// Follows every host: each snapshot as it is published. A reader that falls more
    /// than a bounded backlog behind receives `Lagged` and continues from the newest.
    pub fn subscribe_all(&self) -> broadcast::Receiver<Arc<Published>> {
        self.all.subscribe()
    }

    /// Forgets hosts that published nothing since `before` and that nobody follows, so
    /// that the hub holds live hosts only: a host name that reported once (or a flood of
    /// made-up ones) does not keep a snapshot in memory for ever. Returns how many went.
    pub fn forget_idle(&self, before: DateTime<Utc>) -> usize {
        let mut hosts = self.hosts();
        let len = hosts.len();
        hosts.retain(|_, tx| {
            let keep = tx.receiver_count() > 0 || tx.borrow().as_ref().is_some_and(|p| p.received_at >= before);
            if !keep {
                self.held.fetch_sub(held_by(tx), Ordering::Relaxed);
            }
            keep
        });
        len - hosts.len()
    }

    /// Forgets `hostname`'s newest snapshot unless someone follows the host (its agent
    /// went away: a reader that asks later gets it from the store). `true` if it went.
    pub fn release(&self, hostname: &str) -> bool {
        let mut hosts = self.hosts();
        let unfollowed = hosts.get(hostname).is_some_and(|tx| tx.receiver_count() == 0);
        if unfollowed && let Some(tx) = hosts.remove(hostname) {
            self.held.fetch_sub(held_by(&tx), Ordering::Relaxed);
        }
        unfollowed
    }

    /// Forgets `hostname` (the host was deleted); its followers see nothing more.
    pub fn forget(&self, hostname: &str) {
        let mut hosts = self.hosts();
        if let Some(tx) = hosts.remove(hostname) {
            self.held.fetch_sub(held_by(&tx), Ordering::Relaxed);
        }
    }

    /// The newest snapshot of every host that published one, in no particular order.
    pub fn latest_all(&self) -> Vec<Arc<Published>> {
        self.hosts().values().filter_map(|tx| tx.borrow().clone()).collect()
    }

    /// Every host the hub knows (it holds a snapshot of it, or someone follows it), with
    /// the id of the snapshot it holds (0 for none).
    pub fn known(&self) -> HashMap<String, i64> {
        self.hosts()
            .iter()
            .map(|(name, tx)| (name.clone(), tx.borrow().as_ref().map_or(0, |p| p.snapshot_id)))
            .collect()
    }

    /// Hosts the hub holds now.
    pub fn host_count(&self) -> usize {
        self.hosts().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Sampler, SamplerOptions};

    #[test]
    fn idle_hosts_leave_unless_followed() {
        let hub = Hub::new();
        let snapshot = Arc::new(Sampler::new(SamplerOptions::default()).sample());
        let long_ago = Utc::now() - chrono::Duration::hours(1);
        for (name, at) in [("old", long_ago), ("followed", long_ago), ("fresh", Utc::now())] {
            let mut s = (*snapshot).clone();
            s.host.hostname = name.into();
            hub.publish(Published::new(1, 1, at, Arc::new(s)));
        }
        let _reader = hub.subscribe("followed");
        assert_eq!(hub.forget_idle(Utc::now() - chrono::Duration::minutes(10)), 1);
        assert!(hub.latest("old").is_none());
        assert!(hub.latest("followed").is_some() && hub.latest("fresh").is_some());
    }

    #[test]
    fn the_memory_held_follows_every_host_in_and_out() {
        let base = Sampler::new(SamplerOptions::default()).sample();
        let hub = Hub::new();
        assert_eq!(hub.held_bytes(), 0);
        let a = published("a", 1, &base);
        let one = a.bytes;
        assert!(one > base.processes.len() * 100, "{one} bytes for {} processes", base.processes.len());
        hub.publish(a);
        hub.publish(published("b", 1, &base));
        assert_eq!(hub.held_bytes(), 2 * one);
        // A newer snapshot of a host replaces the older one in the count.
        let mut bigger = base.clone();
        bigger.processes[0].cmd = "x".repeat(1 << 20);
        hub.publish(published("a", 2, &bigger));
        assert_eq!(hub.held_bytes(), 2 * one + (1 << 20) - base.processes[0].cmd.len());
        assert!(hub.holds("a") && !hub.holds("c"));
        let _follower = hub.subscribe("c");
        assert!(!hub.holds("c"), "a followed host without a snapshot holds nothing");
        hub.forget("a");
        assert_eq!(hub.held_bytes(), one);
        assert!(hub.release("b"));
        assert_eq!(hub.held_bytes(), 0);
        hub.publish(published("d", 1, &base));
        assert_eq!(hub.forget_idle(Utc::now() + chrono::TimeDelta::seconds(1)), 1);
        assert_eq!(hub.held_bytes(), 0);
    }

    fn published(host: &str, seq: u64, base: &Snapshot) -> Published {
        let mut s = base.clone();
        s.host.hostname = host.into();
        s.seq = seq;
        Published::new(seq as i64, 1, Utc::now(), Arc::new(s))
    }

    #[tokio::test]
    async fn readers_get_the_newest_per_host_and_every_one_on_the_all_stream() {
        let base = Sampler::new(SamplerOptions::default()).sample();
        let hub = Hub::new();
        let mut web = hub.subscribe("web-1");
        let mut all = hub.subscribe_all();
        assert!(web.borrow().is_none());
        hub.publish(published("web-1", 1, &base));
        hub.publish(published("db-1", 1, &base));
        hub.publish(published("web-1", 2, &base));
        web.changed().await.unwrap();
        assert_eq!(web.borrow_and_update().as_ref().unwrap().snapshot.seq, 2, "only the newest is kept");
        let order: Vec<(String, u64)> = (0..3)
            .map(|_| {
                let p = all.try_recv().unwrap();
                (p.snapshot.host.hostname.clone(), p.snapshot.seq)
            })
            .collect();
        assert_eq!(order, [("web-1".into(), 1), ("db-1".into(), 1), ("web-1".into(), 2)]);
        assert_eq!(hub.latest("db-1").unwrap().snapshot.seq, 1);
        assert!(hub.latest("nope").is_none());
        let mut all: Vec<(String, u64)> =
            hub.latest_all().iter().map(|p| (p.snapshot.host.hostname.clone(), p.snapshot.seq)).collect();
        all.sort();
        assert_eq!(all, [("db-1".into(), 1), ("web-1".into(), 2)], "the newest of each host");
        assert!(hub.seen_at("web-1").is_some() && hub.seen_at("db-1").is_some());
        assert!(hub.seen_at("nope").is_none());
    }

    #[tokio::test]
    async fn a_slow_reader_skips_ahead_instead_of_blocking() {
        let base = Sampler::new(SamplerOptions::default()).sample();
        let hub = Hub::new();
        let mut slow = hub.subscribe_all();
        for seq in 0..(ALL_HOSTS_BACKLOG as u64 + 10) {
            hub.publish(published("h", seq, &base));
        }
        assert!(matches!(slow.try_recv(), Err(broadcast::error::TryRecvError::Lagged(10))));
        assert_eq!(slow.try_recv().unwrap().snapshot.seq, 10);
    }
}
