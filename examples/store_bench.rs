//! Benchmark of the collector's store: size on disk and ingest rate.
//!
//! Prints one JSON object on stdout (progress goes to stderr):
//!
//! - `storage`: real snapshots of this machine, sampled every `--sample-ms` and relabelled
//!   one second apart (the collector's normal interval), go through the real `Store`.
//!   Reported: database bytes of the raw tier per process-metric sample, and the size
//!   of a month per host after the real rollups have run with the default retention.
//! - `ingest`: `--agents` hosts send `--rows-per-agent` snapshots each, all at once,
//!   through `Store::insert_snapshot` (one task per agent). The floor is the same rows,
//!   read back from that database byte for byte, inserted into a fresh database of the
//!   same schema with one prepared `INSERT` in transactions of `--raw-batch` rows.
//! - `latency`: `--agents` hosts each send one snapshot per second for `--paced-secs`
//!   seconds (start times spread over the second), as the collector sees them; the time
//!   each `insert_snapshot` call takes, p50 and p99.
//!
//! Run: `cargo run --release --example store_bench -- [options]` (`--help` lists them).

use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use clap::Parser;
use procyon::model::Snapshot;
use procyon::sample::{Sampler, SamplerOptions};
use procyon::store::{Retention, Store};
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

/// Per-process figures that are measured anew each tick and counted as one
/// process-metric sample each: CPU %, resident bytes, virtual bytes, threads, disk bytes
/// read, disk bytes written. Not counted: `memory_percent` (resident bytes over the
/// machine's memory) and the two disk rates (differences of the counters), which are
/// derived from counted ones, nor names, command lines, users, status and start times,
/// which rarely change.
const PROCESS_METRICS: u64 = 6;

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

#[derive(Parser, Debug)]
struct Args {
    /// Snapshots of this machine to record for the storage part.
    #[arg(long, default_value_t = 300)]
    ticks: usize,
    /// Time between two recorded samples, in ms (they are stored one second apart).
    #[arg(long, default_value_t = 200)]
    sample_ms: u64,
    /// Concurrent agents (hosts) in the ingest and latency parts.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Snapshots each agent sends in the ingest part.
    #[arg(long, default_value_t = 30)]
    rows_per_agent: usize,
    /// Rows per transaction in the raw floor.
    #[arg(long, default_value_t = 1000)]
    raw_batch: usize,
    /// Seconds of one-snapshot-per-second traffic per agent in the latency part.
    #[arg(long, default_value_t = 10)]
    paced_secs: u64,
    /// Parts to run, comma-separated: storage, ingest, latency.
    #[arg(long, value_delimiter = ',', default_value = "storage,ingest,latency")]
    parts: Vec<String>,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Res<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let recorded = Arc::new(record(&args)?);
    let part = |name: &str| args.parts.iter().any(|p| p == name);
    let mut out = serde_json::Map::new();
    if part("storage") {
        out.insert("storage".into(), storage(&recorded, &dir.path().join("storage.db")).await?);
    }
    if part("ingest") {
        out.insert("ingest".into(), ingest(&args, &recorded, dir.path()).await?);
    }
    if part("latency") {
        out.insert("latency".into(), latency(&args, &recorded, &dir.path().join("paced.db")).await?);
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}

/// Real snapshots of this machine, relabelled one second apart from a fixed start.
fn record(args: &Args) -> Res<Vec<Snapshot>> {
    eprintln!("recording {} snapshots every {} ms", args.ticks, args.sample_ms);
    let mut sampler = Sampler::new(SamplerOptions::default());
    sampler.sample();
    let start = start_time();
    let mut out = Vec::with_capacity(args.ticks);
    for i in 0..args.ticks {
        std::thread::sleep(Duration::from_millis(args.sample_ms));
        let mut s = sampler.sample();
        s.seq = i as u64 + 1;
        s.taken_at = start + TimeDelta::seconds(i as i64);
        s.interval_ms = 1000;
        out.push(s);
    }
    Ok(out)
}

/// A fixed hour boundary in the recent past, so that buckets line up the same way on
/// every run.
fn start_time() -> DateTime<Utc> {
    let now = Utc::now().timestamp();
    DateTime::from_timestamp(now - now.rem_euclid(3600) - 6 * 3600, 0).unwrap_or_default()
}

/// Snapshot `i` of agent `agent`: the recorded sequence, shifted per agent so that
/// hosts differ, under the agent's host name.
fn agent_snapshot(recorded: &[Snapshot], agent: usize, i: usize) -> Snapshot {
    let mut s = recorded[(agent * 7 + i) % recorded.len()].clone();
    s.host.hostname = format!("bench-{agent:04}");
    s.host.id = s.host.hostname.clone();
    s.seq = i as u64 + 1;
    s.taken_at = start_time() + TimeDelta::seconds(i as i64);
    s
}

/// A plain pool on a database file, with the store's journal settings.
async fn plain_pool(path: &Path) -> Res<SqlitePool> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    Ok(SqlitePoolOptions::new().max_connections(1).connect_with(options).await?)
}

