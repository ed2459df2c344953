//! Linux: processes straight from `/proc`, and which process owns which socket.
//!
//! The point is to read as little as possible per tick. For a process already known, a
//! tick reads `/proc/PID/stat` (state, parent, CPU ticks, threads, sizes) and
//! `/proc/PID/io` (disk bytes), and nothing else. The command line, the owner and the
//! name are read when a process first appears, and again only if it starts another
//! program (`exec` changes the kernel's name for it); a process is "the same" while its
//! pid and start time are the same, so a reused pid is noticed and read afresh.
//!
//! Both per-tick files are kept open and read again from offset 0 with one `pread`,
//! instead of open, statx, lseek, read, read and close each tick (a sixth of the system
//! calls, and no path lookup). The kernel produces such a file afresh on every read from its start. A kept
//! file belongs to the process it was opened for, not to the pid: once that process is
//! gone, reading it fails, the file is closed, and the pid is opened afresh (it may be
//! someone else's by then). At most [`kept_files_budget`] files are kept, in all
//! samplers of the process together; past that, processes are read the plain way.
//!
//! `/proc/PID/cgroup` (which container, `container.rs`) is read with the command line,
//! once per process and program, never per tick.
//!
//! `/proc/PID/io` is read only for a process that did something since the last tick, and
//! for every other one once in [`IO_EVERY`] ticks (spread over the ticks by pid), so
//! that most idle processes cost one read a tick, not two. "Did something" is any move
//! of its CPU time, its children's, or its page faults or its children's (all in
//! `/proc/PID/stat`): CPU time alone is counted in clock ticks (10 ms), and a process can
//! write megabytes in less than one, but it cannot start a program, map a file or take
//! in a finished child's counters (a shell whose `dd` just wrote) without faulting or
//! collecting the child's figures. The counters are totals, so a read that comes later
//! loses nothing: bytes written by a process that did none of that show at its next
//! read, at most [`IO_EVERY`] ticks later, and its rate is over the time since the
//! read before (tests below hold both).
//!
//! Listing `/proc` costs about a microsecond per process (the kernel looks up a dentry
//! for each), as much as a seventh of a tick. It is skipped while no pid was handed out
//! since the last tick: the last pid the kernel gave, the last figure of `/proc/loadavg`
//! (one small read of a kept file), has not moved, so no process can have started, and
//! the processes that ended are found by their files failing to read. Every
//! [`LIST_EVERY`] ticks `/proc` is listed all the same, and always when `/proc` is not
//! of this process's pid namespace (its `/proc/loadavg` would speak of another one).
//!
//! Socket owners: the kernel lists sockets with their inode (netlink, in `sock_diag.rs`),
//! but only `/proc/*/fd` says which process holds an inode. Walking every descriptor of
//! every process costs more than the rest of a tick together, so [`SocketOwners`] keeps
//! the map and walks again only when a socket shows up that it has not looked for yet.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::ProcessEntry;
use super::network::{RawCounters, parse_proc_net_dev};
use super::redact::{self, CmdlineMode};
use super::sock_diag::SockDiag;
use crate::model::details::ContainerRef;
use crate::model::{ProcessSample, ProcessStatus};

/// `PF_KTHREAD` in `/proc/PID/stat`'s flags: the task is a kernel thread.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Most bytes of a name in `/proc/PID/stat`.
const COMM_LIMIT: usize = 64;

/// Most `/proc` files kept open between ticks, whatever the limit on open files: `stat`
/// and `io` of 8,192 processes. Each costs the kernel about a page while kept (the
/// buffer it formats the file into), 64 MiB at most; past it, files are opened per read,
/// which costs several times as much as the read.
const MAX_KEPT_FILES: usize = 16_384;

/// `/proc` is listed at least once in this many ticks, even while no pid was handed out.
const LIST_EVERY: u64 = 10;

/// A process that did nothing in our eyes still has its `/proc/PID/io` read once in this
/// many ticks, so that what it wrote shows within as many ticks.
pub(super) const IO_EVERY: u64 = 5;

/// The fields of `/proc/PID/stat` that Procyon uses.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Stat {
    /// Where the name is in the text read: copied out only when it is needed.
    pub comm: Range<usize>,
    pub state: u8,
    pub ppid: u32,
    pub flags: u64,
    /// User plus system time, in clock ticks.
    pub cpu_ticks: u64,
    /// A sum that moves whenever the process (or a child it collected) used CPU or
    /// faulted a page: its own and its children's times and minor and major faults.
    pub activity: u64,
    pub threads: u32,
    /// Start time in clock ticks after boot.
    pub start_ticks: u64,
    pub vsize_bytes: u64,
    pub rss_pages: u64,
}

/// Parses `/proc/PID/stat`. The name (field 2) is in parentheses and may itself hold
/// spaces and parentheses, so the fields after it are found from the *last* `)`.
pub(super) fn parse_stat(text: &[u8]) -> Option<Stat> {
    let open = text.iter().position(|b| *b == b'(')?;
    // The kernel writes at most 64 bytes of name (`tcomm[64]` in `fs/proc/array.c`), so
    // the last `)` is looked for there rather than from the end of a long line.
    let window = text.get(open..).map(|t| &t[..t.len().min(COMM_LIMIT + 2)])?;
    let close = open + window.iter().rposition(|b| *b == b')')?;
    let mut fields = Fields { text: text.get(close + 1..)? };
    // `fields` now starts at field 3 (state); `skip(k)` passes k fields.
    let state = match fields.next()? {
        [state] => *state,
        _ => return None,
    };
    let ppid = u32::try_from(number(fields.next()?)?).ok()?; // 4
    let flags = number(fields.skip(4).next()?)?; // 9
    // Fields 10 to 13: minor and major faults, the process's and its collected children's.
    let mut activity = 0u64;
    for _ in 10..=13 {
        activity = activity.wrapping_add(number(fields.next()?)?);
    }
    let utime = number(fields.next()?)?; // 14
    let stime = number(fields.next()?)?; // 15
    // Children's times (16, 17): signed in the kernel's format, never negative in fact;
    // a figure that will not parse only means less to go on, not a broken line.
    for _ in 16..=17 {
        activity = activity.wrapping_add(number(fields.next()?).unwrap_or(0));
    }
    let threads = u32::try_from(number(fields.skip(2).next()?)?).ok()?; // 20
    let start_ticks = number(fields.skip(1).next()?)?; // 22
    let vsize_bytes = number(fields.next()?)?; // 23
    let rss_pages = number(fields.next()?)?; // 24
    Some(Stat {
        comm: open + 1..close,
        state,
        ppid,
        flags,
        cpu_ticks: utime.checked_add(stime)?,
        activity: activity.wrapping_add(utime).wrapping_add(stime),
        threads,
        start_ticks,
        vsize_bytes,
        rss_pages,
    })
}

/// The space-separated fields of a line, one at a time, without allocating (a hot loop:
/// every process, every tick).
struct Fields<'a> {
    text: &'a [u8],
}

impl<'a> Fields<'a> {
    fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.text.iter().position(|b| !b.is_ascii_whitespace())?;
        let rest = &self.text[start..];
        let len = rest.iter().position(u8::is_ascii_whitespace).unwrap_or(rest.len());
        self.text = &rest[len..];
        Some(&rest[..len])
    }

    /// Passes `n` fields.
    fn skip(&mut self, n: usize) -> &mut Self {
        for _ in 0..n {
            self.next();
        }
        self
    }
}

