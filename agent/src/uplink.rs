//! The uplink: sends spooled snapshots to the collector, in order, until each is
//! acknowledged, and carries out the process actions the collector relays.
//!
//! Normally over one WebSocket (`/ws/agent`). If the upgrade is refused by something
//! other than the collector's key check (a proxy that does not pass WebSockets, say),
//! it falls back to `POST /api/process-snapshots/` for a while, then tries the WebSocket
//! again. Between attempts it waits with jittered exponential backoff, capped, so a
//! fleet of agents does not reconnect in lockstep after an outage.
//!
//! Each connection starts with a keyframe (the whole snapshot); after that a snapshot
//! goes as a delta against the newest one the collector acknowledged on this connection,
//! with a keyframe every [`KEYFRAME_EVERY`] snapshots as a safety net and whenever the
//! collector asks for one (`resync`, e.g. when it restarted and lost its bases).
//!
//! Snapshots leave the spool only when the collector acknowledges (or rejects) them, so
//! an outage or a crash of either side loses nothing; the collector stores each
//! (host, seq) once, so a resend never duplicates.
//!
//! The agent may know several collectors of one fleet (they share one database). It
//! stays on one and moves to the next in the list, cycling, when that one is
//! unreachable: a connection that cannot be made (refused, a TLS failure, no answer
//! within [`CONNECT_TIMEOUT`]), a 5xx answer, or a collector that says it is
//! unavailable. A session that worked and then dropped is retried on the same collector
//! first (a restart is over in seconds); only when that reconnect fails does the agent
//! move. A refusal (the key, the host's binding, the protocol) moves it on as well,
//! since another collector may be configured differently, but when every collector in
//! the list has refused in a row the agent waits the longest backoff before the next
//! round, as with one collector. Moving needs nothing special: what is not
//! acknowledged is still in the spool and goes to the next collector oldest first, and
//! what one collector acknowledged left the spool and is never sent again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use procyon::control::{self, Target};
use procyon::model::agent::{
    ActionDone, ActionReply, ActionRequest, AgentMessage, BASES_KEPT, CollectorMessage, DetailsReply, DetailsRequest,
    Encoding, KEYFRAME_EVERY, MAX_FRAME_BYTES, OLDEST_PROTOCOL, PROTOCOL_VERSION, delta_frame, full_frame,
};
use procyon::model::delta::SnapshotDelta;
use procyon::model::{ActionError, ActionErrorCode, HostInfo, Snapshot};
use tokio::sync::{Notify, mpsc, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::spool::Spool;

/// Snapshots sent and not yet acknowledged, at most.
const WINDOW: usize = 16;
/// How long to wait for `welcome`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the connection (TCP, TLS and the WebSocket upgrade) may take: a collector
/// whose machine is gone, or a firewall that drops packets, otherwise holds the agent
/// for minutes (the system's TCP timeout), or for ever once the TCP handshake is done.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the REST fallback lasts before the WebSocket is tried again.
const REST_FALLBACK: Duration = Duration::from_secs(300);
/// Keep-alive ping, so dead connections are noticed and proxies keep idle ones open.
const PING_EVERY: Duration = Duration::from_secs(30);
/// No message at all for this long means the connection is dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(90);

/// How the uplink reaches its collector.
#[derive(Clone, Debug)]
pub struct Options {
    /// The collectors, `http://host:port` or `https://host:port` (a path prefix is
    /// kept), in the order they are tried; at least one. Our TLS settings apply to each.
    pub collectors: Vec<String>,
    /// The API key.
    pub key: String,
    /// Carry out relayed process actions.
    pub allow_control: bool,
    /// Always use REST uploads, never the WebSocket.
    pub rest_only: bool,
    /// This machine's fingerprint, sent in the hello (`procyon::sample::machine`).
    pub machine_id: Option<String>,
    /// The host's labels, sent in the hello (`--label`).
    pub labels: procyon::model::labels::Labels,
    /// How far above this agent's own last seq the collector's `last_seq` may be and
    /// still be adopted ([`seq_leeway`]).
    pub seq_leeway: u64,
    /// Our own TLS settings (a private CA, pins); `None`: the system's roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// How far the collector's `last_seq` may run ahead of this agent's own and still be
/// taken as this agent's history: every snapshot its spool can hold (its state file may
/// lag behind what it sent, after a crash or a power cut), plus a day of intervals.
/// Anything further ahead was not numbered by this agent.
pub fn seq_leeway(interval: Duration, spool_max_age: Duration) -> u64 {
    const DAY: Duration = Duration::from_secs(86_400);
    let span = spool_max_age.saturating_add(DAY).as_secs_f64();
    (span / interval.as_secs_f64().max(0.001)).ceil() as u64
}

/// The WebSocket's read buffer. What the collector sends is small (acks, the odd action
/// request); tungstenite zero-fills the whole buffer before every read, and at its
/// default of 128 KiB that was an eighth of the agent's own instructions per tick.
/// A larger message still arrives whole: the buffer grows for it.
const READ_BUFFER: usize = 4 * 1024;

/// The uplink's WebSocket settings.
fn websocket_config() -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(MAX_FRAME_BYTES);
    config.max_frame_size = Some(MAX_FRAME_BYTES);
    config.read_buffer_size = READ_BUFFER;
    config
}

/// How a session ended.
#[derive(Debug, PartialEq)]
enum End {
    /// The spool is empty (only when asked to stop there).
    Drained,
    /// Told to stop.
    Stopped,
    /// The connection failed or dropped: try again after a while.
    Disconnected(String),
    /// The collector refused the key: retrying soon will not help.
    Refused(String),
    /// The collector will never accept this agent as it is (protocol version).
    Fatal(String),
    /// Something between us refused the WebSocket upgrade: use REST.
    NoWebSocket(String),
    /// An older collector refused this protocol: connect again speaking the older one.
    Downgrade(String),
}

/// Sends what the spool holds to the collector.
pub struct Uplink {
    options: Options,
    host: HostInfo,
    spool: Arc<Mutex<Spool>>,
    fresh: Arc<Notify>,
    http: reqwest::Client,
    /// Set when the current session has delivered something: the backoff restarts.
    delivered: bool,
    /// Set when the current session reached the collector (welcomed, or a REST upload
    /// answered): if it drops, the same collector is tried again before moving on.
    reached: bool,
    /// The index in [`Options::collectors`] of the collector in use.
    current: usize,
    /// What the current WebSocket session has sent.
    sent: Sent,
    /// The agent protocol spoken: [`PROTOCOL_VERSION`], or [`OLDEST_PROTOCOL`] to a
    /// collector that refused the newer one (until this agent restarts).
    protocol: u32,
}

/// Frames sent in one WebSocket session, for its closing log line.
#[derive(Debug, Default)]
struct Sent {
    keyframes: u64,
    keyframe_bytes: u64,
    deltas: u64,
    delta_bytes: u64,
    resyncs: u64,
}

/// The delta state of one WebSocket session.
#[derive(Default)]
struct Deltas {
    /// The newest snapshot the collector acknowledged on this connection.
    base: Option<Arc<Snapshot>>,
    /// Deltas sent since the last keyframe.
    since_keyframe: u32,
}

/// Locks the spool; its operations are short, and a panic elsewhere leaves it usable.
pub fn lock(spool: &Mutex<Spool>) -> MutexGuard<'_, Spool> {
    spool.lock().unwrap_or_else(|p| p.into_inner())
}

