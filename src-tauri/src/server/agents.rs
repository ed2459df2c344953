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
//! Before a session is registered, its key must be allowed to report as the host it
//! names (`binding.rs`). [`Agents`] holds one session per connected host. A relayed
//! action gets a random request id, goes out on that host's socket, and its REST caller
//! waits (bounded) for the reply, which only that session may give. Revoking a key ends
//! its sessions; frames are decoded on blocking threads; what an agent says is escaped
//! before it reaches a log line.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::Method;
use axum::response::Response;
use axum::routing::get;
use tokio::sync::{mpsc, oneshot, watch};

use super::auth::AgentKey;
use super::routes::{Access, Route};
use super::{AppState, binding, upload};
use crate::model::Snapshot;
use crate::model::agent::{
    ActionReply, ActionRequest, AgentMessage, BASES_KEPT, CollectorMessage, Frame, MAX_FRAME_BYTES, OLDEST_PROTOCOL,
    PROTOCOL_VERSION, decode_frame,
};

/// How long an agent has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued for one agent before the collector stops waiting on it.
const OUTBOX: usize = 64;
/// Garbage frames tolerated in one session before it is closed.
const MAX_BAD_FRAMES: u32 = 100;
/// Most agent sessions open at once by default, over all keys: each holds memory (its
/// delta bases) and a socket.
pub const MAX_SESSIONS: usize = 10_000;
/// Most agent sessions one API key may hold by default: a quarter of [`MAX_SESSIONS`],
/// so that one leaked fleet key saying hello as thousands of hosts cannot take them all
/// (or every connection the collector has).
pub const MAX_SESSIONS_PER_KEY: usize = 2_500;
/// How often a session checks that its key is still valid, so that a key revoked
/// elsewhere (the CLI, another collector) ends its sessions within seconds. Revoking
/// through this collector's API ends them at once.
const KEY_CHECK: Duration = Duration::from_secs(5);

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

/// Why a session is told to end from outside: the close code and the reason.
type Kick = Option<(u16, String)>;

struct Connection {
    session: u64,
    key_id: i64,
    machine_id: Option<String>,
    allow_control: bool,
    outbox: mpsc::Sender<CollectorMessage>,
    kick: watch::Sender<Kick>,
}

/// Why a session was not registered: the close code, the error code and the message.
struct Refused {
    close: u16,
    code: &'static str,
    message: String,
}

impl Refused {
    /// Another agent holds the host.
    fn conflict(message: String) -> Refused {
        Refused { close: 4009, code: "conflict", message }
    }

    /// A cap on sessions is reached (the agent tries again later).
    fn full(message: String) -> Refused {
        Refused { close: 4008, code: "too_many_sessions", message }
    }
}

/// What a registered session listens to.
struct Registered {
    session: u64,
    outbox: mpsc::Receiver<CollectorMessage>,
    kicked: watch::Receiver<Kick>,
}

/// The connected agents, by host name.
#[derive(Default)]
pub struct Agents {
    connections: Mutex<HashMap<String, Connection>>,
    /// Relayed actions waiting for their answer, by request id, with the session the
    /// request went out on: only that session may answer it.
    pending: Mutex<HashMap<u64, (u64, oneshot::Sender<ActionReply>)>>,
    next_session: AtomicU64,
}

impl Agents {
    fn connections(&self) -> MutexGuard<'_, HashMap<String, Connection>> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<u64, (u64, oneshot::Sender<ActionReply>)>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether an agent for `hostname` is connected now.
    pub fn is_connected(&self, hostname: &str) -> bool {
        self.connections().contains_key(hostname)
    }

    /// Agent sessions open now.
    pub fn session_count(&self) -> usize {
        self.connections().len()
    }

