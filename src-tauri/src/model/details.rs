//! One process in depth (`GET /api/hosts/{server_id}/processes/{pid}/details`): what a
//! snapshot leaves out because it costs too much to read every tick for every process.
//!
//! Read once, for one process, when someone opens its details; never sampled. Each part
//! is read on its own: a part the monitor may not read (another user's descriptors,
//! without the privilege) is `null` and named in [`ProcessDetails::unavailable`], and
//! the rest is still answered. Lists are capped ([`MAX_DETAIL_THREADS`],
//! [`MAX_DETAIL_FILES`], ...) and say how many there were in all.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ts_rs::TS;
use utoipa::ToSchema;

/// Threads listed at most; [`ProcessDetails::threads_total`] counts them all.
pub const MAX_DETAIL_THREADS: usize = 500;
/// Descriptors listed at most; [`ProcessDetails::files_total`] counts them all.
pub const MAX_DETAIL_FILES: usize = 500;
/// Environment variable names listed at most.
pub const MAX_DETAIL_ENV_NAMES: usize = 500;
/// Longest path or name kept, in characters (longer ones end in `…`).
pub const MAX_DETAIL_TEXT_CHARS: usize = 1024;

/// One process in depth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct ProcessDetails {
    /// Process id.
    pub pid: u32,
    /// Short name.
    pub name: String,
    /// When the process started (what actions name it by).
    pub start_time: Option<DateTime<Utc>>,
    /// When these details were read.
    pub read_at: DateTime<Utc>,
    /// The program file it runs, as the kernel knows it.
    pub executable: Option<String>,
    /// Its working directory.
    pub cwd: Option<String>,
    /// Its threads, at most [`MAX_DETAIL_THREADS`], busiest first.
    pub threads: Option<Vec<ThreadDetail>>,
    /// How many threads it has in all.
    pub threads_total: Option<u32>,
    /// Its open descriptors, at most [`MAX_DETAIL_FILES`], by descriptor number.
    pub files: Option<Vec<OpenFile>>,
    /// How many descriptors it has open in all.
    pub files_total: Option<u32>,
    /// Its memory mappings, summed up.
    pub memory_maps: Option<MemoryMaps>,
    /// Its resource limits.
    pub limits: Option<Vec<ResourceLimit>>,
    /// Its control group paths (one line of `/proc/PID/cgroup` each).
    pub cgroups: Option<Vec<String>>,
    /// The container it runs in, when its control group says so.
    pub container: Option<ContainerRef>,
    /// The names of its environment variables, sorted, at most
    /// [`MAX_DETAIL_ENV_NAMES`]; never their values, which may be secrets.
    pub environment_names: Option<Vec<String>>,
    /// Parts that could not be read, and why (e.g. permission denied).
    pub unavailable: Vec<UnavailablePart>,
}

impl ProcessDetails {
    /// The same details with every list capped and every text printable and bounded:
    /// what an agent sends is not trusted to keep to the limits.
    pub fn bounded(mut self) -> ProcessDetails {
        let text = |t: &mut String| {
            let mut out: String =
                t.chars().take(MAX_DETAIL_TEXT_CHARS).map(|c| if c.is_control() { '?' } else { c }).collect();
            if t.chars().nth(MAX_DETAIL_TEXT_CHARS).is_some() {
                out.push('…');
            }
            *t = out;
        };
        text(&mut self.name);
        for t in [&mut self.executable, &mut self.cwd].into_iter().flatten() {
            text(t);
        }
        if let Some(threads) = &mut self.threads {
            threads.truncate(MAX_DETAIL_THREADS);
            threads.iter_mut().for_each(|t| {
                text(&mut t.name);
                text(&mut t.state);
            });
        }
        if let Some(files) = &mut self.files {
            files.truncate(MAX_DETAIL_FILES);
            for f in files {
                text(&mut f.target);
                if let Some(s) = &mut f.socket {
                    text(s);
                }
            }
        }
        for list in [&mut self.cgroups, &mut self.environment_names].into_iter().flatten() {
            list.truncate(MAX_DETAIL_ENV_NAMES);
            list.iter_mut().for_each(text);
        }
        if let Some(limits) = &mut self.limits {
            limits.truncate(64);
            for l in limits {
                text(&mut l.name);
                if let Some(u) = &mut l.unit {
                    text(u);
                }
            }
        }
        if let Some(c) = &mut self.container {
            *c = c.clone().bounded();
        }
        self.unavailable.truncate(16);
        for u in &mut self.unavailable {
            text(&mut u.part);
            text(&mut u.reason);
        }
        self
    }
}

/// One thread of a process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct ThreadDetail {
    /// Thread id.
    pub tid: u32,
    /// Its name (`comm`).
    pub name: String,
    /// Its scheduler state: `running`, `sleeping`, `disk_sleep`, `stopped`, `zombie`, ...
    pub state: String,
    /// Share of one core over the short time the details were measured in; `null` if
    /// the thread ended meanwhile.
    pub cpu_percent: Option<f32>,
    /// CPU time used since it started, user and system, in seconds.
    pub cpu_seconds: f64,
}

/// One open descriptor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct OpenFile {
    /// The descriptor number.
    pub fd: u32,
    /// What it is.
    pub kind: FileKind,
    /// The file's path, or what the kernel names the object (`pipe:[123]`,
    /// `anon_inode:[eventfd]`).
    pub target: String,
    /// For a socket: its protocol and addresses, when found in the process's network
    /// namespace (`tcp 127.0.0.1:8080 LISTEN`).
    pub socket: Option<String>,
}

