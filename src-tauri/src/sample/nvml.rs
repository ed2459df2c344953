//! NVIDIA GPUs through NVML (`libnvidia-ml.so.1`, `nvml.dll`), which the NVIDIA driver
//! installs; nvml-wrapper loads it at run time, so Procyon builds and runs without it.
//!
//! Per device: name, busy share (`nvmlDeviceGetUtilizationRates`), memory used and in all,
//! temperature. Per process: memory from the running compute and graphics process lists,
//! and its busy share from the driver's per-process samples
//! (`nvmlDeviceGetProcessUtilization`) since the previous read: the highest of its SM,
//! encoder and decoder shares, as for DRM's busiest engine class.
//!
//! Where the library is missing (no NVIDIA driver, the usual case), loading it fails once
//! and it is tried again only after [`RETRY_AFTER`] reads, so a machine without an NVIDIA
//! GPU pays nothing per tick. Only [`Nvidia::read`] touches the library; what it returns
//! is mapped to our types by plain functions ([`device_sample`], [`merge_processes`]),
//! tested on plain values.

use std::collections::HashMap;

use crate::model::GpuSample;

/// Reads of the sampler between two tries to load a missing library (an hour at 1 s: a
/// driver installed later is found without a restart, at the cost of one `dlopen`).
pub(super) const RETRY_AFTER: u64 = 3600;

/// What one device said, as plain values.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct DeviceReading {
    pub index: u32,
    /// PCI bus id as NVML writes it (`00000000:01:00.0`).
    pub bus_id: Option<String>,
    pub name: Option<String>,
    pub busy_percent: Option<u32>,
    pub memory_used: Option<u64>,
    pub memory_total: Option<u64>,
    pub temperature: Option<u32>,
}

/// NVML's bus id in the kernel's form (`0000:01:00.0`), as DRM and sysfs write it, so
/// that a GPU both see is listed once.
pub(super) fn pci_address(bus_id: &str) -> Option<String> {
    let bus_id = bus_id.trim().to_ascii_lowercase();
    let (domain, rest) = bus_id.split_once(':')?;
    let domain = u32::from_str_radix(domain, 16).ok()?;
    (rest.len() == 7).then(|| format!("{domain:04x}:{rest}"))
}

/// A device's figures in the snapshot's terms.
pub(super) fn device_sample(d: &DeviceReading) -> GpuSample {
    let id = d.bus_id.as_deref().and_then(pci_address).unwrap_or_else(|| format!("nvml{}", d.index));
    GpuSample {
        id,
        name: d.name.clone().filter(|n| !n.trim().is_empty()).unwrap_or_else(|| "NVIDIA GPU".into()),
        driver: Some("nvidia".into()),
        utilization_percent: d.busy_percent.map(|p| p.min(100) as f32),
        memory_used_bytes: d.memory_used,
        memory_total_bytes: d.memory_total,
        temperature_celsius: d.temperature.map(|t| t as f32),
    }
}

/// One process on one device: memory from the process lists (`None` where the driver
/// cannot tell, as under Windows' WDDM), and utilisation samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum ProcessReading {
    /// From the compute or graphics process list.
    Memory { pid: u32, bytes: Option<u64> },
    /// One sample of `nvmlDeviceGetProcessUtilization`: SM, encoder and decoder shares.
    Busy { pid: u32, sm: u32, enc: u32, dec: u32 },
}

/// Per pid, over all devices: the busiest share of any sample (0-100) and the memory on
/// all devices. A process listed in both the compute and the graphics list of one device
/// is one process there: its memory is counted once (the larger figure).
pub(super) fn merge_processes(devices: &[Vec<ProcessReading>]) -> HashMap<u32, (Option<f32>, Option<u64>)> {
    let mut out: HashMap<u32, (Option<f32>, Option<u64>)> = HashMap::new();
    for readings in devices {
        let mut memory: HashMap<u32, Option<u64>> = HashMap::new();
        for r in readings {
            match *r {
                ProcessReading::Memory { pid, bytes } => {
                    let m = memory.entry(pid).or_insert(None);
                    if let Some(b) = bytes {
                        *m = Some(m.map_or(b, |was| was.max(b)));
                    }
                    out.entry(pid).or_insert((None, None));
                }
                ProcessReading::Busy { pid, sm, enc, dec } => {
                    let share = sm.max(enc).max(dec).min(100) as f32;
                    let e = out.entry(pid).or_insert((None, None));
                    e.0 = Some(e.0.map_or(share, |s| s.max(share)));
                }
            }
        }
        for (pid, bytes) in memory {
            if let (Some(b), Some(e)) = (bytes, out.get_mut(&pid)) {
                e.1 = Some(e.1.unwrap_or(0).saturating_add(b));
            }
        }
    }
    // A process on the GPU without a sample since the last read was idle.
    for e in out.values_mut() {
        e.0.get_or_insert(0.0);
    }
    out
}

/// The library, loaded or not, and the last sample time seen per device.
pub(super) struct Nvidia {
    state: State,
    /// Per device, NVML's timestamp (µs) of the newest process sample read.
    last_seen: HashMap<u32, u64>,
}

enum State {
    Untried,
    Missing { since: u64 },
    Loaded(Box<nvml_wrapper::Nvml>),
}

/// What [`Nvidia::read`] found.
#[derive(Default)]
pub(super) struct NvidiaRead {
    pub devices: Vec<GpuSample>,
    pub processes: HashMap<u32, (Option<f32>, Option<u64>)>,
}

impl Nvidia {
    pub(super) fn new() -> Nvidia {
        Nvidia { state: State::Untried, last_seen: HashMap::new() }
    }

