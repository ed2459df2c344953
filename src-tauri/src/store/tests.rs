//! Tests of the store against a real SQLite file in a temporary directory and against a
//! real PostgreSQL (each test runs on both; see `both!`), with snapshots cloned from one
//! real sample of this machine.

use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::db::on;
use super::*;
use crate::model::api::{AuditAction, KeyScope, Role, SeriesPoint, SnapshotSummary, Tier, TopProcess};
use crate::model::{InterfaceCounters, ProcessAction, ProcessSample, Snapshot};
use crate::sample::Sampler;

/// One real snapshot, taken once for all tests (sampling waits for CPU figures).
fn base() -> &'static Snapshot {
    static BASE: OnceLock<Snapshot> = OnceLock::new();
    BASE.get_or_init(|| Sampler::new(Default::default()).sample())
}

fn snap(hostname: &str, seq: u64, taken_at: DateTime<Utc>, cpu: f32) -> Snapshot {
    let mut s = base().clone();
    s.host.hostname = hostname.to_owned();
    s.seq = seq;
    s.taken_at = taken_at;
    s.cpu.total_percent = cpu;
    s
}

/// A process to add to a snapshot.
fn process(name: &str, pid: u32, cpu: f32, rss: u64) -> ProcessSample {
    let mut p = base().processes.first().cloned().expect("the machine has processes");
    p.name = name.to_owned();
    p.pid = pid;
    p.cmd = format!("{name} --work");
    p.cpu_percent = Some(cpu);
    p.rss_bytes = Some(rss);
    p
}

/// Where a test's store is: a SQLite file in a temporary directory, or a new database
/// in a throwaway PostgreSQL (see `test_postgres`).
struct Place {
    db: Database,
    _dir: tempfile::TempDir,
}

impl Place {
    fn sqlite() -> Place {
        let dir = tempfile::tempdir().unwrap();
        Place { db: Database::Sqlite(dir.path().join("procyon.db")), _dir: dir }
    }

    /// `None` (the test is skipped, with a message) when PostgreSQL is not installed.
    fn postgres() -> Option<Place> {
        let url = super::test_postgres::database()?;
        Some(Place { db: Database::from_url(&url).unwrap(), _dir: tempfile::tempdir().unwrap() })
    }

    async fn open(&self) -> Store {
        self.open_with(ReadLimits::default()).await
    }

    async fn open_with(&self, limits: ReadLimits) -> Store {
        Store::connect(&self.db, limits).await.expect("open store")
    }
}

/// Runs the test `$test(place: Place)` twice: on SQLite (`$test::sqlite`) and on
/// PostgreSQL (`$test::postgres`).
macro_rules! both {
    ($test:ident $(, $($flavor:tt)*)?) => {
        mod $test {
            #[tokio::test$(($($flavor)*))?]
            async fn sqlite() {
                super::$test(super::Place::sqlite()).await
            }

            #[tokio::test$(($($flavor)*))?]
            async fn postgres() {
                if let Some(place) = super::Place::postgres() {
                    super::$test(place).await
                }
            }
        }
    };
}

fn page(limit: u32, offset: u32) -> Page {
    Page { limit, offset }
}

fn secs(s: i64) -> TimeDelta {
    TimeDelta::seconds(s)
}

/// Now, at the store's millisecond precision.
fn now() -> DateTime<Utc> {
    from_ms(to_ms(Utc::now()))
}

both!(duplicate_upload_is_stored_once_and_hosts_are_upserted);
async fn duplicate_upload_is_stored_once_and_hosts_are_upserted(place: Place) {
    let store = place.open().await;
    let t = now() - secs(60);

    let first = store.insert_snapshot(&snap("alpha", 1, t, 10.0), t).await.unwrap();
    assert!(!first.duplicate);
    let again = store.insert_snapshot(&snap("alpha", 1, t + secs(5), 99.0), t + secs(5)).await.unwrap();
    assert_eq!(again, Inserted { duplicate: true, ..first });
    assert_eq!(store.count(Some(first.host_id)).await.unwrap(), 1);
    // The duplicate changed nothing, the host's times included.
    let host = store.host("alpha").await.unwrap().unwrap();
    assert_eq!((host.first_seen, host.last_seen), (t, t));
    assert_eq!(store.snapshot(first.id).await.unwrap().unwrap().snapshot.cpu.total_percent, 10.0);

    store.insert_snapshot(&snap("alpha", 2, t + secs(1), 20.0), t + secs(10)).await.unwrap();
    let beta = store.insert_snapshot(&snap("beta", 7, t, 30.0), t).await.unwrap();
    assert_ne!(beta.host_id, first.host_id);

    let by_name = store.host("alpha").await.unwrap().unwrap();
    let by_id = store.host(&first.host_id.to_string()).await.unwrap().unwrap();
    assert_eq!(by_name, by_id);
    assert_eq!(by_name.id, first.host_id);
    assert_eq!(by_name.snapshot_count, 2);
    assert_eq!((by_name.first_seen, by_name.last_seen), (t, t + secs(10)));
    assert_eq!(by_name.info.as_ref().map(|i| i.hostname.as_str()), Some("alpha"));
    assert!(!by_name.online && !by_name.local);
    assert_eq!(store.host("gamma").await.unwrap(), None);
    assert_eq!(store.host("12345").await.unwrap(), None);

    let hosts = store.hosts().await.unwrap();
    let names: Vec<_> = hosts.iter().map(|h| (h.hostname.as_str(), h.snapshot_count)).collect();
    assert_eq!(names, [("alpha", 2), ("beta", 1)]);
    assert_eq!(store.count(None).await.unwrap(), 3);

    assert_eq!(store.next_seq("alpha").await.unwrap(), 3);
    assert_eq!(store.next_seq("beta").await.unwrap(), 8);
    assert_eq!(store.next_seq("gamma").await.unwrap(), 1);
}

both!(host_info_follows_the_newest_snapshot);
async fn host_info_follows_the_newest_snapshot(place: Place) {
    let store = place.open().await;
    let t = now() - secs(600);
    let mut newer = snap("alpha", 2, t, 1.0);
    newer.host.os = "Newer OS".into();
    let mut older = snap("alpha", 1, t - secs(60), 1.0);
    older.host.os = "Older OS".into();
    store.insert_snapshot(&newer, t).await.unwrap();
    // A spool catching up delivers the older one later.
    store.insert_snapshot(&older, t + secs(1)).await.unwrap();
    let host = store.host("alpha").await.unwrap().unwrap();
    assert_eq!(host.info.unwrap().os, "Newer OS");
    assert_eq!(host.last_seen, t + secs(1));
    assert_eq!(store.latest(host.id).await.unwrap().unwrap().snapshot.seq, 2);
}

both!(labels_of_each_source_are_replaced_whole_and_merged_per_key);
async fn labels_of_each_source_are_replaced_whole_and_merged_per_key(place: Place) {
    use crate::model::labels::Labels;
    use crate::store::LabelSource;
    let store = place.open().await;
    let t = now() - secs(60);
    store.insert_snapshot(&snap("alpha", 1, t, 1.0), t).await.unwrap();
    store.insert_snapshot(&snap("beta", 1, t, 1.0), t).await.unwrap();
    let labels = |pairs: &[(&str, &str)]| -> Labels { pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect() };
    // Agent labels may arrive before the host's first snapshot (keyed by name).
    assert!(store.set_labels("alpha", LabelSource::Agent, &labels(&[("env", "dev"), ("role", "db")])).await.unwrap());
    assert!(!store.set_labels("alpha", LabelSource::Agent, &labels(&[("role", "db"), ("env", "dev")])).await.unwrap());
    assert!(store.set_labels("alpha", LabelSource::Admin, &labels(&[("env", "prod")])).await.unwrap());
    let alpha = store.host("alpha").await.unwrap().unwrap();
    assert_eq!(alpha.labels, labels(&[("env", "prod"), ("role", "db")]));
    assert_eq!(alpha.admin_labels, labels(&[("env", "prod")]));
    // A new set from the agent replaces its old one whole; the admin's stays on top.
    store.set_labels("alpha", LabelSource::Agent, &labels(&[("rack", "r1")])).await.unwrap();
    let hosts = store.hosts().await.unwrap();
    let alpha = hosts.iter().find(|h| h.hostname == "alpha").unwrap();
    assert_eq!(alpha.labels, labels(&[("env", "prod"), ("rack", "r1")]));
    assert!(hosts.iter().find(|h| h.hostname == "beta").unwrap().labels.is_empty());
    // Deleting the host deletes its labels.
    assert!(store.delete_host("alpha").await.unwrap());
    store.insert_snapshot(&snap("alpha", 2, t, 1.0), t).await.unwrap();
    assert!(store.host("alpha").await.unwrap().unwrap().labels.is_empty());
}

both!(lists_page_newest_first_and_latest_is_per_host);
async fn lists_page_newest_first_and_latest_is_per_host(place: Place) {
    let store = place.open().await;
    let t0 = now() - secs(3600);
    let mut alpha = 0;
    for seq in 1..=5 {
        alpha = store
            .insert_snapshot(&snap("alpha", seq, t0 + secs(seq as i64 * 10), seq as f32), t0)
            .await
            .unwrap()
            .host_id;
    }
    let mut beta = 0;
    for seq in 1..=2 {
        beta =
            store.insert_snapshot(&snap("beta", seq, t0 + secs(seq as i64 * 10 + 5), 50.0), t0).await.unwrap().host_id;
    }

    let seqs = |list: Vec<SnapshotSummary>| list.iter().map(|s| (s.hostname.clone(), s.seq)).collect::<Vec<_>>();
    let a = |seq: i64| ("alpha".to_owned(), seq);
    let b = |seq: i64| ("beta".to_owned(), seq);
    assert_eq!(seqs(store.list(Some(alpha), page(2, 0)).await.unwrap()), [a(5), a(4)]);
    assert_eq!(seqs(store.list(Some(alpha), page(2, 2)).await.unwrap()), [a(3), a(2)]);
    assert_eq!(seqs(store.list(Some(alpha), page(2, 4)).await.unwrap()), [a(1)]);
    assert_eq!(seqs(store.list(None, page(4, 0)).await.unwrap()), [a(5), a(4), a(3), b(2)]);
    assert_eq!(store.list(None, page(u32::MAX, 0)).await.unwrap().len(), 7);

    let summary = &store.list(Some(alpha), page(1, 0)).await.unwrap()[0];
    let original = snap("alpha", 5, t0 + secs(50), 5.0);
    assert_eq!(summary.timestamp, original.taken_at);
    assert_eq!(summary.cpu_percent, 5.0);
    assert_eq!(summary.memory_used_bytes, original.memory.used_bytes as i64);
    assert_eq!(summary.process_count as usize, original.processes.len());
    assert_eq!(summary.connection_count as usize, original.connections.len());

    assert_eq!(store.count(Some(alpha)).await.unwrap(), 5);
    assert_eq!(store.count(Some(beta)).await.unwrap(), 2);
    assert_eq!(store.count(Some(-1)).await.unwrap(), 0);

    let latest: Vec<_> = store
        .latest_per_host()
        .await
        .unwrap()
        .iter()
        .map(|s| (s.snapshot.host.hostname.clone(), s.snapshot.seq))
        .collect();
    assert_eq!(latest, [("alpha".to_owned(), 5), ("beta".to_owned(), 2)]);
    assert_eq!(store.latest(beta).await.unwrap().unwrap().snapshot.seq, 2);
    assert_eq!(store.latest(-1).await.unwrap(), None);
}