/// Kinds of descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A file or directory (or device) with a path.
    File,
    /// A pipe or FIFO.
    Pipe,
    /// A socket.
    Socket,
    /// An anonymous inode (eventfd, epoll, timerfd, ...).
    AnonInode,
    /// Anything else.
    Other,
}

/// A process's memory mappings, summed up by kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct MemoryMaps {
    /// How many mappings there are.
    pub count: u32,
    /// Distinct files mapped (the program and its libraries, mostly).
    pub files: u32,
    /// Mapped size backed by files.
    #[ts(type = "number")]
    pub file_bytes: u64,
    /// Mapped size not backed by a file (heap, anonymous, stacks).
    #[ts(type = "number")]
    pub anonymous_bytes: u64,
    /// Size of the heap mapping.
    #[ts(type = "number")]
    pub heap_bytes: u64,
    /// Size of the main thread's stack mapping.
    #[ts(type = "number")]
    pub stack_bytes: u64,
}

/// One resource limit (`/proc/PID/limits`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct ResourceLimit {
    /// What it limits, as the kernel words it (`Max open files`).
    pub name: String,
    /// The soft limit; `null` for unlimited.
    #[ts(type = "number | null")]
    pub soft: Option<u64>,
    /// The hard limit; `null` for unlimited.
    #[ts(type = "number | null")]
    pub hard: Option<u64>,
    /// The unit (`bytes`, `seconds`, `files`, ...), when the kernel gives one.
    pub unit: Option<String>,
}

/// The container a process runs in, as its control group names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS, ToSchema)]
pub struct ContainerRef {
    /// Which runtime's naming the control group follows.
    pub runtime: ContainerRuntime,
    /// The container's id (a hex id, or a name for systemd-nspawn and LXC).
    pub id: String,
    /// The Kubernetes pod's uid, for a container of a pod.
    pub pod: Option<String>,
    /// The container's name: the runtime's own for Docker and Podman, when their API
    /// socket on the machine answered (`docker ps`'s NAMES, without the `/`); the id
    /// itself for systemd-nspawn and LXC, whose control groups carry the name. Absent
    /// when not known, and from agents that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub name: Option<String>,
}

impl ContainerRef {
    /// The same reference with its texts printable and at most
    /// [`MAX_CONTAINER_TEXT_CHARS`] long: what an agent sends is not trusted.
    pub fn bounded(mut self) -> ContainerRef {
        let text = |t: &mut String| {
            if t.len() > MAX_CONTAINER_TEXT_CHARS || t.chars().any(char::is_control) {
                *t = t.chars().take(MAX_CONTAINER_TEXT_CHARS).map(|c| if c.is_control() { '?' } else { c }).collect();
            }
        };
        text(&mut self.id);
        for t in [&mut self.pod, &mut self.name].into_iter().flatten() {
            text(t);
        }
        self
    }
}

/// Longest container id, pod uid or name kept, in characters (runtimes' ids are 64 hex
/// digits; names are short).
pub const MAX_CONTAINER_TEXT_CHARS: usize = 256;

/// Container runtimes recognised from control group paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContainerRuntime {
    /// Docker (`docker-ID.scope`, `/docker/ID`).
    Docker,
    /// Podman (`libpod-ID.scope`).
    Podman,
    /// containerd, Kubernetes' usual runtime (`cri-containerd-ID.scope`).
    Containerd,
    /// CRI-O (`crio-ID.scope`).
    CriO,
    /// systemd-nspawn (`machine.slice/systemd-nspawn@NAME.service`, `machine-NAME.scope`).
    SystemdNspawn,
    /// LXC (`/lxc/NAME`, `lxc.payload.NAME`).
    Lxc,
    /// A Kubernetes pod whose runtime the path does not name.
    Kubernetes,
}

/// A part of the details that could not be read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct UnavailablePart {
    /// Which part: `threads`, `files`, `memory_maps`, `limits`, `cgroups`, `environment`,
    /// `executable`, `cwd`.
    pub part: String,
    /// Why, in words (`permission denied: ...`).
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_an_agent_sends_is_capped_and_made_printable() {
        let thread = |tid| ThreadDetail {
            tid,
            name: "w\u{1b}[31m".into(),
            state: "sleeping".into(),
            cpu_percent: None,
            cpu_seconds: 0.0,
        };
        let details = ProcessDetails {
            pid: 1,
            name: "x".repeat(MAX_DETAIL_TEXT_CHARS + 10),
            start_time: None,
            read_at: Utc::now(),
            executable: Some("/bin/a\nb".into()),
            cwd: None,
            threads: Some((0..MAX_DETAIL_THREADS as u32 + 7).map(thread).collect()),
            threads_total: Some(9_999),
            files: Some(Vec::new()),
            files_total: Some(0),
            memory_maps: None,
            limits: None,
            cgroups: None,
            container: None,
            environment_names: Some(vec!["A".into(); MAX_DETAIL_ENV_NAMES * 2]),
            unavailable: Vec::new(),
        }
        .bounded();
        assert_eq!(details.name.chars().count(), MAX_DETAIL_TEXT_CHARS + 1);
        assert!(details.name.ends_with('…'));
        assert_eq!(details.executable.as_deref(), Some("/bin/a?b"));
        let threads = details.threads.unwrap();
        assert_eq!(threads.len(), MAX_DETAIL_THREADS);
        assert_eq!(threads[0].name, "w?[31m");
        assert_eq!(details.threads_total, Some(9_999));
        assert_eq!(details.environment_names.unwrap().len(), MAX_DETAIL_ENV_NAMES);
    }
}