    /// Whether the library is loaded and has at least one device.
    pub(super) fn present(&mut self, reads: u64) -> bool {
        let retry = match self.state {
            State::Untried => true,
            State::Missing { since } => reads.saturating_sub(since) >= RETRY_AFTER,
            State::Loaded(_) => false,
        };
        if retry {
            self.state = match nvml_wrapper::Nvml::init() {
                Ok(nvml) if nvml.device_count().is_ok_and(|n| n > 0) => State::Loaded(Box::new(nvml)),
                Ok(_) => State::Missing { since: reads },
                Err(e) => {
                    tracing::debug!("no NVIDIA GPU: {e}");
                    State::Missing { since: reads }
                }
            };
        }
        matches!(self.state, State::Loaded(_))
    }

    /// Reads every device and its processes. A device that fails a call leaves that
    /// figure out, never the read.
    pub(super) fn read(&mut self) -> NvidiaRead {
        use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
        use nvml_wrapper::enums::device::UsedGpuMemory;
        let State::Loaded(nvml) = &self.state else { return NvidiaRead::default() };
        let count = nvml.device_count().unwrap_or(0);
        let mut devices = Vec::new();
        let mut per_device = Vec::new();
        for index in 0..count {
            let Ok(device) = nvml.device_by_index(index) else { continue };
            let memory = device.memory_info().ok();
            devices.push(device_sample(&DeviceReading {
                index,
                bus_id: device.pci_info().ok().map(|p| p.bus_id),
                name: device.name().ok(),
                busy_percent: device.utilization_rates().ok().map(|u| u.gpu),
                memory_used: memory.as_ref().map(|m| m.used),
                memory_total: memory.as_ref().map(|m| m.total),
                temperature: device.temperature(TemperatureSensor::Gpu).ok(),
            }));
            let mut readings = Vec::new();
            let lists = [device.running_compute_processes(), device.running_graphics_processes()];
            for p in lists.into_iter().flatten().flatten() {
                let bytes = match p.used_gpu_memory {
                    UsedGpuMemory::Used(b) => Some(b),
                    UsedGpuMemory::Unavailable => None,
                };
                readings.push(ProcessReading::Memory { pid: p.pid, bytes });
            }
            let since = self.last_seen.get(&index).copied();
            if let Ok(samples) = device.process_utilization_stats(since) {
                for s in &samples {
                    readings.push(ProcessReading::Busy { pid: s.pid, sm: s.sm_util, enc: s.enc_util, dec: s.dec_util });
                }
                if let Some(newest) = samples.iter().map(|s| s.timestamp).max() {
                    self.last_seen.insert(index, newest);
                }
            }
            per_device.push(readings);
        }
        NvidiaRead { devices, processes: merge_processes(&per_device) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_ids_take_the_kernels_form() {
        assert_eq!(pci_address("00000000:01:00.0").as_deref(), Some("0000:01:00.0"));
        assert_eq!(pci_address("00000001:3B:00.0").as_deref(), Some("0001:3b:00.0"));
        assert_eq!(pci_address("garbage"), None);
    }

    #[test]
    fn a_device_maps_to_a_gpu_sample() {
        let d = DeviceReading {
            index: 0,
            bus_id: Some("00000000:01:00.0".into()),
            name: Some("NVIDIA GeForce RTX 4090".into()),
            busy_percent: Some(37),
            memory_used: Some(3 << 30),
            memory_total: Some(24 << 30),
            temperature: Some(61),
        };
        let g = device_sample(&d);
        assert_eq!(g.id, "0000:01:00.0");
        assert_eq!(g.name, "NVIDIA GeForce RTX 4090");
        assert_eq!(g.driver.as_deref(), Some("nvidia"));
        assert_eq!(
            (g.utilization_percent, g.memory_used_bytes, g.memory_total_bytes, g.temperature_celsius),
            (Some(37.0), Some(3 << 30), Some(24 << 30), Some(61.0))
        );
        // What a device would not say stays unknown.
        let g = device_sample(&DeviceReading { index: 2, ..DeviceReading::default() });
        assert_eq!((g.id.as_str(), g.name.as_str(), g.utilization_percent), ("nvml2", "NVIDIA GPU", None));
    }

    #[test]
    fn processes_add_up_over_devices_and_lists() {
        use ProcessReading::*;
        let gpu0 = vec![
            Memory { pid: 10, bytes: Some(100) },
            // The same process in the graphics list too: once.
            Memory { pid: 10, bytes: Some(100) },
            Memory { pid: 11, bytes: None },
            Busy { pid: 10, sm: 20, enc: 0, dec: 0 },
            Busy { pid: 10, sm: 35, enc: 0, dec: 0 },
            Busy { pid: 12, sm: 0, enc: 0, dec: 60 },
        ];
        let gpu1 = vec![Memory { pid: 10, bytes: Some(50) }, Busy { pid: 10, sm: 250, enc: 0, dec: 0 }];
        let merged = merge_processes(&[gpu0, gpu1]);
        assert_eq!(merged[&10], (Some(100.0), Some(150)));
        // On the GPU without a sample: idle; without memory figures: unknown.
        assert_eq!(merged[&11], (Some(0.0), None));
        assert_eq!(merged[&12], (Some(60.0), None));
        assert_eq!(merged.len(), 3);
    }

    #[test]
    fn without_the_library_nothing_is_present_and_it_is_not_tried_every_tick() {
        // This machine has no NVIDIA driver: the first look fails, quietly.
        let mut n = Nvidia::new();
        if n.present(0) {
            return; // a machine with an NVIDIA GPU: nothing to check here
        }
        assert!(matches!(n.state, State::Missing { since: 0 }));
        assert!(!n.present(1));
        assert!(matches!(n.state, State::Missing { since: 0 }), "not tried again at once");
        assert!(n.read().devices.is_empty());
    }
}
