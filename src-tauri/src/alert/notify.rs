//! Notifications: what each kind of channel is sent, and sending it.
//!
//! - `webhook`: Alertmanager's webhook format (`version: "4"`), one message per alert,
//!   so that receivers written for Alertmanager take it unchanged;
//! - `alertmanager`: the alert pushed to an Alertmanager's `POST /api/v2/alerts`;
//! - `slack`: `{"text": ...}` (Slack, Mattermost, Discord's `/slack` endpoint);
//! - `ntfy`: the summary as the body of a POST to the topic's URL, with `Title`,
//!   `Priority` and `Tags` headers;
//! - `email`: a plain-text mail over SMTP (lettre), with STARTTLS or TLS and
//!   authentication as the channel says;
//! - `desktop`: the desktop app's native notification, through the hook the app
//!   installs ([`DesktopNotifier`]); a collector has none and says so.
//!
//! A message carries one notice, or several: the summary of what a channel's quiet
//! hours held back (one Alertmanager webhook message with every alert, one mail, one
//! text). Every request has a timeout, follows no redirect (one could lead back to the
//! collector), and is refused when its address resolves to the collector itself.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::Digest;

use super::rule::{AlertChannel, ChannelKind, EmailSettings, Metric, Severity, SmtpTls};

/// Shows a native notification (title, body) on the desktop; `Err` says why it could
/// not. Installed by the desktop app ([`super::service::Alerts::set_desktop_notifier`]).
pub type DesktopNotifier = Arc<dyn Fn(&str, &str) -> Result<(), String> + Send + Sync>;

/// Where messages are sent from: what they may not point at, and what they link to.
#[derive(Clone, Default)]
pub struct Origin {
    /// The collector's own listeners: no channel may post there.
    pub own: Vec<SocketAddr>,
    /// The collector's URL, for links back.
    pub external_url: String,
    /// The desktop app's notifier, in the desktop app.
    pub desktop: Option<DesktopNotifier>,
}

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
    webhook_message(std::slice::from_ref(notice), receiver, external_url)
}