impl Uplink {
    /// An uplink for `host` reading `spool`; `fresh` is notified after each push.
    pub fn new(
        options: Options,
        host: HostInfo,
        spool: Arc<Mutex<Spool>>,
        fresh: Arc<Notify>,
    ) -> anyhow::Result<Uplink> {
        let http = http_client(options.tls.as_deref())?;
        Ok(Uplink {
            options,
            host,
            spool,
            fresh,
            http,
            delivered: false,
            reached: false,
            current: 0,
            sent: Sent::default(),
            protocol: PROTOCOL_VERSION,
        })
    }

    /// The collector in use.
    fn collector(&self) -> &str {
        self.options.collectors.get(self.current).map_or("", String::as_str)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.collector().trim_end_matches('/'))
    }

    /// Goes on to the next collector of the list (the first after the last) and returns
    /// it. Each collector is spoken to afresh: the newest protocol first.
    fn move_on(&mut self) -> String {
        self.current = (self.current + 1) % self.options.collectors.len().max(1);
        self.protocol = PROTOCOL_VERSION;
        self.collector().to_owned()
    }

    /// Sends until the spool is empty, then returns, trying each collector in turn; an
    /// error if none could be reached or each refused. For `--once`.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        let count = self.options.collectors.len();
        let mut failures = Vec::new();
        for index in 0..count {
            self.current = index;
            self.protocol = PROTOCOL_VERSION;
            match self.flush_here().await {
                Ok(()) => return Ok(()),
                Err(e) if count == 1 => return Err(e),
                Err(e) => {
                    tracing::warn!(collector = %self.collector(), "{e:#}");
                    failures.push(format!("{}: {e:#}", self.collector()));
                }
            }
        }
        anyhow::bail!("no collector stored the snapshots: {}", failures.join("; "))
    }

    /// [`Uplink::flush`] to the collector in use.
    async fn flush_here(&mut self) -> anyhow::Result<()> {
        let (_stop_tx, stop) = watch::channel(false);
        let end = if self.options.rest_only {
            self.rest(true, stop.clone()).await
        } else {
            self.websocket(true, stop.clone()).await
        };
        let end = match end {
            End::NoWebSocket(why) => {
                tracing::warn!("the WebSocket upgrade was refused ({why}); uploading over REST");
                self.rest(true, stop).await
            }
            other => other,
        };
        match end {
            End::Drained => Ok(()),
            End::Stopped => Ok(()),
            End::Disconnected(why) => anyhow::bail!("cannot reach the collector: {why}"),
            End::Refused(why) | End::Fatal(why) | End::NoWebSocket(why) | End::Downgrade(why) => anyhow::bail!(why),
        }
    }

    /// Sends for as long as it runs, reconnecting after outages and moving between the
    /// collectors of the list (see the module's docs), until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut rest_until: Option<Instant> = None;
        let count = self.options.collectors.len();
        // Refusals in a row: when each collector of the list has refused, the agent
        // waits the longest backoff, as it does with a single collector.
        let mut refusals = 0;
        loop {
            self.delivered = false;
            self.reached = false;
            let use_rest = self.options.rest_only || rest_until.is_some_and(|t| Instant::now() < t);
            let end =
                if use_rest { self.rest(false, stop.clone()).await } else { self.websocket(false, stop.clone()).await };
            if self.delivered {
                backoff.reset();
            }
            let from = self.collector().to_owned();
            let wait = match end {
                End::Drained | End::Stopped => return,
                End::NoWebSocket(why) => {
                    tracing::warn!("the WebSocket upgrade was refused ({why}); uploading over REST for a while");
                    rest_until = Some(Instant::now() + REST_FALLBACK);
                    continue;
                }
                End::Disconnected(why) if count == 1 || self.reached => {
                    refusals = 0;
                    let wait = backoff.next();
                    tracing::warn!(
                        collector = %from,
                        "collector unreachable: {why}; retrying in {:.1} s",
                        wait.as_secs_f64()
                    );
                    wait
                }
                End::Disconnected(why) => {
                    refusals = 0;
                    let wait = backoff.next();
                    let to = self.move_on();
                    rest_until = None;
                    tracing::warn!(
                        from = %from,
                        to = %to,
                        "collector {from} unreachable: {why}; moving to collector {to} in {:.1} s",
                        wait.as_secs_f64()
                    );
                    wait
                }
                End::Refused(why) => {
                    let what = format!("the collector refused this agent: {why}");
                    self.after_refusal(what, &mut refusals, &mut backoff, &mut rest_until)
                }
                End::Fatal(why) | End::Downgrade(why) => {
                    self.after_refusal(why, &mut refusals, &mut backoff, &mut rest_until)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Logs a refusal (`what`) by the collector in use and returns how long to wait:
    /// with several collectors it moves on to the next, and once each has refused in a
    /// row it waits the longest backoff, as with one collector.
    fn after_refusal(
        &mut self,
        what: String,
        refusals: &mut usize,
        backoff: &mut Backoff,
        rest_until: &mut Option<Instant>,
    ) -> Duration {
        let from = self.collector().to_owned();
        let count = self.options.collectors.len();
        *refusals += 1;
        if count == 1 {
            tracing::error!("{what}");
            return backoff.max();
        }
        let (wait, every) = if *refusals >= count {
            *refusals = 0;
            (backoff.max(), true)
        } else {
            (backoff.next(), false)
        };
        let to = self.move_on();
        *rest_until = None;
        if every {
            tracing::error!(
                from = %from,
                to = %to,
                "collector {from}: {what}; each collector of the list has refused this agent in turn, moving to \
                 collector {to} in {} s",
                wait.as_secs()
            );
        } else {
            tracing::error!(
                from = %from,
                to = %to,
                "collector {from}: {what}; moving to collector {to} in {:.1} s",
                wait.as_secs_f64()
            );
        }
        wait
    }

    fn hello(&self) -> String {
        let hello = AgentMessage::Hello {
            protocol: self.protocol,
            agent_version: env!("CARGO_PKG_VERSION").into(),
            host: self.host.clone(),
            allow_control: self.options.allow_control,
            machine_id: self.options.machine_id.clone(),
            details: true,
            labels: self.options.labels.clone(),
        };
        serde_json::to_string(&hello).unwrap_or_default()
    }

    /// Sends the dropped count, if any, so the collector's operator learns of the hole.
    fn take_dropped(&self) -> Option<String> {
        let dropped = lock(&self.spool).take_dropped();
        (dropped > 0).then(|| {
            tracing::warn!(dropped, "the spool dropped the oldest snapshots to stay within its limits");
            let message = AgentMessage::Dropped { count: dropped, reason: "the agent's spool was full".into() };
            serde_json::to_string(&message).unwrap_or_default()
        })
    }

    async fn websocket(&mut self, until_empty: bool, stop: watch::Receiver<bool>) -> End {
        self.sent = Sent::default();
        let mut end = self.websocket_session(until_empty, stop.clone()).await;
        self.end_live();
        if let End::Downgrade(why) = end {
            tracing::warn!("{why}; speaking agent protocol {OLDEST_PROTOCOL} to this collector");
            self.protocol = OLDEST_PROTOCOL;
            end = self.websocket_session(until_empty, stop).await;
            self.end_live();
        }
        let Sent { keyframes, keyframe_bytes, deltas, delta_bytes, resyncs } = self.sent;
        if keyframes + deltas > 0 {
            tracing::info!(keyframes, keyframe_bytes, deltas, delta_bytes, resyncs, "session ended");
        }
        end
    }

    /// The session is over: what the spool held in memory for its acks goes to disk.
    fn end_live(&self) {
        if let Err(e) = lock(&self.spool).set_live(false) {
            tracing::error!("cannot write the spool: {e:#}");
        }
    }

    /// The frame for `seq`: a delta against the acknowledged base when the collector
    /// surely still holds it, else a keyframe. With the snapshot, kept as the next base
    /// once acknowledged.
    fn frame(&mut self, seq: u64, deltas: &mut Deltas, unanswered: usize) -> anyhow::Result<(Vec<u8>, Arc<Snapshot>)> {
        let mut spool = lock(&self.spool);
        // Not there: dropped by the limits meanwhile, or set aside as unreadable.
        let Some(snapshot) = spool.snapshot(seq)? else { anyhow::bail!("snapshot {seq} is not in the spool") };
        let base = deltas.base.as_ref().filter(|_| unanswered < BASES_KEPT && deltas.since_keyframe < KEYFRAME_EVERY);
        let frame = match base {
            Some(base) => {
                let frame =
                    delta_frame(&SnapshotDelta::between(base, &snapshot), Encoding::of_protocol(self.protocol))?;
                deltas.since_keyframe += 1;
                self.sent.deltas += 1;
                self.sent.delta_bytes += frame.len() as u64;
                frame
            }
            None => {
                let frame = full_frame(&spool.read(seq)?, &snapshot, Encoding::of_protocol(self.protocol))?;
                deltas.since_keyframe = 0;
                self.sent.keyframes += 1;
                self.sent.keyframe_bytes += frame.len() as u64;
                frame
            }
        };
        Ok((frame, snapshot))
    }

    async fn websocket_session(&mut self, until_empty: bool, mut stop: watch::Receiver<bool>) -> End {
        let base = self.collector().trim_end_matches('/').to_owned();
        let ws_base = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            return End::Fatal(format!("the collector URL `{base}` must start with http:// or https://"));
        };
        let mut request = match format!("{ws_base}/ws/agent").into_client_request() {
            Ok(r) => r,
            Err(e) => return End::Fatal(format!("bad collector URL: {e}")),
        };
        match format!("Api-Key {}", self.options.key).parse() {
            Ok(v) => {
                request.headers_mut().insert("Authorization", v);
            }
            Err(_) => return End::Fatal("the API key holds characters that cannot be sent in a header".into()),
        }
        let config = websocket_config();
        let connector = self.options.tls.clone().map(tokio_tungstenite::Connector::Rustls);
        let connecting = tokio_tungstenite::connect_async_tls_with_config(request, Some(config), false, connector);
        let Ok(connected) = tokio::time::timeout(CONNECT_TIMEOUT, connecting).await else {
            return End::Disconnected(explain(format!(
                "the connection timed out: no answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            )));
        };
        let mut ws = match connected {
            Ok((ws, _)) => ws,
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status();
                let body =
                    response.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
                let message = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("HTTP {status}"));
                return if status == 401 || status == 403 {
                    End::Refused(message)
                } else if status.is_server_error() {
                    // The collector, or the proxy in front of it, is up but cannot serve
                    // (a 502 from a proxy whose collector is gone, a 503 while busy):
                    // unreachable, not a proxy that does not pass WebSockets.
                    End::Disconnected(message)
                } else {
                    End::NoWebSocket(format!("HTTP {status}"))
                };
            }
            Err(e) => return End::Disconnected(explain(crate::tls::describe(&e))),
        };

        // Hello, then wait for welcome.
        if let Err(e) = ws.send(Message::Text(self.hello().into())).await {
            return End::Disconnected(e.to_string());
        }
        let welcome = tokio::time::timeout(WELCOME_TIMEOUT, ws.next()).await;
        let last_seq = match welcome {
            Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str::<CollectorMessage>(&text) {
                Ok(CollectorMessage::Welcome { last_seq, .. }) => last_seq,
                Ok(CollectorMessage::Error { code, message }) if code == "protocol_mismatch" => {
                    return if self.protocol > OLDEST_PROTOCOL { End::Downgrade(message) } else { End::Fatal(message) };
                }
                Ok(CollectorMessage::Error { message, .. }) => return End::Refused(message),
                _ => return End::Disconnected("the collector did not welcome us".into()),
            },
            Ok(Some(Ok(Message::Close(frame)))) => {
                return End::Disconnected(frame.map(|f| f.reason.to_string()).unwrap_or_else(|| "closed".into()));
            }
            Ok(Some(Err(e))) => return End::Disconnected(e.to_string()),
            _ => return End::Disconnected("no welcome from the collector in time".into()),
        };
        // The collector may know a higher seq (this agent's state was lost): continue
        // above it, or new snapshots would be taken for duplicates; unless it is too
        // far above to be this agent's.
        if let Err(e) = welcome_seq(&mut lock(&self.spool), last_seq, self.options.seq_leeway) {
            return End::Fatal(format!("cannot update the spool: {e:#}"));
        }
        self.reached = true;
        tracing::info!(collector = %base, last_seq, "connected");
        // From here on acks arrive: new snapshots wait for theirs in memory.
        if let Err(e) = lock(&self.spool).set_live(true) {
            tracing::warn!("cannot mark the spool live, so every snapshot is written: {e:#}");
        }

        // Both under one lock, so a push in between cannot fall through the gap.
        let (pending, newest) = {
            let spool = lock(&self.spool);
            (spool.pending(), spool.last_seq())
        };
        let mut queue: BTreeSet<u64> = pending.into_iter().collect();
        let mut queued_up_to = newest;
        // Sent and not yet answered, with the snapshot each stands for.
        let mut in_flight: BTreeMap<u64, Arc<Snapshot>> = BTreeMap::new();
        // A new connection: the collector holds no base for us yet.
        let mut deltas = Deltas::default();
        // Answers to relayed requests (actions and details), read on blocking threads.
        let (reply_tx, mut replies) = mpsc::channel::<AgentMessage>(16);
        let mut ping = tokio::time::interval(PING_EVERY);
        let mut heard_at = Instant::now();
        loop {
            if let Some(report) = self.take_dropped()
                && let Err(e) = ws.send(Message::Text(report.into())).await
            {
                return End::Disconnected(e.to_string());
            }
            // Fill the window, oldest first.
            while in_flight.len() < WINDOW {
                let Some(seq) = queue.pop_first() else { break };
                match self.frame(seq, &mut deltas, in_flight.len()) {
                    Ok((frame, snapshot)) => {
                        if let Err(e) = ws.send(Message::Binary(frame.into())).await {
                            return End::Disconnected(e.to_string());
                        }
                        in_flight.insert(seq, snapshot);
                    }
                    // Dropped by the spool's limits or set aside meanwhile: nothing to
                    // send. A read error is tried again in the next session.
                    Err(_) => continue,
                }
            }
            if until_empty && in_flight.is_empty() && queue.is_empty() {
                let _ = ws.close(None).await;
                return End::Drained;
            }
            tokio::select! {
                message = ws.next() => {
                    heard_at = Instant::now();
                    let text = match message {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(frame))) => {
                            return End::Disconnected(frame.map(|f| f.reason.to_string()).unwrap_or_else(|| "closed".into()));
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return End::Disconnected(e.to_string()),
                        None => return End::Disconnected("the connection closed".into()),
                    };
                    match serde_json::from_str::<CollectorMessage>(&text) {
                        Ok(CollectorMessage::Ack { seq }) => {
                            if let Some(snapshot) = in_flight.remove(&seq)
                                && deltas.base.as_ref().is_none_or(|b| b.seq < seq)
                            {
                                deltas.base = Some(snapshot);
                            }
                            self.delivered = true;
                            if let Err(e) = lock(&self.spool).remove(seq) {
                                tracing::warn!(seq, "cannot remove an acknowledged snapshot from the spool: {e}");
                            }
                        }
                        Ok(CollectorMessage::Rejected { seq, message }) => {
                            tracing::warn!(seq, %message, "the collector rejected a snapshot; dropping it");
                            in_flight.remove(&seq);
                            let _ = lock(&self.spool).remove(seq);
                        }
                        Ok(CollectorMessage::Resync { seq, message }) => {
                            // Nothing was stored: send it again, whole.
                            tracing::info!(seq, %message, "the collector asked for a keyframe");
                            self.sent.resyncs += 1;
                            if in_flight.remove(&seq).is_some() {
                                queue.insert(seq);
                            }
                            deltas.base = None;
                        }
                        Ok(CollectorMessage::Action(request)) => {
                            let tx = reply_tx.clone();
                            let allow = self.options.allow_control;
                            tokio::task::spawn_blocking(move || {
                                let reply = carry_out(request, allow);
                                let _ = tx.blocking_send(AgentMessage::ActionResult(reply));
                            });
                        }
                        Ok(CollectorMessage::Details(request)) => {
                            // Read-only, so answered whatever `--allow-control` says.
                            let tx = reply_tx.clone();
                            tokio::task::spawn_blocking(move || {
                                let _ = tx.blocking_send(AgentMessage::DetailsResult(read_details(request)));
                            });
                        }
                        Ok(CollectorMessage::Error { code, message }) => {
                            tracing::warn!(%code, %message, "the collector reported an error");
                            if code == "unavailable" {
                                // It cannot store: another collector of the list may.
                                self.reached = false;
                                return End::Disconnected(message);
                            }
                        }
                        Ok(CollectorMessage::Welcome { .. }) => {}
                        Err(e) => tracing::warn!("unreadable message from the collector: {e}"),
                    }
                }
                () = self.fresh.notified() => {
                    // New snapshots were pushed: queue those after what we have.
                    let last = lock(&self.spool).last_seq();
                    queue.extend(queued_up_to + 1..=last);
                    queued_up_to = queued_up_to.max(last);
                }
                Some(reply) = replies.recv() => {
                    let text = serde_json::to_string(&reply).unwrap_or_default();
                    if let Err(e) = ws.send(Message::Text(text.into())).await {
                        return End::Disconnected(e.to_string());
                    }
                }
                _ = ping.tick() => {
                    if heard_at.elapsed() > SILENCE_LIMIT {
                        return End::Disconnected("no answer from the collector".into());
                    }
                    if let Err(e) = ws.send(Message::Ping(Vec::new().into())).await {
                        return End::Disconnected(e.to_string());
                    }
                }
                _ = stop.changed() => {
                    let _ = ws.close(None).await;
                    return End::Stopped;
                }
            }
        }
    }

    async fn rest(&mut self, until_empty: bool, mut stop: watch::Receiver<bool>) -> End {
        let started = Instant::now();
        let url = self.url("/api/process-snapshots/");
        loop {
            let pending = lock(&self.spool).pending();
            for seq in pending {
                // An unreadable one is set aside by the spool; a read error is retried.
                let Ok(Some(snapshot)) = lock(&self.spool).snapshot(seq) else { continue };
                let Ok(body) = serde_json::to_vec(&*snapshot) else { continue };
                let mut request = self
                    .http
                    .post(&url)
                    .header("Authorization", format!("Api-Key {}", self.options.key))
                    .header("Content-Type", "application/json");
                // The collector binds the host to this machine; uploads prove it as the
                // WebSocket's hello does.
                if let Some(machine_id) = &self.options.machine_id {
                    request = request.header("Procyon-Machine-Id", machine_id);
                }
                let sent = request.body(body).send().await;
                let response = match sent {
                    Ok(r) => r,
                    Err(e) => return End::Disconnected(explain(crate::tls::describe(&e))),
                };
                let status = response.status().as_u16();
                let message = response
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("HTTP {status}"));
                match status {
                    200 | 201 => {
                        self.delivered = true;
                        self.reached = true;
                        let _ = lock(&self.spool).remove(seq);
                    }
                    401 | 403 => return End::Refused(message),
                    400 | 413 | 422 => {
                        tracing::warn!(seq, %message, "the collector rejected a snapshot; dropping it");
                        let _ = lock(&self.spool).remove(seq);
                    }
                    _ => return End::Disconnected(message),
                }
            }
            if let Some(report) = self.take_dropped() {
                // REST has no message for this; the log line above is the report.
                drop(report);
            }
            if until_empty {
                return End::Drained;
            }
            if !self.options.rest_only && started.elapsed() > REST_FALLBACK {
                // Not a failure: the WebSocket is tried again on this same collector.
                self.reached = true;
                return End::Disconnected("trying the WebSocket again".into());
            }
            tokio::select! {
                () = self.fresh.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = stop.changed() => return End::Stopped,
            }
        }
    }
}

