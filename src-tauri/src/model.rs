//! The wire types: one snapshot of a machine and its parts.
//!
//! These are the only definitions of what Procyon measures. The sampler fills them, the
//! agent sends them, the collector stores and serves them, and the dashboard's TypeScript
//! types are generated from them (see [`typescript`]), so every side agrees by
//! construction.
//!
//! # JSON format
//!
//! A [`Snapshot`] serialises to one JSON object with named fields. Conventions:
//! - units are in field names (`rss_bytes`, `cpu_percent`, `received_bytes_per_sec`);
//! - times are UTC, RFC 3339 with milliseconds (`"2026-11-21T09:15:00.123Z"`);
//! - a field an OS cannot fill, or an upload does not give, is `null`, never left out and
//!   never a made-up zero (a short upload in the original API's format has no memory
//!   size, no process start times, no network counters);
//! - enums are lower-case strings (`"sleeping"`), except TCP states, which use the
//!   names people know from `netstat` (`"ESTABLISHED"`, `"LISTEN"`).
//!
//! Changes are additive: a new field may appear in a later [`SCHEMA_VERSION`]; a field is
//! never renamed, retyped or given a new meaning. Readers ignore fields they do not know.

use std::net::IpAddr;

pub mod agent;
pub mod api;
pub mod dashboard;
pub mod delta;
pub mod desktop;
pub mod details;
pub mod labels;
pub mod netmap;
pub mod wire;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ts_rs::TS;
use utoipa::ToSchema;

/// Version of the snapshot format. Bumped when a field is added.
pub const SCHEMA_VERSION: u32 = 1;

/// Longest command line kept per process, in characters; longer ones end in `…`.
pub const MAX_CMD_CHARS: usize = 4096;

/// Everything measured on one machine at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct Snapshot {
    /// [`SCHEMA_VERSION`] of the sampler that produced this snapshot.
    pub schema_version: u32,
    /// The machine this snapshot describes.
    pub host: HostInfo,
    /// When the sample was taken (UTC).
    #[serde(with = "wire::time")]
    #[ts(as = "DateTime<Utc>")]
    pub taken_at: DateTime<Utc>,
    /// Per-sampler sequence number, increasing by one per snapshot. Together with the
    /// host it names a snapshot, which makes uploads idempotent.
    #[ts(type = "number")]
    pub seq: u64,
    /// Time covered by the rates and CPU figures: since the previous sample, in ms.
    #[ts(type = "number")]
    pub interval_ms: u64,
    /// Processor use.
    pub cpu: CpuSample,
    /// Memory and swap.
    pub memory: MemorySample,
    /// Every process, in pid order.
    pub processes: Vec<ProcessSample>,
    /// Every TCP and UDP socket, IPv4 and IPv6.
    pub connections: Vec<ConnectionSample>,
    /// Network interface counters and rates.
    pub network: NetworkSample,
    /// Connections per local port and the listening ports.
    pub ports: PortUsage,
    /// Parts that could not be measured this time (e.g. sockets of other users without
    /// privileges). The rest of the snapshot is still valid.
    pub errors: Vec<DomainError>,
    /// The machine's GPUs; absent where it has none (or none that Procyon can read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[ts(optional, as = "Option<Vec<GpuSample>>")]
    pub gpus: Vec<GpuSample>,
    /// Mounted filesystems, by mount point (pseudo and duplicate mounts left out).
    /// Absent where not measured (an upload, an older agent, an OS not read yet); empty
    /// when measured and there are none. Read every few seconds, carried over between.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub filesystems: Option<Vec<FilesystemSample>>,
    /// I/O of each whole disk over the last interval; absent as for `filesystems`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub disks: Option<Vec<DiskSample>>,
    /// Temperature sensors; absent as for `filesystems`, empty on a machine without any
    /// (most virtual machines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub temperatures: Option<Vec<TemperatureSample>>,
    /// Fans; absent as for `filesystems`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub fans: Option<Vec<FanSample>>,
    /// Batteries; absent as for `filesystems`, empty on a machine without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub batteries: Option<Vec<BatterySample>>,
}

