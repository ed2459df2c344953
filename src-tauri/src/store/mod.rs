//! The collector's store: SQLite through sqlx, one file, embedded; or PostgreSQL, for a
//! fleet that outgrows one collector (see `db` for how one interface runs on both).
//!
//! It owns the schema (`migrations/sqlite` and `migrations/postgres`, run at open) and
//! every query. Callers get typed values, never rows, SQL or a driver's types. What it
//! keeps:
//!
//! - **hosts**, keyed by host name (the original API names hosts that way);
//! - **snapshots**: summary columns for fast lists and charts, and the snapshot's body:
//!   zstd-compressed MessagePack (older rows JSON), whole for a host's first snapshot of
//!   a minute (a keyframe), else the delta from the host's row before, which is what an
//!   agent sends already and is stored as it came (see `ingest`, `chain`). `(host, seq)`
//!   is unique: an upload sent twice is stored once;
//! - **rollups** per minute and per hour (average and peak of CPU, memory, process count
//!   and network rates, and the top processes per bucket), so that history and "which
//!   process spiked, and when" outlive the raw snapshots;
//! - **users**, **API keys** (only their SHA-256 hashes), and the **audit log**;
//! - **host bindings**: the key and the machine each host name belongs to;
//! - on PostgreSQL, what collectors sharing it need (`fleet.rs`): which one holds each
//!   agent, process actions relayed between them, notifications, the maintenance leader;
//! - **alerts** (`alerts.rs`): rules, channels, silences, alert state and history, and
//!   every notification attempt;
//! - **dashboards** (`dashboards.rs`): the layouts people arrange, each owned by a user.
//!
//! A SQLite database is opened in WAL mode so readers never wait for the writer. Snapshots
//! are written by one writer task that commits concurrent uploads together, over a
//! connection of its own: however busy the readers' pool, ingest never waits for it.
//! Reads that decode snapshot bodies (the heavy ones: a body can hold tens of MB of
//! JSON) run off the async workers, a few at a time (see `reads`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use tokio::sync::OwnedMutexGuard;

use crate::model::Snapshot;
use crate::model::api::{ApiKeySummary, UserSummary};
pub use alerts::{NewDelivery, StateChange};
pub use binding::HostBinding;
pub use copy::Copied;
use db::{Conn, Db, Pool, Tx};
pub use db::{Database, redact};
pub use fleet::{Announced, Claimed, FleetEvent, Holder, Leadership, Listener};
pub use ingest::Sent;
pub use labels::LabelSource;

pub use reads::{HEAVY_READ_WAIT, HEAVY_READS, HeavyRead, RangeReader, ReadLimits, ReadStats};
pub use snapshots::Newest;

mod accounts;
mod alerts;
mod binding;
mod chain;
mod copy;
mod dashboards;
mod db;
mod fleet;
mod ingest;
mod labels;
mod reads;
mod rollup;
mod snapshots;
#[cfg(test)]
mod test_postgres;
#[cfg(test)]
mod tests;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// The disk holding the database is full (`SQLITE_FULL`, `ENOSPC`, PostgreSQL's
    /// `53100`): nothing of the write was stored, and what was stored before is intact.
    /// Writes succeed again once space is freed; no restart is needed.
    #[error("the disk holding the database is full")]
    Full,
    /// The database server cannot be reached (PostgreSQL down, the network between,
    /// or every connection to it failing): nothing was read or stored. Calls succeed
    /// again once it is back; no restart is needed.
    #[error("the database is unreachable: {0}")]
    Unreachable(String),
    /// The schema could not be brought up to date.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored snapshot could not be encoded or decoded.
    #[error("stored snapshot is unreadable: {0}")]
    Corrupt(String),
    /// A name that must be unique is taken (user name, API key label).
    #[error("{0} already exists")]
    Conflict(String),
    /// The thing to change does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A host is bound to another live API key (the message says which, and what to do).
    #[error("{0}")]
    HostTaken(String),
    /// The change would leave no admin, and so nobody to manage users and keys.
    #[error(
        "`{0}` is the last admin, and without one nobody could manage users or keys: make another admin first \
         (`procyon user add NAME --role admin`, or `procyon user role NAME admin` for an existing user), then try \
         again"
    )]
    LastAdmin(String),
    /// Refused before anything was done; the message says why.
    #[error("{0}")]
    Refused(String),
    /// The transaction holding a batch of snapshots failed; none of them is stored.
    #[error("storing a batch of snapshots failed: {0}")]
    Batch(String),
    /// The store's writer has stopped (the store is closed).
    #[error("the store is closed")]
    Closed,
    /// The snapshot writer's thread could not be started.
    #[error("cannot start the store's writer: {0}")]
    Writer(std::io::Error),
    /// Every slot for heavy reads stayed taken for as long as a read may wait.
    #[error("the store is busy with other large reads; try again in {retry_after_secs} s")]
    Busy {
        /// When trying again is likely to succeed.
        retry_after_secs: u64,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_disk_full(&e) {
            StoreError::Full
        } else if is_unreachable(&e) {
            StoreError::Unreachable(e.to_string())
        } else {
            StoreError::Database(e)
        }
    }
}

