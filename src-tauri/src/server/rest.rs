//! Every REST endpoint, each a thin adapter: check who asks, read the request, call the
//! store, the hub or control, shape the answer.
//!
//! Paths of the original documents are kept exactly (trailing slashes included), and
//! also answer without the trailing slash.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{self, AdminUser, AgentKey, CurrentUser};
use super::error::ApiError;
use super::query::{self, ApiQuery};
use super::routes::{Access, Route};
use super::{AppState, upload, views};
use crate::control::{self, Target};
use crate::model::api::{
    ApiKeySummary, AuditAction, AuditEntry, BulkActionRequest, BulkActionResponse, BulkResult, ErrorBody, HostSummary,
    KeyScope, LoginResponse, MAX_BULK_TARGETS, Role, SnapshotSummary, UserSummary,
};
use crate::model::{ActionErrorCode, ProcessAction, Snapshot};
use crate::store::{NewAuditEntry, Newest, Page, StoreError, StoredSnapshot};

/// JSON body with errors in our shape.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// Path parameters with errors in our shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// The most a request body may be on routes whose JSON bodies are small by nature
/// (sign-in, accounts, keys, bindings, actions): a password is at most 1,024 bytes, and
/// nothing else needs axum's default of 2 MB buffered before the handler looks at it.
/// Uploads have their own limit (`upload::MAX_BODY_BYTES`).
pub const SMALL_BODY_BYTES: usize = 16 << 10;

/// `handler` with bodies over [`SMALL_BODY_BYTES`] refused (413) as they are read.
fn small(handler: MethodRouter<AppState>) -> MethodRouter<AppState> {
    handler.layer(DefaultBodyLimit::max(SMALL_BODY_BYTES))
}

/// The REST routes, with who may call each (see `routes.rs`).
pub fn routes() -> Vec<Route> {
    use Access::{Admin, Agent, Operator, Public, Viewer};
    use Method as M;
    vec![
        Route::new(M::POST, "/api/auth/login", Public, small(post(login))),
        Route::new(M::GET, "/api/auth/me", Viewer, get(me)),
        Route::new(M::POST, "/api/auth/ws-ticket", Viewer, small(post(ws_ticket))),
        Route::new(M::POST, "/api/auth/refresh", Viewer, small(post(refresh))),
        Route::new(M::GET, "/api/health", Public, get(health)),
        Route::new(M::GET, "/api/openapi.json", Viewer, get(super::openapi::document)),
        Route::new(M::POST, "/api/process-snapshots/", Agent, post(upload_snapshot)),
        Route::new(M::GET, "/api/hosts/", Viewer, get(hosts)),
        Route::new(M::GET, "/api/processes", Viewer, get(super::fleet_search::search_processes)),
        Route::new(M::GET, "/api/network-map", Viewer, get(super::network_map::network_map)),
        Route::new(M::DELETE, "/api/hosts/{server_id}", Admin, small(delete(delete_host))),
        Route::new(M::GET, "/api/hosts/{server_id}/top-processes", Viewer, get(top_processes)),
        Route::new(M::GET, "/api/hosts/{server_id}/export", Viewer, get(export_range)),
        Route::new(M::GET, "/api/hosts/{server_id}/process-history", Viewer, get(process_history)),
        Route::new(M::GET, "/api/hosts/{server_id}/binding", Admin, get(host_binding)),
        Route::new(M::PUT, "/api/hosts/{server_id}/binding", Admin, small(put(bind_host))),
        Route::new(M::DELETE, "/api/hosts/{server_id}/binding", Admin, small(delete(reset_host_binding))),
        Route::new(M::PUT, "/api/hosts/{server_id}/labels", Admin, small(put(set_host_labels))),
        Route::new(M::GET, "/api/process-snapshots/latest/", Viewer, get(latest)),
        Route::new(M::GET, "/api/process-snapshots/list/", Viewer, get(list)),
        Route::new(M::GET, "/api/process-snapshots/series/", Viewer, get(series)),
        Route::new(M::GET, "/api/process-snapshots/{id}/", Viewer, get(snapshot_detail)),
        Route::new(M::GET, "/api/process-snapshots/{id}/export", Viewer, get(export_snapshot)),
        Route::new(M::GET, "/api/monitoring/{server_id}/snapshot", Viewer, get(monitoring_snapshot)),
        Route::new(
            M::POST,
            "/api/monitoring/{server_id}/process/{pid}/{action}",
            Operator,
            small(post(process_action)),
        ),
        Route::new(
            M::POST,
            "/api/monitoring/{server_id}/processes/{action}",
            Operator,
            post(bulk_process_action).layer(DefaultBodyLimit::max(BULK_BODY_BYTES)),
        ),
        Route::new(M::GET, "/api/audit", Viewer, get(audit)),
        Route::new(M::GET, "/api/users", Admin, get(users)),
        Route::new(M::POST, "/api/users", Admin, small(post(create_user))),
        Route::new(M::DELETE, "/api/users/{username}", Admin, small(delete(remove_user))),
        Route::new(M::GET, "/api/keys", Admin, get(keys)),
        Route::new(M::POST, "/api/keys", Admin, small(post(create_key))),
        Route::new(M::DELETE, "/api/keys/{key}", Admin, small(delete(revoke_key))),
    ]
}

// ---------------------------------------------------------------------------------------
// Sign-in

/// `POST /api/auth/login`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct Login {
    /// User name.
    username: String,
    /// Password.
    password: String,
}

/// The peer address of a request, for sign-in throttling.
pub(super) struct Client(auth::ClientAddress);

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Client(auth::client_address(parts)))
    }
}

#[utoipa::path(post, path = "/api/auth/login", tag = "auth",
    summary = "Sign in",
    description = "Checks a user name and password and returns a bearer token. Failed attempts are throttled per \
        user name and client (429 with `Retry-After`).",
    request_body = Login,
    responses((status = 200, description = "Signed in", body = LoginResponse)))]
pub(super) async fn login(
    State(state): State<AppState>,
    Client(address): Client,
    ApiJson(body): ApiJson<Login>,
) -> Result<Response, ApiError> {
    // Refused before any work: a long name costs hashing and ledger space for nothing.
    if body.username.len() > auth::MAX_USERNAME_BYTES {
        return Err(ApiError::invalid(
            "username",
            format!("A user name is at most {} bytes.", auth::MAX_USERNAME_BYTES),
        ));
    }
    if body.password.len() > 1024 {
        return Err(ApiError::invalid("password", "A password is at most 1024 bytes."));
    }
    state.auth.attempt(&body.username, address)?;
    let user = state.store.user_by_name(&body.username).await?;
    let ok = state.auth.check_password(body.password, user.as_ref().map(|u| u.password_hash.clone())).await?;
    match user {
        Some(u) if ok => {
            state.auth.succeeded(&body.username, address);
            let login = state.auth.issue(&u.summary.username, u.summary.role, u.token_generation)?;
            Ok(Json(login).into_response())
        }
        _ => {
            state.auth.failed(&body.username, address).await;
            Err(ApiError::Unauthorized("Wrong user name or password.".into()))
        }
    }
}

/// A new token for the caller's session, so that a dashboard in use is not signed out
/// every `--token-ttl`; at most [`auth::MAX_SESSION_AGE`] after the password was given.
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth",
    summary = "Renew the token",
    description = "A new token for the caller's session (send the current one as `Authorization: Bearer`), until \
        12 hours after the password was given.",
    responses((status = 200, description = "A new token", body = LoginResponse)))]
pub(super) async fn refresh(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::Unauthorized("Renewing needs the token itself: `Authorization: Bearer ...`.".into())
        })?;
    Ok(Json(state.auth.renew(token.trim(), &user)?).into_response())
}

/// A single-use ticket for opening a WebSocket (`?ticket=`), so that browsers never put
/// their token in a URL.
#[utoipa::path(post, path = "/api/auth/ws-ticket", tag = "auth",
    summary = "A WebSocket ticket",
    description = "A single-use ticket (30 s) to open a WebSocket with `?ticket=`, so that browsers never put \
        their token in a URL.",
    responses((status = 200, description = "A ticket", body = super::openapi::WsTicket)))]
pub(super) async fn ws_ticket(State(state): State<AppState>, user: CurrentUser) -> Result<Json<Value>, ApiError> {
    let ticket = state.auth.issue_ticket(&user)?;
    Ok(Json(json!({ "ticket": ticket, "expires_in_secs": auth::TICKET_TTL.as_secs() })))
}

#[utoipa::path(get, path = "/api/auth/me", tag = "auth", summary = "The signed-in user",
    responses((status = 200, description = "Who the token is for", body = super::openapi::Me)))]
pub(super) async fn me(user: CurrentUser) -> Json<Value> {
    Json(json!({ "username": user.username, "role": user.role }))
}

#[utoipa::path(get, path = "/api/health", tag = "meta", summary = "Liveness",
    description = "Answers without credentials, and says nothing about what is monitored.",
    responses((status = 200, description = "The collector and its store work", body = super::openapi::Health)))]
