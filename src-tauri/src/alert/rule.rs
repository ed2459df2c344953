//! Alert rules and channels as people write them (JSON through the API, TOML in the
//! `--alerts` file), their checks, and rules compiled for evaluation.
//!
//! These are the only definitions: the collector reads and stores them, the dashboard's
//! TypeScript is generated from them (`model::typescript`), and the OpenAPI document
//! describes them. Checks name the field at fault (`threshold`, `channels[1]`), so that
//! an answer can say exactly what to fix.

use serde::{Deserialize, Serialize};
use ts_rs::TS;
use utoipa::ToSchema;

pub use super::quiet::QuietHours;
use crate::tui::filter::ProcessQuery;

/// Longest rule, channel or silence name, in bytes.
pub const MAX_NAME_BYTES: usize = 100;
/// Most channels one rule may notify.
pub const MAX_RULE_CHANNELS: usize = 16;
/// Longest process filter, in bytes.
pub const MAX_FILTER_BYTES: usize = 1000;
/// Longest `for_secs` and `repeat_secs`: a week.
pub const MAX_SECS: u64 = 7 * 24 * 3600;
/// Longest channel URL or token, in bytes.
pub const MAX_URL_BYTES: usize = 2000;
/// Longest `mount` (a mount point) or `sensor` name, in bytes.
pub const MAX_MOUNT_BYTES: usize = 1024;

/// What a rule watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS, ToSchema)]
pub enum Metric {
    /// No snapshot from the host for `for_secs` (no threshold).
    #[serde(rename = "host.offline")]
    HostOffline,
    /// All cores together, 0-100.
    #[serde(rename = "host.cpu_percent")]
    HostCpuPercent,
    /// Memory in use as a share of the total, 0-100.
    #[serde(rename = "host.memory_percent")]
    HostMemoryPercent,
    /// Swap in use as a share of the total, 0-100 (0 without swap).
    #[serde(rename = "host.swap_percent")]
    HostSwapPercent,
    /// Load average over one minute.
    #[serde(rename = "host.load1")]
    HostLoad1,
    /// Bytes sent per second, all interfaces but loopback.
    #[serde(rename = "host.net_sent_bytes_per_sec")]
    HostNetSentBytesPerSec,
    /// Bytes received per second, all interfaces but loopback.
    #[serde(rename = "host.net_received_bytes_per_sec")]
    HostNetReceivedBytesPerSec,
    /// Receive and transmit errors per second, all interfaces but loopback, from the
    /// counters of the host's last two snapshots.
    #[serde(rename = "host.net_errors_per_sec")]
    HostNetErrorsPerSec,
    /// No process matches `process` for `for_secs` (no threshold).
    #[serde(rename = "process.absent")]
    ProcessAbsent,
    /// How many processes match `process`.
    #[serde(rename = "process.count")]
    ProcessCount,
    /// CPU of the matching processes (% of one core), each or summed (`aggregate`).
    #[serde(rename = "process.cpu_percent")]
    ProcessCpuPercent,
    /// Resident memory of the matching processes in bytes, each or summed (`aggregate`).
    #[serde(rename = "process.rss_bytes")]
    ProcessRssBytes,
    /// Whether `port` is listened on (1) or not (0); by default the rule fires when it
    /// is not (`op` `==`, `threshold` 0).
    #[serde(rename = "port.listening")]
    PortListening,
    /// A listening socket (port and process) in a snapshot of the host that its
    /// previous snapshot did not have; `process` optionally limits it to the sockets of
    /// matching processes. No threshold: it fires at once, one alert per port, and
    /// resolves once the socket is gone or `for_secs` after it fired (0: at the next
    /// snapshot).
    #[serde(rename = "host.new_listening_port")]
    HostNewListeningPort,
    /// Space in use on a filesystem, 0-100, as `df` counts it; `mount` names one mount
    /// point or `*` (the default) for each mount, each its own alert.
    #[serde(rename = "host.disk_percent")]
    HostDiskPercent,
    /// Degrees Celsius of the hottest temperature sensor, or of the one `sensor` names.
    #[serde(rename = "host.temperature")]
    HostTemperature,
}

impl Metric {
    /// Every metric, in the order documents list them.
    pub const ALL: [Metric; 16] = [
        Metric::HostOffline,
        Metric::HostCpuPercent,
        Metric::HostMemoryPercent,
        Metric::HostSwapPercent,
        Metric::HostLoad1,
        Metric::HostNetSentBytesPerSec,
        Metric::HostNetReceivedBytesPerSec,
        Metric::HostNetErrorsPerSec,
        Metric::HostDiskPercent,
        Metric::HostTemperature,
        Metric::ProcessAbsent,
        Metric::ProcessCount,
        Metric::ProcessCpuPercent,
        Metric::ProcessRssBytes,
        Metric::PortListening,
        Metric::HostNewListeningPort,
    ];

