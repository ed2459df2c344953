//! The `procyon` command: a thin command-line front over the library.
//!
//! Each subcommand parses its flags and calls the library; no measuring or acting is
//! done here.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use procyon::model::{ProcessAction, Snapshot};
use procyon::sample::{Sampler, SamplerOptions};

/// Procyon: processes and network of a machine or a fleet, live and over time.
#[derive(Parser, Debug)]
#[command(name = "procyon", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print one snapshot of this machine as JSON (processes, sockets, network, CPU, memory).
    Snapshot {
        /// Indent the JSON for reading.
        #[arg(long)]
        pretty: bool,
        /// Report this host name instead of the machine's.
        #[arg(long, env = "PROCYON_HOSTNAME")]
        hostname: Option<String>,
    },
    /// Show a live summary of this machine in the terminal until interrupted.
    Watch {
        /// Seconds between updates.
        #[arg(long, default_value_t = 2.0, value_parser = parse_interval)]
        interval: f64,
        /// How many of the busiest processes to list.
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
    /// Suspend, resume, terminate or kill a process of this machine.
    Act {
        /// What to do: suspend, resume, terminate or kill.
        action: ProcessAction,
        /// The process id.
        pid: u32,
        /// The start time the process had when you looked (RFC 3339, from a snapshot):
        /// refuses to act if the pid now belongs to another process.
        #[arg(long)]
        start_time: Option<chrono::DateTime<chrono::Utc>>,
        /// Act on the whole subtree, children first.
        #[arg(long)]
        tree: bool,
    },
}

fn parse_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if (0.2..=3600.0).contains(&v) { Ok(v) } else { Err("the interval must be between 0.2 and 3600 seconds".into()) }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Snapshot { pretty, hostname } => {
            let snapshot = Sampler::new(SamplerOptions { hostname }).sample();
            let mut out = std::io::stdout().lock();
            if pretty {
                serde_json::to_writer_pretty(&mut out, &snapshot)?;
            } else {
                serde_json::to_writer(&mut out, &snapshot)?;
            }
            writeln!(out)?;
        }
        Command::Watch { interval, top } => watch(Duration::from_secs_f64(interval), top)?,
        Command::Act { action, pid, start_time, tree } => {
            let target = procyon::control::Target { pid, start_time };
            let result =
                if tree { procyon::control::act_tree(target, action) } else { procyon::control::act(target, action) };
            match result {
                Ok(outcome) => {
                    println!("Process {pid} {} ({} signalled).", action.past_tense(), outcome.signalled.len());
                    for (pid, e) in &outcome.failed {
                        eprintln!("  {pid}: {}", e.message);
                    }
                }
                Err(e) => anyhow::bail!(e.message),
            }
        }
    }
    Ok(())
}

fn watch(interval: Duration, top: usize) -> anyhow::Result<()> {
    let mut live = procyon::sample::spawn(Sampler::new(SamplerOptions::default()), interval);
    let runtime = tokio::runtime::Builder::new_current_thread().build().context("cannot start the runtime")?;
    runtime.block_on(async {
        while live.changed().await.is_ok() {
            let Some(snapshot) = live.borrow_and_update().clone() else { continue };
            print_summary(&snapshot, top)?;
        }
        Ok(())
    })
}

fn print_summary(s: &Snapshot, top: usize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let gib = |b: u64| b as f64 / (1024.0 * 1024.0 * 1024.0);
    let kib = |b: f64| b / 1024.0;
    writeln!(
        out,
        "\n{}  {}  cpu {:5.1}%  mem {:.1}/{:.1} GiB  load {}  processes {}  sockets {}  net ↑{:.1} ↓{:.1} KiB/s",
        s.taken_at.format("%H:%M:%S"),
        s.host.hostname,
        s.cpu.total_percent,
        gib(s.memory.used_bytes),
        gib(s.memory.total_bytes),
        s.cpu.load_average.map_or("-".into(), |l| format!("{:.2}", l.one)),
        s.processes.len(),
        s.connections.len(),
        kib(s.network.total.sent_bytes_per_sec),
        kib(s.network.total.received_bytes_per_sec),
    )?;
    let mut busiest: Vec<_> = s.processes.iter().collect();
    busiest.sort_by(|a, b| b.cpu_percent.total_cmp(&a.cpu_percent));
    writeln!(out, "{:>8} {:<12} {:>6} {:>6}  {:<10} name", "pid", "user", "cpu%", "mem%", "status")?;
    for p in busiest.into_iter().take(top) {
        let user: String = printable(p.user.as_deref().unwrap_or("?")).chars().take(12).collect();
        writeln!(
            out,
            "{:>8} {:<12} {:>6.1} {:>6.1}  {:<10} {}",
            p.pid,
            user,
            p.cpu_percent,
            p.memory_percent,
            format!("{:?}", p.status).to_lowercase(),
            printable(&p.name)
        )?;
    }
    for e in &s.errors {
        writeln!(out, "note: {}", e.message)?;
    }
    Ok(())
}

/// Process names are chosen by whoever started the process: control characters in them
/// could move the cursor or recolour the terminal, so they are shown as `?`.
fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}