pub(super) async fn health(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    // Answers without credentials, so it says nothing about what is monitored.
    state.store.count(None).await?;
    Ok(Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") })))
}

// ---------------------------------------------------------------------------------------
// Uploads and reads of the process-snapshots API

/// The header an agent's REST uploads carry its machine fingerprint in (the WebSocket
/// carries it in the hello).
pub const MACHINE_ID_HEADER: &str = "procyon-machine-id";

#[utoipa::path(post, path = "/api/process-snapshots/", tag = "snapshots",
    summary = "Upload a snapshot",
    description = "Either format: a full snapshot as `procyon snapshot` prints it, or the snapshot API's short \
        one (`{hostname, snapshot_time, processes}` with children nested). Sending the same snapshot again stores \
        nothing and answers 200 with `duplicate: true`. Bodies are at most 16 MiB.",
    request_body(content = super::openapi::Upload, description = "A full or a short snapshot"),
    params(("procyon-machine-id" = Option<String>, Header,
        description = "The machine's fingerprint, which binds the host name to this machine")),
    responses(
        (status = 201, description = "Stored", body = super::openapi::Uploaded),
        (status = 200, description = "Stored already (a retry)", body = super::openapi::Uploaded),
        (status = 409, description = "The host is bound to another machine or live on the agent channel, or the \
            sequence number went back", body = ErrorBody),
        (status = 413, description = "The body is over the limit", body = ErrorBody)))]
pub(super) async fn upload_snapshot(
    State(state): State<AppState>,
    agent: AgentKey,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let too_large = || ApiError::TooLarge(format!("Uploads are limited to {} MiB.", upload::MAX_BODY_BYTES >> 20));
    // Refuse by the declared length before reading anything.
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > upload::MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    // Room for the body before it is read (a body of unknown length may be the largest),
    // held until the snapshot is stored.
    let limit = declared.map_or(upload::MAX_BODY_BYTES, |len| len as usize);
    let _room = state.uploads.room(agent.key.id, limit).await?;
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| too_large())?;
    // Parsed, checked and masked on a blocking thread.
    let snapshot = state.uploads.parse(body).await?;
    // Whether this key may report as the host comes first: a sender that may not learns
    // nothing of the host's history (its sequence numbers) from the answer.
    let hostname = snapshot.host.hostname.as_str();
    let machine_id = headers.get(MACHINE_ID_HEADER).map(|v| v.to_str().unwrap_or("?"));
    let admission = super::binding::check(&state, &agent.key, hostname, machine_id).await?;
    // A host its agent streams now takes no uploads: they could only be another
    // machine's, taking the agent's next sequence numbers (see `agent_streaming`).
    if state.agents.is_connected(hostname) {
        return Err(super::binding::agent_streaming(hostname));
    }
    // Checked before the host is bound, so that a refused upload binds nothing.
    state.check_sequence(&snapshot, chrono::Utc::now()).await?;
    if admission.claims_fingerprint() {
        // Only while no agent session is live for the host, and never in between.
        let _claims = state.bindings.claims.lock().await;
        if state.agents.is_connected(hostname) {
            return Err(super::binding::agent_streaming(hostname));
        }
        admission.commit(&state).await?;
    } else {
        admission.commit(&state).await?;
    }
    // Once more, just before storing: a session may have begun while this was checked.
    if state.agents.is_connected(hostname) {
        return Err(super::binding::agent_streaming(hostname));
    }
    let taken_at = snapshot.taken_at;
    let inserted = state.ingest_redacted(std::sync::Arc::new(snapshot)).await?;
    // The time stored: a short upload without `snapshot_time` is stamped on arrival.
    let body = json!({
        "message": "Snapshot uploaded successfully.",
        "snapshot_id": inserted.id,
        "snapshot_time": taken_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "duplicate": inserted.duplicate,
    });
    // Created, or (the same snapshot sent again, e.g. a retry) already there: 200.
    let status = if inserted.duplicate { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(body)).into_response())
}

#[utoipa::path(get, path = "/api/hosts/", tag = "hosts", summary = "Hosts",
    description = "Every host that has reported, with its online state, its labels, and (while the collector holds \
        its newest snapshot live) the figures of the fleet overview: CPU with its recent trend, memory, swap, load, \
        network rates, process count and the busiest process. Read from memory, not from stored snapshots; \
        `/ws/fleet` carries the changes.",
    responses((status = 200, description = "The hosts", body = Vec<HostSummary>)))]
pub(super) async fn hosts(
    State(state): State<AppState>,
    _user: CurrentUser,
) -> Result<Json<Vec<HostSummary>>, ApiError> {
    let mut hosts = state.store.hosts().await?;
    for h in &mut hosts {
        state.decorate(h);
    }
    Ok(Json(hosts))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct HostQuery {
    /// One host (by name, id or `local`): the answer is that host's snapshot, not a list.
    hostname: Option<String>,
    /// Nest processes under their parents' `children`.
    #[serde(default)]
    tree: bool,
    /// Without `hostname`: hosts from this name on (by name), to go on after a list cut
    /// short at its byte budget.
    from_hostname: Option<String>,
    /// Without `hostname`: a smaller byte budget than [`EXPORT_BUDGET_BYTES`].
    max_bytes: Option<u64>,
}

/// Header stating the byte budget of the newest snapshots of every host.
const LIST_BUDGET_HEADER: &str = "x-budget-bytes";

/// The newest snapshot of one host, or of every host.
///
/// Every host's is a stream (a key may bind 10,000 hosts, each snapshot megabytes):
/// hosts by name, each snapshot read and encoded off the async workers when its turn
/// comes (or taken as encoded from the live view), within a byte budget like the JSON
/// export's: past it, the array ends with `{"truncated": true, "reason", "message",
/// "exported", "next_hostname"}`, and asking again with `from_hostname=<next_hostname>`
/// gets the rest.
#[utoipa::path(get, path = "/api/process-snapshots/latest/", tag = "snapshots",
    summary = "Newest snapshots",
    description = "Without `hostname`, a list: every host's newest snapshot, by host name, within a byte budget \
        (header `X-Budget-Bytes`); past it the list ends with a `Truncated` marker, and asking again with \
        `from_hostname` gets the rest. With `hostname`, one object: that host's newest snapshot.",
    params(HostQuery),
    responses((status = 200, description = "A list, or one snapshot with `hostname`", body = super::openapi::Latest,
        headers(("X-Budget-Bytes" = u64, description = "The list's byte budget (without `hostname`)")))))]
pub(super) async fn latest(
    State(state): State<AppState>,
    _user: CurrentUser,
    ApiQuery(q): ApiQuery<HostQuery>,
) -> Result<Response, ApiError> {
    let tree = q.tree;
    if let Some(hostname) = q.hostname {
        let host = state.resolve_host(&hostname).await?;
        let encoded = state
            .store
            .latest_with(host.id, move |s| serde_json::to_vec(&views::stored(s.id, &s.snapshot, tree)))
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("Host `{hostname}` has no stored snapshot.")))?;
        return Ok(json_bytes(encoded.map_err(|e| ApiError::Internal(format!("encoding a snapshot: {e}")))?));
    }
    let budget = q.max_bytes.unwrap_or(EXPORT_BUDGET_BYTES).clamp(MIN_EXPORT_BUDGET_BYTES, EXPORT_BUDGET_BYTES);
    let from = q.from_hostname;
    let mut hosts: std::collections::VecDeque<Newest> = state
        .store
        .newest_per_host()
        .await?
        .into_iter()
        .filter(|n| from.as_deref().is_none_or(|f| n.hostname.as_str() >= f))
        .collect();
    // The first is read before the answer starts, so that a busy store is a 503 the
    // client can retry, not a list cut short.
    let mut first = None;
    while first.is_none()
        && let Some(newest) = hosts.pop_front()
    {
        first = newest_encoded(&state, &newest, tree).await?.map(|json| (newest.hostname, json));
    }
    let body = match first {
        None => Body::from("[]"),
        // Fused: the compression layer polls a body's stream again after its end, which
        // an unfolded stream answers with a panic (the answer was cut off for every
        // client that accepts gzip).
        first => Body::from_stream(futures_util::StreamExt::fuse(newest_list(state, hosts, first, budget, tree))),
    };
    let mut response = json_bytes(Vec::new());
    *response.body_mut() = body;
    response.headers_mut().insert(LIST_BUDGET_HEADER, HeaderValue::from(budget));
    Ok(response)
}

/// The JSON of a host's newest snapshot in the stored-snapshot shape: from the live view
/// when it holds that snapshot (encoded once for every reader), else read from the store
/// and encoded on the thread that decoded it. `None` when it is gone, or cannot be read
/// (logged: one broken snapshot must not hide every other host).
async fn newest_encoded(state: &AppState, newest: &Newest, tree: bool) -> Result<Option<Vec<u8>>, StoreError> {
    if !tree
        && let Some(p) = state.hub.latest(&newest.hostname)
        && p.snapshot_id >= newest.snapshot_id
    {
        return Ok(Some(
            super::ws::stream_message(&mut None, p.snapshot_id, &p.snapshot, Some(&p.encoded)).as_bytes().to_vec(),
        ));
    }
    let encoded = state
        .store
        .snapshot_with(newest.snapshot_id, move |s| serde_json::to_vec(&views::stored(s.id, &s.snapshot, tree)))
        .await;
    match encoded {
        Ok(Some(Ok(json))) => Ok(Some(json)),
        Ok(None) => Ok(None),
        Ok(Some(Err(e))) => {
            tracing::error!(host = %newest.hostname, "cannot encode the newest snapshot: {e}");
            Ok(None)
        }
        Err(e @ (StoreError::Busy { .. } | StoreError::Closed)) => Err(e),
        Err(e) => {
            tracing::warn!(host = %newest.hostname, "skipping the newest snapshot of a host: {e}");
            Ok(None)
        }
    }
}