/// PostgreSQL's SQLSTATE for a full disk.
const PG_DISK_FULL: &str = "53100";

/// Whether `e` says the database server cannot be reached or went away: a failed or
/// broken connection, no connection to be had in time, or PostgreSQL shutting down
/// (SQLSTATE class 08, connection exceptions, and 57P01-57P03). SQLite's file is never
/// "unreachable": its I/O errors are not a network's, and stay database errors.
fn is_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(io) => {
            use std::io::ErrorKind::*;
            matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | NotConnected
                    | BrokenPipe
                    | TimedOut
                    | UnexpectedEof
                    | HostUnreachable
                    | NetworkUnreachable
                    | AddrNotAvailable
            )
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some_and(|pg| {
            let code = pg.code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

/// SQLite's result codes for a full disk (sqlx does not name them).
const SQLITE_FULL: i32 = 13;
const SQLITE_IOERR_SHMSIZE: i32 = 10 | (19 << 8);

/// Whether `e` says the disk is full. SQLite's unix file layer reports a write that
/// failed with `ENOSPC` as `SQLITE_FULL` (code 13, which has no extended codes); an
/// I/O error of sqlx's own carries the OS error.
fn is_disk_full(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) if db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() => {
            db.code().as_deref() == Some(PG_DISK_FULL)
        }
        sqlx::Error::Database(db) => {
            let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
            // SQLITE_IOERR_SHMSIZE: growing the WAL index (the `-shm` file) failed,
            // which on a full disk is ENOSPC as well.
            code == SQLITE_FULL || code == SQLITE_IOERR_SHMSIZE
        }
        sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::StorageFull,
        _ => false,
    }
}

/// Result of the store's operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// How long each tier is kept. Raw snapshots older than `raw` are deleted once they are
/// rolled up; minute and hour rollups older than their ages are deleted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Retention {
    /// Full snapshots.
    pub raw: Duration,
    /// Per-minute rollups.
    pub minute: Duration,
    /// Per-hour rollups.
    pub hour: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        Retention {
            raw: Duration::from_secs(DAY),
            minute: Duration::from_secs(7 * DAY),
            hour: Duration::from_secs(90 * DAY),
        }
    }
}

/// A full snapshot as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredSnapshot {
    /// Row id (`snapshot_id` in the API).
    pub id: i64,
    /// Host id.
    pub host_id: i64,
    /// When the collector received it.
    pub received_at: DateTime<Utc>,
    /// The snapshot.
    pub snapshot: Snapshot,
}

/// What [`Store::insert_snapshot`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inserted {
    /// Row id of the stored snapshot (the existing one for a duplicate).
    pub id: i64,
    /// Host id.
    pub host_id: i64,
    /// True if `(host, seq)` was already stored and nothing changed.
    pub duplicate: bool,
}

/// What [`Store::maintain`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// Minute buckets written.
    pub minute_buckets: u64,
    /// Hour buckets written.
    pub hour_buckets: u64,
    /// Raw snapshots deleted.
    pub raw_deleted: u64,
    /// Rollup rows deleted.
    pub rollups_deleted: u64,
    /// Alert history deleted: firings and resolutions, notification attempts, and
    /// states of alerts resolved long ago.
    pub alert_rows_deleted: u64,
}

/// A user row with its password hash, for signing in.
#[derive(Clone, Debug, PartialEq)]
pub struct UserRecord {
    /// The public part.
    pub summary: UserSummary,
    /// PHC-format argon2id hash.
    pub password_hash: String,
    /// Changes whenever the user's earlier tokens must stop working (password or role
    /// changed); tokens carry the generation they were issued under.
    pub token_generation: i64,
}

/// An API key row, for checking uploads.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiKeyRecord {
    /// The public part.
    pub summary: ApiKeySummary,
}

