//! Load generator for the collector: simulated agents on loopback, bounded in number and
//! in time, that stop by themselves and print one JSON object.
//!
//! Each simulated agent opens `WS /ws/agent` with an API key, says hello with the
//! protocol version and its own host name, and sends binary snapshot frames at a fixed
//! interval, exactly as `procyon-agent` does. Ingest latency is the time from writing a
//! frame to reading its `ack`: the collector has decoded, checked and stored it by then.
//!
//! Snapshots are realistic: one real [`Sampler`] snapshot of this machine, grown to at
//! least `--processes` processes and `--connections` sockets (the reference machine of
//! the design's budgets has about 480 and 400; a small container has far fewer), then
//! varied per agent and per tick (CPU, memory, I/O and network figures move, a process
//! comes and goes). Frames are prepared before the measured window, so that encoding
//! thousands of them does not take CPU from the collector while it is measured: what is
//! measured is the collector, not the generator. [`encode_frame`] is the one place that
//! turns a snapshot into wire bytes.
//!
//! Three modes:
//!
//! - `ingest`: `--agents` agents at `--interval` for `--duration`;
//! - `ramp`: steps of agent counts (up to 1,000 at 1 s); each step is an `ingest` run, and
//!   the ramp stops at the first step not sustained (a failure, or p99 over `--p99-ms`
//!   twice in a row: one retry absorbs a stall of another program on a shared
//!   machine). The highest rate sustained is reported;
//! - `fanout`: `--clients` dashboards on `/ws/process-snapshots/?hostname=X` (signed in
//!   as admin) and one agent sending to host X; the time from sending a snapshot to each
//!   client receiving it;
//! - `soak`: `--agents` agents and `--dashboards` dashboards (each following one agent's
//!   host, as the dashboard's host page does) for a long `--duration`, reconnecting as
//!   real ones do when a connection ends; every `--sample-every` the collector's resident
//!   memory, open files, CPU and the ingest latency of that window are taken as one
//!   sample. Frames are made as they are sent rather than prepared: an hour of them
//!   would not fit in memory.
//!
//! Bounds: only loopback collectors; at most [`MAX_AGENTS`] agents, [`MAX_CLIENTS`]
//! clients, [`MAX_DURATION`] per run, [`MAX_STEPS`] ramp steps; unanswered frames are
//! waited for at most [`DRAIN`] after the last send. `main` also arms a watchdog that
//! ends the process if a run somehow outlives all of these.
//!
//! ```text
//! cargo run --release --example loadgen -- --collector http://127.0.0.1:7450 \
//!     --api-key-file key.txt ramp
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, TimeDelta, Utc};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use procyon::model::agent::{
    AgentMessage, CollectorMessage, Encoding, MAX_FRAME_BYTES, OLDEST_PROTOCOL, PROTOCOL_VERSION, delta_frame,
    encode_snapshot, full_frame,
};
use procyon::model::delta::SnapshotDelta;
use procyon::model::{ConnectionSample, ProcessSample, Protocol, Snapshot, TcpState};
use procyon::sample::{Sampler, SamplerOptions};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Most simulated agents in one run.
pub const MAX_AGENTS: usize = 2000;
/// Most WebSocket clients in the fan-out mode.
pub const MAX_CLIENTS: usize = 1000;
/// Longest measured window of one run (one ramp step).
pub const MAX_DURATION: Duration = Duration::from_secs(300);
/// Longest soak.
pub const MAX_SOAK: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most steps in a ramp.
pub const MAX_STEPS: usize = 20;
/// Shortest and longest interval between two snapshots of one agent.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// See [`MIN_INTERVAL`].
pub const MAX_INTERVAL: Duration = Duration::from_secs(60);
/// How long after its last send an agent waits for the acks still due.
pub const DRAIN: Duration = Duration::from_secs(10);
/// Longest wait for one connection (TCP, upgrade, hello and welcome).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Connections opened at the same time, so a thousand agents do not hit the listen
/// backlog at once (real fleets are spread out too).
const CONNECT_CONCURRENCY: usize = 64;
/// Most bytes of frames prepared for one run.
const MAX_PREPARED_BYTES: usize = 1 << 30;
/// Pause between two ramp steps, so the collector starts each one settled.
const STEP_PAUSE: Duration = Duration::from_secs(2);
/// Tries more of a ramp step that lost nothing but missed the p99 limit.
const STEP_RETRIES: usize = 1;
/// A step whose sends ran later than this (p99) measured the generator, not the
/// collector: it is reported as not valid.
const MAX_SEND_LAG_MS: f64 = 50.0;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Command line.
#[derive(Parser, Debug, Clone)]
#[command(about = "Simulated agents against a collector on loopback; prints one JSON object")]
pub struct Cli {
    /// The collector's base URL, on loopback (e.g. http://127.0.0.1:7450).
    #[arg(long)]
    pub collector: String,
    /// A file holding an API key (from `procyon apikey create`), for the agents.
    #[arg(long)]
    pub api_key_file: PathBuf,
    /// Processes per snapshot: the machine's own, plus copies up to this many.
    #[arg(long, default_value_t = 480)]
    pub processes: usize,
    /// Sockets per snapshot: the machine's own, plus copies up to this many.
    #[arg(long, default_value_t = 400)]
    pub connections: usize,
    /// The collector's process id, to report its CPU use during each window.
    #[arg(long)]
    pub collector_pid: Option<u32>,
    /// Prefix of the simulated host names (a unique one is made up when absent).
    #[arg(long)]
    pub host_prefix: Option<String>,
    /// The agent protocol the simulated agents speak: 3 (MessagePack frames) or 2 (JSON
    /// frames, the previous release's), to compare the two in one run.
    #[arg(long, default_value_t = PROTOCOL_VERSION,
          value_parser = clap::value_parser!(u32).range(i64::from(OLDEST_PROTOCOL)..=i64::from(PROTOCOL_VERSION)))]
    pub protocol: u32,
    /// A label every simulated host carries, sent in its hello as `procyon-agent --label`
    /// does (`env=load`; repeat it for more).
    #[arg(long = "label", value_name = "KEY=VALUE",
          value_parser = |s: &str| procyon::model::labels::parse_pair(s).map_err(|e| e.to_string()))]
    pub labels: Vec<(String, String)>,
    /// What to run.
    #[command(subcommand)]
    pub mode: Mode,
}

/// The runs.
#[derive(Subcommand, Debug, Clone)]
pub enum Mode {
    /// A fixed number of agents at a fixed interval for a fixed time.
    Ingest {
        /// Simulated agents.
        #[arg(long, default_value_t = 100)]
        agents: usize,
        /// Seconds between two snapshots of one agent.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// The p99 ingest latency a sustained rate stays under, in milliseconds.
        #[arg(long, default_value_t = 100.0)]
        p99_ms: f64,
    },
    /// Steps of agent counts; stops at the first one not sustained.
    Ramp {
        /// Agent counts, in increasing order.
        #[arg(long, value_delimiter = ',', default_value = "10,25,50,100,150,200,300,400,500,750,1000")]
        steps: Vec<usize>,
        /// Seconds between two snapshots of one agent.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Seconds of sending per step.
        #[arg(long, default_value_t = 10.0)]
        step_duration: f64,
        /// The p99 ingest latency a sustained rate stays under, in milliseconds.
        #[arg(long, default_value_t = 100.0)]
        p99_ms: f64,
    },
    /// Dashboards on the live stream of one host, fed by one agent.
    Fanout {
        /// WebSocket clients on `/ws/process-snapshots/?hostname=`.
        #[arg(long, default_value_t = 100)]
        clients: usize,
        /// Seconds between two snapshots.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// A file holding the password of the collector's `admin` user.
        #[arg(long)]
        admin_password_file: PathBuf,
        /// Another collector on the same PostgreSQL database that the dashboards follow
        /// instead (the agent still sends to `--collector`): the time a snapshot takes to
        /// reach a dashboard across collectors.
        #[arg(long)]
        watch_collector: Option<String>,
    },
    /// Agents and dashboards for a long time, sampling the collector as it goes.
    Soak {
        /// Simulated agents.
        #[arg(long, default_value_t = 200)]
        agents: usize,
        /// Dashboards, each following one agent's host.
        #[arg(long, default_value_t = 20)]
        dashboards: usize,
        /// Seconds between two snapshots of one agent.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Seconds of the whole soak.
        #[arg(long, default_value_t = 3600.0)]
        duration: f64,
        /// Seconds between two samples of the collector.
        #[arg(long, default_value_t = 10.0)]
        sample_every: f64,
        /// A file holding the password of the collector's `admin` user.
        #[arg(long)]
        admin_password_file: PathBuf,
    },
}