both!(snapshots_round_trip_and_ranges_are_oldest_first);
async fn snapshots_round_trip_and_ranges_are_oldest_first(place: Place) {
    let store = place.open().await;
    let t0 = now() - secs(600);
    let mut ids = Vec::new();
    for seq in 1..=4u64 {
        let original = snap("alpha", seq, t0 + secs(seq as i64), seq as f32);
        let inserted = store.insert_snapshot(&original, t0 + secs(100)).await.unwrap();
        let stored = store.snapshot(inserted.id).await.unwrap().unwrap();
        assert_eq!(stored.snapshot, original);
        assert_eq!((stored.id, stored.host_id, stored.received_at), (inserted.id, inserted.host_id, t0 + secs(100)));
        ids.push((inserted.host_id, inserted.id));
    }
    assert_eq!(store.snapshot(-5).await.unwrap(), None);
    let host = ids[0].0;
    let range = store.range(host, t0 + secs(2), t0 + secs(4), 100).await.unwrap();
    assert_eq!(range.iter().map(|s| s.snapshot.seq).collect::<Vec<_>>(), [2, 3, 4]);
    let range = store.range(host, t0, t0 + secs(4), 2).await.unwrap();
    assert_eq!(range.iter().map(|s| s.snapshot.seq).collect::<Vec<_>>(), [1, 2]);
    // The same rows by id and time, nothing decoded.
    let times = store.snapshot_times(host, t0 + secs(2), t0 + secs(4), 100).await.unwrap();
    assert_eq!(
        times,
        ids[1..].iter().enumerate().map(|(i, &(_, id))| (id, t0 + secs(i as i64 + 2))).collect::<Vec<_>>()
    );
    assert_eq!(store.snapshot_times(host, t0, t0 + secs(4), 1).await.unwrap(), [(ids[0].1, t0 + secs(1))]);
    assert!(store.snapshot_times(host + 1000, t0, t0 + secs(4), 10).await.unwrap().is_empty());
}

both!(series_uses_raw_points_and_picks_the_tier_by_range);
async fn series_uses_raw_points_and_picks_the_tier_by_range(place: Place) {
    let store = place.open().await;
    let now = now();
    let t0 = now - secs(300);
    let mut host = 0;
    for i in 0..20u64 {
        host = store
            .insert_snapshot(&snap("alpha", i + 1, t0 + secs(i as i64 * 10), i as f32), now)
            .await
            .unwrap()
            .host_id;
    }
    let retention = Retention::default();

    let last = store.series(host, None, None, Some(5), now, &retention).await.unwrap();
    assert_eq!((last.hostname.as_str(), last.tier), ("alpha", Tier::Raw));
    let cpus: Vec<f32> = last.points.iter().map(|p| p.cpu_percent).collect();
    assert_eq!(cpus, [15.0, 16.0, 17.0, 18.0, 19.0]);
    assert!(last.points.iter().all(|p| p.samples == 1 && p.cpu_max_percent == p.cpu_percent));
    assert_eq!(last.points[0].timestamp, t0 + secs(150));
    assert_eq!(store.series(host, None, None, None, now, &retention).await.unwrap().points.len(), 20);

    let hour = store.series(host, Some(now - secs(3600)), None, Some(3), now, &retention).await.unwrap();
    assert_eq!(hour.tier, Tier::Raw);
    assert_eq!(hour.points.iter().map(|p| p.cpu_percent).collect::<Vec<_>>(), [17.0, 18.0, 19.0]);

    // Nothing is rolled up yet: minute and hour points are computed from raw rows.
    let two_days = store.series(host, Some(now - secs(2 * 86400)), None, None, now, &retention).await.unwrap();
    assert_eq!(two_days.tier, Tier::Minute);
    assert_eq!(two_days.points.iter().map(|p| p.samples).sum::<u32>(), 20);
    let month = store.series(host, Some(now - secs(30 * 86400)), Some(now), None, now, &retention).await.unwrap();
    assert_eq!(month.tier, Tier::Hour);
    assert_eq!(month.points.iter().map(|p| p.samples).sum::<u32>(), 20);
    let max = month.points.iter().map(|p| p.cpu_max_percent).fold(0.0, f32::max);
    assert_eq!(max, 19.0);

    // A short range that reaches past raw retention is served from minutes.
    let old = store.series(host, Some(now - secs(30 * 3600)), Some(now - secs(28 * 3600)), None, now, &retention);
    assert_eq!(old.await.unwrap().tier, Tier::Minute);

    assert!(matches!(store.series(-1, None, None, None, now, &retention).await, Err(StoreError::NotFound(_))));
}

both!(figures_a_snapshot_did_not_give_stay_unknown_in_series_and_tops);
both!(the_host_in_depth_survives_the_store_and_its_rollups);