/// An unsigned decimal number; `None` for anything else, or one too large.
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        if d.is_ascii_digit() { n.checked_mul(10)?.checked_add(u64::from(d - b'0')) } else { None }
    })
}

pub(super) fn status_of(state: u8) -> ProcessStatus {
    match state {
        b'R' => ProcessStatus::Running,
        b'S' => ProcessStatus::Sleeping,
        b'D' => ProcessStatus::DiskSleep,
        b'T' => ProcessStatus::Stopped,
        b't' => ProcessStatus::TracingStop,
        b'Z' => ProcessStatus::Zombie,
        b'X' | b'x' => ProcessStatus::Dead,
        b'I' => ProcessStatus::Idle,
        b'P' => ProcessStatus::Parked,
        b'W' => ProcessStatus::Waking,
        _ => ProcessStatus::Unknown,
    }
}

/// Parses `read_bytes` and `write_bytes` of `/proc/PID/io`.
pub(super) fn parse_io(text: &[u8]) -> Option<(u64, u64)> {
    let mut read = None;
    let mut write = None;
    for line in text.split(|b| *b == b'\n') {
        if let Some(v) = line.strip_prefix(b"read_bytes:") {
            read = number(v.trim_ascii());
        } else if let Some(v) = line.strip_prefix(b"write_bytes:") {
            write = number(v.trim_ascii());
        }
    }
    Some((read?, write?))
}

/// The real uid on the `Uid:` line of `/proc/PID/status`.
fn parse_status_uid(text: &str) -> Option<u32> {
    let line = text.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// The last pid the kernel handed out: the fifth figure of `/proc/loadavg`
/// (`0.20 0.18 0.12 1/80 11206`).
fn parse_last_pid(text: &[u8]) -> Option<u64> {
    let mut fields = Fields { text };
    number(fields.skip(4).next()?)
}

/// Raises this process's soft limit on open files to its hard limit (at most
/// [`OPEN_FILES_WANTED`]), once, before the first sampler takes its budget. Samplers keep
/// each process's `/proc` files open between ticks (a read of a kept file costs far less
/// than opening it anew) within half of the soft limit, and service managers start
/// daemons with a soft limit of 1,024 (systemd's default, with a hard limit far above):
/// 512 files would cover only 256 processes. The hard limit is the operator's, and is
/// left as it is.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return };
    let wanted = hard.min(OPEN_FILES_WANTED);
    if soft < wanted
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, wanted, hard)
    {
        tracing::debug!("cannot raise the limit on open files from {soft} to {wanted}: {e}");
    }
}

/// Open files a sampling process asks for: [`MAX_KEPT_FILES`] twice over (samplers keep
/// within half), and room for the rest of the program (a collector's connections: the
/// listener raises the limit further when it needs to).
const OPEN_FILES_WANTED: u64 = 65_536;

/// The soft limit on open files in `/proc/self/limits`.
fn parse_open_files_limit(text: &str) -> Option<usize> {
    let line = text.lines().find_map(|l| l.strip_prefix("Max open files"))?;
    match line.split_ascii_whitespace().next()? {
        "unlimited" => Some(usize::MAX),
        soft => soft.parse().ok(),
    }
}

/// How many `/proc` files the samplers of this process may keep open together: half of
/// its limit on open files (the rest of the program needs its share), at most
/// [`MAX_KEPT_FILES`].
fn kept_files_budget() -> usize {
    static RAISED: std::sync::Once = std::sync::Once::new();
    RAISED.call_once(raise_open_files_limit);
    fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| parse_open_files_limit(&t))
        .map_or(0, |soft| (soft / 2).min(MAX_KEPT_FILES))
}

/// `/proc` files kept open by all samplers of this process together (there is one in a
/// program, several in tests): the limit on open files is the process's, so is the
/// budget.
static KEPT_FILES: AtomicUsize = AtomicUsize::new(0);

/// A `/proc` file kept open between ticks, counted in [`KEPT_FILES`] while it lives.
struct KeptFile(File);

impl KeptFile {
    /// Keeps `file` if fewer than `limit` files are kept in this process.
    fn keep(file: File, limit: usize) -> Option<KeptFile> {
        KEPT_FILES.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < limit).then_some(n + 1)).ok()?;
        Some(KeptFile(file))
    }
}

impl Drop for KeptFile {
    fn drop(&mut self) {
        KEPT_FILES.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads a `/proc` file from its start into `buf`, growing it as needed; returns the
/// length read. Files like `stat` and `io` are produced whole by one read at offset 0,
/// so a kept file gives fresh content every time.
fn read_from_start(file: &File, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.len() < 1024 {
        buf.resize(1024, 0);
    }
    loop {
        let n = file.read_at(buf, 0)?;
        if n < buf.len() {
            return Ok(n);
        }
        // It did not fit: read it all again, whole, into a larger buffer.
        let len = buf.len() * 2;
        buf.resize(len, 0);
    }
}

/// `/proc/PID/NAME` in `path`, reusing its allocation.
fn proc_path<'a>(path: &'a mut String, pid: u32, name: &str) -> &'a str {
    path.clear();
    let _ = write!(path, "/proc/{pid}/{name}");
    path
}

/// Clock facts needed to turn `/proc` ticks into times.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    pub(super) ticks_per_sec: u64,
    page_size: u64,
    /// Boot time in whole seconds since the epoch (`btime` in `/proc/stat`).
    boot_secs: i64,
}

