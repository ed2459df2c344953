//! Live WebSockets, fed by the hub.
//!
//! - `/ws/process-snapshots/`: every new snapshot of every host (or of one, with
//!   `?hostname=`), in the stored-snapshot shape, as it arrives; with `?delta=1`, as
//!   [`LiveMessage`]s instead: each host's first snapshot whole, then deltas against the
//!   previous one sent on this connection (a fraction of the size);
//! - `/ws/monitoring/{server_id}`: one host's newest snapshot in the monitoring shape,
//!   each time a new one arrives (at the sampling interval);
//! - `/ws/fleet`: the fleet overview's rows ([`FleetUpdate`]): the hosts whose figures
//!   or online state changed, gathered for a second and sent as one message, so that a
//!   thousand hosts cost one small message a second, not a thousand snapshots.
//!
//! Both send what is current right after connecting, so a new page never waits a tick
//! for its first picture: from the hub when it holds the host's newest snapshot (no
//! decoding, and the encoding shared with the other clients), else from the store, for
//! the wanted hosts only and one at a time. A slow client only ever misses intermediate snapshots: the hub
//! never queues without bound. A socket closes when its token expires (code 4001) and
//! when the collector shuts down (1001).
//!
//! One user holds at most `Settings::max_streams_per_user` streams at once (both kinds
//! together): one more is refused with 429 before the upgrade, so that a viewer cannot
//! take every connection the collector has.
//!
//! No permessage-deflate: axum 0.8's WebSocket (tungstenite 0.29) does not negotiate
//! compression extensions, so deltas are what keeps the live stream small.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::Method;
use axum::response::Response;
use axum::routing::get;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use super::auth::CurrentUser;
use super::error::ApiError;
use super::rest::ApiPath;
use super::routes::{Access, Route};
use super::{AppState, views};
use crate::hub::{Encoded, Glance};
use crate::model::Snapshot;
use crate::model::api::{FleetRow, FleetUpdate};
use crate::model::delta::{LiveMessage, SnapshotDelta};
use crate::store::Newest;

/// Live streams one user may hold open at once by default: a few dashboards in a few
/// tabs each, and then some.
pub const MAX_STREAMS_PER_USER: usize = 64;

/// Live streams open, per user.
#[derive(Debug, Default)]
pub struct StreamCounts(Arc<Mutex<HashMap<String, usize>>>);

/// One open stream counted against its user, until dropped.
pub struct StreamSlot {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    username: String,
}

impl StreamCounts {
    /// Counts one more stream for `user`, or refuses (429) when they hold `max` already.
    pub fn open(&self, user: &CurrentUser, max: usize) -> Result<StreamSlot, ApiError> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(user.username.clone()).or_insert(0);
        if *count >= max {
            return Err(ApiError::OverLimit {
                retry_after_secs: 5,
                message: format!(
                    "`{}` already has {max} live streams open, the most one user may; close some dashboards (tabs) \
                     first.",
                    user.username
                ),
            });
        }
        *count += 1;
        Ok(StreamSlot { counts: Arc::clone(&self.0), username: user.username.clone() })
    }

    /// Streams open now, over all users.
    pub fn total(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).values().sum()
    }

    /// Streams `username` holds open now.
    pub fn held(&self, username: &str) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(username).copied().unwrap_or(0)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.username) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.username);
            }
        }
    }
}

/// Read buffer of a live stream's WebSocket: its client sends nothing but control frames.
const CLIENT_READ_BUFFER: usize = 4 * 1024;

/// The WebSocket routes, with who may open each (see `routes.rs`).
pub fn routes() -> Vec<Route> {
    vec![
        Route::new(Method::GET, "/ws/process-snapshots/", Access::Viewer, get(all_snapshots)),
        Route::new(Method::GET, "/ws/monitoring/{server_id}", Access::Viewer, get(monitoring)).exact(),
        Route::new(Method::GET, "/ws/fleet", Access::Viewer, get(fleet)),
    ]
}

/// How often an open stream checks that its user still has access (a removed user, or a
/// changed password or role, ends it); changes made through this collector are noticed
/// at once.
const ACCESS_CHECK: Duration = Duration::from_secs(5);

/// Why a socket closes.
enum End {
    Client,
    Expired,
    Revoked,
    Shutdown,
}