/// Filesystems, disks, sensors and batteries come back from the store as they went in
/// (whole rows and rows stored as deltas), and the series carry disk I/O and the hottest
/// temperature through raw rows, minute and hour buckets; snapshots without them stay
/// unknown, not zero.
async fn the_host_in_depth_survives_the_store_and_its_rollups(place: Place) {
    use crate::model::{BatterySample, DiskSample, FanSample, TemperatureSample};
    let store = place.open().await;
    let now = now();
    let t0 = from_ms(floor_ms(to_ms(now - secs(3 * 3600)), 3_600_000));
    let disk = |name: &str, read: f64| DiskSample {
        name: name.into(),
        read_bytes_per_sec: read,
        write_bytes_per_sec: 2.0 * read,
        reads_per_sec: 1.0,
        writes_per_sec: 2.0,
        busy_percent: 5.0,
    };
    let sensor = |celsius: f64| TemperatureSample {
        name: "coretemp Package id 0".into(),
        celsius,
        high_celsius: Some(84.0),
        critical_celsius: None,
    };
    let mut ids = Vec::new();
    let mut host = 0;
    // Two snapshots a minute for an hour; every other one measured nothing in depth.
    for i in 0..120i64 {
        let mut s = snap("deep", i as u64 + 1, t0 + secs(i * 30), 10.0);
        assert!(s.filesystems.is_some(), "the sampler reads this machine's filesystems");
        if i % 2 == 0 {
            // dm-0 sits on sda: left out of the sum.
            s.disks = Some(vec![disk("sda", 1000.0 * (i + 1) as f64), disk("dm-0", 7.0)]);
            s.temperatures = Some(vec![sensor(if i == 0 { -5.0 } else { 40.0 + i as f64 / 2.0 }), sensor(-10.0)]);
            s.fans = Some(vec![FanSample { name: "nct6775 fan1".into(), rpm: 1200.0 }]);
            s.batteries = Some(vec![BatterySample {
                name: "BAT0".into(),
                percent: Some(87.0),
                status: "discharging".into(),
                power_watts: Some(9.5),
            }]);
        } else {
            (s.filesystems, s.disks, s.temperatures, s.fans, s.batteries) = (None, None, None, None, None);
        }
        let inserted = store.insert_snapshot(&s, now).await.unwrap();
        host = inserted.host_id;
        ids.push((inserted.id, s));
    }
    for (id, sent) in &ids[..4] {
        let stored = store.snapshot(*id).await.unwrap().unwrap().snapshot;
        assert_eq!(
            (&stored.filesystems, &stored.disks, &stored.temperatures, &stored.fans, &stored.batteries),
            (&sent.filesystems, &sent.disks, &sent.temperatures, &sent.fans, &sent.batteries),
        );
    }
    let retention = Retention {
        raw: Duration::from_secs(3600),
        minute: Duration::from_secs(7 * 86400),
        hour: Duration::from_secs(90 * 86400),
    };
    let raw = store.series(host, None, None, Some(2), now, &retention).await.unwrap();
    let newest = &raw.points[1];
    assert_eq!((newest.disk_read_bytes_per_sec, newest.temperature_celsius), (None, None), "not measured");
    let measured = &raw.points[0];
    assert_eq!(measured.disk_read_bytes_per_sec, Some(119_000.0));
    assert_eq!(measured.disk_write_bytes_per_sec, Some(238_000.0));
    assert_eq!(measured.temperature_celsius, Some(40.0 + 59.0));
    // Minute k holds snapshot 2k (measured) and 2k + 1 (not).
    let check = |points: &[SeriesPoint]| {
        assert_eq!(points.len(), 60);
        for (k, p) in points.iter().enumerate() {
            let read = 1000.0 * (2 * k + 1) as f64;
            let hot = if k == 0 { -5.0 } else { 40.0 + k as f64 };
            assert_eq!((p.disk_read_bytes_per_sec, p.disk_read_max_bytes_per_sec), (Some(read), Some(read)), "{k}");
            assert_eq!(p.disk_write_max_bytes_per_sec, Some(2.0 * read));
            assert_eq!((p.temperature_celsius, p.temperature_max_celsius), (Some(hot), Some(hot)), "minute {k}");
        }
    };
    let range = (Some(now - secs(86400)), None);
    check(&store.series(host, range.0, range.1, None, now, &retention).await.unwrap().points);
    let done = store.maintain(now, &retention).await.unwrap();
    assert!(done.raw_deleted >= 120, "{done:?}");
    check(&store.series(host, range.0, range.1, None, now, &retention).await.unwrap().points);
    let hours = store.series(host, Some(now - secs(30 * 86400)), None, None, now, &retention).await.unwrap();
    assert_eq!(hours.tier, Tier::Hour);
    let p = &hours.points[0];
    let reads: f64 = (0..60).map(|k| 1000.0 * (2 * k + 1) as f64).sum();
    assert_eq!(p.disk_read_bytes_per_sec, Some(reads / 60.0));
    assert_eq!(p.disk_read_max_bytes_per_sec, Some(119_000.0));
    // A bucket whose first sample was below zero still peaks at its hottest.
    assert_eq!(p.temperature_max_celsius, Some(99.0));
}
/// What a snapshot did not give (a short upload: no network figures, processes without
/// CPU or memory) stays unknown in series and top lists, raw and rolled up, instead of
/// counting as zeros.
async fn figures_a_snapshot_did_not_give_stay_unknown_in_series_and_tops(place: Place) {
    let store = place.open().await;
    let now = now();
    let t0 = from_ms(floor_ms(to_ms(now - secs(3 * 3600)), 3_600_000));
    let known = process("known", 4_000_001, 5.0, 1 << 20);
    let mut mystery = process("mystery", 4_000_002, 0.0, 0);
    (mystery.cpu_percent, mystery.rss_bytes) = (None, None);
    let mut mixed = 0;
    let mut blind = 0;
    // Two snapshots a minute for an hour; every other one of "mixed" has network rates.
    for i in 0..120i64 {
        let at = t0 + secs(i * 30);
        let mut s = snap("mixed", i as u64 + 1, at, 10.0);
        s.processes = vec![known.clone(), mystery.clone()];
        s.network.total = (i % 2 == 0).then(|| InterfaceCounters {
            sent_bytes_per_sec: 1000.0 * (i + 1) as f64,
            received_bytes_per_sec: 10.0,
            ..Default::default()
        });
        mixed = store.insert_snapshot(&s, now).await.unwrap().host_id;
        let mut s = snap("blind", i as u64 + 1, at, 10.0);
        s.network.total = None;
        blind = store.insert_snapshot(&s, now).await.unwrap().host_id;
    }
    let retention = Retention {
        raw: Duration::from_secs(3600),
        minute: Duration::from_secs(7 * 86400),
        hour: Duration::from_secs(90 * 86400),
    };
    let range = (Some(now - secs(86400)), None);

    // Raw points: the rates of a snapshot without them are null.
    let raw = store.series(mixed, None, None, Some(2), now, &retention).await.unwrap();
    assert_eq!(raw.points[0].sent_bytes_per_sec, Some(119_000.0));
    assert_eq!((raw.points[1].sent_bytes_per_sec, raw.points[1].sent_max_bytes_per_sec), (None, None));

    // Minute points average over the snapshots that knew: minute k holds snapshots 2k
    // (known, sent 1000 * (2k + 1)) and 2k + 1 (unknown).
    let check = |points: &[SeriesPoint]| {
        assert_eq!(points.len(), 60);
        for (k, p) in points.iter().enumerate() {
            let sent = 1000.0 * (2 * k + 1) as f64;
            assert_eq!(p.samples, 2);
            assert_eq!((p.sent_bytes_per_sec, p.sent_max_bytes_per_sec), (Some(sent), Some(sent)), "minute {k}");
            assert_eq!(p.received_bytes_per_sec, Some(10.0));
        }
    };
    let before = store.series(mixed, range.0, range.1, None, now, &retention).await.unwrap();
    assert_eq!(before.tier, Tier::Minute);
    check(&before.points);
    let none = store.series(blind, range.0, range.1, None, now, &retention).await.unwrap();
    assert!(none.points.iter().all(|p| p.sent_bytes_per_sec.is_none() && p.received_max_bytes_per_sec.is_none()));
    let top = store.top_processes(mixed, t0, now, 5).await.unwrap();
    let names: Vec<(&str, Option<f32>, Option<i64>)> =
        top.iter().map(|p| (p.name.as_str(), p.cpu_max_percent, p.rss_max_bytes)).collect();
    assert_eq!(names, [("known", Some(5.0), Some(1 << 20)), ("mystery", None, None)]);
    assert_eq!((top[1].cpu_peak_at, top[1].rss_peak_at), (None, None));

    // The same once rolled up and the raw rows are gone, minutes and hours.
    let done = store.maintain(now, &retention).await.unwrap();
    assert!(done.raw_deleted >= 240, "{done:?}");
    check(&store.series(mixed, range.0, range.1, None, now, &retention).await.unwrap().points);
    let none = store.series(blind, range.0, range.1, None, now, &retention).await.unwrap();
    assert_eq!(none.points.len(), 60);
    assert!(none.points.iter().all(|p| p.sent_bytes_per_sec.is_none() && p.received_max_bytes_per_sec.is_none()));
    let hours = store.series(mixed, Some(now - secs(30 * 86400)), None, None, now, &retention).await.unwrap();
    assert_eq!(hours.tier, Tier::Hour);
    let sum: f64 = (0..60).map(|k| 1000.0 * (2 * k + 1) as f64).sum();
    assert_eq!(hours.points.iter().map(|p| p.samples).collect::<Vec<_>>(), [120]);
    assert_eq!(hours.points[0].sent_bytes_per_sec, Some(sum / 60.0));
    assert_eq!(hours.points[0].sent_max_bytes_per_sec, Some(119_000.0));
    let top = store.top_processes(mixed, t0, now, 5).await.unwrap();
    assert_eq!(
        top.iter().map(|p| (p.name.as_str(), p.cpu_max_percent)).collect::<Vec<_>>(),
        [("known", Some(5.0)), ("mystery", None)]
    );
}

/// Spacing of the synthetic history in [`maintain_rolls_up_expires_and_keeps_answering`].
const STEP: i64 = 30;

both!(maintain_rolls_up_expires_and_keeps_answering);
async fn maintain_rolls_up_expires_and_keeps_answering(place: Place) {
    let store = place.open().await;
    let now = now();
    // Three hours of history, starting on an hour, ending two hours before now.
    let t0 = from_ms((to_ms(now) / 3_600_000 - 5) * 3_600_000);
    let spike_at = t0 + secs(4020);
    let hog_at = t0 + secs(8010);
    let mut host = 0;
    let count = 3 * 3600 / STEP;
    for i in 0..count {
        let at = t0 + secs(i * STEP);
        let mut s = snap("alpha", i as u64 + 1, at, (i % 10) as f32 * 10.0);
        s.processes.push(process("spiker", 4_000_000, if at == spike_at { 390.0 } else { 0.1 }, 1 << 20));
        s.processes.push(process("hog", 4_000_001, 0.2, if at == hog_at { 64 << 30 } else { 1 << 20 }));
        host = store.insert_snapshot(&s, at).await.unwrap().host_id;
    }
    let retention = Retention {
        raw: Duration::from_secs(2 * 3600),
        minute: Duration::from_secs(7 * 86400),
        hour: Duration::from_secs(90 * 86400),
    };
    let spiker = |top: &[TopProcess]| top.iter().find(|p| p.name == "spiker").cloned().expect("spiker is in the top");

    // Before maintenance everything comes from raw rows.
    let top = store.top_processes(host, t0, t0 + secs(3 * 3600), 5).await.unwrap();
    assert_eq!(top[0].name, "spiker");
    assert_eq!((top[0].cpu_max_percent, top[0].cpu_peak_at), (Some(390.0), Some(spike_at)));
    let hog = top.iter().find(|p| p.name == "hog").expect("the memory hog is in the top");
    assert_eq!((hog.rss_max_bytes, hog.rss_peak_at), (Some(64 << 30), Some(hog_at)));
    let minutes_before = store.series(host, Some(now - secs(86400)), None, None, now, &retention).await.unwrap();
    let hours_before = store.series(host, Some(now - secs(30 * 86400)), None, None, now, &retention).await.unwrap();

    let done = store.maintain(now, &retention).await.unwrap();
    assert_eq!(
        done,
        Maintenance { minute_buckets: 180, hour_buckets: 3, raw_deleted: count as u64, ..Default::default() }
    );
    assert_eq!(store.count(Some(host)).await.unwrap(), 0);
    assert_eq!(store.latest(host).await.unwrap(), None);
    assert_eq!(store.maintain(now, &retention).await.unwrap(), Maintenance::default());
    if let Db::Sqlite(pool) = &store.pool {
        let free: i64 = sqlx::query_scalar("PRAGMA freelist_count").fetch_one(pool).await.unwrap();
        assert_eq!(free, 0, "incremental_vacuum returned the freed pages");
    }

    // The series are the same from rollups as they were from raw rows.
    let minutes = store.series(host, Some(now - secs(86400)), None, None, now, &retention).await.unwrap();
    assert_eq!(minutes.tier, Tier::Minute);
    assert_eq!(minutes.points.len(), 180);
    assert_eq!(minutes.points[0].timestamp, t0);
    assert!(minutes.points.iter().all(|p| p.samples == 2));
    // Minute k holds snapshots 2k and 2k+1: CPU (2k % 10) * 10 and (2k+1 % 10) * 10.
    assert_eq!((minutes.points[1].cpu_percent, minutes.points[1].cpu_max_percent), (25.0, 30.0));
    assert_same_points(&minutes.points, &minutes_before.points);
    let hours = store.series(host, Some(now - secs(30 * 86400)), None, None, now, &retention).await.unwrap();
    assert_eq!(hours.tier, Tier::Hour);
    assert_eq!(
        hours.points.iter().map(|p| (p.timestamp, p.samples)).collect::<Vec<_>>(),
        [(t0, 120), (t0 + secs(3600), 120), (t0 + secs(7200), 120)]
    );
    assert!((hours.points[0].cpu_percent - 45.0).abs() < 1e-3);
    assert_eq!(hours.points[0].cpu_max_percent, 90.0);
    assert_same_points(&hours.points, &hours_before.points);
    let limited = store.series(host, Some(now - secs(86400)), None, Some(10), now, &retention).await.unwrap();
    assert_eq!(limited.points[..], minutes.points[170..]);

    // Top processes outlive the raw rows: from hour buckets, from minute buckets, and
    // from the bucket that holds an edge of the range.
    let top = store.top_processes(host, t0, t0 + secs(3 * 3600), 5).await.unwrap();
    assert_eq!(top[0].name, "spiker");
    assert_eq!(
        (top[0].cpu_max_percent, top[0].cpu_peak_at, top[0].cmd.as_str()),
        (Some(390.0), Some(spike_at), "spiker --work")
    );
    let hog = top.iter().find(|p| p.name == "hog").expect("the memory hog is in the top");
    assert_eq!((hog.rss_max_bytes, hog.rss_peak_at), (Some(64 << 30), Some(hog_at)));
    let around = store.top_processes(host, spike_at - secs(100), spike_at + secs(70), 3).await.unwrap();
    assert_eq!((spiker(&around).cpu_max_percent, spiker(&around).cpu_peak_at), (Some(390.0), Some(spike_at)));
    let elsewhere = store.top_processes(host, t0 + secs(7200), t0 + secs(7800), 3).await.unwrap();
    assert!(elsewhere.iter().all(|p| p.name != "spiker" || p.cpu_max_percent < Some(1.0)));

    // A snapshot that arrives after its minute was rolled is merged by the next run.
    let late_at = spike_at + secs(15);
    let mut late = snap("alpha", 100_000, late_at, 100.0);
    late.processes.push(process("spiker", 4_000_000, 395.0, 1 << 20));
    store.insert_snapshot(&late, now).await.unwrap();
    let done = store.maintain(now, &retention).await.unwrap();
    assert_eq!(done, Maintenance { minute_buckets: 1, hour_buckets: 1, raw_deleted: 1, ..Default::default() });
    assert_eq!(store.maintain(now, &retention).await.unwrap(), Maintenance::default());
    let minutes = store.series(host, Some(now - secs(86400)), None, None, now, &retention).await.unwrap();
    let merged = minutes.points.iter().find(|p| p.timestamp == t0 + secs(4020)).unwrap();
    assert_eq!((merged.samples, merged.cpu_max_percent), (3, 100.0));
    let hours = store.series(host, Some(now - secs(30 * 86400)), None, None, now, &retention).await.unwrap();
    assert_eq!(hours.points[1].samples, 121);
    let top = store.top_processes(host, t0, t0 + secs(3 * 3600), 5).await.unwrap();
    assert_eq!((top[0].cpu_max_percent, top[0].cpu_peak_at), (Some(395.0), Some(late_at)));

    // Minute rollups go after their retention, hour rollups after theirs.
    let later = now + TimeDelta::days(8);
    let done = store.maintain(later, &retention).await.unwrap();
    assert_eq!(done, Maintenance { rollups_deleted: 180, ..Default::default() });
    let top = store.top_processes(host, spike_at - secs(100), spike_at + secs(70), 3).await.unwrap();
    assert_eq!(spiker(&top).cpu_peak_at, Some(late_at), "the hour bucket answers once minutes are gone");
    let done = store.maintain(now + TimeDelta::days(91), &retention).await.unwrap();
    assert_eq!(done, Maintenance { rollups_deleted: 3, ..Default::default() });
    assert!(store.top_processes(host, t0, t0 + secs(3 * 3600), 5).await.unwrap().is_empty());
}

