//! `procyon watch --collector URL`: the same terminal UI over any host of a collector,
//! for people who live in SSH sessions.
//!
//! It signs in as the desktop app does (`POST /api/auth/login`), lists the hosts, and
//! follows one over the live WebSocket (`/ws/process-snapshots/?hostname=H&delta=1`,
//! opened with a single-use ticket so no token sits in a URL): a whole snapshot first,
//! then deltas applied with [`SnapshotDelta::apply`](crate::model::delta::SnapshotDelta::apply).
//! Actions go to `POST /api/monitoring/{host}/process/{pid}/{action}` with the start
//! time the snapshot showed; the collector checks the role (viewers get its 403, shown
//! as it is) and writes the audit log.
//!
//! The token is renewed (`POST /api/auth/refresh`) shortly before it expires, but only
//! if someone pressed a key since it was issued: an abandoned terminal's session ends
//! as a browser's would, and the program then says "sign-in expired" and exits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use super::app::{App, HostChoice, Mode, Pending};
use super::{Note, Source};
use crate::model::Snapshot;
use crate::model::api::{ErrorBody, HostSummary, LoginResponse};
use crate::model::delta::LiveMessage;

/// What `procyon watch --collector` was given.
#[derive(Debug)]
pub struct Options {
    /// The collector's address.
    pub url: String,
    /// User to sign in as.
    pub user: Option<String>,
    /// Host to follow.
    pub host: Option<String>,
    /// Read the password from standard input.
    pub password_stdin: bool,
    /// Allow plain http:// to another machine.
    pub allow_http: bool,
    /// Busiest processes listed per summary when not on a terminal.
    pub top: usize,
    /// Standard output is a terminal: the full-screen UI, else plain summaries.
    pub interactive: bool,
}

/// How long one REST call may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// `url` reduced to `scheme://host[:port]`, or why it cannot be a collector's address.
/// Plain http:// goes only to this machine unless `allow_http` ([`crate::server::address`]).
pub fn collector_base(url: &str, allow_http: bool) -> Result<String, String> {
    crate::server::address::collector_base(url, allow_http, crate::server::address::Asker::Terminal)
}

/// Why a call failed.
#[derive(Debug)]
enum Failure {
    /// 401: the session is over.
    Expired,
    /// Anything else, said for a person.
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Expired => f.write_str("sign-in expired"),
            Failure::Other(why) => f.write_str(why),
        }
    }
}

/// A signed-in collector.
struct Client {
    base: String,
    http: reqwest::Client,
    session: Mutex<LoginResponse>,
    /// A key was pressed since the token was issued.
    touched: AtomicBool,
}

impl Client {
    fn token(&self) -> String {
        self.session.lock().unwrap_or_else(|p| p.into_inner()).token.clone()
    }

