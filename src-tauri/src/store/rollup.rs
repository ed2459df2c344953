//! History: per-minute and per-hour rollups, retention, series and top processes.
//!
//! Raw snapshots are rolled into minute buckets, minute buckets into hour buckets. A
//! bucket keeps the number of snapshots behind it, the average and peak of CPU, memory,
//! process count and network rates, and the processes that peaked in it (top 5 by CPU
//! and top 5 by resident memory, each with the time of its peak). Averages are weighted
//! by samples, so buckets merge exactly.
//!
//! Progress is kept per host and tier in `rollup_progress` (`rolled_until`: every bucket
//! starting earlier is rolled), so maintenance reads only new rows. A snapshot that
//! arrives for an already rolled minute is queued in `rollup_late` at insert and merged
//! into its buckets by the next maintenance. Raw rows and minute rollups are deleted
//! only once the tier above holds them.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use super::chain::{self, Known};
use super::db::{Conn, Db, on};
use super::ingest;
use super::snapshots::finite;
use super::{Maintenance, Result, Retention, Store, StoreError, from_ms, to_i64, to_ms, to_u32};
use crate::model::Snapshot;
use crate::model::api::{Series, SeriesPoint, Tier, TopProcess};

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

/// Processes kept per list (by CPU, by memory) in a snapshot's or a bucket's top.
const TOP_N: usize = 5;
/// Command lines in top lists are cut here: the full line is in the snapshot body, and
/// top lists are read in bulk.
const TOP_CMD_CHARS: usize = 128;

/// Source time covered by one rollup transaction, so that a backlog (first run on a
/// full database) never holds the write lock for long: ten minutes of raw rows for
/// minute buckets (their bodies are decoded for their top lists), a day of minute rows
/// for hour buckets.
const MINUTE_CHUNK_MS: i64 = 10 * MINUTE_MS;
const HOUR_CHUNK_MS: i64 = 24 * HOUR_MS;
/// Late snapshots merged per transaction.
const LATE_BATCH: i64 = 1000;
/// Rows deleted per statement by retention, for the same reason.
const DELETE_BATCH: i64 = 2000;

/// Longest range served from raw snapshots.
const RAW_SPAN_MS: i64 = 6 * HOUR_MS;
/// Longest range served from minute rollups.
const MINUTE_SPAN_MS: i64 = 7 * 24 * HOUR_MS;
/// Points in a series when the caller gives no limit and no start.
const DEFAULT_POINTS: u32 = 100;
/// Most points in a series.
const MAX_POINTS: u32 = 10_000;

/// Width of a rollup tier's buckets in ms.
fn width(tier: Tier) -> i64 {
    match tier {
        Tier::Hour => HOUR_MS,
        Tier::Minute | Tier::Raw => MINUTE_MS,
    }
}

/// The `tier` column's value.
fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Raw => "raw",
        Tier::Minute => "minute",
        Tier::Hour => "hour",
    }
}

/// Start of the bucket holding `t`.
fn floor(t: i64, width: i64) -> i64 {
    t.div_euclid(width) * width
}

fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One process in a top list. In a raw snapshot's list the peak times are absent
/// (they are the snapshot's time); in a bucket's list they say when each peak was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Peak {
    name: String,
    pid: u32,
    cmd: String,
    /// `None` when no snapshot said (a short upload may leave it out).
    #[serde(default)]
    cpu_percent: Option<f32>,
    /// As `cpu_percent`.
    #[serde(default)]
    rss_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cpu_peak_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rss_peak_at: Option<i64>,
}

/// A raw snapshot's top list: its top processes by CPU and by memory. A figure the
/// snapshot does not know (a short upload may leave them out) ranks below every known
/// one, and stays unknown (`null`) in the list.
fn snapshot_top_json(snap: &Snapshot) -> Result<String> {
    let cpu = |i: usize| snap.processes[i].cpu_percent.map(|c| finite(f64::from(c)) as f32);
    let rss = |i: usize| snap.processes[i].rss_bytes;
    let mut by_cpu: Vec<usize> = (0..snap.processes.len()).collect();
    by_cpu.sort_by(|&a, &b| {
        cpu_rank(cpu(b)).total_cmp(&cpu_rank(cpu(a))).then(snap.processes[a].pid.cmp(&snap.processes[b].pid))
    });
    let mut by_rss: Vec<usize> = (0..snap.processes.len()).collect();
    by_rss.sort_by(|&a, &b| rss(b).cmp(&rss(a)).then(snap.processes[a].pid.cmp(&snap.processes[b].pid)));
    let mut chosen: Vec<usize> = by_cpu.into_iter().take(TOP_N).collect();
    for i in by_rss.into_iter().take(TOP_N) {
        if !chosen.contains(&i) {
            chosen.push(i);
        }
    }
    let top: Vec<Peak> = chosen
        .into_iter()
        .map(|i| {
            let p = &snap.processes[i];
            Peak {
                name: p.name.clone(),
                pid: p.pid,
                cmd: p.cmd.chars().take(TOP_CMD_CHARS).collect(),
                cpu_percent: cpu(i),
                rss_bytes: rss(i),
                cpu_peak_at: None,
                rss_peak_at: None,
            }
        })
        .collect();
    serde_json::to_string(&top).map_err(|e| StoreError::Corrupt(format!("cannot encode top processes: {e}")))
}

/// A CPU figure for ranking: an unknown one below every known one.
fn cpu_rank(cpu: Option<f32>) -> f32 {
    cpu.unwrap_or(f32::NEG_INFINITY)
}

/// Peaks per process (name and pid) over several top lists.
#[derive(Default)]
struct Peaks(HashMap<(String, u32), Peak>);