/// The REST client, with our TLS settings when there are any. An error rather than a
/// client without them: falling back to the defaults would quietly trust other CAs.
/// A connection failure in words, with what is likely wrong and what to try: the
/// libraries' own messages ("received corrupt message of type InvalidContentType",
/// "Handshake not finished") say what broke, not why.
pub fn explain(why: String) -> String {
    let lower = why.to_ascii_lowercase();
    let hint = if lower.contains("invalidcontenttype") || lower.contains("corrupt message") {
        "the collector at this address speaks plain HTTP, not TLS: use http:// (with --insecure-http if it runs \
         on another machine), or give the collector a certificate with --tls-cert and --tls-key"
    } else if lower.contains("handshake not finished")
        || lower.contains("connection reset")
        || lower.contains("unexpected eof")
        || lower.contains("httparse")
        || lower.contains("invalid http")
    {
        "what answers at this address is not a Procyon collector, or it expected TLS: check the host and the \
         port (a collector listens on 7450 unless --bind says otherwise), and use https:// if it serves TLS"
    } else if lower.contains("connection refused") {
        "nothing listens at this address: check that `procyon serve` runs there, on this port"
    } else if lower.contains("dns error") || lower.contains("failed to lookup") || lower.contains("name or service") {
        "this host name does not resolve: check its spelling, or use the collector's IP address"
    } else if lower.contains("timed out") {
        "no answer: a firewall may be dropping the connection, or the address is wrong"
    } else {
        return why;
    };
    format!("{why} ({hint})")
}

