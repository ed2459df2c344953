//! The collector's API types: what REST and WebSocket clients receive besides snapshots.
//!
//! Like the snapshot, these are the only definitions: the collector serialises them and
//! the dashboard's TypeScript is generated from them. Field names that the original API
//! documents fixed (`snapshot_id`, `hostname`, `timestamp`) keep their names.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ts_rs::TS;
use utoipa::ToSchema;

use super::labels::Labels;
use super::{HostInfo, ProcessAction};

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, TS, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything.
    Viewer,
    /// Read, and act on processes.
    Operator,
    /// Everything, including users and API keys.
    Admin,
}

impl Role {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }

    /// Whether this role may act on processes.
    pub fn may_act(self) -> bool {
        self >= Self::Operator
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Self::Viewer),
            "operator" => Ok(Self::Operator),
            "admin" => Ok(Self::Admin),
            _ => Err(format!("unknown role `{s}`: expected viewer, operator or admin")),
        }
    }
}

/// `POST /api/auth/login` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct LoginResponse {
    /// Bearer token for `Authorization: Bearer ...` (and `?token=` on WebSockets).
    pub token: String,
    /// When the token stops working.
    pub expires_at: DateTime<Utc>,
    /// The user's role.
    pub role: Role,
    /// The user's name.
    pub username: String,
}

/// One monitored machine, as `GET /api/hosts/` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct HostSummary {
    /// The collector's id for the host (usable wherever a `server_id` is).
    #[ts(type = "number")]
    pub id: i64,
    /// Host name, unique per collector.
    pub hostname: String,
    /// Facts from its newest snapshot; `null` for hosts that uploaded the short
    /// (seed-style) format only.
    pub info: Option<HostInfo>,
    /// First upload.
    pub first_seen: DateTime<Utc>,
    /// Newest upload.
    pub last_seen: DateTime<Utc>,
    /// Reporting now: an agent is connected, or it uploaded within the last three
    /// intervals.
    pub online: bool,
    /// The collector's own machine.
    pub local: bool,
    /// Stored full snapshots.
    #[ts(type = "number")]
    pub snapshot_count: i64,
    /// The host's labels: its agent's (`--label`), with those an admin set laid over
    /// them key by key (see [`super::labels`]).
    #[serde(default)]
    #[ts(type = "Record<string, string>")]
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub labels: Labels,
    /// The labels an admin set (`PUT /api/hosts/{server_id}/labels`), which win over
    /// the agent's for their keys.
    #[serde(default)]
    #[ts(type = "Record<string, string>")]
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub admin_labels: Labels,
    /// The figures of its newest snapshot while the collector holds it live (the host
    /// reports now, or did lately); `null` otherwise.
    #[serde(default)]
    pub figures: Option<HostFigures>,
}

/// A host's figures for the fleet overview, taken from its newest snapshot when it is
/// published (one pass over its processes, once per snapshot, not per reader).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct HostFigures {
    /// When the snapshot was taken.
    pub taken_at: DateTime<Utc>,
    /// CPU of all cores together, 0-100.
    pub cpu_percent: f32,
    /// The last few CPU figures, oldest first, newest last (for a sparkline): as many
    /// as the collector saw since the host came online, up to [`CPU_TREND_POINTS`].
    pub cpu_trend: Vec<f32>,
    /// Memory in use.
    #[ts(type = "number")]
    pub memory_used_bytes: u64,
    /// Physical memory; `null` when not known.
    #[ts(type = "number | null")]
    pub memory_total_bytes: Option<u64>,
    /// Swap in use; `null` when not known.
    #[ts(type = "number | null")]
    pub swap_used_bytes: Option<u64>,
    /// Swap space; `null` when not known.
    #[ts(type = "number | null")]
    pub swap_total_bytes: Option<u64>,
    /// One-minute load average; `null` where the OS has none.
    pub load_one: Option<f64>,
    /// Bytes received per second over all interfaces but loopback; `null` when not known.
    pub received_bytes_per_sec: Option<f64>,
    /// Bytes sent per second; `null` when not known.
    pub sent_bytes_per_sec: Option<f64>,
    /// Processes.
    pub process_count: u32,
    /// The process using the most CPU; `null` for a snapshot without processes.
    pub busiest: Option<BusiestProcess>,
    /// The host's GPUs, as its snapshot lists them; absent where it has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[ts(optional, as = "Option<Vec<crate::model::GpuSample>>")]
    pub gpus: Vec<crate::model::GpuSample>,
}