    /// The name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::HostOffline => "host.offline",
            Metric::HostCpuPercent => "host.cpu_percent",
            Metric::HostMemoryPercent => "host.memory_percent",
            Metric::HostSwapPercent => "host.swap_percent",
            Metric::HostLoad1 => "host.load1",
            Metric::HostNetSentBytesPerSec => "host.net_sent_bytes_per_sec",
            Metric::HostNetReceivedBytesPerSec => "host.net_received_bytes_per_sec",
            Metric::HostNetErrorsPerSec => "host.net_errors_per_sec",
            Metric::HostDiskPercent => "host.disk_percent",
            Metric::HostTemperature => "host.temperature",
            Metric::ProcessAbsent => "process.absent",
            Metric::ProcessCount => "process.count",
            Metric::ProcessCpuPercent => "process.cpu_percent",
            Metric::ProcessRssBytes => "process.rss_bytes",
            Metric::PortListening => "port.listening",
            Metric::HostNewListeningPort => "host.new_listening_port",
        }
    }

    /// Whether the rule names processes (`process` is required).
    pub fn needs_process(self) -> bool {
        matches!(
            self,
            Metric::ProcessAbsent | Metric::ProcessCount | Metric::ProcessCpuPercent | Metric::ProcessRssBytes
        )
    }

    /// Whether the rule is a condition without a level (`op`, `threshold` and `clear`
    /// are not taken).
    pub fn is_condition(self) -> bool {
        matches!(self, Metric::HostOffline | Metric::ProcessAbsent | Metric::HostNewListeningPort)
    }

    /// Whether the rule may name processes without having to (`process` is optional).
    pub fn takes_process(self) -> bool {
        self.needs_process() || self == Metric::HostNewListeningPort
    }
}

/// How a value is compared with the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS, ToSchema)]
pub enum Op {
    /// Above.
    #[serde(rename = ">")]
    Gt,
    /// At or above.
    #[serde(rename = ">=")]
    Ge,
    /// Below.
    #[serde(rename = "<")]
    Lt,
    /// At or below.
    #[serde(rename = "<=")]
    Le,
    /// Equal.
    #[serde(rename = "==")]
    Eq,
    /// Not equal.
    #[serde(rename = "!=")]
    Ne,
}

impl Op {
    /// The symbol, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    /// Whether `value op threshold` holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
            Op::Eq => value == threshold,
            Op::Ne => value != threshold,
        }
    }
}

/// How bad it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, TS, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Worth looking at soon.
    #[default]
    Warning,
    /// Worth looking at now.
    Critical,
}

impl Severity {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// For process measures: one alert per matching process, or one for their sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, TS, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    /// Each matching process is its own alert (`process` label: `name (pid)`).
    #[default]
    Each,
    /// The matching processes' values summed, one alert per host.
    Sum,
}

fn any_host() -> String {
    "*".into()
}

/// A rule: what to watch, where, when it fires and resolves, and whom to tell.
///
/// JSON: `{"name", "metric", "host", "process", "op", "threshold", "for_secs", "clear",
/// "severity", "repeat_secs", "channels": [names]}`, plus `port` for `port.listening`
/// and `aggregate` for process measures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Unique name, 1 to 100 bytes; the `alertname` label.
    pub name: String,
    /// What is watched.
    pub metric: Metric,
    /// A host name, or `*` for every host (the default).
    #[serde(default = "any_host")]
    pub host: String,
    /// Which processes, in the dashboard's filter language (`name:nginx user:www-data`);
    /// required for `process.*` metrics, not taken otherwise.
    #[serde(default)]
    pub process: Option<String>,
    /// The port of `port.listening`.
    #[serde(default)]
    pub port: Option<u16>,
    /// Process measures: `each` (default) or `sum`.
    #[serde(default)]
    pub aggregate: Aggregate,
    /// The mount point `host.disk_percent` watches (an absolute path such as `/home`,
    /// or a drive such as `C:\\`), or `*` (the default) for every mount, each its own
    /// alert. Not taken by other metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub mount: Option<String>,
    /// The sensor `host.temperature` watches, by its name in the snapshot (e.g.
    /// `coretemp Package id 0`); the hottest sensor when not given (or `*`). Not taken by
    /// other metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub sensor: Option<String>,
    /// Comparison; `>` by default (`==` for `port.listening`).
    #[serde(default)]
    pub op: Option<Op>,
    /// The level that fires the rule; required unless the metric is a condition
    /// (`host.offline`, `process.absent`) or `port.listening` (default 0).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// How long the condition must hold before the rule fires (for `host.offline`, how
    /// long without a snapshot: at least 5 s, default 60).
    #[serde(default)]
    #[ts(type = "number")]
    pub for_secs: u64,
    /// The level that resolves a firing rule (hysteresis): with `>` the value must fall
    /// below it, with `<` rise above it. Defaults to `threshold`.
    #[serde(default)]
    pub clear: Option<f64>,
    /// `info`, `warning` (default) or `critical`.
    #[serde(default)]
    pub severity: Severity,
    /// Notify again this often while firing; 0 (default) notifies once.
    #[serde(default)]
    #[ts(type = "number")]
    pub repeat_secs: u64,
    /// Names of the channels to notify.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Loaded from the `--alerts` file: shown, never changed through the API. Ignored
    /// in requests (so that an answer can be sent back changed).
    #[serde(default)]
    pub read_only: bool,
}