    fn expires_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.session.lock().unwrap_or_else(|p| p.into_inner()).expires_at
    }

    /// Sends `request`; the body on success, else what went wrong.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<String, Failure> {
        let response = request
            .send()
            .await
            .map_err(|e| Failure::Other(format!("cannot reach the collector at {}: {e}", self.base)))?;
        let status = response.status();
        let text =
            response.text().await.map_err(|e| Failure::Other(format!("cannot read the collector's answer: {e}")))?;
        if status.as_u16() == 401 {
            return Err(Failure::Expired);
        }
        if !status.is_success() {
            let message = serde_json::from_str::<ErrorBody>(&text)
                .map(|b| b.message)
                .unwrap_or_else(|_| format!("the collector answered {status}"));
            return Err(Failure::Other(message));
        }
        Ok(text)
    }

    async fn sign_in(base: String, username: &str, password: &str) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("procyon-watch/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot make an HTTP client")?;
        let response = http
            .post(format!("{base}/api/auth/login"))
            .json(&serde_json::json!({ "username": username, "password": password }))
            .send()
            .await
            .with_context(|| format!("cannot reach the collector at {base}"))?;
        let status = response.status();
        let text = response.text().await.context("cannot read the collector's answer")?;
        if !status.is_success() {
            let message = serde_json::from_str::<ErrorBody>(&text)
                .map(|b| b.message)
                .unwrap_or_else(|_| format!("the collector answered {status}"));
            anyhow::bail!("cannot sign in to {base}: {message}");
        }
        let login: LoginResponse =
            serde_json::from_str(&text).with_context(|| format!("{base} did not answer like a Procyon collector"))?;
        Ok(Client { base, http, session: Mutex::new(login), touched: AtomicBool::new(false) })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        let text = self.send(self.http.get(format!("{}{path}", self.base)).bearer_auth(self.token())).await?;
        serde_json::from_str(&text).map_err(|e| Failure::Other(format!("unexpected answer from {path}: {e}")))
    }

    async fn hosts(&self) -> Result<Vec<HostSummary>, Failure> {
        self.get_json("/api/hosts/").await
    }

    /// A new token, kept in place of the old one.
    async fn refresh(&self) -> Result<(), Failure> {
        let request = self.http.post(format!("{}/api/auth/refresh", self.base)).bearer_auth(self.token());
        let text = self.send(request).await?;
        let login: LoginResponse =
            serde_json::from_str(&text).map_err(|e| Failure::Other(format!("unexpected answer to a renewal: {e}")))?;
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = login;
        Ok(())
    }

    async fn act(&self, hostname: &str, p: &Pending) -> Result<String, Failure> {
        let mut url = reqwest::Url::parse(&self.base).map_err(|e| Failure::Other(e.to_string()))?;
        url.path_segments_mut().map_err(|()| Failure::Other("bad collector address".into()))?.extend([
            "api",
            "monitoring",
            hostname,
            "process",
            &p.pid.to_string(),
            p.action.as_str(),
        ]);
        // The start time the snapshot showed: a pid reused since is refused. (Without
        // one the collector refuses, having nothing to tell the process by.)
        let mut request = self.http.post(url).bearer_auth(self.token());
        if let Some(t) = p.start_time {
            request = request.query(&[("start_time", t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))]);
        }
        self.send(request).await?;
        Ok(format!("Process {} ({}) {} on {}.", p.pid, p.name, p.action.past_tense(), super::printable(hostname)))
    }

    /// The live stream's address for `hostname`, with a fresh single-use ticket.
    async fn stream_url(&self, hostname: &str) -> Result<reqwest::Url, Failure> {
        let request = self.http.post(format!("{}/api/auth/ws-ticket", self.base)).bearer_auth(self.token());
        let text = self.send(request).await?;
        let ticket = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["ticket"].as_str().map(str::to_owned))
            .ok_or_else(|| Failure::Other("the collector gave no WebSocket ticket".into()))?;
        let mut url = reqwest::Url::parse(&format!("{}/ws/process-snapshots/", self.base))
            .map_err(|e| Failure::Other(e.to_string()))?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme).map_err(|()| Failure::Other("bad collector address".into()))?;
        url.query_pairs_mut()
            .append_pair("hostname", hostname)
            .append_pair("delta", "1")
            .append_pair("ticket", &ticket);
        Ok(url)
    }
}

/// How one connection of the live stream ended.
enum Ended {
    /// The session is over.
    Expired,
    /// The stream's token expired but a renewed one holds: open it again at once.
    Renewed,
    /// The connection is gone (or never came); worth another try. `true` if it had
    /// delivered snapshots (the next try starts with a short wait again).
    Lost(String, bool),
}

