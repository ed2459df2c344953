//! Reading an uploaded snapshot, in either of the two formats `POST
//! /api/process-snapshots/` accepts, and refusing what should not be stored.
//!
//! - **Full**: a [`Snapshot`] as `procyon snapshot` prints it (recognised by its
//!   `schema_version`).
//! - **Short**: the original API's format, `{hostname, snapshot_time, processes}` with
//!   processes nested under `children`, `memory` as a number of bytes or a string such as
//!   `"150MB"`, and `parent_pid` possibly `null`. It becomes a snapshot with only
//!   processes; its sequence number is its time in milliseconds, so sending the same
//!   upload twice stores it once. Without `snapshot_time` it is stamped with its
//!   arrival. What it does not say is `null` in the snapshot, never a made-up zero: the
//!   memory size and swap, network counters, and of each process its start time, memory
//!   share and virtual size, and its CPU and memory when it leaves them out.
//!
//! Nothing a monitored machine sends is trusted: sizes and counts are bounded, strings
//! must be printable, numbers must be in range. Errors name the field
//! (`processes[3].memory`) and nothing is stored.
//!
//! Uploads also share the collector fairly ([`UploadGate`]): the bodies held in memory
//! at once are bounded in bytes, over all keys and per key, and parsing (CPU-heavy for a
//! large body) runs on blocking threads, a few at a time. An upload that finds no room
//! within a few seconds gets 503 (`busy`) or, when its own key holds the room, 429.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use crate::model::details::{ContainerRef, MAX_CONTAINER_TEXT_CHARS};
use crate::model::{
    CpuSample, HostInfo, MAX_CMD_CHARS, MemorySample, NetworkSample, PortUsage, ProcessSample, ProcessStatus,
    SCHEMA_VERSION, Snapshot,
};

/// Largest upload body, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Most processes in one snapshot.
pub const MAX_PROCESSES: usize = 20_000;
/// Most sockets in one snapshot.
pub const MAX_CONNECTIONS: usize = 100_000;
/// Longest host name (DNS's limit).
pub const MAX_HOSTNAME: usize = 253;
/// Longest process or user name.
pub const MAX_NAME: usize = 1024;
/// Longest host fact (`host.os`, `host.kernel`, `host.cpu_model`, `host.id`).
pub const MAX_HOST_TEXT: usize = 256;
/// Most network interfaces in one snapshot (a busy container host has a few hundred).
pub const MAX_INTERFACES: usize = 4096;
/// Most listening sockets in one snapshot.
pub const MAX_LISTENING: usize = MAX_CONNECTIONS;
/// Most GPUs in one snapshot (the largest servers have 16).
pub const MAX_GPUS: usize = 64;
/// Most CPU cores in one snapshot.
pub const MAX_CORES: usize = 4096;
/// Longest agent version or CPU architecture.
pub const MAX_VERSION: usize = 64;
/// Most sampling errors one snapshot may report, and the longest message of one.
pub const MAX_ERRORS: usize = 64;
/// See [`MAX_ERRORS`].
pub const MAX_ERROR_MESSAGE: usize = 1024;

/// Deepest JSON nesting accepted: a seed-style process tree 2,048 levels deep (each level
/// is an object and its `children` array).
pub const MAX_JSON_DEPTH: usize = 2 * 2048 + 8;

/// Bytes of upload bodies held at once over every key (read, waiting, being parsed).
pub const UPLOAD_BUDGET_BYTES: usize = 64 << 20;
/// Bytes of upload bodies one API key may hold at once: one body of the largest size.
/// A fleet key's agents upload a few hundred KiB each and take turns within it; a key
/// that sends slowly or hugely cannot hold the room everyone else uploads in.
pub const UPLOAD_BUDGET_PER_KEY: usize = MAX_BODY_BYTES;
/// Uploads parsed and checked at once, each on a blocking thread.
pub const PARSES_AT_ONCE: usize = 2;
/// How long an upload waits for room before it is refused.
pub const UPLOAD_WAIT: Duration = Duration::from_secs(10);

/// The room uploads share: bytes in memory (over all keys and per key) and parsing
/// slots. See the module's documentation.
#[derive(Debug)]
pub struct UploadGate {
    /// KiB of bodies, over all keys.
    bytes: Arc<Semaphore>,
    /// KiB of bodies per key, by key id (an entry nobody holds is pruned).
    keys: Mutex<HashMap<i64, Arc<Semaphore>>>,
    per_key_kib: usize,
    parsing: Arc<Semaphore>,
    wait: Duration,
}

/// An upload's share of the room, given back when dropped.
#[derive(Debug)]
pub struct UploadRoom {
    _key: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

impl Default for UploadGate {
    fn default() -> Self {
        UploadGate::new(UPLOAD_BUDGET_BYTES, UPLOAD_BUDGET_PER_KEY, PARSES_AT_ONCE, UPLOAD_WAIT)
    }
}

impl UploadGate {
    /// A gate for `budget` bytes of bodies in all, `per_key` for one key, `parses` parses
    /// at once, each waited for at most `wait`.
    pub fn new(budget: usize, per_key: usize, parses: usize, wait: Duration) -> UploadGate {
        let kib = |bytes: usize| bytes.div_ceil(1024).max(1);
        UploadGate {
            bytes: Arc::new(Semaphore::new(kib(budget))),
            keys: Mutex::default(),
            per_key_kib: kib(per_key),
            parsing: Arc::new(Semaphore::new(parses.max(1))),
            wait,
        }
    }

    fn retry_after(&self) -> u64 {
        self.wait.as_secs().clamp(1, 60)
    }

    /// Waits (bounded) for room for a body of `len` bytes from key `key_id`: 429 when the
    /// key's own uploads hold its share, 503 when all uploads together hold the budget.
    pub async fn room(&self, key_id: i64, len: usize) -> Result<UploadRoom, ApiError> {
        let deadline = tokio::time::Instant::now() + self.wait;
        let kib = len.div_ceil(1024).clamp(1, self.per_key_kib);
        let key = {
            let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            if keys.len() >= 4096 {
                // Held permits keep a reference: an entry with none is idle.
                keys.retain(|_, s| Arc::strong_count(s) > 1);
            }
            Arc::clone(keys.entry(key_id).or_insert_with(|| Arc::new(Semaphore::new(self.per_key_kib))))
        };
        let amount = u32::try_from(kib).unwrap_or(u32::MAX);
        let key = match tokio::time::timeout_at(deadline, key.acquire_many_owned(amount)).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(ApiError::Unavailable("The collector is stopping.".into())),
            Err(_) => {
                return Err(ApiError::OverLimit {
                    retry_after_secs: self.retry_after(),
                    message: format!(
                        "This API key's other uploads fill its share ({} MiB of bodies at once) for more than {} s; \
                         send one upload at a time, or give each agent its own key.",
                        self.per_key_kib >> 10,
                        self.wait.as_secs()
                    ),
                });
            }
        };
        let busy = || ApiError::Busy {
            retry_after_secs: self.retry_after(),
            message: format!("The collector is busy with other uploads; try again in {} s.", self.retry_after()),
        };
        let bytes = match tokio::time::timeout_at(deadline, Arc::clone(&self.bytes).acquire_many_owned(amount)).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(ApiError::Unavailable("The collector is stopping.".into())),
            Err(_) => return Err(busy()),
        };
        Ok(UploadRoom { _key: key, _bytes: bytes })
    }

    /// Parses and checks `body` ([`parse`]) and masks its command lines, on a blocking
    /// thread within one of the parsing slots (503 after waiting too long for one).
    pub async fn parse(&self, body: axum::body::Bytes) -> Result<Snapshot, ApiError> {
        let _slot = match tokio::time::timeout(self.wait, Arc::clone(&self.parsing).acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(ApiError::Unavailable("The collector is stopping.".into())),
            Err(_) => {
                return Err(ApiError::Busy {
                    retry_after_secs: self.retry_after(),
                    message: format!(
                        "The collector is busy reading other uploads; try again in {} s.",
                        self.retry_after()
                    ),
                });
            }
        };
        tokio::task::spawn_blocking(move || {
            let mut snapshot = parse(&body)?;
            drop(body);
            for p in &mut snapshot.processes {
                crate::sample::redact::redact_in_place(&mut p.cmd);
            }
            Ok(snapshot)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("the upload's parsing task failed: {e}")))?
    }
}