fn assert_same_points(a: &[SeriesPoint], b: &[SeriesPoint]) {
    assert_eq!(a.len(), b.len());
    for (a, b) in a.iter().zip(b) {
        assert_eq!(
            (a.timestamp, a.samples, a.cpu_max_percent, a.memory_max_bytes),
            (b.timestamp, b.samples, b.cpu_max_percent, b.memory_max_bytes)
        );
        assert!((a.cpu_percent - b.cpu_percent).abs() < 1e-3);
        assert!((a.memory_used_bytes - b.memory_used_bytes).abs() <= 1);
    }
}

both!(keys_keep_their_scope_and_upload_by_default);
async fn keys_keep_their_scope_and_upload_by_default(place: Place) {
    let store = place.open().await;
    let agent = store.create_api_key("agent", "pk_ab12", "hash-agent", None).await.unwrap();
    let prom = store.create_scoped_api_key("prom", "pk_pr01", "hash-prom", None, KeyScope::Metrics).await.unwrap();
    assert_eq!((agent.scope, prom.scope), (KeyScope::Upload, KeyScope::Metrics));
    assert_eq!(store.api_key_by_hash("hash-prom").await.unwrap().unwrap().summary, prom);
    assert_eq!(store.api_keys().await.unwrap(), [agent, prom]);
}

both!(users_keys_and_audit);
async fn users_keys_and_audit(place: Place) {
    let store = place.open().await;

    assert_eq!(store.user_count().await.unwrap(), 0);
    let ada = store.create_user("ada", "$argon2id$one", Role::Admin).await.unwrap();
    assert!(matches!(store.create_user("ada", "$argon2id$two", Role::Viewer).await, Err(StoreError::Conflict(_))));
    store.create_user("bob", "$argon2id$bob", Role::Viewer).await.unwrap();
    assert_eq!(store.user_count().await.unwrap(), 2);
    let users = store.users().await.unwrap();
    assert_eq!(users.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(), ["ada", "bob"]);
    assert_eq!(users[0], ada);
    let record = store.user_by_name("ada").await.unwrap().unwrap();
    assert_eq!((record.summary, record.password_hash.as_str()), (ada, "$argon2id$one"));
    store.set_password("bob", "$argon2id$new").await.unwrap();
    store.set_role("bob", Role::Operator).await.unwrap();
    let bob = store.user_by_name("bob").await.unwrap().unwrap();
    assert_eq!((bob.summary.role, bob.password_hash.as_str()), (Role::Operator, "$argon2id$new"));
    assert!(matches!(store.set_password("eve", "x").await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.set_role("eve", Role::Admin).await, Err(StoreError::NotFound(_))));
    store.remove_user("bob").await.unwrap();
    assert!(matches!(store.remove_user("bob").await, Err(StoreError::NotFound(_))));
    assert_eq!(store.user_by_name("bob").await.unwrap(), None);

    let web = store.create_api_key("web-1", "pk_ab12", "hash-1", Some("web-1.example")).await.unwrap();
    assert!(matches!(store.create_api_key("web-1", "pk_cd34", "hash-2", None).await, Err(StoreError::Conflict(_))));
    let db = store.create_api_key("db", "pk_ef56", "hash-3", None).await.unwrap();
    let found = store.api_key_by_hash("hash-1").await.unwrap().unwrap();
    assert_eq!(found.summary, web);
    assert_eq!(store.api_key_by_hash("nope").await.unwrap(), None);
    let used = now();
    store.touch_api_key(web.id, used).await.unwrap();
    assert_eq!(store.api_key_by_hash("hash-1").await.unwrap().unwrap().summary.last_used_at, Some(used));

    let revoked = store.revoke_api_key("web-1").await.unwrap();
    assert_eq!(revoked.id, web.id);
    assert!(revoked.revoked_at.is_some());
    assert!(store.api_key_by_hash("hash-1").await.unwrap().unwrap().summary.revoked_at.is_some());
    assert!(matches!(store.revoke_api_key("web-1").await, Err(StoreError::NotFound(_))));
    // The label is free again once its key is revoked.
    let web2 = store.create_api_key("web-1", "pk_gh78", "hash-4", None).await.unwrap();
    assert_eq!(store.revoke_api_key("pk_ef56").await.unwrap().id, db.id);
    assert!(matches!(store.revoke_api_key("pk_none").await, Err(StoreError::NotFound(_))));
    let keys = store.api_keys().await.unwrap();
    assert_eq!(
        keys.iter().map(|k| (k.id, k.revoked_at.is_some())).collect::<Vec<_>>(),
        [(web.id, true), (db.id, true), (web2.id, false)]
    );

    let entry = |host: &str, pid: u32, action: ProcessAction| NewAuditEntry {
        actor: "ada".into(),
        hostname: host.into(),
        pid: Some(pid),
        process_name: Some("sleep".into()),
        action: action.into(),
        tree: pid == 3,
        result: "success".into(),
        message: format!("Process {pid} {}", action.past_tense()),
    };
    let first = store.audit(entry("alpha", 1, ProcessAction::Suspend)).await.unwrap();
    assert_eq!((first.actor.as_str(), first.action, first.tree), ("ada", AuditAction::Suspend, false));
    store.audit(entry("beta", 2, ProcessAction::Kill)).await.unwrap();
    store.audit(entry("alpha", 3, ProcessAction::Resume)).await.unwrap();
    let all = store.audit_log(None, page(10, 0)).await.unwrap();
    assert_eq!(all.iter().map(|e| e.pid).collect::<Vec<_>>(), [Some(3), Some(2), Some(1)]);
    assert_eq!(all[2], first);
    assert!(all[0].tree);
    let alpha = store.audit_log(Some("alpha"), page(1, 1)).await.unwrap();
    assert_eq!(alpha.iter().map(|e| e.pid).collect::<Vec<_>>(), [Some(1)]);
    // An action on a host has no pid, and reads back as none.
    let deleted = store
        .audit(NewAuditEntry { pid: None, action: AuditAction::DeleteHost, ..entry("gamma", 9, ProcessAction::Kill) })
        .await
        .unwrap();
    assert_eq!((deleted.pid, deleted.action), (None, AuditAction::DeleteHost));
}

both!(reopening_keeps_everything);
async fn reopening_keeps_everything(place: Place) {
    let t = now() - secs(10);
    let original = snap("alpha", 1, t, 12.5);
    let (id, key) = {
        let store = place.open().await;
        let id = store.insert_snapshot(&original, t).await.unwrap().id;
        store.create_user("ada", "$argon2id$x", Role::Admin).await.unwrap();
        let key = store.create_api_key("k", "pk_1", "h", None).await.unwrap();
        store
            .audit(NewAuditEntry {
                actor: "ada".into(),
                hostname: "alpha".into(),
                pid: Some(42),
                process_name: None,
                action: AuditAction::Terminate,
                tree: false,
                result: "not_found".into(),
                message: "No process 42".into(),
            })
            .await
            .unwrap();
        if let Db::Sqlite(pool) = &store.pool {
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(pool).await.unwrap();
            let vacuum: i64 = sqlx::query_scalar("PRAGMA auto_vacuum").fetch_one(pool).await.unwrap();
            assert_eq!((mode.as_str(), vacuum), ("wal", 2));
        }
        assert!(store.db_size_bytes().await.unwrap() > 0);
        store.close().await;
        (id, key)
    };
    let store = place.open().await;
    assert_eq!(store.snapshot(id).await.unwrap().unwrap().snapshot, original);
    assert_eq!(store.hosts().await.unwrap().len(), 1);
    assert_eq!(store.next_seq("alpha").await.unwrap(), 2);
    assert_eq!(store.user_by_name("ada").await.unwrap().unwrap().summary.role, Role::Admin);
    assert_eq!(store.api_keys().await.unwrap(), [key]);
    assert_eq!(store.audit_log(None, page(10, 0)).await.unwrap()[0].result, "not_found");
}

