//! Cross-checks of the Linux sampler's fast paths against the general one.
//!
//! `linux.rs` takes shortcuts to read less: `/proc` files kept open and read again from
//! the start, the fields that do not change read once per process, the socket-owner map
//! refreshed only for sockets it has not seen. `portable.rs` goes through sysinfo and
//! netstat2, which read everything their own way. Here both sample the same machine,
//! with extra processes and sockets started before and between readings, and must
//! agree: the same processes with the same facts, the same sockets with the same owners.
//!
//! Two readings of the fast path bracket each general reading, so that what changes
//! in between can be told apart from a disagreement: a process counts only if it is
//! the same process (pid and start time) in both fast readings, a counter that only
//! grows must lie between the two fast readings, and so on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::TimeDelta;

use super::{CmdlineMode, linux, portable, socket};
use crate::model::{ConnectionSample, ProcessSample, ProcessStatus};

#[path = "../../../tests/common/load.rs"]
mod load;

fn by_pid(list: Vec<ProcessSample>) -> HashMap<u32, ProcessSample> {
    list.into_iter().map(|p| (p.pid, p)).collect()
}

/// The kernel keeps 15 bytes of a name; one side may show the longer name of the
/// program (from its command line), the other the kernel's. Kernel worker threads add
/// what they work on at the moment to their name (`kworker/1:0-events`), and sysinfo
/// keeps the name it saw first.
fn same_name(a: &str, b: &str, kernel_thread: bool) -> bool {
    const COMM_MAX: usize = 15;
    fn stem(n: &str, kernel_thread: bool) -> &str {
        // Kernel workers rename themselves after their current work item
        // (`kworker/u8:0+flush-254:0`, then `kworker/u8:0-events_unbound`).
        if kernel_thread { n.split(['-', '+']).next().unwrap_or(n) } else { n }
    }
    let (a, b) = (stem(a, kernel_thread), stem(b, kernel_thread));
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    a == b || (short.len() >= COMM_MAX && long.starts_with(short))
}

/// sysinfo gives start times in whole seconds, we give milliseconds.
fn same_start(a: Option<chrono::DateTime<chrono::Utc>>, b: Option<chrono::DateTime<chrono::Utc>>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if (a - b).abs() < TimeDelta::seconds(1))
}

/// `x` lies between `a` and `b` (either order), with `slack` either side.
fn between(x: u64, a: u64, b: u64, slack: u64) -> bool {
    a.min(b).saturating_sub(slack) <= x && x <= a.max(b).saturating_add(slack)
}

/// A process that burns CPU until it is dropped.
struct Spinner(Child);