/// Parses and checks an upload body.
///
/// The body is parsed straight into the typed upload, never into a tree of JSON values
/// first: a value tree costs tens of bytes per object (800,000 empty processes fit in
/// 16 MiB and would take about 300 MB), and fields nobody reads (unknown keys) are
/// skipped without being built. Before that, one pass over the bytes ([`outline`])
/// measures the nesting and counts the processes and sockets, so that an over-long list
/// is refused before anything is built from it. CPU-heavy on large bodies: run it off
/// the async workers.
pub fn parse(body: &[u8]) -> Result<Snapshot, ApiError> {
    let outline = outline(body);
    if outline.depth > MAX_JSON_DEPTH {
        return Err(ApiError::Invalid {
            field: None,
            message: format!(
                "The body nests {} levels deep; at most {MAX_JSON_DEPTH} are accepted (a process tree of {} \
                 levels).",
                outline.depth,
                MAX_JSON_DEPTH / 2 - 4
            ),
        });
    }
    if !outline.object {
        // Valid JSON of another kind is a 422; anything else is not JSON at all.
        return Err(match typed::<serde::de::IgnoredAny>(body) {
            Ok(_) => ApiError::Invalid { field: None, message: "The body must be a JSON object.".into() },
            Err(e) => e,
        });
    }
    if outline.processes > MAX_PROCESSES {
        return Err(ApiError::invalid(
            "processes",
            format!(
                "More than {MAX_PROCESSES} processes in one upload ({} process objects, children included).",
                outline.processes
            ),
        ));
    }
    if outline.connections > MAX_CONNECTIONS {
        return Err(ApiError::invalid(
            "connections",
            format!("More than {MAX_CONNECTIONS} sockets in one upload ({}).", outline.connections),
        ));
    }
    let snapshot = if outline.full { typed::<Snapshot>(body)? } else { from_short(typed::<ShortUpload>(body)?)? };
    validate(&snapshot)?;
    Ok(snapshot)
}

/// What one pass over an upload's bytes tells before anything is built from them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Outline {
    /// The deepest nesting of arrays and objects.
    depth: usize,
    /// The body is a JSON object (its first byte that is not white space is `{`).
    object: bool,
    /// The top-level object has a `schema_version` key: the full format.
    full: bool,
    /// Objects anywhere under the top-level `processes` key, but the array's own:
    /// processes, with a seed-style tree's `children` counted too (neither format's
    /// process holds any other object).
    processes: usize,
    /// Objects directly in the top-level `connections` array.
    connections: usize,
}

/// Which top-level key the bytes being scanned belong to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TopKey {
    Other,
    Processes,
    Connections,
}

/// Scans a JSON text once, without recursion or allocation (strings skipped): its
/// depth, whether it is an object with `schema_version`, and how many processes and
/// sockets it holds. The scan trusts nothing: on invalid JSON its figures may be off,
/// and the parse that follows refuses the body anyway.
fn outline(body: &[u8]) -> Outline {
    let mut o = Outline { object: body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'), ..Outline::default() };
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    // At depth 1: whether the next string is a key, where the string being read
    // started, and which key the value being read belongs to.
    let (mut expect_key, mut string_start, mut key) = (false, 0usize, TopKey::Other);
    for (i, &b) in body.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => {
                    in_string = false;
                    if depth == 1 && expect_key {
                        expect_key = false;
                        key = match &body[string_start..i] {
                            b"processes" => TopKey::Processes,
                            b"connections" => TopKey::Connections,
                            b"schema_version" => {
                                o.full = true;
                                TopKey::Other
                            }
                            _ => TopKey::Other,
                        };
                    }
                }
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                string_start = i + 1;
            }
            b'[' | b'{' => {
                depth += 1;
                o.depth = o.depth.max(depth);
                if b == b'{' && depth == 1 {
                    expect_key = true;
                }
                if b == b'{' && depth >= 3 {
                    match key {
                        TopKey::Processes => o.processes += 1,
                        TopKey::Connections if depth == 3 => o.connections += 1,
                        _ => {}
                    }
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => {
                expect_key = true;
                key = TopKey::Other;
            }
            _ => {}
        }
    }
    o
}

/// Deserialises a JSON text with the path of the first bad field in the error, on a
/// stack that grows on the heap (the text may be deep; [`parse`] bounds how deep).
/// Not JSON at all is a 400; JSON of the wrong shape a 422 naming the field.
fn typed<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    de.disable_recursion_limit();
    let not_json = |e: &serde_json::Error| ApiError::BadRequest(format!("The body is not valid JSON: {e}."));
    let value = serde_path_to_error::deserialize(serde_stacker::Deserializer::new(&mut de)).map_err(|e| {
        if !e.inner().is_data() {
            return not_json(e.inner());
        }
        let path = e.path().to_string();
        let field = (path != ".").then_some(path);
        ApiError::Invalid {
            message: format!("{}{}", field.as_deref().map(|f| format!("{f}: ")).unwrap_or_default(), e.inner()),
            field,
        }
    })?;
    de.end().map_err(|e| not_json(&e))?;
    Ok(value)
}

/// The snapshot API's short upload: a host's processes, children nested under their
/// parents. What it does not say is stored as `null`.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ShortUpload {
    /// The host's name.
    hostname: String,
    /// When it was taken; without it, the time the collector received it.
    snapshot_time: Option<DateTime<Utc>>,
    /// The processes, each with its children nested.
    processes: Vec<ShortProcess>,
}

/// A process of a short upload.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ShortProcess {
    /// Process id.
    pid: u32,
    /// Name.
    name: String,
    /// CPU, share of one core (stored as `cpu_percent`).
    #[serde(default)]
    cpu: Option<f32>,
    /// Resident memory (stored as `rss_bytes`).
    #[serde(default)]
    memory: Option<ShortMemory>,
    /// The parent's pid; a nested process without one is its parent's child.
    #[serde(default)]
    parent_pid: Option<u32>,
    /// Its children, nested the same way.
    #[serde(default)]
    #[schema(no_recursion)]
    children: Vec<ShortProcess>,
    /// Owner (also `user`).
    #[serde(default, alias = "user")]
    username: Option<String>,
    /// `running`, `sleeping`, `disk_sleep`, `stopped`, `zombie`, `idle`, `dead` or a
    /// one-letter ps code; anything else is stored as `unknown`.
    #[serde(default)]
    status: Option<String>,
    /// Command line (also `cmdline`).
    #[serde(default, alias = "cmdline")]
    cmd: Option<String>,
}

/// Memory of a short upload's process: bytes, or a size with a binary unit (`"150MB"`,
/// `"1.5 GiB"`, `"512k"`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ShortMemory {
    /// Bytes.
    Bytes(f64),
    /// A size with a unit.
    Text(String),
}

