//! Ingest of raw snapshots: how a snapshot's body is encoded, and the group-commit
//! writer that stores concurrent uploads in shared transactions.
//!
//! **Bodies.** A host's rows chain: each row's body is the [`SnapshotDelta`] from the
//! host's previous row (named in `base_id`), zstd-compressed MessagePack, except the
//! first row of each keyframe window (a minute of `taken_at`, shifted per host), which is
//! the whole snapshot, encoded the same way; so is a row whose chain would grow past
//! [`MAX_CHAIN`] deltas, which bounds what a single read applies. The processes, sockets
//! and facts that did not change since the row before cost nothing. An agent's delta is
//! already exactly that (against its last acknowledged snapshot, which is normally the
//! host's previous row), so the agent channel hands its frame's bytes over ([`Sent`]) and
//! they are stored as they came: no delta, encoding or compression of our own per
//! snapshot. Reading a row decodes its window's whole row and applies the deltas after it
//! (`chain`). Bodies written before MessagePack are JSON, and rows written before chains
//! are deltas from their window's whole row; both still read. Retention deletes a host's
//! raw rows up to one of its window starts, so a kept row never loses a base.
//!
//! To chain a row, the writer keeps each host's newest row ([`Tip`]) with its snapshot:
//! the very `Arc` that the hub publishes and the agent's session keeps as its delta base,
//! so that holding it costs no copy. A tip goes when its window is over (a new window
//! starts whole anyway), when its host's agent disconnects, or when retention may delete
//! its row.
//!
//! **Group commit.** Callers encode their snapshot (the CPU-heavy part) on their own
//! task, then queue it for one writer, on a thread of its own. The writer takes every
//! queued row (up to [`MAX_BATCH`]) into one transaction, commits once, and only then
//! answers each caller: an answer means the row is committed (WAL with synchronous
//! NORMAL: it survives a crash of the process; a power cut may lose the last commits,
//! never consistency). A row is one statement in the usual case: its host's id and
//! facts are remembered, and the insert trigger keeps the host's bookkeeping. If a row
//! fails, the batch is rolled back and stored again with each row in a savepoint, so
//! that the failing row fails alone and leaves nothing. One commit per batch instead of
//! one per snapshot is what lets a thousand agents share one disk. The queue is
//! bounded; callers wait for room.
//!
//! **A full disk** refuses a batch whole, and every caller hears [`StoreError::Full`]
//! (agents keep their snapshots and send them again); nothing of the batch is stored
//! and nothing before it is touched. The next batch starts on a clean connection, so
//! writes succeed again as soon as space is freed. It is logged once a minute while it
//! lasts, not per batch.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::SqlitePool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::{mpsc, oneshot};

use super::db::{Conn, Db, Pool, Tx, on};
use super::{Inserted, Result, StoreError};
use crate::model::Snapshot;
use crate::model::agent::Encoding;
use crate::model::delta::SnapshotDelta;

/// zstd level for bodies the store encodes itself: level 3 compresses process tables
/// about 10:1 at a fraction of a millisecond per snapshot; higher levels gain little.
/// (Bodies stored as an agent sent them are at the agent's level.)
const ZSTD_LEVEL: i32 = 3;

/// Most deltas between a row and the whole row its chain starts from. A row that would
/// be further is stored whole. At one snapshot a second a window holds 60 rows, so this
/// bounds only faster senders; a single read applies at most this many deltas.
pub(super) const MAX_CHAIN: u32 = 60;

/// Largest sent body stored as it came. Above it the store encodes the snapshot itself:
/// a sender's bytes may carry fields nobody reads, and must not cost more disk than the
/// snapshot does. A 5,000-process keyframe is about 150 KB.
const MAX_SENT_BODY: usize = 1 << 20;

/// Width of a keyframe window in ms.
pub(super) const KEYFRAME_WINDOW_MS: i64 = 60_000;

/// Rows queued for the writer before callers wait for room.
const QUEUE: usize = 4096;

/// Most rows in one transaction: enough to absorb a thousand agents' second, small
/// enough that the write lock is never held long.
const MAX_BATCH: usize = 512;

/// Longest snapshot JSON a stored body may decompress to. Far above any real snapshot;
/// it only keeps a corrupted size field from asking for all the memory there is.
const MAX_JSON_BYTES: usize = 256 << 20;