/// One audit log entry to write (the id and time are assigned by the store).
#[derive(Clone, Debug, PartialEq)]
pub struct NewAuditEntry {
    /// Who (user name).
    pub actor: String,
    /// Host name.
    pub hostname: String,
    /// Target pid (`None` for an action on the host itself, stored as 0: no process).
    pub pid: Option<u32>,
    /// Target's name, when known.
    pub process_name: Option<String>,
    /// What was attempted.
    pub action: crate::model::api::AuditAction,
    /// A whole subtree.
    pub tree: bool,
    /// `"success"` or an error code.
    pub result: String,
    /// What happened, in words.
    pub message: String,
}

impl NewAuditEntry {
    /// A successful change to a host itself rather than to one of its processes:
    /// deleting it, or changing its binding.
    pub fn host_change(
        actor: impl Into<String>,
        hostname: impl Into<String>,
        action: crate::model::api::AuditAction,
        message: String,
    ) -> NewAuditEntry {
        NewAuditEntry {
            actor: actor.into(),
            hostname: hostname.into(),
            pid: None,
            process_name: None,
            action,
            tree: false,
            result: "success".into(),
            message,
        }
    }
}

/// Paging for lists: newest first, `limit` rows after skipping `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// Rows to return (at most 1000).
    pub limit: u32,
    /// Rows to skip.
    pub offset: u32,
}

/// The store. Cheap to clone (a pool handle).
#[derive(Clone, Debug)]
pub struct Store {
    /// Readers' connections, and the occasional write statement. The snapshot writer
    /// has a connection of its own and never takes one from here.
    pool: Pool,
    /// Held by every write. Writers queue here, in order and without polling, rather
    /// than in SQLite's busy handler, which sleeps in growing steps (up to 100 ms) and
    /// would make ingest latency jumpy under load. The busy timeout still covers other
    /// processes writing the file (the CLI managing users, for one).
    writer: Arc<tokio::sync::Mutex<()>>,
    /// The snapshot writer's queue and each host's newest row, which the next is
    /// chained on.
    ingest: Arc<ingest::Ingest>,
    /// The slots for reads that decode snapshot bodies, shared by every such read.
    reads: Arc<reads::HeavyReads>,
    /// This collector's place among the collectors sharing the database (PostgreSQL).
    fleet: Option<Arc<fleet::Fleet>>,
}

/// A write transaction, holding the writer's turn until it ends; [`Write::conn`] is its
/// connection, for queries.
///
/// One dropped without [`Write::commit`] (a `?` on any error, or a failed commit) is
/// rolled back; the connection goes back to the pool only once that is done and it is
/// out of any transaction (see [`settled`]).
struct Write {
    tx: Tx,
    _turn: OwnedMutexGuard<()>,
}

impl Write {
    async fn commit(self) -> Result<()> {
        Ok(self.tx.commit().await?)
    }

    fn conn(&mut self) -> Conn<'_> {
        self.tx.conn()
    }
}

/// Connections in the readers' pool, which WAL lets run alongside the writer. The
/// snapshot writer's own connection comes on top.
const READ_CONNECTIONS: u32 = 7;

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a call waits for a PostgreSQL connection before the database counts as
/// unreachable ([`StoreError::Unreachable`]): short, so that a request is answered 503
/// while the server is down rather than hanging.
const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most rows a list returns, whatever the caller asks for.
const MAX_PAGE: u32 = 1000;

impl Store {
    /// Opens (creating it if missing) the database at `path` and brings its schema up to
    /// date, with the default [`ReadLimits`].
    pub async fn open(path: &Path) -> Result<Store> {
        Store::open_with(path, ReadLimits::default()).await
    }

    /// Opens the store `db` is: a SQLite file (created if missing) or a PostgreSQL
    /// database (which must exist; its tables are created), and brings its schema up to
    /// date.
    pub async fn connect(db: &Database, limits: ReadLimits) -> Result<Store> {
        match db {
            Database::Sqlite(path) => Store::open_with(path, limits).await,
            Database::Postgres(url) => Store::open_postgres(url, limits).await,
        }
    }

