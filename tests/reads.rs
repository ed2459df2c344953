//! Reads that could exhaust the collector's memory, against a collector running in this
//! process (so that the test can see what its store decoded): exports are streamed one
//! snapshot at a time within a byte budget, a busy store answers 503 with
//! `Retry-After`, and a live stream decodes only the hosts it sends.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::StreamExt;
use procyon::hub::Hub;
use procyon::model::Snapshot;
use procyon::model::api::Role;
use procyon::server::auth::Auth;
use procyon::server::{AppState, Settings};
use procyon::store::{ReadLimits, Store};
use serde_json::Value;

/// One real sample of this machine, taken once.
fn base() -> &'static Snapshot {
    static BASE: OnceLock<Snapshot> = OnceLock::new();
    BASE.get_or_init(|| procyon::sample::Sampler::new(Default::default()).sample())
}

/// A snapshot of a hostile host: `processes` processes with 2 KiB command lines (each
/// one within every per-field limit).
fn hostile(hostname: &str, seq: u64, taken_at: DateTime<Utc>, processes: usize) -> Snapshot {
    let mut s = base().clone();
    s.host.hostname = hostname.into();
    s.seq = seq;
    s.taken_at = taken_at;
    let template = s.processes[0].clone();
    s.processes = (0..processes)
        .map(|i| procyon::model::ProcessSample {
            pid: i as u32 + 10,
            cmd: format!("/opt/{i}/worker {}", "x".repeat(2048)),
            cpu_percent: Some((seq % 7) as f32),
            ..template.clone()
        })
        .collect();
    s
}

struct Server {
    base: String,
    token: String,
    state: AppState,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(limits: ReadLimits) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(&dir.path().join("procyon.db"), limits).await.unwrap();
        let auth = Auth::new(b"a test signing key of 32 bytes!!", Duration::from_secs(3600));
        let state = AppState::new(store, Hub::new(), auth, Settings::default());
        let ada = state.store.create_user("ada", "not a real hash", Role::Viewer).await.unwrap();
        let generation = state.store.user_by_name(&ada.username).await.unwrap().unwrap().token_generation;
        let token = state.auth.issue("ada", Role::Viewer, generation).unwrap().token;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("{}", listener.local_addr().unwrap());
        tokio::spawn(procyon::server::listen(state.clone(), listener, std::future::pending()));
        Server { base, token, state, _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::Client::new().get(self.url(path)).bearer_auth(&self.token).send().await.unwrap()
    }

    async fn ws(&self, path: &str) -> Value {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("ws://{}{path}{sep}token={}", self.base, self.token);
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let message = tokio::time::timeout(Duration::from_secs(30), ws.next()).await.unwrap().unwrap().unwrap();
        serde_json::from_str(message.to_text().unwrap()).unwrap()
    }

    fn decoded(&self) -> u64 {
        self.state.store.read_stats().decoded
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true).replace('+', "%2B")
}