/// Start (ms) of the keyframe window of `hostname` that holds `taken_ms`.
///
/// Each host's windows are shifted by an offset derived from its name, so that a
/// thousand hosts do not all store a whole keyframe in the same second of every minute
/// (measured: that burst alone took p99 insert latency past 100 ms). The offset must
/// never change for a host: retention deletes a host's raw rows up to one of its
/// window starts, so that no kept row loses a base. FNV-1a, fixed here, rather
/// than the standard library's hasher, which may change between Rust versions.
pub(super) fn window_start(hostname: &str, taken_ms: i64) -> i64 {
    let hash =
        hostname.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let offset = i64::try_from(hash % KEYFRAME_WINDOW_MS as u64).unwrap_or(0);
    (taken_ms - offset).div_euclid(KEYFRAME_WINDOW_MS) * KEYFRAME_WINDOW_MS + offset
}

/// A host's newest stored row, which its next row is chained on.
#[derive(Clone)]
pub(super) struct Tip {
    id: i64,
    /// Start of its keyframe window, ms.
    window: i64,
    /// Deltas between it and the whole row its chain starts from.
    depth: u32,
    /// Its snapshot: shared with the hub and the agent's session, not a copy.
    snapshot: Arc<Snapshot>,
}

impl std::fmt::Debug for Tip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tip").field("id", &self.id).field("window", &self.window).field("depth", &self.depth).finish()
    }
}

/// A snapshot's body as its sender encoded it: zstd-compressed MessagePack (or JSON, from
/// an agent of the previous protocol). Given to [`super::Store::insert_sent`], which
/// stores it as it came when it fits.
///
/// The caller vouches that the bytes decode to exactly the snapshot being stored (or
/// its delta from `base`): the agent channel passes a frame's bytes only when its
/// checks changed nothing in what they decode to.
#[derive(Clone, Debug)]
pub enum Sent {
    /// The whole snapshot.
    Whole(Vec<u8>),
    /// Its [`SnapshotDelta`] from `base`, a snapshot stored before (the agent's last
    /// acknowledged one). Kept only when `base` is the host's newest row.
    Delta {
        /// The snapshot the delta is from, as stored.
        base: Arc<Snapshot>,
        /// The delta's bytes.
        bytes: Vec<u8>,
    },
}

/// A snapshot body ready to store.
pub(super) struct Body {
    /// zstd-compressed MessagePack (or JSON) of the snapshot, or of its delta from
    /// `base_id`.
    pub bytes: Vec<u8>,
    /// The row the delta is from.
    pub base_id: Option<i64>,
    /// Deltas between this row and the whole row its chain starts from.
    pub depth: u32,
}

impl Body {
    /// How `snap` is stored given its host's `tip` (already checked to be of the same
    /// window and short enough to chain on) and what its sender encoded, if anything.
    /// `None`: the snapshot must be encoded (call [`Body::encode`], off the async
    /// workers).
    pub(super) fn as_sent(tip: Option<&Tip>, sent: Option<&Sent>) -> Option<Body> {
        match (tip, sent?) {
            (_, Sent::Whole(bytes)) if bytes.len() <= MAX_SENT_BODY => {
                Some(Body { bytes: bytes.clone(), base_id: None, depth: 0 })
            }
            (Some(tip), Sent::Delta { base, bytes })
                if Arc::ptr_eq(base, &tip.snapshot) && bytes.len() <= MAX_SENT_BODY =>
            {
                Some(Body { bytes: bytes.clone(), base_id: Some(tip.id), depth: tip.depth + 1 })
            }
            _ => None,
        }
    }

    /// Encodes `snap`: as its delta from `tip` when given, else whole.
    pub(super) fn encode(snap: &Snapshot, tip: Option<&Tip>) -> Result<Body> {
        let encoded = |e: std::io::Error| StoreError::Corrupt(format!("cannot encode snapshot: {e}"));
        // MessagePack, as the agent channel: half the CPU of JSON either way (model/agent.rs).
        let packed = Encoding::MessagePack;
        Ok(match tip {
            Some(tip) => Body {
                bytes: compress(&packed.encode(&SnapshotDelta::between(&tip.snapshot, snap)).map_err(encoded)?)?,
                base_id: Some(tip.id),
                depth: tip.depth + 1,
            },
            None => Body { bytes: compress(&packed.encode(snap).map_err(encoded)?)?, base_id: None, depth: 0 },
        })
    }
}