impl Mode {
    /// The longest this mode may run, all bounds included, so a watchdog can be armed.
    pub fn time_limit(&self) -> Duration {
        // Connecting, preparing frames and draining, on top of the windows themselves.
        let overhead = CONNECT_TIMEOUT * 2 + DRAIN + Duration::from_secs(120);
        let capped = |secs: f64| Duration::from_secs_f64(secs.clamp(0.0, MAX_DURATION.as_secs_f64()));
        match self {
            Mode::Ingest { duration, .. } | Mode::Fanout { duration, .. } => capped(*duration) + overhead,
            Mode::Ramp { steps, step_duration, .. } => {
                let per_step = (capped(*step_duration) + overhead + STEP_PAUSE) * (1 + STEP_RETRIES as u32);
                per_step * steps.len().min(MAX_STEPS) as u32
            }
            Mode::Soak { duration, .. } => {
                Duration::from_secs_f64(duration.clamp(0.0, MAX_SOAK.as_secs_f64())) + overhead
            }
        }
    }
}

#[allow(dead_code)] // the integration test includes this file and calls `run` instead
fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The last bound: whatever happens, the process ends.
    let limit = cli.mode.time_limit();
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("loadgen: still running after {} s, its hard limit; stopping", limit.as_secs());
        std::process::exit(3);
    });
    let report = run(cli)?;
    println!("{report}");
    Ok(())
}

/// Runs what `cli` asks for and returns the report.
pub fn run(cli: Cli) -> anyhow::Result<Value> {
    let collector = Collector::new(&cli)?;
    let prefix = cli.host_prefix.clone().unwrap_or_else(|| format!("loadgen-{}", Utc::now().timestamp_millis()));
    // Every bound is checked before the machine is sampled or anything is sent.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let template = || Arc::new(template(cli.processes, cli.connections));
    match &cli.mode {
        Mode::Ingest { agents, interval, duration, p99_ms } => {
            let plan = Plan::new(*agents, *interval, *duration, *p99_ms)?;
            let mut report = runtime.block_on(ingest(&collector, &template(), &prefix, &plan))?;
            report["mode"] = json!("ingest");
            Ok(report)
        }
        Mode::Ramp { steps, interval, step_duration, p99_ms } => {
            let plans = ramp_plans(steps, *interval, *step_duration, *p99_ms)?;
            runtime.block_on(ramp(&collector, &template(), &prefix, &plans))
        }
        Mode::Fanout { clients, interval, duration, admin_password_file, watch_collector } => {
            if *clients == 0 || *clients > MAX_CLIENTS {
                bail!("--clients must be between 1 and {MAX_CLIENTS}, not {clients}");
            }
            let plan = Plan::new(1, *interval, *duration, f64::INFINITY)?;
            let password = read_secret(admin_password_file, "admin password")?;
            let watch = match watch_collector {
                Some(base) => collector.at(base)?,
                None => collector.clone(),
            };
            runtime.block_on(fanout(&collector, &watch, &template(), &prefix, &plan, *clients, &password))
        }
        Mode::Soak { agents, dashboards, interval, duration, sample_every, admin_password_file } => {
            let plan = SoakPlan::new(*agents, *dashboards, *interval, *duration, *sample_every)?;
            if collector.pid.is_none() {
                bail!("a soak samples the collector: give its --collector-pid");
            }
            let password = read_secret(admin_password_file, "admin password")?;
            runtime.block_on(soak(&collector, &template(), &prefix, &plan, &password))
        }
    }
}

/// The collector under test.
#[derive(Clone)]
struct Collector {
    /// `http://host:port`, no trailing slash.
    base: String,
    /// The same as `ws://host:port`.
    ws_base: String,
    key: String,
    pid: Option<u32>,
    /// The agent protocol spoken.
    protocol: u32,
    /// The labels of every simulated host.
    labels: procyon::model::labels::Labels,
}

impl Collector {
    fn new(cli: &Cli) -> anyhow::Result<Collector> {
        let (base, ws_base) = loopback_bases(&cli.collector)?;
        let key = read_secret(&cli.api_key_file, "API key")?;
        let labels = cli.labels.iter().cloned().collect();
        Ok(Collector { base, ws_base, key, pid: cli.collector_pid, protocol: cli.protocol, labels })
    }

    /// The same, at another collector's URL (on the same database: same users and keys).
    fn at(&self, url: &str) -> anyhow::Result<Collector> {
        let (base, ws_base) = loopback_bases(url)?;
        Ok(Collector { base, ws_base, pid: None, ..self.clone() })
    }
}

/// `http://host:port` and `ws://host:port` of a collector's URL, which must be on loopback.
fn loopback_bases(url: &str) -> anyhow::Result<(String, String)> {
    let base = url.trim_end_matches('/').to_owned();
    let parsed = reqwest::Url::parse(&base).with_context(|| format!("--collector {base}: not a URL"))?;
    if parsed.scheme() != "http" {
        bail!("--collector {base}: only http:// collectors on loopback are load-tested");
    }
    let host = parsed.host_str().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("--collector {base}: the load generator only runs against a collector on loopback");
    }
    let authority = base.split_once("://").map_or(base.as_str(), |(_, rest)| rest);
    let ws_base = format!("ws://{authority}");
    Ok((base, ws_base))
}

/// The first line of a file, trimmed: keys and passwords never go on a command line.
fn read_secret(path: &std::path::Path, what: &str) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the {what} from {}", path.display()))?;
    let secret = text.lines().next().unwrap_or("").trim().to_owned();
    if secret.is_empty() {
        bail!("{} holds no {what}", path.display());
    }
    Ok(secret)
}

/// One run's shape, checked against the hard bounds.
#[derive(Clone, Debug)]
struct Plan {
    agents: usize,
    interval: Duration,
    ticks: u32,
    p99_ms: f64,
}

impl Plan {
    fn new(agents: usize, interval: f64, duration: f64, p99_ms: f64) -> anyhow::Result<Plan> {
        if agents == 0 || agents > MAX_AGENTS {
            bail!("--agents must be between 1 and {MAX_AGENTS}, not {agents}");
        }
        let min = MIN_INTERVAL.as_secs_f64();
        let max = MAX_INTERVAL.as_secs_f64();
        if !(min..=max).contains(&interval) {
            bail!("--interval must be between {min} and {max} seconds, not {interval}");
        }
        if !(duration > 0.0 && duration <= MAX_DURATION.as_secs_f64()) {
            bail!("--duration must be more than 0 and at most {} seconds, not {duration}", MAX_DURATION.as_secs());
        }
        if p99_ms.is_nan() || p99_ms <= 0.0 {
            bail!("--p99-ms must be more than 0");
        }
        // At least one snapshot per agent, even for a window shorter than the interval.
        let ticks = ((duration / interval).floor() as u32).max(1);
        Ok(Plan { agents, interval: Duration::from_secs_f64(interval), ticks, p99_ms })
    }

