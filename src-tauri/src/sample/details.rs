//! One process in depth, read from `/proc/PID/…` when someone asks (Linux).
//!
//! Unlike the sampler's tick this reads everything about one process once: its threads
//! (twice, [`super::DETAILS_WINDOW`] apart, for their CPU figures), descriptors, memory
//! maps, limits, control groups, environment variable names, program and working
//! directory. Each part is read on its own, and one the monitor may not read is named in
//! [`ProcessDetails::unavailable`] with the rest still answered. The process is
//! identified by pid and start time before and after the reading, so details of a
//! process that exited, or whose pid was reused, meanwhile are never mixed up with
//! another's.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::linux::{Clock, parse_stat, status_of};
use super::redact;
use crate::model::details::{
    FileKind, MAX_DETAIL_ENV_NAMES, MAX_DETAIL_FILES, MAX_DETAIL_TEXT_CHARS, MAX_DETAIL_THREADS, MemoryMaps, OpenFile,
    ProcessDetails, ResourceLimit, ThreadDetail, UnavailablePart,
};
use crate::model::{ActionError, ActionErrorCode};

/// Reads the details of `pid`; `start_time`, when given, must be the process's (else
/// `PidReused`). `NotFound` when there is no such process, or it exited while it was read.
pub(super) fn read(
    pid: u32,
    start_time: Option<DateTime<Utc>>,
    window: Duration,
) -> Result<ProcessDetails, ActionError> {
    let entry = super::identify(pid).ok_or_else(|| gone(pid))?;
    if let Some(t) = start_time
        && t != entry.start_time
    {
        return Err(ActionError {
            code: ActionErrorCode::PidReused,
            message: format!(
                "Process {pid} is not the one you saw: it started at {}, not at {t}. The pid was reused; refresh.",
                entry.start_time
            ),
        });
    }
    let mut unavailable = Vec::new();
    let mut part = |name: &str, e: io::Error| unavailable.push(UnavailablePart { part: name.into(), reason: why(&e) });
    let base = format!("/proc/{pid}");
    let clock = Clock::read();

    let first = thread_times(&base);
    let started = Instant::now();
    let executable = link(&format!("{base}/exe")).map_err(|e| part("executable", e)).ok();
    let cwd = link(&format!("{base}/cwd")).map_err(|e| part("cwd", e)).ok();
    let (files, files_total) = match open_files(&base) {
        Ok((files, total)) => (Some(files), Some(total)),
        Err(e) => {
            part("files", e);
            (None, None)
        }
    };
    let memory_maps =
        fs::read_to_string(format!("{base}/maps")).map(|t| parse_maps(&t)).map_err(|e| part("memory_maps", e)).ok();
    let limits =
        fs::read_to_string(format!("{base}/limits")).map(|t| parse_limits(&t)).map_err(|e| part("limits", e)).ok();
    let cgroup_text = fs::read_to_string(format!("{base}/cgroup")).map_err(|e| part("cgroups", e)).ok();
    let environment_names =
        fs::read(format!("{base}/environ")).map(|raw| environment_names(&raw)).map_err(|e| part("environment", e)).ok();
    // The rest of the window, so that thread CPU figures cover a real interval.
    if let Some(rest) = window.checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    let (threads, threads_total) = match (first, thread_times(&base)) {
        (Ok(first), Ok(second)) => {
            let secs = started.elapsed().as_secs_f64().max(0.001);
            let (threads, total) = threads(&first, second, clock.ticks_per_sec, secs);
            (Some(threads), Some(total))
        }
        (Err(e), _) | (_, Err(e)) => {
            part("threads", e);
            (None, None)
        }
    };
    // Still the same process? One that exited, or whose pid was taken meanwhile, has
    // nothing to show.
    match super::identify(pid) {
        Some(now) if now.start_time == entry.start_time => {}
        _ => return Err(gone(pid)),
    }
    let cgroups = cgroup_text
        .as_deref()
        .map(|t| t.lines().filter(|l| !l.is_empty()).map(|l| bounded(l.splitn(3, ':').nth(2).unwrap_or(l))).collect());
    let container = cgroup_text.as_deref().and_then(super::container::parse);
    Ok(ProcessDetails {
        pid,
        name: entry.name,
        start_time: Some(entry.start_time),
        read_at: Utc::now(),
        executable,
        cwd,
        threads,
        threads_total,
        files,
        files_total,
        memory_maps,
        limits,
        cgroups,
        container,
        environment_names,
        unavailable,
    })
}

fn gone(pid: u32) -> ActionError {
    ActionError {
        code: ActionErrorCode::NotFound,
        message: format!("Process {pid} is gone: it exited (or there never was one)."),
    }
}

