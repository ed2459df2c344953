//! Benchmark baseline: a naive Linux sampler written with the standard library only.
//!
//! Once a second it reads everything afresh from `/proc`: `stat`, `statm`, `status` and
//! `cmdline` of every process, the socket tables in `/proc/net/{tcp,tcp6,udp,udp6}`,
//! the socket-to-process map by reading every link in `/proc/*/fd`, `/proc/stat`,
//! `/proc/meminfo`, `/proc/loadavg` and `/proc/net/dev`. It builds a result with about
//! the same content as Procyon's snapshot and serialises it to JSON, as an agent would.
//! Nothing is cached from one tick to the next except the counters that CPU shares and
//! network rates are computed from.
//!
//! Run by `bench/run.sh` next to `examples/sampler_loop.rs` (Procyon's sampler) and
//! `bench/psutil_sampler.py`; it does not use the Procyon library on purpose.

use std::collections::HashMap;
use std::error::Error;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

#[path = "../bench/tick_loop.rs"]
mod tick_loop;

/// Kernel clock ticks per second for the times in `/proc/PID/stat`. It is 100 on every
/// mainstream Linux build; reading it properly needs `sysconf`, outside the standard
/// library.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// Page size for `/proc/PID/statm`; 4 KiB on x86-64, same reason as above.
const PAGE_SIZE: u64 = 4096;

/// `PF_KTHREAD` in the flags field of `/proc/PID/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

fn main() -> Result<(), Box<dyn Error>> {
    let mut sampler = NaiveSampler::default();
    tick_loop::run("naive", || {
        let snapshot = sampler.sample()?;
        let json = serde_json::to_vec(&snapshot)?;
        std::hint::black_box(json);
        Ok((snapshot.processes.len(), snapshot.connections.len()))
    })
}

/// What one tick produces, close to Procyon's `Snapshot` in content.
#[derive(Serialize)]
struct Snapshot {
    taken_at_unix_ms: u128,
    interval_ms: u64,
    cpu: Cpu,
    memory: Memory,
    processes: Vec<Process>,
    connections: Vec<Connection>,
    interfaces: Vec<Interface>,
    ports_by_local_port: Vec<PortCount>,
    listening: Vec<Listening>,
}

#[derive(Serialize)]
struct Cpu {
    total_percent: f32,
    per_core_percent: Vec<f32>,
    load_average: [f64; 3],
}

#[derive(Serialize)]
struct Memory {
    total_bytes: u64,
    used_bytes: u64,
    available_bytes: u64,
    swap_total_bytes: u64,
    swap_used_bytes: u64,
}

#[derive(Serialize)]
struct Process {
    pid: u32,
    ppid: Option<u32>,
    name: String,
    cmd: String,
    user: Option<String>,
    status: &'static str,
    cpu_percent: f32,
    memory_percent: f32,
    rss_bytes: u64,
    virtual_bytes: u64,
    threads: Option<u32>,
    start_time_unix_ms: u64,
    kernel_thread: bool,
}

#[derive(Serialize)]
struct Connection {
    protocol: &'static str,
    local_address: IpAddr,
    local_port: u16,
    remote_address: Option<IpAddr>,
    remote_port: Option<u16>,
    state: Option<&'static str>,
    pid: Option<u32>,
}

#[derive(Serialize)]
struct Interface {
    name: String,
    received_bytes: u64,
    received_packets: u64,
    errors_in: u64,
    drops_in: u64,
    sent_bytes: u64,
    sent_packets: u64,
    errors_out: u64,
    drops_out: u64,
    received_bytes_per_sec: f64,
    sent_bytes_per_sec: f64,
}

#[derive(Serialize)]
struct PortCount {
    protocol: &'static str,
    port: u16,
    connections: u32,
}

#[derive(Serialize)]
struct Listening {
    protocol: &'static str,
    address: IpAddr,
    port: u16,
    pid: Option<u32>,
    process_name: Option<String>,
}