impl Snapshot {
    /// Bytes read and written per second by the machine's disks together, or `None`
    /// when disk I/O was not measured. Device-mapper (`dm-N`) and software RAID (`mdN`)
    /// devices are left out of the sum: their I/O is also their member disks', and
    /// would count twice.
    pub fn disk_io_bytes_per_sec(&self) -> Option<(f64, f64)> {
        let stacked = |name: &str| {
            name.starts_with("dm-") || name.strip_prefix("md").is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        };
        let disks = self.disks.as_ref()?;
        Some(
            disks
                .iter()
                .filter(|d| !stacked(&d.name))
                .fold((0.0, 0.0), |(r, w), d| (r + d.read_bytes_per_sec, w + d.write_bytes_per_sec)),
        )
    }

    /// The hottest sensor's temperature in °C, or `None` when there is no sensor (or
    /// they were not measured).
    pub fn hottest_celsius(&self) -> Option<f64> {
        self.temperatures.as_ref()?.iter().map(|t| t.celsius).filter(|c| c.is_finite()).reduce(f64::max)
    }
}

/// One mounted filesystem.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct FilesystemSample {
    /// Where it is mounted, e.g. `"/"` or `"/home"`.
    pub mount_point: String,
    /// Filesystem type, e.g. `"ext4"`, `"xfs"`, `"nfs4"`.
    pub fs_type: String,
    /// What is mounted, as the mount table names it (e.g. `"/dev/nvme0n1p2"`).
    pub device: String,
    /// Size in bytes.
    #[ts(type = "number")]
    pub total_bytes: u64,
    /// Bytes in use.
    #[ts(type = "number")]
    pub used_bytes: u64,
    /// Bytes free for ordinary users (without the blocks reserved for root): `df`'s
    /// "Avail", so `used / (used + free)` is `df`'s "Use%".
    #[ts(type = "number")]
    pub free_bytes: u64,
    /// Inodes in all; `null` where the filesystem has no fixed number (btrfs says 0).
    #[ts(type = "number | null")]
    pub inodes_total: Option<u64>,
    /// Inodes free; `null` as for `inodes_total`.
    #[ts(type = "number | null")]
    pub inodes_free: Option<u64>,
}

impl FilesystemSample {
    /// Share in use, 0-100, as `df` counts it (of what ordinary users can have).
    pub fn used_percent(&self) -> f64 {
        let room = self.used_bytes.saturating_add(self.free_bytes);
        if room == 0 { 0.0 } else { self.used_bytes as f64 * 100.0 / room as f64 }
    }
}

/// One whole disk's I/O over the last interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct DiskSample {
    /// Kernel name of the disk, e.g. `"nvme0n1"`, `"sda"`, `"dm-0"`.
    pub name: String,
    /// Bytes read per second.
    pub read_bytes_per_sec: f64,
    /// Bytes written per second.
    pub write_bytes_per_sec: f64,
    /// Reads completed per second.
    pub reads_per_sec: f64,
    /// Writes completed per second.
    pub writes_per_sec: f64,
    /// Share of the interval the disk had I/O in flight, 0-100 (`iostat`'s `%util`).
    pub busy_percent: f64,
}

/// One temperature sensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct TemperatureSample {
    /// The chip and the sensor's label, e.g. `"coretemp Package id 0"`, `"nvme Composite"`.
    pub name: String,
    /// Degrees Celsius.
    pub celsius: f64,
    /// The level the chip calls high; `null` where it names none.
    pub high_celsius: Option<f64>,
    /// The level the chip calls critical; `null` where it names none.
    pub critical_celsius: Option<f64>,
}

/// One fan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct FanSample {
    /// The chip and the fan's label, e.g. `"nct6775 fan2"`.
    pub name: String,
    /// Revolutions per minute.
    pub rpm: f64,
}

/// One battery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct BatterySample {
    /// Its name, e.g. `"BAT0"`.
    pub name: String,
    /// Charge, 0-100; `null` where it does not say.
    pub percent: Option<f64>,
    /// `"charging"`, `"discharging"`, `"full"`, `"not charging"` or `"unknown"`.
    pub status: String,
    /// Power drawn or charged, in watts; `null` where it does not say.
    pub power_watts: Option<f64>,
}

