//! GPU use per process from the kernel's DRM client statistics (`/proc/PID/fdinfo/FD`
//! of a descriptor open on `/dev/dri/*` or `/dev/accel/*`), which amdgpu, i915, xe,
//! msm, panfrost, v3d and other drivers write in one documented format
//! (Documentation/gpu/drm-usage-stats.rst), and the machine's GPUs from
//! `/sys/class/drm`.
//!
//! One open of a device node is one *client*; a client's descriptor can be shared by
//! several processes (inherited, passed over a socket) and a process can hold several
//! clients. A client is counted once, by its driver, device and `drm-client-id`, for the
//! first process (lowest pid) that holds it.
//!
//! What a client reports:
//! - `drm-engine-<class>: <n> ns`: time its work ran on engines of that class, since it
//!   opened; the share of an interval is the difference of two reads over the interval
//!   (divided by `drm-engine-capacity-<class>` where the class has several engines).
//!   xe gives `drm-cycles-<class>` and `drm-total-cycles-<class>` instead: the share is
//!   the difference of the first over the difference of the second.
//! - memory per region (`vram`, `gtt`, `system0`, `local0`, `memory`, ...):
//!   `drm-resident-<region>`, else `drm-total-<region>`, else the older
//!   `drm-memory-<region>`, in bytes or with a `KiB`, `MiB` or `GiB` unit. amdgpu's `cpu`
//!   region is plain system memory the GPU cannot use and is left out.
//!
//! A process's figure is its busiest engine class on any GPU (0-100) and the memory of
//! all its clients. This is what `nvtop` and `intel_gpu_top` show per client; sysinfo
//! 0.40 also reads these files, but it adds up all engines (over 100 on a busy GPU),
//! ignores xe's cycles, bytes without a unit and the older `drm-memory-*` keys, drops a
//! client without `drm-pdev` (msm and other platform devices), and walks every
//! descriptor of every process on each refresh, which is what this module avoids.
//!
//! The parser ([`parse_fdinfo`]) is pure and runs on any OS; reading `/proc` and `/sys`
//! ([`DrmClients`], [`cards`]) is Linux only.

// Elsewhere only the parser is used (by the tests and fuzz targets).
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use std::collections::HashMap;
#[cfg(target_os = "linux")]
use std::time::Instant;

/// Longest fdinfo text read: xe with several memory regions writes about 1.5 KiB.
pub(super) const FDINFO_LIMIT: usize = 16 * 1024;

/// Most engine classes kept of one client (drivers have a handful; the rest is noise).
const MAX_ENGINES: usize = 32;

/// One engine class of a client, as the driver counts it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Engine {
    /// The class: `gfx`, `render`, `video`, `rcs`, `gpu`, ...
    pub name: String,
    /// Busy time in ns (`drm-engine-<name>`).
    pub busy_ns: Option<u64>,
    /// Busy GPU cycles (`drm-cycles-<name>`).
    pub cycles: Option<u64>,
    /// All GPU cycles (`drm-total-cycles-<name>`), the cycles' reference.
    pub total_cycles: Option<u64>,
    /// Engines of the class (`drm-engine-capacity-<name>`, 1 when not given).
    pub capacity: u32,
}

/// One DRM client, as one fdinfo file describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct DrmClient {
    /// `drm-driver`.
    pub driver: String,
    /// `drm-client-id`: unique per device while the client lives.
    pub client_id: u64,
    /// `drm-pdev`: the PCI address of the device, when it is a PCI device.
    pub pdev: Option<String>,
    /// Its engine classes.
    pub engines: Vec<Engine>,
    /// Memory it holds, in bytes (see the module's doc for which keys); `None` when the
    /// driver reports none.
    pub memory_bytes: Option<u64>,
}

/// Who a client is, across reads and processes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct ClientKey {
    driver: String,
    pdev: Option<String>,
    client_id: u64,
}

impl DrmClient {
    pub(super) fn key(&self) -> ClientKey {
        ClientKey { driver: self.driver.clone(), pdev: self.pdev.clone(), client_id: self.client_id }
    }

    fn engine(&mut self, name: &str) -> Option<&mut Engine> {
        if let Some(i) = self.engines.iter().position(|e| e.name == name) {
            return self.engines.get_mut(i);
        }
        if self.engines.len() >= MAX_ENGINES || name.is_empty() {
            return None;
        }
        self.engines.push(Engine { name: name.to_string(), capacity: 1, ..Engine::default() });
        self.engines.last_mut()
    }
}