/// Where notifications go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// A POST in Alertmanager's webhook format (`version: "4"`).
    Webhook,
    /// Alerts pushed to an Alertmanager's `/api/v2/alerts` (`url` is its base URL).
    Alertmanager,
    /// A Slack-style incoming webhook (`{"text": ...}`; Mattermost and Discord's
    /// `/slack` endpoint take it too).
    Slack,
    /// An ntfy topic URL (`https://ntfy.sh/TOPIC`).
    Ntfy,
    /// Mail over SMTP (`email` holds the server, the sender and the recipients; no
    /// `url`).
    Email,
    /// The desktop app's native notification, for the app's own rules (no `url`). Only
    /// the desktop app takes it: a collector has no screen to show it on.
    Desktop,
}

impl ChannelKind {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Alertmanager => "alertmanager",
            ChannelKind::Slack => "slack",
            ChannelKind::Ntfy => "ntfy",
            ChannelKind::Email => "email",
            ChannelKind::Desktop => "desktop",
        }
    }

    /// Whether the channel posts to `url` (email and desktop channels have none).
    pub fn has_url(self) -> bool {
        !matches!(self, ChannelKind::Email | ChannelKind::Desktop)
    }
}

/// How an email channel's connection to its SMTP server is secured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, TS, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text (a relay on the same machine or network only); default port 25.
    None,
    /// Plain, then upgraded with STARTTLS, which must succeed; default port 587.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS); default port 465.
    Tls,
}

impl SmtpTls {
    /// The port used when none is given.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
        }
    }
}

/// Most recipients of one email channel.
pub const MAX_RECIPIENTS: usize = 20;

/// An email channel's settings: `{"host", "port", "tls", "username", "password", "from",
/// "to": [...]}`. The password is a secret: stored only by the collector, never in
/// answers (`password_set` says whether there is one).
#[derive(Clone, PartialEq, Serialize, Deserialize, TS, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    /// The SMTP server's host name or address.
    pub host: String,
    /// Its port; by default 587 with STARTTLS, 465 with TLS, 25 without.
    #[serde(default)]
    pub port: Option<u16>,
    /// `none`, `starttls` (default) or `tls`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// The user to authenticate as (PLAIN or LOGIN); none: no authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// The password. Never in answers; on `PUT`, leaving it out keeps the stored one,
    /// `""` removes it.
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
    /// Whether a password is stored (answers only; ignored in requests).
    #[serde(default)]
    pub password_set: bool,
    /// The sender, `alerts@example.org` or `Procyon <alerts@example.org>`.
    pub from: String,
    /// The recipients, 1 to 20.
    pub to: Vec<String>,
}

impl std::fmt::Debug for EmailSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password_set", &self.password.is_some())
            .field("from", &self.from)
            .field("to", &self.to)
            .finish()
    }
}

impl EmailSettings {
    /// The port in use.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.tls.default_port())
    }
}

/// A mail address as people write it: `a@b` or `Name <a@b>`, printable, bounded. The
/// collector reads it fully with the mail library before storing it.
fn check_address(field: &str, address: &str) -> Result<(), Invalid> {
    let bare = address.rsplit_once('<').map_or(address, |(_, a)| a.trim_end_matches('>'));
    let ok = address.len() <= 320
        && !address.chars().any(char::is_control)
        && bare.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !bare.chars().any(char::is_whitespace)
        });
    if ok { Ok(()) } else { Err(invalid(field, format!("`{address}` is not a mail address such as ops@example.org."))) }
}