/// Follows `hostname` into `snapshots` until the session ends, reconnecting with a
/// growing pause when the connection drops.
async fn follow(
    client: Arc<Client>,
    hostname: String,
    snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    notes: mpsc::UnboundedSender<Note>,
) {
    let mut pause = Duration::from_secs(1);
    loop {
        match stream(&client, &hostname, &snapshots).await {
            Ended::Expired => {
                let _ = notes.send(Note::End(expired(&client.base)));
                return;
            }
            Ended::Renewed => pause = Duration::from_secs(1),
            Ended::Lost(why, delivered) => {
                if delivered {
                    pause = Duration::from_secs(1);
                }
                let _ = notes.send(Note::Report(format!(
                    "Live stream of {}: {why}; trying again in {}s.",
                    super::printable(&hostname),
                    pause.as_secs()
                )));
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn expired(base: &str) -> String {
    format!("sign-in expired at {base}; run procyon watch again to sign in")
}

async fn stream(client: &Client, hostname: &str, snapshots: &watch::Sender<Option<Arc<Snapshot>>>) -> Ended {
    let url = match client.stream_url(hostname).await {
        Ok(url) => url,
        Err(Failure::Expired) => return Ended::Expired,
        Err(Failure::Other(why)) => return Ended::Lost(why, false),
    };
    let mut socket = match tokio_tungstenite::connect_async(url.as_str()).await {
        Ok((socket, _)) => socket,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status().as_u16() == 401 => return Ended::Expired,
        Err(e) => return Ended::Lost(format!("cannot connect: {e}"), false),
    };
    use tokio_tungstenite::tungstenite::Message;
    let mut current: Option<Arc<Snapshot>> = None;
    let mut delivered = false;
    while let Some(message) = socket.next().await {
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(frame)) => {
                let code = frame.as_ref().map(|f| u16::from(f.code));
                // 4001: the token behind the ticket expired or the account changed. A
                // renewed token still valid opens the stream again; else it is over.
                if code == Some(4001) {
                    if client.expires_at() <= chrono::Utc::now() + chrono::Duration::seconds(2) {
                        return Ended::Expired;
                    }
                    return Ended::Renewed;
                }
                let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                return Ended::Lost(format!("closed by the collector ({reason})"), delivered);
            }
            Ok(_) => continue,
            Err(e) => return Ended::Lost(format!("connection lost: {e}"), delivered),
        };
        let next = match serde_json::from_str::<LiveMessage>(&text) {
            Ok(LiveMessage::Full { snapshot, .. }) => Arc::new(*snapshot),
            Ok(LiveMessage::Delta { delta, .. }) => match current.as_deref().map(|base| delta.apply(base)) {
                Some(Ok(next)) => Arc::new(next),
                // A delta against something this client does not hold: start again,
                // which begins with a whole snapshot.
                _ => return Ended::Lost("a change did not fit the last snapshot".into(), delivered),
            },
            Err(e) => return Ended::Lost(format!("unreadable message: {e}"), delivered),
        };
        current = Some(next.clone());
        delivered = true;
        if snapshots.send(Some(next)).is_err() {
            return Ended::Lost("nobody is watching".into(), delivered);
        }
    }
    Ended::Lost("the collector closed the connection".into(), delivered)
}

/// Renews the token shortly before it expires, if someone pressed a key since it was
/// issued; else lets it lapse (the stream then ends with "sign-in expired").
async fn keep_signed_in(client: Arc<Client>, notes: mpsc::UnboundedSender<Note>) {
    loop {
        let left = (client.expires_at() - chrono::Utc::now()).to_std().unwrap_or_default();
        // The window opens a fifth of what is left (2 s to 5 minutes) before the end.
        let lead = (left / 5).clamp(Duration::from_secs(2), Duration::from_secs(300));
        tokio::time::sleep(left.saturating_sub(lead)).await;
        // Within it, renew as soon as someone has pressed a key; nobody there by the
        // end, and the session lapses.
        loop {
            if client.touched.swap(false, Ordering::Relaxed) {
                match client.refresh().await {
                    Ok(()) => break,
                    Err(Failure::Expired) => {
                        let _ = notes.send(Note::End(expired(&client.base)));
                        return;
                    }
                    Err(Failure::Other(why)) => {
                        let _ = notes.send(Note::Report(format!("Cannot renew the sign-in: {why}")));
                        client.touched.store(true, Ordering::Relaxed);
                    }
                }
            }
            if client.expires_at() <= chrono::Utc::now() {
                let _ = notes.send(Note::End(expired(&client.base)));
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// A host of a collector as a [`Source`]: actions through its REST API, and switching
/// hosts restarts the stream.
struct Remote {
    client: Arc<Client>,
    hostname: Mutex<String>,
    streaming: Mutex<Option<tokio::task::JoinHandle<()>>>,
    snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    notes: mpsc::UnboundedSender<Note>,
}

impl Remote {
    fn start(&self, hostname: String) {
        *self.hostname.lock().unwrap_or_else(|p| p.into_inner()) = hostname.clone();
        let task = tokio::spawn(follow(self.client.clone(), hostname, self.snapshots.clone(), self.notes.clone()));
        if let Some(old) = self.streaming.lock().unwrap_or_else(|p| p.into_inner()).replace(task) {
            old.abort();
        }
    }
}

impl Source for Remote {
    fn act(&self, p: Pending) -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send + 'static>> {
        let client = self.client.clone();
        let hostname = self.hostname.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let notes = self.notes.clone();
        Box::pin(async move {
            match client.act(&hostname, &p).await {
                Ok(said) => said,
                Err(Failure::Expired) => {
                    let _ = notes.send(Note::End(expired(&client.base)));
                    "Sign-in expired.".into()
                }
                Err(Failure::Other(why)) => {
                    format!("Process {} ({}) was not {}: {why}", p.pid, p.name, p.action.past_tense())
                }
            }
        })
    }

    fn follow(&self, hostname: String) {
        self.start(hostname);
    }

    fn touched(&self) {
        self.client.touched.store(true, Ordering::Relaxed);
    }
}

/// The password: `PROCYON_PASSWORD`, one line of standard input, or asked on the
/// terminal without echo.
fn password(from_stdin: bool, user: &str, base: &str) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).context("cannot read the password from standard input")?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_owned());
    }
    if let Ok(p) = std::env::var("PROCYON_PASSWORD") {
        return Ok(p);
    }
    rpassword::prompt_password(format!("Password of {user} at {base}: "))
        .context("cannot ask for the password (no terminal?); use --password-stdin or PROCYON_PASSWORD")
}

/// Which host to follow: the one asked for, else the only one, else the first online
/// (with the picker opened, on a terminal).
fn choose(asked: Option<&str>, hosts: &[HostSummary]) -> Result<(String, bool), String> {
    let names = || hosts.iter().map(|h| h.hostname.as_str()).collect::<Vec<_>>().join(", ");
    if let Some(asked) = asked {
        return hosts
            .iter()
            .find(|h| h.hostname == asked || h.id.to_string() == asked)
            .map(|h| (h.hostname.clone(), false))
            .ok_or_else(|| format!("the collector has no host `{asked}`; it has: {}", names()));
    }
    match hosts {
        [] => Err("the collector has no hosts yet".into()),
        [only] => Ok((only.hostname.clone(), false)),
        _ => {
            let first = hosts.iter().find(|h| h.online).unwrap_or(&hosts[0]);
            Ok((first.hostname.clone(), true))
        }
    }
}

/// Signs in and follows a host until the person quits (or, not on a terminal, prints a
/// summary per snapshot until the output closes).
pub fn watch(options: Options) -> anyhow::Result<()> {
    let base = collector_base(&options.url, options.allow_http).map_err(anyhow::Error::msg)?;
    let user = match options.user.clone() {
        Some(u) => u,
        None if options.password_stdin => anyhow::bail!("--password-stdin needs --user"),
        None => {
            eprint!("User at {base}: ");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("cannot read the user name")?;
            line.trim().to_owned()
        }
    };
    let password = password(options.password_stdin, &user, &base)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async move {
        let client = Arc::new(Client::sign_in(base.clone(), &user, &password).await?);
        drop(password);
        let hosts = client.hosts().await.map_err(|e| anyhow::anyhow!("cannot list the collector's hosts: {e}"))?;
        let (hostname, pick) =
            choose(options.host.as_deref(), &hosts).map_err(|e| anyhow::anyhow!("{e} (choose one with --host)"))?;
        let (snapshots_tx, snapshots) = watch::channel(None);
        let (notes_tx, notes) = mpsc::unbounded_channel();
        let remote = Arc::new(Remote {
            client: client.clone(),
            hostname: Mutex::new(String::new()),
            streaming: Mutex::new(None),
            snapshots: snapshots_tx,
            notes: notes_tx.clone(),
        });
        let followed = hostname.clone();
        remote.start(hostname);
        if !options.interactive {
            if pick {
                anyhow::bail!(
                    "the collector has several hosts: choose one with --host ({})",
                    hosts.iter().map(|h| h.hostname.as_str()).collect::<Vec<_>>().join(", ")
                );
            }
            return plain(snapshots, notes, options.top).await;
        }
        tokio::spawn(keep_signed_in(client.clone(), notes_tx));
        let login = client.session.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut app = App::new(format!("{} ({}) at {base}", login.username, login.role.as_str()));
        app.hosts = hosts.iter().map(|h| HostChoice { hostname: h.hostname.clone(), online: h.online }).collect();
        if pick {
            // The list opens on the host shown behind it.
            let selected = hosts.iter().position(|h| h.hostname == followed).unwrap_or(0);
            app.mode = Mode::Hosts { selected };
        }
        super::run(app, snapshots, remote, notes).await
    })
}