impl Peaks {
    /// Adds a stored top list; entries without peak times get `at`.
    fn add_json(&mut self, json: &str, at: i64) -> Result<()> {
        let list: Vec<Peak> =
            serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("unreadable top processes: {e}")))?;
        for p in list {
            self.add(p, at);
        }
        Ok(())
    }

    fn add(&mut self, mut p: Peak, at: i64) {
        // A peak time only for a figure that is known.
        p.cpu_peak_at = p.cpu_percent.map(|_| p.cpu_peak_at.unwrap_or(at));
        p.rss_peak_at = p.rss_bytes.map(|_| p.rss_peak_at.unwrap_or(at));
        match self.0.get_mut(&(p.name.clone(), p.pid)) {
            None => {
                self.0.insert((p.name.clone(), p.pid), p);
            }
            Some(e) => {
                // The command line is the one seen at the CPU peak.
                // `None` (unknown) is below every known figure.
                if p.cpu_percent > e.cpu_percent {
                    e.cpu_percent = p.cpu_percent;
                    e.cpu_peak_at = p.cpu_peak_at;
                    e.cmd = p.cmd;
                }
                if p.rss_bytes > e.rss_bytes {
                    e.rss_bytes = p.rss_bytes;
                    e.rss_peak_at = p.rss_peak_at;
                }
            }
        }
    }

    /// The top `n` by CPU and the top `n` by memory (up to `2n` processes), by CPU peak
    /// then memory peak, highest first.
    fn top(self, n: usize) -> Vec<Peak> {
        let mut all: Vec<Peak> = self.0.into_values().collect();
        let key = |p: &Peak| (p.name.clone(), p.pid);
        all.sort_by(|a, b| b.rss_bytes.cmp(&a.rss_bytes).then_with(|| key(a).cmp(&key(b))));
        let by_rss: Vec<(String, u32)> = all.iter().take(n).map(key).collect();
        all.sort_by(|a, b| {
            cpu_rank(b.cpu_percent)
                .total_cmp(&cpu_rank(a.cpu_percent))
                .then(b.rss_bytes.cmp(&a.rss_bytes))
                .then_with(|| key(a).cmp(&key(b)))
        });
        all.into_iter().enumerate().filter(|(i, p)| *i < n || by_rss.contains(&key(p))).map(|(_, p)| p).collect()
    }

    fn top_json(self) -> Result<String> {
        serde_json::to_string(&self.top(TOP_N))
            .map_err(|e| StoreError::Corrupt(format!("cannot encode top processes: {e}")))
    }
}

/// Sums and peaks of a bucket (or of a part of one).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Agg {
    samples: i64,
    cpu_sum: f64,
    cpu_max: f64,
    memory_sum: f64,
    memory_max: i64,
    processes_sum: f64,
    processes_max: i64,
    /// Samples that knew their network rates: the network sums and peaks are theirs.
    network_samples: i64,
    sent_sum: f64,
    sent_max: f64,
    received_sum: f64,
    received_max: f64,
    /// The host in depth: samples that measured disk I/O (their sums and peaks), and
    /// samples that had a temperature.
    disk: Part,
    disk_write: Part,
    temperature: Part,
}

/// Sum and peak of one figure over the samples that had it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Part {
    samples: i64,
    sum: f64,
    max: f64,
}

impl Part {
    fn of(value: Option<f64>) -> Part {
        value.filter(|v| v.is_finite()).map_or(Part::default(), |v| Part { samples: 1, sum: v, max: v })
    }

    fn stored(samples: i64, avg: f64, max: f64) -> Part {
        Part { samples, sum: avg * samples as f64, max }
    }

    /// A temperature may be below zero: a part without samples never wins a peak.
    fn merge(&mut self, o: &Part) {
        if o.samples > 0 {
            self.max = if self.samples > 0 { self.max.max(o.max) } else { o.max };
            self.samples += o.samples;
            self.sum += o.sum;
        }
    }

    fn avg(&self) -> Option<f64> {
        (self.samples > 0).then(|| self.sum / self.samples as f64)
    }

    fn peak(&self) -> Option<f64> {
        (self.samples > 0).then_some(self.max)
    }
}

impl Agg {
    fn merge(&mut self, o: &Agg) {
        // Every figure is non-negative, so the zero of an empty Agg never wins a max.
        self.samples += o.samples;
        self.cpu_sum += o.cpu_sum;
        self.cpu_max = self.cpu_max.max(o.cpu_max);
        self.memory_sum += o.memory_sum;
        self.memory_max = self.memory_max.max(o.memory_max);
        self.processes_sum += o.processes_sum;
        self.processes_max = self.processes_max.max(o.processes_max);
        self.network_samples += o.network_samples;
        self.sent_sum += o.sent_sum;
        self.sent_max = self.sent_max.max(o.sent_max);
        self.received_sum += o.received_sum;
        self.received_max = self.received_max.max(o.received_max);
        self.disk.merge(&o.disk);
        self.disk_write.merge(&o.disk_write);
        self.temperature.merge(&o.temperature);
    }

    fn avg(&self, sum: f64) -> f64 {
        if self.samples > 0 { sum / self.samples as f64 } else { 0.0 }
    }

    /// The average of a network sum over the samples that knew it; `None` when none did.
    fn network_avg(&self, sum: f64) -> Option<f64> {
        (self.network_samples > 0).then(|| sum / self.network_samples as f64)
    }

    /// A network peak; `None` when no sample knew it.
    fn network_max(&self, max: f64) -> Option<f64> {
        (self.network_samples > 0).then_some(max)
    }

