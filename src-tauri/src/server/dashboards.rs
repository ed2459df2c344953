//! The dashboards API (`/api/dashboards`): layouts of widgets each user arranges for
//! themselves, saved on the collector.
//!
//! Every signed-in user, viewers included, may make their own. Only the owner changes or
//! deletes one (but an admin may delete one shared with everyone, which may outlive its
//! owner's care); others see it read-only when it is shared with them (`shared: users`
//! with their name in `shared_with`) or with everyone (`shared: everyone`, which only
//! admins may set). Someone else's dashboard is a 403 to change and a 404 when it is not
//! shared with the caller, so that ids do not tell what exists.
//!
//! A body is read field by field ([`parse`]): unknown kinds and fields, bad grid numbers
//! and sizes over the limits of `model::dashboard` are a 422 naming the field, and
//! nothing is stored. The fields an answer adds (`id`, `owner`, `updated_at`,
//! `read_only`) are dropped first, so that a dashboard read or exported can be sent back
//! as it is.
//!
//! Changes of a dashboard shared with everyone are audited, as other changes an admin
//! makes for everyone are (alert rules). Private and user-shared ones are not: the audit
//! log is readable by every user, and would tell them the names of dashboards that are
//! none of their business.

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode};
use axum::routing::{MethodRouter, delete, get, post, put};
use serde_json::Value;

use super::AppState;
use super::auth::CurrentUser;
use super::error::ApiError;
use super::rest::{ApiJson, ApiPath};
use super::routes::{Access, Route};
use crate::model::api::{AuditAction, ErrorBody, Role};
use crate::model::dashboard::{
    Dashboard, DashboardInput, HostMetric, Invalid, MAX_BODY_BYTES, ProcessMetric, Sharing, WIDGET_KINDS,
};
use crate::store::{NewAuditEntry, StoreError};

fn bounded(handler: MethodRouter<AppState>) -> MethodRouter<AppState> {
    handler.layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// The dashboard routes, with who may call each (see `routes.rs`): every signed-in user;
/// who may change which dashboard is decided per dashboard.
pub fn routes() -> Vec<Route> {
    use Access::Viewer;
    use Method as M;
    vec![
        Route::new(M::GET, "/api/dashboards", Viewer, get(list)).exact(),
        Route::new(M::POST, "/api/dashboards", Viewer, bounded(post(create))).exact(),
        Route::new(M::GET, "/api/dashboards/{id}", Viewer, get(read)).exact(),
        Route::new(M::PUT, "/api/dashboards/{id}", Viewer, bounded(put(update))).exact(),
        Route::new(M::DELETE, "/api/dashboards/{id}", Viewer, delete(remove)).exact(),
    ]
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::invalid(e.field, e.message)
    }
}

/// Reads and checks a dashboard body: the field at fault named on any error.
pub(crate) fn parse(mut body: Value) -> Result<DashboardInput, ApiError> {
    let Some(map) = body.as_object_mut() else {
        return Err(ApiError::Invalid { field: None, message: "The body is a JSON object.".into() });
    };
    for answer_only in ["id", "owner", "updated_at", "read_only"] {
        map.remove(answer_only);
    }
    if let Some(Value::Array(widgets)) = map.get("widgets") {
        for (i, widget) in widgets.iter().enumerate() {
            check_widget_fields(widget)
                .map_err(|(field, message)| ApiError::invalid(format!("widgets[{i}]{field}"), message))?;
        }
    }
    let input: DashboardInput = serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // serde names the field in backquotes: "unknown field `colour`, expected ...",
        // "missing field `hosts`".
        let named = if message.starts_with("unknown field") || message.starts_with("missing field") {
            message.split('`').nth(1).map(str::to_owned)
        } else {
            None
        };
        let field = match (path.as_str(), named) {
            (".", named) => named,
            (path, Some(named)) if path.starts_with("widgets[") && !path.contains('.') => {
                Some(format!("{path}.{named}"))
            }
            (path, _) => Some(path.to_owned()),
        };
        ApiError::Invalid { field, message: format!("{message}.") }
    })?;
    input.validate()?;
    Ok(input)
}