pub fn http_client(tls: Option<&rustls::ClientConfig>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("procyon-agent/", env!("CARGO_PKG_VERSION")))
        .timeout(Duration::from_secs(30));
    if let Some(tls) = tls {
        builder = builder.use_preconfigured_tls(tls.clone());
    }
    builder.build().map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {}", crate::tls::describe(&e)))
}

/// Name of the file that marks a spool as having met a collector.
const MET_COLLECTOR: &str = "met-collector";

/// The highest seq the collector can store: it keeps seqs as signed 64-bit integers.
const MAX_STORABLE_SEQ: u64 = i64::MAX as u64;

/// What the agent makes of the collector's `last_seq` in `welcome`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SeqDecision {
    /// Not above this agent's own: nothing to do.
    Keep,
    /// Above this agent's own by no more than it could have numbered itself: continue
    /// above it.
    Adopt,
    /// Too far above (or not storable): not this agent's numbering. Adopting it would
    /// hand the numbering to whoever wrote that seq (a bad upload, another machine
    /// under this host name); at `i64::MAX` every later snapshot would be unstorable.
    Refuse,
}

/// The decision for the collector's `last_seq` against this agent's `own`, given
/// `leeway` ([`seq_leeway`]).
fn decide_seq(own: u64, collector: u64, leeway: u64) -> SeqDecision {
    if collector <= own {
        SeqDecision::Keep
    } else if collector > MAX_STORABLE_SEQ || collector - own > leeway {
        SeqDecision::Refuse
    } else {
        SeqDecision::Adopt
    }
}