impl Clock {
    pub(super) fn read() -> Clock {
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

/// What stays the same while a process runs one program.
struct Fixed {
    /// The kernel's name as read: when it changes, the process has started another
    /// program (or renamed itself), and these fields are read again.
    comm: Vec<u8>,
    name: String,
    cmd: String,
    user: Option<String>,
    kernel_thread: bool,
    /// Its container, from `/proc/PID/cgroup`. A process enters a container's control
    /// group before it runs the container's program (runtimes place it between fork and
    /// exec), so reading it again at each new program is enough.
    container: Option<ContainerRef>,
}

/// Hashes a pid or a socket inode for the tables kept between ticks: looked up several
/// times per process per tick, where the standard SipHash (made to resist chosen keys,
/// which these numbers are not) showed as a tenth of the sampler's own work. Fibonacci
/// hashing spreads sequential numbers over the table.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u32` is used for u32 keys; anything else still hashes correctly.
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, pid: u32) {
        self.0 = u64::from(pid).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap<V> = HashMap<u32, V, std::hash::BuildHasherDefault<IdHasher>>;

/// What is kept about a known process between ticks.
struct Known {
    start_ticks: u64,
    fixed: Fixed,
    cpu_ticks: u64,
    /// [`Stat::activity`] at the last tick.
    activity: u64,
    seen_at: Instant,
    /// The tick it was last listed in; a process not listed in this one is gone.
    seen_tick: u64,
    io: Option<(u64, u64)>,
    /// When `io` was read.
    io_at: Instant,
    /// `/proc/PID/io` refused us: it will keep refusing, so stop asking.
    io_denied: bool,
    stat_file: Option<KeptFile>,
    io_file: Option<KeptFile>,
}

impl Known {
    fn kept_files(&self) -> usize {
        usize::from(self.stat_file.is_some()) + usize::from(self.io_file.is_some())
    }
}

/// Reads the process table, keeping what does not change between ticks.
pub(super) struct Processes {
    /// How much of each command line to keep (read once per process, at first sight).
    cmdline: CmdlineMode,
    clock: Clock,
    known: IdMap<Known>,
    users: UserNames,
    /// Reused between reads and ticks, so that a tick allocates only its output.
    buf: Vec<u8>,
    path: String,
    pids: Vec<u32>,
    /// `/proc/loadavg`, kept open, when `/proc` is of our pid namespace; and the last pid
    /// it gave at the last listing of `/proc`.
    loadavg: Option<File>,
    last_pid: Option<u64>,
    tick: u64,
    /// Files this reader keeps open now, and how many it may.
    kept: usize,
    budget: usize,
    /// How many all readers of this process may keep together.
    shared_budget: usize,
}

impl Processes {
    pub fn new(cmdline: CmdlineMode) -> Processes {
        Processes::with_budget(kept_files_budget(), cmdline)
    }

    /// A reader that keeps at most `budget` files open (and no more than its share).
    fn with_budget(budget: usize, cmdline: CmdlineMode) -> Processes {
        let mut p = Processes {
            cmdline,
            clock: Clock::read(),
            known: IdMap::default(),
            users: UserNames::default(),
            buf: vec![0; 1024],
            path: String::with_capacity(32),
            pids: Vec::with_capacity(512),
            loadavg: same_pid_namespace().then(|| File::open("/proc/loadavg").ok()).flatten(),
            last_pid: None,
            tick: 0,
            kept: 0,
            budget,
            shared_budget: kept_files_budget(),
        };
        // The baseline: CPU figures of the first real sample are deltas against it.
        let _ = p.read(Some(1));
        p
    }

    /// Every process now. `memory_total` turns resident sizes into percentages.
    pub fn read(&mut self, memory_total: Option<u64>) -> io::Result<Vec<ProcessSample>> {
        let now = Instant::now();
        let wall_now = Utc::now();
        self.tick += 1;
        let mut pids = std::mem::take(&mut self.pids);
        // Before listing: a process that starts after this read moves it for next time.
        let last_pid = self.loadavg.as_ref().and_then(|f| {
            let n = read_from_start(f, &mut self.buf).ok()?;
            parse_last_pid(&self.buf[..n])
        });
        if last_pid.is_none() || last_pid != self.last_pid || self.tick % LIST_EVERY == 0 {
            // Last tick's list is this one's but for the processes that ended (their
            // reads fail below), unless a pid was handed out since.
            list_pids(&mut pids)?;
            self.last_pid = last_pid;
        }
        let mut out = Vec::with_capacity(pids.len());
        for &pid in &pids {
            if let Some(sample) = self.read_one(pid, now, wall_now, memory_total) {
                out.push(sample);
            }
        }
        self.pids = pids;
        let tick = self.tick;
        // Dropping a gone process's entry closes its files.
        self.known.retain(|_, k| k.seen_tick == tick);
        self.kept = self.known.values().map(Known::kept_files).sum();
        Ok(out)
    }

    /// Reads one process; `None` if it is gone.
    fn read_one(
        &mut self,
        pid: u32,
        now: Instant,
        wall_now: DateTime<Utc>,
        memory_total: Option<u64>,
    ) -> Option<ProcessSample> {
        let kept = self.known.get(&pid).and_then(|k| k.stat_file.as_ref()).map(|k| &k.0);
        let mut opened = None;
        let len = match kept.map(|f| read_from_start(f, &mut self.buf)) {
            Some(Ok(n)) => n,
            // Not kept, or the process it was kept for is gone and the pid may be
            // someone else's now: open it afresh.
            _ => {
                let file = File::open(proc_path(&mut self.path, pid, "stat")).ok()?;
                let n = read_from_start(&file, &mut self.buf).ok()?;
                opened = Some(file);
                n
            }
        };
        let stat = parse_stat(&self.buf[..len])?;
        let comm = &self.buf[stat.comm.clone()];

        let fresh = self.known.get(&pid).is_none_or(|k| k.start_ticks != stat.start_ticks);
        if fresh {
            let fixed = first_look(&mut self.users, &mut self.path, self.cmdline, pid, comm, &stat);
            let known = Known {
                start_ticks: stat.start_ticks,
                fixed,
                cpu_ticks: stat.cpu_ticks,
                activity: stat.activity,
                seen_at: now,
                seen_tick: self.tick,
                io: None,
                io_at: now,
                io_denied: false,
                stat_file: None,
                io_file: None,
            };
            if let Some(old) = self.known.insert(pid, known) {
                self.kept -= old.kept_files();
            }
        }
        let known = self.known.get_mut(&pid)?;
        if !fresh && known.fixed.comm != comm {
            known.fixed = first_look(&mut self.users, &mut self.path, self.cmdline, pid, comm, &stat);
        }
        if let Some(file) = opened {
            if let Some(kept) = known.stat_file.as_mut() {
                kept.0 = file; // replaces the one of a gone process
            } else if self.kept < self.budget
                && let Some(kept) = KeptFile::keep(file, self.shared_budget)
            {
                known.stat_file = Some(kept);
                self.kept += 1;
            }
        }
        known.seen_tick = self.tick;

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
        let cpu_percent =
            if span > 0.0 { (delta_ticks as f64 / self.clock.ticks_per_sec as f64 / span * 100.0) as f32 } else { 0.0 };

        let mut disk_read_rate = None;
        let mut disk_write_rate = None;
        let ran = fresh || stat.activity != known.activity;
        if !known.io_denied && !ran && !io_due(pid, self.tick) && known.io.is_some() {
            // Did nothing since the last tick, and not its turn: it wrote nothing we
            // would not see at its next read.
            disk_read_rate = Some(0.0);
            disk_write_rate = Some(0.0);
        } else if !known.io_denied {
            let read = match known.io_file.as_ref() {
                Some(kept) => read_from_start(&kept.0, &mut self.buf),
                None => File::open(proc_path(&mut self.path, pid, "io")).and_then(|file| {
                    let n = read_from_start(&file, &mut self.buf)?;
                    if self.kept < self.budget
                        && let Some(kept) = KeptFile::keep(file, self.shared_budget)
                    {
                        known.io_file = Some(kept);
                        self.kept += 1;
                    }
                    Ok(n)
                }),
            };
            match read {
                Ok(n) => {
                    let now_io = parse_io(&self.buf[..n]);
                    // Over the time since the last read, which may be several ticks.
                    let since_read = now.duration_since(known.io_at).as_secs_f64();
                    if let (Some((r, w)), Some((pr, pw))) = (now_io, known.io)
                        && since_read > 0.0
                        && !fresh
                    {
                        disk_read_rate = Some(r.saturating_sub(pr) as f64 / since_read);
                        disk_write_rate = Some(w.saturating_sub(pw) as f64 / since_read);
                    }
                    known.io = now_io;
                    known.io_at = now;
                }
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    known.io_denied = true;
                    known.io = None;
                    if known.io_file.take().is_some() {
                        self.kept -= 1;
                    }
                }
                Err(_) => known.io = None,
            }
        }
        known.cpu_ticks = stat.cpu_ticks;
        known.activity = stat.activity;
        known.seen_at = now;

        let rss_bytes = stat.rss_pages * self.clock.page_size;
        Some(ProcessSample {
            pid,
            ppid: (stat.ppid != 0).then_some(stat.ppid),
            name: known.fixed.name.clone(),
            cmd: known.fixed.cmd.clone(),
            user: known.fixed.user.clone(),
            status: status_of(stat.state),
            cpu_percent: Some(cpu_percent),
            memory_percent: memory_total.filter(|&t| t > 0).map(|t| (rss_bytes as f64 / t as f64 * 100.0) as f32),
            rss_bytes: Some(rss_bytes),
            virtual_bytes: Some(stat.vsize_bytes),
            threads: Some(stat.threads),
            start_time: Some(start_time),
            disk_read_bytes: known.io.map(|(r, _)| r),
            disk_write_bytes: known.io.map(|(_, w)| w),
            disk_read_bytes_per_sec: disk_read_rate,
            disk_write_bytes_per_sec: disk_write_rate,
            kernel_thread: known.fixed.kernel_thread,
            container: known.fixed.container.clone(),
            gpu_percent: None,
            gpu_memory_bytes: None,
        })
    }

    /// Files kept open now.
    #[cfg(test)]
    fn kept_files(&self) -> usize {
        self.known.values().map(Known::kept_files).sum()
    }
}

/// Whether tick `tick` is the one in [`IO_EVERY`] at which process `pid` has its
/// `/proc/PID/io` read even if it did nothing: by pid, so that the reads of idle
/// processes spread evenly over the ticks.
fn io_due(pid: u32, tick: u64) -> bool {
    (tick.wrapping_add(u64::from(pid))) % IO_EVERY == 0
}

/// Reads what stays fixed while a process runs one program: its name, command line,
/// owner and container. A kernel thread has no command line, always runs as root and
/// in the root control group, so nothing is read for it (worker threads rename
/// themselves often).
fn first_look(
    users: &mut UserNames,
    path: &mut String,
    cmdline: CmdlineMode,
    pid: u32,
    comm: &[u8],
    stat: &Stat,
) -> Fixed {
    let kernel_thread = stat.flags & PF_KTHREAD != 0;
    let (args, uid, container): (Vec<String>, Option<u32>, Option<ContainerRef>) = if kernel_thread {
        (Vec::new(), Some(0), None)
    } else {
        let args = fs::read(proc_path(path, pid, "cmdline")).map(|raw| parse_cmdline(&raw)).unwrap_or_default();
        let uid = fs::read_to_string(proc_path(path, pid, "status"))
            .ok()
            .and_then(|s| parse_status_uid(&s))
            .or_else(|| fs::metadata(proc_path(path, pid, "")).ok().map(|m| m.uid()));
        let container =
            fs::read_to_string(proc_path(path, pid, "cgroup")).ok().and_then(|text| super::container::parse(&text));
        (args, uid, container)
    };
    let comm_text = String::from_utf8_lossy(comm);
    Fixed {
        comm: comm.to_vec(),
        name: redact::printable(&display_name(&comm_text, args.first().map(String::as_str))),
        cmd: redact::command_line_with(&args, cmdline),
        user: uid.map(|u| users.name(u)),
        kernel_thread,
        container,
    }
}

/// The arguments in `/proc/PID/cmdline`: NUL-separated, empty ones left out. Whoever
/// started the process chose these bytes (and may rewrite them while it runs), so they
/// are any bytes at all; text that is not UTF-8 is shown with replacement characters.
fn parse_cmdline(raw: &[u8]) -> Vec<String> {
    raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
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

/// Whether `/proc` shows this process's pid namespace: it knows us by our own pid.
fn same_pid_namespace() -> bool {
    fs::read_link("/proc/self")
        .ok()
        .and_then(|link| link.to_str()?.parse::<u32>().ok())
        .is_some_and(|pid| pid == std::process::id())
}

/// The numeric entries of `/proc`, sorted, into `out`.
fn list_pids(out: &mut Vec<u32>) -> io::Result<()> {
    out.clear();
    for entry in fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
            out.push(pid);
        }
    }
    out.sort_unstable();
    Ok(())
}

