//! Other platforms (macOS, Windows, BSDs): processes through sysinfo, socket owners from
//! netstat2. On Linux it is built for the tests only, as the general reading the Linux
//! shortcuts are checked against.
//!
//! The same functions as `linux.rs`, with the same meaning, so that `mod.rs` never needs
//! to know which one it is calling. sysinfo refreshes the command line and the owner
//! only the first time it sees a process (`UpdateKind::OnlyIfNotSet`), which keeps the
//! per-tick cost to what changes.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sysinfo::{
    Pid, ProcessRefreshKind, ProcessStatus as SysStatus, ProcessesToUpdate, System, ThreadKind, UpdateKind, Users,
};

use super::ProcessEntry;
use super::network::RawCounters;
use super::redact::{self, CmdlineMode};
use crate::model::{ProcessSample, ProcessStatus};

fn refresh_kind() -> ProcessRefreshKind {
    ProcessRefreshKind::nothing()
        .with_cpu()
        .with_memory()
        .with_disk_usage()
        .with_cmd(UpdateKind::OnlyIfNotSet)
        .with_user(UpdateKind::OnlyIfNotSet)
        .without_tasks()
}

fn status_of(s: SysStatus) -> ProcessStatus {
    match s {
        SysStatus::Run => ProcessStatus::Running,
        SysStatus::Sleep => ProcessStatus::Sleeping,
        SysStatus::UninterruptibleDiskSleep => ProcessStatus::DiskSleep,
        SysStatus::Stop => ProcessStatus::Stopped,
        SysStatus::Tracing => ProcessStatus::TracingStop,
        SysStatus::Zombie => ProcessStatus::Zombie,
        SysStatus::Dead => ProcessStatus::Dead,
        SysStatus::Idle => ProcessStatus::Idle,
        SysStatus::Parked => ProcessStatus::Parked,
        SysStatus::Waking => ProcessStatus::Waking,
        _ => ProcessStatus::Unknown,
    }
}

fn start_time(secs: u64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs as i64, 0).unwrap_or_default()
}

/// Reads the process table through sysinfo.
pub(super) struct Processes {
    cmdline: CmdlineMode,
    system: Option<System>,
    users: Option<Users>,
    cmds: HashMap<(u32, u64), String>,
}

impl Processes {
    pub fn new(cmdline: CmdlineMode) -> Processes {
        let mut system = System::new().ok();
        if let Some(s) = system.as_mut() {
            s.refresh_processes_specifics(ProcessesToUpdate::All, true, refresh_kind());
        }
        Processes { cmdline, system, users: Users::new_with_refreshed_list().ok(), cmds: HashMap::new() }
    }

    pub fn read(&mut self, memory_total: Option<u64>) -> std::io::Result<Vec<ProcessSample>> {
        let system =
            self.system.as_mut().ok_or_else(|| std::io::Error::other("the process table is not available here"))?;
        system.refresh_processes_specifics(ProcessesToUpdate::All, true, refresh_kind());
        let mut out = Vec::with_capacity(system.processes().len());
        let mut live = HashMap::with_capacity(self.cmds.len());
        let cmdline = self.cmdline;
        for (pid, p) in system.processes() {
            let pid = pid.as_u32();
            let key = (pid, p.start_time());
            let cmd = self.cmds.remove(&key).unwrap_or_else(|| {
                let args: Vec<String> = p.cmd().iter().map(|a| a.to_string_lossy().into_owned()).collect();
                redact::command_line_with(&args, cmdline)
            });
            let disk = p.disk_usage();
            let user = p.user_id().map(|uid| {
                self.users
                    .as_ref()
                    .and_then(|u| u.get_user_by_id(uid))
                    .map(|u| u.name().to_owned())
                    .unwrap_or_else(|| uid.to_string())
            });
            out.push(ProcessSample {
                pid,
                ppid: p.parent().map(Pid::as_u32),
                name: p.name().to_string_lossy().into_owned(),
                cmd: cmd.clone(),
                user,
                status: status_of(p.status()),
                cpu_percent: Some(p.cpu_usage()),
                memory_percent: memory_total.filter(|&t| t > 0).map(|t| (p.memory() as f64 / t as f64 * 100.0) as f32),
                rss_bytes: Some(p.memory()),
                virtual_bytes: Some(p.virtual_memory()),
                threads: p.tasks().map(|t| t.len() as u32),
                start_time: Some(start_time(p.start_time())),
                disk_read_bytes: Some(disk.total_read_bytes),
                disk_write_bytes: Some(disk.total_written_bytes),
                disk_read_bytes_per_sec: None,
                disk_write_bytes_per_sec: None,
                container: None,
                kernel_thread: p.thread_kind() == Some(ThreadKind::Kernel),
                gpu_percent: None,
                gpu_memory_bytes: None,
            });
            live.insert(key, cmd);
        }
        self.cmds = live;
        out.sort_unstable_by_key(|p| p.pid);
        Ok(out)
    }
}