/// A number with an optional unit (`123`, `123 KiB`, `0 ns`): `None` for anything else
/// (an unknown unit, an overflow).
fn amount(value: &str) -> Option<(u64, &str)> {
    let mut words = value.split_ascii_whitespace();
    let number: u64 = words.next()?.parse().ok()?;
    let unit = words.next().unwrap_or("");
    if words.next().is_some() {
        return None;
    }
    Some((number, unit))
}

fn bytes(value: &str) -> Option<u64> {
    let (n, unit) = amount(value)?;
    let scale: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// Reads one fdinfo file's text. `None` when it is not a DRM client's (no `drm-driver`
/// or no `drm-client-id`): most descriptors' fdinfo is not.
pub(super) fn parse_fdinfo(text: &str) -> Option<DrmClient> {
    let mut client = DrmClient::default();
    let (mut driver, mut client_id) = (false, false);
    // Memory by family (resident, total, legacy), each summed over regions.
    let mut memory: [Option<u64>; 3] = [None; 3];
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let Some(key) = key.strip_prefix("drm-") else { continue };
        let value = value.trim();
        if key == "driver" {
            if value.is_empty() || value.len() > 64 {
                return None;
            }
            client.driver = value.to_string();
            driver = true;
        } else if key == "client-id" {
            client.client_id = value.parse().ok()?;
            client_id = true;
        } else if key == "pdev" {
            if !value.is_empty() && value.len() <= 64 {
                client.pdev = Some(value.to_string());
            }
        } else if let Some(class) = key.strip_prefix("engine-capacity-") {
            if let (Some(n), Some(e)) = (value.parse::<u32>().ok().filter(|n| *n > 0), client.engine(class)) {
                e.capacity = n;
            }
        } else if let Some(class) = key.strip_prefix("engine-") {
            if let (Some((ns, "ns")), Some(e)) = (amount(value), client.engine(class)) {
                e.busy_ns = Some(ns);
            }
        } else if let Some(class) = key.strip_prefix("total-cycles-") {
            if let (Some((n, "")), Some(e)) = (amount(value), client.engine(class)) {
                e.total_cycles = Some(n);
            }
        } else if let Some(class) = key.strip_prefix("cycles-") {
            if let (Some((n, "")), Some(e)) = (amount(value), client.engine(class)) {
                e.cycles = Some(n);
            }
        } else {
            let family = [("resident-", 0), ("total-", 1), ("memory-", 2)]
                .into_iter()
                .find_map(|(prefix, family)| key.strip_prefix(prefix).map(|region| (region, family)));
            if let Some((region, family)) = family
                && region != "cpu"
                && let Some(n) = bytes(value)
            {
                let sum = memory[family].get_or_insert(0);
                *sum = sum.saturating_add(n);
            }
        }
    }
    client.memory_bytes = memory.into_iter().flatten().next();
    (driver && client_id).then_some(client)
}