/// Where a list of newest snapshots is.
struct NewestList {
    state: AppState,
    hosts: std::collections::VecDeque<Newest>,
    /// A snapshot read but not sent yet (the first, read before the answer started).
    pending: Option<(String, Vec<u8>)>,
    tree: bool,
    budget: u64,
    sent_bytes: u64,
    exported: u64,
    done: bool,
}

/// The body of [`latest`] for every host: one snapshot at a time, within `budget`.
fn newest_list(
    state: AppState,
    hosts: std::collections::VecDeque<Newest>,
    first: Option<(String, Vec<u8>)>,
    budget: u64,
    tree: bool,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    let start = NewestList { state, hosts, pending: first, tree, budget, sent_bytes: 0, exported: 0, done: false };
    futures_util::stream::unfold(start, |mut list| async move {
        if list.done {
            return None;
        }
        let mut next = Ok(list.pending.take());
        while matches!(next, Ok(None))
            && let Some(newest) = list.hosts.pop_front()
        {
            next = match newest_encoded(&list.state, &newest, list.tree).await {
                Ok(json) => Ok(json.map(|json| (newest.hostname, json))),
                Err(e) => Err((newest.hostname, e)),
            };
        }
        let open = if list.exported == 0 { "[" } else { "," };
        let (chunk, done) = match next {
            Ok(None) => (format!("{}]", if list.exported == 0 { "[" } else { "" }).into_bytes(), true),
            Ok(Some((_, json))) if list.sent_bytes + (open.len() + json.len()) as u64 + MARKER_ROOM <= list.budget => {
                let mut chunk = Vec::with_capacity(json.len() + 1);
                chunk.extend_from_slice(open.as_bytes());
                chunk.extend_from_slice(&json);
                list.exported += 1;
                (chunk, false)
            }
            Ok(Some((hostname, _))) => {
                let message = format!(
                    "The list stopped at its limit of {} bytes after {} hosts; ask again with from_hostname={hostname} \
                     for the rest.",
                    list.budget, list.exported
                );
                (list_marker(open, "byte_budget", &message, list.exported, &hostname), true)
            }
            Err((hostname, e)) => {
                tracing::warn!("a list of newest snapshots stopped early: {e}");
                let message =
                    format!("The list stopped early: {e}; ask again with from_hostname={hostname} for the rest.");
                (list_marker(open, "read_failed", &message, list.exported, &hostname), true)
            }
        };
        list.sent_bytes += chunk.len() as u64;
        list.done = done;
        Some((Ok(Bytes::from(chunk)), list))
    })
}

/// The last element of a list of newest snapshots cut short, and the array's end.
fn list_marker(open: &str, reason: &str, message: &str, exported: u64, next_hostname: &str) -> Vec<u8> {
    let marker = json!({
        "truncated": true,
        "reason": reason,
        "message": message,
        "exported": exported,
        "next_hostname": next_hostname,
    });
    format!("{open}{marker}]").into_bytes()
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// One host (by name, id or `local`).
    hostname: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// Rows to skip.
    offset: Option<u32>,
}

#[utoipa::path(get, path = "/api/process-snapshots/list/", tag = "snapshots",
    summary = "Stored snapshots",
    description = "Newest first, a page at a time; the header `X-Total-Count` has the total.",
    params(ListQuery),
    responses((status = 200, description = "A page of summaries", body = Vec<SnapshotSummary>,
        headers(("X-Total-Count" = u64, description = "Stored snapshots in all (of the host, with `hostname`)")))))]
pub(super) async fn list(
    State(state): State<AppState>,
    _user: CurrentUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let host_id = match &q.hostname {
        Some(h) => Some(state.resolve_host(h).await?.id),
        None => None,
    };
    let page = Page { limit: q.limit.unwrap_or(100).clamp(1, 1000), offset: q.offset.unwrap_or(0) };
    let rows: Vec<SnapshotSummary> = state.store.list(host_id, page).await?;
    let total = state.store.count(host_id).await?;
    let mut response = Json(rows).into_response();
    if let Ok(v) = HeaderValue::from_str(&total.to_string()) {
        response.headers_mut().insert("x-total-count", v);
    }
    Ok(response)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct SeriesQuery {
    /// The host (by name, id or `local`); required.
    #[param(required = true)]
    hostname: Option<String>,
    /// Most points, 1 to 10,000.
    limit: Option<u32>,
    /// The original document's spelling of `limit`.
    limt: Option<u32>,
    /// Start: RFC 3339 (without a zone, UTC), a date, epoch seconds, `now` or relative (`-15m`).
    #[serde(default, deserialize_with = "query::time")]
    from: Option<DateTime<Utc>>,
    /// End, in the same forms as `from` (default now).
    #[serde(default, deserialize_with = "query::time")]
    to: Option<DateTime<Utc>>,
}

#[utoipa::path(get, path = "/api/process-snapshots/series/", tag = "snapshots",
    summary = "A host's figures over time",
    description = "CPU, memory, process count and network over a range; the tier (raw, minute, hour) fits the \
        range.",
    params(SeriesQuery),
    responses((status = 200, description = "The series", body = crate::model::api::Series)))]
pub(super) async fn series(
    State(state): State<AppState>,
    _user: CurrentUser,
    ApiQuery(q): ApiQuery<SeriesQuery>,
) -> Result<Json<crate::model::api::Series>, ApiError> {
    let hostname = q.hostname.ok_or_else(|| ApiError::invalid("hostname", "hostname is required."))?;
    if let (Some(from), Some(to)) = (q.from, q.to)
        && from > to
    {
        return Err(ApiError::invalid("from", "from must be before to."));
    }
    let host = state.resolve_host(&hostname).await?;
    let limit = q.limit.or(q.limt).map(|l| l.clamp(1, 10_000));
    let series = state.store.series(host.id, q.from, q.to, limit, Utc::now(), &state.settings.retention).await?;
    Ok(Json(series))
}

/// Reads snapshot `id` and passes it through `f` on the thread that decoded it, within
/// the store's slot for heavy reads: what `f` returns (an encoding) is all that outlives
/// the decoded snapshot.
async fn with_snapshot<T, F>(state: &AppState, id: &str, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(StoredSnapshot) -> T + Send + 'static,
{
    let id: i64 = id.parse().map_err(|_| ApiError::NotFound(format!("No snapshot `{id}`: ids are numbers.")))?;
    state.store.snapshot_with(id, f).await?.ok_or_else(|| ApiError::NotFound(format!("No snapshot {id}.")))
}

/// A JSON body already encoded.
fn json_bytes(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes).into_response()
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TreeQuery {
    /// Nest processes under their parents' `children`.
    #[serde(default)]
    tree: bool,
}

#[utoipa::path(get, path = "/api/process-snapshots/{id}/", tag = "snapshots", summary = "One stored snapshot",
    params(("id" = i64, Path, description = "`snapshot_id`"), TreeQuery),
    responses((status = 200, description = "The snapshot", body = super::openapi::StoredSnapshot)))]
pub(super) async fn snapshot_detail(
    State(state): State<AppState>,
    _user: CurrentUser,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<TreeQuery>,
) -> Result<Response, ApiError> {
    let tree = q.tree;
    let encoded =
        with_snapshot(&state, &id, move |s| serde_json::to_vec(&views::stored(s.id, &s.snapshot, tree))).await?;
    Ok(json_bytes(encoded.map_err(|e| ApiError::Internal(format!("encoding a snapshot: {e}")))?))
}

// ---------------------------------------------------------------------------------------
// History extras: top processes and export

#[derive(Deserialize)]
pub(super) struct RangeQuery {
    #[serde(default, deserialize_with = "query::time")]
    from: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "query::time")]
    to: Option<DateTime<Utc>>,
    n: Option<u32>,
    format: Option<String>,
    limit: Option<u32>,
    /// A smaller byte budget for an export than [`EXPORT_BUDGET_BYTES`].
    max_bytes: Option<u64>,
}

impl RangeQuery {
    /// The range, defaulting to the last hour.
    fn range(&self) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
        let to = self.to.unwrap_or_else(Utc::now);
        let from = self.from.unwrap_or(to - chrono::Duration::hours(1));
        if from > to {
            return Err(ApiError::invalid("from", "from must be before to."));
        }
        Ok((from, to))
    }
}

#[utoipa::path(get, path = "/api/hosts/{server_id}/top-processes", tag = "hosts",
    summary = "Processes that peaked highest",
    description = "The processes with the highest CPU and memory peaks in a range (default the last hour).",
    params(super::openapi::ServerId, super::openapi::TimeRange, ("n" = Option<u32>, Query, description = "How many, 1 to 100 (default 10)")),
    responses((status = 200, description = "The processes", body = Vec<crate::model::api::TopProcess>)))]
