//! Hosts and raw snapshots: ingest (idempotent by host and sequence number), lookups,
//! lists and export ranges.
//!
//! A snapshot row carries summary columns for lists and charts, the top processes for
//! rollups, and the whole snapshot as zstd-compressed JSON, which only single-snapshot
//! reads and exports open.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::rollup;
use super::{Inserted, Page, Result, Store, StoreError, StoredSnapshot, from_ms, page_limit, to_i64, to_ms, to_u32};
use crate::model::api::{HostSummary, SnapshotSummary};
use crate::model::{HostInfo, Snapshot};

/// zstd level for bodies: level 3 compresses process tables about 10:1 at a fraction
/// of a millisecond per snapshot; higher levels gain little on this kind of JSON.
const ZSTD_LEVEL: i32 = 3;

/// Columns of [`HostRow`].
const HOST_COLUMNS: &str = "id, hostname, info_json, first_seen, last_seen, snapshot_count";

/// Columns of [`BodyRow`].
const BODY_COLUMNS: &str = "id, host_id, received_at, body";

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
        }
    }
}

#[derive(FromRow)]
struct BodyRow {
    id: i64,
    host_id: i64,
    received_at: i64,
    body: Vec<u8>,
}

impl BodyRow {
    fn decode(self) -> Result<StoredSnapshot> {
        let json = zstd::decode_all(self.body.as_slice())
            .map_err(|e| StoreError::Corrupt(format!("snapshot {}: cannot decompress: {e}", self.id)))?;
        let snapshot = serde_json::from_slice(&json)
            .map_err(|e| StoreError::Corrupt(format!("snapshot {}: cannot parse: {e}", self.id)))?;
        Ok(StoredSnapshot { id: self.id, host_id: self.host_id, received_at: from_ms(self.received_at), snapshot })
    }
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
            memory_total_bytes: r.memory_total_bytes,
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
    ///
    /// A snapshot whose host and `seq` are already stored is a duplicate (an upload sent
    /// twice): nothing changes and the existing row's id is returned.
    pub async fn insert_snapshot(&self, snap: &Snapshot, received_at: DateTime<Utc>) -> Result<Inserted> {
        // Encode before taking the write lock: it is the slow part.
        let json = serde_json::to_vec(snap).map_err(|e| StoreError::Corrupt(format!("cannot encode snapshot: {e}")))?;
        let body = zstd::bulk::compress(&json, ZSTD_LEVEL)
            .map_err(|e| StoreError::Corrupt(format!("cannot compress snapshot: {e}")))?;
        let info = serde_json::to_string(&snap.host)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode host info: {e}")))?;
        let top = rollup::snapshot_top_json(snap)?;
        let taken = to_ms(snap.taken_at);
        let received = to_ms(received_at);
        let seq = to_i64(snap.seq);

        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO hosts (hostname, info_json, first_seen, last_seen, last_taken_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (hostname) DO NOTHING",
        )
        .bind(&snap.host.hostname)
        .bind(&info)
        .bind(received)
        .bind(received)
        .bind(taken)
        .execute(&mut *tx)
        .await?;
        let host_id: i64 = sqlx::query_scalar("SELECT id FROM hosts WHERE hostname = ?")
            .bind(&snap.host.hostname)
            .fetch_one(&mut *tx)
            .await?;

        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO snapshots (host_id, seq, taken_at, received_at, cpu_percent, memory_used_bytes, \
             memory_total_bytes, process_count, connection_count, sent_bytes_per_sec, received_bytes_per_sec, \
             load_one, top_json, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (host_id, seq) DO NOTHING RETURNING id",
        )
        .bind(host_id)
        .bind(seq)
        .bind(taken)
        .bind(received)
        .bind(finite(f64::from(snap.cpu.total_percent)))
        .bind(to_i64(snap.memory.used_bytes))
        .bind(to_i64(snap.memory.total_bytes))
        .bind(to_i64(snap.processes.len() as u64))
        .bind(to_i64(snap.connections.len() as u64))
        .bind(finite(snap.network.total.sent_bytes_per_sec))
        .bind(finite(snap.network.total.received_bytes_per_sec))
        .bind(snap.cpu.load_average.map(|l| l.one).filter(|v| v.is_finite()))
        .bind(&top)
        .bind(&body)
        .fetch_optional(&mut *tx)
        .await?;

        let Some(id) = id else {
            let existing: i64 = sqlx::query_scalar("SELECT id FROM snapshots WHERE host_id = ? AND seq = ?")
                .bind(host_id)
                .bind(seq)
                .fetch_one(&mut *tx)
                .await?;
            tx.rollback().await?;
            return Ok(Inserted { id: existing, host_id, duplicate: true });
        };

        // The host's facts follow its newest snapshot by taken_at, so a spool catching
        // up with old snapshots does not bring back old facts.
        sqlx::query(
            "UPDATE hosts SET \
               info_json = CASE WHEN ?1 >= last_taken_at THEN ?2 ELSE info_json END, \
               last_taken_at = MAX(last_taken_at, ?1), \
               first_seen = MIN(first_seen, ?3), \
               last_seen = MAX(last_seen, ?3), \
               last_seq = MAX(last_seq, ?4) \
             WHERE id = ?5",
        )
        .bind(taken)
        .bind(&info)
        .bind(received)
        .bind(seq)
        .bind(host_id)
        .execute(&mut *tx)
        .await?;

        // A snapshot for a minute that is already rolled up is queued, so the next
        // maintenance merges it into its rollups instead of never counting it.
        sqlx::query(
            "INSERT INTO rollup_late (snapshot_id) SELECT ?1 FROM rollup_progress \
             WHERE host_id = ?2 AND tier = 'minute' AND rolled_until > ?3",
        )
        .bind(id)
        .bind(host_id)
        .bind(taken)
        .execute(&mut *tx)
        .await?;

        tx.commit().await?;
        Ok(Inserted { id, host_id, duplicate: false })
    }

