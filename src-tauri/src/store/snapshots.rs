//! Hosts and raw snapshots: ingest (idempotent by host and sequence number), lookups,
//! lists and export ranges.
//!
//! A snapshot row carries summary columns for lists and charts and the snapshot's body
//! (whole, or as a delta from the row before: see `ingest`), which single-snapshot reads,
//! exports and rollups (for top processes) open. Reads that open bodies go through
//! `reads`: a few at a time, decoded off the async workers.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use std::sync::Arc;

use super::db::on;
use super::ingest::{self, Sent};
use super::{Inserted, Page, Result, Store, StoreError, StoredSnapshot, from_ms, page_limit, to_i64, to_ms, to_u32};
use crate::model::api::{HostSummary, SnapshotSummary};
use crate::model::{HostInfo, Snapshot};

/// Columns of [`HostRow`].
const HOST_COLUMNS: &str = "id, hostname, info_json, first_seen, last_seen, snapshot_count";

/// Columns of [`BodyRow`].
pub(super) const BODY_COLUMNS: &str = "id, host_id, received_at, body, base_id";

#[derive(FromRow)]
struct HostRow {
    id: i64,
    hostname: String,
    info_json: Option<String>,
    first_seen: i64,
    last_seen: i64,
    snapshot_count: i64,
}

impl HostRow {
    fn summary(self) -> HostSummary {
        // A host's facts that no longer parse (written by another version) should not
        // hide the host: show it without them.
        let info = self.info_json.and_then(|json| match serde_json::from_str::<HostInfo>(&json) {
            Ok(info) => Some(info),
            Err(e) => {
                tracing::warn!(host = %self.hostname, "stored host info is unreadable: {e}");
                None
            }
        });
        HostSummary {
            id: self.id,
            hostname: self.hostname,
            info,
            first_seen: from_ms(self.first_seen),
            last_seen: from_ms(self.last_seen),
            // The server knows who is connected and which host is its own.
            online: false,
            local: false,
            snapshot_count: self.snapshot_count,
            // Filled from `host_labels` by the reads that return hosts.
            labels: Default::default(),
            admin_labels: Default::default(),
            // The server fills them in from the hub.
            figures: None,
        }
    }
}

/// A stored snapshot's row, its body not decoded yet.
#[derive(FromRow)]
pub(super) struct BodyRow {
    pub(super) id: i64,
    pub(super) host_id: i64,
    pub(super) received_at: i64,
    pub(super) body: Vec<u8>,
    pub(super) base_id: Option<i64>,
}

/// Which snapshot is a host's newest, without reading its body.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct Newest {
    /// Host id.
    pub host_id: i64,
    /// Host name.
    pub hostname: String,
    /// Its newest snapshot's id.
    pub snapshot_id: i64,
}

#[derive(FromRow)]
struct SummaryRow {
    id: i64,
    hostname: String,
    taken_at: i64,
    seq: i64,
    cpu_percent: f64,
    memory_used_bytes: i64,
    memory_total_bytes: i64,
    process_count: i64,
    connection_count: i64,
}

impl From<SummaryRow> for SnapshotSummary {
    fn from(r: SummaryRow) -> Self {
        SnapshotSummary {
            snapshot_id: r.id,
            hostname: r.hostname,
            timestamp: from_ms(r.taken_at),
            seq: r.seq,
            cpu_percent: r.cpu_percent as f32,
            memory_used_bytes: r.memory_used_bytes,
            // The column holds 0 for "not known": no machine has no memory.
            memory_total_bytes: (r.memory_total_bytes > 0).then_some(r.memory_total_bytes),
            process_count: to_u32(r.process_count),
            connection_count: to_u32(r.connection_count),
        }
    }
}

/// Columns of [`SummaryRow`]; the query joins `snapshots s` with `hosts h`.
const SUMMARY_COLUMNS: &str = "s.id, h.hostname, s.taken_at, s.seq, s.cpu_percent, s.memory_used_bytes, \
     s.memory_total_bytes, s.process_count, s.connection_count";

/// A float for a REAL column: SQLite stores NaN as NULL, which the NOT NULL columns
/// refuse, so an unmeasurable figure is stored as 0.
pub(super) fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

impl Store {
    /// Stores a snapshot received at `received_at`, creating or updating its host.
    /// Returns once the row is committed; concurrent calls share one transaction.
    ///
    /// A snapshot whose host and `seq` are already stored is a duplicate (an upload sent
    /// twice): nothing changes and the existing row's id is returned.
    pub async fn insert_snapshot(&self, snap: &Snapshot, received_at: DateTime<Utc>) -> Result<Inserted> {
        self.insert_shared(&Arc::new(snap.clone()), received_at).await
    }