both!(bodies_are_compressed);
async fn bodies_are_compressed(place: Place) {
    let store = place.open().await;
    let s = base();
    let id = store.insert_snapshot(s, Utc::now()).await.unwrap().id;
    let (body, top): (i64, i64) = on!(&store.pool, |c| sqlx::query_as(
        "SELECT CAST(length(body) AS BIGINT), CAST(length(top_json) AS BIGINT) FROM snapshots WHERE id = $1"
    )
    .bind(id)
    .fetch_one(c)
    .await)
    .unwrap();
    let json = serde_json::to_vec(s).unwrap().len() as i64;
    eprintln!(
        "{} processes, {} sockets: JSON {json} bytes, stored body {body} bytes ({:.1}x), top list {top} bytes",
        s.processes.len(),
        s.connections.len(),
        json as f64 / body as f64
    );
    assert!(body * 4 < json, "zstd should shrink a snapshot at least 4x");
}

both!(concurrent_writers_all_land, flavor = "multi_thread", worker_threads = 4);
async fn concurrent_writers_all_land(place: Place) {
    let store = place.open().await;
    let t0 = now() - secs(3600);
    let mut tasks = tokio::task::JoinSet::new();
    for h in 0..4 {
        for seq in 1..=25u64 {
            let store = store.clone();
            tasks.spawn(async move {
                let s = snap(&format!("host-{h}"), seq, t0 + secs(seq as i64 * 20), 1.0);
                store.insert_snapshot(&s, t0).await.map(|_| ())
            });
        }
    }
    let maintainer = store.clone();
    tasks.spawn(async move { maintainer.maintain(now(), &Retention::default()).await.map(|_| ()) });
    let users = store.clone();
    tasks.spawn(async move { users.create_user("ada", "h", Role::Viewer).await.map(|_| ()) });
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    assert_eq!(store.count(None).await.unwrap(), 100);
    // Whatever the interleaving, every snapshot ends up in exactly one minute bucket.
    store.maintain(now(), &Retention::default()).await.unwrap();
    let rolled: i64 = on!(&store.pool, |c| sqlx::query_scalar(
        "SELECT CAST(SUM(samples) AS BIGINT) FROM rollups WHERE tier = 'minute'"
    )
    .fetch_one(c)
    .await)
    .unwrap();
    assert_eq!(rolled, 100);
}

/// A snapshot of `hostname` that differs from [`base`] the way a next tick does: some
/// processes' figures move, one process comes and one goes.
fn tick(hostname: &str, seq: u64, taken_at: DateTime<Utc>) -> Snapshot {
    let mut s = snap(hostname, seq, taken_at, seq as f32);
    for (i, p) in s.processes.iter_mut().enumerate() {
        if (i as u64 + seq) % 5 == 0 {
            p.cpu_percent = p.cpu_percent.map(|c| c + seq as f32 / 10.0);
            p.rss_bytes = p.rss_bytes.map(|r| r + seq * 4096);
        }
    }
    let gone = seq as usize % s.processes.len();
    s.processes.remove(gone);
    s.processes.push(process("ticker", 3_000_000 + seq as u32, 1.5, seq << 20));
    s
}

async fn base_id(store: &Store, id: i64) -> Option<i64> {
    on!(&store.pool, |c| sqlx::query_scalar("SELECT base_id FROM snapshots WHERE id = $1").bind(id).fetch_one(c).await)
        .unwrap()
}

async fn body_len(store: &Store, id: i64) -> i64 {
    on!(&store.pool, |c| sqlx::query_scalar("SELECT CAST(length(body) AS BIGINT) FROM snapshots WHERE id = $1")
        .bind(id)
        .fetch_one(c)
        .await)
    .unwrap()
}

both!(snapshots_of_a_minute_chain_from_its_keyframe_and_read_back_exactly);
async fn snapshots_of_a_minute_chain_from_its_keyframe_and_read_back_exactly(place: Place) {
    let store = place.open().await;
    // The start of the host's keyframe window, so that the first 60 ticks share it.
    let t0 = from_ms(ingest::window_start("alpha", to_ms(now() - secs(3600))));
    let mut stored = Vec::new();
    let mut host = 0;
    for seq in 1..=70u64 {
        let s = tick("alpha", seq, t0 + secs(seq as i64 - 1));
        let inserted = store.insert_snapshot(&s, t0).await.unwrap();
        host = inserted.host_id;
        stored.push((inserted.id, s));
    }
    let keyframe = stored[0].0;
    assert_eq!(base_id(&store, keyframe).await, None);
    for pair in stored[..60].windows(2) {
        // Each row is the delta from the one before: only what changed in a tick (a fifth
        // of the processes, whose new figures compress far worse than whole processes
        // do, so the ratio depends on this machine's processes; a whole row is never
        // this small).
        assert_eq!(base_id(&store, pair[1].0).await, Some(pair[0].0));
        let (delta, whole) = (body_len(&store, pair[1].0).await, body_len(&store, keyframe).await);
        assert!(delta * 2 < whole, "a delta of {delta} bytes against a keyframe of {whole}");
    }
    // The next minute starts a new keyframe.
    assert_eq!(base_id(&store, stored[60].0).await, None);
    assert_eq!(base_id(&store, stored[61].0).await, Some(stored[60].0));

    for (id, s) in &stored {
        assert_eq!(&store.snapshot(*id).await.unwrap().unwrap().snapshot, s);
    }
    let range = store.range(host, t0, t0 + secs(3600), 1000).await.unwrap();
    assert_eq!(
        range.iter().map(|r| &r.snapshot).collect::<Vec<_>>(),
        stored.iter().map(|(_, s)| s).collect::<Vec<_>>()
    );
    assert_eq!(store.latest(host).await.unwrap().unwrap().snapshot, stored[69].1);
    assert_eq!(store.latest_per_host().await.unwrap()[0].snapshot, stored[69].1);

    // After a restart there is no keyframe in memory: the next snapshot is one.
    store.close().await;
    let store = place.open().await;
    let s = tick("alpha", 71, t0 + secs(70));
    let id = store.insert_snapshot(&s, t0).await.unwrap().id;
    assert_eq!(base_id(&store, id).await, None);
    assert_eq!(store.snapshot(id).await.unwrap().unwrap().snapshot, s);
    assert_eq!(store.snapshot(stored[65].0).await.unwrap().unwrap().snapshot, stored[65].1);
}

#[test]
fn keyframe_windows_are_a_minute_long_and_shifted_per_host() {
    let t = to_ms(now());
    let (a, b) = (ingest::window_start("alpha", t), ingest::window_start("beta", t));
    assert!(a <= t && t - a < 60_000 && b <= t && t - b < 60_000);
    assert_ne!(a, b, "two hosts' windows start at different seconds");
    assert_eq!(ingest::window_start("alpha", a + 59_999), a);
    assert_eq!(ingest::window_start("alpha", a + 60_000), a + 60_000);
}

both!(retention_deletes_whole_keyframe_windows);
async fn retention_deletes_whole_keyframe_windows(place: Place) {
    let store = place.open().await;
    let retention = Retention { raw: Duration::from_secs(3600), ..Retention::default() };
    let t0 = from_ms(ingest::window_start("alpha", to_ms(now() - secs(7200))));
    let mut ids = Vec::new();
    for seq in 1..=180u64 {
        let s = tick("alpha", seq, t0 + secs(seq as i64 - 1));
        ids.push(store.insert_snapshot(&s, t0).await.unwrap().id);
    }
    // Raw retention ends 90 s into the data: in the middle of the second window, whose
    // keyframe must outlive it with the rest of the window.
    let now = t0 + secs(3600 + 90);
    let done = store.maintain(now, &retention).await.unwrap();
    assert_eq!(done.raw_deleted, 60);
    for (i, id) in ids.iter().enumerate() {
        let read = store.snapshot(*id).await.unwrap();
        assert_eq!(read.is_some(), i >= 60, "snapshot {i}");
        if let Some(read) = read {
            assert_eq!(read.snapshot, tick("alpha", i as u64 + 1, t0 + secs(i as i64)));
        }
    }
    // A snapshot for the expired window is stored whole, not against a deleted keyframe.
    let s = tick("alpha", 1000, t0 + secs(10));
    let id = store.insert_snapshot(&s, now).await.unwrap().id;
    assert_eq!(base_id(&store, id).await, None);
    assert_eq!(store.snapshot(id).await.unwrap().unwrap().snapshot, s);
}

both!(concurrent_inserts_share_transactions_and_fail_alone, flavor = "multi_thread", worker_threads = 4);
async fn concurrent_inserts_share_transactions_and_fail_alone(place: Place) {
    let store = place.open().await;
    // A refusal the store cannot foresee, for one snapshot only.
    match &store.pool {
        Db::Sqlite(pool) => {
            sqlx::query(
                "CREATE TRIGGER refuse BEFORE INSERT ON snapshots WHEN NEW.seq = 20 \
                 BEGIN SELECT RAISE(ABORT, 'refused'); END",
            )
            .execute(pool)
            .await
            .unwrap();
        }
        Db::Postgres(pool) => {
            sqlx::raw_sql(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN RAISE EXCEPTION 'refused'; END $$; \
                 CREATE TRIGGER refuse BEFORE INSERT ON snapshots FOR EACH ROW WHEN (NEW.seq = 20) \
                 EXECUTE FUNCTION refuse();",
            )
            .execute(pool)
            .await
            .unwrap();
        }
    }
    let t0 = now() - secs(3600);
    let mut tasks = tokio::task::JoinSet::new();
    for h in 0..8 {
        for seq in 1..=20u64 {
            // Every upload twice, at the same time: one of each pair is a duplicate.
            for _ in 0..2 {
                let store = store.clone();
                tasks.spawn(async move {
                    let s = tick(&format!("host-{h}"), seq, t0 + secs(seq as i64));
                    (h, seq, store.insert_snapshot(&s, t0).await)
                });
            }
        }
    }
    let mut results = std::collections::HashMap::<(i32, u64), Vec<Inserted>>::new();
    while let Some(done) = tasks.join_next().await {
        let (h, seq, result) = done.unwrap();
        match result {
            Ok(inserted) => results.entry((h, seq)).or_default().push(inserted),
            Err(e) => assert!(seq == 20 && e.to_string().contains("refused"), "{e}"),
        }
    }
    assert!(!results.keys().any(|&(_, seq)| seq == 20));
    assert_eq!(results.len(), 8 * 19);
    for ((h, seq), pair) in &results {
        assert_eq!(pair.len(), 2);
        assert_eq!(pair[0].id, pair[1].id, "host {h} seq {seq}");
        assert_eq!(pair.iter().filter(|i| i.duplicate).count(), 1, "host {h} seq {seq}");
        let read = store.snapshot(pair[0].id).await.unwrap().unwrap();
        assert_eq!(read.snapshot, tick(&format!("host-{h}"), *seq, t0 + secs(*seq as i64)));
    }
    assert_eq!(store.count(None).await.unwrap(), 8 * 19);
    // The refused snapshot left nothing behind, not even on its host.
    for host in store.hosts().await.unwrap() {
        assert_eq!(host.snapshot_count, 19);
    }
    let last_seqs: Vec<i64> =
        on!(&store.pool, |c| sqlx::query_scalar("SELECT last_seq FROM hosts").fetch_all(c).await).unwrap();
    assert!(last_seqs.iter().all(|&s| s == 19), "{last_seqs:?}");
}