/// The numeric entries of `/proc`, sorted.
fn pids() -> io::Result<Vec<u32>> {
    let mut out = Vec::with_capacity(512);
    list_pids(&mut out)?;
    Ok(out)
}

/// `/proc/PID/stat` of `pid` read into `buf`, with its parsed fields.
fn read_stat(pid: u32, path: &mut String, buf: &mut Vec<u8>) -> Option<Stat> {
    let file = File::open(proc_path(path, pid, "stat")).ok()?;
    let n = read_from_start(&file, buf).ok()?;
    buf.truncate(n);
    parse_stat(buf)
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
    let (mut path, mut buf) = (String::new(), Vec::new());
    let stat = read_stat(pid, &mut path, &mut buf)?;
    let clock = Clock::read();
    let user = fs::read_to_string(proc_path(&mut path, pid, "status"))
        .ok()
        .and_then(|s| parse_status_uid(&s))
        .map(|uid| UserNames::default().name(uid));
    // The same name the sampler shows (the kernel keeps only 15 bytes of it).
    let argv0 = fs::read(proc_path(&mut path, pid, "cmdline"))
        .ok()
        .and_then(|raw| raw.split(|b| *b == 0).next().map(|a| String::from_utf8_lossy(a).into_owned()));
    let comm = String::from_utf8_lossy(&buf[stat.comm.clone()]);
    Some(ProcessEntry {
        pid,
        ppid: (stat.ppid != 0).then_some(stat.ppid),
        name: redact::printable(&display_name(&comm, argv0.as_deref())),
        start_time: clock.start_time(stat.start_ticks),
        kernel_thread: stat.flags & PF_KTHREAD != 0,
        user,
    })
}

/// Every process with its parent, for walking a subtree.
pub(super) fn table() -> io::Result<Vec<ProcessEntry>> {
    let clock = Clock::read();
    let (mut path, mut buf) = (String::new(), Vec::new());
    let mut out = Vec::new();
    for pid in pids()? {
        if let Some(stat) = read_stat(pid, &mut path, &mut buf) {
            out.push(ProcessEntry {
                pid,
                ppid: (stat.ppid != 0).then_some(stat.ppid),
                name: String::from_utf8_lossy(&buf[stat.comm.clone()]).into_owned(),
                start_time: clock.start_time(stat.start_ticks),
                kernel_thread: stat.flags & PF_KTHREAD != 0,
                user: None,
            });
        }
    }
    Ok(out)
}

/// The program file of `pid`: `/proc/PID/exe`, the link the kernel keeps to the file it
/// runs. Its metadata is read through the link, so it is the running file's even after
/// that was replaced or removed.
pub(super) fn executable(pid: u32) -> io::Result<super::Executable> {
    let link = format!("/proc/{pid}/exe");
    let path = fs::read_link(&link)?;
    let meta = fs::metadata(&link)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let name = name.strip_suffix(" (deleted)").unwrap_or(&name).to_owned();
    let ours = OUR_EXECUTABLE.get_or_init(|| fs::metadata("/proc/self/exe").ok().map(|m| (m.dev(), m.ino())));
    let uid = nix::unistd::geteuid().as_raw();
    Ok(super::Executable {
        file_name: name,
        is_ours: *ours == Some((meta.dev(), meta.ino())),
        owned_by_us_or_root: (meta.uid() == 0 || meta.uid() == uid) && meta.mode() & 0o022 == 0,
    })
}

/// Device and inode of this process's own program file, read once.
static OUR_EXECUTABLE: std::sync::OnceLock<Option<(u64, u64)>> = std::sync::OnceLock::new();

/// Every TCP and UDP socket with its owning process.
#[derive(Default)]
pub(super) struct Sockets {
    /// Opened at the first read; `None` again after an error, to start afresh.
    diag: Option<SockDiag>,
    owners: SocketOwners,
}