/// Bytes of the pages of each table or index whose name starts with `prefix`.
async fn btree_bytes(pool: &SqlitePool, names: &[&str]) -> Res<u64> {
    let mut total = 0u64;
    for name in names {
        let bytes: Option<i64> =
            sqlx::query_scalar("SELECT SUM(pgsize) FROM dbstat WHERE name = ?").bind(name).fetch_one(pool).await?;
        total += u64::try_from(bytes.unwrap_or(0))?;
    }
    Ok(total)
}

/// Every table and index of `table`.
async fn btrees_of(pool: &SqlitePool, table: &str) -> Res<Vec<String>> {
    Ok(sqlx::query_scalar("SELECT name FROM sqlite_schema WHERE tbl_name = ? AND type IN ('table', 'index')")
        .bind(table)
        .fetch_all(pool)
        .await?)
}

async fn table_bytes(pool: &SqlitePool, table: &str) -> Res<u64> {
    let names = btrees_of(pool, table).await?;
    btree_bytes(pool, &names.iter().map(String::as_str).collect::<Vec<_>>()).await
}

async fn storage(recorded: &[Snapshot], path: &Path) -> Res<serde_json::Value> {
    eprintln!("storage: inserting {} snapshots", recorded.len());
    let store = Store::open(path).await?;
    for s in recorded {
        store.insert_snapshot(s, s.taken_at).await?;
    }
    store.close().await;

    let pool = plain_pool(path).await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&pool).await?;
    let raw_bytes = table_bytes(&pool, "snapshots").await? + table_bytes(&pool, "hosts").await?;
    let (rows, body, top): (i64, i64, i64) =
        sqlx::query_as("SELECT COUNT(*), SUM(length(body)), SUM(length(top_json)) FROM snapshots")
            .fetch_one(&pool)
            .await?;
    pool.close().await;
    let processes: u64 = recorded.iter().map(|s| s.processes.len() as u64).sum();
    let churn = churn(recorded);
    let samples = processes * PROCESS_METRICS;
    let per_snapshot = raw_bytes as f64 / rows as f64;

    // Roll everything up as the collector does, two hours later (so the last hour is
    // complete), and measure the rollup rows it wrote.
    let store = Store::open(path).await?;
    let last = recorded.last().map_or_else(Utc::now, |s| s.taken_at);
    store.maintain(last + TimeDelta::hours(2), &Retention::default()).await?;
    store.close().await;
    // A month of one host's rollups: the real rows, repeated at earlier buckets until
    // the minute tier holds its retention and the hour tier a month, then measured.
    let retention = Retention::default();
    let minute_rows = (retention.minute.as_secs() / 60) as i64;
    let hour_rows = (retention.hour.as_secs().min(30 * 86_400) / 3600) as i64;
    let pool = plain_pool(path).await?;
    let real: Vec<(String, i64)> =
        sqlx::query_as("SELECT tier, COUNT(*) FROM rollups GROUP BY tier").fetch_all(&pool).await?;
    let columns: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info('rollups') ORDER BY cid").fetch_all(&pool).await?;
    let select = columns
        .iter()
        .map(|c| if c == "bucket" { "bucket - k.i * ?".to_owned() } else { format!("r.{c}") })
        .collect::<Vec<_>>()
        .join(", ");
    for (tier, n) in &real {
        let (want, width) = if tier == "minute" { (minute_rows, 60_000) } else { (hour_rows, 3_600_000) };
        let copies = (want + n - 1) / n - 1;
        sqlx::query(&format!(
            "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?) \
             INSERT INTO rollups ({}) SELECT {select} FROM rollups r, k WHERE r.tier = ?",
            columns.join(", ")
        ))
        .bind(copies)
        .bind(n * width)
        .bind(tier)
        .execute(&pool)
        .await?;
    }
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&pool).await?;
    let rollup_bytes = table_bytes(&pool, "rollups").await?;
    let tiers: Vec<(String, i64)> =
        sqlx::query_as("SELECT tier, COUNT(*) FROM rollups GROUP BY tier").fetch_all(&pool).await?;
    pool.close().await;
    let count = |rows: &[(String, i64)], name: &str| rows.iter().find(|r| r.0 == name).map_or(0, |r| r.1);
    let (minutes, hours) = (count(&tiers, "minute"), count(&tiers, "hour"));
    let per_rollup = rollup_bytes as f64 / (minutes + hours).max(1) as f64;
    let minute_rows = minute_rows as f64;
    let hour_rows = hour_rows as f64;

    let raw_day = per_snapshot * retention.raw.as_secs_f64();
    let rollups_month = per_rollup * (minute_rows + hour_rows);
    Ok(json!({
        "snapshots": rows,
        "processes_avg": processes as f64 / recorded.len() as f64,
        "per_tick": churn,
        "process_metrics_per_process": PROCESS_METRICS,
        "process_metric_samples": samples,
        "raw_tier_bytes": raw_bytes,
        "bytes_per_snapshot": per_snapshot,
        "body_bytes_avg": body as f64 / rows as f64,
        "top_json_bytes_avg": top as f64 / rows as f64,
        "bytes_per_process_metric_sample": raw_bytes as f64 / samples as f64,
        "rollup_rows_rolled": { "minute": count(&real, "minute"), "hour": count(&real, "hour") },
        "rollup_rows_measured": { "minute": minutes, "hour": hours },
        "rollup_row_bytes_avg": per_rollup,
        "month_per_host_bytes": {
            "raw_tier_24h_at_1s": raw_day,
            "minute_rollups_7d": per_rollup * minute_rows,
            "hour_rollups_30d": per_rollup * hour_rows,
            "rollup_tiers": rollups_month,
            "total": raw_day + rollups_month,
        },
        "month_per_host_mib": { "rollup_tiers": rollups_month / 1048576.0, "total": (raw_day + rollups_month) / 1048576.0 },
    }))
}

