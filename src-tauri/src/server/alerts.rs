//! The alert API: rules, channels, alerts now and their history, notification
//! attempts, silences. Admins change, every signed-in user reads; every change is
//! audited.
//!
//! Bodies are read field by field so that a bad one (an unknown metric, a threshold
//! that is not a number, a channel that does not exist) is a 422 naming the field, and
//! nothing is stored. Channels' secrets (the URL past its host, the token) never leave
//! the collector: answers carry them masked.

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode};
use axum::routing::{MethodRouter, delete, get, post, put};
use chrono::Utc;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::AppState;
use super::auth::{AdminUser, CurrentUser};
use super::error::ApiError;
use super::query::ApiQuery;
use super::rest::{ApiJson, ApiPath};
use super::routes::{Access, Route};
use crate::alert::rule::{self, AlertChannel, AlertRule, Invalid};
use crate::alert::service::Alerts;
use crate::alert::status::{Alert, AlertDelivery, AlertEvent, NewSilence, Silence};
use crate::model::api::{AuditAction, ErrorBody};
use crate::store::{NewAuditEntry, Page};

/// The most an alert body may be: a rule or a channel is small.
const BODY_BYTES: usize = 32 << 10;

fn small(handler: MethodRouter<AppState>) -> MethodRouter<AppState> {
    handler.layer(DefaultBodyLimit::max(BODY_BYTES))
}

/// The alert routes, with who may call each (see `routes.rs`).
pub fn routes() -> Vec<Route> {
    use Access::{Admin, Viewer};
    use Method as M;
    vec![
        Route::new(M::GET, "/api/alert-rules", Viewer, get(rules)).exact(),
        Route::new(M::POST, "/api/alert-rules", Admin, small(post(create_rule))).exact(),
        Route::new(M::PUT, "/api/alert-rules/{name}", Admin, small(put(update_rule))).exact(),
        Route::new(M::DELETE, "/api/alert-rules/{name}", Admin, delete(delete_rule)).exact(),
        Route::new(M::GET, "/api/alert-channels", Viewer, get(channels)).exact(),
        Route::new(M::POST, "/api/alert-channels", Admin, small(post(create_channel))).exact(),
        Route::new(M::PUT, "/api/alert-channels/{name}", Admin, small(put(update_channel))).exact(),
        Route::new(M::DELETE, "/api/alert-channels/{name}", Admin, delete(delete_channel)).exact(),
        Route::new(M::POST, "/api/alert-channels/{name}/test", Admin, small(post(test_channel))).exact(),
        Route::new(M::GET, "/api/alerts", Viewer, get(alerts)).exact(),
        Route::new(M::GET, "/api/alerts/history", Viewer, get(history)).exact(),
        Route::new(M::GET, "/api/alerts/deliveries", Viewer, get(deliveries)).exact(),
        Route::new(M::GET, "/api/silences", Viewer, get(silences)).exact(),
        Route::new(M::POST, "/api/silences", Admin, small(post(create_silence))).exact(),
        Route::new(M::DELETE, "/api/silences/{id}", Admin, delete(delete_silence)).exact(),
    ]
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::invalid(e.field, e.message)
    }
}

/// Reads `T` from a JSON body with the field at fault named. Fields that answers carry
/// but requests do not (`read_only`, `token_set`) are dropped first, so that what was
/// read can be sent back changed.
fn parse<T: DeserializeOwned>(mut body: Value) -> Result<T, ApiError> {
    let Some(map) = body.as_object_mut() else {
        return Err(ApiError::Invalid { field: None, message: "The body is a JSON object.".into() });
    };
    map.remove("read_only");
    map.remove("token_set");
    if let Some(email) = map.get_mut("email").and_then(Value::as_object_mut) {
        email.remove("password_set");
    }
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let field = if path == "." {
            // "missing field `threshold`", "unknown field `treshold`, expected ..."
            message.split('`').nth(1).map(str::to_owned)
        } else {
            Some(path)
        };
        ApiError::Invalid { field, message: format!("{message}.") }
    })
}

async fn audit(state: &AppState, actor: &str, hostname: &str, action: AuditAction, message: String) {
    let entry = NewAuditEntry::host_change(actor, hostname, action, message);
    if let Err(e) = state.store.audit(entry).await {
        tracing::error!("cannot write the audit log: {e}");
    }
}

