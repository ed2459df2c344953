//! The collector's end of the agent channel: `WS /ws/agent` and the registry of
//! connected agents through which process actions are relayed.
//!
//! The API key is checked before the upgrade (a bad key never gets a socket). The first
//! frame must be `hello` with our protocol version; a mismatch is answered with a clear
//! `error` and the socket closes. Then every snapshot frame is checked like an upload,
//! stored, and answered with `ack` (or `rejected`). A delta frame is first rebuilt into
//! the full snapshot from one of the last [`BASES_KEPT`] snapshots acknowledged on this
//! connection: the newest is kept in memory (it is the very snapshot the hub publishes
//! and the store chains the next row on, so it costs no copy), older ones are read back
//! from the store in the rare case an agent names one. A delta whose base is not one of
//! these, or that does not fit it, is answered with `resync` and nothing is stored. A
//! garbage frame gets an `error` and is otherwise ignored: one broken agent never affects
//! another.
//!
//! Frames are decoded on the blocking pool, at most one per core at a time (a frame
//! waits for its turn; agents wait for acks, so they slow down rather than pile up), and
//! what they may cost is bounded before it is spent: a frame may inflate to at most
//! [`MAX_INFLATE_RATIO`] times its size and [`MAX_SNAPSHOT_JSON_BYTES`] (one whose zstd
//! header claims more is refused unread, one that says nothing is refused once it has
//! inflated that far), and one that inflates past
//! [`COUNT_FIRST_BYTES`] has its process and socket counts read (without building
//! anything) before it is decoded, so a frame over the limits is refused without its
//! value ever being built. A delta is checked and redacted only where it changed the
//! snapshot, and its bytes are handed to the store, which keeps them as they came (see
//! `store::Sent`) unless redaction changed something. Only canonical bytes are kept: a
//! frame body must be exactly one zstd frame (no skippable frames, nothing after it), and
//! one that inflates to noticeably more than its value encoded again (unknown fields,
//! trailing bytes, padding) is stored as the store encodes it, so that no agent can make
//! a row larger than what it holds.
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
use super::listener::ReadCap;
use super::routes::{Access, Route};
use super::{AppState, binding, upload};
use crate::model::Snapshot;
use crate::model::agent::{
    ActionReply, ActionRequest, AgentMessage, BASES_KEPT, CollectorMessage, DetailsReply, DetailsRequest, Encoding,
    FRAME_DELTA, FRAME_DELTA_PACKED, FRAME_FULL, FRAME_FULL_PACKED, MAX_FRAME_BYTES, MAX_SNAPSHOT_JSON_BYTES,
    OLDEST_PROTOCOL, PROTOCOL_VERSION, delta_frame,
};
use crate::model::delta::SnapshotDelta;
use crate::store::{LabelSource, Sent};

/// How long an agent has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest hello: a host's facts, each bounded, and a fingerprint fit in a few KiB, so
/// anything much larger is not a hello (and must not be parsed as one).
pub const MAX_HELLO_BYTES: usize = 64 * 1024;
/// Bytes a connection may send before its hello has been read: the largest hello, its
/// frame header and room for a control frame or two.
const HELLO_READ_CAP: u64 = MAX_HELLO_BYTES as u64 + 1024;
/// How often the collector pings an agent by default; a session that has sent nothing,
/// not even a pong, for three of these is closed (see [`silence_limit`]).
pub const PING_EVERY: Duration = Duration::from_secs(20);
/// Bytes of agent frames being decoded at once by default, over all sessions: a frame
/// counts its own size and what it inflates to (see [`frame_cost`]).
pub const DECODE_BUDGET_BYTES: usize = 128 << 20;
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

/// Why a relayed action did not get an answer. Serialized when the answer goes back to
/// another collector through the database (see `fleet`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RelayError {
    /// No agent is connected for that host.
    Offline,
    /// The agent runs without `--allow-control`.
    ControlOff,
    /// The agent is too old to answer this kind of request.
    Unsupported,
    /// No answer in time.
    Timeout,
}

/// Why a session is told to end from outside: the close code and the reason.
type Kick = Option<(u16, String)>;

/// Who waits for the answer to a relayed request.
enum Waiter {
    Action(oneshot::Sender<ActionReply>),
    Details(oneshot::Sender<DetailsReply>),
}

/// An answer to a relayed request.
enum Answer {
    Action(ActionReply),
    Details(DetailsReply),
}

impl Answer {
    fn request_id(&self) -> u64 {
        match self {
            Answer::Action(r) => r.request_id,
            Answer::Details(r) => r.request_id,
        }
    }
}

struct Connection {
    session: u64,
    key_id: i64,
    machine_id: Option<String>,
    allow_control: bool,
    /// The agent answers details requests (its hello said so).
    details: bool,
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
pub struct Agents {
    connections: Mutex<HashMap<String, Connection>>,
    /// Relayed actions waiting for their answer, by request id, with the session the
    /// request went out on: only that session may answer it.
    pending: Mutex<HashMap<u64, (u64, Waiter)>>,
    next_session: AtomicU64,
    /// Turns to decode a frame: one per core. Decoding is all CPU, so more at once
    /// would only hold more frames in memory, not finish them sooner.
    decodes: Arc<tokio::sync::Semaphore>,
    /// KiB of frames being decoded at once (a frame's own size and what it inflates
    /// to), over all sessions: turns per core bound the count, this bounds the memory,
    /// whatever the number of cores.
    decode_kib: Arc<tokio::sync::Semaphore>,
    decode_budget_kib: usize,
}

impl Default for Agents {
    fn default() -> Self {
        Agents::new(DECODE_BUDGET_BYTES)
    }
}

impl Agents {
    /// A registry whose frames decode within `decode_budget` bytes at once.
    pub fn new(decode_budget: usize) -> Agents {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let decode_budget_kib = decode_budget.div_ceil(1024).clamp(1, u32::MAX as usize);
        Agents {
            connections: Mutex::default(),
            pending: Mutex::default(),
            next_session: AtomicU64::default(),
            decodes: Arc::new(tokio::sync::Semaphore::new(cores)),
            decode_kib: Arc::new(tokio::sync::Semaphore::new(decode_budget_kib)),
            decode_budget_kib,
        }
    }

    fn connections(&self) -> MutexGuard<'_, HashMap<String, Connection>> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<u64, (u64, Waiter)>> {
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
        (allow_control, details): (bool, bool),
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
        connections.insert(
            hostname.to_owned(),
            Connection { session, key_id, machine_id, allow_control, details, outbox, kick },
        );
        Ok(Registered { session, outbox: inbox, kicked })
    }

    /// Agent sessions `key_id` holds now.
    pub fn sessions_of(&self, key_id: i64) -> usize {
        self.connections().values().filter(|c| c.key_id == key_id).count()
    }