/// How much the recorded sequence moves per tick: the share of processes (present in
/// both ticks) with at least one counted metric changed, and processes started and gone.
fn churn(recorded: &[Snapshot]) -> serde_json::Value {
    use std::collections::HashMap;
    let (mut both, mut changed, mut started, mut gone) = (0u64, 0u64, 0u64, 0u64);
    for pair in recorded.windows(2) {
        let before: HashMap<_, _> = pair[0].processes.iter().map(|p| ((p.pid, p.start_time), p)).collect();
        for p in &pair[1].processes {
            match before.get(&(p.pid, p.start_time)) {
                None => started += 1,
                Some(b) => {
                    both += 1;
                    let metrics = |p: &procyon::model::ProcessSample| {
                        (
                            p.cpu_percent.map(f32::to_bits),
                            p.rss_bytes,
                            p.virtual_bytes,
                            p.threads,
                            p.disk_read_bytes,
                            p.disk_write_bytes,
                        )
                    };
                    changed += u64::from(metrics(b) != metrics(p));
                }
            }
        }
        gone += (pair[0].processes.len() as u64).saturating_sub(both_count(&pair[0], &pair[1]));
    }
    let ticks = recorded.len().saturating_sub(1).max(1) as f64;
    json!({
        "processes_changed_share": changed as f64 / both.max(1) as f64,
        "processes_started": started as f64 / ticks,
        "processes_gone": gone as f64 / ticks,
    })
}

/// Processes of `a` still in `b`.
fn both_count(a: &Snapshot, b: &Snapshot) -> u64 {
    let keys: std::collections::HashSet<_> = b.processes.iter().map(|p| (p.pid, p.start_time)).collect();
    a.processes.iter().filter(|p| keys.contains(&(p.pid, p.start_time))).count() as u64
}