async fn close(mut socket: WebSocket, end: End) {
    let frame = match end {
        End::Client => return,
        End::Expired => CloseFrame { code: 4001, reason: "token expired; sign in again".into() },
        End::Revoked => CloseFrame { code: 4001, reason: "your account changed; sign in again".into() },
        End::Shutdown => CloseFrame { code: 1001, reason: "collector shutting down".into() },
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

fn until_expiry(user: &CurrentUser) -> Duration {
    let secs = user.expires_at - chrono::Utc::now().timestamp();
    Duration::from_secs(secs.max(0) as u64)
}

async fn send_json(socket: &mut WebSocket, value: &Value) -> bool {
    socket.send(Message::Text(value.to_string().into())).await.is_ok()
}

/// Tells a stream when its user's access may have ended: at each account change made here,
/// and every [`ACCESS_CHECK`] for changes made elsewhere (the CLI, another collector).
struct AccessCheck {
    changes: tokio::sync::watch::Receiver<u64>,
    tick: tokio::time::Interval,
}

impl AccessCheck {
    fn new(state: &AppState) -> AccessCheck {
        // The first tick comes at once: a change between the user's check and this
        // subscription is caught by one look when the stream starts.
        let mut tick = tokio::time::interval(ACCESS_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        AccessCheck { changes: state.auth.changes(), tick }
    }

    /// Waits for the next moment to check.
    async fn due(&mut self) {
        tokio::select! {
            _ = self.changes.changed() => {}
            _ = self.tick.tick() => {}
        }
    }
}

/// Reads (and drops) what the client sends; `false` once it has gone.
fn client_gone(message: Option<Result<Message, axum::Error>>) -> bool {
    matches!(message, None | Some(Err(_)) | Some(Ok(Message::Close(_))))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct StreamQuery {
    /// Only this host's snapshots (a dashboard showing one host needs no others).
    hostname: Option<String>,
    /// `1`: send [`LiveMessage`]s (full, then deltas); `0` or absent: stored snapshots.
    delta: Option<u8>,
}

#[utoipa::path(get, path = "/ws/process-snapshots/", tag = "live",
    summary = "WebSocket: every new snapshot",
    description = "Upgrades to a WebSocket (101 Switching Protocols) that sends every new snapshot of every host \
        (or of one, with `hostname`) as it arrives, in the `StoredSnapshot` shape, or with `delta=1` as live \
        messages (each host's first snapshot whole, then deltas). Closes with 4001 when the token expires. \
        Credentials: `Authorization: Bearer`, or `?ticket=` (from `POST /api/auth/ws-ticket`) or `?token=`.",
    params(StreamQuery,
        ("ticket" = Option<String>, Query, description = "A single-use ticket from `POST /api/auth/ws-ticket`"),
        ("token" = Option<String>, Query, description = "A bearer token (prefer a ticket)")),
    responses((status = 101, description = "Switching Protocols: the stream follows")))]
pub(super) async fn all_snapshots(
    State(state): State<AppState>,
    user: CurrentUser,
    super::query::ApiQuery(q): super::query::ApiQuery<StreamQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let deltas = match q.delta {
        None | Some(0) => None,
        Some(1) => Some(Deltas::default()),
        Some(other) => return Err(ApiError::BadRequest(format!("delta must be 0 or 1, not {other}."))),
    };
    let slot = state.streams.open(&user, state.settings.max_streams_per_user)?;
    let only = match q.hostname {
        Some(h) => Some(state.resolve_host(&h).await?.hostname),
        None => None,
    };
    // Which snapshots come first, chosen before the upgrade: a store too busy to say is
    // an error the client can see.
    let newest = state.store.newest_per_host().await?;
    // Listening for account changes from the moment the user was checked: one made while
    // the socket opens must still end it.
    let access = AccessCheck::new(&state);
    // Dashboards only ever send pings and a close: a small read buffer (see agents.rs).
    Ok(upgrade.read_buffer_size(CLIENT_READ_BUFFER).on_upgrade(move |socket| async move {
        let _slot = slot;
        stream_all(socket, state, user, access, only, newest, deltas).await
    }))
}

/// What a delta stream's client holds: the last snapshot sent of each host, with its id.
#[derive(Default)]
pub struct Deltas {
    sent: HashMap<String, (i64, Arc<Snapshot>)>,
}

impl Deltas {
    /// The message for `snapshot`: a delta when this client holds an earlier snapshot of
    /// its host, else the whole snapshot. With `shared`, the encoding is taken from (or
    /// left in) the published snapshot for the other clients with the same base.
    fn message(&mut self, snapshot_id: i64, snapshot: &Arc<Snapshot>, shared: Option<&Encoded>) -> Arc<str> {
        let base = self.sent.insert(snapshot.host.hostname.clone(), (snapshot_id, snapshot.clone()));
        let encode = |message: LiveMessage| -> Arc<str> { serde_json::to_string(&message).unwrap_or_default().into() };
        match base {
            Some((base_id, base)) => {
                let delta = || {
                    let delta = Box::new(SnapshotDelta::between(&base, snapshot));
                    encode(LiveMessage::Delta { snapshot_id, delta })
                };
                match shared {
                    Some(e) => match e.delta.get_or_init(|| (base_id, delta())) {
                        (id, text) if *id == base_id => text.clone(),
                        _ => delta(),
                    },
                    None => delta(),
                }
            }
            None => encode(LiveMessage::Full { snapshot_id, snapshot: Box::new(Snapshot::clone(snapshot)) }),
        }
    }
}

/// One snapshot for a live stream's client, in the shape it asked for: stored
/// snapshots, or [`LiveMessage`]s when it holds `deltas`. `shared` is the published
/// snapshot's encodings, which every client of that snapshot reuses.
pub fn stream_message(
    deltas: &mut Option<Deltas>,
    snapshot_id: i64,
    snapshot: &Arc<Snapshot>,
    shared: Option<&Encoded>,
) -> Arc<str> {
    match deltas {
        Some(deltas) => deltas.message(snapshot_id, snapshot, shared),
        None => {
            let encode = || -> Arc<str> { views::stored(snapshot_id, snapshot, false).to_string().into() };
            match shared {
                Some(e) => e.full.get_or_init(encode).clone(),
                None => encode(),
            }
        }
    }
}

async fn send_text(socket: &mut WebSocket, text: Arc<str>) -> bool {
    socket.send(Message::Text((*text).into())).await.is_ok()
}

async fn stream_all(
    mut socket: WebSocket,
    state: AppState,
    user: CurrentUser,
    mut access: AccessCheck,
    only: Option<String>,
    newest: Vec<Newest>,
    mut deltas: Option<Deltas>,
) {
    let wanted = |hostname: &str| only.as_deref().is_none_or(|o| o == hostname);
    // Other collectors' snapshots of these hosts are read back while this stream lasts.
    let _following = state.hub.follow(only.as_deref());
    let mut feed = state.hub.subscribe_all();
    let mut shutdown = state.shutdown_signal();
    let expiry = tokio::time::sleep(until_expiry(&user));
    tokio::pin!(expiry);
    // First, what is current for every wanted host, filtered before anything is decoded.
    for newest in newest.iter().filter(|n| wanted(&n.hostname)) {
        let text = match state.hub.latest(&newest.hostname) {
            Some(p) if p.snapshot_id >= newest.snapshot_id => {
                stream_message(&mut deltas, p.snapshot_id, &p.snapshot, Some(&p.encoded))
            }
            _ => match state.store.snapshot(newest.snapshot_id).await {
                Ok(Some(s)) => stream_message(&mut deltas, s.id, &Arc::new(s.snapshot), None),
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(host = %newest.hostname, "cannot read the newest snapshot for a stream: {e}");
                    continue;
                }
            },
        };
        if !send_text(&mut socket, text).await {
            return;
        }
    }
    let end = loop {
        tokio::select! {
            next = feed.recv() => match next {
                Ok(p) if !wanted(&p.snapshot.host.hostname) => continue,
                Ok(p) => {
                    let text = stream_message(&mut deltas, p.snapshot_id, &p.snapshot, Some(&p.encoded));
                    if !send_text(&mut socket, text).await {
                        break End::Client;
                    }
                }
                // Fell behind: skip to the newest rather than replay old news.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break End::Shutdown,
            },
            message = socket.recv() => if client_gone(message) { break End::Client },
            () = access.due() => if !state.auth.still_valid(&state.store, &user).await { break End::Revoked },
            () = &mut expiry => break End::Expired,
            _ = shutdown.changed() => break End::Shutdown,
        }
    };
    close(socket, end).await;
}

#[utoipa::path(get, path = "/ws/monitoring/{server_id}", tag = "live",
    summary = "WebSocket: one host's monitoring snapshots",
    description = "Upgrades to a WebSocket (101 Switching Protocols) that sends the host's newest snapshot in the \
        `MonitoringSnapshot` shape each time a new one arrives. Credentials as for `/ws/process-snapshots/`.",
    params(super::openapi::ServerId,
        ("ticket" = Option<String>, Query, description = "A single-use ticket from `POST /api/auth/ws-ticket`"),
        ("token" = Option<String>, Query, description = "A bearer token (prefer a ticket)")),
    responses((status = 101, description = "Switching Protocols: the stream follows")))]
