//! Linux: processes straight from `/proc`, and which process owns which socket.
//!
//! The point is to read as little as possible per tick. For a process already known, a
//! tick reads `/proc/PID/stat` (state, parent, CPU ticks, threads, sizes) and
//! `/proc/PID/io` (disk bytes). The command line, the owner and the name are read once,
//! when a process first appears; a process is "the same" while its pid and start time
//! are the same, so a reused pid is noticed and read afresh.
//!
//! Socket owners: the kernel lists sockets with their inode (netlink, in `socket.rs`),
//! but only `/proc/*/fd` says which process holds an inode. Walking every descriptor of
//! every process costs more than the rest of a tick together, so [`SocketOwners`] keeps
//! the map and walks again only when a socket shows up that it has not looked for yet.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::network::{RawCounters, parse_proc_net_dev};
use super::{ProcessEntry, redact};
use crate::model::{ProcessSample, ProcessStatus};

/// `PF_KTHREAD` in `/proc/PID/stat`'s flags: the task is a kernel thread.
const PF_KTHREAD: u64 = 0x0020_0000;

/// The fields of `/proc/PID/stat` that Procyon uses.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Stat {
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    pub flags: u64,
    /// User plus system time, in clock ticks.
    pub cpu_ticks: u64,
    pub threads: u32,
    /// Start time in clock ticks after boot.
    pub start_ticks: u64,
    pub vsize_bytes: u64,
    pub rss_pages: u64,
}

/// Parses `/proc/PID/stat`. The name (field 2) is in parentheses and may itself hold
/// spaces and parentheses, so the fields after it are found from the *last* `)`.
pub(super) fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let mut fields = text.get(close + 1..)?.split_ascii_whitespace();
    // `fields` now starts at field 3 (state); `nth(k)` skips k fields.
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?; // 4
    let flags = fields.nth(4)?.parse().ok()?; // 9
    let utime: u64 = fields.nth(4)?.parse().ok()?; // 14
    let stime: u64 = fields.next()?.parse().ok()?; // 15
    let threads = fields.nth(4)?.parse().ok()?; // 20
    let start_ticks = fields.nth(1)?.parse().ok()?; // 22
    let vsize_bytes = fields.next()?.parse().ok()?; // 23
    let rss_pages = fields.next()?.parse().ok()?; // 24
    Some(Stat { comm, state, ppid, flags, cpu_ticks: utime + stime, threads, start_ticks, vsize_bytes, rss_pages })
}

fn status_of(state: char) -> ProcessStatus {
    match state {
        'R' => ProcessStatus::Running,
        'S' => ProcessStatus::Sleeping,
        'D' => ProcessStatus::DiskSleep,
        'T' => ProcessStatus::Stopped,
        't' => ProcessStatus::TracingStop,
        'Z' => ProcessStatus::Zombie,
        'X' | 'x' => ProcessStatus::Dead,
        'I' => ProcessStatus::Idle,
        'P' => ProcessStatus::Parked,
        'W' => ProcessStatus::Waking,
        _ => ProcessStatus::Unknown,
    }
}

/// Parses `read_bytes` and `write_bytes` of `/proc/PID/io`.
pub(super) fn parse_io(text: &str) -> Option<(u64, u64)> {
    let mut read = None;
    let mut write = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("read_bytes:") {
            read = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("write_bytes:") {
            write = v.trim().parse().ok();
        }
    }
    Some((read?, write?))
}

/// The real uid on the `Uid:` line of `/proc/PID/status`.
fn parse_status_uid(text: &str) -> Option<u32> {
    let line = text.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// Clock facts needed to turn `/proc` ticks into times.
#[derive(Debug, Clone, Copy)]
struct Clock {
    ticks_per_sec: u64,
    page_size: u64,
    /// Boot time in whole seconds since the epoch (`btime` in `/proc/stat`).
    boot_secs: i64,
}

impl Clock {
    fn read() -> Clock {
        let sysconf = |v| nix::unistd::sysconf(v).ok().flatten().filter(|n| *n > 0);
        let ticks_per_sec = sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap_or(100) as u64;
        let page_size = sysconf(nix::unistd::SysconfVar::PAGE_SIZE).unwrap_or(4096) as u64;
        let boot_secs = fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0);
        Clock { ticks_per_sec, page_size, boot_secs }
    }

    /// A start time in ticks after boot as a UTC time with millisecond precision. The
    /// same ticks always give the same time, so it serves as an identity.
    fn start_time(&self, start_ticks: u64) -> DateTime<Utc> {
        let ms = self.boot_secs * 1000 + (start_ticks * 1000 / self.ticks_per_sec) as i64;
        DateTime::from_timestamp_millis(ms).unwrap_or_default()
    }
}