/// Decodes a stored body, given the snapshot of its base row when it has one. Bodies
/// written before MessagePack are JSON, told apart by their first byte.
pub(super) fn decode(bytes: &[u8], base: Option<&Snapshot>) -> std::result::Result<Snapshot, String> {
    let raw = decompress(bytes).map_err(|e| format!("cannot decompress: {e}"))?;
    let encoding = Encoding::sniff(&raw);
    match base {
        None => encoding.decode(&raw).map_err(|e| format!("cannot parse: {e}")),
        Some(base) => {
            let delta: SnapshotDelta = encoding.decode(&raw).map_err(|e| format!("cannot parse: {e}"))?;
            delta.apply(base).map_err(|e| e.to_string())
        }
    }
}

/// A snapshot ready to store: its columns, encoded.
pub(super) struct Row {
    pub hostname: String,
    pub info: String,
    pub taken: i64,
    pub received: i64,
    pub seq: i64,
    pub cpu_percent: f64,
    pub memory_used_bytes: i64,
    pub memory_total_bytes: i64,
    pub process_count: i64,
    pub connection_count: i64,
    /// `None` when the snapshot has no network figures (a short upload).
    pub sent_bytes_per_sec: Option<f64>,
    pub received_bytes_per_sec: Option<f64>,
    pub load_one: Option<f64>,
    /// The disks' read and write rates together; `None` when not measured.
    pub disk_io: Option<(f64, f64)>,
    /// The hottest sensor; `None` when there is none.
    pub temperature_celsius: Option<f64>,
    pub body: Body,
    /// The snapshot, to chain the host's next row on once this one is stored.
    pub snapshot: Arc<Snapshot>,
    /// The retention epoch when the body was encoded ([`Ingest::epoch`]).
    pub epoch: u64,
}

/// What the writer did with one row.
enum Outcome {
    Stored(Inserted),
    /// The row's base is gone (deleted by retention after the row was encoded).
    BaseGone,
}

struct Job {
    row: Row,
    reply: oneshot::Sender<Result<Option<Inserted>>>,
}

/// The writer's queue and the tips callers chain rows on.
#[derive(Debug)]
pub(super) struct Ingest {
    queue: mpsc::Sender<Job>,
    /// The writer's own connection (a pool of one), for closing.
    pool: Pool,
    tips: Tips,
    /// Moved on by retention before it deletes raw rows (see [`Row::epoch`]).
    epoch: Arc<AtomicU64>,
}

/// The newest row of each host, by host name.
type Tips = Arc<Mutex<HashMap<String, Tip>>>;