/// One GPU of a machine, as its driver reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct GpuSample {
    /// Which one: its PCI address (`0000:03:00.0`) where it has one, else the DRM card
    /// (`card0`) or NVML's index (`nvml0`).
    pub id: String,
    /// What it is called: the model name where the driver gives one, else the vendor
    /// and the PCI device id.
    pub name: String,
    /// The kernel driver (`amdgpu`, `i915`, `xe`, `nvidia`, ...), where known.
    pub driver: Option<String>,
    /// Busy share over the last interval, 0-100; `null` when the driver does not say
    /// and no process's use could be added up.
    pub utilization_percent: Option<f32>,
    /// Its own memory (VRAM) in use, where known.
    #[ts(type = "number | null")]
    pub memory_used_bytes: Option<u64>,
    /// Its own memory (VRAM) in all, where known (integrated GPUs have none of their own).
    #[ts(type = "number | null")]
    pub memory_total_bytes: Option<u64>,
    /// Temperature in °C, where a sensor reports it.
    pub temperature_celsius: Option<f32>,
}

/// Static facts about a machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct HostInfo {
    /// Stable machine identifier (`/etc/machine-id` where there is one), else the
    /// hostname.
    pub id: String,
    /// Host name as the machine reports it (or as the agent was told to report it).
    pub hostname: String,
    /// Operating system name and version, e.g. `"Debian GNU/Linux 12"`.
    pub os: String,
    /// Kernel version, e.g. `"6.1.0-18-amd64"`.
    pub kernel: Option<String>,
    /// CPU architecture, e.g. `"x86_64"`.
    pub arch: String,
    /// CPU model name.
    pub cpu_model: Option<String>,
    /// Logical processors (`null` when not known, as in uploads that do not say).
    pub logical_cores: Option<u32>,
    /// Physical memory in bytes (`null` when not known).
    #[ts(type = "number | null")]
    pub memory_total_bytes: Option<u64>,
    /// When the machine booted (UTC; `null` when not known).
    #[serde(default, with = "wire::option_time")]
    #[ts(as = "Option<DateTime<Utc>>")]
    pub boot_time: Option<DateTime<Utc>>,
    /// Version of the Procyon program that sampled it.
    pub agent_version: String,
}

/// Processor use over the last interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct CpuSample {
    /// All cores together, 0-100.
    pub total_percent: f32,
    /// One entry per logical core, 0-100 each.
    pub per_core_percent: Vec<f32>,
    /// Run-queue load averages; `null` where the OS has none (Windows).
    pub load_average: Option<LoadAverage>,
}

/// Load averages over 1, 5 and 15 minutes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct LoadAverage {
    /// Over one minute.
    pub one: f64,
    /// Over five minutes.
    pub five: f64,
    /// Over fifteen minutes.
    pub fifteen: f64,
}

/// Memory and swap in bytes. A sampler knows them all; an upload in the original API's
/// short format gives none, so what it cannot say is `null`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct MemorySample {
    /// Physical memory; `null` when not known.
    #[ts(type = "number | null")]
    pub total_bytes: Option<u64>,
    /// In use (total minus available). For a short upload, which gives no memory
    /// figures, the sum of its processes' resident memory.
    #[ts(type = "number")]
    pub used_bytes: u64,
    /// Available to new work without swapping, caches included; `null` when not known.
    #[ts(type = "number | null")]
    pub available_bytes: Option<u64>,
    /// Swap space; `null` when not known.
    #[ts(type = "number | null")]
    pub swap_total_bytes: Option<u64>,
    /// Swap in use; `null` when not known.
    #[ts(type = "number | null")]
    pub swap_used_bytes: Option<u64>,
}

