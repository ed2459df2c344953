//! The hub: live fan-out of the newest snapshot of every host, and of every host's
//! figures at a glance.
//!
//! Whatever produces snapshots (the local sampler, agents, uploads, and on PostgreSQL the
//! other collectors of the database, through `server::fleet`) publishes here once;
//! every live reader (WebSocket clients, the desktop window) subscribes here. Readers
//! never wait on each other and never slow a producer: a per-host reader holds only
//! the newest snapshot (`watch`), and the all-hosts streams are bounded queues whose
//! lagging readers skip ahead to the newest instead of blocking them.
//!
//! Each host also has a [`Glance`]: its figures for the fleet overview, made once as a
//! snapshot is published, with the host's recent CPU trend carried over from its
//! previous glance, so that listing a thousand hosts reads a thousand small summaries,
//! never a thousand snapshots. A glance can come without its snapshot: on PostgreSQL,
//! another collector announces each snapshot it stores with its figures, and this
//! collector reads the snapshot itself back only for hosts someone here follows
//! ([`Hub::is_followed`]). The hub then holds the glance alone, and drops the older
//! snapshot it held: whatever it holds of a host is the newest it knows.
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
use crate::model::api::HostFigures;

/// How many snapshots the all-hosts stream holds for a slow reader before it skips.
const ALL_HOSTS_BACKLOG: usize = 256;
/// How many glances the glance stream holds for a slow reader before it skips: glances
/// are small, and the fleet overview gathers a second of them at a time.
const GLANCES_BACKLOG: usize = 4096;

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
}

/// One host at a glance: its figures for the fleet overview, from its newest snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct Glance {
    /// The host.
    pub hostname: String,
    /// Stored snapshot id the figures come from; 0 when not stored.
    pub snapshot_id: i64,
    /// When that snapshot reached the collector that stored it.
    pub received_at: DateTime<Utc>,
    /// Its figures, the CPU trend continued from the host's previous glance.
    pub figures: HostFigures,
    /// Stored by another collector on the same database (see [`Published::remote`]).
    pub remote: bool,
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
        Published { snapshot_id, host_id, received_at, snapshot, encoded: Encoded::default(), bytes, remote: false }
    }
}

/// One host's newest snapshot, shared with its readers.
type HostChannel = watch::Sender<Option<Arc<Published>>>;

/// What the hub holds, under one lock.
#[derive(Default)]
struct Hosts {
    /// Each host's newest snapshot, where the hub holds it, and its readers.
    snapshots: HashMap<String, HostChannel>,
    /// Each host's newest glance.
    glances: HashMap<String, Arc<Glance>>,
    /// Readers of the all-hosts stream and what each follows there: one host, or every
    /// one (`None`). By id, to end each when its reader goes ([`Following`]).
    following: Vec<(u64, Option<String>)>,
    /// The id of the next entry of `following`.
    next_follower: u64,
}

/// The live fan-out. Cheap to clone; all clones share the same channels.
#[derive(Clone)]
pub struct Hub {
    hosts: Arc<Mutex<Hosts>>,
    all: broadcast::Sender<Arc<Published>>,
    glances: broadcast::Sender<Arc<Glance>>,
    /// [`Published::bytes`] of every host's newest snapshot, changed under the lock of
    /// `hosts` (read without it).
    held: Arc<AtomicUsize>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            hosts: Arc::default(),
            all: broadcast::channel(ALL_HOSTS_BACKLOG).0,
            glances: broadcast::channel(GLANCES_BACKLOG).0,
            held: Arc::default(),
        }
    }
}

/// What a host's channel holds, in bytes.
fn held_by(tx: &HostChannel) -> usize {
    tx.borrow().as_ref().map_or(0, |p| p.bytes)
}

/// A reader's interest in the all-hosts stream, as [`Hub::follow`] noted it: it ends
/// when this is dropped.
pub struct Following {
    hosts: Arc<Mutex<Hosts>>,
    id: u64,
}

impl Drop for Following {
    fn drop(&mut self) {
        lock(&self.hosts).following.retain(|(id, _)| *id != self.id);
    }
}