    /// Registers a session. At most one per host: a new one replaces the old only when it
    /// proves to be the same agent, with the same key and the same machine fingerprint
    /// (an agent that restarted before its old socket timed out). Any other is refused,
    /// a session without a fingerprint included: nothing shows it is the same machine,
    /// and taking the host over would give it the host's relayed actions. At most
    /// `limits.0` sessions in all and `limits.1` for one key.
    fn register(
        &self,
        hostname: &str,
        key_id: i64,
        machine_id: Option<String>,
        allow_control: bool,
        (max_sessions, max_per_key): (usize, usize),
    ) -> Result<Registered, Refused> {
        let mut connections = self.connections();
        if let Some(old) = connections.get(hostname) {
            let same_agent = old.key_id == key_id && old.machine_id.is_some() && old.machine_id == machine_id;
            if !same_agent {
                return Err(Refused::conflict(format!(
                    "Host `{hostname}` already has a live session, and this agent cannot show it is the same one \
                     (another key, another machine fingerprint, or none). If this is that host's agent restarted, \
                     it gets in once the old connection closes. If the host really moved to this machine, an admin \
                     can reset it (`procyon host unbind {hostname}`); else give this agent its own name with \
                     `--hostname NAME`."
                )));
            }
            old.kick.send_replace(Some((4009, "replaced by a newer session of the same agent".into())));
        } else if connections.len() >= max_sessions {
            return Err(Refused::full(format!(
                "This collector holds its maximum of {max_sessions} agent sessions; try another one."
            )));
        } else if connections.values().filter(|c| c.key_id == key_id).count() >= max_per_key {
            return Err(Refused::full(format!(
                "This API key already has {max_per_key} agent sessions open, the most one key may; give more agents \
                 a key of their own (`procyon apikey create`)."
            )));
        }
        let session = self.next_session.fetch_add(1, Ordering::Relaxed) + 1;
        let (outbox, inbox) = mpsc::channel(OUTBOX);
        let (kick, kicked) = watch::channel(None);
        connections
            .insert(hostname.to_owned(), Connection { session, key_id, machine_id, allow_control, outbox, kick });
        Ok(Registered { session, outbox: inbox, kicked })
    }

    /// Agent sessions `key_id` holds now.
    pub fn sessions_of(&self, key_id: i64) -> usize {
        self.connections().values().filter(|c| c.key_id == key_id).count()
    }

    fn unregister(&self, hostname: &str, session: u64) {
        let mut connections = self.connections();
        if connections.get(hostname).is_some_and(|c| c.session == session) {
            connections.remove(hostname);
        }
    }

    /// Ends every session that authenticated with `key_id` (the key was revoked).
    pub fn close_key(&self, key_id: i64) {
        for c in self.connections().values().filter(|c| c.key_id == key_id) {
            c.kick.send_replace(Some((4003, "this API key has been revoked".into())));
        }
    }

    /// Ends the session of `hostname`, if any (its binding was reset or the host deleted).
    pub fn close_host(&self, hostname: &str, reason: &str) {
        if let Some(c) = self.connections().get(hostname) {
            c.kick.send_replace(Some((4003, reason.to_owned())));
        }
    }

    /// Hands `reply` to the caller waiting for it, if `session` is the one its request
    /// went out on. `false` for a reply nobody asked this session for (forged, or late).
    fn resolve(&self, session: u64, reply: ActionReply) -> bool {
        let mut pending = self.pending();
        match pending.get(&reply.request_id) {
            Some((asked, _)) if *asked == session => {
                if let Some((_, waiter)) = pending.remove(&reply.request_id) {
                    let _ = waiter.send(reply);
                }
                true
            }
            _ => false,
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
        let (session, outbox) = {
            let connections = self.connections();
            let connection = connections.get(hostname).ok_or(RelayError::Offline)?;
            if !connection.allow_control {
                return Err(RelayError::ControlOff);
            }
            (connection.session, connection.outbox.clone())
        };
        // Random, so that no agent can guess the id of a request sent to another.
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut pending = self.pending();
            let mut id = random_id();
            while pending.contains_key(&id) {
                id = random_id();
            }
            pending.insert(id, (session, tx));
            id
        };
        request.request_id = id;
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

/// Takes a session out of the registry when dropped.
struct Unregister {
    agents: std::sync::Arc<Agents>,
    hostname: String,
    session: u64,
}

impl Drop for Unregister {
    fn drop(&mut self) {
        self.agents.unregister(&self.hostname, self.session);
    }
}

/// A request id nobody can predict.
fn random_id() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: still unpredictable enough to outside agents, never reused.
        bytes = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()
            as u64)
            .to_le_bytes();
    }
    u64::from_le_bytes(bytes)
}

