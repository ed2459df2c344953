//! `procyon-agent`: samples this machine on a fixed interval for a collector.
//!
//! For now it writes each snapshot as one line of JSON (JSON Lines) to standard output,
//! which is enough to pipe into other tools; streaming to a collector builds on the same
//! loop.

use std::io::Write;
use std::time::Duration;

use clap::Parser;
use procyon::sample::{Sampler, SamplerOptions};

/// Samples this machine and writes one JSON snapshot per line to standard output.
#[derive(Parser, Debug)]
#[command(name = "procyon-agent", version, about)]
struct Args {
    /// Seconds between snapshots.
    #[arg(long, env = "PROCYON_INTERVAL", default_value_t = 2.0)]
    interval: f64,
    /// Report this host name instead of the machine's.
    #[arg(long, env = "PROCYON_HOSTNAME")]
    hostname: Option<String>,
    /// Write one snapshot and exit.
    #[arg(long)]
    once: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !(0.2..=3600.0).contains(&args.interval) {
        anyhow::bail!("--interval must be between 0.2 and 3600 seconds");
    }
    let interval = Duration::from_secs_f64(args.interval);
    let mut sampler = Sampler::new(SamplerOptions { hostname: args.hostname });
    let mut out = std::io::stdout().lock();
    loop {
        let started = std::time::Instant::now();
        serde_json::to_writer(&mut out, &sampler.sample())?;
        writeln!(out)?;
        out.flush()?;
        if args.once {
            return Ok(());
        }
        if let Some(rest) = interval.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}