/// The types of a widget's fields, checked before serde reads it: serde reads a tagged
/// enum through a buffer and loses which field was wrong, so a bad `w` would otherwise
/// be reported as the whole widget. `Err((".field", message))`.
fn check_widget_fields(widget: &Value) -> Result<(), (String, String)> {
    let Some(fields) = widget.as_object() else {
        return Err((String::new(), "A widget is a JSON object.".into()));
    };
    let kind = match fields.get("kind") {
        None => return Err((".kind".into(), "A widget needs a `kind`.".into())),
        Some(Value::String(k)) if WIDGET_KINDS.contains(&k.as_str()) => k.as_str(),
        Some(other) => {
            return Err((
                ".kind".into(),
                format!("Unknown widget kind {other}; the kinds are {}.", WIDGET_KINDS.join(", ")),
            ));
        }
    };
    for (name, value) in fields {
        let bad = match name.as_str() {
            "x" | "y" | "w" | "h" | "limit" => value.as_u64().is_none_or(|n| n > u64::from(u32::MAX)),
            "title" | "hosts" | "host" | "process" | "filter" => !value.is_string(),
            "collapsed" => !value.is_boolean(),
            "metric" if kind == "host_chart" => serde_json::from_value::<HostMetric>(value.clone()).is_err(),
            "metric" if kind == "process_chart" => serde_json::from_value::<ProcessMetric>(value.clone()).is_err(),
            _ => false,
        };
        if bad {
            let message = match name.as_str() {
                "x" | "y" | "w" | "h" | "limit" => "A whole number, 0 or more.".to_owned(),
                "metric" => format!("Not a figure a {kind} draws."),
                "collapsed" => "true or false.".to_owned(),
                _ => "Text.".to_owned(),
            };
            return Err((format!(".{name}"), message));
        }
    }
    Ok(())
}

/// Checks who the dashboard is shared with: only admins share with everyone, and the
/// users named exist.
async fn check_sharing(state: &AppState, user: &CurrentUser, input: &DashboardInput) -> Result<(), ApiError> {
    if input.shared == Sharing::Everyone && user.role != Role::Admin {
        return Err(ApiError::Forbidden(
            "Only admins may share a dashboard with everyone; share it with users by name (`shared: users`).".into(),
        ));
    }
    for (i, name) in input.shared_with.iter().enumerate() {
        if state.store.user_by_name(name).await?.is_none() {
            return Err(ApiError::invalid(format!("shared_with[{i}]"), format!("There is no user `{name}`.")));
        }
    }
    Ok(())
}

/// Writes a change of a dashboard shared with everyone to the audit log.
async fn audit(state: &AppState, actor: &str, before: Option<&Dashboard>, after: Option<&Dashboard>, what: &str) {
    let public = |d: Option<&Dashboard>| d.is_some_and(|d| d.shared == Sharing::Everyone);
    if !public(before) && !public(after) {
        return;
    }
    let Some(d) = after.or(before) else { return };
    let entry = NewAuditEntry::host_change(
        actor,
        "",
        AuditAction::Dashboard,
        format!("Dashboard {} `{}` {what} (shared with everyone)", d.id, d.name),
    );
    if let Err(e) = state.store.audit(entry).await {
        tracing::error!("cannot write the audit log: {e}");
    }
}

/// The dashboard `id` as `user` may see it, or a 404 when they may not.
async fn visible(state: &AppState, user: &CurrentUser, id: i64) -> Result<Dashboard, ApiError> {
    match state.store.dashboard(id).await? {
        Some(mut d) if d.visible_to(&user.username) => {
            d.read_only = d.owner != user.username;
            Ok(d)
        }
        _ => Err(ApiError::NotFound(format!("Dashboard {id} not found."))),
    }
}

/// The dashboard `id` if `user` owns it: a 403 when they only see it, a 404 when not
/// even that.
async fn owned(state: &AppState, user: &CurrentUser, id: i64) -> Result<Dashboard, ApiError> {
    let d = visible(state, user, id).await?;
    if d.read_only {
        return Err(ApiError::Forbidden(format!(
            "Dashboard {id} is `{}`'s, shared with you read-only: only they may change it. Make a copy to change it.",
            d.owner
        )));
    }
    Ok(d)
}