    /// The sequence number to give the next snapshot of `hostname` when its upload
    /// carries none: one more than the highest ever stored, 1 for a new host.
    pub async fn next_seq(&self, hostname: &str) -> Result<u64> {
        let last: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM hosts WHERE hostname = ?")
            .bind(hostname)
            .fetch_optional(&self.pool)
            .await?;
        Ok(u64::try_from(last.unwrap_or(0).max(0)).unwrap_or(0).saturating_add(1))
    }

    /// Every host, by name. `online` and `local` are false: the server fills them in.
    pub async fn hosts(&self) -> Result<Vec<HostSummary>> {
        let rows: Vec<HostRow> = sqlx::query_as(&format!("SELECT {HOST_COLUMNS} FROM hosts ORDER BY hostname"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(HostRow::summary).collect())
    }

    /// One host by its numeric id or its name (an id wins when a name looks like one).
    pub async fn host(&self, key: &str) -> Result<Option<HostSummary>> {
        if let Ok(id) = key.parse::<i64>() {
            let row: Option<HostRow> = sqlx::query_as(&format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = ?"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            if let Some(row) = row {
                return Ok(Some(row.summary()));
            }
        }
        let row: Option<HostRow> = sqlx::query_as(&format!("SELECT {HOST_COLUMNS} FROM hosts WHERE hostname = ?"))
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(HostRow::summary))
    }

    /// The newest snapshot of a host (by taken_at, then seq).
    pub async fn latest(&self, host_id: i64) -> Result<Option<StoredSnapshot>> {
        let row: Option<BodyRow> = sqlx::query_as(&format!(
            "SELECT {BODY_COLUMNS} FROM snapshots WHERE host_id = ? ORDER BY taken_at DESC, seq DESC LIMIT 1"
        ))
        .bind(host_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(BodyRow::decode).transpose()
    }

    /// The newest snapshot of every host that has one, by host name. A snapshot that
    /// cannot be read is left out (and logged) rather than hiding every other host.
    pub async fn latest_per_host(&self) -> Result<Vec<StoredSnapshot>> {
        let rows: Vec<BodyRow> = sqlx::query_as(
            "SELECT s.id, s.host_id, s.received_at, s.body FROM hosts h JOIN snapshots s ON s.id = \
               (SELECT id FROM snapshots WHERE host_id = h.id ORDER BY taken_at DESC, seq DESC LIMIT 1) \
             ORDER BY h.hostname",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                row.decode().map_err(|e| tracing::warn!("skipping the newest snapshot of a host: {e}")).ok()
            })
            .collect())
    }

    /// One stored snapshot by id.
    pub async fn snapshot(&self, id: i64) -> Result<Option<StoredSnapshot>> {
        let row: Option<BodyRow> = sqlx::query_as(&format!("SELECT {BODY_COLUMNS} FROM snapshots WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(BodyRow::decode).transpose()
    }

    /// Stored snapshots of one host or of all, newest first, without their bodies.
    pub async fn list(&self, host_id: Option<i64>, page: Page) -> Result<Vec<SnapshotSummary>> {
        let (limit, offset) = page_limit(page);
        // Two statements rather than `(? IS NULL OR host_id = ?)`, which would keep
        // SQLite from using the (host_id, taken_at) index.
        let rows: Vec<SummaryRow> = match host_id {
            Some(host_id) => {
                sqlx::query_as(&format!(
                    "SELECT {SUMMARY_COLUMNS} FROM snapshots s JOIN hosts h ON h.id = s.host_id \
                     WHERE s.host_id = ? ORDER BY s.taken_at DESC, s.seq DESC, s.id DESC LIMIT ? OFFSET ?"
                ))
                .bind(host_id)
                .bind(limit)
                .bind(offset)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query_as(&format!(
                    "SELECT {SUMMARY_COLUMNS} FROM snapshots s JOIN hosts h ON h.id = s.host_id \
                     ORDER BY s.taken_at DESC, s.id DESC LIMIT ? OFFSET ?"
                ))
                .bind(limit)
                .bind(offset)
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows.into_iter().map(SnapshotSummary::from).collect())
    }

    /// Number of stored snapshots of one host or of all (kept by triggers, so this
    /// does not scan).
    pub async fn count(&self, host_id: Option<i64>) -> Result<i64> {
        let count: Option<i64> = match host_id {
            Some(id) => {
                sqlx::query_scalar("SELECT snapshot_count FROM hosts WHERE id = ?")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
            }
            None => sqlx::query_scalar("SELECT SUM(snapshot_count) FROM hosts").fetch_one(&self.pool).await?,
        };
        Ok(count.unwrap_or(0))
    }

    /// Full snapshots of a host taken from `from` to `to` (both included), oldest
    /// first, at most `limit` of them (for export).
    pub async fn range(
        &self,
        host_id: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<StoredSnapshot>> {
        let rows: Vec<BodyRow> = sqlx::query_as(&format!(
            "SELECT {BODY_COLUMNS} FROM snapshots WHERE host_id = ? AND taken_at >= ? AND taken_at <= ? \
             ORDER BY taken_at, seq LIMIT ?"
        ))
        .bind(host_id)
        .bind(to_ms(from))
        .bind(to_ms(to))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(BodyRow::decode).collect()
    }
}
