//! What one client, user or key may hold of the collector, so that none of them can
//! starve the others: the room uploads share, connections per address (and the reserve
//! that keeps sign-in possible when the collector is full), live streams per user,
//! agent sessions and hosts per key. Each limit is set small here and driven past.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Request, header};
use futures_util::{SinkExt, StreamExt};
use procyon::hub::Hub;
use procyon::model::agent::PROTOCOL_VERSION;
use procyon::model::api::Role;
use procyon::server::auth::{Auth, hash_api_key, new_api_key};
use procyon::server::upload::UploadGate;
use procyon::server::{AppState, Limits, Settings, app, listen_with};
use procyon::store::Store;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tower::ServiceExt;

const SECRET: &[u8] = b"a secret for the limits tests, 32+ bytes";

async fn state_with(dir: &std::path::Path, settings: Settings) -> AppState {
    let store = Store::open(&dir.join("procyon.db")).await.unwrap();
    AppState::new(store, Hub::new(), Auth::new(SECRET, Duration::from_secs(3600)), settings)
}

/// A new API key's `Authorization` value.
async fn key(state: &AppState, name: &str) -> String {
    let (key, prefix, _) = new_api_key().unwrap();
    state.store.create_api_key(name, &prefix, &hash_api_key(&key), None).await.unwrap();
    format!("Api-Key {key}")
}

fn seed_upload(hostname: &str) -> String {
    json!({"hostname": hostname, "snapshot_time": chrono::Utc::now(), "processes": [{"pid": 1, "name": "init"}]})
        .to_string()
}

/// An upload through the router; its status and answer.
async fn upload(router: &axum::Router, key: &str, body: Body) -> (u16, Option<String>, Value) {
    let request = Request::post("/api/process-snapshots/")
        .header(header::AUTHORIZATION, key)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let retry = response.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, retry, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// An upload whose body never ends until the returned sender is dropped: it holds its
/// room (no declared length, so the largest) all that time.
fn stalled_upload(
    router: &axum::Router,
    key: &str,
) -> (tokio::sync::mpsc::Sender<Bytes>, tokio::task::JoinHandle<u16>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let stream =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx)) },
        );
    let (router, key) = (router.clone(), key.to_owned());
    let task = tokio::spawn(async move { upload(&router, &key, Body::from_stream(stream)).await.0 });
    (tx, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_share_a_bounded_room_and_no_key_holds_all_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = state_with(dir.path(), Settings::default()).await;
    // Room for two bodies of unknown length in all, one per key; short waits.
    state.uploads = Arc::new(UploadGate::new(2 << 20, 1 << 20, 1, Duration::from_millis(300)));
    let router = app(state.clone());
    let (k1, k2, k3, k4) =
        (key(&state, "k1").await, key(&state, "k2").await, key(&state, "k3").await, key(&state, "k4").await);

    // k1 holds its whole share with a body that does not come.
    let (stalled, first) = stalled_upload(&router, &k1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Its next upload waits for its own share, then is told so (429) ...
    let (status, retry, answer) = upload(&router, &k1, Body::from(seed_upload("a-1"))).await;
    assert_eq!((status, answer["error"].as_str()), (429, Some("limit")), "{answer}");
    assert!(retry.is_some() && answer["message"].as_str().unwrap().contains("share"), "{answer}");
    // ... while another key uploads at once.
    let (status, _, answer) = upload(&router, &k2, Body::from(seed_upload("b-1"))).await;
    assert_eq!(status, 201, "{answer}");

    // A second key stalling too fills the room: everyone else gets 503 busy, with when
    // to try again, and nothing stored.
    let (stalled_too, second) = stalled_upload(&router, &k3);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, retry, answer) = upload(&router, &k4, Body::from(seed_upload("d-1"))).await;
    assert_eq!((status, answer["error"].as_str()), (503, Some("busy")), "{answer}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert!(state.store.host("d-1").await.unwrap().is_none());

    // The stalled bodies end (cut short: not JSON) and their room is free again.
    drop((stalled, stalled_too));
    assert_eq!(first.await.unwrap(), 400);
    assert_eq!(second.await.unwrap(), 400);
    let (status, _, answer) = upload(&router, &k1, Body::from(seed_upload("a-1"))).await;
    assert_eq!(status, 201, "{answer}");
    let (status, _, answer) = upload(&router, &k4, Body::from(seed_upload("d-1"))).await;
    assert_eq!(status, 201, "{answer}");
}

// ---------------------------------------------------------------------------------
// A collector listening on loopback, with its limits set small.

struct Running {
    addr: std::net::SocketAddr,
    state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn start(dir: &std::path::Path, settings: Settings, limits: Limits) -> Running {
        let state = state_with(dir, settings).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(listen_with(state.clone(), listener, limits, None, async move {
            let _ = stopped.await;
        }));
        Running { addr, state, stop: Some(stop), server }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A user made in the store, and a token for them.
    async fn user(&self, name: &str, role: Role, password: &str) -> String {
        let hash = procyon::server::auth::hash_password(password).unwrap();
        self.state.store.create_user(name, &hash, role).await.unwrap();
        let user = self.state.store.user_by_name(name).await.unwrap().unwrap();
        self.state.auth.issue(name, role, user.token_generation).unwrap().token
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), &mut self.server).await.unwrap().unwrap().unwrap();
    }
}