#[utoipa::path(get, path = "/api/dashboards", tag = "dashboards", summary = "Dashboards",
    description = "The caller's own dashboards and those shared with them (`read_only`), by name.",
    responses((status = 200, description = "The dashboards", body = Vec<Dashboard>)))]
pub(super) async fn list(State(state): State<AppState>, user: CurrentUser) -> Result<Json<Vec<Dashboard>>, ApiError> {
    let mut all = state.store.dashboards_visible_to(&user.username).await?;
    for d in &mut all {
        d.read_only = d.owner != user.username;
    }
    Ok(Json(all))
}

#[utoipa::path(post, path = "/api/dashboards", tag = "dashboards", summary = "Make a dashboard",
    description = "Any signed-in user may make their own. A bad body (an unknown widget kind, a widget off the \
        12-column grid, over 64 widgets, a name over 100 characters) is a 422 naming the field, and nothing is \
        stored; over 64 KiB is a 413. Only admins may share with everyone (403).",
    request_body = DashboardInput,
    responses(
        (status = 201, description = "Made", body = Dashboard),
        (status = 409, description = "The caller has the most dashboards one user may have", body = ErrorBody),
        (status = 422, description = "A bad field, named", body = ErrorBody)))]
pub(super) async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<Dashboard>), ApiError> {
    let input = parse(body)?;
    check_sharing(&state, &user, &input).await?;
    let made = state.store.create_dashboard(&user.username, &input).await.map_err(|e| match e {
        StoreError::Refused(message) => ApiError::Conflict { code: "too_many", message },
        other => other.into(),
    })?;
    audit(&state, &user.username, None, Some(&made), "made").await;
    Ok((StatusCode::CREATED, Json(made)))
}

#[utoipa::path(get, path = "/api/dashboards/{id}", tag = "dashboards", summary = "One dashboard",
    description = "The caller's own, or one shared with them (`read_only`); any other is a 404.",
    params(("id" = i64, Path, description = "The dashboard's id")),
    responses(
        (status = 200, description = "The dashboard", body = Dashboard),
        (status = 404, description = "No such dashboard, or not shared with the caller", body = ErrorBody)))]
pub(super) async fn read(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Dashboard>, ApiError> {
    Ok(Json(visible(&state, &user, id).await?))
}

#[utoipa::path(put, path = "/api/dashboards/{id}", tag = "dashboards", summary = "Change a dashboard",
    description = "Replaces the name, sharing and widgets of one of the caller's own dashboards. Checked as a new \
        one is (422 naming the field, nothing stored); someone else's is a 403 when shared with the caller, \
        else a 404.",
    params(("id" = i64, Path, description = "The dashboard's id")),
    request_body = DashboardInput,
    responses(
        (status = 200, description = "Changed", body = Dashboard),
        (status = 403, description = "Someone else's dashboard, shared with the caller read-only", body = ErrorBody),
        (status = 404, description = "No such dashboard, or not shared with the caller", body = ErrorBody),
        (status = 422, description = "A bad field, named", body = ErrorBody)))]
pub(super) async fn update(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Dashboard>, ApiError> {
    let before = owned(&state, &user, id).await?;
    let input = parse(body)?;
    check_sharing(&state, &user, &input).await?;
    let after = state.store.update_dashboard(id, &input).await?;
    audit(&state, &user.username, Some(&before), Some(&after), "changed").await;
    Ok(Json(after))
}

#[utoipa::path(delete, path = "/api/dashboards/{id}", tag = "dashboards", summary = "Delete a dashboard",
    description = "Deletes one of the caller's own dashboards, or (admins) one shared with everyone; someone \
        else's is otherwise a 403 when shared with the caller, else a 404.",
    params(("id" = i64, Path, description = "The dashboard's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Someone else's dashboard, shared with the caller read-only", body = ErrorBody),
        (status = 404, description = "No such dashboard, or not shared with the caller", body = ErrorBody)))]