    /// [`Store::insert_snapshot`] of a shared snapshot: the host's next row is chained
    /// on this `Arc`, kept without a copy until then.
    pub async fn insert_shared(&self, snap: &Arc<Snapshot>, received_at: DateTime<Utc>) -> Result<Inserted> {
        self.insert_sent(snap, received_at, None).await
    }

    /// [`Store::insert_shared`] with what its sender encoded: those bytes are stored as
    /// they came when they fit the host's chain (see [`Sent`]); else the snapshot is
    /// encoded here, on a blocking thread (a large snapshot takes milliseconds of CPU,
    /// which must not stall the async workers).
    pub async fn insert_sent(
        &self,
        snap: &Arc<Snapshot>,
        received_at: DateTime<Utc>,
        sent: Option<Sent>,
    ) -> Result<Inserted> {
        let info = serde_json::to_string(&snap.host)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode host info: {e}")))?;
        let taken = to_ms(snap.taken_at);
        let epoch = self.ingest.epoch();
        let mut tip = self.ingest.tip(&snap.host.hostname, taken);
        let mut sent = sent;
        loop {
            let body = match ingest::Body::as_sent(tip.as_ref(), sent.as_ref()) {
                Some(body) => body,
                None => {
                    let (snap, tip) = (Arc::clone(snap), tip.clone());
                    tokio::task::spawn_blocking(move || ingest::Body::encode(&snap, tip.as_ref()))
                        .await
                        .map_err(|e| StoreError::Corrupt(format!("the encoding task failed: {e}")))??
                }
            };
            let whole = body.base_id.is_none();
            let row = ingest::Row {
                hostname: snap.host.hostname.clone(),
                info: info.clone(),
                taken,
                received: to_ms(received_at),
                seq: to_i64(snap.seq),
                cpu_percent: finite(f64::from(snap.cpu.total_percent)),
                memory_used_bytes: to_i64(snap.memory.used_bytes),
                // 0 stands for "not known" (the column predates nullable sizes).
                memory_total_bytes: to_i64(snap.memory.total_bytes.unwrap_or(0)),
                process_count: to_i64(snap.processes.len() as u64),
                connection_count: to_i64(snap.connections.len() as u64),
                // Without network figures (a short upload), the series leaves them out.
                sent_bytes_per_sec: snap.network.total.as_ref().map(|t| finite(t.sent_bytes_per_sec)),
                received_bytes_per_sec: snap.network.total.as_ref().map(|t| finite(t.received_bytes_per_sec)),
                load_one: snap.cpu.load_average.map(|l| l.one).filter(|v| v.is_finite()),
                disk_io: snap.disk_io_bytes_per_sec().filter(|(r, w)| r.is_finite() && w.is_finite()),
                temperature_celsius: snap.hottest_celsius(),
                body,
                snapshot: Arc::clone(snap),
                epoch,
            };
            match self.ingest.submit(row).await? {
                Some(inserted) => return Ok(inserted),
                None if !whole => {
                    // Retention deleted the base meanwhile: store this one whole.
                    self.ingest.forget(&snap.host.hostname);
                    tip = None;
                    sent = sent.filter(|s| matches!(s, Sent::Whole(_)));
                }
                None => return Err(StoreError::Corrupt("a whole snapshot was refused as a delta".into())),
            }
        }
    }

    /// Lets go of what the store keeps of `hostname` for chaining its next row (its
    /// newest snapshot): its agent went away, and a new session starts with a whole
    /// snapshot anyway.
    pub fn release(&self, hostname: &str) {
        self.ingest.forget(hostname);
    }

    /// Hosts whose newest snapshot the store keeps now (for chaining their next row).
    pub fn held_hosts(&self) -> usize {
        self.ingest.tip_count()
    }

    /// The sequence number to give the next snapshot of `hostname` when its upload
    /// carries none: one more than the highest ever stored, 1 for a new host.
    pub async fn next_seq(&self, hostname: &str) -> Result<u64> {
        let last: Option<i64> =
            on!(&self.pool, |c| sqlx::query_scalar("SELECT last_seq FROM hosts WHERE hostname = $1")
                .bind(hostname)
                .fetch_optional(c)
                .await)?;
        Ok(u64::try_from(last.unwrap_or(0).max(0)).unwrap_or(0).saturating_add(1))
    }