    fn window(&self) -> Duration {
        self.interval * self.ticks
    }

    /// Snapshots a second the plan asks for.
    fn offered_per_sec(&self) -> f64 {
        self.agents as f64 / self.interval.as_secs_f64()
    }
}

fn ramp_plans(steps: &[usize], interval: f64, duration: f64, p99_ms: f64) -> anyhow::Result<Vec<Plan>> {
    if steps.is_empty() || steps.len() > MAX_STEPS {
        bail!("--steps needs between 1 and {MAX_STEPS} agent counts");
    }
    if steps.windows(2).any(|w| w[0] >= w[1]) {
        bail!("--steps must increase: {steps:?}");
    }
    steps.iter().map(|&agents| Plan::new(agents, interval, duration, p99_ms)).collect()
}

// ---------------------------------------------------------------------------------------
// Snapshots

/// One real snapshot of this machine, grown to at least `processes` processes and
/// `connections` sockets by copying its own (new pids, ports and parents among the
/// originals), so every simulated host looks like a plausible busy server.
fn template(processes: usize, connections: usize) -> Snapshot {
    let mut snapshot = Sampler::new(SamplerOptions::default()).sample();
    let originals: Vec<ProcessSample> = snapshot.processes.iter().filter(|p| !p.kernel_thread).cloned().collect();
    let parents: Vec<u32> = originals.iter().map(|p| p.pid).collect();
    let mut next_pid = 100_000;
    let mut i = 0;
    while snapshot.processes.len() < processes && !originals.is_empty() {
        let mut copy = originals[i % originals.len()].clone();
        copy.pid = next_pid;
        copy.ppid = Some(parents[i % parents.len()]);
        snapshot.processes.push(copy);
        next_pid += 1;
        i += 1;
    }
    let pids: Vec<u32> = snapshot.processes.iter().map(|p| p.pid).collect();
    let pattern: Vec<ConnectionSample> = if snapshot.connections.is_empty() {
        // A machine without sockets (a bare container): a client connection to a service.
        vec![ConnectionSample {
            protocol: Protocol::Tcp,
            local_address: IpAddr::from([10, 0, 0, 2]),
            local_port: 40_000,
            remote_address: Some(IpAddr::from([10, 0, 0, 3])),
            remote_port: Some(5432),
            state: Some(TcpState::Established),
            pid: pids.first().copied(),
        }]
    } else {
        snapshot.connections.clone()
    };
    let mut i = 0usize;
    while snapshot.connections.len() < connections {
        let mut copy = pattern[i % pattern.len()].clone();
        copy.local_port = 20_000 + (i % 40_000) as u16;
        if copy.pid.is_some() && !pids.is_empty() {
            copy.pid = Some(pids[i % pids.len()]);
        }
        snapshot.connections.push(copy);
        i += 1;
    }
    snapshot.processes.sort_by_key(|p| p.pid);
    snapshot
}

/// A small deterministic generator (SplitMix64): the same agent and seq always give the
/// same snapshot, so runs are comparable.
struct Jitter(u64);

impl Jitter {
    fn new(agent: usize, seq: u64) -> Jitter {
        Jitter((agent as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq.wrapping_mul(0xD1B5_4A32_D192_ED69))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (self.next() >> 11) as f64 / (1u64 << 53) as f64 * (hi - lo)
    }
}

/// What agent `agent` reports at its `tick`-th snapshot (seq `seq`), taken at `taken_at`.
fn evolve(
    template: &Snapshot,
    hostname: &str,
    agent: usize,
    tick: u32,
    seq: u64,
    taken_at: DateTime<Utc>,
    interval: Duration,
) -> Snapshot {
    let mut s = template.clone();
    let mut r = Jitter::new(agent, seq);
    s.host.hostname = hostname.to_owned();
    s.host.id = format!("{hostname}-id");
    s.seq = seq;
    s.taken_at = taken_at;
    s.interval_ms = interval.as_millis() as u64;
    let secs = interval.as_secs_f64();
    let vary = |r: &mut Jitter, v: f32, spread: f64, max: f64| {
        (f64::from(v) * r.between(1.0 - spread, 1.0 + spread)).min(max) as f32
    };
    s.cpu.total_percent = vary(&mut r, s.cpu.total_percent.max(1.0), 0.3, 100.0);
    for core in &mut s.cpu.per_core_percent {
        *core = vary(&mut r, core.max(1.0), 0.3, 100.0);
    }
    // The template is a sampler's snapshot, which knows every figure.
    let total = s.memory.total_bytes.unwrap_or(1).max(1);
    s.memory.used_bytes = ((s.memory.used_bytes as f64 * r.between(0.98, 1.02)) as u64).min(total);
    s.memory.available_bytes = Some(total - s.memory.used_bytes);
    for p in &mut s.processes {
        let cores = f64::from(s.host.logical_cores.unwrap_or(1).max(1));
        p.cpu_percent = Some(vary(&mut r, p.cpu_percent.unwrap_or(0.0), 0.5, 100.0 * cores));
        let rss = (p.rss_bytes.unwrap_or(0) as f64 * r.between(0.99, 1.01)) as u64;
        p.rss_bytes = Some(rss);
        p.memory_percent = Some((rss as f64 / total as f64 * 100.0).min(100.0) as f32);
        if let Some(read) = &mut p.disk_read_bytes {
            *read += (r.between(0.0, 4096.0) * f64::from(tick)) as u64;
        }
    }
    // One process ends and a new one starts each tick, as on a live server.
    let churn = (seq as usize) % s.processes.len().max(1);
    if let Some(p) = s.processes.get_mut(churn).filter(|p| p.pid > 1) {
        p.pid = 400_000 + (seq % 100_000) as u32;
        p.start_time = Some(taken_at - TimeDelta::seconds(1));
        p.cpu_percent = Some(0.0);
    }
    let t = s.network.total.get_or_insert_with(Default::default);
    t.sent_bytes_per_sec = r.between(10_000.0, 2_000_000.0);
    t.received_bytes_per_sec = r.between(10_000.0, 2_000_000.0);
    t.sent_bytes += (t.sent_bytes_per_sec * secs * f64::from(tick)) as u64;
    t.received_bytes += (t.received_bytes_per_sec * secs * f64::from(tick)) as u64;
    if let Some(c) = s.connections.first_mut() {
        c.remote_port = Some(30_000 + (seq % 30_000) as u16);
    }
    s
}

/// Turns a simulated agent's snapshot into the bytes of its binary frame, as a real
/// agent does: a delta against `previous`, the snapshot this agent sent before (every
/// frame of a run is acknowledged, and the collector handles one connection's frames in
/// order, so it holds that base), and a keyframe when there is none.
fn encode_frame(previous: Option<&Snapshot>, snapshot: &Snapshot, protocol: u32) -> std::io::Result<Vec<u8>> {
    let encoding = Encoding::of_protocol(protocol);
    match previous {
        Some(base) => delta_frame(&SnapshotDelta::between(base, snapshot), encoding),
        None => full_frame(&encode_snapshot(snapshot)?, snapshot, encoding),
    }
}

/// Who a simulated agent is: its index, its host name and the seq it continues from.
#[derive(Clone)]
struct AgentId {
    index: usize,
    hostname: String,
    last_seq: u64,
}

/// A connected simulated agent.
struct SimAgent {
    id: AgentId,
    ws: Ws,
}

/// Frames of one agent, in send order.
struct Frames {
    /// (seq, frame bytes).
    frames: Vec<(u64, Vec<u8>)>,
}

/// Sizes of what is sent, for the report.
#[derive(Default, Clone, Copy)]
struct Sizes {
    json_bytes: usize,
    frame_bytes: usize,
    frames: usize,
}

/// Prepares every frame of a run, on all cores, before the measured window.
fn prepare(
    protocol: u32,
    template: &Snapshot,
    agents: &[AgentId],
    plan: &Plan,
    wall_start: DateTime<Utc>,
) -> anyhow::Result<(Vec<Frames>, Sizes)> {
    // Check the memory bound on one agent's first two frames (a keyframe, then deltas)
    // before preparing thousands.
    let now = Utc::now();
    let first = evolve(template, "probe", 0, 0, 1, now, plan.interval);
    let second =
        evolve(template, "probe", 0, 1, 2, now + TimeDelta::from_std(plan.interval).unwrap_or_default(), plan.interval);
    let keyframe = encode_frame(None, &first, protocol)?.len();
    let delta = encode_frame(Some(&first), &second, protocol)?.len();
    let per_agent = keyframe.saturating_add(delta.saturating_mul(plan.ticks.saturating_sub(1) as usize));
    let estimate = per_agent.saturating_mul(agents.len());
    if estimate > MAX_PREPARED_BYTES {
        bail!(
            "this run needs about {} MiB of prepared frames, more than {} MiB: use fewer agents or a shorter duration",
            estimate >> 20,
            MAX_PREPARED_BYTES >> 20
        );
    }
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let chunk = agents.len().div_ceil(threads).max(1);
    let per_agent = |a: &AgentId| -> std::io::Result<(Frames, Sizes)> {
        let phase = phase(a.index, agents.len(), plan.interval);
        let mut sizes = Sizes::default();
        let mut frames = Vec::with_capacity(plan.ticks as usize);
        let mut previous: Option<Snapshot> = None;
        for tick in 0..plan.ticks {
            let seq = a.last_seq + 1 + u64::from(tick);
            let offset = phase + plan.interval * tick;
            let taken_at = wall_start + TimeDelta::from_std(offset).unwrap_or_default();
            let snapshot = evolve(template, &a.hostname, a.index, tick, seq, taken_at, plan.interval);
            let bytes = encode_frame(previous.as_ref(), &snapshot, protocol)?;
            if tick == 0 {
                sizes.json_bytes = serde_json::to_vec(&snapshot)?.len();
            }
            sizes.frame_bytes += bytes.len();
            sizes.frames += 1;
            frames.push((seq, bytes));
            previous = Some(snapshot);
        }
        Ok((Frames { frames }, sizes))
    };
    let results: Vec<std::io::Result<Vec<(Frames, Sizes)>>> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            agents.chunks(chunk).map(|part| scope.spawn(move || part.iter().map(per_agent).collect())).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(std::io::Error::other("a thread panicked"))))
            .collect()
    });
    let mut all = Vec::with_capacity(agents.len());
    let mut sizes = Sizes::default();
    for part in results {
        for (frames, s) in part? {
            sizes.json_bytes = sizes.json_bytes.max(s.json_bytes);
            sizes.frame_bytes += s.frame_bytes;
            sizes.frames += s.frames;
            all.push(frames);
        }
    }
    Ok((all, sizes))
}

