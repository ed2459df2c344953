//! The trust boundary end to end, against a real `procyon serve`: tokens that end with
//! their account, hosts bound to their key and machine, sequence numbers that cannot
//! freeze a host's history, revoked keys, sign-in throttling, WebSocket tickets and
//! hostile uploads, relayed actions, what agents may put in the log, the audit log, and
//! hosts stored under names no longer accepted. Each test reproduces a hole that was once
//! open.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::collector::{Collector, SEED_EXAMPLE, cli, new_key, new_user};
use futures_util::{SinkExt, StreamExt};
use procyon::model::agent::PROTOCOL_VERSION;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Waits up to `limit` for `check` to hold, polling.
async fn eventually<F: AsyncFnMut() -> bool>(limit: Duration, mut check: F) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// The close code a socket ends with (reading and dropping anything before it).
async fn close_code(ws: &mut Socket, limit: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => return Some(frame.code.into()),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

async fn next_json(ws: &mut Socket) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap() {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Close(frame) => return json!({"type": "closed", "frame": format!("{frame:?}")}),
            _ => continue,
        }
    }
}

/// A raw agent: connects with `key`, says hello as `hostname` from `machine_id`, and
/// returns the socket and the collector's first answer.
async fn agent_hello(c: &Collector, key: &str, hostname: &str, machine_id: Option<&str>) -> (Socket, Value) {
    let mut request = c.ws_url("/ws/agent").as_str().into_client_request().unwrap();
    request.headers_mut().insert("Authorization", format!("Api-Key {key}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut host = procyon::sample::Sampler::new(Default::default()).host().clone();
    host.hostname = hostname.into();
    let mut hello = json!({"type": "hello", "protocol": PROTOCOL_VERSION, "agent_version": "test",
        "host": host, "allow_control": true});
    if let Some(m) = machine_id {
        hello["machine_id"] = json!(m);
    }
    ws.send(Message::Text(hello.to_string().into())).await.unwrap();
    let answer = next_json(&mut ws).await;
    (ws, answer)
}

/// A full snapshot of this machine reported as `hostname`, with `seq`.
fn full_snapshot(hostname: &str, seq: u64) -> Value {
    let mut snap = procyon::sample::Sampler::new(Default::default()).sample();
    snap.host.hostname = hostname.into();
    snap.seq = seq;
    serde_json::to_value(snap).unwrap()
}

async fn live_stream(c: &Collector, token: &str) -> Socket {
    let url = format!("{}?token={token}", c.ws_url("/ws/process-snapshots/"));
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_end_with_their_account() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let admin = c.admin_token().await;
    let (status, _) = c
        .post("/api/users", &admin, Some(json!({"username": "eve", "password": "eve-password-1", "role": "admin"})))
        .await;
    assert_eq!(status, 201);
    let eve = c.login("eve", "eve-password-1").await;
    let mut eve_stream = live_stream(&c, &eve).await;

    // Removed: the token stops at once, and the open stream ends.
    let r = c.http.delete(c.url("/api/users/eve")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let (status, body) = c
        .post("/api/users", &eve, Some(json!({"username": "mallory", "password": "mallory-pw-1", "role": "admin"})))
        .await;
    assert_eq!(status, 401, "a removed admin's token made a user: {body}");
    assert!(body["message"].as_str().unwrap().contains("no longer exists"), "{body}");
    assert_eq!(close_code(&mut eve_stream, Duration::from_secs(3)).await, Some(4001));

    // Made again under the same name: the old token does not come back to life.
    let (status, _) = c
        .post("/api/users", &admin, Some(json!({"username": "eve", "password": "eve-password-2", "role": "admin"})))
        .await;
    assert_eq!(status, 201);
    assert_eq!(c.get("/api/users", &eve).await.0, 401);

    // A password changed elsewhere (the CLI, another process) ends earlier tokens within
    // seconds, and their streams with them.
    let pat = c.login("pat", &new_user(dir.path(), "pat", "operator")).await;
    let mut pat_stream = live_stream(&c, &pat).await;
    assert_eq!(c.get("/api/auth/me", &pat).await.0, 200);
    // A renewed token (`procyon watch` renews while in use) is the same session: it
    // works, and it ends with everything else the password change ends.
    let (status, renewed) = c.post("/api/auth/refresh", &pat, None).await;
    assert_eq!((status, &renewed["username"], &renewed["role"]), (200, &json!("pat"), &json!("operator")));
    let renewed = renewed["token"].as_str().unwrap().to_owned();
    assert_eq!(c.get("/api/auth/me", &renewed).await.0, 200);
    cli(dir.path(), &["user", "passwd", "pat", "--password-stdin"], Some("a-new-password-0\n"));
    assert!(eventually(Duration::from_secs(10), async || c.get("/api/auth/me", &pat).await.0 == 401).await);
    assert!(eventually(Duration::from_secs(10), async || c.get("/api/auth/me", &renewed).await.0 == 401).await);
    assert_eq!(c.post("/api/auth/refresh", &renewed, None).await.0, 401, "an ended session cannot be renewed");
    assert_eq!(close_code(&mut pat_stream, Duration::from_secs(10)).await, Some(4001));
    let pat = c.login("pat", "a-new-password-0").await;

    // A role changed: the role is the database's, and earlier tokens end.
    let (_, me) = c.get("/api/auth/me", &pat).await;
    assert_eq!(me["role"], "operator");
    cli(dir.path(), &["user", "role", "pat", "viewer"], None);
    assert!(eventually(Duration::from_secs(10), async || c.get("/api/auth/me", &pat).await.0 == 401).await);
    let pat = c.login("pat", "a-new-password-0").await;
    assert_eq!(c.get("/api/auth/me", &pat).await.1["role"], "viewer");
    let (status, _) = c.post("/api/monitoring/1/process/1/kill", &pat, None).await;
    assert_eq!(status, 403);

    // The last admin cannot be removed or demoted.
    let r = c.http.delete(c.url("/api/users/eve")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 204);
    for args in [&["user", "remove", "admin"][..], &["user", "role", "admin", "viewer"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_procyon"))
            .args(args)
            .arg("--data")
            .arg(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was done");
        // Refused, and saying how to get out of it.
        assert!(
            stderr.contains("last admin") && stderr.contains("procyon user add NAME --role admin"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(c.get("/api/auth/me", &admin).await.0, 200, "the admin is still signed in, still an admin");
    assert_eq!(c.get("/api/auth/me", &admin).await.1["role"], "admin");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewed_token_is_the_same_session_and_ends_with_the_account() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let pat = c.login("pat", &new_user(dir.path(), "pat", "operator")).await;
    let (status, body) = c.post("/api/auth/refresh", &pat, None).await;
    assert_eq!(status, 200, "{body}");
    let renewed = body["token"].as_str().unwrap().to_owned();
    assert_eq!((body["username"].as_str(), body["role"].as_str()), (Some("pat"), Some("operator")));
    assert_eq!(c.get("/api/auth/me", &renewed).await.0, 200);
    // Renewing is no way to outlive a password change: both tokens end.
    cli(dir.path(), &["user", "passwd", "pat", "--password-stdin"], Some("a-new-password-0\n"));
    assert!(eventually(Duration::from_secs(10), async || c.get("/api/auth/me", &renewed).await.0 == 401).await);
    assert_eq!(c.post("/api/auth/refresh", &pat, None).await.0, 401);
    assert_eq!(c.post("/api/auth/refresh", &renewed, None).await.0, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_lifetimes_are_capped() {
    let dir = temp();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_procyon"))
        .args(["serve", "--bind", "127.0.0.1:0", "--no-local", "--token-ttl", "30days", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token-ttl"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_are_bound_to_their_key_and_machine() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let admin = c.admin_token().await;
    let fleet = new_key(dir.path(), "fleet", None);
    let other = new_key(dir.path(), "other", None);
    let (m1, m2) = ("a1".repeat(32), "b2".repeat(32));

    let (mut real, welcome) = agent_hello(&c, &fleet, "web-1", Some(&m1)).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let frame = json!({"type": "snapshot", "snapshot": full_snapshot("web-1", 1)});
    real.send(Message::Text(frame.to_string().into())).await.unwrap();
    assert_eq!(next_json(&mut real).await["type"], "ack");

    // A hand-written client with another key says hello as web-1 (even claiming the
    // real machine's fingerprint): refused, naming why.
    let (_, answer) = agent_hello(&c, &other, "web-1", Some(&m1)).await;
    assert_eq!((answer["type"].as_str(), answer["code"].as_str()), (Some("error"), Some("forbidden")), "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("another API key"), "{answer}");
    // Leaving the fingerprint out is no way around it, not even with the host's own key.
    let (_, answer) = agent_hello(&c, &fleet, "web-1", None).await;
    assert_eq!(answer["code"], "forbidden", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("carries none"), "{answer}");
    // The same fleet key from another machine (a cloned VM): refused, with the fix.
    let (_, answer) = agent_hello(&c, &fleet, "web-1", Some(&m2)).await;
    assert_eq!(answer["code"], "forbidden", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("--hostname"), "{answer}");
    // Nor by upload.
    let (status, body) = c.upload(&other, full_snapshot("web-1", 1).to_string()).await;
    assert_eq!(status, 403, "{body}");

    // The real agent still holds the host: an admin's action reaches it, not a forger.
    let act = tokio::spawn({
        let (url, admin) =
            (c.url("/api/monitoring/web-1/process/4242/kill?start_time=2020-01-01T00:00:00Z"), admin.clone());
        async move { reqwest::Client::new().post(url).bearer_auth(admin).send().await.unwrap().status().as_u16() }
    });
    let request = next_json(&mut real).await;
    assert_eq!((request["type"].as_str(), request["pid"].as_u64()), (Some("action"), Some(4242)), "{request}");
    // An answer to a request id this session was not sent is refused as a bad frame.
    let forged = json!({"type": "action_result", "request_id": request["request_id"].as_u64().unwrap() ^ 1,
        "done": {"process_name": "x", "signalled": 1}});
    real.send(Message::Text(forged.to_string().into())).await.unwrap();
    assert_eq!(next_json(&mut real).await["code"], "bad_frame");
    let reply = json!({"type": "action_result", "request_id": request["request_id"],
        "error": {"code": "not_found", "message": "gone"}});
    real.send(Message::Text(reply.to_string().into())).await.unwrap();
    assert_eq!(act.await.unwrap(), 404);

    // The same agent restarting replaces its old session.
    let (_, welcome) = agent_hello(&c, &fleet, "web-1", Some(&m1)).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(close_code(&mut real, Duration::from_secs(5)).await, Some(4009));

    // Admins see the binding and can reset it; viewers cannot.
    let (status, binding) = c.get("/api/hosts/web-1/binding", &admin).await;
    assert_eq!((status, binding["machine_id"].as_str()), (200, Some(m1.as_str())), "{binding}");
    let viewer = c.login("vic", &new_user(dir.path(), "vic", "viewer")).await;
    assert_eq!(c.get("/api/hosts/web-1/binding", &viewer).await.0, 403);
    let r = c.http.delete(c.url("/api/hosts/web-1/binding")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let (mut moved, welcome) = agent_hello(&c, &other, "web-1", Some(&m2)).await;
    assert_eq!(welcome["type"], "welcome", "after a reset the next agent binds the host: {welcome}");

    // Revoking a key ends its sessions within seconds.
    let r = c.http.delete(c.url("/api/keys/other")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(close_code(&mut moved, Duration::from_secs(10)).await, Some(4003));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_without_a_start_time_is_never_named_by_a_made_up_one() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let admin = c.admin_token().await;
    let key = new_key(dir.path(), "k", None);
    let (mut agent, welcome) = agent_hello(&c, &key, "blind-1", Some(&"c3".repeat(32))).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    // A snapshot whose processes have no start time (as a short upload's have none).
    let mut snapshot = full_snapshot("blind-1", 1);
    for p in snapshot["processes"].as_array_mut().unwrap() {
        p["start_time"] = Value::Null;
    }
    let pid = snapshot["processes"][0]["pid"].as_u64().unwrap();
    let frame = json!({"type": "snapshot", "snapshot": snapshot});
    agent.send(Message::Text(frame.to_string().into())).await.unwrap();
    assert_eq!(next_json(&mut agent).await["type"], "ack");

    // An action without a start time of the caller's: the collector has none to give
    // either, and passes on that it has none (the agent refuses such requests).
    let act = tokio::spawn({
        let (url, admin) = (c.url(&format!("/api/monitoring/blind-1/process/{pid}/kill")), admin.clone());
        async move { reqwest::Client::new().post(url).bearer_auth(admin).send().await.unwrap().status().as_u16() }
    });
    let request = next_json(&mut agent).await;
    assert_eq!((request["type"].as_str(), request["pid"].as_u64()), (Some("action"), Some(pid)), "{request}");
    assert!(request["start_time"].is_null(), "a start time was made up: {request}");
    let reply = json!({"type": "action_result", "request_id": request["request_id"],
        "error": {"code": "pid_reused", "message": "no start time"}});
    agent.send(Message::Text(reply.to_string().into())).await.unwrap();
    assert_eq!(act.await.unwrap(), 409);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_may_not_be_the_collectors_own_machine() {
    let dir = temp();
    let c = Collector::start(dir.path(), &[]);
    let key = new_key(dir.path(), "k", None);
    let own = procyon::sample::Sampler::new(Default::default()).host().hostname.clone();
    let (_, answer) = agent_hello(&c, &key, &own, None).await;
    assert_eq!(answer["code"], "forbidden", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("own machine"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sequence_numbers_cannot_freeze_a_hosts_history() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let token = c.admin_token().await;
    let key = new_key(dir.path(), "k", None);
    let (status, body) = c.upload(&key, full_snapshot("db-1", 1).to_string()).await;
    assert_eq!(status, 201, "{body}");

    // The reproduced poison: seq = u64::MAX. Refused, naming the field.
    let (status, body) = c.upload(&key, full_snapshot("db-1", u64::MAX).to_string()).await;
    assert_eq!((status, body["field"].as_str()), (422, Some("seq")), "{body}");
    // Far ahead of the host's history.
    let (status, body) = c.upload(&key, full_snapshot("db-1", i64::MAX as u64 - 1).to_string()).await;
    assert_eq!((status, body["field"].as_str()), (422, Some("seq")), "{body}");
    // The same seq with other content is a conflict, not a silent duplicate ...
    let mut other = full_snapshot("db-1", 1);
    other["processes"].as_array_mut().unwrap().truncate(1);
    let (status, body) = c.upload(&key, other.to_string()).await;
    assert_eq!(status, 409, "{body}");
    // ... and history goes on.
    let (status, body) = c.upload(&key, full_snapshot("db-1", 2).to_string()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(c.stored_count(&token).await, 2);

    // A key that does not own the host learns nothing of its history: whatever the seq,
    // the answer is the same 403, before the seq is looked at.
    let other = new_key(dir.path(), "other", None);
    for seq in [3, i64::MAX as u64 - 1, u64::MAX] {
        let (status, body) = c.upload(&other, full_snapshot("db-1", seq).to_string()).await;
        assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")), "seq {seq}: {body}");
    }
    assert_eq!(c.stored_count(&token).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_uploads_are_refused_and_change_nothing() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local", "--keep-hours", "90days"]);
    let token = c.admin_token().await;
    let key = new_key(dir.path(), "k", None);
    let (_, hosts_before) = c.get("/api/hosts/", &token).await;

    for (body, field) in [
        (r#"{"hostname":"../../etc/passwd","processes":[]}"#.to_owned(), "hostname"),
        (r#"{"hostname":"h","processes":[{"pid":1,"name":"a"},{"pid":1,"name":"b"}]}"#.to_owned(), "processes"),
        (r#"{"hostname":"h","snapshot_time":"0000-01-01T00:00:00Z","processes":[]}"#.to_owned(), "taken_at"),
        // The seed document's own example is older than 90 days of history.
        (SEED_EXAMPLE.to_owned(), "taken_at"),
    ] {
        let (status, answer) = c.upload(&key, body.clone()).await;
        assert_eq!((status, answer["field"].as_str()), (422, Some(field)), "{body}: {answer}");
    }
    // Host facts that would forge a log line, or bloat every read of the host.
    for (field, value) in [("agent_version", json!("1.0\nERROR forged")), ("os", json!("x".repeat(4096)))] {
        let mut snap = full_snapshot("facts", 1);
        snap["host"][field] = value;
        let (status, answer) = c.upload(&key, snap.to_string()).await;
        let field = format!("host.{field}");
        assert_eq!((status, answer["field"].as_str()), (422, Some(field.as_str())), "{answer}");
    }
    let (_, hosts_after) = c.get("/api/hosts/", &token).await;
    assert_eq!(hosts_before, hosts_after);

    // A valid seed-style tree a thousand levels deep is stored.
    let mut tree = String::from(r#"{"hostname":"deep","processes":["#);
    for i in 0..1000 {
        tree.push_str(&format!(r#"{{"pid":{},"name":"p","children":["#, i + 1));
    }
    tree.push_str(&"]}".repeat(1000));
    tree.push_str("]}");
    let (status, body) = c.upload(&key, tree).await;
    assert_eq!(status, 201, "{body}");

    // Hosts can be deleted with their history, by admins only.
    let viewer = c.login("vi", &new_user(dir.path(), "vi", "viewer")).await;
    let delete = async |token: &str| {
        c.http.delete(c.url("/api/hosts/deep")).bearer_auth(token).send().await.unwrap().status().as_u16()
    };
    assert_eq!(delete(&viewer).await, 403);
    assert_eq!(delete(&token).await, 204);
    assert_eq!(delete(&token).await, 404);
    assert_eq!(c.get("/api/process-snapshots/latest/?hostname=deep", &token).await.0, 404);
    assert_eq!(c.stored_count(&token).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_is_throttled_per_address_and_bounded() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let password = c.admin_password.clone().unwrap();
    let from =
        |ip: &str| reqwest::Client::builder().local_address(ip.parse::<std::net::IpAddr>().unwrap()).build().unwrap();
    let attacker = from("127.0.0.2");
    let login = async |client: &reqwest::Client, name: &str, password: &str| {
        client
            .post(c.url("/api/auth/login"))
            .json(&json!({"username": name, "password": password}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    // A name too long is refused before any work.
    assert_eq!(login(&attacker, &"a".repeat(65), "x").await, 422);
    // Five failures as `ADMIN` from one address lock that address out ...
    for _ in 0..5 {
        assert_eq!(login(&attacker, "ADMIN", "wrong").await, 401);
    }
    assert_eq!(login(&attacker, "admin", &password).await, 429);
    // ... and nobody else: the real admin signs in from elsewhere.
    assert_eq!(login(&from("127.0.0.1"), "admin", &password).await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_tickets_work_once_and_keep_tokens_out_of_urls() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let token = c.admin_token().await;
    let (status, body) = c.post("/api/auth/ws-ticket", &token, None).await;
    assert_eq!(status, 200, "{body}");
    let ticket = body["ticket"].as_str().unwrap().to_owned();
    let url = format!("{}?ticket={ticket}", c.ws_url("/ws/process-snapshots/"));
    assert!(tokio_tungstenite::connect_async(&url).await.is_ok());
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("a used ticket opened a socket: {other:?}"),
    }
    // Tickets (and tokens) in URLs are for WebSockets only.
    let (status, _) = c.post("/api/auth/ws-ticket", &token, None).await;
    assert_eq!(status, 200);
    let r = c.http.get(c.url(&format!("/api/hosts/?token={token}"))).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_bound_without_a_fingerprint_cannot_be_taken_over() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let admin = c.admin_token().await;
    let fleet = new_key(dir.path(), "fleet", None);
    let m2 = "c3".repeat(32);
    // Bound by a seed-style upload (no fingerprint), then its agent connects without one
    // (an old agent, or a machine without /etc/machine-id).
    let seed =
        json!({"hostname": "web-1", "snapshot_time": chrono::Utc::now(), "processes": [{"pid": 1, "name": "a"}]});
    assert_eq!(c.upload(&fleet, seed.to_string()).await.0, 201);
    let (mut real, welcome) = agent_hello(&c, &fleet, "web-1", None).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");

    // Another holder of the fleet key says hello as web-1: without a fingerprint it
    // cannot show it is the same machine, so the live session stays the real one's ...
    let (_, answer) = agent_hello(&c, &fleet, "web-1", None).await;
    assert_eq!(answer["code"], "conflict", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("procyon host unbind web-1"), "{answer}");
    // ... and with a made-up fingerprint it neither gets the host nor binds it.
    let (_, answer) = agent_hello(&c, &fleet, "web-1", Some(&m2)).await;
    assert_eq!(answer["code"], "conflict", "{answer}");
    let (_, binding) = c.get("/api/hosts/web-1/binding", &admin).await;
    assert_eq!(binding["machine_id"], Value::Null, "{binding}");
    // Nor by upload while the real agent is connected.
    let r = c
        .http
        .post(c.url("/api/process-snapshots/"))
        .header("Authorization", format!("Api-Key {fleet}"))
        .header("Procyon-Machine-Id", &m2)
        .json(&full_snapshot("web-1", 5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("procyon host unbind web-1"));

    // The real agent still gets the host's relayed actions.
    let act = tokio::spawn({
        let (url, admin) =
            (c.url("/api/monitoring/web-1/process/4242/kill?start_time=2020-01-01T00:00:00Z"), admin.clone());
        async move { reqwest::Client::new().post(url).bearer_auth(admin).send().await.unwrap().status().as_u16() }
    });
    let request = next_json(&mut real).await;
    assert_eq!((request["type"].as_str(), request["pid"].as_u64()), (Some("action"), Some(4242)), "{request}");
    let reply = json!({"type": "action_result", "request_id": request["request_id"],
        "error": {"code": "not_found", "message": "gone"}});
    real.send(Message::Text(reply.to_string().into())).await.unwrap();
    assert_eq!(act.await.unwrap(), 404);

    // Once no session is live, the first fingerprint reported takes the host: logged and
    // audited, naming the key and how to undo it.
    drop(real);
    let mut welcome = Value::Null;
    for _ in 0..50 {
        welcome = agent_hello(&c, &fleet, "web-1", Some(&m2)).await.1;
        if welcome["type"] == "welcome" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let (_, binding) = c.get("/api/hosts/web-1/binding", &admin).await;
    assert_eq!(binding["machine_id"].as_str(), Some(m2.as_str()), "{binding}");
    let (_, audit) = c.get("/api/audit?host=web-1", &admin).await;
    let entry = audit.as_array().unwrap().iter().find(|e| e["action"] == "bind_machine").cloned().unwrap_or_default();
    assert_eq!(entry["actor"], "apikey:fleet", "{audit}");
    assert!(entry["message"].as_str().unwrap().contains("procyon host unbind web-1"), "{entry}");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_names_differing_only_in_case_or_starting_with_a_dash_are_refused() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let token = c.admin_token().await;
    let key = new_key(dir.path(), "k", None);
    let other = new_key(dir.path(), "other", None);
    let seed = |name: &str| {
        json!({"hostname": name, "snapshot_time": chrono::Utc::now(), "processes": [{"pid": 1, "name": "a"}]})
            .to_string()
    };
    assert_eq!(c.upload(&key, seed("web-1")).await.0, 201);
    for (k, name) in [(&key, "WEB-1"), (&other, "Web-1")] {
        let (status, body) = c.upload(k, seed(name)).await;
        assert_eq!((status, body["field"].as_str()), (422, Some("hostname")), "{name}: {body}");
        assert!(body["message"].as_str().unwrap().contains("`web-1`"), "{body}");
    }
    let (_, answer) = agent_hello(&c, &other, "wEb-1", Some(&"d4".repeat(32))).await;
    assert_eq!(answer["code"], "invalid", "{answer}");
    let (status, body) = c.upload(&key, seed("-web")).await;
    assert_eq!((status, body["field"].as_str()), (422, Some("hostname")), "{body}");
    let (_, hosts) = c.get("/api/hosts/", &token).await;
    assert_eq!(hosts.as_array().unwrap().len(), 1, "{hosts}");
}

/// Made-up hosts with the largest snapshots allowed cannot exhaust the collector's
/// memory: past `--max-live-memory-mib`, hosts it does not hold yet are refused with 503,
/// while the hosts it holds go on.
#[tokio::test(flavor = "multi_thread")]
async fn new_hosts_past_the_live_memory_budget_are_refused_and_held_ones_go_on() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local", "--max-live-memory-mib", "16"]);
    let token = c.admin_token().await;
    let key = new_key(dir.path(), "fleet", None);
    // About 4 MiB held per host: 2,000 processes with 2,000-character command lines.
    let big = |name: &str| {
        let processes: Vec<Value> = (1..=2000)
            .map(|pid| json!({"pid": pid, "name": "worker", "cmd": format!("worker {}", "x".repeat(2000))}))
            .collect();
        json!({"hostname": name, "snapshot_time": chrono::Utc::now(), "processes": processes}).to_string()
    };
    let mut stored = Vec::new();
    let mut refused = None;
    for i in 0..8 {
        let name = format!("made-up-{i}");
        let (status, body) = c.upload(&key, big(&name)).await;
        match status {
            201 => stored.push(name),
            503 => {
                assert_eq!(body["error"], "busy", "{body}");
                assert!(body["message"].as_str().unwrap().contains("--max-live-memory-mib 16"), "{body}");
                refused = Some(name);
                break;
            }
            other => panic!("{name}: {other} {body}"),
        }
    }
    let refused = refused.expect("a new host is refused once the budget is used");
    assert!((2..=4).contains(&stored.len()), "about 16 MiB of 4 MiB hosts: {stored:?}");
    // A host already held goes on; the refused one stored nothing.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(c.upload(&key, big(&stored[0])).await.0, 201);
    let (_, hosts) = c.get("/api/hosts/", &token).await;
    let names: Vec<&str> = hosts.as_array().unwrap().iter().filter_map(|h| h["hostname"].as_str()).collect();
    assert!(!names.contains(&refused.as_str()) && names.len() == stored.len(), "{names:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn relayed_actions_have_unpredictable_ids_and_only_their_session_answers() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let admin = c.admin_token().await;
    let fleet = new_key(dir.path(), "fleet", None);
    let (mut web1, welcome) = agent_hello(&c, &fleet, "web-1", Some(&"a1".repeat(32))).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let (mut web2, welcome) = agent_hello(&c, &fleet, "web-2", Some(&"b2".repeat(32))).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let frame = json!({"type": "snapshot", "snapshot": full_snapshot("web-1", 1)});
    web1.send(Message::Text(frame.to_string().into())).await.unwrap();
    assert_eq!(next_json(&mut web1).await["type"], "ack");
    let kill = |pid: u32| {
        let url = c.url(&format!("/api/monitoring/web-1/process/{pid}/kill?start_time=2020-01-01T00:00:00Z"));
        let admin = admin.clone();
        tokio::spawn(async move {
            reqwest::Client::new().post(url).bearer_auth(admin).send().await.unwrap().status().as_u16()
        })
    };

    let mut ids = Vec::new();
    for pid in [4001, 4002, 4003] {
        let act = kill(pid);
        let request = next_json(&mut web1).await;
        assert_eq!((request["type"].as_str(), request["pid"].as_u64()), (Some("action"), Some(u64::from(pid))));
        let id = request["request_id"].as_u64().unwrap();
        ids.push(id);
        if pid == 4001 {
            // Another session (another host of the same key) answers web-1's request:
            // refused, and the request still waits for its own session's answer.
            let forged = json!({"type": "action_result", "request_id": id,
                "done": {"process_name": "forged", "signalled": 1}});
            web2.send(Message::Text(forged.to_string().into())).await.unwrap();
            let answer = next_json(&mut web2).await;
            assert_eq!(answer["code"], "bad_frame", "{answer}");
        }
        let reply = json!({"type": "action_result", "request_id": id,
            "error": {"code": "not_found", "message": "gone"}});
        web1.send(Message::Text(reply.to_string().into())).await.unwrap();
        assert_eq!(act.await.unwrap(), 404, "the answer of the session the request went out on");
    }
    // Ids nobody can guess from the ones seen: not a count, spread over 64 bits.
    assert!(ids.windows(2).all(|w| w[0].abs_diff(w[1]) > 1_000), "{ids:?}");
    assert!(ids.iter().any(|&id| id > u64::from(u32::MAX)), "{ids:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn what_agents_say_cannot_forge_or_flood_a_log_line() {
    let dir = temp();
    let log = dir.path().join("collector.log");
    let c = Collector::start_logging(dir.path(), &["--no-local"], Some(&log));
    let key = new_key(dir.path(), "k", None);
    // A hello whose version holds a forged line and most of a hello (64 KiB) of text, and
    // a drop report whose reason holds one and most of a frame (32 MiB).
    let short_filler = "v".repeat(procyon::server::agents::MAX_HELLO_BYTES - 4096);
    let filler = "v".repeat(procyon::model::agent::MAX_FRAME_BYTES / 2);
    let mut request = c.ws_url("/ws/agent").as_str().into_client_request().unwrap();
    request.headers_mut().insert("Authorization", format!("Api-Key {key}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut host = procyon::sample::Sampler::new(Default::default()).host().clone();
    host.hostname = "chatty".into();
    let hello = json!({"type": "hello", "protocol": PROTOCOL_VERSION,
        "agent_version": format!("1.0\nERROR FORGED-VERSION-LINE {short_filler}"), "host": host, "allow_control": false});
    ws.send(Message::Text(hello.to_string().into())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    let dropped =
        json!({"type": "dropped", "count": 3, "reason": format!("disk full\nERROR FORGED-REASON-LINE {filler}")});
    ws.send(Message::Text(dropped.to_string().into())).await.unwrap();
    let logged = |text: String| text.contains("FORGED-REASON-LINE");
    assert!(
        eventually(Duration::from_secs(10), async || logged(std::fs::read_to_string(&log).unwrap_or_default())).await,
        "the drop report was logged"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    for line in text.lines() {
        let start: String = line.chars().take(120).collect();
        assert!(!line.trim_start().starts_with("ERROR FORGED"), "a forged log line: {start}");
        assert!(line.len() < 2048, "a log line of {} bytes: {start}", line.len());
    }
    assert!(text.contains("FORGED-VERSION-LINE"), "the version was logged, escaped");
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_attempts_cannot_flood_the_audit_log() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let admin = c.admin_token().await;
    let viewer = c.login("vic", &new_user(dir.path(), "vic", "viewer")).await;
    for pid in 0..100 {
        let (status, _) = c.post(&format!("/api/monitoring/web-1/process/{pid}/kill"), &viewer, None).await;
        assert_eq!(status, 403);
    }
    let (_, audit) = c.get("/api/audit?limit=1000", &admin).await;
    let refused = audit.as_array().unwrap().iter().filter(|e| e["actor"] == "vic").count();
    assert!((1..=2).contains(&refused), "{refused} audit rows for 100 refused attempts");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_account_can_be_named_like_the_desktop_user() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let admin = c.admin_token().await;
    let (status, body) = c
        .post(
            "/api/users",
            &admin,
            Some(json!({"username": "desktop:ada", "password": "long enough 1", "role": "admin"})),
        )
        .await;
    assert_eq!((status, body["field"].as_str()), (422, Some("username")), "{body}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_procyon"))
        .args(["user", "add", "desktop:ada", "--role", "admin", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the CLI made `desktop:ada`");
    let (_, users) = c.get("/api/users", &admin).await;
    assert!(users.as_array().unwrap().iter().all(|u| !u["username"].as_str().unwrap().contains(':')), "{users}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_stored_under_names_no_longer_accepted_can_be_read_and_deleted() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let admin = c.admin_token().await;
    // As an older version stored them, before host names were checked.
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.path().join("procyon.db").display())).await.unwrap();
    for name in ["../x", "a b"] {
        sqlx::query("INSERT INTO hosts (hostname, first_seen, last_seen, last_taken_at) VALUES (?, 0, 0, 0)")
            .bind(name)
            .execute(&db)
            .await
            .unwrap();
    }
    db.close().await;
    let (status, hosts) = c.get("/api/hosts/", &admin).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = hosts.as_array().unwrap().iter().map(|h| h["hostname"].as_str().unwrap()).collect();
    assert_eq!(names, ["../x", "a b"]);
    let id_of_a_b = hosts[1]["id"].as_i64().unwrap();
    // Read by name (the path-unsafe one percent-encoded) ...
    let (status, body) = c.get("/api/process-snapshots/list/?hostname=..%2Fx", &admin).await;
    assert_eq!((status, body), (200, json!([])));
    // ... and deleted by name or by id.
    let delete =
        async |path: &str| c.http.delete(c.url(path)).bearer_auth(&admin).send().await.unwrap().status().as_u16();
    assert_eq!(delete("/api/hosts/..%2Fx").await, 204);
    assert_eq!(delete(&format!("/api/hosts/{id_of_a_b}")).await, 204);
    let (_, hosts) = c.get("/api/hosts/", &admin).await;
    assert_eq!(hosts, json!([]));
}

/// An upload of `snapshot` with `key`, from the machine `machine_id` when given.
async fn upload_from(c: &Collector, key: &str, machine_id: Option<&str>, snapshot: &Value) -> (u16, String) {
    let mut request = c.http.post(c.url("/api/process-snapshots/")).header("Authorization", format!("Api-Key {key}"));
    if let Some(m) = machine_id {
        request = request.header("Procyon-Machine-Id", m);
    }
    let r = request.json(snapshot).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// `procyon ARGS --data DIR`, expected to fail: its standard error.
fn cli_fails(data: &std::path::Path, args: &[&str]) -> String {
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_procyon")).args(args).arg("--data").arg(data).output().unwrap();
    assert!(!out.status.success(), "procyon {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_bound_without_a_fingerprint_takes_its_own_keys_first_fingerprint_once() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let admin = c.admin_token().await;
    let fleet = new_key(dir.path(), "fleet", None);
    let other_fleet = new_key(dir.path(), "other-fleet", None);
    let (m1, m2) = ("d4".repeat(32), "e5".repeat(32));
    // First seen from a seed-style upload: bound to its key, with no fingerprint.
    let seed =
        json!({"hostname": "web-1", "snapshot_time": chrono::Utc::now(), "processes": [{"pid": 1, "name": "a"}]});
    assert_eq!(c.upload(&fleet, seed.to_string()).await.0, 201);

    // An agent with a fingerprint on another fleet key cannot take it over, by upload or
    // hello, and binds nothing.
    let (status, body) = upload_from(&c, &other_fleet, Some(&m1), &full_snapshot("web-1", 10)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("another API key"), "{body}");
    let (_, answer) = agent_hello(&c, &other_fleet, "web-1", Some(&m1)).await;
    assert_eq!(answer["code"], "forbidden", "{answer}");
    let (_, binding) = c.get("/api/hosts/web-1/binding", &admin).await;
    assert_eq!((binding["key_name"].as_str(), &binding["machine_id"]), (Some("fleet"), &Value::Null), "{binding}");

    // Its own key adding a fingerprint binds it, once ...
    let (status, body) = upload_from(&c, &fleet, Some(&m1), &full_snapshot("web-1", 11)).await;
    assert_eq!(status, 201, "{body}");
    let (_, binding) = c.get("/api/hosts/web-1/binding", &admin).await;
    assert_eq!(binding["machine_id"].as_str(), Some(m1.as_str()), "{binding}");
    // ... so the host is no longer open to any fingerprint, nor to none.
    let (status, body) = upload_from(&c, &fleet, Some(&m2), &full_snapshot("web-1", 12)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("--hostname"), "{body}");
    let (_, answer) = agent_hello(&c, &fleet, "web-1", Some(&m2)).await;
    assert_eq!(answer["code"], "forbidden", "{answer}");
    let (status, body) = upload_from(&c, &fleet, None, &full_snapshot("web-1", 12)).await;
    assert_eq!(status, 403, "{body}");
    let (_, binding) = c.get("/api/hosts/web-1/binding", &admin).await;
    assert_eq!(binding["machine_id"].as_str(), Some(m1.as_str()), "{binding}");
    // The machine that bound it goes on reporting.
    let (status, body) = upload_from(&c, &fleet, Some(&m1), &full_snapshot("web-1", 12)).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_made_for_a_host_reserves_it_and_admins_bind_and_unbind_hosts() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let admin = c.admin_token().await;
    let fleet = new_key(dir.path(), "fleet", None);
    // Made for web-1: the host is bound to it at once, before any agent reported it ...
    let own = new_key(dir.path(), "web1-key", Some("web-1"));
    let (status, binding) = c.get("/api/hosts/web-1/binding", &admin).await;
    assert_eq!((status, binding["key_name"].as_str()), (200, Some("web1-key")), "{binding}");
    // ... so a fleet key cannot claim the name first.
    let (status, body) = upload_from(&c, &fleet, Some(&"a1".repeat(32)), &full_snapshot("web-1", 1)).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = upload_from(&c, &own, Some(&"a1".repeat(32)), &full_snapshot("web-1", 1)).await;
    assert_eq!(status, 201, "{body}");
    // A second key for a host another live key holds is refused, and not made.
    let err = cli_fails(dir.path(), &["apikey", "create", "--name", "web1-again", "--host", "web-1"]);
    assert!(err.contains("bound to the live API key `web1-key`"), "{err}");
    assert!(!cli(dir.path(), &["apikey", "list"], None).contains("web1-again"));
    let err = cli_fails(dir.path(), &["apikey", "create", "--name", "bad", "--host", "../etc"]);
    assert!(err.contains("is not a host name"), "{err}");
    // The same through the API.
    let (status, body) = c.post("/api/keys", &admin, Some(json!({"name": "web2-key", "hostname": "web-2"}))).await;
    assert_eq!(status, 201, "{body}");
    let (_, binding) = c.get("/api/hosts/web-2/binding", &admin).await;
    assert_eq!(binding["key_name"], "web2-key", "{binding}");
    let (status, body) = c.post("/api/keys", &admin, Some(json!({"name": "web2-again", "hostname": "web-2"}))).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("host_bound")), "{body}");
    // Once the old key is revoked, a new key made for the host takes it (a rotation).
    cli(dir.path(), &["apikey", "revoke", "web2-key"], None);
    new_key(dir.path(), "web2-new", Some("web-2"));
    let (_, binding) = c.get("/api/hosts/web-2/binding", &admin).await;
    assert_eq!(binding["key_name"], "web2-new", "{binding}");

    // Unbinding from the CLI is audited; a live key made for the host still holds it.
    cli(dir.path(), &["host", "unbind", "web-1"], None);
    let (status, _) = c.get("/api/hosts/web-1/binding", &admin).await;
    assert_eq!(status, 404);
    let (status, body) = upload_from(&c, &fleet, Some(&"b2".repeat(32)), &full_snapshot("web-1", 2)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("reserved for the API key `web1-key`"), "{body}");

    // An admin binds a host to a key from the CLI (audited), not to a key made for
    // another host.
    let out = cli(dir.path(), &["host", "bind", "web-3", "--key", "fleet"], None);
    assert!(out.contains("web-3 is bound to API key `fleet`"), "{out}");
    let err = cli_fails(dir.path(), &["host", "bind", "web-3", "--key", "web1-key"]);
    assert!(err.contains("made for host `web-1`"), "{err}");
    let err = cli_fails(dir.path(), &["host", "bind", "web-3", "--key", "no-such-key"]);
    assert!(err.contains("not found"), "{err}");
    // An agent reporting as it is cut off within seconds when the CLI moves the host to
    // another key (the machine fingerprint stays with the host).
    let m3 = "c4".repeat(32);
    let (mut agent, welcome) = agent_hello(&c, &fleet, "web-3", Some(&m3)).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let other = new_key(dir.path(), "other", None);
    cli(dir.path(), &["host", "bind", "web-3", "--key", "other"], None);
    assert_eq!(close_code(&mut agent, Duration::from_secs(15)).await, Some(4003));
    let (_, binding) = c.get("/api/hosts/web-3/binding", &admin).await;
    assert_eq!((binding["key_name"].as_str(), binding["machine_id"].as_str()), (Some("other"), Some(m3.as_str())));
    // ... and through the API: PUT moves it back, with the audit.
    let r = c
        .http
        .put(c.url("/api/hosts/web-3/binding"))
        .bearer_auth(&admin)
        .json(&json!({"key": "fleet"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let binding: Value = r.json().await.unwrap();
    assert_eq!(binding["key_name"], "fleet", "{binding}");
    let (status, body) = upload_from(&c, &other, Some(&m3), &full_snapshot("web-3", 1)).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = upload_from(&c, &fleet, Some(&m3), &full_snapshot("web-3", 1)).await;
    assert_eq!(status, 201, "{body}");
    let r =
        c.http.put(c.url("/api/hosts/web-3/binding")).bearer_auth(&admin).json(&json!({"key": "nope"})).send().await;
    assert_eq!(r.unwrap().status(), 404);

    let (_, audit) = c.get("/api/audit?limit=100", &admin).await;
    let rows: Vec<(String, String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().into(),
                e["hostname"].as_str().unwrap().into(),
                e["actor"].as_str().unwrap().into(),
            )
        })
        .collect();
    let has = |action: &str, host: &str, actor: &dyn Fn(&str) -> bool| {
        rows.iter().any(|(a, h, who)| a == action && h == host && actor(who))
    };
    assert!(has("unbind_host", "web-1", &|who| who.starts_with("cli:")), "{rows:?}");
    assert!(has("bind_host", "web-3", &|who| who.starts_with("cli:")), "{rows:?}");
    assert!(has("bind_host", "web-3", &|who| who == "admin"), "{rows:?}");
    assert_eq!(rows.iter().filter(|(a, ..)| a == "bind_host").count(), 3, "refused binds are not audited: {rows:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cloned_machines_are_refused_and_logged_once_a_minute_per_host() {
    let dir = temp();
    let log = dir.path().join("collector.log");
    let c = Collector::start_logging(dir.path(), &["--no-local"], Some(&log));
    let fleet = new_key(dir.path(), "fleet", None);
    let (m1, m2) = ("f6".repeat(32), "07".repeat(32));
    let (mut first, welcome) = agent_hello(&c, &fleet, "web-1", Some(&m1)).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");

    // The clone (same name, same key, another machine) retries quickly, by hello and by
    // upload: refused every time, naming both machines and the fix ...
    for _ in 0..20 {
        let (_, answer) = agent_hello(&c, &fleet, "web-1", Some(&m2)).await;
        assert_eq!(answer["code"], "forbidden", "{answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(&m1[..12]) && message.contains(&m2[..12]) && message.contains("--hostname"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for seq in 0..5 {
        assert_eq!(upload_from(&c, &fleet, Some(&m2), &full_snapshot("web-1", seq + 1)).await.0, 403);
    }
    // ... and the first agent's session is never replaced: it still reports.
    let frame = json!({"type": "snapshot", "snapshot": full_snapshot("web-1", 1)});
    first.send(Message::Text(frame.to_string().into())).await.unwrap();
    assert_eq!(next_json(&mut first).await["type"], "ack");
    // Another host's refusals are logged on their own.
    let (_, welcome) = agent_hello(&c, &fleet, "web-2", Some(&m1)).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let (_, answer) = agent_hello(&c, &fleet, "web-2", Some(&m2)).await;
    assert_eq!(answer["code"], "forbidden", "{answer}");

    let refusals = |text: &str, host: &str| {
        text.lines()
            .filter(|l| l.contains("host binding refused a report") && l.contains(&format!("hostname={host}")))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(eventually(Duration::from_secs(10), async || !refusals(&read(), "web-2").is_empty()).await);
    let text = read();
    let lines = refusals(&text, "web-1");
    assert_eq!(lines.len(), 1, "25 refusals within a minute make one line: {lines:#?}");
    assert!(
        lines[0].contains(&m1[..12]) && lines[0].contains(&m2[..12]) && lines[0].contains("--hostname"),
        "{}",
        lines[0]
    );
    assert!(
        !text.lines().any(|l| l.contains("agent refused") && l.contains("web-1")),
        "refusals logged twice:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_key_sibling_cannot_upload_for_a_host_its_agent_streams() {
    let dir = temp();
    let log = dir.path().join("collector.log");
    let c = Collector::start_logging(dir.path(), &["--no-local"], Some(&log));
    let fleet = new_key(dir.path(), "fleet", None);
    // An agent without a fingerprint (no /etc/machine-id) streams web-1 on the fleet key.
    let (mut real, welcome) = agent_hello(&c, &fleet, "web-1", None).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let frame = json!({"type": "snapshot", "snapshot": full_snapshot("web-1", 1)});
    real.send(Message::Text(frame.to_string().into())).await.unwrap();
    assert_eq!(next_json(&mut real).await["type"], "ack");

    // A sibling machine with the same fleet key uploads as web-1, with or without a
    // fingerprint: refused while the session lasts, saying an agent streams the host.
    for machine_id in [None, Some("ab".repeat(32))] {
        let (status, body) = upload_from(&c, &fleet, machine_id.as_deref(), &full_snapshot("web-1", 2)).await;
        assert_eq!(status, 409, "{body}");
        assert!(body.contains("agent_streaming") && body.contains("streamed by its agent"), "{body}");
    }
    // Nothing was stored, so the agent's next snapshot is taken.
    let frame = json!({"type": "snapshot", "snapshot": full_snapshot("web-1", 2)});
    real.send(Message::Text(frame.to_string().into())).await.unwrap();
    let ack = next_json(&mut real).await;
    assert_eq!((ack["type"].as_str(), ack["seq"].as_u64()), (Some("ack"), Some(2)), "{ack}");

    // The host is only as safe as the fleet key: that is logged, once, with the fix.
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let warning = "bound to a fleet key without a machine fingerprint";
    assert!(eventually(Duration::from_secs(10), async || read().contains(warning)).await);
    let text = read();
    let lines: Vec<_> = text.lines().filter(|l| l.contains(warning)).collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("--host web-1") && lines[0].contains("--machine-id-file"), "{}", lines[0]);

    // Once the session is over, the fleet key's uploads are taken again.
    drop(real);
    assert!(
        eventually(Duration::from_secs(10), async || {
            upload_from(&c, &fleet, None, &full_snapshot("web-1", 3)).await.0 == 201
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn small_json_bodies_are_limited_before_they_are_read() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let admin = c.admin_token().await;
    let big = "x".repeat(1 << 20);
    let post = async |path: &str, token: Option<&str>, body: &Value| {
        let mut request = c.http.post(c.url(path)).json(body);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        // The collector answers 413 without reading the rest of the body, and may close
        // the connection while the client is still sending it: that is a refusal too.
        match request.send().await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap()),
            Err(e) if e.is_request() => (413, format!("at most 16 KiB (the connection closed first: {e})")),
            Err(e) => panic!("{path}: {e}"),
        }
    };
    // A 1 MB sign-in is refused for its size (under the 2 MB axum buffers by default, so
    // the password check would otherwise have had to read it all) ...
    let (status, body) = post("/api/auth/login", None, &json!({"username": "admin", "password": big})).await;
    assert_eq!(status, 413, "{body}");
    // ... and so are accounts, keys, bindings and actions.
    let user = json!({"username": "ada", "password": big, "role": "viewer"});
    assert_eq!(post("/api/users", Some(&admin), &user).await.0, 413);
    assert_eq!(post("/api/keys", Some(&admin), &json!({"name": big})).await.0, 413);
    let (status, body) = post("/api/monitoring/local/process/1/kill", Some(&admin), &json!({"start_time": big})).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("at most 16 KiB"), "{body}");
    let r = c.http.put(c.url("/api/hosts/web-1/binding")).bearer_auth(&admin).json(&json!({"key": big})).send();
    match r.await {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    // A body of ordinary size still signs in: on a connection of its own, since a
    // refusal above may have closed the pooled one while the client was still sending
    // (which `post` would read as a refusal).
    let password = c.admin_password.clone().unwrap();
    let fresh = reqwest::Client::new();
    let r = fresh.post(c.url("/api/auth/login")).json(&json!({"username": "admin", "password": password}));
    assert_eq!(r.send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn user_names_are_unique_ignoring_case() {
    let dir = temp();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let admin = c.admin_token().await;
    let add = async |name: &str| {
        let user = json!({"username": name, "password": "a long enough password", "role": "viewer"});
        let r = c.http.post(c.url("/api/users")).bearer_auth(&admin).json(&user).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    // `Admin` next to `admin` would read as the same user in the audit log.
    let (status, body) = add("Admin").await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("user `admin`") && body.contains("ignoring case"), "{body}");
    assert_eq!(add("ada").await.0, 201);
    assert_eq!(add("ADA").await.0, 409);
    assert_eq!(add("ada").await.0, 409);
    // The same from the command line.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_procyon"))
        .args(["user", "add", "ADMIN", "--role", "viewer", "--password-stdin", "--data"])
        .arg(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"a long enough password\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("user `admin`") && stderr.contains("ignoring case"), "{stderr}");
    // Nothing was added.
    let (_, users) = c.get("/api/users", &admin).await;
    let names: Vec<_> = users.as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["ada", "admin"], "{users}");
}