/// `"150MB"`, `"1.5 GiB"`, `"512k"`, `"2048"` as bytes (binary units, as the
/// agents that send this format count them).
pub fn parse_memory(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = number * factor;
    (0.0..1e18).contains(&bytes).then_some(bytes as u64)
}

fn status_from(text: Option<&str>) -> ProcessStatus {
    match text.map(str::to_ascii_lowercase).as_deref() {
        Some("running" | "run" | "r") => ProcessStatus::Running,
        Some("sleeping" | "sleep" | "s") => ProcessStatus::Sleeping,
        Some("disk-sleep" | "disk_sleep" | "d") => ProcessStatus::DiskSleep,
        Some("stopped" | "stop" | "t") => ProcessStatus::Stopped,
        Some("zombie" | "z") => ProcessStatus::Zombie,
        Some("idle" | "i") => ProcessStatus::Idle,
        Some("dead") => ProcessStatus::Dead,
        _ => ProcessStatus::Unknown,
    }
}

fn from_short(upload: ShortUpload) -> Result<Snapshot, ApiError> {
    let taken_at = upload.snapshot_time.unwrap_or_else(Utc::now);
    let mut processes = Vec::new();
    // Depth-first, carrying the parent's pid down to children that do not name it.
    let mut stack: Vec<(String, ShortProcess, Option<u32>)> =
        upload.processes.into_iter().enumerate().rev().map(|(i, p)| (format!("processes[{i}]"), p, None)).collect();
    while let Some((path, p, inherited_parent)) = stack.pop() {
        if processes.len() >= MAX_PROCESSES {
            return Err(ApiError::invalid("processes", format!("More than {MAX_PROCESSES} processes in one upload.")));
        }
        let rss_bytes = match &p.memory {
            None => None,
            Some(ShortMemory::Bytes(b)) if b.is_finite() && *b >= 0.0 => Some(*b as u64),
            Some(ShortMemory::Text(t)) => Some(parse_memory(t).ok_or_else(|| {
                ApiError::invalid(
                    format!("{path}.memory"),
                    format!("{path}.memory: `{t}` is not a size such as \"150MB\"."),
                )
            })?),
            Some(ShortMemory::Bytes(_)) => {
                return Err(ApiError::invalid(
                    format!("{path}.memory"),
                    format!("{path}.memory must not be negative."),
                ));
            }
        };
        let ppid = p.parent_pid.or(inherited_parent);
        for (j, child) in p.children.into_iter().enumerate().rev() {
            stack.push((format!("{path}.children[{j}]"), child, Some(p.pid)));
        }
        processes.push(ProcessSample {
            pid: p.pid,
            ppid,
            name: p.name,
            cmd: p.cmd.unwrap_or_default(),
            user: p.username,
            status: status_from(p.status.as_deref()),
            cpu_percent: p.cpu,
            memory_percent: None,
            rss_bytes,
            virtual_bytes: None,
            threads: None,
            start_time: None,
            disk_read_bytes: None,
            disk_write_bytes: None,
            disk_read_bytes_per_sec: None,
            disk_write_bytes_per_sec: None,
            container: None,
            kernel_thread: false,
            gpu_percent: None,
            gpu_memory_bytes: None,
        });
    }
    processes.sort_by_key(|p| p.pid);
    // A fold from +0.0: an empty `sum()` of floats is -0.0.
    let total_cpu: f32 = processes.iter().filter_map(|p| p.cpu_percent).fold(0.0, |sum, cpu| sum + cpu);
    Ok(Snapshot {
        schema_version: SCHEMA_VERSION,
        host: HostInfo {
            id: upload.hostname.clone(),
            hostname: upload.hostname,
            os: String::new(),
            kernel: None,
            arch: String::new(),
            cpu_model: None,
            logical_cores: None,
            memory_total_bytes: None,
            boot_time: None,
            agent_version: String::new(),
        },
        taken_at,
        seq: taken_at.timestamp_millis().max(0) as u64,
        interval_ms: 0,
        cpu: CpuSample { total_percent: total_cpu.clamp(0.0, 100.0), per_core_percent: Vec::new(), load_average: None },
        memory: MemorySample {
            total_bytes: None,
            // Saturating: each figure is only bounded by u64, so their sum may not be.
            used_bytes: processes.iter().filter_map(|p| p.rss_bytes).fold(0, u64::saturating_add),
            available_bytes: None,
            swap_total_bytes: None,
            swap_used_bytes: None,
        },
        processes,
        connections: Vec::new(),
        network: NetworkSample { total: None, interfaces: Vec::new() },
        ports: PortUsage::default(),
        errors: Vec::new(),
        gpus: Vec::new(),
        filesystems: None,
        disks: None,
        temperatures: None,
        fans: None,
        batteries: None,
    })
}

fn check_text(field: &str, value: &str, max: usize, allow_empty: bool) -> Result<(), ApiError> {
    if !allow_empty && value.trim().is_empty() {
        return Err(ApiError::invalid(field, format!("{field} must not be empty.")));
    }
    if value.chars().count() > max {
        return Err(ApiError::invalid(field, format!("{field} is longer than {max} characters.")));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ApiError::invalid(field, format!("{field} contains control characters.")));
    }
    Ok(())
}

fn check_percent(field: &str, value: f32, max: f32) -> Result<(), ApiError> {
    if !value.is_finite() || value < 0.0 || value > max {
        return Err(ApiError::invalid(field, format!("{field} must be between 0 and {max}.")));
    }
    Ok(())
}

/// Checks a host name by the DNS's rules (host names are path segments of the API):
/// labels of letters, digits, `-` and `_`, 1 to 63 characters each, joined by single
/// dots; at most [`MAX_HOSTNAME`] characters in all.
pub fn validate_hostname(hostname: &str) -> Result<(), ApiError> {
    check_text("hostname", hostname, MAX_HOSTNAME, false)?;
    // A leading `-` would read as an option on a command line (`procyon host unbind -x`).
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && !l.starts_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    // A name the API would read as something else: a host id, or this collector.
    if hostname.bytes().all(|b| b.is_ascii_digit()) || hostname.eq_ignore_ascii_case("local") {
        return Err(ApiError::invalid(
            "hostname",
            format!("`{hostname}` cannot be a host name: the API reads it as a host id or as `local`, this collector."),
        ));
    }
    if !hostname.split('.').all(label_ok) {
        return Err(ApiError::invalid(
            "hostname",
            format!(
                "`{}` is not a host name: use letters, digits, `-` and `_`, in labels of at most 63 characters \
                 joined by dots, none starting with `-` (like `web-1` or `db.example.org`).",
                hostname.chars().take(80).collect::<String>()
            ),
        ));
    }
    Ok(())
}