impl Ingest {
    /// Starts the writer on a thread of its own. It ends when the last handle to the
    /// queue is dropped.
    ///
    /// Not a task on the caller's runtime: under load that runtime's threads are busy
    /// encoding snapshots, and the writer, which awaits the database once per row,
    /// would wait behind all of them at every await (measured: about 1 ms per row on
    /// two cores, against tens of microseconds on its own thread).
    ///
    /// `pool` is the writer's alone: readers never take its connection, so the writer
    /// never waits for one. SQLite's is opened by the caller; PostgreSQL's is opened
    /// here, on the writer's thread, whose runtime then owns its socket (a socket is
    /// served by the runtime it was opened on).
    ///
    /// `origin`: this collector's id in the fleet (PostgreSQL), under which every stored
    /// snapshot is announced to the other collectors (see `fleet`).
    pub(super) fn start(
        pool: Db<SqlitePool, PgConnectOptions>,
        turn: Arc<tokio::sync::Mutex<()>>,
        origin: Option<i64>,
    ) -> Result<Ingest> {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let tips = Tips::default();
        let epoch = Arc::new(AtomicU64::new(0));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(StoreError::Writer)?;
        let (opened, pool_here) = std::sync::mpsc::sync_channel(1);
        let mut writer = Writer {
            pool: None,
            turn,
            tips: Arc::clone(&tips),
            epoch: Arc::clone(&epoch),
            hosts: HashMap::new(),
            full: FullDisk::default(),
            origin,
            unannounced_logged: None,
        };
        std::thread::Builder::new()
            .name("procyon-store-writer".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let pool = match pool {
                        Db::Sqlite(pool) => Db::Sqlite(pool),
                        // Lazy: connected at the first batch, and again after
                        // PostgreSQL was away.
                        Db::Postgres(options) => Db::Postgres(
                            PgPoolOptions::new()
                                .max_connections(1)
                                .acquire_timeout(super::PG_ACQUIRE_TIMEOUT)
                                .connect_lazy_with(options),
                        ),
                    };
                    let _ = opened.send(pool.clone());
                    writer.pool = Some(pool);
                    run(writer, jobs).await
                })
            })
            .map_err(StoreError::Writer)?;
        // At once: the thread only makes the pool (PostgreSQL's connects later).
        let pool = pool_here.recv().map_err(|_| StoreError::Closed)?;
        Ok(Ingest { queue, pool, tips, epoch })
    }

    /// Closes the writer's connection, waiting for a batch in progress to finish.
    pub(super) async fn close(&self) {
        self.pool.close().await;
    }

    /// Queues a row and waits until it is committed. `None`: the row's base is gone
    /// (retention deleted it after the row was encoded) and nothing was stored; encode
    /// the snapshot whole and try again.
    pub(super) async fn submit(&self, row: Row) -> Result<Option<Inserted>> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Job { row, reply }).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// The row that `hostname`'s snapshot taken at `taken` (ms) can be chained on: its
    /// newest, if that is of the same keyframe window and its chain may grow.
    pub(super) fn tip(&self, hostname: &str, taken: i64) -> Option<Tip> {
        let tips = self.tips.lock().unwrap_or_else(|p| p.into_inner());
        tips.get(hostname).filter(|t| t.window == window_start(hostname, taken) && t.depth < MAX_CHAIN).cloned()
    }

    /// Forgets a host's tip (and so its snapshot): its next row starts a chain.
    pub(super) fn forget(&self, hostname: &str) {
        self.tips.lock().unwrap_or_else(|p| p.into_inner()).remove(hostname);
    }

    /// The retention epoch, to read before [`Ingest::tip`].
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Forgets tips of windows starting before `cutoff` (ms), whose rows retention may
    /// be about to delete, and moves the epoch on so that rows already encoded against
    /// them are checked.
    pub(super) fn forget_before(&self, cutoff: i64) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.forget_ended(cutoff);
    }

    /// Forgets tips of windows starting before `cutoff` (ms) without moving the epoch:
    /// their rows stay, but no new row chains on them (hosts that stopped reporting
    /// leave memory this way).
    pub(super) fn forget_ended(&self, cutoff: i64) {
        self.tips.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, t| t.window >= cutoff);
    }

    /// Tips held now.
    pub(super) fn tip_count(&self) -> usize {
        self.tips.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

thread_local! {
    /// One compression context per thread, reused: creating one per snapshot costs
    /// more than compressing a small delta.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

fn compress(bytes: &[u8]) -> Result<Vec<u8>> {
    let failed = |e: std::io::Error| StoreError::Corrupt(format!("cannot compress snapshot: {e}"));
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let compressor = match cell.as_mut() {
            Some(c) => c,
            None => cell.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(failed)?),
        };
        compressor.compress(bytes).map_err(failed)
    })
}

fn decompress(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let Some(size) = zstd::zstd_safe::get_frame_content_size(bytes).ok().flatten() else {
        // Every body written so far states its size; stream one that does not.
        let mut out = Vec::new();
        let decoder = zstd::stream::read::Decoder::new(bytes)?;
        std::io::Read::read_to_end(&mut std::io::Read::take(decoder, MAX_JSON_BYTES as u64), &mut out)?;
        return Ok(out);
    };
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if size > MAX_JSON_BYTES {
        return Err(std::io::Error::other(format!("frame claims {size} bytes")));
    }
    zstd::bulk::decompress(bytes, size)
}

/// What the writer knows of a host, valid as of its last commit: its id, and the host
/// facts its row holds. Hosts are never deleted, and facts rarely change, so most
/// snapshots need no statement for their host beyond the insert trigger.
struct KnownHost {
    id: i64,
    info: String,
}