/// A notification channel. `url`, `token` and the email password are secrets (a Slack
/// URL is its own password): answers carry them masked, never whole.
#[derive(Clone, PartialEq, Serialize, Deserialize, TS, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertChannel {
    /// Unique name, 1 to 100 bytes.
    pub name: String,
    /// What it is.
    pub kind: ChannelKind,
    /// Where to send (http or https); not taken by `email` and `desktop` channels. In
    /// answers, only its scheme, host and port.
    #[serde(default)]
    pub url: String,
    /// Sent as `Authorization: Bearer TOKEN` when set (ntfy access tokens, a receiver's
    /// secret). Never in answers (`token_set` says whether there is one). On `PUT`,
    /// leaving it out keeps the stored one; `""` removes it.
    #[serde(default, skip_serializing)]
    pub token: Option<String>,
    /// Whether a token is stored (answers only; ignored in requests).
    #[serde(default)]
    pub token_set: bool,
    /// The SMTP server, sender and recipients of an `email` channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailSettings>,
    /// When notifications are held back, to go out as one summary when they end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
    /// Loaded from the `--alerts` file: shown, never changed through the API (ignored
    /// in requests).
    #[serde(default)]
    pub read_only: bool,
}

impl std::fmt::Debug for AlertChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL's path or the token: logs are not the place for them.
        f.debug_struct("AlertChannel")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &mask_url(&self.url))
            .field("token_set", &self.token.is_some())
            .field("email", &self.email)
            .field("quiet_hours", &self.quiet_hours)
            .finish()
    }
}

impl AlertChannel {
    /// The channel as answers show it: the URL cut to its scheme, host and port, no
    /// token.
    pub fn masked(&self) -> AlertChannel {
        AlertChannel {
            url: if self.url.is_empty() { String::new() } else { mask_url(&self.url) },
            token_set: self.token.as_deref().is_some_and(|t| !t.is_empty()),
            token: None,
            email: self.email.as_ref().map(|e| EmailSettings {
                password_set: e.password.as_deref().is_some_and(|p| !p.is_empty()),
                password: None,
                ..e.clone()
            }),
            ..self.clone()
        }
    }
}

/// `https://user:pw@hooks.example/services/T0/B0/secret?x=1` → `https://hooks.example/…`:
/// what a person needs to recognise the channel, without what would let someone use it.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "…".into() };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    let cut = rest.len() > authority.len() && rest[authority.len()..] != *"/";
    format!("{scheme}://{host}{}", if cut || authority.contains('@') { "/…" } else { "/" })
}

/// A bad rule or channel: the field at fault and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The field, as a path (`channels[1]`).
    pub field: String,
    /// What is wrong, for a person.
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid { field: field.into(), message: message.into() }
}

/// Checks a name of a rule, channel or silence.
pub fn check_name(field: &str, name: &str) -> Result<(), Invalid> {
    if name.trim().is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) || name.contains('/')
    {
        return Err(invalid(field, format!("A name is 1 to {MAX_NAME_BYTES} bytes, printable, without `/`.")));
    }
    Ok(())
}

/// Checks a `mount`: an absolute path (`/`, `/home`, `/mnt/my disk`) without `.` or
/// `..` parts, empty parts or a trailing `/`, or a Windows drive (`C:\\`, `D:`).
fn check_mount(m: &str) -> Result<(), Invalid> {
    let drive = m.len() <= 3
        && m.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
        && m.get(1..2) == Some(":")
        && matches!(m.get(2..), Some("" | "\\" | "/"));
    let path = m == "/"
        || (m.starts_with('/')
            && !m.ends_with('/')
            && m[1..].split('/').all(|part| !part.is_empty() && part != "." && part != ".."));
    if m.len() > MAX_MOUNT_BYTES || m.chars().any(char::is_control) || !(drive || path) {
        return Err(invalid(
            "mount",
            format!(
                "A mount is an absolute mount point such as `/` or `/home` (up to {MAX_MOUNT_BYTES} bytes), a drive \
                 such as `C:\\`, or `*` for every mount."
            ),
        ));
    }
    Ok(())
}

/// A host name or `*`, as rules and silences take it.
pub fn check_host(field: &str, host: &str) -> Result<(), Invalid> {
    if host.is_empty() || host.len() > 253 || host.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid(field, "A host is a host name (up to 253 characters, no spaces) or `*` for every host."));
    }
    Ok(())
}