/// Stores `count` hostile snapshots a second apart, from an hour ago; their ids.
async fn store_hostile(server: &Server, count: u64) -> (DateTime<Utc>, Vec<i64>) {
    let t0 = DateTime::from_timestamp_millis((Utc::now() - TimeDelta::hours(1)).timestamp_millis()).unwrap();
    let mut ids = Vec::new();
    for seq in 1..=count {
        let s = hostile("hostile", seq, t0 + TimeDelta::seconds(seq as i64), 1500);
        ids.push(server.state.store.insert_snapshot(&s, Utc::now()).await.unwrap().id);
    }
    (t0, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_export_is_decoded_as_it_is_sent_and_ends_clearly_at_its_budget() {
    let server = Server::start(ReadLimits::default()).await;
    const COUNT: u64 = 16;
    let (t0, ids) = store_hostile(&server, COUNT).await;
    let one = server.get(&format!("/api/process-snapshots/{}/export?format=json", ids[0])).await;
    assert_eq!(one.status(), 200);
    let one_len = one.bytes().await.unwrap().len();
    assert!(one_len > 3 << 20, "a hostile snapshot is {one_len} bytes of JSON");
    let range = format!("from={}&to={}", rfc3339(t0), rfc3339(t0 + TimeDelta::seconds(COUNT as i64)));

    // Streamed: with the client reading only the start, the collector has decoded only
    // what the socket buffers hold, not the whole range (as it did before streaming).
    let before = server.decoded();
    let mut export = server.get(&format!("/api/hosts/hostile/export?format=json&limit=2000&{range}")).await;
    assert_eq!(export.status(), 200);
    assert!(export.content_length().is_none(), "a streamed body has no length up front");
    assert_eq!(export.headers()["x-export-budget-bytes"], (256u64 << 20).to_string().as_str());
    let mut body = export.chunk().await.unwrap().unwrap().to_vec();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ahead = server.decoded() - before;
    // Each snapshot, plus its keyframe once per minute; what the socket holds (about
    // 10 MB on loopback) and the server's write buffer are three or four hostile
    // snapshots.
    assert!(ahead <= COUNT / 2, "{ahead} of {COUNT} snapshots decoded before the client read on");
    while let Some(chunk) = export.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    let all: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(all.len(), COUNT as usize);
    assert!(all.iter().all(|s| s["snapshot_id"].is_i64() && s.get("truncated").is_none()));
    assert_eq!(server.state.store.read_stats().decoding_peak, 1, "one snapshot decoded at a time");

    // Over the budget: still valid JSON, ending with a marker that says where to go on.
    let max = one_len as u64 * 5 / 2;
    let cut = server.get(&format!("/api/hosts/hostile/export?format=json&max_bytes={max}&{range}")).await;
    assert_eq!(cut.headers()["x-export-budget-bytes"], max.to_string().as_str());
    let cut: Vec<Value> = serde_json::from_slice(&cut.bytes().await.unwrap()).unwrap();
    assert_eq!(cut.len(), 3, "two snapshots and the marker");
    let marker = &cut[2];
    assert_eq!(
        (&marker["truncated"], &marker["reason"], &marker["exported"]),
        (&true.into(), &"byte_budget".into(), &2.into())
    );
    assert!(marker["message"].as_str().unwrap().contains("ask again with from="), "{marker}");
    let next_from: DateTime<Utc> = marker["next_from"].as_str().unwrap().parse().unwrap();
    assert_eq!(next_from, t0 + TimeDelta::seconds(3));
    let rest = format!(
        "/api/hosts/hostile/export?format=json&from={}&to={}",
        rfc3339(next_from),
        rfc3339(t0 + TimeDelta::seconds(COUNT as i64))
    );
    let rest: Vec<Value> = serde_json::from_slice(&server.get(&rest).await.bytes().await.unwrap()).unwrap();
    assert_eq!(rest.len(), COUNT as usize - 2, "asking again from next_from gets the rest");
    assert_eq!(rest[0]["snapshot_id"], all[2]["snapshot_id"]);

    // An empty range is an empty array.
    let later = t0 + TimeDelta::days(1);
    let empty = server
        .get(&format!("/api/hosts/hostile/export?format=json&from={}&to={}", rfc3339(later), rfc3339(later)))
        .await;
    assert_eq!(empty.bytes().await.unwrap().as_ref(), b"[]");

    // Process history reads the same range one snapshot at a time too.
    let history = server.get(&format!("/api/hosts/hostile/process-history?pid=10&{range}")).await;
    let points: Vec<Value> = history.json().await.unwrap();
    assert_eq!(points.len(), COUNT as usize);
    assert_eq!(server.state.store.read_stats().decoding_peak, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_reads_over_the_bound_get_503_with_retry_after() {
    let server = Server::start(ReadLimits { concurrent: 1, wait: Duration::ZERO }).await;
    let t0 = Utc::now() - TimeDelta::minutes(5);
    let inserted = server.state.store.insert_snapshot(&hostile("h", 1, t0, 10), Utc::now()).await.unwrap();
    let range = format!("from={}&to={}", rfc3339(t0 - TimeDelta::seconds(1)), rfc3339(Utc::now()));
    let paths = [
        format!("/api/hosts/h/export?format=json&{range}"),
        format!("/api/hosts/h/process-history?pid=10&{range}"),
        format!("/api/process-snapshots/{}/", inserted.id),
        format!("/api/process-snapshots/{}/export?format=csv", inserted.id),
        "/api/process-snapshots/latest/?hostname=h".to_owned(),
        "/api/process-snapshots/latest/".to_owned(),
    ];
    let slot = server.state.store.heavy_read().await.unwrap();
    for path in &paths {
        let response = server.get(path).await;
        assert_eq!(response.status(), 503, "{path}");
        assert_eq!(response.headers()["retry-after"], "1", "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "busy", "{path}");
        assert!(body["message"].as_str().unwrap().contains("try again in 1 s"), "{body}");
    }
    drop(slot);
    for path in &paths {
        assert_eq!(server.get(path).await.status(), 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_decodes_only_the_hosts_it_sends() {
    let server = Server::start(ReadLimits::default()).await;
    let t0 = Utc::now() - TimeDelta::minutes(5);
    // Stored only (as after a restart): nothing is in the hub yet.
    for (i, host) in ["alpha", "beta", "gamma"].into_iter().enumerate() {
        server
            .state
            .store
            .insert_snapshot(&hostile(host, 1, t0 + TimeDelta::seconds(i as i64), 200), t0)
            .await
            .unwrap();
    }
    let before = server.decoded();
    let first = server.ws("/ws/process-snapshots/?hostname=beta").await;
    assert_eq!(first["hostname"], "beta");
    assert_eq!(server.decoded() - before, 1, "only beta's newest snapshot is decoded");

    let before = server.decoded();
    let first = server.ws("/ws/process-snapshots/?hostname=gamma&delta=1").await;
    assert_eq!(first["snapshot"]["host"]["hostname"], "gamma");
    assert_eq!(server.decoded() - before, 1);

    let before = server.decoded();
    let first = server.ws("/ws/monitoring/alpha").await;
    assert_eq!(first["hostname"], "alpha");
    assert_eq!(server.decoded() - before, 1);

    // What the hub holds is sent as it is: nothing to decode.
    server.state.ingest(hostile("beta", 2, t0 + TimeDelta::seconds(10), 200)).await.unwrap();
    let before = server.decoded();
    let first = server.ws("/ws/process-snapshots/?hostname=beta").await;
    assert_eq!(first["seq"], 2);
    let first = server.ws("/ws/monitoring/beta").await;
    assert_eq!(first["hostname"], "beta");
    assert_eq!(server.decoded() - before, 0);

    // The all-hosts stream decodes each host once, one at a time.
    let before = server.decoded();
    let _ = server.ws("/ws/process-snapshots/").await;
    let stats = server.state.store.read_stats();
    assert!(stats.decoded - before <= 2, "alpha and gamma from the store, beta from the hub");
    assert_eq!(stats.decoding_peak, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_snapshot_of_every_host_is_streamed_within_a_byte_budget() {
    let server = Server::start(ReadLimits::default()).await;
    let t0 = Utc::now() - TimeDelta::minutes(5);
    let hosts = ["h-a", "h-b", "h-c", "h-d", "h-e"];
    for (i, host) in hosts.iter().enumerate() {
        let s = hostile(host, 1, t0 + TimeDelta::seconds(i as i64), 300);
        server.state.store.insert_snapshot(&s, t0).await.unwrap();
    }
    // One host is live too: its newest comes from the live view, as encoded there.
    server.state.ingest(hostile("h-c", 2, t0 + TimeDelta::seconds(30), 300)).await.unwrap();

    let before = server.decoded();
    let response = server.get("/api/process-snapshots/latest/").await;
    assert_eq!(response.status(), 200);
    assert!(response.content_length().is_none(), "a streamed body has no length up front");
    assert_eq!(response.headers()["x-budget-bytes"], (256u64 << 20).to_string().as_str());
    let all: Vec<Value> = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    let names: Vec<&str> = all.iter().map(|s| s["hostname"].as_str().unwrap()).collect();
    assert_eq!(names, hosts);
    assert_eq!(all[2]["seq"], 2, "the live snapshot, newer than the stored one");
    assert_eq!(server.decoded() - before, 4, "every stored host decoded once, the live one not at all");
    assert_eq!(server.state.store.read_stats().decoding_peak, 1, "one snapshot decoded at a time");

    // Over a smaller budget: valid JSON, ending with where to go on.
    let one = serde_json::to_vec(&all[0]).unwrap().len() as u64;
    let max = one * 5 / 2;
    let cut = server.get(&format!("/api/process-snapshots/latest/?max_bytes={max}")).await;
    assert_eq!(cut.headers()["x-budget-bytes"], max.to_string().as_str());
    let cut: Vec<Value> = serde_json::from_slice(&cut.bytes().await.unwrap()).unwrap();
    assert_eq!(cut.len(), 3, "two hosts and the marker");
    let marker = &cut[2];
    assert_eq!(
        (&marker["truncated"], &marker["reason"], &marker["exported"], &marker["next_hostname"]),
        (&true.into(), &"byte_budget".into(), &2.into(), &"h-c".into())
    );
    assert!(marker["message"].as_str().unwrap().contains("from_hostname=h-c"), "{marker}");
    let rest: Vec<Value> = serde_json::from_slice(
        &server.get("/api/process-snapshots/latest/?from_hostname=h-c").await.bytes().await.unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = rest.iter().map(|s| s["hostname"].as_str().unwrap()).collect();
    assert_eq!(names, ["h-c", "h-d", "h-e"]);
    // Past the last host: an empty list.
    let none = server.get("/api/process-snapshots/latest/?from_hostname=zzz").await;
    assert_eq!(none.bytes().await.unwrap().as_ref(), b"[]");
}
