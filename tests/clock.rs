//! Clock jumps: a streaming agent's wall clock jumps back an hour, then forward a day
//! (faked through the agent's test-only clock offset). Seq decides order: nothing is
//! refused, every snapshot is stored in seq order, no stored rate is negative, and the
//! series API still answers, the jump showing as a step in time.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::collector::{Collector, agent_bin, new_key};
use common::wait_for;
use serde_json::Value;

const HOST: &str = "jumpy";

/// Every stored snapshot summary of the host, by seq.
async fn stored(c: &Collector, token: &str) -> Vec<Value> {
    let (status, list) = c.get(&format!("/api/process-snapshots/list/?hostname={HOST}&limit=1000"), token).await;
    if status == 404 {
        return Vec::new();
    }
    let mut rows = list.as_array().unwrap().clone();
    rows.sort_by_key(|r| r["seq"].as_u64().unwrap());
    rows
}

async fn wait_for_count(c: &Collector, token: &str, n: usize) {
    let start = Instant::now();
    while stored(c, token).await.len() < n {
        assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {n} snapshots");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every number under a key naming a rate or a share (`..._per_sec`, `..._percent`),
/// anywhere in `v`, is >= 0; returns how many were checked, so a check that found none
/// is not taken for a pass.
fn no_negative_rates(v: &Value, path: &str) -> usize {
    let mut checked = 0;
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k.contains("per_sec") || k.contains("percent") {
                    let numbers: Vec<f64> = match v {
                        Value::Array(items) => items.iter().filter_map(Value::as_f64).collect(),
                        v => v.as_f64().into_iter().collect(),
                    };
                    for x in numbers {
                        assert!(x >= 0.0, "{path}.{k} = {x}");
                        checked += 1;
                    }
                }
                checked += no_negative_rates(v, &format!("{path}.{k}"));
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                checked += no_negative_rates(v, &format!("{path}[{i}]"));
            }
        }
        _ => {}
    }
    checked
}

fn set_offset(file: &Path, seconds: i64) {
    std::fs::write(file, seconds.to_string()).unwrap();
}

fn time_of(row: &Value) -> DateTime<Utc> {
    row["timestamp"].as_str().or(row["taken_at"].as_str()).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_clock_jumping_back_an_hour_and_forward_a_day_loses_and_reorders_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let c = Collector::start(&data, &["--no-local"]);
    let token = c.admin_token().await;
    let key = dir.path().join("jumpy.key");
    std::fs::write(&key, new_key(&data, "jumpy", None)).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let offset = dir.path().join("clock-offset");
    set_offset(&offset, 0);
    let log = dir.path().join("agent.log");
    let mut agent: Child = Command::new(agent_bin())
        .env("PROCYON_CONFIG", "/dev/null")
        .env("PROCYON_TEST_CLOCK_OFFSET_FILE", &offset)
        .env("PROCYON_LOG", "info")
        .args(["--collector", &c.base, "--hostname", HOST, "--interval", "200ms", "--api-key-file"])
        .arg(&key)
        .arg("--spool")
        .arg(dir.path().join("spool"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();

    wait_for_count(&c, &token, 5).await;
    // Back an hour, then forward a day (from the real time): each phase a few snapshots.
    set_offset(&offset, -3600);
    let back_from = stored(&c, &token).await.len();
    wait_for_count(&c, &token, back_from + 5).await;
    set_offset(&offset, 86_400);
    let forward_from = stored(&c, &token).await.len();
    wait_for_count(&c, &token, forward_from + 5).await;

    let _ = Command::new("kill").arg("-TERM").arg(agent.id().to_string()).status();
    assert!(wait_for(Duration::from_secs(10), || matches!(agent.try_wait(), Ok(Some(_)))), "agent stops");
    let log = std::fs::read_to_string(&log).unwrap();

    // Nothing refused, nothing set aside: every seq from 1 once.
    let rows = stored(&c, &token).await;
    let seqs: Vec<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{log}");
    for refusal in ["refused", "set aside", "rejected"] {
        assert!(!log.contains(refusal), "{refusal}: {log}");
    }
    // The times step back and then forward along seq, as the agent's clock did.
    let times: Vec<DateTime<Utc>> = rows.iter().map(time_of).collect();
    let steps: Vec<i64> = times.windows(2).map(|w| (w[1] - w[0]).num_seconds()).collect();
    assert!(steps.iter().any(|&s| s < -3000), "a step back of about an hour: {steps:?}");
    assert!(steps.iter().any(|&s| s > 80_000), "a step forward of about a day: {steps:?}");

    // No negative rate in anything stored: the summaries, each whole snapshot.
    for row in &rows {
        no_negative_rates(row, "summary");
        let id = row["snapshot_id"].as_u64().unwrap();
        let (status, snapshot) = c.get(&format!("/api/process-snapshots/{id}/"), &token).await;
        assert_eq!(status, 200, "{snapshot}");
        assert!(no_negative_rates(&snapshot, &format!("snapshot {id}")) > 0, "rates checked: {snapshot}");
        // Loopback at least: the network rates were among those checked.
        assert!(!snapshot["network"]["interfaces"].as_array().unwrap().is_empty(), "{}", snapshot["network"]);
    }

    // The series answers over the whole span, the jumps as steps in its points' times.
    let now = Utc::now();
    let from = (now - chrono::TimeDelta::hours(2)).timestamp();
    let to = (now + chrono::TimeDelta::days(2)).timestamp();
    let (status, series) =
        c.get(&format!("/api/process-snapshots/series/?hostname={HOST}&from={from}&to={to}"), &token).await;
    assert_eq!(status, 200, "{series}");
    let points = series["points"].as_array().unwrap();
    assert!(!points.is_empty(), "{series}");
    assert!(no_negative_rates(&series, "series") > 0, "{series}");
    let (status, series) = c.get(&format!("/api/process-snapshots/series/?hostname={HOST}"), &token).await;
    assert_eq!(status, 200, "the default range answers too: {series}");
    no_negative_rates(&series, "series");
}