    /// Every host, by name. `online` and `local` are false: the server fills them in.
    pub async fn hosts(&self) -> Result<Vec<HostSummary>> {
        let rows: Vec<HostRow> =
            on!(&self.pool, |c| sqlx::query_as(&format!("SELECT {HOST_COLUMNS} FROM hosts ORDER BY hostname"))
                .fetch_all(c)
                .await)?;
        let mut hosts: Vec<HostSummary> = rows.into_iter().map(HostRow::summary).collect();
        self.fill_labels(&mut hosts).await?;
        Ok(hosts)
    }

    /// One host by its numeric id or its name (an id wins when a name looks like one).
    pub async fn host(&self, key: &str) -> Result<Option<HostSummary>> {
        if let Ok(id) = key.parse::<i64>() {
            let row: Option<HostRow> =
                on!(&self.pool, |c| sqlx::query_as(&format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(c)
                    .await)?;
            if let Some(row) = row {
                let mut host = [row.summary()];
                self.fill_labels(&mut host).await?;
                let [host] = host;
                return Ok(Some(host));
            }
        }
        let row: Option<HostRow> =
            on!(&self.pool, |c| sqlx::query_as(&format!("SELECT {HOST_COLUMNS} FROM hosts WHERE hostname = $1"))
                .bind(key)
                .fetch_optional(c)
                .await)?;
        let Some(row) = row else { return Ok(None) };
        let mut host = [row.summary()];
        self.fill_labels(&mut host).await?;
        let [host] = host;
        Ok(Some(host))
    }

    /// The newest snapshot of a host (by taken_at, then seq).
    pub async fn latest(&self, host_id: i64) -> Result<Option<StoredSnapshot>> {
        self.latest_with(host_id, |s| s).await
    }

    /// The newest snapshot of a host passed through `f` on the thread that decoded it
    /// (see [`Store::snapshot_with`]).
    pub async fn latest_with<T, F>(&self, host_id: i64, f: F) -> Result<Option<T>>
    where
        T: Send + 'static,
        F: FnOnce(StoredSnapshot) -> T + Send + 'static,
    {
        self.read_decoded(
            &format!(
                "SELECT {BODY_COLUMNS} FROM snapshots WHERE host_id = $1 ORDER BY taken_at DESC, seq DESC LIMIT 1"
            ),
            host_id,
            f,
        )
        .await
    }

    /// Which snapshot is the newest of each host that has one, by host name; nothing is
    /// decoded, so a caller can pick the hosts it wants first.
    pub async fn newest_per_host(&self) -> Result<Vec<Newest>> {
        Ok(on!(&self.pool, |c| sqlx::query_as(
            "SELECT h.id AS host_id, h.hostname, s.id AS snapshot_id FROM hosts h JOIN snapshots s ON s.id = \
               (SELECT id FROM snapshots WHERE host_id = h.id ORDER BY taken_at DESC, seq DESC LIMIT 1) \
             ORDER BY h.hostname",
        )
        .fetch_all(c)
        .await)?)
    }

    /// The newest snapshot of every host that has one, by host name, decoded one at a
    /// time but all held at once: for a few hosts only (the API and the live views walk
    /// [`Store::newest_per_host`] instead, one snapshot at a time). A snapshot that
    /// cannot be read is left out (and logged) rather than hiding every other host; a
    /// busy store is an error.
    pub async fn latest_per_host(&self) -> Result<Vec<StoredSnapshot>> {
        let mut out = Vec::new();
        for newest in self.newest_per_host().await? {
            match self.snapshot(newest.snapshot_id).await {
                Ok(Some(stored)) => out.push(stored),
                Ok(None) => {}
                Err(e @ (StoreError::Busy { .. } | StoreError::Closed)) => return Err(e),
                Err(e) => tracing::warn!(host = %newest.hostname, "skipping the newest snapshot of a host: {e}"),
            }
        }
        Ok(out)
    }

    /// One stored snapshot by id.
    pub async fn snapshot(&self, id: i64) -> Result<Option<StoredSnapshot>> {
        self.snapshot_with(id, |s| s).await
    }

    /// One stored snapshot by id, passed through `f` on the thread that decoded it (to
    /// encode it there, say, so that only the encoding outlives the decoded snapshot).
    pub async fn snapshot_with<T, F>(&self, id: i64, f: F) -> Result<Option<T>>
    where
        T: Send + 'static,
        F: FnOnce(StoredSnapshot) -> T + Send + 'static,
    {
        self.read_decoded(&format!("SELECT {BODY_COLUMNS} FROM snapshots WHERE id = $1"), id, f).await
    }

    /// The stored snapshot of `hostname` with sequence number `seq`.
    pub async fn snapshot_by_seq(&self, hostname: &str, seq: u64) -> Result<Option<StoredSnapshot>> {
        let id: Option<i64> = on!(&self.pool, |c| sqlx::query_scalar(
            "SELECT s.id FROM snapshots s JOIN hosts h ON h.id = s.host_id WHERE h.hostname = $1 AND s.seq = $2",
        )
        .bind(hostname)
        .bind(to_i64(seq))
        .fetch_optional(c)
        .await)?;
        match id {
            Some(id) => self.snapshot(id).await,
            None => Ok(None),
        }
    }

    /// Stored snapshots of one host or of all, newest first, without their bodies.
    pub async fn list(&self, host_id: Option<i64>, page: Page) -> Result<Vec<SnapshotSummary>> {
        let (limit, offset) = page_limit(page);
        // Two statements rather than `(? IS NULL OR host_id = ?)`, which would keep
        // SQLite from using the (host_id, taken_at) index.
        let rows: Vec<SummaryRow> = match host_id {
            Some(host_id) => on!(&self.pool, |c| sqlx::query_as(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM snapshots s JOIN hosts h ON h.id = s.host_id \
                     WHERE s.host_id = $1 ORDER BY s.taken_at DESC, s.seq DESC, s.id DESC LIMIT $2 OFFSET $3"
            ))
            .bind(host_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(c)
            .await)?,
            None => on!(&self.pool, |c| sqlx::query_as(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM snapshots s JOIN hosts h ON h.id = s.host_id \
                     ORDER BY s.taken_at DESC, s.id DESC LIMIT $1 OFFSET $2"
            ))
            .bind(limit)
            .bind(offset)
            .fetch_all(c)
            .await)?,
        };
        Ok(rows.into_iter().map(SnapshotSummary::from).collect())
    }