/// Every agent sends its snapshots as fast as the store takes them.
async fn ingest(args: &Args, recorded: &Arc<Vec<Snapshot>>, dir: &Path) -> Res<serde_json::Value> {
    let path = dir.join("ingest.db");
    let rows = args.agents * args.rows_per_agent;
    eprintln!("ingest: {} agents x {} snapshots through the store", args.agents, args.rows_per_agent);
    let store = Store::open(&path).await?;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.agents);
    for agent in 0..args.agents {
        let (store, recorded, n) = (store.clone(), Arc::clone(recorded), args.rows_per_agent);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(n);
            for i in 0..n {
                let s = agent_snapshot(&recorded, agent, i);
                let t = Instant::now();
                store.insert_snapshot(&s, s.taken_at).await?;
                latencies.push(t.elapsed());
            }
            Res::Ok(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(rows);
    for t in tasks {
        latencies.extend(t.await??);
    }
    let store_secs = started.elapsed().as_secs_f64();
    store.close().await;

    eprintln!("ingest: the same {rows} rows as plain batched inserts");
    let source = plain_pool(&path).await?;
    let hosts = sqlx::query("SELECT * FROM hosts ORDER BY id").fetch_all(&source).await?;
    let snapshots = sqlx::query("SELECT * FROM snapshots ORDER BY id").fetch_all(&source).await?;
    let columns: Vec<String> = snapshots
        .first()
        .map(|r| r.columns().iter().map(|c| sqlx::Column::name(c).to_owned()).collect())
        .unwrap_or_default();
    source.close().await;
    // Same schema (migrations, indexes and triggers included), then nothing but inserts.
    let raw_path = dir.join("raw.db");
    Store::open(&raw_path).await?.close().await;
    let raw = plain_pool(&raw_path).await?;
    for h in &hosts {
        sqlx::query("INSERT INTO hosts (id, hostname, info_json, first_seen, last_seen, last_taken_at) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(h.get::<i64, _>("id"))
            .bind(h.get::<String, _>("hostname"))
            .bind(h.get::<Option<String>, _>("info_json"))
            .bind(h.get::<i64, _>("first_seen"))
            .bind(h.get::<i64, _>("last_seen"))
            .bind(h.get::<i64, _>("last_taken_at"))
            .execute(&raw)
            .await?;
    }
    let insert =
        format!("INSERT INTO snapshots ({}) VALUES ({})", columns.join(", "), vec!["?"; columns.len()].join(", "));
    let values: Vec<Vec<Value>> = snapshots.iter().map(row_values).collect::<Res<_>>()?;
    let started = Instant::now();
    for chunk in values.chunks(args.raw_batch.max(1)) {
        let mut tx = raw.begin().await?;
        for row in chunk {
            let mut q = sqlx::query(&insert);
            for v in row {
                q = match v {
                    Value::Null => q.bind(None::<i64>),
                    Value::Int(i) => q.bind(*i),
                    Value::Real(f) => q.bind(*f),
                    Value::Text(t) => q.bind(t.as_str()),
                    Value::Blob(b) => q.bind(b.as_slice()),
                };
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    let raw_secs = started.elapsed().as_secs_f64();
    raw.close().await;

    let store_rate = rows as f64 / store_secs;
    let raw_rate = rows as f64 / raw_secs;
    latencies.sort();
    Ok(json!({
        "agents": args.agents,
        "rows": rows,
        "store_rows_per_sec": store_rate,
        "raw_rows_per_sec": raw_rate,
        "ratio_store_to_raw": store_rate / raw_rate,
        "raw_batch": args.raw_batch,
        "store_p50_ms_flat_out": percentile(&latencies, 0.50),
        "store_p99_ms_flat_out": percentile(&latencies, 0.99),
    }))
}

/// One stored value, as read back, to insert again unchanged.
enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

fn row_values(row: &sqlx::sqlite::SqliteRow) -> Res<Vec<Value>> {
    use sqlx::{TypeInfo, ValueRef};
    (0..row.len())
        .map(|i| {
            let kind = row.try_get_raw(i)?.type_info().name().to_owned();
            Ok(match kind.as_str() {
                "NULL" => Value::Null,
                "INTEGER" => Value::Int(row.try_get(i)?),
                "REAL" => Value::Real(row.try_get(i)?),
                "TEXT" => Value::Text(row.try_get(i)?),
                _ => Value::Blob(row.try_get(i)?),
            })
        })
        .collect()
}

/// Every agent sends one snapshot per second.
async fn latency(args: &Args, recorded: &Arc<Vec<Snapshot>>, path: &Path) -> Res<serde_json::Value> {
    eprintln!("latency: {} agents at one snapshot per second for {} s", args.agents, args.paced_secs);
    let store = Store::open(path).await?;
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::with_capacity(args.agents);
    for agent in 0..args.agents {
        let (store, recorded, n) = (store.clone(), Arc::clone(recorded), args.paced_secs as usize);
        let offset = Duration::from_secs(1).mul_f64(agent as f64 / args.agents as f64);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(n);
            for i in 0..n {
                tokio::time::sleep_until(start + offset + Duration::from_secs(i as u64)).await;
                let s = agent_snapshot(&recorded, agent, i);
                let t = Instant::now();
                store.insert_snapshot(&s, s.taken_at).await?;
                latencies.push(t.elapsed());
            }
            Res::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    store.close().await;
    latencies.sort();
    Ok(json!({
        "agents": args.agents,
        "interval_ms": 1000,
        "rows": latencies.len(),
        "p50_ms": percentile(&latencies, 0.50),
        "p99_ms": percentile(&latencies, 0.99),
        "max_ms": latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    }))
}

/// The `q` quantile of sorted durations, in ms.
fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}
