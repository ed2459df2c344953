//! The collector's end of the agent channel: `WS /ws/agent` and the registry of
//! connected agents through which process actions are relayed.
//!
//! The API key is checked before the upgrade (a bad key never gets a socket). The first
//! frame must be `hello` with our protocol version; a mismatch is answered with a clear
//! `error` and the socket closes. Then every snapshot frame is checked like an upload,
//! stored, and answered with `ack` (or `rejected`). A delta frame is first rebuilt into
//! the full snapshot from one of the last [`BASES_KEPT`] snapshots acknowledged on this
//! connection (kept in memory for that); one whose base is not kept, or that does not fit
//! it, is answered with `resync` and nothing is stored. A garbage frame gets an `error`
//! and is otherwise ignored: one broken agent never affects another.
//!
//! [`Agents`] holds one entry per connected host. A relayed action gets a request id,
//! goes out on that host's socket, and its REST caller waits (bounded) for the reply.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use tokio::sync::{mpsc, oneshot};

use super::auth::AgentKey;
use super::{AppState, upload};
use crate::model::Snapshot;
use crate::model::agent::{
    ActionReply, ActionRequest, AgentMessage, BASES_KEPT, CollectorMessage, Frame, MAX_FRAME_BYTES, PROTOCOL_VERSION,
    decode_frame,
};

/// How long an agent has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued for one agent before the collector stops waiting on it.
const OUTBOX: usize = 64;
/// Garbage frames tolerated in one session before it is closed.
const MAX_BAD_FRAMES: u32 = 100;

/// Why a relayed action did not get an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayError {
    /// No agent is connected for that host.
    Offline,
    /// The agent runs without `--allow-control`.
    ControlOff,
    /// No answer in time.
    Timeout,
}

struct Connection {
    id: u64,
    allow_control: bool,
    outbox: mpsc::Sender<CollectorMessage>,
}

/// The connected agents, by host name.
#[derive(Default)]
pub struct Agents {
    connections: Mutex<HashMap<String, Connection>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<ActionReply>>>,
    next_id: AtomicU64,
}

impl Agents {
    fn connections(&self) -> MutexGuard<'_, HashMap<String, Connection>> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<u64, oneshot::Sender<ActionReply>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether an agent for `hostname` is connected now.
    pub fn is_connected(&self, hostname: &str) -> bool {
        self.connections().contains_key(hostname)
    }

    /// Registers a session; a newer session for the same host replaces an older one
    /// (an agent that reconnects before the old socket timed out).
    fn register(&self, hostname: &str, allow_control: bool) -> (u64, mpsc::Receiver<CollectorMessage>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (outbox, inbox) = mpsc::channel(OUTBOX);
        self.connections().insert(hostname.to_owned(), Connection { id, allow_control, outbox });
        (id, inbox)
    }

    fn unregister(&self, hostname: &str, id: u64) {
        let mut connections = self.connections();
        if connections.get(hostname).is_some_and(|c| c.id == id) {
            connections.remove(hostname);
        }
    }

    fn resolve(&self, reply: ActionReply) {
        if let Some(waiter) = self.pending().remove(&reply.request_id) {
            let _ = waiter.send(reply);
        }
    }

    /// Sends `request` (its id is assigned here) to `hostname`'s agent and waits up to
    /// `timeout` for the answer.
    pub async fn relay(
        &self,
        hostname: &str,
        mut request: ActionRequest,
        timeout: Duration,
    ) -> Result<ActionReply, RelayError> {
        let outbox = {
            let connections = self.connections();
            let connection = connections.get(hostname).ok_or(RelayError::Offline)?;
            if !connection.allow_control {
                return Err(RelayError::ControlOff);
            }
            connection.outbox.clone()
        };
        request.request_id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let id = request.request_id;
        let (tx, rx) = oneshot::channel();
        self.pending().insert(id, tx);
        let sent = outbox.send_timeout(CollectorMessage::Action(request), timeout).await;
        let answer = match sent {
            Ok(()) => tokio::time::timeout(timeout, rx).await,
            Err(_) => {
                self.pending().remove(&id);
                return Err(RelayError::Offline);
            }
        };
        self.pending().remove(&id);
        match answer {
            Ok(Ok(reply)) => Ok(reply),
            // The session ended before answering.
            Ok(Err(_)) => Err(RelayError::Offline),
            Err(_) => Err(RelayError::Timeout),
        }
    }
}

