//! Filesystems and disk I/O: Linux's mount table (`/proc/self/mountinfo`) with
//! `statvfs` for sizes, and `/proc/diskstats` for I/O.
//!
//! The parsers are pure functions over the files' text ([`mounts`], [`diskstats`]),
//! tested on fixture files and fuzzed, since the text comes from outside this process
//! (a mount point is any path a user could mount on). Reading the files and calling
//! `statvfs` is [`Storage`]'s, on Linux. Elsewhere sysinfo lists the filesystems
//! ([`portable_filesystems`], checked against the Linux reader in the tests) and disk
//! I/O stays absent.
//!
//! Cost (measured by `examples/hostdepth_cost.rs`, see the README): the mount table and
//! one `statvfs` per kept mount are read every [`FILESYSTEMS_EVERY`], not each tick;
//! `/proc/diskstats` is one small file read each tick, since its rates are per interval.

use std::collections::HashMap;
use std::time::Duration;
#[cfg(target_os = "linux")]
use std::time::Instant;

use crate::model::DiskSample;
#[cfg(target_os = "linux")]
use crate::model::FilesystemSample;

/// How often the filesystems are read again (sizes move slowly; `statvfs` on many
/// mounts is the costly part). Between two readings the last one is carried over.
pub const FILESYSTEMS_EVERY: Duration = Duration::from_secs(10);

/// Most filesystems and disks kept (a host with thousands of mounts shows the first).
pub const MAX_ENTRIES: usize = 256;

/// One line of the mount table, unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the mounted device (unique per filesystem, also for pseudo ones).
    pub device_id: String,
    /// The directory of the filesystem that is mounted here (`/` unless a bind mount of
    /// a part of it).
    pub root: String,
    /// Where it is mounted.
    pub mount_point: String,
    /// Filesystem type.
    pub fs_type: String,
    /// What is mounted (a device path, a server's export, or a name).
    pub source: String,
}

/// Filesystem types that hold no files of their own on a disk: kernel interfaces,
/// memory-backed runtime mounts, and read-only images that are always full by design
/// (squashfs of snaps). `tmpfs` is here: `/run`, `/dev/shm` and `/run/user/N` are
/// memory, shown by the memory card already.
const PSEUDO: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
    "fuse.gvfsd-fuse",
    "fuse.portal",
    "fuse.lxcfs",
    "fuse.snapfuse",
];

/// The mounts of a `/proc/PID/mountinfo` text worth showing, in the table's order.
///
/// The rule: a mount is left out when
/// 1. its type is a pseudo filesystem ([`PSEUDO`]: proc, sysfs, tmpfs and the like);
/// 2. it is an `overlay` anywhere but `/` (container runtimes mount one per container,
///    each a view of the same disk; inside a container, `/` is the overlay to watch);
/// 3. its device was already kept at another mount point (a bind mount, or the same
///    filesystem mounted twice: one device is one row). Of the mounts of one device the
///    one that mounts its root (`/`) is kept, the shortest mount point among those.
///
/// Lines that do not parse are skipped. At most [`MAX_ENTRIES`] are kept.
pub fn mounts(text: &str) -> Vec<Mount> {
    let mut kept: Vec<Mount> = Vec::new();
    let mut by_device: HashMap<String, usize> = HashMap::new();
    for line in text.lines() {
        let Some(m) = mount_line(line) else { continue };
        if PSEUDO.contains(&m.fs_type.as_str()) || (m.fs_type == "overlay" && m.mount_point != "/") {
            continue;
        }
        match by_device.get(&m.device_id) {
            Some(&i) => {
                let old = &kept[i];
                let better = (m.root == "/" && old.root != "/")
                    || (m.root == old.root && m.mount_point.len() < old.mount_point.len());
                if better {
                    kept[i] = m;
                }
            }
            None if kept.len() < MAX_ENTRIES => {
                by_device.insert(m.device_id.clone(), kept.len());
                kept.push(m);
            }
            None => {}
        }
    }
    kept
}

/// One mountinfo line: `36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw`
/// (`proc(5)`): fields 3 to 5, then after the `-` separator the type and the source.
fn mount_line(line: &str) -> Option<Mount> {
    let (before, after) = line.split_once(" - ")?;
    let mut left = before.split(' ');
    let _id = left.next()?;
    let _parent = left.next()?;
    let device_id = left.next()?;
    let root = left.next()?;
    let mount_point = left.next()?;
    let mut right = after.split(' ');
    let fs_type = right.next()?;
    let source = right.next().unwrap_or("");
    if !device_id.contains(':') || !mount_point.starts_with('/') || fs_type.is_empty() {
        return None;
    }
    Some(Mount {
        device_id: device_id.to_owned(),
        root: unescape(root),
        mount_point: unescape(mount_point),
        fs_type: unescape(fs_type),
        source: unescape(source),
    })
}

