//! Moving a collector from SQLite to PostgreSQL: every row of one store copied into
//! another, ids kept, so that snapshot ids in links, API keys, users, bindings and the
//! audit log stay as they were.
//!
//! The target must be empty (no host, user or key): a copy never merges. The whole copy
//! is one transaction on the target, so a copy that fails (or is interrupted) leaves
//! it empty, to try again. Snapshots and the audit log are read in id order a batch at a
//! time, so a large database is copied in bounded memory. Triggers on the target keep
//! its host counters as rows arrive; the hosts' own columns (counts, times, newest seq)
//! are set from the source at the end, so they are the source's exactly.

use sqlx::FromRow;

use super::db::Db;
use super::{Result, Store, StoreError};

/// Rows copied per statement batch.
const BATCH: i64 = 500;

/// What [`Store::copy_into`] copied, per table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Copied {
    /// Hosts.
    pub hosts: u64,
    /// Raw snapshots.
    pub snapshots: u64,
    /// Rollup buckets.
    pub rollups: u64,
    /// Users.
    pub users: u64,
    /// API keys.
    pub api_keys: u64,
    /// Audit log entries.
    pub audit: u64,
    /// Host bindings.
    pub bindings: u64,
    /// Host labels (each key of each host and source).
    pub labels: u64,
    /// Alert rules, channels and silences made through the API, alert states, and the
    /// history of firings and notification attempts.
    pub alerts: u64,
    /// Dashboards.
    pub dashboards: u64,
}

#[derive(FromRow)]
struct HostRow {
    id: i64,
    hostname: String,
    info_json: Option<String>,
    first_seen: i64,
    last_seen: i64,
    last_taken_at: i64,
    last_seq: i64,
    snapshot_count: i64,
}

#[derive(FromRow)]
struct SnapshotRow {
    id: i64,
    host_id: i64,
    seq: i64,
    taken_at: i64,
    received_at: i64,
    cpu_percent: f64,
    memory_used_bytes: i64,
    memory_total_bytes: i64,
    process_count: i64,
    connection_count: i64,
    sent_bytes_per_sec: f64,
    received_bytes_per_sec: f64,
    load_one: Option<f64>,
    top_json: String,
    body: Vec<u8>,
    base_id: Option<i64>,
    network_known: bool,
    disk_read_bytes_per_sec: Option<f64>,
    disk_write_bytes_per_sec: Option<f64>,
    temperature_celsius: Option<f64>,
}

#[derive(FromRow)]
struct RollupRow {
    host_id: i64,
    tier: String,
    bucket: i64,
    samples: i64,
    cpu_avg: f64,
    cpu_max: f64,
    memory_avg: f64,
    memory_max: i64,
    processes_avg: f64,
    processes_max: i64,
    sent_avg: f64,
    sent_max: f64,
    received_avg: f64,
    received_max: f64,
    network_samples: Option<i64>,
    top_json: String,
    disk_samples: i64,
    disk_read_avg: f64,
    disk_read_max: f64,
    disk_write_avg: f64,
    disk_write_max: f64,
    temperature_samples: i64,
    temperature_avg: f64,
    temperature_max: f64,
}

#[derive(FromRow)]
struct UserRow {
    id: i64,
    username: String,
    password_hash: String,
    role: String,
    created_at: i64,
    token_generation: i64,
}

#[derive(FromRow)]
struct KeyRow {
    id: i64,
    name: String,
    prefix: String,
    key_hash: String,
    hostname: Option<String>,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
    scope: String,
}

#[derive(FromRow)]
struct AuditRow {
    id: i64,
    at: i64,
    actor: String,
    hostname: String,
    pid: i64,
    process_name: Option<String>,
    action: String,
    tree: bool,
    result: String,
    message: String,
}

#[derive(FromRow)]
struct BindingRow {
    hostname: String,
    key_id: i64,
    machine_id: Option<String>,
    bound_at: i64,
}