/// The busy share (0-100) of each engine class of `now` since `before`, the same
/// client read `elapsed_ns` earlier. A class without two readings is left out.
pub(super) fn engine_shares<'a>(
    before: &'a DrmClient,
    now: &'a DrmClient,
    elapsed_ns: u64,
) -> impl Iterator<Item = (&'a str, f32)> + 'a {
    now.engines.iter().filter_map(move |e| {
        let old = before.engines.iter().find(|o| o.name == e.name)?;
        let capacity = f64::from(e.capacity.max(1));
        let share = match (e.busy_ns, old.busy_ns, e.cycles, old.cycles, e.total_cycles, old.total_cycles) {
            (Some(busy), Some(was), ..) if elapsed_ns > 0 => {
                busy.saturating_sub(was) as f64 / (elapsed_ns as f64 * capacity)
            }
            (None, _, Some(c), Some(was_c), Some(t), Some(was_t)) if t > was_t => {
                c.saturating_sub(was_c) as f64 / ((t - was_t) as f64 * capacity)
            }
            _ => return None,
        };
        Some((e.name.as_str(), (share * 100.0).clamp(0.0, 100.0) as f32))
    })
}

/// What one read of the DRM clients found.
#[derive(Debug, Default, PartialEq)]
pub(super) struct DrmRead {
    /// Per process holding a client: its busiest engine share (`None` for a client
    /// seen for the first time) and its clients' memory.
    pub processes: HashMap<u32, (Option<f32>, Option<u64>)>,
    /// Per device (its `drm-pdev`, else its driver): the busiest engine class with
    /// every client's share added, 0-100. Complete only where every process can be
    /// looked into (root, or all clients one's own).
    pub devices: HashMap<String, f32>,
}

/// Adds this read's figures of one client, held by `pid`.
fn account(read: &mut DrmRead, pid: u32, client: &DrmClient, before: Option<(&DrmClient, u64)>) {
    let entry = read.processes.entry(pid).or_insert((None, None));
    if let Some(m) = client.memory_bytes {
        entry.1 = Some(entry.1.unwrap_or(0).saturating_add(m));
    }
    let Some((before, elapsed_ns)) = before else { return };
    let device = client.pdev.clone().unwrap_or_else(|| client.driver.clone());
    let mut classes: Vec<(&str, f32)> = Vec::new();
    for (class, share) in engine_shares(before, client, elapsed_ns) {
        entry.0 = Some(entry.0.map_or(share, |s: f32| s.max(share)));
        classes.push((class, share));
    }
    // The device's share: per class, the sum over clients; the busiest class wins.
    // Kept per class under "device\0class" until [`DrmRead::finish`].
    for (class, share) in classes {
        *read.devices.entry(format!("{device}\0{class}")).or_insert(0.0) += share;
    }
}

impl DrmRead {
    /// Turns the per-class sums of [`account`] into one figure per device.
    fn finish(&mut self) {
        let mut devices: HashMap<String, f32> = HashMap::new();
        for (key, sum) in self.devices.drain() {
            let device = key.split('\0').next().unwrap_or_default().to_string();
            let share = sum.min(100.0);
            let best = devices.entry(device).or_insert(0.0);
            *best = best.max(share);
        }
        self.devices = devices;
    }
}

/// Which processes hold DRM clients, and their figures between two reads (Linux).
///
/// Finding the clients means reading the link of every descriptor of every process,
/// which costs more than the rest of a tick. So the holders are kept, and walked for
/// again only where a new one can be: a process new since the last read is walked at
/// once; every [`WALK_EVERY`] reads, the processes that used CPU since the last such
/// walk (opening a device takes a system call, so a process that did not run opened
/// nothing; a process that opens one later is seen within as many ticks); and every
/// [`FULL_WALK_EVERY`] reads all of them, in case CPU time too small to count hid
/// one. Each read then opens just the fdinfo files of the kept descriptors (a handful
/// on a desktop: the compositor, the browser's GPU process, a game).
#[cfg(target_os = "linux")]
pub(super) struct DrmClients {
    /// `/proc`, or a fixture tree in tests.
    proc_root: String,
    /// Per process (pid, start time), the descriptors open on a DRM device.
    holders: std::collections::BTreeMap<u32, Holder>,
    /// The processes of the last read, in pid order, to tell the new ones.
    seen: Vec<(u32, Option<chrono::DateTime<chrono::Utc>>)>,
    /// Processes that used CPU since the last walk.
    ran: std::collections::HashSet<u32>,
    reads: u64,
    /// Each client's last reading, to measure the next against.
    previous: HashMap<ClientKey, (DrmClient, Instant)>,
    path: String,
    buf: Vec<u8>,
}

#[cfg(target_os = "linux")]
struct Holder {
    start_time: Option<chrono::DateTime<chrono::Utc>>,
    fds: Vec<u32>,
}

/// The descriptors of processes that ran are walked once in this many reads.
#[cfg(target_os = "linux")]
pub(super) const WALK_EVERY: u64 = 30;

/// Every process's descriptors are walked once in this many reads.
#[cfg(target_os = "linux")]
pub(super) const FULL_WALK_EVERY: u64 = 10 * WALK_EVERY;

#[cfg(target_os = "linux")]
impl DrmClients {
    pub(super) fn new(proc_root: &str) -> DrmClients {
        DrmClients {
            proc_root: proc_root.trim_end_matches('/').to_string(),
            holders: Default::default(),
            seen: Vec::new(),
            ran: Default::default(),
            reads: 0,
            previous: HashMap::new(),
            path: String::new(),
            buf: Vec::with_capacity(FDINFO_LIMIT),
        }
    }

    /// Reads the clients of `processes` (this tick's, in pid order) at `now`.
    pub(super) fn read(&mut self, processes: &[crate::model::ProcessSample], now: Instant) -> DrmRead {
        let full = self.reads % FULL_WALK_EVERY == 0;
        let walk = self.reads % WALK_EVERY == 0;
        self.reads += 1;
        // A process whose CPU share is not known (an upload's) counts as one that ran.
        self.ran.extend(processes.iter().filter(|p| p.cpu_percent.is_none_or(|c| c > 0.0)).map(|p| p.pid));
        let key = |p: &crate::model::ProcessSample| (p.pid, p.start_time);
        for p in processes.iter().filter(|p| !p.kernel_thread) {
            let new = self.seen.binary_search_by(|s| s.cmp(&key(p))).is_err();
            if !(full || new || (walk && self.ran.contains(&p.pid))) {
                continue;
            }
            let fds = self.drm_fds(p.pid);
            if fds.is_empty() {
                self.holders.remove(&p.pid);
            } else {
                self.holders.insert(p.pid, Holder { start_time: p.start_time, fds });
            }
        }
        if walk {
            self.ran.clear();
        }
        self.seen.clear();
        self.seen.extend(processes.iter().map(key));
        self.seen.sort_unstable();
        // Holders that are gone (or whose pid is someone else's now).
        let alive = |pid: &u32, h: &Holder| {
            processes.binary_search_by_key(pid, |p| p.pid).is_ok_and(|i| processes[i].start_time == h.start_time)
        };
        self.holders.retain(|pid, h| alive(pid, h));

        let mut read = DrmRead::default();
        let mut current: HashMap<ClientKey, (DrmClient, Instant)> = HashMap::with_capacity(self.previous.len());
        let pids: Vec<u32> = self.holders.keys().copied().collect();
        for pid in pids {
            let fds = self.holders.get(&pid).map(|h| h.fds.clone()).unwrap_or_default();
            let mut still = Vec::with_capacity(fds.len());
            for fd in fds {
                let Some(client) = self.fdinfo(pid, fd) else { continue };
                still.push(fd);
                let key = client.key();
                if current.contains_key(&key) {
                    continue; // held by a process read before: counted there
                }
                let before = self.previous.get(&key).map(|(c, at)| {
                    (c, u64::try_from(now.saturating_duration_since(*at).as_nanos()).unwrap_or(u64::MAX))
                });
                account(&mut read, pid, &client, before);
                current.insert(key, (client, now));
            }
            // A descriptor closed (or reused for another file) is dropped.
            match self.holders.get_mut(&pid) {
                Some(h) if !still.is_empty() => h.fds = still,
                _ => {
                    self.holders.remove(&pid);
                }
            }
        }
        self.previous = current;
        read.finish();
        read
    }

    /// The descriptors of `pid` open on a DRM or accel device node, by their links.
    fn drm_fds(&mut self, pid: u32) -> Vec<u32> {
        use std::mem::MaybeUninit;

        use rustix::fs::{Mode, OFlags, RawDir};
        let mut fds = Vec::new();
        self.path.clear();
        let _ = std::fmt::Write::write_fmt(&mut self.path, format_args!("{}/{pid}/fd", self.proc_root));
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let Ok(dir) = rustix::fs::open(self.path.as_str(), flags, Mode::empty()) else { return fds };
        let mut entries = [MaybeUninit::<u8>::uninit(); 4096];
        let mut listing = RawDir::new(&dir, &mut entries);
        let mut link = [0u8; 64];
        while let Some(Ok(entry)) = listing.next() {
            let name = entry.file_name();
            let Some(fd) = std::str::from_utf8(name.to_bytes()).ok().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(n) = rustix::fs::readlinkat_raw(&dir, name, &mut link[..]) else { continue };
            if n < link.len() && is_drm_node(&link[..n]) {
                fds.push(fd);
            }
        }
        fds.sort_unstable();
        fds
    }

    fn fdinfo(&mut self, pid: u32, fd: u32) -> Option<DrmClient> {
        use std::io::Read;
        self.path.clear();
        let _ = std::fmt::Write::write_fmt(&mut self.path, format_args!("{}/{pid}/fdinfo/{fd}", self.proc_root));
        let file = std::fs::File::open(&self.path).ok()?;
        self.buf.clear();
        file.take(FDINFO_LIMIT as u64).read_to_end(&mut self.buf).ok()?;
        parse_fdinfo(&String::from_utf8_lossy(&self.buf))
    }
}

/// A descriptor's link text names a DRM device node (`/dev/dri/renderD128`,
/// `/dev/dri/card0`) or a compute accelerator's (`/dev/accel/accel0`).
pub(super) fn is_drm_node(link: &[u8]) -> bool {
    link.starts_with(b"/dev/dri/") || link.starts_with(b"/dev/accel/")
}

/// One GPU as `/sys/class/drm/cardN` describes it.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Card {
    /// `cardN`.
    pub card: String,
    /// PCI address (the name of the `device` link's target), where it is a PCI device.
    pub pci: Option<String>,
    pub driver: Option<String>,
    pub vendor: Option<u32>,
    pub device: Option<u32>,
    /// amdgpu's `product_name`.
    pub product: Option<String>,
    /// amdgpu's `gpu_busy_percent`.
    pub busy_percent: Option<f32>,
    /// amdgpu's `mem_info_vram_used` and `mem_info_vram_total`.
    pub vram_used: Option<u64>,
    pub vram_total: Option<u64>,
    /// The first hwmon `temp1_input`, in °C.
    pub temperature: Option<f32>,
    /// The `device` directory, where the figures that change are read again.
    pub dir: std::path::PathBuf,
    /// The hwmon file the temperature came from.
    pub temperature_file: Option<std::path::PathBuf>,
}