impl AlertRule {
    /// Checks the rule by itself (that its channels exist is the caller's to check) and
    /// compiles it for evaluation.
    pub fn compile(&self) -> Result<CompiledRule, Invalid> {
        check_name("name", &self.name)?;
        check_host("host", &self.host)?;
        let metric = self.metric;
        let query = match (&self.process, metric.needs_process()) {
            (None, true) => {
                return Err(invalid(
                    "process",
                    format!("{} needs `process`, a filter such as `name:nginx`.", metric.as_str()),
                ));
            }
            (Some(_), false) if !metric.takes_process() => {
                return Err(invalid("process", format!("{} takes no `process` filter.", metric.as_str())));
            }
            (Some(filter), _) => {
                if filter.len() > MAX_FILTER_BYTES {
                    return Err(invalid("process", format!("A filter is at most {MAX_FILTER_BYTES} bytes.")));
                }
                let query = ProcessQuery::compile(filter);
                if !query.errors.is_empty() {
                    return Err(invalid("process", query.errors.join("; ")));
                }
                if query.is_empty() {
                    return Err(invalid("process", "The filter matches every process; name some, e.g. `name:nginx`."));
                }
                Some(query)
            }
            (None, false) => None,
        };
        let port = match (metric, self.port) {
            (Metric::PortListening, None) => return Err(invalid("port", "port.listening needs `port`.")),
            (Metric::PortListening, Some(0)) => return Err(invalid("port", "A port is 1 to 65535.")),
            (Metric::PortListening, Some(p)) => Some(p),
            (_, Some(_)) => return Err(invalid("port", format!("{} takes no `port`.", metric.as_str()))),
            (_, None) => None,
        };
        let mount = match (metric, self.mount.as_deref()) {
            (Metric::HostDiskPercent, None | Some("*")) => None,
            (Metric::HostDiskPercent, Some(m)) => {
                check_mount(m)?;
                Some(m.to_owned())
            }
            (_, Some(_)) => return Err(invalid("mount", format!("{} takes no `mount`.", metric.as_str()))),
            (_, None) => None,
        };
        let sensor = match (metric, self.sensor.as_deref()) {
            (Metric::HostTemperature, None | Some("*")) => None,
            (Metric::HostTemperature, Some(s)) => {
                if s.trim().is_empty() || s.len() > MAX_MOUNT_BYTES || s.chars().any(char::is_control) {
                    return Err(invalid(
                        "sensor",
                        format!("A sensor is its name as the host reports it (1 to {MAX_MOUNT_BYTES} bytes), or `*`."),
                    ));
                }
                Some(s.to_owned())
            }
            (_, Some(_)) => return Err(invalid("sensor", format!("{} takes no `sensor`.", metric.as_str()))),
            (_, None) => None,
        };
        if self.aggregate == Aggregate::Sum && !matches!(metric, Metric::ProcessCpuPercent | Metric::ProcessRssBytes) {
            return Err(invalid("aggregate", "`sum` is for process.cpu_percent and process.rss_bytes only."));
        }
        let (op, threshold, clear) = if metric.is_condition() {
            for (field, given) in
                [("op", self.op.is_some()), ("threshold", self.threshold.is_some()), ("clear", self.clear.is_some())]
            {
                if given {
                    return Err(invalid(field, format!("{} is a condition: it takes no `{field}`.", metric.as_str())));
                }
            }
            (Op::Gt, 0.0, 0.0)
        } else {
            let default_op = if metric == Metric::PortListening { Op::Eq } else { Op::Gt };
            let op = self.op.unwrap_or(default_op);
            let threshold = match (self.threshold, metric) {
                (Some(t), _) => t,
                (None, Metric::PortListening) => 0.0,
                (None, _) => {
                    return Err(invalid("threshold", format!("{} needs a numeric `threshold`.", metric.as_str())));
                }
            };
            if !threshold.is_finite() {
                return Err(invalid("threshold", "The threshold is a finite number."));
            }
            let clear = match (self.clear, op) {
                (None, _) => threshold,
                (Some(_), Op::Eq | Op::Ne) => {
                    return Err(invalid("clear", "`clear` is for >, >=, < and <= (a level to fall back past)."));
                }
                (Some(c), _) if !c.is_finite() => return Err(invalid("clear", "`clear` is a finite number.")),
                (Some(c), Op::Gt | Op::Ge) if c > threshold => {
                    return Err(invalid(
                        "clear",
                        format!("With {} the clear level is at most the threshold.", op.as_str()),
                    ));
                }
                (Some(c), Op::Lt | Op::Le) if c < threshold => {
                    return Err(invalid(
                        "clear",
                        format!("With {} the clear level is at least the threshold.", op.as_str()),
                    ));
                }
                (Some(c), _) => c,
            };
            (op, threshold, clear)
        };
        if self.for_secs > MAX_SECS {
            return Err(invalid("for_secs", format!("At most {MAX_SECS} (a week).")));
        }
        if metric == Metric::HostOffline && self.for_secs != 0 && self.for_secs < 5 {
            return Err(invalid("for_secs", "host.offline needs at least 5 s without a snapshot."));
        }
        if self.repeat_secs > MAX_SECS {
            return Err(invalid("repeat_secs", format!("At most {MAX_SECS} (a week).")));
        }
        if metric == Metric::HostNewListeningPort && self.repeat_secs != 0 {
            return Err(invalid("repeat_secs", "host.new_listening_port tells once per new port: no `repeat_secs`."));
        }
        if self.repeat_secs != 0 && self.repeat_secs < 10 {
            return Err(invalid("repeat_secs", "Repeat at most every 10 s (or 0: never)."));
        }
        if self.channels.len() > MAX_RULE_CHANNELS {
            return Err(invalid("channels", format!("At most {MAX_RULE_CHANNELS} channels.")));
        }
        for (i, c) in self.channels.iter().enumerate() {
            check_name(&format!("channels[{i}]"), c)?;
            if self.channels[..i].contains(c) {
                return Err(invalid(format!("channels[{i}]"), format!("`{c}` is listed twice.")));
            }
        }
        let for_secs = match (metric, self.for_secs) {
            (Metric::HostOffline, 0) => 60,
            (_, s) => s,
        };
        Ok(CompiledRule {
            rule: self.clone(),
            host: (self.host != "*").then(|| self.host.clone()),
            query,
            port,
            mount,
            sensor,
            op,
            threshold,
            clear,
            for_ms: i64::try_from(for_secs * 1000).unwrap_or(i64::MAX),
            repeat_ms: i64::try_from(self.repeat_secs * 1000).unwrap_or(i64::MAX),
        })
    }
}