/// When in each interval agent `index` of `count` sends: spread evenly, as a real fleet
/// is, rather than all at the same instant.
fn phase(index: usize, count: usize, interval: Duration) -> Duration {
    interval.mul_f64(index as f64 / count.max(1) as f64)
}

// ---------------------------------------------------------------------------------------
// The agent channel

/// Opens `/ws/agent` for `hostname`, says hello and waits for the welcome.
async fn connect_agent(
    collector: &Collector,
    template: &Snapshot,
    index: usize,
    hostname: String,
) -> anyhow::Result<SimAgent> {
    let mut request = format!("{}/ws/agent", collector.ws_base).into_client_request()?;
    request.headers_mut().insert("Authorization", format!("Api-Key {}", collector.key).parse()?);
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(MAX_FRAME_BYTES);
    config.max_frame_size = Some(MAX_FRAME_BYTES);
    let open = async {
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), false).await?;
        let mut host = template.host.clone();
        host.hostname = hostname.clone();
        host.id = format!("{hostname}-id");
        let hello = AgentMessage::Hello {
            protocol: collector.protocol,
            agent_version: format!("loadgen/{}", env!("CARGO_PKG_VERSION")),
            host,
            allow_control: false,
            machine_id: None,
            details: false,
            labels: collector.labels.clone(),
        };
        ws.send(Message::Text(serde_json::to_string(&hello)?.into())).await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<CollectorMessage>(&text)? {
                    CollectorMessage::Welcome { last_seq, .. } => {
                        break Ok(SimAgent { id: AgentId { index, hostname, last_seq }, ws });
                    }
                    CollectorMessage::Error { code, message } => bail!("refused ({code}): {message}"),
                    other => bail!("expected a welcome, got {other:?}"),
                },
                Some(Ok(Message::Close(frame))) => bail!("closed before the welcome: {frame:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => bail!("closed before the welcome"),
            }
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, open)
        .await
        .map_err(|_| anyhow!("no welcome within {} s", CONNECT_TIMEOUT.as_secs()))?
        .with_context(|| format!("agent {index}"))
}

/// Connects agents `0..count`, a few at a time.
async fn connect_all(
    collector: &Collector,
    template: &Snapshot,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<SimAgent>> {
    let results: Vec<anyhow::Result<SimAgent>> = futures_util::stream::iter(0..count)
        .map(|i| connect_agent(collector, template, i, format!("{prefix}-{i}")))
        .buffered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let failures: Vec<String> = results.iter().filter_map(|r| r.as_ref().err()).map(|e| format!("{e:#}")).collect();
    if let Some(first) = failures.first() {
        bail!("{} of {count} agents could not connect; the first: {first}", failures.len());
    }
    Ok(results.into_iter().flatten().collect())
}

/// What one agent saw during a run.
#[derive(Default)]
struct Outcome {
    sent: usize,
    acked: usize,
    rejected: usize,
    errors: usize,
    unacked: usize,
    disconnected: bool,
    first_problem: Option<String>,
    /// Send to ack, per acknowledged frame.
    latencies_ms: Vec<f64>,
    /// How late each send was against its schedule.
    lags_ms: Vec<f64>,
    /// When each frame was written, by seq (for the fan-out).
    sent_at: Vec<(u64, Instant)>,
}

impl Outcome {
    fn problem(&mut self, what: String) {
        if self.first_problem.is_none() {
            self.first_problem = Some(what);
        }
    }
}

/// Sends `frames` on schedule from `start`, reads acks, and waits at most [`DRAIN`]
/// after the last send for those still due.
async fn drive(mut agent: SimAgent, frames: Frames, count: usize, plan: Plan, start: Instant) -> Outcome {
    let mut out = Outcome::default();
    let phase = phase(agent.id.index, count, plan.interval);
    let mut pending: HashMap<u64, Instant> = HashMap::new();
    let mut queue = frames.frames.into_iter().enumerate();
    let mut next = queue.next();
    let mut drain_until: Option<Instant> = None;
    loop {
        let due = next.as_ref().map(|(tick, _)| start + phase + plan.interval * *tick as u32);
        if due.is_none() {
            if pending.is_empty() {
                break;
            }
            drain_until.get_or_insert_with(|| Instant::now() + DRAIN);
        }
        let wake = due.or(drain_until).unwrap_or_else(Instant::now);
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {
                let Some((_, (seq, bytes))) = next.take() else {
                    // The drain time is over: what is still pending never got its ack.
                    out.unacked = pending.len();
                    out.problem(format!("{} frames without an ack {} s after the last send", pending.len(), DRAIN.as_secs()));
                    break;
                };
                let now = Instant::now();
                out.lags_ms.push(ms(now - wake));
                if let Err(e) = agent.ws.send(Message::Binary(bytes.into())).await {
                    out.disconnected = true;
                    out.problem(format!("send failed: {e}"));
                    break;
                }
                pending.insert(seq, now);
                out.sent_at.push((seq, now));
                out.sent += 1;
                next = queue.next();
            }
            message = agent.ws.next() => {
                let now = Instant::now();
                match message {
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<CollectorMessage>(&text) {
                        Ok(CollectorMessage::Ack { seq }) => {
                            if let Some(at) = pending.remove(&seq) {
                                out.acked += 1;
                                out.latencies_ms.push(ms(now - at));
                            }
                        }
                        Ok(CollectorMessage::Rejected { seq, message }) => {
                            pending.remove(&seq);
                            out.rejected += 1;
                            out.problem(format!("seq {seq} rejected: {message}"));
                        }
                        Ok(CollectorMessage::Error { code, message }) => {
                            out.errors += 1;
                            out.problem(format!("error {code}: {message}"));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            out.errors += 1;
                            out.problem(format!("unreadable message: {e}"));
                        }
                    },
                    Some(Ok(Message::Close(frame))) => {
                        out.disconnected = true;
                        out.problem(format!("the collector closed the connection: {frame:?}"));
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        out.disconnected = true;
                        out.problem(format!("connection error: {e}"));
                        break;
                    }
                    None => {
                        out.disconnected = true;
                        out.problem("the connection closed".into());
                        break;
                    }
                }
            }
        }
    }
    if out.disconnected {
        out.unacked = pending.len();
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), agent.ws.close(None)).await;
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentiles of `values` (sorted in place) as a JSON object.
fn percentiles(values: &mut [f64]) -> Value {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if values.is_empty() {
            return Value::Null;
        }
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        json!(values[rank - 1])
    };
    json!({ "p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": at(1.0), "count": values.len() })
}

