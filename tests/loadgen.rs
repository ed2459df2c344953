//! The load generator (`examples/loadgen.rs`) against a real collector: it stops by
//! itself within its bounds and reports what happened, and it refuses runs outside them.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

#[allow(dead_code)] // the test uses only part of the generator
#[path = "../examples/loadgen.rs"]
mod loadgen;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use common::collector::{Collector, new_key};
use serde_json::Value;

/// Runs the generator on its own thread; its report, or a failure if it does not end
/// well within its own time limit.
fn run(args: &[&str]) -> anyhow::Result<Value> {
    let cli = loadgen::Cli::try_parse_from(std::iter::once("loadgen").chain(args.iter().copied()))?;
    let limit = cli.mode.time_limit();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(loadgen::run(cli));
    });
    rx.recv_timeout(limit).expect("the load generator did not stop by itself")
}

fn key_file(dir: &std::path::Path, key: &str) -> String {
    let path = dir.join("key.txt");
    std::fs::write(&path, format!("{key}\n")).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A collector with an empty data directory, and a file holding an agent API key.
fn collector_with_key() -> (tempfile::TempDir, Collector, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector");
    let c = Collector::start(&data, &["--no-local"]);
    let key = key_file(dir.path(), &new_key(&data, "loadgen", None));
    (dir, c, key)
}

#[test]
fn the_load_generator_stops_by_itself_with_a_sane_report() {
    let (_dir, c, key) = collector_with_key();
    let pid = c.child.as_ref().unwrap().id().to_string();

    let started = Instant::now();
    let report = run(&[
        "--collector",
        &c.base,
        "--api-key-file",
        &key,
        "--collector-pid",
        &pid,
        "--processes",
        "50",
        "--connections",
        "20",
        "ingest",
        "--agents",
        "3",
        "--interval",
        "0.5",
        "--duration",
        "1.5",
        "--p99-ms",
        "60000",
    ])
    .unwrap();
    // Three ticks of half a second, then the acks: nowhere near the drain bound.
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());

    assert_eq!(report["mode"], "ingest");
    assert_eq!(report["agents"], 3);
    assert_eq!(report["sent"], 9, "{report:#}");
    assert_eq!(report["acked"], 9, "{report:#}");
    for field in ["rejected", "errors", "unacked", "disconnected"] {
        assert_eq!(report[field], 0, "{field}: {report:#}");
    }
    assert_eq!(report["rate_per_s"].as_f64(), Some(6.0));
    let latency = &report["latency_ms"];
    assert_eq!(latency["count"], 9);
    let (p50, p99, max) =
        (latency["p50"].as_f64().unwrap(), latency["p99"].as_f64().unwrap(), latency["max"].as_f64().unwrap());
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{latency}");
    assert_eq!(report["sustained"], true, "{report:#}");
    // The snapshots were grown to the asked size, and compressed on the wire.
    let snapshot = &report["snapshot"];
    assert!(snapshot["processes"].as_u64().unwrap() >= 50);
    assert!(snapshot["connections"].as_u64().unwrap() >= 20);
    assert!(snapshot["frame_bytes_mean"].as_f64().unwrap() < snapshot["json_bytes"].as_f64().unwrap());
    assert!(report["cpu"]["collector_cpu_percent"].as_f64().unwrap() >= 0.0);

    // What was acked is stored: three new hosts with three snapshots each.
    let stored = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let token = c.admin_token().await;
        let (status, hosts) = c.get("/api/hosts/", &token).await;
        assert_eq!(status, 200);
        let hosts = hosts.as_array().cloned().unwrap_or_default();
        assert_eq!(hosts.len(), 3, "{hosts:?}");
        c.stored_count(&token).await
    });
    assert_eq!(stored, 9);
}