/// How many CPU figures [`HostFigures::cpu_trend`] keeps.
pub const CPU_TREND_POINTS: usize = 60;

impl HostFigures {
    /// The figures of `snapshot`, its trend holding only its own CPU figure (whoever
    /// keeps the host's previous figures continues the trend).
    pub fn of(snapshot: &crate::model::Snapshot) -> HostFigures {
        let busiest = snapshot
            .processes
            .iter()
            .filter_map(|p| p.cpu_percent.map(|cpu| (p, cpu)))
            .filter(|(_, cpu)| cpu.is_finite())
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(p, cpu)| BusiestProcess { pid: p.pid, name: p.name.clone(), cpu_percent: cpu });
        let total = snapshot.network.total.as_ref();
        HostFigures {
            taken_at: snapshot.taken_at,
            cpu_percent: snapshot.cpu.total_percent,
            cpu_trend: vec![snapshot.cpu.total_percent],
            memory_used_bytes: snapshot.memory.used_bytes,
            memory_total_bytes: snapshot.memory.total_bytes,
            swap_used_bytes: snapshot.memory.swap_used_bytes,
            swap_total_bytes: snapshot.memory.swap_total_bytes,
            load_one: snapshot.cpu.load_average.map(|l| l.one),
            received_bytes_per_sec: total.map(|t| t.received_bytes_per_sec),
            sent_bytes_per_sec: total.map(|t| t.sent_bytes_per_sec),
            process_count: u32::try_from(snapshot.processes.len()).unwrap_or(u32::MAX),
            busiest,
            gpus: snapshot.gpus.clone(),
        }
    }

    /// These figures with the trend continued from `previous` (the host's figures
    /// before these), kept to [`CPU_TREND_POINTS`].
    pub fn after(mut self, previous: &HostFigures) -> HostFigures {
        let trend = &previous.cpu_trend;
        let keep = trend.len().min(CPU_TREND_POINTS - 1);
        let mut next = Vec::with_capacity(keep + 1);
        next.extend_from_slice(&trend[trend.len() - keep..]);
        next.push(self.cpu_percent);
        self.cpu_trend = next;
        self
    }
}

/// The process using the most CPU on a host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct BusiestProcess {
    /// Process id.
    pub pid: u32,
    /// Its name (from the monitored machine: show it as text).
    pub name: String,
    /// Its CPU, 100 = one core.
    pub cpu_percent: f32,
}

/// One host's change, as the fleet stream (`/ws/fleet`) sends it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct FleetRow {
    /// Host name.
    pub hostname: String,
    /// Reporting now.
    pub online: bool,
    /// Newest snapshot received; `null` when the collector has none in memory.
    pub last_seen: Option<DateTime<Utc>>,
    /// Figures of its newest snapshot; `null` while it has none live. The trend holds
    /// the newest figure only: a reader appends it to what it has.
    pub figures: Option<HostFigures>,
}

/// A message of the fleet stream (`/ws/fleet`): the hosts that changed since the last
/// one, at most one message a second.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FleetUpdate {
    /// Hosts whose figures or online state changed.
    Rows {
        /// One row per host that changed.
        rows: Vec<FleetRow>,
    },
}

/// `PUT /api/hosts/{server_id}/labels`'s body: the labels an admin sets on a host
/// (replacing those an admin set before; the agent's stay beneath them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostLabels {
    /// Labels by key; `{}` removes every label an admin set.
    #[ts(type = "Record<string, string>")]
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub labels: Labels,
}