    fn point(&self, bucket: i64) -> SeriesPoint {
        SeriesPoint {
            timestamp: from_ms(bucket),
            samples: to_u32(self.samples),
            cpu_percent: self.avg(self.cpu_sum) as f32,
            cpu_max_percent: self.cpu_max as f32,
            memory_used_bytes: self.avg(self.memory_sum).round() as i64,
            memory_max_bytes: self.memory_max,
            process_count: self.avg(self.processes_sum) as f32,
            process_max: to_u32(self.processes_max),
            sent_bytes_per_sec: self.network_avg(self.sent_sum),
            received_bytes_per_sec: self.network_avg(self.received_sum),
            sent_max_bytes_per_sec: self.network_max(self.sent_max),
            received_max_bytes_per_sec: self.network_max(self.received_max),
            disk_read_bytes_per_sec: self.disk.avg(),
            disk_write_bytes_per_sec: self.disk_write.avg(),
            disk_read_max_bytes_per_sec: self.disk.peak(),
            disk_write_max_bytes_per_sec: self.disk_write.peak(),
            temperature_celsius: self.temperature.avg(),
            temperature_max_celsius: self.temperature.peak(),
        }
    }
}

/// The summary columns of a raw snapshot, with its top list when asked for.
#[derive(FromRow)]
struct RawRow {
    id: i64,
    host_id: i64,
    taken_at: i64,
    cpu_percent: f64,
    memory_used_bytes: i64,
    process_count: i64,
    sent_bytes_per_sec: f64,
    received_bytes_per_sec: f64,
    /// Whether the two rates are known (a short upload has none: they hold 0).
    network_known: bool,
    disk_read_bytes_per_sec: Option<f64>,
    disk_write_bytes_per_sec: Option<f64>,
    temperature_celsius: Option<f64>,
    /// Empty when not asked for, and in rows whose top list is derived from the body.
    top_json: String,
    /// Only when the top list is asked for.
    body: Option<Vec<u8>>,
    base_id: Option<i64>,
}

/// [`RawRow`]'s columns; `top` gives `top_json` as `''` (and no body) when the list is
/// not needed.
fn raw_columns(top: bool) -> String {
    format!(
        "id, host_id, taken_at, cpu_percent, memory_used_bytes, process_count, sent_bytes_per_sec, \
         received_bytes_per_sec, network_known, disk_read_bytes_per_sec, disk_write_bytes_per_sec, \
         temperature_celsius, {}",
        if top {
            "top_json, CASE WHEN top_json = '' THEN body END AS body, base_id"
        } else {
            "'' AS top_json, NULL AS body, NULL AS base_id"
        }
    )
}

/// Fills in the top lists of rows stored without one (since keyframes, a snapshot's top
/// list is not stored: it is derived here from the body, when rolling up, instead of
/// costing every row a few hundred bytes). Rows are rebuilt in the order they were
/// stored, keeping the last one: a host's next row is a delta from it. A row whose base
/// is gone keeps an empty list: it is past retention and being deleted.
async fn fill_tops(mut conn: Conn<'_>, rows: &mut [RawRow]) -> Result<()> {
    let mut order: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].body.is_some()).collect();
    order.sort_by_key(|&i| rows[i].id);
    let mut last: Option<Known> = None;
    for i in order {
        let r = &mut rows[i];
        let Some(body) = r.body.take() else { continue };
        let Some(chain) = chain::fetch(conn.reborrow(), r.id, body, r.base_id, last.as_ref()).await? else {
            r.top_json = "[]".to_owned();
            continue;
        };
        let snapshot = chain.rebuild(ingest::decode)?;
        r.top_json = snapshot_top_json(&snapshot)?;
        last = Some((r.id, std::sync::Arc::new(snapshot)));
    }
    Ok(())
}

impl RawRow {
    fn agg(&self) -> Agg {
        Agg {
            samples: 1,
            cpu_sum: self.cpu_percent,
            cpu_max: self.cpu_percent,
            memory_sum: self.memory_used_bytes as f64,
            memory_max: self.memory_used_bytes,
            processes_sum: self.process_count as f64,
            processes_max: self.process_count,
            // Unknown rates are stored as 0, which adds nothing to a sum or a peak.
            network_samples: i64::from(self.network_known),
            sent_sum: self.sent_bytes_per_sec,
            sent_max: self.sent_bytes_per_sec,
            received_sum: self.received_bytes_per_sec,
            received_max: self.received_bytes_per_sec,
            disk: Part::of(self.disk_read_bytes_per_sec),
            disk_write: Part::of(self.disk_write_bytes_per_sec.filter(|_| self.disk_read_bytes_per_sec.is_some())),
            temperature: Part::of(self.temperature_celsius),
        }
    }
}

/// A stored rollup bucket.
#[derive(FromRow)]
struct RollupRow {
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
    /// `None` in buckets rolled before it was counted: all their samples knew.
    network_samples: Option<i64>,
    disk_samples: i64,
    disk_read_avg: f64,
    disk_read_max: f64,
    disk_write_avg: f64,
    disk_write_max: f64,
    temperature_samples: i64,
    temperature_avg: f64,
    temperature_max: f64,
    top_json: String,
}

/// [`RollupRow`]'s columns; `top` as in [`raw_columns`].
fn rollup_columns(top: bool) -> String {
    format!(
        "bucket, samples, cpu_avg, cpu_max, memory_avg, memory_max, processes_avg, processes_max, sent_avg, \
         sent_max, received_avg, received_max, network_samples, disk_samples, disk_read_avg, disk_read_max, \
         disk_write_avg, disk_write_max, temperature_samples, temperature_avg, temperature_max, {} AS top_json",
        if top { "top_json" } else { "''" }
    )
}

