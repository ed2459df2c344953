//! This machine, in the app: the collector's state (store, hub, sampler) without a
//! listener, and the window's calls into it.
//!
//! REST requests from the window go into the very router `procyon serve` serves
//! (`tower::ServiceExt::oneshot`, no socket), signed in as the person using the app, so
//! the desktop and the web cannot drift apart: the same handlers check the input, run
//! process actions through `control`, write the audit log and shape the answers. Live
//! snapshots come from the hub, which the one sampler task feeds.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{self, header};
use tauri::ipc::Channel;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::hub::Encoded;
use crate::model::Snapshot;
use crate::model::api::Role;
use crate::model::desktop::{ApiReply, ApiRequest, CommandError, LiveEvent};
use crate::server::AppState;
use crate::server::auth::{CurrentUser, InProcessUser};
use crate::server::ws::{Deltas, stream_message};

/// Longest request path accepted from the window.
const MAX_PATH: usize = 8 * 1024;
/// Largest request body accepted from the window.
const MAX_BODY: usize = 1 << 20;
/// Largest reply carried back (a month's export is well under this).
const MAX_REPLY: usize = 256 << 20;

/// Checks a request from the window: a known method and an `/api/` path. The method is
/// returned parsed.
pub fn check_request(request: &ApiRequest) -> Result<http::Method, CommandError> {
    let invalid = |why: String| CommandError::new("invalid", why);
    let method = match request.method.as_str() {
        "GET" => http::Method::GET,
        "POST" => http::Method::POST,
        "PUT" => http::Method::PUT,
        "PATCH" => http::Method::PATCH,
        "DELETE" => http::Method::DELETE,
        other => return Err(invalid(format!("`{other}` is not a method the app sends."))),
    };
    let path = &request.path;
    if !path.starts_with("/api/")
        || path.len() > MAX_PATH
        || path.contains("/../")
        || path.chars().any(char::is_control)
    {
        return Err(invalid("Only the collector's /api/ paths can be requested.".into()));
    }
    if request.body.as_ref().is_some_and(|b| b.len() > MAX_BODY) {
        return Err(invalid("The request body is too large.".into()));
    }
    Ok(method)
}

/// The error for a reply too large to carry to the window.
pub fn reply_too_big() -> CommandError {
    CommandError::new("invalid", "The answer is too large to show; ask for a shorter time range.")
}

/// This machine's collector, as the window sees it.
pub struct Local {
    state: AppState,
    router: axum::Router,
    username: String,
}

impl Local {
    /// Over a started collector's state; `username` is the person using the app.
    pub fn new(state: AppState, username: String) -> Local {
        let router = crate::server::app(state.clone());
        Local { state, router, username }
    }

    /// The person using the app, as the audit log names them.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The collector's state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Who the window's requests come from. The person at the desktop owns this
    /// machine's session: they act with the app's own OS rights, which the OS still
    /// checks on every signal. They are not an account of the store, so the name is one
    /// no account can have (`:` is not allowed in user names), and the audit log never
    /// mixes them up with a collector user of the same name.
    fn principal(&self) -> InProcessUser {
        InProcessUser(CurrentUser {
            username: format!("desktop:{}", self.username),
            role: Role::Admin,
            generation: 0,
            // Lives as long as the app; streams of the window never expire.
            expires_at: i64::MAX,
        })
    }

