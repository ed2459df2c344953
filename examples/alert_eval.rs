//! Cost of alert evaluation per snapshot: the rules a collector runs against every
//! snapshot it publishes (`alert/eval.rs`), without the store or the network.
//!
//! A snapshot of this machine (grown to at least `--processes` processes, as the
//! collector's load generator does) is relabelled as `--hosts` hosts, and each host's
//! snapshot is evaluated against `--rules` rules: a third host measures
//! (`host.cpu_percent` and such), a third process filters taken together
//! (`process.count`, `process.absent`, summed CPU), a third per-process measures. The
//! levels are set so that nothing fires: the steady state of a fleet, where almost every
//! evaluation changes nothing.
//!
//! Each round, `--moving` percent of every host's processes move their figures (CPU,
//! resident memory; 100 by default, as the load generator's agents do, the worst case
//! for the evaluation, which keeps the answers of unchanged processes) and one process
//! ends while another starts. Prints one JSON object: microseconds per snapshot, and
//! that as a share of one core at `--hosts` snapshots a second; the same in CPU time.
//!
//! Run: `cargo run --release --example alert_eval -- [--hosts 1000] [--rules 50] [--moving 100]`.

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use procyon::alert::eval::Engine;
use procyon::alert::rule::{AlertRule, CompiledRule};
use procyon::model::Snapshot;
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
    /// Percent of each host's processes whose figures move each round.
    #[arg(long, default_value_t = 100)]
    moving: u32,
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

/// This process's CPU time so far (user and system).
fn cpu_time() -> std::time::Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF);
    usage.map_or(std::time::Duration::ZERO, |u| {
        let t = |tv: nix::sys::time::TimeVal| {
            std::time::Duration::from_micros(tv.tv_sec() as u64 * 1_000_000 + tv.tv_usec() as u64)
        };
        t(u.user_time()) + t(u.system_time())
    })
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
    // Two snapshots a host, taken in turn: the second has the moving figures moved and
    // one process replaced by a newer one, so every round changes what a live fleet's
    // snapshots change.
    let mut moved = base.clone();
    let moving = args.moving.min(100) as usize;
    for (i, p) in moved.processes.iter_mut().enumerate() {
        if i % 100 < moving {
            p.cpu_percent = Some(p.cpu_percent.unwrap_or(0.0) + 0.5);
            p.rss_bytes = Some(p.rss_bytes.unwrap_or(0) + 4096);
        }
    }
    if let Some(p) = moved.processes.get_mut(base.processes.len() / 2) {
        p.pid = 3_999_999;
        p.start_time = Some(base.taken_at);
    }
    let snapshots: Vec<[Arc<Snapshot>; 2]> = (0..args.hosts)
        .map(|h| {
            [&base, &moved].map(|s| {
                let mut s = s.clone();
                s.host.hostname = format!("host-{h}");
                Arc::new(s)
            })
        })
        .collect();
    let rules = (0..args.rules).map(rule).collect::<Result<Vec<_>, _>>()?;
    let mut engine = Engine::new();
    // One round to learn the hosts, not counted.
    for [s, _] in &snapshots {
        engine.snapshot(&rules, s, 0);
    }
    let started = Instant::now();
    let cpu_started = cpu_time();
    let mut transitions = 0;
    for round in 1..=args.rounds {
        for pair in &snapshots {
            transitions += engine.snapshot(&rules, &pair[round % 2], round as i64 * 1000).len();
        }
    }
    let elapsed = started.elapsed();
    let evaluations = (args.rounds * args.hosts) as f64;
    let per_snapshot_us = elapsed.as_secs_f64() * 1e6 / evaluations;
    // CPU time as well as wall time: on a machine shared with other work the wall time
    // counts the waits for a core too.
    let cpu_us = (cpu_time() - cpu_started).as_secs_f64() * 1e6 / evaluations;
    let report = json!({
        "hosts": args.hosts,
        "rules": args.rules,
        "processes": base.processes.len(),
        "moving_percent": args.moving.min(100),
        "transitions": transitions,
        "us_per_snapshot": per_snapshot_us,
        "cpu_us_per_snapshot": cpu_us,
        "percent_of_a_core_at_1s": per_snapshot_us * args.hosts as f64 / 1e6 * 100.0,
        "cpu_percent_of_a_core_at_1s": cpu_us * args.hosts as f64 / 1e6 * 100.0,
    });
    println!("{report}");
    Ok(())
}