impl Spinner {
    fn start() -> Spinner {
        let child = Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Spinner(child)
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Compares the facts of every process that was the same process in both fast
/// readings; returns the pids compared.
fn compare_processes(
    fast1: &HashMap<u32, ProcessSample>,
    slow: &HashMap<u32, ProcessSample>,
    fast2: &HashMap<u32, ProcessSample>,
) -> Vec<u32> {
    let mut compared = Vec::new();
    for (pid, f1) in fast1 {
        let Some(f2) = fast2.get(pid).filter(|f2| f2.start_time == f1.start_time) else { continue };
        let s = slow.get(pid).unwrap_or_else(|| panic!("pid {pid} ({}) is missing from the general reading", f1.name));
        assert!(same_start(f1.start_time, s.start_time), "pid {pid}: start {:?} vs {:?}", f1.start_time, s.start_time);
        if f1.name == f2.name {
            assert!(same_name(&f1.name, &s.name, f1.kernel_thread), "pid {pid}: name {:?} vs {:?}", f1.name, s.name);
        }
        assert_eq!(f1.kernel_thread, s.kernel_thread, "pid {pid} ({}): kernel thread", f1.name);
        if f1.ppid == f2.ppid {
            assert_eq!(f1.ppid, s.ppid, "pid {pid} ({}): parent", f1.name);
        }
        if f1.user == f2.user {
            assert_eq!(f1.user, s.user, "pid {pid} ({}): user", f1.name);
        }
        if f1.cmd == f2.cmd {
            assert_eq!(f1.cmd, s.cmd, "pid {pid} ({}): command line", f1.name);
        }
        // Memory moves a little between readings; a wrong field is off by far more.
        for (what, a, x, b) in [
            ("rss", f1.rss_bytes, s.rss_bytes, f2.rss_bytes),
            ("virtual size", f1.virtual_bytes, s.virtual_bytes, f2.virtual_bytes),
        ] {
            let (a, x, b) = (a.unwrap(), x.unwrap(), b.unwrap());
            let slack = b / 20 + 256 * 1024;
            assert!(between(x, a, b, slack), "pid {pid} ({}): {what} {x} not near {a}..{b}", f1.name);
        }
        // Disk counters only grow, and the general reading comes after the first fast
        // one. (Not before the second: the fast path reads `/proc/PID/io` of a process
        // that seems idle only every few ticks, so its second figure may be older.)
        for (what, a, x) in
            [("read", f1.disk_read_bytes, s.disk_read_bytes), ("written", f1.disk_write_bytes, s.disk_write_bytes)]
        {
            if let (Some(a), Some(x)) = (a, x) {
                assert!(a <= x, "pid {pid} ({}): disk bytes {what} {x} below the earlier {a}", f1.name);
            }
        }
        compared.push(*pid);
    }
    compared
}

#[test]
fn processes_agree_with_the_general_sampler() {
    let before = load::Load::start(40, 0).unwrap();
    let mut fast = linux::Processes::new(CmdlineMode::Full);
    let mut slow = portable::Processes::new(CmdlineMode::Full);
    // Processes new to both samplers, read the first time on the fast path's slow road.
    let after = load::Load::start(40, 0).unwrap();
    let spinner = Spinner::start();
    std::thread::sleep(Duration::from_millis(300));

    let total = 16 << 30;
    let f1 = by_pid(fast.read(Some(total)).unwrap());
    let s1 = by_pid(slow.read(Some(total)).unwrap());
    let f2 = by_pid(fast.read(Some(total)).unwrap());
    let compared = compare_processes(&f1, &s1, &f2);
    // Other tests start and end processes meanwhile, so not every pid of the first
    // reading is still the same process in the third; the ones this test holds are.
    let ours: Vec<u32> = before.pids().into_iter().chain(after.pids()).chain([spinner.0.id()]).collect();
    for pid in &ours {
        assert!(compared.contains(pid), "pid {pid}, held by this test, was not compared");
    }
    assert!(compared.len() > ours.len(), "only this test's processes were compared: {}", compared.len());
    for pid in before.pids().into_iter().chain(after.pids()) {
        for p in [&f1[&pid], &s1[&pid], &f2[&pid]] {
            assert_eq!(p.name, "cat");
            assert_eq!(p.status, ProcessStatus::Sleeping, "an idle load process");
        }
    }

    // CPU over (nearly) the same second on both sides.
    std::thread::sleep(Duration::from_secs(1));
    let f3 = by_pid(fast.read(Some(total)).unwrap());
    let s2 = by_pid(slow.read(Some(total)).unwrap());
    let f4 = by_pid(fast.read(Some(total)).unwrap());
    compare_processes(&f3, &s2, &f4);
    let spin = spinner.0.id();
    // On a busy machine it may get only a part of a core, but never none.
    let spinning = f3[&spin].cpu_percent.unwrap();
    assert!(spinning > 5.0, "the spinner shows on the fast path: {spinning}");
    for (pid, f) in &f3 {
        let Some(s) = s2.get(pid).filter(|s| same_start(s.start_time, f.start_time)) else { continue };
        if !s1.contains_key(pid) {
            continue; // sysinfo reports no CPU for a process the first time it sees it
        }
        let (fast_cpu, slow_cpu) = (f.cpu_percent.unwrap(), s.cpu_percent.unwrap());
        assert!((fast_cpu - slow_cpu).abs() <= 10.0, "pid {pid} ({}): cpu {fast_cpu} vs {slow_cpu}", f.name);
    }
    drop(spinner);
}

fn connections(list: Vec<(netstat2::SocketInfo, Option<u32>)>) -> HashMap<u32, ConnectionSample> {
    list.iter().filter(|(s, _)| s.inode != 0).map(|(s, pid)| (s.inode, socket::connection(s, *pid))).collect()
}

/// Every process now, as the sampler passes them to the socket reader.
fn procs() -> Vec<ProcessSample> {
    linux::Processes::new(CmdlineMode::Full).read(Some(1)).unwrap()
}

/// Whether process `pid` has socket `inode` open, read from `/proc` on the spot.
fn holds(pid: u32, inode: u32) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    let target = format!("socket:[{inode}]");
    fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.to_str() == Some(target.as_str())))
}