/// The counters kept from the previous tick, and nothing else.
#[derive(Default)]
struct NaiveSampler {
    previous_at: Option<Instant>,
    /// Busy and total jiffies per CPU line of `/proc/stat` (`cpu`, `cpu0`, ...).
    previous_cpu: HashMap<String, (u64, u64)>,
    /// Process CPU ticks by pid and start time (a reused pid is a new process).
    previous_process_ticks: HashMap<(u32, u64), u64>,
    /// Received and sent bytes per interface.
    previous_net: HashMap<String, (u64, u64)>,
}

impl NaiveSampler {
    fn sample(&mut self) -> Result<Snapshot, Box<dyn Error>> {
        let now = Instant::now();
        let elapsed_s = self.previous_at.map(|t| now.duration_since(t).as_secs_f64()).unwrap_or(0.0);
        self.previous_at = Some(now);

        let stat = std::fs::read_to_string("/proc/stat")?;
        let boot_time_s = stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or("no btime in /proc/stat")?;
        let cpu = self.cpu(&stat)?;
        let memory = memory()?;
        let users = users();
        let processes = self.processes(elapsed_s, boot_time_s, memory.total_bytes, &users);
        let connections = connections()?;
        let interfaces = self.interfaces(elapsed_s)?;
        let (ports_by_local_port, listening) = ports(&connections, &processes);

        Ok(Snapshot {
            taken_at_unix_ms: SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis(),
            interval_ms: (elapsed_s * 1000.0) as u64,
            cpu,
            memory,
            processes,
            connections,
            interfaces,
            ports_by_local_port,
            listening,
        })
    }

    fn cpu(&mut self, stat: &str) -> Result<Cpu, Box<dyn Error>> {
        let mut total_percent = 0.0;
        let mut per_core_percent = Vec::new();
        for line in stat.lines().filter(|l| l.starts_with("cpu")) {
            let mut fields = line.split_whitespace();
            let label = fields.next().unwrap_or_default().to_string();
            let values: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
            // user nice system idle iowait irq softirq steal; guest time is already
            // inside user and nice.
            let total: u64 = values.iter().take(8).sum();
            let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
            let busy = total.saturating_sub(idle);
            let percent = match self.previous_cpu.insert(label.clone(), (busy, total)) {
                Some((old_busy, old_total)) if total > old_total => {
                    (busy.saturating_sub(old_busy) as f64 / (total - old_total) as f64 * 100.0) as f32
                }
                _ => 0.0,
            };
            if label == "cpu" {
                total_percent = percent;
            } else {
                per_core_percent.push(percent);
            }
        }
        let loadavg = std::fs::read_to_string("/proc/loadavg")?;
        let mut load = loadavg.split_whitespace().map(|f| f.parse::<f64>().unwrap_or(0.0));
        let load_average = [load.next().unwrap_or(0.0), load.next().unwrap_or(0.0), load.next().unwrap_or(0.0)];
        Ok(Cpu { total_percent, per_core_percent, load_average })
    }

    /// Reads every process; one that ends while being read is left out.
    fn processes(
        &mut self,
        elapsed_s: f64,
        boot_time_s: u64,
        memory_total: u64,
        users: &HashMap<u32, String>,
    ) -> Vec<Process> {
        let mut pids: Vec<u32> = match std::fs::read_dir("/proc") {
            Ok(dir) => dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect(),
            Err(_) => return Vec::new(),
        };
        pids.sort_unstable();
        let mut seen_ticks = HashMap::with_capacity(pids.len());
        let mut out = Vec::with_capacity(pids.len());
        for pid in pids {
            let Some((process, key, ticks)) =
                read_process(pid, elapsed_s, boot_time_s, memory_total, users, &self.previous_process_ticks)
            else {
                continue;
            };
            seen_ticks.insert(key, ticks);
            out.push(process);
        }
        // Keep only live processes, so the map does not grow with every pid ever seen.
        self.previous_process_ticks = seen_ticks;
        out
    }