/// The writer's state between batches.
struct Writer {
    /// Set on the writer's thread as it starts.
    pool: Option<Pool>,
    turn: Arc<tokio::sync::Mutex<()>>,
    tips: Tips,
    epoch: Arc<AtomicU64>,
    hosts: HashMap<String, KnownHost>,
    full: FullDisk,
    /// This collector's id in the fleet, announcing what it stores (PostgreSQL).
    origin: Option<i64>,
    /// When a batch that could not be announced was last logged.
    unannounced_logged: Option<Instant>,
}

/// How often a full disk is logged while it lasts.
const FULL_LOG_EVERY: Duration = Duration::from_secs(60);

/// A full disk, for the log: said when it starts, then once a minute however many
/// batches it refuses (every agent retries, and a line per refusal would bury the
/// log), and once more when writes succeed again.
#[derive(Default)]
struct FullDisk {
    /// When the first refused batch of this spell was.
    since: Option<Instant>,
    /// When it was last logged.
    logged: Option<Instant>,
    /// Snapshots refused in this spell.
    refused: u64,
}

impl FullDisk {
    fn refused(&mut self, rows: usize) {
        let now = Instant::now();
        self.since.get_or_insert(now);
        self.refused = self.refused.saturating_add(rows as u64);
        if self.logged.is_none_or(|t| now.duration_since(t) >= FULL_LOG_EVERY) {
            self.logged = Some(now);
            tracing::error!(
                refused = self.refused,
                "the disk holding the database is full: snapshots are refused (their senders keep them and send \
                 them again) until space is freed on it; nothing stored is lost"
            );
        }
    }

    fn cleared(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::warn!(
                refused = self.refused,
                after_secs = since.elapsed().as_secs(),
                "the database is writable again; refused snapshots are being sent again"
            );
            *self = FullDisk::default();
        }
    }
}

/// The writer: takes queued rows in batches, one transaction each.
async fn run(mut writer: Writer, mut jobs: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let results = writer.write_batch(&batch).await;
        for (job, result) in batch.drain(..).zip(results) {
            let answer = match result {
                Ok(Outcome::Stored(inserted)) => {
                    // A duplicate's row holds what was stored first, which may differ
                    // from this snapshot (the caller finds out): never chain on it.
                    if !inserted.duplicate {
                        let row = &job.row;
                        let window = window_start(&row.hostname, row.taken);
                        let snapshot = Arc::clone(&row.snapshot);
                        let tip = Tip { id: inserted.id, window, depth: row.body.depth, snapshot };
                        remember(&writer.tips, &row.hostname, tip);
                    }
                    Ok(Some(inserted))
                }
                Ok(Outcome::BaseGone) => Ok(None),
                Err(e) => Err(e),
            };
            // The caller may have given up waiting; its row is stored all the same.
            let _ = job.reply.send(answer);
        }
    }
}

/// Makes a newly stored row its host's tip, unless the tip is of a later window (a late
/// snapshot does not replace it).
fn remember(tips: &Tips, hostname: &str, tip: Tip) {
    let mut tips = tips.lock().unwrap_or_else(|p| p.into_inner());
    match tips.get_mut(hostname) {
        Some(current) if current.window > tip.window => {}
        Some(current) => *current = tip,
        None => {
            tips.insert(hostname.to_owned(), tip);
        }
    }
}

/// Host facts learnt in a transaction, kept once it commits.
type Learnt = Vec<(String, KnownHost)>;

impl Writer {
    /// Stores a batch in one transaction and commits it. First without savepoints (a
    /// row is one statement, and its own triggers, in the usual case); if any row
    /// fails, that transaction is rolled back and the batch is stored again with each
    /// row in a savepoint, so that the failing rows fail alone and leave nothing.
    ///
    /// A full disk fails the whole batch at once (one row at a time would only fail
    /// again): each caller hears [`StoreError::Full`], and the next batch starts afresh
    /// (`settled`, in the store's module, retires a connection a failed
    /// transaction left unusable).
    async fn write_batch(&mut self, batch: &[Job]) -> Vec<Result<Outcome>> {
        let turn = Arc::clone(&self.turn);
        let _turn = turn.lock().await;
        let fast = match self.attempt(batch, false).await {
            Ok(Some(results)) => {
                self.full.cleared();
                return results;
            }
            Ok(None) => None,
            Err(StoreError::Full) => return self.refuse_full(batch),
            // PostgreSQL is away: trying row by row would only wait for it again.
            Err(StoreError::Unreachable(why)) => {
                return batch.iter().map(|_| Err(StoreError::Unreachable(why.clone()))).collect();
            }
            Err(e) => Some(e),
        };
        if let Some(e) = fast {
            tracing::debug!("storing a batch of snapshots failed, trying row by row: {e}");
        }
        let message = match self.attempt(batch, true).await {
            Ok(Some(results)) => {
                self.full.cleared();
                return results;
            }
            Ok(None) => "a row failed outside its savepoint".to_owned(),
            Err(StoreError::Full) => return self.refuse_full(batch),
            Err(StoreError::Unreachable(why)) => {
                return batch.iter().map(|_| Err(StoreError::Unreachable(why.clone()))).collect();
            }
            Err(e) => e.to_string(),
        };
        // Nothing of the batch is stored: every caller hears why.
        batch.iter().map(|_| Err(StoreError::Batch(message.clone()))).collect()
    }

