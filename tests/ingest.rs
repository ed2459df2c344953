//! The agent channel's ingest against a collector running in this process (so that the
//! test can look at its store and hub): a delta is stored as the agent sent it unless
//! redaction changed what it says, and a host's snapshot leaves memory when its agent
//! does.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use procyon::hub::Hub;
use procyon::model::agent::{Encoding, PROTOCOL_VERSION, delta_frame, encode_snapshot, full_frame};
use procyon::model::delta::SnapshotDelta;
use procyon::model::{ProcessSample, Snapshot};
use procyon::server::auth::{Auth, hash_api_key, new_api_key};
use procyon::server::{AppState, Settings};
use procyon::store::Store;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Server {
    base: String,
    key: String,
    db: std::path::PathBuf,
    state: AppState,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("procyon.db");
        let store = Store::open(&db).await.unwrap();
        let auth = Auth::new(b"a test signing key of 32 bytes!!", Duration::from_secs(3600));
        let state = AppState::new(store, Hub::new(), auth, Settings::default());
        let (key, prefix, hash) = new_api_key().unwrap();
        assert_eq!(hash, hash_api_key(&key));
        state.store.create_api_key("agents", &prefix, &hash, None).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("{}", listener.local_addr().unwrap());
        tokio::spawn(procyon::server::listen(state.clone(), listener, std::future::pending()));
        Server { base, key, db, state, _dir: dir }
    }

    /// An agent session for `snapshot`'s host, past the welcome.
    async fn agent(&self, host: &Snapshot) -> Socket {
        let mut request = format!("ws://{}/ws/agent", self.base).into_client_request().unwrap();
        request.headers_mut().insert("Authorization", format!("Api-Key {}", self.key).parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let hello = json!({"type": "hello", "protocol": PROTOCOL_VERSION, "agent_version": "test",
            "host": host.host, "allow_control": false});
        ws.send(Message::Text(hello.to_string().into())).await.unwrap();
        assert_eq!(next(&mut ws).await["type"], "welcome");
        ws
    }

    /// The stored body of `hostname`'s snapshot `seq`, as the database holds it.
    async fn body(&self, hostname: &str, seq: u64) -> Vec<u8> {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", self.db.display())).await.unwrap();
        let body = sqlx::query_scalar(
            "SELECT s.body FROM snapshots s JOIN hosts h ON h.id = s.host_id WHERE h.hostname = ? AND s.seq = ?",
        )
        .bind(hostname)
        .bind(seq as i64)
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        body
    }
}

async fn next(ws: &mut Socket) -> Value {
    let m = tokio::time::timeout(Duration::from_secs(30), ws.next()).await.unwrap().unwrap().unwrap();
    serde_json::from_str(m.to_text().unwrap()).unwrap()
}

async fn send(ws: &mut Socket, frame: &[u8]) -> Value {
    ws.send(Message::Binary(frame.to_vec().into())).await.unwrap();
    next(ws).await
}

