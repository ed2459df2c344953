//! The sampler: the one owner of the OS handles, producing a [`Snapshot`] per tick.
//!
//! A [`Sampler`] keeps what it needs between ticks (previous CPU and network counters,
//! the static fields of known processes, the socket-owner map), so that each tick reads
//! only what changes. [`spawn`] runs one on its own thread and publishes the newest
//! snapshot; everything else (the collector, the agent, the desktop window) reads that
//! published value and never samples on its own.
//!
//! Per-OS code lives only here: `linux.rs` reads `/proc` directly, `portable.rs` goes
//! through sysinfo and netstat2 on other systems. Both offer the same functions with the
//! same meaning; on Linux, `portable.rs` is built for the tests too, which check the
//! Linux shortcuts against it (`crosscheck.rs`). `system.rs` (CPU, memory, host) is
//! sysinfo on every OS. `machine.rs` makes the fingerprint an agent sends in its hello.
//! `details.rs` reads one process in depth when someone asks ([`details`]),
//! `container.rs` tells a process's container from its control groups, and
//! `container_names.rs` asks Docker's and Podman's sockets for their containers' names.
//! `gpu.rs` reads the GPUs and each process's use of them (DRM statistics in `drm.rs`,
//! NVIDIA's NVML in `nvml.rs`), at no cost on a machine without one. `storage.rs`
//! (filesystems, disk I/O) and `sensors.rs` (temperatures, fans, batteries) read the
//! host in depth, each part at its own cadence.
//!
//! A part that fails (say, the socket list) is reported in [`Snapshot::errors`] and the
//! rest of the snapshot is kept: one failing source never loses a tick.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

#[cfg(not(target_os = "linux"))]
use crate::model::ActionErrorCode;
use crate::model::details::ProcessDetails;
use crate::model::{
    ActionError, ConnectionSample, Domain, DomainError, HostInfo, NetworkSample, SCHEMA_VERSION, Snapshot,
};

pub mod container;
#[cfg(target_os = "linux")]
pub mod container_names;
mod drm;
mod gpu;
pub mod machine;
mod network;
mod nvml;
pub mod redact;
pub mod sensors;
mod socket;
pub mod storage;
mod system;

#[cfg(target_os = "linux")]
mod details;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
mod sock_diag;
#[cfg(target_os = "linux")]
use linux as os;

#[cfg(all(test, target_os = "linux"))]
mod crosscheck;

#[cfg(any(not(target_os = "linux"), test))]
mod portable;
#[cfg(not(target_os = "linux"))]
use portable as os;

pub use redact::CmdlineMode;

/// How a sampler is set up.
#[derive(Clone, Debug, Default)]
pub struct SamplerOptions {
    /// Report this host name instead of the machine's own (agents may be told to).
    pub hostname: Option<String>,
    /// How much of each command line to report: all of it (secrets masked), the
    /// program only, or nothing.
    pub cmdline: CmdlineMode,
}

/// Samples one machine. Create it once and call [`Sampler::sample`] once per tick.
pub struct Sampler {
    system: system::System,
    processes: os::Processes,
    sockets: os::Sockets,
    interfaces: os::Interfaces,
    rates: network::Rates,
    gpus: gpu::Gpus,
    hardware: Hardware,
    host: HostInfo,
    seq: u64,
    last: Instant,
    #[cfg(target_os = "linux")]
    container_names: container_names::Names,
}

impl Sampler {
    /// Takes the baseline readings that the first snapshot's CPU and rate figures are
    /// measured against.
    pub fn new(options: SamplerOptions) -> Sampler {
        let system = system::System::new();
        let host = system.host(options.hostname.as_deref(), os::machine_id().map(|id| machine::host_id(&id)));
        let processes = os::Processes::new(options.cmdline);
        let mut interfaces = os::Interfaces::new();
        let mut rates = network::Rates::default();
        if let Ok(now) = interfaces.read() {
            rates.prime(now);
        }
        Sampler {
            system,
            processes,
            sockets: os::Sockets::new(),
            interfaces,
            rates,
            gpus: gpu::Gpus::new(),
            hardware: Hardware::new(),
            host,
            seq: 0,
            last: Instant::now(),
            #[cfg(target_os = "linux")]
            container_names: container_names::Names::default(),
        }
    }

    /// The machine this sampler describes.
    pub fn host(&self) -> &HostInfo {
        &self.host
    }

    /// Continues numbering after `seq` (an agent that restarts resumes its sequence).
    pub fn set_seq(&mut self, seq: u64) {
        self.seq = seq;
    }