/// Undoes the kernel's octal escapes of space, tab, newline and backslash (`\040`,
/// `\011`, `\012`, `\134`); any other backslash is kept as it is.
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = u32::from(bytes[i + 1] - b'0') * 64
                + u32::from(bytes[i + 2] - b'0') * 8
                + u32::from(bytes[i + 3] - b'0');
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Counters of one disk since boot, from `/proc/diskstats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskCounters {
    /// Reads completed.
    pub reads: u64,
    /// Sectors read (always 512 bytes, whatever the disk's own sector size).
    pub read_sectors: u64,
    /// Writes completed.
    pub writes: u64,
    /// Sectors written.
    pub write_sectors: u64,
    /// Milliseconds with I/O in flight.
    pub io_ms: u64,
}

/// Whether a `/proc/diskstats` name is a whole disk worth showing. Left out, by name
/// (node_exporter's rule, plus MMC and zram): memory disks (`ram0`, `zram0`), loop
/// devices (`loop3`), floppies (`fd0`) and partitions (`sda1`, `vdb2`, `xvda1`,
/// `hdc3`, `nvme0n1p2`, `mmcblk0p1`), whose I/O is already their disk's. Device-mapper
/// (`dm-0`) and software RAID (`md0`) devices are kept: they are what filesystems sit on.
pub fn is_whole_disk(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let letters_then_digits = |s: &str, prefix_len_ok: &dyn Fn(&str) -> bool| {
        let cut = s.find(|c: char| c.is_ascii_digit()).unwrap_or(s.len());
        let (head, tail) = s.split_at(cut);
        prefix_len_ok(head) && digits(tail)
    };
    if name.is_empty() {
        return false;
    }
    for prefix in ["ram", "zram", "loop", "fd"] {
        if name.strip_prefix(prefix).is_some_and(digits) {
            return false;
        }
    }
    // sda1, vdb2, xvda1, hdc3: a disk name of letters followed by a partition number.
    for prefix in ["sd", "vd", "xvd", "hd"] {
        if let Some(rest) = name.strip_prefix(prefix)
            && letters_then_digits(rest, &|h: &str| !h.is_empty() && h.bytes().all(|b| b.is_ascii_lowercase()))
        {
            return false;
        }
    }
    // nvme0n1p2, mmcblk0p1: the partition after a `p`.
    for prefix in ["nvme", "mmcblk"] {
        if name.starts_with(prefix)
            && let Some((_, part)) = name.rsplit_once('p')
            && digits(part)
        {
            return false;
        }
    }
    true
}

/// The whole disks of a `/proc/diskstats` text ([`is_whole_disk`]) with their
/// counters, in the file's order. Lines that do not parse, and disks that have never
/// done any I/O (empty slots such as unused `nbd` devices), are skipped. At most
/// [`MAX_ENTRIES`].
pub fn diskstats(text: &str) -> Vec<(String, DiskCounters)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(_major), Some(_minor), Some(name)) = (f.next(), f.next(), f.next()) else { continue };
        let n: Vec<u64> = f.take(10).map_while(|v| v.parse().ok()).collect();
        if n.len() < 10 || !is_whole_disk(name) {
            continue;
        }
        // Fields after the name (Documentation/admin-guide/iostats.rst): reads, reads
        // merged, sectors read, ms reading, writes, writes merged, sectors written, ms
        // writing, I/Os in flight, ms doing I/O.
        let c = DiskCounters { reads: n[0], read_sectors: n[2], writes: n[4], write_sectors: n[6], io_ms: n[9] };
        if c == DiskCounters::default() {
            continue;
        }
        out.push((name.to_owned(), c));
        if out.len() >= MAX_ENTRIES {
            break;
        }
    }
    out
}

/// Rates between two readings `secs` apart: a disk must be in both; counters that went
/// backwards (a device replaced under the same name) give no row this time.
pub fn disk_rates(before: &[(String, DiskCounters)], now: &[(String, DiskCounters)], secs: f64) -> Vec<DiskSample> {
    if secs.is_nan() || secs <= 0.0 {
        return Vec::new();
    }
    let before: HashMap<&str, &DiskCounters> = before.iter().map(|(n, c)| (n.as_str(), c)).collect();
    now.iter()
        .filter_map(|(name, c)| {
            let b = before.get(name.as_str())?;
            let d = |now: u64, then: u64| now.checked_sub(then).map(|v| v as f64);
            Some(DiskSample {
                name: name.clone(),
                read_bytes_per_sec: d(c.read_sectors, b.read_sectors)? * 512.0 / secs,
                write_bytes_per_sec: d(c.write_sectors, b.write_sectors)? * 512.0 / secs,
                reads_per_sec: d(c.reads, b.reads)? / secs,
                writes_per_sec: d(c.writes, b.writes)? / secs,
                busy_percent: (d(c.io_ms, b.io_ms)? / (secs * 10.0)).min(100.0),
            })
        })
        .collect()
}

/// The filesystems and disks of this machine, read at their own cadences.
#[cfg(target_os = "linux")]
pub(super) struct Storage {
    filesystems: Option<Vec<FilesystemSample>>,
    read_at: Option<Instant>,
    disks: Option<Vec<(String, DiskCounters)>>,
}

#[cfg(target_os = "linux")]
impl Storage {
    /// Takes the first disk counters, which the first rates are measured against.
    pub fn new() -> Storage {
        let disks = std::fs::read_to_string("/proc/diskstats").ok().map(|t| diskstats(&t));
        Storage { filesystems: None, read_at: None, disks }
    }

    /// The filesystems: read again when [`FILESYSTEMS_EVERY`] has passed, else the
    /// last reading. `None` when the mount table cannot be read.
    pub fn filesystems(&mut self) -> Option<Vec<FilesystemSample>> {
        if self.read_at.is_none_or(|at| at.elapsed() >= FILESYSTEMS_EVERY) {
            self.read_at = Some(Instant::now());
            self.filesystems = read_filesystems(std::path::Path::new("/proc/self/mountinfo"));
        }
        self.filesystems.clone()
    }

    /// Disk rates since the previous call, `secs` ago. `None` when `/proc/diskstats`
    /// cannot be read.
    pub fn disks(&mut self, secs: f64) -> Option<Vec<DiskSample>> {
        let now = diskstats(&std::fs::read_to_string("/proc/diskstats").ok()?);
        let rates = self.disks.as_ref().map(|before| disk_rates(before, &now, secs));
        self.disks = Some(now);
        // The first reading after start has nothing to compare with: no rates yet,
        // rather than zeros that look measured.
        rates
    }
}

/// Mount table at `path`, each kept mount's size from `statvfs`. A mount whose
/// `statvfs` fails (gone since, or not ours to look at) or that has no size is left
/// out.
#[cfg(target_os = "linux")]
pub fn read_filesystems(path: &std::path::Path) -> Option<Vec<FilesystemSample>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        mounts(&text)
            .into_iter()
            .filter_map(|m| {
                let st = nix::sys::statvfs::statvfs(m.mount_point.as_str()).ok()?;
                let unit = st.fragment_size() as u64;
                let total = (st.blocks() as u64).saturating_mul(unit);
                if total == 0 {
                    return None;
                }
                let free_all = (st.blocks_free() as u64).saturating_mul(unit);
                let inodes = st.files() as u64;
                Some(FilesystemSample {
                    mount_point: m.mount_point,
                    fs_type: m.fs_type,
                    device: m.source,
                    total_bytes: total,
                    used_bytes: total.saturating_sub(free_all),
                    free_bytes: (st.blocks_available() as u64).saturating_mul(unit),
                    inodes_total: (inodes > 0).then_some(inodes),
                    inodes_free: (inodes > 0).then_some(st.files_free() as u64),
                })
            })
            .collect(),
    )
}

/// Filesystems through sysinfo, on the OSes without a reader of their own: size and
/// space free to users, no inodes (sysinfo has none); used is size minus free, so space
/// reserved for the administrator counts as used. Pseudo types are left out as on Linux,
/// and a mount point is listed once.
#[cfg(any(not(target_os = "linux"), test))]
pub(super) fn portable_filesystems(disks: &mut sysinfo::Disks) -> Vec<crate::model::FilesystemSample> {
    disks.refresh(true);
    let mut seen = std::collections::HashSet::new();
    disks
        .iter()
        .filter_map(|d| {
            let fs_type = d.file_system().to_string_lossy().into_owned();
            let total = d.total_space();
            let mount_point = d.mount_point().to_string_lossy().into_owned();
            if PSEUDO.contains(&fs_type.as_str()) || total == 0 || !seen.insert(mount_point.clone()) {
                return None;
            }
            let free = d.available_space().min(total);
            Some(crate::model::FilesystemSample {
                mount_point,
                fs_type,
                device: d.name().to_string_lossy().into_owned(),
                total_bytes: total,
                used_bytes: total - free,
                free_bytes: free,
                inodes_total: None,
                inodes_free: None,
            })
        })
        .take(MAX_ENTRIES)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = include_str!("../../../tests/fixtures/host/mountinfo");
    const DISKSTATS: &str = include_str!("../../../tests/fixtures/host/diskstats");

    #[test]
    fn pseudo_overlay_and_duplicate_mounts_are_left_out() {
        let kept: Vec<(String, String)> = mounts(MOUNTINFO).into_iter().map(|m| (m.mount_point, m.fs_type)).collect();
        let want =
            [("/", "ext4"), ("/boot/efi", "vfat"), ("/home", "btrfs"), ("/mnt/my disk", "xfs"), ("/srv/nfs", "nfs4")];
        let want: Vec<(String, String)> = want.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        assert_eq!(kept, want);
        let root = mounts(MOUNTINFO).into_iter().next().unwrap();
        assert_eq!(root.source, "/dev/nvme0n1p2");
    }

    #[test]
    fn a_container_keeps_its_overlay_root() {
        let text = "500 400 0:52 / / rw,relatime - overlay overlay rw,lowerdir=/a,upperdir=/b\n\
                    501 500 0:53 / /proc rw - proc proc rw\n\
                    502 500 259:2 /var/lib/docker/volumes/x /data rw - ext4 /dev/nvme0n1p2 rw\n";
        let kept: Vec<String> = mounts(text).into_iter().map(|m| m.mount_point).collect();
        assert_eq!(kept, ["/", "/data"]);
    }

    #[test]
    fn escapes_are_undone_and_bad_lines_skipped() {
        assert_eq!(unescape("/mnt/a\\040b\\134c"), "/mnt/a b\\c");
        assert_eq!(unescape("/x\\9"), "/x\\9");
        assert_eq!(unescape("/x\\"), "/x\\");
        assert!(mounts("garbage\n1 2 3\n36 35 98:0 / relative rw - ext4 /dev/x rw\n").is_empty());
    }

    #[test]
    fn whole_disks_by_name() {
        for name in ["sda", "vdb", "xvda", "nvme0n1", "mmcblk0", "dm-0", "md127", "sdaa"] {
            assert!(is_whole_disk(name), "{name}");
        }
        for name in ["sda1", "vdb12", "xvda1", "nvme0n1p2", "mmcblk0p1", "loop0", "ram15", "zram0", "fd0", ""] {
            assert!(!is_whole_disk(name), "{name}");
        }
    }

    #[test]
    fn diskstats_gives_whole_disks_and_their_rates() {
        let before = diskstats(DISKSTATS);
        let names: Vec<&str> = before.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["nvme0n1", "sda", "dm-0"]);
        assert_eq!(
            before[0].1,
            DiskCounters {
                reads: 392_417,
                read_sectors: 21_810_466,
                writes: 1_091_021,
                write_sectors: 53_210_904,
                io_ms: 611_540
            }
        );
        let mut after = before.clone();
        after[0].1.reads += 100;
        after[0].1.read_sectors += 2048; // 1 MiB
        after[0].1.writes += 50;
        after[0].1.write_sectors += 4096;
        after[0].1.io_ms += 250;
        after[1].1.io_ms += 5000; // more than the interval: capped
        let rates = disk_rates(&before, &after, 2.0);
        assert_eq!(rates.len(), 3);
        let r = &rates[0];
        assert_eq!(
            (r.reads_per_sec, r.read_bytes_per_sec, r.writes_per_sec, r.write_bytes_per_sec, r.busy_percent),
            (50.0, 524_288.0, 25.0, 1_048_576.0, 12.5)
        );
        assert_eq!(rates[1].busy_percent, 100.0);
        assert_eq!(rates[2].read_bytes_per_sec, 0.0);
        // Counters that went backwards give no row; nor does a zero interval.
        assert_eq!(disk_rates(&after, &before, 2.0).len(), 1);
        assert!(disk_rates(&before, &after, 0.0).is_empty());
    }

    /// The general reading (sysinfo, used on other OSes) finds the same root
    /// filesystem, of the same size, as the Linux reader.
    #[cfg(target_os = "linux")]
    #[test]
    fn sysinfo_agrees_on_the_root_filesystem() {
        let ours = read_filesystems(std::path::Path::new("/proc/self/mountinfo")).unwrap();
        let mut disks = sysinfo::Disks::new_with_refreshed_list().unwrap();
        let general = portable_filesystems(&mut disks);
        let root = |list: &[crate::model::FilesystemSample]| list.iter().find(|f| f.mount_point == "/").cloned();
        let (a, b) = (root(&ours).unwrap(), root(&general).expect("sysinfo lists /"));
        assert_eq!((a.total_bytes, &a.fs_type), (b.total_bytes, &b.fs_type));
        assert!(general.iter().all(|f| f.fs_type != "proc" && f.fs_type != "tmpfs"), "{general:?}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_machine_s_root_filesystem_is_read() {
        let fs = read_filesystems(std::path::Path::new("/proc/self/mountinfo")).unwrap();
        let root = fs.iter().find(|f| f.mount_point == "/").expect("a root filesystem");
        assert!(root.total_bytes > 0 && root.used_bytes <= root.total_bytes, "{root:?}");
        assert!(fs.iter().all(|f| f.fs_type != "proc" && f.fs_type != "tmpfs"), "{fs:?}");
    }
}

/// Fuzz targets: any mount table or diskstats text gives mounts and disks that keep
/// the rule (absolute mount points, no pseudo types, one row per device), never a panic.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzzing::{config, mutated_bytes};
    use proptest::prelude::*;

    fn mountinfo_line() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,120}",
            (
                "[0-9]{1,3}",
                "[0-9]{1,3}:[0-9]{1,3}",
                "(/|/[a-z\\\\0-7]{1,12})",
                "(/|/[a-z\\\\0-7 ]{1,12})",
                "(ext4|tmpfs|overlay|proc|xfs|\\PC{0,6})",
                "\\PC{0,12}"
            )
                .prop_map(|(id, dev, root, at, ty, src)| format!(
                    "{id} 1 {dev} {root} {at} rw shared:1 - {ty} {src} rw"
                )),
        ]
    }

    fn diskstats_line() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,120}",
            ("(sd[a-c][0-9]?|nvme0n1(p1)?|loop[0-9]|dm-0|\\PC{0,8})", prop::collection::vec(any::<u64>(), 0..18))
                .prop_map(|(name, n)| {
                    let nums: Vec<String> = n.iter().map(u64::to_string).collect();
                    format!("   8  0 {name} {}", nums.join(" "))
                }),
        ]
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_mountinfo(lines in prop::collection::vec(mountinfo_line(), 0..20)) {
            let kept = mounts(&lines.join("\n"));
            let mut devices = std::collections::HashSet::new();
            for m in &kept {
                prop_assert!(m.mount_point.starts_with('/'));
                prop_assert!(!PSEUDO.contains(&m.fs_type.as_str()));
                prop_assert!(m.fs_type != "overlay" || m.mount_point == "/");
                prop_assert!(devices.insert(m.device_id.clone()), "{} twice", m.device_id);
            }
        }

        #[test]
        fn fixture_files_with_bytes_changed(
            mountinfo in mutated_bytes(include_bytes!("../../../tests/fixtures/host/mountinfo").to_vec()),
            stats in mutated_bytes(include_bytes!("../../../tests/fixtures/host/diskstats").to_vec()),
        ) {
            for m in mounts(&String::from_utf8_lossy(&mountinfo)) {
                prop_assert!(m.mount_point.starts_with('/') && !PSEUDO.contains(&m.fs_type.as_str()));
            }
            let disks = diskstats(&String::from_utf8_lossy(&stats));
            prop_assert!(disks.iter().all(|(name, _)| is_whole_disk(name)));
        }

        #[test]
        fn any_diskstats(a in prop::collection::vec(diskstats_line(), 0..10), b in prop::collection::vec(diskstats_line(), 0..10), secs in 0.0f64..10.0) {
            let (a, b) = (diskstats(&a.join("\n")), diskstats(&b.join("\n")));
            for d in disk_rates(&a, &b, secs) {
                prop_assert!(is_whole_disk(&d.name));
                prop_assert!(d.busy_percent >= 0.0 && d.busy_percent <= 100.0);
                prop_assert!(d.read_bytes_per_sec >= 0.0 && d.writes_per_sec >= 0.0);
            }
        }
    }
}