    /// Takes `session` out of the registry; `false` if a newer session of the host
    /// replaced it already.
    fn unregister(&self, hostname: &str, session: u64) -> bool {
        let mut connections = self.connections();
        let current = connections.get(hostname).is_some_and(|c| c.session == session);
        if current {
            connections.remove(hostname);
        }
        current
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
    /// went out on and it answers that kind of request. `false` for a reply nobody asked
    /// this session for (forged, or late).
    fn resolve(&self, session: u64, reply: Answer) -> bool {
        let mut pending = self.pending();
        let id = reply.request_id();
        let fits = match (pending.get(&id), &reply) {
            (Some((asked, Waiter::Action(_))), Answer::Action(_))
            | (Some((asked, Waiter::Details(_))), Answer::Details(_)) => *asked == session,
            _ => false,
        };
        if fits {
            match (pending.remove(&id), reply) {
                (Some((_, Waiter::Action(w))), Answer::Action(r)) => {
                    let _ = w.send(r);
                }
                (Some((_, Waiter::Details(w))), Answer::Details(r)) => {
                    let _ = w.send(r);
                }
                _ => {}
            }
        }
        fits
    }

    /// Files a waiter under a fresh request id for `session`.
    fn wait_for(&self, session: u64, waiter: Waiter) -> u64 {
        let mut pending = self.pending();
        // Random, so that no agent can guess the id of a request sent to another.
        let mut id = random_id();
        while pending.contains_key(&id) {
            id = random_id();
        }
        pending.insert(id, (session, waiter));
        id
    }

    /// Sends `message` on `outbox` and waits up to `timeout` for `rx`, filed as `id`.
    async fn exchange<T>(
        &self,
        outbox: mpsc::Sender<CollectorMessage>,
        message: CollectorMessage,
        id: u64,
        rx: oneshot::Receiver<T>,
        timeout: Duration,
    ) -> Result<T, RelayError> {
        let sent = outbox.send_timeout(message, timeout).await;
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

    /// Asks `hostname`'s agent for one process's details (`request`'s id is assigned
    /// here) and waits up to `timeout` for them. Read-only, so asked whatever the
    /// agent's `--allow-control`; an agent too old to answer is `Unsupported` at once.
    pub async fn relay_details(
        &self,
        hostname: &str,
        mut request: DetailsRequest,
        timeout: Duration,
    ) -> Result<DetailsReply, RelayError> {
        let (session, outbox) = {
            let connections = self.connections();
            let connection = connections.get(hostname).ok_or(RelayError::Offline)?;
            if !connection.details {
                return Err(RelayError::Unsupported);
            }
            (connection.session, connection.outbox.clone())
        };
        let (tx, rx) = oneshot::channel();
        let id = self.wait_for(session, Waiter::Details(tx));
        request.request_id = id;
        self.exchange(outbox, CollectorMessage::Details(request), id, rx, timeout).await
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
        let (tx, rx) = oneshot::channel();
        let id = self.wait_for(session, Waiter::Action(tx));
        request.request_id = id;
        self.exchange(outbox, CollectorMessage::Action(request), id, rx, timeout).await
    }
}

/// Takes a session out of the registry when dropped and, unless a newer session of the
/// host took over, lets the host's newest snapshot go from the store's and the hub's
/// memory (the hub keeps it while someone follows the host): a host that went away
/// must not hold memory, and a new session starts with a whole snapshot anyway.
struct Unregister {
    state: AppState,
    hostname: String,
    session: u64,
}

impl Drop for Unregister {
    fn drop(&mut self) {
        if self.state.agents.unregister(&self.hostname, self.session) {
            self.state.store.release(&self.hostname);
            self.state.hub.release(&self.hostname);
            if self.state.store.is_shared()
                && let Ok(runtime) = tokio::runtime::Handle::try_current()
            {
                // The other collectors stop relaying to it here (unless its agent is
                // another collector's by now: that one's record stays).
                let (store, hostname) = (self.state.store.clone(), self.hostname.clone());
                runtime.spawn(async move {
                    if let Err(e) = store.release_agent(&hostname).await {
                        tracing::debug!(%hostname, "cannot record that this collector no longer holds the agent: {e}");
                    }
                });
            }
        }
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

/// How long a session may stay silent: three pings unanswered.
pub fn silence_limit(ping_every: Duration) -> Duration {
    ping_every * 3
}

/// Read buffer of an agent's WebSocket (see [`upgrade`]).
const AGENT_READ_BUFFER: usize = 8 * 1024;

/// The agent route, for agents with a live key (see `routes.rs`).
pub fn routes() -> Vec<Route> {
    vec![Route::new(Method::GET, "/ws/agent", Access::Agent, get(upgrade)).exact()]
}

#[utoipa::path(get, path = "/ws/agent", tag = "live",
    summary = "WebSocket: the agent channel",
    description = "Upgrades to a WebSocket (101 Switching Protocols) on which an agent says hello, then streams \
        its snapshots (MessagePack frames, deltas against the previous one) and answers relayed process actions. \
        See `procyon-agent`; not meant for other clients.",
    responses((status = 101, description = "Switching Protocols: the channel follows")))]
pub(super) async fn upgrade(
    State(state): State<AppState>,
    key: AgentKey,
    cap: Option<axum::Extension<ReadCap>>,
    ws: WebSocketUpgrade,
) -> Response {
    // Until the hello has come, the connection may send a hello's worth and a little
    // (frame headers, a ping): a larger message is cut off as it arrives, never
    // buffered whole (the socket's limit is a frame's, set once for the session).
    let cap = cap.map(|axum::Extension(cap)| cap);
    if let Some(cap) = &cap {
        cap.limit(HELLO_READ_CAP);
    }
    ws.max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        // Each connection allocates its read buffer up front (128 KiB by default): a
        // steady agent's frames are a few hundred bytes, a keyframe some kilobytes, and a
        // larger frame is still read whole, in more reads. A thousand agents save 120 MiB.
        .read_buffer_size(AGENT_READ_BUFFER)
        .on_upgrade(move |socket| session(socket, state, key, cap))
}

async fn send(socket: &mut WebSocket, message: &CollectorMessage) -> bool {
    match serde_json::to_string(message) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

async fn refuse(socket: WebSocket, close_code: u16, code: &str, message: String) {
    tracing::warn!(code, %message, "agent refused");
    refuse_unlogged(socket, close_code, code, message).await;
}

/// [`refuse`] without the log line, for a refusal logged already (binding refusals are,
/// once a minute per host: see `binding::check`).
async fn refuse_unlogged(mut socket: WebSocket, close_code: u16, code: &str, message: String) {
    send(&mut socket, &CollectorMessage::Error { code: code.into(), message: message.clone() }).await;
    let reason: String = message.chars().take(100).collect();
    let _ = socket.send(Message::Close(Some(CloseFrame { code: close_code, reason: reason.into() }))).await;
}

async fn session(mut socket: WebSocket, state: AppState, key: AgentKey, cap: Option<ReadCap>) {
    // 1. Hello: small, so bounded well below a frame, as it is read (see `upgrade`) and
    // once read.
    let received = tokio::time::timeout(HELLO_TIMEOUT, socket.recv()).await;
    let cut_off = cap.as_ref().is_some_and(ReadCap::reached);
    if let Some(cap) = &cap {
        cap.lift();
    }
    let too_large = |size: String| {
        format!(
            "The hello is {size}; a hello is at most {} KiB (a host's facts and a fingerprint).",
            MAX_HELLO_BYTES >> 10
        )
    };
    let hello = match received {
        Ok(Some(Err(_))) if cut_off => {
            let message = too_large(format!("over {} KiB", HELLO_READ_CAP >> 10));
            return refuse(socket, 1009, "hello_too_large", message).await;
        }
        Ok(Some(Ok(Message::Text(text)))) if text.len() > MAX_HELLO_BYTES => {
            let message = too_large(format!("{} KiB", text.len() >> 10));
            return refuse(socket, 1009, "hello_too_large", message).await;
        }
        Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<AgentMessage>(&text).ok(),
        _ => None,
    };
    let Some(AgentMessage::Hello { protocol, agent_version, host, allow_control, machine_id, details, labels }) = hello
    else {
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
    if let Err(e) = crate::model::labels::check(&labels) {
        return refuse(socket, 4000, "invalid", format!("The hello's labels are refused: {e}")).await;
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
            if code == "forbidden" {
                return refuse_unlogged(socket, close, code, message).await;
            }
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
        (allow_control, details),
        (state.settings.max_agent_sessions, state.settings.max_sessions_per_key),
    ) {
        Ok(r) => r,
        Err(refused) => return refuse(socket, refused.close, refused.code, refused.message).await,
    };
    // Unregistered however the session ends, a panic in a handler included: a leaked
    // entry would show the host online for ever and hold a session slot.
    let _registered = Unregister { state: state.clone(), hostname: hostname.clone(), session };
    if let Err(e) = admission.commit(&state).await {
        let (close, code, message) = refusal(e);
        return refuse(socket, close, code, message).await;
    }
    drop(claims);
    if let Err(e) = state.store.set_labels(&hostname, LabelSource::Agent, &labels).await {
        tracing::error!("agent session for {hostname}: storing its labels: {e}");
        return refuse(socket, 1011, "internal", "The collector cannot write its store; try again later.".into()).await;
    }
    // Other collectors on the database relay this host's actions here. Not fatal: the
    // agent's snapshots are stored all the same, and the next session records it again.
    if let Err(e) = state.store.hold_agent(&hostname, allow_control).await {
        tracing::warn!(%hostname, "cannot record that this collector holds the agent: {e}");
    }
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
    let mut bases = Bases::default();
    // Pinged every so often; anything heard (a frame, a pong) counts as alive. A
    // session that stays silent holds a slot and a socket for nothing: it is closed.
    let ping_every = state.settings.agent_ping_every;
    let mut ping = tokio::time::interval(ping_every);
    ping.reset();
    let mut heard_at = tokio::time::Instant::now();
    if send(&mut socket, &welcome).await {
        loop {
            tokio::select! {
                frame = socket.recv() => {
                    heard_at = tokio::time::Instant::now();
                    let reply = match frame {
                        Some(Ok(Message::Binary(bytes))) => match decode(&state, bytes, &hostname, &mut bases).await {
                            Ok(Ok(checked)) => Some(store_base(&state, checked, &mut bases).await),
                            Ok(Err(reply)) => Some(reply),
                            Err(e) => Some(bad_frame(&mut bad_frames, e)),
                        },
                        Some(Ok(Message::Text(text))) => match parse_text(&state, text).await {
                            Ok(AgentMessage::Snapshot { snapshot }) => {
                                let seq = snapshot.seq;
                                let hostname = hostname.clone();
                                let checked = decoding(&state, 0, move || check(*snapshot, &hostname, None, None)).await;
                                match checked {
                                    Ok(Ok(checked)) => Some(store_base(&state, checked, &mut bases).await),
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
                                if state.agents.resolve(session, Answer::Action(reply)) {
                                    None
                                } else {
                                    Some(bad_frame(&mut bad_frames, "an action result nobody asked this agent for".into()))
                                }
                            }
                            Ok(AgentMessage::DetailsResult(reply)) => {
                                if state.agents.resolve(session, Answer::Details(reply)) {
                                    None
                                } else {
                                    Some(bad_frame(&mut bad_frames, "process details nobody asked this agent for".into()))
                                }
                            }
                            Ok(AgentMessage::Hello { .. }) => Some(bad_frame(&mut bad_frames, "a second hello".into())),
                            Err(e) => Some(bad_frame(&mut bad_frames, e)),
                        },
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => None, // pings are answered by the WebSocket layer
                    };
                    if let Some(reply) = &reply {
                        state.counters.frame_answered(reply);
                    }
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
                _ = ping.tick() => {
                    let limit = silence_limit(ping_every);
                    if heard_at.elapsed() > limit {
                        let reason = format!("nothing heard from the agent for {} s", limit.as_secs_f64());
                        tracing::info!(%hostname, %reason, "agent session closed");
                        return refuse(socket, 4010, "idle", reason).await;
                    }
                    if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                        break;
                    }
                }
                _ = key_check.tick() => {
                    // The key revoked, or the host bound elsewhere or unbound (from the
                    // CLI or another collector; this one's API ends the session at once).
                    match state.store.session_standing(key.key.id, &hostname).await {
                        Ok((false, _)) => {
                            return refuse(socket, 4003, "revoked", "This API key has been revoked.".into()).await;
                        }
                        Ok((true, bound)) if bound != Some(key.key.id) => {
                            let reason = if bound.is_none() {
                                "this host's binding was reset by an admin"
                            } else {
                                "this host was bound to another API key by an admin"
                            };
                            tracing::info!(%hostname, %reason, "agent session ended");
                            // What uploads know of the binding is out of date too.
                            state.bindings.forget_host(&hostname);
                            return refuse(socket, 4003, "closed", reason.into()).await;
                        }
                        _ => {}
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

/// The delta bases of a session: the snapshots acknowledged on it that the agent may
/// still name. The agent names only the newest acknowledgement it has seen, so a delta
/// against seq N means older ones will never be named again.
#[derive(Default)]
struct Bases {
    /// The newest acknowledged snapshot, whole: the one nearly every delta names. The
    /// same `Arc` as the hub's and the store's, so it costs no memory of its own.
    newest: Option<Arc<Snapshot>>,
    /// Seqs of older acknowledged snapshots (at most [`BASES_KEPT`] - 1, oldest first),
    /// read back from the store if named: pipelining agents are rare, and a snapshot
    /// per seq in memory is what a host must not cost.
    older: VecDeque<u64>,
}

impl Bases {
    /// `snapshot` was acknowledged.
    fn acked(&mut self, snapshot: Arc<Snapshot>) {
        let seq = snapshot.seq;
        if let Some(previous) = self.newest.replace(snapshot)
            && previous.seq != seq
        {
            self.older.push_back(previous.seq);
        }
        self.older.retain(|&s| s != seq);
        while self.older.len() >= BASES_KEPT {
            self.older.pop_front();
        }
    }

    /// A delta named `seq`: older acknowledgements are of no use any more.
    fn named(&mut self, seq: u64) {
        self.older.retain(|&s| s >= seq);
    }
}

/// A snapshot from an agent, checked and redacted, ready to store, with its frame's
/// bytes when the store may keep them as they came.
struct Checked {
    snapshot: Arc<Snapshot>,
    sent: Option<Sent>,
}

/// Runs `work` on the blocking pool in one of the decoding turns, with `cost` bytes of
/// the decoding budget (see [`Agents`]); a cost over the whole budget takes all of it.
async fn decoding<T: Send + 'static>(
    state: &AppState,
    cost: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let stopping = |_| "the collector is stopping".to_owned();
    let agents = &state.agents;
    let kib = cost.div_ceil(1024).clamp(1, agents.decode_budget_kib);
    let _bytes = Arc::clone(&agents.decode_kib).acquire_many_owned(kib as u32).await.map_err(stopping)?;
    let _turn = Arc::clone(&agents.decodes).acquire_owned().await.map_err(stopping)?;
    tokio::task::spawn_blocking(work).await.map_err(|e| format!("decoding failed: {e}"))
}

/// What decoding a binary frame may hold in memory: the frame, and what its body may
/// inflate to (as its zstd header says, within [`inflated_limit`]).
fn frame_cost(frame: &[u8]) -> usize {
    let body = frame.get(1..).unwrap_or_default();
    let limit = inflated_limit(body.len());
    let inflated = match zstd::zstd_safe::get_frame_content_size(body) {
        Ok(Some(size)) => size.min(limit),
        _ => limit,
    };
    frame.len().saturating_add(usize::try_from(inflated).unwrap_or(usize::MAX))
}

/// The most a frame body may inflate to, as a multiple of its own size. Real frames are
/// far below it: a keyframe inflates about 5 to 10 times (JSON or MessagePack), a delta
/// less (its few changed processes hold the least repetitive fields), so 256 times only
/// ever stops a frame made to inflate (a few KB of zstd standing for tens of MiB of
/// padding, which would otherwise be inflated, parsed and acknowledged).
/// `real_frames_inflate_far_below_the_ratio` measures it.
pub const MAX_INFLATE_RATIO: u64 = 256;

/// Frames this small may inflate to this much whatever their ratio (what a tiny frame
/// can cost does not matter).
const INFLATE_FLOOR: u64 = 64 << 10;

/// What a frame body of `len` bytes may inflate to: [`MAX_INFLATE_RATIO`] times its size
/// (at least [`INFLATE_FLOOR`]), and never more than a snapshot may be.
fn inflated_limit(len: usize) -> u64 {
    (len as u64).saturating_mul(MAX_INFLATE_RATIO).clamp(INFLATE_FLOOR, MAX_SNAPSHOT_JSON_BYTES)
}

/// What a binary frame holds, decoded.
enum Decoded {
    /// A whole snapshot, with its frame's bytes when they may be stored as they came.
    Full(Box<Snapshot>, Option<Vec<u8>>),
    /// A delta, likewise.
    Delta(Box<SnapshotDelta>, Option<Vec<u8>>),
}

/// Decodes a binary frame, rebuilds the snapshot a delta stands for, checks it and
/// redacts its command lines, on the blocking pool (see [`decoding`]). `Err` is a frame
/// that is not one of ours; `Ok(Err)` the answer for a snapshot that cannot be rebuilt
/// or stored.
async fn decode(
    state: &AppState,
    bytes: axum::body::Bytes,
    hostname: &str,
    bases: &mut Bases,
) -> Result<Result<Checked, CollectorMessage>, String> {
    /// What the first trip to the blocking pool found.
    enum First {
        /// The answer, and the base seq a delta named.
        Done(Result<Checked, CollectorMessage>, Option<u64>),
        /// A delta whose base is not the newest.
        Older(Box<SnapshotDelta>, Option<Vec<u8>>),
    }
    let newest = bases.newest.clone();
    let host = hostname.to_owned();
    // The usual case in one trip: a keyframe, or a delta against the newest base.
    let cost = frame_cost(&bytes);
    let first = decoding(state, cost, move || -> Result<First, String> {
        Ok(match read_frame(&bytes)? {
            Err(reply) => First::Done(Err(reply), None),
            Ok(Decoded::Full(snapshot, body)) => {
                First::Done(check(*snapshot, &host, None, body.map(Sent::Whole)), None)
            }
            Ok(Decoded::Delta(delta, body)) => match newest.filter(|b| delta.fits(b)) {
                Some(base) => {
                    let checked = rebuild_and_check(&delta, &base, &host, body);
                    First::Done(checked, Some(delta.base_seq))
                }
                None => First::Older(delta, body),
            },
        })
    })
    .await??;
    let (delta, body) = match first {
        First::Done(checked, named) => {
            if let Some(seq) = named {
                bases.named(seq);
            }
            return Ok(checked);
        }
        First::Older(delta, body) => (delta, body),
    };
    // A delta against an older acknowledged snapshot: read it back from the store.
    let seq = delta.seq;
    let resync = |message: String| Ok(Err(CollectorMessage::Resync { seq, message }));
    if !bases.older.contains(&delta.base_seq) {
        return resync(format!(
            "snapshot {seq} is a delta against seq {}, which this connection does not hold",
            delta.base_seq
        ));
    }
    let base = match state.store.snapshot_by_seq(hostname, delta.base_seq).await {
        Ok(Some(stored)) if delta.fits(&stored.snapshot) => Arc::new(stored.snapshot),
        Ok(_) => return resync(format!("snapshot {seq}: its base, seq {}, is not stored", delta.base_seq)),
        Err(e) => return resync(format!("snapshot {seq}: its base, seq {}, cannot be read: {e}", delta.base_seq)),
    };
    bases.named(delta.base_seq);
    let host = hostname.to_owned();
    decoding(state, 0, move || rebuild_and_check(&delta, &base, &host, body)).await
}

/// Frames that inflate to more than this have their counts read before they are decoded
/// (see [`read_frame`]). Smaller ones cannot build enough to matter: a 480-process
/// keyframe inflates to about 100 KB.
pub const COUNT_FIRST_BYTES: usize = 1 << 20;

/// Inflates and decodes a binary frame of either protocol, within the bounds of the
/// module doc. `Err`: not a frame of ours. `Ok(Err)`: a frame over the limits, with the
/// answer to send (nothing of it was built).
fn read_frame(frame: &[u8]) -> Result<Result<Decoded, CollectorMessage>, String> {
    let (encoding, delta, body) = match frame.split_first() {
        Some((&FRAME_FULL, rest)) => (Encoding::Json, false, rest),
        Some((&FRAME_DELTA, rest)) => (Encoding::Json, true, rest),
        Some((&FRAME_FULL_PACKED, rest)) => (Encoding::MessagePack, false, rest),
        Some((&FRAME_DELTA_PACKED, rest)) => (Encoding::MessagePack, true, rest),
        Some((kind, _)) => return Err(format!("unknown frame kind {kind}")),
        None => return Err("an empty frame".into()),
    };
    one_frame(body)?;
    let raw = inflate(body)?;
    if raw.len() > COUNT_FIRST_BYTES {
        let counts = if delta { counts::of_delta(encoding, &raw) } else { counts::of_snapshot(encoding, &raw) };
        if let Some(refusal) = counts.map_err(|e| format!("not a snapshot: {e}"))? {
            return Ok(Err(refusal));
        }
    }
    Ok(Ok(if delta {
        let delta: SnapshotDelta = encoding.decode(&raw).map_err(|e| format!("not a snapshot delta: {e}"))?;
        let body = canonical(encoding, &delta, &raw, body);
        Decoded::Delta(Box::new(delta), body)
    } else {
        let snapshot: Snapshot = encoding.decode(&raw).map_err(|e| format!("not a snapshot: {e}"))?;
        let body = canonical(encoding, &snapshot, &raw, body);
        Decoded::Full(Box::new(snapshot), body)
    }))
}

/// The zstd magic number, as it starts a frame on the wire.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Refuses a frame body that is not exactly one zstd frame: skippable frames, a second
/// frame, or bytes after the frame would all be decoded past (zstd skips them) yet stored
/// with the row when its bytes are kept as they came.
fn one_frame(body: &[u8]) -> Result<(), String> {
    if body.get(..4) != Some(&ZSTD_MAGIC[..]) {
        return Err("not a zstd frame (a frame body must be one zstd frame, without skippable frames)".into());
    }
    match zstd::zstd_safe::find_frame_compressed_size(body) {
        Ok(size) if size == body.len() => Ok(()),
        Ok(size) => Err(format!(
            "{} bytes follow the zstd frame; a frame body must be one zstd frame and nothing else",
            body.len() - size
        )),
        Err(_) => Err("not a zstd frame (truncated or damaged)".into()),
    }
}

/// A writer that only counts what is written to it.
struct Counted(usize);

impl std::io::Write for Counted {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Slack allowed between what a frame inflates to and the same value encoded again:
/// an encoder of another version may lay a value out a little differently.
fn canonical_slack(len: usize) -> usize {
    len / 16 + 256
}

/// The frame's bytes if the store may keep them as they came, or `None` for the store to
/// encode the value itself: bytes that inflate to much more than the value they decode to
/// (fields nobody reads, bytes after the value, white space), or that are much larger
/// than the value compressed (left uncompressed on purpose), would make the stored row
/// far larger than what it holds. Legitimate agents encode exactly this, so they keep
/// their bytes; the value is compressed again only when the frame looks uncompressed.
fn canonical<T: serde::Serialize>(encoding: Encoding, value: &T, raw: &[u8], body: &[u8]) -> Option<Vec<u8>> {
    // Counted, not built: this runs for every frame.
    let mut counted = Counted(0);
    match encoding {
        Encoding::Json => serde_json::to_writer(&mut counted, value).ok()?,
        Encoding::MessagePack => rmp_serde::encode::write_named(&mut counted, value).ok()?,
    }
    let canonical_len = counted.0;
    if raw.len() > canonical_len + canonical_slack(canonical_len) {
        return None;
    }
    // Snapshots compress about tenfold; a body over a quarter of its value is checked.
    if body.len() > canonical_len / 4 + 256 {
        let again = encoding.encode(value).ok()?;
        let compressed = zstd::bulk::compress(&again, crate::model::agent::ZSTD_LEVEL).ok()?;
        if body.len() > compressed.len() + canonical_slack(compressed.len()) {
            return None;
        }
    }
    Some(body.to_vec())
}

/// Decompresses a frame's zstd bytes, within [`inflated_limit`] of their size: a frame
/// whose header claims more is refused unread, and one whose header says nothing (or
/// lies) is refused once it has inflated past the limit: what is inflated is counted,
/// the header is never taken at its word.
fn inflate(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let limit = inflated_limit(bytes.len());
    let too_big = || {
        if limit < MAX_SNAPSHOT_JSON_BYTES {
            format!(
                "a frame of {} bytes expands to more than {MAX_INFLATE_RATIO} times its size; real snapshots \
                 compress far less",
                bytes.len()
            )
        } else {
            format!("a snapshot expands to more than {} MiB", MAX_SNAPSHOT_JSON_BYTES >> 20)
        }
    };
    if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(bytes) {
        if size > limit {
            return Err(too_big());
        }
        // Into a buffer of the size claimed, which decompression never grows.
        if let Ok(inflated) = zstd::bulk::decompress(bytes, size as usize) {
            return Ok(inflated);
        }
        // A header that lies about the size: read it as a stream, as below.
    }
    let mut out = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(
            zstd::stream::read::Decoder::new(bytes).map_err(|e| format!("not a zstd frame: {e}"))?,
            limit + 1,
        ),
        &mut out,
    )
    .map_err(|e| format!("not a zstd frame: {e}"))?;
    if out.len() as u64 > limit {
        return Err(too_big());
    }
    Ok(out)
}

/// Process and socket counts read from a frame's encoding without building the values
/// (serde's `IgnoredAny` skips each element; MessagePack states a list's length up
/// front), to refuse a frame over the limits before decoding it.
mod counts {
    use serde::Deserialize;
    use serde::de::{self, IgnoredAny, SeqAccess, Visitor};

    use super::super::upload::{MAX_CONNECTIONS, MAX_PROCESSES};
    use crate::model::agent::{CollectorMessage, Encoding};

    /// The length of a list.
    #[derive(Default)]
    pub(super) struct Count(usize);

    impl<'de> Deserialize<'de> for Count {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Count, D::Error> {
            struct Counting;
            impl<'de> Visitor<'de> for Counting {
                type Value = Count;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a list")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
                    let mut n = 0;
                    while seq.next_element::<IgnoredAny>()?.is_some() {
                        n += 1;
                    }
                    Ok(Count(n))
                }
            }
            d.deserialize_seq(Counting)
        }
    }

    #[derive(Deserialize)]
    struct Whole {
        #[serde(default)]
        seq: u64,
        #[serde(default)]
        processes: Count,
        #[serde(default)]
        connections: Count,
    }

    #[derive(Deserialize, Default)]
    struct Added {
        #[serde(default)]
        added: Count,
    }

    #[derive(Deserialize)]
    struct Delta {
        #[serde(default)]
        seq: u64,
        #[serde(default)]
        processes: Added,
        #[serde(default)]
        connections: Added,
    }

    /// The answer for a snapshot with more processes or sockets than an upload may
    /// have (the same words as the upload check's), if it has.
    fn refusal(seq: u64, processes: usize, connections: usize) -> Option<CollectorMessage> {
        let message = if processes > MAX_PROCESSES {
            format!("More than {MAX_PROCESSES} processes in one upload.")
        } else if connections > MAX_CONNECTIONS {
            format!("More than {MAX_CONNECTIONS} sockets in one upload.")
        } else {
            return None;
        };
        Some(CollectorMessage::Rejected { seq, message })
    }

    /// A whole snapshot's counts: its refusal, if it is over the limits.
    pub(super) fn of_snapshot(encoding: Encoding, raw: &[u8]) -> Result<Option<CollectorMessage>, String> {
        let w: Whole = encoding.decode(raw)?;
        Ok(refusal(w.seq, w.processes.0, w.connections.0))
    }

    /// A delta's counts: what it adds is in the snapshot it rebuilds, so adding more than
    /// the limit is over it, whatever the base.
    pub(super) fn of_delta(encoding: Encoding, raw: &[u8]) -> Result<Option<CollectorMessage>, String> {
        let d: Delta = encoding.decode(raw)?;
        Ok(refusal(d.seq, d.processes.added.0, d.connections.added.0))
    }

    /// A text message's counts, when it is a snapshot.
    pub(super) fn of_text(text: &str) -> Result<Option<CollectorMessage>, String> {
        #[derive(Deserialize)]
        struct Text {
            snapshot: Option<Whole>,
        }
        let t: Text = serde_json::from_str(text).map_err(|e| e.to_string())?;
        Ok(t.snapshot.and_then(|w| refusal(w.seq, w.processes.0, w.connections.0)))
    }
}

/// Rebuilds the snapshot `delta` stands for from `base`, then [`check`]s it. The resync
/// to answer if the delta does not fit its base (a damaged or forged delta is never
/// stored; a keyframe of that seq will be).
fn rebuild_and_check(
    delta: &SnapshotDelta,
    base: &Arc<Snapshot>,
    hostname: &str,
    body: Option<Vec<u8>>,
) -> Result<Checked, CollectorMessage> {
    let seq = delta.seq;
    let snapshot = delta.apply(base).map_err(|e| CollectorMessage::Resync { seq, message: e.to_string() })?;
    let sent = body.map(|bytes| Sent::Delta { base: Arc::clone(base), bytes });
    check(snapshot, hostname, Some(delta), sent)
}

/// Checks a snapshot from `hostname`'s agent like an upload and redacts it, ready to
/// store. A snapshot rebuilt from `delta` is checked and redacted where the delta
/// changed it (see [`upload::pids_to_check`]): the rest is its base's, which passed the
/// same checks when it was stored.
///
/// `sent` (the frame's bytes) goes to the store only if redaction changed nothing: a
/// command line it masks makes the bytes say something else than what is stored. Then
/// a delta is encoded again, redacted the same way; a whole snapshot the store encodes.
fn check(
    mut snapshot: Snapshot,
    hostname: &str,
    delta: Option<&SnapshotDelta>,
    sent: Option<Sent>,
) -> Result<Checked, CollectorMessage> {
    let seq = snapshot.seq;
    if snapshot.host.hostname != hostname {
        return Err(CollectorMessage::Rejected {
            seq,
            message: format!("This session is for host `{hostname}`, not `{}`.", snapshot.host.hostname),
        });
    }
    let to_check = delta.map(upload::pids_to_check);
    let checked = |pid: u32| to_check.as_ref().is_none_or(|t| t.contains(&pid));
    if let Err(e) = upload::validate_where(&snapshot, |p| checked(p.pid)) {
        return Err(CollectorMessage::Rejected { seq, message: e.parts().1.message });
    }
    // Only a process the delta adds or whose command line it changes has a line that
    // was not redacted already.
    let to_redact: Option<std::collections::HashSet<u32>> = delta.map(|d| {
        let changed = d.processes.changed.iter().filter(|c| c.cmd.is_some()).map(|c| c.pid);
        d.processes.added.iter().map(|p| p.item.pid).chain(changed).collect()
    });
    let mut masked = false;
    if to_redact.as_ref().is_none_or(|r| !r.is_empty()) {
        for p in snapshot.processes.iter_mut().filter(|p| to_redact.as_ref().is_none_or(|r| r.contains(&p.pid))) {
            if matches!(crate::sample::redact::redact(&p.cmd), std::borrow::Cow::Owned(_)) {
                crate::sample::redact::redact_in_place(&mut p.cmd);
                masked = true;
            }
        }
    }
    let sent = match (sent, delta) {
        (sent, _) if !masked => sent,
        (Some(Sent::Delta { base, .. }), Some(delta)) => redacted(delta).map(|bytes| Sent::Delta { base, bytes }),
        _ => None,
    };
    Ok(Checked { snapshot: Arc::new(snapshot), sent })
}

/// `delta` with its command lines redacted, encoded as a packed frame's body is.
fn redacted(delta: &SnapshotDelta) -> Option<Vec<u8>> {
    let mut delta = delta.clone();
    for p in &mut delta.processes.added {
        crate::sample::redact::redact_in_place(&mut p.item.cmd);
    }
    for c in &mut delta.processes.changed {
        if let Some(cmd) = &mut c.cmd {
            crate::sample::redact::redact_in_place(cmd);
        }
    }
    let mut frame = delta_frame(&delta, Encoding::MessagePack).ok()?;
    frame.remove(0);
    Some(frame)
}

/// Parses a text frame on the blocking pool (it may hold a whole snapshot), its counts
/// first when it is large (see [`read_frame`]).
async fn parse_text(state: &AppState, text: axum::extract::ws::Utf8Bytes) -> Result<AgentMessage, String> {
    // Parsed, a text is at most a few times its size: counted twice.
    decoding(state, text.len().saturating_mul(2), move || {
        if text.len() > COUNT_FIRST_BYTES
            && let Some(CollectorMessage::Rejected { message, .. }) = counts::of_text(&text)?
        {
            return Err(message);
        }
        serde_json::from_str::<AgentMessage>(&text).map_err(|e| format!("not a message: {e}"))
    })
    .await?
}

fn bad_frame(count: &mut u32, message: String) -> CollectorMessage {
    *count += 1;
    CollectorMessage::Error { code: "bad_frame".into(), message }
}

/// Stores a checked snapshot like [`store`] and, once it is acknowledged, keeps it as
/// the session's newest delta base: the very snapshot stored and published, redacted,
/// which is what the agent's next delta applies to (redaction never changes what a
/// delta names a process by).
async fn store_base(state: &AppState, checked: Checked, bases: &mut Bases) -> CollectorMessage {
    let base = Arc::clone(&checked.snapshot);
    let reply = store(state, checked).await;
    if matches!(reply, CollectorMessage::Ack { .. }) {
        bases.acked(base);
    }
    reply
}

/// Stores one checked snapshot from an agent; the answer to send back.
async fn store(state: &AppState, checked: Checked) -> CollectorMessage {
    let seq = checked.snapshot.seq;
    let hostname = checked.snapshot.host.hostname.clone();
    match state.ingest_sent(checked.snapshot, checked.sent).await {
        Ok(_) => CollectorMessage::Ack { seq },
        // Refused for what it is (a 4xx): sending it again would not help.
        Err(e) if e.parts().0.is_client_error() => CollectorMessage::Rejected { seq, message: e.parts().1.message },
        // Not stored, and the store logs a full disk once a minute rather than per frame.
        // `unavailable` is what agents end their session on, keeping their spool and
        // backing off before they send again.
        Err(e @ super::error::ApiError::StorageFull { .. }) => {
            CollectorMessage::Error { code: "unavailable".into(), message: e.parts().1.message }
        }
        Err(e) => {
            // Not stored and not the agent's fault: no ack, so it will be sent again.
            let (_, body) = e.parts();
            tracing::error!(%hostname, seq, "cannot store an agent's snapshot: {e:?}");
            CollectorMessage::Error { code: "unavailable".into(), message: body.message }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame of `kind` holding `value` in MessagePack.
    fn packed(kind: u8, value: &serde_json::Value) -> Vec<u8> {
        let mut frame = vec![kind];
        frame.extend(zstd::bulk::compress(&rmp_serde::to_vec_named(value).unwrap(), 1).unwrap());
        frame
    }

    /// `len` hexadecimal digits that do not compress much (a linear congruential
    /// sequence from `seed`).
    fn noise(len: usize, seed: u64) -> String {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                char::from_digit(((x >> 60) & 0xF) as u32, 16).unwrap_or('0')
            })
            .collect()
    }

    #[test]
    fn frames_over_the_counts_are_refused_before_they_are_built() {
        // More processes than an upload may have, each padded so that the frame is large
        // enough to be counted first, and none of them a process at all: a frame that was
        // decoded would fail as garbage instead of being refused for its count.
        // (Padded with noise: a frame that compresses too well is refused before it is
        // counted; see `a_frame_made_to_inflate_is_refused_while_it_inflates`.)
        let many: Vec<_> =
            (0..=upload::MAX_PROCESSES).map(|i| serde_json::json!({ "padding": noise(64, i as u64) })).collect();
        let delta = serde_json::json!({ "seq": 9, "processes": { "added": many, "changed": [], "removed": [] } });
        let refused = |frame: &[u8]| match read_frame(frame) {
            Ok(Err(CollectorMessage::Rejected { seq, message })) => (seq, message),
            Ok(Ok(_)) => panic!("decoded"),
            Ok(Err(other)) => panic!("{other:?}"),
            Err(e) => panic!("read as garbage: {e}"),
        };
        let (seq, message) = refused(&packed(FRAME_DELTA_PACKED, &delta));
        assert_eq!((seq, message.as_str()), (9, "More than 20000 processes in one upload."));
        let whole = serde_json::json!({ "seq": 4, "processes": delta["processes"]["added"] });
        assert_eq!(refused(&packed(FRAME_FULL_PACKED, &whole)).0, 4);
        // The JSON frames of the previous protocol are counted the same way.
        let mut json = vec![FRAME_DELTA];
        json.extend(zstd::bulk::compress(delta.to_string().as_bytes(), 1).unwrap());
        assert_eq!(refused(&json).0, 9);
        // Within the counts, such a frame is decoded, and is garbage.
        let few = serde_json::json!({ "seq": 9, "processes": { "added": [{ "padding": noise(2 << 20, 7) }] } });
        assert!(read_frame(&packed(FRAME_DELTA_PACKED, &few)).is_err());
        // A frame whose header claims more than a snapshot may expand to is not inflated.
        let bomb = zstd::bulk::compress(&vec![0u8; MAX_SNAPSHOT_JSON_BYTES as usize + 1], 1).unwrap();
        assert!(inflate(&bomb).unwrap_err().contains("expands to more than"));
    }

    #[test]
    fn a_frame_made_to_inflate_is_refused_while_it_inflates() {
        // Tens of MiB of JSON padding in a few KB of zstd, streamed so that the header
        // says nothing of the size: refused as a bad frame, not inflated, parsed and acked.
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 19).unwrap();
        let pad = vec![b' '; 1 << 20];
        std::io::Write::write_all(&mut encoder, br#"{"seq": 1, "padding": ""#).unwrap();
        for _ in 0..60 {
            std::io::Write::write_all(&mut encoder, &pad).unwrap();
        }
        std::io::Write::write_all(&mut encoder, br#""}"#).unwrap();
        let body = encoder.finish().unwrap();
        assert!(body.len() < 16 << 10, "{} bytes", body.len());
        assert!(matches!(zstd::zstd_safe::get_frame_content_size(&body), Ok(None)));
        for kind in [FRAME_FULL, FRAME_DELTA, FRAME_FULL_PACKED, FRAME_DELTA_PACKED] {
            let frame = [&[kind][..], &body].concat();
            let e = read_frame(&frame).err().expect("a bomb was decoded");
            assert!(e.contains("more than 256 times its size"), "{e}");
            // What it is allowed to cost is bounded by its size as well.
            assert!(frame_cost(&frame) <= frame.len() + (body.len() * 256).max(64 << 10));
        }
        // A header that claims as much is refused unread.
        let claimed = zstd::bulk::compress(&vec![b' '; 8 << 20], 19).unwrap();
        assert!(inflate(&claimed).unwrap_err().contains("256 times"));
    }

    #[test]
    fn real_frames_inflate_far_below_the_ratio() {
        let mut sampler = crate::sample::Sampler::new(Default::default());
        let first = sampler.sample();
        std::thread::sleep(Duration::from_millis(200));
        let next = sampler.sample();
        let delta = SnapshotDelta::between(&first, &next);
        let spooled = crate::model::agent::encode_snapshot(&next).unwrap();
        for encoding in [Encoding::Json, Encoding::MessagePack] {
            let frames = [
                ("keyframe", crate::model::agent::full_frame(&spooled, &next, encoding).unwrap()),
                ("delta", delta_frame(&delta, encoding).unwrap()),
            ];
            for (what, frame) in frames {
                let body = &frame[1..];
                let ratio = inflate(body).unwrap().len() as f64 / body.len() as f64;
                eprintln!("{encoding:?} {what}: {} bytes inflate {ratio:.1} times", body.len());
                assert!(ratio < (MAX_INFLATE_RATIO / 8) as f64, "{encoding:?} {what}: {ratio:.1} times");
                assert!(read_frame(&frame).is_ok_and(|r| r.is_ok()), "{encoding:?} {what}");
            }
        }
    }

    /// The bytes a frame's body would be stored as: `Some` as they came, `None` encoded
    /// again by the store.
    fn kept(frame: &[u8]) -> Result<Option<Vec<u8>>, String> {
        match read_frame(frame)? {
            Ok(Decoded::Delta(_, body) | Decoded::Full(_, body)) => Ok(body),
            Err(reply) => Err(format!("{reply:?}")),
        }
    }

    #[test]
    fn only_canonical_frame_bytes_are_kept_as_they_came() {
        let mut sampler = crate::sample::Sampler::new(Default::default());
        let first = sampler.sample();
        let next = sampler.sample();
        let delta = SnapshotDelta::between(&first, &next);
        let frame = delta_frame(&delta, Encoding::MessagePack).unwrap();
        // What an agent sends is kept, byte for byte.
        assert_eq!(kept(&frame).unwrap().as_deref(), Some(&frame[1..]));
        let spooled = crate::model::agent::encode_snapshot(&next).unwrap();
        let whole = crate::model::agent::full_frame(&spooled, &next, Encoding::MessagePack).unwrap();
        assert_eq!(kept(&whole).unwrap().as_deref(), Some(&whole[1..]));

        let with_body = |body: &[u8]| [&[FRAME_DELTA_PACKED][..], body].concat();
        let packed = rmp_serde::to_vec_named(&delta).unwrap();
        let zstd = |raw: &[u8]| zstd::bulk::compress(raw, 1).unwrap();
        // A skippable frame (magic 0x184D2A50, little-endian) before or after the frame,
        // bytes after it, or a second frame: refused, nothing stored.
        let skippable = [&[0x50, 0x2A, 0x4D, 0x18][..], &(1u32 << 20).to_le_bytes(), &vec![0u8; 1 << 20]].concat();
        let cases = [
            ("skippable first", [&skippable[..], &zstd(&packed)].concat(), "skippable"),
            ("skippable after", [&zstd(&packed)[..], &skippable].concat(), "follow the zstd frame"),
            ("trailing bytes", [&zstd(&packed)[..], &vec![7u8; 4096]].concat(), "follow the zstd frame"),
            ("a second frame", [zstd(&packed), zstd(&vec![b'x'; 1 << 20])].concat(), "follow the zstd frame"),
        ];
        for (what, body, says) in cases {
            let e = kept(&with_body(&body)).err().unwrap_or_else(|| panic!("{what}: accepted"));
            assert!(e.contains(says), "{what}: {e}");
        }
        // Inside the frame: bytes after the value, or a field nobody reads, decode to the
        // same delta; they are not kept, so the store encodes the value itself.
        // (Padding kept under the inflation floor, so that the ratio rule, which a small
        // delta of a quiet machine would trip with more, is not what refuses it.)
        let mut trailing = packed.clone();
        trailing.extend(std::iter::repeat_n(0xC0u8, 40_000));
        assert_eq!(kept(&with_body(&zstd(&trailing))).unwrap(), None);
        assert!(packed[0] & 0xF0 == 0x80 && packed[0] < 0x8F, "a small map: {:x}", packed[0]);
        let mut unknown = packed.clone();
        unknown[0] += 1;
        unknown.extend(rmp_serde::to_vec(&"padding").unwrap());
        unknown.extend(rmp_serde::to_vec(&"x".repeat(40_000)).unwrap());
        assert!(matches!(read_frame(&with_body(&zstd(&unknown))), Ok(Ok(Decoded::Delta(_, None)))));
        // A whole snapshot left uncompressed on purpose (a valid zstd frame of raw blocks,
        // ten times the size of the value compressed): the same.
        let raw_blocks = |data: &[u8]| {
            // Single segment, a 4-byte content size, then blocks of type raw.
            let mut f = [&ZSTD_MAGIC[..], &[0xA0], &(data.len() as u32).to_le_bytes()].concat();
            let chunks: Vec<&[u8]> = data.chunks(1 << 16).collect();
            for (i, chunk) in chunks.iter().enumerate() {
                let header = ((chunk.len() as u32) << 3) | u32::from(i + 1 == chunks.len());
                f.extend_from_slice(&header.to_le_bytes()[..3]);
                f.extend_from_slice(chunk);
            }
            f
        };
        let uncompressed = raw_blocks(&rmp_serde::to_vec_named(&next).unwrap());
        assert_eq!(inflate(&uncompressed).unwrap(), rmp_serde::to_vec_named(&next).unwrap());
        let frame = [&[FRAME_FULL_PACKED][..], &uncompressed].concat();
        assert!(matches!(read_frame(&frame), Ok(Ok(Decoded::Full(_, None)))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_are_decoded_one_per_core_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("procyon.db")).await.unwrap();
        let auth = super::super::auth::Auth::new(b"a test signing key of 32 bytes!!", Duration::from_secs(60));
        let state = AppState::new(store, crate::hub::Hub::new(), auth, super::super::Settings::default());
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let now = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..cores * 4 {
            let (state, now, peak) = (state.clone(), Arc::clone(&now), Arc::clone(&peak));
            tasks.spawn(async move {
                decoding(&state, 0, move || {
                    let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(running, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(50));
                    now.fetch_sub(1, Ordering::SeqCst);
                })
                .await
                .unwrap();
            });
        }
        while tasks.join_next().await.is_some() {}
        assert_eq!(peak.load(Ordering::SeqCst), cores);
    }
}

/// Fuzz targets for the collector's side of the agent channel: any binary frame goes
/// through the steps a session takes (one zstd frame, inflation, counts, decoding, then
/// the checks, and a delta's rebuild against a real base) to a snapshot fit to store or
/// an answer, never a panic; and whatever is accepted passes the upload checks whole.
/// See `crate::fuzzing`.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzzing::{config, json_value, mutated_bytes, mutated_json};
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// Two real snapshots of this machine a moment apart (a dozen processes and sockets
    /// each), made once.
    fn real() -> &'static (Arc<Snapshot>, Snapshot) {
        static REAL: OnceLock<(Arc<Snapshot>, Snapshot)> = OnceLock::new();
        REAL.get_or_init(|| {
            let mut sampler = crate::sample::Sampler::new(Default::default());
            let trim = |mut s: Snapshot| {
                s.processes.truncate(12);
                s.connections.truncate(12);
                s
            };
            let a = trim(sampler.sample());
            let mut b = trim(sampler.sample());
            b.seq = a.seq + 1;
            b.processes.retain(|p| p.pid % 3 != 0);
            (Arc::new(a), b)
        })
    }

    /// `v` as a frame of `kind`. For the packed kinds, a value that reads as the frame's
    /// type goes as an agent would encode that (a JSON value's floats, times and
    /// addresses are laid out otherwise in MessagePack, so it would never decode); any
    /// other goes as it is.
    fn payload(v: &serde_json::Value, kind: u8) -> Vec<u8> {
        let typed = match kind {
            FRAME_FULL_PACKED => {
                serde_json::from_value::<Snapshot>(v.clone()).ok().map(|s| rmp_serde::to_vec_named(&s))
            }
            FRAME_DELTA_PACKED => {
                serde_json::from_value::<SnapshotDelta>(v.clone()).ok().map(|d| rmp_serde::to_vec_named(&d))
            }
            _ => None,
        };
        let raw = match typed {
            Some(packed) => packed.unwrap(),
            None if kind >= FRAME_FULL_PACKED => rmp_serde::to_vec_named(v).unwrap(),
            None => serde_json::to_vec(v).unwrap(),
        };
        let mut frame = vec![kind];
        frame.extend_from_slice(&zstd::bulk::compress(&raw, 1).unwrap());
        frame
    }

    /// What a session does with a frame from the host of [`real`], with the checks every
    /// outcome must pass.
    fn session(frame: &[u8]) -> Result<(), TestCaseError> {
        session_on(frame, &real().0)
    }

    /// [`session`] on a connection whose newest acknowledged snapshot is `base`.
    fn session_on(frame: &[u8], base: &Arc<Snapshot>) -> Result<(), TestCaseError> {
        let hostname = base.host.hostname.as_str();
        let _ = frame_cost(frame);
        let checked = match read_frame(frame) {
            Err(message) => {
                prop_assert!(!message.is_empty());
                return Ok(());
            }
            Ok(Err(_refusal)) => return Ok(()),
            Ok(Ok(Decoded::Full(snapshot, body))) => check(*snapshot, hostname, None, body.map(Sent::Whole)),
            Ok(Ok(Decoded::Delta(delta, body))) => {
                if !delta.fits(base) {
                    return Ok(());
                }
                rebuild_and_check(&delta, base, hostname, body)
            }
        };
        if let Ok(checked) = checked {
            // Stored as it is: it must be what an upload could store.
            let whole = upload::validate(&checked.snapshot);
            prop_assert!(whole.is_ok(), "an agent's snapshot stored that an upload could not: {:?}", whole.err());
        }
        Ok(())
    }

    fn kind() -> impl Strategy<Value = u8> {
        prop_oneof![4 => 0u8..4, 1 => any::<u8>()]
    }

    /// The real keyframe (`i` 0) or delta (1) as a frame of `kind`, encoded from the typed
    /// value (a JSON value's floats are all f64, which MessagePack does not narrow).
    fn real_frame(i: usize, kind: u8) -> Vec<u8> {
        let (a, b) = real();
        let encoding = if kind >= FRAME_FULL_PACKED { Encoding::MessagePack } else { Encoding::Json };
        let raw = if i == 0 {
            encoding.encode(&**a).unwrap()
        } else {
            encoding.encode(&SnapshotDelta::between(a, b)).unwrap()
        };
        let mut frame = vec![kind];
        frame.extend_from_slice(&zstd::bulk::compress(&raw, 1).unwrap());
        frame
    }

    /// The real keyframe and delta, as JSON values to change.
    fn real_values() -> Vec<serde_json::Value> {
        let (a, b) = real();
        vec![serde_json::to_value(&**a).unwrap(), serde_json::to_value(SnapshotDelta::between(a, b)).unwrap()]
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_frame(frame in prop::collection::vec(any::<u8>(), 0..256)) {
            session(&frame)?;
        }

        #[test]
        fn any_json_value_in_a_frame(kind in kind(), v in json_value()) {
            session(&payload(&v, kind))?;
        }

        /// The real keyframe (kinds 0 and 2) and delta (1 and 3) with fields changed.
        #[test]
        fn real_frames_with_fields_changed(
            packed in any::<bool>(),
            (is_delta, v) in (0usize..2).prop_flat_map(|i| (Just(i == 1), mutated_json(real_values()[i].clone()))),
        ) {
            let kind = match (is_delta, packed) {
                (false, false) => FRAME_FULL,
                (true, false) => FRAME_DELTA,
                (false, true) => FRAME_FULL_PACKED,
                (true, true) => FRAME_DELTA_PACKED,
            };
            session(&payload(&v, kind))?;
        }

        #[test]
        fn real_frames_with_bytes_changed(
            frame in (0usize..2, 0u8..2).prop_flat_map(|(i, packed)| {
                let kind = if i == 1 { FRAME_DELTA } else { FRAME_FULL } + 2 * packed;
                mutated_bytes(real_frame(i, kind))
            }),
        ) {
            session(&frame)?;
        }

        /// Deltas that mostly fit their base (`model::delta`'s), in frames of both
        /// encodings: they reach the rebuild, the checks and redaction.
        #[test]
        fn fitting_deltas_in_frames(delta in crate::model::delta::fuzz::fitting_delta(), packed in any::<bool>()) {
            static BASE: OnceLock<Arc<Snapshot>> = OnceLock::new();
            let base = BASE.get_or_init(|| Arc::new(crate::model::delta::fuzz::real().0.clone()));
            let (encoding, kind) = if packed { (Encoding::MessagePack, FRAME_DELTA_PACKED) } else { (Encoding::Json, FRAME_DELTA) };
            let mut frame = vec![kind];
            frame.extend_from_slice(&zstd::bulk::compress(&encoding.encode(&delta).unwrap(), 1).unwrap());
            session_on(&frame, base)?;
        }

        #[test]
        fn any_counts(kind in kind(), v in json_value()) {
            let json = serde_json::to_vec(&v).unwrap();
            let packed = rmp_serde::to_vec_named(&v).unwrap();
            let encoding = if kind >= FRAME_FULL_PACKED { Encoding::MessagePack } else { Encoding::Json };
            let raw = if encoding == Encoding::Json { &json } else { &packed };
            let _ = counts::of_snapshot(encoding, raw);
            let _ = counts::of_delta(encoding, raw);
            let _ = counts::of_text(&String::from_utf8_lossy(&json));
        }
    }

    #[test]
    fn the_real_frames_are_stored() {
        let (a, b) = real();
        for (i, kind) in [(0, FRAME_FULL), (1, FRAME_DELTA), (0, FRAME_FULL_PACKED), (1, FRAME_DELTA_PACKED)] {
            let Ok(Ok(decoded)) = read_frame(&real_frame(i, kind)) else { panic!("kind {kind}") };
            let host = &a.host.hostname;
            let checked = match decoded {
                Decoded::Full(s, body) => check(*s, host, None, body.map(Sent::Whole)),
                Decoded::Delta(d, body) => rebuild_and_check(&d, a, host, body),
            };
            let Ok(checked) = checked else { panic!("kind {kind} refused") };
            // As sent, but for command lines redaction masks (this machine's may hold some).
            let sent = if i == 0 { &**a } else { b };
            assert_eq!((checked.snapshot.seq, checked.snapshot.processes.len()), (sent.seq, sent.processes.len()));
        }
    }
}