pub(super) async fn top_processes(
    State(state): State<AppState>,
    _user: CurrentUser,
    ApiPath(server_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Json<Vec<crate::model::api::TopProcess>>, ApiError> {
    let host = state.resolve_host(&server_id).await?;
    let (from, to) = q.range()?;
    Ok(Json(state.store.top_processes(host.id, from, to, q.n.unwrap_or(10).clamp(1, 100)).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct HistoryQuery {
    /// Process id.
    pid: u32,
    /// Only the process with this start time (RFC 3339), not another with its pid.
    start_time: Option<DateTime<Utc>>,
    /// Start: RFC 3339 (without a zone, UTC), a date, epoch seconds, `now` or relative (`-15m`); default 30
    /// minutes before `to`.
    #[serde(default, deserialize_with = "query::time")]
    from: Option<DateTime<Utc>>,
    /// End, in the same forms as `from` (default now).
    #[serde(default, deserialize_with = "query::time")]
    to: Option<DateTime<Utc>>,
}

/// Most snapshots read for one process's history.
const HISTORY_POINTS: u32 = 900;

#[utoipa::path(get, path = "/api/hosts/{server_id}/process-history", tag = "hosts",
    summary = "One process over time",
    description = "One process's CPU and memory in each stored snapshot of a range (at most 900).",
    params(super::openapi::ServerId, HistoryQuery),
    responses((status = 200, description = "Its figures, oldest first", body = Vec<crate::model::api::ProcessHistoryPoint>)))]
pub(super) async fn process_history(
    State(state): State<AppState>,
    _user: CurrentUser,
    ApiPath(server_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<Vec<crate::model::api::ProcessHistoryPoint>>, ApiError> {
    let host = state.resolve_host(&server_id).await?;
    let to = q.to.unwrap_or_else(Utc::now);
    // By default the last half hour: at a 2 s interval, the most points a chart shows.
    let from = q.from.unwrap_or(to - chrono::Duration::minutes(30));
    if from > to {
        return Err(ApiError::invalid("from", "from must be before to."));
    }
    // One snapshot decoded at a time; only the process's figures outlive it.
    let mut reader = state.store.range_reader(host.id, from, to, HISTORY_POINTS).await?;
    let (pid, start_time) = (q.pid, q.start_time);
    let point_of = move |s: &StoredSnapshot| {
        let p =
            s.snapshot.processes.iter().find(|p| p.pid == pid && start_time.is_none_or(|t| Some(t) == p.start_time))?;
        Some(crate::model::api::ProcessHistoryPoint {
            timestamp: s.snapshot.taken_at,
            cpu_percent: p.cpu_percent,
            rss_bytes: p.rss_bytes,
            memory_percent: p.memory_percent,
        })
    };
    let mut points = Vec::new();
    while let Some(point) = reader.next_with(point_of).await? {
        points.extend(point);
    }
    Ok(Json(points))
}

#[derive(Clone, Copy)]
enum Format {
    Csv,
    Json,
}

fn format_of(q: Option<&str>) -> Result<Format, ApiError> {
    match q.unwrap_or("json") {
        "csv" => Ok(Format::Csv),
        "json" => Ok(Format::Json),
        other => Err(ApiError::invalid("format", format!("Unknown format `{other}`: use csv or json."))),
    }
}

/// One CSV field: quoted when needed. A value a spreadsheet would take for a formula
/// (OWASP's list: a leading `=`, `+`, `-`, `@`, tab or carriage return; spreadsheets
/// skip leading spaces, so ` =1` is one too) gets a leading `'`, so a process name never
/// runs as one. A value with a `;` is quoted: spreadsheets in locales that separate with
/// `;` would otherwise split it, and `a;=1` would start a cell with a formula.
fn csv_field(value: &str) -> String {
    let mut v = value.to_owned();
    if v.starts_with(['\t', '\r']) || v.trim_start_matches(' ').starts_with(['=', '+', '-', '@']) {
        v.insert(0, '\'');
    }
    if v.contains([',', ';', '"', '\n', '\r']) { format!("\"{}\"", v.replace('"', "\"\"")) } else { v }
}

fn attachment(body: impl Into<Body>, content_type: &'static str, filename: &str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    (headers, body.into()).into_response()
}

/// The processes of a snapshot as CSV, one row each.
pub fn processes_csv(snapshot: &Snapshot) -> String {
    let mut out = String::from(
        "pid,ppid,name,user,status,cpu_percent,memory_percent,rss_bytes,virtual_bytes,threads,start_time,disk_read_bytes,disk_write_bytes,cmd\n",
    );
    for p in &snapshot.processes {
        // What the snapshot does not know is an empty field, never a zero.
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        let percent = |v: Option<f32>| v.map(|v| format!("{v:.2}")).unwrap_or_default();
        let status =
            serde_json::to_value(p.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            p.pid,
            p.ppid.map(|v| v.to_string()).unwrap_or_default(),
            csv_field(&p.name),
            csv_field(p.user.as_deref().unwrap_or("")),
            status,
            percent(p.cpu_percent),
            percent(p.memory_percent),
            opt(p.rss_bytes),
            opt(p.virtual_bytes),
            p.threads.map(|v| v.to_string()).unwrap_or_default(),
            p.start_time.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)).unwrap_or_default(),
            opt(p.disk_read_bytes),
            opt(p.disk_write_bytes),
            csv_field(&p.cmd),
        ));
    }
    out
}

#[utoipa::path(get, path = "/api/process-snapshots/{id}/export", tag = "snapshots",
    summary = "Export one snapshot",
    description = "Its processes as CSV, or the snapshot as JSON, as a file (`Content-Disposition: attachment`).",
    params(("id" = i64, Path, description = "`snapshot_id`"), super::openapi::Format),
    responses((status = 200, description = "The file", content(
        (super::openapi::StoredSnapshot = "application/json"),
        (String = "text/csv")))))]
pub(super) async fn export_snapshot(
    State(state): State<AppState>,
    _user: CurrentUser,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Response, ApiError> {
    let format = format_of(q.format.as_deref())?;
    // Encoded where it was decoded, within the heavy read's slot: the snapshot is gone
    // before the body is sent, and the body is one buffer, not a tree of values.
    let (name, body) = with_snapshot(&state, &id, move |s| {
        let name = format!("{}-snapshot-{}", s.snapshot.host.hostname, s.id);
        let body = match format {
            Format::Csv => Ok(processes_csv(&s.snapshot).into_bytes()),
            Format::Json => serde_json::to_vec(&views::stored(s.id, &s.snapshot, false)),
        };
        (name, body)
    })
    .await?;
    let body = body.map_err(|e| ApiError::Internal(format!("encoding a snapshot: {e}")))?;
    Ok(match format {
        Format::Csv => attachment(body, "text/csv; charset=utf-8", &format!("{name}.csv")),
        Format::Json => attachment(body, "application/json", &format!("{name}.json")),
    })
}

/// Most bytes one range export sends. Past it the export ends early, still valid JSON,
/// with a marker saying where to go on from (see [`json_export`]).
pub const EXPORT_BUDGET_BYTES: u64 = 256 << 20;

/// Smallest byte budget a client may ask for (room for the marker and some data).
const MIN_EXPORT_BUDGET_BYTES: u64 = 4096;

/// Room kept in the budget for the closing marker.
const MARKER_ROOM: u64 = 1024;

/// Header stating an export's byte budget.
const BUDGET_HEADER: &str = "x-export-budget-bytes";

/// CSV rows of a range export built per chunk of the body.
const CSV_ROWS_PER_CHUNK: usize = 512;

/// Header row of a range export as CSV.
const RANGE_CSV_HEADER: &str = "timestamp,tier,samples,cpu_percent,cpu_max_percent,memory_used_bytes,memory_max_bytes,process_count,sent_bytes_per_sec,received_bytes_per_sec\n";

#[utoipa::path(get, path = "/api/hosts/{server_id}/export", tag = "hosts",
    summary = "Export a range",
    description = "CSV: one row per point of the range's series. JSON: the stored snapshots of the range (at most \
        `limit`) within a byte budget (header `X-Export-Budget-Bytes`); past it the array ends with a `Truncated` \
        marker, and asking again with `from=<next_from>` gets the rest.",
    params(super::openapi::ServerId, super::openapi::TimeRange, super::openapi::Format,
        ("limit" = Option<u32>, Query, description = "JSON: most snapshots, 1 to 2000 (default 500)"),
        ("max_bytes" = Option<u64>, Query, description = "JSON: a smaller byte budget (at least 4096)")),
    responses((status = 200, description = "The file", content(
        (Vec<super::openapi::SnapshotOrTruncated> = "application/json"),
        (String = "text/csv")))))]