/// One process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct ProcessSample {
    /// Process id.
    pub pid: u32,
    /// Parent's process id; `null` for roots (pid 1, kernel roots).
    pub ppid: Option<u32>,
    /// Short name (the executable's name as the kernel knows it).
    pub name: String,
    /// Command line, arguments joined by spaces, secrets replaced by `***`, at most
    /// [`MAX_CMD_CHARS`] characters. Empty for kernel threads.
    pub cmd: String,
    /// Owner's user name; the numeric uid when it has no name; `null` if unknown.
    pub user: Option<String>,
    /// Scheduler state.
    pub status: ProcessStatus,
    /// Share of one core over the last interval (can exceed 100 with several threads);
    /// `null` when not known (an upload that does not give it).
    pub cpu_percent: Option<f32>,
    /// Resident memory as a share of physical memory, 0-100; `null` when not known.
    pub memory_percent: Option<f32>,
    /// Resident set size; `null` when not known.
    #[ts(type = "number | null")]
    pub rss_bytes: Option<u64>,
    /// Virtual memory size; `null` when not known.
    #[ts(type = "number | null")]
    pub virtual_bytes: Option<u64>,
    /// Number of threads.
    pub threads: Option<u32>,
    /// When the process started (UTC). With the pid it names this process: a pid that
    /// is reused gets a different start time. `null` when not known (a short upload):
    /// such a process cannot be told from a later one with its pid, so nothing acts on
    /// it by pid alone.
    #[serde(with = "wire::option_time")]
    #[ts(as = "Option<DateTime<Utc>>")]
    pub start_time: Option<DateTime<Utc>>,
    /// Bytes read from storage since the process started; `null` without permission.
    #[ts(type = "number | null")]
    pub disk_read_bytes: Option<u64>,
    /// Bytes written to storage since the process started; `null` without permission.
    #[ts(type = "number | null")]
    pub disk_write_bytes: Option<u64>,
    /// Storage read rate over the last interval.
    pub disk_read_bytes_per_sec: Option<f64>,
    /// Storage write rate over the last interval.
    pub disk_write_bytes_per_sec: Option<f64>,
    /// A kernel thread: it has no command line and cannot be signalled.
    pub kernel_thread: bool,
    /// The container it runs in, from its control group (read once per process);
    /// absent when it is in none, and in snapshots of agents that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub container: Option<details::ContainerRef>,
    /// GPU use over the last interval, 0-100: the busiest engine (render, compute,
    /// video, ...) of any GPU it used, as a share of that engine's time. Absent where
    /// the machine has no GPU or the process holds none (see `sample/gpu.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub gpu_percent: Option<f32>,
    /// GPU memory the process holds, over all its GPUs; absent as `gpu_percent` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional, type = "number")]
    pub gpu_memory_bytes: Option<u64>,
}

/// Scheduler state of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProcessStatus {
    /// On a CPU or ready to run.
    Running,
    /// Waiting for an event (interruptible).
    Sleeping,
    /// Waiting for I/O (uninterruptible).
    DiskSleep,
    /// Stopped by a signal (e.g. suspended by SIGSTOP).
    Stopped,
    /// Stopped by a debugger.
    TracingStop,
    /// Exited, not yet reaped by its parent.
    Zombie,
    /// Exiting.
    Dead,
    /// An idle kernel thread.
    Idle,
    /// Parked kernel thread.
    Parked,
    /// Waking up.
    Waking,
    /// The OS reported a state Procyon does not know.
    Unknown,
}

/// One socket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct ConnectionSample {
    /// Transport protocol.
    pub protocol: Protocol,
    /// Local IP address (IPv4 or IPv6).
    #[ts(type = "string")]
    #[schema(value_type = String)]
    pub local_address: IpAddr,
    /// Local port.
    pub local_port: u16,
    /// Remote IP address; `null` for unconnected UDP sockets.
    #[ts(type = "string | null")]
    #[schema(value_type = Option<String>)]
    pub remote_address: Option<IpAddr>,
    /// Remote port; `null` for unconnected UDP sockets.
    pub remote_port: Option<u16>,
    /// TCP state; `null` for UDP.
    pub state: Option<TcpState>,
    /// Owning process; `null` when it is not known (no permission, or a socket in
    /// TIME_WAIT that no process holds any more).
    pub pid: Option<u32>,
}

/// Transport protocol of a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, TS, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// TCP connection state, named as `netstat` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, TS, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)] // the names are the standard TCP states
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    DeleteTcb,
    Unknown,
}

/// Network counters of all interfaces together and of each one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct NetworkSample {
    /// Sum over the interfaces, loopback excluded; `null` when not known (an upload
    /// that gives no network figures).
    pub total: Option<InterfaceCounters>,
    /// Each interface, loopback included, by name.
    pub interfaces: Vec<InterfaceSample>,
}