impl AlertChannel {
    /// Checks the channel by itself (whether its URL points at the collector is the
    /// caller's to check: it needs the network).
    pub fn check(&self) -> Result<(), Invalid> {
        check_name("name", &self.name)?;
        if let Some(quiet) = &self.quiet_hours {
            quiet.compile()?;
        }
        match (self.kind, &self.email) {
            (ChannelKind::Email, None) => {
                return Err(invalid("email", "An email channel needs `email`: {host, from, to, ...}."));
            }
            (ChannelKind::Email, Some(email)) => return self.check_email(email),
            (_, Some(_)) => {
                return Err(invalid("email", format!("A {} channel takes no `email`.", self.kind.as_str())));
            }
            (ChannelKind::Desktop, None) => {
                if !self.url.is_empty() {
                    return Err(invalid("url", "A desktop channel takes no `url`."));
                }
                if self.token.is_some() {
                    return Err(invalid("token", "A desktop channel takes no `token`."));
                }
                return Ok(());
            }
            (_, None) => {}
        }
        let url = self.url.as_str();
        let lower = url.to_ascii_lowercase();
        let rest = lower.strip_prefix("http://").or_else(|| lower.strip_prefix("https://"));
        let Some(rest) = rest else { return Err(invalid("url", "The URL is http:// or https://.")) };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = authority.rsplit('@').next().unwrap_or("");
        if host.is_empty() || host.starts_with(':') {
            return Err(invalid("url", "The URL names no host."));
        }
        if url.len() > MAX_URL_BYTES || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid("url", format!("A URL is at most {MAX_URL_BYTES} bytes, without spaces.")));
        }
        if let Some(token) = &self.token
            && (token.len() > MAX_URL_BYTES || token.chars().any(|c| c.is_control()))
        {
            return Err(invalid("token", format!("A token is at most {MAX_URL_BYTES} printable bytes.")));
        }
        Ok(())
    }
}

impl AlertChannel {
    fn check_email(&self, email: &EmailSettings) -> Result<(), Invalid> {
        if !self.url.is_empty() {
            return Err(invalid("url", "An email channel takes no `url`: its server is `email.host`."));
        }
        if self.token.is_some() {
            return Err(invalid("token", "An email channel takes no `token`: see `email.username` and `password`."));
        }
        let host = email.host.as_str();
        if host.is_empty()
            || host.len() > 253
            || host.chars().any(|c| c.is_control() || c.is_whitespace() || "/@?#".contains(c))
        {
            return Err(invalid("email.host", "The SMTP server's host name or address, e.g. smtp.example.org."));
        }
        if email.port == Some(0) {
            return Err(invalid("email.port", "A port is 1 to 65535."));
        }
        for (field, value) in [("email.username", &email.username), ("email.password", &email.password)] {
            if value.as_deref().is_some_and(|v| v.len() > 500 || v.chars().any(char::is_control)) {
                return Err(invalid(field, "At most 500 printable bytes."));
            }
        }
        if email.password.as_deref().is_some_and(|p| !p.is_empty()) && email.username.is_none() {
            return Err(invalid("email.username", "A password needs a `username` to go with it."));
        }
        check_address("email.from", &email.from)?;
        if email.to.is_empty() || email.to.len() > MAX_RECIPIENTS {
            return Err(invalid("email.to", format!("1 to {MAX_RECIPIENTS} recipients.")));
        }
        for (i, to) in email.to.iter().enumerate() {
            check_address(&format!("email.to[{i}]"), to)?;
        }
        Ok(())
    }
}