/// One stored snapshot in a list (`GET /api/process-snapshots/list/`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct SnapshotSummary {
    /// Id for `GET /api/process-snapshots/{id}/`.
    #[ts(type = "number")]
    pub snapshot_id: i64,
    /// Host name.
    pub hostname: String,
    /// When it was taken.
    pub timestamp: DateTime<Utc>,
    /// The sampler's sequence number.
    #[ts(type = "number")]
    pub seq: i64,
    /// CPU in total.
    pub cpu_percent: f32,
    /// Memory in use.
    #[ts(type = "number")]
    pub memory_used_bytes: i64,
    /// Physical memory; `null` when the snapshot does not say (a short upload).
    #[ts(type = "number | null")]
    pub memory_total_bytes: Option<i64>,
    /// Processes.
    pub process_count: u32,
    /// Sockets.
    pub connection_count: u32,
}

/// Granularity of a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Every stored snapshot.
    Raw,
    /// One point per minute.
    Minute,
    /// One point per hour.
    Hour,
}

/// A time series of one host (`GET /api/process-snapshots/series/`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct Series {
    /// Host name.
    pub hostname: String,
    /// Granularity the collector chose for the requested range.
    pub tier: Tier,
    /// Points, oldest first.
    pub points: Vec<SeriesPoint>,
}

/// One point of a series: a snapshot (raw tier) or the average and peak of a bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct SeriesPoint {
    /// Snapshot time, or the bucket's start.
    pub timestamp: DateTime<Utc>,
    /// Snapshots behind this point.
    pub samples: u32,
    /// Average CPU in total.
    pub cpu_percent: f32,
    /// Peak CPU in total.
    pub cpu_max_percent: f32,
    /// Average memory in use.
    #[ts(type = "number")]
    pub memory_used_bytes: i64,
    /// Peak memory in use.
    #[ts(type = "number")]
    pub memory_max_bytes: i64,
    /// Average process count.
    pub process_count: f32,
    /// Peak process count.
    pub process_max: u32,
    /// Average send rate; `null` when no snapshot behind the point gave network figures
    /// (short uploads give none).
    pub sent_bytes_per_sec: Option<f64>,
    /// Average receive rate; `null` as for the send rate.
    pub received_bytes_per_sec: Option<f64>,
    /// Peak send rate; `null` as for the average.
    pub sent_max_bytes_per_sec: Option<f64>,
    /// Peak receive rate; `null` as for the average.
    pub received_max_bytes_per_sec: Option<f64>,
    /// Average bytes read per second by the disks together (see
    /// `Snapshot::disk_io_bytes_per_sec`); `null` when no snapshot behind the point
    /// measured disk I/O.
    pub disk_read_bytes_per_sec: Option<f64>,
    /// Average bytes written per second; `null` as for reads.
    pub disk_write_bytes_per_sec: Option<f64>,
    /// Peak read rate; `null` as for the average.
    pub disk_read_max_bytes_per_sec: Option<f64>,
    /// Peak write rate; `null` as for the average.
    pub disk_write_max_bytes_per_sec: Option<f64>,
    /// Average of the hottest sensor's temperature, °C; `null` when no snapshot behind
    /// the point had a temperature.
    pub temperature_celsius: Option<f64>,
    /// Peak of the hottest sensor's temperature, °C; `null` as for the average.
    pub temperature_max_celsius: Option<f64>,
}

/// A fleet-wide process search (`GET /api/processes?q=`): the matching processes of each
/// host's newest snapshot, grouped by host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct ProcessSearch {
    /// The query as given.
    pub query: String,
    /// Hosts with at least one match, by host name.
    pub hosts: Vec<ProcessSearchHost>,
    /// Hosts whose newest snapshot was searched.
    pub hosts_searched: u32,
    /// Matching processes on the hosts searched (returned or not).
    #[ts(type = "number")]
    pub matched: u64,
    /// Matching processes in `hosts`: at most `limit`.
    #[ts(type = "number")]
    pub returned: u64,
    /// The search stopped at `limit`; `next_hostname` is where to go on.
    pub truncated: bool,
    /// The first host not searched, for `from_hostname` (when `truncated`).
    pub next_hostname: Option<String>,
}