impl RollupRow {
    fn agg(&self) -> Agg {
        let n = self.samples as f64;
        let network_samples = self.network_samples.unwrap_or(self.samples);
        let m = network_samples as f64;
        Agg {
            samples: self.samples,
            cpu_sum: self.cpu_avg * n,
            cpu_max: self.cpu_max,
            memory_sum: self.memory_avg * n,
            memory_max: self.memory_max,
            processes_sum: self.processes_avg * n,
            processes_max: self.processes_max,
            network_samples,
            sent_sum: self.sent_avg * m,
            sent_max: self.sent_max,
            received_sum: self.received_avg * m,
            received_max: self.received_max,
            disk: Part::stored(self.disk_samples, self.disk_read_avg, self.disk_read_max),
            disk_write: Part::stored(self.disk_samples, self.disk_write_avg, self.disk_write_max),
            temperature: Part::stored(self.temperature_samples, self.temperature_avg, self.temperature_max),
        }
    }
}

/// A bucket being built: its figures and its processes.
#[derive(Default)]
struct Bucket {
    agg: Agg,
    peaks: Peaks,
}

impl Bucket {
    fn add_raw(&mut self, r: &RawRow) -> Result<()> {
        self.agg.merge(&r.agg());
        self.peaks.add_json(&r.top_json, r.taken_at)
    }

    fn add_rollup(&mut self, r: &RollupRow) -> Result<()> {
        self.agg.merge(&r.agg());
        self.peaks.add_json(&r.top_json, r.bucket)
    }
}

/// Where rolling up stands for one host and tier.
async fn progress(mut conn: Conn<'_>, host_id: i64, tier: Tier) -> Result<Option<i64>> {
    Ok(on!(conn.reborrow(), |c| sqlx::query_scalar(
        "SELECT rolled_until FROM rollup_progress WHERE host_id = $1 AND tier = $2"
    )
    .bind(host_id)
    .bind(tier_name(tier))
    .fetch_optional(c)
    .await)?)
}

async fn set_progress(mut tx: Conn<'_>, host_id: i64, tier: Tier, until: i64) -> Result<()> {
    on!(tx.reborrow(), |c| sqlx::query(
        "INSERT INTO rollup_progress (host_id, tier, rolled_until) VALUES ($1, $2, $3) \
         ON CONFLICT (host_id, tier) DO UPDATE SET rolled_until = $3",
    )
    .bind(host_id)
    .bind(tier_name(tier))
    .bind(until)
    .execute(c)
    .await
    .map(|d| d.rows_affected()))?;
    Ok(())
}

/// Writes a bucket, replacing what was there.
async fn write_bucket(mut tx: Conn<'_>, host_id: i64, tier: Tier, start: i64, b: Bucket) -> Result<()> {
    let a = b.agg;
    on!(tx.reborrow(), |c| sqlx::query(
        "INSERT INTO rollups (host_id, tier, bucket, samples, cpu_avg, cpu_max, memory_avg, memory_max, \
         processes_avg, processes_max, sent_avg, sent_max, received_avg, received_max, network_samples, top_json, \
         disk_samples, disk_read_avg, disk_read_max, disk_write_avg, disk_write_max, temperature_samples, \
         temperature_avg, temperature_max) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, \
         $22, $23, $24) \
         ON CONFLICT (host_id, tier, bucket) DO UPDATE SET samples = excluded.samples, cpu_avg = excluded.cpu_avg, \
         cpu_max = excluded.cpu_max, memory_avg = excluded.memory_avg, memory_max = excluded.memory_max, \
         processes_avg = excluded.processes_avg, processes_max = excluded.processes_max, \
         sent_avg = excluded.sent_avg, sent_max = excluded.sent_max, received_avg = excluded.received_avg, \
         received_max = excluded.received_max, network_samples = excluded.network_samples, \
         top_json = excluded.top_json, disk_samples = excluded.disk_samples, \
         disk_read_avg = excluded.disk_read_avg, disk_read_max = excluded.disk_read_max, \
         disk_write_avg = excluded.disk_write_avg, disk_write_max = excluded.disk_write_max, \
         temperature_samples = excluded.temperature_samples, temperature_avg = excluded.temperature_avg, \
         temperature_max = excluded.temperature_max",
    )
    .bind(host_id)
    .bind(tier_name(tier))
    .bind(start)
    .bind(a.samples)
    .bind(a.avg(a.cpu_sum))
    .bind(a.cpu_max)
    .bind(a.avg(a.memory_sum))
    .bind(a.memory_max)
    .bind(a.avg(a.processes_sum))
    .bind(a.processes_max)
    // The columns are NOT NULL: a bucket without network samples stores 0 for them.
    .bind(a.network_avg(a.sent_sum).unwrap_or(0.0))
    .bind(a.sent_max)
    .bind(a.network_avg(a.received_sum).unwrap_or(0.0))
    .bind(a.received_max)
    .bind(a.network_samples)
    .bind(b.peaks.top_json()?)
    // NOT NULL like the others: 0 where no sample had the figure (`*_samples` says so).
    .bind(a.disk.samples)
    .bind(a.disk.avg().unwrap_or(0.0))
    .bind(a.disk.peak().unwrap_or(0.0))
    .bind(a.disk_write.avg().unwrap_or(0.0))
    .bind(a.disk_write.peak().unwrap_or(0.0))
    .bind(a.temperature.samples)
    .bind(a.temperature.avg().unwrap_or(0.0))
    .bind(a.temperature.peak().unwrap_or(0.0))
    .execute(c)
    .await
    .map(|d| d.rows_affected()))?;
    Ok(())
}

/// Merges `b` into the stored bucket (or writes it if there is none).
async fn merge_bucket(mut tx: Conn<'_>, host_id: i64, tier: Tier, start: i64, mut b: Bucket) -> Result<()> {
    let old: Option<RollupRow> = on!(tx.reborrow(), |c| sqlx::query_as(&format!(
        "SELECT {} FROM rollups WHERE host_id = $1 AND tier = $2 AND bucket = $3",
        rollup_columns(true)
    ))
    .bind(host_id)
    .bind(tier_name(tier))
    .bind(start)
    .fetch_optional(c)
    .await)?;
    if let Some(old) = old {
        b.add_rollup(&old)?;
    }
    write_bucket(tx, host_id, tier, start, b).await
}