    /// Carries one REST request into the collector's router.
    pub async fn api(&self, request: &ApiRequest) -> Result<ApiReply, CommandError> {
        let method = check_request(request)?;
        let internal = |e: String| CommandError::new("internal", e);
        let built = http::Request::builder()
            .method(method)
            .uri(&request.path)
            .extension(self.principal())
            .header(header::CONTENT_TYPE, "application/json")
            .body(request.body.clone().map(Body::from).unwrap_or_else(Body::empty))
            .map_err(|e| CommandError::new("invalid", format!("Bad request: {e}")))?;
        let response = self.router.clone().oneshot(built).await.map_err(|e| internal(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let header =
            |name: header::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let status = parts.status.as_u16();
        let content_type = header(header::CONTENT_TYPE).unwrap_or_default();
        let content_disposition = header(header::CONTENT_DISPOSITION);
        let bytes = axum::body::to_bytes(body, MAX_REPLY).await.map_err(|_| reply_too_big())?;
        Ok(ApiReply { status, content_type, content_disposition, body: String::from_utf8_lossy(&bytes).into_owned() })
    }

    /// Streams snapshots (of `hostname`, or of every host) into `channel`, in the shape
    /// `/ws/process-snapshots/` sends (with `delta`, as its `?delta=1` does: each host's
    /// first snapshot whole, then deltas): what is current first, then each new one.
    /// While `visible` is false nothing is sent (a window hidden in the tray draws
    /// nothing); when it turns true again, the newest is sent at once.
    pub async fn live(
        &self,
        hostname: Option<String>,
        delta: bool,
        channel: Channel<LiveEvent>,
        mut visible: watch::Receiver<bool>,
    ) {
        let end = self.forward(hostname, delta, &channel, &mut visible).await;
        let _ = channel.send(end);
    }

    async fn forward(
        &self,
        hostname: Option<String>,
        delta: bool,
        channel: &Channel<LiveEvent>,
        visible: &mut watch::Receiver<bool>,
    ) -> LiveEvent {
        let only = match hostname {
            Some(h) => match self.state.resolve_host(&h).await {
                Ok(host) => Some(host.hostname),
                Err(e) => return LiveEvent::Closed { code: 1011, reason: e.parts().1.message },
            },
            None => None,
        };
        let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
        let mut feed = self.state.hub.subscribe_all();
        let mut shutdown = self.state.shutdown_signal();
        if channel.send(LiveEvent::Open).is_err() {
            return LiveEvent::Closed { code: 1000, reason: String::new() };
        }
        // The same messages, shared encodings included, as the WebSocket sends.
        let mut deltas = delta.then(Deltas::default);
        let mut send = |id: i64, snapshot: &Arc<Snapshot>, shared: Option<&Encoded>| {
            let text = stream_message(&mut deltas, id, snapshot, shared);
            channel.send(LiveEvent::Message { data: text.to_string() }).is_ok()
        };
        let mut catch_up = true;
        loop {
            if catch_up && *visible.borrow() {
                catch_up = false;
                // What is current for every wanted host: live, or stored if the live view
                // has nothing newer; chosen before anything is decoded, one at a time.
                if let Ok(newest) = self.state.store.newest_per_host().await {
                    for n in newest.into_iter().filter(|n| wanted(&n.hostname)) {
                        let ok = match self.state.hub.latest(&n.hostname) {
                            Some(p) if p.snapshot_id >= n.snapshot_id => {
                                send(p.snapshot_id, &p.snapshot, Some(&p.encoded))
                            }
                            _ => match self.state.store.snapshot(n.snapshot_id).await {
                                Ok(Some(s)) => send(s.id, &Arc::new(s.snapshot), None),
                                _ => continue,
                            },
                        };
                        if !ok {
                            return LiveEvent::Closed { code: 1000, reason: String::new() };
                        }
                    }
                }
            }
            tokio::select! {
                next = feed.recv() => match next {
                    Ok(p) if !wanted(&p.snapshot.host.hostname) => {}
                    Ok(_) if !*visible.borrow() => catch_up = true,
                    Ok(p) => {
                        if !send(p.snapshot_id, &p.snapshot, Some(&p.encoded)) {
                            return LiveEvent::Closed { code: 1000, reason: String::new() };
                        }
                    }
                    Err(RecvError::Lagged(_)) => catch_up = true,
                    Err(RecvError::Closed) => break,
                },
                changed = visible.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    catch_up = true;
                }
                _ = shutdown.changed() => break,
            }
        }
        LiveEvent::Closed { code: 1001, reason: "Procyon is stopping.".into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str) -> ApiRequest {
        ApiRequest { method: method.into(), path: path.into(), body: None }
    }

    #[test]
    fn only_api_paths_and_known_methods_are_carried() {
        assert_eq!(check_request(&request("GET", "/api/servers")).unwrap(), http::Method::GET);
        assert!(check_request(&request("DELETE", "/api/keys/x")).is_ok());
        for (m, p) in [
            ("GET", "/ws/agent"),
            ("GET", "/"),
            ("GET", "http://evil.example/api/x"),
            ("GET", "/api/../etc"),
            ("GET", "/api/x\n"),
            ("TRACE", "/api/servers"),
            ("get", "/api/servers"),
        ] {
            assert_eq!(check_request(&request(m, p)).unwrap_err().code, "invalid", "{m} {p}");
        }
        let mut big = request("POST", "/api/users");
        big.body = Some("x".repeat(MAX_BODY + 1));
        assert!(check_request(&big).is_err());
    }
}