/// A TCP connection to `addr` from the loopback address `from`, that says nothing.
async fn silent_from(from: &str, addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// An HTTP client whose connections come from `from`, one per request.
fn client_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from.parse::<std::net::IpAddr>().unwrap())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Status, `Retry-After` and JSON of a GET.
async fn get(client: &reqwest::Client, url: &str) -> (u16, Option<String>, Value) {
    let r = client.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

fn limits(max_connections: usize, max_per_address: usize, reserve: usize, light_client: usize) -> Limits {
    Limits {
        header_read_timeout: Duration::from_secs(20),
        max_connections,
        max_per_address,
        reserve,
        light_client,
        ..Limits::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_holds_its_share_of_connections_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let c = Running::start(dir.path(), Settings::default(), limits(64, 3, 0, 1)).await;
    let health = c.url("/api/health");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(silent_from("127.0.0.2", c.addr).await);
    }
    // One more from that address is told why at once, in the usual error shape.
    let (status, retry, body) = get(&client_from("127.0.0.2"), &health).await;
    assert_eq!((status, body["error"].as_str()), (429, Some("too_many_connections")), "{body}");
    assert!(retry.is_some() && body["message"].as_str().unwrap().contains("--max-connections-per-address"), "{body}");
    // Everyone else is served.
    assert_eq!(get(&client_from("127.0.0.1"), &health).await.0, 200);
    // A closed connection frees its place.
    held.pop();
    let mut served = false;
    for _ in 0..50 {
        if get(&client_from("127.0.0.2"), &health).await.0 == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "the address stayed refused after closing one of its connections");
    drop(held);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_collector_still_lets_someone_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    // Three ordinary slots, two more for clients holding fewer than two connections.
    let c = Running::start(dir.path(), Settings::default(), limits(3, 100, 2, 2)).await;
    c.user("admin", Role::Admin, "the admin's password").await;
    let mut flood = Vec::new();
    for _ in 0..3 {
        flood.push(silent_from("127.0.0.2", c.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The flooding client gets no reserve: refused at once, with when to try again.
    let (status, retry, body) = get(&client_from("127.0.0.2"), &c.url("/api/health")).await;
    assert_eq!((status, body["error"].as_str(), retry.as_deref()), (503, Some("busy"), Some("5")), "{body}");
    // An admin from elsewhere signs in (to revoke the key behind the flood, say).
    let r = client_from("127.0.0.1")
        .post(c.url("/api/auth/login"))
        .json(&json!({"username": "admin", "password": "the admin's password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(flood);
    c.stop().await;
}

/// Opens a live stream; the HTTP status of a refused one.
async fn open_stream(c: &Running, path: &str, token: &str) -> Result<Socket, (u16, Value)> {
    let url = format!("ws://{}{path}?token={token}", c.addr);
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            let body = r.body().as_ref().map(|b| serde_json::from_slice(b).unwrap()).unwrap_or(Value::Null);
            Err((r.status().as_u16(), body))
        }
        Err(e) => panic!("{e}"),
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[tokio::test(flavor = "multi_thread")]
async fn one_user_holds_a_bounded_number_of_live_streams() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings { max_streams_per_user: 2, ..Settings::default() };
    let c = Running::start(dir.path(), settings, Limits::default()).await;
    let vic = c.user("vic", Role::Viewer, "vic's password").await;
    let ada = c.user("ada", Role::Viewer, "ada's password").await;
    let first = open_stream(&c, "/ws/process-snapshots/", &vic).await.unwrap();
    let _second = open_stream(&c, "/ws/process-snapshots/", &vic).await.unwrap();
    // Both kinds of stream count; the next is refused before the upgrade, saying why.
    for path in ["/ws/process-snapshots/", "/ws/monitoring/local"] {
        let (status, body) = open_stream(&c, path, &vic).await.err().unwrap();
        assert_eq!((status, body["error"].as_str()), (429, Some("limit")), "{path}: {body}");
        assert!(body["message"].as_str().unwrap().contains("`vic` already has 2 live streams"), "{body}");
    }
    // Another user is not affected.
    let _other = open_stream(&c, "/ws/process-snapshots/", &ada).await.unwrap();
    // A stream that ends gives its place back.
    drop(first);
    let mut reopened = false;
    for _ in 0..50 {
        if c.state.streams.held("vic") < 2 {
            reopened = open_stream(&c, "/ws/process-snapshots/", &vic).await.is_ok();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reopened, "a closed stream still counted");
    c.stop().await;
}

/// A raw agent saying hello as `hostname` with `key`; the collector's first answer.
async fn hello(c: &Running, key: &str, hostname: &str) -> (Socket, Value) {
    let mut request = format!("ws://{}/ws/agent", c.addr).into_client_request().unwrap();
    request.headers_mut().insert("Authorization", key.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut host = procyon::sample::Sampler::new(Default::default()).host().clone();
    host.hostname = hostname.into();
    let hello = json!({"type": "hello", "protocol": PROTOCOL_VERSION, "agent_version": "test", "host": host,
        "allow_control": false, "machine_id": format!("{:064x}", hostname.len() * 7919 + hostname.as_bytes()[0] as usize)});
    ws.send(Message::Text(hello.to_string().into())).await.unwrap();
    let answer = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap() {
            Message::Text(t) => break serde_json::from_str(&t).unwrap(),
            _ => continue,
        }
    };
    (ws, answer)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_key_holds_a_bounded_number_of_agent_sessions_and_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let settings =
        Settings { max_sessions_per_key: 2, max_agent_sessions: 3, max_hosts_per_key: 3, ..Settings::default() };
    let c = Running::start(dir.path(), settings, Limits::default()).await;
    let (fleet, other, third) =
        (key(&c.state, "fleet").await, key(&c.state, "other").await, key(&c.state, "third").await);

    let (a1, welcome) = hello(&c, &fleet, "a-1").await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let (_a2, welcome) = hello(&c, &fleet, "a-2").await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    // The key's share is taken: its next host is refused, saying what to do ...
    let (_, answer) = hello(&c, &fleet, "a-3").await;
    assert_eq!((answer["type"].as_str(), answer["code"].as_str()), (Some("error"), Some("too_many_sessions")));
    assert!(answer["message"].as_str().unwrap().contains("2 agent sessions"), "{answer}");
    // ... while another key's agents still connect, up to the collector's own cap.
    let (_b1, welcome) = hello(&c, &other, "b-1").await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let (_, answer) = hello(&c, &third, "c-1").await;
    assert_eq!(answer["code"], "too_many_sessions", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("maximum of 3 agent sessions"), "{answer}");
    // A session that ends frees its place.
    let fleet_id = c.state.store.api_keys().await.unwrap().iter().find(|k| k.name == "fleet").unwrap().id;
    drop(a1);
    let mut welcomed = false;
    for _ in 0..50 {
        if c.state.agents.sessions_of(fleet_id) < 2 {
            welcomed = hello(&c, &fleet, "a-3").await.1["type"] == "welcome";
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(welcomed, "a closed session still counted");

    // Hosts per key: a key binds three hosts, the most it may; a fourth is refused
    // (and nothing stored), and its known hosts still report.
    let uploads = key(&c.state, "uploads").await;
    let router = app(c.state.clone());
    for host in ["u-1", "u-2", "u-3"] {
        assert_eq!(upload(&router, &uploads, Body::from(seed_upload(host))).await.0, 201);
    }
    let (status, _, answer) = upload(&router, &uploads, Body::from(seed_upload("u-4"))).await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("already reports for 3 hosts"), "{answer}");
    assert!(c.state.store.host("u-4").await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (status, _, answer) = upload(&router, &uploads, Body::from(seed_upload("u-2"))).await;
    assert_eq!(status, 201, "{answer}");
    c.stop().await;
}