/// Why a part could not be read, in words that say what to do.
fn why(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => "permission denied: Procyon runs as a user that may not read this of \
            another user's process; run it as that user or as root to see it"
            .into(),
        io::ErrorKind::NotFound => "the process ended while it was read".into(),
        _ => e.to_string(),
    }
}

/// Text of a link, made printable and bounded.
fn link(path: &str) -> io::Result<String> {
    Ok(bounded(&fs::read_link(path)?.to_string_lossy()))
}

/// `text` printable and at most [`MAX_DETAIL_TEXT_CHARS`] long.
fn bounded(text: &str) -> String {
    let mut out = redact::printable(text);
    if let Some((cut, _)) = out.char_indices().nth(MAX_DETAIL_TEXT_CHARS) {
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// One reading of a thread: name, state and CPU ticks, by tid.
type ThreadTimes = HashMap<u32, (String, u8, u64)>;

fn thread_times(base: &str) -> io::Result<ThreadTimes> {
    let mut out = HashMap::new();
    for entry in fs::read_dir(format!("{base}/task"))? {
        let Some(tid) = entry?.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        // A thread that ended between the listing and its read is left out.
        let Ok(raw) = fs::read(format!("{base}/task/{tid}/stat")) else { continue };
        if let Some(stat) = parse_stat(&raw) {
            let name = String::from_utf8_lossy(&raw[stat.comm.clone()]).into_owned();
            out.insert(tid, (name, stat.state, stat.cpu_ticks));
        }
    }
    Ok(out)
}

/// The threads of the second reading, with their CPU share since the first, busiest
/// first and capped; and how many there were.
fn threads(first: &ThreadTimes, second: ThreadTimes, ticks_per_sec: u64, secs: f64) -> (Vec<ThreadDetail>, u32) {
    let ticks = ticks_per_sec.max(1) as f64;
    let mut out: Vec<ThreadDetail> = second
        .into_iter()
        .map(|(tid, (name, state, cpu_ticks))| {
            let cpu_percent = first
                .get(&tid)
                .map(|(_, _, before)| (cpu_ticks.saturating_sub(*before) as f64 / ticks / secs * 100.0) as f32);
            let state = serde_json::to_value(status_of(state))
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "unknown".into());
            ThreadDetail {
                tid,
                name: redact::printable(&name),
                state,
                cpu_percent,
                cpu_seconds: cpu_ticks as f64 / ticks,
            }
        })
        .collect();
    let total = out.len() as u32;
    out.sort_by(|a, b| b.cpu_percent.unwrap_or(0.0).total_cmp(&a.cpu_percent.unwrap_or(0.0)).then(a.tid.cmp(&b.tid)));
    out.truncate(MAX_DETAIL_THREADS);
    (out, total)
}

/// The descriptors of the process, by number, capped; and how many there are.
fn open_files(base: &str) -> io::Result<(Vec<OpenFile>, u32)> {
    let mut fds: Vec<u32> =
        fs::read_dir(format!("{base}/fd"))?.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    fds.sort_unstable();
    let total = fds.len() as u32;
    fds.truncate(MAX_DETAIL_FILES);
    let mut files: Vec<OpenFile> = fds
        .into_iter()
        .filter_map(|fd| {
            // A descriptor closed since the listing is left out.
            let target = fs::read_link(format!("{base}/fd/{fd}")).ok()?;
            let target = target.to_string_lossy();
            let kind = if target.starts_with('/') {
                FileKind::File
            } else if target.starts_with("pipe:") {
                FileKind::Pipe
            } else if target.starts_with("socket:") {
                FileKind::Socket
            } else if target.starts_with("anon_inode:") {
                FileKind::AnonInode
            } else {
                FileKind::Other
            };
            Some(OpenFile { fd, kind, target: bounded(&target), socket: None })
        })
        .collect();
    if files.iter().any(|f| f.kind == FileKind::Socket) {
        let sockets = sockets(base);
        for file in files.iter_mut().filter(|f| f.kind == FileKind::Socket) {
            let inode =
                file.target.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')).and_then(|s| s.parse().ok());
            file.socket = inode.and_then(|i: u64| sockets.get(&i).cloned());
        }
    }
    Ok((files, total))
}

/// Every socket of the process's network namespace, by inode, described in a line.
fn sockets(base: &str) -> HashMap<u64, String> {
    let mut out = HashMap::new();
    for (file, protocol) in [("tcp", "tcp"), ("tcp6", "tcp"), ("udp", "udp"), ("udp6", "udp")] {
        if let Ok(text) = fs::read_to_string(format!("{base}/net/{file}")) {
            out.extend(parse_inet_sockets(&text, protocol));
        }
    }
    if let Ok(text) = fs::read_to_string(format!("{base}/net/unix")) {
        out.extend(parse_unix_sockets(&text));
    }
    out
}

/// `/proc/net/{tcp,udp}{,6}`: inode → `tcp 127.0.0.1:8080 LISTEN` or
/// `tcp 10.0.0.1:5000 → 10.0.0.2:443 ESTABLISHED`.
fn parse_inet_sockets<'a>(text: &'a str, protocol: &'a str) -> impl Iterator<Item = (u64, String)> + 'a {
    text.lines().skip(1).filter_map(move |line| {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let local = endpoint(fields.get(1)?)?;
        let remote = endpoint(fields.get(2)?)?;
        let state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
        let inode: u64 = fields.get(9)?.parse().ok()?;
        let text = match (protocol, state) {
            ("tcp", 0x0A) => format!("tcp {local} LISTEN"),
            ("tcp", s) => format!("tcp {local} → {remote} {}", tcp_state(s)),
            (_, _) if remote.ends_with(":0") => format!("{protocol} {local}"),
            (_, _) => format!("{protocol} {local} → {remote}"),
        };
        Some((inode, text))
    })
}

/// `0100007F:1F90` (the kernel's address in memory order, and the port) as `127.0.0.1:8080`.
fn endpoint(text: &str) -> Option<String> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Option<Vec<[u8; 4]>> = (0..addr.len() / 8)
        .map(|i| addr.get(i * 8..i * 8 + 8).and_then(|w| u32::from_str_radix(w, 16).ok()).map(u32::to_ne_bytes))
        .collect();
    let bytes: Vec<u8> = words?.concat();
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(match ip {
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        v4 => format!("{v4}:{port}"),
    })
}