/// The host's facts and the snapshot's other lists of text: every one is shown, stored
/// and logged, so each is bounded and printable like a process name.
fn check_host(s: &Snapshot) -> Result<(), ApiError> {
    let h = &s.host;
    check_text("host.id", &h.id, MAX_HOST_TEXT, true)?;
    check_text("host.os", &h.os, MAX_HOST_TEXT, true)?;
    check_text("host.arch", &h.arch, MAX_VERSION, true)?;
    check_text("host.agent_version", &h.agent_version, MAX_VERSION, true)?;
    if let Some(kernel) = &h.kernel {
        check_text("host.kernel", kernel, MAX_HOST_TEXT, true)?;
    }
    if let Some(model) = &h.cpu_model {
        check_text("host.cpu_model", model, MAX_HOST_TEXT, true)?;
    }
    if s.errors.len() > MAX_ERRORS {
        return Err(ApiError::invalid("errors", format!("More than {MAX_ERRORS} sampling errors in one snapshot.")));
    }
    for (i, e) in s.errors.iter().enumerate() {
        check_text(&format!("errors[{i}].message"), &e.message, MAX_ERROR_MESSAGE, true)?;
    }
    let ports = &s.ports;
    if ports.by_local_port.len() > MAX_CONNECTIONS {
        return Err(ApiError::invalid("ports.by_local_port", format!("More than {MAX_CONNECTIONS} ports.")));
    }
    if ports.listening.len() > MAX_LISTENING {
        return Err(ApiError::invalid("ports.listening", format!("More than {MAX_LISTENING} listening ports.")));
    }
    for (i, l) in ports.listening.iter().enumerate() {
        if let Some(name) = &l.process_name {
            check_text(&format!("ports.listening[{i}].process_name"), name, MAX_NAME, true)?;
        }
    }
    // Interface names are host text: short (Linux allows 15 bytes, Windows' friendly
    // names a few dozen), shown and logged.
    let interfaces = &s.network.interfaces;
    if interfaces.len() > MAX_INTERFACES {
        return Err(ApiError::invalid(
            "network.interfaces",
            format!("More than {MAX_INTERFACES} network interfaces in one snapshot."),
        ));
    }
    for (i, n) in interfaces.iter().enumerate() {
        check_text(&format!("network.interfaces[{i}].name"), &n.name, MAX_HOST_TEXT, false)?;
    }
    check_gpus(&s.gpus)
}

/// GPUs are host facts: few, named in printable text, shares 0-100, temperatures in a
/// range a sensor can read.
fn check_gpus(gpus: &[crate::model::GpuSample]) -> Result<(), ApiError> {
    if gpus.len() > MAX_GPUS {
        return Err(ApiError::invalid("gpus", format!("More than {MAX_GPUS} GPUs in one snapshot.")));
    }
    for (i, g) in gpus.iter().enumerate() {
        check_text(&format!("gpus[{i}].id"), &g.id, MAX_HOST_TEXT, false)?;
        check_text(&format!("gpus[{i}].name"), &g.name, MAX_HOST_TEXT, false)?;
        if let Some(driver) = &g.driver {
            check_text(&format!("gpus[{i}].driver"), driver, MAX_VERSION, false)?;
        }
        if let Some(busy) = g.utilization_percent {
            check_percent(&format!("gpus[{i}].utilization_percent"), busy, MAX_GPU_PERCENT)?;
        }
        if let Some(t) = g.temperature_celsius
            && !(t.is_finite() && (-100.0..=300.0).contains(&t))
        {
            let field = format!("gpus[{i}].temperature_celsius");
            return Err(ApiError::invalid(&field, format!("{field} must be between -100 and 300.")));
        }
    }
    Ok(())
}

/// Most filesystems, disks, sensors, fans or batteries in one snapshot (the sampler
/// keeps at most 256 of each).
pub const MAX_HARDWARE: usize = 1024;

/// The host in depth: bounded lists, text fit to show, figures that are numbers. The
/// names are host text (shown, and a mount point names an alert instance).
fn check_hardware(s: &Snapshot) -> Result<(), ApiError> {
    fn list<'a, T>(field: &str, items: Option<&'a Vec<T>>) -> Result<&'a [T], ApiError> {
        let items = items.map_or(&[][..], Vec::as_slice);
        if items.len() > MAX_HARDWARE {
            return Err(ApiError::invalid(field, format!("More than {MAX_HARDWARE} {field} in one snapshot.")));
        }
        Ok(items)
    }
    fn number(field: impl Fn() -> String, value: f64, max: f64) -> Result<(), ApiError> {
        if !value.is_finite() || value.abs() > max {
            let field = field();
            return Err(ApiError::invalid(&field, format!("{field} must be a number within ±{max}.")));
        }
        Ok(())
    }
    fn rate(field: impl Fn() -> String, value: f64) -> Result<(), ApiError> {
        number(&field, value, 1e15)?;
        if value < 0.0 {
            let field = field();
            return Err(ApiError::invalid(&field, format!("{field} must not be negative.")));
        }
        Ok(())
    }
    for (i, f) in list("filesystems", s.filesystems.as_ref())?.iter().enumerate() {
        check_text(&format!("filesystems[{i}].mount_point"), &f.mount_point, MAX_NAME, false)?;
        check_text(&format!("filesystems[{i}].fs_type"), &f.fs_type, MAX_VERSION, true)?;
        check_text(&format!("filesystems[{i}].device"), &f.device, MAX_NAME, true)?;
    }
    for (i, d) in list("disks", s.disks.as_ref())?.iter().enumerate() {
        check_text(&format!("disks[{i}].name"), &d.name, MAX_HOST_TEXT, false)?;
        rate(|| format!("disks[{i}].read_bytes_per_sec"), d.read_bytes_per_sec)?;
        rate(|| format!("disks[{i}].write_bytes_per_sec"), d.write_bytes_per_sec)?;
        rate(|| format!("disks[{i}].reads_per_sec"), d.reads_per_sec)?;
        rate(|| format!("disks[{i}].writes_per_sec"), d.writes_per_sec)?;
        rate(|| format!("disks[{i}].busy_percent"), d.busy_percent)?;
        if d.busy_percent > 100.5 {
            return Err(ApiError::invalid(format!("disks[{i}].busy_percent"), "busy_percent is at most 100."));
        }
    }
    for (i, t) in list("temperatures", s.temperatures.as_ref())?.iter().enumerate() {
        check_text(&format!("temperatures[{i}].name"), &t.name, MAX_HOST_TEXT, true)?;
        number(|| format!("temperatures[{i}].celsius"), t.celsius, 1000.0)?;
        for (what, v) in [("high_celsius", t.high_celsius), ("critical_celsius", t.critical_celsius)] {
            if let Some(v) = v {
                number(|| format!("temperatures[{i}].{what}"), v, 1000.0)?;
            }
        }
    }
    for (i, f) in list("fans", s.fans.as_ref())?.iter().enumerate() {
        check_text(&format!("fans[{i}].name"), &f.name, MAX_HOST_TEXT, true)?;
        rate(|| format!("fans[{i}].rpm"), f.rpm)?;
    }
    for (i, b) in list("batteries", s.batteries.as_ref())?.iter().enumerate() {
        check_text(&format!("batteries[{i}].name"), &b.name, MAX_HOST_TEXT, true)?;
        check_text(&format!("batteries[{i}].status"), &b.status, MAX_VERSION, true)?;
        if let Some(p) = b.percent {
            number(|| format!("batteries[{i}].percent"), p, 100.5)?;
        }
        if let Some(w) = b.power_watts {
            rate(|| format!("batteries[{i}].power_watts"), w)?;
        }
    }
    Ok(())
}

/// The first pid that appears twice, if any. Samplers list processes by pid, so this is
/// one pass; an unsorted list is sorted (a copy of the pids) first.
fn duplicate_pid(processes: &[ProcessSample]) -> Option<u32> {
    fn twice(mut pids: impl Iterator<Item = u32>) -> Option<u32> {
        let mut last = None;
        pids.find(|&p| last.replace(p) == Some(p))
    }
    if processes.windows(2).all(|w| w[0].pid <= w[1].pid) {
        twice(processes.iter().map(|p| p.pid))
    } else {
        let mut pids: Vec<u32> = processes.iter().map(|p| p.pid).collect();
        pids.sort_unstable();
        twice(pids.into_iter())
    }
}