pub(super) async fn export_range(
    State(state): State<AppState>,
    _user: CurrentUser,
    ApiPath(server_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Response, ApiError> {
    let format = format_of(q.format.as_deref())?;
    let host = state.resolve_host(&server_id).await?;
    let (from, to) = q.range()?;
    let name = format!("{}-{}-{}", host.hostname, from.format("%Y%m%dT%H%M%S"), to.format("%Y%m%dT%H%M%S"));
    Ok(match format {
        Format::Csv => {
            // One row per point of the series (at most 10,000, a few hundred KiB): the
            // figures a chart would show, written out a chunk of rows at a time.
            let series = state
                .store
                .series(host.id, Some(from), Some(to), Some(10_000), Utc::now(), &state.settings.retention)
                .await?;
            let tier =
                serde_json::to_value(series.tier).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            let mut points = series.points.into_iter().peekable();
            let header = std::iter::once(RANGE_CSV_HEADER.to_owned());
            let rows = std::iter::from_fn(move || {
                points.peek()?;
                let mut out = String::new();
                for p in points.by_ref().take(CSV_ROWS_PER_CHUNK) {
                    // A rate no snapshot of the point knew is an empty cell, not a 0.
                    let rate = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_default();
                    out.push_str(&format!(
                        "{},{},{},{:.2},{:.2},{},{},{:.1},{},{}\n",
                        p.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        tier,
                        p.samples,
                        p.cpu_percent,
                        p.cpu_max_percent,
                        p.memory_used_bytes,
                        p.memory_max_bytes,
                        p.process_count,
                        rate(p.sent_bytes_per_sec),
                        rate(p.received_bytes_per_sec)
                    ));
                }
                Some(out)
            });
            let chunks = header.chain(rows).map(|chunk| Ok::<_, std::convert::Infallible>(Bytes::from(chunk)));
            attachment(
                Body::from_stream(futures_util::stream::iter(chunks)),
                "text/csv; charset=utf-8",
                &format!("{name}.csv"),
            )
        }
        Format::Json => {
            let limit = q.limit.unwrap_or(500).clamp(1, 2000);
            let budget = q.max_bytes.unwrap_or(EXPORT_BUDGET_BYTES).clamp(MIN_EXPORT_BUDGET_BYTES, EXPORT_BUDGET_BYTES);
            let mut reader = state.store.range_reader(host.id, from, to, limit).await?;
            // The first snapshot is read before the answer starts, so that a busy store
            // is a 503 the client can retry, not an export cut short.
            let body = match reader.next_with(encode_for_export).await? {
                None => Body::from("[]"),
                // Fused, as in `latest`: polled again after its end under compression.
                first => Body::from_stream(futures_util::StreamExt::fuse(json_export(reader, first, budget))),
            };
            let mut response = attachment(body, "application/json", &format!("{name}.json"));
            response.headers_mut().insert(BUDGET_HEADER, HeaderValue::from(budget));
            response
        }
    })
}

/// One snapshot of a range export: when it was taken, and its JSON.
type ExportItem = (DateTime<Utc>, Result<Vec<u8>, String>);

/// Encodes a snapshot for an export (on the thread that decoded it).
fn encode_for_export(s: &StoredSnapshot) -> ExportItem {
    let json = serde_json::to_vec(&views::stored(s.id, &s.snapshot, false)).map_err(|e| e.to_string());
    (s.snapshot.taken_at, json)
}

/// Where a range export is.
struct JsonExport {
    reader: crate::store::RangeReader,
    /// A snapshot read but not sent yet (the first, read before the answer started).
    pending: Option<ExportItem>,
    budget: u64,
    sent_bytes: u64,
    exported: u64,
    done: bool,
}

/// The body of a range export as JSON: an array of stored snapshots, written one at a
/// time as they are decoded, so the collector holds about one snapshot whatever the
/// range.
///
/// It never stops silently. If the next snapshot would take the body past `budget`
/// bytes, or a snapshot cannot be read, the array ends with one last element that is
/// not a snapshot: `{"truncated": true, "reason": "byte_budget" | "read_failed",
/// "message": ..., "exported": <snapshots sent>, "next_from": <taken_at of the first
/// snapshot not sent>}`. The body stays valid JSON; asking again with
/// `from=<next_from>` gets the rest. The budget is stated up front in the
/// `X-Export-Budget-Bytes` header.
fn json_export(
    reader: crate::store::RangeReader,
    first: Option<ExportItem>,
    budget: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    let start = JsonExport { reader, pending: first, budget, sent_bytes: 0, exported: 0, done: false };
    futures_util::stream::unfold(start, |mut export| async move {
        if export.done {
            return None;
        }
        let next = match export.pending.take() {
            Some(encoded) => Ok(Some(encoded)),
            None => export.reader.next_with(encode_for_export).await,
        };
        let open = if export.exported == 0 { "[" } else { "," };
        let (chunk, done) = match next {
            Ok(None) => (format!("{}]", if export.exported == 0 { "[" } else { "" }).into_bytes(), true),
            Ok(Some((_, Ok(json))))
                if export.sent_bytes + (open.len() + json.len()) as u64 + MARKER_ROOM <= export.budget =>
            {
                let mut chunk = Vec::with_capacity(json.len() + 1);
                chunk.extend_from_slice(open.as_bytes());
                chunk.extend_from_slice(&json);
                export.exported += 1;
                (chunk, false)
            }
            Ok(Some((taken_at, Ok(_)))) => {
                let message = format!(
                    "The export stopped at its limit of {} bytes after {} snapshots; ask again with from={} for the rest.",
                    export.budget,
                    export.exported,
                    taken_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                );
                (marker(open, "byte_budget", &message, export.exported, Some(taken_at)), true)
            }
            Ok(Some((taken_at, Err(e)))) => {
                tracing::error!("cannot encode a snapshot for an export: {e}");
                let message = "The export stopped early: a snapshot could not be encoded; the details are in the collector's log.";
                (marker(open, "read_failed", message, export.exported, Some(taken_at)), true)
            }
            Err(e) => {
                tracing::warn!("an export stopped early: {e}");
                let next_from = export.reader.next_taken_at();
                let message = match &e {
                    crate::store::StoreError::Busy { retry_after_secs } => format!(
                        "The export stopped early: the collector is busy with other large reads; ask again from next_from in {retry_after_secs} s."
                    ),
                    _ => "The export stopped early: a stored snapshot could not be read; the details are in the collector's log.".to_owned(),
                };
                (marker(open, "read_failed", &message, export.exported, next_from), true)
            }
        };
        export.sent_bytes += chunk.len() as u64;
        export.done = done;
        Some((Ok(Bytes::from(chunk)), export))
    })
}

/// The last element of an export cut short, and the array's end.
fn marker(open: &str, reason: &str, message: &str, exported: u64, next_from: Option<DateTime<Utc>>) -> Vec<u8> {
    let marker = json!({
        "truncated": true,
        "reason": reason,
        "message": message,
        "exported": exported,
        "next_from": next_from.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    });
    format!("{open}{marker}]").into_bytes()
}

// ---------------------------------------------------------------------------------------
// The monitoring API

#[utoipa::path(get, path = "/api/monitoring/{server_id}/snapshot", tag = "monitoring",
    summary = "Newest snapshot, monitoring shape",
    params(super::openapi::ServerId),
    responses((status = 200, description = "The snapshot", body = super::openapi::MonitoringSnapshot)))]
pub(super) async fn monitoring_snapshot(
    State(state): State<AppState>,
    _user: CurrentUser,
    ApiPath(server_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let host = state.resolve_host(&server_id).await?;
    if let Some(p) = state.hub.latest(&host.hostname) {
        return Ok(Json(views::monitoring(p.snapshot_id, p.received_at, &p.snapshot)));
    }
    let stored = state
        .store
        .latest(host.id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Host `{server_id}` has no stored snapshot.")))?;
    Ok(Json(views::monitoring(stored.id, stored.received_at, &stored.snapshot)))
}

#[derive(Deserialize, Default, utoipa::IntoParams, utoipa::ToSchema)]
#[into_params(parameter_in = Query)]
pub(super) struct ActionOptions {
    /// The start time the caller saw for this pid; refused if it changed.
    start_time: Option<DateTime<Utc>>,
    /// Act on the whole subtree, children first.
    #[serde(default)]
    tree: bool,
}

#[utoipa::path(post, path = "/api/monitoring/{server_id}/process/{pid}/{action}", tag = "monitoring",
    summary = "Act on a process",
    description = "Suspend, resume, terminate or kill a process, on the collector's machine or through the \
        host's agent; audited. The options come as query parameters or as a JSON body.",
    params(super::openapi::ServerId,
        ("pid" = u32, Path, description = "Process id"),
        ("action" = crate::model::ProcessAction, Path, description = "What to do"),
        ActionOptions),
    request_body(content = Option<ActionOptions>, description = "The options, instead of the query string"),
    responses(
        (status = 200, description = "Done", body = super::openapi::ActionDone),
        (status = 409, description = "The pid names another process now (`pid_reused`)", body = ErrorBody),
        (status = 501, description = "Not supported on that platform", body = ErrorBody),
        (status = 504, description = "The agent gave no answer in time", body = ErrorBody)))]
