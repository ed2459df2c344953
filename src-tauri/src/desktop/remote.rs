//! The window over a remote `procyon serve`: REST requests and the live stream go from
//! the app's Rust side, with the token from the OS keyring added here, so the web view
//! never holds it.

use std::sync::Mutex;

use futures_util::StreamExt;
use tauri::ipc::Channel;

use super::credentials::{self, StoredSession};
use super::local::{check_request, reply_too_big};
use crate::model::api::LoginResponse;
use crate::model::desktop::{ApiReply, ApiRequest, CommandError, LiveEvent, RemoteSession};

/// How long a REST call to the remote collector may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Renew the token this long before it expires.
const RENEW_BEFORE_SECS: i64 = 120;
/// Largest reply accepted (a month's export is well under this).
const MAX_REPLY: usize = 256 << 20;

/// `url` reduced to `scheme://host[:port]`, or why it cannot be a collector's address
/// (plain http:// only to this machine): [`crate::server::address`]'s rules.
pub fn base_url(url: &str) -> Result<String, CommandError> {
    crate::server::address::collector_base(url, false, crate::server::address::Asker::Desktop)
        .map_err(|why| CommandError::new("invalid", why))
}

fn unavailable(base: &str, e: impl std::fmt::Display) -> CommandError {
    CommandError::new("unavailable", format!("Cannot reach the collector at {base}: {e}"))
}

/// A signed-in remote collector.
pub struct Remote {
    base: String,
    client: reqwest::Client,
    session: Mutex<StoredSession>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("base", &self.base).finish_non_exhaustive()
    }
}