    /// Takes a snapshot. If the previous one (or the baseline) was taken less than
    /// [`sysinfo::MINIMUM_CPU_UPDATE_INTERVAL`] ago, waits the rest of it first, so that
    /// CPU figures are always real measurements.
    pub fn sample(&mut self) -> Snapshot {
        let min = sysinfo::MINIMUM_CPU_UPDATE_INTERVAL;
        let waited = self.last.elapsed();
        if waited < min {
            thread::sleep(min - waited);
        }
        let now = Instant::now();
        let interval = now - self.last;
        self.last = now;
        let secs = interval.as_secs_f64();
        let taken_at = Utc::now();
        let mut errors = Vec::new();

        let (cpu, memory) = self.system.read();

        #[allow(unused_mut)] // named in place on Linux only
        let mut processes = self.processes.read(memory.total_bytes).unwrap_or_else(|e| {
            errors.push(DomainError { domain: Domain::Processes, message: format!("cannot list processes: {e}") });
            Vec::new()
        });
        #[cfg(target_os = "linux")]
        self.container_names.name(&mut processes);

        let gpus = self.gpus.read(&mut processes, now);

        let connections: Vec<ConnectionSample> = match self.sockets.read(&processes) {
            Ok(sockets) => sockets.iter().map(|(info, pid)| socket::connection(info, *pid)).collect(),
            Err(message) => {
                errors.push(DomainError { domain: Domain::Connections, message });
                Vec::new()
            }
        };
        let name_of =
            |pid: u32| processes.binary_search_by_key(&pid, |p| p.pid).ok().map(|i| processes[i].name.clone());
        let ports = socket::port_usage(&connections, name_of);

        let network = match self.interfaces.read() {
            Ok(now) => self.rates.sample(now, secs),
            Err(message) => {
                errors.push(DomainError { domain: Domain::Network, message });
                NetworkSample { total: None, interfaces: Vec::new() }
            }
        };

        let hardware = self.hardware.read(secs);

        self.seq += 1;
        Snapshot {
            schema_version: SCHEMA_VERSION,
            host: self.host.clone(),
            taken_at,
            seq: self.seq,
            interval_ms: interval.as_millis() as u64,
            cpu,
            memory,
            processes,
            connections,
            network,
            ports,
            errors,
            gpus,
            filesystems: hardware.filesystems,
            disks: hardware.disks,
            temperatures: hardware.temperatures,
            fans: hardware.fans,
            batteries: hardware.batteries,
        }
    }
}

/// What [`Hardware::read`] gives: the snapshot's host-in-depth fields.
#[derive(Default)]
struct HardwareSample {
    filesystems: Option<Vec<crate::model::FilesystemSample>>,
    disks: Option<Vec<crate::model::DiskSample>>,
    temperatures: Option<Vec<crate::model::TemperatureSample>>,
    fans: Option<Vec<crate::model::FanSample>>,
    batteries: Option<Vec<crate::model::BatterySample>>,
}

/// Filesystems, disks, sensors and batteries, each at its cadence: disk rates each
/// tick, the rest every [`storage::FILESYSTEMS_EVERY`] and [`sensors::SENSORS_EVERY`],
/// carried over between. On Linux from `/proc` and `/sys`; elsewhere filesystems and
/// temperatures through sysinfo (no disk I/O, fans or batteries: those stay absent).
struct Hardware {
    #[cfg(target_os = "linux")]
    storage: storage::Storage,
    #[cfg(target_os = "linux")]
    sensors: Option<(Instant, HardwareSample)>,
    #[cfg(not(target_os = "linux"))]
    portable: Option<(Instant, HardwareSample)>,
    #[cfg(not(target_os = "linux"))]
    disks: Option<sysinfo::Disks>,
    #[cfg(not(target_os = "linux"))]
    components: Option<sysinfo::Components>,
}

impl Hardware {
    fn new() -> Hardware {
        Hardware {
            #[cfg(target_os = "linux")]
            storage: storage::Storage::new(),
            #[cfg(target_os = "linux")]
            sensors: None,
            #[cfg(not(target_os = "linux"))]
            portable: None,
            #[cfg(not(target_os = "linux"))]
            disks: sysinfo::Disks::new().ok(),
            #[cfg(not(target_os = "linux"))]
            components: sysinfo::Components::new().ok(),
        }
    }