/// What is kept about a known process between ticks.
struct Known {
    start_ticks: u64,
    name: String,
    cmd: String,
    user: Option<String>,
    kernel_thread: bool,
    cpu_ticks: u64,
    seen_at: Instant,
    /// `None` once `/proc/PID/io` refused us: it will keep refusing, so stop asking.
    io: Option<(u64, u64)>,
    io_denied: bool,
}

/// Reads the process table, keeping what does not change between ticks.
pub(super) struct Processes {
    clock: Clock,
    known: HashMap<u32, Known>,
    users: UserNames,
    buf: String,
}

impl Processes {
    pub fn new() -> Processes {
        let mut p = Processes {
            clock: Clock::read(),
            known: HashMap::new(),
            users: UserNames::default(),
            buf: String::with_capacity(1024),
        };
        // The baseline: CPU figures of the first real sample are deltas against it.
        let _ = p.read(1);
        p
    }

    /// Every process now. `memory_total` turns resident sizes into percentages.
    pub fn read(&mut self, memory_total: u64) -> std::io::Result<Vec<ProcessSample>> {
        let now = Instant::now();
        let wall_now = Utc::now();
        let mut out = Vec::with_capacity(self.known.len() + 16);
        let mut alive = HashSet::with_capacity(self.known.len() + 16);
        for pid in pids()? {
            let dir = Path::new("/proc").join(pid.to_string());
            if read_into(&dir.join("stat"), &mut self.buf).is_err() {
                continue; // exited between listing and reading
            }
            let Some(stat) = parse_stat(&self.buf) else { continue };
            alive.insert(pid);

            let fresh = match self.known.get(&pid) {
                Some(k) => k.start_ticks != stat.start_ticks,
                None => true,
            };
            if fresh {
                let known = self.first_look(&dir, &stat, now);
                self.known.insert(pid, known);
            }
            let Some(known) = self.known.get_mut(&pid) else { continue };

            let start_time = self.clock.start_time(stat.start_ticks);
            // CPU over the interval since we last saw it; a process born during the
            // interval is measured over its own life so far.
            let since_seen = now.duration_since(known.seen_at).as_secs_f64();
            let lifetime = (wall_now - start_time).num_milliseconds().max(1) as f64 / 1000.0;
            let (delta_ticks, span) = if fresh {
                (stat.cpu_ticks, lifetime)
            } else {
                (stat.cpu_ticks.saturating_sub(known.cpu_ticks), since_seen)
            };
            let cpu_percent = if span > 0.0 {
                (delta_ticks as f64 / self.clock.ticks_per_sec as f64 / span * 100.0) as f32
            } else {
                0.0
            };

            let mut disk_read_rate = None;
            let mut disk_write_rate = None;
            if !known.io_denied {
                match read_into(&dir.join("io"), &mut self.buf) {
                    Ok(()) => {
                        let now_io = parse_io(&self.buf);
                        if let (Some((r, w)), Some((pr, pw))) = (now_io, known.io)
                            && since_seen > 0.0
                            && !fresh
                        {
                            disk_read_rate = Some(r.saturating_sub(pr) as f64 / since_seen);
                            disk_write_rate = Some(w.saturating_sub(pw) as f64 / since_seen);
                        }
                        known.io = now_io;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                        known.io_denied = true;
                        known.io = None;
                    }
                    Err(_) => known.io = None,
                }
            }
            known.cpu_ticks = stat.cpu_ticks;
            known.seen_at = now;

            let rss_bytes = stat.rss_pages * self.clock.page_size;
            out.push(ProcessSample {
                pid,
                ppid: (stat.ppid != 0).then_some(stat.ppid),
                name: known.name.clone(),
                cmd: known.cmd.clone(),
                user: known.user.clone(),
                status: status_of(stat.state),
                cpu_percent,
                memory_percent: if memory_total > 0 {
                    (rss_bytes as f64 / memory_total as f64 * 100.0) as f32
                } else {
                    0.0
                },
                rss_bytes,
                virtual_bytes: stat.vsize_bytes,
                threads: Some(stat.threads),
                start_time,
                disk_read_bytes: known.io.map(|(r, _)| r),
                disk_write_bytes: known.io.map(|(_, w)| w),
                disk_read_bytes_per_sec: disk_read_rate,
                disk_write_bytes_per_sec: disk_write_rate,
                kernel_thread: known.kernel_thread,
            });
        }
        self.known.retain(|pid, _| alive.contains(pid));
        Ok(out)
    }