fn read_only(what: &str, name: &str) -> ApiError {
    ApiError::Conflict {
        code: "read_only",
        message: format!("{what} `{name}` comes from the --alerts file: change it there and restart the collector."),
    }
}

// ---------------------------------------------------------------------------------------
// Rules

#[utoipa::path(get, path = "/api/alert-rules", tag = "alerts", summary = "Alert rules",
    description = "Every rule in force, by name; those of the `--alerts` file have `read_only`.",
    responses((status = 200, description = "The rules", body = Vec<AlertRule>)))]
pub(super) async fn rules(State(state): State<AppState>, _: CurrentUser) -> Json<Vec<AlertRule>> {
    Json(state.alerts.rules())
}

/// Checks a rule from the API against the rules and channels in force.
fn check_rule(alerts: &Alerts, rule: &AlertRule) -> Result<(), ApiError> {
    alerts.check_rule(rule)?;
    if alerts.is_file_rule(&rule.name) {
        return Err(read_only("Rule", &rule.name));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/alert-rules", tag = "alerts", summary = "Make an alert rule",
    description = "A bad rule (an unknown metric, a threshold that is not a number, a channel that does not \
        exist) is a 422 naming the field; nothing is stored. Audited.",
    request_body = AlertRule,
    responses(
        (status = 201, description = "Made", body = AlertRule),
        (status = 409, description = "The name is taken, or is a rule of the `--alerts` file", body = ErrorBody)))]
pub(super) async fn create_rule(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<AlertRule>), ApiError> {
    let rule: AlertRule = parse(body)?;
    check_rule(&state.alerts, &rule)?;
    state.store.put_alert_rule(&rule, true).await?;
    state.alerts.changed().await?;
    let message = format!("Alert rule {} made ({} on {})", rule.name, rule.metric.as_str(), rule.host);
    audit(&state, &user.username, &rule.host, AuditAction::AlertRule, message).await;
    Ok((StatusCode::CREATED, Json(rule)))
}

#[utoipa::path(put, path = "/api/alert-rules/{name}", tag = "alerts", summary = "Change an alert rule",
    description = "The whole rule, as for making one (its `name` may be left out; it cannot change). Its alerts \
        keep their state. Audited.",
    params(("name" = String, Path, description = "The rule's name")),
    request_body = AlertRule,
    responses(
        (status = 200, description = "Changed", body = AlertRule),
        (status = 409, description = "A rule of the `--alerts` file (`read_only`)", body = ErrorBody)))]
pub(super) async fn update_rule(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ApiPath(name): ApiPath<String>,
    ApiJson(mut body): ApiJson<Value>,
) -> Result<Json<AlertRule>, ApiError> {
    same_name(&mut body, &name)?;
    let rule: AlertRule = parse(body)?;
    check_rule(&state.alerts, &rule)?;
    state.store.put_alert_rule(&rule, false).await?;
    state.alerts.changed().await?;
    let message = format!("Alert rule {} changed ({} on {})", rule.name, rule.metric.as_str(), rule.host);
    audit(&state, &user.username, &rule.host, AuditAction::AlertRule, message).await;
    Ok(Json(rule))
}

/// Fills in the path's name, or refuses a body that names another.
fn same_name(body: &mut Value, name: &str) -> Result<(), ApiError> {
    let Some(map) = body.as_object_mut() else {
        return Err(ApiError::Invalid { field: None, message: "The body is a JSON object.".into() });
    };
    match map.get("name") {
        None => {
            map.insert("name".into(), name.into());
            Ok(())
        }
        Some(Value::String(n)) if n == name => Ok(()),
        Some(_) => Err(ApiError::invalid("name", "A name cannot change; delete and make it again under the new one.")),
    }
}