/// Checks everything a stored snapshot must satisfy.
pub fn validate(s: &Snapshot) -> Result<(), ApiError> {
    validate_where(s, |_| true)
}

/// The pids whose processes a snapshot rebuilt from `delta` must have checked: in it,
/// only these hold anything its base did not that a check could refuse. A process the
/// delta adds is checked whole; one it changes only when its name, command line or user
/// changed, or a share it changed is out of range (the other fields have no rule). The
/// rest is its base's, which passed the same checks when it was stored.
pub fn pids_to_check(delta: &crate::model::delta::SnapshotDelta) -> std::collections::HashSet<u32> {
    let percent_ok = |v: Option<f32>, max: f32| v.is_none_or(|v| v.is_finite() && (0.0..=max).contains(&v));
    let changed = delta.processes.changed.iter().filter(|c| {
        c.name.is_some()
            || c.cmd.is_some()
            || c.user.is_some()
            || c.container.as_ref().is_some_and(Option::is_some)
            || !percent_ok(c.cpu_percent.flatten(), MAX_CPU_PERCENT)
            || !percent_ok(c.memory_percent.flatten(), MAX_MEMORY_PERCENT)
            || !percent_ok(c.gpu_percent.flatten(), MAX_GPU_PERCENT)
    });
    delta.processes.added.iter().map(|p| p.item.pid).chain(changed.map(|c| c.pid)).collect()
}

/// Highest CPU share of one process: 100 per core, for machines of up to 1,000 cores.
const MAX_CPU_PERCENT: f32 = 100_000.0;
/// Highest memory share of one process (a little over 100 for rounding).
const MAX_MEMORY_PERCENT: f32 = 100.5;
/// Highest GPU share of a process or a GPU: its busiest engine's, 0-100.
const MAX_GPU_PERCENT: f32 = 100.5;

/// The per-process checks of [`validate`] without building a message: the message
/// (with its field path) is made only for a process that fails.
fn process_ok(p: &ProcessSample) -> bool {
    let text_ok = |t: &str, max: usize| t.len() <= max && !t.chars().any(|c| c.is_control() && c != '\t');
    let percent_ok = |v: f32, max: f32| v.is_finite() && (0.0..=max).contains(&v);
    text_ok(&p.name, MAX_NAME)
        && text_ok(&p.cmd, MAX_CMD_CHARS + 1)
        && p.user.as_deref().is_none_or(|u| text_ok(u, MAX_NAME))
        && p.cpu_percent.is_none_or(|v| percent_ok(v, MAX_CPU_PERCENT))
        && p.memory_percent.is_none_or(|v| percent_ok(v, MAX_MEMORY_PERCENT))
        && p.container.as_ref().is_none_or(|c| container_texts(c).all(|(_, t)| text_ok(t, MAX_CONTAINER_TEXT_CHARS)))
        && p.gpu_percent.is_none_or(|v| percent_ok(v, MAX_GPU_PERCENT))
}

/// A container's texts with their field names, for the checks.
fn container_texts(c: &ContainerRef) -> impl Iterator<Item = (&'static str, &str)> {
    [("id", Some(c.id.as_str())), ("pod", c.pod.as_deref()), ("name", c.name.as_deref())]
        .into_iter()
        .filter_map(|(field, text)| Some((field, text?)))
}

