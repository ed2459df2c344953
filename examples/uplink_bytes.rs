//! Measures what the agent uplink costs on the wire: samples this machine for a number
//! of ticks and prints one JSON object to stdout (progress goes to stderr).
//!
//! For each snapshot: its JSON size, its keyframe size (zstd of its MessagePack, as the agent
//! sends it whole) and its delta frame size against the previous snapshot (what the
//! agent sends in steady state). `ratio_wire_to_full_json` is the mean delta frame over
//! the mean JSON size; `ratio_with_keyframes` also counts one keyframe every
//! `KEYFRAME_EVERY` snapshots.
//!
//! `cargo run --release --example uplink_bytes -- --ticks 30 [--interval-ms 1000]`

use std::error::Error;
use std::time::{Duration, Instant};

use procyon::model::agent::{Encoding, KEYFRAME_EVERY, delta_frame, encode_snapshot, full_frame};
use procyon::model::delta::SnapshotDelta;
use procyon::sample::{Sampler, SamplerOptions};
use serde_json::json;

/// Mean, median and largest of a list of sizes.
fn stats(values: &[usize]) -> serde_json::Value {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let mean = sorted.iter().sum::<usize>() as f64 / sorted.len().max(1) as f64;
    json!({
        "mean": mean.round(),
        "p50": sorted.get(sorted.len() / 2).copied().unwrap_or(0),
        "max": sorted.last().copied().unwrap_or(0),
    })
}

fn mean(values: &[usize]) -> f64 {
    values.iter().sum::<usize>() as f64 / values.len().max(1) as f64
}

fn arg(args: &[String], name: &str, default: u64) -> Result<u64, Box<dyn Error>> {
    match args.iter().position(|a| a == name) {
        Some(i) => {
            let value = args.get(i + 1).ok_or_else(|| format!("{name} needs a value"))?;
            Ok(value.parse().map_err(|e| format!("{name} {value}: {e}"))?)
        }
        None => Ok(default),
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(unknown) = args.iter().find(|a| a.starts_with("--") && *a != "--ticks" && *a != "--interval-ms") {
        return Err(format!("unknown option {unknown}; use --ticks N and --interval-ms MS").into());
    }
    let ticks = arg(&args, "--ticks", 30)?.max(2);
    let interval = Duration::from_millis(arg(&args, "--interval-ms", 1000)?);

    let mut sampler = Sampler::new(SamplerOptions::default());
    let (mut json_bytes, mut keyframe_bytes, mut delta_bytes) = (Vec::new(), Vec::new(), Vec::new());
    let mut previous = None;
    for seq in 1..=ticks {
        let started = Instant::now();
        let mut snapshot = sampler.sample();
        snapshot.seq = seq;
        json_bytes.push(serde_json::to_vec(&snapshot)?.len());
        keyframe_bytes.push(full_frame(&encode_snapshot(&snapshot)?, &snapshot, Encoding::MessagePack)?.len());
        if let Some(base) = &previous {
            delta_bytes.push(delta_frame(&SnapshotDelta::between(base, &snapshot), Encoding::MessagePack)?.len());
        }
        eprintln!("tick {seq}/{ticks}: {} processes, {} sockets", snapshot.processes.len(), snapshot.connections.len());
        previous = Some(snapshot);
        if seq < ticks {
            std::thread::sleep(interval.saturating_sub(started.elapsed()));
        }
    }
    let every = f64::from(KEYFRAME_EVERY);
    let with_keyframes = (mean(&keyframe_bytes) + (every - 1.0) * mean(&delta_bytes)) / every;
    let report = json!({
        "ticks": ticks,
        "interval_ms": interval.as_millis() as u64,
        "full_json_bytes": stats(&json_bytes),
        "full_zstd_bytes": stats(&keyframe_bytes),
        "delta_wire_bytes": stats(&delta_bytes),
        "keyframe_every": KEYFRAME_EVERY,
        "ratio_wire_to_full_json": mean(&delta_bytes) / mean(&json_bytes),
        "ratio_with_keyframes": with_keyframes / mean(&json_bytes),
    });
    println!("{report}");
    Ok(())
}