/// Takes the collector's highest stored seq for this host into account.
///
/// Snapshots are numbered by the spool. If its state was lost (a new spool for a host
/// the collector knows), its numbers restart at 1 and would collide with stored ones,
/// which the collector takes for resends and drops. Until a spool has met a collector
/// once, none of its snapshots can have been sent, so any at or below `last_seq` are
/// renumbered above it. After that, such a seq is a resend whose ack was lost, and is
/// left alone.
///
/// A `last_seq` further above the spool's own than `leeway` ([`decide_seq`]) is not
/// adopted: the agent keeps its own numbering and says so; the collector refuses
/// (`rejected`) or resolves the seqs it cannot take.
fn welcome_seq(spool: &mut Spool, last_seq: u64, leeway: u64) -> anyhow::Result<()> {
    let marker = spool.dir().join(MET_COLLECTOR);
    let own = spool.last_seq();
    if decide_seq(own, last_seq, leeway) == SeqDecision::Refuse {
        tracing::warn!(
            collector_last_seq = last_seq,
            own_last_seq = own,
            "the collector's last seq for this host ({last_seq}) is far above this agent's own ({own}), more than \
             {leeway} snapshots ahead or beyond what it can store: keeping this agent's own numbering. Snapshots \
             under that host name that this agent did not send (a bad upload, or another machine using the name) \
             are in the collector's history; an admin should look at this host there"
        );
        if !marker.exists() {
            std::fs::write(&marker, b"")?;
        }
        return spool.clear_provisional();
    }
    // Until a spool has met a collector none of its snapshots can be resends; after a
    // crash in a live session, those from `provisional_from` on cannot be either.
    let fresh_from = if marker.exists() { spool.provisional_from() } else { Some(0) };
    if let Some(fresh_from) = fresh_from {
        // All of them from the first that collides, so that they keep their order.
        let fresh: Vec<u64> = spool.pending().into_iter().filter(|seq| *seq >= fresh_from).collect();
        let colliding = if fresh.first().is_some_and(|seq| *seq <= last_seq) { fresh } else { Vec::new() };
        spool.bump_seq(last_seq)?;
        for old in colliding {
            // Set aside if unreadable: nothing to renumber.
            let Some(snapshot) = spool.snapshot(old)? else { continue };
            let mut snapshot = Snapshot::clone(&snapshot);
            snapshot.seq = spool.last_seq() + 1;
            spool.push(&snapshot)?;
            spool.remove(old)?;
        }
        std::fs::write(&marker, b"")?;
    }
    spool.bump_seq(last_seq)?;
    spool.clear_provisional()
}