/// Alertmanager's webhook message with every notice as one of its `alerts`: `firing`
/// when one of them fires, labels common to them all in `commonLabels`.
pub fn webhook_message(notices: &[Notice], receiver: &str, external_url: &str) -> Value {
    let any_firing = notices.iter().any(Notice::firing);
    let status = if any_firing { "firing" } else { "resolved" };
    let mut common = notices.first().map(Notice::labels).unwrap_or_default();
    for n in notices.iter().skip(1) {
        let labels = n.labels();
        common.retain(|k, v| labels.get(k) == Some(v));
    }
    let group_labels = match common.get("alertname") {
        Some(name) => json!({ "alertname": name }),
        None => json!({}),
    };
    let group_key = match common.get("alertname").and_then(Value::as_str) {
        Some(name) => format!("{{}}:{{alertname=\"{}\"}}", name.replace('"', "\\\"")),
        None => format!("{{}}:{{receiver=\"{}\"}}", receiver.replace('"', "\\\"")),
    };
    let common_annotations = match notices {
        [one] => one.annotations(),
        _ => json!({}),
    };
    let alerts: Vec<Value> = notices
        .iter()
        .map(|notice| {
            json!({
                "status": if notice.firing() { "firing" } else { "resolved" },
                "labels": notice.labels(),
                "annotations": notice.annotations(),
                "startsAt": rfc3339(notice.starts_at),
                "endsAt": notice.ends_at.map_or_else(|| ZERO_TIME.to_owned(), rfc3339),
                "generatorURL": format!("{}/#/alerts", external_url.trim_end_matches('/')),
                "fingerprint": notice.fingerprint(),
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": common,
        "commonAnnotations": common_annotations,
        "externalURL": external_url,
        "alerts": alerts,
    })
}

/// An `alertmanager` channel's body for `POST /api/v2/alerts`.
pub fn alertmanager_body(notices: &[Notice], external_url: &str) -> Value {
    let alerts: Vec<Value> = notices
        .iter()
        .map(|notice| {
            let mut alert = json!({
                "labels": notice.labels(),
                "annotations": notice.annotations(),
                "startsAt": rfc3339(notice.starts_at),
                "generatorURL": format!("{}/#/alerts", external_url.trim_end_matches('/')),
            });
            if let Some(end) = notice.ends_at {
                alert["endsAt"] = rfc3339(end).into();
            }
            alert
        })
        .collect();
    Value::Array(alerts)
}

/// One line for a person: `[FIRING:critical] rule: summary`.
fn line(notice: &Notice) -> String {
    let mark = if notice.firing() { "FIRING" } else { "RESOLVED" };
    format!("[{mark}:{}] {}: {}", notice.severity.as_str(), notice.rule, notice.summary)
}

/// A title and a text for the notices: the one notice's, or a summary of those held
/// through quiet hours, one line each, oldest first.
pub fn title_and_text(notices: &[Notice]) -> (String, String) {
    match notices {
        [notice] => {
            let title = if notice.firing() {
                format!("{} on {}", notice.rule, notice.hostname)
            } else {
                format!("Resolved: {} on {}", notice.rule, notice.hostname)
            };
            let title = if notice.hostname.is_empty() { notice.rule.clone() } else { title };
            (title, notice.summary.clone())
        }
        _ => {
            let firing = notices.iter().filter(|n| n.firing()).count();
            let title = format!(
                "Quiet hours over: {} notification{} held ({firing} firing, {} resolved)",
                notices.len(),
                if notices.len() == 1 { "" } else { "s" },
                notices.len() - firing
            );
            let text: Vec<String> = notices.iter().map(line).collect();
            (title, text.join("\n"))
        }
    }
}

/// A `slack` channel's body.
pub fn slack_body(notices: &[Notice]) -> Value {
    match notices {
        [notice] => json!({ "text": line(notice) }),
        _ => {
            let (title, text) = title_and_text(notices);
            json!({ "text": format!("{title}\n{text}") })
        }
    }
}

/// An `email` channel's subject and plain-text body.
pub fn email_text(notices: &[Notice], external_url: &str) -> (String, String) {
    let subject = match notices {
        [notice] => {
            let mark = if notice.firing() { "FIRING" } else { "RESOLVED" };
            let on = if notice.hostname.is_empty() { String::new() } else { format!(" on {}", notice.hostname) };
            format!("[{mark}:{}] {}{on}", notice.severity.as_str(), notice.rule)
        }
        _ => title_and_text(notices).0,
    };
    let mut body = String::new();
    for notice in notices {
        body.push_str(&line(notice));
        body.push('\n');
        for (k, v) in notice.labels() {
            body.push_str(&format!("  {k}: {}\n", v.as_str().unwrap_or("")));
        }
        body.push_str(&format!("  value: {}\n  since: {}\n", format_value(notice.value), rfc3339(notice.starts_at)));
        if let Some(end) = notice.ends_at {
            body.push_str(&format!("  resolved at: {}\n", rfc3339(end)));
        }
        body.push('\n');
    }
    if !external_url.is_empty() {
        body.push_str(&format!("{}/#/alerts\n", external_url.trim_end_matches('/')));
    }
    (subject, body)
}

/// Sends `notices` to `channel` as one message, once. `Err` says why it did not arrive.
pub async fn send(
    http: &reqwest::Client,
    channel: &AlertChannel,
    notices: &[Notice],
    origin: &Origin,
) -> Result<(), String> {
    let (own, external_url) = (origin.own.as_slice(), origin.external_url.as_str());
    match (channel.kind, &channel.email) {
        (ChannelKind::Email, Some(email)) => {
            let (subject, body) = email_text(notices, external_url);
            return send_email(email, subject, body, own).await;
        }
        (ChannelKind::Email, None) => return Err("the channel has no email settings".into()),
        (ChannelKind::Desktop, _) => {
            let Some(show) = &origin.desktop else {
                return Err("desktop notifications are shown by the desktop app only".into());
            };
            let (title, text) = title_and_text(notices);
            return show(&title, &text);
        }
        _ => {}
    }
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
        ChannelKind::Webhook => request.json(&webhook_message(notices, &channel.name, external_url)),
        ChannelKind::Alertmanager => request.json(&alertmanager_body(notices, external_url)),
        ChannelKind::Slack => request.json(&slack_body(notices)),
        ChannelKind::Email | ChannelKind::Desktop => return Err("not an HTTP channel".into()),
        ChannelKind::Ntfy => {
            let firing = notices.iter().any(Notice::firing);
            let (title, body) = title_and_text(notices);
            let tags = if firing { "rotating_light" } else { "white_check_mark" };
            let priority = match (firing, notices.iter().map(|n| n.severity).max()) {
                (false, _) | (true, None | Some(Severity::Info)) => "3",
                (true, Some(Severity::Warning)) => "4",
                (true, Some(Severity::Critical)) => "5",
            };
            // Header values must be visible ASCII: anything else in a name is dropped.
            let title: String = title.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect();
            request.header("Title", title).header("Priority", priority).header("Tags", tags).body(body)
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

/// Checks an email channel's addresses with the mail library (what `check` in
/// `rule.rs` cannot: it has no mail parser), naming the field at fault.
pub fn check_email(email: &EmailSettings) -> Result<(), super::rule::Invalid> {
    let parse = |field: String, address: &str| {
        address
            .parse::<lettre::message::Mailbox>()
            .map(|_| ())
            .map_err(|e| super::rule::Invalid { field, message: format!("`{address}` is not a mail address ({e}).") })
    };
    parse("email.from".into(), &email.from)?;
    for (i, to) in email.to.iter().enumerate() {
        parse(format!("email.to[{i}]"), to)?;
    }
    Ok(())
}

/// The SMTP server as a URL, for [`refuse_self`].
fn smtp_url(email: &EmailSettings) -> String {
    let host = if email.host.contains(':') { format!("[{}]", email.host) } else { email.host.clone() };
    format!("smtp://{host}:{}", email.port())
}

/// Sends one mail. The whole exchange (connection, TLS, authentication, data) has
/// [`ATTEMPT_TIMEOUT`] per step and twice that in all.
async fn send_email(email: &EmailSettings, subject: String, body: String, own: &[SocketAddr]) -> Result<(), String> {
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

    refuse_self(&smtp_url(email), own).await?;
    check_email(email).map_err(|e| e.message)?;
    let mut message = lettre::Message::builder()
        .from(email.from.parse().map_err(|e| format!("email.from: {e}"))?)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .user_agent(concat!("procyon/", env!("CARGO_PKG_VERSION")).to_owned());
    for to in &email.to {
        message = message.to(to.parse().map_err(|e| format!("email.to: {e}"))?);
    }
    let message = message.body(body).map_err(|e| format!("cannot build the mail: {e}"))?;
    let builder = match email.tls {
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(email.host.as_str()),
        SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&email.host)
            .map_err(|e| format!("cannot set up STARTTLS: {e}"))?,
        SmtpTls::Tls => {
            AsyncSmtpTransport::<Tokio1Executor>::relay(&email.host).map_err(|e| format!("cannot set up TLS: {e}"))?
        }
    };
    let mut builder = builder.port(email.port()).timeout(Some(ATTEMPT_TIMEOUT));
    if let Some(user) = &email.username {
        builder = builder.credentials(Credentials::new(user.clone(), email.password.clone().unwrap_or_default()));
    }
    let transport = builder.build();
    match tokio::time::timeout(ATTEMPT_TIMEOUT * 2, transport.send(message)).await {
        Err(_) => Err("the SMTP server gave no answer in time".into()),
        Ok(Err(e)) => Err(smtp_error(&e)),
        Ok(Ok(_)) => Ok(()),
    }
}

/// An SMTP failure in words, with the server's answer when there is one.
fn smtp_error(e: &lettre::transport::smtp::Error) -> String {
    let what = if e.is_permanent() {
        "the SMTP server refused the mail"
    } else if e.is_transient() {
        "the SMTP server refused the mail for now"
    } else if e.is_timeout() {
        "no answer in time"
    } else if e.is_tls() {
        "TLS with the SMTP server failed"
    } else {
        "the exchange with the SMTP server failed"
    };
    let mut cause = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    format!("{what}: {cause}")
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

    #[test]
    fn a_summary_carries_every_held_notice_in_one_message() {
        let (mut other, resolved) = (notice("firing"), notice("resolved"));
        other.rule = "web down".into();
        let held = [notice("firing"), other, resolved];
        let message = webhook_message(&held, "night", "http://collector:7450");
        assert_eq!(message["status"], "firing");
        let alerts = message["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), 3);
        assert_eq!(alerts[2]["status"], "resolved");
        assert_eq!(message["commonLabels"]["hostname"], "web-1", "shared by all");
        assert!(message["commonLabels"].get("alertname").is_none(), "not shared");
        let (title, text) = title_and_text(&held);
        assert_eq!(title, "Quiet hours over: 3 notifications held (2 firing, 1 resolved)");
        assert_eq!(text.lines().count(), 3);
        assert!(text.lines().nth(2).unwrap().starts_with("[RESOLVED:critical] nginx gone"), "{text}");
        let (subject, body) = email_text(&held[..1], "http://collector:7450");
        assert_eq!(subject, "[FIRING:critical] nginx gone on web-1");
        assert!(body.contains("hostname: web-1") && body.contains("http://collector:7450/#/alerts"), "{body}");
        assert_eq!(alertmanager_body(&held, "").as_array().unwrap().len(), 3);
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