fn lock(hosts: &Mutex<Hosts>) -> MutexGuard<'_, Hosts> {
    // A panic while holding this lock cannot leave the maps half-changed (every change
    // is one insert or remove), so a poisoned lock is still safe to use.
    hosts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Hub {
    /// A hub with no hosts.
    pub fn new() -> Hub {
        Hub::default()
    }

    fn hosts(&self) -> MutexGuard<'_, Hosts> {
        lock(&self.hosts)
    }

    /// Makes `published` the newest snapshot of its host, and its figures the host's
    /// glance, and tells every reader.
    pub fn publish(&self, published: Published) {
        let hostname = published.snapshot.host.hostname.clone();
        let figures = HostFigures::of(&published.snapshot);
        let glance = Glance {
            hostname: hostname.clone(),
            snapshot_id: published.snapshot_id,
            received_at: published.received_at,
            figures,
            remote: published.remote,
        };
        let (published, glance) = {
            let mut hosts = self.hosts();
            let glance = Arc::new(continued(&hosts, glance));
            hosts.glances.insert(hostname.clone(), Arc::clone(&glance));
            self.held.fetch_add(published.bytes, Ordering::Relaxed);
            let published = Arc::new(published);
            match hosts.snapshots.get(&hostname) {
                Some(tx) => {
                    let old = tx.send_replace(Some(published.clone()));
                    self.held.fetch_sub(old.map_or(0, |p| p.bytes), Ordering::Relaxed);
                }
                None => {
                    hosts.snapshots.insert(hostname, watch::channel(Some(published.clone())).0);
                }
            }
            (published, glance)
        };
        // No reader is not an error: there is simply nobody to tell.
        let _ = self.all.send(published);
        let _ = self.glances.send(glance);
    }

    /// Makes `glance` its host's, without its snapshot, unless someone here follows the
    /// host ([`Hub::is_followed`], decided under the same lock as the change): then
    /// nothing changes and `false` says to read the snapshot back and publish it
    /// instead. The snapshot the hub held of the host, now older than what it knows,
    /// goes. The glance's trend is the hub's to keep: what it came with is replaced.
    pub fn glance(&self, mut glance: Glance) -> bool {
        glance.figures.cpu_trend = vec![glance.figures.cpu_percent];
        let glance = {
            let mut hosts = self.hosts();
            if followed(&hosts, &glance.hostname) {
                return false;
            }
            let glance = Arc::new(continued(&hosts, glance));
            hosts.glances.insert(glance.hostname.clone(), Arc::clone(&glance));
            if let Some(tx) = hosts.snapshots.remove(&glance.hostname) {
                self.held.fetch_sub(held_by(&tx), Ordering::Relaxed);
            }
            glance
        };
        let _ = self.glances.send(glance);
        true
    }

    /// The newest snapshot of `hostname`, if the hub holds one.
    pub fn latest(&self, hostname: &str) -> Option<Arc<Published>> {
        self.hosts().snapshots.get(hostname).and_then(|tx| tx.borrow().clone())
    }

    /// Whether the hub holds a snapshot of `hostname` now.
    pub fn holds(&self, hostname: &str) -> bool {
        self.hosts().snapshots.get(hostname).is_some_and(|tx| tx.borrow().is_some())
    }

    /// About how much memory the hosts' newest snapshots hold ([`approximate_bytes`]).
    pub fn held_bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// `hostname`'s newest glance, if it has one.
    pub fn glance_of(&self, hostname: &str) -> Option<Arc<Glance>> {
        self.hosts().glances.get(hostname).cloned()
    }

    /// Every host's newest glance, in no particular order.
    pub fn glances(&self) -> Vec<Arc<Glance>> {
        self.hosts().glances.values().cloned().collect()
    }

    /// When `hostname`'s newest snapshot reached the collector that stored it, if the
    /// hub knows of one.
    pub fn seen_at(&self, hostname: &str) -> Option<DateTime<Utc>> {
        self.hosts().glances.get(hostname).map(|g| g.received_at)
    }

    /// Follows one host: the receiver always holds its newest snapshot (or `None` until
    /// the first one arrives).
    pub fn subscribe(&self, hostname: &str) -> watch::Receiver<Option<Arc<Published>>> {
        self.hosts().snapshots.entry(hostname.to_owned()).or_insert_with(|| watch::channel(None).0).subscribe()
    }

    /// Every snapshot as it is published. A reader that falls more than a bounded
    /// backlog behind receives `Lagged` and continues from the newest. Snapshots stored
    /// by other collectors come only for the hosts someone follows here: say which with
    /// [`Hub::follow`].
    pub fn subscribe_all(&self) -> broadcast::Receiver<Arc<Published>> {
        self.all.subscribe()
    }

    /// Every glance as it changes, with the same skipping as [`Hub::subscribe_all`].
    pub fn subscribe_glances(&self) -> broadcast::Receiver<Arc<Glance>> {
        self.glances.subscribe()
    }

    /// Notes that a reader of [`Hub::subscribe_all`] wants `hostname`'s snapshots (every
    /// host's, for `None`), until the returned value is dropped.
    pub fn follow(&self, hostname: Option<&str>) -> Following {
        let mut hosts = self.hosts();
        let id = hosts.next_follower;
        hosts.next_follower += 1;
        hosts.following.push((id, hostname.map(str::to_owned)));
        Following { hosts: Arc::clone(&self.hosts), id }
    }

    /// Whether anyone here reads `hostname`'s snapshots as they come: through
    /// [`Hub::subscribe`], or [`Hub::follow`].
    pub fn is_followed(&self, hostname: &str) -> bool {
        followed(&self.hosts(), hostname)
    }

    /// Forgets hosts that published nothing since `before` and that nobody follows, so
    /// that the hub holds live hosts only: a host name that reported once (or a flood of
    /// made-up ones) does not keep a snapshot in memory for ever. Returns how many went.
    pub fn forget_idle(&self, before: DateTime<Utc>) -> usize {
        let mut hosts = self.hosts();
        let before_count = count(&hosts);
        let Hosts { snapshots, glances, .. } = &mut *hosts;
        snapshots.retain(|_, tx| {
            let keep = tx.receiver_count() > 0 || tx.borrow().as_ref().is_some_and(|p| p.received_at >= before);
            if !keep {
                self.held.fetch_sub(held_by(tx), Ordering::Relaxed);
            }
            keep
        });
        glances.retain(|name, g| g.received_at >= before || snapshots.contains_key(name));
        before_count - count(&hosts)
    }

    /// Forgets `hostname`'s newest snapshot and glance unless someone follows the host
    /// (its agent went away: a reader that asks later gets it from the store). `true`
    /// if they went.
    pub fn release(&self, hostname: &str) -> bool {
        let mut hosts = self.hosts();
        let unfollowed = hosts.snapshots.get(hostname).is_none_or(|tx| tx.receiver_count() == 0);
        if unfollowed {
            if let Some(tx) = hosts.snapshots.remove(hostname) {
                self.held.fetch_sub(held_by(&tx), Ordering::Relaxed);
            }
            hosts.glances.remove(hostname);
        }
        unfollowed
    }

    /// Forgets `hostname` (the host was deleted); its followers see nothing more.
    pub fn forget(&self, hostname: &str) {
        let mut hosts = self.hosts();
        if let Some(tx) = hosts.snapshots.remove(hostname) {
            self.held.fetch_sub(held_by(&tx), Ordering::Relaxed);
        }
        hosts.glances.remove(hostname);
    }

    /// The newest snapshot of every host the hub holds one of, in no particular order.
    pub fn latest_all(&self) -> Vec<Arc<Published>> {
        self.hosts().snapshots.values().filter_map(|tx| tx.borrow().clone()).collect()
    }

    /// Hosts the hub holds a snapshot or a glance of, or that someone follows.
    pub fn host_count(&self) -> usize {
        count(&self.hosts())
    }
}