/// Carries out a relayed action, if this agent's operator allows it.
/// Reads the details a [`DetailsRequest`] asks for.
fn read_details(request: DetailsRequest) -> DetailsReply {
    let DetailsRequest { request_id, pid, start_time, actor } = request;
    tracing::info!(pid, actor = %actor, "process details requested");
    match procyon::sample::details(pid, start_time) {
        Ok(details) => DetailsReply { request_id, details: Some(Box::new(details)), error: None },
        Err(error) => DetailsReply { request_id, details: None, error: Some(error) },
    }
}

fn carry_out(request: ActionRequest, allow_control: bool) -> ActionReply {
    let ActionRequest { request_id, pid, start_time, action, tree, actor } = request;
    if !allow_control {
        tracing::warn!(%actor, pid, action = action.as_str(), "refused a process action: control is off");
        return ActionReply {
            request_id,
            done: None,
            error: Some(ActionError {
                code: ActionErrorCode::Unsupported,
                message: "This agent does not allow process actions (start it with --allow-control).".into(),
            }),
        };
    }
    // A relayed action names its process by pid and start time, so that a pid reused
    // since the requester's snapshot is refused. The wire type keeps the start time
    // optional (older collectors), so it is required here.
    let Some(start_time) = start_time else {
        tracing::warn!(%actor, pid, action = action.as_str(), "refused a process action without a start time");
        return ActionReply {
            request_id,
            done: None,
            error: Some(ActionError {
                code: ActionErrorCode::PidReused,
                message: format!(
                    "Refused: this agent acts only on a process named by its pid and start time, and the request \
                     for process {pid} has no start time. Give the start_time a snapshot showed for it (for example \
                     ?start_time= on the REST call) and try again."
                ),
            }),
        };
    };
    let target = Target { pid, start_time: Some(start_time) };
    let result = if tree { control::act_tree(target, action) } else { control::act(target, action) };
    match result {
        Ok(outcome) => {
            tracing::info!(%actor, pid, action = action.as_str(), tree, "process action carried out");
            ActionReply {
                request_id,
                done: Some(ActionDone {
                    process_name: outcome.process.name,
                    signalled: outcome.signalled.len() as u32,
                }),
                error: None,
            }
        }
        Err(error) => {
            tracing::warn!(%actor, pid, action = action.as_str(), message = %error.message, "process action failed");
            ActionReply { request_id, done: None, error: Some(error) }
        }
    }
}

/// Exponential backoff with jitter: each wait is between half and all of the current
/// step, and the step doubles up to a cap.
struct Backoff {
    first: Duration,
    cap: Duration,
    step: Duration,
}

impl Backoff {
    fn new(first: Duration, cap: Duration) -> Backoff {
        Backoff { first, cap, step: first }
    }