pub(super) async fn process_action(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath((server_id, pid, action)): ApiPath<(String, String, String)>,
    ApiQuery(query): ApiQuery<ActionOptions>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::TooLarge(format!("An action's body is at most {} KiB.", SMALL_BODY_BYTES >> 10))
        }
        _ => ApiError::BadRequest(e.body_text()),
    })?;
    let action: ProcessAction = action.parse().map_err(ApiError::NotFound)?;
    let pid: u32 = pid.parse().map_err(|_| ApiError::NotFound(format!("`{pid}` is not a process id.")))?;
    if let Err(refusal) = user.require_operator() {
        audit_refusal(&state, &user, &server_id, Some(pid), action, &refusal).await;
        return Err(refusal);
    }
    // Options come as query parameters or, for clients that prefer it, a JSON body.
    let options = if body.iter().all(u8::is_ascii_whitespace) {
        query
    } else {
        serde_json::from_slice::<ActionOptions>(&body)
            .map_err(|e| ApiError::Invalid { field: None, message: format!("Action options: {e}") })?
    };
    let host = state.resolve_host(&server_id).await?;
    // The process is named by pid *and* start time, so that a pid reused since the
    // caller looked is refused. Callers that give no start time (the original
    // monitoring API has none) mean the process the newest snapshot shows.
    let latest = newest_snapshot(&state, &host).await?;
    let seen = latest.as_ref().and_then(|s| s.processes.iter().find(|q| q.pid == pid));
    let process_name = seen.map(|q| q.name.clone());
    let start_time = match (options.start_time, seen) {
        (Some(t), _) => Some(t),
        // Unknown stays unknown (an upload without start times gives none): an agent
        // refuses a relayed action without one, and so does this machine below.
        (None, Some(q)) => q.start_time,
        (None, None) => {
            return Err(ApiError::NotFound(format!(
                "Host `{}` shows no process {pid} in its newest snapshot; refresh and try again.",
                host.hostname
            )));
        }
    };
    let target = Target { pid, start_time };
    match act_and_audit(&state, &user, &host, target, process_name, action, options.tree).await {
        Ok((_, count)) => Ok(Json(json!({
            "status": "success",
            "message": done_message(pid, action),
            "signalled": count,
        }))),
        Err(e) if e.code == ActionErrorCode::Unsupported && !host.local => Err(ApiError::Unavailable(e.message)),
        Err(e) if e.code == ActionErrorCode::Failed && e.message.starts_with(NO_ANSWER) => {
            Err(ApiError::Timeout(e.message))
        }
        Err(e) => Err(ApiError::Action(e)),
    }
}

/// The newest snapshot of `host`: live from the hub, else the stored one.
async fn newest_snapshot(state: &AppState, host: &HostSummary) -> Result<Option<std::sync::Arc<Snapshot>>, ApiError> {
    Ok(match state.hub.latest(&host.hostname) {
        Some(p) => Some(p.snapshot.clone()),
        None => state.store.latest(host.id).await?.map(|s| std::sync::Arc::new(s.snapshot)),
    })
}

/// What a successful action says: `Process 123 killed`.
fn done_message(pid: u32, action: ProcessAction) -> String {
    format!("Process {pid} {}", action.past_tense())
}

/// Writes the attempt of someone without the operator role to the audit log (a refused
/// attempt is still an attempt), once a minute per user at most, so that a viewer
/// cannot flood the log. `pid` is `None` for a bulk request.
async fn audit_refusal(
    state: &AppState,
    user: &CurrentUser,
    server_id: &str,
    pid: Option<u32>,
    action: ProcessAction,
    refusal: &ApiError,
) {
    if !state.first_refusal_this_minute(&user.username) {
        return;
    }
    let entry = NewAuditEntry {
        actor: user.username.clone(),
        hostname: server_id.to_owned(),
        pid,
        process_name: None,
        action: action.into(),
        tree: false,
        result: "forbidden".into(),
        message: refusal.parts().1.message,
    };
    if let Err(e) = state.store.audit(entry).await {
        tracing::error!("cannot write the audit log: {e}");
    }
}

/// Carries out one process action on `host` (on this machine through `control`, on an
/// agent's through its channel) and writes its audit row: the one path of the single
/// and the bulk action routes. `seen_name` is the name the newest snapshot shows for
/// the pid, for the audit row when the action does not get as far as the process.
/// Returns the process's name and how many processes were signalled.
async fn act_and_audit(
    state: &AppState,
    user: &CurrentUser,
    host: &HostSummary,
    target: Target,
    seen_name: Option<String>,
    action: ProcessAction,
    tree: bool,
) -> Result<(String, usize), crate::model::ActionError> {
    use crate::model::ActionError;
    let pid = target.pid;
    let result = if host.local && target.start_time.is_none() {
        Err(ActionError {
            code: ActionErrorCode::PidReused,
            message: format!(
                "When process {pid} started is not known, so Procyon cannot make sure the pid still names the \
                 process you saw; nothing was done. Refresh and try again."
            ),
        })
    } else if host.local {
        let act = if tree { control::act_tree } else { control::act };
        match tokio::task::spawn_blocking(move || act(target, action)).await {
            Ok(done) => done.map(|outcome| (outcome.process.name, outcome.signalled.len())),
            Err(e) => {
                Err(ActionError { code: ActionErrorCode::Failed, message: format!("The action's task failed: {e}") })
            }
        }
    } else {
        relay(state, &host.hostname, user, target, action, tree).await
    };
    let (result_code, message) = match &result {
        Ok(_) => ("success".to_owned(), done_message(pid, action)),
        Err(e) => (
            serde_json::to_value(e.code).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
            e.message.clone(),
        ),
    };
    let audited = state
        .store
        .audit(NewAuditEntry {
            actor: user.username.clone(),
            hostname: host.hostname.clone(),
            pid: Some(pid),
            process_name: result.as_ref().ok().map(|(n, _)| n.clone()).or(seen_name),
            action: action.into(),
            tree,
            result: result_code,
            message,
        })
        .await;
    if let Err(e) = audited {
        // The action happened (or not) either way; losing its record must be loud.
        tracing::error!("cannot write the audit log: {e}");
    }
    result
}

/// The most a bulk action's body may be: 1,000 targets of about 70 bytes each, with
/// room for whitespace.
pub const BULK_BODY_BYTES: usize = 256 << 10;

/// Targets of one bulk action carried out at once: enough that a slow agent does not
/// make a thousand processes wait in line, few enough not to flood its channel.
const BULK_CONCURRENCY: usize = 16;

/// Reads and checks a bulk action's body: every target well-formed, 1 to
/// [`MAX_BULK_TARGETS`] of them, no pid twice. Anything wrong is a 422 naming the field,
/// before anything is done.
fn bulk_request(body: &[u8]) -> Result<BulkActionRequest, ApiError> {
    const SHAPE: &str = "Send {\"targets\": [{\"pid\": 123, \"start_time\": \"…\"}]}, with the start time each \
        process had in your snapshot.";
    // serde would also read a struct from an array (`[[…]]`), with a message that
    // confuses more than it helps: the body is an object or it is wrong.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::Invalid { field: None, message: format!("The body is not a JSON object. {SHAPE}") });
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let request: BulkActionRequest = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        // A missing field is reported at its parent (`.` for the top); its name is in
        // the message.
        let field = (field != ".").then_some(field);
        let inner = e.into_inner();
        let message = match &field {
            Some(f) => format!("`{f}`: {inner}. Nothing was done. {SHAPE}"),
            None => format!("The body: {inner}. Nothing was done. {SHAPE}"),
        };
        ApiError::Invalid { field, message }
    })?;
    de.end().map_err(|e| ApiError::Invalid { field: None, message: format!("The body: {e}. Nothing was done.") })?;
    let count = request.targets.len();
    if count == 0 {
        return Err(ApiError::invalid("targets", "Name at least one process."));
    }
    if count > MAX_BULK_TARGETS {
        return Err(ApiError::invalid(
            "targets",
            format!(
                "One bulk action names at most {MAX_BULK_TARGETS} processes; this one names {count}. Nothing was done."
            ),
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(count);
    for (i, target) in request.targets.iter().enumerate() {
        if !seen.insert(target.pid) {
            return Err(ApiError::invalid(
                format!("targets[{i}].pid"),
                format!("Process {} is named twice; name each process once. Nothing was done.", target.pid),
            ));
        }
    }
    Ok(request)
}

#[utoipa::path(post, path = "/api/monitoring/{server_id}/processes/{action}", tag = "monitoring",
    summary = "Act on several processes",
    description = "Suspend, resume, terminate or kill up to 1,000 processes of one host at once. Each target is \
        carried out as `POST /api/monitoring/{server_id}/process/{pid}/{action}` would: named by pid and start \
        time (a pid reused since is refused for that target alone), refused for protected processes, audited one \
        row per target, on the collector's machine or through the host's agent. The answer lists each target's \
        outcome in the order asked. A body with more than 1,000 targets, a malformed target or a pid named twice \
        is refused whole (422) and nothing is done.",
    params(super::openapi::ServerId,
        ("action" = crate::model::ProcessAction, Path, description = "What to do")),
    request_body = BulkActionRequest,
    responses(
        (status = 200, description = "Each target's outcome", body = BulkActionResponse),
        (status = 422, description = "Over the limit, or a malformed target; nothing was done", body = ErrorBody)))]