pub(super) async fn monitoring(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(server_id): ApiPath<String>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let slot = state.streams.open(&user, state.settings.max_streams_per_user)?;
    let host = state.resolve_host(&server_id).await?;
    let access = AccessCheck::new(&state);
    Ok(upgrade.read_buffer_size(CLIENT_READ_BUFFER).on_upgrade(move |socket| async move {
        let _slot = slot;
        stream_host(socket, state, user, access, host.hostname).await
    }))
}

async fn stream_host(
    mut socket: WebSocket,
    state: AppState,
    user: CurrentUser,
    mut access: AccessCheck,
    hostname: String,
) {
    let mut feed = state.hub.subscribe(&hostname);
    let mut shutdown = state.shutdown_signal();
    let expiry = tokio::time::sleep(until_expiry(&user));
    tokio::pin!(expiry);
    if feed.borrow().is_none() {
        // Nothing live yet (a host that reports rarely): start from what is stored.
        if let Ok(Some(host)) = state.store.host(&hostname).await
            && let Ok(Some(s)) = state.store.latest(host.id).await
            && !send_json(&mut socket, &views::monitoring(s.id, s.received_at, &s.snapshot)).await
        {
            return;
        }
    } else {
        feed.mark_changed();
    }
    let end = loop {
        tokio::select! {
            changed = feed.changed() => {
                if changed.is_err() {
                    break End::Shutdown;
                }
                let current = feed.borrow_and_update().clone();
                if let Some(p) = current
                    && !send_json(&mut socket, &views::monitoring(p.snapshot_id, p.received_at, &p.snapshot)).await
                {
                    break End::Client;
                }
            }
            message = socket.recv() => if client_gone(message) { break End::Client },
            () = access.due() => if !state.auth.still_valid(&state.store, &user).await { break End::Revoked },
            () = &mut expiry => break End::Expired,
            _ = shutdown.changed() => break End::Shutdown,
        }
    };
    close(socket, end).await;
}

