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
        Running::start_state(state_with(dir, settings).await, limits).await
    }

    async fn start_state(state: AppState, limits: Limits) -> Running {
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

// ---------------------------------------------------------------------------------
// Hostile clients of the agent channel and of the listener.

/// The next message of a socket within a few seconds: a text's JSON, or a close frame's
/// code and reason (`None`: the socket ended).
async fn next_message(ws: &mut Socket) -> Option<Result<Value, (u16, String)>> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("no answer in time") {
            Some(Ok(Message::Text(t))) => return Some(Ok(serde_json::from_str(&t).unwrap())),
            Some(Ok(Message::Close(Some(frame)))) => return Some(Err((frame.code.into(), frame.reason.to_string()))),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// An agent on a bare socket: the WebSocket handshake and a hello, written by hand, and
/// then nothing, not even a pong (a WebSocket library answers pings as it reads).
async fn raw_agent(c: &Running, key: &str, hostname: &str) -> tokio::net::TcpStream {
    let mut host = procyon::sample::Sampler::new(Default::default()).host().clone();
    host.hostname = hostname.into();
    let hello = json!({"type": "hello", "protocol": PROTOCOL_VERSION, "agent_version": "test", "host": host,
        "allow_control": false, "machine_id": format!("{:064x}", 42)});
    raw_hello(c, key, hello.to_string()).await
}

/// A bare socket that sends the WebSocket handshake and `hello` as one text frame, the
/// frame written on a task of its own (the collector may stop reading it).
async fn raw_hello(c: &Running, key: &str, hello: String) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    let head = format!(
        "GET /ws/agent HTTP/1.1\r\nHost: x\r\nAuthorization: {key}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The 101 first, as an agent waits for it; it is read again below.
    let mut peeked = [0u8; 12];
    stream.peek(&mut peeked).await.unwrap();
    // A final text frame, masked (with a zero mask: the payload reads as it is).
    let mut frame = vec![0x81];
    match hello.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend((n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend((n as u64).to_be_bytes());
        }
    }
    frame.extend([0, 0, 0, 0]);
    frame.extend(hello.as_bytes());
    let (read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&frame).await;
        write
    });
    // Keeps the write half (so the socket stays open) until the frame is written or the
    // collector closed the socket.
    let write = writer.await.unwrap();
    read.reunite(write).unwrap()
}