/// CPU seconds a process has used (user + system, all threads), from `/proc/PID/stat`;
/// `None` where there is no `/proc`.
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = pid.map_or_else(|| "/proc/self/stat".to_owned(), |p| format!("/proc/{p}/stat"));
    let stat = std::fs::read_to_string(path).ok()?;
    // The name in parentheses may hold spaces: fields count from after its closing one.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every mainstream Linux build; reading it needs sysconf.
    Some(ticks / 100.0)
}

/// Resident memory of a process in KiB, from `/proc/PID/status`; `None` where there is
/// no `/proc` or no pid.
fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// How long after its agents leave the collector's memory is read again: sessions end
/// within moments, and an allocator hands freed memory back after a short delay.
const SETTLE: Duration = Duration::from_secs(5);

/// CPU use of this process and of the collector over a window, as % of one core.
struct CpuWindow {
    started: Instant,
    own: Option<f64>,
    collector: Option<f64>,
    collector_pid: Option<u32>,
}

impl CpuWindow {
    fn start(collector_pid: Option<u32>) -> CpuWindow {
        CpuWindow {
            started: Instant::now(),
            own: cpu_seconds(None),
            collector: collector_pid.and_then(|p| cpu_seconds(Some(p))),
            collector_pid,
        }
    }

    fn finish(&self) -> Value {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let percent = |before: Option<f64>, after: Option<f64>| match (before, after) {
            (Some(b), Some(a)) => json!((a - b) / secs * 100.0),
            _ => Value::Null,
        };
        json!({
            "loadgen_cpu_percent": percent(self.own, cpu_seconds(None)),
            "collector_cpu_percent": percent(self.collector, self.collector_pid.and_then(|p| cpu_seconds(Some(p)))),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Runs

/// One run: connect, prepare, send for the window, drain, report.
///
/// The collector's resident memory is read before the agents connect, at the end of the
/// window (all of them connected) and once they have left: per connected host is the
/// difference of the first two over the agents.
async fn ingest(collector: &Collector, template: &Snapshot, prefix: &str, plan: &Plan) -> anyhow::Result<Value> {
    let before = rss_kib(collector.pid);
    let agents = connect_all(collector, template, prefix, plan.agents).await?;
    let (mut report, _) = send_window(collector, template, agents, plan).await?;
    // `send_window` reads the memory while every agent is still connected.
    let connected = report["memory"]["connected_kib"].as_u64();
    tokio::time::sleep(SETTLE).await;
    let after = rss_kib(collector.pid);
    let per_host = match (before, connected) {
        (Some(b), Some(c)) => json!((c as f64 - b as f64) / plan.agents as f64),
        _ => Value::Null,
    };
    report["memory"] = json!({
        "before_kib": before,
        "connected_kib": connected,
        "after_kib": after,
        "after_settle_s": SETTLE.as_secs(),
        "per_connected_host_kib": per_host,
    });
    report["p99_limit_ms"] = json!(plan.p99_ms);
    Ok(report)
}

/// Prepares and sends one window with connected `agents`; the report and each agent's
/// outcome.
async fn send_window(
    collector: &Collector,
    template: &Snapshot,
    agents: Vec<SimAgent>,
    plan: &Plan,
) -> anyhow::Result<(Value, Vec<Outcome>)> {
    // Preparing takes a while: the frames' times are those of the window to come.
    let lead = Duration::from_secs(1);
    let wall_start = Utc::now();
    let ids: Vec<AgentId> = agents.iter().map(|a| a.id.clone()).collect();
    let (frames, sizes) =
        tokio::task::block_in_place(|| prepare(collector.protocol, template, &ids, plan, wall_start))?;
    let count = agents.len();
    let start = Instant::now() + lead;
    let cpu = CpuWindow::start(collector.pid);
    let tasks: Vec<_> = agents
        .into_iter()
        .zip(frames)
        .map(|(agent, frames)| tokio::spawn(drive(agent, frames, count, plan.clone(), start)))
        .collect();
    // When the first agent sends its last frame every agent is still connected (each
    // closes its socket once its last ack is in): the collector's memory with all of them.
    let peak_reader = {
        let pid = collector.pid;
        let at = start + plan.interval * plan.ticks.saturating_sub(1);
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            rss_kib(pid)
        })
    };
    let mut outcomes = Vec::with_capacity(count);
    for task in tasks {
        outcomes.push(task.await?);
    }
    let cpu = cpu.finish();
    let connected_kib = peak_reader.await.ok().flatten();
    let window_s = plan.window().as_secs_f64();
    let total = |f: fn(&Outcome) -> usize| outcomes.iter().map(f).sum::<usize>();
    let (sent, acked, rejected, errors, unacked) =
        (total(|o| o.sent), total(|o| o.acked), total(|o| o.rejected), total(|o| o.errors), total(|o| o.unacked));
    let disconnected = outcomes.iter().filter(|o| o.disconnected).count();
    let mut latencies: Vec<f64> = outcomes.iter().flat_map(|o| o.latencies_ms.iter().copied()).collect();
    let mut lags: Vec<f64> = outcomes.iter().flat_map(|o| o.lags_ms.iter().copied()).collect();
    let latency = percentiles(&mut latencies);
    let lag = percentiles(&mut lags);
    let p99 = latency["p99"].as_f64();
    let expected = count * plan.ticks as usize;
    let failures = rejected + errors + unacked + disconnected + (expected - sent.min(expected));
    let generator_kept_up = lag["p99"].as_f64().is_some_and(|l| l <= MAX_SEND_LAG_MS);
    let sustained = failures == 0 && generator_kept_up && p99.is_some_and(|p| p < plan.p99_ms);
    let report = json!({
        "agents": count,
        "interval_s": plan.interval.as_secs_f64(),
        "window_s": window_s,
        "offered_per_s": plan.offered_per_sec(),
        "rate_per_s": acked as f64 / window_s,
        "sent": sent,
        "acked": acked,
        "rejected": rejected,
        "errors": errors,
        "unacked": unacked,
        "disconnected": disconnected,
        "first_problem": outcomes.iter().find_map(|o| o.first_problem.clone()),
        "latency_ms": latency,
        "send_lag_ms": lag,
        "generator_kept_up": generator_kept_up,
        "sustained": sustained,
        "snapshot": {
            "processes": template.processes.len(),
            "connections": template.connections.len(),
            "json_bytes": sizes.json_bytes,
            "frame_bytes_mean": sizes.frame_bytes as f64 / sizes.frames.max(1) as f64,
        },
        "cpu": cpu,
        "memory": { "connected_kib": connected_kib },
    });
    Ok((report, outcomes))
}

/// Ramp: each step an ingest run, stopping at the first one not sustained.
async fn ramp(collector: &Collector, template: &Snapshot, prefix: &str, plans: &[Plan]) -> anyhow::Result<Value> {
    let mut steps = Vec::new();
    let mut best: Option<Value> = None;
    let mut stopped_by = Value::Null;
    for (n, plan) in plans.iter().enumerate() {
        if n > 0 {
            tokio::time::sleep(STEP_PAUSE).await;
        }
        let mut missed_p99 = Vec::new();
        let mut step = loop {
            let step = match ingest(collector, template, prefix, plan).await {
                Ok(step) => step,
                // A step that cannot even connect is the end of the ramp, not of the report.
                Err(e) => json!({ "agents": plan.agents, "sustained": false, "first_problem": format!("{e:#}") }),
            };
            // On a shared machine one stall of another program can push a step's p99
            // over the limit: a step that lost nothing and was only slow is tried again,
            // once. Anything lost is final.
            let only_slow = !step["sustained"].as_bool().unwrap_or(false) && step["first_problem"].is_null();
            if !only_slow || missed_p99.len() >= STEP_RETRIES {
                break step;
            }
            missed_p99.push(step["latency_ms"]["p99"].clone());
            tokio::time::sleep(STEP_PAUSE).await;
        };
        step["attempts"] = json!(missed_p99.len() + 1);
        step["earlier_attempts_p99_ms"] = json!(missed_p99);
        let sustained = step["sustained"].as_bool().unwrap_or(false);
        let mib = |key: &str| step["memory"][key].as_f64().map_or("-".into(), |k| format!("{:.0}", k / 1024.0));
        eprintln!(
            "loadgen: {} agents at {} s: {:.0}/s, p99 {} ms, {}; collector {} MiB before, {} connected ({} KiB a \
             host), {} after",
            plan.agents,
            plan.interval.as_secs_f64(),
            step["rate_per_s"].as_f64().unwrap_or(0.0),
            step["latency_ms"]["p99"].as_f64().map_or("-".into(), |p| format!("{p:.1}")),
            if sustained { "sustained" } else { "not sustained" },
            mib("before_kib"),
            mib("connected_kib"),
            step["memory"]["per_connected_host_kib"].as_f64().map_or("-".into(), |k| format!("{k:.0}")),
            mib("after_kib"),
        );
        if sustained {
            best = Some(json!({
                "agents": step["agents"],
                "interval_s": step["interval_s"],
                "rate_per_s": step["rate_per_s"],
                "p99_ms": step["latency_ms"]["p99"],
            }));
        } else {
            stopped_by =
                json!({ "agents": plan.agents, "problem": step["first_problem"], "p99_ms": step["latency_ms"]["p99"] });
        }
        steps.push(step);
        if !sustained {
            break;
        }
    }
    Ok(json!({
        "mode": "ramp",
        "p99_limit_ms": plans.first().map(|p| p.p99_ms),
        "best": best,
        "stopped_by": stopped_by,
        "steps": steps,
    }))
}

/// Fan-out: `clients` dashboards follow one host while its agent sends.
async fn fanout(
    collector: &Collector,
    watch: &Collector,
    template: &Snapshot,
    prefix: &str,
    plan: &Plan,
    clients: usize,
    password: &str,
) -> anyhow::Result<Value> {
    let hostname = format!("{prefix}-fanout");
    // The host must exist before a client can ask for it: one first snapshot, acked.
    let mut agent = connect_agent(collector, template, 0, hostname.clone()).await?;
    let seq = agent.id.last_seq + 1;
    let first = evolve(template, &hostname, 0, 0, seq, Utc::now(), plan.interval);
    agent.ws.send(Message::Binary(encode_frame(None, &first, collector.protocol)?.into())).await?;
    wait_for_ack(&mut agent.ws, seq).await?;
    agent.id.last_seq = seq;

    let token = login(watch, password).await?;
    let url = format!("{}/ws/process-snapshots/?hostname={hostname}&token={token}", watch.ws_base);
    let opened: Vec<anyhow::Result<Ws>> =
        futures_util::stream::iter(0..clients).map(|_| open_client(&url)).buffered(CONNECT_CONCURRENCY).collect().await;
    let mut sockets = Vec::with_capacity(clients);
    for s in opened {
        sockets.push(s?);
    }

    let last_seq = agent.id.last_seq + u64::from(plan.ticks);
    let deadline = Instant::now() + plan.window() + DRAIN + Duration::from_secs(30);
    let readers: Vec<_> = sockets.into_iter().map(|ws| tokio::spawn(follow(ws, last_seq, deadline))).collect();
    let (report, outcomes) = send_window(collector, template, vec![agent], plan).await?;
    let mut received = Vec::with_capacity(clients);
    for r in readers {
        received.push(r.await?);
    }
    let sent_at: HashMap<u64, Instant> = outcomes.iter().flat_map(|o| o.sent_at.iter().copied()).collect();
    let mut deliveries = Vec::new();
    let mut slowest: HashMap<u64, f64> = HashMap::new();
    let mut missed = 0usize;
    for got in &received {
        for (seq, at) in &sent_at {
            match got.get(seq) {
                Some(when) => {
                    let d = ms(when.saturating_duration_since(*at));
                    deliveries.push(d);
                    let s = slowest.entry(*seq).or_insert(0.0);
                    *s = s.max(d);
                }
                None => missed += 1,
            }
        }
    }
    let mut all_clients: Vec<f64> = slowest.into_values().collect();
    let delivered = deliveries.len();
    Ok(json!({
        "mode": "fanout",
        "hostname": hostname,
        "watched": watch.base,
        "across_collectors": watch.base != collector.base,
        "clients": clients,
        "snapshots": sent_at.len(),
        "delivered": delivered,
        "missed": missed,
        "latency_ms": percentiles(&mut deliveries),
        "all_clients_ms": percentiles(&mut all_clients),
        "ack_latency_ms": report["latency_ms"],
        "ingest": report,
    }))
}

async fn wait_for_ack(ws: &mut Ws, seq: u64) -> anyhow::Result<()> {
    let wait = async {
        while let Some(message) = ws.next().await {
            if let Message::Text(text) = message? {
                match serde_json::from_str::<CollectorMessage>(&text)? {
                    CollectorMessage::Ack { seq: s } if s == seq => return Ok(()),
                    CollectorMessage::Rejected { message, .. } => bail!("the first snapshot was rejected: {message}"),
                    CollectorMessage::Error { code, message } => bail!("error {code}: {message}"),
                    _ => {}
                }
            }
        }
        bail!("the connection closed before the first ack")
    };
    tokio::time::timeout(CONNECT_TIMEOUT, wait).await.map_err(|_| anyhow!("no ack for the first snapshot"))?
}

async fn login(collector: &Collector, password: &str) -> anyhow::Result<String> {
    let response = reqwest::Client::new()
        .post(format!("{}/api/auth/login", collector.base))
        .json(&json!({ "username": "admin", "password": password }))
        .timeout(CONNECT_TIMEOUT)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    match body["token"].as_str() {
        Some(token) if status.is_success() => Ok(token.to_owned()),
        _ => bail!("signing in as admin failed: HTTP {status} {body}"),
    }
}

/// Opens one dashboard stream and waits for its first message (what is current), so
/// that it is subscribed before the measured snapshots are sent.
async fn open_client(url: &str) -> anyhow::Result<Ws> {
    let open = async {
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.context("opening a dashboard stream")?;
        match ws.next().await {
            Some(Ok(Message::Text(_))) => Ok(ws),
            other => bail!("expected the current snapshot first, got {other:?}"),
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, open).await.map_err(|_| anyhow!("a dashboard stream did not open in time"))?
}

/// Reads one client's stream until `last_seq` arrives or `deadline`: when each seq came.
async fn follow(mut ws: Ws, last_seq: u64, deadline: Instant) -> HashMap<u64, Instant> {
    let mut got = HashMap::new();
    loop {
        let message = tokio::select! {
            m = ws.next() => m,
            () = tokio::time::sleep_until(deadline) => break,
        };
        let now = Instant::now();
        match message {
            Some(Ok(Message::Text(text))) => {
                if let Some(seq) = seq_of(&text) {
                    got.insert(seq, now);
                    if seq >= last_seq {
                        break;
                    }
                }
            }
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    got
}

/// The top-level `seq` of a pushed snapshot. Its keys are in order and `seq` comes after
/// the large `processes` array, so it is searched from the end rather than parsing
/// the whole message on the clock of the measurement.
fn seq_of(text: &str) -> Option<u64> {
    let at = text.rfind("\"seq\":")? + "\"seq\":".len();
    let digits: String =
        text[at..].chars().skip_while(|c| c.is_whitespace()).take_while(char::is_ascii_digit).collect();
    digits.parse().ok().or_else(|| serde_json::from_str::<Value>(text).ok()?["seq"].as_u64())
}

// ---------------------------------------------------------------------------------------
// Soak

/// A soak's shape, checked against the hard bounds.
#[derive(Clone, Debug)]
struct SoakPlan {
    agents: usize,
    dashboards: usize,
    interval: Duration,
    duration: Duration,
    sample_every: Duration,
}

impl SoakPlan {
    fn new(agents: usize, dashboards: usize, interval: f64, duration: f64, sample_every: f64) -> anyhow::Result<Self> {
        // The agents and their interval are bounded as an ingest run's.
        let agents_plan = Plan::new(agents, interval, 1.0, 1.0)?;
        if dashboards > MAX_CLIENTS {
            bail!("--dashboards must be at most {MAX_CLIENTS}, not {dashboards}");
        }
        if !(duration > 0.0 && duration <= MAX_SOAK.as_secs_f64()) {
            bail!("--duration must be more than 0 and at most {} seconds, not {duration}", MAX_SOAK.as_secs());
        }
        if !(1.0..=3600.0).contains(&sample_every) || sample_every >= duration {
            bail!("--sample-every must be between 1 and 3600 seconds, and less than --duration, not {sample_every}");
        }
        Ok(SoakPlan {
            agents,
            dashboards,
            interval: agents_plan.interval,
            duration: Duration::from_secs_f64(duration),
            sample_every: Duration::from_secs_f64(sample_every),
        })
    }
}

/// What the soak's agents and dashboards did: counts since the start, and the
/// latencies since the last sample.
#[derive(Default)]
struct SoakStats {
    latencies_ms: Vec<f64>,
    sent: u64,
    acked: u64,
    rejected: u64,
    errors: u64,
    /// Frames sent on a connection that ended before their ack.
    unanswered: u64,
    agent_reconnects: u64,
    dashboard_messages: u64,
    dashboard_reconnects: u64,
    first_problem: Option<String>,
}

impl SoakStats {
    fn problem(&mut self, what: String) {
        if self.first_problem.is_none() {
            self.first_problem = Some(what);
        }
    }
}

type SharedStats = Arc<std::sync::Mutex<SoakStats>>;

fn stats(shared: &SharedStats) -> std::sync::MutexGuard<'_, SoakStats> {
    shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Descriptors a process holds open, from `/proc/PID/fd`.
fn open_files(pid: Option<u32>) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{}/fd", pid?)).ok()?.count())
}

/// One soak agent: a snapshot every interval until `end`, each made and encoded as it is
/// due (a delta against the one before, a keyframe after a reconnect), acks read as they
/// come. A connection that ends is opened again after a second, as `procyon-agent` does
/// (without its backoff: the soak wants its load back), continuing from the seq the
/// collector welcomes it with.
async fn soak_agent(
    collector: Collector,
    template: Arc<Snapshot>,
    mut agent: SimAgent,
    plan: SoakPlan,
    start: Instant,
    end: Instant,
    shared: SharedStats,
) {
    let phase = phase(agent.id.index, plan.agents, plan.interval);
    let mut tick: u32 = 0;
    let mut seq = agent.id.last_seq;
    let mut previous: Option<Snapshot> = None;
    let mut pending: HashMap<u64, Instant> = HashMap::new();
    loop {
        let due = start + phase + plan.interval * tick;
        let broken: Option<String> = if due >= end {
            // Done sending: the acks still due, for at most the drain time.
            let drain_until = Instant::now() + DRAIN;
            while !pending.is_empty() {
                match tokio::time::timeout_at(drain_until, agent.ws.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) => {
                        if let Ok(CollectorMessage::Ack { seq }) = serde_json::from_str(&text)
                            && let Some(at) = pending.remove(&seq)
                        {
                            let mut s = stats(&shared);
                            s.acked += 1;
                            s.latencies_ms.push(ms(at.elapsed()));
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => break,
                }
            }
            stats(&shared).unanswered += pending.len() as u64;
            let _ = tokio::time::timeout(Duration::from_secs(2), agent.ws.close(None)).await;
            return;
        } else {
            tokio::select! {
                () = tokio::time::sleep_until(due) => {
                    tick += 1;
                    let snapshot =
                        evolve(&template, &agent.id.hostname, agent.id.index, tick, seq + 1, Utc::now(), plan.interval);
                    match encode_frame(previous.as_ref(), &snapshot, collector.protocol) {
                        Ok(frame) => match agent.ws.send(Message::Binary(frame.into())).await {
                            Ok(()) => {
                                seq += 1;
                                pending.insert(seq, Instant::now());
                                stats(&shared).sent += 1;
                                previous = Some(snapshot);
                                None
                            }
                            Err(e) => Some(format!("send failed: {e}")),
                        },
                        Err(e) => {
                            stats(&shared).problem(format!("cannot encode a frame: {e}"));
                            return;
                        }
                    }
                }
                message = agent.ws.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        let mut s = stats(&shared);
                        match serde_json::from_str::<CollectorMessage>(&text) {
                            Ok(CollectorMessage::Ack { seq }) => {
                                if let Some(at) = pending.remove(&seq) {
                                    s.acked += 1;
                                    s.latencies_ms.push(ms(at.elapsed()));
                                }
                            }
                            Ok(CollectorMessage::Rejected { seq, message }) => {
                                pending.remove(&seq);
                                s.rejected += 1;
                                s.problem(format!("seq {seq} rejected: {message}"));
                            }
                            Ok(CollectorMessage::Error { code, message }) => {
                                s.errors += 1;
                                s.problem(format!("error {code}: {message}"));
                            }
                            Ok(_) => {}
                            Err(e) => {
                                s.errors += 1;
                                s.problem(format!("unreadable message: {e}"));
                            }
                        }
                        None
                    }
                    Some(Ok(Message::Close(frame))) => Some(format!("closed by the collector: {frame:?}")),
                    Some(Ok(_)) => None,
                    Some(Err(e)) => Some(format!("connection error: {e}")),
                    None => Some("the connection closed".into()),
                },
            }
        };
        if let Some(why) = broken {
            {
                let mut s = stats(&shared);
                s.problem(format!("agent {}: {why}", agent.id.index));
                s.unanswered += pending.len() as u64;
            }
            pending.clear();
            agent = loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if Instant::now() >= end {
                    return;
                }
                match connect_agent(&collector, &template, agent.id.index, agent.id.hostname.clone()).await {
                    Ok(again) => break again,
                    Err(e) => stats(&shared).problem(format!("reconnecting: {e:#}")),
                }
            };
            stats(&shared).agent_reconnects += 1;
            seq = agent.id.last_seq;
            previous = None;
        }
    }
}

/// One soak dashboard: follows `hostname`'s live stream (deltas, as the dashboard's
/// host page asks for them) until `end`, counting what arrives; a stream that ends (a
/// token that expired, say) is opened again with a new sign-in. The first opening uses
/// `token`, from one sign-in for all: twenty at once would be throttled.
async fn soak_dashboard(
    collector: Collector,
    password: String,
    token: String,
    hostname: String,
    (from, end): (Instant, Instant),
    shared: SharedStats,
) {
    tokio::time::sleep_until(from).await;
    let mut opened_before = false;
    let mut first_token = Some(token);
    while Instant::now() < end {
        let signed_in = match first_token.take() {
            Some(token) => Ok(token),
            None => login(&collector, &password).await,
        };
        let token = match signed_in {
            Ok(token) => token,
            Err(e) => {
                stats(&shared).problem(format!("dashboard sign-in: {e:#}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let url = format!("{}/ws/process-snapshots/?hostname={hostname}&delta=1&token={token}", collector.ws_base);
        let mut ws = match tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(url)).await {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => {
                stats(&shared).problem(format!("dashboard stream of {hostname}: {e}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(_) => {
                stats(&shared).problem(format!("dashboard stream of {hostname}: no answer"));
                continue;
            }
        };
        if opened_before {
            stats(&shared).dashboard_reconnects += 1;
        }
        opened_before = true;
        loop {
            let message = tokio::select! {
                m = ws.next() => m,
                () = tokio::time::sleep_until(end) => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    return;
                }
            };
            match message {
                Some(Ok(Message::Text(_))) => stats(&shared).dashboard_messages += 1,
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Soak: agents and dashboards for the whole duration, the collector sampled every
/// `sample_every`; the report holds every sample.
async fn soak(
    collector: &Collector,
    template: &Arc<Snapshot>,
    prefix: &str,
    plan: &SoakPlan,
    password: &str,
) -> anyhow::Result<Value> {
    let agents = connect_all(collector, template, prefix, plan.agents).await?;
    let hostnames: Vec<String> = agents.iter().map(|a| a.id.hostname.clone()).collect();
    let shared = SharedStats::default();
    let start = Instant::now() + Duration::from_secs(1);
    let end = start + plan.duration;
    let agent_tasks: Vec<_> = agents
        .into_iter()
        .map(|agent| {
            let (collector, template, plan, shared) =
                (collector.clone(), template.clone(), plan.clone(), shared.clone());
            tokio::spawn(soak_agent(collector, template, agent, plan, start, end, shared))
        })
        .collect();
    // Each host has a stored snapshot before its dashboard asks for it.
    let dashboards_from = start + plan.interval * 2 + Duration::from_secs(1);
    let token = login(collector, password).await?;
    let dashboard_tasks: Vec<_> = (0..plan.dashboards)
        .map(|i| {
            let hostname = hostnames[i % hostnames.len()].clone();
            let (collector, shared, token) = (collector.clone(), shared.clone(), token.clone());
            let during = (dashboards_from, end);
            tokio::spawn(soak_dashboard(collector, password.to_owned(), token, hostname, during, shared))
        })
        .collect();

    let mut samples = Vec::new();
    let (mut last_at, mut last_cpu, mut last_own) = (start, cpu_seconds(collector.pid), cpu_seconds(None));
    tokio::time::sleep_until(start).await;
    let (mut last_acked, mut last_sent, mut last_messages) = (0u64, 0u64, 0u64);
    let mut next = start + plan.sample_every;
    // Samples end before the agents and dashboards do, so that none catches them leaving.
    while next < end {
        tokio::time::sleep_until(next).await;
        next += plan.sample_every;
        let now = Instant::now();
        let secs = (now - last_at).as_secs_f64().max(1e-9);
        let (mut latencies, acked, sent, messages, agent_reconnects, dashboard_reconnects) = {
            let mut s = stats(&shared);
            (
                std::mem::take(&mut s.latencies_ms),
                s.acked,
                s.sent,
                s.dashboard_messages,
                s.agent_reconnects,
                s.dashboard_reconnects,
            )
        };
        let (cpu, own) = (cpu_seconds(collector.pid), cpu_seconds(None));
        let percent = |before: Option<f64>, after: Option<f64>| match (before, after) {
            (Some(b), Some(a)) => json!((a - b) / secs * 100.0),
            _ => Value::Null,
        };
        let sample = json!({
            "t_s": (now - start).as_secs_f64(),
            "rss_kib": rss_kib(collector.pid),
            "open_files": open_files(collector.pid),
            "collector_cpu_percent": percent(last_cpu, cpu),
            "loadgen_cpu_percent": percent(last_own, own),
            "acked_per_s": (acked - last_acked) as f64 / secs,
            "sent_per_s": (sent - last_sent) as f64 / secs,
            "dashboard_messages_per_s": (messages - last_messages) as f64 / secs,
            "latency_ms": percentiles(&mut latencies),
            "agent_reconnects": agent_reconnects,
            "dashboard_reconnects": dashboard_reconnects,
        });
        eprintln!(
            "loadgen soak: {:.0} s: rss {} MiB, {} open files, p99 {} ms, {:.0} acked/s, {:.0} dashboard messages/s",
            sample["t_s"].as_f64().unwrap_or(0.0),
            sample["rss_kib"].as_u64().map_or("-".into(), |k| (k / 1024).to_string()),
            sample["open_files"].as_u64().map_or("-".into(), |n| n.to_string()),
            sample["latency_ms"]["p99"].as_f64().map_or("-".into(), |p| format!("{p:.1}")),
            sample["acked_per_s"].as_f64().unwrap_or(0.0),
            sample["dashboard_messages_per_s"].as_f64().unwrap_or(0.0),
        );
        samples.push(sample);
        (last_at, last_cpu, last_own) = (now, cpu, own);
        (last_acked, last_sent, last_messages) = (acked, sent, messages);
    }
    for task in agent_tasks.into_iter().chain(dashboard_tasks) {
        task.await?;
    }
    let s = stats(&shared);
    Ok(json!({
        "mode": "soak",
        "agents": plan.agents,
        "dashboards": plan.dashboards,
        "interval_s": plan.interval.as_secs_f64(),
        "duration_s": plan.duration.as_secs_f64(),
        "sample_every_s": plan.sample_every.as_secs_f64(),
        "sent": s.sent,
        "acked": s.acked,
        "rejected": s.rejected,
        "errors": s.errors,
        "unanswered": s.unanswered,
        "agent_reconnects": s.agent_reconnects,
        "dashboard_messages": s.dashboard_messages,
        "dashboard_reconnects": s.dashboard_reconnects,
        "first_problem": s.first_problem,
        "snapshot": { "processes": template.processes.len(), "connections": template.connections.len() },
        "samples": samples,
    }))
}