both!(rows_stored_before_keyframes_still_read_and_roll_up);
async fn rows_stored_before_keyframes_still_read_and_roll_up(place: Place) {
    let store = place.open().await;
    let t = from_ms(floor_ms(to_ms(now() - secs(3600)), 60_000) + 10_000);
    let s = snap("old", 1, t, 5.0);
    // A row as the first schema stored it: the whole body (here without its size in the
    // frame header, as a streaming encoder writes it) and a stored top list, which names
    // a process the body does not have, to tell which one rollups read.
    let body = zstd::encode_all(serde_json::to_vec(&s).unwrap().as_slice(), 3).unwrap();
    let top = r#"[{"name":"legacy","pid":4000001,"cmd":"legacy --work","cpu_percent":250.0,"rss_bytes":1048576}]"#;
    on!(&store.pool, |c| sqlx::query(
        "INSERT INTO hosts (hostname, first_seen, last_seen, last_taken_at) VALUES ('old', $1, $1, $1)"
    )
    .bind(to_ms(t))
    .execute(c)
    .await
    .map(|d| d.rows_affected()))
    .unwrap();
    let id: i64 = on!(&store.pool, |c| sqlx::query_scalar(
        "INSERT INTO snapshots (host_id, seq, taken_at, received_at, cpu_percent, memory_used_bytes, \
         memory_total_bytes, process_count, connection_count, sent_bytes_per_sec, received_bytes_per_sec, \
         top_json, body) SELECT id, 1, $1, $1, 5.0, 1, 2, 3, 4, 0, 0, $2, $3 FROM hosts WHERE hostname = 'old' \
         RETURNING id",
    )
    .bind(to_ms(t))
    .bind(top)
    .bind(&body)
    .fetch_one(c)
    .await)
    .unwrap();
    assert_eq!(store.snapshot(id).await.unwrap().unwrap().snapshot, s);

    // New rows of the same host go in beside it.
    let next = tick("old", 2, t + secs(1));
    let inserted = store.insert_snapshot(&next, t).await.unwrap();
    assert_eq!(store.snapshot(inserted.id).await.unwrap().unwrap().snapshot, next);
    assert_eq!(store.count(Some(inserted.host_id)).await.unwrap(), 2);

    store.maintain(now(), &Retention::default()).await.unwrap();
    let top = store.top_processes(inserted.host_id, t - secs(600), t + secs(600), 3).await.unwrap();
    assert_eq!((top[0].name.as_str(), top[0].cpu_max_percent), ("legacy", Some(250.0)));
    let from_body = top.iter().any(|p| p.cpu_peak_at == Some(t + secs(1)) && p.name != "legacy");
    assert!(from_body, "the new row's top list comes from its body: {top:?}");
}

fn floor_ms(t: i64, width: i64) -> i64 {
    t.div_euclid(width) * width
}

both!(the_writer_stores_while_every_reader_connection_is_held);
async fn the_writer_stores_while_every_reader_connection_is_held(place: Place) {
    let store = place.open().await;
    let t0 = now();
    store.insert_snapshot(&snap("alpha", 1, t0, 1.0), t0).await.unwrap();
    // Every connection readers may use, held (as by slow readers).
    let mut held = Vec::new();
    for _ in 0..READ_CONNECTIONS {
        held.push(store.pool.acquire().await.unwrap());
    }
    // Only a guard against hanging: the writer must not need any of them at all.
    for seq in 2..=3 {
        let s = snap("alpha", seq, t0 + secs(seq as i64), 1.0);
        let inserted = tokio::time::timeout(Duration::from_secs(20), store.insert_snapshot(&s, t0)).await;
        assert!(matches!(inserted, Ok(Ok(Inserted { duplicate: false, .. }))), "{inserted:?}");
    }
    drop(held);
    assert_eq!(store.count(None).await.unwrap(), 3);
}

both!(a_range_is_decoded_one_snapshot_at_a_time_one_delta_each);
async fn a_range_is_decoded_one_snapshot_at_a_time_one_delta_each(place: Place) {
    let store = place.open().await;
    let t0 = from_ms(ingest::window_start("alpha", to_ms(now() - secs(3600))));
    let mut stored = Vec::new();
    let mut host = 0;
    for seq in 1..=70u64 {
        let s = tick("alpha", seq, t0 + secs(seq as i64 - 1));
        let inserted = store.insert_snapshot(&s, t0).await.unwrap();
        host = inserted.host_id;
        stored.push(s);
    }
    let before = store.read_stats().decoded;
    let mut reader = store.range_reader(host, t0, t0 + secs(3600), 1000).await.unwrap();
    assert_eq!((reader.remaining(), reader.next_taken_at()), (70, Some(t0)));
    let mut read = Vec::new();
    while let Some(seq) = reader.next_with(|s| s.snapshot.seq).await.unwrap() {
        read.push(seq);
    }
    assert_eq!(read, (1..=70).collect::<Vec<_>>());
    assert_eq!(reader.next_taken_at(), None);
    // 70 rows, each a delta from the one read before it (or whole).
    let stats = store.read_stats();
    assert_eq!(stats.decoded - before, 70);
    assert_eq!(stats.decoding_peak, 1);
    let range = store.range(host, t0 + secs(59), t0 + secs(62), 10).await.unwrap();
    assert_eq!(range.into_iter().map(|r| r.snapshot).collect::<Vec<_>>(), stored[59..63]);
}

both!(heavy_reads_wait_for_a_slot_and_then_give_up_as_busy);
async fn heavy_reads_wait_for_a_slot_and_then_give_up_as_busy(place: Place) {
    let limits = ReadLimits { concurrent: 1, wait: Duration::ZERO };
    let store = place.open_with(limits).await;
    let t0 = now();
    let inserted = store.insert_snapshot(&snap("alpha", 1, t0, 1.0), t0).await.unwrap();
    let slot = store.heavy_read().await.unwrap();
    assert!(matches!(store.snapshot(inserted.id).await, Err(StoreError::Busy { retry_after_secs: 1 })));
    assert!(matches!(store.latest(inserted.host_id).await, Err(StoreError::Busy { .. })));
    assert!(matches!(store.latest_per_host().await, Err(StoreError::Busy { .. })));
    let mut reader = store.range_reader(inserted.host_id, t0, t0, 10).await.unwrap();
    assert!(matches!(reader.next().await, Err(StoreError::Busy { .. })));
    // Lists and counts decode nothing, so they never wait.
    assert_eq!(store.newest_per_host().await.unwrap()[0].snapshot_id, inserted.id);
    drop(slot);
    assert_eq!(reader.next().await.unwrap().unwrap().id, inserted.id, "a busy read can be tried again");
    assert_eq!(store.snapshot(inserted.id).await.unwrap().unwrap().snapshot.seq, 1);
}

both!(rows_stored_against_their_keyframe_read_next_to_chained_ones);
async fn rows_stored_against_their_keyframe_read_next_to_chained_ones(place: Place) {
    let store = place.open().await;
    let t0 = from_ms(ingest::window_start("alpha", to_ms(now() - secs(3600))));
    let snaps: Vec<Snapshot> = (1..=4u64).map(|seq| tick("alpha", seq, t0 + secs(seq as i64 - 1))).collect();
    let first = store.insert_snapshot(&snaps[0], t0).await.unwrap();
    // Two rows as the previous layout stored them: deltas from the window's keyframe.
    for s in &snaps[1..3] {
        let delta = crate::model::delta::SnapshotDelta::between(&snaps[0], s);
        let body = zstd::encode_all(rmp_serde::to_vec_named(&delta).unwrap().as_slice(), 3).unwrap();
        on!(&store.pool, |c| sqlx::query(
            "INSERT INTO snapshots (host_id, seq, taken_at, received_at, cpu_percent, memory_used_bytes, \
             memory_total_bytes, process_count, connection_count, sent_bytes_per_sec, received_bytes_per_sec, \
             top_json, body, base_id) VALUES ($1, $2, $3, $4, 0, 0, 0, 0, 0, 0, 0, '', $5, $6)",
        )
        .bind(first.host_id)
        .bind(s.seq as i64)
        .bind(to_ms(s.taken_at))
        .bind(to_ms(t0))
        .bind(body)
        .bind(first.id)
        .execute(c)
        .await
        .map(|d| d.rows_affected()))
        .unwrap();
    }
    // The store's own next row chains on its newest row, the keyframe.
    let last = store.insert_snapshot(&snaps[3], t0).await.unwrap();
    assert_eq!(base_id(&store, last.id).await, Some(first.id));
    let range = store.range(first.host_id, t0, t0 + secs(60), 10).await.unwrap();
    assert_eq!(range.into_iter().map(|r| r.snapshot).collect::<Vec<_>>(), snaps);
    for id in first.id..=last.id {
        assert_eq!(store.snapshot(id).await.unwrap().unwrap().snapshot, snaps[(id - first.id) as usize]);
    }
    // Rollups read every one of them for their top lists.
    store.maintain(t0 + secs(120), &Retention::default()).await.unwrap();
    let top = store.top_processes(first.host_id, t0, t0 + secs(60), 3).await.unwrap();
    assert!(!top.is_empty());
}

