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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use procyon::control::{self, Target};
use procyon::model::agent::{
    ActionDone, ActionReply, ActionRequest, AgentMessage, BASES_KEPT, CollectorMessage, KEYFRAME_EVERY,
    MAX_FRAME_BYTES, PROTOCOL_VERSION, delta_frame, full_frame,
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
/// How long the REST fallback lasts before the WebSocket is tried again.
const REST_FALLBACK: Duration = Duration::from_secs(300);
/// Keep-alive ping, so dead connections are noticed and proxies keep idle ones open.
const PING_EVERY: Duration = Duration::from_secs(30);
/// No message at all for this long means the connection is dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(90);

/// How the uplink reaches its collector.
#[derive(Clone, Debug)]
pub struct Options {
    /// `http://host:port` or `https://host:port` (a path prefix is kept).
    pub collector: String,
    /// The API key.
    pub key: String,
    /// Carry out relayed process actions.
    pub allow_control: bool,
    /// Always use REST uploads, never the WebSocket.
    pub rest_only: bool,
    /// Our own TLS settings (a private CA, pins); `None`: the system's roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
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
    /// What the current WebSocket session has sent.
    sent: Sent,
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
        Ok(Uplink { options, host, spool, fresh, http, delivered: false, sent: Sent::default() })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.options.collector.trim_end_matches('/'))
    }

    /// Sends until the spool is empty, then returns; an error if the collector could
    /// not be reached or refused. For `--once`.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
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
            End::Refused(why) | End::Fatal(why) | End::NoWebSocket(why) => anyhow::bail!(why),
        }
    }

    /// Sends for as long as it runs, reconnecting after outages, until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut rest_until: Option<Instant> = None;
        loop {
            self.delivered = false;
            let use_rest = self.options.rest_only || rest_until.is_some_and(|t| Instant::now() < t);
            let end =
                if use_rest { self.rest(false, stop.clone()).await } else { self.websocket(false, stop.clone()).await };
            if self.delivered {
                backoff.reset();
            }
            let wait = match end {
                End::Drained | End::Stopped => return,
                End::NoWebSocket(why) => {
                    tracing::warn!("the WebSocket upgrade was refused ({why}); uploading over REST for a while");
                    rest_until = Some(Instant::now() + REST_FALLBACK);
                    continue;
                }
                End::Disconnected(why) => {
                    let wait = backoff.next();
                    tracing::warn!("collector unreachable: {why}; retrying in {:.1} s", wait.as_secs_f64());
                    wait
                }
                End::Refused(why) => {
                    tracing::error!("the collector refused this agent: {why}");
                    backoff.max()
                }
                End::Fatal(why) => {
                    tracing::error!("{why}");
                    backoff.max()
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
    }

    fn hello(&self) -> String {
        let hello = AgentMessage::Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").into(),
            host: self.host.clone(),
            allow_control: self.options.allow_control,
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
        let end = self.websocket_session(until_empty, stop).await;
        let Sent { keyframes, keyframe_bytes, deltas, delta_bytes, resyncs } = self.sent;
        if keyframes + deltas > 0 {
            tracing::info!(keyframes, keyframe_bytes, deltas, delta_bytes, resyncs, "session ended");
        }
        end
    }

    /// The frame for `seq`: a delta against the acknowledged base when the collector
    /// surely still holds it, else a keyframe. With the snapshot, kept as the next base
    /// once acknowledged.
    fn frame(&mut self, seq: u64, deltas: &mut Deltas, unanswered: usize) -> anyhow::Result<(Vec<u8>, Arc<Snapshot>)> {
        let spool = lock(&self.spool);
        let snapshot = spool.snapshot(seq)?;
        let base = deltas.base.as_ref().filter(|_| unanswered < BASES_KEPT && deltas.since_keyframe < KEYFRAME_EVERY);
        let frame = match base {
            Some(base) => {
                let frame = delta_frame(&SnapshotDelta::between(base, &snapshot))?;
                deltas.since_keyframe += 1;
                self.sent.deltas += 1;
                self.sent.delta_bytes += frame.len() as u64;
                frame
            }
            None => {
                let frame = full_frame(&spool.read(seq)?);
                deltas.since_keyframe = 0;
                self.sent.keyframes += 1;
                self.sent.keyframe_bytes += frame.len() as u64;
                frame
            }
        };
        Ok((frame, snapshot))
    }

    async fn websocket_session(&mut self, until_empty: bool, mut stop: watch::Receiver<bool>) -> End {
        let base = self.options.collector.trim_end_matches('/');
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
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(MAX_FRAME_BYTES);
        config.max_frame_size = Some(MAX_FRAME_BYTES);
        let connector = self.options.tls.clone().map(tokio_tungstenite::Connector::Rustls);
        let connected = tokio_tungstenite::connect_async_tls_with_config(request, Some(config), false, connector).await;
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
                } else {
                    End::NoWebSocket(format!("HTTP {status}"))
                };
            }
            Err(e) => return End::Disconnected(crate::tls::describe(&e)),
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
                    return End::Fatal(message);
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
        // above it, or new snapshots would be taken for duplicates.
        if let Err(e) = welcome_seq(&mut lock(&self.spool), last_seq) {
            return End::Fatal(format!("cannot update the spool: {e:#}"));
        }
        tracing::info!(collector = %self.options.collector, last_seq, "connected");

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
        let (reply_tx, mut replies) = mpsc::channel::<ActionReply>(16);
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
                    // Dropped by the spool's limits meanwhile: nothing to send.
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
                                let _ = tx.blocking_send(reply);
                            });
                        }
                        Ok(CollectorMessage::Error { code, message }) => {
                            tracing::warn!(%code, %message, "the collector reported an error");
                            if code == "unavailable" {
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
                    let text = serde_json::to_string(&AgentMessage::ActionResult(reply)).unwrap_or_default();
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
                let Ok(bytes) = lock(&self.spool).read(seq) else { continue };
                let body = match crate::spool::decode(&bytes).and_then(|s| Ok(serde_json::to_vec(&s)?)) {
                    Ok(body) => body,
                    Err(e) => {
                        tracing::warn!(seq, "unreadable spooled snapshot dropped: {e}");
                        let _ = lock(&self.spool).remove(seq);
                        continue;
                    }
                };
                let sent = self
                    .http
                    .post(&url)
                    .header("Authorization", format!("Api-Key {}", self.options.key))
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let response = match sent {
                    Ok(r) => r,
                    Err(e) => return End::Disconnected(crate::tls::describe(&e)),
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

/// Takes the collector's highest stored seq for this host into account.
///
/// Snapshots are numbered by the spool. If its state was lost (a new spool for a host
/// the collector knows), its numbers restart at 1 and would collide with stored ones,
/// which the collector takes for resends and drops. Until a spool has met a collector
/// once, none of its snapshots can have been sent, so any at or below `last_seq` are
/// renumbered above it. After that, such a seq is a resend whose ack was lost, and is
/// left alone.
fn welcome_seq(spool: &mut Spool, last_seq: u64) -> anyhow::Result<()> {
    let marker = spool.dir().join(MET_COLLECTOR);
    if !marker.exists() {
        let colliding: Vec<u64> = spool.pending().into_iter().filter(|seq| *seq <= last_seq).collect();
        spool.bump_seq(last_seq)?;
        for old in colliding {
            let mut snapshot = crate::spool::decode(&spool.read(old)?)?;
            snapshot.seq = spool.last_seq() + 1;
            spool.push(&snapshot)?;
            spool.remove(old)?;
        }
        std::fs::write(&marker, b"")?;
    }
    spool.bump_seq(last_seq)
}

/// Carries out a relayed action, if this agent's operator allows it.
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
    let target = Target { pid, start_time };
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
}