/// [`validate`], with the per-process checks only for processes `check` picks: a
/// snapshot rebuilt from a delta needs them only where the delta changed it. The checks
/// of the whole (counts, duplicate pids, sizes) always run.
pub fn validate_where(s: &Snapshot, check: impl Fn(&ProcessSample) -> bool) -> Result<(), ApiError> {
    if s.schema_version == 0 {
        return Err(ApiError::invalid("schema_version", "schema_version must be 1 or more."));
    }
    validate_hostname(&s.host.hostname)?;
    if s.taken_at > Utc::now() + TimeDelta::days(1) {
        return Err(ApiError::invalid("taken_at", "taken_at is more than a day in the future."));
    }
    if s.processes.len() > MAX_PROCESSES {
        return Err(ApiError::invalid("processes", format!("More than {MAX_PROCESSES} processes in one upload.")));
    }
    if s.connections.len() > MAX_CONNECTIONS {
        return Err(ApiError::invalid("connections", format!("More than {MAX_CONNECTIONS} sockets in one upload.")));
    }
    if s.cpu.per_core_percent.len() > MAX_CORES {
        return Err(ApiError::invalid("cpu.per_core_percent", format!("More than {MAX_CORES} cores in one snapshot.")));
    }
    check_host(s)?;
    check_hardware(s)?;
    check_percent("cpu.total_percent", s.cpu.total_percent, 100.5)?;
    for (i, c) in s.cpu.per_core_percent.iter().enumerate() {
        check_percent(&format!("cpu.per_core_percent[{i}]"), *c, 100.5)?;
    }
    if let Some(pid) = duplicate_pid(&s.processes) {
        return Err(ApiError::invalid(
            "processes",
            format!("Process {pid} appears twice; pids are unique in a snapshot."),
        ));
    }
    for (i, p) in s.processes.iter().enumerate() {
        if !check(p) || process_ok(p) {
            continue;
        }
        check_text(&format!("processes[{i}].name"), &p.name, MAX_NAME, true)?;
        check_text(&format!("processes[{i}].cmd"), &p.cmd, MAX_CMD_CHARS + 1, true)?;
        if let Some(user) = &p.user {
            check_text(&format!("processes[{i}].user"), user, MAX_NAME, true)?;
        }
        if let Some(cpu) = p.cpu_percent {
            check_percent(&format!("processes[{i}].cpu_percent"), cpu, MAX_CPU_PERCENT)?;
        }
        if let Some(memory) = p.memory_percent {
            check_percent(&format!("processes[{i}].memory_percent"), memory, MAX_MEMORY_PERCENT)?;
        }
        if let Some(container) = &p.container {
            for (field, text) in container_texts(container) {
                check_text(&format!("processes[{i}].container.{field}"), text, MAX_CONTAINER_TEXT_CHARS, true)?;
            }
        }
        if let Some(gpu) = p.gpu_percent {
            check_percent(&format!("processes[{i}].gpu_percent"), gpu, MAX_GPU_PERCENT)?;
        }
    }
    check_process_text(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example upload of the original API document, verbatim.
    const SEED_EXAMPLE: &str = include_str!("../../../tests/fixtures/seed-upload.json");

    #[test]
    fn the_seed_example_becomes_a_flat_snapshot() {
        let s = parse(SEED_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(s.host.hostname, "MACHINE-01");
        assert_eq!(s.taken_at.to_rfc3339(), "2025-08-22T09:15:00+00:00");
        assert_eq!(s.seq, s.taken_at.timestamp_millis() as u64);
        assert_eq!(s.processes.len(), 2);
        let explorer = &s.processes[0];
        assert_eq!((explorer.pid, explorer.ppid, explorer.name.as_str()), (100, None, "explorer.exe"));
        assert_eq!(explorer.rss_bytes, Some(150 * 1024 * 1024));
        assert_eq!(explorer.cpu_percent, Some(2.5));
        let notepad = &s.processes[1];
        assert_eq!((notepad.pid, notepad.ppid), (200, Some(100)));
    }

    #[test]
    fn what_a_short_upload_leaves_out_is_null() {
        let body = r#"{"hostname":"h","snapshot_time":"2026-01-02T03:04:05Z","processes":[{"pid":1,"name":"a","cpu":1.5},{"pid":2,"name":"b","memory":"1KB"}]}"#;
        let s = parse(body.as_bytes()).unwrap();
        let (a, b) = (&s.processes[0], &s.processes[1]);
        assert_eq!((a.cpu_percent, a.rss_bytes), (Some(1.5), None));
        assert_eq!((b.cpu_percent, b.rss_bytes), (None, Some(1024)));
        for p in &s.processes {
            assert_eq!((p.start_time, p.memory_percent, p.virtual_bytes), (None, None, None));
        }
        let m = &s.memory;
        assert_eq!((m.total_bytes, m.available_bytes, m.swap_total_bytes, m.swap_used_bytes), (None, None, None, None));
        assert_eq!(m.used_bytes, 1024);
        assert_eq!(s.network.total, None);
        assert_eq!(s.cpu.total_percent, 1.5);
        // And so it reads, as JSON.
        let json = serde_json::to_value(&s).unwrap();
        assert!(json["memory"]["total_bytes"].is_null() && json["network"]["total"].is_null(), "{json}");
        assert!(json["processes"][0]["start_time"].is_null() && json["processes"][0]["rss_bytes"].is_null());
    }

    #[test]
    fn a_short_upload_without_a_time_is_stamped_with_its_arrival() {
        let before = Utc::now();
        let s = parse(br#"{"hostname":"h","processes":[]}"#).unwrap();
        assert!((before..=Utc::now()).contains(&s.taken_at), "{}", s.taken_at);
        assert_eq!(s.seq, s.taken_at.timestamp_millis() as u64);
    }

    #[test]
    fn children_without_parent_pid_inherit_it() {
        let body = r#"{"hostname":"h","processes":[{"pid":1,"name":"a","children":[{"pid":2,"name":"b","children":[{"pid":3,"name":"c"}]}]}]}"#;
        let s = parse(body.as_bytes()).unwrap();
        let ppids: Vec<_> = s.processes.iter().map(|p| (p.pid, p.ppid)).collect();
        assert_eq!(ppids, [(1, None), (2, Some(1)), (3, Some(2))]);
    }

    #[test]
    fn memory_strings() {
        assert_eq!(parse_memory("150MB"), Some(150 << 20));
        assert_eq!(parse_memory("1.5 GiB"), Some(3 << 29));
        assert_eq!(parse_memory("512k"), Some(512 << 10));
        assert_eq!(parse_memory("2048"), Some(2048));
        assert_eq!(parse_memory("lots"), None);
        assert_eq!(parse_memory("12 parsecs"), None);
        assert_eq!(parse_memory(""), None);
    }

    fn field_of(body: &str) -> (u16, Option<String>) {
        let e = parse(body.as_bytes()).unwrap_err();
        let (status, b) = e.parts();
        (status.as_u16(), b.field)
    }

    #[test]
    fn bad_input_names_the_field() {
        assert_eq!(field_of("{not json").0, 400);
        assert_eq!(field_of("[1,2]").0, 422);
        assert_eq!(field_of(r#"{"processes":[]}"#), (422, None));
        assert_eq!(
            field_of(r#"{"hostname":"h","processes":[{"pid":"x","name":"a"}]}"#),
            (422, Some("processes[0].pid".into()))
        );
        assert_eq!(
            field_of(r#"{"hostname":"h","processes":[{"pid":1,"name":"a","memory":"much"}]}"#),
            (422, Some("processes[0].memory".into()))
        );
        assert_eq!(field_of(r#"{"hostname":"","processes":[]}"#), (422, Some("hostname".into())));
        assert_eq!(field_of(r#"{"hostname":"a\u0007b","processes":[]}"#), (422, Some("hostname".into())));
        assert_eq!(
            field_of(r#"{"hostname":"h","processes":[{"pid":1,"name":"a","cpu":-3}]}"#),
            (422, Some("processes[0].cpu_percent".into()))
        );
    }

    #[test]
    fn too_many_processes_is_refused() {
        let procs: Vec<String> = (0..=MAX_PROCESSES).map(|i| format!(r#"{{"pid":{i},"name":"p"}}"#)).collect();
        let body = format!(r#"{{"hostname":"h","processes":[{}]}}"#, procs.join(","));
        assert_eq!(field_of(&body), (422, Some("processes".into())));
    }

    #[test]
    fn a_full_snapshot_round_trips() {
        let snap = crate::sample::Sampler::new(Default::default()).sample();
        let parsed = parse(&serde_json::to_vec(&snap).unwrap()).unwrap();
        assert_eq!(parsed, snap);
    }

    #[test]
    fn host_names_follow_the_dns_rules() {
        for good in ["web-1", "MACHINE-01", "db.example.org", "a", "under_score", &"a".repeat(63)] {
            assert!(validate_hostname(good).is_ok(), "{good}");
        }
        let long = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(63)].join(".");
        for bad in [
            "../../etc/passwd",
            "a/b",
            "a b",
            "",
            ".",
            "a..b",
            ".a",
            "a.",
            "<b>",
            "a%2Fb",
            "-web",
            "--help",
            "web.-1",
            &"a".repeat(64),
            &long,
        ] {
            assert_eq!(
                field_of(&format!(r#"{{"hostname":"{bad}","processes":[]}}"#)).1.as_deref(),
                Some("hostname"),
                "{bad}"
            );
        }
    }

    #[test]
    fn duplicate_pids_are_refused_naming_the_pid() {
        let body = r#"{"hostname":"h","processes":[{"pid":7,"name":"a"},{"pid":8,"name":"b","children":[{"pid":7,"name":"c"}]}]}"#;
        let e = parse(body.as_bytes()).unwrap_err();
        let (status, b) = e.parts();
        assert_eq!((status.as_u16(), b.field.as_deref()), (422, Some("processes")));
        assert!(b.message.contains("Process 7"), "{}", b.message);
        let mut unsorted =
            parse(br#"{"hostname":"h","processes":[{"pid":9,"name":"a"},{"pid":2,"name":"b"}]}"#).unwrap();
        unsorted.processes.reverse();
        assert!(validate(&unsorted).is_ok());
        unsorted.processes[0].pid = 2;
        assert!(validate(&unsorted).is_err());
    }

    fn nested(depth: usize) -> String {
        let mut body = String::from(r#"{"hostname":"h","processes":["#);
        for i in 0..depth {
            body.push_str(&format!(r#"{{"pid":{},"name":"p","children":["#, i + 1));
        }
        body.push_str(&"]}".repeat(depth));
        body.push_str("]}");
        body
    }

    #[test]
    fn deep_trees_parse_without_recursion_limits_up_to_a_bound() {
        // On a small stack, as a worker thread has: the parse must not use it per level.
        let handle = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let s = parse(nested(1000).as_bytes()).unwrap();
                assert_eq!(s.processes.len(), 1000);
                assert_eq!(s.processes[999].ppid, Some(999));
                let e = parse(nested(3000).as_bytes()).unwrap_err();
                assert_eq!(e.parts().0.as_u16(), 422);
                assert!(e.parts().1.message.contains("levels deep"));
            })
            .unwrap();
        handle.join().unwrap();
        // Brackets inside strings do not count.
        assert_eq!(outline(br#"{"a":"[[[[{{{{\"]]"}"#).depth, 1);
    }

    #[test]
    fn a_processs_container_is_bounded_and_printable() {
        use crate::model::details::{ContainerRef, ContainerRuntime};
        let mut good = crate::sample::Sampler::new(Default::default()).sample();
        let container = ContainerRef {
            runtime: ContainerRuntime::Docker,
            id: "a".repeat(64),
            pod: Some("6a1b2c3d-4e5f".into()),
            name: Some("web".into()),
        };
        good.processes[0].container = Some(container.clone());
        assert!(validate(&good).is_ok());
        type Set = fn(&mut ContainerRef, String);
        let cases: [(&str, Set); 3] = [
            ("processes[0].container.id", |c, t| c.id = t),
            ("processes[0].container.pod", |c, t| c.pod = Some(t)),
            ("processes[0].container.name", |c, t| c.name = Some(t)),
        ];
        for (field, set) in cases {
            for bad in ["web\nforged".to_owned(), "x".repeat(MAX_CONTAINER_TEXT_CHARS + 1)] {
                let mut s = good.clone();
                let mut c = container.clone();
                set(&mut c, bad);
                s.processes[0].container = Some(c);
                let (status, body) = validate(&s).unwrap_err().parts();
                assert_eq!((status.as_u16(), body.field.as_deref()), (422, Some(field)), "{}", body.message);
            }
        }
    }

    #[test]
    fn host_facts_and_errors_are_bounded_and_printable() {
        let good = crate::sample::Sampler::new(Default::default()).sample();
        assert!(validate(&good).is_ok());
        type Set = fn(&mut Snapshot, String);
        let cases: [(&str, Set); 9] = [
            ("host.id", |s, t| s.host.id = t),
            ("host.os", |s, t| s.host.os = t),
            ("host.arch", |s, t| s.host.arch = t),
            ("host.agent_version", |s, t| s.host.agent_version = t),
            ("host.kernel", |s, t| s.host.kernel = Some(t)),
            ("host.cpu_model", |s, t| s.host.cpu_model = Some(t)),
            ("errors[0].message", |s, t| {
                s.errors = vec![crate::model::DomainError { domain: crate::model::Domain::Network, message: t }]
            }),
            ("gpus[0].name", |s, t| s.gpus = vec![gpu(t)]),
            ("ports.listening[0].process_name", |s, t| {
                s.ports.listening = vec![crate::model::ListeningPort {
                    protocol: crate::model::Protocol::Tcp,
                    address: std::net::Ipv4Addr::LOCALHOST.into(),
                    port: 80,
                    pid: None,
                    process_name: Some(t),
                }]
            }),
        ];
        for (field, set) in cases {
            for bad in ["1.0\nERROR forged log line".to_owned(), "\u{1b}[2J".to_owned(), "x".repeat(32 << 20)] {
                let mut s = good.clone();
                set(&mut s, bad.clone());
                let e = validate(&s).unwrap_err();
                let (status, body) = e.parts();
                assert_eq!((status.as_u16(), body.field.as_deref()), (422, Some(field)), "{field}: {}", body.message);
            }
            let mut s = good.clone();
            set(&mut s, "plain text, tabs\tallowed".to_owned());
            assert!(validate(&s).is_ok(), "{field}");
        }
        let mut s = good.clone();
        s.errors = vec![crate::model::DomainError { domain: crate::model::Domain::Network, message: "e".into() }; 65];
        assert_eq!(validate(&s).unwrap_err().parts().1.field.as_deref(), Some("errors"));
    }

    fn gpu(name: String) -> crate::model::GpuSample {
        crate::model::GpuSample {
            id: "0000:03:00.0".into(),
            name,
            driver: Some("amdgpu".into()),
            utilization_percent: Some(12.0),
            memory_used_bytes: Some(1 << 30),
            memory_total_bytes: Some(8 << 30),
            temperature_celsius: Some(54.0),
        }
    }

    #[test]
    fn gpu_figures_are_bounded_and_named_when_refused() {
        let good = crate::sample::Sampler::new(Default::default()).sample();
        let field = |s: &Snapshot| {
            let e = validate(s).unwrap_err();
            let (status, body) = e.parts();
            (status.as_u16(), body.field.unwrap_or_default())
        };
        let mut s = good.clone();
        s.gpus = vec![gpu("Radeon".into())];
        s.processes[0].gpu_percent = Some(100.0);
        s.processes[0].gpu_memory_bytes = Some(u64::MAX);
        assert!(validate(&s).is_ok());
        for (bad, name) in [(f32::NAN, "nan"), (-1.0, "negative"), (101.0, "over 100")] {
            let mut t = s.clone();
            t.processes[0].gpu_percent = Some(bad);
            assert_eq!(field(&t), (422, "processes[0].gpu_percent".into()), "{name}");
            let mut t = s.clone();
            t.gpus[0].utilization_percent = Some(bad);
            assert_eq!(field(&t), (422, "gpus[0].utilization_percent".into()), "{name}");
        }
        let mut t = s.clone();
        t.gpus[0].temperature_celsius = Some(f32::INFINITY);
        assert_eq!(field(&t), (422, "gpus[0].temperature_celsius".into()));
        let mut t = s.clone();
        t.gpus = vec![gpu("g".into()); MAX_GPUS + 1];
        assert_eq!(field(&t), (422, "gpus".into()));
        // A delta that makes a process's GPU share bad has that process checked.
        let mut next = s.clone();
        next.seq += 1;
        next.processes[0].gpu_percent = Some(500.0);
        let delta = crate::model::delta::SnapshotDelta::between(&s, &next);
        assert!(pids_to_check(&delta).contains(&next.processes[0].pid));
    }

    #[test]
    fn listening_ports_and_interfaces_are_capped_in_count_and_length() {
        let good = crate::sample::Sampler::new(Default::default()).sample();
        let interface = |name: String| crate::model::InterfaceSample { name, counters: Default::default() };
        let listening = |name: String| crate::model::ListeningPort {
            protocol: crate::model::Protocol::Tcp,
            address: std::net::Ipv4Addr::LOCALHOST.into(),
            port: 80,
            pid: None,
            process_name: Some(name),
        };
        let field = |s: &Snapshot| {
            let e = validate(s).unwrap_err();
            let (status, body) = e.parts();
            (status.as_u16(), body.field.unwrap_or_default())
        };
        // Too many: refused naming the list (interfaces were named as CPU cores before).
        let mut s = good.clone();
        s.network.interfaces = vec![interface("eth0".into()); MAX_INTERFACES + 1];
        assert_eq!(field(&s), (422, "network.interfaces".into()));
        s.network.interfaces.truncate(MAX_INTERFACES);
        assert!(validate(&s).is_ok());
        let mut s = good.clone();
        s.ports.listening = vec![listening("nginx".into()); MAX_LISTENING + 1];
        assert_eq!(field(&s), (422, "ports.listening".into()));
        // Too long, empty, or with control characters: refused naming the entry.
        for bad in ["x".repeat(MAX_HOST_TEXT + 1), String::new(), "eth0\nforged".into()] {
            let mut s = good.clone();
            s.network.interfaces = vec![interface("lo".into()), interface(bad)];
            assert_eq!(field(&s), (422, "network.interfaces[1].name".into()));
        }
        let mut s = good.clone();
        s.ports.listening = vec![listening("x".repeat(MAX_NAME + 1))];
        assert_eq!(field(&s), (422, "ports.listening[0].process_name".into()));
        let mut s = good.clone();
        s.network.interfaces = vec![interface("x".repeat(MAX_HOST_TEXT))];
        assert!(validate(&s).is_ok());
    }

    #[test]
    fn html_in_names_is_accepted_as_text() {
        // Rendering is the reader's job (as text); storing it unchanged is ours.
        let body = r#"{"hostname":"h","processes":[{"pid":1,"name":"<img src=x onerror=alert(1)>"}]}"#;
        assert_eq!(parse(body.as_bytes()).unwrap().processes[0].name, "<img src=x onerror=alert(1)>");
    }
}

/// Most bytes of text all of a snapshot's processes may carry together (names, command
/// lines and users). Each is bounded on its own, but 20,000 processes with 4 KiB command
/// lines would still make one snapshot 80 MB of JSON, which every read of it (export,
/// history, the live stream) would have to decode.
pub const MAX_PROCESS_TEXT_BYTES: usize = 8 << 20;

/// Refuses a snapshot whose processes' text together is over [`MAX_PROCESS_TEXT_BYTES`];
/// nothing is cut, so nothing is stored that differs from what was sent.
pub fn check_process_text(s: &Snapshot) -> Result<(), ApiError> {
    let total = s.processes.iter().fold(0usize, |sum, p| {
        sum.saturating_add(p.name.len())
            .saturating_add(p.cmd.len())
            .saturating_add(p.user.as_ref().map_or(0, String::len))
    });
    if total > MAX_PROCESS_TEXT_BYTES {
        return Err(ApiError::invalid(
            "processes",
            format!(
                "The processes' names and command lines add up to {total} bytes, over the limit of {} MiB per \
                 snapshot; send shorter command lines (procyon-agent bounds and redacts them).",
                MAX_PROCESS_TEXT_BYTES >> 20
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod process_text_tests {
    use super::*;

    fn with_processes(count: usize, cmd_bytes: usize) -> Snapshot {
        let mut s = crate::sample::Sampler::new(Default::default()).sample();
        let template = s.processes.first().cloned().expect("the machine has processes");
        s.processes = (0..count)
            .map(|i| ProcessSample { pid: i as u32 + 1, cmd: "x".repeat(cmd_bytes), ..template.clone() })
            .collect();
        s
    }

    #[test]
    fn a_snapshot_over_the_text_cap_is_refused_naming_it() {
        // About 9 MiB of command lines, each within its own limit.
        let over = with_processes(2_400, 4_000);
        let e = validate(&over).unwrap_err();
        let (status, body) = e.parts();
        assert_eq!((status.as_u16(), body.field.as_deref()), (422, Some("processes")));
        assert!(body.message.contains("8 MiB"), "{}", body.message);
        // The same through the upload path: refused, not cut.
        assert_eq!(parse(&serde_json::to_vec(&over).unwrap()).unwrap_err().parts().0.as_u16(), 422);
        // Just under the cap is fine.
        let under = with_processes(2_000, 4_000);
        assert!(validate(&under).is_ok());
    }

    #[test]
    fn the_host_in_depth_is_checked_naming_the_field() {
        let good = crate::sample::Sampler::new(Default::default()).sample();
        assert!(good.filesystems.is_some(), "this machine's filesystems are read");
        validate(&good).unwrap();
        let field = |s: &Snapshot| validate(s).unwrap_err().parts().1.field;
        let mut bad = good.clone();
        bad.filesystems = Some(vec![crate::model::FilesystemSample {
            mount_point: "/mnt/\u{1b}[31mred".into(),
            fs_type: "ext4".into(),
            device: "/dev/x".into(),
            total_bytes: 1,
            used_bytes: 0,
            free_bytes: 1,
            inodes_total: None,
            inodes_free: None,
        }]);
        assert_eq!(field(&bad).as_deref(), Some("filesystems[0].mount_point"));
        let mut bad = good.clone();
        bad.disks = Some(vec![crate::model::DiskSample {
            name: "sda".into(),
            read_bytes_per_sec: f64::NAN,
            write_bytes_per_sec: 0.0,
            reads_per_sec: 0.0,
            writes_per_sec: 0.0,
            busy_percent: 0.0,
        }]);
        assert_eq!(field(&bad).as_deref(), Some("disks[0].read_bytes_per_sec"));
        let mut bad = good.clone();
        bad.temperatures = Some(vec![
            crate::model::TemperatureSample {
                name: "x".into(),
                celsius: 40.0,
                high_celsius: None,
                critical_celsius: None,
            };
            MAX_HARDWARE + 1
        ]);
        assert_eq!(field(&bad).as_deref(), Some("temperatures"));
    }
}

/// Fuzz targets for the upload body, through the handler's own steps ([`parse`], then
/// the masking of command lines): never a panic, always a snapshot or a 400/422 that
/// says what is wrong. See `crate::fuzzing`.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzzing::{config, json_value, mutated_bytes, mutated_json};
    use proptest::prelude::*;
    use std::sync::OnceLock;

    const SEED_EXAMPLE: &str = include_str!("../../../tests/fixtures/seed-upload.json");

    /// A real snapshot of this machine in the full format, made once.
    fn full_upload() -> &'static serde_json::Value {
        static FULL: OnceLock<serde_json::Value> = OnceLock::new();
        FULL.get_or_init(|| {
            let mut s = crate::sample::Sampler::new(Default::default()).sample();
            // A few processes are enough to reach every field; thousands would only
            // make each case slower.
            s.processes.truncate(6);
            s.connections.truncate(6);
            serde_json::to_value(&s).unwrap()
        })
    }

    fn seed_upload() -> serde_json::Value {
        serde_json::from_str(SEED_EXAMPLE).unwrap()
    }

    /// What the handler does with a body, with the checks every outcome must pass.
    fn check(body: &[u8]) -> Result<(), TestCaseError> {
        match parse(body) {
            Ok(mut s) => {
                for p in &mut s.processes {
                    crate::sample::redact::redact_in_place(&mut p.cmd);
                }
                // What was accepted is valid, and reads back the same as a full upload:
                // nothing stored is a snapshot the collector would refuse later.
                prop_assert!(validate(&s).is_ok());
                let again = parse(&serde_json::to_vec(&s).unwrap());
                prop_assert!(again.is_ok(), "accepted, but refused in the full format: {:?}", again.err());
            }
            Err(e) => {
                let clear = matches!(&e, ApiError::BadRequest(m) if !m.is_empty())
                    || matches!(&e, ApiError::Invalid { message, .. } if !message.is_empty());
                prop_assert!(clear, "not a clear 400 or 422: {e:?}");
            }
        }
        Ok(())
    }

    /// Found by `the_seed_shape_with_fields_changed`: the memory in use (the sum of the
    /// processes' memory) overflowed, a panic in debug builds and a wrong figure in
    /// release ones.
    #[test]
    fn memory_too_large_to_add_up_is_capped() {
        let body = br#"{"hostname":"h","processes":[{"pid":1,"name":"a","memory":1.8e19},{"pid":2,"name":"b","memory":1.8e19}]}"#;
        assert_eq!(parse(body).unwrap().memory.used_bytes, u64::MAX);
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
            check(&body)?;
        }

        #[test]
        fn any_json_value(v in json_value()) {
            check(&serde_json::to_vec(&v).unwrap())?;
        }

        #[test]
        fn the_seed_shape_with_fields_changed(v in mutated_json(seed_upload())) {
            check(&serde_json::to_vec(&v).unwrap())?;
        }

        #[test]
        fn the_full_shape_with_fields_changed(v in mutated_json(full_upload().clone())) {
            check(&serde_json::to_vec(&v).unwrap())?;
        }

        #[test]
        fn the_seed_text_with_bytes_changed(body in mutated_bytes(SEED_EXAMPLE.as_bytes().to_vec())) {
            check(&body)?;
        }

        #[test]
        fn the_full_text_with_bytes_changed(body in mutated_bytes(serde_json::to_vec(full_upload()).unwrap())) {
            check(&body)?;
        }
    }
}