/// A rule ready to evaluate: its filter parsed once, its defaults filled in.
pub struct CompiledRule {
    /// The rule as written.
    pub rule: AlertRule,
    /// The host it is limited to; `None` for every host.
    pub host: Option<String>,
    /// The process filter, parsed.
    pub query: Option<ProcessQuery>,
    /// The port of `port.listening`.
    pub port: Option<u16>,
    /// The mount point of `host.disk_percent`; `None` for every mount.
    pub mount: Option<String>,
    /// The sensor of `host.temperature`; `None` for the hottest.
    pub sensor: Option<String>,
    /// Comparison.
    pub op: Op,
    /// Fires past this.
    pub threshold: f64,
    /// Resolves past this.
    pub clear: f64,
    /// `for_secs` in ms (60 s for `host.offline` when not given).
    pub for_ms: i64,
    /// `repeat_secs` in ms.
    pub repeat_ms: i64,
}

impl std::fmt::Debug for CompiledRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledRule").field("rule", &self.rule).finish()
    }
}

impl CompiledRule {
    /// Whether the rule watches `hostname`.
    pub fn watches(&self, hostname: &str) -> bool {
        self.host.as_deref().is_none_or(|h| h == hostname)
    }

    /// Whether a level fires the rule.
    pub fn fires(&self, value: f64) -> bool {
        self.op.holds(value, self.threshold)
    }