impl Card {
    /// Reads again the figures that change: busy share, VRAM in use, temperature (three
    /// small sysfs files at most).
    #[cfg(target_os = "linux")]
    pub(super) fn refresh(&mut self) {
        let read = |path: &std::path::Path| std::fs::read_to_string(path).ok().map(|s| s.trim().to_string());
        if self.busy_percent.is_some() {
            self.busy_percent = read(&self.dir.join("gpu_busy_percent"))
                .and_then(|t| t.parse::<f32>().ok())
                .map(|v| v.clamp(0.0, 100.0));
        }
        if self.vram_used.is_some() {
            self.vram_used = read(&self.dir.join("mem_info_vram_used")).and_then(|t| t.parse().ok());
        }
        if let Some(file) = &self.temperature_file {
            self.temperature = read(file).and_then(|t| t.parse::<f32>().ok()).map(|m| m / 1000.0);
        }
    }

    /// The key of its DRM clients' figures in [`DrmRead::devices`].
    pub(super) fn client_key(&self) -> Option<&str> {
        self.pci.as_deref().or(self.driver.as_deref())
    }

    /// What the dashboard calls it.
    pub(super) fn name(&self) -> String {
        if let Some(product) = &self.product {
            return product.clone();
        }
        let vendor = match self.vendor {
            Some(0x1002) => "AMD".to_string(),
            Some(0x8086) => "Intel".to_string(),
            Some(0x10de) => "NVIDIA".to_string(),
            Some(0x1af4) => "Virtio".to_string(),
            Some(0x5143) => "Qualcomm".to_string(),
            Some(v) => format!("{v:04x}"),
            None => self.driver.clone().unwrap_or_else(|| self.card.clone()),
        };
        match self.device {
            Some(d) => format!("{vendor} GPU {d:04x}"),
            None => format!("{vendor} GPU"),
        }
    }
}