fn tcp_state(code: u8) -> &'static str {
    match code {
        0x01 => "ESTABLISHED",
        0x02 => "SYN_SENT",
        0x03 => "SYN_RECV",
        0x04 => "FIN_WAIT1",
        0x05 => "FIN_WAIT2",
        0x06 => "TIME_WAIT",
        0x07 => "CLOSE",
        0x08 => "CLOSE_WAIT",
        0x09 => "LAST_ACK",
        0x0A => "LISTEN",
        0x0B => "CLOSING",
        _ => "UNKNOWN",
    }
}

/// `/proc/net/unix`: inode → `unix /run/x.sock` (or `unix` for an unnamed one).
fn parse_unix_sockets(text: &str) -> impl Iterator<Item = (u64, String)> + '_ {
    text.lines().skip(1).filter_map(|line| {
        let mut fields = line.split_ascii_whitespace();
        let inode: u64 = fields.nth(6)?.parse().ok()?;
        Some((inode, fields.next().map_or_else(|| "unix".to_owned(), |path| format!("unix {}", bounded(path)))))
    })
}

/// `/proc/PID/maps` summed up.
fn parse_maps(text: &str) -> MemoryMaps {
    let mut maps = MemoryMaps::default();
    let mut files = BTreeSet::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some((start, end)) = fields.next().and_then(|r| r.split_once('-')) else { continue };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16)) else { continue };
        let size = end.saturating_sub(start);
        maps.count += 1;
        // Fields: perms, offset, device, inode, then the path (which may hold spaces).
        let path = fields.nth(4);
        match path {
            Some(p) if p.starts_with('/') => {
                maps.file_bytes += size;
                files.insert(p);
            }
            Some("[heap]") => {
                maps.heap_bytes += size;
                maps.anonymous_bytes += size;
            }
            Some("[stack]") => {
                maps.stack_bytes += size;
                maps.anonymous_bytes += size;
            }
            _ => maps.anonymous_bytes += size,
        }
    }
    maps.files = files.len() as u32;
    maps
}

/// `/proc/PID/limits`: a header, then one row per limit in columns the header places.
fn parse_limits(text: &str) -> Vec<ResourceLimit> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else { return Vec::new() };
    let (Some(soft_at), Some(hard_at), Some(units_at)) =
        (header.find("Soft Limit"), header.find("Hard Limit"), header.find("Units"))
    else {
        return Vec::new();
    };
    let value = |text: &str| -> Option<u64> { text.trim().parse().ok() };
    lines
        .filter_map(|line| {
            let name = line.get(..soft_at)?.trim();
            let soft = line.get(soft_at..hard_at)?;
            let hard = line.get(hard_at..units_at.min(line.len()))?;
            let unit = line.get(units_at..).map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned);
            (!name.is_empty()).then(|| ResourceLimit {
                name: name.to_owned(),
                soft: value(soft),
                hard: value(hard),
                unit,
            })
        })
        .collect()
}

