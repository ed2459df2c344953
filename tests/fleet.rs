//! The fleet overview end to end: host labels from a real agent's flags and environment,
//! stored and listed; an admin's labels over them, audited; bad labels refused with
//! nothing stored; and the overview's figures, from `GET /api/hosts/` and the fleet
//! stream (`/ws/fleet`), following real uploads.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::collector::{Collector, agent_bin, new_key, new_user};
use futures_util::{SinkExt, StreamExt};
use procyon::model::Snapshot;
use procyon::model::agent::PROTOCOL_VERSION;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A real agent of `hostname`, killed when dropped.
struct Agent(Child);

impl Agent {
    fn start(c: &Collector, dir: &Path, key: &Path, hostname: &str, args: &[&str], env: &[(&str, &str)]) -> Agent {
        let child = Command::new(agent_bin())
            .env("PROCYON_CONFIG", "/dev/null")
            .envs(env.iter().copied())
            .args(["--collector", &c.base, "--hostname", hostname, "--interval", "0.5", "--api-key-file"])
            .arg(key)
            .arg("--spool")
            .arg(dir.join(format!("spool-{hostname}")))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Agent(child)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn key_file(dir: &Path, key: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("agent.key");
    std::fs::write(&path, key).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Polls `GET /api/hosts/` until `cond` holds for `hostname`'s entry; returns it.
async fn host_when(c: &Collector, token: &str, hostname: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    let mut last = Value::Null;
    while start.elapsed() < Duration::from_secs(60) {
        let (status, hosts) = c.get("/api/hosts/", token).await;
        assert_eq!(status, 200);
        if let Some(h) = hosts.as_array().unwrap().iter().find(|h| h["hostname"] == hostname) {
            if cond(h) {
                return h.clone();
            }
            last = h.clone();
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    panic!("timed out waiting for {what}: {last:#}");
}

async fn put_labels(c: &Collector, token: &str, host: &str, body: Value) -> (u16, Value) {
    let r =
        c.http.put(c.url(&format!("/api/hosts/{host}/labels"))).bearer_auth(token).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn labels_come_from_the_agent_and_admins_override_them_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector");
    let c = Collector::start(&data, &["--no-local"]);
    let key = key_file(dir.path(), &new_key(&data, "agents", None));
    let admin = c.admin_token().await;
    let viewer_pw = new_user(&data, "vic", "viewer");
    let viewer = c.login("vic", &viewer_pw).await;

    // The flag, repeated and comma-separated, and the environment variable.
    let mut db =
        Agent::start(&c, dir.path(), &key, "db-1", &["--label", "env=staging", "--label", "role=db,rack=r1"], &[]);
    let _web = Agent::start(&c, dir.path(), &key, "web-1", &[], &[("PROCYON_LABEL", "env=prod,role=web")]);
    let h = host_when(&c, &viewer, "db-1", "db-1's labels and figures", |h| {
        h["labels"] == json!({"env": "staging", "role": "db", "rack": "r1"}) && h["figures"].is_object()
    })
    .await;
    assert_eq!(h["admin_labels"], json!({}));
    let f = &h["figures"];
    assert!(f["process_count"].as_u64().unwrap() > 0, "{f}");
    assert!(f["busiest"]["name"].is_string() && f["memory_total_bytes"].as_u64().unwrap() > 0, "{f}");
    host_when(&c, &viewer, "web-1", "web-1's labels from PROCYON_LABEL", |h| {
        h["labels"] == json!({"env": "prod", "role": "web"})
    })
    .await;

    // An admin's labels win for their keys; the agent's other keys stay.
    let (status, body) = put_labels(&c, &admin, "db-1", json!({"labels": {"env": "prod", "team": "core"}})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["labels"], json!({"env": "prod", "role": "db", "rack": "r1", "team": "core"}));
    assert_eq!(body["admin_labels"], json!({"env": "prod", "team": "core"}));
    let (_, audit) = c.get("/api/audit?limit=20", &admin).await;
    let entry = audit.as_array().unwrap().iter().find(|e| e["action"] == "host_labels").expect("audited");
    assert_eq!((entry["actor"].as_str(), entry["hostname"].as_str()), (Some("admin"), Some("db-1")));
    assert!(entry["message"].as_str().unwrap().contains("env=prod, team=core"), "{entry}");

    // Nothing stored on bad input, and the answer names the field.
    let too_many: serde_json::Map<String, Value> = (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
    for bad in [
        json!({"labels": {"bad key": "x"}}),
        json!({"labels": {"env": "pro d"}}),
        json!({"labels": {"env": ""}}),
        json!({"labels": {"env": "x".repeat(129)}}),
        json!({"labels": {"k".repeat(64): "x"}}),
        json!({"labels": {"-env": "x"}}),
        json!({"labels": {"env": "<script>"}}),
        json!({"labels": too_many}),
    ] {
        let (status, body) = put_labels(&c, &admin, "db-1", bad.clone()).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["field"], "labels", "{bad}: {body}");
    }
    for malformed in [json!({"labels": ["env=prod"]}), json!({"labels": {"env": 1}}), json!({"tags": {}}), json!([])] {
        let (status, body) = put_labels(&c, &admin, "db-1", malformed.clone()).await;
        assert_eq!(status, 422, "{malformed}: {body}");
    }
    // A viewer may read them but not change them; no such host is 404.
    let (status, _) = put_labels(&c, &viewer, "db-1", json!({"labels": {"env": "mine"}})).await;
    assert_eq!(status, 403);
    let (status, _) = put_labels(&c, &admin, "nope-9", json!({"labels": {"env": "prod"}})).await;
    assert_eq!(status, 404);
    let h = host_when(&c, &viewer, "db-1", "db-1 listed", |_| true).await;
    assert_eq!(h["labels"], json!({"env": "prod", "role": "db", "rack": "r1", "team": "core"}), "unchanged");

    // The agent's next start replaces its own labels; the admin's stay on top.
    drop(db);
    db = Agent::start(&c, dir.path(), &key, "db-1", &["--label", "env=dev,role=cache"], &[]);
    let h = host_when(&c, &viewer, "db-1", "the agent's new labels", |h| h["labels"]["role"] == "cache").await;
    assert_eq!(h["labels"], json!({"env": "prod", "role": "cache", "team": "core"}));
    // `{}` removes the admin's labels: the agent's show again.
    let (status, body) = put_labels(&c, &admin, "db-1", json!({"labels": {}})).await;
    assert_eq!(status, 200);
    assert_eq!(body["labels"], json!({"env": "dev", "role": "cache"}));
    drop(db);

    // A hello with labels that break the rules is refused, and they are not stored.
    let raw_key = std::fs::read_to_string(&key).unwrap();
    let mut request = c.ws_url("/ws/agent").into_client_request().unwrap();
    request.headers_mut().insert("Authorization", format!("Api-Key {}", raw_key.trim()).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut host = procyon::sample::Sampler::new(Default::default()).host().clone();
    host.hostname = "rogue-1".into();
    let hello = json!({"type": "hello", "protocol": PROTOCOL_VERSION, "agent_version": "test", "host": host,
        "allow_control": false, "labels": {"env": "<img src=x>"}});
    ws.send(Message::Text(hello.to_string().into())).await.unwrap();
    let reply: Value = serde_json::from_str(ws.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(reply["code"], "invalid", "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("labels"), "{reply}");
    let (_, hosts) = c.get("/api/hosts/", &admin).await;
    assert!(hosts.as_array().unwrap().iter().all(|h| h["hostname"] != "rogue-1"));
}

/// A real snapshot of this machine as `hostname`, with the given CPU and seq.
fn snapshot(base: &Snapshot, hostname: &str, seq: u64, cpu: f32) -> Snapshot {
    let mut s = base.clone();
    s.host.hostname = hostname.into();
    s.seq = seq;
    s.taken_at = chrono::Utc::now();
    s.cpu.total_percent = cpu;
    if let Some(p) = s.processes.first_mut() {
        p.cpu_percent = Some(250.0);
        p.name = "busiest-one".into();
    }
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_figures_come_from_memory_and_the_stream_carries_only_changed_rows() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector");
    let c = Collector::start(&data, &["--no-local"]);
    let key = new_key(&data, "uploads", None);
    let viewer_pw = new_user(&data, "vera", "viewer");
    let viewer = c.login("vera", &viewer_pw).await;
    let base = procyon::sample::Sampler::new(Default::default()).sample();

    for (i, host) in ["web-2", "web-10", "db-1"].iter().enumerate() {
        let s = snapshot(&base, host, 1, 10.0 * (i as f32 + 1.0));
        let (status, body) = c.upload(&key, serde_json::to_vec(&s).unwrap()).await;
        assert!(status == 201 || status == 200, "{body}");
    }
    let (status, hosts) = c.get("/api/hosts/", &viewer).await;
    assert_eq!(status, 200);
    let web10 = hosts.as_array().unwrap().iter().find(|h| h["hostname"] == "web-10").unwrap();
    let f = &web10["figures"];
    assert_eq!(f["cpu_percent"], json!(20.0));
    assert_eq!(f["cpu_trend"], json!([20.0]));
    assert_eq!(f["process_count"], json!(base.processes.len()));
    assert_eq!(f["busiest"]["name"], "busiest-one");
    assert_eq!(f["busiest"]["cpu_percent"], json!(250.0));
    assert_eq!(f["memory_used_bytes"], json!(base.memory.used_bytes));

    // The stream: a viewer may open it; it sends the changed hosts only, never snapshots.
    let url = c.ws_url(&format!("/ws/fleet?token={viewer}"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let s = snapshot(&base, "web-10", 2, 77.5);
    let (status, _) = c.upload(&key, serde_json::to_vec(&s).unwrap()).await;
    assert_eq!(status, 201);
    let rows = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let Some(Ok(Message::Text(text))) = ws.next().await else { panic!("the stream ended") };
            let message: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(message["type"], "rows", "{message}");
            assert!(!text.contains("\"processes\""), "no snapshot in a fleet message: {text}");
            let rows = message["rows"].as_array().unwrap().clone();
            if rows.iter().any(|r| r["hostname"] == "web-10" && r["figures"]["cpu_percent"] == json!(77.5)) {
                break rows;
            }
        }
    })
    .await
    .expect("the change arrived");
    assert_eq!(rows.len(), 1, "only the host that changed: {rows:?}");
    let row = &rows[0];
    assert_eq!(row["online"], true);
    assert_eq!(row["figures"]["cpu_trend"], json!([77.5]), "the newest figure only");
    assert!(row["last_seen"].is_string());
    // The list holds the trend so far.
    let (_, hosts) = c.get("/api/hosts/", &viewer).await;
    let web10 = hosts.as_array().unwrap().iter().find(|h| h["hostname"] == "web-10").unwrap();
    assert_eq!(web10["figures"]["cpu_trend"], json!([20.0, 77.5]));
    ws.close(None).await.unwrap();
}