fn client() -> Result<reqwest::Client, CommandError> {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .user_agent(concat!("procyon-desktop/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| CommandError::new("internal", e.to_string()))
}

impl Remote {
    /// Signs in to the collector at `url` and keeps the token in the keyring.
    pub async fn sign_in(url: &str, username: &str, password: &str) -> Result<Remote, CommandError> {
        let base = base_url(url)?;
        if username.trim().is_empty() || password.is_empty() {
            return Err(CommandError::new("invalid", "Enter a user name and a password."));
        }
        let client = client()?;
        let response = client
            .post(format!("{base}/api/auth/login"))
            .json(&serde_json::json!({ "username": username.trim(), "password": password }))
            .send()
            .await
            .map_err(|e| unavailable(&base, e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| unavailable(&base, e))?;
        if !status.is_success() {
            let message = serde_json::from_str::<crate::model::api::ErrorBody>(&text)
                .map(|b| b.message)
                .unwrap_or_else(|_| format!("the collector answered {status}"));
            let code = if status.as_u16() == 401 || status.as_u16() == 429 { "unauthorized" } else { "unavailable" };
            return Err(CommandError::new(code, message));
        }
        let login: LoginResponse = serde_json::from_str(&text).map_err(|_| {
            CommandError::new("unavailable", format!("{base} did not answer like a Procyon collector."))
        })?;
        let session = StoredSession {
            token: login.token,
            username: login.username,
            role: login.role,
            expires_at: login.expires_at,
        };
        let kept = session.clone();
        let key = base.clone();
        tokio::task::spawn_blocking(move || credentials::save(&key, &kept))
            .await
            .map_err(|e| CommandError::new("internal", e.to_string()))??;
        Ok(Remote { base, client, session: Mutex::new(session) })
    }

    /// The session kept in the keyring for `url`, if it is still valid.
    pub async fn restore(url: &str) -> Result<Option<Remote>, CommandError> {
        let base = base_url(url)?;
        let key = base.clone();
        let kept = tokio::task::spawn_blocking(move || credentials::load(&key))
            .await
            .map_err(|e| CommandError::new("internal", e.to_string()))??;
        Ok(match kept {
            Some(session) if session.expires_at > chrono::Utc::now() + chrono::Duration::seconds(30) => {
                Some(Remote { base, client: client()?, session: Mutex::new(session) })
            }
            _ => None,
        })
    }

    /// Forgets the token (keyring entry deleted).
    pub async fn sign_out(base: String) -> Result<(), CommandError> {
        tokio::task::spawn_blocking(move || credentials::delete(&base))
            .await
            .map_err(|e| CommandError::new("internal", e.to_string()))?
    }

    /// The collector's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn session(&self) -> StoredSession {
        self.session.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Who is signed in, for the window.
    pub fn describe(&self) -> RemoteSession {
        let s = self.session();
        RemoteSession {
            url: self.base.clone(),
            username: s.username,
            role: s.role,
            expires_at: s.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }

    /// Renews the token when it is about to expire: the window in use keeps its session,
    /// up to the collector's longest session (it refuses then, and the token runs out).
    /// Only this side holds the token, so renewing is its business, not the window's.
    async fn renew_if_due(&self) {
        let session = self.session();
        if session.expires_at - chrono::Utc::now() > chrono::Duration::seconds(RENEW_BEFORE_SECS) {
            return;
        }
        let sent = self.client.post(format!("{}/api/auth/refresh", self.base)).bearer_auth(&session.token).send().await;
        let Ok(response) = sent else { return };
        if !response.status().is_success() {
            return;
        }
        let Ok(login) = response.json::<LoginResponse>().await else { return };
        let renewed = StoredSession {
            token: login.token,
            username: login.username,
            role: login.role,
            expires_at: login.expires_at,
        };
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = renewed.clone();
        let key = self.base.clone();
        match tokio::task::spawn_blocking(move || credentials::save(&key, &renewed)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("cannot keep the renewed sign-in in the keyring: {}", e.detail),
            Err(e) => tracing::warn!("cannot keep the renewed sign-in in the keyring: {e}"),
        }
    }

    /// Carries one REST request to the collector.
    pub async fn api(&self, request: &ApiRequest) -> Result<ApiReply, CommandError> {
        let method = check_request(request)?;
        self.renew_if_due().await;
        let method = reqwest::Method::from_bytes(method.as_str().as_bytes())
            .map_err(|e| CommandError::new("invalid", e.to_string()))?;
        let mut call =
            self.client.request(method, format!("{}{}", self.base, request.path)).bearer_auth(self.session().token);
        if let Some(body) = &request.body {
            call = call.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.clone());
        }
        let response = call.send().await.map_err(|e| unavailable(&self.base, e))?;
        let header = |name: reqwest::header::HeaderName| {
            response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
        };
        let status = response.status().as_u16();
        let content_type = header(reqwest::header::CONTENT_TYPE).unwrap_or_default();
        let content_disposition = header(reqwest::header::CONTENT_DISPOSITION);
        if response.content_length().is_some_and(|n| n > MAX_REPLY as u64) {
            return Err(reply_too_big());
        }
        let bytes = response.bytes().await.map_err(|e| unavailable(&self.base, e))?;
        if bytes.len() > MAX_REPLY {
            return Err(reply_too_big());
        }
        Ok(ApiReply { status, content_type, content_disposition, body: String::from_utf8_lossy(&bytes).into_owned() })
    }

    /// Streams the collector's live WebSocket for `hostname` into `channel` until either
    /// side ends. Reconnecting is the window's business (it retries with backoff).
    pub async fn live(&self, hostname: Option<String>, delta: bool, channel: Channel<LiveEvent>) {
        let end = self.forward(hostname, delta, &channel).await;
        let _ = channel.send(end);
    }

    async fn forward(&self, hostname: Option<String>, delta: bool, channel: &Channel<LiveEvent>) -> LiveEvent {
        let failed = |reason: String| LiveEvent::Closed { code: 1011, reason };
        let Ok(mut url) = reqwest::Url::parse(&format!("{}/ws/process-snapshots/", self.base)) else {
            return failed("bad collector address".into());
        };
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        if url.set_scheme(scheme).is_err() {
            return failed("bad collector address".into());
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(h) = &hostname {
                q.append_pair("hostname", h);
            }
            if delta {
                q.append_pair("delta", "1");
            }
        }
        // The token goes in a header, never in the URL (which proxies log).
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let Ok(mut request) = url.as_str().into_client_request() else {
            return failed("bad collector address".into());
        };
        let Ok(bearer) = format!("Bearer {}", self.session().token).parse() else {
            return failed("the stored sign-in is not a valid header".into());
        };
        request.headers_mut().insert(axum::http::header::AUTHORIZATION, bearer);
        let socket = match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => socket,
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status().as_u16() == 401 => {
                return LiveEvent::Closed { code: 4001, reason: "The sign-in has expired.".into() };
            }
            Err(e) => return failed(unavailable(&self.base, e).detail),
        };
        if channel.send(LiveEvent::Open).is_err() {
            return failed("window gone".into());
        }
        let (_, mut incoming) = socket.split();
        use tokio_tungstenite::tungstenite::Message;
        while let Some(message) = incoming.next().await {
            match message {
                Ok(Message::Text(text)) => {
                    if channel.send(LiveEvent::Message { data: text.to_string() }).is_err() {
                        return failed("window gone".into());
                    }
                }
                Ok(Message::Close(frame)) => {
                    let (code, reason) =
                        frame.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((1000, String::new()));
                    return LiveEvent::Closed { code, reason };
                }
                Ok(_) => {}
                Err(e) => return failed(unavailable(&self.base, e).detail),
            }
        }
        failed("the collector closed the connection".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_reduced_or_refused() {
        assert_eq!(base_url("http://127.0.0.1:7450/").unwrap(), "http://127.0.0.1:7450");
        assert_eq!(base_url(" https://procyon.example.com ").unwrap(), "https://procyon.example.com");
        for bad in
            ["", "127.0.0.1:7450", "ftp://x", "http://u:p@x", "http://x/api", "http://x/?a=1", "javascript:alert(1)"]
        {
            assert_eq!(base_url(bad).unwrap_err().code, "invalid", "{bad}");
        }
    }

    #[test]
    fn plain_http_only_reaches_this_machine() {
        for (url, allowed) in [
            ("http://127.0.0.1:7450", true),
            ("http://127.1.2.3", true),
            ("http://[::1]:7450", true),
            ("http://localhost:7450", true),
            ("https://procyon.example.com", true),
            ("https://192.168.1.10:7450", true),
            ("http://procyon.example.com:7450", false),
            ("http://192.168.1.10:7450", false),
            ("http://[fe80::1]", false),
            ("http://localhost.example.com", false),
        ] {
            match base_url(url) {
                Ok(_) => assert!(allowed, "{url} was accepted"),
                Err(e) => {
                    assert!(!allowed, "{url}: {}", e.detail);
                    assert_eq!(e.code, "invalid");
                    assert!(e.detail.contains("use https://"), "{}", e.detail);
                }
            }
        }
    }
}