/// The names of `/proc/PID/environ`'s variables, sorted, unique, capped; never a value.
fn environment_names(raw: &[u8]) -> Vec<String> {
    let names: BTreeSet<String> = raw
        .split(|b| *b == 0)
        .filter_map(|var| {
            let name = &var[..var.iter().position(|b| *b == b'=')?];
            (!name.is_empty()).then(|| bounded(&String::from_utf8_lossy(name)))
        })
        .collect();
    names.into_iter().take(MAX_DETAIL_ENV_NAMES).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_read_by_the_header_columns() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
            Max cpu time              unlimited            unlimited            seconds   \n\
            Max open files            1024                 524288               files     \n\
            Max nice priority         0                    0                    \n";
        let limits = parse_limits(text);
        assert_eq!(limits.len(), 3);
        assert_eq!(
            limits[1],
            ResourceLimit {
                name: "Max open files".into(),
                soft: Some(1024),
                hard: Some(524288),
                unit: Some("files".into())
            }
        );
        assert_eq!((limits[0].soft, limits[0].hard), (None, None));
        assert_eq!(limits[2].unit, None);
        assert!(parse_limits("garbage").is_empty());
    }

    #[test]
    fn sockets_are_described_from_the_kernel_tables() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0 100 0 0 10 0\n\
            1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 4243 1 0 20 4 30 10 -1\n";
        let found: HashMap<u64, String> = parse_inet_sockets(tcp, "tcp").collect();
        assert_eq!(found[&4242], "tcp 127.0.0.1:8080 LISTEN");
        assert_eq!(found[&4243], "tcp 127.0.0.1:50000 → 127.0.0.1:8080 ESTABLISHED");
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            0: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0 100 0 0 10 0\n";
        let found: HashMap<u64, String> = parse_inet_sockets(tcp6, "tcp").collect();
        assert_eq!(found[&77], "tcp [::1]:22 LISTEN");
        let unix = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 3001 /run/x.sock\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 3002\n";
        let found: HashMap<u64, String> = parse_unix_sockets(unix).collect();
        assert_eq!((found[&3001].as_str(), found[&3002].as_str()), ("unix /run/x.sock", "unix"));
    }

    #[test]
    fn maps_are_summed_by_kind() {
        let text = "55d0c0000000-55d0c0002000 r--p 00000000 08:01 123 /usr/bin/sleep\n\
            55d0c0002000-55d0c0006000 r-xp 00002000 08:01 123 /usr/bin/sleep\n\
            55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0 [heap]\n\
            7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n\
            7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]\n";
        let maps = parse_maps(text);
        assert_eq!((maps.count, maps.files), (5, 1));
        assert_eq!(maps.file_bytes, 0x6000);
        assert_eq!((maps.heap_bytes, maps.stack_bytes), (0x21000, 0x21000));
        assert_eq!(maps.anonymous_bytes, 0x21000 * 2 + 0x1000);
    }

    #[test]
    fn environment_names_never_carry_values() {
        let names = environment_names(b"PATH=/bin\0API_TOKEN=s3cret\0PATH=/usr/bin\0=odd\0novalue\0");
        assert_eq!(names, ["API_TOKEN", "PATH"]);
    }

    #[test]
    fn a_childs_details_are_read_whole() {
        // A child of its own, not this test process: among the other tests running
        // beside it this process can hold more descriptors than a details answer lists.
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut child = std::process::Command::new("sleep").arg("30").stdin(file.reopen().unwrap()).spawn().unwrap();
        let pid = child.id();
        let details = read(pid, None, Duration::from_millis(50));
        let _ = child.kill();
        let _ = child.wait();
        let details = details.unwrap();
        assert_eq!(details.pid, pid);
        assert!(details.unavailable.is_empty(), "{:?}", details.unavailable);
        assert!(details.threads.as_ref().unwrap().iter().any(|t| t.tid == pid));
        let path = file.path().to_string_lossy().into_owned();
        assert!(details.files.as_ref().unwrap().iter().any(|f| f.kind == FileKind::File && f.target == path));
        assert!(details.limits.unwrap().iter().any(|l| l.name == "Max open files"));
        assert!(details.memory_maps.unwrap().count > 0);
        let own = std::process::id();
        let start = read(own, None, Duration::ZERO).unwrap().start_time.unwrap();
        let wrong = start + chrono::Duration::seconds(1);
        assert_eq!(read(own, Some(wrong), Duration::ZERO).unwrap_err().code, ActionErrorCode::PidReused);
        assert_eq!(read(u32::MAX - 1, None, Duration::ZERO).unwrap_err().code, ActionErrorCode::NotFound);
    }
}