    fn interfaces(&mut self, elapsed_s: f64) -> Result<Vec<Interface>, Box<dyn Error>> {
        let text = std::fs::read_to_string("/proc/net/dev")?;
        let mut out = Vec::new();
        // Two header lines, then `name: rx_bytes rx_packets rx_errs rx_drop fifo frame
        // compressed multicast tx_bytes tx_packets tx_errs tx_drop ...`.
        for line in text.lines().skip(2) {
            let Some((name, rest)) = line.split_once(':') else {
                continue;
            };
            let v: Vec<u64> = rest.split_whitespace().filter_map(|f| f.parse().ok()).collect();
            if v.len() < 12 {
                continue;
            }
            let name = name.trim().to_string();
            let (rx_rate, tx_rate) = match self.previous_net.insert(name.clone(), (v[0], v[8])) {
                Some((old_rx, old_tx)) if elapsed_s > 0.0 => {
                    (v[0].saturating_sub(old_rx) as f64 / elapsed_s, v[8].saturating_sub(old_tx) as f64 / elapsed_s)
                }
                _ => (0.0, 0.0),
            };
            out.push(Interface {
                name,
                received_bytes: v[0],
                received_packets: v[1],
                errors_in: v[2],
                drops_in: v[3],
                sent_bytes: v[8],
                sent_packets: v[9],
                errors_out: v[10],
                drops_out: v[11],
                received_bytes_per_sec: rx_rate,
                sent_bytes_per_sec: tx_rate,
            });
        }
        Ok(out)
    }
}

/// Reads one process from `stat`, `statm`, `status` and `cmdline`. Returns the process,
/// the key its CPU ticks are kept under, and those ticks; `None` if it has gone.
fn read_process(
    pid: u32,
    elapsed_s: f64,
    boot_time_s: u64,
    memory_total: u64,
    users: &HashMap<u32, String>,
    previous_ticks: &HashMap<(u32, u64), u64>,
) -> Option<(Process, (u32, u64), u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();

    // The name is in parentheses and may itself contain spaces and parentheses, so
    // split at the last `)`. Field 3 (state) is then `rest[0]`.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { rest.get(n - 3)?.parse().ok() };
    let state = rest.first()?.chars().next()?;
    let ppid = field(4)?;
    let flags = field(9)?;
    let cpu_ticks = field(14)? + field(15)?;
    let start_ticks = field(22)?;

    let mut statm_fields = statm.split_whitespace().map(|f| f.parse::<u64>().unwrap_or(0));
    let virtual_bytes = statm_fields.next()? * PAGE_SIZE;
    let rss_bytes = statm_fields.next()? * PAGE_SIZE;

    let mut uid = None;
    let mut threads = None;
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("Uid:") {
            uid = v.split_whitespace().next().and_then(|f| f.parse::<u32>().ok());
        } else if let Some(v) = line.strip_prefix("Threads:") {
            threads = v.trim().parse::<u32>().ok();
        }
    }
    let user = uid.map(|uid| users.get(&uid).cloned().unwrap_or_else(|| uid.to_string()));

    let key = (pid, start_ticks);
    let cpu_percent = match previous_ticks.get(&key) {
        Some(&old) if elapsed_s > 0.0 => {
            (cpu_ticks.saturating_sub(old) as f64 / CLOCK_TICKS_PER_SEC / elapsed_s * 100.0) as f32
        }
        _ => 0.0,
    };
    let cmd = cmdline
        .split(|&b| b == 0)
        .filter(|arg| !arg.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    let start_time_unix_ms = boot_time_s * 1000 + (start_ticks as f64 * 1000.0 / CLOCK_TICKS_PER_SEC) as u64;

    let process = Process {
        pid,
        ppid: (ppid != 0).then_some(ppid as u32),
        name,
        cmd,
        user,
        status: status_name(state),
        cpu_percent,
        memory_percent: if memory_total > 0 { (rss_bytes as f64 / memory_total as f64 * 100.0) as f32 } else { 0.0 },
        rss_bytes,
        virtual_bytes,
        threads,
        start_time_unix_ms,
        kernel_thread: flags & PF_KTHREAD != 0,
    };
    Some((process, key, cpu_ticks))
}

fn status_name(state: char) -> &'static str {
    match state {
        'R' => "running",
        'S' => "sleeping",
        'D' => "disk_sleep",
        'T' => "stopped",
        't' => "tracing_stop",
        'Z' => "zombie",
        'X' | 'x' => "dead",
        'I' => "idle",
        'P' => "parked",
        'W' => "waking",
        _ => "unknown",
    }
}