    #[cfg(target_os = "linux")]
    fn read(&mut self, secs: f64) -> HardwareSample {
        let stale = self.sensors.as_ref().is_none_or(|(at, _)| at.elapsed() >= sensors::SENSORS_EVERY);
        if stale {
            // No hwmon or power_supply class at all (a virtual machine without sensors)
            // is a machine measured to have none; no sysfs is a machine not measured.
            let sysfs = std::path::Path::new("/sys/class").is_dir();
            let (temperatures, fans) = sensors::read_hwmon(std::path::Path::new("/sys/class/hwmon"))
                .or_else(|| sysfs.then(Default::default))
                .map_or((None, None), |(t, f)| (Some(t), Some(f)));
            let batteries = sensors::read_power_supplies(std::path::Path::new("/sys/class/power_supply"))
                .or_else(|| sysfs.then(Vec::new));
            self.sensors =
                Some((Instant::now(), HardwareSample { temperatures, fans, batteries, ..HardwareSample::default() }));
        }
        let carried = self.sensors.as_ref().map(|(_, s)| s);
        HardwareSample {
            filesystems: self.storage.filesystems(),
            disks: self.storage.disks(secs),
            temperatures: carried.and_then(|s| s.temperatures.clone()),
            fans: carried.and_then(|s| s.fans.clone()),
            batteries: carried.and_then(|s| s.batteries.clone()),
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn read(&mut self, _secs: f64) -> HardwareSample {
        let stale = self.portable.as_ref().is_none_or(|(at, _)| at.elapsed() >= storage::FILESYSTEMS_EVERY);
        if stale {
            let sample = HardwareSample {
                filesystems: self.disks.as_mut().map(storage::portable_filesystems),
                temperatures: self.components.as_mut().map(sensors::portable_temperatures),
                ..HardwareSample::default()
            };
            self.portable = Some((Instant::now(), sample));
        }
        let carried = self.portable.as_ref().map(|(_, s)| s);
        HardwareSample {
            filesystems: carried.and_then(|s| s.filesystems.clone()),
            temperatures: carried.and_then(|s| s.temperatures.clone()),
            ..HardwareSample::default()
        }
    }
}

/// Who a process is: enough to recognise it again and to walk its family.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessEntry {
    /// Process id.
    pub pid: u32,
    /// Parent's process id.
    pub ppid: Option<u32>,
    /// Short name.
    pub name: String,
    /// Start time, exactly as [`crate::model::ProcessSample::start_time`] reports it (a
    /// sampler always knows it; only uploads leave it out).
    pub start_time: DateTime<Utc>,
    /// A kernel thread.
    pub kernel_thread: bool,
    /// Owner's user name, where it was looked up.
    pub user: Option<String>,
}

/// The process that has `pid` now, or `None` if there is none.
pub fn identify(pid: u32) -> Option<ProcessEntry> {
    os::identify(pid)
}

/// Every process now, with its parent.
pub fn process_table() -> std::io::Result<Vec<ProcessEntry>> {
    os::table()
}

/// The program file a process runs, as the kernel knows it (on Linux `/proc/PID/exe`,
/// not the name the process gives itself, which any process can change).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Executable {
    /// Its file name, e.g. `procyon-agent` (without Linux's ` (deleted)` for a file
    /// replaced since the process started, nor a `.exe`).
    pub file_name: String,
    /// It is the very file this process runs (same device and inode), whatever its name.
    pub is_ours: bool,
    /// Only root or the user this process runs as can have put it there: it is owned by
    /// one of them and writable by nobody else. `false` where the OS cannot tell.
    pub owned_by_us_or_root: bool,
}

/// The program file `pid` runs. An error of kind `NotFound` when the process is gone
/// (or is a zombie or a kernel thread, which run none), `PermissionDenied` when this
/// process may not look (another user's, without the right to inspect it).
pub fn executable(pid: u32) -> std::io::Result<Executable> {
    os::executable(pid)
}

/// How long the CPU figures of a process's threads are measured over when its details
/// are read: long enough for a busy thread to show, short enough not to keep a person
/// waiting.
pub const DETAILS_WINDOW: Duration = Duration::from_millis(250);

/// One process in depth, read now (it blocks for [`DETAILS_WINDOW`]). `start_time`, when
/// given, must be the process's: a reused pid is refused with `PidReused`. `NotFound`
/// when the process is gone (or exited while it was read); parts the monitor may not
/// read are listed in [`ProcessDetails::unavailable`], not failed.
pub fn details(pid: u32, start_time: Option<DateTime<Utc>>) -> Result<ProcessDetails, ActionError> {
    #[cfg(target_os = "linux")]
    {
        details::read(pid, start_time, DETAILS_WINDOW)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (pid, start_time);
        Err(ActionError {
            code: ActionErrorCode::Unsupported,
            message: "Process details are read on Linux only for now.".into(),
        })
    }
}

/// Runs `sampler` on its own thread, one snapshot every `interval`, and publishes the
/// newest. The thread ends when every receiver is gone.
///
/// The receiver holds `None` until the first snapshot is ready (at most a few hundred
/// milliseconds after the sampler was created).
pub fn spawn(sampler: Sampler, interval: Duration) -> watch::Receiver<Option<Arc<Snapshot>>> {
    spawn_pausable(sampler, interval, watch::channel(false).1)
}

/// Like [`spawn`], but no snapshot is taken while `paused` is set (the desktop's "Pause
/// updates": paused means no reading of `/proc` at all, not readings thrown away).
pub fn spawn_pausable(
    mut sampler: Sampler,
    interval: Duration,
    paused: watch::Receiver<bool>,
) -> watch::Receiver<Option<Arc<Snapshot>>> {
    let (tx, rx) = watch::channel(None);
    let spawned = thread::Builder::new().name("procyon-sampler".into()).spawn(move || {
        loop {
            let started = Instant::now();
            if !*paused.borrow() {
                let snapshot = Arc::new(sampler.sample());
                if tx.send(Some(snapshot)).is_err() {
                    return; // nobody listens any more
                }
            } else if tx.is_closed() {
                return;
            }
            if let Some(rest) = interval.checked_sub(started.elapsed()) {
                thread::sleep(rest);
            }
        }
    });
    if let Err(e) = spawned {
        // Without a thread there will be no snapshots; say so instead of waiting forever.
        tracing::error!("cannot start the sampler thread: {e}");
    }
    rx
}