/// One host's matches in a [`ProcessSearch`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct ProcessSearchHost {
    /// The collector's id for the host (a `server_id`).
    #[ts(type = "number")]
    pub host_id: i64,
    /// Host name.
    pub hostname: String,
    /// Reporting now.
    pub online: bool,
    /// The snapshot searched (`GET /api/process-snapshots/{id}/`).
    #[ts(type = "number")]
    pub snapshot_id: i64,
    /// When that snapshot was taken.
    pub taken_at: DateTime<Utc>,
    /// Matching processes on this host (more than `processes` when the search stopped at
    /// its limit).
    #[ts(type = "number")]
    pub matched: u64,
    /// The matching processes, in pid order.
    pub processes: Vec<super::ProcessSample>,
}

/// A process that stood out in a time range (`GET /api/hosts/{id}/top-processes`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct TopProcess {
    /// Process name.
    pub name: String,
    /// Its pid when it peaked.
    pub pid: u32,
    /// Its command line when it peaked.
    pub cmd: String,
    /// Peak CPU (share of one core); `null` when no snapshot in the range said (short
    /// uploads may leave it out).
    pub cpu_max_percent: Option<f32>,
    /// Peak resident memory; `null` as for the CPU.
    #[ts(type = "number | null")]
    pub rss_max_bytes: Option<i64>,
    /// When the CPU peak was seen; `null` when the CPU is not known.
    pub cpu_peak_at: Option<DateTime<Utc>>,
    /// When the memory peak was seen; `null` when the memory is not known.
    pub rss_peak_at: Option<DateTime<Utc>>,
}

/// One process's figures in one stored snapshot
/// (`GET /api/hosts/{server_id}/process-history`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct ProcessHistoryPoint {
    /// Snapshot time.
    pub timestamp: DateTime<Utc>,
    /// CPU (share of one core); `null` when the snapshot does not say.
    pub cpu_percent: Option<f32>,
    /// Resident memory; `null` when the snapshot does not say.
    #[ts(type = "number | null")]
    pub rss_bytes: Option<u64>,
    /// Resident memory as a share of physical memory; `null` when not known.
    pub memory_percent: Option<f32>,
}

/// What an audit entry records: a process action, or an admin's action on a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// Stop a process (SIGSTOP).
    Suspend,
    /// Continue a stopped process (SIGCONT).
    Resume,
    /// Ask a process to exit (SIGTERM).
    Terminate,
    /// End a process at once (SIGKILL).
    Kill,
    /// Delete a host with its whole history.
    DeleteHost,
    /// A host bound without a machine fingerprint took the first one reported for it.
    BindMachine,
    /// An admin bound a host to an API key.
    BindHost,
    /// An admin reset a host's binding.
    UnbindHost,
    /// An admin made, changed or deleted an alert rule.
    AlertRule,
    /// An admin made, changed or deleted an alert channel.
    AlertChannel,
    /// An admin made or ended a silence.
    Silence,
    /// Someone read a process's details.
    Details,
    /// An admin made, changed or deleted a dashboard shared with everyone.
    Dashboard,
    /// An admin set a host's labels.
    HostLabels,
}

impl AuditAction {
    /// The process action this is, if it is one.
    pub fn process(self) -> Option<ProcessAction> {
        match self {
            Self::Suspend => Some(ProcessAction::Suspend),
            Self::Resume => Some(ProcessAction::Resume),
            Self::Terminate => Some(ProcessAction::Terminate),
            Self::Kill => Some(ProcessAction::Kill),
            Self::DeleteHost
            | Self::BindMachine
            | Self::BindHost
            | Self::UnbindHost
            | Self::AlertRule
            | Self::AlertChannel
            | Self::Silence
            | Self::Details
            | Self::Dashboard
            | Self::HostLabels => None,
        }
    }

    /// The name stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeleteHost => "delete_host",
            Self::BindMachine => "bind_machine",
            Self::BindHost => "bind_host",
            Self::UnbindHost => "unbind_host",
            Self::AlertRule => "alert_rule",
            Self::AlertChannel => "alert_channel",
            Self::Silence => "silence",
            Self::Details => "details",
            Self::Dashboard => "dashboard",
            Self::HostLabels => "host_labels",
            other => other.process().map_or("", ProcessAction::as_str),
        }
    }
}

impl From<ProcessAction> for AuditAction {
    fn from(action: ProcessAction) -> Self {
        match action {
            ProcessAction::Suspend => Self::Suspend,
            ProcessAction::Resume => Self::Resume,
            ProcessAction::Terminate => Self::Terminate,
            ProcessAction::Kill => Self::Kill,
        }
    }
}