    /// Answers every row of a batch refused for a full disk.
    fn refuse_full(&mut self, batch: &[Job]) -> Vec<Result<Outcome>> {
        self.full.refused(batch.len());
        batch.iter().map(|_| Err(StoreError::Full)).collect()
    }

    /// One try at a batch. `Ok(None)`: a row failed without savepoints, and nothing was
    /// committed.
    async fn attempt(&mut self, batch: &[Job], savepoints: bool) -> Result<Option<Vec<Result<Outcome>>>> {
        let mut tx: Tx = match &self.pool {
            Some(Db::Sqlite(p)) => Db::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
            Some(Db::Postgres(p)) => Db::Postgres(p.begin().await?),
            None => return Err(StoreError::Closed),
        };
        // Rows chained on another are checked for it only if retention ran since they
        // were encoded; it deletes rows only after moving the epoch on.
        let epoch = self.epoch.load(Ordering::SeqCst);
        let mut learnt = Learnt::new();
        let mut results = Vec::with_capacity(batch.len());
        for job in batch {
            if savepoints {
                on!(tx.conn(), |c| sqlx::query("SAVEPOINT one_row").execute(c).await.map(|d| d.rows_affected()))?;
            }
            let mut learnt_here = Learnt::new();
            let result = self.insert(tx.conn(), &job.row, job.row.epoch != epoch, &mut learnt_here).await;
            match (&result, savepoints) {
                (Err(_), false) => {
                    // The host's row may be what failed: look it up afresh next time.
                    self.hosts.remove(&job.row.hostname);
                    // SQLite may have rolled the transaction back already (it does on
                    // a full disk), and then this fails: the row's error is what
                    // matters, and the pool checks the connection when it comes back.
                    let _ = tx.rollback().await;
                    return match result {
                        Err(e @ (StoreError::Full | StoreError::Unreachable(_))) => Err(e),
                        _ => Ok(None),
                    };
                }
                (Err(StoreError::Full), true) => return Err(StoreError::Full),
                (Err(StoreError::Unreachable(why)), true) => return Err(StoreError::Unreachable(why.clone())),
                (Err(_), true) => {
                    self.hosts.remove(&job.row.hostname);
                    on!(tx.conn(), |c| sqlx::query("ROLLBACK TO one_row").execute(c).await.map(|d| d.rows_affected()))?;
                }
                (Ok(_), _) => learnt.extend(learnt_here),
            }
            if savepoints {
                on!(tx.conn(), |c| sqlx::query("RELEASE one_row").execute(c).await.map(|d| d.rows_affected()))?;
            }
            results.push(result);
        }
        self.announce(&mut tx, batch, &results).await;
        tx.commit().await?;
        self.hosts.extend(learnt);
        Ok(Some(results))
    }

    /// Tells the other collectors on the database what this batch stored, in its
    /// transaction: PostgreSQL delivers the notifications when it commits, and never for
    /// a batch rolled back. One statement for the batch. Each snapshot is announced with
    /// the fleet overview's figures of it ([`super::fleet::announcement`]), so that the
    /// others read back only the snapshots someone follows on them.
    ///
    /// Storing comes first: notifications that cannot be sent (PostgreSQL's queue of
    /// them is full while a listener stalls, say) are given up, behind a savepoint,
    /// and the batch is stored all the same; the others then miss its live news.
    async fn announce(&mut self, tx: &mut Tx, batch: &[Job], results: &[Result<Outcome>]) {
        if let Err(e) = self.try_announce(tx, batch, results).await {
            let now = Instant::now();
            if self.unannounced_logged.is_none_or(|at| now.duration_since(at) >= FULL_LOG_EVERY) {
                self.unannounced_logged = Some(now);
                tracing::warn!(
                    "stored snapshots could not be announced to the other collectors, whose live views miss \
                     them (said at most once a minute): {e}"
                );
            }
        }
    }