both!(a_chain_is_cut_whole_when_it_gets_long);
async fn a_chain_is_cut_whole_when_it_gets_long(place: Place) {
    let store = place.open().await;
    let t0 = from_ms(ingest::window_start("fast", to_ms(now() - secs(3600))));
    let n = ingest::MAX_CHAIN as u64 + 5;
    let mut ids = Vec::new();
    for seq in 1..=n {
        // Ten a second: all in one window.
        let s = tick("fast", seq, t0 + TimeDelta::milliseconds(seq as i64 * 100));
        ids.push(store.insert_snapshot(&s, t0).await.unwrap().id);
    }
    let whole: Vec<usize> = {
        let mut whole = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            if base_id(&store, *id).await.is_none() {
                whole.push(i);
            }
        }
        whole
    };
    assert_eq!(whole, [0, ingest::MAX_CHAIN as usize + 1]);
    let before = store.read_stats().decoded;
    let s = store.snapshot(ids[ingest::MAX_CHAIN as usize]).await.unwrap().unwrap();
    assert_eq!(s.snapshot.seq, u64::from(ingest::MAX_CHAIN) + 1);
    assert_eq!(store.read_stats().decoded - before, u64::from(ingest::MAX_CHAIN) + 1, "a whole row and its deltas");
}

/// A SQLite collector's data copied into PostgreSQL reads back the same, ids and all,
/// and the copy's ids do not collide with what is stored after it.
#[tokio::test]
async fn a_sqlite_store_copies_into_postgres_whole() {
    let Some(target) = Place::postgres() else { return };
    let source_place = Place::sqlite();
    let source = source_place.open().await;
    let now = now();
    let t0 = from_ms(ingest::window_start("alpha", to_ms(now - secs(7200))));
    let mut ids = Vec::new();
    for seq in 1..=130u64 {
        let s = tick("alpha", seq, t0 + secs(seq as i64 - 1));
        ids.push(source.insert_snapshot(&s, t0).await.unwrap().id);
    }
    let mut short = snap("beta", 1, t0, 3.0);
    short.network.total = None;
    source.insert_snapshot(&short, t0).await.unwrap();
    source.maintain(now, &Retention { raw: Duration::from_secs(3 * 3600), ..Retention::default() }).await.unwrap();
    // A late snapshot, still queued for its merge.
    source.insert_snapshot(&tick("alpha", 1000, t0 + secs(5)), now).await.unwrap();
    source.create_user("ada", "$argon2id$x", Role::Admin).await.unwrap();
    let key = source.create_api_key("web", "pk_1", "hash-1", Some("alpha")).await.unwrap();
    source.revoke_api_key("web").await.unwrap();
    source.create_scoped_api_key("prom", "pk_2", "hash-2", None, KeyScope::Metrics).await.unwrap();
    source.audit(NewAuditEntry::host_change("ada", "beta", AuditAction::UnbindHost, "unbound".into())).await.unwrap();

    let rule: crate::alert::rule::AlertRule =
        serde_json::from_value(serde_json::json!({"name": "cpu", "metric": "host.cpu_percent", "threshold": 90}))
            .unwrap();
    source.put_alert_rule(&rule, true).await.unwrap();
    let silence = source.add_silence(Some("cpu"), None, now + secs(3600), "maintenance", "ada").await.unwrap();
    let board = source.create_dashboard("ada", &board_input("Fleet", 2)).await.unwrap();

    let pg = target.open().await;
    let copied = source.copy_into(&pg, Some(&[7; 32])).await.unwrap();
    assert_eq!((copied.hosts, copied.snapshots, copied.users, copied.api_keys, copied.audit), (2, 132, 1, 2, 1));
    assert_eq!(copied.alerts, 2);
    assert_eq!(copied.dashboards, 1);
    assert_eq!(pg.dashboard(board.id).await.unwrap(), Some(board.clone()));
    assert!(pg.create_dashboard("ada", &board_input("Next", 0)).await.unwrap().id > board.id);
    assert_eq!(pg.alert_rules().await.unwrap(), [rule]);
    assert_eq!(pg.silences(now).await.unwrap(), std::slice::from_ref(&silence));
    // New silences continue after the copied ids.
    let next = pg.add_silence(None, Some("beta"), now + secs(60), "", "ada").await.unwrap();
    assert!(next.id > silence.id);
    assert!(copied.rollups > 0);

    assert_eq!(pg.hosts().await.unwrap(), source.hosts().await.unwrap());
    assert_eq!(pg.list(None, page(1000, 0)).await.unwrap(), source.list(None, page(1000, 0)).await.unwrap());
    for id in ids.iter().step_by(7) {
        assert_eq!(pg.snapshot(*id).await.unwrap(), source.snapshot(*id).await.unwrap(), "snapshot {id}");
    }
    let host = pg.host("alpha").await.unwrap().unwrap().id;
    let series = |store: Store| async move {
        store.series(host, Some(t0), Some(now), None, now, &Retention::default()).await.unwrap()
    };
    assert_eq!(series(pg.clone()).await, series(source.clone()).await);
    assert_eq!(pg.users().await.unwrap(), source.users().await.unwrap());
    assert_eq!(pg.api_keys().await.unwrap(), source.api_keys().await.unwrap());
    assert_eq!(pg.audit_log(None, page(10, 0)).await.unwrap(), source.audit_log(None, page(10, 0)).await.unwrap());
    assert_eq!(pg.host_binding("alpha").await.unwrap(), source.host_binding("alpha").await.unwrap());
    assert_eq!(pg.shared_signing_key(&[1; 32]).await.unwrap(), Some(vec![7; 32]), "tokens issued before stay valid");
    // The late snapshot is merged on the new side as it would have been on the old.
    assert_eq!(
        pg.maintain(now, &Retention::default()).await.unwrap(),
        source.maintain(now, &Retention::default()).await.unwrap()
    );

    // New rows continue after the copied ones.
    let next = pg.insert_snapshot(&tick("alpha", 2000, now), now).await.unwrap();
    assert!(next.id > *ids.iter().max().unwrap());
    let again = pg.create_api_key("next", "pk_3", "hash-3", None).await.unwrap();
    assert!(again.id > key.id);
    // A second copy into a database that holds data is refused, and changes nothing.
    assert!(matches!(source.copy_into(&pg, None).await, Err(StoreError::Refused(_))));
    assert_eq!(pg.api_keys().await.unwrap().len(), 3);
}

both!(collectors_on_one_database_hear_each_other_and_one_leads, flavor = "multi_thread");
async fn collectors_on_one_database_hear_each_other_and_one_leads(place: Place) {
    let a = place.open().await;
    let b = place.open().await;
    let Some(mut heard) = a.listen().await.unwrap() else {
        // SQLite: one collector, which leads, holds every agent, and hears nobody.
        assert!(!a.is_shared() && a.collector_id().is_none());
        assert!(a.lead().await.unwrap().unwrap().still_held().await);
        a.hold_agent("h", true).await.unwrap();
        assert_eq!(a.agent_holder("h").await.unwrap(), None);
        a.announce_alerts_changed().await.unwrap();
        assert_eq!(a.forget_dead_holders().await.unwrap(), 0);
        return;
    };
    let (a_id, b_id) = (a.collector_id().unwrap(), b.collector_id().unwrap());
    assert_ne!(a_id, b_id);

    // What B stores is announced, with B's id, once committed.
    let t = now();
    let stored = b.insert_snapshot(&snap("fleet-1", 1, t, 1.0), t).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), heard.next()).await.unwrap().unwrap();
    let FleetEvent::Snapshot { origin, host_id, snapshot_id, announced: Some(announced) } = event else {
        panic!("{event:?}")
    };
    assert_eq!((origin, host_id, snapshot_id), (b_id, stored.host_id, stored.id));
    // With what the fleet overview shows of it.
    assert_eq!((announced.hostname.as_str(), announced.figures.cpu_percent), ("fleet-1", 1.0));
    assert_eq!(announced.received_at.timestamp_millis(), t.timestamp_millis());
    // A duplicate is not.
    b.insert_snapshot(&snap("fleet-1", 1, t, 1.0), t).await.unwrap();

    // B holds an agent: A finds it while B listens (its liveness lock), not after.
    let mut b_listens = b.listen().await.unwrap().unwrap();
    b.hold_agent("fleet-1", true).await.unwrap();
    assert_eq!(a.agent_holder("fleet-1").await.unwrap(), Some(Holder { id: b_id, allow_control: true }));
    assert_eq!(b.agent_holder("fleet-1").await.unwrap(), None, "never oneself");

    // An action asked of B: claimed once, answered, the answer read once.
    let id = a.ask_action(b_id, "fleet-1", "{\"pid\": 1}").await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), b_listens.next()).await.unwrap().unwrap();
    assert_eq!(event, FleetEvent::Action { holder: b_id, id });
    assert_eq!(b.unclaimed_actions(Duration::from_secs(15)).await.unwrap(), [id]);
    assert_eq!(a.claim_action(id, Duration::from_secs(15)).await.unwrap(), None, "only its holder claims it");
    let claimed = b.claim_action(id, Duration::from_secs(15)).await.unwrap().unwrap();
    assert_eq!((claimed.hostname.as_str(), claimed.request.as_str()), ("fleet-1", "{\"pid\": 1}"));
    assert_eq!(b.claim_action(id, Duration::from_secs(15)).await.unwrap(), None, "claimed once");
    assert_eq!(a.take_answer(id).await.unwrap(), None);
    b.answer_action(id, "{\"Err\":\"Timeout\"}").await.unwrap();
    let answered = loop {
        // The snapshot notification may come first.
        match tokio::time::timeout(Duration::from_secs(10), heard.next()).await.unwrap().unwrap() {
            FleetEvent::Answered { id } => break id,
            _ => continue,
        }
    };
    assert_eq!(answered, id);
    assert_eq!(a.take_answer(id).await.unwrap().as_deref(), Some("{\"Err\":\"Timeout\"}"));
    // A change of the alerts through B is heard by A, named as B's.
    b.announce_alerts_changed().await.unwrap();
    let origin = loop {
        match tokio::time::timeout(Duration::from_secs(10), heard.next()).await.unwrap().unwrap() {
            FleetEvent::AlertsChanged { origin } => break origin,
            _ => continue,
        }
    };
    assert_eq!(origin, b_id);
    assert_eq!(a.take_answer(id).await.unwrap(), None);
    // An action asked too long ago is never carried out.
    let old = a.ask_action(b_id, "fleet-1", "{}").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(b.claim_action(old, Duration::from_millis(1)).await.unwrap(), None);

    b_listens.close().await;
    // Once the server has ended B's session (it does as soon as it sees it closed).
    let mut waited = 0;
    while a.agent_holder("fleet-1").await.unwrap().is_some() {
        waited += 1;
        assert!(waited < 100, "a holder that stopped still holds its agent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its row goes at the next maintenance; a live holder's (A listens) stays.
    a.hold_agent("fleet-2", false).await.unwrap();
    assert_eq!(a.forget_dead_holders().await.unwrap(), 1);
    assert_eq!(a.forget_dead_holders().await.unwrap(), 0);
    assert_eq!(b.agent_holder("fleet-2").await.unwrap(), Some(Holder { id: a_id, allow_control: false }));

    // One leader: the other takes over once its session ends.
    let mut leader = a.lead().await.unwrap().expect("nobody leads yet");
    assert!(b.lead().await.unwrap().is_none());
    assert!(leader.still_held().await);
    drop(leader);
    let mut waited = 0;
    let mut new_leader = loop {
        // The server ends the session of a dropped connection as soon as it sees it.
        if let Some(lead) = b.lead().await.unwrap() {
            break lead;
        }
        waited += 1;
        assert!(waited < 100, "the lead never moved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(new_leader.still_held().await);
    assert!(a.lead().await.unwrap().is_none());
}

/// A dashboard of `n` charts, one under the other.
fn board_input(name: &str, n: u32) -> crate::model::dashboard::DashboardInput {
    let widgets: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"kind": "host_chart", "x": 0, "y": i * 4, "w": 6, "h": 4, "hosts": "web-*", "metric": "cpu_percent"}))
        .collect();
    serde_json::from_value(serde_json::json!({"name": name, "widgets": widgets})).unwrap()
}