/// Who a pid is right now, or `None` if no process has it.
pub(super) fn identify(pid: u32) -> Option<ProcessEntry> {
    let mut system = System::new().ok()?;
    let spid = Pid::from_u32(pid);
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[spid]),
        true,
        ProcessRefreshKind::nothing().with_user(UpdateKind::Always),
    );
    let p = system.process(spid)?;
    let users = Users::new_with_refreshed_list().ok();
    Some(ProcessEntry {
        pid,
        ppid: p.parent().map(Pid::as_u32),
        name: p.name().to_string_lossy().into_owned(),
        start_time: start_time(p.start_time()),
        kernel_thread: p.thread_kind() == Some(ThreadKind::Kernel),
        user: p
            .user_id()
            .and_then(|uid| users.as_ref().and_then(|u| u.get_user_by_id(uid)).map(|u| u.name().to_owned())),
    })
}

/// Every process with its parent, for walking a subtree.
pub(super) fn table() -> std::io::Result<Vec<ProcessEntry>> {
    let mut system = System::new().map_err(|e| std::io::Error::other(e.to_string()))?;
    system.refresh_processes_specifics(ProcessesToUpdate::All, true, ProcessRefreshKind::nothing());
    Ok(system
        .processes()
        .iter()
        .map(|(pid, p)| ProcessEntry {
            pid: pid.as_u32(),
            ppid: p.parent().map(Pid::as_u32),
            name: p.name().to_string_lossy().into_owned(),
            start_time: start_time(p.start_time()),
            kernel_thread: p.thread_kind() == Some(ThreadKind::Kernel),
            user: None,
        })
        .collect())
}

/// The program file of `pid`, through sysinfo.
#[cfg_attr(target_os = "linux", allow(dead_code))] // Linux has its own; this one is built for tests there
pub(super) fn executable(pid: u32) -> std::io::Result<super::Executable> {
    use std::io::{Error, ErrorKind};
    let mut system = System::new().map_err(|e| Error::other(e.to_string()))?;
    let spid = Pid::from_u32(pid);
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[spid]),
        true,
        ProcessRefreshKind::nothing().with_exe(UpdateKind::Always),
    );
    let process = system.process(spid).ok_or_else(|| Error::from(ErrorKind::NotFound))?;
    // No path: the OS would not tell (another user's process, typically).
    let path = process.exe().ok_or_else(|| Error::from(ErrorKind::PermissionDenied))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let name = name.strip_suffix(".exe").unwrap_or(&name).to_owned();
    let meta = std::fs::metadata(path)?;
    let ours = std::env::current_exe().ok().and_then(|p| std::fs::metadata(p).ok());
    #[cfg(unix)]
    let (is_ours, owned_by_us_or_root) = {
        use std::os::unix::fs::MetadataExt;
        let uid = nix::unistd::geteuid().as_raw();
        (
            ours.is_some_and(|o| (o.dev(), o.ino()) == (meta.dev(), meta.ino())),
            (meta.uid() == 0 || meta.uid() == uid) && meta.mode() & 0o022 == 0,
        )
    };
    #[cfg(not(unix))]
    let (is_ours, owned_by_us_or_root) = {
        let _ = (meta, ours);
        (std::env::current_exe().ok().as_deref() == Some(path), false)
    };
    Ok(super::Executable { file_name: name, is_ours, owned_by_us_or_root })
}

