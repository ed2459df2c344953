//! Notifications: what each kind of channel is sent, and sending it.
//!
//! - `webhook`: Alertmanager's webhook format (`version: "4"`), one message per alert,
//!   so that receivers written for Alertmanager take it unchanged;
//! - `alertmanager`: the alert pushed to an Alertmanager's `POST /api/v2/alerts`;
//! - `slack`: `{"text": ...}` (Slack, Mattermost, Discord's `/slack` endpoint);
//! - `ntfy`: the summary as the body of a POST to the topic's URL, with `Title`,
//!   `Priority` and `Tags` headers.
//!
//! Every request has a timeout, follows no redirect (one could lead back to the
//! collector), and is refused when its URL resolves to the collector itself.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::Digest;

use super::rule::{AlertChannel, ChannelKind, Metric, Severity};

/// How long one attempt may take, connection included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// One alert as channels are told about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    /// `firing` or `resolved` (or `test`, sent as firing).
    pub status: &'static str,
    /// The rule's name.
    pub rule: String,
    /// What the rule watches.
    pub metric: Metric,
    /// The host.
    pub hostname: String,
    /// The process label (`""` for a host measure).
    pub process: String,
    /// The rule's severity.
    pub severity: Severity,
    /// One line for a person.
    pub summary: String,
    /// The value that caused it.
    pub value: f64,
    /// When it fired.
    pub starts_at: DateTime<Utc>,
    /// When it resolved (resolved only).
    pub ends_at: Option<DateTime<Utc>>,
}

impl Notice {
    fn firing(&self) -> bool {
        self.status != "resolved"
    }

    /// The identifying labels, in Alertmanager's sense.
    pub fn labels(&self) -> serde_json::Map<String, Value> {
        let mut labels = serde_json::Map::new();
        labels.insert("alertname".into(), self.rule.clone().into());
        // Empty labels are left out, as Alertmanager treats them as absent.
        if !self.hostname.is_empty() {
            labels.insert("hostname".into(), self.hostname.clone().into());
        }
        labels.insert("severity".into(), self.severity.as_str().into());
        labels.insert("metric".into(), self.metric.as_str().into());
        if !self.process.is_empty() {
            labels.insert("process".into(), self.process.clone().into());
        }
        labels
    }

    fn annotations(&self) -> Value {
        json!({ "summary": self.summary, "value": format_value(self.value) })
    }

    /// Alertmanager's fingerprint: a hash of the labels, the same for the firing and the
    /// resolved message of one alert.
    fn fingerprint(&self) -> String {
        let mut hash = sha2::Sha256::new();
        for (k, v) in self.labels() {
            hash.update(k.as_bytes());
            hash.update([0]);
            hash.update(v.as_str().unwrap_or("").as_bytes());
            hash.update([0xff]);
        }
        hash.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// A value as people read it: integers without a fraction, others with two digits.
pub fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{v:.0}") } else { format!("{v:.2}") }
}

/// Alertmanager's zero time, its `endsAt` for alerts still firing.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A `webhook` channel's body: Alertmanager's webhook message (version 4) with one
/// alert.
pub fn webhook_body(notice: &Notice, receiver: &str, external_url: &str) -> Value {
    let labels = notice.labels();
    let status = if notice.firing() { "firing" } else { "resolved" };
    let group_labels = json!({ "alertname": notice.rule });
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{}\"}}", notice.rule.replace('"', "\\\"")),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": labels,
        "commonAnnotations": notice.annotations(),
        "externalURL": external_url,
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": notice.annotations(),
            "startsAt": rfc3339(notice.starts_at),
            "endsAt": notice.ends_at.map_or_else(|| ZERO_TIME.to_owned(), rfc3339),
            "generatorURL": format!("{}/#/alerts", external_url.trim_end_matches('/')),
            "fingerprint": notice.fingerprint(),
        }],
    })
}

/// An `alertmanager` channel's body for `POST /api/v2/alerts`.
pub fn alertmanager_body(notice: &Notice, external_url: &str) -> Value {
    let mut alert = json!({
        "labels": notice.labels(),
        "annotations": notice.annotations(),
        "startsAt": rfc3339(notice.starts_at),
        "generatorURL": format!("{}/#/alerts", external_url.trim_end_matches('/')),
    });
    if let Some(end) = notice.ends_at {
        alert["endsAt"] = rfc3339(end).into();
    }
    json!([alert])
}

/// A `slack` channel's body.
pub fn slack_body(notice: &Notice) -> Value {
    let mark = if notice.firing() { "FIRING" } else { "RESOLVED" };
    json!({ "text": format!("[{mark}:{}] {}: {}", notice.severity.as_str(), notice.rule, notice.summary) })
}