/// Dashboards are kept per user, read back whole after the store is opened again, seen
/// only by those they are shared with, and go with their owner.
async fn dashboards_are_kept_per_user_and_shared_as_told(place: Place) {
    use crate::model::dashboard::{MAX_PER_USER, Sharing};
    let store = place.open().await;
    store.create_user("ada", "$argon2id$a", Role::Admin).await.unwrap();
    store.create_user("bob", "$argon2id$b", Role::Viewer).await.unwrap();
    store.create_user("cy", "$argon2id$c", Role::Viewer).await.unwrap();

    let empty = store.create_dashboard("bob", &board_input("Empty", 0)).await.unwrap();
    assert!(empty.widgets.is_empty());
    let mut input = board_input("Web", 3);
    let web = store.create_dashboard("bob", &input).await.unwrap();
    assert_eq!(web.owner, "bob");

    let names = |v: Vec<crate::model::dashboard::Dashboard>| v.into_iter().map(|d| d.name).collect::<Vec<_>>();
    assert_eq!(names(store.dashboards_visible_to("bob").await.unwrap()), ["Empty", "Web"]);
    assert!(store.dashboards_visible_to("cy").await.unwrap().is_empty());

    input.shared = Sharing::Users;
    input.shared_with = vec!["cy".into()];
    input.name = "Web servers".into();
    let shared = store.update_dashboard(web.id, &input).await.unwrap();
    assert_eq!((shared.name.as_str(), shared.shared, shared.widgets.len()), ("Web servers", Sharing::Users, 3));
    assert_eq!(names(store.dashboards_visible_to("cy").await.unwrap()), ["Web servers"]);
    assert!(store.dashboards_visible_to("ada").await.unwrap().is_empty());
    let mut everyone = board_input("Fleet", 1);
    everyone.shared = Sharing::Everyone;
    let fleet = store.create_dashboard("ada", &everyone).await.unwrap();
    assert_eq!(names(store.dashboards_visible_to("cy").await.unwrap()), ["Fleet", "Web servers"]);
    assert!(matches!(store.update_dashboard(9_999_999, &input).await, Err(StoreError::NotFound(_))));

    // Read back the same after a restart.
    store.close().await;
    let store = place.open().await;
    assert_eq!(store.dashboard(web.id).await.unwrap(), Some(shared.clone()));
    assert_eq!(store.dashboard(fleet.id).await.unwrap(), Some(fleet));

    assert!(store.delete_dashboard(empty.id).await.unwrap());
    assert!(!store.delete_dashboard(empty.id).await.unwrap());
    assert_eq!(store.dashboard(empty.id).await.unwrap(), None);

    // A user owns a bounded number.
    for i in 1..MAX_PER_USER {
        store.create_dashboard("cy", &board_input(&format!("d{i}"), 0)).await.unwrap();
    }
    store.create_dashboard("cy", &board_input("last", 0)).await.unwrap();
    assert!(matches!(store.create_dashboard("cy", &board_input("over", 0)).await, Err(StoreError::Refused(_))));

    // They go with their owner, and shares with a user go with the user.
    store.remove_user("bob").await.unwrap();
    assert_eq!(store.dashboard(web.id).await.unwrap(), None);
    assert_eq!(names(store.dashboards_visible_to("ada").await.unwrap()), ["Fleet"]);
    store.create_user("dee", "$argon2id$d", Role::Viewer).await.unwrap();
    let mut to_dee = board_input("For dee", 0);
    to_dee.shared = Sharing::Users;
    to_dee.shared_with = vec!["cy".into(), "dee".into()];
    let for_dee = store.create_dashboard("ada", &to_dee).await.unwrap();
    assert_eq!(names(store.dashboards_visible_to("dee").await.unwrap()), ["Fleet", "For dee"]);
    store.remove_user("dee").await.unwrap();
    store.create_user("dee", "$argon2id$d2", Role::Viewer).await.unwrap();
    assert_eq!(names(store.dashboards_visible_to("dee").await.unwrap()), ["Fleet"]);
    assert_eq!(store.dashboard(for_dee.id).await.unwrap().unwrap().shared_with, ["cy"]);
}
both!(dashboards_are_kept_per_user_and_shared_as_told);

both!(maintain_expires_alert_history_but_not_alerts_in_force);
async fn maintain_expires_alert_history_but_not_alerts_in_force(place: Place) {
    use crate::alert::rule::Severity;
    use crate::alert::status::{AlertState, DeliveryResult};
    let store = place.open().await;
    let now = now();
    let retention = Retention::default();
    let day = 86_400_000;
    let old = to_ms(now) - i64::try_from(retention.hour.as_millis()).unwrap() - day;
    let recent = to_ms(now) - day;
    let change = |rule: &str, state, since_ms, at_ms| StateChange {
        rule: rule.into(),
        hostname: "h".into(),
        process: String::new(),
        severity: Severity::Warning,
        state: Some(state),
        since_ms,
        value: 1.0,
        notified_ms: Some(at_ms),
        at_ms,
        event: true,
    };
    let keep_all = from_ms(0);
    // Fired long ago and still firing; fired and resolved long ago; fired recently.
    let changes = [
        change("stuck", AlertState::Firing, old, old),
        change("gone", AlertState::Firing, old, old),
        change("gone", AlertState::Resolved, old, old + 1),
        change("new", AlertState::Firing, recent, recent),
    ];
    for c in &changes {
        store.apply_alert_changes(std::slice::from_ref(c), keep_all).await.unwrap();
    }
    let delivery = |rule: &str| NewDelivery {
        channel: "ops".into(),
        rule: rule.into(),
        hostname: "h".into(),
        process: String::new(),
        status: "firing".into(),
        attempt: 1,
        result: DeliveryResult::Delivered,
        error: None,
    };
    store.record_delivery(&delivery("gone")).await.unwrap();
    store.record_delivery(&delivery("new")).await.unwrap();
    // Deliveries are stamped when recorded: the first one is made old by hand.
    on!(&store.pool, |c| sqlx::query("UPDATE alert_deliveries SET at = $1 WHERE rule = 'gone'")
        .bind(old)
        .execute(c)
        .await
        .map(drop))
    .unwrap();

    let done = store.maintain(now, &retention).await.unwrap();
    // Three old events, one old delivery, one state resolved long ago.
    assert_eq!(done.alert_rows_deleted, 5, "{done:?}");
    let history = store.alert_history(page(100, 0)).await.unwrap();
    assert_eq!(history.iter().map(|e| e.rule.as_str()).collect::<Vec<_>>(), ["new"]);
    let deliveries = store.alert_deliveries(page(100, 0)).await.unwrap();
    assert_eq!(deliveries.iter().map(|d| d.rule.as_str()).collect::<Vec<_>>(), ["new"]);
    let mut states: Vec<(String, AlertState)> =
        store.alert_states().await.unwrap().into_iter().map(|(a, _)| (a.rule, a.state)).collect();
    states.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        states,
        [("new".to_owned(), AlertState::Firing), ("stuck".to_owned(), AlertState::Firing)],
        "alerts in force are kept however old"
    );
    assert_eq!(store.maintain(now, &retention).await.unwrap().alert_rows_deleted, 0, "a second pass finds nothing");
}

both!(gpu_figures_survive_the_store_whole_and_as_deltas);
async fn gpu_figures_survive_the_store_whole_and_as_deltas(place: Place) {
    let store = place.open().await;
    let t0 = from_ms(ingest::window_start("gpu", to_ms(now() - secs(3600))));
    let gpu = |busy: f32| crate::model::GpuSample {
        id: "0000:03:00.0".into(),
        name: "Radeon".into(),
        driver: Some("amdgpu".into()),
        utilization_percent: Some(busy),
        memory_used_bytes: Some(1 << 30),
        memory_total_bytes: Some(8 << 30),
        temperature_celsius: Some(50.0),
    };
    let mut stored = Vec::new();
    for seq in 1..=4u64 {
        let mut s = snap("gpu", seq, t0 + secs(seq as i64), 1.0);
        // The GPU goes away at the last one: the field is gone again.
        if seq < 4 {
            s.gpus = vec![gpu(seq as f32 * 10.0)];
            s.processes[0].gpu_percent = Some(seq as f32);
            s.processes[0].gpu_memory_bytes = Some(seq << 20);
        }
        stored.push((store.insert_snapshot(&s, t0).await.unwrap().id, s));
    }
    // Rows after the first are deltas against the one before.
    assert_eq!(base_id(&store, stored[1].0).await, Some(stored[0].0));
    for (id, s) in &stored {
        assert_eq!(&store.snapshot(*id).await.unwrap().unwrap().snapshot, s);
    }
}