/// The agent route.
pub fn router() -> Router<AppState> {
    Router::new().route("/ws/agent", get(upgrade))
}

async fn upgrade(State(state): State<AppState>, key: AgentKey, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| session(socket, state, key))
}

async fn send(socket: &mut WebSocket, message: &CollectorMessage) -> bool {
    match serde_json::to_string(message) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

async fn refuse(mut socket: WebSocket, close_code: u16, code: &str, message: String) {
    tracing::warn!(code, %message, "agent refused");
    send(&mut socket, &CollectorMessage::Error { code: code.into(), message: message.clone() }).await;
    let reason: String = message.chars().take(100).collect();
    let _ = socket.send(Message::Close(Some(CloseFrame { code: close_code, reason: reason.into() }))).await;
}

async fn session(mut socket: WebSocket, state: AppState, key: AgentKey) {
    // 1. Hello.
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, socket.recv()).await {
        Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<AgentMessage>(&text).ok(),
        _ => None,
    };
    let Some(AgentMessage::Hello { protocol, agent_version, host, allow_control, .. }) = hello else {
        let message = format!(
            "The first message must be a hello: {{\"type\": \"hello\", \"protocol\": {PROTOCOL_VERSION}, ...}}"
        );
        return refuse(socket, 4000, "expected_hello", message).await;
    };
    if protocol != PROTOCOL_VERSION {
        let message = format!(
            "This collector (Procyon {}) speaks agent protocol {PROTOCOL_VERSION}, but this agent (version {}) speaks \
             protocol {protocol}. Install the same Procyon version on both.",
            env!("CARGO_PKG_VERSION"),
            agent_version.chars().take(40).collect::<String>()
        );
        return refuse(socket, 4002, "protocol_mismatch", message).await;
    }
    let hostname = host.hostname.clone();
    if let Err(e) = key.check_host(&hostname) {
        return refuse(socket, 4003, "forbidden", e.parts().1.message).await;
    }
    if let Err(e) = upload::validate_hostname(&hostname) {
        return refuse(socket, 4000, "invalid", e.parts().1.message).await;
    }
    let last_seq = match state.store.next_seq(&hostname).await {
        Ok(next) => next.saturating_sub(1),
        Err(e) => {
            tracing::error!("agent session for {hostname}: {e}");
            return refuse(socket, 1011, "internal", "The collector cannot read its store; try again later.".into())
                .await;
        }
    };

    // 2. Registered: snapshots in, acks and actions out.
    let (id, mut outbox) = state.agents.register(&hostname, allow_control);
    tracing::info!(%hostname, %agent_version, allow_control, last_seq, "agent connected");
    let welcome = CollectorMessage::Welcome {
        protocol: PROTOCOL_VERSION,
        collector_version: env!("CARGO_PKG_VERSION").into(),
        last_seq,
    };
    let mut shutdown = state.shutdown_signal();
    let mut bad_frames = 0u32;
    // Delta bases: the snapshots acknowledged on this connection, newest last.
    let mut bases: VecDeque<Snapshot> = VecDeque::with_capacity(BASES_KEPT + 1);
    if send(&mut socket, &welcome).await {
        loop {
            tokio::select! {
                frame = socket.recv() => {
                    let reply = match frame {
                        Some(Ok(Message::Binary(bytes))) => match decode_frame(&bytes) {
                            Ok(Frame::Full(snapshot)) => Some(store_base(&state, &hostname, *snapshot, &mut bases).await),
                            Ok(Frame::Delta(delta)) => match rebuild(&delta, &bases) {
                                Ok(snapshot) => Some(store_base(&state, &hostname, snapshot, &mut bases).await),
                                Err(reply) => Some(reply),
                            },
                            Err(e) => Some(bad_frame(&mut bad_frames, e)),
                        },
                        Some(Ok(Message::Text(text))) => match serde_json::from_str::<AgentMessage>(&text) {
                            Ok(AgentMessage::Snapshot { snapshot }) => {
                                Some(store_base(&state, &hostname, *snapshot, &mut bases).await)
                            }
                            Ok(AgentMessage::Dropped { count, reason }) => {
                                // Never silent: the operator learns that history has a hole.
                                tracing::warn!(%hostname, count, %reason, "agent dropped snapshots");
                                None
                            }
                            Ok(AgentMessage::ActionResult(reply)) => {
                                state.agents.resolve(reply);
                                None
                            }
                            Ok(AgentMessage::Hello { .. }) => Some(bad_frame(&mut bad_frames, "a second hello".into())),
                            Err(e) => Some(bad_frame(&mut bad_frames, format!("not a message: {e}"))),
                        },
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => None, // pings are answered by the WebSocket layer
                    };
                    if let Some(reply) = reply
                        && !send(&mut socket, &reply).await
                    {
                        break;
                    }
                    if bad_frames > MAX_BAD_FRAMES {
                        let _ = socket.send(Message::Close(Some(CloseFrame { code: 1008, reason: "too many bad frames".into() }))).await;
                        break;
                    }
                }
                Some(message) = outbox.recv() => {
                    if !send(&mut socket, &message).await {
                        break;
                    }
                }
                _ = shutdown.changed() => {
                    let _ = socket.send(Message::Close(Some(CloseFrame { code: 1001, reason: "collector shutting down".into() }))).await;
                    break;
                }
            }
        }
    }
    state.agents.unregister(&hostname, id);
    tracing::info!(%hostname, "agent disconnected");
}