    /// Reads what stays fixed for a process's life: its name, command line and owner.
    fn first_look(&mut self, dir: &Path, stat: &Stat, now: Instant) -> Known {
        let kernel_thread = stat.flags & PF_KTHREAD != 0;
        let args: Vec<String> = if kernel_thread {
            Vec::new()
        } else {
            fs::read(dir.join("cmdline"))
                .map(|raw| {
                    raw.split(|b| *b == 0)
                        .filter(|a| !a.is_empty())
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let uid = fs::read_to_string(dir.join("status"))
            .ok()
            .and_then(|s| parse_status_uid(&s))
            .or_else(|| fs::metadata(dir).ok().map(|m| m.uid()));
        Known {
            start_ticks: stat.start_ticks,
            name: redact::printable(&display_name(&stat.comm, args.first().map(String::as_str))),
            cmd: redact::command_line(&args),
            user: uid.map(|u| self.users.name(u)),
            kernel_thread,
            cpu_ticks: stat.cpu_ticks,
            seen_at: now,
            io: None,
            io_denied: false,
        }
    }
}

/// The kernel keeps only 15 bytes of a name (`comm`). When the command line's program
/// name starts with that, the full program name is the better name.
fn display_name(comm: &str, argv0: Option<&str>) -> String {
    const COMM_MAX: usize = 15;
    if comm.len() >= COMM_MAX
        && let Some(argv0) = argv0
    {
        let base = argv0.rsplit('/').next().unwrap_or(argv0);
        let base = base.split_ascii_whitespace().next().unwrap_or(base);
        if base.starts_with(comm) {
            return base.to_owned();
        }
    }
    comm.to_owned()
}

/// The numeric entries of `/proc`.
fn pids() -> std::io::Result<Vec<u32>> {
    let mut out = Vec::with_capacity(512);
    for entry in fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
            out.push(pid);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Reads a whole (small) file into `buf`, reusing its allocation.
fn read_into(path: &Path, buf: &mut String) -> std::io::Result<()> {
    buf.clear();
    fs::File::open(path)?.read_to_string(buf)?;
    Ok(())
}

/// User names by uid, looked up once each through the system's user database (NSS, so
/// LDAP and friends work too).
#[derive(Default)]
struct UserNames {
    names: HashMap<u32, String>,
}

impl UserNames {
    fn name(&mut self, uid: u32) -> String {
        self.names
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map_or_else(|| uid.to_string(), |u| u.name)
            })
            .clone()
    }
}

/// Who a pid is right now, or `None` if no process has it.
pub(super) fn identify(pid: u32) -> Option<ProcessEntry> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let stat = parse_stat(&text)?;
    let clock = Clock::read();
    let user = fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| parse_status_uid(&s))
        .map(|uid| UserNames::default().name(uid));
    // The same name the sampler shows (the kernel keeps only 15 bytes of it).
    let argv0 = fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .and_then(|raw| raw.split(|b| *b == 0).next().map(|a| String::from_utf8_lossy(a).into_owned()));
    Some(ProcessEntry {
        pid,
        ppid: (stat.ppid != 0).then_some(stat.ppid),
        name: redact::printable(&display_name(&stat.comm, argv0.as_deref())),
        start_time: clock.start_time(stat.start_ticks),
        kernel_thread: stat.flags & PF_KTHREAD != 0,
        user,
    })
}

/// Every process with its parent, for walking a subtree.
pub(super) fn table() -> std::io::Result<Vec<ProcessEntry>> {
    let clock = Clock::read();
    let mut buf = String::new();
    let mut out = Vec::new();
    for pid in pids()? {
        if read_into(Path::new(&format!("/proc/{pid}/stat")), &mut buf).is_err() {
            continue;
        }
        if let Some(stat) = parse_stat(&buf) {
            out.push(ProcessEntry {
                pid,
                ppid: (stat.ppid != 0).then_some(stat.ppid),
                name: stat.comm,
                start_time: clock.start_time(stat.start_ticks),
                kernel_thread: stat.flags & PF_KTHREAD != 0,
                user: None,
            });
        }
    }
    Ok(out)
}

/// Every TCP and UDP socket with its owning process.
#[derive(Default)]
pub(super) struct Sockets {
    owners: SocketOwners,
}

impl Sockets {
    pub fn new() -> Sockets {
        Sockets::default()
    }

    pub fn read(&mut self) -> Result<Vec<(netstat2::SocketInfo, Option<u32>)>, String> {
        let sockets: Vec<netstat2::SocketInfo> =
            netstat2::iterate_sockets_info_without_pids(super::socket::FAMILIES, super::socket::PROTOCOLS)
                .map_err(|e| format!("cannot list sockets: {e}"))?
                .filter_map(Result::ok)
                .collect();
        let inodes: Vec<u32> = sockets.iter().map(|s| s.inode).collect();
        let owners = self.owners.resolve(&inodes);
        Ok(sockets.into_iter().zip(owners).collect())
    }
}

/// Which process holds which socket inode, refreshed only when needed.
#[derive(Default)]
struct SocketOwners {
    owners: HashMap<u32, u32>,
    /// Inodes looked for in the last walk and not found (other users' sockets without
    /// privileges, or sockets no process holds). Not looked for again.
    unowned: HashSet<u32>,
}