    async fn try_announce(&self, tx: &mut Tx, batch: &[Job], results: &[Result<Outcome>]) -> Result<()> {
        let (Some(origin), Db::Postgres(tx)) = (self.origin, tx) else { return Ok(()) };
        let payloads: Vec<String> = batch
            .iter()
            .zip(results)
            .filter_map(|(job, r)| match r {
                Ok(Outcome::Stored(i)) if !i.duplicate => {
                    Some(super::fleet::announcement(origin, i.host_id, i.id, &job.row.snapshot, job.row.received))
                }
                _ => None,
            })
            .collect();
        if payloads.is_empty() {
            return Ok(());
        }
        sqlx::query("SAVEPOINT announce").execute(&mut **tx).await?;
        let sent = sqlx::query("SELECT pg_notify($2, p) FROM unnest($1::text[]) AS p")
            .bind(&payloads)
            .bind(super::fleet::SNAPSHOTS)
            .execute(&mut **tx)
            .await;
        match sent {
            Ok(_) => {
                sqlx::query("RELEASE SAVEPOINT announce").execute(&mut **tx).await?;
                Ok(())
            }
            Err(e) => {
                sqlx::query("ROLLBACK TO SAVEPOINT announce").execute(&mut **tx).await?;
                Err(e.into())
            }
        }
    }

