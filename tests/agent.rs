//! Agents end to end: real `procyon-agent` processes streaming to a real `procyon serve`,
//! through a collector outage and an agent crash, relaying actions on real processes.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::collector::{Collector, agent_bin, cli, new_key};
use common::{Sleeper, marker, state, wait_for};
use futures_util::{SinkExt, StreamExt};
use procyon::model::agent::{Encoding, OLDEST_PROTOCOL, PROTOCOL_VERSION, delta_frame, encode_snapshot, full_frame};
use procyon::model::delta::{LiveMessage, ProcessKey, SnapshotDelta};
use procyon::model::{ProcessSample, Snapshot};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The agent command, isolated from any config file of this machine.
fn agent_command() -> Command {
    let mut command = Command::new(agent_bin());
    command.env("PROCYON_CONFIG", "/dev/null");
    command
}

/// An API key in a file only its owner may read.
fn key_file(dir: &Path, name: &str, key: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("{name}.key"));
    std::fs::write(&path, key).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A running agent, killed when dropped. Its stderr goes to a file for the test to read.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(collector: &str, key: &Path, hostname: &str, spool: &Path, extra: &[&str]) -> Agent {
        let mut command = agent_command();
        command.args(["--collector", collector]).args(extra);
        Agent::spawn(command, key, hostname, spool)
    }

    /// Starts `command` (the collectors and any other flags already on it) as the agent
    /// of `hostname`, at 0.3 s.
    fn spawn(mut command: Command, key: &Path, hostname: &str, spool: &Path) -> Agent {
        let log = spool.with_extension("log");
        let child = command
            .args(["--hostname", hostname, "--interval", "0.3", "--api-key-file"])
            .arg(key)
            .arg("--spool")
            .arg(spool)
            .env("PROCYON_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(&mut self) -> bool {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        wait_for(Duration::from_secs(10), || matches!(self.child.try_wait(), Ok(Some(_))))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every stored seq of `hostname`, ascending.
async fn seqs(c: &Collector, token: &str, hostname: &str) -> Vec<u64> {
    let (status, list) = c.get(&format!("/api/process-snapshots/list/?hostname={hostname}&limit=1000"), token).await;
    if status == 404 {
        return Vec::new();
    }
    let mut seqs: Vec<u64> = list.as_array().unwrap().iter().map(|s| s["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    seqs
}

async fn wait_until<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    panic!("timed out waiting for {what}");
}

fn contiguous(seqs: &[u64]) -> bool {
    seqs.windows(2).all(|w| w[1] == w[0] + 1)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_agents_lose_nothing_through_a_collector_outage_and_an_agent_crash() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut c = Collector::start(&data, &["--no-local"]);
    let token = c.admin_token().await;
    let port = c.base.rsplit(':').next().unwrap().to_owned();
    let key = key_file(dir.path(), "fleet", &new_key(&data, "fleet", None));
    let mut a = Agent::start(&c.base, &key, "web-1", &dir.path().join("spool-a"), &[]);
    let mut b = Agent::start(&c.base, &key, "web-2", &dir.path().join("spool-b"), &[]);

    wait_until(Duration::from_secs(30), "both agents to report", || async {
        seqs(&c, &token, "web-1").await.len() >= 3 && seqs(&c, &token, "web-2").await.len() >= 3
    })
    .await;
    let (_, hosts) = c.get("/api/hosts/", &token).await;
    assert!(hosts.as_array().unwrap().iter().all(|h| h["online"] == true), "{hosts}");
    let before = seqs(&c, &token, "web-1").await;
    assert_eq!(before[0], 1);
    assert!(contiguous(&before), "{before:?}");

    // The collector dies hard; the agents keep sampling into their spools.
    let mut child = c.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The first agent crashes too, and comes back.
    a.kill();
    let mut a = Agent::start(&c.base, &key, "web-1", &dir.path().join("spool-a"), &[]);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let c = Collector::start(&data, &["--no-local", "--bind", &format!("127.0.0.1:{port}")]);
    wait_until(Duration::from_secs(60), "the backlog to arrive", || async {
        let web1 = seqs(&c, &token, "web-1").await;
        let web2 = seqs(&c, &token, "web-2").await;
        // At 0.3 s, 3 s of outage is about 10 snapshots each.
        web1.len() >= before.len() + 10 && web2.len() >= before.len() + 10
    })
    .await;
    // A few more in steady state, once the rest of the backlog is surely through.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let caught_up = seqs(&c, &token, "web-2").await.len();
    wait_until(Duration::from_secs(30), "steady state after the backlog", || async {
        seqs(&c, &token, "web-2").await.len() >= caught_up + 3
    })
    .await;
    assert!(a.terminate() && b.terminate(), "agents stop on SIGTERM");
    for host in ["web-1", "web-2"] {
        let all = seqs(&c, &token, host).await;
        assert_eq!(all[0], 1, "{host}");
        assert!(contiguous(&all), "{host}: a gap or a duplicate in {all:?}");
    }
    let log = a.log();
    assert!(!log.contains("fleet.key") || !log.contains("pk_"), "the key never reaches the log");

    // The agent that lived through the restart: each connection began with a keyframe
    // (the new collector held no base, and never had to ask for one), then deltas,
    // much smaller than keyframes.
    let sessions = sessions(&b.log());
    assert_eq!(sessions.len(), 2, "one session before the outage, one after: {}", b.log());
    for s in &sessions {
        assert!(s["keyframes"] >= 1 && s["deltas"] >= 1, "{s:?}");
        assert_eq!(s["resyncs"], 0, "{s:?}");
        assert!(s["delta_bytes"] / s["deltas"] * 2 < s["keyframe_bytes"] / s["keyframes"], "{s:?}");
    }
}

/// The agent's "session ended" log lines, as `field -> value` maps.
fn sessions(log: &str) -> Vec<std::collections::HashMap<String, u64>> {
    // Without the terminal colours (ESC [ ... m) the log may carry.
    let mut plain = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            plain.push(ch);
        }
    }
    plain
        .lines()
        .filter(|l| l.contains("session ended"))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|word| word.split_once('='))
                .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn relayed_actions_need_allow_control_and_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let c = Collector::start(&data, &["--no-local"]);
    let token = c.admin_token().await;
    let key = key_file(dir.path(), "k", &new_key(&data, "k", None));
    let _open = Agent::start(&c.base, &key, "ctl-open", &dir.path().join("s1"), &["--allow-control"]);
    let _locked = Agent::start(&c.base, &key, "ctl-locked", &dir.path().join("s2"), &[]);
    let child = Sleeper::start(&marker("relay"));
    let pid = child.pid();

    // Both agents sample this machine, so the child is in both hosts' snapshots.
    let mut start_time = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while start_time.is_empty() {
        assert!(Instant::now() < deadline, "the child never appeared in the agent's snapshot");
        let (_, snap) = c.get("/api/monitoring/ctl-open/snapshot", &token).await;
        if let Some(p) = snap["processes"].as_array().and_then(|ps| ps.iter().find(|p| p["pid"] == pid)) {
            start_time = p["start_time"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let act = |host: &str, action: &str| {
        format!("/api/monitoring/{host}/process/{pid}/{action}?start_time={}", start_time.replace('+', "%2B"))
    };

    let (status, body) = c.post(&act("ctl-open", "suspend"), &token, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], format!("Process {pid} suspended"));
    assert!(wait_for(Duration::from_secs(5), || state(pid) == Some('T')));
    let (status, _) = c.post(&act("ctl-open", "resume"), &token, None).await;
    assert_eq!(status, 200);
    assert!(wait_for(Duration::from_secs(5), || matches!(state(pid), Some('S' | 'R'))));

    // Without --allow-control: refused, the process untouched, and audited.
    let (status, body) = c.post(&act("ctl-locked", "kill"), &token, None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["message"].as_str().unwrap().contains("--allow-control"));
    std::thread::sleep(Duration::from_millis(200));
    assert!(matches!(state(pid), Some('S' | 'R')), "untouched");

    // A stale start time is refused by the agent's guard, relayed back as 409.
    let (status, body) = c
        .post(&format!("/api/monitoring/ctl-open/process/{pid}/kill?start_time=2001-01-01T00:00:00Z"), &token, None)
        .await;
    assert_eq!((status, body["error"].as_str()), (409, Some("pid_reused")));

    let (status, _) = c.post(&act("ctl-open", "kill"), &token, None).await;
    assert_eq!(status, 200);
    assert!(wait_for(Duration::from_secs(5), || common::is_gone(pid)));

    let (_, log) = c.get("/api/audit", &token).await;
    let entries: Vec<(String, String, String)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["hostname"].as_str().unwrap().into(),
                e["action"].as_str().unwrap().into(),
                e["result"].as_str().unwrap().into(),
            )
        })
        .collect();
    let e = |h: &str, a: &str, r: &str| (h.to_owned(), a.to_owned(), r.to_owned());
    assert_eq!(
        entries,
        [
            e("ctl-open", "kill", "success"),
            e("ctl-open", "kill", "pid_reused"),
            e("ctl-locked", "kill", "unsupported"),
            e("ctl-open", "resume", "success"),
            e("ctl-open", "suspend", "success"),
        ]
    );
    assert_eq!(log[0]["process_name"], "sh");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_keys_protocol_mismatch_and_garbage_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let c = Collector::start(&data, &["--no-local"]);
    let token = c.admin_token().await;
    let good = new_key(&data, "good", None);
    let good_file = key_file(dir.path(), "good", &good);

    // --once: one snapshot, then exit 0; over REST too.
    for extra in [&[][..], &["--transport", "rest"][..]] {
        let out = agent_command()
            .args(["--collector", &c.base, "--hostname", "once-host", "--once", "--api-key-file"])
            .arg(&good_file)
            .arg("--spool")
            .arg(dir.path().join("once"))
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "--once {extra:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(seqs(&c, &token, "once-host").await, [1, 2]);
    // A new spool for a host the collector knows (the agent's state was lost) carries
    // on above the stored seqs instead of being taken for resends.
    let out = agent_command()
        .args(["--collector", &c.base, "--hostname", "once-host", "--once", "--api-key-file"])
        .arg(&good_file)
        .arg("--spool")
        .arg(dir.path().join("once-wiped"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(seqs(&c, &token, "once-host").await, [1, 2, 3]);

    // A wrong key and a revoked key are refused, with the reason.
    let revoked = new_key(&data, "old", None);
    cli(&data, &["apikey", "revoke", "old"], None);
    for (name, key, says) in
        [("wrong", "pk_nonsense".to_owned(), "procyon apikey create"), ("revoked", revoked, "revoked")]
    {
        let file = key_file(dir.path(), name, &key);
        let out = agent_command()
            .args(["--collector", &c.base, "--hostname", "x", "--once", "--api-key-file"])
            .arg(&file)
            .arg("--spool")
            .arg(dir.path().join(format!("spool-{name}")))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name} key accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{name}: {stderr}");
        assert!(!stderr.contains(&key), "the key never reaches the log");
    }
    // The usual wrong addresses say what is likely wrong, not only what broke.
    let not_a_collector = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = not_a_collector.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in not_a_collector.incoming() {
            drop(stream);
        }
    });
    let https = c.base.replacen("http://", "https://", 1);
    for (url, says) in [
        (https.as_str(), "speaks plain HTTP"),
        (&*format!("http://127.0.0.1:{closed_port}"), "not a Procyon collector"),
        (&*format!("{}/api", c.base), "give the collector's own address"),
    ] {
        let out = agent_command()
            .args(["--collector", url, "--hostname", "x", "--once", "--api-key-file"])
            .arg(&good_file)
            .arg("--spool")
            .arg(dir.path().join("spool-wrong-url"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{url}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{url}: {stderr}");
    }
    // A key file others can read is refused before anything is sent.
    let loose = dir.path().join("loose.key");
    std::fs::write(&loose, &good).unwrap();
    let out = agent_command()
        .args(["--collector", &c.base, "--once", "--api-key-file"])
        .arg(&loose)
        .arg("--spool")
        .arg(dir.path().join("spool-loose"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));

    // At the upgrade: no key, a bad key → refused before any socket exists.
    let ws_url = c.ws_url("/ws/agent");
    assert!(tokio_tungstenite::connect_async(&ws_url).await.is_err());
    let mut bad = ws_url.as_str().into_client_request().unwrap();
    bad.headers_mut().insert("Authorization", "Api-Key pk_bad".parse().unwrap());
    match tokio_tungstenite::connect_async(bad).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }

    // A live agent keeps delivering while a raw client misbehaves.
    let _steady = Agent::start(&c.base, &good_file, "steady", &dir.path().join("steady"), &[]);
    let connect = || {
        let mut request = ws_url.as_str().into_client_request().unwrap();
        request.headers_mut().insert("Authorization", format!("Api-Key {good}").parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    let host = serde_json::to_value(procyon::sample::Sampler::new(Default::default()).host().clone()).unwrap();
    let next_json = |m: Option<Result<Message, _>>| -> Value {
        let m: Message = m.unwrap().unwrap();
        serde_json::from_str(m.to_text().unwrap()).unwrap()
    };

    // Protocol mismatch: a clear error, then the socket closes.
    let (mut ws, _) = connect().await.unwrap();
    let hello =
        json!({"type": "hello", "protocol": 999, "agent_version": "9.9.9", "host": host, "allow_control": false});
    ws.send(Message::Text(hello.to_string().into())).await.unwrap();
    let error = next_json(ws.next().await);
    assert_eq!(error["code"], "protocol_mismatch");
    assert!(
        error["message"].as_str().unwrap().contains(&format!("{OLDEST_PROTOCOL} to {PROTOCOL_VERSION}")),
        "{error}"
    );

    // An agent of the previous release (protocol 2, JSON frames) is welcomed in its
    // protocol and stored.
    let (mut ws, _) = connect().await.unwrap();
    let mut old = procyon::sample::Sampler::new(Default::default()).sample();
    old.host.hostname = "old-agent".into();
    old.seq = 1;
    let hello = json!({"type": "hello", "protocol": OLDEST_PROTOCOL, "agent_version": "0.0.9", "host": old.host,
        "allow_control": false});
    ws.send(Message::Text(hello.to_string().into())).await.unwrap();
    let welcome = next_json(ws.next().await);
    assert_eq!((welcome["type"].as_str(), welcome["protocol"].as_u64()), (Some("welcome"), Some(2)), "{welcome}");
    let json_keyframe = full_frame(&encode_snapshot(&old).unwrap(), &old, Encoding::Json).unwrap();
    assert_eq!(json_keyframe[0], 0, "the old kind byte");
    ws.send(Message::Binary(json_keyframe.into())).await.unwrap();
    assert_eq!(next_json(ws.next().await), json!({"type": "ack", "seq": 1}));
    // Its deltas (JSON too, kind 1) are rebuilt and stored exactly.
    let mut old_next = old.clone();
    old_next.seq = 2;
    old_next.processes.iter_mut().for_each(|p| p.rss_bytes = p.rss_bytes.map(|r| r + 4096));
    old_next.processes.pop();
    let json_delta = delta_frame(&SnapshotDelta::between(&old, &old_next), Encoding::Json).unwrap();
    assert_eq!(json_delta[0], 1, "the old kind byte");
    ws.send(Message::Binary(json_delta.into())).await.unwrap();
    assert_eq!(next_json(ws.next().await), json!({"type": "ack", "seq": 2}));
    assert_eq!(seqs(&c, &token, "old-agent").await, [1, 2]);
    let (_, list) = c.get("/api/process-snapshots/list/?hostname=old-agent&limit=10", &token).await;
    let (_, stored) = c.get(&format!("/api/process-snapshots/{}/", list[0]["snapshot_id"]), &token).await;
    assert_eq!(serde_json::from_value::<Snapshot>(stored).unwrap(), old_next);

    // Garbage after a proper hello: an error per frame, the session and collector live on.
    let (mut ws, _) = connect().await.unwrap();
    let mut hello = json!({"type": "hello", "protocol": PROTOCOL_VERSION, "agent_version": "test", "host": host, "allow_control": false});
    hello["host"]["hostname"] = json!("garbage-host");
    ws.send(Message::Text(hello.to_string().into())).await.unwrap();
    assert_eq!(next_json(ws.next().await)["type"], "welcome");
    let steady_before = seqs(&c, &token, "steady").await.len();
    ws.send(Message::Binary(vec![0xde, 0xad, 0xbe, 0xef].into())).await.unwrap();
    assert_eq!(next_json(ws.next().await)["code"], "bad_frame");
    ws.send(Message::Text("{not json".into())).await.unwrap();
    assert_eq!(next_json(ws.next().await)["code"], "bad_frame");
    // A snapshot for another host on this session is rejected, not stored.
    let mut snap = procyon::sample::Sampler::new(Default::default()).sample();
    snap.host.hostname = "someone-else".into();
    let frame = full_frame(&encode_snapshot(&snap).unwrap(), &snap, Encoding::MessagePack).unwrap();
    ws.send(Message::Binary(frame.into())).await.unwrap();
    assert_eq!(next_json(ws.next().await)["type"], "rejected");
    // The session's valid frames after all that are stored: a keyframe, then a delta.
    let mut mine = procyon::sample::Sampler::new(Default::default()).sample();
    mine.host.hostname = "garbage-host".into();
    mine.seq = 1;
    let frame = full_frame(&encode_snapshot(&mine).unwrap(), &mine, Encoding::MessagePack).unwrap();
    ws.send(Message::Binary(frame.into())).await.unwrap();
    assert_eq!(next_json(ws.next().await), json!({"type": "ack", "seq": 1}));
    ws.send(Message::Binary(vec![2, 0xde, 0xad].into())).await.unwrap();
    assert_eq!(next_json(ws.next().await)["code"], "bad_frame");
    let mut mine_next = mine.clone();
    mine_next.seq = 2;
    mine_next.processes.iter_mut().for_each(|p| p.rss_bytes = p.rss_bytes.map(|r| r + 4096));
    let frame = delta_frame(&SnapshotDelta::between(&mine, &mine_next), Encoding::MessagePack).unwrap();
    ws.send(Message::Binary(frame.into())).await.unwrap();
    assert_eq!(next_json(ws.next().await), json!({"type": "ack", "seq": 2}));
    assert_eq!(seqs(&c, &token, "garbage-host").await, [1, 2]);
    wait_until(Duration::from_secs(20), "the steady agent to keep delivering", || async {
        seqs(&c, &token, "steady").await.len() > steady_before + 2
    })
    .await;
    assert_eq!(c.get("/api/health", "").await.0, 200);
    assert_eq!(seqs(&c, &token, "someone-else").await.len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_spool_drops_the_oldest_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Pick a port, then leave it closed: the collector is "down" from the start.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    std::fs::create_dir_all(&data).unwrap();
    let key = key_file(dir.path(), "k", &new_key(&data, "k", None));
    let agent = Agent::start(&base, &key, "tiny", &dir.path().join("spool"), &["--spool-max-bytes", "65536"]);
    assert!(
        wait_for(Duration::from_secs(20), || agent.log().contains("dropped")),
        "the agent says it dropped snapshots: {}",
        agent.log()
    );
    let c = Collector::start(&data, &["--no-local", "--bind", &format!("127.0.0.1:{port}")]);
    let token = c.login("admin", c.admin_password.as_deref().unwrap_or("")).await;
    // Within the longest backoff (a minute) of the agent's last failed attempt.
    wait_until(Duration::from_secs(75), "the spool to drain", || async { seqs(&c, &token, "tiny").await.len() >= 3 })
        .await;
    let stored = seqs(&c, &token, "tiny").await;
    assert!(stored[0] > 1, "the oldest were dropped: {stored:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn deltas_are_rebuilt_exactly_and_an_unknown_base_gets_a_resync() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let c = Collector::start(&data, &["--no-local"]);
    let token = c.admin_token().await;
    let key = new_key(&data, "raw", None);
    let mut request = c.ws_url("/ws/agent").as_str().into_client_request().unwrap();
    request.headers_mut().insert("Authorization", format!("Api-Key {key}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    // Real snapshots of this machine, a little apart so that they differ.
    let mut sampler = procyon::sample::Sampler::new(Default::default());
    let snaps: Vec<Snapshot> = (1..=5)
        .map(|seq| {
            std::thread::sleep(Duration::from_millis(120));
            let mut s = sampler.sample();
            s.seq = seq;
            s.host.hostname = "delta-host".into();
            s
        })
        .collect();
    let hello = json!({"type": "hello", "protocol": PROTOCOL_VERSION, "agent_version": "test",
        "host": snaps[0].host, "allow_control": false});
    ws.send(Message::Text(hello.to_string().into())).await.unwrap();
    let m = ws.next().await.unwrap().unwrap();
    assert_eq!(serde_json::from_str::<Value>(m.to_text().unwrap()).unwrap()["type"], "welcome");
    let mut send = async |frame: Vec<u8>| -> Value {
        ws.send(Message::Binary(frame.into())).await.unwrap();
        let m = ws.next().await.unwrap().unwrap();
        serde_json::from_str(m.to_text().unwrap()).unwrap()
    };
    let delta = |base: usize, next: usize| SnapshotDelta::between(&snaps[base], &snaps[next]);
    let ack = |seq: u64| json!({"type": "ack", "seq": seq});

    // A delta before any keyframe has no base here: resync, nothing stored.
    let reply = send(delta_frame(&delta(0, 1), Encoding::MessagePack).unwrap()).await;
    assert_eq!((reply["type"].as_str(), reply["seq"].as_u64()), (Some("resync"), Some(2)), "{reply}");
    assert!(seqs(&c, &token, "delta-host").await.is_empty());

    // Keyframe, then deltas against the newest acknowledged snapshot and an older one.
    assert_eq!(
        send(full_frame(&encode_snapshot(&snaps[0]).unwrap(), &snaps[0], Encoding::MessagePack).unwrap()).await,
        ack(1)
    );
    assert_eq!(send(delta_frame(&delta(0, 1), Encoding::MessagePack).unwrap()).await, ack(2));
    // The older protocol's JSON frames are read on the same connection too.
    assert_eq!(send(delta_frame(&delta(1, 2), Encoding::Json).unwrap()).await, ack(3));
    assert_eq!(send(delta_frame(&delta(1, 3), Encoding::MessagePack).unwrap()).await, ack(4));

    // An unknown base, and a delta that does not fit its base: resync, nothing stored.
    let mut unknown = delta(3, 4);
    unknown.base_seq = 99;
    assert_eq!(send(delta_frame(&unknown, Encoding::MessagePack).unwrap()).await["type"], "resync");
    let mut forged = delta(3, 4);
    forged.processes.removed.push(ProcessKey { pid: u32::MAX, start_time: Some(snaps[3].taken_at) });
    assert_eq!(send(delta_frame(&forged, Encoding::MessagePack).unwrap()).await["type"], "resync");
    // A rebuilt snapshot that breaks the upload rules is rejected like an upload.
    let mut bad = snaps[4].clone();
    bad.processes[0].name = "\u{7}".repeat(2000);
    assert_eq!(
        send(delta_frame(&SnapshotDelta::between(&snaps[3], &bad), Encoding::MessagePack).unwrap()).await["type"],
        "rejected"
    );
    // So is one over the process limit: the checks of the whole run on every delta.
    let mut crowded = snaps[4].clone();
    let template = crowded.processes[0].clone();
    crowded.processes = (0..20_001u32).map(|i| ProcessSample { pid: 1_000_000 + i, ..template.clone() }).collect();
    let reply = send(delta_frame(&SnapshotDelta::between(&snaps[3], &crowded), Encoding::MessagePack).unwrap()).await;
    assert_eq!(reply["type"], "rejected", "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("20000"), "{reply}");
    assert_eq!(seqs(&c, &token, "delta-host").await, [1, 2, 3, 4]);

    // A live delta stream: the newest snapshot whole, then a delta that rebuilds the next
    // one exactly; a bad value of the parameter is refused.
    let live_url =
        |delta: &str| c.ws_url(&format!("/ws/process-snapshots/?hostname=delta-host&delta={delta}&token={token}"));
    assert!(tokio_tungstenite::connect_async(live_url("7")).await.is_err());
    let (mut live, _) = tokio_tungstenite::connect_async(live_url("1")).await.unwrap();
    let mut next_live = async || -> LiveMessage {
        let m = tokio::time::timeout(Duration::from_secs(10), live.next()).await.unwrap().unwrap().unwrap();
        serde_json::from_str(m.to_text().unwrap()).unwrap()
    };
    let LiveMessage::Full { snapshot: held, .. } = next_live().await else { panic!("the first message is full") };
    assert_eq!(*held, snaps[3]);
    assert_eq!(send(delta_frame(&delta(3, 4), Encoding::MessagePack).unwrap()).await, ack(5));
    let LiveMessage::Delta { delta: live_delta, .. } = next_live().await else { panic!("then deltas") };
    assert_eq!(live_delta.apply(&held).unwrap(), snaps[4]);

    // What was stored is exactly what was sampled.
    let (_, list) = c.get("/api/process-snapshots/list/?hostname=delta-host&limit=10", &token).await;
    for item in list.as_array().unwrap() {
        let (_, stored) = c.get(&format!("/api/process-snapshots/{}/", item["snapshot_id"]), &token).await;
        let stored: Snapshot = serde_json::from_value(stored).unwrap();
        assert_eq!(stored, snaps[stored.seq as usize - 1], "seq {}", stored.seq);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_never_acts_on_the_collector_nor_without_a_start_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let c = Collector::start(&data, &["--no-local"]);
    let collector_pid = c.child.as_ref().unwrap().id();
    let token = c.admin_token().await;
    let key = key_file(dir.path(), "k", &new_key(&data, "k", None));
    let agent = Agent::start(&c.base, &key, "same-box", &dir.path().join("s"), &["--allow-control"]);
    let agent_pid = agent.child.id();
    let child = Sleeper::start(&marker("no-start-time"));

    // The start times the agent's snapshot shows (the collector, the agent and the
    // child all run on this machine).
    let mut start_times = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while start_times.len() < 3 {
        assert!(Instant::now() < deadline, "the processes never appeared in the agent's snapshot");
        let (_, snap) = c.get("/api/monitoring/same-box/snapshot", &token).await;
        for p in snap["processes"].as_array().into_iter().flatten() {
            let pid = p["pid"].as_u64().unwrap() as u32;
            if [collector_pid, agent_pid, child.pid()].contains(&pid) {
                start_times.insert(pid, p["start_time"].as_str().unwrap().replace('+', "%2B"));
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    // Suspending the collector through the agent would freeze every host's monitoring.
    for (pid, action) in [(collector_pid, "suspend"), (collector_pid, "kill"), (agent_pid, "suspend")] {
        let path = format!("/api/monitoring/same-box/process/{pid}/{action}?start_time={}", start_times[&pid]);
        let (status, body) = c.post(&path, &token, None).await;
        assert_eq!((status, body["error"].as_str()), (403, Some("protected")), "{pid} {action}: {body}");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(matches!(state(collector_pid), Some('S' | 'R')), "the collector runs on");
    assert_eq!(c.get("/api/hosts/", &token).await.0, 200, "and answers");

    // A start time that is not the process's: refused, the pid may have changed hands.
    let path = format!("/api/monitoring/same-box/process/{}/kill?start_time=2001-01-01T00:00:00Z", child.pid());
    let (status, body) = c.post(&path, &token, None).await;
    assert_eq!(status, 409, "{body}");
    assert!(matches!(state(child.pid()), Some('S' | 'R')), "untouched");
    // Without one, the collector names the process its newest snapshot shows (a relayed
    // request always carries a start time; the agent refuses one without).
    let (status, body) = c.post(&format!("/api/monitoring/same-box/process/{}/kill", child.pid()), &token, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(wait_for(Duration::from_secs(5), || common::is_gone(child.pid())));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_far_above_last_seq_is_not_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let c = Collector::start(&data, &["--no-local"]);
    let token = c.admin_token().await;
    let raw_key = new_key(&data, "k", None);
    // An upload in the original API's format is numbered by its time in milliseconds:
    // the host's last seq is now far above anything an agent numbers.
    let body = json!({"hostname": "poisoned", "snapshot_time": chrono::Utc::now(),
                      "processes": [{"pid": 10, "name": "x", "cpu": 1.0, "memory": "1MB"}]});
    assert_eq!(c.upload(&raw_key, body.to_string()).await.0, 201);
    let poisoned = seqs(&c, &token, "poisoned").await[0];
    assert!(poisoned > 1_000_000_000_000, "{poisoned}");

    let key = key_file(dir.path(), "k", &raw_key);
    let agent = Agent::start(&c.base, &key, "poisoned", &dir.path().join("s"), &[]);
    wait_until(Duration::from_secs(30), "the agent's snapshots", || async {
        seqs(&c, &token, "poisoned").await.len() >= 4
    })
    .await;
    let stored = seqs(&c, &token, "poisoned").await;
    // Its own numbering, from 1, not continued above the upload's.
    assert_eq!(&stored[..3], [1, 2, 3], "{stored:?}");
    assert_eq!(*stored.last().unwrap(), poisoned, "{stored:?}");
    let log = agent.log();
    assert!(log.contains(&format!("last seq for this host ({poisoned}) is far above this agent's own")), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_spooled_snapshot_is_set_aside_and_the_rest_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let spool = dir.path().join("s");
    // Spool a few snapshots while no collector listens (port 9 on loopback: nothing).
    let raw_key = "pk_unused_for_now";
    let key = key_file(dir.path(), "k", raw_key);
    let mut agent = Agent::start("http://127.0.0.1:9", &key, "spooled", &spool, &[]);
    assert!(
        wait_for(Duration::from_secs(30), || {
            // (The agent creates the directory.)
            let files = std::fs::read_dir(&spool).into_iter().flatten().flatten();
            files.filter(|e| e.file_name().to_string_lossy().ends_with(".zst")).count() >= 4
        }),
        "snapshots spooled"
    );
    agent.kill();
    // One of them becomes a whole zstd frame that is not a snapshot, another is cut short.
    let mut names: Vec<String> = std::fs::read_dir(&spool)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".zst"))
        .collect();
    names.sort();
    std::fs::write(spool.join(&names[1]), zstd::bulk::compress(b"{\"not\": \"a snapshot\"}", 1).unwrap()).unwrap();
    let cut = std::fs::read(spool.join(&names[2])).unwrap();
    std::fs::write(spool.join(&names[2]), &cut[..cut.len() / 2]).unwrap();
    let seq_of = |name: &str| name.trim_end_matches(".zst").parse::<u64>().unwrap();
    let (garbage, truncated) = (seq_of(&names[1]), seq_of(&names[2]));

    let c = Collector::start(&data, &["--no-local"]);
    let token = c.admin_token().await;
    let key = key_file(dir.path(), "k", &new_key(&data, "k", None));
    let agent = Agent::start(&c.base, &key, "spooled", &spool, &[]);
    wait_until(Duration::from_secs(30), "the backlog and live snapshots", || async {
        seqs(&c, &token, "spooled").await.len() >= names.len() + 2
    })
    .await;
    let stored = seqs(&c, &token, "spooled").await;
    assert!(!stored.contains(&garbage) && !stored.contains(&truncated), "{stored:?}");
    for name in names.iter().filter(|n| ![garbage, truncated].contains(&seq_of(n))) {
        assert!(stored.contains(&seq_of(name)), "{name} was sent: {stored:?}");
    }
    let mut aside: Vec<String> = std::fs::read_dir(spool.join("corrupt"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    aside.sort();
    assert_eq!(aside, [names[1].clone(), names[2].clone()]);
    let log = agent.log();
    assert_eq!(log.matches(&names[1]).count(), 1, "logged once, with its name: {log}");
}

#[test]
fn a_machine_id_file_that_cannot_be_read_stops_the_agent_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "k", "pk_whatever");
    let output = agent_command()
        .args(["--collector", "http://127.0.0.1:9", "--api-key-file"])
        .arg(&key)
        .arg("--spool")
        .arg(dir.path().join("s"))
        .arg("--machine-id-file")
        .arg(dir.path().join("missing"))
        .arg("--once")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--machine-id-file: cannot read"), "{stderr}");
}

/// `procyon-agent login` for `hostname`, the password on stdin, the key kept in
/// `key_file` (the keyring made unreachable, so no one's real keyring is touched).
fn login(c: &Collector, hostname: &str, key_file: &Path, extra: &[&str]) -> std::process::Output {
    use std::io::Write;
    let mut child = agent_command()
        .args(["--hostname", hostname, "--key-file"])
        .arg(key_file)
        .args(["login", "--collector", &c.base, "--user", "admin"])
        .args(extra)
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/procyon-test-bus")
        .env("PROCYON_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let password = c.admin_password.clone().unwrap();
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn login_again_for_a_host_rotates_its_key_only_with_replace() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("data"), &["--no-local"]);
    let token = c.admin_token().await;
    let keys = dir.path().join("api.key");
    let upload = |key: String| {
        let c = &c;
        async move {
            let body = json!({"hostname": "web-9", "processes": [{"pid": 1, "name": "init"}]});
            c.upload(&key, body.to_string()).await.0
        }
    };

    let first = login(&c, "web-9", &keys, &[]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let old_key = std::fs::read_to_string(&keys).unwrap().trim().to_owned();
    assert_eq!(upload(old_key.clone()).await, 201);

    // A second sign-in for the same host (a reinstall, a forgotten key) is refused, and
    // says how to go on; the key stays as it was.
    let again = login(&c, "web-9", &keys, &[]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success());
    assert!(stderr.contains("already has a key for host web-9") && stderr.contains("--replace"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "colour codes in a pipe: {stderr:?}");
    assert_eq!(std::fs::read_to_string(&keys).unwrap().trim(), old_key);

    // With --replace: a new key, and the old one stops working.
    let replaced = login(&c, "web-9", &keys, &["--replace"]);
    let stdout = String::from_utf8_lossy(&replaced.stdout);
    assert!(replaced.status.success(), "{}", String::from_utf8_lossy(&replaced.stderr));
    assert!(stdout.contains("Revoked the earlier key `agent-web-9`"), "{stdout}");
    let new_key = std::fs::read_to_string(&keys).unwrap().trim().to_owned();
    assert_ne!(new_key, old_key);
    assert_eq!(upload(old_key).await, 401, "the old key is revoked");
    assert_eq!(upload(new_key).await, 201);
    let (_, list) = c.get("/api/keys", &token).await;
    let states: Vec<(String, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["name"].as_str().unwrap().to_owned(), k["revoked_at"].is_null()))
        .collect();
    assert_eq!(states.iter().filter(|(name, live)| name == "agent-web-9" && *live).count(), 1, "{states:?}");
    assert_eq!(states.iter().filter(|(_, live)| !*live).count(), 1, "{states:?}");
}

#[test]
fn agent_logs_go_to_stderr_in_colour_only_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "k", "pk_whatever");
    // Into a file, as under systemd: plain text.
    let mut agent = Agent::start("http://127.0.0.1:9", &key, "logs-host", &dir.path().join("spool"), &[]);
    assert!(wait_for(Duration::from_secs(20), || agent.log().contains("starting")), "{}", agent.log());
    agent.kill();
    let log = agent.log();
    assert!(log.contains("INFO"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a file: {log:?}");

    // On a terminal: coloured, unless NO_COLOR says otherwise. (A sign-in to a port
    // where nothing listens fails at once, with an error logged.)
    let script = r#""$A" login --collector http://127.0.0.1:9 --user u </dev/null"#;
    let on_a_terminal = |envs: &[(&str, &str)]| {
        let out = Command::new("script")
            .args(["-qec", script, "/dev/null"])
            .env("A", agent_bin())
            .env("PROCYON_CONFIG", "/dev/null")
            .env_remove("NO_COLOR")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let Some(coloured) = on_a_terminal(&[]) else {
        eprintln!("skipped the terminal half: `script` is not installed");
        return;
    };
    assert!(coloured.contains("cannot reach") && coloured.contains('\u{1b}'), "{coloured:?}");
    let plain = on_a_terminal(&[("NO_COLOR", "1")]).unwrap();
    assert!(plain.contains("cannot reach") && !plain.contains('\u{1b}'), "{plain:?}");
}

/// A port on this machine where nothing listens (bound, then closed).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The lines of `log` that contain `what`.
fn lines_with<'a>(log: &'a str, what: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(what)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_given_dead_collectors_first_streams_to_the_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let live = Collector::start(&data, &["--no-local"]);
    let token = live.admin_token().await;
    let key = key_file(dir.path(), "k", &new_key(&data, "k", None));
    // Nothing listens at the first; the second accepts connections and never answers.
    let refused = format!("http://127.0.0.1:{}", closed_port());
    let silent_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = format!("http://{}", silent_listener.local_addr().unwrap());

    // The flag repeated, and a comma-separated list in one of them.
    let agent = Agent::start(
        &format!("{refused}, {silent}"),
        &key,
        "fo-1",
        &dir.path().join("spool"),
        &["--collector", &live.base],
    );
    // The silent one holds it for the connection timeout (10 s) first.
    wait_until(Duration::from_secs(60), "the live collector to store snapshots", || async {
        seqs(&live, &token, "fo-1").await.len() >= 3
    })
    .await;
    let stored = seqs(&live, &token, "fo-1").await;
    assert_eq!(stored[0], 1, "nothing was lost on the way: {stored:?}");
    assert!(contiguous(&stored), "{stored:?}");
    let log = agent.log();
    let moves = lines_with(&log, "moving to collector");
    assert_eq!(moves.len(), 2, "one line per move: {log}");
    assert!(moves[0].contains(&format!("collector {refused}/ unreachable")), "{log}");
    assert!(moves[0].contains("nothing listens") && moves[0].contains(&format!("moving to collector {silent}/")));
    assert!(moves[1].contains("timed out") && moves[1].contains(&format!("moving to collector {}/", live.base)));
    let connected = lines_with(&log, ": connected collector=");
    assert!(connected.len() == 1 && connected[0].contains(&live.base), "{log}");
    drop(silent_listener);

    // `login` with a list signs in to the first collector that answers.
    use std::io::Write;
    let keys = dir.path().join("login.key");
    let mut child = agent_command()
        .args(["--hostname", "fo-login", "--key-file"])
        .arg(&keys)
        .args(["login", "--collector", &format!("{refused},{}", live.base), "--user", "admin"])
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/procyon-test-bus")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let password = live.admin_password.clone().unwrap();
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains(&format!("Signed in to {}", live.base)), "{stdout}");
    assert!(stderr.contains(&format!("cannot reach {refused}")) && stderr.contains("trying the next"), "{stderr}");
    let issued = std::fs::read_to_string(&keys).unwrap();
    assert_eq!(
        live.upload(issued.trim(), r#"{"hostname": "fo-login", "processes": [{"pid": 1, "name": "init"}]}"#).await.0,
        201
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_moves_to_the_next_collector_when_its_own_is_killed_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Two collectors with their own SQLite files that know the same key: the second's
    // data directory is a copy of the first's, made before either starts.
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&data_b).unwrap();
    let key = key_file(dir.path(), "fleet", &new_key(&data_b, "fleet", None));
    let copied = Command::new("cp").arg("-a").arg(&data_b).arg(&data_a).status().unwrap();
    assert!(copied.success());
    let a = Collector::start(&data_a, &["--no-local"]);
    let mut b = Collector::start(&data_b, &["--no-local"]);
    let (token_a, token_b) = (a.admin_token().await, b.admin_token().await);
    let base_b = b.base.clone();

    // The list from the environment: B first.
    let mut command = agent_command();
    command.env("PROCYON_COLLECTOR", format!("{base_b},{}", a.base));
    let mut agent = Agent::spawn(command, &key, "fo-2", &dir.path().join("spool"));
    wait_until(Duration::from_secs(30), "B to store snapshots", || async {
        seqs(&b, &token_b, "fo-2").await.len() >= 5
    })
    .await;
    assert!(seqs(&a, &token_a, "fo-2").await.is_empty(), "the agent sticks to B");

    // B dies hard: the agent retries it, then moves to A, sampling all along.
    let mut child = b.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    wait_until(Duration::from_secs(60), "A to store snapshots", || async {
        seqs(&a, &token_a, "fo-2").await.len() >= 15
    })
    .await;
    assert!(agent.terminate(), "the agent stops on SIGTERM");
    let on_a = seqs(&a, &token_a, "fo-2").await;
    // B again (on another port), on its own file, to read what it stored before it died.
    let b = Collector::start(&data_b, &["--no-local"]);
    let on_b = seqs(&b, &token_b, "fo-2").await;

    assert_eq!(on_b[0], 1, "{on_b:?}");
    assert!(contiguous(&on_b) && contiguous(&on_a), "B {on_b:?}, A {on_a:?}");
    // Every seq the agent took up to the last one stored is stored: B's and A's meet.
    let mut all: Vec<u64> = on_b.iter().chain(&on_a).copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all, (1..=*on_a.last().unwrap()).collect::<Vec<_>>(), "B {on_b:?}, A {on_a:?}");
    // A got again only what B stored last without its acknowledgement reaching the
    // agent: a tail of B's, at most the 16 snapshots the agent sends unacknowledged.
    let both: Vec<u64> = on_a.iter().copied().filter(|seq| on_b.contains(seq)).collect();
    eprintln!("B stored {on_b:?}, A stored {on_a:?}");
    assert!(both.len() <= 16 && on_b.ends_with(&both), "sent to both: {both:?}; B {on_b:?}, A {on_a:?}");

    let log = agent.log();
    let moves = lines_with(&log, "moving to collector");
    assert_eq!(moves.len(), 1, "one move, logged once: {log}");
    assert!(moves[0].contains(&format!("collector {base_b}/ unreachable")), "{log}");
    assert!(moves[0].contains(&format!("moving to collector {}/", a.base)), "{log}");
    let connected = lines_with(&log, ": connected collector=");
    assert_eq!(connected.len(), 2, "{log}");
    assert!(connected[0].contains(&base_b) && connected[1].contains(&a.base), "{log}");
}

#[test]
fn a_bad_url_in_a_collector_list_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = |command: &mut Command| {
        let out = command.arg("--spool").arg(dir.path().join("s")).arg("--once").output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let list = "http://127.0.0.1:7450,ftp://b.example";
    let flag = run(agent_command().args(["--collector", list]));
    assert!(flag.contains("--collector") && flag.contains("`ftp://b.example` must be an http or https URL"), "{flag}");
    let env = run(agent_command().env("PROCYON_COLLECTOR", list));
    assert!(env.contains("`ftp://b.example` must be an http or https URL"), "{env}");
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, "collector = [\"http://127.0.0.1:7450\", \"https://b.example/api/\"]\n").unwrap();
    let from_file = run(agent_command().arg("--config").arg(&file));
    assert!(from_file.contains(&format!("config file {}: collector `https://b.example/api/`", file.display())));
    assert!(from_file.contains("is the address of an API endpoint"), "{from_file}");
    // Plain http to another machine anywhere in the list, as for one collector.
    let plain = run(agent_command().args(["--collector", "http://127.0.0.1:7450,http://192.0.2.1:7450"]));
    assert!(plain.contains("http://192.0.2.1:7450/ is on another machine") && plain.contains("--insecure-http"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collector_that_refuses_the_key_is_passed_over_and_a_refusal_from_all_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let good = Collector::start(&data, &["--no-local"]);
    let token = good.admin_token().await;
    let key = key_file(dir.path(), "k", &new_key(&data, "k", None));
    // Two collectors that do not know the key (their own databases).
    let strangers = [
        Collector::start(&dir.path().join("s1"), &["--no-local"]),
        Collector::start(&dir.path().join("s2"), &["--no-local"]),
    ];

    // --once: the refusing one, then the next.
    let out = agent_command()
        .args(["--collector", &format!("{},{}", strangers[0].base, good.base), "--hostname", "fo-3", "--once"])
        .arg("--api-key-file")
        .arg(&key)
        .arg("--spool")
        .arg(dir.path().join("once"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&strangers[0].base) && stderr.contains("API key"), "the refusal is logged: {stderr}");
    assert_eq!(seqs(&good, &token, "fo-3").await, [1]);

    // Streaming: passed over the same way.
    let list = format!("{},{}", strangers[0].base, good.base);
    let agent = Agent::start(&list, &key, "fo-4", &dir.path().join("spool-4"), &[]);
    wait_until(Duration::from_secs(30), "the collector that knows the key to store snapshots", || async {
        seqs(&good, &token, "fo-4").await.len() >= 3
    })
    .await;
    let log = agent.log();
    let moves = lines_with(&log, "moving to collector");
    assert_eq!(moves.len(), 1, "{log}");
    assert!(moves[0].contains("the collector refused this agent") && moves[0].contains(&good.base), "{log}");

    // Refused by every collector of the list: the same error as with one, and the
    // longest wait before the next round.
    let list = format!("{},{}", strangers[0].base, strangers[1].base);
    let agent = Agent::start(&list, &key, "fo-5", &dir.path().join("spool-5"), &[]);
    assert!(
        wait_for(Duration::from_secs(30), || agent.log().contains("each collector of the list has refused this agent")),
        "{}",
        agent.log()
    );
    let log = agent.log();
    let refusals = lines_with(&log, "the collector refused this agent");
    assert_eq!(refusals.len(), 2, "one a collector: {log}");
    assert!(refusals[1].contains(&format!("moving to collector {}/ in 60 s", strangers[0].base)), "{log}");
    for (i, stranger) in strangers.iter().enumerate() {
        let (_, hosts) = stranger.get("/api/hosts/", &stranger.admin_token().await).await;
        assert_eq!(hosts, json!([]), "collector {i} stored nothing");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_action_goes_through_the_agent_one_guarded_target_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let c = Collector::start(&data, &["--no-local"]);
    let token = c.admin_token().await;
    let key = key_file(dir.path(), "k", &new_key(&data, "k", None));
    let _agent = Agent::start(&c.base, &key, "bulk-host", &dir.path().join("spool"), &["--allow-control"]);
    let children: Vec<Sleeper> = (0..3).map(|i| Sleeper::start(&marker(&format!("bulk{i}")))).collect();
    let pids: Vec<u32> = children.iter().map(Sleeper::pid).collect();

    // Their start times, as the agent's snapshots show them.
    let mut starts: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while starts.len() < pids.len() {
        assert!(Instant::now() < deadline, "the children never appeared in the agent's snapshot");
        let (_, snap) = c.get("/api/monitoring/bulk-host/snapshot", &token).await;
        starts = pids
            .iter()
            .filter_map(|pid| {
                snap["processes"].as_array()?.iter().find(|p| p["pid"] == *pid)?["start_time"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    // Two suspended, the third named with a start time that is not its own.
    let body = json!({"targets": [
        {"pid": pids[0], "start_time": starts[0]},
        {"pid": pids[1], "start_time": "2001-01-01T00:00:00Z"},
        {"pid": pids[2], "start_time": starts[2]},
    ]});
    let (status, answer) = c.post("/api/monitoring/bulk-host/processes/suspend", &token, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    let outcome: Vec<&str> =
        answer["results"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(outcome, ["success", "pid_reused", "success"], "{answer}");
    assert!(wait_for(Duration::from_secs(5), || state(pids[0]) == Some('T') && state(pids[2]) == Some('T')));
    std::thread::sleep(Duration::from_millis(200));
    assert!(matches!(state(pids[1]), Some('S' | 'R')), "the stale target is untouched: {:?}", state(pids[1]));

    let (_, log) = c.get("/api/audit", &token).await;
    let mut rows: Vec<(u64, String, String)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (e["pid"].as_u64().unwrap(), e["hostname"].as_str().unwrap().into(), e["result"].as_str().unwrap().into())
        })
        .collect();
    rows.sort_unstable();
    let mut expected: Vec<(u64, String, String)> = [(0, "success"), (1, "pid_reused"), (2, "success")]
        .iter()
        .map(|(i, r)| (u64::from(pids[*i]), "bulk-host".to_owned(), (*r).to_owned()))
        .collect();
    expected.sort_unstable();
    assert_eq!(rows, expected);
}