/// How long the fleet stream gathers changes before it sends them: one message a second
/// whatever the fleet's size.
const FLEET_FLUSH: Duration = Duration::from_secs(1);

#[utoipa::path(get, path = "/ws/fleet", tag = "live",
    summary = "WebSocket: the fleet overview's changes",
    description = "Upgrades to a WebSocket (101 Switching Protocols) that sends, at most once a second, the hosts \
        whose figures or online state changed (`FleetUpdate`: `{\"type\": \"rows\", \"rows\": [FleetRow]}`), \
        never whole snapshots. Each row's `cpu_trend` holds its newest figure only. Start from `GET /api/hosts/` \
        (which has each host's whole trend) and apply the rows. Credentials as for `/ws/process-snapshots/`.",
    params(("ticket" = Option<String>, Query, description = "A single-use ticket from `POST /api/auth/ws-ticket`"),
        ("token" = Option<String>, Query, description = "A bearer token (prefer a ticket)")),
    responses((status = 101, description = "Switching Protocols: the stream follows")))]
pub(super) async fn fleet(
    State(state): State<AppState>,
    user: CurrentUser,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let slot = state.streams.open(&user, state.settings.max_streams_per_user)?;
    // The hosts whose online state the stream follows from the start (a host that goes
    // offline publishes nothing: the stream notices by looking).
    let known: HashMap<String, bool> =
        state.store.hosts().await?.into_iter().map(|h| (h.hostname.clone(), state.is_online(&h.hostname))).collect();
    let access = AccessCheck::new(&state);
    Ok(upgrade.read_buffer_size(CLIENT_READ_BUFFER).on_upgrade(move |socket| async move {
        let _slot = slot;
        stream_fleet(socket, state, user, access, known).await
    }))
}