impl std::str::FromStr for AuditAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Self::Suspend,
            Self::Resume,
            Self::Terminate,
            Self::Kill,
            Self::DeleteHost,
            Self::BindMachine,
            Self::BindHost,
            Self::UnbindHost,
            Self::AlertRule,
            Self::AlertChannel,
            Self::Silence,
            Self::Details,
            Self::Dashboard,
            Self::HostLabels,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
        .ok_or_else(|| format!("unknown audited action `{s}`"))
    }
}

/// One process action attempt, whatever its result (`GET /api/audit`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct AuditEntry {
    /// Entry id.
    #[ts(type = "number")]
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who (user name).
    pub actor: String,
    /// On which host (host name).
    pub hostname: String,
    /// Target pid (`null` for an action on the host itself).
    pub pid: Option<u32>,
    /// Target's name, when known.
    pub process_name: Option<String>,
    /// What was attempted.
    pub action: AuditAction,
    /// Whether a whole subtree was targeted.
    pub tree: bool,
    /// `"success"`, or the error code (`"permission_denied"`, ...).
    pub result: String,
    /// What happened, in words.
    pub message: String,
}

/// The most processes one bulk action may name.
pub const MAX_BULK_TARGETS: usize = 1000;

/// One process of a bulk action: its pid and the start time the caller saw, so that a
/// pid reused since then is refused for that process alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkTarget {
    /// Process id.
    pub pid: u32,
    /// Its start time as the caller's snapshot showed it (required).
    pub start_time: DateTime<Utc>,
}

/// `POST /api/monitoring/{server_id}/processes/{action}`'s body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkActionRequest {
    /// The processes, 1 to [`MAX_BULK_TARGETS`], each pid at most once.
    pub targets: Vec<BulkTarget>,
}

/// What became of one process of a bulk action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct BulkResult {
    /// Process id, as asked.
    pub pid: u32,
    /// `"success"`, or the refusal's code (`"pid_reused"`, `"not_found"`, `"protected"`,
    /// ...), as the audit log records it.
    pub status: String,
    /// Why it was refused or failed, in words; `null` on success.
    pub error: Option<String>,
}

/// The answer to a bulk action: one result per target, in the order asked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct BulkActionResponse {
    /// The outcomes.
    pub results: Vec<BulkResult>,
}

/// A user account as admins see it (`procyon user list`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct UserSummary {
    /// User id.
    #[ts(type = "number")]
    pub id: i64,
    /// Login name.
    pub username: String,
    /// Role.
    pub role: Role,
    /// When the account was made.
    pub created_at: DateTime<Utc>,
}

/// What an API key may do. Every key has one scope: a key that leaks gives away that
/// one thing only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, TS, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyScope {
    /// Report snapshots: uploads and the agent channel (every key made before scopes
    /// existed has this one).
    #[default]
    Upload,
    /// Read `/metrics` and nothing else (for a Prometheus server).
    Metrics,
}

impl KeyScope {
    /// The lower-case name, as stored and as typed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upload => "upload",
            Self::Metrics => "metrics",
        }
    }
}

impl std::str::FromStr for KeyScope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "upload" => Ok(Self::Upload),
            "metrics" => Ok(Self::Metrics),
            _ => Err(format!("unknown key scope `{s}`: expected upload or metrics")),
        }
    }
}

/// An agent API key as admins see it; the key itself is shown only once, at creation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct ApiKeySummary {
    /// Key id.
    #[ts(type = "number")]
    pub id: i64,
    /// Label given at creation.
    pub name: String,
    /// First characters of the key, to tell keys apart.
    pub prefix: String,
    /// What the key may do.
    pub scope: KeyScope,
    /// The only host name this key may upload for, if bound.
    pub hostname: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was last used.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked; a revoked key is refused.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The error body of every failed REST call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable kind (`"bad_request"`, `"not_found"`, `"pid_reused"`, ...).
    pub error: String,
    /// What went wrong and, where it helps, what to do.
    pub message: String,
    /// The offending field, for validation errors.
    pub field: Option<String>,
}