impl SocketOwners {
    /// The owner of each inode in `inodes` (same order), walking `/proc/*/fd` only if one
    /// of them is new.
    fn resolve(&mut self, inodes: &[u32]) -> Vec<Option<u32>> {
        let current: HashSet<u32> = inodes.iter().copied().filter(|i| *i != 0).collect();
        let new = current.iter().any(|i| !self.owners.contains_key(i) && !self.unowned.contains(i));
        if new {
            self.owners = walk_socket_fds();
            self.unowned = current.iter().copied().filter(|i| !self.owners.contains_key(i)).collect();
        } else {
            self.owners.retain(|i, _| current.contains(i));
            self.unowned.retain(|i| current.contains(i));
        }
        inodes.iter().map(|i| self.owners.get(i).copied()).collect()
    }
}

/// The inode of every socket each process holds open. Descriptors of processes we may
/// not look into are skipped.
fn walk_socket_fds() -> HashMap<u32, u32> {
    let mut map = HashMap::new();
    let Ok(pids) = pids() else { return map };
    for pid in pids {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else { continue };
            let Some(target) = target.to_str() else { continue };
            if let Some(inode) =
                target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')).and_then(|t| t.parse().ok())
            {
                // Several processes can share a socket (after fork); the first, lowest
                // pid, is usually the parent that opened it.
                map.entry(inode).or_insert(pid);
            }
        }
    }
    map
}

/// Network interface counters, from `/proc/net/dev`.
pub(super) struct Interfaces;

impl Interfaces {
    pub fn new() -> Interfaces {
        Interfaces
    }

    pub fn read(&mut self) -> Result<Vec<(String, RawCounters)>, String> {
        fs::read_to_string("/proc/net/dev")
            .map(|text| parse_proc_net_dev(&text))
            .map_err(|e| format!("cannot read /proc/net/dev: {e}"))
    }
}

/// The stable machine identifier, if the system has one.
pub(super) fn machine_id() -> Option<String> {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
        250 50 0 0 20 0 3 0 98765 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn parses_stat_with_parentheses_in_the_name() {
        let s = parse_stat(STAT).unwrap();
        assert_eq!(s.comm, "my (odd) name");
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.flags, 4194560);
        assert_eq!(s.cpu_ticks, 300);
        assert_eq!(s.threads, 3);
        assert_eq!(s.start_ticks, 98765);
        assert_eq!(s.vsize_bytes, 123456789);
        assert_eq!(s.rss_pages, 2048);
    }

    #[test]
    fn rejects_truncated_or_garbage_stat() {
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("12 (x) S 1 2 3"), None);
        assert_eq!(parse_stat("12 x S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22"), None);
        assert_eq!(parse_stat("12 (x) S one 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22"), None);
    }

    #[test]
    fn kernel_thread_flag_is_read_from_flags() {
        let kthread = STAT.replace("4194560", &(PF_KTHREAD | 0x40).to_string());
        assert_ne!(parse_stat(&kthread).unwrap().flags & PF_KTHREAD, 0);
        assert_eq!(parse_stat(STAT).unwrap().flags & PF_KTHREAD, 0);
    }

    #[test]
    fn parses_io_and_status() {
        let io =
            "rchar: 1\nwchar: 2\nsyscr: 3\nsyscw: 4\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_io(io), Some((4096, 8192)));
        assert_eq!(parse_io("rchar: 1\n"), None);
        let status = "Name:\tbash\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(parse_status_uid(status), Some(1000));
    }

    #[test]
    fn states_map_to_statuses() {
        assert_eq!(status_of('D'), ProcessStatus::DiskSleep);
        assert_eq!(status_of('T'), ProcessStatus::Stopped);
        assert_eq!(status_of('I'), ProcessStatus::Idle);
        assert_eq!(status_of('?'), ProcessStatus::Unknown);
    }

    #[test]
    fn long_names_come_from_the_command_line() {
        assert_eq!(
            display_name("gnome-shell-cal", Some("/usr/libexec/gnome-shell-calendar-server")),
            "gnome-shell-calendar-server"
        );
        assert_eq!(display_name("bash", Some("/bin/bash")), "bash");
        assert_eq!(display_name("kworker/0:1-eve", None), "kworker/0:1-eve");
        // A process that rewrote its argv keeps the kernel's name.
        assert_eq!(display_name("postgres: check", Some("postgres: checkpointer")), "postgres: check");
    }

    #[test]
    fn start_times_are_exact_functions_of_ticks() {
        let clock = Clock { ticks_per_sec: 100, page_size: 4096, boot_secs: 1_700_000_000 };
        assert_eq!(clock.start_time(250).timestamp_millis(), 1_700_000_002_500);
        assert_eq!(clock.start_time(250), clock.start_time(250));
    }
}