/// The GPUs under `sys_root/class/drm` that programs can use: cards with a render node
/// (a display-only device such as `simpledrm` has none and is left out), and compute
/// accelerators under `class/accel`.
#[cfg(target_os = "linux")]
pub(super) fn cards(sys_root: &str) -> Vec<Card> {
    use std::fs;
    let read = |path: &std::path::Path| fs::read_to_string(path).ok().map(|s| s.trim().to_string());
    let hex = |text: Option<String>| text.and_then(|t| u32::from_str_radix(t.trim_start_matches("0x"), 16).ok());
    let mut out = Vec::new();
    for class in ["drm", "accel"] {
        let Ok(listing) = fs::read_dir(format!("{sys_root}/class/{class}")) else { continue };
        let mut names: Vec<String> = listing
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| {
                let digits = n.strip_prefix("card").or_else(|| n.strip_prefix("accel"));
                digits.is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            })
            .collect();
        names.sort();
        for name in names {
            let device = std::path::Path::new(sys_root).join("class").join(class).join(&name).join("device");
            if class == "drm" {
                let render = fs::read_dir(device.join("drm"))
                    .map(|l| l.flatten().any(|e| e.file_name().to_string_lossy().starts_with("renderD")))
                    .unwrap_or(false);
                if !render {
                    continue;
                }
            }
            let link_name = |p: std::path::PathBuf| {
                fs::read_link(p).ok().and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
            };
            let pci = link_name(device.clone()).filter(|n| n.len() == 12 && n.as_bytes()[4] == b':');
            let temperature_file = fs::read_dir(device.join("hwmon")).ok().and_then(|l| {
                let mut dirs: Vec<_> = l.flatten().map(|e| e.path().join("temp1_input")).collect();
                dirs.sort();
                dirs.into_iter().find(|f| f.exists())
            });
            let temperature = temperature_file.as_deref().and_then(read).and_then(|t| t.parse::<f32>().ok());
            out.push(Card {
                card: name.clone(),
                pci,
                driver: link_name(device.join("driver")),
                vendor: hex(read(&device.join("vendor"))),
                device: hex(read(&device.join("device"))),
                product: read(&device.join("product_name")).filter(|p| !p.is_empty() && p.len() <= 128),
                busy_percent: read(&device.join("gpu_busy_percent"))
                    .and_then(|t| t.parse::<f32>().ok())
                    .map(|v| v.clamp(0.0, 100.0)),
                vram_used: read(&device.join("mem_info_vram_used")).and_then(|t| t.parse().ok()),
                vram_total: read(&device.join("mem_info_vram_total")).and_then(|t| t.parse().ok()),
                temperature: temperature.map(|m| m / 1000.0),
                dir: device,
                temperature_file,
            });
        }
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// amdgpu of Linux 6.1: the older `drm-memory-*` keys only.
    pub const AMDGPU: &str = "pos:\t0\nflags:\t02100002\nmnt_id:\t26\nino:\t1045\ndrm-driver:\tamdgpu\n\
        drm-pdev:\t0000:03:00.0\ndrm-client-id:\t13\npasid:\t32773\ndrm-memory-vram:\t144 KiB\n\
        drm-memory-gtt: \t2048 KiB\ndrm-memory-cpu: \t0 KiB\namd-memory-visible-vram:\t0 KiB\n\
        drm-engine-gfx:\t1135408 ns\ndrm-engine-compute:\t0 ns\ndrm-engine-dec:\t0 ns\n";

    /// i915 of Linux 6.8: several video engines, memory per region.
    pub const I915: &str = "pos:\t0\nflags:\t02100002\nmnt_id:\t25\nino:\t695\ndrm-driver:\ti915\n\
        drm-client-id:\t10\ndrm-pdev:\t0000:00:02.0\ndrm-total-system0:\t7012 KiB\n\
        drm-shared-system0:\t0\ndrm-active-system0:\t0\ndrm-resident-system0:\t7012 KiB\n\
        drm-purgeable-system0:\t0\ndrm-total-stolen-system0:\t0\ndrm-resident-stolen-system0:\t0\n\
        drm-engine-render:\t25662044495 ns\ndrm-engine-copy:\t0 ns\ndrm-engine-video:\t0 ns\n\
        drm-engine-capacity-video:\t2\ndrm-engine-video-enhance:\t0 ns\n";

    /// xe: cycles instead of ns, memory in bytes without a unit for empty regions.
    pub const XE: &str = "pos:\t0\nflags:\t0100002\nmnt_id:\t26\nino:\t1092\ndrm-driver:\txe\n\
        drm-client-id:\t4\ndrm-pdev:\t0000:03:00.0\ndrm-total-system:\t0\ndrm-shared-system:\t0\n\
        drm-active-system:\t0\ndrm-resident-system:\t0\ndrm-purgeable-system:\t0\n\
        drm-total-gtt:\t192 KiB\ndrm-shared-gtt:\t0\ndrm-active-gtt:\t0\ndrm-resident-gtt:\t192 KiB\n\
        drm-total-vram0:\t23992 KiB\ndrm-shared-vram0:\t16 MiB\ndrm-active-vram0:\t0\n\
        drm-resident-vram0:\t23992 KiB\ndrm-purgeable-vram0:\t0\ndrm-cycles-rcs:\t28257900\n\
        drm-total-cycles-rcs:\t7655183225\ndrm-cycles-bcs:\t0\ndrm-total-cycles-bcs:\t7655183225\n\
        drm-cycles-vcs:\t0\ndrm-engine-capacity-vcs:\t2\ndrm-total-cycles-vcs:\t7655183225\n\
        drm-cycles-vecs:\t0\ndrm-engine-capacity-vecs:\t2\ndrm-total-cycles-vecs:\t7655183225\n\
        drm-cycles-ccs:\t0\ndrm-engine-capacity-ccs:\t4\ndrm-total-cycles-ccs:\t7655183225\n";

    /// msm (a platform device: no `drm-pdev`), with both ns and cycles for its engine.
    pub const MSM: &str = "pos:\t0\nflags:\t02400002\nmnt_id:\t24\nino:\t162\ndrm-driver:\tmsm\n\
        drm-client-id:\t6\ndrm-engine-gpu:\t2149412 ns\ndrm-cycles-gpu:\t1221312\n\
        drm-maxfreq-gpu:\t700000000 Hz\ndrm-total-memory:\t13852 KiB\ndrm-shared-memory:\t0\n\
        drm-active-memory:\t0\ndrm-resident-memory:\t13852 KiB\ndrm-purgeable-memory:\t0\n";

    #[test]
    fn amdgpu_fdinfo_reads_its_engines_and_its_gpu_memory() {
        let c = parse_fdinfo(AMDGPU).unwrap();
        assert_eq!((c.driver.as_str(), c.client_id, c.pdev.as_deref()), ("amdgpu", 13, Some("0000:03:00.0")));
        let names: Vec<&str> = c.engines.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["gfx", "compute", "dec"]);
        assert_eq!(c.engines[0].busy_ns, Some(1_135_408));
        // VRAM and GTT, not the `cpu` region.
        assert_eq!(c.memory_bytes, Some((144 + 2048) * 1024));
    }

    #[test]
    fn i915_fdinfo_reads_capacity_and_prefers_resident_memory() {
        let c = parse_fdinfo(I915).unwrap();
        assert_eq!((c.driver.as_str(), c.client_id), ("i915", 10));
        let video = c.engines.iter().find(|e| e.name == "video").unwrap();
        assert_eq!((video.busy_ns, video.capacity), (Some(0), 2));
        assert_eq!(c.engines.iter().find(|e| e.name == "render").unwrap().busy_ns, Some(25_662_044_495));
        assert_eq!(c.memory_bytes, Some(7012 * 1024));
    }

    #[test]
    fn xe_fdinfo_reads_cycles_and_sums_resident_regions() {
        let c = parse_fdinfo(XE).unwrap();
        let rcs = c.engines.iter().find(|e| e.name == "rcs").unwrap();
        assert_eq!((rcs.busy_ns, rcs.cycles, rcs.total_cycles), (None, Some(28_257_900), Some(7_655_183_225)));
        assert_eq!(c.engines.iter().find(|e| e.name == "ccs").unwrap().capacity, 4);
        assert_eq!(c.memory_bytes, Some((192 + 23992) * 1024));
    }

    #[test]
    fn msm_fdinfo_without_a_pci_device_is_still_a_client() {
        let c = parse_fdinfo(MSM).unwrap();
        assert_eq!((c.driver.as_str(), c.client_id, c.pdev), ("msm", 6, None));
        let gpu = &c.engines[0];
        assert_eq!((gpu.name.as_str(), gpu.busy_ns, gpu.cycles), ("gpu", Some(2_149_412), Some(1_221_312)));
        assert_eq!(c.memory_bytes, Some(13852 * 1024));
    }

    #[test]
    fn other_descriptors_and_broken_clients_are_not_clients() {
        assert_eq!(parse_fdinfo("pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t4\n"), None);
        assert_eq!(parse_fdinfo("drm-driver:\ti915\n"), None, "no client id");
        assert_eq!(parse_fdinfo("drm-driver:\ti915\ndrm-client-id:\tx\n"), None);
        // Units it does not know, and overflows, leave the figure out, not the client.
        let c = parse_fdinfo("drm-driver: a\ndrm-client-id: 1\ndrm-total-vram: 3 TiB\ndrm-engine-x: 5 ms\n").unwrap();
        assert_eq!((c.memory_bytes, c.engines[0].busy_ns), (None, None));
        let c = parse_fdinfo("drm-driver: a\ndrm-client-id: 1\ndrm-total-vram: 18446744073709551615 GiB\n").unwrap();
        assert_eq!(c.memory_bytes, None);
    }

    fn with(text: &str, from: &str, to: &str) -> DrmClient {
        parse_fdinfo(&text.replace(from, to)).unwrap()
    }

    #[test]
    fn shares_are_per_engine_class_and_divided_by_its_capacity() {
        let second = 1_000_000_000;
        // 250 ms of render in a second: 25 %.
        let before = parse_fdinfo(I915).unwrap();
        let after = with(I915, "25662044495 ns", "25912044495 ns");
        let shares: HashMap<&str, f32> = engine_shares(&before, &after, second).collect();
        assert_eq!(shares["render"], 25.0);
        // One second of video on a class of two engines: 50 %.
        let after = with(I915, "drm-engine-video:\t0 ns", "drm-engine-video:\t1000000000 ns");
        let shares: HashMap<&str, f32> = engine_shares(&before, &after, second).collect();
        assert_eq!(shares["video"], 50.0);
        // xe: busy cycles over all cycles.
        let before = parse_fdinfo(XE).unwrap();
        let after = with(&XE.replace("28257900", "78257900"), "7655183225", "7755183225");
        let shares: HashMap<&str, f32> = engine_shares(&before, &after, second).collect();
        assert_eq!(shares["rcs"], 50.0);
        // A counter that went back (a reused client id) is 0, never negative; more than
        // the interval is capped at 100.
        let after = with(I915, "25662044495 ns", "5 ns");
        assert_eq!(engine_shares(&before_i915(), &after, second).find(|s| s.0 == "render").unwrap().1, 0.0);
        let after = with(I915, "25662044495 ns", "35662044495 ns");
        assert_eq!(engine_shares(&before_i915(), &after, second).find(|s| s.0 == "render").unwrap().1, 100.0);
    }

    fn before_i915() -> DrmClient {
        parse_fdinfo(I915).unwrap()
    }

    #[test]
    fn drm_nodes_are_told_by_their_links() {
        assert!(is_drm_node(b"/dev/dri/renderD128"));
        assert!(is_drm_node(b"/dev/dri/card1"));
        assert!(is_drm_node(b"/dev/accel/accel0"));
        assert!(!is_drm_node(b"socket:[123]"));
        assert!(!is_drm_node(b"/dev/null"));
    }

    #[test]
    fn cards_are_named_by_product_or_vendor_and_device() {
        let card = Card { product: Some("AMD Radeon RX 7900 XTX".into()), ..Card::default() };
        assert_eq!(card.name(), "AMD Radeon RX 7900 XTX");
        let card = Card { vendor: Some(0x8086), device: Some(0x46a6), ..Card::default() };
        assert_eq!(card.name(), "Intel GPU 46a6");
    }
}