#[utoipa::path(delete, path = "/api/alert-rules/{name}", tag = "alerts", summary = "Delete an alert rule",
    description = "Its alerts go with it (nothing more is notified). Audited.",
    params(("name" = String, Path, description = "The rule's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "A rule of the `--alerts` file (`read_only`)", body = ErrorBody)))]
pub(super) async fn delete_rule(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if state.alerts.is_file_rule(&name) {
        return Err(read_only("Rule", &name));
    }
    if !state.store.delete_alert_rule(&name).await? {
        return Err(ApiError::NotFound(format!("No alert rule `{name}`.")));
    }
    state.alerts.changed().await?;
    audit(&state, &user.username, "", AuditAction::AlertRule, format!("Alert rule {name} deleted")).await;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------
// Channels

#[utoipa::path(get, path = "/api/alert-channels", tag = "alerts", summary = "Alert channels",
    description = "Every channel, by name, with its URL cut to its scheme, host and port and no token.",
    responses((status = 200, description = "The channels", body = Vec<AlertChannel>)))]
pub(super) async fn channels(State(state): State<AppState>, _: CurrentUser) -> Json<Vec<AlertChannel>> {
    Json(state.alerts.channels_masked())
}

/// Reads a new channel: an empty token is none.
fn new_channel(body: Value) -> Result<AlertChannel, ApiError> {
    let mut channel: AlertChannel = parse(body)?;
    if channel.token.as_deref() == Some("") {
        channel.token = None;
    }
    if let Some(email) = &mut channel.email
        && email.password.as_deref() == Some("")
    {
        email.password = None;
    }
    Ok(channel)
}

async fn check_channel(alerts: &Alerts, channel: &AlertChannel) -> Result<(), ApiError> {
    channel.check()?;
    if alerts.is_file_channel(&channel.name) {
        return Err(read_only("Channel", &channel.name));
    }
    alerts.check_not_self(channel).await?;
    Ok(())
}

#[utoipa::path(post, path = "/api/alert-channels", tag = "alerts", summary = "Make an alert channel",
    description = "`{\"name\", \"kind\", \"url\", \"token\", \"quiet_hours\"}`, or for `email` `{\"name\", \"kind\", \
        \"email\": {\"host\", \"port\", \"tls\", \"username\", \"password\", \"from\", \"to\"}}`. A URL (or SMTP server) that \
        points at this collector is refused; `desktop` channels only in the desktop app. The answer masks the URL and \
        leaves the token and password out. Audited.",
    request_body = AlertChannel,
    responses(
        (status = 201, description = "Made (masked)", body = AlertChannel),
        (status = 409, description = "The name is taken, or is a channel of the `--alerts` file", body = ErrorBody)))]
pub(super) async fn create_channel(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<AlertChannel>), ApiError> {
    let channel = new_channel(body)?;
    check_channel(&state.alerts, &channel).await?;
    state.store.put_alert_channel(&channel, true).await?;
    state.alerts.changed().await?;
    let message = format!("Alert channel {} made ({})", channel.name, channel.kind.as_str());
    audit(&state, &user.username, "", AuditAction::AlertChannel, message).await;
    Ok((StatusCode::CREATED, Json(channel.masked())))
}

#[utoipa::path(put, path = "/api/alert-channels/{name}", tag = "alerts", summary = "Change an alert channel",
    description = "The whole channel, as for making one. A `url` equal to the masked one of `GET` keeps the stored \
        URL; leaving `token` (or `email.password`) out keeps the stored one, `\"\"` removes it. Audited.",
    params(("name" = String, Path, description = "The channel's name")),
    request_body = AlertChannel,
    responses(
        (status = 200, description = "Changed (masked)", body = AlertChannel),
        (status = 409, description = "A channel of the `--alerts` file (`read_only`)", body = ErrorBody)))]
pub(super) async fn update_channel(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ApiPath(name): ApiPath<String>,
    ApiJson(mut body): ApiJson<Value>,
) -> Result<Json<AlertChannel>, ApiError> {
    same_name(&mut body, &name)?;
    let mut channel: AlertChannel = parse(body)?;
    if state.alerts.is_file_channel(&name) {
        return Err(read_only("Channel", &name));
    }
    let stored = state
        .store
        .alert_channels()
        .await?
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("No alert channel `{name}`.")))?;
    if channel.url == rule::mask_url(&stored.url) {
        channel.url = stored.url.clone();
    }
    match channel.token.as_deref() {
        None => channel.token = stored.token.clone(),
        Some("") => channel.token = None,
        Some(_) => {}
    }
    if let Some(email) = &mut channel.email {
        match email.password.as_deref() {
            None => email.password = stored.email.as_ref().and_then(|e| e.password.clone()),
            Some("") => email.password = None,
            Some(_) => {}
        }
    }
    check_channel(&state.alerts, &channel).await?;
    state.store.put_alert_channel(&channel, false).await?;
    state.alerts.changed().await?;
    let message = format!("Alert channel {} changed ({})", channel.name, channel.kind.as_str());
    audit(&state, &user.username, "", AuditAction::AlertChannel, message).await;
    Ok(Json(channel.masked()))
}

