//! Cost of alert evaluation per snapshot: the rules a collector runs against every
//! snapshot it publishes (`alert/eval.rs`), without the store or the network.
//!
//! A snapshot of this machine (grown to at least `--processes` processes, as the
//! collector's load generator does) is relabelled as `--hosts` hosts, and each host's
//! snapshot is evaluated against `--rules` rules: a third host measures
//! (`host.cpu_percent` and such), a third process filters taken together
//! (`process.count`, `process.absent`, summed CPU), a third per-process measures. The
//! levels are set so that nothing fires: the steady state of a fleet, where almost every
//! evaluation changes nothing. Prints one JSON object: microseconds per snapshot, and
//! that as a share of one core at `--hosts` snapshots a second.
//!
//! Run: `cargo run --release --example alert_eval -- [--hosts 1000] [--rules 50]`.

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use procyon::alert::eval::Engine;
use procyon::alert::rule::{AlertRule, CompiledRule};
use procyon::sample::{Sampler, SamplerOptions};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Hosts, each evaluated once per round (one snapshot a second each).
    #[arg(long, default_value_t = 1000)]
    hosts: usize,
    /// Rules, every one watching every host.
    #[arg(long, default_value_t = 50)]
    rules: usize,
    /// Processes per snapshot at least (copies of this machine's are added).
    #[arg(long, default_value_t = 480)]
    processes: usize,
    /// Rounds over all hosts.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

fn rule(i: usize) -> Result<Arc<CompiledRule>, Box<dyn std::error::Error>> {
    let name = format!("rule-{i}");
    let json = match i % 6 {
        0 => json!({"name": name, "metric": "host.cpu_percent", "threshold": 1000, "for_secs": 60}),
        1 => json!({"name": name, "metric": "host.memory_percent", "threshold": 1000}),
        2 => json!({"name": name, "metric": "process.count", "process": "name:nginx", "threshold": 1000}),
        3 => json!({"name": name, "metric": "process.absent", "process": "name:s"}),
        4 => json!({"name": name, "metric": "process.cpu_percent", "process": "user:root cpu>1", "threshold": 1000}),
        _ => json!({"name": name, "metric": "process.rss_bytes", "process": "cmd:java", "threshold": 1e15}),
    };
    let rule: AlertRule = serde_json::from_value(json)?;
    Ok(Arc::new(rule.compile()?))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut base = Sampler::new(SamplerOptions::default()).sample();
    let own = base.processes.clone();
    while base.processes.len() < args.processes {
        let n = base.processes.len() as u32;
        base.processes.extend(own.iter().map(|p| {
            let mut p = p.clone();
            p.pid += 1_000_000 + n;
            p
        }));
    }
    let snapshots: Vec<_> = (0..args.hosts)
        .map(|h| {
            let mut s = base.clone();
            s.host.hostname = format!("host-{h}");
            s
        })
        .collect();
    let rules = (0..args.rules).map(rule).collect::<Result<Vec<_>, _>>()?;
    let mut engine = Engine::new();
    // One round to learn the hosts, not counted.
    for s in &snapshots {
        engine.snapshot(&rules, s, 0);
    }
    let started = Instant::now();
    let mut transitions = 0;
    for round in 1..=args.rounds {
        for s in &snapshots {
            transitions += engine.snapshot(&rules, s, round as i64 * 1000).len();
        }
    }
    let elapsed = started.elapsed();
    let per_snapshot_us = elapsed.as_secs_f64() * 1e6 / (args.rounds * args.hosts) as f64;
    let report = json!({
        "hosts": args.hosts,
        "rules": args.rules,
        "processes": base.processes.len(),
        "transitions": transitions,
        "us_per_snapshot": per_snapshot_us,
        "percent_of_a_core_at_1s": per_snapshot_us * args.hosts as f64 / 1e6 * 100.0,
    });
    println!("{report}");
    Ok(())
}