#[cfg(test)]
mod fuzz {
    use super::tests::{AMDGPU, I915, MSM, XE};
    use super::*;
    use crate::fuzzing::{config, mutated_bytes};
    use proptest::prelude::*;

    /// Whatever the text, the parser returns (no panic, no overflow) and what it returns
    /// keeps its bounds; the shares of any two readings are 0-100.
    fn check(text: &[u8], other: &[u8]) {
        let text = String::from_utf8_lossy(text);
        let Some(client) = parse_fdinfo(&text) else { return };
        assert!(client.engines.len() <= MAX_ENGINES);
        assert!(!client.driver.is_empty() && client.driver.len() <= 64);
        assert!(client.engines.iter().all(|e| e.capacity >= 1));
        if let Some(before) = parse_fdinfo(&String::from_utf8_lossy(other)) {
            for elapsed in [0, 1, 1_000_000_000, u64::MAX] {
                for (_, share) in engine_shares(&before, &client, elapsed) {
                    assert!((0.0..=100.0).contains(&share), "{share}");
                }
            }
        }
    }

    fn any_fixture() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![AMDGPU, I915, XE, MSM])
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_bytes(text in prop::collection::vec(any::<u8>(), 0..400)) {
            check(&text, I915.as_bytes());
        }

        /// Text made of the lines' own characters, keys included, where the parser goes
        /// furthest.
        #[test]
        fn any_fdinfo_like_text(
            text in "(drm-(driver|client-id|pdev|engine-[a-z]{1,3}|engine-capacity-[a-z]{1,3}|cycles-[a-z]{1,3}|total-cycles-[a-z]{1,3}|total-[a-z0-9]{1,4}|resident-[a-z0-9]{1,4}|memory-[a-z]{1,4}):[ \t]*[0-9a-zA-Z: .]{0,24}\n){0,12}",
        ) {
            check(text.as_bytes(), XE.as_bytes());
        }

        #[test]
        fn real_fdinfo_with_bytes_changed(
            (text, other) in any_fixture().prop_flat_map(|f| (mutated_bytes(f.as_bytes().to_vec()), Just(f))),
        ) {
            check(&text, other.as_bytes());
            check(other.as_bytes(), &text);
        }
    }
}
