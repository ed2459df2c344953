//! Reads that decode snapshot bodies: how many may run at once, where they run, and a
//! cursor that walks a range one snapshot at a time.
//!
//! A stored body is small (zstd), but it decodes to the whole snapshot: a hostile host
//! with 20,000 processes and 4 KiB command lines makes 80 MB of JSON, and more than that
//! as Rust values. So every read that decodes one:
//!
//! - takes one of a few slots ([`ReadLimits::concurrent`]) for as long as it reads and
//!   decodes; a read that finds every slot taken waits at most [`ReadLimits::wait`] and
//!   then fails with [`StoreError::Busy`] (the REST layer answers 503 with `Retry-After`);
//! - decodes on a blocking thread (`spawn_blocking`), never on an async worker, and
//!   holds a database connection only to fetch the bytes, not while decoding;
//! - over a range ([`RangeReader`]), decodes one snapshot at a time, keeping only the
//!   last one (the next row is a delta from it), so a long export costs about one
//!   snapshot of memory and one delta per row, not the whole range.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::chain::{self, Chain, Known};
use super::db::on;
use super::snapshots::BodyRow;
use super::{Result, Store, StoreError, StoredSnapshot, from_ms, ingest};
use crate::model::Snapshot;

/// Heavy reads that run at once by default: enough that one export does not hold up a
/// dashboard, few enough that a burst of exports cannot fill the memory (each holds
/// about two decoded snapshots: one and the one before).
pub const HEAVY_READS: usize = 3;

/// How long a heavy read waits for a slot by default before giving up as busy.
pub const HEAVY_READ_WAIT: Duration = Duration::from_secs(10);

/// Bounds on reads that decode snapshot bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    /// Heavy reads at once (at least 1).
    pub concurrent: usize,
    /// How long a heavy read waits for a slot before failing with [`StoreError::Busy`].
    pub wait: Duration,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits { concurrent: HEAVY_READS, wait: HEAVY_READ_WAIT }
    }
}

/// What heavy reads have done since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Snapshot bodies decoded (the bases a row was rebuilt from included).
    pub decoded: u64,
    /// Most decodes that ever ran at the same moment.
    pub decoding_peak: usize,
}

/// The slots, and the counts behind [`ReadStats`].
#[derive(Debug)]
pub(super) struct HeavyReads {
    slots: Arc<Semaphore>,
    wait: Duration,
    decoded: AtomicU64,
    decoding: AtomicUsize,
    peak: AtomicUsize,
}

/// One heavy read's slot, free again when dropped.
#[derive(Debug)]
pub struct HeavyRead {
    _permit: OwnedSemaphorePermit,
}