/// Plain summaries of the followed host, for output that is not a terminal.
async fn plain(
    mut snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    mut notes: mpsc::UnboundedReceiver<Note>,
    top: usize,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let newest = snapshots.borrow_and_update().clone();
                if let Some(s) = newest {
                    super::print_summary(&mut std::io::stdout().lock(), &s, top)?;
                }
            }
            Some(note) = notes.recv() => match note {
                Note::Report(text) => eprintln!("procyon watch: {text}"),
                Note::End(text) => anyhow::bail!(text),
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_reaches_this_machine_unless_allowed() {
        assert_eq!(collector_base("http://127.0.0.1:7450/", false).unwrap(), "http://127.0.0.1:7450");
        assert_eq!(collector_base(" https://procyon.example.com ", false).unwrap(), "https://procyon.example.com");
        assert_eq!(collector_base("http://[::1]:7450", false).unwrap(), "http://[::1]:7450");
        assert_eq!(collector_base("http://localhost:7450", false).unwrap(), "http://localhost:7450");
        for bad in ["http://procyon.example.com:7450", "http://192.168.1.10", "http://localhost.example.com"] {
            let e = collector_base(bad, false).unwrap_err();
            assert!(e.contains("use https://") && e.contains("--allow-http"), "{e}");
            assert!(collector_base(bad, true).is_ok(), "{bad} with --allow-http");
        }
        for bad in ["", "127.0.0.1:7450", "ftp://x", "http://u:p@x", "http://x/api", "http://x/?a=1"] {
            assert!(collector_base(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_host_is_chosen_by_name_or_id_else_the_only_or_first_online() {
        let host = |id: i64, name: &str, online: bool| HostSummary {
            id,
            hostname: name.into(),
            info: None,
            first_seen: chrono::Utc::now(),
            last_seen: chrono::Utc::now(),
            online,
            local: false,
            snapshot_count: 1,
            labels: Default::default(),
            admin_labels: Default::default(),
            figures: None,
        };
        let hosts = [host(1, "a", false), host(2, "b", true)];
        assert_eq!(choose(Some("b"), &hosts), Ok(("b".into(), false)));
        assert_eq!(choose(Some("1"), &hosts), Ok(("a".into(), false)));
        assert!(choose(Some("c"), &hosts).unwrap_err().contains("it has: a, b"));
        assert_eq!(choose(None, &hosts), Ok(("b".into(), true)));
        assert_eq!(choose(None, &hosts[..1]), Ok(("a".into(), false)));
        assert!(choose(None, &[]).is_err());
    }
}