/// A host's row for the fleet stream, from its newest glance: its trend cut to the
/// newest figure (the reader holds the rest).
fn fleet_row(state: &AppState, g: &Glance) -> FleetRow {
    let mut figures = g.figures.clone();
    figures.cpu_trend = vec![figures.cpu_percent];
    let hostname = g.hostname.clone();
    FleetRow { online: state.is_online(&hostname), hostname, last_seen: Some(g.received_at), figures: Some(figures) }
}

async fn stream_fleet(
    mut socket: WebSocket,
    state: AppState,
    user: CurrentUser,
    mut access: AccessCheck,
    mut known: HashMap<String, bool>,
) {
    let mut feed = state.hub.subscribe_glances();
    let mut shutdown = state.shutdown_signal();
    let expiry = tokio::time::sleep(until_expiry(&user));
    tokio::pin!(expiry);
    let mut flush = tokio::time::interval(FLEET_FLUSH);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The newest glance of each host that changed since the last message: only the
    // newest matters, and rows are made when sent.
    let mut changed: HashMap<String, Arc<Glance>> = HashMap::new();
    let end = loop {
        tokio::select! {
            next = feed.recv() => match next {
                Ok(g) => {
                    changed.insert(g.hostname.clone(), g);
                }
                // Fell behind: the next snapshots of each host bring it up to date.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break End::Shutdown,
            },
            _ = flush.tick() => {
                let mut rows: Vec<FleetRow> = changed.drain().map(|(_, p)| fleet_row(&state, &p)).collect();
                for row in &rows {
                    known.insert(row.hostname.clone(), row.online);
                }
                // Hosts that went offline (or came back) without a new snapshot here.
                for (hostname, online) in known.iter_mut() {
                    let now = state.is_online(hostname);
                    if now != *online {
                        *online = now;
                        if !rows.iter().any(|r| &r.hostname == hostname) {
                            rows.push(match state.hub.glance_of(hostname) {
                                Some(g) => fleet_row(&state, &g),
                                None => FleetRow { hostname: hostname.clone(), online: now, last_seen: None, figures: None },
                            });
                        }
                    }
                }
                if rows.is_empty() {
                    continue;
                }
                let text = serde_json::to_string(&FleetUpdate::Rows { rows }).unwrap_or_default();
                if !send_text(&mut socket, text.into()).await {
                    break End::Client;
                }
            }
            message = socket.recv() => if client_gone(message) { break End::Client },
            () = access.due() => if !state.auth.still_valid(&state.store, &user).await { break End::Revoked },
            () = &mut expiry => break End::Expired,
            _ = shutdown.changed() => break End::Shutdown,
        }
    };
    close(socket, end).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Published;
    use crate::sample::{Sampler, SamplerOptions};

    #[test]
    fn clients_of_one_snapshot_share_its_encoding_and_each_gets_what_fits_its_base() {
        let mut sampler = Sampler::new(SamplerOptions::default());
        let (first, second) = (Arc::new(sampler.sample()), sampler.sample());
        let mut other_base = (*first).clone();
        other_base.processes.truncate(1);
        let published = Published::new(2, 1, chrono::Utc::now(), Arc::new(second));

        // Whole stored snapshots: encoded once for every client.
        let (a, b) = (
            stream_message(&mut None, 2, &published.snapshot, Some(&published.encoded)),
            stream_message(&mut None, 2, &published.snapshot, Some(&published.encoded)),
        );
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*a, views::stored(2, &published.snapshot, false).to_string());

        // Deltas: clients holding the same base share one; another base gets its own.
        let holding = |id: i64, base: Snapshot| {
            let mut d = Some(Deltas::default());
            stream_message(&mut d, id, &Arc::new(base), None);
            d
        };
        let (mut c1, mut c2, mut c3) =
            (holding(1, (*first).clone()), holding(1, (*first).clone()), holding(7, other_base.clone()));
        let t1 = stream_message(&mut c1, 2, &published.snapshot, Some(&published.encoded));
        let t2 = stream_message(&mut c2, 2, &published.snapshot, Some(&published.encoded));
        let t3 = stream_message(&mut c3, 2, &published.snapshot, Some(&published.encoded));
        assert!(Arc::ptr_eq(&t1, &t2));
        for (text, base) in [(&t1, &*first), (&t3, &other_base)] {
            let Ok(LiveMessage::Delta { delta, .. }) = serde_json::from_str::<LiveMessage>(text) else {
                panic!("not a delta: {text}")
            };
            assert_eq!(delta.apply(base).unwrap(), *published.snapshot);
        }
    }
}