pub(super) async fn bulk_process_action(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath((server_id, action)): ApiPath<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BulkActionResponse>, ApiError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::TooLarge(format!("A bulk action's body is at most {} KiB.", BULK_BODY_BYTES >> 10))
        }
        _ => ApiError::BadRequest(e.body_text()),
    })?;
    let action: ProcessAction = action.parse().map_err(ApiError::NotFound)?;
    if let Err(refusal) = user.require_operator() {
        audit_refusal(&state, &user, &server_id, None, action, &refusal).await;
        return Err(refusal);
    }
    let request = bulk_request(&body)?;
    let host = state.resolve_host(&server_id).await?;
    let latest = newest_snapshot(&state, &host).await?;
    // The names the snapshot shows, for the audit rows of targets that are gone.
    let names: std::collections::HashMap<u32, &str> =
        latest.iter().flat_map(|s| s.processes.iter()).map(|q| (q.pid, q.name.as_str())).collect();
    let name_of = |pid: u32| names.get(&pid).map(|n| (*n).to_owned());
    use futures_util::StreamExt;
    let results = futures_util::stream::iter(request.targets)
        .map(|t| {
            let (state, user, host) = (&state, &user, &host);
            let seen_name = name_of(t.pid);
            async move {
                let target = Target { pid: t.pid, start_time: Some(t.start_time) };
                match act_and_audit(state, user, host, target, seen_name, action, false).await {
                    Ok(_) => BulkResult { pid: t.pid, status: "success".into(), error: None },
                    Err(e) => BulkResult {
                        pid: t.pid,
                        status: serde_json::to_value(e.code)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        error: Some(e.message),
                    },
                }
            }
        })
        .buffered(BULK_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    Ok(Json(BulkActionResponse { results }))
}

/// How long a relayed action waits for the agent's answer.
pub(super) const RELAY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
/// Start of the message of a relayed action that got no answer (mapped to 504).
const NO_ANSWER: &str = "No answer from the agent";

/// Relays an action to `hostname`'s agent; the outcome as a local action would give it.
async fn relay(
    state: &AppState,
    hostname: &str,
    user: &CurrentUser,
    target: Target,
    action: ProcessAction,
    tree: bool,
) -> Result<(String, usize), crate::model::ActionError> {
    use super::agents::RelayError;
    use crate::model::ActionError;
    let request = crate::model::agent::ActionRequest {
        request_id: 0,
        pid: target.pid,
        start_time: target.start_time,
        action,
        tree,
        actor: user.username.clone(),
    };
    let unavailable = |message: String| ActionError { code: ActionErrorCode::Unsupported, message };
    // An agent connected to another collector of the database is reached through it.
    let answer = if !state.agents.is_connected(hostname) && state.store.is_shared() {
        super::fleet::relay(state, hostname, &request, RELAY_TIMEOUT).await
    } else {
        state.agents.relay(hostname, request, RELAY_TIMEOUT).await
    };
    match answer {
        Ok(reply) => match (reply.done, reply.error) {
            (_, Some(error)) => Err(error),
            (Some(done), None) => Ok((done.process_name, done.signalled as usize)),
            (None, None) => {
                Err(ActionError { code: ActionErrorCode::Failed, message: "The agent gave an empty answer.".into() })
            }
        },
        Err(RelayError::Offline) => Err(unavailable(format!(
            "No agent is connected for host `{hostname}`, so its processes cannot be reached. Start `procyon-agent` there."
        ))),
        Err(RelayError::Unsupported) => Err(unavailable(format!(
            "The agent on `{hostname}` is too old for this request; upgrade `procyon-agent` there."
        ))),
        Err(RelayError::ControlOff) => Err(unavailable(format!(
            "The agent on `{hostname}` does not allow process actions; its operator can enable them with `procyon-agent --allow-control`."
        ))),
        Err(RelayError::Timeout) => Err(ActionError {
            code: ActionErrorCode::Failed,
            message: format!(
                "{NO_ANSWER} on `{hostname}` within {} s; the action may or may not have happened.",
                RELAY_TIMEOUT.as_secs()
            ),
        }),
    }
}

// ---------------------------------------------------------------------------------------
// Audit log, users and keys

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// One host's entries (host name).
    host: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// Rows to skip.
    offset: Option<u32>,
}

#[utoipa::path(get, path = "/api/audit", tag = "admin", summary = "Audit log",
    description = "Process actions attempted (refused ones too) and hosts deleted, newest first.",
    params(AuditQuery),
    responses((status = 200, description = "A page of entries", body = Vec<AuditEntry>)))]
pub(super) async fn audit(
    State(state): State<AppState>,
    _user: CurrentUser,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let page = Page { limit: q.limit.unwrap_or(100).clamp(1, 1000), offset: q.offset.unwrap_or(0) };
    Ok(Json(state.store.audit_log(q.host.as_deref(), page).await?))
}

#[utoipa::path(get, path = "/api/users", tag = "admin", summary = "Users",
    responses((status = 200, description = "Every user", body = Vec<UserSummary>)))]
pub(super) async fn users(State(state): State<AppState>, _: AdminUser) -> Result<Json<Vec<UserSummary>>, ApiError> {
    Ok(Json(state.store.users().await?))
}

/// `POST /api/users`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct NewUser {
    /// 1 to 64 letters, digits, dots, dashes, underscores or @.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._@-]+$")]
    username: String,
    /// At least 8 characters, at most 1024 bytes.
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
    /// Role.
    role: Role,
}

/// Checks a new user name and password.
pub fn check_credentials(username: &str, password: &str) -> Result<(), ApiError> {
    if username.is_empty()
        || username.len() > 64
        || !username.chars().all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
    {
        return Err(ApiError::invalid(
            "username",
            "A user name is 1 to 64 letters, digits, dots, dashes, underscores or @.",
        ));
    }
    if password.chars().count() < 8 || password.len() > 1024 {
        return Err(ApiError::invalid("password", "A password has at least 8 characters."));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/users", tag = "admin", summary = "Add a user",
    request_body = NewUser,
    responses(
        (status = 201, description = "Added", body = UserSummary),
        (status = 409, description = "The name is taken", body = ErrorBody)))]
pub(super) async fn create_user(
    State(state): State<AppState>,
    _: AdminUser,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<UserSummary>), ApiError> {
    check_credentials(&body.username, &body.password)?;
    let hash = state.auth.hash(body.password).await?;
    Ok((StatusCode::CREATED, Json(state.store.create_user(&body.username, &hash, body.role).await?)))
}

#[utoipa::path(delete, path = "/api/users/{username}", tag = "admin", summary = "Remove a user",
    description = "Not yourself, and not the last admin.",
    params(("username" = String, Path, description = "User name")),
    responses(
        (status = 204, description = "Removed; their tokens and streams stop now"),
        (status = 409, description = "The last admin (`last_admin`)", body = ErrorBody)))]
pub(super) async fn remove_user(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ApiPath(username): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if username == user.username {
        return Err(ApiError::Forbidden("You cannot remove yourself; ask another admin.".into()));
    }
    state.store.remove_user(&username).await?;
    // Their tokens stop now, and so do the streams they have open.
    state.auth.user_changed(&username);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/keys", tag = "admin", summary = "API keys",
    responses((status = 200, description = "Every key, revoked ones too", body = Vec<ApiKeySummary>)))]
pub(super) async fn keys(State(state): State<AppState>, _: AdminUser) -> Result<Json<Vec<ApiKeySummary>>, ApiError> {
    Ok(Json(state.store.api_keys().await?))
}

/// `POST /api/keys`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct NewKey {
    /// A label, 1 to 100 bytes, not only white space.
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    name: String,
    /// The only host name the key may upload for.
    hostname: Option<String>,
    /// `upload` (the default) or `metrics`.
    #[serde(default)]
    scope: KeyScope,
}

#[utoipa::path(post, path = "/api/keys", tag = "admin", summary = "Make an API key",
    request_body = NewKey,
    responses(
        (status = 201, description = "Made; the key is in this answer only", body = super::openapi::NewApiKey),
        (status = 409, description = "The name is taken", body = ErrorBody)))]
pub(super) async fn create_key(
    State(state): State<AppState>,
    _: AdminUser,
    ApiJson(body): ApiJson<NewKey>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if body.name.trim().is_empty() || body.name.len() > 100 {
        return Err(ApiError::invalid("name", "A key's name is 1 to 100 characters."));
    }
    if body.scope == KeyScope::Metrics && body.hostname.is_some() {
        return Err(ApiError::invalid("hostname", "A key of scope metrics reads every host: it takes no hostname."));
    }
    if let Some(host) = &body.hostname {
        super::upload::validate_hostname(host)?;
    }
    let (key, prefix, hash) = auth::new_api_key()?;
    let summary =
        state.store.create_scoped_api_key(&body.name, &prefix, &hash, body.hostname.as_deref(), body.scope).await?;
    if let Some(host) = &body.hostname {
        // Reserved for this key from now on (see `Store::create_scoped_api_key`).
        state.bindings.forget_host(host);
    }
    Ok((StatusCode::CREATED, Json(json!({ "key": key, "summary": summary }))))
}

#[utoipa::path(delete, path = "/api/keys/{key}", tag = "admin", summary = "Revoke an API key",
    description = "Its agents are cut off at once.",
    params(("key" = String, Path, description = "The key's name or prefix")),
    responses((status = 200, description = "Revoked", body = ApiKeySummary)))]