/// Removes from `ranges` (sorted, disjoint, half-open) the buckets starting at
/// `starts` (sorted) of width `w`.
fn subtract(ranges: &[(i64, i64)], starts: &[i64], w: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for &(a, b) in ranges {
        let mut cursor = a;
        for &s in starts.iter().filter(|&&s| s < b && s + w > a) {
            if s > cursor {
                out.push((cursor, s));
            }
            cursor = cursor.max(s + w);
        }
        if cursor < b {
            out.push((cursor, b));
        }
    }
    out
}

/// How long a relayed action's row may stay: far past any wait for its answer.
const STALE_ACTION_MS: i64 = 3_600_000;

impl Store {
    /// How far a host's minute and hour tiers are rolled.
    async fn progress(&self, host_id: i64) -> Result<(Option<i64>, Option<i64>)> {
        let mut conn = self.pool.acquire().await?;
        Ok((progress(conn.conn(), host_id, Tier::Minute).await?, progress(conn.conn(), host_id, Tier::Hour).await?))
    }

    /// Rolls complete buckets up, merges late snapshots, and applies retention.
    /// Running it again with the same `now` changes nothing.
    pub async fn maintain(&self, now: DateTime<Utc>, retention: &Retention) -> Result<Maintenance> {
        let now = to_ms(now);
        let mut done = Maintenance::default();
        self.merge_late(&mut done).await?;
        let hosts: Vec<i64> =
            on!(&self.pool, |c| sqlx::query_scalar("SELECT id FROM hosts ORDER BY id").fetch_all(c).await)?;
        for &host_id in &hosts {
            self.roll_minutes(host_id, now, &mut done).await?;
            self.roll_hours(host_id, &mut done).await?;
        }
        self.settle_tips_ms(now, retention);
        for &host_id in &hosts {
            self.expire(host_id, now, retention, &mut done).await?;
        }
        // Relayed actions nobody waits for any more (their asker died while waiting).
        self.forget_stale_actions(now.saturating_sub(STALE_ACTION_MS)).await?;
        // Which collector holds which agent, of collectors that are gone.
        self.forget_dead_holders().await?;
        // Alert history is kept as long as the charts reach back (the hour tier), so
        // that every alert shown can be set beside the data that fired it.
        done.alert_rows_deleted += self.expire_alert_history(now.saturating_sub(duration_ms(retention.hour))).await?;
        if done.raw_deleted > 0 || done.rollups_deleted > 0 || done.alert_rows_deleted > 0 {
            // Hand the freed pages back to the file system (auto_vacuum is INCREMENTAL).
            // PostgreSQL's autovacuum does this for it.
            if let Db::Sqlite(pool) = &self.pool {
                let _turn = self.turn().await;
                sqlx::query("PRAGMA incremental_vacuum").execute(pool).await?;
            }
        }
        Ok(done)
    }

    /// What [`Store::maintain`] does to this collector's own memory of its hosts'
    /// newest rows, for a collector that does not run maintenance (another one of the
    /// fleet leads): it must still stop chaining on rows that retention may delete.
    pub fn settle_tips(&self, now: DateTime<Utc>, retention: &Retention) {
        self.settle_tips_ms(to_ms(now), retention);
    }

    fn settle_tips_ms(&self, now: i64, retention: &Retention) {
        // Rows that retention may delete now are not chained on any more; nor are those
        // of windows over for a minute (their hosts went quiet: let their snapshots go).
        self.ingest.forget_before(now.saturating_sub(duration_ms(retention.raw)));
        self.ingest.forget_ended(now.saturating_sub(2 * ingest::KEYFRAME_WINDOW_MS));
    }

    /// Merges snapshots that arrived after their minute was rolled into their minute
    /// bucket, and into their hour bucket when that is rolled too.
    async fn merge_late(&self, done: &mut Maintenance) -> Result<()> {
        loop {
            let mut tx = self.write().await?;
            let mut rows: Vec<RawRow> = on!(tx.conn(), |c| {
                sqlx::query_as(&format!(
                "SELECT {} FROM snapshots WHERE id IN (SELECT snapshot_id FROM rollup_late ORDER BY snapshot_id LIMIT $1)",
                raw_columns(true)
            ))
            .bind(LATE_BATCH)
            .fetch_all(c).await
            })?;
            fill_tops(tx.conn(), &mut rows).await?;
            let Some(last) = rows.iter().map(|r| r.id).max() else {
                tx.commit().await?;
                return Ok(());
            };
            let mut minutes: BTreeMap<(i64, i64), Bucket> = BTreeMap::new();
            let mut hours: BTreeMap<(i64, i64), Bucket> = BTreeMap::new();
            let mut hour_progress: HashMap<i64, Option<i64>> = HashMap::new();
            for r in &rows {
                minutes.entry((r.host_id, floor(r.taken_at, MINUTE_MS))).or_default().add_raw(r)?;
                let rolled = match hour_progress.get(&r.host_id) {
                    Some(&p) => p,
                    None => {
                        let p = progress(tx.conn(), r.host_id, Tier::Hour).await?;
                        hour_progress.insert(r.host_id, p);
                        p
                    }
                };
                let hour = floor(r.taken_at, HOUR_MS);
                if rolled.is_some_and(|until| hour < until) {
                    hours.entry((r.host_id, hour)).or_default().add_raw(r)?;
                }
            }
            for ((host_id, start), b) in minutes {
                merge_bucket(tx.conn(), host_id, Tier::Minute, start, b).await?;
                done.minute_buckets += 1;
            }
            for ((host_id, start), b) in hours {
                merge_bucket(tx.conn(), host_id, Tier::Hour, start, b).await?;
                done.hour_buckets += 1;
            }
            on!(tx.conn(), |c| sqlx::query("DELETE FROM rollup_late WHERE snapshot_id <= $1")
                .bind(last)
                .execute(c)
                .await
                .map(|d| d.rows_affected()))?;
            tx.commit().await?;
        }
    }

