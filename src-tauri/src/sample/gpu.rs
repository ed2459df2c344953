//! The machine's GPUs and each process's use of them, from two sources: the kernel's
//! DRM statistics for AMD, Intel and other DRM drivers (`drm.rs`, Linux) and NVML for
//! NVIDIA (`nvml.rs`, Linux and Windows).
//!
//! Most machines Procyon watches have no GPU, so that case must cost nothing: whether
//! there is a DRM GPU (a card with a render node, or an accelerator, under `/sys/class`)
//! is looked at once in [`LOOK_EVERY`] reads, and NVML is loaded once (again only after
//! [`nvml::RETRY_AFTER`] reads if it is missing). With neither, a read returns at once:
//! no process's descriptors are walked and the snapshot carries no GPU fields.
//!
//! With a GPU, each read takes the devices' figures (a few sysfs files per card, or a
//! few NVML calls per device) and the per-process figures: NVML's process lists, and the
//! fdinfo of the DRM clients that [`drm::DrmClients`] keeps track of (it walks every
//! process's descriptors only once in [`drm::WALK_EVERY`] reads, and the new processes'
//! in between). A process with figures from both sources gets the busier share and the
//! sum of the memory.

use std::collections::HashMap;
use std::time::Instant;

#[cfg(target_os = "linux")]
use super::drm;
use super::nvml;
use crate::model::{GpuSample, ProcessSample};

/// Reads between two looks for DRM GPUs (a minute at 1 s): a GPU whose driver loads
/// after the sampler started is found that late at most.
#[cfg(target_os = "linux")]
pub(super) const LOOK_EVERY: u64 = 60;

/// The GPU part of the sampler.
pub(super) struct Gpus {
    reads: u64,
    nvidia: nvml::Nvidia,
    #[cfg(target_os = "linux")]
    sys_root: String,
    /// The DRM GPUs found at the last look.
    #[cfg(target_os = "linux")]
    cards: Vec<drm::Card>,
    #[cfg(target_os = "linux")]
    clients: drm::DrmClients,
}

impl Gpus {
    pub(super) fn new() -> Gpus {
        Gpus::with_roots("/proc", "/sys")
    }

    /// Reads `proc_root` and `sys_root` instead of `/proc` and `/sys` (fixture trees).
    #[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
    pub(super) fn with_roots(proc_root: &str, sys_root: &str) -> Gpus {
        Gpus {
            reads: 0,
            nvidia: nvml::Nvidia::new(),
            #[cfg(target_os = "linux")]
            sys_root: sys_root.trim_end_matches('/').to_string(),
            #[cfg(target_os = "linux")]
            cards: Vec::new(),
            #[cfg(target_os = "linux")]
            clients: drm::DrmClients::new(proc_root),
        }
    }

    /// The GPUs now, and each process's use of them written into `processes` (this
    /// tick's, in pid order). Empty, and `processes` untouched, without a GPU.
    #[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
    pub(super) fn read(&mut self, processes: &mut [ProcessSample], now: Instant) -> Vec<GpuSample> {
        let reads = self.reads;
        self.reads += 1;
        #[cfg(target_os = "linux")]
        if reads % LOOK_EVERY == 0 {
            self.cards = drm::cards(&self.sys_root);
        }
        let nvidia = self.nvidia.present(reads);
        #[cfg(target_os = "linux")]
        let drm = !self.cards.is_empty();
        #[cfg(not(target_os = "linux"))]
        let drm = false;
        if !nvidia && !drm {
            return Vec::new();
        }

        let mut gpus = Vec::new();
        let mut per_pid: HashMap<u32, (Option<f32>, Option<u64>)> = HashMap::new();
        if nvidia {
            let read = self.nvidia.read();
            gpus = read.devices;
            per_pid = read.processes;
        }
        #[cfg(target_os = "linux")]
        if drm {
            // NVIDIA's driver gives its cards a render node but writes no client
            // statistics: with only such cards, the descriptors are not walked.
            let read = if self.cards.iter().any(|c| c.driver.as_deref() != Some("nvidia")) {
                self.clients.read(processes, now)
            } else {
                drm::DrmRead::default()
            };
            for card in &mut self.cards {
                // An NVIDIA card NVML describes already (nvidia-drm gives it a render node).
                if card.pci.as_ref().is_some_and(|pci| gpus.iter().any(|g: &GpuSample| &g.id == pci)) {
                    continue;
                }
                card.refresh();
                let from_clients = card.client_key().and_then(|k| read.devices.get(k)).copied();
                gpus.push(GpuSample {
                    id: card.pci.clone().unwrap_or_else(|| card.card.clone()),
                    name: card.name(),
                    driver: card.driver.clone(),
                    utilization_percent: card.busy_percent.or(from_clients),
                    memory_used_bytes: card.vram_used,
                    memory_total_bytes: card.vram_total,
                    temperature_celsius: card.temperature,
                });
            }
            for (pid, (share, memory)) in read.processes {
                let e = per_pid.entry(pid).or_insert((None, None));
                e.0 = match (e.0, share) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                if let Some(m) = memory {
                    e.1 = Some(e.1.unwrap_or(0).saturating_add(m));
                }
            }
        }
        for p in processes.iter_mut() {
            if let Some(&(share, memory)) = per_pid.get(&p.pid) {
                p.gpu_percent = share;
                p.gpu_memory_bytes = memory;
            }
        }
        gpus
    }
}

