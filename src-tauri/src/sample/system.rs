//! Processor, memory and host facts, through sysinfo on every OS.
//!
//! sysinfo does these well everywhere and cheaply (on Linux: `/proc/stat` and
//! `/proc/meminfo`). CPU use is a difference between two readings at least
//! [`sysinfo::MINIMUM_CPU_UPDATE_INTERVAL`] apart; [`System::new`] takes the first.

use chrono::{DateTime, Utc};
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind};

use crate::model::{CpuSample, HostInfo, LoadAverage, MemorySample};

/// Owner of sysinfo's system state.
pub(super) struct System {
    sys: Option<sysinfo::System>,
}

impl System {
    pub fn new() -> System {
        let kind = RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing().with_usage())
            .with_memory(MemoryRefreshKind::everything());
        System { sys: sysinfo::System::new_with_specifics(kind).ok() }
    }

    pub fn host(&self, hostname: Option<&str>, machine_id: Option<String>) -> HostInfo {
        let hostname = hostname
            .map(str::to_owned)
            .or_else(|| sysinfo::System::host_name().ok())
            .unwrap_or_else(|| "unknown".to_owned());
        let os = sysinfo::System::long_os_version()
            .or_else(|_| sysinfo::System::name())
            .unwrap_or_else(|_| std::env::consts::OS.to_owned());
        let cpus = self.sys.as_ref().map(|s| s.cpus()).unwrap_or_default();
        HostInfo {
            id: machine_id.unwrap_or_else(|| hostname.clone()),
            hostname,
            os,
            kernel: sysinfo::System::kernel_version().ok(),
            arch: sysinfo::System::cpu_arch(),
            cpu_model: cpus.first().map(|c| c.brand().trim().to_owned()).filter(|b| !b.is_empty()),
            logical_cores: (!cpus.is_empty()).then_some(cpus.len() as u32),
            memory_total_bytes: self.sys.as_ref().map(|s| s.total_memory()).filter(|&b| b > 0),
            boot_time: sysinfo::System::boot_time()
                .ok()
                .filter(|&secs| secs > 0)
                .and_then(|secs| DateTime::<Utc>::from_timestamp(secs as i64, 0)),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// Refreshes CPU and memory and returns both.
    pub fn read(&mut self) -> (CpuSample, MemorySample) {
        let load_average = sysinfo::System::load_average()
            .ok()
            // Windows has no load average and sysinfo reports zeros for it.
            .filter(|_| !cfg!(windows))
            .map(|l| LoadAverage { one: l.one, five: l.five, fifteen: l.fifteen });
        let Some(sys) = self.sys.as_mut() else {
            let cpu = CpuSample { total_percent: 0.0, per_core_percent: Vec::new(), load_average };
            let mem = MemorySample {
                total_bytes: None,
                used_bytes: 0,
                available_bytes: None,
                swap_total_bytes: None,
                swap_used_bytes: None,
            };
            return (cpu, mem);
        };
        sys.refresh_cpu_usage();
        sys.refresh_memory();
        let cpu = CpuSample {
            total_percent: sys.global_cpu_usage(),
            per_core_percent: sys.cpus().iter().map(|c| c.usage()).collect(),
            load_average,
        };
        let total = sys.total_memory();
        let available = sys.available_memory();
        let memory = MemorySample {
            total_bytes: Some(total),
            used_bytes: total.saturating_sub(available),
            available_bytes: Some(available),
            swap_total_bytes: Some(sys.total_swap()),
            swap_used_bytes: Some(sys.used_swap()),
        };
        (cpu, memory)
    }
}