pub(super) async fn remove(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    let visible = visible(&state, &user, id).await?;
    // A dashboard everyone sees is an admin's to take down, as it was an admin's to
    // share that way; changing it stays its owner's.
    let before = if visible.shared == Sharing::Everyone && user.role == Role::Admin {
        visible
    } else {
        owned(&state, &user, id).await?
    };
    if !state.store.delete_dashboard(id).await? {
        return Err(ApiError::NotFound(format!("Dashboard {id} not found.")));
    }
    audit(&state, &user.username, Some(&before), None, "deleted").await;
    Ok(StatusCode::NO_CONTENT)
}

/// Fuzz targets for dashboard bodies, through the handler's own steps ([`parse`], then
/// the store): never a panic; a body is stored exactly when it was accepted, and what
/// was stored reads back as it was accepted. See `crate::fuzzing`.
#[cfg(test)]
mod fuzz {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::fuzzing::{config, json_value, mutated_bytes, mutated_json};
    use crate::store::Store;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// A dashboard with a widget of every kind.
    fn seed() -> Value {
        serde_json::json!({
            "name": "Web servers",
            "shared": "users",
            "shared_with": ["bob"],
            "widgets": [
                {"kind": "host_chart", "x": 0, "y": 0, "w": 6, "h": 4, "hosts": "web-*", "metric": "cpu_percent",
                 "title": "CPU"},
                {"kind": "process_chart", "x": 6, "y": 0, "w": 6, "h": 4, "host": "web-1", "process": "nginx",
                 "metric": "rss_bytes"},
                {"kind": "process_table", "x": 0, "y": 4, "w": 12, "h": 6, "host": "web-1", "filter": "cpu>5",
                 "limit": 20},
                {"kind": "top_ports", "x": 0, "y": 10, "w": 4, "h": 4, "host": "web-1", "limit": 10},
                {"kind": "alerts", "x": 4, "y": 10, "w": 8, "h": 4, "hosts": "web-*"}
            ]
        })
    }