#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::Path;
    use std::time::Duration;

    use super::drm::tests::{AMDGPU, I915};
    use super::*;
    use crate::model::ProcessStatus;

    fn process(pid: u32) -> ProcessSample {
        ProcessSample {
            pid,
            ppid: Some(1),
            name: format!("p{pid}"),
            cmd: String::new(),
            user: None,
            status: ProcessStatus::Sleeping,
            cpu_percent: None,
            memory_percent: None,
            rss_bytes: None,
            virtual_bytes: None,
            threads: None,
            start_time: chrono::DateTime::from_timestamp(1_700_000_000 + i64::from(pid), 0),
            disk_read_bytes: None,
            disk_write_bytes: None,
            disk_read_bytes_per_sec: None,
            disk_write_bytes_per_sec: None,
            kernel_thread: false,
            container: None,
            gpu_percent: None,
            gpu_memory_bytes: None,
        }
    }

    /// A descriptor `fd` of `pid` open on `target`, with `fdinfo` as its text.
    fn open(root: &Path, pid: u32, fd: u32, target: &str, fdinfo: &str) {
        fs::create_dir_all(root.join(format!("proc/{pid}/fd"))).unwrap();
        fs::create_dir_all(root.join(format!("proc/{pid}/fdinfo"))).unwrap();
        let link = root.join(format!("proc/{pid}/fd/{fd}"));
        let _ = fs::remove_file(&link);
        symlink(target, link).unwrap();
        fs::write(root.join(format!("proc/{pid}/fdinfo/{fd}")), fdinfo).unwrap();
    }

    /// `/sys/class/drm/card0` of an Intel GPU at 0000:00:02.0 with a render node.
    fn intel_card(root: &Path) {
        let device = root.join("sys/devices/pci0000:00/0000:00:02.0");
        fs::create_dir_all(device.join("drm/renderD128")).unwrap();
        fs::create_dir_all(device.join("drm/card0")).unwrap();
        fs::create_dir_all(root.join("sys/bus/pci/drivers/i915")).unwrap();
        symlink(root.join("sys/bus/pci/drivers/i915"), device.join("driver")).unwrap();
        fs::write(device.join("vendor"), "0x8086\n").unwrap();
        fs::write(device.join("device"), "0x46a6\n").unwrap();
        fs::create_dir_all(root.join("sys/class/drm/card0")).unwrap();
        symlink(&device, root.join("sys/class/drm/card0/device")).unwrap();
        // A display-only device (simpledrm) and a connector: not GPUs.
        fs::create_dir_all(root.join("sys/class/drm/card1/device")).unwrap();
        fs::create_dir_all(root.join("sys/class/drm/card0-eDP-1")).unwrap();
    }

    fn roots(root: &Path) -> Gpus {
        let s = |p: &str| root.join(p).to_string_lossy().into_owned();
        fs::create_dir_all(root.join("proc")).unwrap();
        fs::create_dir_all(root.join("sys/class/drm")).unwrap();
        Gpus::with_roots(&s("proc"), &s("sys"))
    }

    #[test]
    fn a_drm_client_is_attributed_to_the_process_that_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        intel_card(root);
        // 20 holds the i915 client on its render node; 30 holds a file and a socket;
        // 40 inherited 20's descriptor (the same client: counted for 20 only).
        open(root, 20, 7, "/dev/dri/renderD128", I915);
        open(root, 30, 3, "/tmp/x", "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t4\n");
        open(root, 30, 4, "socket:[123]", "pos:\t0\n");
        open(root, 40, 5, "/dev/dri/renderD128", I915);
        let mut gpus = roots(root);
        let mut list: Vec<ProcessSample> = [20, 30, 40].map(process).to_vec();
        let t0 = Instant::now();
        let first = gpus.read(&mut list, t0);
        assert_eq!(first.len(), 1, "{first:?}");
        assert_eq!((first[0].id.as_str(), first[0].name.as_str()), ("0000:00:02.0", "Intel GPU 46a6"));
        assert_eq!(first[0].driver.as_deref(), Some("i915"));
        // One read: memory is known, the share needs a second read.
        assert_eq!((list[0].gpu_percent, list[0].gpu_memory_bytes), (None, Some(7012 * 1024)));

        // A second later, 400 ms more render time.
        open(root, 20, 7, "/dev/dri/renderD128", &I915.replace("25662044495 ns", "26062044495 ns"));
        open(root, 40, 5, "/dev/dri/renderD128", &I915.replace("25662044495 ns", "26062044495 ns"));
        let mut list: Vec<ProcessSample> = [20, 30, 40].map(process).to_vec();
        let second = gpus.read(&mut list, t0 + Duration::from_secs(1));
        assert_eq!(list[0].gpu_percent, Some(40.0));
        assert_eq!(list[0].gpu_memory_bytes, Some(7012 * 1024));
        assert_eq!((list[1].gpu_percent, list[1].gpu_memory_bytes), (None, None), "no GPU descriptor");
        assert_eq!((list[2].gpu_percent, list[2].gpu_memory_bytes), (None, None), "the same client, counted once");
        // i915 says nothing of its own busy share: the clients' sum stands in.
        assert_eq!(second[0].utilization_percent, Some(40.0));
    }

    #[test]
    fn a_process_that_starts_using_the_gpu_is_seen_and_a_closed_client_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        intel_card(root);
        let mut gpus = roots(root);
        let t0 = Instant::now();
        let mut list = vec![process(50)];
        gpus.read(&mut list, t0);
        assert_eq!(list[0].gpu_memory_bytes, None);
        // A new process with an amdgpu client (seen at its first read, not at the
        // next full walk).
        open(root, 60, 9, "/dev/dri/renderD128", AMDGPU);
        let mut list = vec![process(50), process(60)];
        gpus.read(&mut list, t0 + Duration::from_secs(1));
        assert_eq!(list[1].gpu_memory_bytes, Some((144 + 2048) * 1024));
        // It closes it: the descriptor is something else now.
        open(root, 60, 9, "/tmp/y", "pos:\t0\n");
        let mut list = vec![process(50), process(60)];
        gpus.read(&mut list, t0 + Duration::from_secs(2));
        assert_eq!(list[1].gpu_memory_bytes, None);
    }

    #[test]
    fn a_known_process_that_opens_the_gpu_later_is_found_when_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        intel_card(root);
        let mut gpus = roots(root);
        let t0 = Instant::now();
        let idle = |pid| ProcessSample { cpu_percent: Some(0.0), ..process(pid) };
        let read = |gpus: &mut Gpus, list: &mut Vec<ProcessSample>, n: u64| {
            for i in 0..n {
                gpus.read(list, t0 + Duration::from_secs(i));
            }
        };
        let mut list = vec![idle(80), idle(90)];
        read(&mut gpus, &mut list, 1);
        // Both open a client; neither is new, so neither is walked at once.
        open(root, 80, 3, "/dev/dri/renderD128", I915);
        open(root, 90, 3, "/dev/dri/renderD128", &I915.replace("drm-client-id:\t10", "drm-client-id:\t11"));
        read(&mut gpus, &mut list, 1);
        assert_eq!((list[0].gpu_memory_bytes, list[1].gpu_memory_bytes), (None, None));
        // 80 runs: it is found at the next walk of those that ran; 90 stays idle.
        let mut list = vec![ProcessSample { cpu_percent: Some(3.0), ..process(80) }, idle(90)];
        read(&mut gpus, &mut list, drm::WALK_EVERY);
        assert_eq!((list[0].gpu_memory_bytes, list[1].gpu_memory_bytes), (Some(7012 * 1024), None));
        // 90, idle as far as the CPU figures tell, is found at the walk of every process.
        read(&mut gpus, &mut list, drm::FULL_WALK_EVERY);
        assert_eq!(list[1].gpu_memory_bytes, Some(7012 * 1024));
    }

    /// What the GPU part costs per tick, measured side by side with a whole tick of the
    /// sampler in one run: on this machine as it is, and with
    /// a GPU listed under a fixture `/sys`, so that every real process's descriptors are
    /// walked as they would be on a machine with a GPU (the per-client fdinfo reads come
    /// on top: one small file per client). A measurement, not a check:
    /// `cargo test --lib gpu::tests::cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn cost() {
        // Elapsed time of this thread's work: all of it is on this thread, in system calls
        // that do not wait (the thread's CPU counters are too coarse for a microsecond).
        // On a busy machine, an upper bound.
        fn per_tick(ticks: u32, mut f: impl FnMut()) -> Duration {
            let start = Instant::now();
            for _ in 0..ticks {
                f();
            }
            start.elapsed() / ticks
        }
        const TICKS: u32 = 300;
        // A whole tick sleeps (the CPU figures need an interval): its CPU time, from the
        // scheduler's count, which is exact across sleeps.
        fn cpu() -> Duration {
            let text = fs::read_to_string("/proc/thread-self/schedstat").unwrap();
            Duration::from_nanos(text.split_whitespace().next().unwrap().parse().unwrap())
        }
        let mut sampler = super::super::Sampler::new(Default::default());
        let processes = sampler.sample().processes;
        let start = cpu();
        for _ in 0..30 {
            drop(sampler.sample());
        }
        let whole = (cpu() - start) / 30;

        let mut none = Gpus::new();
        let first = per_tick(1, || drop(none.read(&mut processes.clone(), Instant::now())));
        let mut list = processes.clone();
        let without = per_tick(TICKS, || drop(none.read(&mut list, Instant::now())));

        let dir = tempfile::tempdir().unwrap();
        intel_card(dir.path());
        let sys = dir.path().join("sys").to_string_lossy().into_owned();
        let mut with = Gpus::with_roots("/proc", &sys);
        let walk = per_tick(1, || drop(with.read(&mut list, Instant::now())));
        let with_gpu = per_tick(drm::FULL_WALK_EVERY as u32, || drop(with.read(&mut list, Instant::now())));
        println!(
            "{} processes; whole sampler tick {whole:?} of CPU; GPU part without a GPU: {without:?} a tick \
             (first read, NVML's load tried: {first:?}); with a GPU: {with_gpu:?} a tick over {} ticks \
             (a walk of every process's descriptors: {walk:?}, once in {} ticks; of those that ran, \
             once in {})",
            processes.len(),
            drm::FULL_WALK_EVERY,
            drm::FULL_WALK_EVERY,
            drm::WALK_EVERY,
        );
    }

    #[test]
    fn without_a_gpu_nothing_is_read_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // A GPU descriptor in a process, but no GPU under /sys (only a display-only
        // card): the descriptors are not even walked.
        fs::create_dir_all(root.join("sys/class/drm/card0/device")).unwrap();
        open(root, 20, 7, "/dev/dri/renderD128", I915);
        let mut gpus = roots(root);
        let mut list = vec![process(20)];
        if gpus.nvidia.present(0) {
            return; // an NVIDIA machine: not this test's case
        }
        let found = gpus.read(&mut list, Instant::now());
        assert!(found.is_empty());
        assert_eq!((list[0].gpu_percent, list[0].gpu_memory_bytes), (None, None));
    }
}
