//! What the alert API answers besides rules and channels: alerts now, their history,
//! notification attempts and silences. One definition each (TypeScript and the OpenAPI
//! schemas come from here).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ts_rs::TS;
use utoipa::ToSchema;

use super::rule::Severity;

/// Where an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition holds, not yet for the rule's `for_secs`.
    Pending,
    /// Fired and not resolved.
    Firing,
    /// Over.
    Resolved,
}

impl AlertState {
    /// The lower-case name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

impl std::str::FromStr for AlertState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pending" => Ok(AlertState::Pending),
            "firing" => Ok(AlertState::Firing),
            "resolved" => Ok(AlertState::Resolved),
            _ => Err(format!("unknown alert state `{s}`")),
        }
    }
}

/// One (rule, host, process) that is pending, firing, or resolved lately
/// (`GET /api/alerts`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct Alert {
    /// Pending, firing or resolved.
    pub state: AlertState,
    /// The rule's name.
    pub rule: String,
    /// The host.
    pub hostname: String,
    /// `""` for a host measure; the filter for processes taken together; `name (pid)`
    /// for one process; `mount /home` for one filesystem (`host.disk_percent`);
    /// `sensor NAME` for a named sensor (`host.temperature`).
    pub process: String,
    /// The rule's severity.
    pub severity: Severity,
    /// The value when it last changed (for `host.offline`, seconds without a
    /// snapshot).
    pub value: f64,
    /// Pending: since the condition holds; firing and resolved: when it fired.
    pub since: DateTime<Utc>,
    /// When it resolved.
    pub resolved_at: Option<DateTime<Utc>>,
}

/// A firing or a resolution (`GET /api/alerts/history`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct AlertEvent {
    /// Event id.
    #[ts(type = "number")]
    pub id: i64,
    /// `firing` or `resolved`.
    pub state: AlertState,
    /// The rule's name.
    pub rule: String,
    /// The host.
    pub hostname: String,
    /// As in [`Alert::process`].
    pub process: String,
    /// The rule's severity.
    pub severity: Severity,
    /// The value that caused it.
    pub value: f64,
    /// When the alert fired.
    pub since: DateTime<Utc>,
    /// When this happened.
    pub at: DateTime<Utc>,
}

/// How an attempt to notify a channel went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryResult {
    /// The receiver answered with success.
    Delivered,
    /// It could not be reached or answered with an error (`error` says which); tried
    /// again later unless this was the last attempt.
    Failed,
    /// Held back by a silence, or by the channel's quiet hours (then `error` says
    /// until when; one summary goes out when they end).
    Silenced,
}

impl DeliveryResult {
    /// The lower-case name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryResult::Delivered => "delivered",
            DeliveryResult::Failed => "failed",
            DeliveryResult::Silenced => "silenced",
        }
    }
}

impl std::str::FromStr for DeliveryResult {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "delivered" => Ok(DeliveryResult::Delivered),
            "failed" => Ok(DeliveryResult::Failed),
            "silenced" => Ok(DeliveryResult::Silenced),
            _ => Err(format!("unknown delivery result `{s}`")),
        }
    }
}

/// One attempt to notify one channel (`GET /api/alerts/deliveries`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct AlertDelivery {
    /// Attempt id.
    #[ts(type = "number")]
    pub id: i64,
    /// The channel's name.
    pub channel: String,
    /// The rule's name (`""` for a test).
    pub rule: String,
    /// The host (`""` for a test).
    pub hostname: String,
    /// As in [`Alert::process`].
    pub process: String,
    /// `firing`, `resolved`, `test`, or `summary` (what a channel's quiet hours held
    /// back, sent when they ended).
    pub status: String,
    /// 1 for the first attempt, then 2, 3, ...
    pub attempt: u32,
    /// How it went.
    pub result: DeliveryResult,
    /// Why it failed.
    pub error: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// A silence: notifications of a rule, a host, or both held back until `ends_at`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
pub struct Silence {
    /// Silence id.
    #[ts(type = "number")]
    pub id: i64,
    /// The rule it holds back; `null` for every rule.
    pub rule: Option<String>,
    /// The host it holds back; `null` for every host.
    pub hostname: Option<String>,
    /// When it ends.
    pub ends_at: DateTime<Utc>,
    /// Why, for the others.
    pub comment: String,
    /// Who made it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl Silence {
    /// Whether it holds back a notification of `rule` on `hostname` at `now`.
    pub fn covers(&self, rule: &str, hostname: &str, now: DateTime<Utc>) -> bool {
        now < self.ends_at
            && self.rule.as_deref().is_none_or(|r| r == rule)
            && self.hostname.as_deref().is_none_or(|h| h == hostname)
    }
}

/// `POST /api/silences`'s body: a rule, a host, or both, and until when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    /// The rule to hold back; left out for every rule.
    #[serde(default)]
    pub rule: Option<String>,
    /// The host to hold back; left out for every host.
    #[serde(default)]
    pub hostname: Option<String>,
    /// When it ends (in the future).
    pub ends_at: DateTime<Utc>,
    /// Why (up to 500 bytes).
    #[serde(default)]
    pub comment: String,
}