impl Sockets {
    pub fn new() -> Sockets {
        Sockets::default()
    }

    /// The sockets now, with their owners; `processes` are this tick's processes.
    pub fn read(&mut self, processes: &[ProcessSample]) -> Result<Vec<(netstat2::SocketInfo, Option<u32>)>, String> {
        let mut sockets = Vec::with_capacity(self.owners.current.len() + 16);
        let diag = match self.diag.as_mut() {
            Some(diag) => diag,
            None => self.diag.insert(SockDiag::new().map_err(|e| format!("cannot list sockets: {e}"))?),
        };
        if let Err(e) = diag.read(&mut sockets) {
            self.diag = None;
            return Err(format!("cannot list sockets: {e}"));
        }
        self.owners.resolve(sockets.iter().map(|s| s.inode), processes);
        Ok(sockets
            .into_iter()
            .map(|s| {
                let owner = self.owners.owner(s.inode);
                (s, owner)
            })
            .collect())
    }
}

/// Which process holds which socket inode, looked for only when needed.
#[derive(Default)]
struct SocketOwners {
    owners: IdMap<u32>,
    /// Inodes looked for in a walk of every process and not found (other users'
    /// sockets without privileges, or sockets no process holds). Not looked for again.
    unowned: HashSet<u32>,
    /// The inodes listed this tick, and those not known yet; kept for their memory.
    current: HashSet<u32>,
    missing: HashSet<u32>,
    /// The processes there were at the last walk.
    walked: HashSet<u32>,
    path: String,
}

impl SocketOwners {
    /// Brings the map up to date for `inodes`, the sockets listed now.
    ///
    /// Nothing is read unless a socket is new, or its owner is gone (it may have been
    /// handed on). Then processes are walked in the order most likely to hold it, and
    /// the walk stops as soon as every new socket is found: first the processes that
    /// started since the last walk, then those that used CPU this tick (a socket is
    /// opened or received by a process that runs), then the rest. Kernel threads hold
    /// no descriptors and are skipped.
    fn resolve(&mut self, inodes: impl Iterator<Item = u32>, processes: &[ProcessSample]) {
        self.current.clear();
        self.current.extend(inodes.filter(|i| *i != 0));
        let alive = |pid: &u32| processes.binary_search_by_key(pid, |p| p.pid).is_ok();
        let current = &self.current;
        self.owners.retain(|inode, pid| current.contains(inode) && alive(pid));
        self.unowned.retain(|inode| current.contains(inode));
        self.missing.clear();
        let (owners, unowned) = (&self.owners, &self.unowned);
        self.missing.extend(current.iter().filter(|i| !owners.contains_key(i) && !unowned.contains(i)));
        if self.missing.is_empty() {
            return;
        }

        let walked = &self.walked;
        let rank = |p: &ProcessSample| {
            if !walked.contains(&p.pid) {
                0
            } else if p.cpu_percent.is_some_and(|c| c > 0.0) {
                1
            } else {
                2
            }
        };
        let mut order: Vec<(u8, u32)> =
            processes.iter().filter(|p| !p.kernel_thread).map(|p| (rank(p), p.pid)).collect();
        order.sort_unstable();
        for (_, pid) in order {
            walk_socket_fds(pid, &mut self.path, |inode| {
                if self.missing.remove(&inode) {
                    self.owners.insert(inode, pid);
                }
            });
            if self.missing.is_empty() {
                break;
            }
        }
        // Whatever is still missing was looked for in every process.
        self.unowned.extend(self.missing.drain());
        self.walked.clear();
        self.walked.extend(processes.iter().map(|p| p.pid));
    }

    fn owner(&self, inode: u32) -> Option<u32> {
        self.owners.get(&inode).copied()
    }
}

/// Calls `found` with the inode of every socket process `pid` holds open. A process we
/// may not look into is skipped.
///
/// The walk is what a tick with new sockets costs most, in our code and in the kernel's,
/// so it allocates nothing per descriptor and lets the kernel resolve each link against
/// the open `fd` directory (`readlinkat`) rather than walking `/proc/PID/fd/N` from the
/// root again: the entries are read into a buffer on the stack, the links into another.
fn walk_socket_fds(pid: u32, path: &mut String, mut found: impl FnMut(u32)) {
    use std::mem::MaybeUninit;

    use rustix::fs::{Mode, OFlags, RawDir};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let Ok(dir) = rustix::fs::open(proc_path(path, pid, "fd"), flags, Mode::empty()) else { return };
    let mut entries = [MaybeUninit::<u8>::uninit(); 4096];
    let mut listing = RawDir::new(&dir, &mut entries);
    // "socket:[4294967295]" and then some: a longer link is not a socket's.
    let mut link = [0u8; 32];
    while let Some(Ok(entry)) = listing.next() {
        let name = entry.file_name();
        if name.to_bytes().first() == Some(&b'.') {
            continue;
        }
        let Ok(n) = rustix::fs::readlinkat_raw(&dir, name, &mut link[..]) else { continue };
        // A link that filled the buffer was cut short: not a socket's.
        if let Some(inode) = link.get(..n).filter(|_| n < link.len()).and_then(socket_inode) {
            found(inode);
        }
    }
}