    /// One store for every case, on its own runtime (proptest's cases are synchronous).
    fn store() -> &'static (tokio::runtime::Runtime, Store, tempfile::TempDir) {
        static STORE: OnceLock<(tokio::runtime::Runtime, Store, tempfile::TempDir)> = OnceLock::new();
        STORE.get_or_init(|| {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let store = rt.block_on(async { Store::open(&dir.path().join("procyon.db")).await.unwrap() });
            (rt, store, dir)
        })
    }

    async fn owned_by(store: &Store, owner: &str) -> Vec<Dashboard> {
        let all = store.dashboards_visible_to(owner).await.unwrap();
        all.into_iter().filter(|d| d.owner == owner).collect()
    }

    /// What the handler does with a body, with the checks every outcome must pass. Each
    /// target runs on a thread of its own and stores under an owner of its own, so
    /// targets running at once do not see each other's dashboards.
    fn check(body: &[u8]) -> Result<(), TestCaseError> {
        let (rt, store, _) = store();
        let owner = format!("fuzz-{:?}", std::thread::current().id());
        let parsed = serde_json::from_slice::<Value>(body).map_err(|_| ()).and_then(|v| parse(v).map_err(drop));
        rt.block_on(async {
            let before = owned_by(store, &owner).await;
            match parsed {
                Ok(input) => {
                    // Keeps the store small: the per-user limit is not what this tests.
                    for d in &before {
                        store.delete_dashboard(d.id).await.unwrap();
                    }
                    let made = store.create_dashboard(&owner, &input).await;
                    let made = made.map_err(|e| TestCaseError::fail(format!("accepted but not stored: {e}")))?;
                    prop_assert_eq!(made.input(), input.clone());
                    // Reads back as accepted, and is accepted again as it reads back.
                    let back = store.dashboard(made.id).await.unwrap().unwrap();
                    prop_assert_eq!(back.input(), input);
                    let again = parse(serde_json::to_value(&back).unwrap());
                    prop_assert!(again.is_ok(), "stored, but refused when sent back: {:?}", again.err());
                }
                Err(()) => {
                    prop_assert_eq!(before, owned_by(store, &owner).await, "a refused body changed what is stored");
                }
            }
            Ok::<(), TestCaseError>(())
        })
    }

    /// Every refusal of [`parse`] is a 422 with a message (a field named whenever the
    /// body is an object).
    fn clear(v: Value) -> Result<(), TestCaseError> {
        let object = v.is_object();
        if let Err(e) = parse(v) {
            let ApiError::Invalid { field, message } = &e else {
                return Err(TestCaseError::fail(format!("not a 422: {e:?}")));
            };
            prop_assert!(!message.is_empty());
            prop_assert!(!object || field.is_some(), "no field named: {message}");
        }
        Ok(())
    }

    #[test]
    fn the_seed_is_accepted() {
        assert!(parse(seed()).is_ok());
        check(&serde_json::to_vec(&seed()).unwrap()).unwrap();
    }

    #[test]
    fn faults_are_named_down_to_the_field() {
        let field = |v: Value| match parse(v) {
            Err(ApiError::Invalid { field, .. }) => field.unwrap_or_default(),
            other => panic!("{other:?}"),
        };
        let mut v = seed();
        v["widgets"][2]["kind"] = "pie".into();
        assert_eq!(field(v), "widgets[2].kind");
        let mut v = seed();
        v["widgets"][1]["colour"] = "red".into();
        assert_eq!(field(v), "widgets[1].colour");
        let mut v = seed();
        v["widgets"][0].as_object_mut().unwrap().remove("hosts");
        assert_eq!(field(v), "widgets[0].hosts");
        let mut v = seed();
        v["widgets"][3]["w"] = (-1).into();
        assert_eq!(field(v), "widgets[3].w");
        let mut v = seed();
        v["widgets"][4]["x"] = 9.into();
        assert_eq!(field(v), "widgets[4].x");
        let mut v = seed();
        v.as_object_mut().unwrap().remove("name");
        assert_eq!(field(v), "name");
        let mut v = seed();
        v["shared"] = "world".into();
        assert_eq!(field(v), "shared");
        let mut v = seed();
        v["widgets"][0]["metric"] = "rss_bytes".into();
        assert_eq!(field(v), "widgets[0].metric");
        let mut v = seed();
        v["widgets"][1]["process"] = 3.into();
        assert_eq!(field(v), "widgets[1].process");
        let mut v = seed();
        v["widgets"][2].as_object_mut().unwrap().remove("kind");
        assert_eq!(field(v), "widgets[2].kind");
        let mut v = seed();
        v["widgets"][2] = "chart".into();
        assert_eq!(field(v), "widgets[2]");
        let map = |extra: Value| {
            let mut v = seed();
            let mut w = serde_json::json!({"kind": "network_map", "x": 0, "y": 0, "w": 12, "h": 8});
            for (k, x) in extra.as_object().unwrap() {
                w[k] = x.clone();
            }
            v["widgets"][0] = w;
            v
        };
        assert_eq!(field(map(serde_json::json!({"collapsed": "yes"}))), "widgets[0].collapsed");
        assert_eq!(field(map(serde_json::json!({"hosts": 3}))), "widgets[0].hosts");
        assert_eq!(field(map(serde_json::json!({"layout": "circle"}))), "widgets[0].layout");
        assert!(parse(map(serde_json::json!({"hosts": "web-*", "collapsed": true}))).is_ok());
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
            check(&body)?;
        }

        #[test]
        fn any_json_value(v in json_value()) {
            clear(v.clone())?;
            check(&serde_json::to_vec(&v).unwrap())?;
        }

        #[test]
        fn the_seed_with_fields_changed(v in mutated_json(seed())) {
            clear(v.clone())?;
            check(&serde_json::to_vec(&v).unwrap())?;
        }

        #[test]
        fn the_seed_text_with_bytes_changed(body in mutated_bytes(serde_json::to_vec(&seed()).unwrap())) {
            check(&body)?;
        }
    }
}