fn bad_frame(count: &mut u32, message: String) -> CollectorMessage {
    *count += 1;
    CollectorMessage::Error { code: "bad_frame".into(), message }
}

/// The full snapshot a delta stands for, or the `resync` to answer when its base is
/// not kept here or the delta does not fit it (a damaged or forged delta is never
/// stored; a keyframe of that seq will be).
fn rebuild(
    delta: &crate::model::delta::SnapshotDelta,
    bases: &VecDeque<Snapshot>,
) -> Result<Snapshot, CollectorMessage> {
    let seq = delta.seq;
    let Some(base) = bases.iter().rev().find(|b| delta.fits(b)) else {
        let message =
            format!("snapshot {seq} is a delta against seq {}, which this connection does not hold", delta.base_seq);
        return Err(CollectorMessage::Resync { seq, message });
    };
    delta.apply(base).map_err(|e| CollectorMessage::Resync { seq, message: e.to_string() })
}

/// Stores a snapshot like [`store`] and, once it is acknowledged, keeps it as a delta
/// base (the oldest of more than [`BASES_KEPT`] goes).
async fn store_base(
    state: &AppState,
    hostname: &str,
    snapshot: Snapshot,
    bases: &mut VecDeque<Snapshot>,
) -> CollectorMessage {
    let base = snapshot.clone();
    let reply = store(state, hostname, snapshot).await;
    if matches!(reply, CollectorMessage::Ack { .. }) {
        bases.retain(|b| b.seq != base.seq);
        bases.push_back(base);
        while bases.len() > BASES_KEPT {
            bases.pop_front();
        }
    }
    reply
}

/// Checks and stores one snapshot from `hostname`'s agent; the answer to send back.
async fn store(state: &AppState, hostname: &str, snapshot: crate::model::Snapshot) -> CollectorMessage {
    let seq = snapshot.seq;
    if snapshot.host.hostname != hostname {
        return CollectorMessage::Rejected {
            seq,
            message: format!("This session is for host `{hostname}`, not `{}`.", snapshot.host.hostname),
        };
    }
    if let Err(e) = upload::validate(&snapshot) {
        let (_, body) = e.parts();
        return CollectorMessage::Rejected { seq, message: body.message };
    }
    match state.ingest(snapshot).await {
        Ok(_) => CollectorMessage::Ack { seq },
        Err(e) => {
            // Not stored and not the agent's fault: no ack, so it will be sent again.
            let (_, body) = e.parts();
            tracing::error!(%hostname, seq, "cannot store an agent's snapshot: {e:?}");
            CollectorMessage::Error { code: "unavailable".into(), message: body.message }
        }
    }
}