#[test]
fn a_ramp_stops_at_the_first_step_over_its_latency_limit() {
    let (_dir, c, key) = collector_with_key();
    // No ingest is that fast: the first step misses the limit and the ramp ends there.
    let report = run(&[
        "--collector",
        &c.base,
        "--api-key-file",
        &key,
        "--processes",
        "20",
        "ramp",
        "--steps",
        "2,4",
        "--interval",
        "0.5",
        "--step-duration",
        "1",
        "--p99-ms",
        "0.001",
    ])
    .unwrap();
    assert_eq!(report["mode"], "ramp");
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{report:#}");
    assert_eq!(steps[0]["acked"], 4);
    assert_eq!(steps[0]["sustained"], false);
    // Only slow, nothing lost: tried twice before the ramp gives up.
    assert_eq!(steps[0]["attempts"], 2);
    assert_eq!(steps[0]["earlier_attempts_p99_ms"].as_array().unwrap().len(), 1);
    assert_eq!(report["best"], Value::Null);
    assert_eq!(report["stopped_by"]["agents"], 2);
}

#[test]
fn a_short_soak_samples_the_collector_and_its_dashboards_get_their_hosts() {
    let (dir, c, key) = collector_with_key();
    let pid = c.child.as_ref().unwrap().id().to_string();
    let password = dir.path().join("admin.pw");
    std::fs::write(&password, c.admin_password.clone().unwrap()).unwrap();
    let report = run(&[
        "--collector",
        &c.base,
        "--api-key-file",
        &key,
        "--collector-pid",
        &pid,
        "--processes",
        "30",
        "--connections",
        "10",
        "soak",
        "--agents",
        "3",
        "--dashboards",
        "2",
        "--interval",
        "0.5",
        "--duration",
        "6",
        "--sample-every",
        "1",
        "--admin-password-file",
        password.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(report["mode"], "soak");
    // Twelve ticks of each agent, all acked; nothing refused, nothing reconnected.
    assert_eq!(report["sent"], 36, "{report:#}");
    assert_eq!(report["acked"], 36, "{report:#}");
    for field in ["rejected", "errors", "unanswered", "agent_reconnects", "dashboard_reconnects"] {
        assert_eq!(report[field], 0, "{field}: {report:#}");
    }
    assert!(report["dashboard_messages"].as_u64().unwrap() >= 2, "{report:#}");
    let samples = report["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 5, "one a second, until just before the end: {report:#}");
    for s in samples {
        assert!(s["rss_kib"].as_u64().unwrap() > 0, "{s}");
        assert!(s["open_files"].as_u64().unwrap() > 3, "{s}");
        assert!(s["t_s"].as_f64().unwrap() > 0.0, "{s}");
    }
    assert!(samples.iter().any(|s| s["latency_ms"]["p99"].as_f64().is_some()), "{report:#}");
}

#[test]
fn runs_outside_the_bounds_are_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "pk_unused");
    let base = ["--collector", "http://127.0.0.1:9", "--api-key-file", key.as_str()];
    let refused = |extra: &[&str], expected: &str| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let error = format!("{:#}", run(&args).unwrap_err());
        assert!(error.contains(expected), "{extra:?}: {error}");
    };
    refused(&["ingest", "--agents", "100000"], "--agents must be between 1 and 2000");
    refused(&["ingest", "--agents", "0"], "--agents must be between");
    refused(&["ingest", "--duration", "100000"], "--duration must be");
    refused(&["ingest", "--interval", "0.001"], "--interval must be");
    refused(&["ramp", "--steps", "10,5"], "--steps must increase");
    refused(&["fanout", "--clients", "5000", "--admin-password-file", &key], "--clients must be between 1 and 1000");
    refused(&["soak", "--duration", "1000000000", "--admin-password-file", &key], "--duration must be");
    refused(&["soak", "--dashboards", "5000", "--admin-password-file", &key], "--dashboards must be at most 1000");
    refused(&["soak", "--sample-every", "0.1", "--admin-password-file", &key], "--sample-every must be");

    // Only loopback collectors.
    let remote = ["--collector", "http://192.0.2.1:7450", "--api-key-file", key.as_str(), "ingest"];
    let error = format!("{:#}", run(&remote).unwrap_err());
    assert!(error.contains("only runs against a collector on loopback"), "{error}");
}