/// Text an agent sent, fit for a log line: at most `max` characters, control
/// characters (a newline would forge a line) escaped.
pub fn loggable(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).flat_map(char::escape_debug).collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// Read buffer of an agent's WebSocket (see [`upgrade`]).
const AGENT_READ_BUFFER: usize = 8 * 1024;

/// The agent route, for agents with a live key (see `routes.rs`).
pub fn routes() -> Vec<Route> {
    vec![Route::new(Method::GET, "/ws/agent", Access::Agent, get(upgrade)).exact()]
}

async fn upgrade(State(state): State<AppState>, key: AgentKey, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        // Each connection allocates its read buffer up front (128 KiB by default): a
        // steady agent's frames are a few hundred bytes, a keyframe some kilobytes, and a
        // larger frame is still read whole, in more reads. A thousand agents save 120 MiB.
        .read_buffer_size(AGENT_READ_BUFFER)
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
    let Some(AgentMessage::Hello { protocol, agent_version, host, allow_control, machine_id }) = hello else {
        let message = format!(
            "The first message must be a hello: {{\"type\": \"hello\", \"protocol\": {PROTOCOL_VERSION}, ...}}"
        );
        return refuse(socket, 4000, "expected_hello", message).await;
    };
    let agent_version = loggable(&agent_version, 40);
    if !(OLDEST_PROTOCOL..=PROTOCOL_VERSION).contains(&protocol) {
        let message = format!(
            "This collector (Procyon {}) speaks agent protocols {OLDEST_PROTOCOL} to {PROTOCOL_VERSION}, but this \
             agent (version {agent_version}) speaks protocol {protocol}. Install the same Procyon version on both.",
            env!("CARGO_PKG_VERSION"),
        );
        return refuse(socket, 4002, "protocol_mismatch", message).await;
    }
    let hostname = host.hostname.clone();
    let refusal = |e: super::error::ApiError| {
        let (status, body) = e.parts();
        let (close, code) = if status.as_u16() == 403 { (4003, "forbidden") } else { (4000, "invalid") };
        (close, code, body.message)
    };
    let admission = match binding::check(&state, &key.key, &hostname, machine_id.as_deref()).await {
        Ok(a) => a,
        Err(e) => {
            let (close, code, message) = refusal(e);
            return refuse(socket, close, code, message).await;
        }
    };
    // 2. Registered (the host's one live session), then bound: a binding is recorded
    // only for a session that got the host. For a host bound without a fingerprint, the
    // two happen while no fingerprint can be claimed for it elsewhere (see binding.rs).
    let claims = if admission.machine_bound() { None } else { Some(state.bindings.claims.lock().await) };
    let Registered { session, mut outbox, mut kicked } = match state.agents.register(
        &hostname,
        key.key.id,
        machine_id,
        allow_control,
        (state.settings.max_agent_sessions, state.settings.max_sessions_per_key),
    ) {
        Ok(r) => r,
        Err(refused) => return refuse(socket, refused.close, refused.code, refused.message).await,
    };
    // Unregistered however the session ends, a panic in a handler included: a leaked
    // entry would show the host online for ever and hold a session slot.
    let _registered = Unregister { agents: std::sync::Arc::clone(&state.agents), hostname: hostname.clone(), session };
    if let Err(e) = admission.commit(&state).await {
        let (close, code, message) = refusal(e);
        return refuse(socket, close, code, message).await;
    }
    drop(claims);
    let last_seq = match state.store.next_seq(&hostname).await {
        Ok(next) => next.saturating_sub(1),
        Err(e) => {
            tracing::error!("agent session for {hostname}: {e}");
            return refuse(socket, 1011, "internal", "The collector cannot read its store; try again later.".into())
                .await;
        }
    };
    tracing::info!(%hostname, %agent_version, allow_control, last_seq, "agent connected");
    // The session speaks the agent's protocol; frames of either encoding are read.
    let welcome = CollectorMessage::Welcome { protocol, collector_version: env!("CARGO_PKG_VERSION").into(), last_seq };
    let mut shutdown = state.shutdown_signal();
    let mut key_check = tokio::time::interval(KEY_CHECK);
    key_check.reset();
    let mut bad_frames = 0u32;
    // Delta bases: the snapshots acknowledged on this connection, newest last.
    let mut bases: VecDeque<Arc<Snapshot>> = VecDeque::with_capacity(BASES_KEPT + 1);
    if send(&mut socket, &welcome).await {
        loop {
            tokio::select! {
                frame = socket.recv() => {
                    let reply = match frame {
                        Some(Ok(Message::Binary(bytes))) => match decode(bytes, &hostname, &bases).await {
                            Ok(Ok(snapshot)) => Some(store_base(&state, snapshot, &mut bases).await),
                            Ok(Err(reply)) => Some(reply),
                            Err(e) => Some(bad_frame(&mut bad_frames, e)),
                        },
                        Some(Ok(Message::Text(text))) => match parse_text(text).await {
                            Ok(AgentMessage::Snapshot { snapshot }) => {
                                let seq = snapshot.seq;
                                let hostname = hostname.clone();
                                let checked = tokio::task::spawn_blocking(move || check(*snapshot, &hostname, None)).await;
                                match checked {
                                    Ok(Ok(snapshot)) => Some(store_base(&state, snapshot, &mut bases).await),
                                    Ok(Err(reply)) => Some(reply),
                                    Err(e) => Some(CollectorMessage::Error {
                                        code: "unavailable".into(),
                                        message: format!("checking snapshot {seq} failed: {e}"),
                                    }),
                                }
                            }
                            Ok(AgentMessage::Dropped { count, reason }) => {
                                // Never silent: the operator learns that history has a hole.
                                let reason = loggable(&reason, 200);
                                tracing::warn!(%hostname, count, %reason, "agent dropped snapshots");
                                None
                            }
                            Ok(AgentMessage::ActionResult(reply)) => {
                                if state.agents.resolve(session, reply) {
                                    None
                                } else {
                                    Some(bad_frame(&mut bad_frames, "an action result nobody asked this agent for".into()))
                                }
                            }
                            Ok(AgentMessage::Hello { .. }) => Some(bad_frame(&mut bad_frames, "a second hello".into())),
                            Err(e) => Some(bad_frame(&mut bad_frames, e)),
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
                _ = kicked.changed() => {
                    let kick = kicked.borrow().clone();
                    if let Some((code, reason)) = kick {
                        tracing::info!(%hostname, %reason, "agent session ended");
                        return refuse(socket, code, "closed", reason).await;
                    }
                }
                _ = key_check.tick() => {
                    if matches!(state.store.api_key_live(key.key.id).await, Ok(false)) {
                        return refuse(socket, 4003, "revoked", "This API key has been revoked.".into()).await;
                    }
                }
                _ = shutdown.changed() => {
                    let _ = socket.send(Message::Close(Some(CloseFrame { code: 1001, reason: "collector shutting down".into() }))).await;
                    break;
                }
            }
        }
    }
    tracing::info!(%hostname, "agent disconnected");
}

/// Decodes a binary frame, rebuilds the snapshot a delta stands for, checks it and
/// redacts its command lines, all on a blocking thread (so on every core): a large
/// snapshot takes milliseconds of CPU, which must not stall the async workers that serve
/// everyone else. `Err` is a frame that is not one of ours; `Ok(Err)` the answer for a
/// snapshot that cannot be rebuilt or stored.
async fn decode(
    bytes: axum::body::Bytes,
    hostname: &str,
    bases: &VecDeque<Arc<Snapshot>>,
) -> Result<Result<Arc<Snapshot>, CollectorMessage>, String> {
    let bases: Vec<Arc<Snapshot>> = bases.iter().cloned().collect();
    let hostname = hostname.to_owned();
    tokio::task::spawn_blocking(move || match decode_frame(&bytes)? {
        Frame::Full(snapshot) => Ok(check(*snapshot, &hostname, None)),
        Frame::Delta(delta) => Ok(rebuild(&delta, &bases).and_then(|s| check(s, &hostname, Some(&delta)))),
    })
    .await
    .map_err(|e| format!("decoding failed: {e}"))?
}

/// Checks a snapshot from `hostname`'s agent like an upload and redacts it, ready to
/// store. A snapshot rebuilt from `delta` is checked and redacted where the delta
/// changed it: the rest is its base's, which passed the same checks when it was stored.
fn check(
    mut snapshot: Snapshot,
    hostname: &str,
    delta: Option<&crate::model::delta::SnapshotDelta>,
) -> Result<Arc<Snapshot>, CollectorMessage> {
    let seq = snapshot.seq;
    if snapshot.host.hostname != hostname {
        return Err(CollectorMessage::Rejected {
            seq,
            message: format!("This session is for host `{hostname}`, not `{}`.", snapshot.host.hostname),
        });
    }
    let touched = delta.map(upload::touched_pids);
    let is_touched = |pid: u32| touched.as_ref().is_none_or(|t| t.contains(&pid));
    if let Err(e) = upload::validate_where(&snapshot, |p| is_touched(p.pid)) {
        return Err(CollectorMessage::Rejected { seq, message: e.parts().1.message });
    }
    for p in snapshot.processes.iter_mut().filter(|p| is_touched(p.pid)) {
        crate::sample::redact::redact_in_place(&mut p.cmd);
    }
    Ok(Arc::new(snapshot))
}

/// Parses a text frame on a blocking thread (it may hold a whole snapshot).
async fn parse_text(text: axum::extract::ws::Utf8Bytes) -> Result<AgentMessage, String> {
    tokio::task::spawn_blocking(move || {
        serde_json::from_str::<AgentMessage>(&text).map_err(|e| format!("not a message: {e}"))
    })
    .await
    .map_err(|e| format!("decoding failed: {e}"))?
}

fn bad_frame(count: &mut u32, message: String) -> CollectorMessage {
    *count += 1;
    CollectorMessage::Error { code: "bad_frame".into(), message }
}

/// The full snapshot a delta stands for, or the `resync` to answer when its base is
/// not kept here or the delta does not fit it (a damaged or forged delta is never
/// stored; a keyframe of that seq will be).
fn rebuild(delta: &crate::model::delta::SnapshotDelta, bases: &[Arc<Snapshot>]) -> Result<Snapshot, CollectorMessage> {
    let seq = delta.seq;
    let Some(base) = bases.iter().rev().find(|b| delta.fits(b)) else {
        let message =
            format!("snapshot {seq} is a delta against seq {}, which this connection does not hold", delta.base_seq);
        return Err(CollectorMessage::Resync { seq, message });
    };
    delta.apply(base).map_err(|e| CollectorMessage::Resync { seq, message: e.to_string() })
}

/// Stores a checked snapshot like [`store`] and, once it is acknowledged, keeps it as a
/// delta base (the oldest of more than [`BASES_KEPT`] goes): the very snapshot stored
/// and published, redacted, which is what the agent's next delta applies to (redaction
/// never changes what a delta names a process by).
async fn store_base(
    state: &AppState,
    snapshot: Arc<Snapshot>,
    bases: &mut VecDeque<Arc<Snapshot>>,
) -> CollectorMessage {
    let base = Arc::clone(&snapshot);
    let reply = store(state, snapshot).await;
    if matches!(reply, CollectorMessage::Ack { .. }) {
        bases.retain(|b| b.seq != base.seq);
        bases.push_back(base);
        while bases.len() > BASES_KEPT {
            bases.pop_front();
        }
    }
    reply
}

/// Stores one checked snapshot from an agent; the answer to send back.
async fn store(state: &AppState, snapshot: Arc<Snapshot>) -> CollectorMessage {
    let seq = snapshot.seq;
    let hostname = snapshot.host.hostname.clone();
    match state.ingest_redacted(snapshot).await {
        Ok(_) => CollectorMessage::Ack { seq },
        // Refused for what it is (a 4xx): sending it again would not help.
        Err(e) if e.parts().0.is_client_error() => CollectorMessage::Rejected { seq, message: e.parts().1.message },
        Err(e) => {
            // Not stored and not the agent's fault: no ack, so it will be sent again.
            let (_, body) = e.parts();
            tracing::error!(%hostname, seq, "cannot store an agent's snapshot: {e:?}");
            CollectorMessage::Error { code: "unavailable".into(), message: body.message }
        }
    }
}