    /// Number of stored snapshots of one host or of all (kept by triggers, so this
    /// does not scan).
    pub async fn count(&self, host_id: Option<i64>) -> Result<i64> {
        let count: Option<i64> = match host_id {
            Some(id) => on!(&self.pool, |c| sqlx::query_scalar("SELECT snapshot_count FROM hosts WHERE id = $1")
                .bind(id)
                .fetch_optional(c)
                .await)?,
            None => on!(&self.pool, |c| sqlx::query_scalar("SELECT CAST(SUM(snapshot_count) AS BIGINT) FROM hosts")
                .fetch_one(c)
                .await)?,
        };
        Ok(count.unwrap_or(0))
    }

    /// Ids and times of a host's snapshots taken from `from` to `to` (both included),
    /// oldest first, at most `limit` of them; nothing is decoded, so a caller can pick
    /// which to read (the network map reads a long range at evenly spaced ones).
    pub async fn snapshot_times(
        &self,
        host_id: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(i64, DateTime<Utc>)>> {
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
        Ok(rows.into_iter().map(|(id, taken)| (id, from_ms(taken))).collect())
    }

    /// Full snapshots of a host taken from `from` to `to` (both included), oldest
    /// first, at most `limit` of them, all in memory at once: for small ranges. Walk
    /// long ones with [`Store::range_reader`].
    pub async fn range(
        &self,
        host_id: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<StoredSnapshot>> {
        let mut reader = self.range_reader(host_id, from, to, limit).await?;
        let mut out = Vec::new();
        while let Some(stored) = reader.next().await? {
            out.push(stored);
        }
        Ok(out)
    }
}

impl Store {
    /// Deletes a host with all its history (snapshots, rollups) and its binding. `false`
    /// if there was no such host. The writer forgets the host's newest row, so a
    /// snapshot that arrives later starts the host afresh.
    pub async fn delete_host(&self, hostname: &str) -> Result<bool> {
        let mut tx = self.write().await?;
        let done = on!(tx.conn(), |c| sqlx::query("DELETE FROM hosts WHERE hostname = $1")
            .bind(hostname)
            .execute(c)
            .await
            .map(|d| d.rows_affected()))?;
        on!(tx.conn(), |c| sqlx::query("DELETE FROM host_bindings WHERE hostname = $1")
            .bind(hostname)
            .execute(c)
            .await
            .map(|d| d.rows_affected()))?;
        on!(tx.conn(), |c| sqlx::query("DELETE FROM host_labels WHERE hostname = $1")
            .bind(hostname)
            .execute(c)
            .await
            .map(|d| d.rows_affected()))?;
        tx.commit().await?;
        self.ingest.forget(hostname);
        Ok(done > 0)
    }
}