    /// Rolls a host's raw snapshots into every complete minute not rolled yet.
    async fn roll_minutes(&self, host_id: i64, now: i64, done: &mut Maintenance) -> Result<()> {
        let limit = floor(now, MINUTE_MS);
        loop {
            let mut tx = self.write().await?;
            let rolled = progress(tx.conn(), host_id, Tier::Minute).await?;
            let next: Option<i64> = on!(tx.conn(), |c| sqlx::query_scalar(
                "SELECT MIN(taken_at) FROM snapshots WHERE host_id = $1 AND taken_at >= $2"
            )
            .bind(host_id)
            .bind(rolled.unwrap_or(i64::MIN))
            .fetch_one(c)
            .await)?;
            let start = match next.map(|t| floor(t, MINUTE_MS)) {
                Some(start) if start < limit => start,
                _ => {
                    // Nothing complete left: everything before `limit` is rolled.
                    if rolled.is_some_and(|r| r < limit) {
                        set_progress(tx.conn(), host_id, Tier::Minute, limit).await?;
                    }
                    tx.commit().await?;
                    return Ok(());
                }
            };
            let end = limit.min(start + MINUTE_CHUNK_MS);
            let mut rows: Vec<RawRow> = on!(tx.conn(), |c| sqlx::query_as(&format!(
                "SELECT {} FROM snapshots WHERE host_id = $1 AND taken_at >= $2 AND taken_at < $3",
                raw_columns(true)
            ))
            .bind(host_id)
            .bind(start)
            .bind(end)
            .fetch_all(c)
            .await)?;
            fill_tops(tx.conn(), &mut rows).await?;
            let mut buckets: BTreeMap<i64, Bucket> = BTreeMap::new();
            for r in &rows {
                buckets.entry(floor(r.taken_at, MINUTE_MS)).or_default().add_raw(r)?;
            }
            for (start, b) in buckets {
                write_bucket(tx.conn(), host_id, Tier::Minute, start, b).await?;
                done.minute_buckets += 1;
            }
            set_progress(tx.conn(), host_id, Tier::Minute, end).await?;
            tx.commit().await?;
        }
    }

    /// Rolls a host's minute buckets into every hour whose minutes are all rolled.
    async fn roll_hours(&self, host_id: i64, done: &mut Maintenance) -> Result<()> {
        loop {
            let mut tx = self.write().await?;
            let Some(minutes_rolled) = progress(tx.conn(), host_id, Tier::Minute).await? else {
                tx.commit().await?;
                return Ok(());
            };
            let limit = floor(minutes_rolled, HOUR_MS);
            let rolled = progress(tx.conn(), host_id, Tier::Hour).await?;
            let next: Option<i64> = on!(tx.conn(), |c| sqlx::query_scalar(
                "SELECT MIN(bucket) FROM rollups WHERE host_id = $1 AND tier = 'minute' AND bucket >= $2",
            )
            .bind(host_id)
            .bind(rolled.unwrap_or(i64::MIN))
            .fetch_one(c)
            .await)?;
            let start = match next.map(|t| floor(t, HOUR_MS)) {
                Some(start) if start < limit => start,
                _ => {
                    if rolled.is_some_and(|r| r < limit) {
                        set_progress(tx.conn(), host_id, Tier::Hour, limit).await?;
                    }
                    tx.commit().await?;
                    return Ok(());
                }
            };
            let end = limit.min(start + HOUR_CHUNK_MS);
            let rows: Vec<RollupRow> = on!(tx.conn(), |c| sqlx::query_as(&format!(
                "SELECT {} FROM rollups WHERE host_id = $1 AND tier = 'minute' AND bucket >= $2 AND bucket < $3",
                rollup_columns(true)
            ))
            .bind(host_id)
            .bind(start)
            .bind(end)
            .fetch_all(c)
            .await)?;
            let mut buckets: BTreeMap<i64, Bucket> = BTreeMap::new();
            for r in &rows {
                buckets.entry(floor(r.bucket, HOUR_MS)).or_default().add_rollup(r)?;
            }
            for (start, b) in buckets {
                write_bucket(tx.conn(), host_id, Tier::Hour, start, b).await?;
                done.hour_buckets += 1;
            }
            set_progress(tx.conn(), host_id, Tier::Hour, end).await?;
            tx.commit().await?;
        }
    }