    /// Opens a PostgreSQL database by URL. Its pool and the snapshot writer's own
    /// connection are as SQLite's; what SQLite needs the writer's turn and
    /// `BEGIN IMMEDIATE` for, PostgreSQL does with row locks.
    async fn open_postgres(url: &str, limits: ReadLimits) -> Result<Store> {
        let options: PgConnectOptions =
            url.parse().map_err(|_| StoreError::Unreachable(format!("cannot read the URL {}", db::redact(url))))?;
        let options = options.application_name("procyon");
        let pool = PgPoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .acquire_timeout(PG_ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let writer = Arc::new(tokio::sync::Mutex::new(()));
        let fleet = Arc::new(fleet::Fleet::new(options.clone())?);
        let ingest = Arc::new(ingest::Ingest::start(Db::Postgres(options), Arc::clone(&writer), Some(fleet.id))?);
        Ok(Store {
            pool: Db::Postgres(pool),
            writer,
            ingest,
            reads: Arc::new(reads::HeavyReads::new(limits)),
            fleet: Some(fleet),
        })
    }

    /// Like [`Store::open`], with `limits` on heavy reads.
    pub async fn open_with(path: &Path, limits: ReadLimits) -> Result<Store> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL loses at most the last commits on power loss, never
            // consistency, and saves an fsync per insert.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // Keeps the query planner's statistics fresh, cheaply, as SQLite advises
            // for long-lived connections.
            .optimize_on_close(true, 400);
        if std::fs::metadata(path).map_or(true, |m| m.len() == 0) {
            // Must be set before the first table exists, so on the connection rather
            // than in a migration (sqlx creates its own table first). Lets
            // `incremental_vacuum` hand pages freed by retention back to the file
            // system. Only on a new database: setting it writes to the file even when
            // it changes nothing, and then a connection opened while the disk is full
            // (the pools open them as needed) would fail, and with it a read.
            let conn = options.clone().auto_vacuum(SqliteAutoVacuum::Incremental).connect().await?;
            conn.close().await?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .after_release(|conn, _| Box::pin(settled(conn)))
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        // The snapshot writer's connection: a pool of one that nothing else uses, so a
        // burst of readers holding every other connection cannot hold up ingest. It
        // lives on the writer's thread and never expires, so the writer never waits
        // for it to be opened again either.
        let own = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .after_release(|conn, _| Box::pin(settled(conn)))
            .connect_with(options)
            .await?;
        let writer = Arc::new(tokio::sync::Mutex::new(()));
        let ingest = Arc::new(ingest::Ingest::start(Db::Sqlite(own), Arc::clone(&writer), None)?);
        Ok(Store {
            pool: Db::Sqlite(pool),
            writer,
            ingest,
            reads: Arc::new(reads::HeavyReads::new(limits)),
            fleet: None,
        })
    }

    /// Closes every connection, waiting for those in use to be returned. SQLite
    /// checkpoints the WAL into the main file when the last connection closes, so
    /// nothing committed is lost.
    pub async fn close(&self) {
        self.pool.close().await;
        self.ingest.close().await;
    }

    /// Size of the database in bytes, for health reports: SQLite's file (pages in use
    /// and free), PostgreSQL's database.
    pub async fn db_size_bytes(&self) -> Result<u64> {
        let bytes: i64 = match &self.pool {
            Db::Sqlite(p) => {
                let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(p).await?;
                let page_size: i64 = sqlx::query_scalar("PRAGMA page_size").fetch_one(p).await?;
                pages.saturating_mul(page_size)
            }
            Db::Postgres(p) => sqlx::query_scalar("SELECT pg_database_size(current_database())").fetch_one(p).await?,
        };
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    /// Which database this store is on, for health reports: `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        if self.pool.is_sqlite() { "sqlite" } else { "postgres" }
    }

    /// Waits for the writer's turn, for a single write statement.
    async fn turn(&self) -> OwnedMutexGuard<()> {
        Arc::clone(&self.writer).lock_owned().await
    }

    /// Waits for the writer's turn and starts a transaction that holds SQLite's write
    /// lock from its first statement.
    ///
    /// A deferred transaction that reads and then writes can fail at once with
    /// `SQLITE_BUSY` when another connection wrote in between (the busy timeout does
    /// not apply to that case); `BEGIN IMMEDIATE` takes the lock up front instead.
    ///
    /// The connection is taken before the turn, so the turn (which the snapshot writer
    /// also needs) is never held while waiting for a busy readers' pool.
    async fn write(&self) -> Result<Write> {
        let conn = self.pool.acquire().await?;
        let turn = self.turn().await;
        let tx = match conn {
            Db::Sqlite(conn) => Db::Sqlite(sqlx::Transaction::begin(conn, Some("BEGIN IMMEDIATE".into())).await?),
            Db::Postgres(conn) => Db::Postgres(sqlx::Transaction::begin(conn, None).await?),
        };
        Ok(Write { tx, _turn: turn })
    }
}

/// Whether a connection coming back to its pool may be used again: not if it is still
/// in a transaction after a failed one was rolled back.
///
/// A write that fails drops its transaction, which queues a `ROLLBACK`. But on some
/// errors (`SQLITE_FULL` among them) SQLite has already rolled the transaction back
/// itself; the queued `ROLLBACK` then fails ("no transaction is active") and sqlx still
/// counts the connection as in a transaction, so every later `BEGIN` on it would fail
/// ("attempted to call begin_with at non-zero transaction depth") until a restart. Such
/// a connection is closed instead, and the pool opens a fresh one when next needed.
async fn settled(conn: &mut SqliteConnection) -> std::result::Result<bool, sqlx::Error> {
    if !conn.is_in_transaction() {
        // The usual case (committed, or never in one): nothing to wait for.
        return Ok(true);
    }
    // Runs the rollback the dropped transaction queued.
    conn.ping().await?;
    Ok(!conn.is_in_transaction())
}

/// A time as stored: unix milliseconds.
fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A stored time. Values out of chrono's range (only possible in a hand-edited file)
/// read as the epoch rather than failing the whole query.
fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// An unsigned count as a signed 64-bit integer, saturating (neither database has u64).
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored non-negative integer, clamped into `u32`.
fn to_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// Clamps a caller's page to what lists allow.
fn page_limit(page: Page) -> (i64, i64) {
    (i64::from(page.limit.min(MAX_PAGE)), i64::from(page.offset))
}

/// Whether a database error is a UNIQUE constraint failure.
fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod recovery_tests {
    #![allow(clippy::unwrap_used)]
    use super::db::on;
    use super::*;

    /// On some errors (a full disk among them) SQLite ends the transaction itself while
    /// sqlx still counts it open. Writes after one must not fail for it, maintenance
    /// included.
    #[tokio::test]
    async fn a_transaction_sqlite_ended_itself_does_not_fail_later_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("procyon.db")).await.unwrap();
        for _ in 0..3 {
            let mut write = store.write().await.unwrap();
            // What a full disk does to the transaction, behind sqlx's back.
            on!(write.conn(), |c| sqlx::query("ROLLBACK").execute(c).await.map(|d| d.rows_affected())).unwrap();
            drop(write);
        }
        for _ in 0..2 * READ_CONNECTIONS {
            store.maintain(Utc::now(), &Retention::default()).await.unwrap();
        }
        store.create_user("ada", "$argon2id$one", crate::model::api::Role::Admin).await.unwrap();
        assert_eq!(store.user_count().await.unwrap(), 1);
    }

    /// sqlx knows an applied migration by its version and its content's checksum, so
    /// databases made before the migrations moved into `sqlite/` open only if both are
    /// unchanged. These are the SHA-384s of the files as released.
    #[test]
    fn sqlite_migrations_keep_the_versions_and_checksums_databases_hold() {
        let released = [
            (1, "19a05a01e1de57c10f33d1ccbe224500eff706694114c7f6604d7b3e64cb6d3a108363d2421fdf93a7edf6c50b750599"),
            (2, "5ef303b12c4039848d04d01c7caea86093be40ff02d91139ebd904ee07981f501ca1f2dedc86f7ff5a0f2e788bdbce72"),
            (3, "7129f1274f1f3122409e71deed5ad7165179042d5c7e3b4d27a95afd565f1d5a10265467777a237955865087c0b8a0e1"),
            (4, "8387d3ccf9dc0e8a2a273fa141dda26e7ffb86b0afd0f40f70c8e7e310b0c76c0f3812025360f6e67cae3b4a4716d5bd"),
            (5, "66aac86a36e3ea4b2e79c8c90da2517a051f26b132d67ed4b41b177f5e654e0f34af1373734ef9c3a3855a4c0941f044"),
        ];
        let migrator = sqlx::migrate!("./migrations/sqlite");
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let found: Vec<(i64, String)> =
            migrator.iter().filter(|m| m.version <= 5).map(|m| (m.version, hex(&m.checksum))).collect();
        let released: Vec<(i64, String)> = released.iter().map(|&(v, c)| (v, c.to_owned())).collect();
        assert_eq!(found, released, "a released migration changed: add a new one instead");
    }

    #[test]
    fn a_full_disk_is_told_apart() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert!(matches!(StoreError::from(io), StoreError::Full));
        let other = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert!(matches!(StoreError::from(other), StoreError::Database(_)));
    }
}