pub(super) async fn revoke_key(
    State(state): State<AppState>,
    _: AdminUser,
    ApiPath(key): ApiPath<String>,
) -> Result<Json<ApiKeySummary>, ApiError> {
    let revoked = state.store.revoke_api_key(&key).await?;
    // Its agents are cut off now, not at their next reconnect.
    state.agents.close_key(revoked.id);
    state.bindings.forget_key(revoked.id);
    Ok(Json(revoked))
}

/// Deletes a host and its whole history. Works for hosts stored under a name that is no
/// longer accepted (so that such leftovers can be cleaned up); the collector's own machine
/// comes back at its next sample.
#[utoipa::path(delete, path = "/api/hosts/{server_id}", tag = "hosts", summary = "Delete a host",
    description = "Deletes the host with its whole history (audited); its agent is disconnected.",
    params(super::openapi::ServerId),
    responses((status = 204, description = "Deleted")))]
pub(super) async fn delete_host(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ApiPath(server_id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let host = state.resolve_host(&server_id).await?;
    state.agents.close_host(&host.hostname, "this host was deleted by an admin");
    if !state.store.delete_host(&host.hostname).await? {
        return Err(ApiError::NotFound(format!("No host `{server_id}`.")));
    }
    state.hub.forget(&host.hostname);
    state.bindings.forget_host(&host.hostname);
    state.alerts.host_deleted(&host.hostname);
    tracing::warn!(hostname = %host.hostname, by = %user.username, "host deleted with its history");
    // The audit log is kept when its host goes: it says who deleted it, and when.
    let message = format!("Host {} deleted with its history", host.hostname);
    let entry =
        NewAuditEntry::host_change(user.username.clone(), host.hostname.clone(), AuditAction::DeleteHost, message);
    if let Err(e) = state.store.audit(entry).await {
        tracing::error!("cannot write the audit log: {e}");
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/hosts/{server_id}/binding", tag = "hosts", summary = "A host's binding",
    description = "Which API key, and which machine, the host name belongs to.",
    params(super::openapi::ServerId),
    responses((status = 200, description = "The binding", body = crate::store::HostBinding)))]
pub(super) async fn host_binding(
    State(state): State<AppState>,
    _: AdminUser,
    ApiPath(server_id): ApiPath<String>,
) -> Result<Json<crate::store::HostBinding>, ApiError> {
    let hostname = binding_host(&state, &server_id).await?;
    let binding = state
        .store
        .host_binding(&hostname)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Host `{hostname}` is not bound to any key.")))?;
    Ok(Json(binding))
}

#[utoipa::path(delete, path = "/api/hosts/{server_id}/binding", tag = "hosts", summary = "Reset a host's binding",
    description = "The next key (and machine) to report the host name takes it.",
    params(super::openapi::ServerId),
    responses((status = 204, description = "Reset")))]
pub(super) async fn reset_host_binding(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ApiPath(server_id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let hostname = binding_host(&state, &server_id).await?;
    if !state.store.reset_host_binding(&hostname).await? {
        return Err(ApiError::NotFound(format!("Host `{hostname}` is not bound to any key.")));
    }
    state.bindings.forget_host(&hostname);
    state.agents.close_host(&hostname, "this host's binding was reset by an admin");
    tracing::info!(%hostname, by = %user.username, "host binding reset");
    audit_binding(&state, &user.username, &hostname, AuditAction::UnbindHost, format!("Host {hostname} unbound")).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The body of `PUT /api/hosts/{server_id}/binding`.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct BindTo {
    /// The key's name, or its prefix.
    #[schema(min_length = 1, max_length = 100)]
    key: String,
}

/// Moves a host to a key (keeping its machine fingerprint), and ends its agent's
/// session, which reconnects and is judged against the new binding.
#[utoipa::path(put, path = "/api/hosts/{server_id}/binding", tag = "hosts", summary = "Bind a host to a key",
    description = "Moves the host name to a live upload key (by name or prefix), keeping the machine it was bound \
        to; the host's agent session ends and is judged by the new binding when it reconnects. Audited.",
    params(super::openapi::ServerId),
    request_body = BindTo,
    responses((status = 200, description = "The new binding", body = crate::store::HostBinding)))]
pub(super) async fn bind_host(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ApiPath(server_id): ApiPath<String>,
    ApiJson(body): ApiJson<BindTo>,
) -> Result<Json<crate::store::HostBinding>, ApiError> {
    let hostname = binding_host(&state, &server_id).await?;
    super::upload::validate_hostname(&hostname)?;
    if body.key.is_empty() || body.key.len() > 100 {
        return Err(ApiError::invalid("key", "A key is named by its name or prefix, 1 to 100 characters."));
    }
    let binding = state.store.bind_host(&hostname, &body.key).await?;
    state.bindings.forget_host(&hostname);
    state.agents.close_host(&hostname, "this host was bound to another API key by an admin");
    let key_name = binding.key_name.clone().unwrap_or_default();
    tracing::info!(%hostname, key = %key_name, by = %user.username, "host bound to a key");
    audit_binding(
        &state,
        &user.username,
        &hostname,
        AuditAction::BindHost,
        format!("Host {hostname} bound to API key {key_name}"),
    )
    .await;
    Ok(Json(binding))
}

/// Sets the labels an admin gives a host, replacing those an admin gave it before; its
/// agent's labels stay beneath them (an admin's value wins for its key).
#[utoipa::path(put, path = "/api/hosts/{server_id}/labels", tag = "hosts", summary = "Set a host's labels",
    description = "Replaces the labels an admin set on the host (`{}` removes them); its agent's labels \
        (`--label`) stay, and an admin's value wins for its key. Keys are 1 to 63 letters, digits, `_`, `-`, `.` and \
        `/`, starting with a letter or a digit; values 1 to 128 letters, digits, `_`, `-`, `.`, `/`, `:` and `@`; at \
        most 32 labels. Audited. Returns the host as listed.",
    params(super::openapi::ServerId),
    request_body = crate::model::api::HostLabels,
    responses((status = 200, description = "The host with its labels", body = HostSummary)))]
pub(super) async fn set_host_labels(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ApiPath(server_id): ApiPath<String>,
    ApiJson(body): ApiJson<crate::model::api::HostLabels>,
) -> Result<Json<HostSummary>, ApiError> {
    let host = state.resolve_host(&server_id).await?;
    crate::model::labels::check(&body.labels).map_err(|e| ApiError::invalid("labels", e.0))?;
    let changed = state.store.set_labels(&host.hostname, crate::store::LabelSource::Admin, &body.labels).await?;
    if changed {
        let listed: Vec<String> = body.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let message = if listed.is_empty() {
            format!("Labels of host {} cleared", host.hostname)
        } else {
            format!("Labels of host {} set to {}", host.hostname, listed.join(", "))
        };
        tracing::info!(hostname = %host.hostname, by = %user.username, "host labels set");
        let entry =
            NewAuditEntry::host_change(user.username.clone(), host.hostname.clone(), AuditAction::HostLabels, message);
        if let Err(e) = state.store.audit(entry).await {
            tracing::error!("cannot write the audit log: {e}");
        }
    }
    Ok(Json(state.resolve_host(&host.hostname).await?))
}

/// Writes an admin's change of a binding to the audit log.
async fn audit_binding(state: &AppState, actor: &str, hostname: &str, action: AuditAction, message: String) {
    let entry = NewAuditEntry::host_change(actor, hostname, action, message);
    if let Err(e) = state.store.audit(entry).await {
        tracing::error!("cannot write the audit log: {e}");
    }
}

/// The host name a binding route names: a stored host's, or (bindings are made before
/// anything is stored) the name itself.
async fn binding_host(state: &AppState, server_id: &str) -> Result<String, ApiError> {
    match state.store.host(server_id).await? {
        Some(h) => Ok(h.hostname),
        None => Ok(server_id.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        let cases = [
            ("plain", "plain"),
            ("", ""),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("two\nlines", "\"two\nlines\""),
            // OWASP's formula starters: =, +, -, @, tab, carriage return.
            ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
            ("+1+1", "'+1+1"),
            ("-rf", "'-rf"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1+1", "'\t=1+1"),
            ("\r=1+1", "\"'\r=1+1\""),
            // Defused and quoted: the quote goes inside.
            ("=1,2", "\"'=1,2\""),
            ("-a \"b\"", "\"'-a \"\"b\"\"\""),
            // Only a leading one is a formula, spaces before it included.
            ("a=b", "a=b"),
            ("a\tb", "a\tb"),
            (" =1+1", "' =1+1"),
            ("   @SUM(A1)", "'   @SUM(A1)"),
            (" -x", "' -x"),
            (" a=b", " a=b"),
            // A `;` separates cells in some locales: quoted, so no cell starts after it.
            (";=1+1", "\";=1+1\""),
            ("a;=1+1", "\"a;=1+1\""),
            ("; =1", "\"; =1\""),
        ];
        for (value, field) in cases {
            assert_eq!(csv_field(value), field, "{value:?}");
        }
    }

    #[test]
    fn credentials_are_checked() {
        assert!(check_credentials("ada", "long enough").is_ok());
        assert!(check_credentials("", "long enough").is_err());
        assert!(check_credentials("a b", "long enough").is_err());
        assert!(check_credentials("<script>", "long enough").is_err());
        assert!(check_credentials("ada", "short").is_err());
    }
}
