//! Live WebSockets, fed by the hub.
//!
//! - `/ws/process-snapshots/`: every new snapshot of every host (or of one, with
//!   `?hostname=`), in the stored-snapshot shape, as it arrives; with `?delta=1`, as
//!   [`LiveMessage`]s instead: each host's first snapshot whole, then deltas against the
//!   previous one sent on this connection (a fraction of the size);
//! - `/ws/monitoring/{server_id}`: one host's newest snapshot in the monitoring shape,
//!   each time a new one arrives (at the sampling interval).
//!
//! Both send what is current right after connecting, so a new page never waits a tick
//! for its first picture. A slow client only ever misses intermediate snapshots: the hub
//! never queues without bound. A socket closes when its token expires (code 4001) and
//! when the collector shuts down (1001).
//!
//! No permessage-deflate: axum 0.8's WebSocket (tungstenite 0.29) does not negotiate
//! compression extensions, so deltas are what keeps the live stream small.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use super::auth::CurrentUser;
use super::error::ApiError;
use super::rest::ApiPath;
use super::{AppState, views};
use crate::model::Snapshot;
use crate::model::delta::{LiveMessage, SnapshotDelta};

/// The WebSocket routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ws/process-snapshots/", get(all_snapshots))
        .route("/ws/process-snapshots", get(all_snapshots))
        .route("/ws/monitoring/{server_id}", get(monitoring))
}

/// Why a socket closes.
enum End {
    Client,
    Expired,
    Shutdown,
}

async fn close(mut socket: WebSocket, end: End) {
    let frame = match end {
        End::Client => return,
        End::Expired => CloseFrame { code: 4001, reason: "token expired; sign in again".into() },
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

/// Reads (and drops) what the client sends; `false` once it has gone.
fn client_gone(message: Option<Result<Message, axum::Error>>) -> bool {
    matches!(message, None | Some(Err(_)) | Some(Ok(Message::Close(_))))
}

#[derive(serde::Deserialize)]
struct StreamQuery {
    /// Only this host's snapshots (a dashboard showing one host needs no others).
    hostname: Option<String>,
    /// `1`: send [`LiveMessage`]s (full, then deltas); `0` or absent: stored snapshots.
    delta: Option<u8>,
}

async fn all_snapshots(
    State(state): State<AppState>,
    user: CurrentUser,
    super::rest::ApiQuery(q): super::rest::ApiQuery<StreamQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let deltas = match q.delta {
        None | Some(0) => None,
        Some(1) => Some(Deltas::default()),
        Some(other) => return Err(ApiError::BadRequest(format!("delta must be 0 or 1, not {other}."))),
    };
    let only = match q.hostname {
        Some(h) => Some(state.resolve_host(&h).await?.hostname),
        None => None,
    };
    Ok(upgrade.on_upgrade(move |socket| stream_all(socket, state, user, only, deltas)))
}

/// What a delta stream's client holds: the last snapshot sent of each host.
#[derive(Default)]
struct Deltas {
    sent: HashMap<String, Arc<Snapshot>>,
}

impl Deltas {
    /// The message for `snapshot`: a delta when this client holds an earlier snapshot of
    /// its host, else the whole snapshot.
    fn message(&mut self, snapshot_id: i64, snapshot: Arc<Snapshot>) -> Value {
        let message = match self.sent.get(&snapshot.host.hostname) {
            Some(base) => LiveMessage::Delta { snapshot_id, delta: Box::new(SnapshotDelta::between(base, &snapshot)) },
            None => LiveMessage::Full { snapshot_id, snapshot: Box::new(Snapshot::clone(&snapshot)) },
        };
        self.sent.insert(snapshot.host.hostname.clone(), snapshot);
        serde_json::to_value(message).unwrap_or(Value::Null)
    }
}

/// One snapshot for `stream_all`'s client, in the shape it asked for.
fn stream_message(deltas: &mut Option<Deltas>, snapshot_id: i64, snapshot: Arc<Snapshot>) -> Value {
    match deltas {
        Some(deltas) => deltas.message(snapshot_id, snapshot),
        None => views::stored(snapshot_id, &snapshot, false),
    }
}

async fn stream_all(
    mut socket: WebSocket,
    state: AppState,
    user: CurrentUser,
    only: Option<String>,
    mut deltas: Option<Deltas>,
) {
    let wanted = |hostname: &str| only.as_deref().is_none_or(|o| o == hostname);
    let mut feed = state.hub.subscribe_all();
    let mut shutdown = state.shutdown_signal();
    let expiry = tokio::time::sleep(until_expiry(&user));
    tokio::pin!(expiry);
    // First, what is current for every host.
    if let Ok(latest) = state.store.latest_per_host().await {
        for s in latest.into_iter().filter(|s| wanted(&s.snapshot.host.hostname)) {
            if !send_json(&mut socket, &stream_message(&mut deltas, s.id, Arc::new(s.snapshot))).await {
                return;
            }
        }
    }
    let end = loop {
        tokio::select! {
            next = feed.recv() => match next {
                Ok(p) if !wanted(&p.snapshot.host.hostname) => continue,
                Ok(p) => {
                    if !send_json(&mut socket, &stream_message(&mut deltas, p.snapshot_id, p.snapshot.clone())).await {
                        break End::Client;
                    }
                }
                // Fell behind: skip to the newest rather than replay old news.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break End::Shutdown,
            },
            message = socket.recv() => if client_gone(message) { break End::Client },
            () = &mut expiry => break End::Expired,
            _ = shutdown.changed() => break End::Shutdown,
        }
    };
    close(socket, end).await;
}

async fn monitoring(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(server_id): ApiPath<String>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let host = state.resolve_host(&server_id).await?;
    Ok(upgrade.on_upgrade(move |socket| stream_host(socket, state, user, host.hostname)))
}

async fn stream_host(mut socket: WebSocket, state: AppState, user: CurrentUser, hostname: String) {
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
            () = &mut expiry => break End::Expired,
            _ = shutdown.changed() => break End::Shutdown,
        }
    };
    close(socket, end).await;
}