/// One network interface.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct InterfaceSample {
    /// Interface name, e.g. `"eth0"`.
    pub name: String,
    /// Its counters.
    pub counters: InterfaceCounters,
}

/// Counters since boot and rates over the last interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct InterfaceCounters {
    /// Bytes sent.
    #[ts(type = "number")]
    pub sent_bytes: u64,
    /// Bytes received.
    #[ts(type = "number")]
    pub received_bytes: u64,
    /// Packets sent.
    #[ts(type = "number")]
    pub sent_packets: u64,
    /// Packets received.
    #[ts(type = "number")]
    pub received_packets: u64,
    /// Receive errors.
    #[ts(type = "number")]
    pub errors_in: u64,
    /// Transmit errors.
    #[ts(type = "number")]
    pub errors_out: u64,
    /// Received packets dropped; `null` where the OS does not count them.
    #[ts(type = "number | null")]
    pub drops_in: Option<u64>,
    /// Outgoing packets dropped; `null` where the OS does not count them.
    #[ts(type = "number | null")]
    pub drops_out: Option<u64>,
    /// Send rate over the last interval.
    pub sent_bytes_per_sec: f64,
    /// Receive rate over the last interval.
    pub received_bytes_per_sec: f64,
    /// Packets sent per second over the last interval.
    pub sent_packets_per_sec: f64,
    /// Packets received per second over the last interval.
    pub received_packets_per_sec: f64,
}

/// How local ports are used.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct PortUsage {
    /// Sockets per local port and protocol, most used first.
    pub by_local_port: Vec<PortCount>,
    /// Listening TCP sockets and bound UDP sockets with their process.
    pub listening: Vec<ListeningPort>,
}

/// Number of sockets on one local port.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct PortCount {
    /// Protocol.
    pub protocol: Protocol,
    /// Local port.
    pub port: u16,
    /// Sockets on it.
    pub connections: u32,
}

/// A port that accepts traffic, with the process behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct ListeningPort {
    /// Protocol.
    pub protocol: Protocol,
    /// Address it is bound to (`0.0.0.0` or `::` for every address).
    #[ts(type = "string")]
    #[schema(value_type = String)]
    pub address: IpAddr,
    /// Port.
    pub port: u16,
    /// Owning process, when known.
    pub pid: Option<u32>,
    /// Owning process's name, when known.
    pub process_name: Option<String>,
}

/// A part of the snapshot that could not be measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct DomainError {
    /// Which part.
    pub domain: Domain,
    /// What went wrong, in words.
    pub message: String,
}

/// The parts of a snapshot that are measured separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Domain {
    /// The process table.
    Processes,
    /// Sockets and their owners.
    Connections,
    /// Network interface counters.
    Network,
}

/// What can be done to a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProcessAction {
    /// Pause it (SIGSTOP).
    Suspend,
    /// Let a paused process run again (SIGCONT).
    Resume,
    /// Ask it to exit (SIGTERM).
    Terminate,
    /// Force it to exit (SIGKILL).
    Kill,
}

impl ProcessAction {
    /// Every action, in the order a menu shows them.
    pub const ALL: [ProcessAction; 4] = [Self::Suspend, Self::Resume, Self::Terminate, Self::Kill];

    /// The lower-case name used in URLs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Suspend => "suspend",
            Self::Resume => "resume",
            Self::Terminate => "terminate",
            Self::Kill => "kill",
        }
    }

    /// The past tense, for messages such as "Process 123 terminated".
    pub fn past_tense(self) -> &'static str {
        match self {
            Self::Suspend => "suspended",
            Self::Resume => "resumed",
            Self::Terminate => "terminated",
            Self::Kill => "killed",
        }
    }
}

impl std::str::FromStr for ProcessAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown action `{s}`: expected suspend, resume, terminate or kill"))
    }
}

/// Why a process action was refused or failed. The UI shows `message` as it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct ActionError {
    /// What kind of failure, for code to branch on.
    pub code: ActionErrorCode,
    /// A sentence for a person, saying what happened and what to do about it.
    pub message: String,
}