/// Everything the collector sent on a raw agent's socket until it closed it: the
/// frames after the handshake, as (opcode, payload).
async fn frames_until_closed(mut stream: tokio::net::TcpStream) -> Vec<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    // Until the end, or a reset (a collector that stopped reading resets the socket
    // when it closes it); what came before is kept.
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await.expect("the collector did not close") {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(bytes.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&bytes[..head_end]));
    let mut rest = &bytes[head_end..];
    let mut frames = Vec::new();
    while rest.len() >= 2 {
        let (opcode, short) = (rest[0] & 0x0F, (rest[1] & 0x7F) as usize);
        let (len, at) = match short {
            126 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
            127 => (u64::from_be_bytes(rest[2..10].try_into().unwrap()) as usize, 10),
            n => (n, 2),
        };
        frames.push((opcode, rest[at..at + len].to_vec()));
        rest = &rest[at + len..];
    }
    frames
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_session_that_goes_silent_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings { agent_ping_every: Duration::from_millis(300), ..Settings::default() };
    let c = Running::start(dir.path(), settings, Limits::default()).await;
    let key = key(&c.state, "fleet").await;
    // One agent answers pings (a client answers them while it reads) ...
    let (mut alive, welcome) = hello(&c, &key, "alive-1").await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let reading = tokio::spawn(async move { while let Some(Ok(_)) = alive.next().await {} });
    // ... the other says hello, then nothing at all.
    let started = std::time::Instant::now();
    let silent = raw_agent(&c, &key, "silent-1").await;
    let frames = frames_until_closed(silent).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(800) && took < Duration::from_secs(5), "closed after {took:?}");
    assert!(!c.state.agents.is_connected("silent-1"));
    assert!(c.state.agents.is_connected("alive-1"), "an agent that answers pings was closed");
    // Welcomed, pinged, then told why, with a close frame saying so.
    let texts: Vec<Value> = frames.iter().filter(|f| f.0 == 1).map(|f| serde_json::from_slice(&f.1).unwrap()).collect();
    assert_eq!(texts[0]["type"], "welcome", "{texts:?}");
    assert!(frames.iter().filter(|f| f.0 == 9).count() >= 2, "pinged: {frames:?}");
    let said = texts.last().unwrap();
    assert_eq!((said["type"].as_str(), said["code"].as_str()), (Some("error"), Some("idle")), "{said}");
    let close = &frames.last().unwrap();
    assert_eq!(close.0, 8);
    assert_eq!(u16::from_be_bytes([close.1[0], close.1[1]]), 4010);
    assert!(String::from_utf8_lossy(&close.1[2..]).contains("nothing heard"), "{close:?}");
    reading.abort();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_hello_is_refused_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let c = Running::start(dir.path(), Settings::default(), Limits::default()).await;
    let key = key(&c.state, "fleet").await;
    let host = procyon::sample::Sampler::new(Default::default()).host().clone();
    // Well within a frame, far over a hello: cut off while it arrives, not read whole.
    let hello = json!({"type": "hello", "protocol": PROTOCOL_VERSION, "agent_version": "test", "host": host,
        "allow_control": false, "padding": "x".repeat(8 << 20)});
    let frames = frames_until_closed(raw_hello(&c, &key, hello.to_string()).await).await;
    let said: Value = serde_json::from_slice(&frames.iter().find(|f| f.0 == 1).expect("an answer").1).unwrap();
    assert_eq!(said["code"], "hello_too_large", "{said}");
    let message = said["message"].as_str().unwrap();
    assert!(message.contains("over 65 KiB") && message.contains("at most 64 KiB"), "{said}");
    let close = frames.iter().find(|f| f.0 == 8).expect("a close frame");
    assert_eq!(u16::from_be_bytes([close.1[0], close.1[1]]), 1009);
    assert!(String::from_utf8_lossy(&close.1[2..]).contains("hello"), "{close:?}");
    assert_eq!(c.state.agents.session_count(), 0);
    // A hello just over the bound, read whole, is refused the same way.
    let mut request = format!("ws://{}/ws/agent", c.addr).into_client_request().unwrap();
    request.headers_mut().insert("Authorization", key.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let hello = json!({"type": "hello", "protocol": PROTOCOL_VERSION, "agent_version": "test", "host": host,
        "allow_control": false, "padding": "x".repeat(64 * 1024)});
    ws.send(Message::Text(hello.to_string().into())).await.unwrap();
    let said = next_message(&mut ws).await.unwrap().unwrap();
    assert_eq!(said["code"], "hello_too_large", "{said}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_snapshot_with_overlong_interface_names_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let c = Running::start(dir.path(), Settings::default(), Limits::default()).await;
    let key = key(&c.state, "fleet").await;
    let (mut ws, welcome) = hello(&c, &key, "ifaces-1").await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let mut snapshot = procyon::sample::Sampler::new(Default::default()).sample();
    snapshot.host.hostname = "ifaces-1".into();
    snapshot.seq = 1;
    snapshot.network.interfaces =
        vec![procyon::model::InterfaceSample { name: "x".repeat(512), counters: Default::default() }];
    let message = json!({"type": "snapshot", "snapshot": snapshot});
    ws.send(Message::Text(message.to_string().into())).await.unwrap();
    let said = next_message(&mut ws).await.unwrap().unwrap();
    assert_eq!(said["type"], "rejected", "{said}");
    assert!(said["message"].as_str().unwrap().contains("network.interfaces[0].name"), "{said}");
    assert!(c.state.store.host("ifaces-1").await.unwrap().is_none_or(|h| h.snapshot_count == 0));
    c.stop().await;
}

/// The dashboard's largest asset, whose answers soon fill socket buffers.
async fn large_asset(c: &Running) -> String {
    let index = reqwest::get(c.url("/")).await.unwrap().text().await.unwrap();
    let mut largest = (0, String::new());
    for part in index.split("\"/assets/").skip(1) {
        let path = format!("/assets/{}", &part[..part.find('"').unwrap()]);
        let len = reqwest::get(c.url(&path)).await.unwrap().bytes().await.unwrap().len();
        largest = largest.max((len, path));
    }
    assert!(largest.0 > 10_000, "the dashboard's assets are all small: {largest:?}");
    largest.1
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_loses_its_connection() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { max_per_address: 1, write_timeout: Duration::from_secs(1), ..Limits::default() };
    let c = Running::start(dir.path(), Settings::default(), limits).await;
    let asset = large_asset(&c).await;
    // A client that asks for many answers at once (pipelined) and reads none of them,
    // with a small receive buffer so that the answers cannot all be buffered.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let mut stalled = socket.connect(c.addr).await.unwrap();
    let requests = format!("GET {asset} HTTP/1.1\r\nHost: x\r\n\r\n").repeat(200);
    stalled.write_all(requests.as_bytes()).await.unwrap();
    // While the collector waits on it, its address's one connection is taken ...
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = c.url("/api/health");
    assert_eq!(get(&client_from("127.0.0.3"), &health).await.0, 429);
    // ... until the write timeout closes it: then the address is served again.
    let mut served = false;
    for _ in 0..60 {
        if get(&client_from("127.0.0.3"), &health).await.0 == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "a client that stopped reading kept its connection");
    drop(stalled);
    c.stop().await;
}

/// Sends `head` and then `body` on a new connection, and reads the status of the
/// answer (`None`: the connection closed without one).
async fn raw_request(addr: std::net::SocketAddr, head: String, body: Vec<u8>) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = write.write_all(head.as_bytes()).await;
        let _ = write.write_all(&body).await;
        write
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), read.read(&mut buf)).await.expect("no answer in time") {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    writer.abort();
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// `data` as one HTTP/1.1 chunked body, in chunks of `size`.
fn chunked(data: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in data.chunks(size) {
        out.extend(format!("{:x}\r\n", chunk.len()).into_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_uploads_count_against_the_same_shares_and_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = state_with(dir.path(), Settings::default()).await;
    state.uploads = Arc::new(UploadGate::new(4 << 20, 1 << 20, 1, Duration::from_millis(300)));
    let c = Running::start_state(state, Limits::default()).await;
    let (k1, k2) = (key(&c.state, "k1").await, key(&c.state, "k2").await);
    let head = |key: &str, extra: &str| {
        format!(
            "POST /api/process-snapshots/ HTTP/1.1\r\nHost: x\r\nAuthorization: {key}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n{extra}\r\n"
        )
    };
    // Chunked uploads are read like sized ones.
    let upload_one = seed_upload("chunked-1").into_bytes();
    assert_eq!(raw_request(c.addr, head(&k1, ""), chunked(&upload_one, 7)).await, Some(201));
    // Over the size bound: refused (413), whatever the chunks say, and nothing stored.
    let mut huge = br#"{"hostname":"chunked-2","processes":[],"junk":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', procyon::server::upload::MAX_BODY_BYTES));
    huge.extend_from_slice(b"\"}");
    // (The collector may close before reading the rest, so the answer can be lost.)
    let status = raw_request(c.addr, head(&k2, ""), chunked(&huge, 1 << 16)).await;
    assert!(matches!(status, None | Some(413)), "{status:?}");
    assert!(c.state.store.host("chunked-2").await.unwrap().is_none());
    // A declared length beside chunks changes nothing: refused as malformed, or read to
    // the same bound.
    let lying = head(&k2, "Content-Length: 10\r\n");
    let status = raw_request(c.addr, lying, chunked(&huge, 1 << 16)).await;
    assert!(matches!(status, None | Some(400 | 413)), "{status:?}");
    assert!(c.state.store.host("chunked-2").await.unwrap().is_none());
    // A chunked body that does not end holds its key's whole share (its length is not
    // known): the key's next upload, sized or chunked, is told so; another key's is not.
    let stalled = {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(c.addr).await.unwrap();
        s.write_all(head(&k1, "").as_bytes()).await.unwrap();
        s.write_all(b"5\r\n{\"hos\r\n").await.unwrap();
        s
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let router = app(c.state.clone());
    let (status, _, answer) = upload(&router, &k1, Body::from(seed_upload("chunked-3"))).await;
    assert_eq!((status, answer["error"].as_str()), (429, Some("limit")), "{answer}");
    let chunked_too = raw_request(c.addr, head(&k1, ""), chunked(seed_upload("chunked-3").as_bytes(), 9)).await;
    assert_eq!(chunked_too, Some(429));
    let (status, _, answer) = upload(&router, &k2, Body::from(seed_upload("chunked-4"))).await;
    assert_eq!(status, 201, "{answer}");
    drop(stalled);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn per_key_shares_count_the_key_however_its_header_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = state_with(dir.path(), Settings::default()).await;
    state.uploads = Arc::new(UploadGate::new(8 << 20, 1 << 20, 1, Duration::from_millis(300)));
    let router = app(state.clone());
    let header = key(&state, "k1").await;
    let secret = header.strip_prefix("Api-Key ").unwrap().to_owned();
    // The key's share held by a body that does not come.
    let (stalled, first) = stalled_upload(&router, &header);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Every way of writing the same key reaches the same share: 429, never a new share.
    let escaped: String = secret.bytes().map(|b| format!("%{b:02X}")).collect();
    for same in [
        format!("api-key {secret}"),
        format!("API-KEY {secret}"),
        format!("Api-Key   {secret}  "),
        format!("  Api-Key {secret}"),
        format!("Api-Key\t{secret}"),
    ] {
        let request = Request::post("/api/process-snapshots/")
            .header(header::AUTHORIZATION, same.as_str())
            .body(Body::from(seed_upload("same-1")))
            .unwrap();
        let status = router.clone().oneshot(request).await.unwrap().status().as_u16();
        assert_eq!(status, 429, "{same:?}");
    }
    // Other schemes and escaped forms are not the key at all: 401, and no share.
    for other in [format!("Bearer {secret}"), format!("Api-Key {escaped}"), format!("Api-Key {secret}x")] {
        let (status, _, answer) = upload(&router, &other, Body::from(seed_upload("same-1"))).await;
        assert_eq!(status, 401, "{other}: {answer}");
    }
    assert!(state.store.host("same-1").await.unwrap().is_none());
    drop(stalled);
    assert_eq!(first.await.unwrap(), 400);
}

/// A sign-in from `client` with `forwarded` as its X-Forwarded-For; the status.
async fn sign_in(c: &Running, client: &reqwest::Client, forwarded: &str, password: &str) -> u16 {
    client
        .post(c.url("/api/auth/login"))
        .header("X-Forwarded-For", forwarded)
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_addresses_count_only_from_a_trusted_proxy() {
    // No trusted proxy: a forged header does not escape the peer's own lock.
    let dir = tempfile::tempdir().unwrap();
    let c = Running::start(dir.path(), Settings::default(), Limits::default()).await;
    c.user("admin", Role::Admin, "the admin's password").await;
    let from = client_from("127.0.0.4");
    for i in 0..5 {
        assert_eq!(sign_in(&c, &from, &format!("10.0.0.{i}"), "wrong").await, 401);
    }
    assert_eq!(sign_in(&c, &from, "10.9.9.9", "the admin's password").await, 429);
    c.stop().await;

    // 127.0.0.5 is a trusted proxy: its clients are told apart by the header, so one of
    // them locking itself out locks nobody else out.
    let dir = tempfile::tempdir().unwrap();
    let proxy: std::net::IpAddr = "127.0.0.5".parse().unwrap();
    let limits = Limits { trusted_proxies: vec![proxy].into(), max_per_address: 2, ..Limits::default() };
    let c = Running::start(dir.path(), Settings::default(), limits).await;
    c.user("admin", Role::Admin, "the admin's password").await;
    let via_proxy = client_from("127.0.0.5");
    for _ in 0..5 {
        assert_eq!(sign_in(&c, &via_proxy, "10.0.0.1", "wrong").await, 401);
    }
    assert_eq!(sign_in(&c, &via_proxy, "10.0.0.1", "the admin's password").await, 429);
    // The rightmost address that is not a trusted proxy is the client; what a client
    // writes left of it is not believed.
    assert_eq!(sign_in(&c, &via_proxy, "10.0.0.2, 10.0.0.1", "the admin's password").await, 429);
    assert_eq!(sign_in(&c, &via_proxy, "10.0.0.1, 10.0.0.2", "the admin's password").await, 200);
    assert_eq!(sign_in(&c, &via_proxy, "10.0.0.3, 127.0.0.5", "the admin's password").await, 200);
    // The proxy carries many clients: it is not held to one address's share ...
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(silent_from("127.0.0.5", c.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(&via_proxy, &c.url("/api/health")).await.0, 200);
    // ... while anyone else is, and their header does not change that.
    let mut others = Vec::new();
    for _ in 0..2 {
        others.push(silent_from("127.0.0.6", c.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = client_from("127.0.0.6").get(c.url("/api/health")).header("X-Forwarded-For", "10.0.0.7").send().await;
    assert_eq!(r.unwrap().status().as_u16(), 429);
    drop((held, others));
    c.stop().await;
}