    /// Deletes a host's rows that are past retention and held by the tier above.
    async fn expire(&self, host_id: i64, now: i64, retention: &Retention, done: &mut Maintenance) -> Result<()> {
        let (minutes_rolled, hours_rolled) = self.progress(host_id).await?;
        // Raw snapshots: older than retention and in a rolled minute. Queued late ones
        // wait for their merge. Whole keyframe windows go together (the bound is the
        // start of one), so no kept snapshot loses a base.
        if let Some(rolled) = minutes_rolled {
            let hostname: String = on!(&self.pool, |c| sqlx::query_scalar("SELECT hostname FROM hosts WHERE id = $1")
                .bind(host_id)
                .fetch_one(c)
                .await)?;
            // A late row waiting for its merge keeps its whole window: the rows of its
            // chain are all in it.
            let late: Option<i64> = on!(&self.pool, |c| sqlx::query_scalar(
                "SELECT MIN(s.taken_at) FROM rollup_late l JOIN snapshots s ON s.id = l.snapshot_id \
                 WHERE s.host_id = $1",
            )
            .bind(host_id)
            .fetch_one(c)
            .await)?;
            let bound = rolled.min(now.saturating_sub(duration_ms(retention.raw))).min(late.unwrap_or(i64::MAX));
            let before = ingest::window_start(&hostname, bound);
            done.raw_deleted += self
                .delete_batched(
                    "DELETE FROM snapshots WHERE id IN (SELECT id FROM snapshots WHERE host_id = $1 AND taken_at < $2 \
                     ORDER BY taken_at LIMIT $3)",
                    host_id,
                    before,
                )
                .await?;
        }
        // Minute buckets: wholly older than retention and in a rolled hour.
        if let Some(rolled) = hours_rolled {
            let before = rolled.min(now.saturating_sub(duration_ms(retention.minute)).saturating_sub(MINUTE_MS) + 1);
            done.rollups_deleted += self
                .delete_batched(
                    "DELETE FROM rollups WHERE host_id = $1 AND tier = 'minute' AND bucket IN (SELECT bucket FROM rollups \
                     WHERE host_id = $1 AND tier = 'minute' AND bucket < $2 ORDER BY bucket LIMIT $3)",
                    host_id,
                    before,
                )
                .await?;
        }
        // Hour buckets: wholly older than retention.
        let before = now.saturating_sub(duration_ms(retention.hour)).saturating_sub(HOUR_MS) + 1;
        done.rollups_deleted += self
            .delete_batched(
                "DELETE FROM rollups WHERE host_id = $1 AND tier = 'hour' AND bucket IN (SELECT bucket FROM rollups \
                 WHERE host_id = $1 AND tier = 'hour' AND bucket < $2 ORDER BY bucket LIMIT $3)",
                host_id,
                before,
            )
            .await?;
        Ok(())
    }