/// Kinds of process action failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionErrorCode {
    /// No process has that pid.
    NotFound,
    /// The OS refused: the monitor lacks the privileges.
    PermissionDenied,
    /// Procyon refuses to act on this process (pid 1, itself, kernel threads).
    Protected,
    /// The pid now belongs to a different process than the one named.
    PidReused,
    /// This platform cannot do that action.
    Unsupported,
    /// Anything else the OS reported.
    Failed,
}

/// All types of this module in TypeScript, as one module for the dashboard
/// (`ui/src/lib/model.ts`). A test keeps the committed file equal to this.
pub fn typescript() -> String {
    let cfg = ts_rs::Config::new().with_large_int("number");
    let decls = [
        Snapshot::decl(&cfg),
        HostInfo::decl(&cfg),
        GpuSample::decl(&cfg),
        CpuSample::decl(&cfg),
        LoadAverage::decl(&cfg),
        MemorySample::decl(&cfg),
        ProcessSample::decl(&cfg),
        ProcessStatus::decl(&cfg),
        ConnectionSample::decl(&cfg),
        Protocol::decl(&cfg),
        TcpState::decl(&cfg),
        NetworkSample::decl(&cfg),
        InterfaceSample::decl(&cfg),
        InterfaceCounters::decl(&cfg),
        PortUsage::decl(&cfg),
        PortCount::decl(&cfg),
        ListeningPort::decl(&cfg),
        FilesystemSample::decl(&cfg),
        DiskSample::decl(&cfg),
        TemperatureSample::decl(&cfg),
        FanSample::decl(&cfg),
        BatterySample::decl(&cfg),
        DomainError::decl(&cfg),
        Domain::decl(&cfg),
        ProcessAction::decl(&cfg),
        ActionError::decl(&cfg),
        ActionErrorCode::decl(&cfg),
        api::Role::decl(&cfg),
        api::LoginResponse::decl(&cfg),
        api::HostSummary::decl(&cfg),
        api::HostFigures::decl(&cfg),
        api::BusiestProcess::decl(&cfg),
        api::FleetRow::decl(&cfg),
        api::FleetUpdate::decl(&cfg),
        api::HostLabels::decl(&cfg),
        api::SnapshotSummary::decl(&cfg),
        api::Tier::decl(&cfg),
        api::Series::decl(&cfg),
        api::SeriesPoint::decl(&cfg),
        api::ProcessSearch::decl(&cfg),
        api::ProcessSearchHost::decl(&cfg),
        api::TopProcess::decl(&cfg),
        api::ProcessHistoryPoint::decl(&cfg),
        api::AuditAction::decl(&cfg),
        api::AuditEntry::decl(&cfg),
        api::BulkTarget::decl(&cfg),
        api::BulkActionRequest::decl(&cfg),
        api::BulkResult::decl(&cfg),
        api::BulkActionResponse::decl(&cfg),
        api::UserSummary::decl(&cfg),
        details::ProcessDetails::decl(&cfg),
        details::ThreadDetail::decl(&cfg),
        details::OpenFile::decl(&cfg),
        details::FileKind::decl(&cfg),
        details::MemoryMaps::decl(&cfg),
        details::ResourceLimit::decl(&cfg),
        details::ContainerRef::decl(&cfg),
        details::ContainerRuntime::decl(&cfg),
        details::UnavailablePart::decl(&cfg),
        api::KeyScope::decl(&cfg),
        api::ApiKeySummary::decl(&cfg),
        api::ErrorBody::decl(&cfg),
        desktop::ApiRequest::decl(&cfg),
        desktop::ApiReply::decl(&cfg),
        desktop::DesktopMode::decl(&cfg),
        desktop::DesktopSettings::decl(&cfg),
        desktop::CollectorSettings::decl(&cfg),
        desktop::CollectorStatus::decl(&cfg),
        desktop::RemoteSession::decl(&cfg),
        desktop::DesktopState::decl(&cfg),
        desktop::CommandError::decl(&cfg),
        desktop::LiveEvent::decl(&cfg),
        delta::SnapshotDelta::decl(&cfg),
        delta::LiveMessage::decl(&cfg),
        delta::ProcessKey::decl(&cfg),
        delta::ProcessesDelta::decl(&cfg),
        delta::ProcessChange::decl(&cfg),
        delta::Placed::<()>::decl(&cfg),
        delta::ListDelta::<()>::decl(&cfg),
        delta::PortsDelta::decl(&cfg),
        crate::alert::rule::Metric::decl(&cfg),
        crate::alert::rule::Op::decl(&cfg),
        crate::alert::rule::Severity::decl(&cfg),
        crate::alert::rule::Aggregate::decl(&cfg),
        crate::alert::rule::AlertRule::decl(&cfg),
        crate::alert::rule::ChannelKind::decl(&cfg),
        crate::alert::rule::SmtpTls::decl(&cfg),
        crate::alert::rule::EmailSettings::decl(&cfg),
        crate::alert::quiet::QuietHours::decl(&cfg),
        crate::alert::rule::AlertChannel::decl(&cfg),
        crate::alert::status::AlertState::decl(&cfg),
        crate::alert::status::Alert::decl(&cfg),
        crate::alert::status::AlertEvent::decl(&cfg),
        crate::alert::status::DeliveryResult::decl(&cfg),
        crate::alert::status::AlertDelivery::decl(&cfg),
        crate::alert::status::Silence::decl(&cfg),
        crate::alert::status::NewSilence::decl(&cfg),
        netmap::NetworkMap::decl(&cfg),
        netmap::MapHost::decl(&cfg),
        netmap::MapNodeKind::decl(&cfg),
        netmap::MapNode::decl(&cfg),
        netmap::MapEdge::decl(&cfg),
        netmap::MapOmitted::decl(&cfg),
        dashboard::Sharing::decl(&cfg),
        dashboard::HostMetric::decl(&cfg),
        dashboard::ProcessMetric::decl(&cfg),
        dashboard::Widget::decl(&cfg),
        dashboard::DashboardInput::decl(&cfg),
        dashboard::Dashboard::decl(&cfg),
    ];
    let mut out =
        String::from("// Generated from src-tauri/src/model.rs by `cargo test` (UPDATE_TYPES=1). Do not edit.\n");
    for decl in decls {
        out.push('\n');
        out.push_str("export ");
        out.push_str(&decl);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the generated TypeScript lives, relative to the package root.
    const TS_PATH: &str = "ui/src/lib/model.ts";

    #[test]
    fn generated_typescript_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(TS_PATH);
        let fresh = typescript();
        if std::env::var_os("UPDATE_TYPES").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &fresh).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == fresh,
            "{TS_PATH} is stale: run `UPDATE_TYPES=1 cargo test -p procyon --lib model` and commit it"
        );
    }

    #[test]
    fn u64_fields_are_plain_numbers_in_typescript() {
        // JSON.parse yields numbers, never bigints: a `bigint` in the types would lie.
        assert!(!typescript().contains("bigint"));
    }

    #[test]
    fn enums_use_their_documented_spellings() {
        let json = serde_json::to_string(&(
            ProcessStatus::DiskSleep,
            TcpState::FinWait1,
            TcpState::Established,
            Protocol::Udp,
            ProcessAction::Kill,
            ActionErrorCode::PidReused,
        ))
        .unwrap();
        assert_eq!(json, r#"["disk_sleep","FIN_WAIT1","ESTABLISHED","udp","kill","pid_reused"]"#);
    }

    #[test]
    fn floats_survive_a_json_round_trip_exactly() {
        // Snapshots are compared after storage and transport; serde_json's default float
        // parser can be one ulp off, which the `float_roundtrip` feature prevents.
        let mut bits: u32 = 0x9E37_79B9;
        for _ in 0..200_000 {
            bits ^= bits << 13;
            bits ^= bits >> 17;
            bits ^= bits << 5;
            let value = f32::from_bits(bits);
            if !value.is_finite() {
                continue;
            }
            let wide = f64::from(value) * 1.000_000_1;
            let back: (f32, f64) = serde_json::from_str(&serde_json::to_string(&(value, wide)).unwrap()).unwrap();
            assert_eq!(back, (value, wide));
        }
    }

    #[test]
    fn actions_parse_from_their_names_only() {
        for action in ProcessAction::ALL {
            assert_eq!(action.as_str().parse::<ProcessAction>(), Ok(action));
        }
        assert!("Kill".parse::<ProcessAction>().is_err());
        assert!("stop".parse::<ProcessAction>().is_err());
    }
}