/// User names by uid, read from `/etc/passwd` every tick (a naive sampler keeps nothing).
fn users() -> HashMap<u32, String> {
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split(':');
            let name = parts.next()?;
            let uid = parts.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

fn memory() -> Result<Memory, Box<dyn Error>> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    let kib = |key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let total = kib("MemTotal");
    let available = kib("MemAvailable");
    let swap_total = kib("SwapTotal");
    Ok(Memory {
        total_bytes: total,
        used_bytes: total.saturating_sub(available),
        available_bytes: available,
        swap_total_bytes: swap_total,
        swap_used_bytes: swap_total.saturating_sub(kib("SwapFree")),
    })
}

/// Every TCP and UDP socket, with its owner found through the socket inode.
fn connections() -> Result<Vec<Connection>, Box<dyn Error>> {
    let owners = socket_owners();
    let mut out = Vec::new();
    for (file, protocol) in
        [("/proc/net/tcp", "tcp"), ("/proc/net/tcp6", "tcp"), ("/proc/net/udp", "udp"), ("/proc/net/udp6", "udp")]
    {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            // No IPv6 in this kernel, for example.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{file}: {e}").into()),
        };
        // `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...`
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let (Some((local_address, local_port)), Some((remote, remote_port))) =
                (parse_endpoint(f[1]), parse_endpoint(f[2]))
            else {
                continue;
            };
            let connected = remote_port != 0 || !remote.is_unspecified();
            let state = if protocol == "tcp" { Some(tcp_state(f[3])) } else { None };
            let pid = f[9].parse::<u64>().ok().and_then(|inode| owners.get(&inode).copied());
            out.push(Connection {
                protocol,
                local_address,
                local_port,
                remote_address: connected.then_some(remote),
                remote_port: connected.then_some(remote_port),
                state,
                pid,
            });
        }
    }
    Ok(out)
}

/// Socket inode to pid, by reading every link in `/proc/*/fd`.
fn socket_owners() -> HashMap<u64, u32> {
    let mut owners = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return owners;
    };
    for entry in dir.filter_map(Result::ok) {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // Other users' fds are unreadable without privileges, and processes end: skip.
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.filter_map(Result::ok) {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let inode = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:[")?.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(inode) = inode {
                owners.insert(inode, pid);
            }
        }
    }
    owners
}

/// Parses `0100007F:0035` (IPv4) or a 32-digit IPv6 form. The kernel prints the address
/// as 32-bit words in the machine's byte order, hence `to_ne_bytes`.
fn parse_endpoint(text: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?.to_ne_bytes())
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some((ip, port))
}

fn tcp_state(code: &str) -> &'static str {
    match code {
        "01" => "ESTABLISHED",
        "02" => "SYN_SENT",
        "03" => "SYN_RECV",
        "04" => "FIN_WAIT1",
        "05" => "FIN_WAIT2",
        "06" => "TIME_WAIT",
        "07" => "CLOSE",
        "08" => "CLOSE_WAIT",
        "09" => "LAST_ACK",
        "0A" => "LISTEN",
        "0B" => "CLOSING",
        "0C" => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// Sockets per local port, and the listening ports with their owners.
fn ports(connections: &[Connection], processes: &[Process]) -> (Vec<PortCount>, Vec<Listening>) {
    let names: HashMap<u32, &str> = processes.iter().map(|p| (p.pid, p.name.as_str())).collect();
    let mut counts: HashMap<(&'static str, u16), u32> = HashMap::new();
    let mut listening = Vec::new();
    for c in connections {
        *counts.entry((c.protocol, c.local_port)).or_default() += 1;
        let listens = match c.protocol {
            "tcp" => c.state == Some("LISTEN"),
            _ => c.remote_address.is_none(),
        };
        if listens {
            listening.push(Listening {
                protocol: c.protocol,
                address: c.local_address,
                port: c.local_port,
                pid: c.pid,
                process_name: c.pid.and_then(|pid| names.get(&pid)).map(|n| n.to_string()),
            });
        }
    }
    let mut by_local_port: Vec<PortCount> =
        counts.into_iter().map(|((protocol, port), connections)| PortCount { protocol, port, connections }).collect();
    by_local_port.sort_by_key(|p| (p.protocol, p.port));
    listening.sort_by_key(|l| (l.protocol, l.port));
    (by_local_port, listening)
}