/// Whether anyone reads `hostname`'s snapshots as they come (see [`Hub::is_followed`]).
fn followed(hosts: &Hosts, hostname: &str) -> bool {
    hosts.snapshots.get(hostname).is_some_and(|tx| tx.receiver_count() > 0)
        || hosts.following.iter().any(|(_, h)| h.as_deref().is_none_or(|h| h == hostname))
}

/// How many hosts `hosts` holds something of.
fn count(hosts: &Hosts) -> usize {
    hosts.snapshots.len() + hosts.glances.keys().filter(|h| !hosts.snapshots.contains_key(*h)).count()
}

/// `glance` with its host's CPU trend continued from the glance `hosts` holds.
fn continued(hosts: &Hosts, mut glance: Glance) -> Glance {
    if let Some(previous) = hosts.glances.get(&glance.hostname) {
        glance.figures = glance.figures.after(&previous.figures);
    }
    glance
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

    #[test]
    fn a_glance_alone_stands_for_a_host_and_drops_its_older_snapshot_unless_read() {
        let base = Sampler::new(SamplerOptions::default()).sample();
        let hub = Hub::new();
        let glance = |snapshot_id: i64, cpu: f32| Glance {
            hostname: "remote".into(),
            snapshot_id,
            received_at: Utc::now(),
            figures: HostFigures { cpu_percent: cpu, ..HostFigures::of(&base) },
            remote: true,
        };
        hub.publish(published("remote", 1, &base));
        let mut glances = hub.subscribe_glances();
        assert!(hub.glance(glance(2, 50.0)));
        assert!(hub.latest("remote").is_none(), "the older snapshot went with the newer glance");
        assert_eq!(hub.held_bytes(), 0);
        let held = hub.glance_of("remote").unwrap();
        assert_eq!(held.snapshot_id, 2);
        assert_eq!(held.figures.cpu_trend, [base.cpu.total_percent, 50.0], "the trend goes on across both kinds");
        assert_eq!(glances.try_recv().unwrap().snapshot_id, 2);
        assert_eq!((hub.host_count(), hub.seen_at("remote")), (1, Some(held.received_at)));
        // Whatever trend a glance comes with, the hub keeps its own (a made-up one
        // cannot replace the host's history).
        let mut long = glance(3, 7.0);
        long.figures.cpu_trend = vec![99.0; 500];
        assert!(hub.glance(long));
        assert_eq!(hub.glance_of("remote").unwrap().figures.cpu_trend, [base.cpu.total_percent, 50.0, 7.0]);
        assert_eq!(glances.try_recv().unwrap().snapshot_id, 3);
        // A followed host's glance is refused, to read its snapshot back instead: the
        // hub keeps what it has for the reader.
        let reader = hub.subscribe("remote");
        hub.publish(published("remote", 4, &base));
        assert_eq!(glances.try_recv().unwrap().figures.cpu_trend.len(), 4);
        assert!(!hub.glance(glance(5, 60.0)));
        assert_eq!((hub.latest("remote").unwrap().snapshot_id, hub.glance_of("remote").unwrap().snapshot_id), (4, 4));
        assert!(glances.try_recv().is_err());
        drop(reader);
        let following = hub.follow(None);
        assert!(!hub.glance(glance(5, 60.0)));
        drop(following);
        // Gone with its agent, glance and all.
        assert!(hub.release("remote"));
        assert_eq!((hub.host_count(), hub.glance_of("remote")), (0, None));
        assert!(hub.glance(glance(6, 1.0)));
        assert_eq!(hub.forget_idle(Utc::now() + chrono::TimeDelta::seconds(1)), 1, "an idle glance goes too");
        assert!(hub.glances().is_empty());
    }

    #[test]
    fn a_host_is_followed_as_long_as_a_reader_wants_it() {
        let hub = Hub::new();
        assert!(!hub.is_followed("a"));
        let one = hub.follow(Some("a"));
        assert!(hub.is_followed("a") && !hub.is_followed("b"));
        let every = hub.follow(None);
        assert!(hub.is_followed("b"));
        drop(every);
        assert!(!hub.is_followed("b") && hub.is_followed("a"));
        drop(one);
        assert!(!hub.is_followed("a"));
        let watching = hub.subscribe("c");
        assert!(hub.is_followed("c"));
        drop(watching);
        assert!(!hub.is_followed("c"));
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