impl Store {
    /// Copies every row of this store (SQLite) into `to` (PostgreSQL, empty), and
    /// `signing_key`, the source collector's token signing key when it has one, so that
    /// tokens it issued stay valid. Refused, with nothing written, when `to` holds a
    /// host, a user or a key already.
    pub async fn copy_into(&self, to: &Store, signing_key: Option<&[u8]>) -> Result<Copied> {
        let (Db::Sqlite(from), Db::Postgres(pg)) = (&self.pool, &to.pool) else {
            return Err(StoreError::Refused("a copy goes from SQLite into PostgreSQL".into()));
        };
        let held: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM hosts) + (SELECT COUNT(*) FROM users) + (SELECT COUNT(*) FROM api_keys)",
        )
        .fetch_one(pg)
        .await?;
        if held > 0 {
            return Err(StoreError::Refused(
                "the target database holds data already (hosts, users or keys): a copy goes into an empty \
                 database only, and nothing was copied"
                    .into(),
            ));
        }
        let mut copied = Copied::default();
        let mut tx = pg.begin().await?;

        let hosts: Vec<HostRow> = sqlx::query_as(
            "SELECT id, hostname, info_json, first_seen, last_seen, last_taken_at, last_seq, snapshot_count \
             FROM hosts ORDER BY id",
        )
        .fetch_all(from)
        .await?;
        for chunk in hosts.chunks(BATCH as usize) {
            for h in chunk {
                // Counters start at zero: the insert trigger counts the snapshots.
                sqlx::query(
                    "INSERT INTO hosts (id, hostname, info_json, first_seen, last_seen, last_taken_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(h.id)
                .bind(&h.hostname)
                .bind(&h.info_json)
                .bind(h.first_seen)
                .bind(h.last_seen)
                .bind(h.last_taken_at)
                .execute(&mut *tx)
                .await?;
            }
        }
        copied.hosts = hosts.len() as u64;

        let mut after = i64::MIN;
        loop {
            let rows: Vec<SnapshotRow> = sqlx::query_as(
                "SELECT id, host_id, seq, taken_at, received_at, cpu_percent, memory_used_bytes, memory_total_bytes, \
                 process_count, connection_count, sent_bytes_per_sec, received_bytes_per_sec, load_one, top_json, \
                 body, base_id, network_known, disk_read_bytes_per_sec, disk_write_bytes_per_sec, \
                 temperature_celsius FROM snapshots WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(after)
            .bind(BATCH)
            .fetch_all(from)
            .await?;
            let Some(last) = rows.last() else { break };
            after = last.id;
            for s in &rows {
                sqlx::query(
                    "INSERT INTO snapshots (id, host_id, seq, taken_at, received_at, cpu_percent, memory_used_bytes, \
                     memory_total_bytes, process_count, connection_count, sent_bytes_per_sec, \
                     received_bytes_per_sec, load_one, top_json, body, base_id, network_known, \
                     disk_read_bytes_per_sec, disk_write_bytes_per_sec, temperature_celsius) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
                     $20)",
                )
                .bind(s.id)
                .bind(s.host_id)
                .bind(s.seq)
                .bind(s.taken_at)
                .bind(s.received_at)
                .bind(s.cpu_percent)
                .bind(s.memory_used_bytes)
                .bind(s.memory_total_bytes)
                .bind(s.process_count)
                .bind(s.connection_count)
                .bind(s.sent_bytes_per_sec)
                .bind(s.received_bytes_per_sec)
                .bind(s.load_one)
                .bind(&s.top_json)
                .bind(&s.body)
                .bind(s.base_id)
                .bind(s.network_known)
                .bind(s.disk_read_bytes_per_sec)
                .bind(s.disk_write_bytes_per_sec)
                .bind(s.temperature_celsius)
                .execute(&mut *tx)
                .await?;
            }
            copied.snapshots += rows.len() as u64;
        }

        // The hosts' own columns, as the source has them.
        for chunk in hosts.chunks(BATCH as usize) {
            for h in chunk {
                sqlx::query(
                    "UPDATE hosts SET first_seen = $2, last_seen = $3, last_taken_at = $4, last_seq = $5, \
                     snapshot_count = $6 WHERE id = $1",
                )
                .bind(h.id)
                .bind(h.first_seen)
                .bind(h.last_seen)
                .bind(h.last_taken_at)
                .bind(h.last_seq)
                .bind(h.snapshot_count)
                .execute(&mut *tx)
                .await?;
            }
        }

        let rollups: Vec<RollupRow> = sqlx::query_as(
            "SELECT host_id, tier, bucket, samples, cpu_avg, cpu_max, memory_avg, memory_max, processes_avg, \
             processes_max, sent_avg, sent_max, received_avg, received_max, network_samples, top_json, disk_samples, \
             disk_read_avg, disk_read_max, disk_write_avg, disk_write_max, temperature_samples, temperature_avg, \
             temperature_max FROM rollups",
        )
        .fetch_all(from)
        .await?;
        for chunk in rollups.chunks(BATCH as usize) {
            for r in chunk {
                sqlx::query(
                    "INSERT INTO rollups (host_id, tier, bucket, samples, cpu_avg, cpu_max, memory_avg, memory_max, \
                     processes_avg, processes_max, sent_avg, sent_max, received_avg, received_max, network_samples, \
                     top_json, disk_samples, disk_read_avg, disk_read_max, disk_write_avg, disk_write_max, \
                     temperature_samples, temperature_avg, temperature_max) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
                     $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)",
                )
                .bind(r.host_id)
                .bind(&r.tier)
                .bind(r.bucket)
                .bind(r.samples)
                .bind(r.cpu_avg)
                .bind(r.cpu_max)
                .bind(r.memory_avg)
                .bind(r.memory_max)
                .bind(r.processes_avg)
                .bind(r.processes_max)
                .bind(r.sent_avg)
                .bind(r.sent_max)
                .bind(r.received_avg)
                .bind(r.received_max)
                .bind(r.network_samples)
                .bind(&r.top_json)
                .bind(r.disk_samples)
                .bind(r.disk_read_avg)
                .bind(r.disk_read_max)
                .bind(r.disk_write_avg)
                .bind(r.disk_write_max)
                .bind(r.temperature_samples)
                .bind(r.temperature_avg)
                .bind(r.temperature_max)
                .execute(&mut *tx)
                .await?;
            }
        }
        copied.rollups = rollups.len() as u64;

        // Progress after the snapshots, so that the insert trigger queued none of them as
        // late; the queue itself is copied as it is.
        let progress: Vec<(i64, String, i64)> =
            sqlx::query_as("SELECT host_id, tier, rolled_until FROM rollup_progress").fetch_all(from).await?;
        let late: Vec<i64> = sqlx::query_scalar("SELECT snapshot_id FROM rollup_late").fetch_all(from).await?;
        for (host_id, tier, until) in &progress {
            sqlx::query("INSERT INTO rollup_progress (host_id, tier, rolled_until) VALUES ($1, $2, $3)")
                .bind(host_id)
                .bind(tier)
                .bind(until)
                .execute(&mut *tx)
                .await?;
        }
        for id in &late {
            sqlx::query("INSERT INTO rollup_late (snapshot_id) VALUES ($1) ON CONFLICT DO NOTHING")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }

        let users: Vec<UserRow> = sqlx::query_as(
            "SELECT id, username, password_hash, role, created_at, token_generation FROM users ORDER BY id",
        )
        .fetch_all(from)
        .await?;
        for u in &users {
            sqlx::query(
                "INSERT INTO users (id, username, password_hash, role, created_at, token_generation) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(u.id)
            .bind(&u.username)
            .bind(&u.password_hash)
            .bind(&u.role)
            .bind(u.created_at)
            .bind(u.token_generation)
            .execute(&mut *tx)
            .await?;
        }
        copied.users = users.len() as u64;

        let keys: Vec<KeyRow> = sqlx::query_as(
            "SELECT id, name, prefix, key_hash, hostname, created_at, last_used_at, revoked_at, scope \
             FROM api_keys ORDER BY id",
        )
        .fetch_all(from)
        .await?;
        for k in &keys {
            sqlx::query(
                "INSERT INTO api_keys (id, name, prefix, key_hash, hostname, created_at, last_used_at, revoked_at, \
                 scope) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(k.id)
            .bind(&k.name)
            .bind(&k.prefix)
            .bind(&k.key_hash)
            .bind(&k.hostname)
            .bind(k.created_at)
            .bind(k.last_used_at)
            .bind(k.revoked_at)
            .bind(&k.scope)
            .execute(&mut *tx)
            .await?;
        }
        copied.api_keys = keys.len() as u64;

        let bindings: Vec<BindingRow> =
            sqlx::query_as("SELECT hostname, key_id, machine_id, bound_at FROM host_bindings").fetch_all(from).await?;
        for b in &bindings {
            sqlx::query("INSERT INTO host_bindings (hostname, key_id, machine_id, bound_at) VALUES ($1, $2, $3, $4)")
                .bind(&b.hostname)
                .bind(b.key_id)
                .bind(&b.machine_id)
                .bind(b.bound_at)
                .execute(&mut *tx)
                .await?;
        }
        copied.bindings = bindings.len() as u64;
        let labels: Vec<(String, String, String, String)> =
            sqlx::query_as("SELECT hostname, source, key, value FROM host_labels").fetch_all(from).await?;
        for (hostname, source, key, value) in &labels {
            sqlx::query("INSERT INTO host_labels (hostname, source, key, value) VALUES ($1, $2, $3, $4)")
                .bind(hostname)
                .bind(source)
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await?;
        }
        copied.labels = labels.len() as u64;
        if let Some(key) = signing_key {
            sqlx::query(
                "INSERT INTO secrets (name, value) VALUES ('token-signing', $1) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )
            .bind(key)
            .execute(&mut *tx)
            .await?;
        }

        let mut after = i64::MIN;
        loop {
            let rows: Vec<AuditRow> = sqlx::query_as(
                "SELECT id, at, actor, hostname, pid, process_name, action, tree, result, message FROM audit_log \
                 WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(after)
            .bind(BATCH)
            .fetch_all(from)
            .await?;
            let Some(last) = rows.last() else { break };
            after = last.id;
            for a in &rows {
                sqlx::query(
                    "INSERT INTO audit_log (id, at, actor, hostname, pid, process_name, action, tree, result, \
                     message) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(a.id)
                .bind(a.at)
                .bind(&a.actor)
                .bind(&a.hostname)
                .bind(a.pid)
                .bind(&a.process_name)
                .bind(&a.action)
                .bind(a.tree)
                .bind(&a.result)
                .bind(&a.message)
                .execute(&mut *tx)
                .await?;
            }
            copied.audit += rows.len() as u64;
        }

        copied.alerts = copy_alerts(from, &mut tx).await?;
        copied.dashboards = copy_dashboards(from, &mut tx).await?;

        // New rows continue after the copied ids.
        for table in [
            "hosts",
            "snapshots",
            "users",
            "api_keys",
            "audit_log",
            "alert_events",
            "alert_deliveries",
            "alert_silences",
            "alert_held",
            "dashboards",
        ] {
            sqlx::query(&format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), GREATEST((SELECT MAX(id) FROM {table}), 0) + 1, \
                 false)"
            ))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(copied)
    }
}

/// Copies the dashboards (after the users, whom they belong to); how many.
async fn copy_dashboards(from: &sqlx::SqlitePool, tx: &mut sqlx::Transaction<'static, sqlx::Postgres>) -> Result<u64> {
    type Row = (i64, String, String, String, String, String, i64, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, owner, name, shared, shared_with, widgets, created_at, updated_at FROM dashboards ORDER BY id",
    )
    .fetch_all(from)
    .await?;
    for (id, owner, name, shared, shared_with, widgets, created_at, updated_at) in &rows {
        sqlx::query(
            "INSERT INTO dashboards (id, owner, name, shared, shared_with, widgets, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(owner)
        .bind(name)
        .bind(shared)
        .bind(shared_with)
        .bind(widgets)
        .bind(created_at)
        .bind(updated_at)
        .execute(&mut **tx)
        .await?;
    }
    Ok(rows.len() as u64)
}

/// Copies the alerts' tables; how many rows.
async fn copy_alerts(from: &sqlx::SqlitePool, tx: &mut sqlx::Transaction<'static, sqlx::Postgres>) -> Result<u64> {
    let mut n = 0u64;
    for table in ["alert_rules", "alert_channels"] {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as(&format!("SELECT name, body, updated_at FROM {table}")).fetch_all(from).await?;
        for (name, body, updated_at) in &rows {
            sqlx::query(&format!("INSERT INTO {table} (name, body, updated_at) VALUES ($1, $2, $3)"))
                .bind(name)
                .bind(body)
                .bind(updated_at)
                .execute(&mut **tx)
                .await?;
        }
        n += rows.len() as u64;
    }
    type State = (String, String, String, String, String, i64, f64, Option<i64>, Option<i64>);
    let states: Vec<State> = sqlx::query_as(
        "SELECT rule, hostname, process, state, severity, since, value, notified_at, resolved_at FROM alert_state",
    )
    .fetch_all(from)
    .await?;
    for (rule, hostname, process, state, severity, since, value, notified_at, resolved_at) in &states {
        sqlx::query(
            "INSERT INTO alert_state (rule, hostname, process, state, severity, since, value, notified_at, \
             resolved_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(rule)
        .bind(hostname)
        .bind(process)
        .bind(state)
        .bind(severity)
        .bind(since)
        .bind(value)
        .bind(notified_at)
        .bind(resolved_at)
        .execute(&mut **tx)
        .await?;
    }
    n += states.len() as u64;
    type Event = (i64, String, String, String, String, String, f64, i64, i64);
    let events: Vec<Event> =
        sqlx::query_as("SELECT id, rule, hostname, process, severity, state, value, since, at FROM alert_events")
            .fetch_all(from)
            .await?;
    for (id, rule, hostname, process, severity, state, value, since, at) in &events {
        sqlx::query(
            "INSERT INTO alert_events (id, rule, hostname, process, severity, state, value, since, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id)
        .bind(rule)
        .bind(hostname)
        .bind(process)
        .bind(severity)
        .bind(state)
        .bind(value)
        .bind(since)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    }
    n += events.len() as u64;
    type Delivery = (i64, String, String, String, String, String, i64, String, Option<String>, i64);
    let deliveries: Vec<Delivery> = sqlx::query_as(
        "SELECT id, channel, rule, hostname, process, status, attempt, result, error, at FROM alert_deliveries",
    )
    .fetch_all(from)
    .await?;
    for (id, channel, rule, hostname, process, status, attempt, result, error, at) in &deliveries {
        sqlx::query(
            "INSERT INTO alert_deliveries (id, channel, rule, hostname, process, status, attempt, result, error, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(id)
        .bind(channel)
        .bind(rule)
        .bind(hostname)
        .bind(process)
        .bind(status)
        .bind(attempt)
        .bind(result)
        .bind(error)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    }
    n += deliveries.len() as u64;
    type SilenceRow = (i64, Option<String>, Option<String>, i64, String, String, i64);
    let silences: Vec<SilenceRow> =
        sqlx::query_as("SELECT id, rule, hostname, ends_at, comment, created_by, created_at FROM alert_silences")
            .fetch_all(from)
            .await?;
    for (id, rule, hostname, ends_at, comment, created_by, created_at) in &silences {
        sqlx::query(
            "INSERT INTO alert_silences (id, rule, hostname, ends_at, comment, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(rule)
        .bind(hostname)
        .bind(ends_at)
        .bind(comment)
        .bind(created_by)
        .bind(created_at)
        .execute(&mut **tx)
        .await?;
    }
    n += silences.len() as u64;
    let held: Vec<(i64, String, String, i64)> =
        sqlx::query_as("SELECT id, channel, body, at FROM alert_held").fetch_all(from).await?;
    for (id, channel, body, at) in &held {
        sqlx::query("INSERT INTO alert_held (id, channel, body, at) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(channel)
            .bind(body)
            .bind(at)
            .execute(&mut **tx)
            .await?;
    }
    n += held.len() as u64;
    Ok(n)
}