#[utoipa::path(delete, path = "/api/alert-channels/{name}", tag = "alerts", summary = "Delete an alert channel",
    description = "Refused (409) while a rule notifies it. Audited.",
    params(("name" = String, Path, description = "The channel's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "Rules still use it (`in_use`), or it is the `--alerts` file's (`read_only`)",
            body = ErrorBody)))]
pub(super) async fn delete_channel(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if state.alerts.is_file_channel(&name) {
        return Err(read_only("Channel", &name));
    }
    let users = state.alerts.rules_using(&name);
    if !users.is_empty() {
        return Err(ApiError::Conflict {
            code: "in_use",
            message: format!("Channel `{name}` is notified by the rules {}: change them first.", users.join(", ")),
        });
    }
    if !state.store.delete_alert_channel(&name).await? {
        return Err(ApiError::NotFound(format!("No alert channel `{name}`.")));
    }
    state.alerts.changed().await?;
    audit(&state, &user.username, "", AuditAction::AlertChannel, format!("Alert channel {name} deleted")).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/alert-channels/{name}/test`'s answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct TestResult {
    /// Always true: a failure is a 422.
    delivered: bool,
}

#[utoipa::path(post, path = "/api/alert-channels/{name}/test", tag = "alerts", summary = "Test an alert channel",
    description = "Sends one test notification now and waits for the receiver's answer (at most 10 s). One that \
        does not arrive is a 422 on `url` saying why. The attempt is recorded either way.",
    params(("name" = String, Path, description = "The channel's name")),
    responses((status = 200, description = "Delivered", body = TestResult)))]
pub(super) async fn test_channel(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<TestResult>, ApiError> {
    let channel =
        state.alerts.channel(&name).ok_or_else(|| ApiError::NotFound(format!("No alert channel `{name}`.")))?;
    state
        .alerts
        .test_channel(&channel, &user.username)
        .await
        .map_err(|why| ApiError::invalid("url", format!("The test notification did not arrive: {why}.")))?;
    Ok(Json(TestResult { delivered: true }))
}

// ---------------------------------------------------------------------------------------
// Alerts and their history

#[utoipa::path(get, path = "/api/alerts", tag = "alerts", summary = "Alerts now",
    description = "Firing and pending alerts, and those resolved in the last 24 hours: firing first, newest first.",
    responses((status = 200, description = "The alerts", body = Vec<Alert>)))]
pub(super) async fn alerts(State(state): State<AppState>, _: CurrentUser) -> Result<Json<Vec<Alert>>, ApiError> {
    Ok(Json(state.store.alerts(Utc::now() - crate::alert::service::RESOLVED_SHOWN).await?))
}

/// Paging of the history lists.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PageQuery {
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// Rows to skip.
    offset: Option<u32>,
}

impl PageQuery {
    fn page(&self) -> Page {
        Page { limit: self.limit.unwrap_or(100).clamp(1, 1000), offset: self.offset.unwrap_or(0) }
    }
}

#[utoipa::path(get, path = "/api/alerts/history", tag = "alerts", summary = "Alert history",
    description = "Every firing and resolution, newest first.",
    params(PageQuery),
    responses((status = 200, description = "A page of events", body = Vec<AlertEvent>)))]
pub(super) async fn history(
    State(state): State<AppState>,
    _: CurrentUser,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Vec<AlertEvent>>, ApiError> {
    Ok(Json(state.store.alert_history(q.page()).await?))
}

#[utoipa::path(get, path = "/api/alerts/deliveries", tag = "alerts", summary = "Notification attempts",
    description = "Every attempt to notify a channel (delivered, failed with why, held back by a silence), \
        newest first.",
    params(PageQuery),
    responses((status = 200, description = "A page of attempts", body = Vec<AlertDelivery>)))]
pub(super) async fn deliveries(
    State(state): State<AppState>,
    _: CurrentUser,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Vec<AlertDelivery>>, ApiError> {
    Ok(Json(state.store.alert_deliveries(q.page()).await?))
}

// ---------------------------------------------------------------------------------------
// Silences

#[utoipa::path(get, path = "/api/silences", tag = "alerts", summary = "Silences",
    description = "Silences that have not ended, the soonest to end first.",
    responses((status = 200, description = "The silences", body = Vec<Silence>)))]
pub(super) async fn silences(State(state): State<AppState>, _: CurrentUser) -> Result<Json<Vec<Silence>>, ApiError> {
    Ok(Json(state.store.silences(Utc::now()).await?))
}

#[utoipa::path(post, path = "/api/silences", tag = "alerts", summary = "Silence alerts",
    description = "Holds back the notifications of a rule, a host, or both, until `ends_at` (alerts still fire \
        and resolve; their notifications are recorded as `silenced`). Audited.",
    request_body = NewSilence,
    responses((status = 201, description = "Made", body = Silence)))]
pub(super) async fn create_silence(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<Silence>), ApiError> {
    let new: NewSilence = parse(body)?;
    check_silence(&new, &state.alerts.rules(), Utc::now())?;
    let silence = state
        .store
        .add_silence(new.rule.as_deref(), new.hostname.as_deref(), new.ends_at, &new.comment, &user.username)
        .await?;
    state.alerts.changed().await?;
    let message = format!(
        "Silence {} made: rule {}, host {}, until {}",
        silence.id,
        new.rule.as_deref().unwrap_or("*"),
        new.hostname.as_deref().unwrap_or("*"),
        silence.ends_at.to_rfc3339()
    );
    audit(&state, &user.username, new.hostname.as_deref().unwrap_or(""), AuditAction::Silence, message).await;
    Ok((StatusCode::CREATED, Json(silence)))
}

/// Checks a silence from the API against the rules in force at `now`.
fn check_silence(new: &NewSilence, rules: &[AlertRule], now: chrono::DateTime<Utc>) -> Result<(), ApiError> {
    if new.rule.is_none() && new.hostname.is_none() {
        return Err(ApiError::invalid("rule", "Name a rule, a hostname, or both."));
    }
    if let Some(r) = &new.rule {
        rule::check_name("rule", r)?;
        if !rules.iter().any(|x| x.name == *r) {
            return Err(ApiError::invalid("rule", format!("There is no alert rule `{r}`.")));
        }
    }
    if let Some(h) = &new.hostname {
        rule::check_host("hostname", h)?;
    }
    if new.ends_at <= now {
        return Err(ApiError::invalid("ends_at", "A silence ends in the future."));
    }
    if new.comment.len() > 500 || new.comment.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::invalid("comment", "A comment is at most 500 bytes of text."));
    }
    Ok(())
}

#[utoipa::path(delete, path = "/api/silences/{id}", tag = "alerts", summary = "End a silence",
    description = "Notifications flow again from now on. Audited.",
    params(("id" = i64, Path, description = "The silence's id")),
    responses((status = 204, description = "Ended")))]
pub(super) async fn delete_silence(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    let Some(silence) = state.store.delete_silence(id).await? else {
        return Err(ApiError::NotFound(format!("No silence {id}.")));
    };
    state.alerts.changed().await?;
    let host = silence.hostname.as_deref().unwrap_or("");
    audit(&state, &user.username, host, AuditAction::Silence, format!("Silence {id} ended")).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Fuzz targets for the bodies of rules, channels and silences, through the handlers'
/// own steps (`parse`, then the same checks, then the store): never a panic; a body is
/// stored exactly when it was accepted, and what was stored reads back as accepted and
/// is accepted again. See `crate::fuzzing`.
#[cfg(test)]
mod fuzz {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::fuzzing::{config, json_value, mutated_bytes, mutated_json};
    use crate::store::Store;
    use proptest::prelude::*;

    /// The collector's own address in these tests: a channel pointing there is refused.
    const OWN: &str = "127.0.0.1:7070";

    /// A store and alerts of their own per target (see [`FIXTURE`]), with a channel `ops` and a rule `cpu` in force for rules and silences
    /// to name.
    struct Fixture {
        rt: tokio::runtime::Runtime,
        store: Store,
        alerts: Alerts,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (store, alerts) = rt.block_on(async {
            let store = Store::open(&dir.path().join("procyon.db")).await.unwrap();
            let ops: AlertChannel = serde_json::from_value(
                serde_json::json!({"name": "ops", "kind": "webhook", "url": "http://hook.example/"}),
            )
            .unwrap();
            store.put_alert_channel(&ops, true).await.unwrap();
            let cpu: AlertRule = serde_json::from_value(
                serde_json::json!({"name": "cpu", "metric": "host.cpu_percent", "threshold": 90, "channels": ["ops"]}),
            )
            .unwrap();
            store.put_alert_rule(&cpu, true).await.unwrap();
            let alerts = Alerts::new(store.clone());
            alerts.load(None).await.unwrap();
            alerts.set_own_addresses(vec![OWN.parse().unwrap()]);
            (store, alerts)
        });
        Fixture { rt, store, alerts, _dir: dir }
    }

    thread_local! {
        /// Each target runs on a thread of its own, so this is a store per target.
        static FIXTURE: Fixture = fixture();
    }

    /// Rules of several kinds: thresholds with hysteresis, conditions, ports.
    fn rule_seed() -> impl Strategy<Value = Value> {
        prop::sample::select(vec![
            serde_json::json!({"name": "nginx busy", "metric": "process.cpu_percent", "host": "web-1",
                "process": "name:nginx user:www-data", "op": ">", "threshold": 90, "for_secs": 30, "clear": 70,
                "severity": "critical", "repeat_secs": 600, "channels": ["ops"], "aggregate": "sum"}),
            serde_json::json!({"name": "down", "metric": "host.offline", "host": "*", "for_secs": 60}),
            serde_json::json!({"name": "ssh", "metric": "port.listening", "port": 22, "op": "==", "threshold": 0}),
            serde_json::json!({"name": "cold", "metric": "host.load1", "op": "<", "threshold": 0.5, "clear": 1.5}),
            serde_json::json!({"name": "new port", "metric": "host.new_listening_port", "process": "user:www-data",
                "for_secs": 300}),
        ])
    }

    fn channel_seed() -> impl Strategy<Value = Value> {
        prop::sample::select(vec![
            serde_json::json!({"name": "pager", "kind": "webhook", "url": "https://hooks.example/T0/B0/secret",
                "token": "tk"}),
            serde_json::json!({"name": "am", "kind": "alertmanager", "url": "http://127.0.0.1:9093"}),
            serde_json::json!({"name": "self", "kind": "slack", "url": format!("http://{OWN}/hook")}),
            serde_json::json!({"name": "phone", "kind": "ntfy", "url": "https://ntfy.sh/topic", "token": ""}),
        ])
    }

    fn silence_seed() -> impl Strategy<Value = Value> {
        prop::sample::select(vec![
            serde_json::json!({"rule": "cpu", "hostname": "web-1", "ends_at": "2999-01-02T03:04:05Z",
                "comment": "upgrade\nof the kernel"}),
            serde_json::json!({"hostname": "*", "ends_at": "2999-01-02T03:04:05.123Z"}),
            serde_json::json!({"rule": "cpu", "ends_at": "2000-01-01T00:00:00Z"}),
        ])
    }

    fn value(body: &[u8]) -> Result<Value, ()> {
        serde_json::from_slice::<Value>(body).map_err(drop)
    }

    fn check_rule_body(f: &Fixture, body: &[u8]) -> Result<(), TestCaseError> {
        let accepted = value(body).and_then(|v| {
            let rule: AlertRule = parse(v).map_err(drop)?;
            check_rule(&f.alerts, &rule).map_err(drop)?;
            Ok(rule)
        });
        f.rt.block_on(async {
            let before = f.store.alert_rules().await.unwrap();
            match accepted {
                Ok(rule) => {
                    // Keeps the store small, and the rule `cpu` in place for the others.
                    for r in before.iter().filter(|r| r.name != "cpu") {
                        f.store.delete_alert_rule(&r.name).await.unwrap();
                    }
                    let create = rule.name != "cpu";
                    let put = f.store.put_alert_rule(&rule, create).await;
                    put.map_err(|e| TestCaseError::fail(format!("accepted but not stored: {e}")))?;
                    let back = f.store.alert_rules().await.unwrap();
                    let back = back.into_iter().find(|r| r.name == rule.name).unwrap();
                    prop_assert_eq!(&back, &rule);
                    let again: Result<AlertRule, _> = parse(serde_json::to_value(&back).unwrap());
                    let again = again.map_err(|e| TestCaseError::fail(format!("stored, but refused back: {e:?}")))?;
                    prop_assert!(check_rule(&f.alerts, &again).is_ok());
                }
                Err(()) => {
                    prop_assert_eq!(before, f.store.alert_rules().await.unwrap(), "a refused rule changed the store");
                }
            }
            Ok::<(), TestCaseError>(())
        })
    }

    fn check_channel_body(f: &Fixture, body: &[u8]) -> Result<(), TestCaseError> {
        f.rt.block_on(async {
            let accepted = match value(body).and_then(|v| new_channel(v).map_err(drop)) {
                Ok(c) => check_channel(&f.alerts, &c).await.map(|()| c).map_err(drop),
                Err(()) => Err(()),
            };
            let before = f.store.alert_channels().await.unwrap();
            match accepted {
                Ok(channel) => {
                    for c in before.iter().filter(|c| c.name != "ops") {
                        f.store.delete_alert_channel(&c.name).await.unwrap();
                    }
                    let create = channel.name != "ops";
                    let put = f.store.put_alert_channel(&channel, create).await;
                    put.map_err(|e| TestCaseError::fail(format!("accepted but not stored: {e}")))?;
                    let back = f.store.alert_channels().await.unwrap();
                    let back = back.into_iter().find(|c| c.name == channel.name).unwrap();
                    prop_assert_eq!(&back.url, &channel.url);
                    prop_assert_eq!(&back.token, &channel.token);
                    prop_assert_eq!(back.kind, channel.kind);
                    prop_assert!(!back.url.contains(OWN), "a channel to the collector itself was stored");
                    // What answers show is accepted back (a masked URL is a URL still).
                    let mut shown = serde_json::to_value(back.masked()).unwrap();
                    shown.as_object_mut().unwrap().remove("token");
                    let again = new_channel(shown);
                    prop_assert!(again.is_ok(), "stored, but refused when sent back: {:?}", again.err());
                }
                Err(()) => {
                    let after = f.store.alert_channels().await.unwrap();
                    let names =
                        |v: &[AlertChannel]| v.iter().map(|c| (c.name.clone(), c.url.clone())).collect::<Vec<_>>();
                    prop_assert_eq!(names(&before), names(&after), "a refused channel changed the store");
                }
            }
            Ok::<(), TestCaseError>(())
        })
    }

    fn check_silence_body(f: &Fixture, body: &[u8]) -> Result<(), TestCaseError> {
        let now = Utc::now();
        let accepted = value(body).and_then(|v| {
            let new: NewSilence = parse(v).map_err(drop)?;
            check_silence(&new, &f.alerts.rules(), now).map_err(drop)?;
            Ok(new)
        });
        f.rt.block_on(async {
            let before = f.store.silences(now).await.unwrap();
            match accepted {
                Ok(new) => {
                    for s in &before {
                        f.store.delete_silence(s.id).await.unwrap();
                    }
                    let made = f
                        .store
                        .add_silence(new.rule.as_deref(), new.hostname.as_deref(), new.ends_at, &new.comment, "fuzz")
                        .await;
                    let made = made.map_err(|e| TestCaseError::fail(format!("accepted but not stored: {e}")))?;
                    let back = f.store.silences(now).await.unwrap();
                    prop_assert_eq!(back.len(), 1);
                    prop_assert_eq!(&back[0], &made);
                    prop_assert_eq!(&made.rule, &new.rule);
                    prop_assert_eq!(&made.hostname, &new.hostname);
                    prop_assert_eq!(&made.comment, &new.comment);
                    // Stored to the millisecond.
                    prop_assert_eq!(made.ends_at.timestamp_millis(), new.ends_at.timestamp_millis());
                }
                Err(()) => {
                    prop_assert_eq!(
                        before,
                        f.store.silences(now).await.unwrap(),
                        "a refused silence changed the store"
                    );
                }
            }
            Ok::<(), TestCaseError>(())
        })
    }

    #[test]
    fn the_seeds_are_judged_as_meant() {
        FIXTURE.with(seeds_judged);
    }

    fn seeds_judged(f: &Fixture) {
        let ok_rule = |v: Value| {
            parse::<AlertRule>(v).map_err(drop).and_then(|r| check_rule(&f.alerts, &r).map_err(drop)).is_ok()
        };
        let rule_seeds = [
            serde_json::json!({"name": "nginx busy", "metric": "process.cpu_percent", "process": "name:nginx",
                "threshold": 90, "channels": ["ops"]}),
            serde_json::json!({"name": "ssh", "metric": "port.listening", "port": 22}),
        ];
        for s in rule_seeds {
            assert!(ok_rule(s.clone()), "{s}");
            check_rule_body(f, &serde_json::to_vec(&s).unwrap()).unwrap();
        }
        assert!(!ok_rule(serde_json::json!({"name": "x", "metric": "host.load1", "threshold": 1, "channels": ["no"]})));
        let self_channel = serde_json::json!({"name": "self", "kind": "slack", "url": format!("http://{OWN}/hook")});
        let refused = f.rt.block_on(check_channel(&f.alerts, &new_channel(self_channel).unwrap()));
        assert!(refused.is_err(), "a channel to the collector itself is refused");
        let silence = |v: Value| check_silence(&parse(v).unwrap(), &f.alerts.rules(), Utc::now()).is_ok();
        assert!(silence(serde_json::json!({"rule": "cpu", "ends_at": "2999-01-01T00:00:00Z"})));
        assert!(!silence(serde_json::json!({"rule": "cpu", "ends_at": "2000-01-01T00:00:00Z"})));
        assert!(!silence(serde_json::json!({"rule": "nope", "ends_at": "2999-01-01T00:00:00Z"})));
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn rule_bodies_mutated(v in rule_seed().prop_flat_map(mutated_json)) {
            FIXTURE.with(|f| check_rule_body(f, &serde_json::to_vec(&v).unwrap()))?;
        }

        #[test]
        fn rule_bodies_any(v in json_value()) {
            FIXTURE.with(|f| check_rule_body(f, &serde_json::to_vec(&v).unwrap()))?;
        }

        #[test]
        fn rule_bodies_bytes(b in rule_seed().prop_flat_map(|v| mutated_bytes(serde_json::to_vec(&v).unwrap()))) {
            FIXTURE.with(|f| check_rule_body(f, &b))?;
        }

        #[test]
        fn channel_bodies_mutated(v in channel_seed().prop_flat_map(mutated_json)) {
            FIXTURE.with(|f| check_channel_body(f, &serde_json::to_vec(&v).unwrap()))?;
        }

        #[test]
        fn channel_bodies_any(v in json_value()) {
            FIXTURE.with(|f| check_channel_body(f, &serde_json::to_vec(&v).unwrap()))?;
        }

        #[test]
        fn channel_bodies_bytes(b in channel_seed().prop_flat_map(|v| mutated_bytes(serde_json::to_vec(&v).unwrap()))) {
            FIXTURE.with(|f| check_channel_body(f, &b))?;
        }

        #[test]
        fn silence_bodies_mutated(v in silence_seed().prop_flat_map(mutated_json)) {
            FIXTURE.with(|f| check_silence_body(f, &serde_json::to_vec(&v).unwrap()))?;
        }

        #[test]
        fn silence_bodies_any(v in json_value()) {
            FIXTURE.with(|f| check_silence_body(f, &serde_json::to_vec(&v).unwrap()))?;
        }

        #[test]
        fn silence_bodies_bytes(b in silence_seed().prop_flat_map(|v| mutated_bytes(serde_json::to_vec(&v).unwrap()))) {
            FIXTURE.with(|f| check_silence_body(f, &b))?;
        }
    }
}