/// Snapshots of host `hostname` that differ the way ticks do.
fn ticks(hostname: &str, count: u64) -> Vec<Snapshot> {
    let mut s = procyon::sample::Sampler::new(Default::default()).sample();
    s.host.hostname = hostname.into();
    (1..=count)
        .map(|seq| {
            let mut next = s.clone();
            next.seq = seq;
            next.taken_at = s.taken_at + chrono::TimeDelta::milliseconds(seq as i64 * 10);
            for (i, p) in next.processes.iter_mut().enumerate() {
                p.cpu_percent = Some(((i as u64 + seq) % 7) as f32);
                p.rss_bytes = p.rss_bytes.map(|r| r + seq * 4096);
            }
            next
        })
        .collect()
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_are_stored_as_they_came_unless_redaction_changed_them() {
    let server = Server::start().await;
    let mut snaps = ticks("as-sent", 4);
    // The fourth adds a process whose command line holds a password.
    let template = snaps[3].processes[0].clone();
    snaps[3].processes.push(ProcessSample {
        pid: 4_000_000,
        cmd: "mysql --user=app --password=hunter2 db".into(),
        ..template
    });
    let mut ws = server.agent(&snaps[0]).await;
    let keyframe = full_frame(&encode_snapshot(&snaps[0]).unwrap(), &snaps[0], Encoding::MessagePack).unwrap();
    assert_eq!(send(&mut ws, &keyframe).await, json!({"type": "ack", "seq": 1}));
    let mut frames = vec![keyframe];
    for i in 1..4 {
        let frame = delta_frame(&SnapshotDelta::between(&snaps[i - 1], &snaps[i]), Encoding::MessagePack).unwrap();
        assert_eq!(send(&mut ws, &frame).await, json!({"type": "ack", "seq": i + 1}));
        frames.push(frame);
    }
    // The keyframe and the plain deltas are stored byte for byte as they came.
    for (i, frame) in frames.iter().enumerate().take(3) {
        assert_eq!(server.body("as-sent", i as u64 + 1).await, frame[1..], "seq {}", i + 1);
    }
    // The one redaction changed is not: what is stored says what was redacted.
    assert_ne!(server.body("as-sent", 4).await, frames[3][1..]);
    let stored = server.state.store.snapshot_by_seq("as-sent", 4).await.unwrap().unwrap().snapshot;
    let mysql = stored.processes.iter().find(|p| p.pid == 4_000_000).unwrap();
    assert!(!mysql.cmd.contains("hunter2"), "{}", mysql.cmd);
    for (i, s) in snaps.iter().enumerate().take(3) {
        let read = server.state.store.snapshot_by_seq("as-sent", i as u64 + 1).await.unwrap().unwrap();
        assert_eq!(&read.snapshot, s, "seq {}", i + 1);
    }
    let mut redacted = snaps[3].clone();
    redacted.processes.last_mut().unwrap().cmd = mysql.cmd.clone();
    assert_eq!(stored, redacted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_snapshot_leaves_memory_when_its_agent_does() {
    let server = Server::start().await;
    let snaps = ticks("leaving", 2);
    let mut ws = server.agent(&snaps[0]).await;
    let keyframe = full_frame(&encode_snapshot(&snaps[0]).unwrap(), &snaps[0], Encoding::MessagePack).unwrap();
    assert_eq!(send(&mut ws, &keyframe).await["type"], "ack");
    let delta = delta_frame(&SnapshotDelta::between(&snaps[0], &snaps[1]), Encoding::MessagePack).unwrap();
    assert_eq!(send(&mut ws, &delta).await["type"], "ack");
    // While it is connected its newest snapshot is held once, by the store and the hub
    // (and the session) together.
    let held = server.state.hub.latest("leaving").unwrap();
    assert_eq!(held.snapshot.seq, 2);
    assert_eq!(server.state.store.held_hosts(), 1);
    drop(held);
    ws.close(None).await.unwrap();
    let state = server.state.clone();
    wait_for("the host to leave the store's and the hub's memory", || {
        state.store.held_hosts() == 0 && state.hub.host_count() == 0
    })
    .await;
    // Its history is still there, and a new session starts from a keyframe.
    assert_eq!(server.state.store.snapshot_by_seq("leaving", 2).await.unwrap().unwrap().snapshot, snaps[1]);
    let mut ws = server.agent(&snaps[0]).await;
    let reply = send(&mut ws, &delta).await;
    assert_eq!(reply["type"], "resync", "{reply}");
    // A host someone follows keeps its newest snapshot in the hub when its agent goes.
    let _follower = server.state.hub.subscribe("leaving");
    let snaps = ticks("leaving", 4);
    let keyframe = full_frame(&encode_snapshot(&snaps[2]).unwrap(), &snaps[2], Encoding::MessagePack).unwrap();
    assert_eq!(send(&mut ws, &keyframe).await["type"], "ack");
    ws.close(None).await.unwrap();
    let state = server.state.clone();
    wait_for("the store to let go", || state.store.held_hosts() == 0).await;
    assert_eq!(server.state.hub.latest("leaving").unwrap().snapshot.seq, 3);
}