    fn next(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.cap);
        step / 2 + step.mul_f64(fastrand::f64() / 2.0)
    }

    fn max(&self) -> Duration {
        self.cap
    }

    fn reset(&mut self) {
        self.step = self.first;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn connection_failures_come_with_what_to_try() {
        for (error, says) in [
            ("IO error: received corrupt message of type InvalidContentType", "plain HTTP"),
            ("WebSocket protocol error: Handshake not finished", "not a Procyon collector"),
            ("IO error: Connection refused (os error 111)", "procyon serve"),
        ] {
            assert!(super::explain(error.into()).contains(says), "{error}");
        }
        assert_eq!(super::explain("something else".into()), "something else");
    }

    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_a_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let waits: Vec<Duration> = (0..6).map(|_| b.next()).collect();
        let steps = [1, 2, 4, 8, 8, 8];
        for (wait, step) in waits.iter().zip(steps) {
            let step = Duration::from_secs(step);
            assert!(*wait >= step / 2 && *wait <= step, "{wait:?} within half of {step:?}");
        }
        b.reset();
        assert!(b.next() <= Duration::from_secs(1));
    }

    #[test]
    fn the_leeway_is_the_spool_plus_a_day_of_intervals() {
        let week = Duration::from_secs(7 * 86_400);
        assert_eq!(seq_leeway(Duration::from_secs(2), week), 8 * 86_400 / 2);
        assert_eq!(seq_leeway(Duration::from_millis(200), Duration::from_secs(60)), (86_400 + 60) * 5);
    }

    #[test]
    fn the_collector_s_last_seq_is_adopted_only_when_close_above() {
        const LEEWAY: u64 = 1_000;
        let max = i64::MAX as u64;
        use SeqDecision::*;
        let cases = [
            // (own, collector's, decision)
            (0, 0, Keep),
            (50, 10, Keep),
            (50, 50, Keep),
            (50, 51, Adopt),
            (50, 50 + LEEWAY, Adopt),
            (50, 51 + LEEWAY, Refuse),
            // A wiped spool meets a host the collector knows a little of.
            (0, LEEWAY, Adopt),
            // A short-format upload's seq is its time in milliseconds.
            (120, 1_760_000_000_000, Refuse),
            (max - 10, max, Adopt),
            (max - 10, max + 1, Refuse),
            (max, u64::MAX, Refuse),
            (u64::MAX, u64::MAX, Keep),
        ];
        for (own, collector, decision) in cases {
            assert_eq!(decide_seq(own, collector, LEEWAY), decision, "own {own}, collector {collector}");
        }
    }

    #[test]
    fn a_far_above_last_seq_leaves_the_spool_s_numbering_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool =
            Spool::open(dir.path(), crate::spool::Limits { max_bytes: 1 << 30, max_age: Duration::from_secs(86_400) })
                .unwrap();
        let mut snap = procyon::sample::Sampler::new(Default::default()).sample();
        for seq in 1..=3 {
            snap.seq = seq;
            spool.push(&snap).unwrap();
        }
        welcome_seq(&mut spool, i64::MAX as u64, 1_000).unwrap();
        assert_eq!((spool.last_seq(), spool.pending()), (3, vec![1, 2, 3]), "kept, not renumbered");
        welcome_seq(&mut spool, 1_760_000_000_000, 1_000).unwrap();
        assert_eq!(spool.last_seq(), 3);
        // Close above: continue above it (the spool has met a collector: the pending
        // ones are resends and keep their seqs).
        welcome_seq(&mut spool, 500, 1_000).unwrap();
        assert_eq!((spool.last_seq(), spool.pending()), (500, vec![1, 2, 3]));
        drop(spool);
        let spool =
            Spool::open(dir.path(), crate::spool::Limits { max_bytes: 1 << 30, max_age: Duration::from_secs(86_400) })
                .unwrap();
        assert_eq!(spool.last_seq(), 500, "persisted");
    }

    #[test]
    fn the_read_buffer_is_small_and_frames_stay_bounded() {
        let config = websocket_config();
        // Each read fills the buffer with zeros first: it must stay small.
        assert!(config.read_buffer_size <= 8 * 1024, "{}", config.read_buffer_size);
        assert_eq!((config.max_message_size, config.max_frame_size), (Some(MAX_FRAME_BYTES), Some(MAX_FRAME_BYTES)));
    }

    #[test]
    fn after_a_crash_in_a_live_session_new_snapshots_go_above_what_the_collector_holds() {
        let dir = tempfile::tempdir().unwrap();
        let limits = crate::spool::Limits { max_bytes: 1 << 30, max_age: Duration::from_secs(86_400) };
        let mut spool = Spool::open(dir.path(), limits).unwrap();
        let mut snap = procyon::sample::Sampler::new(Default::default()).sample();
        welcome_seq(&mut spool, 0, 1_000).unwrap();
        // 1 is written and sent, its ack lost; 2 to 4 are acknowledged while live (the
        // collector holds 1 to 4); then the agent is killed.
        snap.seq = 1;
        spool.push(&snap).unwrap();
        spool.set_live(true).unwrap();
        for seq in 2..=4 {
            snap.seq = seq;
            spool.push(&snap).unwrap();
            spool.remove(seq).unwrap();
        }
        // 5 is sent but not acknowledged in time, so it is written when 6 is taken; 6
        // is acknowledged. The collector holds 1 to 6.
        for seq in 5..=6 {
            snap.seq = seq;
            spool.push(&snap).unwrap();
        }
        spool.remove(6).unwrap();
        drop(spool);
        // Restarted, it takes three snapshots before the collector is back.
        let mut spool = Spool::open(dir.path(), limits).unwrap();
        for seq in 6..=8 {
            snap.seq = seq;
            snap.interval_ms = 1_000 + seq;
            spool.push(&snap).unwrap();
        }
        welcome_seq(&mut spool, 6, 1_000).unwrap();
        assert_eq!(spool.pending(), [1, 5, 9, 10, 11], "1 and 5 are resends; the new 6 would be taken for one");
        let moved: Vec<u64> = [9, 10, 11].iter().map(|&s| spool.snapshot(s).unwrap().unwrap().interval_ms).collect();
        assert_eq!(moved, [1_006, 1_007, 1_008], "in order");
        assert_eq!((spool.last_seq(), spool.provisional_from()), (11, None));
    }

    #[test]
    fn the_hello_carries_the_machine_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let limits = crate::spool::Limits { max_bytes: 1 << 20, max_age: Duration::from_secs(3600) };
        let spool = Arc::new(Mutex::new(Spool::open(dir.path(), limits).unwrap()));
        let host = procyon::sample::Sampler::new(Default::default()).host().clone();
        let options = |machine_id: Option<&str>| Options {
            collectors: vec!["http://127.0.0.1:1".into()],
            key: "k".into(),
            allow_control: false,
            rest_only: false,
            machine_id: machine_id.map(str::to_owned),
            labels: Default::default(),
            seq_leeway: 1,
            tls: None,
        };
        for machine_id in [Some("ab".repeat(32)), None] {
            let uplink =
                Uplink::new(options(machine_id.as_deref()), host.clone(), spool.clone(), Default::default()).unwrap();
            match serde_json::from_str(&uplink.hello()).unwrap() {
                AgentMessage::Hello { machine_id: sent, .. } => assert_eq!(sent, machine_id),
                other => panic!("not a hello: {other:?}"),
            }
        }
    }

    /// A collector of the release before protocol 3 on a real socket: it refuses a
    /// newer hello with the `protocol_mismatch` error such a collector sends, and
    /// speaks protocol 2 (JSON frames) to an agent that says protocol 2, rebuilding and
    /// acknowledging every snapshot. Returns the hellos' protocols and the snapshots it
    /// received with their frame kinds.
    async fn older_collector(listener: tokio::net::TcpListener, expected: usize) -> (Vec<u64>, Vec<(u8, Snapshot)>) {
        use procyon::model::agent::{Frame, decode_frame};
        let (mut hellos, mut received) = (Vec::new(), Vec::new());
        while received.len() < expected {
            let (stream, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
            let Some(Ok(Message::Text(hello))) = ws.next().await else { panic!("no hello") };
            let hello: serde_json::Value = serde_json::from_str(&hello).unwrap();
            let protocol = hello["protocol"].as_u64().unwrap();
            hellos.push(protocol);
            if protocol != u64::from(OLDEST_PROTOCOL) {
                let refusal = serde_json::json!({"type": "error", "code": "protocol_mismatch",
                    "message": format!("this collector speaks agent protocol 2, not {protocol}")});
                ws.send(Message::Text(refusal.to_string().into())).await.unwrap();
                let _ = ws.close(None).await;
                continue;
            }
            let welcome = serde_json::json!({"type": "welcome", "protocol": 2, "collector_version": "0.0.9",
                "last_seq": 0});
            ws.send(Message::Text(welcome.to_string().into())).await.unwrap();
            let mut base: Option<Snapshot> = None;
            while received.len() < expected {
                let Some(Ok(message)) = ws.next().await else { break };
                let Message::Binary(bytes) = message else { continue };
                let snapshot = match decode_frame(&bytes).unwrap() {
                    Frame::Full(snapshot) => *snapshot,
                    Frame::Delta(delta) => delta.apply(base.as_ref().unwrap()).unwrap(),
                };
                let ack = serde_json::json!({"type": "ack", "seq": snapshot.seq});
                ws.send(Message::Text(ack.to_string().into())).await.unwrap();
                base = Some(snapshot.clone());
                received.push((bytes[0], snapshot));
            }
        }
        (hellos, received)
    }

    #[test]
    fn a_collector_that_refuses_protocol_3_is_spoken_to_in_protocol_2() {
        use procyon::model::agent::{FRAME_DELTA, FRAME_FULL};
        let dir = tempfile::tempdir().unwrap();
        let limits = crate::spool::Limits { max_bytes: 1 << 30, max_age: Duration::from_secs(86_400) };
        let spool = Arc::new(Mutex::new(Spool::open(dir.path(), limits).unwrap()));
        let mut sampler = procyon::sample::Sampler::new(Default::default());
        let mut taken = Vec::new();
        for seq in 1..=3 {
            let mut snapshot = sampler.sample();
            snapshot.seq = seq;
            lock(&spool).push(&snapshot).unwrap();
            taken.push(snapshot);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let collector = format!("http://{}", listener.local_addr().unwrap());
            let server = tokio::spawn(older_collector(listener, taken.len()));
            let options = Options {
                collectors: vec![collector],
                key: "k".into(),
                allow_control: false,
                rest_only: false,
                machine_id: None,
                labels: Default::default(),
                seq_leeway: 1_000,
                tls: None,
            };
            let host = taken[0].host.clone();
            let mut uplink = Uplink::new(options, host, spool.clone(), Default::default()).unwrap();
            tokio::time::timeout(Duration::from_secs(60), uplink.flush()).await.unwrap().unwrap();
            assert_eq!(uplink.protocol, OLDEST_PROTOCOL, "it stays at protocol 2 with this collector");
            let (hellos, received) = server.await.unwrap();
            assert_eq!(hellos, [u64::from(PROTOCOL_VERSION), u64::from(OLDEST_PROTOCOL)]);
            // Every snapshot once, in order, in JSON frames, exactly as taken.
            assert_eq!(received.iter().map(|(_, s)| s.seq).collect::<Vec<_>>(), [1, 2, 3]);
            assert!(received.iter().all(|(kind, _)| [FRAME_FULL, FRAME_DELTA].contains(kind)), "JSON frames");
            assert_eq!(received[0].0, FRAME_FULL, "a session starts with a keyframe");
            for ((_, got), want) in received.iter().zip(&taken) {
                assert_eq!(got, want);
            }
        });
        assert!(lock(&spool).pending().is_empty(), "each acknowledged snapshot left the spool");
    }

    #[test]
    fn actions_are_refused_when_control_is_off() {
        let request = ActionRequest {
            request_id: 9,
            pid: std::process::id(),
            start_time: None,
            action: procyon::model::ProcessAction::Suspend,
            tree: false,
            actor: "ada".into(),
        };
        let reply = carry_out(request, false);
        assert_eq!(reply.request_id, 9);
        assert_eq!(reply.error.unwrap().code, ActionErrorCode::Unsupported);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_relayed_action_without_a_start_time_is_refused() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let request = |start_time| ActionRequest {
            request_id: 4,
            pid,
            start_time,
            action: procyon::model::ProcessAction::Suspend,
            tree: false,
            actor: "ada".into(),
        };
        let reply = carry_out(request(None), true);
        let error = reply.error.unwrap();
        assert_eq!((reply.request_id, error.code), (4, ActionErrorCode::PidReused));
        assert!(error.message.contains("no start time"), "{}", error.message);
        std::thread::sleep(Duration::from_millis(50));
        let state = || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        assert!(!state().contains(") T "), "untouched: {}", state());
        // With it, the action is carried out.
        let start_time = procyon::sample::identify(pid).unwrap().start_time;
        let reply = carry_out(request(Some(start_time)), true);
        assert_eq!(reply.done.unwrap().signalled, 1, "{:?}", reply.error);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