#[test]
fn sockets_and_their_owners_agree_with_the_general_sampler() {
    let before = load::Load::start(30, 30).unwrap();
    let mut fast = linux::Sockets::new();
    let first = connections(fast.read(&procs()).unwrap());
    // Sockets that appear after the owner map was built.
    let after = load::Load::start(30, 30).unwrap();
    let f1 = connections(fast.read(&procs()).unwrap());
    let slow = connections(portable::Sockets::new().read(&[]).unwrap());
    let f2 = connections(fast.read(&procs()).unwrap());

    let mut compared = 0;
    for (inode, a) in &f1 {
        let Some(b) = f2.get(inode).filter(|b| b.local_port == a.local_port) else { continue };
        let s = slow.get(inode).unwrap_or_else(|| panic!("socket {a:?} is missing from the general reading"));
        assert_eq!((a.protocol, a.local_address, a.local_port), (s.protocol, s.local_address, s.local_port));
        assert_eq!((a.remote_address, a.remote_port), (s.remote_address, s.remote_port));
        if a.state == b.state {
            assert_eq!(a.state, s.state, "{a:?}");
        }
        if a.pid == b.pid && a.pid != s.pid {
            // A socket shared by several processes (after a fork) may be credited to
            // either; then ours must really hold it.
            let ours = a.pid.unwrap_or_else(|| panic!("{a:?}: no owner found, the general path found {:?}", s.pid));
            assert!(holds(ours, *inode), "{a:?}: owner {ours} does not hold it (general: {:?})", s.pid);
        }
        compared += 1;
    }
    assert!(compared >= 60, "compared {compared} sockets");

    // The load's sockets: each held by its own child, found on both paths.
    for (load, seen) in [(&before, &first), (&after, &f1)] {
        let owners: HashSet<u32> = seen
            .values()
            .filter(|c| c.local_port == load.port() || c.remote_port == Some(load.port()))
            .filter_map(|c| c.pid)
            .collect();
        for pid in load.pids().into_iter().take(30) {
            assert!(owners.contains(&pid), "the socket of load process {pid} has it as owner");
        }
    }
}

#[test]
fn identify_and_the_table_agree_with_the_general_ones() {
    let load = load::Load::start(10, 0).unwrap();
    for pid in load.pids().into_iter().chain([std::process::id(), 1]) {
        let a = linux::identify(pid).unwrap();
        let b = portable::identify(pid).unwrap();
        assert_eq!((a.pid, a.ppid, a.kernel_thread), (b.pid, b.ppid, b.kernel_thread));
        assert!(same_name(&a.name, &b.name, a.kernel_thread), "{a:?} vs {b:?}");
        assert!(same_start(Some(a.start_time), Some(b.start_time)), "{a:?} vs {b:?}");
        assert_eq!(a.user, b.user);
    }
    let t1 = linux::table().unwrap();
    let general: HashMap<u32, super::ProcessEntry> =
        portable::table().unwrap().into_iter().map(|e| (e.pid, e)).collect();
    let t2: HashMap<u32, super::ProcessEntry> = linux::table().unwrap().into_iter().map(|e| (e.pid, e)).collect();
    let mut compared = 0;
    for a in &t1 {
        let Some(b) = t2.get(&a.pid).filter(|b| b.start_time == a.start_time) else { continue };
        let g = &general[&a.pid];
        assert!(same_start(Some(a.start_time), Some(g.start_time)), "{a:?} vs {g:?}");
        if a.name == b.name {
            assert!(same_name(&a.name, &g.name, a.kernel_thread), "{a:?} vs {g:?}");
        }
        if a.ppid == b.ppid {
            assert_eq!(a.ppid, g.ppid, "{a:?} vs {g:?}");
        }
        compared += 1;
    }
    assert!(compared >= t1.len() * 9 / 10);
}

#[test]
fn interface_counters_agree_with_the_general_ones() {
    let mut fast = linux::Interfaces::new();
    let mut slow = portable::Interfaces::new();
    let f1: HashMap<_, _> = fast.read().unwrap().into_iter().collect();
    let s: HashMap<_, _> = slow.read().unwrap().into_iter().collect();
    let f2: HashMap<_, _> = fast.read().unwrap().into_iter().collect();
    assert_eq!(f1.keys().collect::<HashSet<_>>(), s.keys().collect::<HashSet<_>>());
    for (name, a) in &f1 {
        let (x, b) = (&s[name], &f2[name]);
        for (what, a, x, b) in [
            ("received bytes", a.received_bytes, x.received_bytes, b.received_bytes),
            ("sent bytes", a.sent_bytes, x.sent_bytes, b.sent_bytes),
            ("received packets", a.received_packets, x.received_packets, b.received_packets),
            ("sent packets", a.sent_packets, x.sent_packets, b.sent_packets),
            ("errors in", a.errors_in, x.errors_in, b.errors_in),
            ("errors out", a.errors_out, x.errors_out, b.errors_out),
        ] {
            assert!(a <= x && x <= b, "{name}: {what} {x} not within {a}..{b}");
        }
    }
}