    /// Runs a `DELETE` taking (host id, bound, batch size) until it deletes less than a
    /// batch; each batch is its own short transaction.
    async fn delete_batched(&self, sql: &str, host_id: i64, before: i64) -> Result<u64> {
        let mut total = 0;
        loop {
            let _turn = self.turn().await;
            let n = on!(&self.pool, |c| sqlx::query(sql)
                .bind(host_id)
                .bind(before)
                .bind(DELETE_BATCH)
                .execute(c)
                .await
                .map(|d| d.rows_affected()))?;
            total += n;
            if n < DELETE_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// A host's history for a chart, at the tier that fits the range.
    ///
    /// Without `from`: the newest `limit` snapshots up to `to` (default 100, at most
    /// 10,000). With `from`: raw snapshots if the range lies within raw retention and
    /// spans at most 6 hours, minute buckets if it lies within minute retention and spans
    /// at most 7 days, else hour buckets; the newest `limit` points (default and at most
    /// 10,000). `to` defaults to `now`; both ends are included (a bucket counts when it
    /// starts within the range or holds `from`). Buckets not rolled up yet are computed
    /// on the fly, so a chart reaches the present. Points are oldest first.
    pub async fn series(
        &self,
        host_id: i64,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        limit: Option<u32>,
        now: DateTime<Utc>,
        retention: &Retention,
    ) -> Result<Series> {
        let hostname: String = on!(&self.pool, |c| sqlx::query_scalar("SELECT hostname FROM hosts WHERE id = $1")
            .bind(host_id)
            .fetch_optional(c)
            .await)?
        .ok_or_else(|| StoreError::NotFound(format!("host {host_id}")))?;
        let to = to_ms(to.unwrap_or(now));
        let now = to_ms(now);
        let Some(from) = from.map(to_ms) else {
            let limit = limit.unwrap_or(DEFAULT_POINTS).clamp(1, MAX_POINTS);
            let points = self.raw_points(host_id, i64::MIN, to, limit).await?;
            return Ok(Series { hostname, tier: Tier::Raw, points });
        };
        let limit = limit.unwrap_or(MAX_POINTS).clamp(1, MAX_POINTS);
        let span = to.saturating_sub(from);
        let tier = if span <= RAW_SPAN_MS && from >= now.saturating_sub(duration_ms(retention.raw)) {
            Tier::Raw
        } else if span <= MINUTE_SPAN_MS && from >= now.saturating_sub(duration_ms(retention.minute)) {
            Tier::Minute
        } else {
            Tier::Hour
        };
        let points = match tier {
            Tier::Raw => self.raw_points(host_id, from, to, limit).await?,
            Tier::Minute | Tier::Hour => self.bucket_points(host_id, tier, from, to, limit).await?,
        };
        Ok(Series { hostname, tier, points })
    }

    /// The newest `limit` raw snapshots taken in `[from, to]`, oldest first.
    async fn raw_points(&self, host_id: i64, from: i64, to: i64, limit: u32) -> Result<Vec<SeriesPoint>> {
        let rows: Vec<RawRow> = on!(&self.pool, |c| sqlx::query_as(&format!(
            "SELECT {} FROM snapshots WHERE host_id = $1 AND taken_at >= $2 AND taken_at <= $3 \
             ORDER BY taken_at DESC, seq DESC LIMIT $4",
            raw_columns(false)
        ))
        .bind(host_id)
        .bind(from)
        .bind(to)
        .bind(i64::from(limit))
        .fetch_all(c)
        .await)?;
        Ok(rows.iter().rev().map(|r| r.agg().point(r.taken_at)).collect())
    }

    /// The newest `limit` buckets of a rollup tier in `[from, to]`, oldest first:
    /// stored buckets, then the ones not rolled yet, built from the tiers below.
    async fn bucket_points(
        &self,
        host_id: i64,
        tier: Tier,
        from: i64,
        to: i64,
        limit: u32,
    ) -> Result<Vec<SeriesPoint>> {
        let w = width(tier);
        let first = floor(from, w);
        let mut buckets: BTreeMap<i64, Agg> = BTreeMap::new();
        let stored: Vec<RollupRow> = on!(&self.pool, |c| sqlx::query_as(&format!(
            "SELECT {} FROM rollups WHERE host_id = $1 AND tier = $2 AND bucket >= $3 AND bucket <= $4 \
             ORDER BY bucket DESC LIMIT $5",
            rollup_columns(false)
        ))
        .bind(host_id)
        .bind(tier_name(tier))
        .bind(first)
        .bind(to)
        .bind(i64::from(limit))
        .fetch_all(c)
        .await)?;
        for r in &stored {
            buckets.entry(r.bucket).or_default().merge(&r.agg());
        }

        // The part not rolled into this tier yet.
        let (minutes_rolled, hours_rolled) = self.progress(host_id).await?;
        let raw_from = first.max(minutes_rolled.unwrap_or(i64::MIN));
        if tier == Tier::Hour
            && let Some(minutes_rolled) = minutes_rolled
        {
            let minute_from = first.max(hours_rolled.unwrap_or(i64::MIN));
            let rows: Vec<RollupRow> = on!(&self.pool, |c| sqlx::query_as(&format!(
                "SELECT {} FROM rollups WHERE host_id = $1 AND tier = 'minute' AND bucket >= $2 AND bucket < $3 \
                 AND bucket <= $4",
                rollup_columns(false)
            ))
            .bind(host_id)
            .bind(minute_from)
            .bind(minutes_rolled)
            .bind(to)
            .fetch_all(c)
            .await)?;
            for r in &rows {
                buckets.entry(floor(r.bucket, w)).or_default().merge(&r.agg());
            }
        }
        let rows: Vec<RawRow> = on!(&self.pool, |c| sqlx::query_as(&format!(
            "SELECT {} FROM snapshots WHERE host_id = $1 AND taken_at >= $2 AND taken_at <= $3",
            raw_columns(false)
        ))
        .bind(host_id)
        .bind(raw_from)
        .bind(to)
        .fetch_all(c)
        .await)?;
        for r in &rows {
            buckets.entry(floor(r.taken_at, w)).or_default().merge(&r.agg());
        }

        let skip = buckets.len().saturating_sub(limit as usize);
        Ok(buckets.iter().skip(skip).map(|(&start, agg)| agg.point(start)).collect())
    }

    /// The processes that peaked highest in `[from, to)`: the top `n` by CPU peak and
    /// the top `n` by memory peak (so up to `2n`), by CPU peak then memory peak, highest
    /// first, each with the time of its peaks.
    ///
    /// Each stretch of the range is read from the coarsest data that is exact for it:
    /// hour buckets wholly inside the range, then minute buckets wholly inside, then raw
    /// snapshots. Where the raw snapshots (or minute buckets) of an edge are gone, the
    /// bucket holding the edge counts whole, so the answer outlives raw data.
    pub async fn top_processes(
        &self,
        host_id: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        n: u32,
    ) -> Result<Vec<TopProcess>> {
        let (from, to) = (to_ms(from), to_ms(to));
        if from >= to || n == 0 {
            return Ok(Vec::new());
        }
        let mut peaks = Peaks::default();
        let raw_min: Option<i64> =
            on!(&self.pool, |c| sqlx::query_scalar("SELECT MIN(taken_at) FROM snapshots WHERE host_id = $1")
                .bind(host_id)
                .fetch_one(c)
                .await)?;
        let minute_min: Option<i64> = on!(&self.pool, |c| sqlx::query_scalar(
            "SELECT MIN(bucket) FROM rollups WHERE host_id = $1 AND tier = 'minute'"
        )
        .bind(host_id)
        .fetch_one(c)
        .await)?;
        let (raw_min, minute_min) = (raw_min.unwrap_or(i64::MAX), minute_min.unwrap_or(i64::MAX));
        let inside = |start: i64, w: i64| start >= from && start + w <= to;

        let mut gaps = vec![(from, to)];
        for (tier, finer_min) in [(Tier::Hour, minute_min), (Tier::Minute, raw_min)] {
            let w = width(tier);
            let mut used = Vec::new();
            for &(a, b) in &gaps {
                let rows: Vec<(i64, String)> = on!(&self.pool, |c| {
                    sqlx::query_as(
                    "SELECT bucket, top_json FROM rollups WHERE host_id = $1 AND tier = $2 AND bucket > $3 AND bucket < $4 \
                     ORDER BY bucket",
                )
                .bind(host_id)
                .bind(tier_name(tier))
                .bind(a - w)
                .bind(b)
                .fetch_all(c).await
                })?;
                for (start, json) in rows {
                    if inside(start, w) || start < finer_min {
                        peaks.add_json(&json, start)?;
                        used.push(start);
                    }
                }
            }
            gaps = subtract(&gaps, &used, w);
        }
        let mut conn = self.pool.acquire().await?;
        for (a, b) in gaps {
            let mut rows: Vec<RawRow> = on!(conn.conn(), |c| sqlx::query_as(&format!(
                "SELECT {} FROM snapshots WHERE host_id = $1 AND taken_at >= $2 AND taken_at < $3",
                raw_columns(true)
            ))
            .bind(host_id)
            .bind(a)
            .bind(b)
            .fetch_all(c)
            .await)?;
            fill_tops(conn.conn(), &mut rows).await?;
            for r in rows {
                peaks.add_json(&r.top_json, r.taken_at)?;
            }
        }
        Ok(peaks
            .top(n as usize)
            .into_iter()
            .map(|p| TopProcess {
                name: p.name,
                pid: p.pid,
                cmd: p.cmd,
                cpu_max_percent: p.cpu_percent,
                rss_max_bytes: p.rss_bytes.map(to_i64),
                cpu_peak_at: p.cpu_peak_at.map(from_ms),
                rss_peak_at: p.rss_peak_at.map(from_ms),
            })
            .collect())
    }
}