    /// Whether a level resolves the firing rule: past `clear`, on the other side from
    /// the threshold.
    pub fn clears(&self, value: f64) -> bool {
        match self.op {
            Op::Gt | Op::Ge => value < self.clear || (self.clear == self.threshold && !self.fires(value)),
            Op::Lt | Op::Le => value > self.clear || (self.clear == self.threshold && !self.fires(value)),
            Op::Eq | Op::Ne => !self.fires(value),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rule(json: serde_json::Value) -> Result<AlertRule, String> {
        serde_json::from_value(json).map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_rule_reads_and_compiles() {
        let r = rule(serde_json::json!({
            "name": "nginx busy", "metric": "process.cpu_percent", "host": "web-1",
            "process": "name:nginx user:www-data", "op": ">", "threshold": 90, "for_secs": 30,
            "clear": 70, "severity": "critical", "repeat_secs": 600, "channels": ["ops"]
        }))
        .unwrap();
        let c = r.compile().unwrap();
        assert!(c.watches("web-1") && !c.watches("web-2"));
        assert!(c.fires(91.0) && !c.fires(90.0));
        assert!(!c.clears(80.0), "between clear and threshold it stays firing");
        assert!(c.clears(69.9));
        assert_eq!(c.for_ms, 30_000);
    }

    #[test]
    fn disk_and_temperature_rules_name_a_mount_or_a_sensor() {
        let compile = |json: serde_json::Value| rule(json).unwrap().compile();
        let disk = |mount: serde_json::Value| {
            compile(serde_json::json!({"name": "r", "metric": "host.disk_percent", "threshold": 90, "mount": mount}))
        };
        assert_eq!(disk(serde_json::json!("*")).unwrap().mount, None);
        assert_eq!(disk(serde_json::json!("/home")).unwrap().mount.as_deref(), Some("/home"));
        assert_eq!(disk(serde_json::json!("/mnt/my disk")).unwrap().mount.as_deref(), Some("/mnt/my disk"));
        assert_eq!(disk(serde_json::json!("C:\\")).unwrap().mount.as_deref(), Some("C:\\"));
        for bad in ["home", "/home/", "//x", "/a/../b", "", "/x\n", "C:x", "**"] {
            assert_eq!(disk(serde_json::json!(bad)).unwrap_err().field, "mount", "{bad:?}");
        }
        let no_mount = compile(serde_json::json!({"name": "r", "metric": "host.disk_percent", "threshold": 90}));
        assert_eq!(no_mount.unwrap().mount, None, "every mount by default");
        let wrong =
            compile(serde_json::json!({"name": "r", "metric": "host.cpu_percent", "threshold": 9, "mount": "/"}));
        assert_eq!(wrong.unwrap_err().field, "mount");
        let t = compile(
            serde_json::json!({"name": "r", "metric": "host.temperature", "threshold": 80, "sensor": "nvme Composite"}),
        );
        assert_eq!(t.unwrap().sensor.as_deref(), Some("nvme Composite"));
        let t = compile(serde_json::json!({"name": "r", "metric": "host.temperature", "threshold": 80, "sensor": " "}));
        assert_eq!(t.unwrap_err().field, "sensor");
        let t =
            compile(serde_json::json!({"name": "r", "metric": "host.disk_percent", "threshold": 80, "sensor": "x"}));
        assert_eq!(t.unwrap_err().field, "sensor");
    }

    #[test]
    fn bad_rules_name_their_field() {
        let base = serde_json::json!({"name": "r", "metric": "host.cpu_percent", "threshold": 90});
        let cases: &[(serde_json::Value, &str)] = &[
            (serde_json::json!({"metric": "process.absent"}), "process"),
            (serde_json::json!({"threshold": null}), "threshold"),
            (serde_json::json!({"clear": 95}), "clear"),
            (serde_json::json!({"process": "name:x"}), "process"),
            (serde_json::json!({"metric": "process.count", "process": "cpu>lots"}), "process"),
            (serde_json::json!({"metric": "port.listening"}), "port"),
            (serde_json::json!({"name": ""}), "name"),
            (serde_json::json!({"host": "two words"}), "host"),
            (serde_json::json!({"repeat_secs": 3}), "repeat_secs"),
            (serde_json::json!({"channels": ["a", "a"]}), "channels[1]"),
            (serde_json::json!({"metric": "host.offline", "threshold": 1}), "threshold"),
            (serde_json::json!({"aggregate": "sum"}), "aggregate"),
        ];
        for (patch, field) in cases {
            let mut json = base.clone();
            for (k, v) in patch.as_object().unwrap() {
                json[k] = v.clone();
            }
            let err = rule(json.clone()).unwrap().compile().unwrap_err();
            assert_eq!(err.field, *field, "{json}: {err}");
        }
        assert!(rule(serde_json::json!({"name": "r", "metric": "host.cpu", "threshold": 1})).is_err());
        assert!(rule(serde_json::json!({"name": "r", "metric": "host.cpu_percent", "threshold": "x"})).is_err());
    }

    #[test]
    fn urls_are_masked_to_their_host() {
        assert_eq!(mask_url("https://hooks.slack.com/services/T0/B0/XYZ"), "https://hooks.slack.com/…");
        assert_eq!(mask_url("http://u:pw@example.org:8080/"), "http://example.org:8080/…");
        assert_eq!(mask_url("http://example.org:9093"), "http://example.org:9093/");
        assert_eq!(mask_url("http://example.org/?token=abc"), "http://example.org/…");
        let channel = AlertChannel {
            name: "n".into(),
            kind: ChannelKind::Ntfy,
            url: "https://ntfy.sh/secret-topic".into(),
            token: Some("tk_abc".into()),
            token_set: false,
            email: None,
            quiet_hours: None,
            read_only: false,
        };
        let shown = serde_json::to_string(&channel.masked()).unwrap();
        assert!(!shown.contains("secret-topic") && !shown.contains("tk_abc"), "{shown}");
        assert!(shown.contains("\"token_set\":true"));
        assert!(!format!("{channel:?}").contains("secret"));
    }

    #[test]
    fn email_channels_keep_their_password_to_themselves() {
        let channel: AlertChannel = serde_json::from_value(serde_json::json!({
            "name": "mail", "kind": "email", "quiet_hours": {"start": "22:00", "end": "07:00", "time_zone": "UTC"},
            "email": {"host": "smtp.example.org", "username": "alerts", "password": "s3cret-pw",
                      "from": "Procyon <alerts@example.org>", "to": ["ops@example.org"]}
        }))
        .unwrap();
        channel.check().unwrap();
        let email = channel.email.as_ref().unwrap();
        assert_eq!((email.tls, email.port()), (SmtpTls::Starttls, 587));
        let shown = serde_json::to_string(&channel.masked()).unwrap();
        assert!(!shown.contains("s3cret-pw") && shown.contains("\"password_set\":true"), "{shown}");
        assert!(!serde_json::to_string(&channel).unwrap().contains("s3cret-pw"), "never serialised");
        assert!(!format!("{channel:?}").contains("s3cret-pw"));
        let mut no_user = channel.clone();
        no_user.email.as_mut().unwrap().username = None;
        assert_eq!(no_user.check().unwrap_err().field, "email.username", "a password needs a user");
        let mut zero = channel.clone();
        zero.email.as_mut().unwrap().port = Some(0);
        assert_eq!(zero.check().unwrap_err().field, "email.port");
        let mut bad_quiet = channel;
        bad_quiet.quiet_hours.as_mut().unwrap().start = "7pm".into();
        assert_eq!(bad_quiet.check().unwrap_err().field, "quiet_hours.start");
    }
}