impl HeavyReads {
    pub(super) fn new(limits: ReadLimits) -> HeavyReads {
        HeavyReads {
            slots: Arc::new(Semaphore::new(limits.concurrent.max(1))),
            wait: limits.wait,
            decoded: AtomicU64::new(0),
            decoding: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Waits (bounded) for a slot. Slots are handed out in the order they were asked for.
    async fn slot(&self) -> Result<HeavyRead> {
        match tokio::time::timeout(self.wait, Arc::clone(&self.slots).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(HeavyRead { _permit: permit }),
            Ok(Err(_)) => Err(StoreError::Closed),
            Err(_) => Err(StoreError::Busy { retry_after_secs: self.wait.as_secs().clamp(1, 60) }),
        }
    }

    fn stats(&self) -> ReadStats {
        ReadStats { decoded: self.decoded.load(Ordering::Relaxed), decoding_peak: self.peak.load(Ordering::Relaxed) }
    }

    /// Decodes one body, counting it.
    fn decode(&self, bytes: &[u8], keyframe: Option<&Snapshot>) -> std::result::Result<Snapshot, String> {
        let now = self.decoding.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        self.decoded.fetch_add(1, Ordering::Relaxed);
        let decoded = ingest::decode(bytes, keyframe);
        self.decoding.fetch_sub(1, Ordering::SeqCst);
        decoded
    }
}

/// Rebuilds a fetched row from its chain (on the calling thread: call it from a blocking
/// one). `None`: a base is gone, and so the row is past retention.
fn decode_row(reads: &HeavyReads, row: &BodyRow, chain: Option<Chain>) -> Result<Option<StoredSnapshot>> {
    let Some(chain) = chain else { return Ok(None) };
    let snapshot = chain.rebuild(|bytes, base| reads.decode(bytes, base))?;
    Ok(Some(StoredSnapshot { id: row.id, host_id: row.host_id, received_at: from_ms(row.received_at), snapshot }))
}

impl Store {
    /// Waits (at most [`ReadLimits::wait`]) for a heavy read's slot and holds it until
    /// the returned guard is dropped. Reads of this store take one on their own; this is
    /// for callers that must know up front whether the store has room (and for tests).
    pub async fn heavy_read(&self) -> Result<HeavyRead> {
        self.reads.slot().await
    }

    /// What heavy reads have done so far.
    pub fn read_stats(&self) -> ReadStats {
        self.reads.stats()
    }

    /// Fetches the row `select` names (a statement over the body columns with one bound
    /// integer), decodes it and passes it through `f`, within a heavy read's slot and
    /// on a blocking thread (see [`RangeReader::next_with`] for why `f` runs there).
    pub(super) async fn read_decoded<T, F>(&self, select: &str, key: i64, f: F) -> Result<Option<T>>
    where
        T: Send + 'static,
        F: FnOnce(StoredSnapshot) -> T + Send + 'static,
    {
        let _slot = self.reads.slot().await?;
        let (mut row, chain) = {
            let mut conn = self.pool.acquire().await?;
            let row: Option<BodyRow> = on!(conn.conn(), |c| sqlx::query_as(select).bind(key).fetch_optional(c).await)?;
            let Some(mut row) = row else { return Ok(None) };
            let body = std::mem::take(&mut row.body);
            let chain = chain::fetch(conn.conn(), row.id, body, row.base_id, None).await?;
            (row, chain)
        };
        let reads = Arc::clone(&self.reads);
        row.body = Vec::new();
        tokio::task::spawn_blocking(move || decode_row(&reads, &row, chain).map(|stored| stored.map(f)))
            .await
            .map_err(|e| StoreError::Corrupt(format!("the decoding task failed: {e}")))?
    }

    /// A cursor over the snapshots of a host taken from `from` to `to` (both included),
    /// oldest first, at most `limit` of them. Only their ids are read now; each is read
    /// and decoded when [`RangeReader::next`] gets to it.
    pub async fn range_reader(
        &self,
        host_id: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
    ) -> Result<RangeReader> {
        let rows: Vec<(i64, i64)> = on!(&self.pool, |c| sqlx::query_as(
            "SELECT id, taken_at FROM snapshots WHERE host_id = $1 AND taken_at >= $2 AND taken_at <= $3 \
             ORDER BY taken_at, seq LIMIT $4",
        )
        .bind(host_id)
        .bind(super::to_ms(from))
        .bind(super::to_ms(to))
        .bind(i64::from(limit))
        .fetch_all(c)
        .await)?;
        Ok(RangeReader { store: self.clone(), rows: rows.into(), last: None })
    }
}

/// Snapshots of a range, read and decoded one at a time (see [`Store::range_reader`]).
///
/// Between two calls it holds no slot and no connection, only the last snapshot it
/// decoded, which the next row is likely a delta from; a slow consumer (an export to a
/// slow client) costs nothing but that.
pub struct RangeReader {
    store: Store,
    /// Rows still to read: id and `taken_at` (ms).
    rows: VecDeque<(i64, i64)>,
    /// The last snapshot decoded, by row id.
    last: Option<Known>,
}

impl RangeReader {
    /// Rows not read yet (some may turn out to be gone by then).
    pub fn remaining(&self) -> usize {
        self.rows.len()
    }

    /// When the next row to read was taken: where to start again to get the rest.
    pub fn next_taken_at(&self) -> Option<DateTime<Utc>> {
        self.rows.front().map(|&(_, taken)| from_ms(taken))
    }

    /// The next snapshot, or `None` at the end. Rows deleted since the cursor was made
    /// (by retention) are skipped.
    pub async fn next(&mut self) -> Result<Option<StoredSnapshot>> {
        self.next_with(StoredSnapshot::clone).await
    }

    /// The next snapshot passed through `f`, which runs on the same blocking thread as
    /// the decoding and within the same slot: what `f` keeps (a few figures, or the
    /// snapshot's encoding) is all that outlives the decoded snapshot, besides the
    /// snapshot itself, kept as the base of the next row.
    pub async fn next_with<T, F>(&mut self, f: F) -> Result<Option<T>>
    where
        T: Send + 'static,
        F: FnOnce(&StoredSnapshot) -> T + Clone + Send + 'static,
    {
        while let Some(&(id, _)) = self.rows.front() {
            let _slot = self.store.reads.slot().await?;
            let (row, chain) = {
                let mut conn = self.store.pool.acquire().await?;
                let row: Option<BodyRow> = on!(conn.conn(), |c| sqlx::query_as(&format!(
                    "SELECT {} FROM snapshots WHERE id = $1",
                    super::snapshots::BODY_COLUMNS
                ))
                .bind(id)
                .fetch_optional(c)
                .await)?;
                match row {
                    None => (None, None),
                    Some(mut row) => {
                        let body = std::mem::take(&mut row.body);
                        let chain = chain::fetch(conn.conn(), row.id, body, row.base_id, self.last.as_ref()).await?;
                        (Some(row), chain)
                    }
                }
            };
            self.rows.pop_front();
            let Some(row) = row else { continue };
            // Not needed any more, whatever comes next: free it before decoding (the
            // chain holds it if it is the base).
            self.last = None;
            let reads = Arc::clone(&self.store.reads);
            let f = f.clone();
            let decoded = tokio::task::spawn_blocking(move || {
                let stored = decode_row(&reads, &row, chain)?;
                Ok::<_, StoreError>(stored.map(|stored| {
                    let out = f(&stored);
                    (out, (stored.id, Arc::new(stored.snapshot)))
                }))
            })
            .await
            .map_err(|e| StoreError::Corrupt(format!("the decoding task failed: {e}")))??;
            if let Some((out, last)) = decoded {
                self.last = Some(last);
                return Ok(Some(out));
            }
        }
        Ok(None)
    }
}