    /// Inserts one row; the insert trigger counts it on its host, moves the host's
    /// times and seq, and queues it for rollups if its minute is already rolled.
    async fn insert(&self, mut tx: Conn<'_>, row: &Row, check_base: bool, learnt: &mut Learnt) -> Result<Outcome> {
        if let Some(base) = row.body.base_id
            && check_base
        {
            let exists: Option<i64> =
                on!(tx.reborrow(), |c| sqlx::query_scalar("SELECT id FROM snapshots WHERE id = $1")
                    .bind(base)
                    .fetch_optional(c)
                    .await)?;
            if exists.is_none() {
                return Ok(Outcome::BaseGone);
            }
        }
        let (host_id, info) = match self.hosts.get(&row.hostname) {
            Some(known) => (known.id, known.info.as_str()),
            None => {
                on!(tx.reborrow(), |c| sqlx::query(
                    "INSERT INTO hosts (hostname, info_json, first_seen, last_seen, last_taken_at) \
                     VALUES ($1, $2, $3, $3, $4) ON CONFLICT (hostname) DO NOTHING",
                )
                .bind(&row.hostname)
                .bind(&row.info)
                .bind(row.received)
                .bind(row.taken)
                .execute(c)
                .await
                .map(|d| d.rows_affected()))?;
                let (id, info): (i64, Option<String>) =
                    on!(tx.reborrow(), |c| sqlx::query_as("SELECT id, info_json FROM hosts WHERE hostname = $1")
                        .bind(&row.hostname)
                        .fetch_one(c)
                        .await)?;
                learnt.push((row.hostname.clone(), KnownHost { id, info: info.unwrap_or_default() }));
                (id, learnt.last().map_or("", |(_, k)| k.info.as_str()))
            }
        };
        let info_known = info == row.info;

        let id: Option<i64> = on!(tx.reborrow(), |c| sqlx::query_scalar(
            "INSERT INTO snapshots (host_id, seq, taken_at, received_at, cpu_percent, memory_used_bytes, \
             memory_total_bytes, process_count, connection_count, sent_bytes_per_sec, received_bytes_per_sec, \
             load_one, network_known, top_json, body, base_id, disk_read_bytes_per_sec, disk_write_bytes_per_sec, \
             temperature_celsius) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, '', $14, $15, $16, $17, $18) \
             ON CONFLICT (host_id, seq) DO NOTHING RETURNING id",
        )
        .bind(host_id)
        .bind(row.seq)
        .bind(row.taken)
        .bind(row.received)
        .bind(row.cpu_percent)
        .bind(row.memory_used_bytes)
        .bind(row.memory_total_bytes)
        .bind(row.process_count)
        .bind(row.connection_count)
        // The columns are NOT NULL: 0 with `network_known` = 0 stands for "not known".
        .bind(row.sent_bytes_per_sec.unwrap_or(0.0))
        .bind(row.received_bytes_per_sec.unwrap_or(0.0))
        .bind(row.load_one)
        .bind(row.sent_bytes_per_sec.is_some() && row.received_bytes_per_sec.is_some())
        .bind(&row.body.bytes)
        .bind(row.body.base_id)
        .bind(row.disk_io.map(|d| d.0))
        .bind(row.disk_io.map(|d| d.1))
        .bind(row.temperature_celsius)
        .fetch_optional(c)
        .await)?;

        let Some(id) = id else {
            let existing: i64 =
                on!(tx.reborrow(), |c| sqlx::query_scalar("SELECT id FROM snapshots WHERE host_id = $1 AND seq = $2")
                    .bind(host_id)
                    .bind(row.seq)
                    .fetch_one(c)
                    .await)?;
            return Ok(Outcome::Stored(Inserted { id: existing, host_id, duplicate: true }));
        };

        // The host's facts follow its newest snapshot by taken_at (the trigger has just
        // moved `last_taken_at`), so a spool catching up with old snapshots does not
        // bring back old facts.
        if !info_known {
            let changed = on!(tx.reborrow(), |c| sqlx::query(
                "UPDATE hosts SET info_json = $1 WHERE id = $2 AND last_taken_at = $3"
            )
            .bind(&row.info)
            .bind(host_id)
            .bind(row.taken)
            .execute(c)
            .await
            .map(|done| done.rows_affected()))?;
            if changed > 0 {
                learnt.push((row.hostname.clone(), KnownHost { id: host_id, info: row.info.clone() }));
            }
        }
        Ok(Outcome::Stored(Inserted { id, host_id, duplicate: false }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bodies_round_trip_and_json_ones_from_before_still_read() {
        let mut sampler = crate::sample::Sampler::new(Default::default());
        let first = Arc::new(sampler.sample());
        let mut next = (*first).clone();
        next.seq += 1;
        if let Some(p) = next.processes.first_mut() {
            p.cpu_percent = Some(p.cpu_percent.unwrap_or(0.0) + 1.0);
        }
        let next = Arc::new(next);
        let whole = Body::encode(&first, None).unwrap();
        assert_eq!((whole.base_id, whole.depth), (None, 0));
        assert_eq!(decode(&whole.bytes, None).unwrap(), *first);
        let tip = Tip { id: 1, window: 0, depth: 0, snapshot: Arc::clone(&first) };
        let delta = Body::encode(&next, Some(&tip)).unwrap();
        assert_eq!((delta.base_id, delta.depth), (Some(1), 1));
        assert_eq!(decode(&delta.bytes, Some(&first)).unwrap(), *next);
        // What a sender encoded is kept as it came: whole always, a delta only when it is
        // from the tip's very snapshot.
        let sent = Sent::Delta { base: Arc::clone(&first), bytes: delta.bytes.clone() };
        assert_eq!(Body::as_sent(Some(&tip), Some(&sent)).unwrap().bytes, delta.bytes);
        let copy = Sent::Delta { base: Arc::new((*first).clone()), bytes: delta.bytes.clone() };
        assert!(Body::as_sent(Some(&tip), Some(&copy)).is_none(), "an equal snapshot is not the tip's");
        assert!(Body::as_sent(None, Some(&sent)).is_none());
        let kept = Body::as_sent(Some(&tip), Some(&Sent::Whole(whole.bytes.clone()))).unwrap();
        assert_eq!((kept.base_id, kept.bytes), (None, whole.bytes.clone()));
        assert!(Body::as_sent(None, Some(&Sent::Whole(vec![0; MAX_SENT_BODY + 1]))).is_none());
        // Rows written when bodies were JSON.
        let old_whole = compress(&serde_json::to_vec(&*first).unwrap()).unwrap();
        assert_eq!(decode(&old_whole, None).unwrap(), *first);
        let old_delta = compress(&serde_json::to_vec(&SnapshotDelta::between(&first, &next)).unwrap()).unwrap();
        assert_eq!(decode(&old_delta, Some(&first)).unwrap(), *next);
    }
}