/// The inode in a descriptor's link text, when it is a socket's (`socket:[12345]`).
fn socket_inode(link: &[u8]) -> Option<u32> {
    const SOCKET: &[u8] = b"socket:[";
    let digits = link.strip_prefix(SOCKET)?.strip_suffix(b"]")?;
    u32::try_from(number(digits)?).ok()
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
    super::machine::first_id(["/etc/machine-id", "/var/lib/dbus/machine-id"].iter().map(|p| fs::read_to_string(p).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    const STAT: &str = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
        250 50 0 0 20 0 3 0 98765 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";

    fn stat(text: &str) -> Option<Stat> {
        parse_stat(text.as_bytes())
    }

    #[test]
    fn the_executable_is_the_file_the_kernel_runs() {
        let me = executable(std::process::id()).unwrap();
        assert!(me.is_ours);
        // As the portable reader sees it too.
        let portable = super::super::portable::executable(std::process::id()).unwrap();
        assert_eq!(portable, me);
        // bash: dash has no `exec -a`.
        let mut child = Command::new("bash").args(["-c", "exec -a procyon sleep 30"]).spawn().unwrap();
        let pid = child.id();
        let sleep = (0..100)
            .find_map(|_| {
                std::thread::sleep(Duration::from_millis(20));
                executable(pid).ok().filter(|e| e.file_name != "bash")
            })
            .unwrap();
        // It calls itself procyon; the kernel knows better.
        assert_eq!(sleep.file_name, "sleep");
        assert!(!sleep.is_ours);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(executable(pid).unwrap_err().kind(), io::ErrorKind::NotFound);
        // Kernel threads run no file.
        if identify(2).is_some_and(|p| p.kernel_thread) {
            assert_eq!(executable(2).unwrap_err().kind(), io::ErrorKind::NotFound);
        }
    }

    #[test]
    fn parses_stat_with_parentheses_in_the_name() {
        let s = stat(STAT).unwrap();
        assert_eq!(&STAT.as_bytes()[s.comm.clone()], b"my (odd) name");
        assert_eq!(s.state, b'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.flags, 4194560);
        assert_eq!(s.cpu_ticks, 300);
        // Faults (100 minor) and times (250 + 50), own and children's (0 here).
        assert_eq!(s.activity, 400);
        let busier = stat(&STAT.replace(" 100 0 0 0 ", " 100 7 0 0 ")).unwrap();
        assert_eq!(busier.activity, 407, "a collected child's faults count");
        assert_eq!(busier.cpu_ticks, 300);
        assert_eq!(s.threads, 3);
        assert_eq!(s.start_ticks, 98765);
        assert_eq!(s.vsize_bytes, 123456789);
        assert_eq!(s.rss_pages, 2048);
    }

    #[test]
    fn rejects_truncated_or_garbage_stat() {
        assert_eq!(stat(""), None);
        assert_eq!(stat("12 (x) S 1 2 3"), None);
        assert_eq!(stat("12 x S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22"), None);
        assert_eq!(stat("12 (x) S one 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22"), None);
        assert_eq!(stat("12 (x) SS 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22"), None);
        assert_eq!(stat("12 )x( S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22"), None);
        assert_eq!(stat(&STAT.replace(" 250 ", " -250 ")), None);
        assert_eq!(stat(&STAT.replace(" 250 ", " 99999999999999999999999 ")), None);
    }

    #[test]
    fn kernel_thread_flag_is_read_from_flags() {
        let kthread = STAT.replace("4194560", &(PF_KTHREAD | 0x40).to_string());
        assert_ne!(stat(&kthread).unwrap().flags & PF_KTHREAD, 0);
        assert_eq!(stat(STAT).unwrap().flags & PF_KTHREAD, 0);
    }

    #[test]
    fn parses_io_status_and_limits() {
        let io =
            "rchar: 1\nwchar: 2\nsyscr: 3\nsyscw: 4\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_io(io.as_bytes()), Some((4096, 8192)));
        assert_eq!(parse_io(b"rchar: 1\n"), None);
        assert_eq!(parse_io(b"read_bytes: x\nwrite_bytes: 1\n"), None);
        let status = "Name:\tbash\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(parse_status_uid(status), Some(1000));
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
            Max processes             63432                63432                processes \n\
            Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_files_limit(limits), Some(1024));
        assert_eq!(parse_open_files_limit("Max open files  unlimited  unlimited  files\n"), Some(usize::MAX));
        assert_eq!(parse_open_files_limit("Max processes 10 10 processes\n"), None);
    }

    #[test]
    fn the_last_pid_handed_out_is_read_from_loadavg() {
        assert_eq!(parse_last_pid(b"0.20 0.18 0.12 1/80 11206\n"), Some(11206));
        assert_eq!(parse_last_pid(b"0.20 0.18 0.12 1/80\n"), None);
        assert_eq!(parse_last_pid(b""), None);
        assert!(parse_last_pid(&fs::read("/proc/loadavg").unwrap()).is_some());
        assert!(same_pid_namespace(), "the tests run where /proc is their own");
    }

    #[test]
    fn processes_that_start_or_end_between_reads_are_seen_without_waiting_for_a_listing() {
        let mut procs = Processes::with_budget(MAX_KEPT_FILES, CmdlineMode::Full);
        assert!(procs.loadavg.is_some());
        // Ticks in which no process starts take last tick's list; a start shows at once.
        for round in 0..3 {
            let first = procs.read(Some(1)).unwrap();
            let mut child = sh("sleep 30");
            let pid = child.id();
            assert!(find(&first, pid).is_none());
            assert!(find(&procs.read(Some(1)).unwrap(), pid).is_some(), "round {round}: new process seen");
            assert!(find(&procs.read(Some(1)).unwrap(), pid).is_some());
            child.kill().unwrap();
            child.wait().unwrap();
            assert!(find(&procs.read(Some(1)).unwrap(), pid).is_none(), "round {round}: ended process gone");
        }
    }

    #[test]
    fn the_descriptor_walk_finds_our_own_sockets_and_nothing_else() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let file = File::open("/proc/self/stat").unwrap();
        let inode_of = |fd: i32| fs::metadata(format!("/proc/self/fd/{fd}")).unwrap().ino() as u32;
        use std::os::fd::AsRawFd;
        let mut seen = Vec::new();
        walk_socket_fds(std::process::id(), &mut String::new(), |inode| seen.push(inode));
        for socket in [inode_of(listener.as_raw_fd()), inode_of(stream.as_raw_fd())] {
            assert!(seen.contains(&socket), "{socket} in {seen:?}");
        }
        assert!(!seen.contains(&inode_of(file.as_raw_fd())), "a file is not a socket");
        // A process that is not there is skipped.
        walk_socket_fds(u32::MAX, &mut String::new(), |inode| panic!("{inode} of no process"));
    }

    #[test]
    fn states_map_to_statuses() {
        assert_eq!(status_of(b'D'), ProcessStatus::DiskSleep);
        assert_eq!(status_of(b'T'), ProcessStatus::Stopped);
        assert_eq!(status_of(b'I'), ProcessStatus::Idle);
        assert_eq!(status_of(b'?'), ProcessStatus::Unknown);
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

    fn sh(script: &str) -> std::process::Child {
        Command::new("sh").args(["-c", script]).stdin(Stdio::null()).stdout(Stdio::null()).spawn().unwrap()
    }

    use crate::model::details::ContainerRuntime;

    fn find(list: &[ProcessSample], pid: u32) -> Option<&ProcessSample> {
        list.iter().find(|p| p.pid == pid)
    }

    /// How many of our open files are in `/proc/PID/`.
    #[test]
    fn a_kept_stat_file_gives_fresh_figures_every_read() {
        let mut procs = Processes::with_budget(MAX_KEPT_FILES, CmdlineMode::Full);
        let me = std::process::id();
        assert!(procs.known[&me].stat_file.is_some(), "our own stat file is kept");
        let before = find(&procs.read(Some(1)).unwrap(), me).unwrap().clone();
        // Burn a little CPU and grow: both must show through the kept file.
        let grow = vec![1u8; 64 << 20];
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(150) {
            std::hint::black_box(&grow);
        }
        std::hint::black_box(grow.iter().map(|b| u64::from(*b)).sum::<u64>());
        let after = find(&procs.read(Some(1)).unwrap(), me).unwrap().clone();
        let (before_rss, after_rss) = (before.rss_bytes.unwrap(), after.rss_bytes.unwrap());
        assert!(after_rss >= before_rss + (32 << 20), "{before_rss} then {after_rss}");
        assert!(after.cpu_percent.unwrap() > 0.0);
        assert!(procs.known[&me].stat_file.is_some());
    }

    #[test]
    fn a_gone_process_is_dropped_with_its_files() {
        let mut procs = Processes::with_budget(MAX_KEPT_FILES, CmdlineMode::Full);
        let mut child = sh("sleep 30");
        let pid = child.id();
        assert!(find(&procs.read(Some(1)).unwrap(), pid).is_some());
        assert!(procs.known[&pid].stat_file.is_some());
        // The descriptors this sampler keeps for it (other samplers in this test
        // process may keep their own on the same pid, so only these are checked).
        let ours: Vec<_> = [&procs.known[&pid].stat_file, &procs.known[&pid].io_file]
            .into_iter()
            .flatten()
            .map(|k| std::os::fd::AsRawFd::as_raw_fd(&k.0))
            .collect();
        let prefix = format!("/proc/{pid}/");
        let open_on_pid = |fd: &i32| {
            fs::read_link(format!("/proc/self/fd/{fd}")).is_ok_and(|t| t.to_string_lossy().starts_with(&prefix))
        };
        assert!(!ours.is_empty() && ours.iter().all(open_on_pid));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(find(&procs.read(Some(1)).unwrap(), pid).is_none());
        assert!(!procs.known.contains_key(&pid));
        assert!(!ours.iter().any(open_on_pid), "its files are closed");
        assert_eq!(procs.kept, procs.kept_files());
    }

    #[test]
    fn no_more_files_are_kept_than_the_budget_and_the_rest_still_read() {
        let mut limited = Processes::with_budget(5, CmdlineMode::Full);
        let mut unlimited = Processes::with_budget(MAX_KEPT_FILES, CmdlineMode::Full);
        let a = limited.read(Some(1)).unwrap();
        let b = unlimited.read(Some(1)).unwrap();
        assert_eq!(limited.kept_files(), 5);
        assert!(
            unlimited.kept_files() > 5,
            "kept {} of {} in all",
            KEPT_FILES.load(Ordering::Relaxed),
            unlimited.shared_budget
        );
        let pids = |l: &[ProcessSample]| l.iter().map(|p| (p.pid, p.start_time)).collect::<HashSet<_>>();
        let (a, b) = (pids(&a), pids(&b));
        // Processes come and go between the two readings, but hardly any.
        assert!(a.symmetric_difference(&b).count() <= 4, "{:?}", a.symmetric_difference(&b).collect::<Vec<_>>());
        let mut none = Processes::with_budget(0, CmdlineMode::Full);
        assert!(none.read(Some(1)).unwrap().len() + 4 >= a.len());
        assert_eq!(none.kept_files(), 0);
    }

    /// A control group hierarchy this test may make groups in (as root), or `None`.
    fn writable_cgroups() -> Option<std::path::PathBuf> {
        // cgroup v1's pids hierarchy where there is one, else the v2 root.
        let root = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.join("cgroup.procs").exists())?;
        let probe = root.join(format!("procyon-probe-{}", std::process::id()));
        fs::create_dir(&probe).ok()?;
        fs::remove_dir(&probe).ok()?;
        Some(root)
    }

    /// A real process that enters a control group named as Docker names its
    /// containers, then starts its program (as runtimes do), is attributed to that
    /// container, with the sampler reading its control group once, not each tick.
    /// Skipped where the test may not make control groups (not root).
    #[test]
    fn a_process_in_a_containers_control_group_is_attributed_to_it() {
        let Some(root) = writable_cgroups() else {
            eprintln!("cannot make control groups here: skipped");
            return;
        };
        const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let base = root.join(format!("procyon-test-{}", std::process::id()));
        let group = base.join("docker").join(ID);
        fs::create_dir_all(&group).unwrap();
        let mut procs = Processes::with_budget(MAX_KEPT_FILES, CmdlineMode::Full);
        let procs_file = group.join("cgroup.procs");
        let mut child = sh(&format!("echo $$ > {}; sleep 0.5; exec sleep 32", procs_file.display()));
        let mut outside = sh("sleep 0.5; exec sleep 33");
        std::thread::sleep(Duration::from_millis(900));
        let list = procs.read(Some(1)).unwrap();
        let inside = find(&list, child.id()).unwrap().clone();
        let other = find(&list, outside.id()).unwrap().clone();
        let again = find(&procs.read(Some(1)).unwrap(), child.id()).unwrap().clone();
        for c in [&mut child, &mut outside] {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        let _ = fs::remove_dir(&group);
        let _ = fs::remove_dir(base.join("docker"));
        let _ = fs::remove_dir(&base);
        let container = inside.container.expect("in the container");
        assert_eq!((container.runtime, container.id.as_str()), (ContainerRuntime::Docker, ID));
        assert_eq!(again.container.as_ref().map(|c| c.id.as_str()), Some(ID));
        assert_eq!(other.container, None);
    }

    #[test]
    fn a_process_that_starts_another_program_gets_its_new_name() {
        let mut procs = Processes::with_budget(MAX_KEPT_FILES, CmdlineMode::Full);
        let mut child = sh("sleep 0.5; exec sleep 31");
        let pid = child.id();
        let first = find(&procs.read(Some(1)).unwrap(), pid).unwrap().clone();
        assert_eq!(first.name, "sh");
        std::thread::sleep(Duration::from_millis(900));
        let later = find(&procs.read(Some(1)).unwrap(), pid).unwrap().clone();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(later.start_time, first.start_time, "the same process");
        assert_eq!(later.name, "sleep");
        assert_eq!(later.cmd, "sleep 31");
    }

    #[test]
    fn disk_writes_show_in_the_next_tick_even_with_hardly_any_cpu() {
        // A process that writes a little, sleeps, and uses far less than a clock tick of
        // CPU between two readings: its counters still move, so they must be read.
        // Next to the test binary: a real disk, where the temporary directory may be
        // memory, which counts no disk writes.
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().join(format!("procyon-io-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("out");
        let mut child = sh(&format!(
            "sleep 0.3; dd if=/dev/zero of={} bs=64k count=16 conv=fsync 2>/dev/null; sleep 30",
            file.display()
        ));
        let pid = child.id();
        let mut procs = Processes::with_budget(MAX_KEPT_FILES, CmdlineMode::Full);
        let before = find(&procs.read(Some(1)).unwrap(), pid).unwrap().clone();
        std::thread::sleep(Duration::from_millis(1200));
        let after = find(&procs.read(Some(1)).unwrap(), pid).unwrap().clone();
        child.kill().unwrap();
        child.wait().unwrap();
        let _ = fs::remove_dir_all(&dir);
        let (Some(w0), Some(w1)) = (before.disk_write_bytes, after.disk_write_bytes) else {
            return; // this system does not account I/O per process
        };
        // The shell's own counters include its finished child's (dd) once reaped.
        assert!(w1 >= w0 + (1 << 20), "written bytes {w0} then {w1}");
        assert!(after.disk_write_bytes_per_sec.unwrap_or(0.0) > 0.0);
    }

    /// `/proc/PID/io`'s write_bytes of `pid`, read directly.
    fn written(pid: u32) -> Option<u64> {
        parse_io(&fs::read(format!("/proc/{pid}/io")).ok()?).map(|(_, w)| w)
    }

    #[test]
    fn bytes_of_a_writer_that_seems_idle_show_within_io_every_ticks_exactly() {
        // A process whose writes leave no trace in /proc/PID/stat (no CPU tick, no
        // fault) is read on its turn only: what it wrote must show then, to the byte,
        // with a rate over the time since its previous read. The reader is made to see
        // it idle every tick (its activity set to what /proc/PID/stat says), which is
        // the case to hold whatever the shell and dd below happen to do.
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().join(format!("procyon-io-idle-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("out");
        // The reader first, so that its first sight of the shell (and of its counters)
        // is the read timed below.
        let mut procs = Processes::with_budget(MAX_KEPT_FILES, CmdlineMode::Full);
        let mut child = sh(&format!(
            "sleep 0.5; dd if=/dev/zero of={} bs=64k count=16 conv=fsync 2>/dev/null; sleep 30",
            file.display()
        ));
        let pid = child.id();
        let first_start = Instant::now();
        let before = find(&procs.read(Some(1)).unwrap(), pid).unwrap().clone();
        let first_end = Instant::now();
        let Some(w0) = before.disk_write_bytes else {
            child.kill().unwrap();
            child.wait().unwrap();
            return; // this system does not account I/O per process
        };
        // Let it write, and wait for the bytes.
        let deadline = Instant::now() + Duration::from_secs(20);
        while written(pid).is_none_or(|w| w < w0 + (1 << 20)) {
            assert!(Instant::now() < deadline, "dd never wrote");
            std::thread::sleep(Duration::from_millis(20));
        }
        let total = written(pid).unwrap();
        let seems_idle = |procs: &mut Processes| {
            let stat = fs::read(format!("/proc/{pid}/stat")).unwrap();
            procs.known.get_mut(&pid).unwrap().activity = parse_stat(&stat).unwrap().activity;
        };
        let mut shown = None;
        for ticks in 1..=IO_EVERY {
            seems_idle(&mut procs);
            let start = Instant::now();
            let now = find(&procs.read(Some(1)).unwrap(), pid).unwrap().clone();
            let end = Instant::now();
            if now.disk_write_bytes != Some(w0) {
                shown = Some((ticks, now, start, end));
                break;
            }
            // Not its turn: the counters it had, and nothing written meanwhile.
            assert_eq!(now.disk_write_bytes_per_sec, Some(0.0));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let _ = fs::remove_dir_all(&dir);
        let (ticks, now, start, end) = shown.expect("the bytes showed within IO_EVERY ticks");
        assert!(ticks <= IO_EVERY);
        assert_eq!(now.disk_write_bytes, Some(total), "every byte, no more");
        // The rate is over the time since the first read, not over one tick.
        let delta = (total - w0) as f64;
        let rate = now.disk_write_bytes_per_sec.unwrap();
        let (shortest, longest) = ((start - first_end).as_secs_f64(), (end - first_start).as_secs_f64());
        assert!(rate >= delta / longest && rate <= delta / shortest, "{rate} for {delta} bytes");
    }

    #[test]
    fn each_process_has_its_turn_once_in_io_every_ticks() {
        for pid in [1u32, 2, 77, 4_194_303] {
            for first in 0..20u64 {
                let due = (first..first + IO_EVERY).filter(|t| io_due(pid, *t)).count();
                assert_eq!(due, 1, "pid {pid} from tick {first}");
            }
        }
        // Spread: of IO_EVERY consecutive pids, one is due at any tick.
        assert_eq!((100..100 + IO_EVERY as u32).filter(|p| io_due(*p, 9)).count(), 1);
    }
}

/// Fuzz targets for the `/proc` parsers: any bytes, and this machine's real files with
/// bytes changed, parse to a value or to `None`, never a panic; a parsed name range
/// always lies within the text it was cut from. See `crate::fuzzing`.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzzing::{config, mutated_bytes};
    use proptest::prelude::*;

    /// A real `/proc` file of this process (or of the machine).
    fn real(path: &str) -> Vec<u8> {
        std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn check_all(text: &[u8]) {
        if let Some(stat) = parse_stat(text) {
            assert!(stat.comm.start <= stat.comm.end && stat.comm.end <= text.len(), "{:?}", stat.comm);
        }
        let _ = parse_io(text);
        let _ = parse_last_pid(text);
        let as_text = String::from_utf8_lossy(text);
        let _ = parse_status_uid(&as_text);
        let _ = parse_open_files_limit(&as_text);
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_bytes(text in prop::collection::vec(any::<u8>(), 0..300)) {
            check_all(&text);
        }

        /// Text made of the characters the files hold, where parsers go further.
        #[test]
        fn any_proc_like_text(text in "[0-9 ()a-zA-Z:\t\n-]{0,200}") {
            check_all(text.as_bytes());
        }

        #[test]
        fn real_stat_with_bytes_changed(text in mutated_bytes(real("/proc/self/stat"))) {
            check_all(&text);
        }

        #[test]
        fn real_io_with_bytes_changed(text in mutated_bytes(real("/proc/self/io"))) {
            check_all(&text);
        }

        #[test]
        fn real_status_with_bytes_changed(text in mutated_bytes(real("/proc/self/status"))) {
            check_all(&text);
        }

        #[test]
        fn real_loadavg_and_limits_with_bytes_changed(
            text in prop_oneof![mutated_bytes(real("/proc/loadavg")), mutated_bytes(real("/proc/self/limits"))],
        ) {
            check_all(&text);
        }

        /// Any process can put any bytes in its command line and name: what the sampler
        /// makes of them is shown and sent without control characters, bounded, and
        /// stays as it is when the collector masks it again.
        #[test]
        fn any_command_line_and_name(
            raw in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..300),
                mutated_bytes(real("/proc/self/cmdline")),
                prop::collection::vec(cmdline_word(), 0..12).prop_map(|w| w.join("\0").into_bytes()),
            ],
            comm in prop::collection::vec(any::<u8>(), 0..16),
        ) {
            check_command_line(&raw, &comm)?;
        }

        /// Any link text: only `socket:[N]` with N a 32-bit number is a socket.
        #[test]
        fn any_descriptor_link(link in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..32),
            "socket:\\[[0-9]{0,12}\\]?".prop_map(String::into_bytes),
            "(socket|pipe|anon_inode):\\[?[0-9a-z:]{0,10}\\]?".prop_map(String::into_bytes),
        ]) {
            let text = String::from_utf8_lossy(&link);
            let expected = text
                .strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
                .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|digits| digits.parse::<u32>().ok());
            prop_assert_eq!(socket_inode(&link), expected);
        }

        #[test]
        fn every_socket_link_reads_back(inode in any::<u32>()) {
            prop_assert_eq!(socket_inode(format!("socket:[{inode}]").as_bytes()), Some(inode));
        }
    }

    /// Words of command lines that the masking rules look at, and others.
    fn cmdline_word() -> impl Strategy<Value = String> {
        "(--?[a-z-]{0,10}(=[^\\x00]{0,8})?|password|token|-p[a-z0-9]{0,6}|[a-z]+://[a-z]+:[a-z]+@[a-z.]+|\
         [A-Z_]{1,10}=[a-z0-9]{0,8}|\\PC{0,12}|[\\x01-\\x1f\\x7f]{1,3})"
    }

    fn check_command_line(raw: &[u8], comm: &[u8]) -> Result<(), TestCaseError> {
        let args = parse_cmdline(raw);
        prop_assert!(args.iter().all(|a| !a.is_empty() && !a.contains('\0')), "{args:?}");
        let name = redact::printable(&display_name(&String::from_utf8_lossy(comm), args.first().map(String::as_str)));
        prop_assert!(!name.chars().any(char::is_control), "{name:?}");
        for mode in [CmdlineMode::Full, CmdlineMode::Exe, CmdlineMode::None] {
            let cmd = redact::command_line_with(&args, mode);
            prop_assert!(!cmd.chars().any(char::is_control), "{mode:?}: {cmd:?}");
            prop_assert!(
                cmd.chars().count() <= crate::model::MAX_CMD_CHARS + 1,
                "{mode:?}: {} chars",
                cmd.chars().count()
            );
            match mode {
                CmdlineMode::None => prop_assert!(cmd.is_empty()),
                CmdlineMode::Exe => prop_assert!(!cmd.contains(' '), "{cmd:?}"),
                CmdlineMode::Full => {}
            }
            let mut again = cmd.clone();
            redact::redact_in_place(&mut again);
            let mut twice = again.clone();
            redact::redact_in_place(&mut twice);
            prop_assert_eq!(&twice, &again, "masked again on the collector: {:?}", cmd);
        }
        Ok(())
    }
}