/// Sends `notice` to `channel` once. `Err` says why it did not arrive.
pub async fn send(
    http: &reqwest::Client,
    channel: &AlertChannel,
    notice: &Notice,
    own: &[SocketAddr],
    external_url: &str,
) -> Result<(), String> {
    let url = match channel.kind {
        ChannelKind::Alertmanager => format!("{}/api/v2/alerts", channel.url.trim_end_matches('/')),
        _ => channel.url.clone(),
    };
    refuse_self(&url, own).await?;
    let mut request = http.post(&url).timeout(ATTEMPT_TIMEOUT);
    if let Some(token) = channel.token.as_deref().filter(|t| !t.is_empty()) {
        request = request.bearer_auth(token);
    }
    request = match channel.kind {
        ChannelKind::Webhook => request.json(&webhook_body(notice, &channel.name, external_url)),
        ChannelKind::Alertmanager => request.json(&alertmanager_body(notice, external_url)),
        ChannelKind::Slack => request.json(&slack_body(notice)),
        ChannelKind::Ntfy => {
            let (title, tags) = if notice.firing() {
                (format!("{} on {}", notice.rule, notice.hostname), "rotating_light")
            } else {
                (format!("Resolved: {} on {}", notice.rule, notice.hostname), "white_check_mark")
            };
            let priority = match (notice.firing(), notice.severity) {
                (false, _) | (true, Severity::Info) => "3",
                (true, Severity::Warning) => "4",
                (true, Severity::Critical) => "5",
            };
            // Header values must be visible ASCII: anything else in a name is dropped.
            let title: String = title.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect();
            request
                .header("Title", title)
                .header("Priority", priority)
                .header("Tags", tags)
                .body(notice.summary.clone())
        }
    };
    let response = request.send().await.map_err(|e| describe(&e))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        let body = response.text().await.unwrap_or_default();
        let body: String = body.chars().take(200).collect();
        Err(format!(
            "the receiver answered {status}{}",
            if body.is_empty() { String::new() } else { format!(": {body}") }
        ))
    }
}

/// An HTTP client's failure in words, without the URL (it may hold a secret).
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_request() {
        "the request failed"
    } else {
        "the exchange failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() { what.to_owned() } else { format!("{what}: {cause}") }
}

/// Refuses a URL that resolves to the collector's own listener: a channel that posts to
/// the collector would at best fail, at worst loop.
pub async fn refuse_self(url: &str, own: &[SocketAddr]) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    let host = parsed.host_str().ok_or("the URL names no host")?.trim_start_matches('[').trim_end_matches(']');
    let port = parsed.port_or_known_default().ok_or("the URL names no port")?;
    if own.iter().all(|o| o.port() != port) {
        return Ok(());
    }
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        // One that does not resolve cannot be the collector; sending says so later.
        Err(_) => tokio::net::lookup_host((host, port)).await.map(Iterator::collect).unwrap_or_default(),
    };
    for addr in addrs {
        for o in own.iter().filter(|o| o.port() == addr.port()) {
            let ip = addr.ip();
            let same = ip == o.ip()
                || (o.ip().is_unspecified() && is_local(ip))
                || (ip.is_unspecified() || ip.is_loopback()) && (o.ip().is_loopback() || o.ip().is_unspecified());
            if same {
                return Err(format!("{host}:{port} is this collector itself"));
            }
        }
    }
    Ok(())
}

/// Whether `ip` is an address of this machine: only then can a socket be bound to it.
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn notice(status: &'static str) -> Notice {
        Notice {
            status,
            rule: "nginx gone".into(),
            metric: Metric::ProcessAbsent,
            hostname: "web-1".into(),
            process: "name:nginx".into(),
            severity: Severity::Critical,
            summary: "no process matches `name:nginx` on web-1".into(),
            value: 0.0,
            starts_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            ends_at: (status == "resolved").then(|| DateTime::from_timestamp(1_800_000_060, 0).unwrap()),
        }
    }

    #[test]
    fn the_webhook_is_alertmanagers_format() {
        let firing = webhook_body(&notice("firing"), "ops", "http://collector:7450");
        assert_eq!(firing["version"], "4");
        assert_eq!(firing["status"], "firing");
        for key in ["groupKey", "receiver", "groupLabels", "commonLabels", "commonAnnotations", "externalURL"] {
            assert!(!firing[key].is_null(), "{key}");
        }
        let alert = &firing["alerts"][0];
        assert_eq!(alert["labels"]["alertname"], "nginx gone");
        assert_eq!(alert["labels"]["hostname"], "web-1");
        assert_eq!(alert["labels"]["severity"], "critical");
        assert_eq!(alert["startsAt"], "2027-01-15T08:00:00.000Z");
        assert_eq!(alert["endsAt"], ZERO_TIME);
        let resolved = webhook_body(&notice("resolved"), "ops", "http://collector:7450");
        assert_eq!(resolved["status"], "resolved");
        assert_eq!(resolved["alerts"][0]["endsAt"], "2027-01-15T08:01:00.000Z");
        assert_eq!(resolved["alerts"][0]["fingerprint"], alert["fingerprint"], "one alert, one fingerprint");
    }

    #[tokio::test]
    async fn urls_of_the_collector_itself_are_refused() {
        let own: Vec<SocketAddr> = vec!["127.0.0.1:7450".parse().unwrap()];
        assert!(refuse_self("http://127.0.0.1:7450/hook", &own).await.is_err());
        assert!(refuse_self("http://localhost:7450/hook", &own).await.is_err());
        assert!(refuse_self("http://[::1]:7450/hook", &own).await.is_err());
        assert!(refuse_self("http://127.0.0.1:7451/hook", &own).await.is_ok());
        let any: Vec<SocketAddr> = vec!["0.0.0.0:7450".parse().unwrap()];
        assert!(refuse_self("http://127.0.0.1:7450/", &any).await.is_err());
        assert!(refuse_self("http://192.0.2.1:7450/", &any).await.is_ok(), "not an address of this machine");
    }
}