/// Every TCP and UDP socket with its owning process.
pub(super) struct Sockets;

impl Sockets {
    pub fn new() -> Sockets {
        Sockets
    }

    /// The sockets now, with their owners (`_processes`, this tick's processes, are of
    /// no help here: netstat2 finds the owners itself).
    pub fn read(&mut self, _processes: &[ProcessSample]) -> Result<Vec<(netstat2::SocketInfo, Option<u32>)>, String> {
        let sockets = netstat2::get_sockets_info(super::socket::FAMILIES, super::socket::PROTOCOLS)
            .map_err(|e| format!("cannot list sockets: {e}"))?;
        Ok(sockets
            .into_iter()
            .map(|s| {
                let pid = s.associated_pids.first().copied();
                (s, pid)
            })
            .collect())
    }
}

/// Network interface counters, through sysinfo (drops are not counted there).
pub(super) struct Interfaces {
    networks: Option<sysinfo::Networks>,
}

impl Interfaces {
    pub fn new() -> Interfaces {
        Interfaces { networks: sysinfo::Networks::new().ok() }
    }

    pub fn read(&mut self) -> Result<Vec<(String, RawCounters)>, String> {
        let networks = self.networks.as_mut().ok_or("network counters are not available here")?;
        networks.refresh(true);
        Ok(networks
            .iter()
            .map(|(name, n)| {
                (
                    name.to_string_lossy().into_owned(),
                    RawCounters {
                        received_bytes: n.total_received(),
                        received_packets: n.total_packets_received(),
                        errors_in: n.total_errors_on_received(),
                        drops_in: None,
                        sent_bytes: n.total_transmitted(),
                        sent_packets: n.total_packets_transmitted(),
                        errors_out: n.total_errors_on_transmitted(),
                        drops_out: None,
                    },
                )
            })
            .collect())
    }
}

/// The stable machine identifier, if the system has one: macOS's `IOPlatformUUID`,
/// asked of the tool every install has (no crate with unsafe FFI needed; run once, when
/// the sampler starts).
#[cfg(target_os = "macos")]
pub(super) fn machine_id() -> Option<String> {
    tool_output("/usr/sbin/ioreg", &["-rd1", "-c", "IOPlatformExpertDevice"])
        .and_then(|out| super::machine::id_from_ioreg(&out))
}

/// The stable machine identifier, if the system has one: Windows' `MachineGuid`, asked
/// of `reg` (no crate with unsafe FFI needed; run once, when the sampler starts).
#[cfg(windows)]
pub(super) fn machine_id() -> Option<String> {
    tool_output("reg", &["query", r"HKLM\SOFTWARE\Microsoft\Cryptography", "/v", "MachineGuid"])
        .and_then(|out| super::machine::id_from_reg_query(&out))
}

/// The stable machine identifier, if the system has one.
#[cfg(not(any(target_os = "macos", windows)))]
#[cfg_attr(target_os = "linux", allow(dead_code))] // Linux has its own; this one is built for tests there
pub(super) fn machine_id() -> Option<String> {
    None
}

/// What `program` prints, if it ran and succeeded.
#[cfg(any(target_os = "macos", windows))]
fn tool_output(program: &str, args: &[&str]) -> Option<String> {
    let mut command = std::process::Command::new(program);
    command.args(args).stdin(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    #[cfg(windows)]
    {
        // No console window flashing up from the desktop app.
        use std::os::windows::process::CommandExt;
        const CREATE_NO_WINDOW: u32 = 0x0800_0000;
        command.creation_flags(CREATE_NO_WINDOW);
    }
    let output = command.output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}
